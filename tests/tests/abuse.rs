//! Abuse against a relay started with default flags (only the test relay's loopback peers and
//! port range set): each attack is capped, a well-behaved client is served while it runs, and
//! nothing is left once it ends (allocations, relayed ports, file descriptors back to their
//! baseline). The figures each test prints are the ones the closing note quotes.
//! Loopback only; every loop bounded in count and time.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::sync::Mutex;
use std::time::{Duration, Instant};

use geoturn_tests::client::{Received, TurnClient, TurnError};
use geoturn_tests::peer::EchoPeer;
use geoturn_tests::relay::TestRelay;

const WAIT: Duration = Duration::from_secs(5);

/// These tests count this process's file descriptors: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// What the open descriptors are, by kind (`socket`, `anon_inode:[eventfd]`, ...), for a
/// failure message.
fn fd_kinds() -> std::collections::BTreeMap<String, usize> {
    let mut kinds = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        let target = target.to_string_lossy();
        let kind = target.split(":[").next().unwrap_or_default().to_owned();
        *kinds.entry(kind).or_insert(0) += 1;
    }
    kinds
}

fn client(relay: &TestRelay, user: &str) -> TurnClient {
    let c = TestRelay::credentials(user, 3600);
    TurnClient::new(relay.addr(), &c.username, &c.password).unwrap()
}

/// A client that allocates, binds a channel to `peer` and gets its echo back.
fn served(relay: &TestRelay, peer: &EchoPeer, user: &str) -> TurnClient {
    let mut good = client(relay, user);
    good.allocate().unwrap();
    good.channel_bind(0x4001, peer.addr()).unwrap();
    good.send_channel(0x4001, b"still served").unwrap();
    assert_eq!(
        good.recv(WAIT).unwrap(),
        Some(Received::Channel {
            channel: 0x4001,
            payload: b"still served".to_vec()
        }),
        "the well-behaved client was not served"
    );
    good
}

