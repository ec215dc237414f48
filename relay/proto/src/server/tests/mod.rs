//! Scenario tests of the server on a virtual clock: the harness (a driver stand-in), and the
//! scenarios by topic.

mod abuse;
mod allocate;
mod data;
mod lifecycle;
mod offload;
mod placement;
mod rfc6062;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use geoturn_shared::{RestCredential, SecretSet};

use super::*;
use crate::allocation::ports::PortPool;
use crate::allocation::tcp::PeerHandle;
use crate::client::{ClientAuth, encode_request, error_code};
use crate::stun::attribute::types;
use crate::stun::channel_data::ChannelData;
use crate::stun::{Attribute, Class, Message, Method, TransactionId};
use crate::types::{ClientSocket, ConnectionId, Transport};

const UNIX_START: u64 = 1_800_000_000;
const SECRET: &[u8] = b"topsecret";

struct Harness {
    server: Server,
    now: Instant,
    tuple: FiveTuple,
    next_tid: u8,
    fail_binds: usize,
    fail_v6: bool,
    bound: Vec<RelayAddr>,
    freed: Vec<RelayAddr>,
    /// ConnectPeer commands seen (answered by the test).
    connects: Vec<(ConnectionId, RelayAddr, PeerSocket)>,
    splices: Vec<(FiveTuple, ConnectionId)>,
    /// Offload commands seen, in order: true installs, false removes.
    offloads: Vec<(bool, OffloadedChannel)>,
}

fn tuple(port: u16) -> FiveTuple {
    FiveTuple {
        client: ClientSocket::new(SocketAddr::from(([198, 51, 100, 7], port))),
        server: SocketAddr::from(([192, 0, 2, 1], 3478)),
        transport: Transport::Udp,
    }
}

/// A server with a relayed address of each family (192.0.2.1, 2001:db8::1).
fn dual_stack() -> ServerConfig {
    ServerConfig {
        relay_ip_v4: Some("192.0.2.1".parse().unwrap()),
        relay_ip_v6: Some("2001:db8::1".parse().unwrap()),
        ..ServerConfig::default()
    }
}

fn peer() -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 50], 7000))
}

impl Harness {
    fn with(config: ServerConfig, quota: Quota, ports: std::ops::RangeInclusive<u16>) -> Self {
        let now = crate::test_epoch();
        let server = Server::new(
            config,
            SecretSet::from_values([SECRET]),
            SharedTables {
                quota: Arc::new(quota),
                ports: Arc::new(PortPool::new(ports, [42; 32])),
                tcp: Arc::new(crate::allocation::tcp::TcpConnections::new(9)),
                revoked: Arc::default(),
            },
            WallClock {
                at: now,
                unix_ms: UNIX_START * 1000,
            },
        );
        Self {
            server,
            now,
            tuple: tuple(40000),
            next_tid: 0,
            fail_binds: 0,
            fail_v6: false,
            bound: vec![],
            freed: vec![],
            connects: vec![],
            splices: vec![],
            offloads: vec![],
        }
    }

    fn new() -> Self {
        let config = ServerConfig {
            relay_ip_v4: Some("192.0.2.1".parse().unwrap()),
            ..ServerConfig::default()
        };
        Self::with(config, Quota::new(0, 0, 0), 50000..=50099)
    }

    /// A server answering each source at most `rate` unsigned responses a second, `burst`
    /// at once.
    fn with_unauth_limit(rate: u32, burst: u32) -> Self {
        let config = ServerConfig {
            relay_ip_v4: Some("192.0.2.1".parse().unwrap()),
            unauth_rate: rate,
            unauth_burst: burst,
            ..ServerConfig::default()
        };
        Self::with(config, Quota::new(0, 0, 0), 50000..=50099)
    }

    fn tid(&mut self) -> TransactionId {
        self.next_tid += 1;
        TransactionId([self.next_tid; 12])
    }

    fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.server.handle_timeout(self.now);
        self.pump();
    }

    /// Runs commands; acknowledges binds; returns the responses sent to clients.
    fn pump(&mut self) -> Vec<Vec<u8>> {
        let mut out = vec![];
        while let Some(cmd) = self.server.poll_command() {
            match cmd {
                Command::SendToClient { data, .. } => out.push(data),
                Command::BindRelay { relay, .. } => {
                    let ok = if self.fail_v6 && relay.addr().is_ipv6() {
                        false
                    } else if self.fail_binds > 0 {
                        self.fail_binds -= 1;
                        false
                    } else {
                        self.bound.push(relay);
                        true
                    };
                    self.server.handle_relay_bound(self.now, relay, ok);
                }
                Command::FreeRelay { relay } => self.freed.push(relay),
                Command::ConnectPeer { id, relay, peer } => self.connects.push((id, relay, peer)),
                Command::SpliceData { five_tuple, id } => self.splices.push((five_tuple, id)),
                Command::OffloadChannel(c) => self.offloads.push((true, c)),
                Command::RemoveOffload(c) => self.offloads.push((false, c)),
            }
        }
        out
    }

    fn input(&mut self, bytes: &[u8]) -> Option<(RelayAddr, PeerSocket, Vec<u8>)> {
        let tuple = self.tuple;
        self.server
            .handle_client_input(self.now, tuple, bytes)
            .map(|f| (f.relay, f.peer, bytes[f.range].to_vec()))
    }

    fn request_raw(&mut self, bytes: &[u8]) -> Vec<u8> {
        assert!(self.input(bytes).is_none());
        let mut out = self.pump();
        assert_eq!(out.len(), 1, "expected exactly one response");
        out.remove(0)
    }

    fn request(
        &mut self,
        method: Method,
        attrs: &[Attribute<'_>],
        auth: Option<&ClientAuth>,
    ) -> Vec<u8> {
        let tid = self.tid();
        let req = encode_request(method, Class::Request, tid, attrs, auth).unwrap();
        let resp = self.request_raw(&req);
        let m = Message::parse(&resp).unwrap();
        assert_eq!(m.transaction_id(), &tid);
        assert_eq!(m.method(), method);
        resp
    }

    /// Takes REALM and NONCE from the 401 an unauthenticated Allocate earns.
    fn challenge(&mut self, auth: &mut ClientAuth, transport: u8) {
        let resp = self.request(
            Method::Allocate,
            &[Attribute::RequestedTransport(transport)],
            None,
        );
        let m = Message::parse(&resp).unwrap();
        assert_eq!(error_code(&m), Some(401));
        assert!(auth.update_from_challenge(&m));
    }

    fn credentials(&self, ttl: u64) -> ClientAuth {
        let c = RestCredential::mint(SECRET, "alice", UNIX_START, ttl);
        ClientAuth {
            username: c.username,
            password: c.password,
            realm: String::new(),
            nonce: String::new(),
        }
    }

    /// Challenge + authenticated Allocate; returns the auth and the relayed address.
    fn allocate(&mut self) -> (ClientAuth, SocketAddr) {
        let mut auth = self.credentials(3600);
        let resp = self.request(Method::Allocate, &[Attribute::RequestedTransport(17)], None);
        let m = Message::parse(&resp).unwrap();
        assert_eq!(error_code(&m), Some(401));
        assert!(auth.update_from_challenge(&m));
        let resp = self.request(
            Method::Allocate,
            &[Attribute::RequestedTransport(17)],
            Some(&auth),
        );
        let m = Message::parse(&resp).unwrap();
        assert_eq!(m.class(), Class::Success, "{:?}", error_code(&m));
        assert!(m.verify_integrity(&auth.key()));
        let Some(Ok(Attribute::XorRelayedAddress(relayed))) =
            m.attribute(types::XOR_RELAYED_ADDRESS)
        else {
            panic!("no relayed address")
        };
        (auth, relayed)
    }

    /// Sends ChannelBind(`number` → `peer`); returns the response.
    fn channel_bind(&mut self, auth: &ClientAuth, number: u16, peer: SocketAddr) -> Vec<u8> {
        self.request(
            Method::ChannelBind,
            &[
                Attribute::ChannelNumber(number),
                Attribute::XorPeerAddress(peer),
            ],
            Some(auth),
        )
    }

    fn allow_peer(&mut self, auth: &ClientAuth, peer: SocketAddr) {
        let resp = self.request(
            Method::CreatePermission,
            &[Attribute::XorPeerAddress(peer)],
            Some(auth),
        );
        assert_eq!(Message::parse(&resp).unwrap().class(), Class::Success);
    }
}

/// A stand-in for the driver's peer socket that records being closed (dropped).
fn peer_handle() -> (PeerHandle, Arc<AtomicBool>) {
    struct Socket(Arc<AtomicBool>);
    impl Drop for Socket {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let closed = Arc::new(AtomicBool::new(false));
    (PeerHandle::new(Socket(closed.clone())), closed)
}

fn code_of(resp: &[u8]) -> Option<u16> {
    error_code(&Message::parse(resp).unwrap())
}
