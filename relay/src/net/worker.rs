//! Workers: one thread per core, each with its own `SO_REUSEPORT` UDP, TCP and TLS listening
//! sockets, its own single-threaded runtime and its own [`Server`] shard. The kernel hashes a
//! client's 4-tuple (or TCP connection) to one socket, so a client's allocation, its relayed
//! socket and every packet of it stay on one thread: no lock and no cross-thread hop on the
//! data path.
//!
//! This module is the worker's event loop: it starts the shard's readers and acceptors, then
//! waits for events from stream and RFC 6062 tasks ([`ShardEvent`]), revocations, drain,
//! secret and first-contact updates, the server's own timer ([`Server::poll_timeout`]), and
//! the publish interval (wall clock, snapshot).

use std::cell::RefCell;
use std::io;
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use geoturn_relay_proto::server::{Alternate, Drain, ServerStats};
use geoturn_relay_proto::{Server, Transport};
use geoturn_shared::SecretSet;
use geoturn_shared::clock::unix_ms;
use tokio::sync::watch;

use super::batch;
use super::event::{EVENT_QUEUE, ShardEvent};
use super::shard::{Shard, run_commands, send_to_peer_from};
use super::stream::{OpenStreams, StreamContext};

/// How often the worker updates wall-clock time, expiries and its published snapshot.
const PUBLISH: Duration = Duration::from_millis(500);

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
    /// What the kernel fast path relayed, when it is on (set on the relay's total, not per
    /// worker: the fast path is one for all workers).
    pub offload: Option<crate::offload::OffloadStatus>,
}

/// Everything a worker needs from the relay.
pub struct WorkerContext {
    /// Changes when a user is revoked (the revocation itself is in the shared table).
    pub revoked: watch::Receiver<u64>,
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
    /// TCP/TLS clients per source, shared by every worker.
    pub streams_per_source: Arc<super::stream::StreamsPerSource>,
    /// TCP listeners on the same addresses.
    pub tcp: Vec<std::net::TcpListener>,
    /// RFC 6062 peer connections and splice counters, shared by every worker.
    pub tcp_relay: Arc<super::tcp_relay::TcpRelay>,
    /// TLS listeners with their acceptor.
    pub tls: Vec<(std::net::TcpListener, tokio_rustls::TlsAcceptor)>,
    /// Where the shard's clients' round-trip samples go, every publish.
    pub client_rtts: Arc<crate::client_rtt::ClientRtts>,
    /// The kernel fast path, when it is on: the core offers it channels.
    pub offload: Option<Arc<crate::offload::Offload>>,
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
        let local = u.local_addr()?;
        listeners.push((local, Rc::new(batch::register(u)?)));
    }
    let now = Instant::now();
    ctx.server.set_unix_time(now, unix_ms());
    ctx.server
        .set_secrets(ctx.secrets.borrow_and_update().clone());
    ctx.server.set_drain(ctx.drain.borrow_and_update().clone());
    ctx.server
        .set_first_contact(ctx.first_contact.borrow_and_update().clone());
    if ctx.offload.is_some() {
        ctx.server.enable_offload();
    }
    let (events_tx, mut events) = tokio::sync::mpsc::channel(EVENT_QUEUE);
    let shard = Rc::new(RefCell::new(Shard::new(
        ctx.server,
        listeners.clone(),
        events_tx.clone(),
        ctx.relay_socket_buffer,
        ctx.udp_gso,
        ctx.offload.clone(),
    )));
    let weak = Rc::downgrade(&shard);
    let mut acceptors = Vec::new();
    let flush = shard.borrow().flush.clone();
    acceptors.push(tokio::task::spawn_local(super::shard::outbox_flusher(
        weak.clone(),
        flush,
    )));
    for (index, (_, sock)) in listeners.iter().enumerate() {
        acceptors.push(tokio::task::spawn_local(super::udp_client::client_reader(
            weak.clone(),
            sock.clone(),
            index,
        )));
    }
    let streams = StreamContext {
        events: events_tx,
        tcp_relay: ctx.tcp_relay.clone(),
        open: OpenStreams::default(),
        per_source: ctx.streams_per_source.clone(),
        client_rtts: ctx.client_rtts.clone(),
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
    let mut publish = tokio::time::interval(PUBLISH);
    let mut shutdown = ctx.shutdown;
    loop {
        // Recomputed every turn. The UDP readers feed the server outside this loop and can
        // move the deadline earlier (a first allocation starts the sweep) without waking it;
        // the publish interval bounds that delay.
        let timer = shard.borrow().server.poll_timeout();
        tokio::select! {
            () = sleep_until(timer) => {
                let mut s = shard.borrow_mut();
                let now = Instant::now();
                s.server.handle_timeout(now);
                run_commands(&mut s, &weak, now);
            }
            Some(event) = events.recv() => {
                let mut s = shard.borrow_mut();
                handle_event(&mut s, &weak, event, Instant::now());
            }
            Ok(()) = ctx.revoked.changed() => {
                let mut s = shard.borrow_mut();
                let now = Instant::now();
                s.server.apply_revocations(now);
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
            _ = publish.tick() => {
                let s = &mut *shard.borrow_mut();
                let now = Instant::now();
                let wall_ms = unix_ms();
                s.server.set_unix_time(now, wall_ms);
                ctx.client_rtts.record(&s.server.take_rtt_samples(), wall_ms);
                let snap = snapshot_of(s, now);
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

/// Sleeps until `deadline`; forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
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
                && !send_to_peer_from(s, &fwd, &frame)
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
            socket,
        } => {
            s.server.handle_peer_tcp_accepted(now, relay, from, socket);
            run_commands(s, weak, now);
        }
        ShardEvent::PeerConnectResult { id, socket } => {
            s.server.handle_peer_connect_result(now, id, socket);
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
        let t = match a.five_tuple().transport {
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