/// This process's descriptors once the relay has served a client and deleted its allocation
/// (the workers' runtimes and sockets they open on first use exist then).
fn warmed_up_baseline(relay: &TestRelay, peer: &EchoPeer) -> usize {
    let mut first = served(relay, peer, "warm-up");
    first.refresh(0).unwrap();
    drop(first);
    let deadline = Instant::now() + WAIT;
    while relay.handle().snapshot().allocations != 0 {
        assert!(Instant::now() < deadline, "the warm-up allocation stayed");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The descriptor count settles once the deleted relayed socket is closed.
    let mut last = open_fds();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(50));
        let now = open_fds();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// Allocates with each of `clients`: the ones that got an allocation, and how many were refused
/// with 486 (any other answer fails the test).
fn allocate_all(clients: impl Iterator<Item = TurnClient>) -> (Vec<TurnClient>, usize) {
    let mut held = Vec::new();
    let mut refused = 0;
    for mut c in clients {
        match c.allocate() {
            Ok(_) => held.push(c),
            Err(TurnError::Code(486)) => refused += 1,
            Err(e) => panic!("unexpected answer: {e:?}"),
        }
    }
    (held, refused)
}

/// Deletes every allocation of `held` (Refresh 0) and closes their sockets.
fn delete_all(mut held: Vec<TurnClient>) {
    for c in &mut held {
        c.refresh(0).unwrap();
    }
}

/// Waits until the relay holds `n` allocations and this process is back to `fds` descriptors
/// (the relayed sockets of deleted allocations are closed).
fn wait_back_to(relay: &TestRelay, n: usize, fds: usize, what: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let held = relay.handle().snapshot().allocations;
        let now_fds = open_fds();
        if held == n && now_fds <= fds {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {held} allocations (want {n}), {now_fds} descriptors (want {fds}): {:?}",
            fd_kinds()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One credential copied from a web page, used from many client ports: it takes at most
/// `--user-quota` (64) relayed ports; another user is served meanwhile; deleting the
/// allocations gives every port and descriptor back.
#[test]
fn a_copied_credential_takes_at_most_its_quota() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let relay = TestRelay::start(|_| {});
    let peer = EchoPeer::start().unwrap();
    let baseline = warmed_up_baseline(&relay, &peer);
    let copied = TestRelay::credentials("victim", 3600);
    let (held, refused) = allocate_all(
        (0..100)
            .map(|_| TurnClient::new(relay.addr(), &copied.username, &copied.password).unwrap()),
    );
    println!(
        "copied credential: {} allocations held, {refused} refused with 486",
        held.len()
    );
    assert_eq!((held.len(), refused), (64, 36));
    let good = served(&relay, &peer, "alice");
    delete_all(held);
    // The good client's allocation and its two sockets (its own and the relayed one) remain.
    wait_back_to(&relay, 1, baseline + 2, "after the attack");
    drop(good);
}

/// A signaling server's API key can mint credentials for any user id: one address holding
/// allocations under 600 user ids gets `--allocations-per-ip` (500); a client of another
/// address is served meanwhile.
#[test]
fn one_address_takes_at_most_its_share_whatever_the_user_ids() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    geoturn_bench::sys::raise_nofile_limit().unwrap();
    let relay = TestRelay::start(|_| {});
    let peer = EchoPeer::start().unwrap();
    let baseline = warmed_up_baseline(&relay, &peer);
    let started = Instant::now();
    let (held, refused) = allocate_all((0..600).map(|i| {
        assert!(started.elapsed() < Duration::from_secs(60), "took too long");
        client(&relay, &format!("minted-{i}"))
    }));
    println!(
        "one address, 600 user ids: {} allocations held, {refused} refused with 486",
        held.len()
    );
    assert_eq!((held.len(), refused), (500, 100));
    // Another address (127.0.0.2) is another source.
    let c = TestRelay::credentials("bob", 3600);
    let sock = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    let mut other = TurnClient::from_socket(sock, relay.addr(), &c.username, &c.password).unwrap();
    other.allocate().unwrap();
    delete_all(held);
    // Bob's allocation and its two sockets (his and the relayed one) remain.
    wait_back_to(&relay, 1, baseline + 2, "after the attack");
    drop(peer);
}

/// One address opening TCP connections and never sending a frame: it holds at most
/// `--max-connections-per-ip` (500) at once, the rest are closed at accept; a TCP client of
/// another address is served meanwhile; each silent connection is closed within the first
/// frame's 10 s, and the descriptors come back.
#[test]
fn one_address_holds_at_most_its_tcp_connections_and_silence_is_closed() {
    use std::io::{Read, Write};
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    geoturn_bench::sys::raise_nofile_limit().unwrap();
    let relay = TestRelay::start(|_| {});
    let peer = EchoPeer::start().unwrap();
    let baseline = warmed_up_baseline(&relay, &peer);
    let started = Instant::now();
    let mut conns: Vec<std::net::TcpStream> = (0..550)
        .map(|_| std::net::TcpStream::connect(relay.addr()).unwrap())
        .collect();
    // The relay closes the ones over the limit at accept: they read end-of-file (or a reset);
    // the others stay open. Counted until the relay has accepted them all (bounded).
    let count_closed = |conns: &mut Vec<std::net::TcpStream>| {
        let mut closed = 0;
        for c in conns.iter_mut() {
            // Non-blocking, so counting takes no time: the silent ones are closed at 10 s.
            c.set_nonblocking(true).unwrap();
            let mut b = [0u8; 1];
            if !is_timeout(c.read(&mut b)) {
                closed += 1;
            }
            c.set_nonblocking(false).unwrap();
        }
        closed
    };
    let mut closed = 0;
    let settle = Instant::now() + WAIT;
    while Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(200));
        closed = count_closed(&mut conns);
        if closed >= 50 {
            break;
        }
    }
    let open = conns.len() - closed;
    println!(
        "one address, 550 silent TCP connections: {open} kept open, {closed} closed at accept"
    );
    assert_eq!(open, 500, "{closed} closed");
    // Another address is served over TCP meanwhile: a Binding request answered.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&std::net::SocketAddr::from(([127, 0, 0, 2], 0)).into())
        .unwrap();
    sock.connect(&relay.addr().into()).unwrap();
    let mut other: std::net::TcpStream = sock.into();
    other.set_read_timeout(Some(WAIT)).unwrap();
    let binding = geoturn_relay_proto::client::encode_request(
        geoturn_relay_proto::stun::Method::Binding,
        geoturn_relay_proto::stun::Class::Request,
        geoturn_relay_proto::stun::TransactionId([3; 12]),
        &[],
        None,
    )
    .unwrap();
    other.write_all(&binding).unwrap();
    let mut answer = [0u8; 64];
    assert!(other.read(&mut answer).unwrap() >= 20, "no Binding answer");
    drop(other);
    // The silent ones are closed once their first frame is 10 s late.
    let deadline = started + Duration::from_secs(20);
    for c in &mut conns {
        c.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut b = [0u8; 1];
        while is_timeout(c.read(&mut b)) {
            assert!(
                Instant::now() < deadline,
                "a silent connection outlived 20 s"
            );
        }
    }
    println!(
        "every silent connection closed {:?} after the first",
        started.elapsed()
    );
    drop(conns);
    wait_back_to(&relay, 0, baseline, "after the attack");
}

fn is_timeout(r: std::io::Result<usize>) -> bool {
    matches!(r, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}
