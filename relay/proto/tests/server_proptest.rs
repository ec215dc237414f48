//! Property test of the TURN server over random sequences of operations on a virtual clock:
//! Allocate (UDP and RFC 6062 TCP), Refresh (including 0), CreatePermission, ChannelBind,
//! Connect and peer TCP connections, client disconnects and time passing. A driver stand-in
//! answers the server's commands (binds succeed, connects succeed or fail as the case says)
//! and keeps the set of relayed addresses it holds open.
//!
//! After every operation:
//! - the relayed addresses the driver holds are exactly those of the live allocations, each
//!   belongs to exactly one allocation, and the port pool counts exactly those in use;
//! - the quota counts exactly the live allocations;
//! - no allocation outlives its lifetime (time moves in steps of at least the sweep interval);
//! - every RFC 6062 connection belongs to a live TCP allocation, and the sockets the driver
//!   handed to the server are open exactly while the server's table holds them.
//!
//! At the end, every allocation is deleted or expires, and ports, quota and connections return
//! to zero.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // a panic in a test is a failed test

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use geoturn_relay_proto::allocation::ports::PortPool;
use geoturn_relay_proto::allocation::quota::Quota;
use geoturn_relay_proto::allocation::tcp::{PeerHandle, TcpConnections};
use geoturn_relay_proto::client::{ClientAuth, encode_request, error_code};
use geoturn_relay_proto::peer_policy::PeerPolicy;
use geoturn_relay_proto::stun::{Attribute, Class, Message, Method, TransactionId};
use geoturn_relay_proto::types::FiveTuple;
use geoturn_relay_proto::{
    ClientSocket, Command, PeerSocket, RelayAddr, Server, ServerConfig, SharedTables, Transport,
    WallClock,
};
use geoturn_shared::RestCredential;
use proptest::prelude::*;

const SECRET: &[u8] = b"proptest-secret";
const UNIX: u64 = 1_800_000_000;
/// Clients 0..4 reach the server over UDP, 4..8 over TCP (for RFC 6062).
const CLIENTS: u8 = 8;

#[derive(Debug, Clone)]
enum Op {
    Allocate {
        client: u8,
    },
    Refresh {
        client: u8,
        lifetime: u32,
    },
    Permission {
        client: u8,
        peer: u8,
    },
    Channel {
        client: u8,
        channel: u16,
        peer: u8,
    },
    Connect {
        client: u8,
        peer: u8,
        succeeds: bool,
    },
    PeerConnects {
        client: u8,
        peer: u8,
    },
    Disconnect {
        client: u8,
    },
    Advance {
        secs: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let client = 0..CLIENTS;
    prop_oneof![
        3 => client.clone().prop_map(|client| Op::Allocate { client }),
        2 => (client.clone(), prop_oneof![Just(0u32), Just(30), Just(600), Just(3600)])
            .prop_map(|(client, lifetime)| Op::Refresh { client, lifetime }),
        2 => (client.clone(), 0..4u8).prop_map(|(client, peer)| Op::Permission { client, peer }),
        2 => (client.clone(), 0x4000..0x4004u16, 0..4u8)
            .prop_map(|(client, channel, peer)| Op::Channel { client, channel, peer }),
        2 => (client.clone(), 0..4u8, any::<bool>())
            .prop_map(|(client, peer, succeeds)| Op::Connect { client, peer, succeeds }),
        1 => (client.clone(), 0..4u8).prop_map(|(client, peer)| Op::PeerConnects { client, peer }),
        1 => client.prop_map(|client| Op::Disconnect { client }),
        2 => (1..700u64).prop_map(|secs| Op::Advance { secs }),
    ]
}

struct World {
    server: Server,
    quota: Arc<Quota>,
    ports: Arc<PortPool>,
    tcp: Arc<TcpConnections>,
    now: Instant,
    unix: u64,
    tid: u64,
    auth: Vec<ClientAuth>,
    /// Relayed addresses the driver holds open.
    bound: BTreeSet<RelayAddr>,
    /// Peer sockets the driver handed over and that are not closed (dropped) yet.
    open_sockets: Arc<AtomicUsize>,
    /// Channels offered to the fast path: (client, channel) → relayed address.
    offered: std::collections::BTreeMap<(std::net::SocketAddr, u16), RelayAddr>,
}

/// A stand-in peer socket: counted open until dropped.
struct Socket(Arc<AtomicUsize>);

impl Socket {
    fn open(count: &Arc<AtomicUsize>) -> PeerHandle {
        count.fetch_add(1, Ordering::SeqCst);
        PeerHandle::new(Self(count.clone()))
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn tuple(client: u8) -> FiveTuple {
    FiveTuple {
        client: ClientSocket::new(SocketAddr::from(([198, 51, 100, client + 1], 40000))),
        server: SocketAddr::from(([192, 0, 2, 1], 3478)),
        transport: if client < CLIENTS / 2 {
            Transport::Udp
        } else {
            Transport::Tcp
        },
    }
}

fn peer(n: u8) -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 10 + n], 7000))
}

