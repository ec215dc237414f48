//! Whole STUN messages: zero-copy parsing ([`Message`]) and encoding into a caller's buffer
//! ([`MessageWriter`]).

use super::attribute::{Attribute, is_known_comprehension_required, types};
use super::error::{EncodeError, ErrorCode, ParseError};
use super::header::{Class, HEADER_LEN, Header, MAGIC_COOKIE, MessageType, Method, TransactionId};
use super::integrity;
use super::reader::{Reader, Writer};

/// Most attributes a message may carry; a legitimate TURN message has under 15.
pub const MAX_ATTRIBUTES: usize = 64;
/// Most unknown comprehension-required types reported back in UNKNOWN-ATTRIBUTES.
pub const MAX_UNKNOWN_REPORTED: usize = 8;

/// A parsed, borrowed STUN message.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    raw: &'a [u8],
    header: Header,
    /// End offset of the attributes that count: those before MESSAGE-INTEGRITY
    /// (RFC 8489 §14.5: attributes after it, except MI-SHA256 and FINGERPRINT, are ignored).
    considered_end: usize,
    /// Offset of the MESSAGE-INTEGRITY attribute header.
    integrity: Option<usize>,
    /// Offset of the MESSAGE-INTEGRITY-SHA256 attribute header.
    integrity_sha256: Option<usize>,
    /// Offset of the FINGERPRINT attribute header.
    fingerprint: Option<usize>,
    unknown: [u16; MAX_UNKNOWN_REPORTED],
    unknown_len: usize,
}

impl<'a> Message<'a> {
    /// Parses a complete message (the datagram, or one framed message from a stream).
    pub fn parse(raw: &'a [u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(raw);
        let header = Header::read(&mut r).ok_or(ParseError::NotStun)?;
        let len = usize::from(header.length);
        if len % 4 != 0 || HEADER_LEN + len != raw.len() {
            return Err(ParseError::BadLength);
        }
        let mut msg = Self {
            raw,
            header,
            considered_end: raw.len(),
            integrity: None,
            integrity_sha256: None,
            fingerprint: None,
            unknown: [0; MAX_UNKNOWN_REPORTED],
            unknown_len: 0,
        };
        let mut count = 0usize;
        while r.remaining() > 0 {
            let start = r.position();
            if msg.fingerprint.is_some() {
                return Err(ParseError::AttributeAfterFingerprint);
            }
            count += 1;
            if count > MAX_ATTRIBUTES {
                return Err(ParseError::TooManyAttributes);
            }
            let t = r.u16().ok_or(ParseError::TruncatedAttribute)?;
            let vlen = usize::from(r.u16().ok_or(ParseError::TruncatedAttribute)?);
            // Values are padded to a multiple of 4 (RFC 8489 §14); the padding must be present.
            r.take((vlen + 3) & !3)
                .ok_or(ParseError::TruncatedAttribute)?;
            match t {
                // Only the first MESSAGE-INTEGRITY counts, and none after MI-SHA256 (§14.6).
                types::MESSAGE_INTEGRITY
                    if msg.integrity.is_none() && msg.integrity_sha256.is_none() =>
                {
                    msg.integrity = Some(start);
                    msg.considered_end = msg.considered_end.min(start);
                }
                types::MESSAGE_INTEGRITY_SHA256 if msg.integrity_sha256.is_none() => {
                    msg.integrity_sha256 = Some(start);
                    msg.considered_end = msg.considered_end.min(start);
                }
                types::FINGERPRINT => msg.fingerprint = Some(start),
                t if t < 0x8000
                    && start < msg.considered_end
                    && !is_known_comprehension_required(t) =>
                {
                    if let Some(slot) = msg.unknown.get_mut(msg.unknown_len) {
                        *slot = t;
                        msg.unknown_len += 1;
                    }
                }
                _ => {}
            }
        }
        if msg.fingerprint.is_some() {
            msg.considered_end = msg.considered_end.min(msg.fingerprint.unwrap_or(raw.len()));
        }
        Ok(msg)
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Method and class.
    pub fn typ(&self) -> MessageType {
        self.header.typ
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.header.typ.method
    }

    /// The class.
    pub fn class(&self) -> Class {
        self.header.typ.class
    }

    /// The transaction id.
    pub fn transaction_id(&self) -> &TransactionId {
        &self.header.transaction_id
    }

    /// The raw bytes of the message.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Unknown comprehension-required attribute types (for 420 UNKNOWN-ATTRIBUTES).
    pub fn unknown_comprehension_required(&self) -> &[u16] {
        self.unknown.get(..self.unknown_len).unwrap_or_default()
    }

    /// Iterates the raw (type, value) pairs that count (before MESSAGE-INTEGRITY / FINGERPRINT).
    pub fn raw_attributes(&self) -> impl Iterator<Item = (u16, &'a [u8])> + '_ {
        attribute_iter(self.raw, HEADER_LEN, self.considered_end)
    }

    /// Iterates every attribute including integrity and fingerprint ones.
    pub fn all_raw_attributes(&self) -> impl Iterator<Item = (u16, &'a [u8])> + '_ {
        attribute_iter(self.raw, HEADER_LEN, self.raw.len())
    }

    /// The value of the first attribute of type `t` that counts.
    pub fn get(&self, t: u16) -> Option<&'a [u8]> {
        self.raw_attributes()
            .find(|(typ, _)| *typ == t)
            .map(|(_, v)| v)
    }

    /// The first attribute of type `t`, decoded.
    pub fn attribute(&self, t: u16) -> Option<Result<Attribute<'a>, ParseError>> {
        self.get(t)
            .map(|v| Attribute::decode(t, v, &self.header.transaction_id))
    }

    /// Every attribute of type `t`, decoded (XOR-PEER-ADDRESS may repeat in CreatePermission).
    pub fn attributes_of(
        &self,
        t: u16,
    ) -> impl Iterator<Item = Result<Attribute<'a>, ParseError>> + '_ {
        let tid = self.header.transaction_id;
        self.raw_attributes()
            .filter(move |(typ, _)| *typ == t)
            .map(move |(typ, v)| Attribute::decode(typ, v, &tid))
    }

    /// Decodes every attribute (including integrity and fingerprint), for tests and tools.
    pub fn decode_all(&self) -> impl Iterator<Item = Result<Attribute<'a>, ParseError>> + '_ {
        let tid = self.header.transaction_id;
        self.all_raw_attributes()
            .map(move |(t, v)| Attribute::decode(t, v, &tid))
    }

    /// True when the message carries MESSAGE-INTEGRITY.
    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some()
    }

