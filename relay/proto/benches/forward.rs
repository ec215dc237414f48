//! The forwarding path of the sans-IO server, with no sockets, for instruction counts that are
//! the same on every run (`bench/callgrind.sh` runs it under `valgrind --tool=callgrind`).
//!
//! One allocation with a channel and a permission to one peer; then, `N` times each (argument 1,
//! default 100 000), one function per path so callgrind's `--toggle-collect` counts exactly it:
//! - `client_channel_data`: a ChannelData packet from the client → `handle_client_input` →
//!   `ToPeer` (what the driver sends from the relayed socket);
//! - `peer_to_channel_data`: a datagram from the peer → `handle_peer_input` → framed in place as
//!   ChannelData for the client;
//! - `client_send_indication` / `peer_to_data_indication`: the same with Send and Data
//!   indications (the peer of the second allocation has no channel).
//!
//! Without valgrind (`cargo bench -p geoturn-relay-proto --bench forward`) it prints nanoseconds
//! per packet, which on a shared machine are only a sanity check; the instruction counts are
//! the figure.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use geoturn_relay_proto::allocation::ports::PortPool;
use geoturn_relay_proto::allocation::quota::Quota;
use geoturn_relay_proto::allocation::tcp::TcpConnections;
use geoturn_relay_proto::client::{ClientAuth, encode_request, error_code};
use geoturn_relay_proto::server::{PEER_HEADROOM, PEER_TAILROOM};
use geoturn_relay_proto::stun::channel_data;
use geoturn_relay_proto::stun::{Attribute, Class, Message, Method, TransactionId};
use geoturn_relay_proto::types::FiveTuple;
use geoturn_relay_proto::{
    ClientSocket, Command, PeerSocket, RelayAddr, Server, ServerConfig, SharedTables, Transport,
    WallClock,
};
use geoturn_shared::{RestCredential, SecretSet};

const SECRET: &[u8] = b"forward-bench-secret";
const UNIX: u64 = 1_800_000_000;
const PAYLOAD: usize = 160;
const CHANNEL: u16 = 0x4000;

fn tuple(port: u16) -> FiveTuple {
    FiveTuple {
        client: ClientSocket::new(SocketAddr::from(([198, 51, 100, 7], port))),
        server: SocketAddr::from(([192, 0, 2, 1], 3478)),
        transport: Transport::Udp,
    }
}

