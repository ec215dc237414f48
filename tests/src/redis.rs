//! A real `redis-server` per test on a free loopback port, with no persistence, stopped by PID.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` on a loopback port with no persistence, stopped by PID on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts a server on a free port.
    pub fn start() -> Self {
        // Another test may take the free port between our probe and redis's bind: try again.
        for _ in 0..3 {
            if let Some(server) = Self::try_start(free_port()) {
                return server;
            }
        }
        panic!("redis-server did not start on three free ports");
    }

    /// Starts a server on `port` (to restart one after [`RedisServer::kill`]).
    pub fn start_on(port: u16) -> Self {
        Self::try_start(port).unwrap_or_else(|| panic!("redis-server did not start on {port}"))
    }

    fn try_start(port: u16) -> Option<Self> {
        let mut child = Command::new(redis_server_binary())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if child.try_wait().expect("redis-server process").is_some() {
                return None; // exited: most likely the port was taken
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Self {
                    child: Some(child),
                    port,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Its process id while it runs (for a test that freezes it from a helper it starts).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server by PID and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal to the server by PID (`STOP` freezes it: connections stay open, nothing
    /// answers, as with a partitioned network).
    pub fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .expect("redis-server process")
            .id()
            .to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("redis-server process");
        assert!(status.success(), "kill -{signal} {pid}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn redis_server_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join("redis-server"))
        .find(|p| Path::is_file(p))
        .unwrap_or_else(|| {
            panic!(
                "redis-server not found on PATH: the registry tests need a real Redis. Install it \
                 with `apt-get install -y --no-install-recommends redis-server`"
            )
        })
}

pub use crate::free_tcp_port as free_port;

/// A relay's registry record as its heartbeat writes it, stamped now: `id` in `region` at
/// `(lat, lon)`, reachable on `udp`, 10 of 1000 allocations held.
pub fn relay_record(
    id: &str,
    region: &str,
    (lat, lon): (f64, f64),
    udp: std::net::SocketAddr,
    state: geoturn_shared::registry::RelayState,
) -> geoturn_shared::registry::RelayRecord {
    let now = geoturn_shared::clock::unix_ms();
    geoturn_shared::registry::RelayRecord {
        id: id.into(),
        region: region.into(),
        lat,
        lon,
        addresses: geoturn_shared::registry::RelayAddrs {
            udp: vec![udp],
            ..Default::default()
        },
        capacity_allocations: 1000,
        capacity_mbps: 1000,
        allocations: 10,
        bps_in: 0,
        bps_out: 0,
        pps_in: 0,
        pps_out: 0,
        cpu: 0.1,
        state,
        version: "test".into(),
        started_at_ms: now,
        updated_at_ms: now,
        drain_deadline_ms: None,
    }
}