/// Every Advance must reach the server's next sweep, or the lifetime check would be vacuous.
fn prop_assert_sweep_due(next: Option<Instant>, now: Instant) {
    assert!(next.is_none_or(|t| t <= now), "sweep not due after a step");
}

impl World {
    fn new() -> Self {
        // The virtual clock's origin; afterwards time moves only in Advance.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let config = ServerConfig {
            relay_ip_v4: Some("192.0.2.1".parse().unwrap()),
            peer_policy: PeerPolicy::new(vec!["0.0.0.0/0".parse().unwrap()], vec![]),
            // Credentials and nonces outlive the test: only allocation lifetimes expire.
            nonce_lifetime: Duration::from_secs(30 * 86_400),
            ..ServerConfig::default()
        };
        let quota = Arc::new(Quota::new(2, 0, 6));
        let ports = Arc::new(PortPool::new(50000..=50011, [3; 32]));
        let tcp = Arc::new(TcpConnections::new(5));
        let server = Server::new(
            config,
            geoturn_shared::SecretSet::from_values([SECRET]),
            SharedTables {
                quota: quota.clone(),
                ports: ports.clone(),
                tcp: tcp.clone(),
                revoked: Arc::default(),
            },
            WallClock {
                at: now,
                unix_ms: UNIX * 1000,
            },
        );
        let auth = (0..CLIENTS)
            .map(|c| {
                // Two users, so the per-user quota (2) is reached too.
                let cred = RestCredential::mint(SECRET, &format!("u{}", c % 2), UNIX, 90 * 86_400);
                ClientAuth {
                    username: cred.username,
                    password: cred.password,
                    realm: String::new(),
                    nonce: String::new(),
                }
            })
            .collect();
        let mut w = Self {
            server,
            quota,
            ports,
            tcp,
            now,
            unix: UNIX,
            tid: 0,
            auth,
            bound: BTreeSet::new(),
            open_sockets: Arc::new(AtomicUsize::new(0)),
            offered: Default::default(),
        };
        w.server.enable_offload();
        for c in 0..CLIENTS {
            // The 401 an unauthenticated Allocate earns carries the realm and nonce.
            let responses = w.request(c, Method::Allocate, &[Attribute::RequestedTransport(17)]);
            for r in responses {
                let m = Message::parse(&r).unwrap();
                if error_code(&m) == Some(401) {
                    w.auth[usize::from(c)].update_from_challenge(&m);
                }
            }
        }
        w
    }

    /// Sends a request from `client` (signed once it has a nonce); runs the commands; returns
    /// the responses sent to that client.
    fn request(&mut self, client: u8, method: Method, attrs: &[Attribute<'_>]) -> Vec<Vec<u8>> {
        self.tid += 1;
        let mut id = [0u8; 12];
        id[..8].copy_from_slice(&self.tid.to_be_bytes());
        let auth = &self.auth[usize::from(client)];
        let auth = (!auth.nonce.is_empty()).then_some(auth);
        let req = encode_request(method, Class::Request, TransactionId(id), attrs, auth).unwrap();
        assert!(
            self.server
                .handle_client_input(self.now, tuple(client), &req)
                .is_none()
        );
        self.pump(Some(tuple(client)), true)
    }

    /// Answers the server's commands as a driver would; `connects` says whether outgoing
    /// Connects succeed. Returns what was sent to `to`.
    fn pump(&mut self, to: Option<FiveTuple>, connects: bool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(cmd) = self.server.poll_command() {
            match cmd {
                Command::SendToClient { five_tuple, data } => {
                    if Some(five_tuple) == to {
                        out.push(data);
                    }
                }
                Command::BindRelay { relay, .. } => {
                    assert!(self.bound.insert(relay), "{relay} bound twice");
                    self.server.handle_relay_bound(self.now, relay, true);
                }
                Command::FreeRelay { relay } => {
                    assert!(self.bound.remove(&relay), "{relay} freed but not bound");
                    // Every offer of the allocation is taken back before its socket closes.
                    assert!(
                        !self.offered.values().any(|r| *r == relay),
                        "{relay} freed while the fast path may still relay from it"
                    );
                }
                Command::OffloadChannel(c) => {
                    assert!(
                        self.bound.contains(&c.relay),
                        "offered an unbound {}",
                        c.relay
                    );
                    assert!(c.expires > self.now, "offered an expired channel");
                    self.offered
                        .insert((c.five_tuple.client.addr(), c.channel), c.relay);
                }
                Command::RemoveOffload(c) => {
                    let key = (c.five_tuple.client.addr(), c.channel);
                    assert!(
                        self.offered.remove(&key).is_some(),
                        "took back an offer never made"
                    );
                }
                Command::ConnectPeer { id, .. } => {
                    let socket = connects.then(|| Socket::open(&self.open_sockets));
                    self.server.handle_peer_connect_result(self.now, id, socket);
                }
                Command::SpliceData { .. } => {}
            }
        }
        out
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Allocate { client } => {
                let transport = if tuple(client).transport == Transport::Tcp && client % 2 == 0 {
                    6
                } else {
                    17
                };
                self.request(
                    client,
                    Method::Allocate,
                    &[Attribute::RequestedTransport(transport)],
                );
            }
            Op::Refresh { client, lifetime } => {
                self.request(client, Method::Refresh, &[Attribute::Lifetime(lifetime)]);
            }
            Op::Permission { client, peer: p } => {
                self.request(
                    client,
                    Method::CreatePermission,
                    &[Attribute::XorPeerAddress(peer(p))],
                );
            }
            Op::Channel {
                client,
                channel,
                peer: p,
            } => {
                self.request(
                    client,
                    Method::ChannelBind,
                    &[
                        Attribute::ChannelNumber(channel),
                        Attribute::XorPeerAddress(peer(p)),
                    ],
                );
            }
            Op::Connect {
                client,
                peer: p,
                succeeds,
            } => {
                self.tid += 1;
                let mut id = [0u8; 12];
                id[..8].copy_from_slice(&self.tid.to_be_bytes());
                let auth = &self.auth[usize::from(client)];
                let req = encode_request(
                    Method::Connect,
                    Class::Request,
                    TransactionId(id),
                    &[Attribute::XorPeerAddress(peer(p))],
                    Some(auth),
                )
                .unwrap();
                self.server
                    .handle_client_input(self.now, tuple(client), &req);
                self.pump(None, succeeds);
            }
            Op::PeerConnects { client, peer: p } => {
                if let Some(a) = self.server.allocations().get(&tuple(client)) {
                    let relay = a.relay();
                    let socket = Socket::open(&self.open_sockets);
                    self.server.handle_peer_tcp_accepted(
                        self.now,
                        relay,
                        PeerSocket::new(peer(p)),
                        socket,
                    );
                    self.pump(None, true);
                }
            }
            Op::Disconnect { client } => {
                self.server.handle_client_disconnected(&tuple(client));
                self.pump(None, true);
            }
            Op::Advance { secs } => {
                // At least the server's sweep interval (1 s), so the sweep is always due.
                let secs = secs.max(1);
                self.now += Duration::from_secs(secs);
                self.unix += secs;
                self.server.set_unix_time(self.now, self.unix * 1000);
                prop_assert_sweep_due(self.server.poll_timeout(), self.now);
                self.server.handle_timeout(self.now);
                self.pump(None, true);
            }
        }
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let allocations = self.server.allocations();
        let mut relays = BTreeSet::new();
        for a in allocations.iter() {
            for r in a.relays() {
                prop_assert!(relays.insert(r), "{r} belongs to two allocations");
            }
            // Time only moves in Advance, which always reaches a due sweep.
            prop_assert!(a.expires > self.now, "an allocation outlived its lifetime");
        }
        prop_assert_eq!(&relays, &self.bound, "driver's sockets vs allocations");
        prop_assert_eq!(self.ports.in_use(), relays.len(), "ports in use");
        prop_assert_eq!(self.quota.total(), allocations.len(), "quota");
        let owned: usize = allocations
            .iter()
            .filter(|a| a.is_tcp())
            .map(|a| self.tcp.owned_by(&a.five_tuple()))
            .sum();
        prop_assert_eq!(
            owned,
            self.tcp.len(),
            "RFC 6062 connections without allocations"
        );
        // The stand-in driver answers Connects at once, so every entry holds its socket.
        prop_assert_eq!(
            self.open_sockets.load(Ordering::SeqCst),
            self.tcp.len(),
            "peer sockets open vs the server's table"
        );
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn resources_follow_allocations(ops in proptest::collection::vec(op(), 1..60)) {
        let mut w = World::new();
        w.check()?;
        for op in &ops {
            w.apply(op);
            w.check()?;
        }
        // Everything ends: half the clients delete their allocations, the rest expire.
        for c in 0..CLIENTS / 2 {
            w.apply(&Op::Refresh { client: c, lifetime: 0 });
        }
        w.apply(&Op::Advance { secs: 3601 });
        w.apply(&Op::Advance { secs: 60 });
        w.check()?;
        prop_assert!(w.server.allocations().is_empty());
        prop_assert_eq!(w.ports.in_use(), 0);
        prop_assert_eq!(w.quota.total(), 0);
        prop_assert_eq!(w.tcp.len(), 0);
        prop_assert_eq!(w.open_sockets.load(Ordering::SeqCst), 0);
        prop_assert!(w.bound.is_empty());
    }
}
