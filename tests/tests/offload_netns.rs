//! The kernel fast path (issue 18) on a real, non-loopback path: three network namespaces of
//! the test's own, client ─ relay ─ peer, joined by veth pairs. The relay runs in-process in
//! its namespace with `--offload on`; the test's TURN client (tests/src/client.rs) allocates,
//! permits and binds a channel, then checks what the eBPF program relays and what it leaves
//! to the relay's sockets:
//!
//! - ChannelData both ways goes through the program: the peer gets plain UDP from the relayed
//!   address, the client ChannelData from the listening address, byte for byte; the offload
//!   counters move and the relay's own (socket) counters do not;
//! - the same over IPv6 (client, relayed address and peer all IPv6);
//! - a Send indication and an unbound channel still reach userspace;
//! - malformed ChannelData (short, a length field that does not match, an unknown channel) goes
//!   up to userspace and is never relayed;
//! - ChannelData whose payload arrives in page fragments (a segmented GSO send) is relayed in
//!   the kernel too;
//! - a peer without a permission is dropped;
//! - Refresh(0), the allocation's expiry and revocation take the entries back and the traffic
//!   stops (the kernel at the deadline itself, before the core's sweep);
//! - a drain keeps established channels in the kernel until its deadline (a Refresh is capped
//!   to it, and so is the entry), and stopping the relay detaches the program;
//! - the allocation's packet and byte rates hold in the kernel;
//! - on the default wildcard `--listen 0.0.0.0`, a client of the host's second address gets
//!   its answers and data from that address, through the sockets and through the program;
//! - coturn's `turnutils_uclient` (an implementation nobody here wrote) relays through the
//!   kernel path to `turnutils_peer` without loss.
//!
//! The client's and peer's veth ends have transmit checksum offload turned off (ethtool), so
//! their datagrams carry full checksums as they do on a wire, and the receiving stacks verify
//! every checksum the program rewrote. With it on, datagrams arrive with checksums still to be
//! computed, which the program must leave to the sockets
//! (`datagrams_awaiting_their_checksum_go_through_the_sockets_intact`).
//!
//! Needs root, the program built in (clang and libbpf-dev at build time: without it the tests
//! fail, never skip), ethtool, iproute2 and coturn's tools. Only the namespaces made here are touched; they go
//! when the test ends, failed or not.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use geoturn_relay::offload::{OffloadMode, OffloadStatus};
use geoturn_relay::{RelayHandle, RelayOptions};
use geoturn_relay_proto::server::DropReason;
use geoturn_relay_proto::stun::{AddressFamily, Attribute};
use geoturn_shared::RestCredential;
use geoturn_tests::client::{Received, TurnClient};
use geoturn_tests::netns::{NetNs, veth};
use geoturn_tests::process::require_tool;
use geoturn_tests::{TEST_SECRET, unix_secs};

const LISTEN: &str = "10.71.1.1:3478";
const CLIENT_IP: &str = "10.71.1.2";
const RELAY_IP: &str = "10.71.2.1";
const PEER: &str = "10.71.2.2:7000";
/// A second address of the peer's namespace that never gets a permission.
const STRANGER: &str = "10.71.2.3:7000";
const CHANNEL: u16 = 0x4001;
/// The same path over IPv6, on the same veth pairs.
const LISTEN6: &str = "[fd71:1::1]:3478";
const CLIENT_IP6: &str = "fd71:1::2";
const RELAY_IP6: &str = "fd71:2::1";
const PEER6: &str = "[fd71:2::2]:7000";
/// Datagrams each way in the relayed phase.
const BURST: u64 = 40;

/// The three namespaces and the relay; dropping it stops the relay (detaching the program)
/// and deletes the namespaces, also when an assertion failed.
struct World {
    relay: Option<RelayHandle>,
    client_ns: NetNs,
    relay_ns: NetNs,
    peer_ns: NetNs,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(r) = self.relay.take() {
            let _ = r.stop();
        }
    }
}

