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
pub mod tls;

/// A secret long enough for the relay's validation.
pub const TEST_SECRET: &str = "geoturn-test-secret-0123456789";

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

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

/// A loopback UDP port nobody uses right now.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free loopback UDP port")
}
