//! Scenario tests of the server on a virtual clock.

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
}

fn tuple(port: u16) -> FiveTuple {
    FiveTuple {
        client: ClientSocket::new(SocketAddr::from(([198, 51, 100, 7], port))),
        server: SocketAddr::from(([192, 0, 2, 1], 3478)),
        transport: Transport::Udp,
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
                ports: Arc::new(PortPool::new(ports, 42)),
                tcp: Arc::new(crate::allocation::tcp::TcpConnections::new(9)),
            },
            WallClock {
                at: now,
                unix_secs: UNIX_START,
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
        }
    }

    fn new() -> Self {
        let config = ServerConfig {
            relay_ip_v4: Some("192.0.2.1".parse().unwrap()),
            ..ServerConfig::default()
        };
        Self::with(config, Quota::new(0, 0), 50000..=50099)
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
        Self::with(config, Quota::new(0, 0), 50000..=50099)
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

#[test]
fn binding_reports_reflexive_address() {
    let mut h = Harness::new();
    let resp = h.request(Method::Binding, &[], None);
    let m = Message::parse(&resp).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert!(m.has_fingerprint() && m.fingerprint_ok());
    assert_eq!(
        m.attribute(types::XOR_MAPPED_ADDRESS).unwrap().unwrap(),
        Attribute::XorMappedAddress(h.tuple.client.addr())
    );
}

#[test]
fn allocate_challenge_then_success() {
    let mut h = Harness::new();
    let resp = h.request(Method::Allocate, &[Attribute::RequestedTransport(17)], None);
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), Some(401));
    assert!(matches!(
        m.attribute(types::REALM),
        Some(Ok(Attribute::Realm("geoturn")))
    ));
    let Some(Ok(Attribute::Nonce(nonce))) = m.attribute(types::NONCE) else {
        panic!()
    };
    assert!(nonce.starts_with("obMatJos2"));
    assert!(m.get(types::PASSWORD_ALGORITHMS).is_some());
    assert!(!m.has_integrity(), "a 401 must not be signed");

    let (_, relayed) = h.allocate();
    assert_eq!(
        relayed.ip(),
        "192.0.2.1".parse::<std::net::IpAddr>().unwrap()
    );
    assert!((50000..=50099).contains(&relayed.port()));
    assert_eq!(h.bound, vec![RelayAddr::new(relayed)]);
    assert_eq!(h.server.allocations().len(), 1);
}

#[test]
fn retransmitted_allocate_gets_identical_response_and_new_one_gets_437() {
    let mut h = Harness::new();
    let (auth, _) = h.allocate();
    // Build an Allocate, send it twice.
    let tid = h.tid();
    let req = encode_request(
        Method::Allocate,
        Class::Request,
        tid,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    )
    .unwrap();
    let first = h.request_raw(&req);
    assert_eq!(code_of(&first), Some(437));
    let again = h.request_raw(&req);
    assert_eq!(first, again);

    // The original Allocate's retransmission gets the original success, not 437.
    let mut h = Harness::new();
    let mut auth = h.credentials(3600);
    h.challenge(&mut auth, 17);
    let tid = h.tid();
    let req = encode_request(
        Method::Allocate,
        Class::Request,
        tid,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    )
    .unwrap();
    let a = h.request_raw(&req);
    let b = h.request_raw(&req);
    assert_eq!(code_of(&a), None);
    assert_eq!(a, b);
    assert_eq!(h.bound.len(), 1, "a retransmission must not allocate twice");
}

#[test]
fn wrong_password_and_expired_username_get_401() {
    let mut h = Harness::new();
    let mut auth = h.credentials(3600);
    h.challenge(&mut auth, 17);
    let mut wrong = auth.clone();
    wrong.password = "bm90IHRoZSBwYXNzd29yZA==".into();
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&wrong),
    );
    assert_eq!(code_of(&resp), Some(401));

    // A credential that expired a second ago, correctly signed, is refused.
    let old = RestCredential::mint(SECRET, "alice", UNIX_START - 100, 99);
    let expired = ClientAuth {
        username: old.username,
        password: old.password,
        ..auth.clone()
    };
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&expired),
    );
    assert_eq!(code_of(&resp), Some(401));
    assert_eq!(h.server.stats().auth_failures.get("expired"), Some(&1));
    assert_eq!(
        h.server.stats().auth_failures.get("bad_integrity"),
        Some(&1)
    );
    assert!(h.server.allocations().is_empty());
}

#[test]
fn stale_nonce_gets_438_with_fresh_nonce() {
    let mut h = Harness::new();
    let mut auth = h.credentials(7200);
    h.challenge(&mut auth, 17);
    h.advance(601);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), Some(438));
    let old_nonce = auth.nonce.clone();
    assert!(auth.update_from_challenge(&m));
    assert_ne!(auth.nonce, old_nonce);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), None);
}

#[test]
fn unknown_comprehension_required_attribute_gets_420() {
    let mut h = Harness::new();
    let resp = h.request(
        Method::Allocate,
        &[
            Attribute::RequestedTransport(17),
            Attribute::Unknown {
                typ: 0x7ABC,
                value: b"zz",
            },
        ],
        None,
    );
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), Some(420));
    assert_eq!(
        m.attribute(types::UNKNOWN_ATTRIBUTES).unwrap().unwrap(),
        Attribute::UnknownAttributes(&[0x7A, 0xBC])
    );
}

