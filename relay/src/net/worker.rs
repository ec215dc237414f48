//! Workers: one thread per core, each with its own `SO_REUSEPORT` UDP, TCP and TLS listening
//! sockets, its own single-threaded runtime and its own [`Server`] shard. The kernel hashes a
//! client's 4-tuple (or TCP connection) to one socket, so a client's allocation, its relayed
//! socket and every packet of it stay on one thread: no lock and no cross-thread hop on the
//! data path.

use geoturn_shared::clock::unix_secs;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use geoturn_relay_proto::allocation::hash::FoldMap;
use geoturn_relay_proto::server::{
    Alternate, Drain, DropReason, PEER_HEADROOM, PEER_TAILROOM, ServerStats,
};
use geoturn_relay_proto::types::FiveTuple;
use geoturn_relay_proto::{ClientSocket, Command, PeerSocket, RelayAddr, Server, Transport};
use geoturn_shared::SecretSet;
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;

use super::batch::{self, BATCH, Outgoing, Received, SlotLayout};
use super::event::{EVENT_QUEUE, EventTx, ShardEvent, StreamTx};
use super::stream::{OpenStreams, StreamContext};

/// Largest datagram relayed; larger ones are dropped (counted as too large).
const SLOT: usize = 16 * 1024;
/// Batches handled per wake-up before yielding, so one busy socket cannot starve the others.
const MAX_BATCHES_PER_WAKE: usize = 8;
/// Slots of the outbox: datagrams from peers framed for UDP clients wait there (across all
/// relayed sockets that were ready in one turn of the runtime) for one `sendmmsg`.
const OUTBOX_SLOTS: usize = 2 * BATCH;
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
    /// Receive buffer asked for each relayed socket, bytes; 0 keeps the system default.
    pub relay_socket_buffer: usize,
    /// Send runs of datagrams to one destination as one UDP GSO send where the kernel can.
    pub udp_gso: bool,
    /// TCP listeners on the same addresses.
    pub tcp: Vec<std::net::TcpListener>,
    /// Peer TCP connections, shared by every worker.
    pub peers: Arc<super::tcp_relay::PeerConnections>,
    /// TLS listeners with their acceptor.
    pub tls: Vec<(std::net::TcpListener, tokio_rustls::TlsAcceptor)>,
}

struct RelaySocket {
    /// The UDP relayed socket; `None` for a TCP relayed address (RFC 6062).
    socket: Option<Rc<AsyncFd<UdpSocket>>>,
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
    fn listener(&self, local: SocketAddr) -> Option<&Rc<AsyncFd<UdpSocket>>> {
        self.listeners
            .iter()
            .find(|(addr, _)| *addr == local)
            .map(|(_, s)| s)
    }
}

struct Shard {
    server: Server,
    /// UDP listening sockets by local address.
    listeners: Vec<(SocketAddr, Rc<AsyncFd<UdpSocket>>)>,
    relays: FoldMap<RelayAddr, RelaySocket>,
    /// Writers of TCP/TLS clients, by 5-tuple.
    streams: HashMap<FiveTuple, StreamTx>,
    /// Data connections whose ConnectionBind succeeded: they become pipes to this peer
    /// connection once the response is out.
    splices: HashMap<FiveTuple, u32>,
    /// Peer TCP connections, shared by every worker.
    peers: Arc<super::tcp_relay::PeerConnections>,
    /// The loop's event queue, for the tasks the shard starts (RFC 6062 peers).
    events: EventTx,
    client_buf: Vec<u8>,
    outbox: Outbox,
    /// What the last `recvmmsg` on a relayed socket got. Here rather than in each reader
    /// task: kept across awaits it would cost every allocation 1.8 KB.
    peer_received: [Option<Received>; BATCH],
    /// Wakes the task that flushes the outbox.
    flush: Rc<Notify>,
    relay_socket_buffer: usize,
    /// Whether batched sends group runs for UDP GSO.
    gso: batch::Gso,
    send_errors: u64,
}