fn ethtool_tx_off(ns: &NetNs, dev: &str) {
    let out = ns
        .command("ethtool")
        .args(["-K", dev, "tx", "off"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ethtool -K {dev} tx off: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn world(tweak: impl FnOnce(&mut RelayOptions)) -> World {
    let w = try_world(true, true, tweak);
    w.map_err(|e| format!("the relay with --offload on did not start: {e}"))
        .unwrap()
}

/// `forwarding`: on in the relay's namespace; `wire_checksums`: the client's and peer's
/// datagrams carry full checksums (transmit checksum offload off), as from a wire.
fn try_world(
    forwarding: bool,
    wire_checksums: bool,
    tweak: impl FnOnce(&mut RelayOptions),
) -> Result<World, std::io::Error> {
    assert!(
        geoturn_relay::offload::built_in(),
        "the eBPF offload is not built into this build (relay/build.rs printed why: clang or \
         libbpf-dev missing?); install clang and libbpf-dev and rebuild"
    );
    require_tool("ethtool", "apt-get install -y ethtool");
    let client_ns = NetNs::new("oc");
    let relay_ns = NetNs::new("or");
    let peer_ns = NetNs::new("op");
    veth(
        &client_ns,
        "c0",
        "10.71.1.2/24",
        &relay_ns,
        "r0",
        "10.71.1.1/24",
    );
    veth(
        &relay_ns,
        "r1",
        "10.71.2.1/24",
        &peer_ns,
        "p0",
        "10.71.2.2/24",
    );
    peer_ns.ip(&["addr", "add", "10.71.2.3/24", "dev", "p0"]);
    // IPv6 beside IPv4, usable at once (no duplicate address detection).
    for (ns, cidr, dev) in [
        (&client_ns, "fd71:1::2/64", "c0"),
        (&relay_ns, "fd71:1::1/64", "r0"),
        (&relay_ns, "fd71:2::1/64", "r1"),
        (&peer_ns, "fd71:2::2/64", "p0"),
    ] {
        ns.ip(&["-6", "addr", "add", cidr, "dev", dev, "nodad"]);
    }
    // The program's route lookup (bpf_fib_lookup) answers only where forwarding is on; the
    // relay refuses --offload on without it (see the next test).
    if forwarding {
        relay_ns.sysctl("net.ipv4.ip_forward=1");
        relay_ns.sysctl("net.ipv6.conf.all.forwarding=1");
    }
    if wire_checksums {
        ethtool_tx_off(&client_ns, "c0");
        ethtool_tx_off(&peer_ns, "p0");
    }
    let mut opts = RelayOptions {
        listen: vec![LISTEN.parse().unwrap(), LISTEN6.parse().unwrap()],
        relay_ip: vec![RELAY_IP.parse().unwrap(), RELAY_IP6.parse().unwrap()],
        auth_secrets: vec![TEST_SECRET.into()],
        allow_peers: vec![
            "10.71.0.0/16".parse().unwrap(),
            "fd71::/16".parse().unwrap(),
        ],
        relay_ports: Some("40000-40999".into()),
        workers: Some(1),
        offload: Some(OffloadMode::On),
        ..RelayOptions::default()
    };
    tweak(&mut opts);
    let config = opts.resolve().unwrap();
    let relay = relay_ns.enter(move || geoturn_relay::start(&config))?;
    Ok(World {
        relay: Some(relay),
        client_ns,
        relay_ns,
        peer_ns,
    })
}

impl World {
    fn relay(&self) -> &RelayHandle {
        self.relay.as_ref().unwrap()
    }

    fn client(&self) -> TurnClient {
        self.client_of(LISTEN)
    }

    /// A client of the relay at `server`.
    fn client_of(&self, server: &'static str) -> TurnClient {
        let cred = RestCredential::mint(TEST_SECRET.as_bytes(), "alice", unix_secs(), 3600);
        self.client_ns.enter(move || {
            TurnClient::new(server.parse().unwrap(), &cred.username, &cred.password).unwrap()
        })
    }

    fn peer_socket(&self, addr: &'static str) -> UdpSocket {
        self.peer_ns.enter(move || {
            let addr: SocketAddr = addr.parse().unwrap();
            let s = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )
            .unwrap();
            // Room for a whole burst: a full receive buffer would drop what the relay sent.
            s.set_recv_buffer_size(4 << 20).unwrap();
            s.bind(&addr.into()).unwrap();
            let s = UdpSocket::from(s);
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            s
        })
    }

    /// What the relay sees as the client's address.
    fn client_addr(client: &TurnClient) -> SocketAddr {
        SocketAddr::new(CLIENT_IP.parse().unwrap(), client.local_addr().port())
    }

    /// The same over IPv6.
    fn client_addr6(client: &TurnClient) -> SocketAddr {
        SocketAddr::new(CLIENT_IP6.parse().unwrap(), client.local_addr().port())
    }

    fn offload(&self) -> OffloadStatus {
        self.relay()
            .snapshot()
            .offload
            .expect("the offload is on, so the snapshot carries its counters")
    }

    /// Packets the relay's sockets relayed (the totals less the kernel's): (to peer, to client).
    fn socket_relayed(&self) -> (u64, u64) {
        let snap = self.relay().snapshot();
        let o = snap.offload.unwrap_or_default().counters;
        (
            snap.stats.packets_to_peer - o.packets_to_peer,
            snap.stats.packets_to_client - o.packets_to_client,
        )
    }

    fn drops(&self, reason: DropReason) -> u64 {
        self.relay().snapshot().stats.drops(reason)
    }
}

/// Polls `f` every 20 ms for at most `limit`; true once it held.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every datagram the socket gets within `window` (at most 1000): (payload, source).
fn drain(sock: &UdpSocket, window: Duration) -> Vec<(Vec<u8>, SocketAddr)> {
    let deadline = Instant::now() + window;
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline && out.len() < 1000 {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            out.push((buf[..n].to_vec(), from));
        }
    }
    out
}

/// Every datagram the client gets within `window` (at most 1000).
fn client_drain(client: &mut TurnClient, window: Duration) -> Vec<Received> {
    let deadline = Instant::now() + window;
    let mut out = Vec::new();
    while out.len() < 1000 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match client.recv(left).unwrap() {
            Some(r) => out.push(r),
            None => break,
        }
    }
    out
}

