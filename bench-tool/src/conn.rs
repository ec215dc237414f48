//! A generator client's connection to the server: a connected UDP socket, or a TCP or TLS
//! stream carrying STUN and ChannelData frames back to back
//! ([RFC 8656 §12.5](https://www.rfc-editor.org/rfc/rfc8656#section-12.5)). Setup and traffic
//! see one interface: send a message, take the next message that has arrived. Streams are
//! non-blocking after connecting; what the socket does not take at once waits in a bounded
//! buffer, and a message that would overflow it is refused (counted like a full UDP buffer).

use std::io::{self, Read as _, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use geoturn_relay_proto::stun::framing::{MAX_FRAME, frame_len};
use rustls::pki_types::ServerName;

/// How the generator reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientTransport {
    /// UDP datagrams (batched, GSO).
    Udp,
    /// One TCP connection per allocation.
    Tcp,
    /// One TLS connection per allocation (`turns:`).
    Tls,
}

impl ClientTransport {
    /// Its name, as the option takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }
}

/// Bytes a stream keeps for the socket before it refuses more: about 200 ms of a 1200-byte
/// packet at 1000 packets/s, and room for the largest frame.
const MAX_PENDING_OUT: usize = 256 * 1024;
/// Bytes read per call, and the most a stream buffers before the frames are taken.
const READ_CHUNK: usize = 16 * 1024;
const MAX_PENDING_IN: usize = MAX_FRAME + READ_CHUNK;
/// Reads per [`StreamConn::fill`] call, so one busy connection cannot hold a thread.
const MAX_READS: usize = 8;

/// TLS settings for [`ClientTransport::Tls`].
#[derive(Clone)]
pub struct TlsSettings {
    /// The client configuration (roots, protocol versions).
    pub config: Arc<rustls::ClientConfig>,
    /// The name the server's certificate must carry.
    pub name: ServerName<'static>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A client's connection.
#[derive(Debug)]
pub enum ClientConn {
    /// A connected, non-blocking UDP socket.
    Udp(UdpSocket),
    /// A TCP or TLS stream.
    Stream(Box<StreamConn>),
}

impl AsRawFd for ClientConn {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Self::Udp(s) => s.as_raw_fd(),
            Self::Stream(s) => s.tcp.as_raw_fd(),
        }
    }
}

impl ClientConn {
    /// True for TCP and TLS: reliable, so requests are never retransmitted.
    pub fn is_stream(&self) -> bool {
        matches!(self, Self::Stream(_))
    }

    /// Sends one whole message (a datagram, or a frame on the stream).
    pub fn send(&mut self, message: &[u8]) -> io::Result<()> {
        match self {
            Self::Udp(s) => s.send(message).map(|_| ()),
            Self::Stream(s) => s.send(message),
        }
    }

    /// Copies the next message that has arrived into `buf` and returns its length;
    /// `WouldBlock` when none has (yet).
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Udp(s) => s.recv(buf),
            Self::Stream(s) => {
                if s.next_frame_len()?.is_none() {
                    s.fill()?;
                }
                s.take_frame(|frame| {
                    let n = frame.len().min(buf.len());
                    if let (Some(dst), Some(src)) = (buf.get_mut(..n), frame.get(..n)) {
                        dst.copy_from_slice(src);
                    }
                    n
                })?
                .ok_or_else(|| io::ErrorKind::WouldBlock.into())
            }
        }
    }
}

/// What one read from the stream gave.
enum Read {
    /// The server closed the stream.
    Eof,
    /// This many bytes of application data.
    Bytes(usize),
    /// TLS bytes that did not complete a record yet.
    NoPlaintextYet,
}

/// A non-blocking TCP stream, with TLS on top when asked.
pub struct StreamConn {
    tcp: TcpStream,
    tls: Option<rustls::ClientConnection>,
    /// Received bytes not yet taken as frames.
    inbuf: Vec<u8>,
    /// Where the unread part of `inbuf` starts.
    in_start: usize,
    /// Bytes the socket (or, with TLS, rustls) has not taken yet.
    outbuf: Vec<u8>,
    /// The peer closed the stream or it failed: every later call fails.
    closed: bool,
}

impl std::fmt::Debug for StreamConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamConn")
            .field("local", &self.tcp.local_addr().ok())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl AsRawFd for StreamConn {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }
}

