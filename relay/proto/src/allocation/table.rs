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
    /// The 5-tuple that owns it.
    pub five_tuple: FiveTuple,
    /// The local address of the relayed socket (of the requested address family).
    pub relay: RelayAddr,
    /// The relayed address told to the client (external IP when behind 1:1 NAT).
    pub advertised: SocketAddr,
    /// The second relayed address of a dual-stack allocation (ADDITIONAL-ADDRESS-FAMILY,
    /// RFC 8656 §7.2), local and advertised.
    pub second: Option<(RelayAddr, SocketAddr)>,
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
    /// A TCP allocation (RFC 6062): peers connect by TCP, data flows on data connections.
    pub tcp: bool,
    /// Peer connections of a TCP allocation, closed with it.
    pub tcp_connections: Vec<u32>,
}

impl Allocation {
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

    /// Forgets one relayed address of a dual-stack allocation (the caller updated the
    /// allocation itself).
    pub fn forget_relay(&mut self, relay: &RelayAddr) {
        self.by_relay.remove(relay);
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
