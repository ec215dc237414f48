//! The allocation table: O(1) lookup by client 5-tuple (client → peer) and by relayed address
//! (peer → client).

use std::net::SocketAddr;
use std::time::Instant;

use super::channel::Channels;
use super::hash::FoldMap;
use super::permission::Permissions;
use crate::auth::IntegrityKey;
use crate::types::{FiveTuple, RelayAddr};

/// Traffic counters of one allocation, updated as packets flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficCounters {
    /// Packets from the client relayed to peers.
    pub packets_to_peer: u64,
    /// Payload bytes from the client relayed to peers.
    pub bytes_to_peer: u64,
    /// Packets from peers relayed to the client.
    pub packets_to_client: u64,
    /// Payload bytes from peers relayed to the client.
    pub bytes_to_client: u64,
}

/// One allocation (RFC 8656 §5).
#[derive(Debug, Clone)]
pub struct Allocation {
    /// The 5-tuple that owns it; the table's key, so it never changes.
    five_tuple: FiveTuple,
    /// The local address of the relayed socket (of the requested address family).
    relay: RelayAddr,
    /// The relayed address told to the client (external IP when behind 1:1 NAT).
    advertised: SocketAddr,
    /// The second relayed address of a dual-stack allocation (ADDITIONAL-ADDRESS-FAMILY,
    /// RFC 8656 §7.2), local and advertised. The table indexes every relayed address, so
    /// only the table changes these (see [`AllocationTable::drop_family`]).
    second: Option<(RelayAddr, SocketAddr)>,
    /// The username that created it; later requests must use the same.
    pub username: String,
    /// The key that authenticated the Allocate, reused to check later requests cheaply.
    pub key: IntegrityKey,
    /// When it expires unless refreshed.
    pub expires: Instant,
    /// When it was created.
    pub created: Instant,
    /// Peer permissions.
    pub permissions: Permissions,
    /// Channel bindings.
    pub channels: Channels,
    /// Traffic so far.
    pub counters: TrafficCounters,
    /// The bandwidth limit, when one is configured.
    pub bandwidth: Option<crate::rate_limit::TokenBucket>,
    /// The packet-rate limit, when one is configured.
    pub packet_rate: Option<crate::rate_limit::TokenBucket>,
    /// The limit on new peers per second, when one is configured.
    pub new_peers: Option<crate::rate_limit::TokenBucket>,
    /// How peers are reached: UDP datagrams, or TCP connections (RFC 6062).
    peers: PeerTransport,
}

/// How an allocation reaches its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerTransport {
    /// UDP: datagrams through the relayed socket (channels, Send/Data indications).
    Udp,
    /// TCP (RFC 6062): peers connect to or are connected from the relayed address, and data
    /// flows on the client's data connections. The connections themselves live in
    /// [`crate::allocation::tcp::TcpConnections`], under the allocation's 5-tuple.
    Tcp,
}

/// What identifies a new allocation: its 5-tuple and relayed addresses.
#[derive(Debug, Clone, Copy)]
pub struct AllocationAddrs {
    /// The 5-tuple that owns it.
    pub five_tuple: FiveTuple,
    /// The local address of the relayed socket.
    pub relay: RelayAddr,
    /// The relayed address told to the client.
    pub advertised: SocketAddr,
    /// A dual-stack allocation's second relayed address, local and advertised.
    pub second: Option<(RelayAddr, SocketAddr)>,
}

impl Allocation {
    /// A new allocation at `addrs` for `username` (authenticated with `key`), living
    /// `lifetime` from `now`, reaching peers by `peers`, with no permission, channel, peer
    /// connection or traffic yet.
    pub fn new(
        addrs: AllocationAddrs,
        username: String,
        key: IntegrityKey,
        now: Instant,
        lifetime: std::time::Duration,
        peers: PeerTransport,
    ) -> Self {
        let AllocationAddrs {
            five_tuple,
            relay,
            advertised,
            second,
        } = addrs;
        Self {
            five_tuple,
            relay,
            advertised,
            second,
            username,
            key,
            expires: now + lifetime,
            created: now,
            permissions: Permissions::default(),
            channels: Channels::default(),
            counters: TrafficCounters::default(),
            bandwidth: None,
            packet_rate: None,
            new_peers: None,
            peers,
        }
    }