/// Whether a datagram's full UDP checksum equals its bare pseudo-header sum. The program takes
/// such a datagram (one in 65535) for one whose checksum a device has yet to compute and leaves
/// it to the sockets, so tests that count what the kernel relayed send payloads that do not.
fn looks_unfinished(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> bool {
    // The address's 16-bit words, summed.
    let words = |a: SocketAddr| -> u64 {
        let bytes = match a.ip() {
            std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
            std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        bytes
            .chunks(2)
            .map(|p| u64::from(p[0]) << 8 | u64::from(p[1]))
            .sum()
    };
    let fold = |mut sum: u64| {
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    };
    let len = 8 + payload.len() as u64;
    let pseudo = words(src) + words(dst) + 17 + len;
    let mut full = pseudo + u64::from(src.port()) + u64::from(dst.port()) + len;
    for pair in payload.chunks(2) {
        full += u64::from(pair[0]) << 8 | u64::from(*pair.get(1).unwrap_or(&0));
    }
    let check = match !fold(full) {
        0 => 0xffff,
        c => c,
    };
    check == fold(pseudo)
}

/// `text`, lengthened with dots until its datagram (framed as ChannelData on `channel` when
/// given) does not look unfinished (see [`looks_unfinished`]).
fn payload(text: String, src: SocketAddr, dst: SocketAddr, channel: Option<u16>) -> Vec<u8> {
    let mut data = text.into_bytes();
    // Bounded: each dot changes the sum, and one collision in 65535 is already rare.
    for _ in 0..8 {
        let mut wire = match channel {
            Some(c) => [c.to_be_bytes(), (data.len() as u16).to_be_bytes()].concat(),
            None => Vec::new(),
        };
        wire.extend_from_slice(&data);
        if !looks_unfinished(src, dst, &wire) {
            break;
        }
        data.push(b'.');
    }
    data
}

/// The workers publish their counters every 500 ms: wait for a fresh snapshot.
fn settle() {
    std::thread::sleep(Duration::from_millis(700));
}

/// Sends a burst each way over the bound channel `CHANNEL` and checks that all of it arrived,
/// in order and byte for byte: at the peer as plain UDP from the relayed address (client →
/// peer), at the client as ChannelData (peer → client). `client` is the client's address and
/// the listening address it sends to, `peer` the peer's address and the relayed address.
/// Returns the payloads sent to the peer and to the client.
fn burst_both_ways(
    client: &mut TurnClient,
    peer: &UdpSocket,
    tag: &str,
    (client_addr, listen): (SocketAddr, SocketAddr),
    (peer_addr, relayed): (SocketAddr, SocketAddr),
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let to_peer: Vec<Vec<u8>> = (0..BURST)
        .map(|i| {
            let text = format!("{tag}to-peer-{i}");
            payload(text, client_addr, listen, Some(CHANNEL))
        })
        .collect();
    for p in &to_peer {
        client.send_channel(CHANNEL, p).unwrap();
    }
    let got = drain(peer, Duration::from_millis(800));
    assert_eq!(got.len() as u64, BURST, "the peer got {got:?}");
    for (p, (payload, from)) in to_peer.iter().zip(&got) {
        assert_eq!(*from, relayed, "datagrams come from the relayed address");
        assert_eq!(payload, p);
    }
    let to_client: Vec<Vec<u8>> = (0..BURST)
        .map(|i| payload(format!("{tag}to-client-{i}"), peer_addr, relayed, None))
        .collect();
    for p in &to_client {
        peer.send_to(p, relayed).unwrap();
    }
    let got = client_drain(client, Duration::from_millis(800));
    assert_eq!(got.len() as u64, BURST, "the client got {got:?}");
    for (p, r) in to_client.iter().zip(&got) {
        assert_eq!(
            *r,
            Received::Channel {
                channel: CHANNEL,
                payload: p.clone(),
            }
        );
    }
    (to_peer, to_client)
}

#[test]
fn bound_channels_are_relayed_in_the_kernel_and_everything_else_in_userspace() {
    let w = world(|_| {});
    let peer = w.peer_socket(PEER);
    let stranger = w.peer_socket(STRANGER);
    let peer_addr: SocketAddr = PEER.parse().unwrap();
    let mut client = w.client();
    let relayed = client.allocate().unwrap();
    assert_eq!(relayed.ip().to_string(), RELAY_IP);
    client.create_permission(peer_addr).unwrap();
    assert_eq!(
        w.offload().channels,
        0,
        "a permission alone offloads nothing"
    );
    client.channel_bind(CHANNEL, peer_addr).unwrap();
    assert!(
        eventually(Duration::from_secs(2), || w.offload().channels == 1),
        "the bound channel was not installed: {:?}",
        w.offload()
    );
    settle();
    let sockets_before = w.socket_relayed();

    let (client_addr, listen) = (World::client_addr(&client), LISTEN.parse().unwrap());
    let (to_peer, to_client) = burst_both_ways(
        &mut client,
        &peer,
        "",
        (client_addr, listen),
        (peer_addr, relayed),
    );

    let o = w.offload().counters;
    assert_eq!((o.packets_to_peer, o.packets_to_client), (BURST, BURST));
    let bytes = |all: &[Vec<u8>]| all.iter().map(|p| p.len() as u64).sum::<u64>();
    assert_eq!(o.bytes_to_peer, bytes(&to_peer));
    assert_eq!(o.bytes_to_client, bytes(&to_client));
    settle();
    assert_eq!(
        w.socket_relayed(),
        sockets_before,
        "the relay's sockets relayed none of the channel's traffic"
    );
    // The relayed totals (metrics, /status, registry load) include the kernel's.
    let totals = w.relay().snapshot().stats;
    assert!(totals.packets_to_peer >= BURST && totals.packets_to_client >= BURST);

    // A Send indication still goes through userspace.
    client.send_indication(peer_addr, b"indicated").unwrap();
    let got = drain(&peer, Duration::from_millis(500));
    assert_eq!(got, vec![(b"indicated".to_vec(), relayed)]);
    settle();
    assert_eq!(w.socket_relayed().0, sockets_before.0 + 1);
    assert_eq!(w.offload().counters.packets_to_peer, BURST);

    // A datagram whose full checksum happens to equal its pseudo-header sum looks unfinished
    // to the program: it goes up, and the sockets relay it. (This also checks that
    // `looks_unfinished`, which keeps the counts above exact, agrees with the program.)
    let framed = |p: &[u8]| {
        let mut wire = [CHANNEL.to_be_bytes(), (p.len() as u16).to_be_bytes()].concat();
        wire.extend_from_slice(p);
        wire
    };
    // About one payload in 65535 collides: 1 000 000 tries miss one with odds below e^-15.
    // Binary counters, not decimal digits, so the sums cover every 16-bit value.
    let odd = (0..1_000_000u32)
        .map(|k| [b"collide-".as_slice(), &k.to_be_bytes()].concat())
        .find(|p| looks_unfinished(client_addr, listen, &framed(p)))
        .expect("a colliding payload among a million");
    client.send_channel(CHANNEL, &odd).unwrap();
    assert_eq!(
        drain(&peer, Duration::from_millis(500)),
        vec![(odd, relayed)]
    );
    settle();
    assert_eq!(w.socket_relayed().0, sockets_before.0 + 2);
    assert_eq!(w.offload().counters.packets_to_peer, BURST);

    // Malformed ChannelData and unbound channels go up and are never relayed.
    let malformed_before = w.drops(DropReason::Malformed);
    let no_channel_before = w.drops(DropReason::NoChannel);
    let mut wrong_long = vec![0x40, 0x01, 0x00, 0x09];
    wrong_long.extend_from_slice(b"12345678"); // 8 bytes, length says 9
    let mut wrong_short = vec![0x40, 0x01, 0x00, 0x02];
    wrong_short.extend_from_slice(b"12345678"); // 8 bytes, length says 2
    client.send_raw(&[0x40, 0x01, 0x00]).unwrap(); // shorter than a header
    client.send_raw(&wrong_long).unwrap();
    client.send_raw(&wrong_short).unwrap();
    client.send_channel(0x4002, b"unbound").unwrap();
    client.send_channel(0x4fff, b"unknown").unwrap();
    let got = drain(&peer, Duration::from_millis(500));
    assert!(got.is_empty(), "relayed what it must not: {got:?}");
    settle();
    assert_eq!(w.drops(DropReason::Malformed), malformed_before + 3);
    assert_eq!(w.drops(DropReason::NoChannel), no_channel_before + 2);
    assert_eq!(w.offload().counters.packets_to_peer, BURST);

    // A peer without a permission is dropped.
    let no_permission_before = w.drops(DropReason::NoPermission);
    stranger.send_to(b"let me in", relayed).unwrap();
    assert!(client_drain(&mut client, Duration::from_millis(500)).is_empty());
    settle();
    assert_eq!(w.drops(DropReason::NoPermission), no_permission_before + 1);
    assert_eq!(w.offload().counters.packets_to_client, BURST);

    // Refresh(0): the entries go, and so does the traffic (RFC 8656 §7: the allocation is
    // deleted at once).
    assert_eq!(client.refresh(0).unwrap(), 0);
    assert!(
        eventually(Duration::from_secs(2), || w.offload().channels == 0),
        "Refresh(0) left entries: {:?}",
        w.offload()
    );
    client.send_channel(CHANNEL, b"after refresh 0").unwrap();
    peer.send_to(b"after refresh 0", relayed).unwrap();
    assert!(drain(&peer, Duration::from_millis(500)).is_empty());
    assert!(client_drain(&mut client, Duration::from_millis(500)).is_empty());
    let o = w.offload().counters;
    assert_eq!((o.packets_to_peer, o.packets_to_client), (BURST, BURST));
    // Namespaces the test made are deleted with `w`; nothing else was touched.
    let _ = (&w.relay_ns, &w.client_ns);
}

#[test]
fn the_allocation_packet_rate_holds_in_the_kernel() {
    // 10 datagrams a second with the core's burst of 256: a burst of 400 leaves about 256.
    let w = world(|o| o.max_pps = Some(10));
    let peer = w.peer_socket(PEER);
    let peer_addr: SocketAddr = PEER.parse().unwrap();
    let mut client = w.client();
    let relayed = client.allocate().unwrap();
    client.channel_bind(CHANNEL, peer_addr).unwrap();
    assert!(eventually(Duration::from_secs(2), || w.offload().channels == 1));
    let sent = 400u64;
    let (client_addr, listen) = (World::client_addr(&client), LISTEN.parse().unwrap());
    for i in 0..sent {
        let p = payload(format!("{i}"), client_addr, listen, Some(CHANNEL));
        client.send_channel(CHANNEL, &p).unwrap();
        if i % 50 == 49 {
            // Pace a little so the veth queues never drop: only the limit may.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let got = drain(&peer, Duration::from_millis(800));
    assert!(got.iter().all(|(_, from)| *from == relayed));
    let o = w.offload().counters;
    assert_eq!(o.packets_to_peer, got.len() as u64);
    assert_eq!(o.packets_to_peer + o.dropped_over_limit, sent, "{o:?}");
    assert!(
        (256..=270).contains(&o.packets_to_peer),
        "{} passed the 10/s limit with its burst of 256",
        o.packets_to_peer
    );
}

#[test]
fn without_forwarding_offload_on_refuses_to_start_and_auto_runs_on_sockets() {
    let refused = try_world(false, true, |_| {})
        .err()
        .expect("--offload on must refuse");
    assert!(
        refused.to_string().contains("forwarding"),
        "the error names the missing setting: {refused}"
    );
    let w = try_world(false, true, |o| o.offload = Some(OffloadMode::Auto)).unwrap();
    assert!(w.relay().snapshot().offload.is_none(), "auto turned it off");
    // And the relay works unchanged on its sockets.
    let peer = w.peer_socket(PEER);
    let peer_addr: SocketAddr = PEER.parse().unwrap();
    let mut client = w.client();
    let relayed = client.allocate().unwrap();
    client.channel_bind(CHANNEL, peer_addr).unwrap();
    client.send_channel(CHANNEL, b"through the socket").unwrap();
    let got = drain(&peer, Duration::from_millis(500));
    assert_eq!(got, vec![(b"through the socket".to_vec(), relayed)]);
}

#[test]
fn datagrams_awaiting_their_checksum_go_through_the_sockets_intact() {
    // Transmit checksum offload left on: the client's and peer's datagrams reach the relay
    // with only the pseudo-header summed (CHECKSUM_PARTIAL). Rewritten in the kernel they
    // would leave with a wrong checksum; the program passes them up instead.
    let w = try_world(true, false, |_| {}).unwrap();
    let peer = w.peer_socket(PEER);
    let peer_addr: SocketAddr = PEER.parse().unwrap();
    let mut client = w.client();
    let relayed = client.allocate().unwrap();
    client.channel_bind(CHANNEL, peer_addr).unwrap();
    assert!(eventually(Duration::from_secs(2), || w.offload().channels == 1));
    for i in 0..10 {
        client
            .send_channel(CHANNEL, format!("c{i}").as_bytes())
            .unwrap();
        peer.send_to(format!("p{i}").as_bytes(), relayed).unwrap();
    }
    let to_peer = drain(&peer, Duration::from_millis(500));
    let to_client = client_drain(&mut client, Duration::from_millis(500));
    assert_eq!(to_peer.len(), 10, "{to_peer:?}");
    assert_eq!(to_client.len(), 10, "{to_client:?}");
    let o = w.offload().counters;
    assert_eq!((o.packets_to_peer, o.packets_to_client), (0, 0), "{o:?}");
    settle();
    assert_eq!(w.socket_relayed(), (10, 10));
}

/// Sets UDP_SEGMENT on `sock`: each send of a longer buffer then leaves as datagrams of
/// `size` bytes (0 turns it off).
fn set_udp_segment(sock: &UdpSocket, size: u16) {
    use std::os::fd::AsRawFd;
    let v = libc::c_int::from(size);
    #[allow(unsafe_code)]
    // SAFETY: setsockopt(2) on a socket we own, with a pointer to an int that outlives the call
    // and its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&raw const v).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
}

#[test]
fn channel_data_in_page_fragments_is_relayed_in_the_kernel() {
    // A GSO send from the client: with transmit checksum offload off, the client's veth
    // cannot segment, so the stack does, and each datagram reaches the relay's interface with
    // its headers in the linear part and its payload, the ChannelData header included, in
    // page fragments, as many NIC drivers deliver a datagram (header split). The program
    // makes the ChannelData header linear and relays them like any other.
    let w = world(|_| {});
    let peer = w.peer_socket(PEER);
    let peer_addr: SocketAddr = PEER.parse().unwrap();
    let sock = w
        .client_ns
        .enter(|| UdpSocket::bind(format!("{CLIENT_IP}:0")).unwrap());
    let gso = sock.try_clone().unwrap();
    let cred = RestCredential::mint(TEST_SECRET.as_bytes(), "alice", unix_secs(), 3600);
    let mut client = TurnClient::from_socket(
        sock,
        LISTEN.parse().unwrap(),
        &cred.username,
        &cred.password,
    )
    .unwrap();
    let relayed = client.allocate().unwrap();
    client.channel_bind(CHANNEL, peer_addr).unwrap();
    assert!(eventually(Duration::from_secs(2), || w.offload().channels == 1));
    settle();
    let sockets_before = w.socket_relayed();

    // Equal-size ChannelData datagrams (GSO cuts at a fixed size), none looking unfinished.
    let (client_addr, listen) = (World::client_addr(&client), LISTEN.parse().unwrap());
    let frame = |p: &[u8]| {
        let mut wire = [CHANNEL.to_be_bytes(), (p.len() as u16).to_be_bytes()].concat();
        wire.extend_from_slice(p);
        wire
    };
    let to_peer: Vec<Vec<u8>> = (0..4u8)
        .map(|i| {
            (b'a'..=b'z')
                .map(|c| {
                    let mut p = format!("fragmented-{i}-").into_bytes();
                    p.resize(200, c);
                    p
                })
                .find(|p| !looks_unfinished(client_addr, listen, &frame(p)))
                .unwrap()
        })
        .collect();
    let burst: Vec<u8> = to_peer.iter().flat_map(|p| frame(p)).collect();
    set_udp_segment(&gso, frame(&to_peer[0]).len() as u16);
    gso.send_to(&burst, listen).unwrap();
    set_udp_segment(&gso, 0);

    let got = drain(&peer, Duration::from_millis(800));
    assert_eq!(got.len(), to_peer.len(), "the peer got {got:?}");
    for (p, (payload, from)) in to_peer.iter().zip(&got) {
        assert_eq!(*from, relayed);
        assert_eq!(payload, p);
    }
    assert_eq!(
        w.offload().counters.packets_to_peer,
        to_peer.len() as u64,
        "the kernel relayed every segment"
    );
    settle();
    assert_eq!(
        w.socket_relayed(),
        sockets_before,
        "the sockets relayed none"
    );
}

#[test]
fn expiry_and_revocation_remove_the_entries_and_the_traffic_stops() {
    let w = world(|_| {});
    let peer = w.peer_socket(PEER);
    let peer_addr: SocketAddr = PEER.parse().unwrap();

    // An allocation refreshed to 2 s: the kernel relays until then, and not after.
    let mut client = w.client();
    let relayed = client.allocate().unwrap();
    client.channel_bind(CHANNEL, peer_addr).unwrap();
    assert!(eventually(Duration::from_secs(2), || w.offload().channels == 1));
    assert_eq!(client.refresh(2).unwrap(), 2);
    let (client_addr, listen) = (World::client_addr(&client), LISTEN.parse().unwrap());
    let p = payload("before expiry".into(), client_addr, listen, Some(CHANNEL));
    client.send_channel(CHANNEL, &p).unwrap();
    assert_eq!(drain(&peer, Duration::from_millis(300)), vec![(p, relayed)]);
    assert_eq!(w.offload().counters.packets_to_peer, 1);
    // The kernel stops at the deadline by itself, before the core's sweep (once a second)
    // takes the entry back; until that sweep the core may still relay what goes up (it ends
    // allocations at the sweep, not at the instant).
    std::thread::sleep(Duration::from_millis(2300));
    client.send_channel(CHANNEL, b"after expiry").unwrap();
    peer.send_to(b"after expiry", relayed).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let o = w.offload().counters;
    assert_eq!((o.packets_to_peer, o.packets_to_client), (1, 0), "{o:?}");
    assert!(
        eventually(Duration::from_secs(3), || w.offload().channels == 0),
        "the sweep left the expired entry: {:?}",
        w.offload()
    );
    let _ = drain(&peer, Duration::from_millis(100));
    let _ = client_drain(&mut client, Duration::from_millis(100));
    client.send_channel(CHANNEL, b"after the sweep").unwrap();
    peer.send_to(b"after the sweep", relayed).unwrap();
    assert!(drain(&peer, Duration::from_millis(300)).is_empty());
    assert!(client_drain(&mut client, Duration::from_millis(300)).is_empty());

    // Revocation: the user's allocations close on every worker, their entries with them.
    let mut client = w.client();
    let relayed = client.allocate().unwrap();
    client.channel_bind(CHANNEL, peer_addr).unwrap();
    assert!(eventually(Duration::from_secs(2), || w.offload().channels == 1));
    let client_addr = World::client_addr(&client);
    let p = payload(
        "before revocation".into(),
        client_addr,
        listen,
        Some(CHANNEL),
    );
    client.send_channel(CHANNEL, &p).unwrap();
    assert_eq!(drain(&peer, Duration::from_millis(300)).len(), 1);
    w.relay().revoke_user("alice", Duration::from_secs(3600));
    assert!(
        eventually(Duration::from_secs(3), || w.offload().channels == 0),
        "revocation left the entry: {:?}",
        w.offload()
    );
    client.send_channel(CHANNEL, b"after revocation").unwrap();
    peer.send_to(b"after revocation", relayed).unwrap();
    assert!(drain(&peer, Duration::from_millis(300)).is_empty());
    assert!(client_drain(&mut client, Duration::from_millis(300)).is_empty());
    assert_eq!(w.offload().counters.packets_to_peer, 2);
}

/// The number after `key` on the last line of `out` that has it (turnutils_uclient's totals).
fn number_after(out: &str, key: &str) -> Option<u64> {
    let line = out.lines().rev().find(|l| l.contains(key))?;
    let rest = &line[line.find(key)? + key.len()..];
    rest.trim_start_matches([' ', '=', ':'])
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn coturns_client_talks_through_the_kernel_path_without_loss() {
    // An implementation nobody here wrote: coturn's turnutils_uclient binds channels (numbers
    // up to 0x7FFF), sends ChannelData to turnutils_peer, which echoes it back.
    let hint = "install coturn: apt-get install -y --no-install-recommends coturn";
    let uclient = require_tool("turnutils_uclient", hint);
    let peer_bin = require_tool("turnutils_peer", hint);
    let w = world(|_| {});
    let _peer = geoturn_tests::process::ChildGuard::spawn(
        w.peer_ns
            .command(peer_bin)
            .args(["-L", "10.71.2.2", "-p", "3480"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (sessions, messages) = (4u64, 300u64);
    let mut child = geoturn_tests::process::ChildGuard::spawn(
        w.client_ns
            .command(uclient)
            .args(["-W", TEST_SECRET, "-u", "uclient"])
            .args(["-e", "10.71.2.2", "-r", "3480", "-p", "3478"])
            .args(["-m", &sessions.to_string(), "-n", &messages.to_string()])
            .args(["-l", "161", "-z", "2", "10.71.1.1"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    )
    .unwrap();
    let status = child
        .wait_timeout(Duration::from_secs(90))
        .unwrap()
        .expect("turnutils_uclient finishes within 90 s");
    let mut out = String::new();
    use std::io::Read as _;
    if let Some(mut s) = child.0.stdout.take() {
        s.read_to_string(&mut out).unwrap();
    }
    if let Some(mut s) = child.0.stderr.take() {
        s.read_to_string(&mut out).unwrap();
    }
    assert!(status.success(), "uclient failed: {out}");
    let total = sessions * messages;
    assert_eq!(number_after(&out, "tot_send_msgs"), Some(total), "{out}");
    assert_eq!(number_after(&out, "tot_recv_msgs"), Some(total), "{out}");
    assert_eq!(number_after(&out, "Total lost packets"), Some(0), "{out}");
    // Nearly all of it in the kernel: a session's first datagrams may race its channel's
    // install, and one datagram in 65535 looks unfinished (see `looks_unfinished`).
    let o = w.offload().counters;
    assert!(
        o.packets_to_peer >= total * 95 / 100 && o.packets_to_client >= total * 95 / 100,
        "only {o:?} of {total} each way went through the kernel"
    );
}

#[test]
fn a_drain_keeps_channels_in_the_kernel_until_its_deadline_and_stopping_detaches() {
    let mut w = world(|_| {});
    let peer = w.peer_socket(PEER);
    let peer_addr: SocketAddr = PEER.parse().unwrap();
    let mut client = w.client();
    let relayed = client.allocate().unwrap();
    client.channel_bind(CHANNEL, peer_addr).unwrap();
    assert!(eventually(Duration::from_secs(2), || w.offload().channels == 1));
    let (client_addr, listen) = (World::client_addr(&client), LISTEN.parse().unwrap());

    // Draining: existing allocations keep working, in the kernel; a Refresh is capped to the
    // deadline, and so is the kernel's entry.
    w.relay()
        .set_drain(Some(geoturn_relay_proto::server::Drain {
            deadline: Instant::now() + Duration::from_secs(2),
            alternates: Vec::new(),
        }));
    std::thread::sleep(Duration::from_millis(100));
    let granted = client.refresh(600).unwrap();
    assert!(
        granted <= 2,
        "a Refresh while draining outlives the drain: {granted} s"
    );
    let p = payload("while draining".into(), client_addr, listen, Some(CHANNEL));
    client.send_channel(CHANNEL, &p).unwrap();
    assert_eq!(drain(&peer, Duration::from_millis(300)), vec![(p, relayed)]);
    assert_eq!(w.offload().counters.packets_to_peer, 1);
    std::thread::sleep(Duration::from_millis(2200));
    client.send_channel(CHANNEL, b"past the deadline").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        w.offload().counters.packets_to_peer,
        1,
        "the kernel relayed past the drain's deadline"
    );

    // Stopping (what the relay does when the drain ends) closes the sockets and detaches the
    // program: nothing is relayed any more, by either path.
    let _ = drain(&peer, Duration::from_millis(100));
    w.relay.take().unwrap().stop().unwrap();
    client.send_channel(CHANNEL, b"after stop").unwrap();
    peer.send_to(b"after stop", relayed).unwrap();
    assert!(drain(&peer, Duration::from_millis(300)).is_empty());
    assert!(client_drain(&mut client, Duration::from_millis(300)).is_empty());
}

#[test]
fn the_allocation_byte_rate_holds_in_the_kernel() {
    // 80 kbit/s is 10 000 bytes a second, with the core's burst of 16 384 bytes: of 60
    // datagrams of 1 000 bytes sent at once, 16 pass.
    let w = world(|o| o.max_bps = Some(80_000));
    let peer = w.peer_socket(PEER);
    let peer_addr: SocketAddr = PEER.parse().unwrap();
    let mut client = w.client();
    client.allocate().unwrap();
    client.channel_bind(CHANNEL, peer_addr).unwrap();
    assert!(eventually(Duration::from_secs(2), || w.offload().channels == 1));
    let (client_addr, listen) = (World::client_addr(&client), LISTEN.parse().unwrap());
    let sent = 60u64;
    for i in 0..sent {
        let p = payload(format!("{i:0>1000}"), client_addr, listen, Some(CHANNEL));
        client.send_channel(CHANNEL, &p).unwrap();
    }
    let got = drain(&peer, Duration::from_millis(800));
    let o = w.offload().counters;
    assert_eq!(o.packets_to_peer, got.len() as u64);
    assert_eq!(o.packets_to_peer + o.dropped_over_limit, sent, "{o:?}");
    // 16 fit the burst; the refill while sending may add one or two.
    assert!(
        (16..=18).contains(&o.packets_to_peer),
        "{} passed the 10 000 bytes/s limit with its burst of 16 384 bytes",
        o.packets_to_peer
    );
    assert!(o.bytes_to_peer <= 18_000, "{o:?}");
}

/// The default `--listen 0.0.0.0:3478` on a host with two addresses: each datagram names the
/// address it reached (IP_PKTINFO), so a client of the second address, its socket connected
/// as many clients' are (the kernel drops anything from another address), gets every answer
/// and all its data from that address; with the offload on, its channel is relayed in the
/// kernel, both ways. Before packet info the relay answered from the kernel's choice (the
/// interface's first address), the connected client heard nothing, and wildcard listeners
/// never offloaded.
#[test]
fn a_wildcard_listener_answers_from_the_address_reached_and_offloads() {
    const SECOND: &str = "10.71.1.9:3478";
    for mode in [OffloadMode::On, OffloadMode::Off] {
        let w = world(|o| {
            o.listen = vec!["0.0.0.0:3478".parse().unwrap()];
            o.offload = Some(mode);
        });
        w.relay_ns.ip(&["addr", "add", "10.71.1.9/24", "dev", "r0"]);
        let peer = w.peer_socket(PEER);
        let peer_addr: SocketAddr = PEER.parse().unwrap();
        let mut client = w.client_of(SECOND);
        client.connect().unwrap();
        let relayed = client
            .allocate()
            .unwrap_or_else(|e| panic!("{mode:?}: no answer from {SECOND}: {e:?}"));
        client.create_permission(peer_addr).unwrap();
        client.channel_bind(CHANNEL, peer_addr).unwrap();
        let offloaded = mode == OffloadMode::On;
        if offloaded {
            assert!(
                eventually(Duration::from_secs(2), || w.offload().channels == 1),
                "the bound channel was not installed: {:?}",
                w.offload()
            );
        }
        settle();
        let sockets_before = w.socket_relayed();

        let client_addr = World::client_addr(&client);
        let second: SocketAddr = SECOND.parse().unwrap();
        for i in 0..BURST {
            let p = payload(format!("to-peer-{i}"), client_addr, second, Some(CHANNEL));
            client.send_channel(CHANNEL, &p).unwrap();
        }
        let got = drain(&peer, Duration::from_millis(800));
        assert_eq!(got.len() as u64, BURST, "{mode:?}: the peer got {got:?}");
        assert!(got.iter().all(|(_, from)| *from == relayed));
        for i in 0..BURST {
            let p = payload(format!("to-client-{i}"), peer_addr, relayed, None);
            peer.send_to(&p, relayed).unwrap();
        }
        let got = client_drain(&mut client, Duration::from_millis(800));
        assert_eq!(
            got.len() as u64,
            BURST,
            "{mode:?}: the connected client got {} of {BURST} from {SECOND}",
            got.len()
        );
        settle();
        let sockets = w.socket_relayed();
        if offloaded {
            let o = w.offload().counters;
            assert_eq!((o.packets_to_peer, o.packets_to_client), (BURST, BURST));
            assert_eq!(sockets, sockets_before, "the sockets relayed none of it");
        } else {
            assert_eq!(
                sockets,
                (sockets_before.0 + BURST, sockets_before.1 + BURST),
                "the sockets relayed all of it"
            );
        }
    }
}

/// IPv6 end to end: a client of the relay's IPv6 address asking for an IPv6 relayed address
/// (REQUESTED-ADDRESS-FAMILY, as browsers do for an IPv6 TURN server) binds a channel to an
/// IPv6 peer; its traffic goes through the program both ways, byte for byte (the receiving
/// stacks verify every UDP checksum the program rewrote, mandatory over IPv6), and the
/// sockets see none of it. A Send indication still goes through userspace.
#[test]
fn ipv6_channels_are_relayed_in_the_kernel() {
    let w = world(|_| {});
    let peer = w.peer_socket(PEER6);
    let peer_addr: SocketAddr = PEER6.parse().unwrap();
    let mut client = w.client_of(LISTEN6);
    let relayed = client
        .allocate_with(&[Attribute::RequestedAddressFamily(AddressFamily::V6)])
        .unwrap()[0];
    assert_eq!(relayed.ip().to_string(), RELAY_IP6);
    client.create_permission(peer_addr).unwrap();
    client.channel_bind(CHANNEL, peer_addr).unwrap();
    assert!(
        eventually(Duration::from_secs(2), || w.offload().channels == 1),
        "the IPv6 channel was not installed: {:?}",
        w.offload()
    );
    settle();
    let sockets_before = w.socket_relayed();

    let (client_addr, listen) = (World::client_addr6(&client), LISTEN6.parse().unwrap());
    burst_both_ways(
        &mut client,
        &peer,
        "v6-",
        (client_addr, listen),
        (peer_addr, relayed),
    );
    let o = w.offload().counters;
    assert_eq!((o.packets_to_peer, o.packets_to_client), (BURST, BURST));
    settle();
    assert_eq!(
        w.socket_relayed(),
        sockets_before,
        "the relay's sockets relayed none of the IPv6 channel's traffic"
    );
    client.send_indication(peer_addr, b"indicated").unwrap();
    let got = drain(&peer, Duration::from_millis(500));
    assert_eq!(got, vec![(b"indicated".to_vec(), relayed)]);
}
