//! The relay's own addresses as peers. A client relaying to the host it is relayed from could
//! reach whatever listens there — services bound to every address, the ops port, the TURN
//! listeners themselves — from the inside, and where a public address sits on the interface
//! the peer policy cannot tell it from any other peer. So the relay's own addresses (listen,
//! relayed, external, anycast) are peers only at a relayed port in use: two clients of one
//! relay calling each other (the most common TURN call) keep working; nothing else there is
//! reachable, whatever `--allow-peer` says. Permissions are per IP, so the port is checked
//! where data leaves (every datagram, every Connect, every ChannelBind), not at
//! CreatePermission.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::allocation::ports::PortPool;

/// The relay's own IP addresses and the pool that says which of its ports carry allocations.
#[derive(Debug)]
pub(super) struct OwnAddresses {
    /// IPv4 addresses (IPv4-mapped IPv6 ones included), as integers: the check runs for every
    /// relayed datagram, and comparing integers is what it can afford.
    v4: Vec<u32>,
    v6: Vec<u128>,
    ports: Arc<PortPool>,
}

impl OwnAddresses {
    /// The guard over `ips` (IPv4-mapped IPv6 counts as IPv4); none turns it off.
    pub(super) fn new(ips: impl IntoIterator<Item = IpAddr>, ports: Arc<PortPool>) -> Self {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for ip in ips {
            match ip.to_canonical() {
                IpAddr::V4(a) => v4.push(u32::from(a)),
                IpAddr::V6(a) => v6.push(u128::from(a)),
            }
        }
        v4.sort_unstable();
        v4.dedup();
        v6.sort_unstable();
        v6.dedup();
        Self { v4, v6, ports }
    }

    /// False when `peer` is one of this relay's addresses at a port that is not a relayed
    /// port in use.
    #[inline]
    pub(super) fn allows(&self, peer: SocketAddr) -> bool {
        !self.is_ours(peer.ip()) || self.ports.holds(peer.port())
    }

    /// True when `ip` is one of this relay's addresses.
    #[inline]
    pub(super) fn is_ours(&self, ip: IpAddr) -> bool {
        // A handful of addresses: a linear scan beats any set, and the common peer (not us)
        // costs one integer comparison per address.
        match ip {
            IpAddr::V4(a) => self.v4.contains(&u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(m) => self.v4.contains(&u32::from(m)),
                None => self.v6.contains(&u128::from(a)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_addresses_only_at_relayed_ports_in_use() {
        let t0 = crate::test_epoch();
        let ports = Arc::new(PortPool::new(50000..=50009, [1; 32]));
        let own = OwnAddresses::new(
            ["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
            ports.clone(),
        );
        let live = ports.pick(false, false, "1:alice", t0).unwrap().port;
        let at = |ip: &str, port: u16| SocketAddr::new(ip.parse().unwrap(), port);
        assert!(own.allows(at("192.0.2.1", live)), "another allocation here");
        assert!(!own.allows(at("192.0.2.1", 3478)), "a listener");
        assert!(!own.allows(at("192.0.2.1", 22)), "another service");
        assert!(!own.allows(at("::ffff:192.0.2.1", 22)), "mapped");
        assert!(!own.allows(at("2001:db8::1", 9641)));
        let free = if live == 50000 { 50001 } else { 50000 };
        assert!(
            !own.allows(at("192.0.2.1", free)),
            "a relayed port nobody holds"
        );
        assert!(own.allows(at("203.0.113.9", 22)), "not us");
        ports.release(live);
        assert!(!own.allows(at("192.0.2.1", live)), "its allocation ended");
        let off = OwnAddresses::new([], ports);
        assert!(off.allows(at("192.0.2.1", 22)));
    }
}
