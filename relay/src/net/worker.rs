//! Workers: one thread per core, each with its own `SO_REUSEPORT` UDP, TCP and TLS listening
//! sockets, its own single-threaded runtime and its own [`Server`] shard. The kernel hashes a
//! client's 4-tuple (or TCP connection) to one socket, so a client's allocation, its relayed
//! socket and every packet of it stay on one thread: no lock and no cross-thread hop on the
//! data path.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use geoturn_relay_proto::server::{
    Alternate, Drain, DropReason, PEER_HEADROOM, PEER_TAILROOM, ServerStats,
};
use geoturn_relay_proto::types::FiveTuple;
use geoturn_relay_proto::{ClientSocket, Command, PeerSocket, RelayAddr, Server, Transport};
use geoturn_shared::SecretSet;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::batch::{self, BATCH, Outgoing, Received, SlotLayout};
use super::sockopt;

/// Largest datagram relayed; larger ones are dropped (counted as too large).
const SLOT: usize = 16 * 1024;
/// Batches handled per wake-up before yielding, so one busy socket cannot starve the others.
const MAX_BATCHES_PER_WAKE: usize = 8;
/// How often the worker updates wall-clock time, expiries and its published snapshot.
const TICK: Duration = Duration::from_millis(500);

/// What a worker publishes for status and tests.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    /// Live allocations.
    pub allocations: usize,
    /// Live allocations by client transport (UDP, TCP, TLS).
    pub allocations_by_transport: [usize; 3],
    /// Live permissions over all allocations.
    pub permissions: usize,
    /// Live channel bindings over all allocations.
    pub channels: usize,
    /// Counters.
    pub stats: ServerStats,
    /// Datagrams the kernel would not take (socket buffer full).
    pub send_errors: u64,
    /// When the worker took this snapshot.
    pub taken: Option<Instant>,
}

/// One-off instructions to a worker.
#[derive(Debug, Clone)]
pub enum WorkerControl {
    /// Close a user's allocations and refuse them for a while.
    RevokeUser {
        /// The user id.
        user: String,
        /// How long to refuse them.
        duration: Duration,
    },
}

/// Everything a worker needs from the relay.
pub struct WorkerContext {
    /// Instructions from the relay handle.
    pub control: tokio::sync::mpsc::Receiver<WorkerControl>,
    /// The shard's sans-IO server.
    pub server: Server,
    /// Secret set updates.
    pub secrets: watch::Receiver<SecretSet>,
    /// Drain state updates.
    pub drain: watch::Receiver<Option<Drain>>,
    /// Where anycast first contacts are redirected.
    pub first_contact: watch::Receiver<Vec<Alternate>>,
    /// Set to true to stop.
    pub shutdown: watch::Receiver<bool>,
    /// Where the worker publishes its snapshot.
    pub snapshot: Arc<Mutex<ShardSnapshot>>,
    /// UDP listening sockets, one per listen address.
    pub udp: Vec<std::net::UdpSocket>,
    /// TCP listeners on the same addresses.
    pub tcp: Vec<std::net::TcpListener>,
    /// Peer TCP connections, shared by every worker.
    pub peers: Arc<super::tcp_relay::PeerConnections>,
    /// TLS listeners with their acceptor.
    pub tls: Vec<(std::net::TcpListener, tokio_rustls::TlsAcceptor)>,
}

/// Binds a UDP socket with `SO_REUSEPORT` so every worker can listen on the same address.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    #[cfg(all(unix, not(target_os = "solaris"), not(target_os = "illumos")))]
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    // Bursts of small packets from many clients: give the kernel room before it drops.
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

fn bind_relay(relay: RelayAddr, dont_fragment: bool) -> io::Result<std::net::UdpSocket> {
    let addr = relay.0;
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    if dont_fragment {
        sockopt::set_dont_fragment(&sock, addr.is_ipv6())?;
    }
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Binds a TCP listening socket with `SO_REUSEPORT`.
pub fn bind_reuseport_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let sock = reuse_tcp_socket(addr)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    Ok(sock.into())
}

