//! geoturn-geo: where a client is, and which relays it should use.
//!
//! - [`GeoIp`] places an IP address with one or more MaxMind DB city databases, in the
//!   GeoIP2/GeoLite2-City layout or the flat DB-IP / ip-location-db layout.
//! - [`rank_relays`] is the pure ranking: estimated RTT (great circle or a region matrix) plus
//!   a load penalty; draining, stale and full relays excluded; at least two regions when two
//!   exist; a default region for clients that cannot be placed; an explanation per relay.
//!
//! The credential API calls both per request: `GeoIp::lookup` for the client address, then
//! `rank_relays` over its in-memory snapshot of the registry. Neither does I/O per call.

pub mod geoip;
pub mod rank;

pub use geoip::{DatabaseInfo, GeoError, GeoIp, Location};
pub use rank::{
    Candidate, Choice, ClientLocation, Estimate, Excluded, ExclusionReason, MeasuredRegion,
    MeasuredRtts, RankConfig, RankConfigError, Ranking, UnitVectorCache, haversine_km, rank_relays,
    rank_relays_measured,
};