/// Peer data framed in place for UDP clients, waiting to leave in one `sendmmsg` per listener.
/// Relayed sockets receive straight into its free slots; the flush task sends and empties it
/// once every relayed socket that was ready in this turn of the runtime has been read (or
/// earlier, when it runs out of slots).
struct Outbox {
    buf: Vec<u8>,
    /// Slots received into so far (the next receive starts at this slot).
    used: usize,
    /// (slot, framed bytes of the slot, client, listener address), in arrival order.
    items: Vec<(usize, Range<usize>, SocketAddr, SocketAddr)>,
    /// The flush task has been woken and has not run yet.
    flush_pending: bool,
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
        let local = u.local_addr()?;
        listeners.push((local, Rc::new(batch::register(u)?)));
    }
    let now = Instant::now();
    ctx.server.set_unix_time(now, unix_secs());
    ctx.server
        .set_secrets(ctx.secrets.borrow_and_update().clone());
    ctx.server.set_drain(ctx.drain.borrow_and_update().clone());
    ctx.server
        .set_first_contact(ctx.first_contact.borrow_and_update().clone());
    let (events_tx, mut events) = tokio::sync::mpsc::channel(EVENT_QUEUE);
    let shard = Rc::new(RefCell::new(Shard {
        server: ctx.server,
        listeners: listeners.clone(),
        relays: FoldMap::default(),
        streams: HashMap::new(),
        splices: HashMap::new(),
        peers: ctx.peers.clone(),
        events: events_tx.clone(),
        client_buf: CLIENT_LAYOUT.buffer(),
        outbox: Outbox {
            buf: vec![0; SLOT * OUTBOX_SLOTS],
            used: 0,
            items: Vec::with_capacity(OUTBOX_SLOTS),
            flush_pending: false,
        },
        flush: Rc::new(Notify::new()),
        peer_received: [None; BATCH],
        relay_socket_buffer: ctx.relay_socket_buffer,
        gso: batch::Gso::new(ctx.udp_gso),
        send_errors: 0,
    }));
    let weak = Rc::downgrade(&shard);
    let mut acceptors = Vec::new();
    let flush = shard.borrow().flush.clone();
    acceptors.push(tokio::task::spawn_local(outbox_flusher(
        weak.clone(),
        flush,
    )));
    for (index, (_, sock)) in listeners.iter().enumerate() {
        acceptors.push(tokio::task::spawn_local(client_reader(
            weak.clone(),
            sock.clone(),
            index,
        )));
    }
    let streams = StreamContext {
        events: events_tx,
        peers: ctx.peers.clone(),
        open: OpenStreams::default(),
    };
    for tcp in ctx.tcp {
        let listener = tokio::net::TcpListener::from_std(tcp)?;
        acceptors.push(tokio::task::spawn_local(super::stream::accept_loop(
            streams.clone(),
            listener,
            None,
        )));
    }
    for (tls, acceptor) in ctx.tls {
        let listener = tokio::net::TcpListener::from_std(tls)?;
        acceptors.push(tokio::task::spawn_local(super::stream::accept_loop(
            streams.clone(),
            listener,
            Some(acceptor),
        )));
    }
    drop(streams);
    let mut tick = tokio::time::interval(TICK);
    let mut shutdown = ctx.shutdown;
    let mut control = ctx.control;
    loop {
        tokio::select! {
            Some(event) = events.recv() => {
                let mut s = shard.borrow_mut();
                handle_event(&mut s, &weak, event, Instant::now());
            }
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

/// Feeds the server what a stream or RFC 6062 task reported, runs the commands that follow,
/// and answers the task where it waits for an answer.
fn handle_event(s: &mut Shard, weak: &Weak<RefCell<Shard>>, event: ShardEvent, now: Instant) {
    match event {
        ShardEvent::StreamOpened { tuple, tx } => {
            s.streams.insert(tuple, tx);
        }
        ShardEvent::StreamFrame {
            tuple,
            frame,
            bound,
        } => {
            if let Some(fwd) = s.server.handle_client_input(now, tuple, &frame)
                && !send_to_peer_from(s, &fwd)
            {
                s.send_errors += 1;
            }
            run_commands(s, weak, now);
            if let Some(answer) = bound {
                // A successful ConnectionBind queued SpliceData while its commands ran.
                let _ = answer.send(s.splices.remove(&tuple));
            }
        }
        ShardEvent::StreamIdle {
            tuple,
            holds_allocation,
        } => {
            let _ = holds_allocation.send(s.server.allocations().get(&tuple).is_some());
        }
        ShardEvent::StreamClosed { tuple } => {
            // Dropping the sender lets the stream's writer finish what is queued and return.
            s.streams.remove(&tuple);
            s.splices.remove(&tuple);
            s.server.handle_client_disconnected(&tuple);
            run_commands(s, weak, now);
        }
        ShardEvent::PeerAccepted {
            relay,
            from,
            stream,
        } => {
            match s.server.handle_peer_tcp_accepted(now, relay, from) {
                Some(id) => {
                    if s.peers.insert_pending(id, stream).is_err() {
                        s.server.handle_peer_tcp_closed(id);
                    }
                }
                None => drop(stream),
            }
            run_commands(s, weak, now);
        }
        ShardEvent::PeerConnectResult { id, connected } => {
            s.server.handle_peer_connect_result(now, id, connected);
            run_commands(s, weak, now);
        }
    }
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
async fn client_reader(weak: Weak<RefCell<Shard>>, sock: Rc<AsyncFd<UdpSocket>>, index: usize) {
    loop {
        let mut ready = match sock.readable().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "UDP listener failed");
                return;
            }
        };
        let Some(shard) = weak.upgrade() else { return };
        on_client_readable(&shard, &weak, index, &mut ready);
    }
}

