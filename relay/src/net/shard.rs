//! A worker's shard: its sans-IO server, the sockets it drives (UDP listeners, relayed
//! sockets, stream clients' queues), the one executor of the server's commands, the
//! relayed-socket readers and the outbox that batches peer data for UDP clients.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::Range;
use std::rc::{Rc, Weak};
use std::time::Instant;

use geoturn_relay_proto::allocation::hash::FoldMap;
use geoturn_relay_proto::server::{DropReason, PEER_HEADROOM, PEER_TAILROOM};
use geoturn_relay_proto::types::FiveTuple;
use geoturn_relay_proto::{
    Command, ConnectionId, PeerSocket, RelayAddr, Server, ToPeer, Transport,
};
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::batch::{self, BATCH, Outgoing, Received, SlotLayout};
use super::event::{EventTx, StreamTx};

/// Largest datagram relayed; larger ones are dropped (counted as too large).
pub(super) const SLOT: usize = 16 * 1024;

/// Batches handled per wake-up before yielding, so one busy socket cannot starve the others.
pub(super) const MAX_BATCHES_PER_WAKE: usize = 8;

/// Slots of the outbox: datagrams from peers framed for UDP clients wait there (across all
/// relayed sockets that were ready in one turn of the runtime) for one `sendmmsg`.
pub(super) const OUTBOX_SLOTS: usize = 2 * BATCH;

pub(super) struct Shard {
    pub(super) server: Server,
    /// UDP listening sockets by local address.
    pub(super) listeners: Vec<(SocketAddr, Rc<AsyncFd<UdpSocket>>)>,
    pub(super) relays: FoldMap<RelayAddr, RelaySocket>,
    /// Writers of TCP/TLS clients, by 5-tuple.
    pub(super) streams: HashMap<FiveTuple, StreamTx>,
    /// Data connections whose ConnectionBind succeeded: they become pipes to this peer
    /// connection once the response is out.
    pub(super) splices: HashMap<FiveTuple, ConnectionId>,
    /// The loop's event queue, for the tasks the shard starts (RFC 6062 peers).
    pub(super) events: EventTx,
    pub(super) client_buf: Vec<u8>,
    pub(super) outbox: Outbox,
    /// What the last `recvmmsg` on a relayed socket got. Here rather than in each reader
    /// task: kept across awaits it would cost every allocation 1.8 KB.
    pub(super) peer_received: [Option<Received>; BATCH],
    /// Wakes the task that flushes the outbox.
    pub(super) flush: Rc<Notify>,
    pub(super) relay_socket_buffer: usize,
    /// Whether batched sends group runs for UDP GSO.
    pub(super) gso: batch::Gso,
    pub(super) send_errors: u64,
    /// The kernel fast path the core's offload commands go to, when it is on.
    pub(super) offload: Option<std::sync::Arc<crate::offload::Offload>>,
}

impl Shard {
    /// A shard around `server` with its UDP `listeners`, before any client arrived.
    pub(super) fn new(
        server: Server,
        listeners: Vec<(SocketAddr, Rc<AsyncFd<UdpSocket>>)>,
        events: EventTx,
        relay_socket_buffer: usize,
        udp_gso: bool,
        offload: Option<std::sync::Arc<crate::offload::Offload>>,
    ) -> Self {
        Self {
            server,
            listeners,
            relays: FoldMap::default(),
            streams: HashMap::new(),
            splices: HashMap::new(),
            events,
            client_buf: CLIENT_LAYOUT.buffer(),
            outbox: Outbox {
                buf: vec![0; SLOT * OUTBOX_SLOTS],
                used: 0,
                items: Vec::with_capacity(OUTBOX_SLOTS),
                flush_pending: false,
            },
            flush: Rc::new(Notify::new()),
            peer_received: [None; BATCH],
            relay_socket_buffer,
            gso: batch::Gso::new(udp_gso),
            send_errors: 0,
            offload,
        }
    }