impl StreamConn {
    /// Connects from `local` (port 0) to `server` within `timeout`, does the TLS handshake
    /// when `tls` is given, and leaves the stream non-blocking.
    pub fn connect(
        local: SocketAddr,
        server: SocketAddr,
        tls: Option<&TlsSettings>,
        timeout: Duration,
    ) -> io::Result<Self> {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(server),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        sock.bind(&local.into())?;
        sock.connect_timeout(&server.into(), timeout)?;
        // Each packet is due now: no Nagle delay on top of the relay's.
        sock.set_tcp_nodelay(true)?;
        let mut tcp: TcpStream = sock.into();
        let tls = match tls {
            None => None,
            Some(t) => {
                let mut conn = rustls::ClientConnection::new(t.config.clone(), t.name.clone())
                    .map_err(io::Error::other)?;
                tcp.set_read_timeout(Some(timeout))?;
                tcp.set_write_timeout(Some(timeout))?;
                let deadline = Instant::now() + timeout;
                while conn.is_handshaking() {
                    if Instant::now() >= deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "TLS handshake timed out",
                        ));
                    }
                    conn.complete_io(&mut tcp)?;
                }
                Some(conn)
            }
        };
        tcp.set_read_timeout(None)?;
        tcp.set_write_timeout(None)?;
        tcp.set_nonblocking(true)?;
        Ok(Self {
            tcp,
            tls,
            inbuf: Vec::with_capacity(4096),
            in_start: 0,
            outbuf: Vec::new(),
            closed: false,
        })
    }

    fn check_open(&self) -> io::Result<()> {
        if self.closed {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the server closed the stream",
            ))
        } else {
            Ok(())
        }
    }

    /// Queues one frame and writes what the socket takes; refuses the frame (`WouldBlock`)
    /// when the bytes already waiting would grow past [`MAX_PENDING_OUT`].
    pub fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.check_open()?;
        if self.outbuf.len() + frame.len() > MAX_PENDING_OUT {
            self.flush()?;
            if !self.outbuf.is_empty() && self.outbuf.len() + frame.len() > MAX_PENDING_OUT {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
        self.outbuf.extend_from_slice(frame);
        self.flush()
    }

    /// Writes what is waiting, as far as the socket takes it. A frame may leave in pieces:
    /// the stream keeps the bytes in order, and the server re-frames them.
    pub fn flush(&mut self) -> io::Result<()> {
        self.check_open()?;
        let result = self.write_out();
        if let Err(e) = &result
            && e.kind() != io::ErrorKind::WouldBlock
        {
            self.closed = true;
        }
        match result {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }

    fn write_out(&mut self) -> io::Result<()> {
        // Bounded: each turn moves bytes or returns.
        for _ in 0..64 {
            match &mut self.tls {
                Some(t) => {
                    while t.wants_write() {
                        if t.write_tls(&mut self.tcp)? == 0 {
                            return Err(io::ErrorKind::WriteZero.into());
                        }
                    }
                    if self.outbuf.is_empty() {
                        return Ok(());
                    }
                    // rustls takes what its own buffer limit allows; the rest waits here.
                    let n = t.writer().write(&self.outbuf)?;
                    self.outbuf.drain(..n);
                    if n == 0 && !t.wants_write() {
                        return Ok(());
                    }
                }
                None => {
                    if self.outbuf.is_empty() {
                        return Ok(());
                    }
                    let n = self.tcp.write(&self.outbuf)?;
                    if n == 0 {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    self.outbuf.drain(..n);
                }
            }
        }
        Ok(())
    }

    /// Reads what the socket has (at most [`MAX_READS`] reads, and never beyond the input
    /// bound). A TLS read may queue records of its own (key updates): they are written too.
    pub fn fill(&mut self) -> io::Result<()> {
        self.check_open()?;
        if self.in_start > 0 {
            self.inbuf.drain(..self.in_start);
            self.in_start = 0;
        }
        for _ in 0..MAX_READS {
            let len = self.inbuf.len();
            if len + READ_CHUNK > MAX_PENDING_IN {
                break;
            }
            // Read straight into the input buffer's tail (no copy, no scratch per connection).
            self.inbuf.resize(len + READ_CHUNK, 0);
            let area = self.inbuf.get_mut(len..).unwrap_or_default();
            let got = read_some(&mut self.tcp, self.tls.as_mut(), area);
            let n = match &got {
                Ok(Read::Bytes(n)) => *n,
                _ => 0,
            };
            self.inbuf.truncate(len + n);
            match got {
                Ok(Read::Eof) => {
                    self.closed = true;
                    break;
                }
                Ok(Read::NoPlaintextYet | Read::Bytes(_)) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.closed = true;
                    return Err(e);
                }
            }
        }
        if self.tls.is_some() && !self.closed {
            self.flush()?;
        }
        Ok(())
    }

    /// The length of the complete frame at the front of the input, if there is one; an
    /// error when the stream does not hold STUN or ChannelData (it cannot be re-framed).
    pub fn next_frame_len(&self) -> io::Result<Option<usize>> {
        let unread = self.inbuf.get(self.in_start..).unwrap_or_default();
        frame_len(unread).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Hands the next complete frame to `f` and consumes it; `None` when there is none yet.
    pub fn take_frame<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> io::Result<Option<T>> {
        let Some(len) = self.next_frame_len()? else {
            if self.closed {
                self.check_open()?;
            }
            return Ok(None);
        };
        let frame = self
            .inbuf
            .get(self.in_start..self.in_start + len)
            .unwrap_or_default();
        let out = f(frame);
        self.in_start += len;
        Ok(Some(out))
    }
}

/// One read from the stream into `chunk`.
fn read_some(
    tcp: &mut TcpStream,
    tls: Option<&mut rustls::ClientConnection>,
    chunk: &mut [u8],
) -> io::Result<Read> {
    let Some(t) = tls else {
        return Ok(match tcp.read(chunk)? {
            0 => Read::Eof,
            n => Read::Bytes(n),
        });
    };
    if t.read_tls(tcp)? == 0 {
        return Ok(Read::Eof);
    }
    t.process_new_packets().map_err(io::Error::other)?;
    let mut plain = 0;
    while let Some(room) = chunk.get_mut(plain..).filter(|r| !r.is_empty()) {
        match t.reader().read(room) {
            // close_notify: the server ended the session.
            Ok(0) if plain == 0 => return Ok(Read::Eof),
            Ok(0) => break,
            Ok(n) => plain += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(if plain == 0 {
        Read::NoPlaintextYet
    } else {
        Read::Bytes(plain)
    })
}
