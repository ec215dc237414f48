//! A small blocking TURN client (UDP) for tests: Allocate, Refresh, CreatePermission,
//! ChannelBind, Send indications, ChannelData, with retransmission and the 401/438 dance.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use geoturn_relay_proto::client::{ClientAuth, encode_request, error_code};
use geoturn_relay_proto::stun::attribute::types;
use geoturn_relay_proto::stun::channel_data::{self, ChannelData};
use geoturn_relay_proto::stun::{
    Attribute, Class, Message, Method, PacketKind, TransactionId, classify,
};

/// A TURN error response, or no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnError {
    /// The server answered with this error code.
    Code(u16),
    /// 300 Try Alternate with this ALTERNATE-SERVER.
    Redirect(SocketAddr),
    /// No answer after retransmissions.
    Timeout,
    /// A socket error.
    Io(String),
}

impl From<io::Error> for TurnError {
    fn from(e: io::Error) -> Self {
        TurnError::Io(e.to_string())
    }
}

/// Data received from the relay: from which peer (Data indication) or channel (ChannelData).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A Data indication.
    Data {
        /// The peer.
        peer: SocketAddr,
        /// Payload.
        payload: Vec<u8>,
    },
    /// ChannelData.
    Channel {
        /// Channel number.
        channel: u16,
        /// Payload.
        payload: Vec<u8>,
    },
}

/// Each client's first transaction id (high 32 bits), unique in this process.
static NEXT_CLIENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 32);

/// A TURN client on its own UDP socket.
#[derive(Debug)]
pub struct TurnClient {
    sock: UdpSocket,
    server: SocketAddr,
    auth: ClientAuth,
    tid_counter: u64,
    /// Data that arrived while waiting for a response.
    pending: Vec<Received>,
}

impl TurnClient {
    /// A client of `server` with `username` / `password`.
    pub fn new(server: SocketAddr, username: &str, password: &str) -> io::Result<Self> {
        // Loopback servers get a loopback client; others (inside a test's own network
        // namespace) the wildcard, so the kernel picks the route's source address.
        let sock = match (server.is_ipv6(), server.ip().is_loopback()) {
            (true, true) => UdpSocket::bind("[::1]:0")?,
            (false, true) => UdpSocket::bind("127.0.0.1:0")?,
            (true, false) => UdpSocket::bind("[::]:0")?,
            (false, false) => UdpSocket::bind("0.0.0.0:0")?,
        };
        Self::from_socket(sock, server, username, password)
    }

    /// A client of `server` on `sock` (bound to the source address a test wants).
    pub fn from_socket(
        sock: UdpSocket,
        server: SocketAddr,
        username: &str,
        password: &str,
    ) -> io::Result<Self> {
        Ok(Self {
            sock,
            server,
            auth: ClientAuth {
                username: username.into(),
                password: password.into(),
                realm: String::new(),
                nonce: String::new(),
            },
            // Transaction ids must not repeat across clients (RFC 8489 §5 makes them random): a
            // new client on a recycled port would otherwise get a retransmission's cached answer.
            tid_counter: NEXT_CLIENT.fetch_add(1 << 32, std::sync::atomic::Ordering::Relaxed),
            pending: vec![],
        })
    }

    /// Connects the socket to the server, as many clients do: from then on the kernel drops
    /// datagrams from any other address, so an answer must come from the address asked.
    pub fn connect(&self) -> io::Result<()> {
        self.sock.connect(self.server)
    }