#[test]
fn unsupported_transport_gets_442_and_missing_transport_400() {
    let mut h = Harness::new();
    let mut auth = h.credentials(3600);
    h.challenge(&mut auth, 6);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(99)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(442));
    let resp = h.request(Method::Allocate, &[], Some(&auth));
    assert_eq!(code_of(&resp), Some(400));
}

#[test]
fn send_indication_and_data_indication_round_trip() {
    let mut h = Harness::new();
    let (auth, relayed) = h.allocate();
    let send = encode_request(
        Method::Send,
        Class::Indication,
        TransactionId([9; 12]),
        &[Attribute::XorPeerAddress(peer()), Attribute::Data(b"hello")],
        None,
    )
    .unwrap();
    // No permission yet: dropped.
    assert!(h.input(&send).is_none());
    assert_eq!(h.server.stats().drops(DropReason::NoPermission), 1);
    h.allow_peer(&auth, peer());
    let (relay, to, payload) = h.input(&send).unwrap();
    assert_eq!(relay.addr(), relayed);
    assert_eq!(to.addr(), peer());
    assert_eq!(payload, b"hello");

    // The peer answers: the client gets a Data indication.
    let mut buf = [0u8; 2048];
    buf[PEER_HEADROOM..PEER_HEADROOM + 3].copy_from_slice(b"hey");
    let out = h
        .server
        .handle_peer_input(h.now, relay, PeerSocket::new(peer()), &mut buf, 3)
        .unwrap();
    assert_eq!(out.five_tuple, h.tuple);
    let m = Message::parse(&buf[out.range]).unwrap();
    assert_eq!((m.method(), m.class()), (Method::Data, Class::Indication));
    assert_eq!(
        m.attribute(types::XOR_PEER_ADDRESS).unwrap().unwrap(),
        Attribute::XorPeerAddress(peer())
    );
    assert_eq!(
        m.attribute(types::DATA).unwrap().unwrap(),
        Attribute::Data(b"hey")
    );

    // Another peer IP has no permission.
    let stranger = SocketAddr::from(([203, 0, 113, 51], 7000));
    assert!(
        h.server
            .handle_peer_input(h.now, relay, PeerSocket::new(stranger), &mut buf, 3)
            .is_none()
    );
    // A different port on the permitted IP is fine: permissions ignore ports.
    let other_port = SocketAddr::from(([203, 0, 113, 50], 7001));
    assert!(
        h.server
            .handle_peer_input(h.now, relay, PeerSocket::new(other_port), &mut buf, 3)
            .is_some()
    );
}

#[test]
fn data_indication_for_ipv6_peer_and_odd_length() {
    let config = ServerConfig {
        relay_ip_v4: None,
        relay_ip_v6: Some("2001:db8::1".parse().unwrap()),
        ..ServerConfig::default()
    };
    let mut h = Harness::with(config, Quota::new(0, 0), 50000..=50010);
    let mut auth = h.credentials(3600);
    h.challenge(&mut auth, 17);
    // Default family IPv4 is unavailable: 440.
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(440));
    let resp = h.request(
        Method::Allocate,
        &[
            Attribute::RequestedTransport(17),
            Attribute::RequestedAddressFamily(crate::stun::AddressFamily::V6),
        ],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), None);
    let v6peer: SocketAddr = "[2001:db8:99::5]:9999".parse().unwrap();
    // An IPv4 peer on an IPv6 allocation: 443.
    let resp = h.request(
        Method::CreatePermission,
        &[Attribute::XorPeerAddress(peer())],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(443));
    h.allow_peer(&auth, v6peer);
    let relay = h.bound[0];
    let mut buf = [0u8; 2048];
    buf[PEER_HEADROOM..PEER_HEADROOM + 5].copy_from_slice(b"odd!!");
    let out = h
        .server
        .handle_peer_input(h.now, relay, PeerSocket::new(v6peer), &mut buf, 5)
        .unwrap();
    let m = Message::parse(&buf[out.range]).unwrap();
    assert_eq!(
        m.attribute(types::XOR_PEER_ADDRESS).unwrap().unwrap(),
        Attribute::XorPeerAddress(v6peer)
    );
    assert_eq!(
        m.attribute(types::DATA).unwrap().unwrap(),
        Attribute::Data(b"odd!!")
    );
}

#[test]
fn forbidden_peers_get_403() {
    let mut h = Harness::new();
    let (auth, _) = h.allocate();
    for bad in [
        "127.0.0.1:80",
        "10.0.0.1:80",
        "169.254.169.254:80",
        "192.168.1.1:5",
    ] {
        let resp = h.request(
            Method::CreatePermission,
            &[Attribute::XorPeerAddress(bad.parse().unwrap())],
            Some(&auth),
        );
        assert_eq!(code_of(&resp), Some(403), "{bad}");
        let resp = h.request(
            Method::ChannelBind,
            &[
                Attribute::ChannelNumber(0x4000),
                Attribute::XorPeerAddress(bad.parse().unwrap()),
            ],
            Some(&auth),
        );
        assert_eq!(code_of(&resp), Some(403), "{bad}");
    }
    assert_eq!(h.server.stats().peers_denied, 8);
    // A request mixing a good and a bad peer installs neither.
    let resp = h.request(
        Method::CreatePermission,
        &[
            Attribute::XorPeerAddress(peer()),
            Attribute::XorPeerAddress("127.0.0.1:1".parse().unwrap()),
        ],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(403));
    let send = encode_request(
        Method::Send,
        Class::Indication,
        TransactionId([9; 12]),
        &[Attribute::XorPeerAddress(peer()), Attribute::Data(b"x")],
        None,
    )
    .unwrap();
    assert!(h.input(&send).is_none());
}

