//! The 20-byte STUN header: type (method + class), length, magic cookie, transaction id
//! ([RFC 8489 §5](https://www.rfc-editor.org/rfc/rfc8489#section-5)).

use super::reader::Reader;

/// The fixed magic cookie that tells STUN from other protocols.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the STUN header.
pub const HEADER_LEN: usize = 20;

/// A 96-bit transaction id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(pub [u8; 12]);

/// Message class: the two C bits of the type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request.
    Request,
    /// An indication (no response).
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

/// STUN/TURN methods geoturn knows, plus any other 12-bit value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Binding (RFC 8489).
    Binding,
    /// Allocate (RFC 8656).
    Allocate,
    /// Refresh (RFC 8656).
    Refresh,
    /// Send (indication, RFC 8656).
    Send,
    /// Data (indication, RFC 8656).
    Data,
    /// CreatePermission (RFC 8656).
    CreatePermission,
    /// ChannelBind (RFC 8656).
    ChannelBind,
    /// Connect (RFC 6062).
    Connect,
    /// ConnectionBind (RFC 6062).
    ConnectionBind,
    /// ConnectionAttempt (RFC 6062).
    ConnectionAttempt,
    /// A method number geoturn does not implement.
    Other(u16),
}

impl Method {
    /// The 12-bit method number.
    pub fn number(self) -> u16 {
        match self {
            Method::Binding => 0x001,
            Method::Allocate => 0x003,
            Method::Refresh => 0x004,
            Method::Send => 0x006,
            Method::Data => 0x007,
            Method::CreatePermission => 0x008,
            Method::ChannelBind => 0x009,
            Method::Connect => 0x00A,
            Method::ConnectionBind => 0x00B,
            Method::ConnectionAttempt => 0x00C,
            Method::Other(n) => n & 0x0FFF,
        }
    }

    /// The method for a 12-bit number.
    pub fn from_number(n: u16) -> Self {
        match n {
            0x001 => Method::Binding,
            0x003 => Method::Allocate,
            0x004 => Method::Refresh,
            0x006 => Method::Send,
            0x007 => Method::Data,
            0x008 => Method::CreatePermission,
            0x009 => Method::ChannelBind,
            0x00A => Method::Connect,
            0x00B => Method::ConnectionBind,
            0x00C => Method::ConnectionAttempt,
            other => Method::Other(other & 0x0FFF),
        }
    }
}

/// Method and class together: the 14-bit message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageType {
    /// The method.
    pub method: Method,
    /// The class.
    pub class: Class,
}

impl MessageType {
    /// Builds a type.
    pub const fn new(method: Method, class: Class) -> Self {
        Self { method, class }
    }

    /// Decodes the 16-bit type field (top two bits must be zero; the caller checked).
    pub fn from_u16(t: u16) -> Self {
        // Bits: M11..M7 C1 M6..M4 C0 M3..M0 (RFC 8489 §5, figure 3).
        let class = match ((t >> 7) & 0b10) | ((t >> 4) & 0b01) {
            0 => Class::Request,
            1 => Class::Indication,
            2 => Class::Success,
            _ => Class::Error,
        };
        let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
        Self {
            method: Method::from_number(method),
            class,
        }
    }

    /// Encodes the 16-bit type field.
    pub fn to_u16(self) -> u16 {
        let m = self.method.number();
        let c: u16 = match self.class {
            Class::Request => 0,
            Class::Indication => 1,
            Class::Success => 2,
            Class::Error => 3,
        };
        (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
    }
}

/// A decoded STUN header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Method and class.
    pub typ: MessageType,
    /// Length of the attributes section (excludes the header).
    pub length: u16,
    /// Transaction id.
    pub transaction_id: TransactionId,
}

impl Header {
    /// Reads a header; `None` when the bytes cannot be a STUN header.
    pub fn read(r: &mut Reader<'_>) -> Option<Self> {
        let t = r.u16()?;
        if t & 0xC000 != 0 {
            return None;
        }
        let length = r.u16()?;
        if r.u32()? != MAGIC_COOKIE {
            return None;
        }
        let transaction_id = TransactionId(r.array()?);
        Some(Self {
            typ: MessageType::from_u16(t),
            length,
            transaction_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_round_trips_for_every_method_and_class() {
        for m in 0..0x1000u16 {
            for class in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                let t = MessageType::new(Method::from_number(m), class);
                let raw = t.to_u16();
                assert_eq!(raw & 0xC000, 0);
                assert_eq!(MessageType::from_u16(raw), t);
            }
        }
    }

    #[test]
    fn known_type_values() {
        // Values from RFC 8489 §6 / RFC 8656 §17: Binding request 0x0001, success 0x0101,
        // Allocate error 0x0113, Data indication 0x0017.
        assert_eq!(
            MessageType::new(Method::Binding, Class::Request).to_u16(),
            0x0001
        );
        assert_eq!(
            MessageType::new(Method::Binding, Class::Success).to_u16(),
            0x0101
        );
        assert_eq!(
            MessageType::new(Method::Allocate, Class::Error).to_u16(),
            0x0113
        );
        assert_eq!(
            MessageType::new(Method::Data, Class::Indication).to_u16(),
            0x0017
        );
    }
}
