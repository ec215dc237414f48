//! STUN message codec (RFC 8489) with the TURN attributes of RFC 8656, RFC 6062 and RFC 8016.
//!
//! Parsing is zero-copy over a bounds-checked [`reader::Reader`]; encoding writes into a
//! caller-provided buffer through [`message::MessageWriter`]. ChannelData framing lives in
//! [`channel_data`] and never allocates.

pub mod attribute;
pub mod channel_data;
pub mod error;
pub mod framing;
pub mod header;
pub mod integrity;
pub mod message;
pub mod reader;

pub use attribute::{AddressFamily, Attribute, PasswordAlgorithm};
pub use error::{EncodeError, ErrorCode, ParseError};
pub use header::{Class, MAGIC_COOKIE, MessageType, Method, TransactionId};
pub use message::{Message, MessageWriter};

/// What the first bytes of a packet on a TURN port say it is (RFC 8656 §12: the first two bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// First two bits 00: a STUN message.
    Stun,
    /// First two bits 01: a ChannelData message (channel numbers 0x4000–0x7FFF).
    ChannelData,
    /// Anything else (or too short to tell): dropped.
    Other,
}

/// Classifies a packet by its first byte without parsing it.
pub fn classify(packet: &[u8]) -> PacketKind {
    match packet.first().map(|b| b >> 6) {
        Some(0) => PacketKind::Stun,
        Some(1) => PacketKind::ChannelData,
        _ => PacketKind::Other,
    }
}