#[test]
fn channel_bind_and_channel_data_both_ways() {
    let mut h = Harness::new();
    let (auth, _) = h.allocate();
    let resp = h.channel_bind(&auth, 0x4001, peer());
    assert_eq!(code_of(&resp), None);
    // Out-of-range number and rebinding the peer to another number are refused.
    for number in [0x3FFF, 0x8000, 0xFFFF, 0x4002] {
        let resp = h.channel_bind(&auth, number, peer());
        assert_eq!(code_of(&resp), Some(400), "{number:#x}");
    }
    let mut frame = [0u8; 64];
    let n = crate::stun::channel_data::encode(&mut frame, 0x4001, b"media", false).unwrap();
    let (relay, to, payload) = h.input(&frame[..n]).unwrap();
    assert_eq!((to.addr(), payload.as_slice()), (peer(), &b"media"[..]));
    // Unbound channel: dropped.
    let n = crate::stun::channel_data::encode(&mut frame, 0x4009, b"media", false).unwrap();
    assert!(h.input(&frame[..n]).is_none());
    assert_eq!(h.server.stats().drops(DropReason::NoChannel), 1);

    let mut buf = [0u8; 2048];
    buf[PEER_HEADROOM..PEER_HEADROOM + 4].copy_from_slice(b"back");
    let out = h
        .server
        .handle_peer_input(h.now, relay, PeerSocket::new(peer()), &mut buf, 4)
        .unwrap();
    let cd = ChannelData::parse(&buf[out.range]).unwrap();
    assert_eq!((cd.channel, cd.payload), (0x4001, &b"back"[..]));
    assert_eq!(h.server.stats().packets_to_client, 1);
    assert_eq!(h.server.stats().packets_to_peer, 1);
}

#[test]
fn lifetimes_expire_on_the_virtual_clock() {
    let mut h = Harness::new();
    let (auth, relayed) = h.allocate();
    let resp = h.channel_bind(&auth, 0x4001, peer());
    assert_eq!(code_of(&resp), None);
    let mut frame = [0u8; 64];
    let n = crate::stun::channel_data::encode(&mut frame, 0x4001, b"m", false).unwrap();
    // Permission (installed by ChannelBind) expires at 300 s even though the channel lives on.
    h.advance(299);
    assert!(h.input(&frame[..n]).is_some());
    h.advance(2);
    assert!(h.input(&frame[..n]).is_none());
    // Refreshing the binding refreshes the permission.
    let resp = h.channel_bind(&auth, 0x4001, peer());
    assert_eq!(code_of(&resp), None);
    assert!(h.input(&frame[..n]).is_some());
    // The allocation expires after its 600 s default lifetime.
    h.advance(298);
    assert_eq!(h.server.allocations().len(), 1);
    h.advance(2);
    assert!(h.server.allocations().is_empty());
    assert_eq!(h.freed, vec![RelayAddr::new(relayed)]);
    assert_eq!(h.server.stats().allocations_expired, 1);
}

#[test]
fn refresh_extends_and_zero_deletes() {
    let mut h = Harness::new();
    let (mut auth, relayed) = h.allocate();
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(99_999)], Some(&auth));
    let m = Message::parse(&resp).unwrap();
    // Capped at the 3600 s maximum.
    assert_eq!(
        m.attribute(types::LIFETIME).unwrap().unwrap(),
        Attribute::Lifetime(3600)
    );
    h.advance(3000);
    assert_eq!(h.server.allocations().len(), 1);
    // The nonce is long stale by now: 438, then the retry with the fresh nonce succeeds.
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(0)], Some(&auth));
    assert_eq!(code_of(&resp), Some(438));
    auth.update_from_challenge(&Message::parse(&resp).unwrap());
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(0)], Some(&auth));
    assert_eq!(code_of(&resp), None);
    assert!(h.server.allocations().is_empty());
    assert_eq!(h.freed, vec![RelayAddr::new(relayed)]);
    // Refresh without an allocation: 437.
    let resp = h.request(Method::Refresh, &[], Some(&auth));
    assert_eq!(code_of(&resp), Some(437));
}

#[test]
fn another_user_on_the_same_five_tuple_gets_441() {
    let mut h = Harness::new();
    let (auth, _) = h.allocate();
    let c = RestCredential::mint(SECRET, "mallory", UNIX_START, 3600);
    let other = ClientAuth {
        username: c.username,
        password: c.password,
        ..auth
    };
    let resp = h.request(Method::Refresh, &[], Some(&other));
    assert_eq!(code_of(&resp), Some(441));
}

#[test]
fn quotas_give_486_and_508() {
    let config = ServerConfig {
        relay_ip_v4: Some("192.0.2.1".parse().unwrap()),
        ..ServerConfig::default()
    };
    let mut h = Harness::with(config, Quota::new(1, 2), 50000..=50099);
    h.allocate();
    h.tuple = tuple(40001);
    let mut auth = h.credentials(3600);
    h.challenge(&mut auth, 17);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(486));
    let c = RestCredential::mint(SECRET, "bob", UNIX_START, 3600);
    let bob = ClientAuth {
        username: c.username,
        password: c.password,
        ..auth.clone()
    };
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&bob),
    );
    assert_eq!(code_of(&resp), None);
    h.tuple = tuple(40002);
    let c = RestCredential::mint(SECRET, "carol", UNIX_START, 3600);
    let mut carol = ClientAuth {
        username: c.username,
        password: c.password,
        ..auth
    };
    h.challenge(&mut carol, 17);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&carol),
    );
    assert_eq!(code_of(&resp), Some(508));
}

