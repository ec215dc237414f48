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
    /// Relayed datagrams over the allocation's packet-rate limit.
    OverPacketRate,
    /// Relayed data to one of the relay's own addresses at a port that is not a relayed port
    /// in use.
    OwnAddress,
}

impl DropReason {
    /// Every reason, for exporting zero-valued series.
    pub const ALL: [DropReason; 11] = [
        Self::Malformed,
        Self::BadFingerprint,
        Self::UnexpectedMessage,
        Self::NoAllocation,
        Self::NoPermission,
        Self::NoChannel,
        Self::TooLarge,
        Self::RateLimited,
        Self::OverBandwidth,
        Self::OverPacketRate,
        Self::OwnAddress,
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
            Self::OverPacketRate => "over_packet_rate",
            Self::OwnAddress => "own_address",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Which limit refused a request (answered 486 or 508): quotas bite silently otherwise, and an
/// operator needs to see whether they are too tight for real users or holding off an abuser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Allocations per user (`--user-quota`).
    UserQuota,
    /// Allocations per client address or IPv6 /64 (`--allocations-per-ip`).
    SourceQuota,
    /// Allocations on the relay (`--max-allocations`, or the port range).
    Allocations,
    /// Permissions per allocation (128).
    Permissions,
    /// New peers per second per allocation (`--max-new-peers-per-sec`).
    NewPeers,
    /// RFC 6062 peer connections: per allocation, connecting per allocation or client
    /// address, or on the relay.
    PeerConnections,
}

impl Limit {
    /// Every limit, for exporting zero-valued series.
    pub const ALL: [Limit; 6] = [
        Self::UserQuota,
        Self::SourceQuota,
        Self::Allocations,
        Self::Permissions,
        Self::NewPeers,
        Self::PeerConnections,
    ];

    /// A metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserQuota => "user_quota",
            Self::SourceQuota => "source_quota",
            Self::Allocations => "allocations",
            Self::Permissions => "permissions",
            Self::NewPeers => "new_peers",
            Self::PeerConnections => "peer_connections",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|l| *l == self).unwrap_or(0)
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
    refusals: [u64; Limit::ALL.len()],
}

impl ServerStats {
    /// Counts a dropped packet.
    pub fn drop_packet(&mut self, reason: DropReason) {
        if let Some(c) = self.drops.get_mut(reason.index()) {
            *c += 1;
        }
    }

    /// Counts a request refused by `limit`.
    pub fn refuse(&mut self, limit: Limit) {
        if let Some(c) = self.refusals.get_mut(limit.index()) {
            *c += 1;
        }
    }

    /// Requests refused by `limit`.
    pub fn refusals(&self, limit: Limit) -> u64 {
        self.refusals.get(limit.index()).copied().unwrap_or(0)
    }

    /// Adds another shard's counters to these. Every field is named in the destructuring
    /// below, so a counter added to the struct and forgotten here does not compile.
    pub fn merge(&mut self, other: &ServerStats) {
        let ServerStats {
            allocations_created,
            allocations_deleted,
            allocations_expired,
            auth_failures,
            peers_denied,
            redirects,
            first_contact_redirects,
            first_contact_refused,
            packets_to_peer,
            bytes_to_peer,
            packets_to_client,
            bytes_to_client,
            drops,
            refusals,
        } = other;
        self.allocations_created += allocations_created;
        self.allocations_deleted += allocations_deleted;
        self.allocations_expired += allocations_expired;
        for (reason, n) in auth_failures {
            *self.auth_failures.entry(reason).or_default() += n;
        }
        self.peers_denied += peers_denied;
        self.redirects += redirects;
        self.first_contact_redirects += first_contact_redirects;
        self.first_contact_refused += first_contact_refused;
        self.packets_to_peer += packets_to_peer;
        self.bytes_to_peer += bytes_to_peer;
        self.packets_to_client += packets_to_client;
        self.bytes_to_client += bytes_to_client;
        for (sum, n) in self.drops.iter_mut().zip(drops) {
            *sum += n;
        }
        for (sum, n) in self.refusals.iter_mut().zip(refusals) {
            *sum += n;
        }
    }

    /// Packets dropped for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops.get(reason.index()).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_every_counter() {
        let mut a = ServerStats {
            allocations_created: 1,
            packets_to_peer: 10,
            ..ServerStats::default()
        };
        a.drop_packet(DropReason::NoPermission);
        a.auth_failures.insert("expired", 2);
        let mut b = ServerStats {
            allocations_created: 2,
            allocations_deleted: 3,
            allocations_expired: 4,
            peers_denied: 5,
            redirects: 6,
            first_contact_redirects: 7,
            first_contact_refused: 8,
            packets_to_peer: 9,
            bytes_to_peer: 11,
            packets_to_client: 12,
            bytes_to_client: 13,
            ..ServerStats::default()
        };
        b.drop_packet(DropReason::NoPermission);
        b.drop_packet(DropReason::RateLimited);
        b.auth_failures.insert("expired", 1);
        b.auth_failures.insert("bad_integrity", 1);
        a.refuse(Limit::NewPeers);
        b.refuse(Limit::NewPeers);
        b.refuse(Limit::UserQuota);
        a.merge(&b);
        assert_eq!(
            (
                a.allocations_created,
                a.allocations_deleted,
                a.allocations_expired
            ),
            (3, 3, 4)
        );
        assert_eq!(
            (a.peers_denied, a.redirects, a.first_contact_redirects),
            (5, 6, 7)
        );
        assert_eq!(a.first_contact_refused, 8);
        assert_eq!((a.packets_to_peer, a.bytes_to_peer), (19, 11));
        assert_eq!((a.packets_to_client, a.bytes_to_client), (12, 13));
        assert_eq!(a.drops(DropReason::NoPermission), 2);
        assert_eq!(a.drops(DropReason::RateLimited), 1);
        assert_eq!(a.auth_failures.get("expired"), Some(&3));
        assert_eq!(a.auth_failures.get("bad_integrity"), Some(&1));
        assert_eq!(a.refusals(Limit::NewPeers), 2);
        assert_eq!(a.refusals(Limit::UserQuota), 1);
        assert_eq!(a.refusals(Limit::SourceQuota), 0);
    }
}
