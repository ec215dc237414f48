//! Support for geoturn's end-to-end tests: a blocking TURN client over real UDP sockets, a UDP
//! echo peer, relays started in-process or as the `geoturn` binary, and a runner for coturn's
//! `turnutils_uclient`. Everything binds 127.0.0.1 only; every wait is bounded.

pub mod client;
pub mod geo;
pub mod http;
pub mod netns;
pub mod peer;
pub mod process;
pub mod redis;
pub mod relay;
pub mod stream_client;
pub mod tls;

/// A secret long enough for the relay's validation.
pub const TEST_SECRET: &str = "geoturn-test-secret-0123456789";

/// The wall clock, as the relay and the API read it.
pub use geoturn_shared::clock::{unix_ms, unix_secs};

/// A fresh, empty directory under the system temp dir for one test.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("geoturn-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A loopback TCP port nobody listens on right now (a race with other processes is possible
/// but harmless: the caller's bind fails loudly).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback TCP port")
}

/// A loopback port free for UDP and for TCP right now, for a relay's `--listen` (which binds
/// both). It comes from 20000–29999: below the kernel's ephemeral range (32768–60999 by default)
/// and outside every test relay's `--relay-ports`, so neither an outgoing connection's local
/// port nor another relay's relayed socket can take it between this check and the relay's bind.
/// A process-wide counter keeps this test binary's threads on different ports; the start
/// depends on the PID, so concurrent test processes mostly do too (and a clash is a loud
/// bind failure).
pub fn free_udp_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(FIRST + start.wrapping_add(n) % SPAN).expect("below 30000");
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if udp.is_ok() && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port in 20000-29999 is free for both UDP and TCP")
}