    /// The UDP listener a client's 5-tuple `server` address arrived on, and the source address
    /// a reply must name (`Some` only for a wildcard listener, which learned `server` from the
    /// datagram; a specific one sends from its own address anyway).
    pub(super) fn listener(
        &self,
        server: SocketAddr,
    ) -> Option<(&Rc<AsyncFd<UdpSocket>>, Option<IpAddr>)> {
        let (index, from) = self.listener_index(server)?;
        self.listeners.get(index).map(|(_, sock)| (sock, from))
    }

    /// [`Self::listener`] as an index into `listeners`: the listener bound to `server` itself
    /// when there is one (the kernel delivers to it before a wildcard on the same port),
    /// otherwise a wildcard one.
    fn listener_index(&self, server: SocketAddr) -> Option<(usize, Option<IpAddr>)> {
        let exact = self.listeners.iter().position(|(a, _)| *a == server);
        exact.map(|i| (i, None)).or_else(|| {
            self.listeners
                .iter()
                .enumerate()
                .find_map(|(i, (a, _))| serves(*a, server).map(|from| (i, from)))
        })
    }
}

/// Whether a listener bound to `listener` receives datagrams for `server`, and if so the source
/// a reply to them must name (see [`Shard::listener`]).
fn serves(listener: SocketAddr, server: SocketAddr) -> Option<Option<IpAddr>> {
    if listener == server {
        Some(None)
    } else if listener.ip().is_unspecified()
        && listener.port() == server.port()
        && listener.is_ipv4() == server.is_ipv4()
    {
        // A link-local source needs its interface too, which the 5-tuple does not keep: the
        // kernel's choice, as before packet info, is right on the one link it can be on.
        let link_local = matches!(server.ip(), IpAddr::V6(ip) if ip.is_unicast_link_local());
        Some((!link_local).then_some(server.ip()))
    } else {
        None
    }
}

pub(super) struct RelaySocket {
    /// The UDP relayed socket; `None` for a TCP relayed address (RFC 6062).
    pub(super) socket: Option<Rc<AsyncFd<UdpSocket>>>,
    /// Its reader (UDP) or acceptor (TCP).
    pub(super) reader: AbortHandle,
    /// The allocation's trace span: opened when the relayed address is bound, closed when it
    /// is freed, so a trace shows each allocation's lifetime (never a span per packet).
    pub(super) _span: tracing::Span,
}

fn allocation_span(relay: RelayAddr, transport: &'static str) -> tracing::Span {
    tracing::info_span!("allocation", relayed = %relay.addr(), peer_transport = transport)
}

/// Peer data framed in place for UDP clients, waiting to leave in one `sendmmsg` per listener.
/// Relayed sockets receive straight into its free slots; the flush task sends and empties it
/// once every relayed socket that was ready in this turn of the runtime has been read (or
/// earlier, when it runs out of slots).
/// A datagram for a UDP client waiting in the outbox.
pub(super) struct Queued {
    /// Its slot.
    slot: usize,
    /// The framed bytes within the slot.
    range: Range<usize>,
    client: SocketAddr,
    /// Index of the listener it leaves by in `Shard::listeners`, found once, when queued.
    listener: usize,
    /// The source address a reply names (see [`Shard::listener`]).
    from: Option<IpAddr>,
}

pub(super) struct Outbox {
    pub(super) buf: Vec<u8>,
    /// Slots received into so far (the next receive starts at this slot).
    pub(super) used: usize,
    /// What waits, in arrival order.
    pub(super) items: Vec<Queued>,
    /// The flush task has been woken and has not run yet.
    pub(super) flush_pending: bool,
}

pub(super) const CLIENT_LAYOUT: SlotLayout = SlotLayout {
    size: SLOT,
    head: 0,
    tail: 0,
};

pub(super) const PEER_LAYOUT: SlotLayout = SlotLayout {
    size: SLOT,
    head: PEER_HEADROOM,
    tail: PEER_TAILROOM,
};