/// A non-blocking TCP socket for `addr`'s family with address and port reuse: every worker
/// listens on the client port, and a TCP relayed address both listens and connects out.
pub(super) fn reuse_tcp_socket(addr: SocketAddr) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    #[cfg(all(unix, not(target_os = "solaris"), not(target_os = "illumos")))]
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

struct RelaySocket {
    /// The UDP relayed socket; `None` for a TCP relayed address (RFC 6062).
    socket: Option<Rc<UdpSocket>>,
    /// Its reader (UDP) or acceptor (TCP).
    reader: AbortHandle,
    /// The allocation's trace span: opened when the relayed address is bound, closed when it
    /// is freed, so a trace shows each allocation's lifetime (never a span per packet).
    _span: tracing::Span,
}

fn allocation_span(relay: RelayAddr, transport: &'static str) -> tracing::Span {
    tracing::info_span!("allocation", relayed = %relay.0, peer_transport = transport)
}

impl Shard {
    fn listener(&self, local: SocketAddr) -> Option<&Rc<UdpSocket>> {
        self.listeners
            .iter()
            .find(|(addr, _)| *addr == local)
            .map(|(_, s)| s)
    }
}

pub(super) struct Shard {
    pub(super) server: Server,
    /// UDP listening sockets by local address.
    listeners: Vec<(SocketAddr, Rc<UdpSocket>)>,
    relays: HashMap<RelayAddr, RelaySocket>,
    /// Writers of TCP/TLS clients, by 5-tuple.
    pub(super) streams: HashMap<FiveTuple, super::stream::StreamTx>,
    /// Data connections whose ConnectionBind succeeded: they become pipes to this peer
    /// connection once the response is out.
    pub(super) splices: HashMap<FiveTuple, u32>,
    /// Peer TCP connections, shared by every worker.
    pub(super) peers: Arc<super::tcp_relay::PeerConnections>,
    client_buf: Vec<u8>,
    peer_buf: Vec<u8>,
    pub(super) send_errors: u64,
}

const CLIENT_LAYOUT: SlotLayout = SlotLayout {
    size: SLOT,
    head: 0,
    tail: 0,
};
const PEER_LAYOUT: SlotLayout = SlotLayout {
    size: SLOT,
    head: PEER_HEADROOM,
    tail: PEER_TAILROOM,
};

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs a worker on the current thread until shutdown.
pub fn run_worker(ctx: WorkerContext) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, worker_loop(ctx))
}