    /// True when the message carries MESSAGE-INTEGRITY-SHA256.
    pub fn has_integrity_sha256(&self) -> bool {
        self.integrity_sha256.is_some()
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1) with `key`, in constant time.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        self.integrity
            .is_some_and(|at| integrity::verify_sha1(self.raw, at, key))
    }

    /// Checks MESSAGE-INTEGRITY-SHA256 with `key`, in constant time.
    pub fn verify_integrity_sha256(&self, key: &[u8]) -> bool {
        self.integrity_sha256
            .is_some_and(|at| integrity::verify_sha256(self.raw, at, key))
    }

    /// True when FINGERPRINT is absent or correct.
    pub fn fingerprint_ok(&self) -> bool {
        self.fingerprint
            .is_none_or(|at| integrity::verify_fingerprint(self.raw, at))
    }

    /// True when FINGERPRINT is present.
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint.is_some()
    }
}

fn attribute_iter(raw: &[u8], from: usize, to: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut r = Reader::new(raw.get(from..to).unwrap_or_default());
    std::iter::from_fn(move || {
        let t = r.u16()?;
        let len = usize::from(r.u16()?);
        let padded = r.take((len + 3) & !3)?;
        Some((t, padded.get(..len)?))
    })
}

/// Writes a STUN message into a caller-provided buffer.
#[derive(Debug)]
pub struct MessageWriter<'b> {
    w: Writer<'b>,
    tid: TransactionId,
}

impl<'b> MessageWriter<'b> {
    /// Starts a message of type `typ` with transaction id `tid` in `buf`.
    pub fn new(
        buf: &'b mut [u8],
        typ: MessageType,
        tid: TransactionId,
    ) -> Result<Self, EncodeError> {
        let mut w = Writer::new(buf);
        w.u16(typ.to_u16())?;
        w.u16(0)?;
        w.u32(MAGIC_COOKIE)?;
        w.put(&tid.0)?;
        Ok(Self { w, tid })
    }

    /// Starts an error response to `request` with `code` and its reason phrase.
    pub fn error_response(
        buf: &'b mut [u8],
        method: Method,
        tid: TransactionId,
        code: ErrorCode,
    ) -> Result<Self, EncodeError> {
        let mut m = Self::new(buf, MessageType::new(method, Class::Error), tid)?;
        m.add(&Attribute::ErrorCode {
            code: code.0,
            reason: code.reason(),
        })?;
        Ok(m)
    }

    /// Appends an attribute with its padding.
    /// On error nothing of the attribute stays in the buffer: the message written so far is
    /// still valid.
    pub fn add(&mut self, attr: &Attribute<'_>) -> Result<(), EncodeError> {
        let start = self.w.len();
        let result = self.add_at(start, attr);
        if result.is_err() {
            self.w.truncate(start);
        }
        result
    }

    fn add_at(&mut self, start: usize, attr: &Attribute<'_>) -> Result<(), EncodeError> {
        attr.check_encodable()?;
        self.w.u16(attr.typ())?;
        self.w.u16(0)?;
        attr.encode_value(&mut self.w, &self.tid)?;
        let vlen = self.w.len() - start - 4;
        let vlen16 = u16::try_from(vlen).map_err(|_| EncodeError::ValueTooLong)?;
        self.w.set_u16(start + 2, vlen16)?;
        self.w.zeros((4 - vlen % 4) % 4)?;
        self.sync_length()
    }