#[test]
fn port_range_exhaustion_gives_508_and_bind_failures_retry() {
    let config = ServerConfig {
        relay_ip_v4: Some("192.0.2.1".parse().unwrap()),
        ..ServerConfig::default()
    };
    let mut h = Harness::with(config, Quota::new(0, 0), 50000..=50002);
    h.fail_binds = 2;
    h.allocate(); // two ports fail to bind, the third works
    assert_eq!(h.bound.len(), 1);
    h.tuple = tuple(40001);
    let mut auth = h.credentials(3600);
    h.challenge(&mut auth, 17);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), None);
    h.tuple = tuple(40002);
    h.challenge(&mut auth, 17);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), None);
    h.tuple = tuple(40003);
    h.challenge(&mut auth, 17);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(508));
}

#[test]
fn sha256_password_algorithm_and_integrity() {
    use crate::auth::IntegrityKey;
    use crate::stun::integrity::long_term_key_sha256;
    use crate::stun::{MessageType, MessageWriter, PasswordAlgorithm};
    let mut h = Harness::new();
    let mut auth = h.credentials(3600);
    let challenge = h.request(Method::Allocate, &[Attribute::RequestedTransport(17)], None);
    let cm = Message::parse(&challenge).unwrap();
    auth.update_from_challenge(&cm);
    let offered = cm.get(types::PASSWORD_ALGORITHMS).unwrap().to_vec();
    let key = long_term_key_sha256(&auth.username, &auth.realm, &auth.password);
    let build = |tid: TransactionId, algs: &[u8]| {
        let mut buf = [0u8; 512];
        let mut w = MessageWriter::new(
            &mut buf,
            MessageType::new(Method::Allocate, Class::Request),
            tid,
        )
        .unwrap();
        w.add(&Attribute::RequestedTransport(17)).unwrap();
        w.add(&Attribute::Username(&auth.username)).unwrap();
        w.add(&Attribute::Realm(&auth.realm)).unwrap();
        w.add(&Attribute::Nonce(&auth.nonce)).unwrap();
        w.add(&Attribute::PasswordAlgorithms(algs)).unwrap();
        w.add(&Attribute::PasswordAlgorithm(PasswordAlgorithm::SHA256))
            .unwrap();
        IntegrityKey::Sha256Sha256(key).sign(&mut w).unwrap();
        let n = w.finish();
        buf[..n].to_vec()
    };
    // A downgraded list (SHA-256 only, MD5 removed) is refused with 400.
    let tid = h.tid();
    let resp = h.request_raw(&build(tid, &[0, 2, 0, 0]));
    assert_eq!(code_of(&resp), Some(400));
    let tid = h.tid();
    let resp = h.request_raw(&build(tid, &offered));
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), None);
    assert!(m.has_integrity_sha256());
    assert!(m.verify_integrity_sha256(&key));
}

#[test]
fn garbage_does_not_disturb_a_live_allocation() {
    let mut h = Harness::new();
    let (auth, _) = h.allocate();
    h.allow_peer(&auth, peer());
    let garbage: [&[u8]; 6] = [
        b"",
        b"\x00",
        b"\x00\x01\x00\x08\x21\x12\xa4\x42garbagegarbage",
        b"\x40\x01\xff\xff",
        b"\xff\xff\xff\xff\xff\xff",
        &[0u8; 600],
    ];
    for g in garbage {
        assert!(h.input(g).is_none());
        assert!(h.pump().is_empty(), "garbage must not be answered");
    }
    assert_eq!(h.server.allocations().len(), 1);
    let send = encode_request(
        Method::Send,
        Class::Indication,
        TransactionId([9; 12]),
        &[
            Attribute::XorPeerAddress(peer()),
            Attribute::Data(b"still here"),
        ],
        None,
    )
    .unwrap();
    assert!(h.input(&send).is_some());
}

#[test]
fn draining_redirects_new_allocations_and_keeps_old_ones() {
    let mut h = Harness::new();
    let (mut auth, _) = h.allocate();
    let deadline = h.now + Duration::from_secs(100);
    h.server.set_drain(Some(Drain {
        deadline,
        alternates: vec![
            "[2001:db8::9]:3478".parse().unwrap(),
            "192.0.2.9:3478".parse().unwrap(),
        ],
    }));
    // Existing allocation: Refresh works, capped at the drain deadline.
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(3600)], Some(&auth));
    let m = Message::parse(&resp).unwrap();
    assert_eq!(
        m.attribute(types::LIFETIME).unwrap().unwrap(),
        Attribute::Lifetime(100)
    );
    h.allow_peer(&auth, peer());
    // New allocation: 300 with the sibling of the same family, signed.
    h.tuple = tuple(40001);
    h.challenge(&mut auth, 17);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), Some(300));
    assert_eq!(
        m.attribute(types::ALTERNATE_SERVER).unwrap().unwrap(),
        Attribute::AlternateServer("192.0.2.9:3478".parse().unwrap())
    );
    assert!(m.verify_integrity(&auth.key()));
    assert_eq!(h.server.stats().redirects, 1);
    // No sibling known: 403.
    h.server.set_drain(Some(Drain {
        deadline,
        alternates: vec![],
    }));
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(403));
    // The old allocation expires at the deadline.
    h.advance(101);
    assert!(h.server.allocations().is_empty());
}

