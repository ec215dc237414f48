//! A blocking TURN client on one TCP connection, for TCP allocations and RFC 6062 (Connect,
//! ConnectionBind) against a relay: requests one at a time with [`StreamClient::request`], or
//! several in flight with [`StreamClient::send`] and [`StreamClient::read_frame`] (Connects to
//! unreachable peers answer only after the relay's 30 s).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use geoturn_relay_proto::client::{ClientAuth, encode_request, error_code};
use geoturn_relay_proto::stun::framing::frame_len;
use geoturn_relay_proto::stun::{Attribute, Class, Message, Method, TransactionId};

use crate::relay::TestRelay;

/// How long a read waits unless the caller sets another timeout on `stream`.
const WAIT: Duration = Duration::from_secs(5);

/// A TURN client on one TCP connection.
pub struct StreamClient {
    /// The connection; after a ConnectionBind, the data connection's bytes.
    pub stream: TcpStream,
    auth: ClientAuth,
    tid: u32,
    /// Bytes read past the last frame returned.
    buffered: Vec<u8>,
}

impl StreamClient {
    /// A client of `relay` for `user`.
    pub fn connect(relay: SocketAddr, user: &str) -> Self {
        Self::connect_as(relay, TestRelay::credentials(user, 3600))
    }

    /// A client with credentials `c` (a data connection must use the control connection's,
    /// RFC 6062 §5.4).
    pub fn connect_as(relay: SocketAddr, c: geoturn_shared::RestCredential) -> Self {
        let stream = TcpStream::connect(relay).expect("connect to the relay");
        Self::from_stream(stream, c)
    }

    /// A client on an already connected `stream` (bound to a chosen source address, say).
    pub fn from_stream(stream: TcpStream, c: geoturn_shared::RestCredential) -> Self {
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        Self {
            stream,
            auth: ClientAuth {
                username: c.username,
                password: c.password,
                realm: String::new(),
                nonce: String::new(),
            },
            tid: 0,
            buffered: Vec::new(),
        }
    }

    /// Reads one STUN frame. Panics when the relay closes the connection or nothing comes
    /// within the stream's read timeout.
    pub fn read_frame(&mut self) -> Vec<u8> {
        let mut chunk = [0u8; 1500];
        loop {
            if let Ok(Some(len)) = frame_len(&self.buffered)
                && self.buffered.len() >= len
            {
                let rest = self.buffered.split_off(len);
                return std::mem::replace(&mut self.buffered, rest);
            }
            let n = self.stream.read(&mut chunk).expect("read a frame");
            assert!(n > 0, "relay closed the connection");
            self.buffered
                .extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
    }

    /// Reads one STUN frame if one comes within `wait`; `None` otherwise.
    pub fn try_read_frame(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let complete = |b: &[u8]| matches!(frame_len(b), Ok(Some(len)) if b.len() >= len);
        if !complete(&self.buffered) {
            self.stream
                .set_read_timeout(Some(wait))
                .expect("read timeout");
            let mut chunk = [0u8; 1500];
            let read = self.stream.read(&mut chunk);
            self.stream
                .set_read_timeout(Some(WAIT))
                .expect("read timeout");
            match read {
                Ok(n) if n > 0 => self
                    .buffered
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Ok(_) => panic!("relay closed the connection"),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None;
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        Some(self.read_frame())
    }

    /// Sends a request signed with the nonce of the last challenge (unsigned before the first),
    /// without waiting for its answer; returns its transaction id.
    pub fn send(&mut self, method: Method, attrs: &[Attribute<'_>]) -> TransactionId {
        self.tid += 1;
        let mut tid = [0u8; 12];
        tid[..4].copy_from_slice(&self.tid.to_be_bytes());
        let auth = (!self.auth.nonce.is_empty()).then_some(&self.auth);
        let req = encode_request(method, Class::Request, TransactionId(tid), attrs, auth)
            .expect("encode a request");
        self.stream.write_all(&req).expect("send a request");
        TransactionId(tid)
    }

    /// Sends a request, answering one 401/438 challenge; returns the final response.
    pub fn request(&mut self, method: Method, attrs: &[Attribute<'_>]) -> Vec<u8> {
        for _ in 0..2 {
            self.send(method, attrs);
            let resp = self.read_frame();
            let m = Message::parse(&resp).expect("a STUN response");
            if matches!(error_code(&m), Some(401 | 438)) && self.auth.update_from_challenge(&m) {
                continue;
            }
            return resp;
        }
        panic!("{method:?} challenged twice");
    }
}

/// The error code of a response, `None` for success.
pub fn code(resp: &[u8]) -> Option<u16> {
    error_code(&Message::parse(resp).expect("a STUN response"))
}