    /// The 5-tuple that owns it.
    pub fn five_tuple(&self) -> FiveTuple {
        self.five_tuple
    }

    /// The relayed socket's local address (the first family's, for dual stack).
    pub fn relay(&self) -> RelayAddr {
        self.relay
    }

    /// The relayed address told to the client.
    pub fn advertised(&self) -> SocketAddr {
        self.advertised
    }

    /// The second relayed address of a dual-stack allocation, local and advertised.
    pub fn second(&self) -> Option<(RelayAddr, SocketAddr)> {
        self.second
    }

    /// True for a TCP allocation (RFC 6062).
    pub fn is_tcp(&self) -> bool {
        self.peers == PeerTransport::Tcp
    }

    /// Every relayed address of the allocation (one, or two for dual stack).
    pub fn relays(&self) -> impl Iterator<Item = RelayAddr> + '_ {
        std::iter::once(self.relay).chain(self.second.map(|(r, _)| r))
    }

    /// Takes `bytes` from the bandwidth limit (both directions share it); false when over.
    pub fn within_bandwidth(&mut self, bytes: usize, now: std::time::Instant) -> bool {
        self.bandwidth
            .as_mut()
            .is_none_or(|b| b.take(bytes as f64, now))
    }

    /// Takes one datagram from the packet-rate limit; false when it is spent (drop it).
    pub fn within_packet_rate(&mut self, now: std::time::Instant) -> bool {
        self.packet_rate.as_mut().is_none_or(|b| b.take(1.0, now))
    }

    /// Takes `n` new peers from the new-peer limit; false (and nothing taken) when fewer are
    /// left.
    pub fn admit_new_peers(&mut self, n: usize, now: std::time::Instant) -> bool {
        n == 0
            || self
                .new_peers
                .as_mut()
                .is_none_or(|b| b.take(n as f64, now))
    }

    /// The relayed address that talks to peers of `ip`'s family.
    pub fn relay_for(&self, ip: std::net::IpAddr) -> Option<RelayAddr> {
        self.relays().find(|r| r.addr().is_ipv4() == ip.is_ipv4())
    }
}

/// Every allocation of one shard.
#[derive(Debug, Default)]
pub struct AllocationTable {
    by_tuple: FoldMap<FiveTuple, Allocation>,
    by_relay: FoldMap<RelayAddr, FiveTuple>,
}

impl AllocationTable {
    /// Adds an allocation (the caller checked the 5-tuple and relayed address are free).
    pub fn insert(&mut self, alloc: Allocation) {
        for r in alloc.relays() {
            self.by_relay.insert(r, alloc.five_tuple);
        }
        self.by_tuple.insert(alloc.five_tuple, alloc);
    }

    /// Drops the relayed address of family `ipv4` (true) or IPv6 from the dual-stack allocation
    /// of `tuple` (RFC 8656 §7.3, Refresh(0) naming one family), keeping the other as its
    /// only one; returns the dropped address. `None` when the allocation is not dual stack.
    pub fn drop_family(&mut self, tuple: &FiveTuple, ipv4: bool) -> Option<RelayAddr> {
        let alloc = self.by_tuple.get_mut(tuple)?;
        let (second, second_adv) = alloc.second.take()?;
        let dropped = if second.addr().is_ipv4() == ipv4 {
            second
        } else {
            let primary = alloc.relay;
            alloc.relay = second;
            alloc.advertised = second_adv;
            primary
        };
        self.by_relay.remove(&dropped);
        Some(dropped)
    }