/// A client datagram for a peer: (relayed address, peer, bytes of `client_buf`).
type Forward = (RelayAddr, SocketAddr, Range<usize>);

fn on_client_readable(
    shard: &Rc<RefCell<Shard>>,
    weak: &Weak<RefCell<Shard>>,
    index: usize,
    ready: &mut AsyncFdReadyGuard<'_, UdpSocket>,
) {
    let mut guard = shard.borrow_mut();
    let s = &mut *guard;
    let Some(local) = s.listeners.get(index).map(|(a, _)| *a) else {
        return;
    };
    let mut received: [Option<Received>; BATCH] = [None; BATCH];
    let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
    let mut forwards: [Forward; BATCH] =
        std::array::from_fn(|_| (RelayAddr(unspecified), unspecified, 0..0));
    for _ in 0..MAX_BATCHES_PER_WAKE {
        let got = match ready.try_io(|inner| {
            batch::recv_batch(
                inner.get_ref(),
                &mut s.client_buf,
                CLIENT_LAYOUT,
                &mut received,
            )
        }) {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                // ICMP errors from earlier sends surface here on some systems; keep serving.
                tracing::debug!(error = %e, "listener receive error");
                break;
            }
            // Already empty: the runtime forgets the readiness and waits for the next datagram.
            Err(_would_block) => break,
        };
        let now = Instant::now();
        let base = s.client_buf.as_ptr().addr();
        let mut n_fwd = 0;
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
            if let Some(fwd) = s.server.handle_client_input(now, tuple, packet)
                && let Some(slot) = forwards.get_mut(n_fwd)
            {
                // The payload is borrowed from the receive buffer: remember where it is.
                let start = fwd.payload.as_ptr().addr() - base;
                *slot = (fwd.relay, fwd.peer.0, start..start + fwd.payload.len());
                n_fwd += 1;
            }
        }
        // Forwards go out before the batch's commands run: a Refresh(0) later in the batch
        // must not free a relayed socket that earlier data of the batch still needs.
        send_forwards(s, forwards.get(..n_fwd).unwrap_or_default());
        run_commands(s, weak, now);
        if got < BATCH {
            // A short batch drained the socket (no pending error: unconnected UDP sockets do
            // not queue ICMP errors): anything newer raises a fresh edge, so the runtime may
            // forget the readiness now instead of learning it from one more empty read.
            ready.clear_ready();
            break;
        }
    }
}

/// Sends the forwards of one receive batch: one `sendmmsg` per relayed socket for what the
/// batch holds for it (one `sendto` when it is a single datagram), in arrival order.
fn send_forwards(s: &mut Shard, forwards: &[Forward]) {
    let mut done = [false; BATCH];
    let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
    for (i, (relay, _, _)) in forwards.iter().enumerate() {
        if done.get(i).copied().unwrap_or(true) {
            continue;
        }
        let mut msgs: [Outgoing<'_>; BATCH] = [Outgoing {
            to: unspecified,
            data: &[],
        }; BATCH];
        let mut k = 0;
        for ((r, peer, range), d) in forwards.iter().zip(done.iter_mut()).skip(i) {
            if *d || r != relay {
                continue;
            }
            *d = true;
            if let Some(m) = msgs.get_mut(k) {
                let data = s.client_buf.get(range.clone()).unwrap_or_default();
                *m = Outgoing { to: *peer, data };
                k += 1;
            }
        }
        let batch = msgs.get(..k).unwrap_or_default();
        let sent = match s.relays.get(relay).and_then(|r| r.socket.as_ref()) {
            Some(sock) => match batch {
                [one] => usize::from(batch::send_now(sock.get_ref(), one.data, one.to).is_ok()),
                _ => batch::send_batch(sock.get_ref(), batch, &s.gso).unwrap_or(0),
            },
            None => 0,
        };
        s.send_errors += (k - sent) as u64;
    }
}

/// Sends client data out of its allocation's relayed socket; false when it could not.
fn send_to_peer_from(s: &Shard, fwd: &geoturn_relay_proto::ToPeer<'_>) -> bool {
    s.relays
        .get(&fwd.relay)
        .and_then(|r| r.socket.as_ref())
        .is_some_and(|sock| batch::send_now(sock.get_ref(), fwd.payload, fwd.peer.0).is_ok())
}