#[test]
fn even_port_with_reservation_then_reservation_token() {
    let mut h = Harness::new();
    let mut auth = h.credentials(3600);
    h.challenge(&mut auth, 17);
    let resp = h.request(
        Method::Allocate,
        &[
            Attribute::RequestedTransport(17),
            Attribute::EvenPort { reserve: true },
        ],
        Some(&auth),
    );
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), None);
    let Some(Ok(Attribute::XorRelayedAddress(rtp))) = m.attribute(types::XOR_RELAYED_ADDRESS)
    else {
        panic!()
    };
    assert_eq!(rtp.port() % 2, 0);
    let Some(Ok(Attribute::ReservationToken(token))) = m.attribute(types::RESERVATION_TOKEN) else {
        panic!("no token")
    };
    // The RTCP allocation from another client port claims the reserved port.
    h.tuple = tuple(40001);
    h.challenge(&mut auth, 17);
    let resp = h.request(
        Method::Allocate,
        &[
            Attribute::RequestedTransport(17),
            Attribute::ReservationToken(token),
        ],
        Some(&auth),
    );
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), None);
    let Some(Ok(Attribute::XorRelayedAddress(rtcp))) = m.attribute(types::XOR_RELAYED_ADDRESS)
    else {
        panic!()
    };
    assert_eq!(rtcp.port(), rtp.port() + 1);
    // The token is single use.
    h.tuple = tuple(40002);
    h.challenge(&mut auth, 17);
    let resp = h.request(
        Method::Allocate,
        &[
            Attribute::RequestedTransport(17),
            Attribute::ReservationToken(token),
        ],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(508));
}

#[test]
fn a_closed_stream_connection_takes_its_allocation_along() {
    let mut h = Harness::new();
    h.tuple.transport = Transport::Tcp;
    let (_, relayed) = h.allocate();
    let other = tuple(40001);
    h.server.handle_client_disconnected(&other);
    assert_eq!(
        h.server.allocations().len(),
        1,
        "only the closed connection's allocation"
    );
    let t = h.tuple;
    h.server.handle_client_disconnected(&t);
    h.pump();
    assert!(h.server.allocations().is_empty());
    assert_eq!(h.freed, vec![RelayAddr::new(relayed)]);
}

#[test]
fn revoked_users_lose_allocations_and_are_refused() {
    let mut h = Harness::new();
    let (auth, relayed) = h.allocate();
    let until = h.now + Duration::from_secs(3600);
    h.server.revoke_user(h.now, "bob", until);
    assert_eq!(
        h.server.allocations().len(),
        1,
        "only alice's own revocation counts"
    );
    h.server.revoke_user(h.now, "alice", until);
    h.pump();
    assert!(h.server.allocations().is_empty());
    assert_eq!(h.freed, vec![RelayAddr::new(relayed)]);
    h.tuple = tuple(40001);
    let mut auth = ClientAuth { ..auth };
    h.challenge(&mut auth, 17);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(403));
}

#[test]
fn unauthenticated_responses_are_rate_limited_per_source() {
    let mut h = Harness::with_unauth_limit(10, 5);
    let mut answered = 0;
    for _ in 0..10 {
        let tid = h.tid();
        let req = encode_request(Method::Binding, Class::Request, tid, &[], None).unwrap();
        assert!(h.input(&req).is_none());
        answered += h.pump().len();
    }
    assert_eq!(answered, 5);
    assert_eq!(h.server.stats().drops(DropReason::RateLimited), 5);
    // Another source is not affected, and the first recovers with time.
    h.tuple = FiveTuple {
        client: ClientSocket::new(SocketAddr::from(([198, 51, 100, 99], 1))),
        ..h.tuple
    };
    h.request(Method::Binding, &[], None);
    h.tuple = tuple(40000);
    h.advance(1);
    h.request(Method::Binding, &[], None);
}

/// A spoofed flood from a client's address spends that address's unauthenticated budget; the
/// client's own Refresh with a stale nonce still gets its 438 (its integrity verified and the
/// 5-tuple holds the allocation), so the session survives. An Allocate with a stale nonce
/// from a tuple without an allocation stays limited.
#[test]
fn a_flood_from_the_clients_address_does_not_starve_its_stale_nonce_challenge() {
    let mut h = Harness::with_unauth_limit(10, 5);
    let (mut auth, _) = h.allocate();
    // Outlive the nonce (600 s), not the allocation.
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(3600)], Some(&auth));
    assert_eq!(code_of(&resp), None);
    h.advance(601);
    let spend_the_budget = |h: &mut Harness| {
        let spoofed = FiveTuple {
            client: ClientSocket::new(SocketAddr::from(([198, 51, 100, 7], 9))),
            ..h.tuple
        };
        for i in 0..20u8 {
            let req = encode_request(
                Method::Binding,
                Class::Request,
                TransactionId([i; 12]),
                &[],
                None,
            )
            .unwrap();
            assert!(h.server.handle_client_input(h.now, spoofed, &req).is_none());
        }
        h.pump();
    };
    spend_the_budget(&mut h);
    let limited = h.server.stats().drops(DropReason::RateLimited);
    assert!(limited >= 15, "{limited}");
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(600)], Some(&auth));
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), Some(438));
    assert!(auth.update_from_challenge(&m));
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(600)], Some(&auth));
    assert_eq!(code_of(&resp), None);

    // Same user, same address, but a tuple with no allocation: its 438 is budgeted.
    h.advance(601);
    spend_the_budget(&mut h);
    h.tuple = tuple(40001);
    let tid = h.tid();
    let req = encode_request(
        Method::Allocate,
        Class::Request,
        tid,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    )
    .unwrap();
    assert!(h.input(&req).is_none());
    assert!(
        h.pump().is_empty(),
        "a budgeted 438 was sent past the limit"
    );
}