    /// The allocation of a 5-tuple.
    pub fn get(&self, t: &FiveTuple) -> Option<&Allocation> {
        self.by_tuple.get(t)
    }

    /// The allocation of a 5-tuple, mutably.
    pub fn get_mut(&mut self, t: &FiveTuple) -> Option<&mut Allocation> {
        self.by_tuple.get_mut(t)
    }

    /// The allocation that owns a relayed address, mutably.
    pub fn by_relay_mut(&mut self, relay: &RelayAddr) -> Option<&mut Allocation> {
        let t = self.by_relay.get(relay)?;
        self.by_tuple.get_mut(t)
    }

    /// Removes and returns an allocation.
    pub fn remove(&mut self, t: &FiveTuple) -> Option<Allocation> {
        let a = self.by_tuple.remove(t)?;
        for r in a.relays() {
            self.by_relay.remove(&r);
        }
        Some(a)
    }

    /// Removes and returns every allocation expired at `now`.
    pub fn drain_expired(&mut self, now: Instant) -> Vec<Allocation> {
        let expired: Vec<FiveTuple> = self
            .by_tuple
            .values()
            .filter(|a| a.expires <= now)
            .map(|a| a.five_tuple)
            .collect();
        expired.iter().filter_map(|t| self.remove(t)).collect()
    }

    /// Number of allocations.
    pub fn len(&self) -> usize {
        self.by_tuple.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.by_tuple.is_empty()
    }

    /// Iterates allocations.
    pub fn iter(&self) -> impl Iterator<Item = &Allocation> {
        self.by_tuple.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ClientSocket, Transport};

    fn dual_stack() -> (AllocationTable, FiveTuple, RelayAddr, RelayAddr) {
        let tuple = FiveTuple {
            client: ClientSocket::new(SocketAddr::from(([198, 51, 100, 7], 40000))),
            server: SocketAddr::from(([192, 0, 2, 1], 3478)),
            transport: Transport::Udp,
        };
        let v4 = RelayAddr::new(SocketAddr::from(([192, 0, 2, 1], 50000)));
        let v6 = RelayAddr::new("[2001:db8::1]:50002".parse().unwrap());
        let alloc = Allocation::new(
            AllocationAddrs {
                five_tuple: tuple,
                relay: v4,
                advertised: v4.addr(),
                second: Some((v6, v6.addr())),
            },
            "1800000000:alice".into(),
            IntegrityKey::Md5Sha1([7; 16]),
            crate::test_epoch(),
            std::time::Duration::from_secs(600),
            PeerTransport::Udp,
        );
        let mut table = AllocationTable::default();
        table.insert(alloc);
        (table, tuple, v4, v6)
    }

    #[test]
    fn dropping_the_first_family_keeps_the_second_indexed_as_the_only_one() {
        let (mut table, tuple, v4, v6) = dual_stack();
        assert_eq!(table.drop_family(&tuple, true), Some(v4));
        assert!(table.by_relay_mut(&v4).is_none());
        let alloc = table
            .by_relay_mut(&v6)
            .expect("the IPv6 address still leads to it");
        assert_eq!((alloc.relay(), alloc.advertised()), (v6, v6.addr()));
        assert_eq!(alloc.second(), None);
        // Not dual stack any more: nothing left to drop by family.
        assert_eq!(table.drop_family(&tuple, false), None);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn dropping_the_second_family_keeps_the_first() {
        let (mut table, tuple, v4, v6) = dual_stack();
        assert_eq!(table.drop_family(&tuple, false), Some(v6));
        assert!(table.by_relay_mut(&v6).is_none());
        assert_eq!(table.by_relay_mut(&v4).map(|a| a.relay()), Some(v4));
        assert_eq!(table.remove(&tuple).map(|a| a.relays().count()), Some(1));
        assert!(table.by_relay_mut(&v4).is_none());
    }
}