/// Runs one request and returns the response, acknowledging relayed-port binds.
fn request(
    server: &mut Server,
    now: Instant,
    tuple: FiveTuple,
    tid: u8,
    method: Method,
    attrs: &[Attribute<'_>],
    auth: Option<&ClientAuth>,
) -> (Vec<u8>, Option<RelayAddr>) {
    let req = encode_request(
        method,
        Class::Request,
        TransactionId([tid; 12]),
        attrs,
        auth,
    )
    .expect("request encodes");
    assert!(server.handle_client_input(now, tuple, &req).is_none());
    let mut response = None;
    let mut bound = None;
    while let Some(cmd) = server.poll_command() {
        match cmd {
            Command::BindRelay { relay, .. } => {
                bound = Some(relay);
                server.handle_relay_bound(now, relay, true);
            }
            Command::SendToClient { data, .. } => response = Some(data),
            _ => {}
        }
    }
    (response.expect("a response"), bound)
}

/// An allocation for `tuple` with a channel (or only a permission) to `peer`.
fn allocate(
    server: &mut Server,
    now: Instant,
    tuple: FiveTuple,
    peer: SocketAddr,
    channel: bool,
) -> RelayAddr {
    let cred = RestCredential::mint(SECRET, "bench", UNIX, 3600);
    let mut auth = ClientAuth {
        username: cred.username,
        password: cred.password,
        realm: String::new(),
        nonce: String::new(),
    };
    let transport = [Attribute::RequestedTransport(17)];
    let (resp, _) = request(server, now, tuple, 1, Method::Allocate, &transport, None);
    let m = Message::parse(&resp).expect("parses");
    assert!(auth.update_from_challenge(&m), "a 401 with realm and nonce");
    let (resp, bound) = request(
        server,
        now,
        tuple,
        2,
        Method::Allocate,
        &transport,
        Some(&auth),
    );
    let m = Message::parse(&resp).expect("parses");
    assert_eq!(error_code(&m), None, "Allocate succeeds");
    let relay = bound.expect("a relayed port was bound");
    let (resp, _) = if channel {
        let attrs = [
            Attribute::ChannelNumber(CHANNEL),
            Attribute::XorPeerAddress(peer),
        ];
        request(
            server,
            now,
            tuple,
            3,
            Method::ChannelBind,
            &attrs,
            Some(&auth),
        )
    } else {
        let attrs = [Attribute::XorPeerAddress(peer)];
        request(
            server,
            now,
            tuple,
            3,
            Method::CreatePermission,
            &attrs,
            Some(&auth),
        )
    };
    let m = Message::parse(&resp).expect("parses");
    assert_eq!(
        error_code(&m),
        None,
        "ChannelBind / CreatePermission succeeds"
    );
    relay
}

#[inline(never)]
fn client_channel_data(server: &mut Server, now: Instant, tuple: FiveTuple, frame: &[u8], n: u64) {
    for _ in 0..n {
        let fwd = server.handle_client_input(now, tuple, black_box(frame));
        black_box(fwd.expect("forwarded"));
    }
}

#[inline(never)]
fn client_send_indication(server: &mut Server, now: Instant, tuple: FiveTuple, msg: &[u8], n: u64) {
    for _ in 0..n {
        let fwd = server.handle_client_input(now, tuple, black_box(msg));
        black_box(fwd.expect("forwarded"));
    }
}

#[inline(never)]
fn peer_to_channel_data(
    server: &mut Server,
    now: Instant,
    relay: RelayAddr,
    peer: PeerSocket,
    buf: &mut [u8],
    n: u64,
) {
    for _ in 0..n {
        let out = server.handle_peer_input(now, relay, peer, black_box(&mut *buf), PAYLOAD);
        black_box(out.expect("framed"));
    }
}

#[inline(never)]
fn peer_to_data_indication(
    server: &mut Server,
    now: Instant,
    relay: RelayAddr,
    peer: PeerSocket,
    buf: &mut [u8],
    n: u64,
) {
    for _ in 0..n {
        let out = server.handle_peer_input(now, relay, peer, black_box(&mut *buf), PAYLOAD);
        black_box(out.expect("framed"));
    }
}

fn main() {
    // `cargo bench` passes `--bench`; the first number on the command line is N.
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    // The virtual clock's origin: time never advances during the bench.
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let config = ServerConfig {
        relay_ip_v4: Some([192, 0, 2, 1].into()),
        ..ServerConfig::default()
    };
    let mut server = Server::new(
        config,
        SecretSet::from_values([SECRET]),
        SharedTables {
            quota: Arc::new(Quota::new(0, 0, 0)),
            ports: Arc::new(PortPool::new(50000..=50099, [7; 32])),
            tcp: Arc::new(TcpConnections::new(7)),
            revoked: Arc::default(),
        },
        WallClock {
            at: now,
            unix_ms: UNIX * 1000,
        },
    );
    let peer = SocketAddr::from(([203, 0, 113, 50], 7000));
    let (with_channel, with_permission) = (tuple(40000), tuple(40001));
    let relay_c = allocate(&mut server, now, with_channel, peer, true);
    let relay_p = allocate(&mut server, now, with_permission, peer, false);

    let payload = [0x5au8; PAYLOAD];
    let mut frame = [0u8; PAYLOAD + channel_data::HEADER_LEN];
    let len = channel_data::encode(&mut frame, CHANNEL, &payload, false).expect("encodes");
    let frame = frame.get(..len).expect("in bounds");
    let send = encode_request(
        Method::Send,
        Class::Indication,
        TransactionId([9; 12]),
        &[Attribute::XorPeerAddress(peer), Attribute::Data(&payload)],
        None,
    )
    .expect("encodes");
    let mut buf = vec![0x5au8; PEER_HEADROOM + PAYLOAD + PEER_TAILROOM];

    let timed = |name: &str, f: &mut dyn FnMut()| {
        #[allow(clippy::disallowed_methods)]
        let t = Instant::now();
        f();
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        println!("{name:<24} {ns:>8.1} ns/packet ({n} packets)");
    };
    timed("client_channel_data", &mut || {
        client_channel_data(&mut server, now, with_channel, frame, n)
    });
    timed("peer_to_channel_data", &mut || {
        peer_to_channel_data(
            &mut server,
            now,
            relay_c,
            PeerSocket::new(peer),
            &mut buf,
            n,
        )
    });
    timed("client_send_indication", &mut || {
        client_send_indication(&mut server, now, with_permission, &send, n)
    });
    timed("peer_to_data_indication", &mut || {
        peer_to_data_indication(
            &mut server,
            now,
            relay_p,
            PeerSocket::new(peer),
            &mut buf,
            n,
        )
    });
    let stats = server.stats();
    assert_eq!(stats.packets_to_peer, 2 * n);
    assert_eq!(stats.packets_to_client, 2 * n);
}
