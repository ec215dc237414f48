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

/// Live heap bytes of this process (the relay runs in it), counted by [`Counting`].
static LIVE_HEAP: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

/// The system allocator, counting the bytes it has handed out and not yet taken back: what
/// the relay's tables hold, which the resident set size (kept by the allocator, moved by the
/// kernel) cannot show.
struct Counting;

// SAFETY: every call forwards to `System` with the caller's own arguments, so the contract of
// `GlobalAlloc` is `System`'s; the counter is only arithmetic beside it.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE_HEAP.fetch_add(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's layout, passed on unchanged.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE_HEAP.fetch_sub(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout, as the caller guarantees.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        LIVE_HEAP.fetch_add(
            new_size as isize - layout.size() as isize,
            std::sync::atomic::Ordering::Relaxed,
        );
        // SAFETY: as for `dealloc`; `new_size` is the caller's.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_heap() -> isize {
    LIVE_HEAP.load(std::sync::atomic::Ordering::Relaxed)
}

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
    // Another address (127.0.0.2) is another source: served throughout.
    let c = TestRelay::credentials("bob", 3600);
    let sock = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    let mut other = TurnClient::from_socket(sock, relay.addr(), &c.username, &c.password).unwrap();
    other.allocate().unwrap();
    let mut heap = vec![live_heap()];
    // The same flood, six times. The first rounds grow what the relay keeps whatever its load:
    // the tables' capacity, and the transaction cache, which holds 40 s of responses (about
    // 80 KB a round here) before it stops growing. What must not grow with the rounds is what
    // the attack's allocations held.
    for round in 1..=6 {
        let started = Instant::now();
        let (held, refused) = allocate_all((0..600).map(|i| {
            assert!(started.elapsed() < Duration::from_secs(60), "took too long");
            client(&relay, &format!("minted-{round}-{i}"))
        }));
        println!(
            "round {round}: one address, 600 user ids: {} allocations held, {refused} refused \
             with 486",
            held.len()
        );
        assert_eq!((held.len(), refused), (500, 100));
        other.refresh(600).unwrap();
        delete_all(held);
        // Bob's allocation and its two sockets (his and the relayed one) remain.
        wait_back_to(&relay, 1, baseline + 2, "after the attack");
        heap.push(live_heap());
    }
    let growth: Vec<isize> = heap.windows(2).map(|w| w[1] - w[0]).collect();
    println!("live heap before and after each round: {heap:?} bytes; growth {growth:?}");
    // Leaking even half of a round's 500 allocations would add at least this much a round
    // (their table entries alone, before usernames, permissions and sockets).
    let leak = 250 * std::mem::size_of::<geoturn_relay_proto::allocation::Allocation>() as isize;
    // A leak grows the heap in every round; what the relay keeps whatever its load grows it in
    // some: a table doubling its capacity, and the transaction cache until its 40 s window is
    // full (on a fast run, more rounds fit in that window). So the smallest growth of the later
    // rounds: a CI run once saw 197 708, 982 892, 118 380, 80 460 bytes, whose median was over
    // the bound while the last rounds show the heap settling.
    let later = &growth[2..];
    let least = later.iter().copied().min().unwrap_or(0);
    println!("least growth of rounds 3-6: {least} bytes; half a round's allocations: {leak}");
    assert!(
        least < leak,
        "the heap grew by at least {least} bytes in every later round (half a round's \
         allocations: {leak}): {growth:?}"
    );
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

/// A loopback address that drops connection attempts: a listener on 127.0.0.2 with a backlog
/// of 0 whose one place is taken, so the kernel drops every further SYN (a full accept queue)
/// and a connection attempt waits as it would for a blackholed host. Checked, not assumed.
fn blackhole() -> (
    std::net::TcpListener,
    std::net::TcpStream,
    std::net::SocketAddr,
) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&std::net::SocketAddr::from(([127, 0, 0, 2], 0)).into())
        .unwrap();
    sock.listen(0).unwrap();
    let listener: std::net::TcpListener = sock.into();
    let addr = listener.local_addr().unwrap();
    let filler = std::net::TcpStream::connect(addr).unwrap();
    let probe = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300));
    assert!(probe.is_err(), "{addr} is not blackholed: {probe:?}");
    (listener, filler, addr)
}

