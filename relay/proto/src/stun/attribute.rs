//! STUN attributes: type numbers, and typed decoding/encoding of every attribute TURN uses
//! (RFC 8489 §14, RFC 8656 §18, RFC 6062 §6.2, RFC 8016 §3).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::error::{EncodeError, ParseError};
use super::header::{MAGIC_COOKIE, TransactionId};
use super::reader::{Reader, Writer};

/// Attribute type numbers.
pub mod types {
    #![allow(missing_docs)]
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const EVEN_PORT: u16 = 0x0018;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const DONT_FRAGMENT: u16 = 0x001A;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    pub const USERHASH: u16 = 0x001E;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const CONNECTION_ID: u16 = 0x002A;
    pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
    pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
    pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
    pub const ALTERNATE_DOMAIN: u16 = 0x8003;
    pub const ICMP: u16 = 0x8004;
    pub const SOFTWARE: u16 = 0x8022;
    pub const ALTERNATE_SERVER: u16 = 0x8023;
    pub const FINGERPRINT: u16 = 0x8028;
    pub const ICE_CONTROLLED: u16 = 0x8029;
    pub const ICE_CONTROLLING: u16 = 0x802A;
}

/// Comprehension-required attributes (0x0000–0x7FFF) geoturn understands; anything else in that
/// range in a request earns 420 (RFC 8489 §7.3.1).
pub fn is_known_comprehension_required(t: u16) -> bool {
    use types::*;
    matches!(
        t,
        MAPPED_ADDRESS
            | USERNAME
            | MESSAGE_INTEGRITY
            | ERROR_CODE
            | UNKNOWN_ATTRIBUTES
            | CHANNEL_NUMBER
            | LIFETIME
            | XOR_PEER_ADDRESS
            | DATA
            | REALM
            | NONCE
            | XOR_RELAYED_ADDRESS
            | REQUESTED_ADDRESS_FAMILY
            | EVEN_PORT
            | REQUESTED_TRANSPORT
            | DONT_FRAGMENT
            | MESSAGE_INTEGRITY_SHA256
            | PASSWORD_ALGORITHM
            | USERHASH
            | XOR_MAPPED_ADDRESS
            | RESERVATION_TOKEN
            | PRIORITY
            | USE_CANDIDATE
            | CONNECTION_ID
    )
}

/// Longest USERNAME (RFC 8489 §14.3: less than 513 bytes).
pub const MAX_USERNAME_LEN: usize = 512;
/// Longest REALM, NONCE, SOFTWARE, reason phrase and ALTERNATE-DOMAIN in bytes
/// (less than 128 characters, up to 763 bytes).
pub const MAX_TEXT_LEN: usize = 763;

/// An address family as TURN encodes it (0x01 IPv4, 0x02 IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl AddressFamily {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            0x01 => Some(Self::V4),
            0x02 => Some(Self::V6),
            _ => None,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Self::V4 => 0x01,
            Self::V6 => 0x02,
        }
    }

    /// The family of an address.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }
}

/// A password algorithm (RFC 8489 §14.11/18.5): 0x0001 MD5, 0x0002 SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PasswordAlgorithm {
    /// Algorithm number.
    pub number: u16,
}

impl PasswordAlgorithm {
    /// MD5 (the RFC 5389 default).
    pub const MD5: Self = Self { number: 0x0001 };
    /// SHA-256.
    pub const SHA256: Self = Self { number: 0x0002 };
}