    /// The client's local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.sock
            .local_addr()
            .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into())
    }

    /// Sends raw bytes to the server (for garbage tests).
    pub fn send_raw(&self, bytes: &[u8]) -> io::Result<()> {
        self.sock.send_to(bytes, self.server).map(|_| ())
    }

    fn tid(&mut self) -> TransactionId {
        // The high half tells clients apart, the low half counts this client's requests.
        self.tid_counter += 1;
        let mut t = [0u8; 12];
        t[..8].copy_from_slice(&self.tid_counter.to_be_bytes());
        t[8..].copy_from_slice(&std::process::id().to_be_bytes());
        TransactionId(t)
    }

    /// One request/response with retransmissions (RFC 8489 §6.2.1, shortened for tests).
    fn exchange(&mut self, request: &[u8], tid: TransactionId) -> Result<Vec<u8>, TurnError> {
        let mut buf = [0u8; 4096];
        for attempt in 0..4u32 {
            self.sock.send_to(request, self.server)?;
            let deadline = Instant::now() + Duration::from_millis(300 << attempt);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                self.sock.set_read_timeout(Some(left))?;
                let (n, _) = match self.sock.recv_from(&mut buf) {
                    Ok(r) => r,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        break;
                    }
                    Err(e) => return Err(e.into()),
                };
                let packet = &buf[..n];
                if let Some(data) = parse_data(packet) {
                    self.pending.push(data);
                    continue;
                }
                if let Ok(m) = Message::parse(packet)
                    && *m.transaction_id() == tid
                {
                    return Ok(packet.to_vec());
                }
            }
        }
        Err(TurnError::Timeout)
    }

    /// Sends an authenticated request, answering 401/438 challenges once each.
    pub fn request(
        &mut self,
        method: Method,
        attrs: &[Attribute<'_>],
    ) -> Result<Vec<u8>, TurnError> {
        for _ in 0..3 {
            let tid = self.tid();
            let auth = (!self.auth.nonce.is_empty()).then_some(&self.auth);
            let req = encode_request(method, Class::Request, tid, attrs, auth)
                .map_err(|e| TurnError::Io(e.to_string()))?;
            let resp = self.exchange(&req, tid)?;
            let m = Message::parse(&resp).map_err(|e| TurnError::Io(e.to_string()))?;
            match error_code(&m) {
                None => return Ok(resp),
                Some(401) if self.auth.nonce.is_empty() => {
                    self.auth.update_from_challenge(&m);
                }
                Some(438) => {
                    self.auth.update_from_challenge(&m);
                }
                Some(300) => {
                    return match m.attribute(types::ALTERNATE_SERVER) {
                        Some(Ok(Attribute::AlternateServer(a))) => Err(TurnError::Redirect(a)),
                        _ => Err(TurnError::Code(300)),
                    };
                }
                Some(code) => return Err(TurnError::Code(code)),
            }
        }
        Err(TurnError::Code(401))
    }

    /// Sends a Binding request; returns the address the server saw (XOR-MAPPED-ADDRESS).
    pub fn binding(&mut self) -> Result<SocketAddr, TurnError> {
        let tid = self.tid();
        let req = encode_request(Method::Binding, Class::Request, tid, &[], None)
            .map_err(|e| TurnError::Io(e.to_string()))?;
        let resp = self.exchange(&req, tid)?;
        let m = Message::parse(&resp).map_err(|e| TurnError::Io(e.to_string()))?;
        match m.attribute(types::XOR_MAPPED_ADDRESS) {
            Some(Ok(Attribute::XorMappedAddress(a))) => Ok(a),
            _ => Err(TurnError::Io("no XOR-MAPPED-ADDRESS".into())),
        }
    }

    /// Sends `data` to `to` from the client's socket, bypassing the relay (to show a direct
    /// path is closed).
    pub fn send_direct(&self, to: SocketAddr, data: &[u8]) -> io::Result<()> {
        self.sock.send_to(data, to).map(|_| ())
    }

    /// Allocates a UDP relayed address.
    pub fn allocate(&mut self) -> Result<SocketAddr, TurnError> {
        let resp = self.request(Method::Allocate, &[Attribute::RequestedTransport(17)])?;
        let m = Message::parse(&resp).map_err(|e| TurnError::Io(e.to_string()))?;
        if !m.verify_integrity(&self.auth.key()) {
            return Err(TurnError::Io("response integrity does not verify".into()));
        }
        match m.attribute(types::XOR_RELAYED_ADDRESS) {
            Some(Ok(Attribute::XorRelayedAddress(a))) => Ok(a),
            _ => Err(TurnError::Io("no XOR-RELAYED-ADDRESS".into())),
        }
    }

    /// Allocates with extra attributes (address families); returns every relayed address.
    pub fn allocate_with(&mut self, extra: &[Attribute<'_>]) -> Result<Vec<SocketAddr>, TurnError> {
        let mut attrs = vec![Attribute::RequestedTransport(17)];
        attrs.extend_from_slice(extra);
        let resp = self.request(Method::Allocate, &attrs)?;
        let m = Message::parse(&resp).map_err(|e| TurnError::Io(e.to_string()))?;
        Ok(m.attributes_of(types::XOR_RELAYED_ADDRESS)
            .filter_map(|a| match a {
                Ok(Attribute::XorRelayedAddress(a)) => Some(a),
                _ => None,
            })
            .collect())
    }

    /// Refreshes; returns the granted lifetime.
    pub fn refresh(&mut self, lifetime: u32) -> Result<u32, TurnError> {
        let resp = self.request(Method::Refresh, &[Attribute::Lifetime(lifetime)])?;
        let m = Message::parse(&resp).map_err(|e| TurnError::Io(e.to_string()))?;
        match m.attribute(types::LIFETIME) {
            Some(Ok(Attribute::Lifetime(l))) => Ok(l),
            _ => Err(TurnError::Io("no LIFETIME".into())),
        }
    }

    /// Installs a permission for `peer`.
    pub fn create_permission(&mut self, peer: SocketAddr) -> Result<(), TurnError> {
        self.request(Method::CreatePermission, &[Attribute::XorPeerAddress(peer)])
            .map(|_| ())
    }

    /// Binds `channel` to `peer`.
    pub fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> Result<(), TurnError> {
        self.request(
            Method::ChannelBind,
            &[
                Attribute::ChannelNumber(channel),
                Attribute::XorPeerAddress(peer),
            ],
        )
        .map(|_| ())
    }

    /// Sends `data` to `peer` in a Send indication.
    pub fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) -> io::Result<()> {
        let tid = self.tid();
        let msg = encode_request(
            Method::Send,
            Class::Indication,
            tid,
            &[Attribute::XorPeerAddress(peer), Attribute::Data(data)],
            None,
        )
        .map_err(io::Error::other)?;
        self.sock.send_to(&msg, self.server).map(|_| ())
    }

    /// Sends `data` on `channel`.
    pub fn send_channel(&self, channel: u16, data: &[u8]) -> io::Result<()> {
        let mut buf = vec![0u8; data.len() + 8];
        let n = channel_data::encode(&mut buf, channel, data, false).map_err(io::Error::other)?;
        self.sock.send_to(&buf[..n], self.server).map(|_| ())
    }

    /// Waits up to `timeout` for relayed data.
    pub fn recv(&mut self, timeout: Duration) -> io::Result<Option<Received>> {
        if !self.pending.is_empty() {
            return Ok(Some(self.pending.remove(0)));
        }
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.sock.set_read_timeout(Some(left))?;
            match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => {
                    if let Some(d) = parse_data(&buf[..n]) {
                        return Ok(Some(d));
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn parse_data(packet: &[u8]) -> Option<Received> {
    match classify(packet) {
        PacketKind::ChannelData => {
            let cd = ChannelData::parse(packet).ok()?;
            Some(Received::Channel {
                channel: cd.channel,
                payload: cd.payload.to_vec(),
            })
        }
        PacketKind::Stun => {
            let m = Message::parse(packet).ok()?;
            if (m.method(), m.class()) != (Method::Data, Class::Indication) {
                return None;
            }
            let Some(Ok(Attribute::XorPeerAddress(peer))) = m.attribute(types::XOR_PEER_ADDRESS)
            else {
                return None;
            };
            let Some(Ok(Attribute::Data(payload))) = m.attribute(types::DATA) else {
                return None;
            };
            Some(Received::Data {
                peer,
                payload: payload.to_vec(),
            })
        }
        PacketKind::Other => None,
    }
}
