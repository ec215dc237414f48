//! TCP clients and RFC 6062 TCP relaying on real sockets: a relay in this process, a TURN
//! client speaking over TCP, and a peer listening on 127.0.0.1. What the interop tests with
//! coturn's client cannot show: a peer connection, spliced to a data connection, closes when
//! its allocation ends; one source address cannot hold more than its share of connections; a
//! connection that trickles bytes without a frame is closed.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // a panic in a test is a failed test

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use geoturn_relay_proto::client::encode_request;
use geoturn_relay_proto::stun::attribute::types;
use geoturn_relay_proto::stun::{Attribute, Class, Message, Method, TransactionId};
use geoturn_tests::relay::TestRelay;
use geoturn_tests::stream_client::{StreamClient, code};

const WAIT: Duration = Duration::from_secs(5);

/// True when `stream` reads end-of-file (or a reset) within the wait.
fn closes_within(stream: &mut TcpStream, wait: Duration) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Allocates over TCP, Connects to a fresh peer, binds a data connection to it and checks bytes
/// flow both ways. Returns the control client, the data connection and the peer's side.
fn spliced(relay: &TestRelay) -> (StreamClient, TcpStream, TcpStream) {
    // Not the relay's own address (127.0.0.1), which is a peer only at its relayed ports.
    let peer = TcpListener::bind("127.0.0.2:0").unwrap();
    let credential = TestRelay::credentials("alice", 3600);
    let mut control = StreamClient::connect_as(relay.addr(), credential.clone());
    let resp = control.request(Method::Allocate, &[Attribute::RequestedTransport(6)]);
    assert_eq!(code(&resp), None, "TCP Allocate");
    let resp = control.request(
        Method::Connect,
        &[Attribute::XorPeerAddress(peer.local_addr().unwrap())],
    );
    assert_eq!(code(&resp), None, "Connect");
    let m = Message::parse(&resp).unwrap();
    let Some(Ok(Attribute::ConnectionId(id))) = m.attribute(types::CONNECTION_ID) else {
        panic!("no CONNECTION-ID");
    };
    let (mut at_peer, _) = peer.accept().unwrap();
    at_peer.set_read_timeout(Some(WAIT)).unwrap();

    let mut data = StreamClient::connect_as(relay.addr(), credential);
    let resp = data.request(Method::ConnectionBind, &[Attribute::ConnectionId(id)]);
    assert_eq!(code(&resp), None, "ConnectionBind");
    let mut data = data.stream;
    data.write_all(b"to the peer").unwrap();
    let mut buf = [0u8; 11];
    at_peer.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"to the peer");
    at_peer.write_all(b"to the client").unwrap();
    let mut buf = [0u8; 13];
    data.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"to the client");
    (control, data, at_peer)
}

#[test]
fn a_spliced_peer_connection_closes_when_its_allocation_is_deleted() {
    let relay = TestRelay::start(|_| {});
    let (mut control, mut data, mut at_peer) = spliced(&relay);
    let resp = control.request(Method::Refresh, &[Attribute::Lifetime(0)]);
    assert_eq!(code(&resp), None, "Refresh 0");
    assert!(
        closes_within(&mut at_peer, WAIT),
        "the peer connection outlived its allocation"
    );
    assert!(
        closes_within(&mut data, WAIT),
        "the data connection stayed open"
    );
}

#[test]
fn a_spliced_peer_connection_closes_with_the_control_connection() {
    let relay = TestRelay::start(|_| {});
    let (control, _data, mut at_peer) = spliced(&relay);
    drop(control);
    assert!(
        closes_within(&mut at_peer, WAIT),
        "the peer connection outlived its control connection"
    );
}

