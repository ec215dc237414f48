//! Which channels the driver may relay outside the core (a kernel fast path), and when it must
//! stop. The core stays the authority: it offers a channel only while it is bound, its peer
//! has a permission and the allocation lives, for UDP clients and UDP peers of one address
//! family (IPv4 or IPv6), and takes the offer back the moment any of those ends (expiry,
//! Refresh with lifetime 0, revocation, the allocation's end). Each offer carries the earliest
//! of those deadlines so a fast path that never hears back still stops on time.
//!
//! The driver executes [`Command::OffloadChannel`] (install or update) and
//! [`Command::RemoveOffload`]; it may fail to install (a full map): the traffic then simply
//! keeps reaching the core.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use super::{Command, Server};
use crate::allocation::Allocation;
use crate::types::{FiveTuple, PeerSocket, RelayAddr, Transport};

/// Largest byte or packet rate a fast path is asked to enforce: its token buckets count in
/// nanoseconds per token, so a burst above this (times 10^9) would not fit in 64 bits. An
/// allocation with a larger limit keeps its channels in the core.
pub const MAX_OFFLOAD_RATE: u64 = 1_000_000_000;

/// An allocation's per-allocation limits as token buckets, the way the core applies them
/// (`allocate.rs`): both directions and every channel share them. Zero rate: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OffloadLimits {
    /// Payload bytes per second.
    pub bytes_per_sec: u64,
    /// Burst of the byte bucket.
    pub byte_burst: u64,
    /// Datagrams per second.
    pub packets_per_sec: u64,
    /// Burst of the packet bucket.
    pub packet_burst: u64,
}

/// One channel a fast path may relay, both ways, until `expires`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffloadedChannel {
    /// The client's 5-tuple (UDP, a specific listening address of the client's family, which
    /// is also the peer's and the relayed address's).
    pub five_tuple: FiveTuple,
    /// The channel number.
    pub channel: u16,
    /// The peer bound to it.
    pub peer: PeerSocket,
    /// The relayed address the peer is reached from.
    pub relay: RelayAddr,
    /// The earliest of the binding's, the permission's and the allocation's expiry.
    pub expires: Instant,
    /// The allocation's rate limits.
    pub limits: OffloadLimits,
}

impl OffloadedChannel {
    /// Same channel, same peer, same relayed address (the expiry or limits may differ).
    fn same_binding(&self, other: &Self) -> bool {
        self.five_tuple == other.five_tuple
            && self.channel == other.channel
            && self.peer == other.peer
            && self.relay == other.relay
    }
}

/// The channels offered to the driver, by allocation.
#[derive(Debug, Default)]
pub(super) struct OffloadTable {
    enabled: bool,
    by_allocation: HashMap<FiveTuple, Vec<OffloadedChannel>>,
}

/// An address the fast path can key on and route to: not a wildcard, and for IPv6 neither
/// link-local (its interface is not in the 5-tuple) nor IPv4-mapped (never on a wire).
fn routable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_unspecified() && !v6.is_unicast_link_local() && v6.to_ipv4_mapped().is_none()
        }
    }
}

/// The limits of an allocation as the fast path must apply them, or `None` when they cannot be
/// encoded there (the channels then stay in the core).
fn limits_of(bps: u64, pps: u64) -> Option<OffloadLimits> {
    let bytes_per_sec = bps / 8;
    if bytes_per_sec > MAX_OFFLOAD_RATE || pps > MAX_OFFLOAD_RATE {
        return None;
    }
    // The same bursts as the core's buckets (`allocate.rs`).
    Some(OffloadLimits {
        bytes_per_sec,
        byte_burst: if bps > 0 {
            bytes_per_sec.max(16_384)
        } else {
            0
        },
        packets_per_sec: pps,
        packet_burst: if pps > 0 { pps.max(256) } else { 0 },
    })
}

