//! The driver side of TCP relaying ([RFC 6062](https://www.rfc-editor.org/rfc/rfc6062)):
//! TCP relayed addresses that peers connect to, outgoing connections for Connect, and the
//! splice of a client's data connection with its peer connection once ConnectionBind succeeds.
//! Every socket and splice is handed to the core's table of peer connections, which owns them:
//! when the core removes a connection (its allocation ended, nobody bound it in time) the
//! socket closes or the splice ends, with no command to keep a second table in step. A waiting
//! socket is held as a plain std socket, since the data connection that binds it may land on
//! any worker; that worker registers it with its own runtime.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use geoturn_relay_proto::allocation::tcp::{CONNECT_TIMEOUT, PeerHandle, TcpConnections};
use geoturn_relay_proto::{ConnectionId, PeerSocket, RelayAddr};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use super::event::{EventTx, ShardEvent};
use super::socket::reuse_tcp_socket;

/// What every worker shares for TCP relaying: the core's table of peer connections (which
/// owns their sockets and splices) and the bytes spliced, counted as they flow.
#[derive(Debug)]
pub struct TcpRelay {
    /// Every peer connection, by CONNECTION-ID.
    pub connections: Arc<TcpConnections>,
    /// Bytes spliced from clients' data connections to peers.
    pub bytes_to_peer: AtomicU64,
    /// Bytes spliced from peers to clients' data connections.
    pub bytes_to_client: AtomicU64,
    /// Each splice's bandwidth limit in bits per second, both directions together (`--max-bps`;
    /// 0 = none).
    bps: u64,
}

impl TcpRelay {
    /// The driver side around the core's `connections`, pacing every splice to `bps` bits per
    /// second (0 = no limit).
    pub fn new(connections: Arc<TcpConnections>, bps: u64) -> Self {
        Self {
            connections,
            bytes_to_peer: AtomicU64::new(0),
            bytes_to_client: AtomicU64::new(0),
            bps,
        }
    }
}

/// Paces a splice to a bandwidth limit: the same token bucket as a UDP allocation's, except
/// that a chunk over the limit is delayed instead of dropped (TCP's flow control then slows
/// the sender down). Bytes are charged after they pass, so the bucket can go into debt by one
/// chunk; the next read waits until the debt is paid.
#[derive(Debug)]
struct Pace {
    bytes_per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Pace {
    /// `None` for no limit. One second of traffic as burst, at least one read buffer.
    fn new(bps: u64, now: Instant) -> Option<Self> {
        (bps > 0).then(|| {
            let bytes_per_sec = bps as f64 / 8.0;
            let burst = bytes_per_sec.max(CHUNK as f64);
            Self {
                bytes_per_sec,
                burst,
                tokens: burst,
                last: now,
            }
        })
    }

    /// Charges `n` bytes; how long to wait before the next read.
    fn charge(&mut self, n: usize, now: Instant) -> Duration {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.bytes_per_sec).min(self.burst) - n as f64;
        self.last = now;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.bytes_per_sec)
        }
    }
}

/// Read buffer of a splice, each direction.
const CHUNK: usize = 16 * 1024;

/// A peer socket as the core's table holds it: a std socket, not registered with any runtime,
/// so the worker where the data connection lands can take it.
fn socket_handle(stream: TcpStream) -> Option<PeerHandle> {
    stream.into_std().ok().map(PeerHandle::new)
}

/// A splice as the core's table holds it: removing the entry ends the task.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Binds and listens on a TCP relayed address.
pub fn bind_listener(relay: RelayAddr) -> io::Result<TcpListener> {
    let sock = reuse_tcp_socket(relay.addr())?;
    sock.bind(&relay.addr().into())?;
    sock.listen(128)?;
    TcpListener::from_std(sock.into())
}

/// Accepts peers on a TCP relayed address until aborted and hands each to the worker's loop,
/// which keeps it only if the server finds a permission for it.
pub(super) async fn accept_peers(events: EventTx, relay: RelayAddr, listener: TcpListener) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, %relay, "accept on a TCP relayed address failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(socket) = socket_handle(stream) else {
            continue;
        };
        let accepted = ShardEvent::PeerAccepted {
            relay,
            from: PeerSocket::new(from),
            socket,
        };
        if events.send(accepted).await.is_err() {
            return;
        }
    }
}

