//! Codec errors and the STUN/TURN error codes, with their reason phrases in one place.

/// Why bytes are not an acceptable STUN message or attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Shorter than a header, top bits set, or wrong magic cookie: not STUN at all.
    #[error("not a STUN message")]
    NotStun,
    /// The header length disagrees with the packet length or is not a multiple of 4.
    #[error("bad message length")]
    BadLength,
    /// An attribute runs past the end of the message.
    #[error("truncated attribute")]
    TruncatedAttribute,
    /// An attribute follows FINGERPRINT, or FINGERPRINT is not last.
    #[error("attribute after FINGERPRINT")]
    AttributeAfterFingerprint,
    /// More attributes than any legitimate message carries.
    #[error("too many attributes")]
    TooManyAttributes,
    /// An attribute value has the wrong size or contents.
    #[error("malformed attribute {0:#06x}")]
    MalformedAttribute(u16),
    /// ChannelData with a channel number outside 0x4000–0x7FFF or a short payload.
    #[error("malformed ChannelData")]
    BadChannelData,
}

/// Why a message could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The caller's buffer is too small.
    #[error("buffer too small")]
    BufferTooSmall,
    /// A value is too long for its attribute (e.g. a 70 000-byte DATA).
    #[error("attribute value too long")]
    ValueTooLong,
}

/// A STUN error code (ERROR-CODE, RFC 8489 §14.8) with the reason phrase geoturn sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// 300: use ALTERNATE-SERVER.
    pub const TRY_ALTERNATE: Self = Self(300);
    /// 400: malformed request.
    pub const BAD_REQUEST: Self = Self(400);
    /// 401: credentials missing or wrong.
    pub const UNAUTHENTICATED: Self = Self(401);
    /// 403: refused by policy (e.g. forbidden peer address).
    pub const FORBIDDEN: Self = Self(403);
    /// 405: method not allowed on this transport.
    pub const MOBILITY_FORBIDDEN: Self = Self(405);
    /// 420: an unknown comprehension-required attribute.
    pub const UNKNOWN_ATTRIBUTE: Self = Self(420);
    /// 437: allocation mismatch.
    pub const ALLOCATION_MISMATCH: Self = Self(437);
    /// 438: stale nonce.
    pub const STALE_NONCE: Self = Self(438);
    /// 440: address family not supported.
    pub const ADDRESS_FAMILY_NOT_SUPPORTED: Self = Self(440);
    /// 441: wrong credentials (request signed by another user than the allocation's).
    pub const WRONG_CREDENTIALS: Self = Self(441);
    /// 442: unsupported transport protocol.
    pub const UNSUPPORTED_TRANSPORT: Self = Self(442);
    /// 443: peer address family mismatch.
    pub const PEER_ADDRESS_FAMILY_MISMATCH: Self = Self(443);
    /// 446: connection already exists (RFC 6062).
    pub const CONNECTION_ALREADY_EXISTS: Self = Self(446);
    /// 447: connection timeout or failure (RFC 6062).
    pub const CONNECTION_TIMEOUT: Self = Self(447);
    /// 486: allocation quota reached.
    pub const ALLOCATION_QUOTA_REACHED: Self = Self(486);
    /// 500: server error.
    pub const SERVER_ERROR: Self = Self(500);
    /// 508: insufficient capacity.
    pub const INSUFFICIENT_CAPACITY: Self = Self(508);

    /// The reason phrase geoturn sends for this code.
    pub fn reason(self) -> &'static str {
        match self.0 {
            300 => "Try Alternate",
            400 => "Bad Request",
            401 => "Unauthenticated",
            403 => "Forbidden",
            405 => "Mobility Forbidden",
            420 => "Unknown Attribute",
            437 => "Allocation Mismatch",
            438 => "Stale Nonce",
            440 => "Address Family not Supported",
            441 => "Wrong Credentials",
            442 => "Unsupported Transport Protocol",
            443 => "Peer Address Family Mismatch",
            446 => "Connection Already Exists",
            447 => "Connection Timeout or Failure",
            486 => "Allocation Quota Reached",
            500 => "Server Error",
            508 => "Insufficient Capacity",
            _ => "Error",
        }
    }
}
