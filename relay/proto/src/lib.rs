//! geoturn-relay-proto: the deterministic core of the geoturn relay.
//!
//! A STUN codec ([`stun`]), the long-term credential mechanism over TURN REST credentials
//! ([`auth`]), allocation state ([`allocation`]), the peer address policy ([`peer_policy`]) and the
//! TURN state machine ([`server::Server`]). Nothing here opens a socket or reads a clock: the relay
//! crate feeds packets and `now` in and drains commands out, the way quinn-proto and str0m do.
// Parsing code must go through the bounds-checked reader; raw indexing is a review smell here.
#![cfg_attr(not(test), warn(clippy::indexing_slicing))]

pub mod allocation;
pub mod auth;
pub mod client;
pub mod peer_policy;
pub mod rate_limit;
pub mod server;
pub mod stun;
pub mod transaction_cache;
pub mod types;

pub use server::{Command, Server, ServerConfig, SharedTables, ToClient, ToPeer, WallClock};

pub use types::{ClientSocket, ConnectionId, PeerSocket, RelayAddr, Transport};

/// The origin of the virtual clock in unit tests: any instant works, time then only moves
/// by the durations a test adds.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
pub(crate) fn test_epoch() -> std::time::Instant {
    std::time::Instant::now()
}
