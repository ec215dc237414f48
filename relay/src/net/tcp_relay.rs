//! The driver side of TCP relaying ([RFC 6062](https://www.rfc-editor.org/rfc/rfc6062)):
//! TCP relayed addresses that peers connect to, outgoing connections for Connect, and the
//! splice of a client's data connection with its peer connection once ConnectionBind succeeds.
//! A peer connection waits here between the two; it may be bound from any worker (the data
//! connection lands wherever the kernel puts it), so the table is shared across threads and
//! holds plain std sockets, re-registered with the binding worker's runtime.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use geoturn_relay_proto::{PeerSocket, RelayAddr};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use super::event::{EventTx, ShardEvent};
use super::socket::reuse_tcp_socket;

/// How long a Connect may take (RFC 6062 §5.2 suggests at least 30 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

enum PeerConnection {
    /// Waiting for ConnectionBind.
    Pending(std::net::TcpStream),
    /// Spliced with a data connection; aborting the task closes both.
    Spliced(AbortHandle),
}

/// Peer TCP connections by CONNECTION-ID, shared by every worker.
#[derive(Default)]
pub struct PeerConnections {
    map: Mutex<HashMap<u32, PeerConnection>>,
    /// Bytes spliced from clients' data connections to peers, counted as they flow.
    pub bytes_to_peer: std::sync::atomic::AtomicU64,
    /// Bytes spliced from peers to clients' data connections.
    pub bytes_to_client: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for PeerConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConnections")
            .field("len", &self.lock().len())
            .finish()
    }
}

impl PeerConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, PeerConnection>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parks a peer connection until its ConnectionBind.
    pub fn insert_pending(&self, id: u32, stream: TcpStream) -> io::Result<()> {
        // Deregister from this worker's runtime so any worker can take it.
        let std = stream.into_std()?;
        self.lock().insert(id, PeerConnection::Pending(std));
        Ok(())
    }

    /// Takes a waiting peer connection for the worker that binds it.
    pub fn take_pending(&self, id: u32) -> Option<std::net::TcpStream> {
        match self.lock().remove(&id) {
            Some(PeerConnection::Pending(s)) => Some(s),
            Some(other) => {
                // Not pending: put it back untouched.
                self.lock().insert(id, other);
                None
            }
            None => None,
        }
    }

    /// Records the task that now carries connection `id`.
    pub fn set_spliced(&self, id: u32, task: AbortHandle) {
        self.lock().insert(id, PeerConnection::Spliced(task));
    }

    /// Closes connection `id`, waiting or spliced.
    pub fn close(&self, id: u32) {
        match self.lock().remove(&id) {
            Some(PeerConnection::Spliced(task)) => task.abort(),
            Some(PeerConnection::Pending(stream)) => drop(stream),
            None => {}
        }
    }

    /// Forgets a finished splice (its task ended by itself).
    pub fn forget(&self, id: u32) {
        self.lock().remove(&id);
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
        let accepted = ShardEvent::PeerAccepted {
            relay,
            from: PeerSocket::new(from),
            stream,
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

/// Opens the connection for a Connect request, parks it in `peers`, and reports the outcome
/// to the worker's loop.
pub(super) async fn connect_peer(
    events: EventTx,
    id: u32,
    relay: RelayAddr,
    peer: PeerSocket,
    peers: std::sync::Arc<PeerConnections>,
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
    let connected = match result {
        Ok(Ok(stream)) => peers.insert_pending(id, stream).is_ok(),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "Connect to peer failed");
            false
        }
        Err(_) => false,
    };
    let _ = events
        .send(ShardEvent::PeerConnectResult { id, connected })
        .await;
}
