//! geoturn-api: the REST service that answers web apps with ICE servers.
//!
//! Empty on purpose: this crate holds its place in the workspace layout of DESIGN.md and is
//! built by the credential-API issue.
