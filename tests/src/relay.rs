//! A relay started in-process on real sockets, on 127.0.0.1 with an ephemeral port.

use std::net::SocketAddr;

use geoturn_relay::{RelayHandle, RelayOptions};
use geoturn_shared::RestCredential;

use crate::{TEST_SECRET, unix_secs};

/// A running in-process relay; stopped when dropped.
#[derive(Debug)]
pub struct TestRelay {
    handle: Option<RelayHandle>,
}

impl TestRelay {
    /// Starts a relay; `tweak` adjusts the options (by default loopback peers are allowed,
    /// since every peer in these tests lives on 127.0.0.1).
    pub fn start(tweak: impl FnOnce(&mut RelayOptions)) -> Self {
        let mut opts = RelayOptions {
            listen: vec!["127.0.0.1:0".parse().expect("literal address")],
            auth_secrets: vec![TEST_SECRET.into()],
            allow_peers: vec!["127.0.0.0/8".parse().expect("literal CIDR")],
            relay_ports: Some("40000-48999".into()),
            workers: Some(2),
            ..RelayOptions::default()
        };
        tweak(&mut opts);
        let config = opts.resolve().expect("test relay options are valid");
        let handle = geoturn_relay::start(&config).expect("relay starts");
        Self {
            handle: Some(handle),
        }
    }

    /// The relay's UDP address.
    pub fn addr(&self) -> SocketAddr {
        self.handle().local_addr()
    }

    /// The handle, for secrets, drain and snapshots.
    pub fn handle(&self) -> &RelayHandle {
        self.handle
            .as_ref()
            .expect("relay is running until dropped")
    }

    /// Credentials for `user` valid `ttl` seconds.
    pub fn credentials(user: &str, ttl: u64) -> RestCredential {
        RestCredential::mint(TEST_SECRET.as_bytes(), user, unix_secs(), ttl)
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.stop();
        }
    }
}