/// RFC 6062 Connects to blackholed peers, each of which holds its place for the relay's 30 s
/// Connect timeout: ten TCP allocations of one address each ask for 16. At most 8 per
/// allocation and 64 per address are under way at once, the rest get 508 at once; a client of
/// another address Connects to a live peer meanwhile; the held ones end with 447 once the
/// 30 s pass, and every socket is closed.
#[test]
fn connects_to_blackholed_peers_are_capped() {
    use geoturn_relay_proto::stun::{Attribute, Method};
    use geoturn_tests::stream_client::{StreamClient, code};
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let relay = TestRelay::start(|_| {});
    let peer = EchoPeer::start().unwrap();
    let baseline = warmed_up_baseline(&relay, &peer);
    let holes: Vec<_> = (0..16).map(|_| blackhole()).collect();
    // Each hole is two descriptors: its listener and the connection that fills its queue.
    let baseline = baseline + 2 * holes.len();

    let started = Instant::now();
    let mut attackers: Vec<StreamClient> = (0..10)
        .map(|_| {
            let mut c = StreamClient::connect(relay.addr(), "scanner");
            let resp = c.request(Method::Allocate, &[Attribute::RequestedTransport(6)]);
            assert_eq!(code(&resp), None, "TCP Allocate");
            c
        })
        .collect();
    for c in &mut attackers {
        for (_, _, hole) in &holes {
            c.send(Method::Connect, &[Attribute::XorPeerAddress(*hole)]);
        }
    }
    // The refused ones are answered at once; the held ones only when their 30 s are up.
    let mut refused = 0;
    let mut answered = 0;
    let mut pending = Vec::new();
    for c in &mut attackers {
        let mut now = 0;
        while let Some(resp) = c.try_read_frame(Duration::from_secs(2)) {
            now += 1;
            if code(&resp) == Some(508) {
                refused += 1;
            }
        }
        answered += now;
        pending.push(holes.len() - now);
    }
    let held: usize = pending.iter().sum();
    println!(
        "one address, 160 Connects to blackholed peers: {held} under way, {refused} refused with 508 \
         ({answered} answered at once)"
    );
    assert_eq!((held, refused, answered), (64, 96, 96));

    // A client of another address (127.0.0.3) reaches a live peer meanwhile.
    let live = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&std::net::SocketAddr::from(([127, 0, 0, 3], 0)).into())
        .unwrap();
    sock.connect(&relay.addr().into()).unwrap();
    let mut good = StreamClient::from_stream(sock.into(), TestRelay::credentials("alice", 3600));
    let resp = good.request(Method::Allocate, &[Attribute::RequestedTransport(6)]);
    assert_eq!(code(&resp), None, "the good client's TCP Allocate");
    let resp = good.request(
        Method::Connect,
        &[Attribute::XorPeerAddress(live.local_addr().unwrap())],
    );
    assert_eq!(
        code(&resp),
        None,
        "the good client's Connect during the attack"
    );
    drop(live.accept().unwrap());
    drop((good, live));

    // Every held Connect ends with 447 once the relay's 30 s are up.
    let mut timed_out = 0;
    for (c, n) in attackers.iter_mut().zip(&pending) {
        for _ in 0..*n {
            let left = Duration::from_secs(40).saturating_sub(started.elapsed());
            let Some(resp) = c.try_read_frame(left.max(Duration::from_millis(1))) else {
                break;
            };
            assert_eq!(code(&resp), Some(447), "a blackholed Connect's answer");
            timed_out += 1;
        }
    }
    println!(
        "{timed_out} held Connects answered 447, the last {:?} after the flood",
        started.elapsed()
    );
    assert_eq!(timed_out, held);
    drop(attackers);
    wait_back_to(&relay, 0, baseline, "after the attack");
    drop(holes);
}