/// Sends a message to a client over whatever it is connected by; false when it could not.
fn send_to_client(s: &Shard, five_tuple: &FiveTuple, data: &[u8]) -> bool {
    match five_tuple.transport {
        Transport::Udp => s
            .listener(five_tuple.server)
            .is_some_and(|l| batch::send_now(l.get_ref(), data, five_tuple.client.0).is_ok()),
        Transport::Tcp | Transport::Tls => s
            .streams
            .get(five_tuple)
            .is_some_and(|tx| tx.try_send(data.to_vec()).is_ok()),
    }
}

fn run_commands(s: &mut Shard, weak: &Weak<RefCell<Shard>>, now: Instant) {
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
                        s.events.clone(),
                        relay,
                        listener,
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
                let bound = super::socket::bind_relay(relay, dont_fragment, s.relay_socket_buffer)
                    .and_then(batch::register)
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
                    s.events.clone(),
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

/// Reads one relayed socket until the task is aborted: datagrams land in the outbox's free
/// slots, are framed there for the client, and wait for the flush task.
async fn relay_reader(
    shard: Weak<RefCell<Shard>>,
    relay: RelayAddr,
    socket: Rc<AsyncFd<UdpSocket>>,
) {
    loop {
        let Ok(mut ready) = socket.readable().await else {
            return;
        };
        let Some(shard) = shard.upgrade() else { return };
        let mut guard = shard.borrow_mut();
        let s = &mut *guard;
        for _ in 0..MAX_BATCHES_PER_WAKE {
            if OUTBOX_SLOTS - s.outbox.used < BATCH {
                flush_outbox(s);
            }
            let first = s.outbox.used;
            let area = s.outbox.buf.get_mut(first * SLOT..).unwrap_or_default();
            let received = &mut s.peer_received;
            let got = match ready
                .try_io(|inner| batch::recv_batch(inner.get_ref(), area, PEER_LAYOUT, received))
            {
                Ok(Ok(n)) => n,
                Ok(Err(_)) | Err(_) => break,
            };
            s.outbox.used = first + got;
            let now = Instant::now();
            for i in 0..got {
                let Some(Some(r)) = s.peer_received.get(i).copied() else {
                    continue;
                };
                if r.truncated {
                    s.server.stats_mut_drop(DropReason::TooLarge);
                    continue;
                }
                let slot_index = first + i;
                let Some(slot) = s.outbox.buf.get_mut(PEER_LAYOUT.slot(slot_index)) else {
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
                        .outbox
                        .buf
                        .get(PEER_LAYOUT.slot(slot_index))
                        .and_then(|slot| slot.get(to.range))
                        .unwrap_or_default();
                    if !send_to_client(s, &to.five_tuple, data) {
                        s.send_errors += 1;
                    }
                    continue;
                }
                s.outbox.items.push((
                    slot_index,
                    to.range,
                    to.five_tuple.client.0,
                    to.five_tuple.server,
                ));
            }
            if got < BATCH {
                // Drained (see on_client_readable).
                ready.clear_ready();
                break;
            }
        }
        if !s.outbox.items.is_empty() && !s.outbox.flush_pending {
            s.outbox.flush_pending = true;
            // The flush task runs after every task already woken in this turn, so the other
            // ready relayed sockets add their datagrams to the same sendmmsg first.
            s.flush.notify_one();
        }
    }
}

/// Flushes the outbox whenever a relay reader asks.
async fn outbox_flusher(shard: Weak<RefCell<Shard>>, flush: Rc<Notify>) {
    loop {
        flush.notified().await;
        let Some(shard) = shard.upgrade() else { return };
        flush_outbox(&mut shard.borrow_mut());
    }
}

/// Sends everything in the outbox, one `sendmmsg` per listener (per [`BATCH`] datagrams), and
/// empties it.
fn flush_outbox(s: &mut Shard) {
    let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
    let mut msgs: [Outgoing<'_>; OUTBOX_SLOTS] = [Outgoing {
        to: unspecified,
        data: &[],
    }; OUTBOX_SLOTS];
    // Nearly always one listener; with several (dual stack), one pass each.
    for (local, listener) in &s.listeners {
        let mut k = 0;
        for (slot, range, client, _) in s.outbox.items.iter().filter(|i| i.3 == *local) {
            if let Some(m) = msgs.get_mut(k) {
                let data = s
                    .outbox
                    .buf
                    .get(PEER_LAYOUT.slot(*slot))
                    .and_then(|b| b.get(range.clone()))
                    .unwrap_or_default();
                *m = Outgoing { to: *client, data };
                k += 1;
            }
        }
        if k == 0 {
            continue;
        }
        let batch = msgs.get(..k).unwrap_or_default();
        let sent = batch::send_batch(listener.get_ref(), batch, &s.gso).unwrap_or(0);
        s.send_errors += (k - sent) as u64;
    }
    s.outbox.items.clear();
    s.outbox.used = 0;
    s.outbox.flush_pending = false;
}