    /// Appends MESSAGE-INTEGRITY keyed with `key` (must come after every attribute it protects).
    pub fn add_integrity(&mut self, key: &[u8]) -> Result<(), EncodeError> {
        // The length field must already cover the MI attribute when the HMAC is computed.
        self.set_length(self.w.len() + 24 - HEADER_LEN)?;
        let mac = integrity::hmac_sha1(key, &[self.w.written()]);
        self.add(&Attribute::MessageIntegrity(mac))
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 keyed with `key`.
    pub fn add_integrity_sha256(&mut self, key: &[u8]) -> Result<(), EncodeError> {
        self.set_length(self.w.len() + 36 - HEADER_LEN)?;
        let mac = integrity::hmac_sha256(key, &[self.w.written()]);
        self.add(&Attribute::MessageIntegritySha256(&mac))
    }

    /// Appends FINGERPRINT (always last).
    pub fn add_fingerprint(&mut self) -> Result<(), EncodeError> {
        self.set_length(self.w.len() + 8 - HEADER_LEN)?;
        let crc = integrity::fingerprint(&[self.w.written()]);
        self.add(&Attribute::Fingerprint(crc))
    }

    fn set_length(&mut self, len: usize) -> Result<(), EncodeError> {
        let len = u16::try_from(len).map_err(|_| EncodeError::ValueTooLong)?;
        self.w.set_u16(2, len)
    }

    fn sync_length(&mut self) -> Result<(), EncodeError> {
        self.set_length(self.w.len() - HEADER_LEN)
    }

    /// Finishes the message; returns its length in the buffer.
    pub fn finish(self) -> usize {
        self.w.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn tid() -> TransactionId {
        TransactionId([7; 12])
    }

    #[test]
    fn writes_and_parses_back() {
        let mut buf = [0u8; 512];
        let peer: SocketAddr = "[2001:db8::1]:9".parse().unwrap();
        let mut w = MessageWriter::new(
            &mut buf,
            MessageType::new(Method::Allocate, Class::Request),
            tid(),
        )
        .unwrap();
        w.add(&Attribute::Username("1:u")).unwrap();
        w.add(&Attribute::XorPeerAddress(peer)).unwrap();
        w.add_integrity(b"key").unwrap();
        w.add_fingerprint().unwrap();
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(m.method(), Method::Allocate);
        assert_eq!(
            m.attribute(types::USERNAME).unwrap().unwrap(),
            Attribute::Username("1:u")
        );
        assert_eq!(
            m.attribute(types::XOR_PEER_ADDRESS).unwrap().unwrap(),
            Attribute::XorPeerAddress(peer)
        );
        assert!(m.verify_integrity(b"key"));
        assert!(!m.verify_integrity(b"kez"));
        assert!(m.fingerprint_ok());
    }

    #[test]
    fn ignores_attributes_after_integrity() {
        let mut buf = [0u8; 512];
        let mut w = MessageWriter::new(
            &mut buf,
            MessageType::new(Method::Binding, Class::Request),
            tid(),
        )
        .unwrap();
        w.add_integrity(b"k").unwrap();
        w.add(&Attribute::Username("late")).unwrap();
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        assert!(m.get(types::USERNAME).is_none());
    }

    #[test]
    fn rejects_bad_framing() {
        assert_eq!(Message::parse(&[0; 10]).unwrap_err(), ParseError::NotStun);
        let mut buf = [0u8; 64];
        let w = MessageWriter::new(
            &mut buf,
            MessageType::new(Method::Binding, Class::Request),
            tid(),
        )
        .unwrap();
        let n = w.finish();
        // Extra trailing byte: length disagrees with the datagram.
        assert_eq!(
            Message::parse(&buf[..n + 1]).unwrap_err(),
            ParseError::BadLength
        );
        // Attribute header claiming more bytes than present.
        let mut bad = buf[..n].to_vec();
        bad.extend_from_slice(&[0x00, 0x06, 0x00, 0x40]);
        bad[3] = 4;
        assert_eq!(
            Message::parse(&bad).unwrap_err(),
            ParseError::TruncatedAttribute
        );
    }

    #[test]
    fn a_refused_attribute_leaves_the_message_valid() {
        let mut buf = [0u8; 64];
        let mut w = MessageWriter::new(
            &mut buf,
            MessageType::new(Method::Binding, Class::Success),
            tid(),
        )
        .unwrap();
        w.add(&Attribute::Lifetime(5)).unwrap();
        let long = "x".repeat(100);
        // Too big for the buffer, and an error code outside 300-699.
        assert!(w.add(&Attribute::Software(&long)).is_err());
        assert!(
            w.add(&Attribute::ErrorCode {
                code: 1100,
                reason: "",
            })
            .is_err()
        );
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(m.decode_all().count(), 1);
    }

    #[test]
    fn reports_unknown_comprehension_required() {
        let mut buf = [0u8; 64];
        let mut w = MessageWriter::new(
            &mut buf,
            MessageType::new(Method::Allocate, Class::Request),
            tid(),
        )
        .unwrap();
        w.add(&Attribute::Unknown {
            typ: 0x7777,
            value: b"x",
        })
        .unwrap();
        w.add(&Attribute::Unknown {
            typ: 0xC001,
            value: b"",
        })
        .unwrap();
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(m.unknown_comprehension_required(), &[0x7777]);
    }
}