#[test]
fn one_source_holds_at_most_its_connections() {
    let relay = TestRelay::start(|o| o.max_connections_per_ip = Some(3));
    let mut held: Vec<StreamClient> = (0..3)
        .map(|_| StreamClient::connect(relay.addr(), "alice"))
        .collect();
    // Each is served.
    for c in &mut held {
        let resp = c.request(Method::Binding, &[]);
        assert_eq!(code(&resp), None);
    }
    // The fourth is closed at once, unanswered.
    let mut fourth = TcpStream::connect(relay.addr()).unwrap();
    assert!(
        closes_within(&mut fourth, WAIT),
        "a fourth connection was kept"
    );
    // A closed connection frees its place.
    drop(held.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        let mut c = StreamClient::connect(relay.addr(), "alice");
        c.stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let req = encode_request(
            Method::Binding,
            Class::Request,
            TransactionId([1; 12]),
            &[],
            None,
        )
        .unwrap();
        let mut buf = [0u8; 512];
        if c.stream.write_all(&req).is_ok() && c.stream.read(&mut buf).is_ok_and(|n| n > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "the freed place never came back");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_connection_trickling_bytes_without_a_frame_is_closed() {
    let relay = TestRelay::start(|_| {});
    let mut c = TcpStream::connect(relay.addr()).unwrap();
    // The first 15 bytes of a Binding request header, one every second: never a frame. The
    // first frame is due within 10 s, however often bytes come.
    let header = [
        0x00u8, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7,
    ];
    let started = Instant::now();
    for b in header {
        if c.write_all(&[b]).is_err() {
            break;
        }
        if closes_within(&mut c, Duration::from_secs(1)) {
            let took = started.elapsed();
            assert!(took >= Duration::from_secs(9), "closed after {took:?}");
            return;
        }
    }
    panic!("still open after {:?} of trickled bytes", started.elapsed());
}

/// Spliced bytes are held to `--max-bps` (both directions together): at 256 kbit/s
/// (32 000 bytes/s, one second of burst) 128 000 bytes from the peer need at least 2.5 s to
/// reach the client (the burst and the last 16 KiB read pass without waiting, the rest at the
/// rate). Only a lower bound: the limit makes the transfer slow, a busy machine can only make
/// it slower.
#[test]
fn spliced_bytes_are_paced_to_the_bandwidth_limit() {
    let relay = TestRelay::start(|o| o.max_bps = Some(256_000));
    let (_control, mut data, mut at_peer) = spliced(&relay);
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        at_peer.write_all(&[7u8; 128_000]).unwrap();
        at_peer
    });
    data.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut got = vec![0u8; 128_000];
    data.read_exact(&mut got).unwrap();
    let took = started.elapsed();
    assert!(got.iter().all(|&b| b == 7));
    println!("128 000 spliced bytes at 256 kbit/s took {took:?}");
    assert!(
        took >= Duration::from_secs(2),
        "128 000 bytes took only {took:?}: not paced to 256 kbit/s"
    );
    drop(writer.join().unwrap());
}

/// A connection must hold an allocation 30 s after its first frame: one that only sends
/// Binding requests (every 2 s, each answered) is closed then, while one that allocated stays
/// open past it and is still served.
#[test]
fn a_connection_without_an_allocation_is_closed_after_30_s() {
    let relay = TestRelay::start(|_| {});
    let mut allocated = StreamClient::connect(relay.addr(), "alice");
    let resp = allocated.request(Method::Allocate, &[Attribute::RequestedTransport(17)]);
    assert_eq!(code(&resp), None, "Allocate over TCP");
    let mut pinging = StreamClient::connect(relay.addr(), "bob");
    let started = Instant::now();
    let closed_at = loop {
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "a connection without an allocation outlived 45 s"
        );
        let req = encode_request(
            Method::Binding,
            Class::Request,
            TransactionId([9; 12]),
            &[],
            None,
        )
        .unwrap();
        if pinging.stream.write_all(&req).is_err() {
            break started.elapsed();
        }
        if let Some(resp) = pinging.try_read_frame(Duration::from_secs(2)) {
            assert_eq!(code(&resp), None, "a Binding answer");
        }
        if closes_within(&mut pinging.stream, Duration::from_secs(2)) {
            break started.elapsed();
        }
    };
    println!("a connection sending only Binding requests was closed after {closed_at:?}");
    assert!(
        closed_at >= Duration::from_secs(28),
        "closed after only {closed_at:?}"
    );
    let resp = allocated.request(Method::Refresh, &[Attribute::Lifetime(600)]);
    assert_eq!(
        code(&resp),
        None,
        "the allocated connection is still served"
    );
}

/// A TCP connection holding an allocation gives a second round-trip sample 2 s after its first
/// frame, the kernel's own estimate (`TCP_INFO`), beside the 401 → Allocate one; a connection
/// without an allocation gives none.
#[test]
fn an_allocated_connection_adds_the_kernels_round_trip_estimate() {
    let relay = TestRelay::start(|_| {});
    let mut allocated = StreamClient::connect(relay.addr(), "alice");
    let resp = allocated.request(Method::Allocate, &[Attribute::RequestedTransport(17)]);
    assert_eq!(code(&resp), None, "Allocate over TCP");
    let mut binding_only = StreamClient::connect(relay.addr(), "bob");
    let req = encode_request(
        Method::Binding,
        Class::Request,
        TransactionId([7; 12]),
        &[],
        None,
    )
    .unwrap();
    binding_only.stream.write_all(&req).unwrap();
    assert!(
        binding_only
            .try_read_frame(Duration::from_secs(2))
            .is_some()
    );
    // The 401 → Allocate sample at once; the kernel's after 2 s (the workers hand samples
    // over every 500 ms).
    let started = Instant::now();
    let mut taken = 0;
    while started.elapsed() < Duration::from_secs(6) {
        taken = relay.handle().client_rtts().counts().0;
        if taken >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(taken, 2, "one sample per source of it");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        relay.handle().client_rtts().counts().0,
        2,
        "none from the Binding-only one"
    );
}