async fn connect_from(local: SocketAddr, peer: SocketAddr) -> io::Result<TcpStream> {
    let sock = reuse_tcp_socket(local)?;
    sock.bind(&local.into())?;
    tokio::net::TcpSocket::from_std_stream(sock.into())
        .connect(peer)
        .await
}

/// Opens the connection for a Connect request and reports the outcome to the worker's loop.
pub(super) async fn connect_peer(
    events: EventTx,
    id: ConnectionId,
    relay: RelayAddr,
    peer: PeerSocket,
) {
    let result = tokio::time::timeout(CONNECT_TIMEOUT, async {
        // From the relayed address when the kernel allows it (it may refuse the 4-tuple with
        // EADDRNOTAVAIL, e.g. against another relayed address of this host); from the relay
        // IP with a fresh port otherwise.
        match connect_from(relay.addr(), peer.addr()).await {
            Ok(stream) => Ok(stream),
            Err(_) => connect_from(SocketAddr::new(relay.addr().ip(), 0), peer.addr()).await,
        }
    })
    .await;
    let socket = match result {
        Ok(Ok(stream)) => socket_handle(stream),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "Connect to peer failed");
            None
        }
        Err(_) => None,
    };
    let _ = events
        .send(ShardEvent::PeerConnectResult { id, socket })
        .await;
}

/// Pipes a data connection to bound peer connection `id` until either side closes, or until
/// the core closes the connection (its allocation ended), starting with `leftover`, the bytes
/// read past the ConnectionBind.
pub(super) async fn splice<S>(client: S, id: ConnectionId, leftover: Vec<u8>, relay: Arc<TcpRelay>)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let table = relay.connections.clone();
    let socket = table
        .take_socket(id)
        .and_then(|h| h.downcast::<std::net::TcpStream>());
    let Some(mut peer) = socket.and_then(|s| TcpStream::from_std(s).ok()) else {
        table.close(id);
        return;
    };
    let task = tokio::task::spawn_local(async move {
        if !leftover.is_empty() && peer.write_all(&leftover).await.is_err() {
            return;
        }
        let (client_rd, client_wr) = tokio::io::split(client);
        let (peer_rd, peer_wr) = peer.into_split();
        // Both directions share one limit, as they do for a UDP allocation.
        let pace = RefCell::new(Pace::new(relay.bps, Instant::now()));
        // Either side closing ends both (RFC 6062 §5.5); bytes are counted as they pass.
        tokio::select! {
            () = pump(client_rd, peer_wr, &relay.bytes_to_peer, &pace) => {}
            () = pump(peer_rd, client_wr, &relay.bytes_to_client, &pace) => {}
        }
    });
    // Refused when the allocation ended meanwhile: dropping the handle then ends the task.
    let _ = table.set_splice(id, PeerHandle::new(AbortOnDrop(task.abort_handle())));
    let _ = task.await;
    table.close(id);
}

/// Copies `from` to `to` until either ends, adding every chunk to `counter` and pacing it
/// with `pace`.
async fn pump<R, W>(mut from: R, mut to: W, counter: &AtomicU64, pace: &RefCell<Option<Pace>>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let Some(chunk) = buf.get(..n) else { break };
        if to.write_all(chunk).await.is_err() {
            break;
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
        // Never held across the await: the other direction charges the same bucket.
        let wait = pace
            .borrow_mut()
            .as_mut()
            .map_or(Duration::ZERO, |p| p.charge(n, Instant::now()));
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_lets_a_burst_through_then_holds_the_rate() {
        let t0 = Instant::now();
        assert!(Pace::new(0, t0).is_none(), "0 is no limit");
        // 800 kbit/s = 100 000 bytes/s, one second of burst.
        let mut pace = Pace::new(800_000, t0).unwrap();
        assert_eq!(pace.charge(100_000, t0), Duration::ZERO);
        // 50 000 bytes more at once: half a second of debt.
        let wait = pace.charge(50_000, t0);
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        // After the wait, the debt is paid and the next chunk costs its own share.
        let wait = pace.charge(10_000, t0 + Duration::from_millis(500));
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        // Idle time refills up to the burst, no further.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(pace.charge(100_000, later), Duration::ZERO);
        assert!(pace.charge(1, later) > Duration::ZERO);
    }

    #[test]
    fn a_small_limit_still_lets_one_read_buffer_through() {
        let t0 = Instant::now();
        let mut pace = Pace::new(8, t0).unwrap();
        assert_eq!(pace.charge(CHUNK, t0), Duration::ZERO);
    }
}
