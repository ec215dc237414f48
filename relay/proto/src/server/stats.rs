//! Counters the server keeps as it works; the driver exports them as metrics.

/// Why a packet was dropped without a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not STUN or ChannelData, or malformed.
    Malformed,
    /// FINGERPRINT present and wrong.
    BadFingerprint,
    /// A response or unexpected indication from a client.
    UnexpectedMessage,
    /// No allocation for this 5-tuple or relayed address.
    NoAllocation,
    /// No permission for the peer.
    NoPermission,
    /// ChannelData on an unbound channel.
    NoChannel,
    /// Too large to frame.
    TooLarge,
    /// An unsigned response withheld: its source exceeded the unauthenticated rate.
    RateLimited,
    /// Relayed data over the allocation's bandwidth limit.
    OverBandwidth,
}

impl DropReason {
    /// Every reason, for exporting zero-valued series.
    pub const ALL: [DropReason; 9] = [
        Self::Malformed,
        Self::BadFingerprint,
        Self::UnexpectedMessage,
        Self::NoAllocation,
        Self::NoPermission,
        Self::NoChannel,
        Self::TooLarge,
        Self::RateLimited,
        Self::OverBandwidth,
    ];

    /// A metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadFingerprint => "bad_fingerprint",
            Self::UnexpectedMessage => "unexpected_message",
            Self::NoAllocation => "no_allocation",
            Self::NoPermission => "no_permission",
            Self::NoChannel => "no_channel",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::OverBandwidth => "over_bandwidth",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Monotonic counters of one server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Allocations created.
    pub allocations_created: u64,
    /// Allocations deleted by Refresh(0).
    pub allocations_deleted: u64,
    /// Allocations that expired.
    pub allocations_expired: u64,
    /// Requests refused by authentication, by reason label.
    pub auth_failures: std::collections::BTreeMap<&'static str, u64>,
    /// Peer addresses refused by policy.
    pub peers_denied: u64,
    /// Allocates answered with 300 Try Alternate while draining.
    pub redirects: u64,
    /// Allocates on an anycast listener answered with 300 Try Alternate to a unicast relay.
    pub first_contact_redirects: u64,
    /// Allocates on an anycast listener refused (403): no unicast relay known.
    pub first_contact_refused: u64,
    /// Packets relayed client → peer.
    pub packets_to_peer: u64,
    /// Payload bytes relayed client → peer.
    pub bytes_to_peer: u64,
    /// Packets relayed peer → client.
    pub packets_to_client: u64,
    /// Payload bytes relayed peer → client.
    pub bytes_to_client: u64,
    drops: [u64; DropReason::ALL.len()],
}

impl ServerStats {
    /// Counts a dropped packet.
    pub fn drop_packet(&mut self, reason: DropReason) {
        if let Some(c) = self.drops.get_mut(reason.index()) {
            *c += 1;
        }
    }

    /// Adds `n` drops for `reason` (when summing shards).
    pub fn add_drops(&mut self, reason: DropReason, n: u64) {
        if let Some(c) = self.drops.get_mut(reason.index()) {
            *c += n;
        }
    }

    /// Packets dropped for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops.get(reason.index()).copied().unwrap_or(0)
    }
}
