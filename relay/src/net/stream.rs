//! TCP and TLS clients: accepting connections, splitting the byte stream into STUN and
//! ChannelData frames posted to the worker's loop (which feeds the shard's server), and
//! writing responses and relayed data back through a bounded per-connection queue. When a
//! connection closes, its allocation goes too.

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use geoturn_relay_proto::stun::framing::{MAX_FRAME, frame_len};
use geoturn_relay_proto::stun::{Class, MessageType, Method};
use geoturn_relay_proto::types::FiveTuple;
use geoturn_relay_proto::{ClientSocket, ConnectionId, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::event::{EventTx, ShardEvent};
use super::tcp_relay::TcpRelay;

const QUEUE: usize = 256;
/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that has sent nothing for this long and holds no allocation is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Most simultaneous stream clients per worker, TLS handshakes included; bounds file
/// descriptors and memory.
const MAX_CONNECTIONS: usize = 20_000;

/// Stream clients open on one worker, counted from accept (so handshakes count), shared by
/// the worker's accept loops.
#[derive(Debug, Clone, Default)]
pub(super) struct OpenStreams(Rc<Cell<usize>>);

/// One open stream client; closing it (dropping this) frees its place.
struct OpenStream(Rc<Cell<usize>>);

impl OpenStreams {
    fn open(&self) -> Option<OpenStream> {
        let n = self.0.get();
        if n >= MAX_CONNECTIONS {
            return None;
        }
        self.0.set(n + 1);
        Some(OpenStream(self.0.clone()))
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// What a stream task needs from its worker.
#[derive(Clone)]
pub(super) struct StreamContext {
    /// The worker loop's event queue.
    pub events: EventTx,
    /// RFC 6062 peer connections, for splicing data connections.
    pub tcp_relay: Arc<TcpRelay>,
    /// The worker's open stream count.
    pub open: OpenStreams,
}

/// Accepts connections until the task is aborted.
pub(super) async fn accept_loop(
    ctx: StreamContext,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let Ok(local) = listener.local_addr() else {
        return;
    };
    let transport = if tls.is_some() {
        Transport::Tls
    } else {
        Transport::Tcp
    };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, %local, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(place) = ctx.open.open() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let tuple = FiveTuple {
            client: ClientSocket::new(peer),
            server: local,
            transport,
        };
        let ctx = ctx.clone();
        let tls = tls.clone();
        tokio::task::spawn_local(async move {
            let _place = place;
            match tls {
                None => serve(ctx, stream, tuple).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => serve(ctx, tls_stream, tuple).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// How a client connection's framed phase ended.
enum Ended {
    /// Closed, or broken.
    Closed,
    /// ConnectionBind succeeded: pipe the rest of the stream to peer connection `id`
    /// (RFC 6062 §5.3), starting with the bytes already read past the ConnectionBind.
    Splice { id: ConnectionId, leftover: Vec<u8> },
}

async fn serve<S>(ctx: StreamContext, stream: S, tuple: FiveTuple)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    if ctx
        .events
        .send(ShardEvent::StreamOpened { tuple, tx })
        .await
        .is_err()
    {
        return;
    }
    // The writer hands the write half back when its queue closes (the loop drops the sender
    // on StreamClosed), so a data connection can be spliced after its ConnectionBind response
    // has gone out.
    let writer = tokio::task::spawn_local(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                return None;
            }
        }
        Some(wr)
    });
    let ended = match read_frames(&ctx.events, &mut rd, tuple).await {
        Ok(ended) => ended,
        Err(e) => {
            tracing::debug!(error = %e, transport = tuple.transport.as_str(), "stream client closed");
            Ended::Closed
        }
    };
    let _ = ctx.events.send(ShardEvent::StreamClosed { tuple }).await;
    let wr = writer.await.ok().flatten();
    match (ended, wr) {
        (Ended::Splice { id, leftover }, Some(wr)) => {
            super::tcp_relay::splice(rd.unsplit(wr), id, leftover, ctx.tcp_relay).await;
        }
        (Ended::Splice { id, .. }, None) => ctx.tcp_relay.connections.close(id),
        (Ended::Closed, Some(mut wr)) => {
            let _ = wr.shutdown().await;
        }
        (Ended::Closed, None) => {}
    }
}

/// True for a ConnectionBind request (RFC 6062 §6.2.3): after a successful one, the stream's
/// bytes are the peer's.
fn is_connection_bind(frame: &[u8]) -> bool {
    let kind = MessageType::new(Method::ConnectionBind, Class::Request).to_u16();
    frame.get(..2) == Some(&kind.to_be_bytes()[..])
}

async fn read_frames<R: AsyncRead + Unpin>(
    events: &EventTx,
    rd: &mut R,
    tuple: FiveTuple,
) -> io::Result<Ended> {
    let mut buf = vec![0u8; 4096];
    let mut filled = 0usize;
    loop {
        // Hand every complete frame to the loop.
        let mut start = 0usize;
        loop {
            let pending = buf.get(start..filled).unwrap_or_default();
            let len = match frame_len(pending) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            };
            let Some(frame) = pending.get(..len) else {
                break;
            };
            let (bound, answer) = if is_connection_bind(frame) {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            } else {
                (None, None)
            };
            let event = ShardEvent::StreamFrame {
                tuple,
                frame: frame.to_vec(),
                bound,
            };
            if events.send(event).await.is_err() {
                return Ok(Ended::Closed);
            }
            start += len;
            if let Some(answer) = answer
                && let Ok(Some(id)) = answer.await
            {
                let leftover = buf.get(start..filled).unwrap_or_default().to_vec();
                return Ok(Ended::Splice { id, leftover });
            }
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        if filled == buf.len() {
            if buf.len() >= MAX_FRAME + 4 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
            }
            // A frame larger than the buffer: grow, bounded by the largest legal frame.
            buf.resize((buf.len() * 2).min(MAX_FRAME + 4), 0);
        }
        let area = buf.get_mut(filled..).unwrap_or_default();
        let n = match tokio::time::timeout(IDLE_TIMEOUT, rd.read(area)).await {
            Ok(r) => r?,
            Err(_) => {
                let (tx, rx) = oneshot::channel();
                let asked = ShardEvent::StreamIdle {
                    tuple,
                    holds_allocation: tx,
                };
                if events.send(asked).await.is_ok() && rx.await == Ok(true) {
                    continue;
                }
                return Err(io::Error::new(io::ErrorKind::TimedOut, "idle"));
            }
        };
        if n == 0 {
            return Ok(Ended::Closed);
        }
        filled += n;
    }
}
