//! A UDP echo peer on 127.0.0.2 that stops when dropped (and after a time limit regardless).
//! Not 127.0.0.1: test relays listen there, and a relay refuses its own addresses as peers
//! except at its relayed ports in use.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Echoes every datagram back to its sender.
#[derive(Debug)]
pub struct EchoPeer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// The longest an echo peer runs, whatever the test does.
const MAX_RUN: Duration = Duration::from_secs(120);

impl EchoPeer {
    /// Starts an echo peer on an ephemeral 127.0.0.2 port.
    pub fn start() -> std::io::Result<Self> {
        Self::start_on("127.0.0.2:0".parse().map_err(std::io::Error::other)?)
    }

    /// Starts an echo peer on `addr` (e.g. `[::1]:0`).
    pub fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let sock = UdpSocket::bind(addr)?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = sock.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let (s, r) = (stop.clone(), received.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut buf = [0u8; 65536];
            while !s.load(Ordering::Relaxed) && started.elapsed() < MAX_RUN {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    r.fetch_add(1, Ordering::Relaxed);
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        Ok(Self {
            addr,
            stop,
            received,
            thread: Some(thread),
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