/// Sends client data (`packet[fwd.range]`) out of its allocation's relayed socket; false when
/// it could not.
pub(super) fn send_to_peer_from(s: &Shard, fwd: &ToPeer, packet: &[u8]) -> bool {
    let Some(payload) = packet.get(fwd.range.clone()) else {
        return false;
    };
    s.relays
        .get(&fwd.relay)
        .and_then(|r| r.socket.as_ref())
        .is_some_and(|sock| {
            batch::send_now(sock.get_ref(), Outgoing::new(fwd.peer.addr(), payload)).is_ok()
        })
}

/// Sends a message to a client over whatever it is connected by; false when it could not.
pub(super) fn send_to_client(s: &Shard, five_tuple: &FiveTuple, data: &[u8]) -> bool {
    match five_tuple.transport {
        Transport::Udp => s.listener(five_tuple.server).is_some_and(|(l, from)| {
            let m = Outgoing {
                from,
                ..Outgoing::new(five_tuple.client.addr(), data)
            };
            batch::send_now(l.get_ref(), m).is_ok()
        }),
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
                ));
            }
            Command::SpliceData { five_tuple, id } => {
                s.splices.insert(five_tuple, id);
            }
            Command::FreeRelay { relay } => {
                if let Some(r) = s.relays.remove(&relay) {
                    r.reader.abort();
                }
            }
            // The core only offers channels once the worker enabled the offload, which it does
            // only with a fast path; without one there is nothing to install or remove.
            Command::OffloadChannel(channel) => {
                if let Some(o) = &s.offload {
                    o.install(&channel);
                }
            }
            Command::RemoveOffload(channel) => {
                if let Some(o) = &s.offload {
                    o.remove(&channel);
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
                        .handle_peer_input(now, relay, PeerSocket::new(r.from), slot, r.len)
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
                // No listener serves it: nothing could send it (as before, it is not counted).
                let Some((listener, from)) = s.listener_index(to.five_tuple.server) else {
                    continue;
                };
                s.outbox.items.push(Queued {
                    slot: slot_index,
                    range: to.range,
                    client: to.five_tuple.client.addr(),
                    listener,
                    from,
                });
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
pub(super) async fn outbox_flusher(shard: Weak<RefCell<Shard>>, flush: Rc<Notify>) {
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
    let mut msgs: [Outgoing<'_>; OUTBOX_SLOTS] = [Outgoing::new(unspecified, &[]); OUTBOX_SLOTS];
    // Nearly always one listener; with several (dual stack), one pass each.
    for (index, (_, listener)) in s.listeners.iter().enumerate() {
        let mut k = 0;
        for q in s.outbox.items.iter().filter(|q| q.listener == index) {
            if let Some(m) = msgs.get_mut(k) {
                let data = s
                    .outbox
                    .buf
                    .get(PEER_LAYOUT.slot(q.slot))
                    .and_then(|b| b.get(q.range.clone()))
                    .unwrap_or_default();
                *m = Outgoing {
                    from: q.from,
                    ..Outgoing::new(q.client, data)
                };
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

#[cfg(test)]
mod tests {
    use super::serves;

    fn a(s: &str) -> std::net::SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_wildcard_listener_serves_its_port_and_family_and_names_the_source() {
        assert_eq!(serves(a("10.0.0.1:3478"), a("10.0.0.1:3478")), Some(None));
        assert_eq!(serves(a("10.0.0.1:3478"), a("10.0.0.2:3478")), None);
        let ip = |s: &str| Some(s.parse().unwrap());
        assert_eq!(
            serves(a("0.0.0.0:3478"), a("10.0.0.2:3478")),
            Some(ip("10.0.0.2"))
        );
        assert_eq!(serves(a("0.0.0.0:3478"), a("10.0.0.2:3479")), None);
        assert_eq!(serves(a("0.0.0.0:3478"), a("[2001:db8::1]:3478")), None);
        assert_eq!(
            serves(a("[::]:3478"), a("[2001:db8::1]:3478")),
            Some(ip("2001:db8::1"))
        );
        // Link-local: the kernel's choice of source (the 5-tuple has no interface).
        assert_eq!(serves(a("[::]:3478"), a("[fe80::1]:3478")), Some(None));
    }
}