/// One decoded attribute. Borrowed variants point into the message buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attribute<'a> {
    /// MAPPED-ADDRESS (plain, for RFC 3489 clients).
    MappedAddress(SocketAddr),
    /// XOR-MAPPED-ADDRESS: the client's reflexive address.
    XorMappedAddress(SocketAddr),
    /// XOR-PEER-ADDRESS.
    XorPeerAddress(SocketAddr),
    /// XOR-RELAYED-ADDRESS.
    XorRelayedAddress(SocketAddr),
    /// ALTERNATE-SERVER (plain address).
    AlternateServer(SocketAddr),
    /// USERNAME.
    Username(&'a str),
    /// USERHASH: SHA-256 of username and realm.
    Userhash([u8; 32]),
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    MessageIntegrity([u8; 20]),
    /// MESSAGE-INTEGRITY-SHA256 (16 to 32 bytes, multiple of 4).
    MessageIntegritySha256(&'a [u8]),
    /// FINGERPRINT value as carried (already XORed).
    Fingerprint(u32),
    /// ERROR-CODE.
    ErrorCode {
        /// 300–699.
        code: u16,
        /// UTF-8 reason phrase.
        reason: &'a str,
    },
    /// REALM.
    Realm(&'a str),
    /// NONCE.
    Nonce(&'a str),
    /// PASSWORD-ALGORITHMS: the raw list, read with [`password_algorithms`].
    PasswordAlgorithms(&'a [u8]),
    /// PASSWORD-ALGORITHM (no parameters are defined for MD5 or SHA-256).
    PasswordAlgorithm(PasswordAlgorithm),
    /// UNKNOWN-ATTRIBUTES: the raw list of 16-bit types.
    UnknownAttributes(&'a [u8]),
    /// SOFTWARE.
    Software(&'a str),
    /// CHANNEL-NUMBER.
    ChannelNumber(u16),
    /// LIFETIME in seconds.
    Lifetime(u32),
    /// DATA.
    Data(&'a [u8]),
    /// REQUESTED-ADDRESS-FAMILY.
    RequestedAddressFamily(AddressFamily),
    /// EVEN-PORT with its R bit.
    EvenPort {
        /// Reserve the next-higher port too.
        reserve: bool,
    },
    /// REQUESTED-TRANSPORT protocol number (17 UDP, 6 TCP).
    RequestedTransport(u8),
    /// DONT-FRAGMENT.
    DontFragment,
    /// RESERVATION-TOKEN.
    ReservationToken([u8; 8]),
    /// ADDITIONAL-ADDRESS-FAMILY (only IPv6 is allowed by RFC 8656 §18.11).
    AdditionalAddressFamily(AddressFamily),
    /// ADDRESS-ERROR-CODE.
    AddressErrorCode {
        /// The family the error is about.
        family: AddressFamily,
        /// 300–699.
        code: u16,
        /// UTF-8 reason phrase.
        reason: &'a str,
    },
    /// ICMP (RFC 8656 §18.13).
    Icmp {
        /// ICMP type.
        icmp_type: u8,
        /// ICMP code.
        icmp_code: u8,
        /// Error data.
        data: u32,
    },
    /// ALTERNATE-DOMAIN.
    AlternateDomain(&'a str),
    /// CONNECTION-ID (RFC 6062).
    ConnectionId(u32),
    /// Any attribute geoturn does not interpret.
    Unknown {
        /// Attribute type.
        typ: u16,
        /// Raw value.
        value: &'a [u8],
    },
}

fn malformed(t: u16) -> ParseError {
    ParseError::MalformedAttribute(t)
}

fn text(t: u16, value: &[u8], max: usize) -> Result<&str, ParseError> {
    if value.len() > max {
        return Err(malformed(t));
    }
    std::str::from_utf8(value).map_err(|_| malformed(t))
}

fn exact<const N: usize>(t: u16, value: &[u8]) -> Result<[u8; N], ParseError> {
    value.try_into().map_err(|_| malformed(t))
}

/// Decodes a (possibly XORed) address attribute value.
pub fn decode_address(
    t: u16,
    value: &[u8],
    xor: Option<&TransactionId>,
) -> Result<SocketAddr, ParseError> {
    let mut r = Reader::new(value);
    let _reserved = r.u8().ok_or(malformed(t))?;
    let family = AddressFamily::from_u8(r.u8().ok_or(malformed(t))?).ok_or(malformed(t))?;
    let mut port = r.u16().ok_or(malformed(t))?;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    if xor.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match family {
        AddressFamily::V4 => {
            let mut b: [u8; 4] = r.array().ok_or(malformed(t))?;
            if xor.is_some() {
                for (x, c) in b.iter_mut().zip(cookie) {
                    *x ^= c;
                }
            }
            IpAddr::V4(Ipv4Addr::from(b))
        }
        AddressFamily::V6 => {
            let mut b: [u8; 16] = r.array().ok_or(malformed(t))?;
            if let Some(tid) = xor {
                for (x, c) in b.iter_mut().zip(cookie.iter().chain(tid.0.iter())) {
                    *x ^= c;
                }
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
    };
    if r.remaining() != 0 {
        return Err(malformed(t));
    }
    Ok(SocketAddr::new(ip, port))
}

/// Iterates the algorithms of a PASSWORD-ALGORITHMS value; stops at the first malformed entry.
pub fn password_algorithms(value: &[u8]) -> impl Iterator<Item = PasswordAlgorithm> + '_ {
    let mut r = Reader::new(value);
    std::iter::from_fn(move || {
        let number = r.u16()?;
        let len = usize::from(r.u16()?);
        // Parameters are padded to 4 bytes like attributes.
        r.take(len.checked_add(3)? & !3)?;
        Some(PasswordAlgorithm { number })
    })
}

/// Iterates the 16-bit types of an UNKNOWN-ATTRIBUTES value.
pub fn unknown_attribute_types(value: &[u8]) -> impl Iterator<Item = u16> + '_ {
    value.chunks_exact(2).map(|c| {
        u16::from_be_bytes([
            c.first().copied().unwrap_or(0),
            c.get(1).copied().unwrap_or(0),
        ])
    })
}

fn error_code(t: u16, class: u8, number: u8) -> Result<u16, ParseError> {
    let class = class & 0x07;
    if !(3..=6).contains(&class) || number > 99 {
        return Err(malformed(t));
    }
    Ok(u16::from(class) * 100 + u16::from(number))
}

impl<'a> Attribute<'a> {
    /// Decodes one attribute value of type `t` from a message with transaction id `tid`.
    pub fn decode(t: u16, value: &'a [u8], tid: &TransactionId) -> Result<Self, ParseError> {
        use types::*;
        Ok(match t {
            MAPPED_ADDRESS => Self::MappedAddress(decode_address(t, value, None)?),
            XOR_MAPPED_ADDRESS => Self::XorMappedAddress(decode_address(t, value, Some(tid))?),
            XOR_PEER_ADDRESS => Self::XorPeerAddress(decode_address(t, value, Some(tid))?),
            XOR_RELAYED_ADDRESS => Self::XorRelayedAddress(decode_address(t, value, Some(tid))?),
            ALTERNATE_SERVER => Self::AlternateServer(decode_address(t, value, None)?),
            USERNAME => Self::Username(text(t, value, MAX_USERNAME_LEN)?),
            USERHASH => Self::Userhash(exact(t, value)?),
            MESSAGE_INTEGRITY => Self::MessageIntegrity(exact(t, value)?),
            MESSAGE_INTEGRITY_SHA256 => {
                if value.len() < 16 || value.len() > 32 || !value.len().is_multiple_of(4) {
                    return Err(malformed(t));
                }
                Self::MessageIntegritySha256(value)
            }
            FINGERPRINT => Self::Fingerprint(u32::from_be_bytes(exact(t, value)?)),
            ERROR_CODE => {
                let mut r = Reader::new(value);
                let _reserved = r.u16().ok_or(malformed(t))?;
                let class = r.u8().ok_or(malformed(t))?;
                let number = r.u8().ok_or(malformed(t))?;
                Self::ErrorCode {
                    code: error_code(t, class, number)?,
                    reason: text(t, r.rest(), MAX_TEXT_LEN)?,
                }
            }
            REALM => Self::Realm(text(t, value, MAX_TEXT_LEN)?),
            NONCE => Self::Nonce(text(t, value, MAX_TEXT_LEN)?),
            SOFTWARE => Self::Software(text(t, value, MAX_TEXT_LEN)?),
            ALTERNATE_DOMAIN => Self::AlternateDomain(text(t, value, MAX_TEXT_LEN)?),
            PASSWORD_ALGORITHMS => {
                // Validate that the list parses to its end.
                let mut r = Reader::new(value);
                while r.remaining() > 0 {
                    let _alg = r.u16().ok_or(malformed(t))?;
                    let len = usize::from(r.u16().ok_or(malformed(t))?);
                    r.take((len + 3) & !3).ok_or(malformed(t))?;
                }
                Self::PasswordAlgorithms(value)
            }
            PASSWORD_ALGORITHM => {
                let mut r = Reader::new(value);
                let number = r.u16().ok_or(malformed(t))?;
                let len = usize::from(r.u16().ok_or(malformed(t))?);
                r.take((len + 3) & !3).ok_or(malformed(t))?;
                if r.remaining() != 0 {
                    return Err(malformed(t));
                }
                Self::PasswordAlgorithm(PasswordAlgorithm { number })
            }
            UNKNOWN_ATTRIBUTES => {
                if !value.len().is_multiple_of(2) {
                    return Err(malformed(t));
                }
                Self::UnknownAttributes(value)
            }
            CHANNEL_NUMBER => {
                let b: [u8; 4] = exact(t, value)?;
                Self::ChannelNumber(u16::from_be_bytes([b[0], b[1]]))
            }
            LIFETIME => Self::Lifetime(u32::from_be_bytes(exact(t, value)?)),
            DATA => Self::Data(value),
            REQUESTED_ADDRESS_FAMILY | ADDITIONAL_ADDRESS_FAMILY => {
                let b: [u8; 4] = exact(t, value)?;
                let family = AddressFamily::from_u8(b[0]).ok_or(malformed(t))?;
                if t == REQUESTED_ADDRESS_FAMILY {
                    Self::RequestedAddressFamily(family)
                } else {
                    Self::AdditionalAddressFamily(family)
                }
            }
            EVEN_PORT => {
                let b: [u8; 1] = exact(t, value)?;
                Self::EvenPort {
                    reserve: b[0] & 0x80 != 0,
                }
            }
            REQUESTED_TRANSPORT => {
                let b: [u8; 4] = exact(t, value)?;
                Self::RequestedTransport(b[0])
            }
            DONT_FRAGMENT => {
                if !value.is_empty() {
                    return Err(malformed(t));
                }
                Self::DontFragment
            }
            RESERVATION_TOKEN => Self::ReservationToken(exact(t, value)?),
            ADDRESS_ERROR_CODE => {
                let mut r = Reader::new(value);
                let family =
                    AddressFamily::from_u8(r.u8().ok_or(malformed(t))?).ok_or(malformed(t))?;
                let _reserved = r.u8().ok_or(malformed(t))?;
                let class = r.u8().ok_or(malformed(t))?;
                let number = r.u8().ok_or(malformed(t))?;
                Self::AddressErrorCode {
                    family,
                    code: error_code(t, class, number)?,
                    reason: text(t, r.rest(), MAX_TEXT_LEN)?,
                }
            }
            ICMP => {
                let b: [u8; 8] = exact(t, value)?;
                Self::Icmp {
                    icmp_type: b[2] & 0x7F,
                    icmp_code: b[3],
                    data: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                }
            }
            CONNECTION_ID => Self::ConnectionId(u32::from_be_bytes(exact(t, value)?)),
            typ => Self::Unknown { typ, value },
        })
    }

    /// The attribute's type number.
    pub fn typ(&self) -> u16 {
        use types::*;
        match self {
            Self::MappedAddress(_) => MAPPED_ADDRESS,
            Self::XorMappedAddress(_) => XOR_MAPPED_ADDRESS,
            Self::XorPeerAddress(_) => XOR_PEER_ADDRESS,
            Self::XorRelayedAddress(_) => XOR_RELAYED_ADDRESS,
            Self::AlternateServer(_) => ALTERNATE_SERVER,
            Self::Username(_) => USERNAME,
            Self::Userhash(_) => USERHASH,
            Self::MessageIntegrity(_) => MESSAGE_INTEGRITY,
            Self::MessageIntegritySha256(_) => MESSAGE_INTEGRITY_SHA256,
            Self::Fingerprint(_) => FINGERPRINT,
            Self::ErrorCode { .. } => ERROR_CODE,
            Self::Realm(_) => REALM,
            Self::Nonce(_) => NONCE,
            Self::PasswordAlgorithms(_) => PASSWORD_ALGORITHMS,
            Self::PasswordAlgorithm(_) => PASSWORD_ALGORITHM,
            Self::UnknownAttributes(_) => UNKNOWN_ATTRIBUTES,
            Self::Software(_) => SOFTWARE,
            Self::ChannelNumber(_) => CHANNEL_NUMBER,
            Self::Lifetime(_) => LIFETIME,
            Self::Data(_) => DATA,
            Self::RequestedAddressFamily(_) => REQUESTED_ADDRESS_FAMILY,
            Self::EvenPort { .. } => EVEN_PORT,
            Self::RequestedTransport(_) => REQUESTED_TRANSPORT,
            Self::DontFragment => DONT_FRAGMENT,
            Self::ReservationToken(_) => RESERVATION_TOKEN,
            Self::AdditionalAddressFamily(_) => ADDITIONAL_ADDRESS_FAMILY,
            Self::AddressErrorCode { .. } => ADDRESS_ERROR_CODE,
            Self::Icmp { .. } => ICMP,
            Self::AlternateDomain(_) => ALTERNATE_DOMAIN,
            Self::ConnectionId(_) => CONNECTION_ID,
            Self::Unknown { typ, .. } => *typ,
        }
    }

    /// Refuses values the decoder would refuse, so whatever is written parses back: error codes
    /// outside 300–699, text over its length limit.
    pub fn check_encodable(&self) -> Result<(), EncodeError> {
        let code_ok = |c: u16| (300..=699).contains(&c);
        let ok = match self {
            Self::ErrorCode { code, reason } => code_ok(*code) && reason.len() <= MAX_TEXT_LEN,
            Self::AddressErrorCode { code, reason, .. } => {
                code_ok(*code) && reason.len() <= MAX_TEXT_LEN
            }
            Self::Username(s) => s.len() <= MAX_USERNAME_LEN,
            Self::Realm(s) | Self::Nonce(s) | Self::Software(s) | Self::AlternateDomain(s) => {
                s.len() <= MAX_TEXT_LEN
            }
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(EncodeError::ValueTooLong)
        }
    }

    /// Writes the attribute value (without the TLV header or padding).
    pub fn encode_value(&self, w: &mut Writer<'_>, tid: &TransactionId) -> Result<(), EncodeError> {
        match self {
            Self::MappedAddress(a) | Self::AlternateServer(a) => encode_address(w, *a, None),
            Self::XorMappedAddress(a) | Self::XorPeerAddress(a) | Self::XorRelayedAddress(a) => {
                encode_address(w, *a, Some(tid))
            }
            Self::Username(s)
            | Self::Realm(s)
            | Self::Nonce(s)
            | Self::Software(s)
            | Self::AlternateDomain(s) => w.put(s.as_bytes()),
            Self::Userhash(h) => w.put(h),
            Self::MessageIntegrity(h) => w.put(h),
            Self::MessageIntegritySha256(h) => w.put(h),
            Self::Fingerprint(v) => w.u32(*v),
            Self::ErrorCode { code, reason } => {
                w.u16(0)?;
                w.put(&[(code / 100) as u8, (code % 100) as u8])?;
                w.put(reason.as_bytes())
            }
            Self::PasswordAlgorithms(raw) | Self::UnknownAttributes(raw) | Self::Data(raw) => {
                w.put(raw)
            }
            Self::PasswordAlgorithm(a) => {
                w.u16(a.number)?;
                w.u16(0)
            }
            Self::ChannelNumber(n) => {
                w.u16(*n)?;
                w.u16(0)
            }
            Self::Lifetime(v) | Self::ConnectionId(v) => w.u32(*v),
            Self::RequestedAddressFamily(f) | Self::AdditionalAddressFamily(f) => {
                w.put(&[f.to_u8(), 0, 0, 0])
            }
            Self::EvenPort { reserve } => w.put(&[if *reserve { 0x80 } else { 0 }]),
            Self::RequestedTransport(p) => w.put(&[*p, 0, 0, 0]),
            Self::DontFragment => Ok(()),
            Self::ReservationToken(t) => w.put(t),
            Self::AddressErrorCode {
                family,
                code,
                reason,
            } => {
                w.put(&[family.to_u8(), 0, (code / 100) as u8, (code % 100) as u8])?;
                w.put(reason.as_bytes())
            }
            Self::Icmp {
                icmp_type,
                icmp_code,
                data,
            } => {
                w.put(&[0, 0, icmp_type & 0x7F, *icmp_code])?;
                w.u32(*data)
            }
            Self::Unknown { value, .. } => w.put(value),
        }
    }
}

/// Writes an address attribute value, XORed when `xor` carries the transaction id.
pub fn encode_address(
    w: &mut Writer<'_>,
    addr: SocketAddr,
    xor: Option<&TransactionId>,
) -> Result<(), EncodeError> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = if xor.is_some() {
        addr.port() ^ (MAGIC_COOKIE >> 16) as u16
    } else {
        addr.port()
    };
    match addr.ip() {
        IpAddr::V4(ip) => {
            w.put(&[0, AddressFamily::V4.to_u8()])?;
            w.u16(port)?;
            let mut b = ip.octets();
            if xor.is_some() {
                for (x, c) in b.iter_mut().zip(cookie) {
                    *x ^= c;
                }
            }
            w.put(&b)
        }
        IpAddr::V6(ip) => {
            w.put(&[0, AddressFamily::V6.to_u8()])?;
            w.u16(port)?;
            let mut b = ip.octets();
            if let Some(tid) = xor {
                for (x, c) in b.iter_mut().zip(cookie.iter().chain(tid.0.iter())) {
                    *x ^= c;
                }
            }
            w.put(&b)
        }
    }
}
