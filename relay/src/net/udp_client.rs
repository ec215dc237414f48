//! The UDP listeners' read path: a batch of client datagrams at a time (`recvmmsg`) into the
//! shard's server, and the forwards to peers it returns, grouped per relayed socket
//! (`sendmmsg`).

use std::cell::RefCell;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::rc::{Rc, Weak};
use std::time::Instant;

use geoturn_relay_proto::server::DropReason;
use geoturn_relay_proto::types::FiveTuple;
use geoturn_relay_proto::{ClientSocket, RelayAddr, Transport};
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};

use super::batch::{self, BATCH, Outgoing, Received};
use super::shard::{CLIENT_LAYOUT, MAX_BATCHES_PER_WAKE, Shard, run_commands};

/// Reads one UDP listening socket until the task is aborted.
pub(super) async fn client_reader(
    weak: Weak<RefCell<Shard>>,
    sock: Rc<AsyncFd<UdpSocket>>,
    index: usize,
) {
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
        std::array::from_fn(|_| (RelayAddr::new(unspecified), unspecified, 0..0));
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
        let mut n_fwd = 0;
        for (i, r) in received.iter().take(got).enumerate() {
            let Some(r) = r else { continue };
            if r.truncated {
                s.server.stats_mut_drop(DropReason::TooLarge);
                continue;
            }
            let area = CLIENT_LAYOUT.range(i);
            let slot_start = area.start;
            let Some(packet) = s.client_buf.get(area).and_then(|a| a.get(..r.len)) else {
                continue;
            };
            // A wildcard listener learns, per datagram, which of the host's addresses the
            // client reached: that address is the 5-tuple's, and replies leave from it.
            let server = r
                .local
                .map_or(local, |ip| SocketAddr::new(ip, local.port()));
            let tuple = FiveTuple {
                client: ClientSocket::new(r.from),
                server,
                transport: Transport::Udp,
            };
            if let Some(fwd) = s.server.handle_client_input(now, tuple, packet)
                && let Some(slot) = forwards.get_mut(n_fwd)
            {
                // The payload stays in the receive buffer: remember where.
                let range = slot_start + fwd.range.start..slot_start + fwd.range.end;
                *slot = (fwd.relay, fwd.peer.addr(), range);
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
        let mut msgs: [Outgoing<'_>; BATCH] = [Outgoing::new(unspecified, &[]); BATCH];
        let mut k = 0;
        for ((r, peer, range), d) in forwards.iter().zip(done.iter_mut()).skip(i) {
            if *d || r != relay {
                continue;
            }
            *d = true;
            if let Some(m) = msgs.get_mut(k) {
                let data = s.client_buf.get(range.clone()).unwrap_or_default();
                *m = Outgoing::new(*peer, data);
                k += 1;
            }
        }
        let batch = msgs.get(..k).unwrap_or_default();
        let sent = match s.relays.get(relay).and_then(|r| r.socket.as_ref()) {
            Some(sock) => match batch {
                [one] => usize::from(batch::send_now(sock.get_ref(), *one).is_ok()),
                _ => batch::send_batch(sock.get_ref(), batch, &s.gso).unwrap_or(0),
            },
            None => 0,
        };
        s.send_errors += (k - sent) as u64;
    }
}
