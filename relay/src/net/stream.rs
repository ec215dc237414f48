//! TCP and TLS clients: accepting connections, splitting the byte stream into STUN and
//! ChannelData frames posted to the worker's loop (which feeds the shard's server), and
//! writing responses and relayed data back through a bounded per-connection queue. When a
//! connection closes, its allocation goes too.

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use geoturn_relay_proto::stun::framing::{MAX_FRAME, frame_len};
use geoturn_relay_proto::stun::{Class, MessageType, Method};
use geoturn_relay_proto::types::FiveTuple;
use geoturn_relay_proto::types::source_of;
use geoturn_relay_proto::{ClientSocket, ConnectionId, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::event::{EventTx, ShardEvent};
use super::tcp_relay::TcpRelay;

const QUEUE: usize = 256;
/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first complete STUN or ChannelData frame must arrive within this of the connection
/// being ready (after the handshake for TLS).
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection must hold an allocation this long after its first frame, and at every check
/// after that (one every this long); otherwise it is closed. Frames do not extend it: a client
/// that sends only Binding requests, or Allocates that fail, does not keep a place among the
/// connections of its address. (RFC 6062 data connections leave this loop at their
/// ConnectionBind, within the first frame's deadline.)
const ALLOCATE_TIMEOUT: Duration = Duration::from_secs(30);

/// When a TCP/TLS connection's round trip is read from the kernel (`TCP_INFO`), after its first
/// frame: by then the handshake and the first exchanges have given the kernel an estimate. Taken
/// once, and only if the connection holds an allocation (an authenticated client), as a
/// round-trip sample for latency routing beside the 401 → Allocate one.
const RTT_PROBE: Duration = Duration::from_secs(2);
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

/// TCP/TLS clients open per source, relay-wide: an IPv4 address, or an IPv6 /64 (one
/// subscriber's prefix, whose addresses cost an attacker nothing). Touched per connection.
#[derive(Debug)]
pub struct StreamsPerSource {
    limit: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`StreamsPerSource`]; dropping it frees the place.
pub(super) struct SourcePlace {
    table: Arc<StreamsPerSource>,
    source: IpAddr,
}

impl StreamsPerSource {
    /// At most `limit` connections per source; 0 means no limit.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a connection from `ip`, or `None` when its source holds the limit.
    pub(super) fn open(self: &Arc<Self>, ip: IpAddr) -> Option<SourcePlace> {
        let source = source_of(ip);
        let mut counts = self.lock();
        let n = counts.entry(source).or_insert(0);
        if self.limit > 0 && *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(SourcePlace {
            table: self.clone(),
            source,
        })
    }

    /// Connections open from `ip`'s source.
    pub fn count(&self, ip: IpAddr) -> usize {
        self.lock().get(&source_of(ip)).copied().unwrap_or(0)
    }
}

impl Drop for SourcePlace {
    fn drop(&mut self) {
        let mut counts = self.table.lock();
        if let Some(n) = counts.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Entries exist only for sources with open connections: the map stays bounded.
                counts.remove(&self.source);
            }
        }
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
    /// Open streams per source, relay-wide.
    pub per_source: Arc<StreamsPerSource>,
    /// Where a connection's kernel round-trip estimate goes ([`RTT_PROBE`]).
    pub client_rtts: Arc<crate::client_rtt::ClientRtts>,
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
        let Some(source_place) = ctx.per_source.open(peer.ip()) else {
            tracing::debug!("stream refused: its source holds --max-connections-per-ip");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // For the kernel's round-trip estimate; valid while the stream lives (serve holds it).
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        let tuple = FiveTuple {
            client: ClientSocket::new(peer),
            server: local,
            transport,
        };
        let ctx = ctx.clone();
        let tls = tls.clone();
        tokio::task::spawn_local(async move {
            let _places = (place, source_place);
            match tls {
                None => serve(ctx, stream, tuple, fd).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => serve(ctx, tls_stream, tuple, fd).await,
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

async fn serve<S>(ctx: StreamContext, stream: S, tuple: FiveTuple, fd: std::os::fd::RawFd)
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
    let probe = RttProbe {
        fd,
        rtts: &ctx.client_rtts,
    };
    let ended = match read_frames(&ctx.events, &mut rd, tuple, probe).await {
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

/// A connection's socket, for its kernel round-trip estimate, and where that goes.
struct RttProbe<'a> {
    /// The TCP socket under the stream (TLS included), open for as long as the stream.
    fd: std::os::fd::RawFd,
    rtts: &'a crate::client_rtt::ClientRtts,
}

async fn read_frames<R: AsyncRead + Unpin>(
    events: &EventTx,
    rd: &mut R,
    tuple: FiveTuple,
    probe: RttProbe<'_>,
) -> io::Result<Ended> {
    let mut buf = vec![0u8; 4096];
    let mut filled = 0usize;
    let mut deadline = tokio::time::Instant::now() + FIRST_FRAME_TIMEOUT;
    // When to read the kernel's round trip (once, RTT_PROBE after the first frame).
    let mut probe_at: Option<tokio::time::Instant> = None;
    // Until the first complete frame, the deadline is the first frame's; then the checks
    // for an allocation.
    let mut framed = false;
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
            if !framed {
                framed = true;
                deadline = tokio::time::Instant::now() + ALLOCATE_TIMEOUT;
                probe_at = Some(tokio::time::Instant::now() + RTT_PROBE);
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
        let wake = probe_at.map_or(deadline, |p| p.min(deadline));
        let n = match tokio::time::timeout_at(wake, rd.read(area)).await {
            Ok(r) => r?,
            Err(_) if probe_at.is_some_and(|p| p <= tokio::time::Instant::now()) => {
                probe_at = None;
                let (tx, rx) = oneshot::channel();
                let asked = ShardEvent::StreamIdle {
                    tuple,
                    holds_allocation: tx,
                };
                if events.send(asked).await.is_ok()
                    && rx.await == Ok(true)
                    && let Some(rtt) = super::sockopt::tcp_rtt(probe.fd)
                {
                    let sample = geoturn_relay_proto::server::RttSample {
                        client: tuple.client.addr().ip().to_canonical(),
                        rtt_ms: u32::try_from(rtt.as_millis()).unwrap_or(u32::MAX),
                    };
                    probe
                        .rtts
                        .record(&[sample], geoturn_shared::clock::unix_ms());
                }
                continue;
            }
            Err(_) => {
                let (tx, rx) = oneshot::channel();
                let asked = ShardEvent::StreamIdle {
                    tuple,
                    holds_allocation: tx,
                };
                if framed && events.send(asked).await.is_ok() && rx.await == Ok(true) {
                    deadline = tokio::time::Instant::now() + ALLOCATE_TIMEOUT;
                    continue;
                }
                let why = if framed { "no allocation" } else { "no frame" };
                return Err(io::Error::new(io::ErrorKind::TimedOut, why));
            }
        };
        if n == 0 {
            return Ok(Ended::Closed);
        }
        filled += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_addresses_and_ipv6_prefixes() {
        let table = Arc::new(StreamsPerSource::new(2));
        let a: IpAddr = "198.51.100.7".parse().unwrap();
        let first = table.open(a).unwrap();
        let _second = table.open(a).unwrap();
        assert!(table.open(a).is_none(), "a third from one IPv4 address");
        assert!(table.open("198.51.100.8".parse().unwrap()).is_some());
        drop(first);
        let _again = table.open(a).expect("a closed connection frees its place");
        // Every address of one /64 is one source; another /64 is another; a v4-mapped address
        // is its IPv4 address.
        let _v6 = [
            table.open("2001:db8:1:2::1".parse().unwrap()).unwrap(),
            table.open("2001:db8:1:2:ffff::9".parse().unwrap()).unwrap(),
        ];
        assert!(table.open("2001:db8:1:2::abcd".parse().unwrap()).is_none());
        assert!(table.open("2001:db8:1:3::1".parse().unwrap()).is_some());
        assert!(table.open("::ffff:198.51.100.7".parse().unwrap()).is_none());
    }

    #[test]
    fn zero_is_unlimited_and_closed_sources_leave_the_table() {
        let table = Arc::new(StreamsPerSource::new(0));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let places: Vec<_> = (0..1000).map(|_| table.open(ip).unwrap()).collect();
        assert_eq!(table.count(ip), 1000);
        drop(places);
        assert_eq!(table.count(ip), 0);
        assert!(table.lock().is_empty());
    }
}