/// The channels of `alloc` a fast path may relay now.
fn eligible(
    alloc: &Allocation,
    own: &super::own::OwnAddresses,
    limits: OffloadLimits,
    now: Instant,
) -> Vec<OffloadedChannel> {
    let tuple = alloc.five_tuple();
    // TCP/TLS clients and RFC 6062 allocations carry no datagram channels to offload; the
    // program matches the address a client's packets reach, which a driver that does not learn
    // it (a wildcard listener without packet info) leaves unspecified.
    let family = tuple.client.addr().is_ipv4();
    if tuple.transport != Transport::Udp
        || alloc.is_tcp()
        || !routable(tuple.client.addr().ip())
        || !routable(tuple.server.ip())
        || tuple.server.is_ipv4() != family
        || now >= alloc.expires
    {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (channel, peer, bound_until) in alloc.channels.live(now) {
        let Some(relay) = alloc.relay_for(peer.ip()) else {
            continue;
        };
        let Some(permitted_until) = alloc.permissions.expiry(peer.ip(), now) else {
            continue;
        };
        // A peer at one of the relay's own addresses (a client of this relay) is reached
        // through the host's own stack, never through an interface: the core relays those.
        // A peer of the other family than the client's (RFC 8656 lets them differ) would need
        // the IP header translated: the core relays those too.
        if !routable(peer.ip())
            || !routable(relay.addr().ip())
            || peer.is_ipv4() != family
            || relay.addr().is_ipv4() != family
            || own.is_ours(peer.ip())
        {
            continue;
        }
        out.push(OffloadedChannel {
            five_tuple: tuple,
            channel,
            peer: PeerSocket::new(peer),
            relay,
            expires: bound_until.min(permitted_until).min(alloc.expires),
            limits,
        });
    }
    // A stable order keeps the command sequence deterministic for tests.
    out.sort_by_key(|c| c.channel);
    out
}

impl Server {
    /// Lets the core offer channels to the driver's fast path from now on. A driver without
    /// one never calls this and never sees an offload command.
    pub fn enable_offload(&mut self) {
        self.offload.enabled = true;
    }

    /// Brings the offers for `tuple`'s allocation in line with its state: new or refreshed
    /// channels offered (again, with their new deadline), ended ones taken back.
    pub(super) fn sync_offload(&mut self, tuple: FiveTuple, now: Instant) {
        if !self.offload.enabled {
            return;
        }
        let limits = limits_of(self.config.allocation_bps, self.config.allocation_pps);
        let wanted = match (self.allocations.get(&tuple), limits) {
            (Some(alloc), Some(limits)) => eligible(alloc, &self.own, limits, now),
            _ => Vec::new(),
        };
        let offered = self
            .offload
            .by_allocation
            .remove(&tuple)
            .unwrap_or_default();
        // Take back first: a rebinding of the same number must not meet the old entry.
        for old in &offered {
            if !wanted.iter().any(|w| w.same_binding(old)) {
                self.commands.push_back(Command::RemoveOffload(*old));
            }
        }
        for new in &wanted {
            if !offered.contains(new) {
                self.commands.push_back(Command::OffloadChannel(*new));
            }
        }
        if !wanted.is_empty() {
            self.offload.by_allocation.insert(tuple, wanted);
        }
    }

    /// Takes back every offer of `tuple`'s allocation (it has ended).
    pub(super) fn remove_offload(&mut self, tuple: &FiveTuple) {
        if let Some(offered) = self.offload.by_allocation.remove(tuple) {
            for old in offered {
                self.commands.push_back(Command::RemoveOffload(old));
            }
        }
    }

    /// Takes back offers whose deadline has passed (the fast path already stopped relaying
    /// them at that deadline; this frees its entries).
    pub(super) fn expire_offload(&mut self, now: Instant) {
        let commands = &mut self.commands;
        self.offload.by_allocation.retain(|_, offered| {
            offered.retain(|c| {
                let live = now < c.expires;
                if !live {
                    commands.push_back(Command::RemoveOffload(*c));
                }
                live
            });
            !offered.is_empty()
        });
    }

    /// Channels offered to the fast path now (for status and tests).
    pub fn offloaded_channels(&self) -> usize {
        self.offload.by_allocation.values().map(Vec::len).sum()
    }
}