#[test]
fn a_challenge_is_at_most_four_times_the_smallest_allocate() {
    let mut h = Harness::new();
    // The smallest Allocate a client can send: header + REQUESTED-TRANSPORT, no FINGERPRINT.
    let mut buf = [0u8; 64];
    let mut w = crate::stun::MessageWriter::new(
        &mut buf,
        crate::stun::MessageType::new(Method::Allocate, Class::Request),
        TransactionId([3; 12]),
    )
    .unwrap();
    w.add(&Attribute::RequestedTransport(17)).unwrap();
    let n = w.finish();
    assert_eq!(n, 28);
    let resp = h.request_raw(&buf[..n]);
    assert_eq!(code_of(&resp), Some(401));
    assert!(
        resp.len() <= 4 * n,
        "401 of {} bytes to a {n}-byte request",
        resp.len()
    );
    // Binding: the response to a bare 20-byte request stays under twice its size.
    let tid = h.tid();
    let mut buf = [0u8; 20];
    let w = crate::stun::MessageWriter::new(
        &mut buf,
        crate::stun::MessageType::new(Method::Binding, Class::Request),
        tid,
    )
    .unwrap();
    let n = w.finish();
    let resp = h.request_raw(&buf[..n]);
    assert!(resp.len() < 2 * n, "{} bytes", resp.len());
}

#[test]
fn allocation_bandwidth_is_limited_in_both_directions() {
    let config = ServerConfig {
        relay_ip_v4: Some("192.0.2.1".parse().unwrap()),
        // 10 000 bytes/s; the burst is the 16 KiB floor.
        allocation_bps: 80_000,
        ..ServerConfig::default()
    };
    let mut h = Harness::with(config, Quota::new(0, 0), 50000..=50099);
    let (auth, _) = h.allocate();
    let resp = h.channel_bind(&auth, 0x4001, peer());
    assert_eq!(code_of(&resp), None);
    let mut frame = [0u8; 1100];
    let n = crate::stun::channel_data::encode(&mut frame, 0x4001, &[7u8; 1000], false).unwrap();
    let passed = (0..30).filter(|_| h.input(&frame[..n]).is_some()).count();
    assert_eq!(passed, 16);
    // Peer → client draws from the same bucket.
    let relay = h.bound[0];
    let mut buf = [0u8; 2048];
    assert!(
        h.server
            .handle_peer_input(h.now, relay, PeerSocket::new(peer()), &mut buf, 1000)
            .is_none()
    );
    assert_eq!(h.server.stats().drops(DropReason::OverBandwidth), 15);
    // One second later, ten more kilobytes.
    h.now += Duration::from_secs(1);
    let passed = (0..30).filter(|_| h.input(&frame[..n]).is_some()).count();
    assert_eq!(passed, 10);
}

#[test]
fn dual_stack_allocation_relays_both_families() {
    use crate::stun::AddressFamily;
    let config = ServerConfig {
        relay_ip_v4: Some("192.0.2.1".parse().unwrap()),
        relay_ip_v6: Some("2001:db8::1".parse().unwrap()),
        ..ServerConfig::default()
    };
    let mut h = Harness::with(config, Quota::new(0, 0), 50000..=50099);
    let mut auth = h.credentials(3600);
    h.challenge(&mut auth, 17);
    let resp = h.request(
        Method::Allocate,
        &[
            Attribute::RequestedTransport(17),
            Attribute::AdditionalAddressFamily(AddressFamily::V6),
        ],
        Some(&auth),
    );
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), None);
    let relayed: Vec<SocketAddr> = m
        .attributes_of(types::XOR_RELAYED_ADDRESS)
        .map(|a| match a.unwrap() {
            Attribute::XorRelayedAddress(a) => a,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(relayed.len(), 2);
    assert!(relayed[0].is_ipv4() && relayed[1].is_ipv6());
    assert_eq!(h.bound.len(), 2);
    let v6peer: SocketAddr = "[2001:db8:77::9]:5000".parse().unwrap();
    h.allow_peer(&auth, peer());
    h.allow_peer(&auth, v6peer);
    // Each family goes out of its own relayed socket.
    for (p, relay) in [(peer(), relayed[0]), (v6peer, relayed[1])] {
        let send = encode_request(
            Method::Send,
            Class::Indication,
            TransactionId([9; 12]),
            &[Attribute::XorPeerAddress(p), Attribute::Data(b"x")],
            None,
        )
        .unwrap();
        let (r, to, _) = h.input(&send).unwrap();
        assert_eq!((r.addr(), to.addr()), (relay, p));
    }
    let mut buf = [0u8; 2048];
    let out = h
        .server
        .handle_peer_input(
            h.now,
            RelayAddr::new(relayed[1]),
            PeerSocket::new(v6peer),
            &mut buf,
            0,
        )
        .unwrap();
    assert_eq!(out.five_tuple, h.tuple);
    // Refresh(0) for IPv6 only drops the IPv6 address; then Refresh(0) drops the rest.
    let resp = h.request(
        Method::Refresh,
        &[
            Attribute::Lifetime(0),
            Attribute::RequestedAddressFamily(AddressFamily::V6),
        ],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), None);
    h.pump();
    assert_eq!(h.freed, vec![RelayAddr::new(relayed[1])]);
    assert_eq!(h.server.allocations().len(), 1);
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(0)], Some(&auth));
    assert_eq!(code_of(&resp), None);
    assert_eq!(
        h.freed,
        vec![RelayAddr::new(relayed[1]), RelayAddr::new(relayed[0])]
    );
}