async fn worker_loop(mut ctx: WorkerContext) -> io::Result<()> {
    let mut listeners = Vec::new();
    for u in std::mem::take(&mut ctx.udp) {
        let sock = Rc::new(UdpSocket::from_std(u)?);
        listeners.push((sock.local_addr()?, sock));
    }
    let now = Instant::now();
    ctx.server.set_unix_time(now, unix_secs());
    ctx.server
        .set_secrets(ctx.secrets.borrow_and_update().clone());
    ctx.server.set_drain(ctx.drain.borrow_and_update().clone());
    ctx.server
        .set_first_contact(ctx.first_contact.borrow_and_update().clone());
    let shard = Rc::new(RefCell::new(Shard {
        server: ctx.server,
        listeners: listeners.clone(),
        relays: HashMap::new(),
        streams: HashMap::new(),
        splices: HashMap::new(),
        peers: ctx.peers.clone(),
        client_buf: CLIENT_LAYOUT.buffer(),
        peer_buf: PEER_LAYOUT.buffer(),
        send_errors: 0,
    }));
    let weak = Rc::downgrade(&shard);
    let mut acceptors = Vec::new();
    for (index, (_, sock)) in listeners.iter().enumerate() {
        acceptors.push(tokio::task::spawn_local(client_reader(
            weak.clone(),
            sock.clone(),
            index,
        )));
    }
    for tcp in ctx.tcp {
        let listener = tokio::net::TcpListener::from_std(tcp)?;
        acceptors.push(tokio::task::spawn_local(super::stream::accept_loop(
            weak.clone(),
            listener,
            None,
        )));
    }
    for (tls, acceptor) in ctx.tls {
        let listener = tokio::net::TcpListener::from_std(tls)?;
        acceptors.push(tokio::task::spawn_local(super::stream::accept_loop(
            weak.clone(),
            listener,
            Some(acceptor),
        )));
    }
    let mut tick = tokio::time::interval(TICK);
    let mut shutdown = ctx.shutdown;
    let mut control = ctx.control;
    loop {
        tokio::select! {
            Some(ctl) = control.recv() => {
                let mut s = shard.borrow_mut();
                let now = Instant::now();
                match ctl {
                    WorkerControl::RevokeUser { user, duration } => {
                        s.server.revoke_user(now, &user, now + duration);
                    }
                }
                run_commands(&mut s, &weak, now);
            }
            // Drain and secret changes apply at once: a drain must refuse the very next
            // Allocate, a rotated secret must work on the very next request.
            Ok(()) = ctx.drain.changed() => {
                let drain = ctx.drain.borrow_and_update().clone();
                let mut s = shard.borrow_mut();
                s.server.set_drain(drain);
                // Publish at once: the drain controller trusts a count only if every worker
                // counted after the drain began.
                let snap = snapshot_of(&s, Instant::now());
                if let Ok(mut shared) = ctx.snapshot.lock() {
                    *shared = snap;
                }
            }
            Ok(()) = ctx.first_contact.changed() => {
                let targets = ctx.first_contact.borrow_and_update().clone();
                shard.borrow_mut().server.set_first_contact(targets);
            }
            Ok(()) = ctx.secrets.changed() => {
                let secrets = ctx.secrets.borrow_and_update().clone();
                shard.borrow_mut().server.set_secrets(secrets);
            }
            _ = tick.tick() => {
                let mut s = shard.borrow_mut();
                let now = Instant::now();
                s.server.set_unix_time(now, unix_secs());
                s.server.handle_timeout(now);
                run_commands(&mut s, &weak, now);
                let snap = snapshot_of(&s, now);
                if let Ok(mut shared) = ctx.snapshot.lock() {
                    *shared = snap;
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    // Close listeners, connections and relayed sockets before the runtime goes away.
    for a in acceptors {
        a.abort();
    }
    let mut s = shard.borrow_mut();
    for (_, r) in s.relays.drain() {
        r.reader.abort();
    }
    s.streams.clear();
    Ok(())
}

fn snapshot_of(s: &Shard, now: Instant) -> ShardSnapshot {
    let mut snap = ShardSnapshot {
        allocations: s.server.allocations().len(),
        stats: s.server.stats().clone(),
        send_errors: s.send_errors,
        taken: Some(now),
        ..ShardSnapshot::default()
    };
    for a in s.server.allocations().iter() {
        let t = match a.five_tuple.transport {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Tls => 2,
        };
        if let Some(n) = snap.allocations_by_transport.get_mut(t) {
            *n += 1;
        }
        snap.permissions += a.permissions.live_count(now);
        snap.channels += a.channels.live_count(now);
    }
    snap
}

/// Reads one UDP listening socket until the task is aborted.
async fn client_reader(weak: Weak<RefCell<Shard>>, sock: Rc<UdpSocket>, index: usize) {
    loop {
        if let Err(e) = sock.readable().await {
            tracing::warn!(error = %e, "UDP listener failed");
            return;
        }
        let Some(shard) = weak.upgrade() else { return };
        on_client_readable(&shard, &weak, index);
    }
}

fn on_client_readable(shard: &Rc<RefCell<Shard>>, weak: &Weak<RefCell<Shard>>, index: usize) {
    let mut guard = shard.borrow_mut();
    let s = &mut *guard;
    let Some((local, sock)) = s.listeners.get(index).cloned() else {
        return;
    };
    let mut received: [Option<Received>; BATCH] = [None; BATCH];
    for _ in 0..MAX_BATCHES_PER_WAKE {
        let got = match batch::recv_batch(&sock, &mut s.client_buf, CLIENT_LAYOUT, &mut received) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                // ICMP errors from earlier sends surface here on some systems; keep serving.
                tracing::debug!(error = %e, "listener receive error");
                break;
            }
        };
        let now = Instant::now();
        for (i, r) in received.iter().take(got).enumerate() {
            let Some(r) = r else { continue };
            if r.truncated {
                s.server.stats_mut_drop(DropReason::TooLarge);
                continue;
            }
            let Some(packet) = s
                .client_buf
                .get(CLIENT_LAYOUT.range(i))
                .and_then(|area| area.get(..r.len))
            else {
                continue;
            };
            let tuple = FiveTuple {
                client: ClientSocket(r.from),
                server: local,
                transport: Transport::Udp,
            };
            if let Some(fwd) = s.server.handle_client_input(now, tuple, packet) {
                s.send_errors += u64::from(!send_to_peer(&s.relays, &fwd));
            }
        }
        run_commands(s, weak, now);
        if got < BATCH {
            break;
        }
    }
}

/// Sends client data out of its allocation's relayed socket; false when it could not.
pub(super) fn send_to_peer_from(s: &Shard, fwd: &geoturn_relay_proto::ToPeer<'_>) -> bool {
    send_to_peer(&s.relays, fwd)
}

fn send_to_peer(
    relays: &HashMap<RelayAddr, RelaySocket>,
    fwd: &geoturn_relay_proto::ToPeer<'_>,
) -> bool {
    relays
        .get(&fwd.relay)
        .and_then(|r| r.socket.as_ref())
        .is_some_and(|s| batch::send_now(s, fwd.payload, fwd.peer.0).is_ok())
}

/// Sends a message to a client over whatever it is connected by; false when it could not.
fn send_to_client(s: &Shard, five_tuple: &FiveTuple, data: &[u8]) -> bool {
    match five_tuple.transport {
        Transport::Udp => s
            .listener(five_tuple.server)
            .is_some_and(|l| batch::send_now(l, data, five_tuple.client.0).is_ok()),
        Transport::Tcp | Transport::Tls => s
            .streams
            .get(five_tuple)
            .is_some_and(|tx| tx.try_send(data.to_vec()).is_ok()),
    }
}

pub(super) fn run_commands(s: &mut Shard, weak: &Weak<RefCell<Shard>>, now: Instant) {
    while let Some(cmd) = s.server.poll_command() {
        match cmd {
            Command::SendToClient { five_tuple, data } => {
                if !send_to_client(s, &five_tuple, &data) {
                    s.send_errors += 1;
                }
            }
            Command::BindRelay {
                relay, tcp: true, ..
            } => match super::tcp_relay::bind_listener(relay) {
                Ok(listener) => {
                    let reader = tokio::task::spawn_local(super::tcp_relay::accept_peers(
                        weak.clone(),
                        relay,
                        listener,
                        s.peers.clone(),
                    ))
                    .abort_handle();
                    s.relays.insert(
                        relay,
                        RelaySocket {
                            socket: None,
                            reader,
                            _span: allocation_span(relay, "tcp"),
                        },
                    );
                    s.server.handle_relay_bound(now, relay, true);
                }
                Err(e) => {
                    tracing::warn!(%relay, error = %e, "cannot bind TCP relayed address");
                    s.server.handle_relay_bound(now, relay, false);
                }
            },
            Command::BindRelay {
                relay,
                dont_fragment,
                tcp: false,
            } => {
                let bound = bind_relay(relay, dont_fragment)
                    .and_then(UdpSocket::from_std)
                    .map(Rc::new);
                match bound {
                    Ok(socket) => {
                        let reader = tokio::task::spawn_local(relay_reader(
                            weak.clone(),
                            relay,
                            socket.clone(),
                        ))
                        .abort_handle();
                        s.relays.insert(
                            relay,
                            RelaySocket {
                                socket: Some(socket),
                                reader,
                                _span: allocation_span(relay, "udp"),
                            },
                        );
                        s.server.handle_relay_bound(now, relay, true);
                    }
                    Err(e) => {
                        tracing::warn!(%relay, error = %e, "cannot bind relayed socket");
                        s.server.handle_relay_bound(now, relay, false);
                    }
                }
            }
            Command::ConnectPeer { id, relay, peer } => {
                tokio::task::spawn_local(super::tcp_relay::connect_peer(
                    weak.clone(),
                    id,
                    relay,
                    peer,
                    s.peers.clone(),
                ));
            }
            Command::ClosePeerConnection { id } => s.peers.close(id),
            Command::SpliceData { five_tuple, id } => {
                s.splices.insert(five_tuple, id);
            }
            Command::FreeRelay { relay } => {
                if let Some(r) = s.relays.remove(&relay) {
                    r.reader.abort();
                }
            }
        }
    }
}

async fn relay_reader(shard: Weak<RefCell<Shard>>, relay: RelayAddr, socket: Rc<UdpSocket>) {
    let mut received: [Option<Received>; BATCH] = [None; BATCH];
    // (slot, bytes of the slot, client, listener address): every datagram of one relayed
    // socket goes to the same client through the same listener.
    let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
    let mut out: [(usize, std::ops::Range<usize>, SocketAddr, SocketAddr); BATCH] =
        std::array::from_fn(|_| (0, 0..0, unspecified, unspecified));
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        let Some(shard) = shard.upgrade() else { return };
        let mut guard = shard.borrow_mut();
        let s = &mut *guard;
        for _ in 0..MAX_BATCHES_PER_WAKE {
            let got = match batch::recv_batch(&socket, &mut s.peer_buf, PEER_LAYOUT, &mut received)
            {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            };
            let now = Instant::now();
            let mut n_out = 0;
            for (i, r) in received.iter().take(got).enumerate() {
                let Some(r) = r else { continue };
                if r.truncated {
                    s.server.stats_mut_drop(DropReason::TooLarge);
                    continue;
                }
                let Some(slot) = s.peer_buf.get_mut(PEER_LAYOUT.slot(i)) else {
                    continue;
                };
                let Some(to) =
                    s.server
                        .handle_peer_input(now, relay, PeerSocket(r.from), slot, r.len)
                else {
                    continue;
                };
                if to.five_tuple.transport != Transport::Udp {
                    // Stream clients get their own copy through the connection's writer.
                    let data = s
                        .peer_buf
                        .get(PEER_LAYOUT.slot(i))
                        .and_then(|slot| slot.get(to.range))
                        .unwrap_or_default();
                    if !send_to_client(s, &to.five_tuple, data) {
                        s.send_errors += 1;
                    }
                    continue;
                }
                if let Some(o) = out.get_mut(n_out) {
                    *o = (i, to.range, to.five_tuple.client.0, to.five_tuple.server);
                    n_out += 1;
                }
            }
            let mut msgs: [Outgoing<'_>; BATCH] = [Outgoing {
                to: SocketAddr::from(([0, 0, 0, 0], 0)),
                data: &[],
            }; BATCH];
            for ((i, range, to, _), m) in out.iter().take(n_out).zip(msgs.iter_mut()) {
                let data = s
                    .peer_buf
                    .get(PEER_LAYOUT.slot(*i))
                    .and_then(|slot| slot.get(range.clone()))
                    .unwrap_or_default();
                *m = Outgoing { to: *to, data };
            }
            let batch = msgs.get(..n_out).unwrap_or_default();
            let listener = out
                .first()
                .filter(|_| n_out > 0)
                .and_then(|(_, _, _, server)| s.listener(*server));
            let Some(listener) = listener else {
                continue;
            };
            match batch::send_batch(listener, batch) {
                Ok(sent) => s.send_errors += (n_out - sent) as u64,
                Err(_) => s.send_errors += n_out as u64,
            }
            if got < BATCH {
                break;
            }
        }
    }
}
