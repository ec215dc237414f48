//! Drives the whole sans-IO TURN server with fuzzed input: raw packets from clients and peers,
//! and requests with fuzzed methods and attributes that the target signs with valid
//! credentials, so the fuzzer reaches every request handler behind authentication. The server
//! must never panic, whatever arrives; time moves only as the input says.
//!
//! Every execution is independent and bounded: a fresh `Server` (and fresh shared tables) per
//! input, nothing mutable kept between inputs, and at most [`MAX_OPS`] operations per input,
//! however long the input is. Only constants are computed once: the credential, the realm and
//! the nonce a client learns from its first 401 (a pure function of the fixed nonce key,
//! client address and wall clock), so no input pays for that handshake again.
//!
//! Input: a sequence of operations, each `op` (1 byte), `len` (2 bytes, big endian), `body`
//! (`len` bytes, capped at 1500 and at what is left). In `op`, bits 0-2 pick the operation,
//! bits 3-4 the client (four ports; even: UDP, odd: TCP) or the relayed address, and bit 7
//! makes the driver report failure (relayed socket not bound, peer not reached).
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use geoturn_relay_proto::allocation::ports::PortPool;
use geoturn_relay_proto::allocation::quota::Quota;
use geoturn_relay_proto::allocation::tcp::{PeerHandle, TcpConnections};
use geoturn_relay_proto::client::{ClientAuth, encode_request};
use geoturn_relay_proto::server::PEER_HEADROOM;
use geoturn_relay_proto::stun::integrity::long_term_key_md5;
use geoturn_relay_proto::stun::{
    Attribute, Class, Message, MessageType, MessageWriter, Method, TransactionId,
};
use geoturn_relay_proto::types::FiveTuple;
use geoturn_relay_proto::{
    ClientSocket, Command, PeerSocket, RelayAddr, Server, ServerConfig, SharedTables, Transport,
    WallClock,
};
use geoturn_shared::{RestCredential, SecretSet};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzz-secret-0123456789";
const UNIX: u64 = 1_800_000_000;
/// Operations per input. Each one costs a few HMACs (sign, verify, nonce, response) under the
/// sanitizer, ~15 µs: without a cap an input of 4 KiB holds over a thousand and the rate
/// falls as libFuzzer's length limit grows (3.02M executions in 1200 s, ending near 2500/s).
/// 64 is far more than any handler needs to be reached (Allocate, CreatePermission,
/// ChannelBind, Connect, ConnectionBind, data, Refresh, expiry) and covers the per-user quota
/// (4), the relayed ports (16) and the transaction cache's eviction (set to 16 below).
const MAX_OPS: usize = 64;

fn tuple(i: u8) -> FiveTuple {
    FiveTuple {
        client: ClientSocket::new(SocketAddr::from((
            [198, 51, 100, 7],
            40000 + u16::from(i % 4),
        ))),
        server: SocketAddr::from(([192, 0, 2, 1], 3478)),
        transport: if i % 2 == 0 {
            Transport::Udp
        } else {
            Transport::Tcp
        },
    }
}

fn config() -> ServerConfig {
    ServerConfig {
        relay_ip_v4: Some("192.0.2.1".parse().unwrap()),
        relay_ip_v6: Some("2001:db8::1".parse().unwrap()),
        peer_policy: geoturn_relay_proto::peer_policy::PeerPolicy::new(
            vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
            vec![],
        ),
        allocation_bps: 1_000_000,
        // Small enough that eviction happens within MAX_OPS requests.
        transaction_cache_size: 16,
        ..ServerConfig::default()
    }
}

fn new_server(config: &ServerConfig, now: Instant) -> Server {
    Server::new(
        config.clone(),
        SecretSet::from_values([SECRET]),
        SharedTables {
            quota: Arc::new(Quota::new(4, 0, 16)),
            ports: Arc::new(PortPool::new(50000..=50015, [1; 32])),
            tcp: Arc::new(TcpConnections::new(3)),
            revoked: Arc::default(),
        },
        WallClock {
            at: now,
            unix_ms: UNIX * 1000,
        },
    )
}

/// What stays the same for every input.
struct Fixture {
    config: ServerConfig,
    /// Credential, realm and nonce as a client has them after its first 401.
    auth: ClientAuth,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let config = config();
        let cred = RestCredential::mint(SECRET, "fuzz", UNIX, 3600);
        let mut auth = ClientAuth {
            username: cred.username,
            password: cred.password,
            realm: String::new(),
            nonce: String::new(),
        };
        // Learn a nonce the way a client does, from a server of its own: nonces are stateless
        // (an HMAC of the client's IP and expiry under the fixed nonce key), so every fresh
        // server at the same wall clock accepts it.
        let now = Instant::now();
        let mut server = new_server(&config, now);
        let probe = encode_request(
            Method::Allocate,
            Class::Request,
            TransactionId([1; 12]),
            &[Attribute::RequestedTransport(17)],
            None,
        )
        .unwrap();
        server.handle_client_input(now, tuple(0), &probe);
        while let Some(cmd) = server.poll_command() {
            if let Command::SendToClient { data, .. } = cmd
                && let Ok(m) = Message::parse(&data)
            {
                auth.update_from_challenge(&m);
            }
        }
        assert!(!auth.nonce.is_empty(), "the probe earned no challenge");
        Fixture { config, auth }
    })
}