#[test]
fn dual_stack_falls_back_to_one_family_with_address_error_code() {
    use crate::stun::AddressFamily;
    let config = ServerConfig {
        relay_ip_v4: Some("192.0.2.1".parse().unwrap()),
        relay_ip_v6: Some("2001:db8::1".parse().unwrap()),
        ..ServerConfig::default()
    };
    let mut h = Harness::with(config, Quota::new(0, 0), 50000..=50099);
    h.fail_v6 = true;
    let mut auth = h.credentials(3600);
    h.challenge(&mut auth, 17);
    let resp = h.request(
        Method::Allocate,
        &[
            Attribute::RequestedTransport(17),
            Attribute::AdditionalAddressFamily(AddressFamily::V6),
        ],
        Some(&auth),
    );
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), None);
    assert_eq!(m.attributes_of(types::XOR_RELAYED_ADDRESS).count(), 1);
    assert_eq!(
        m.attribute(types::ADDRESS_ERROR_CODE).unwrap().unwrap(),
        Attribute::AddressErrorCode {
            family: AddressFamily::V6,
            code: 508,
            reason: "Insufficient Capacity"
        }
    );
    assert_eq!(h.server.allocations().len(), 1);
}

#[test]
fn tcp_relaying_connect_connection_bind_and_incoming_peers() {
    let mut h = Harness::new();
    let mut auth = h.credentials(3600);
    // Over UDP, a TCP allocation is refused.
    h.challenge(&mut auth, 6);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(6)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(400));
    // Over TCP it binds a TCP listening socket.
    h.tuple.transport = Transport::Tcp;
    let control = h.tuple;
    h.challenge(&mut auth, 6);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(6)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), None);
    let relay = h.bound[0];
    // No channels on a TCP allocation.
    let resp = h.channel_bind(&auth, 0x4001, peer());
    assert_eq!(code_of(&resp), Some(400));

    // Connect: the driver is asked to connect; the answer waits for it.
    let tid = h.tid();
    let req = encode_request(
        Method::Connect,
        Class::Request,
        tid,
        &[Attribute::XorPeerAddress(peer())],
        Some(&auth),
    )
    .unwrap();
    assert!(h.input(&req).is_none());
    assert!(h.pump().is_empty());
    let (id, from, to) = h.connects[0];
    assert_eq!((from, to.addr()), (relay, peer()));
    // A second Connect to the same peer: 446.
    let resp = h.request(
        Method::Connect,
        &[Attribute::XorPeerAddress(peer())],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(446));
    let (socket, socket_closed) = peer_handle();
    h.server.handle_peer_connect_result(h.now, id, Some(socket));
    let resp = h.pump().remove(0);
    let m = Message::parse(&resp).unwrap();
    assert_eq!(m.transaction_id(), &tid);
    assert_eq!(
        m.attribute(types::CONNECTION_ID).unwrap().unwrap(),
        Attribute::ConnectionId(id.get())
    );

    // ConnectionBind on a new data connection, by another user: 441; by the owner: spliced.
    h.tuple = FiveTuple {
        client: ClientSocket::new(SocketAddr::from(([198, 51, 100, 7], 40500))),
        ..control
    };
    let data_conn = h.tuple;
    let c = RestCredential::mint(SECRET, "mallory", UNIX_START, 3600);
    let mut mallory = ClientAuth {
        username: c.username,
        password: c.password,
        ..auth.clone()
    };
    let challenge = h.request(
        Method::ConnectionBind,
        &[Attribute::ConnectionId(id.get())],
        None,
    );
    mallory.update_from_challenge(&Message::parse(&challenge).unwrap());
    auth.update_from_challenge(&Message::parse(&challenge).unwrap());
    let resp = h.request(
        Method::ConnectionBind,
        &[Attribute::ConnectionId(id.get())],
        Some(&mallory),
    );
    assert_eq!(code_of(&resp), Some(441));
    let resp = h.request(
        Method::ConnectionBind,
        &[Attribute::ConnectionId(id.get())],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), None);
    assert_eq!(h.splices, vec![(data_conn, id)]);
    // A connection binds only once.
    let resp = h.request(
        Method::ConnectionBind,
        &[Attribute::ConnectionId(id.get())],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(400));

    // The driver takes the socket to splice it, and hands back the splice.
    let taken = h.server.tcp.take_socket(id).unwrap();
    assert!(h.server.tcp.set_splice(id, taken).is_ok());
    assert!(!socket_closed.load(Ordering::SeqCst));

    // An incoming peer without permission is refused (its socket closed); with one, the
    // client hears of it.
    let tcp = h.server.tcp.clone();
    let stranger = PeerSocket::new(SocketAddr::from(([203, 0, 113, 77], 1234)));
    let (socket, stranger_closed) = peer_handle();
    h.server
        .handle_peer_tcp_accepted(h.now, relay, stranger, socket);
    assert!(stranger_closed.load(Ordering::SeqCst));
    assert_eq!(tcp.len(), 1);
    let incoming = PeerSocket::new(SocketAddr::from(([203, 0, 113, 50], 9999)));
    let (socket, incoming_closed) = peer_handle();
    h.server
        .handle_peer_tcp_accepted(h.now, relay, incoming, socket);
    let attempt = h.pump().remove(0);
    let m = Message::parse(&attempt).unwrap();
    assert_eq!(
        (m.method(), m.class()),
        (Method::ConnectionAttempt, Class::Indication)
    );
    let Some(Ok(Attribute::ConnectionId(id2))) = m.attribute(types::CONNECTION_ID) else {
        panic!("no CONNECTION-ID in {m:?}");
    };
    assert_ne!(id2, id.get());
    assert_eq!(tcp.len(), 2);
    // Nobody binds it within 30 s: closed.
    h.advance(31);
    assert!(incoming_closed.load(Ordering::SeqCst));
    assert_eq!(tcp.len(), 1);
    // The allocation ends: its connections close with it, the spliced one too.
    h.tuple = control;
    // Nonces are bound to the client IP: the data connection's nonce works here too.
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(0)], Some(&auth));
    assert_eq!(code_of(&resp), None);
    assert!(socket_closed.load(Ordering::SeqCst));
    assert!(tcp.is_empty());
    assert_eq!(h.freed, vec![relay]);
}

