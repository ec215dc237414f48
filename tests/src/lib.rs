//! Support for geoturn's end-to-end tests: a blocking TURN client over real UDP sockets, a UDP
//! echo peer, relays started in-process or as the `geoturn` binary, and a runner for coturn's
//! `turnutils_uclient`. Everything binds 127.0.0.1 only; every wait is bounded.

pub mod client;
pub mod http;
pub mod peer;
pub mod process;
pub mod relay;

/// A secret long enough for the relay's validation.
pub const TEST_SECRET: &str = "geoturn-test-secret-0123456789";

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