fn drain(server: &mut Server, now: Instant, bound: &mut Vec<RelayAddr>, ok: bool) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    // Bounded: every command comes from input already consumed.
    for _ in 0..1000 {
        let Some(cmd) = server.poll_command() else {
            break;
        };
        match cmd {
            Command::SendToClient { data, .. } => out.push(data),
            Command::BindRelay { relay, .. } => {
                if ok {
                    bound.push(relay);
                }
                server.handle_relay_bound(now, relay, ok);
            }
            Command::ConnectPeer { id, .. } => {
                let socket = ok.then(|| PeerHandle::new(()));
                server.handle_peer_connect_result(now, id, socket);
            }
            _ => {}
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let start = Instant::now();
    let mut now = start;
    let mut server = new_server(&fx.config, now);
    // The client's view: the nonce is re-learned from 438 Stale Nonce answers after time passes,
    // as a real client does, so handlers stay reachable after the first nonce expires.
    let mut auth = ClientAuth {
        username: fx.auth.username.clone(),
        password: fx.auth.password.clone(),
        realm: fx.auth.realm.clone(),
        nonce: fx.auth.nonce.clone(),
    };
    let key = long_term_key_md5(&auth.username, &auth.realm, &auth.password);

    let mut input = data;
    let mut tid = 2u8;
    let mut bound = Vec::new();
    let mut buf = vec![0u8; PEER_HEADROOM + 2048 + 8];
    let mut msg = vec![0u8; 2048];
    for _ in 0..MAX_OPS {
        if input.len() < 3 {
            break;
        }
        let op = input[0];
        let len = usize::from(u16::from_be_bytes([input[1], input[2]]))
            .min(input.len() - 3)
            .min(1500);
        let body = &input[3..3 + len];
        input = &input[3 + len..];
        let ok = op & 0x80 == 0;
        match op & 0x07 {
            // A raw packet from one of four clients.
            0 => {
                if let Some(out) = server.handle_client_input(now, tuple(op >> 3), body) {
                    assert!(
                        out.range.end <= body.len(),
                        "forward outside the client's packet"
                    );
                }
            }
            // A request with a fuzzed method and attribute section, properly signed.
            1 if body.len() >= 2 => {
                let method = Method::from_number(u16::from_be_bytes([body[0], body[1]]) & 0x0FFF);
                tid = tid.wrapping_add(1);
                let Ok(mut w) = MessageWriter::new(
                    &mut msg,
                    MessageType::new(method, Class::Request),
                    TransactionId([tid; 12]),
                ) else {
                    continue;
                };
                let mut attrs = &body[2..];
                while attrs.len() >= 2 {
                    let t = u16::from_be_bytes([attrs[0], attrs[1]]);
                    let vlen = usize::from(attrs.get(2).copied().unwrap_or(0) % 32)
                        .min(attrs.len().saturating_sub(3));
                    let value = attrs.get(3..3 + vlen).unwrap_or_default();
                    let _ = w.add(&Attribute::Unknown { typ: t, value });
                    attrs = attrs.get(3 + vlen..).unwrap_or_default();
                }
                let _ = w.add(&Attribute::Username(&auth.username));
                let _ = w.add(&Attribute::Realm(&auth.realm));
                let _ = w.add(&Attribute::Nonce(&auth.nonce));
                let _ = w.add_integrity(&key);
                let n = w.finish();
                if let Some(out) = server.handle_client_input(now, tuple(op >> 3), &msg[..n]) {
                    assert!(out.range.end <= n, "forward outside the client's packet");
                }
            }
            // A datagram from a peer on a bound relayed address.
            2 if !bound.is_empty() => {
                let relay = bound[usize::from(op >> 3) % bound.len()];
                let peer = PeerSocket::new(SocketAddr::from((
                    [203, 0, 113, body.first().copied().unwrap_or(1)],
                    7000,
                )));
                let n = body.len().min(2048);
                buf[PEER_HEADROOM..PEER_HEADROOM + n].copy_from_slice(&body[..n]);
                if let Some(out) = server.handle_peer_input(now, relay, peer, &mut buf, n) {
                    assert!(out.range.end <= buf.len());
                }
            }
            // A TCP peer connecting to a relayed address.
            3 if !bound.is_empty() => {
                let relay = bound[usize::from(op >> 3) % bound.len()];
                let peer = PeerSocket::new(SocketAddr::from(([203, 0, 113, 9], 80)));
                server.handle_peer_tcp_accepted(now, relay, peer, PeerHandle::new(()));
            }
            // Time passes: 0 to ~55 minutes in 50 ms steps (the wall clock goes with it), enough
            // to cross every timer: rate-limit refills, sweeps, permissions (5 min), nonces
            // (10 min), allocations (10 min by default) and, in two steps, the credential (1 h).
            4 => {
                let steps = u16::from_be_bytes([
                    body.first().copied().unwrap_or(0),
                    body.get(1).copied().unwrap_or(0),
                ]);
                now += Duration::from_millis(u64::from(steps) * 50);
                server.handle_timeout(now);
            }
            5 => server.handle_client_disconnected(&tuple(op >> 3)),
            // The wall clock steps (NTP) by -128 to +127 minutes, the monotonic one does not:
            // credential and nonce expiry are judged against the stepped clock.
            6 => {
                let elapsed = now.duration_since(start).as_secs();
                let step = i64::from(body.first().copied().unwrap_or(0) as i8) * 60;
                let secs = (UNIX + elapsed).saturating_add_signed(step);
                server.set_unix_time(now, secs.saturating_mul(1000));
                server.handle_timeout(now);
            }
            _ => {}
        }
        for resp in drain(&mut server, now, &mut bound, ok) {
            // Whatever the server sends must be a well-formed message or ChannelData.
            if resp.first().is_some_and(|b| b >> 6 == 0) {
                let m = Message::parse(&resp);
                assert!(m.is_ok(), "server sent a malformed message");
                // 401/438 carry a fresh nonce (same realm): take it, as a client does.
                if let Ok(m) = m
                    && m.class() == Class::Error
                {
                    auth.update_from_challenge(&m);
                }
            }
        }
    }
});
