//! geoturn-geo: GeoIP lookup and the ranking of relays for a client.
//!
//! Empty on purpose: this crate holds its place in the workspace layout of DESIGN.md and is
//! built by the credential-API issue (mmdb lookup, pure ranking with explanations).