#[test]
fn a_connect_that_completes_after_its_allocation_ended_is_closed() {
    let mut h = Harness::new();
    let mut auth = h.credentials(3600);
    h.tuple.transport = Transport::Tcp;
    h.challenge(&mut auth, 6);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(6)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), None);
    let req = encode_request(
        Method::Connect,
        Class::Request,
        h.tid(),
        &[Attribute::XorPeerAddress(peer())],
        Some(&auth),
    )
    .unwrap();
    assert!(h.input(&req).is_none());
    h.pump();
    let (id, _, _) = h.connects[0];
    // The control connection closes while the driver is still connecting.
    let control = h.tuple;
    h.server.handle_client_disconnected(&control);
    h.pump();
    let (socket, closed) = peer_handle();
    h.server.handle_peer_connect_result(h.now, id, Some(socket));
    assert!(
        closed.load(Ordering::SeqCst),
        "no ESTABLISHED socket without an owner"
    );
    assert!(h.server.tcp.is_empty());
}

#[test]
fn anycast_first_contact_is_redirected_signed_and_creates_nothing() {
    let anycast = SocketAddr::from(([203, 0, 113, 99], 3478));
    let config = ServerConfig {
        relay_ip_v4: Some("192.0.2.1".parse().unwrap()),
        anycast: vec![anycast],
        ..ServerConfig::default()
    };
    let mut h = Harness::with(config, Quota::new(0, 0), 50000..=50099);
    h.server.set_first_contact(vec![
        Alternate {
            transport: Transport::Tls,
            addr: "192.0.2.10:5349".parse().unwrap(),
            domain: Some("eu.turn.example".into()),
        },
        Alternate {
            transport: Transport::Udp,
            addr: "[2001:db8::10]:3478".parse().unwrap(),
            domain: None,
        },
        Alternate {
            transport: Transport::Udp,
            addr: "192.0.2.10:3478".parse().unwrap(),
            domain: None,
        },
    ]);
    h.tuple.server = anycast;
    // Binding is answered as anywhere else.
    let resp = h.request(Method::Binding, &[], None);
    assert_eq!(Message::parse(&resp).unwrap().class(), Class::Success);
    // Unauthenticated: the usual 401, never a 300 a third party could have sent.
    let mut auth = h.credentials(3600);
    let resp = h.request(Method::Allocate, &[Attribute::RequestedTransport(17)], None);
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), Some(401));
    assert!(m.get(types::ALTERNATE_SERVER).is_none());
    assert!(auth.update_from_challenge(&m));
    // Authenticated: 300 to the unicast relay of the same transport and family, signed.
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), Some(300));
    assert!(m.verify_integrity(&auth.key()));
    assert_eq!(
        m.attribute(types::ALTERNATE_SERVER).unwrap().unwrap(),
        Attribute::AlternateServer("192.0.2.10:3478".parse().unwrap())
    );
    assert!(m.get(types::ALTERNATE_DOMAIN).is_none());
    // Nothing was created: no relayed port bound, no allocation, no quota used.
    assert!(h.pump().is_empty());
    assert!(h.bound.is_empty() && h.server.allocations().is_empty());
    assert_eq!(h.server.stats().first_contact_redirects, 1);
    // Refresh on the anycast address finds no allocation.
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(600)], Some(&auth));
    assert_eq!(code_of(&resp), Some(437));
    // TLS first contact: the TLS target, with ALTERNATE-DOMAIN for its certificate.
    h.tuple.transport = Transport::Tls;
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), Some(300));
    assert_eq!(
        m.attribute(types::ALTERNATE_SERVER).unwrap().unwrap(),
        Attribute::AlternateServer("192.0.2.10:5349".parse().unwrap())
    );
    assert_eq!(
        m.attribute(types::ALTERNATE_DOMAIN).unwrap().unwrap(),
        Attribute::AlternateDomain("eu.turn.example")
    );
    assert!(m.verify_integrity(&auth.key()));
    // No target for TCP: 403, still nothing created.
    h.tuple.transport = Transport::Tcp;
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(403));
    assert_eq!(h.server.stats().first_contact_refused, 1);
    assert!(h.server.allocations().is_empty());
    // The unicast listener still allocates.
    h.tuple = tuple(40002);
    let (_, relayed) = h.allocate();
    assert_eq!(
        relayed.ip(),
        "192.0.2.1".parse::<std::net::IpAddr>().unwrap()
    );
}
