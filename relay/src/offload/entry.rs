//! The fast path's map entries as bytes, laid out exactly as the C structs of
//! `relay/bpf/channel_relay.bpf.c` (little or big endian alike: addresses and ports in network
//! order as the packet has them, counters and deadlines in the host's order as the program
//! reads them). Plain byte arrays keep the map types free of `unsafe impl Pod`.

use std::net::{IpAddr, SocketAddr};

use geoturn_relay_proto::server::{OffloadLimits, OffloadedChannel};

/// `struct alloc_key`.
pub type AllocKey = [u8; 12];
/// `struct channel_key`.
pub type ChannelKey = [u8; 16];
/// `struct channel_val`.
pub type ChannelVal = [u8; 24];
/// `struct peer_key`.
pub type PeerKey = [u8; 12];
/// `struct peer_val`.
pub type PeerVal = [u8; 24];
/// `struct counters`: five u64.
pub type CountersVal = [u8; 40];
/// `struct limits`: a spin lock (4 bytes), padding, then seven u64.
pub type LimitsVal = [u8; 64];

/// IPv4 address and port in network order, or `None` for anything else (the fast path is
/// IPv4 only; the core never offers other addresses).
fn v4(addr: SocketAddr) -> Option<([u8; 4], [u8; 2])> {
    match addr.ip() {
        IpAddr::V4(ip) => Some((ip.octets(), addr.port().to_be_bytes())),
        IpAddr::V6(_) => None,
    }
}

/// The four keys and values of one offered channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The allocation (its limits' key).
    pub alloc: AllocKey,
    /// The channel (also its counters' key).
    pub channel: ChannelKey,
    /// Where the channel's data goes.
    pub channel_val: ChannelVal,
    /// The peer at the relayed address.
    pub peer: PeerKey,
    /// Which channel the peer's data goes to.
    pub peer_val: PeerVal,
}

/// Encodes `c`, to expire at `expires_ns` on the kernel's monotonic clock. `None` when an
/// address is not IPv4.
pub fn encode(c: &OffloadedChannel, expires_ns: u64) -> Option<Entry> {
    let (client_ip, client_port) = v4(c.five_tuple.client.addr())?;
    let (listen_ip, listen_port) = v4(c.five_tuple.server)?;
    let (peer_ip, peer_port) = v4(c.peer.addr())?;
    let (relay_ip, relay_port) = v4(c.relay.addr())?;
    let mut alloc = [0u8; 12];
    alloc[0..4].copy_from_slice(&client_ip);
    alloc[4..8].copy_from_slice(&listen_ip);
    alloc[8..10].copy_from_slice(&client_port);
    alloc[10..12].copy_from_slice(&listen_port);
    let mut channel = [0u8; 16];
    channel[0..12].copy_from_slice(&alloc);
    channel[12..14].copy_from_slice(&c.channel.to_be_bytes());
    let mut channel_val = [0u8; 24];
    channel_val[0..4].copy_from_slice(&peer_ip);
    channel_val[4..8].copy_from_slice(&relay_ip);
    channel_val[8..10].copy_from_slice(&peer_port);
    channel_val[10..12].copy_from_slice(&relay_port);
    channel_val[16..24].copy_from_slice(&expires_ns.to_ne_bytes());
    let mut peer = [0u8; 12];
    peer[0..4].copy_from_slice(&peer_ip);
    peer[4..8].copy_from_slice(&relay_ip);
    peer[8..10].copy_from_slice(&peer_port);
    peer[10..12].copy_from_slice(&relay_port);
    let mut peer_val = [0u8; 24];
    peer_val[0..16].copy_from_slice(&channel);
    peer_val[16..24].copy_from_slice(&expires_ns.to_ne_bytes());
    Some(Entry {
        alloc,
        channel,
        channel_val,
        peer,
        peer_val,
    })
}

/// `struct limits` with full buckets as of `now_ns` (the core's buckets also start full).
pub fn encode_limits(l: &OffloadLimits, now_ns: u64) -> LimitsVal {
    const NS: u64 = 1_000_000_000;
    let fields = [
        now_ns,
        l.byte_burst.saturating_mul(NS),
        l.packet_burst.saturating_mul(NS),
        l.bytes_per_sec,
        l.packets_per_sec,
        l.byte_burst,
        l.packet_burst,
    ];
    let mut out = [0u8; 64];
    // Bytes 0..8: the spin lock and padding, zero.
    for (slot, v) in out[8..].chunks_exact_mut(8).zip(fields) {
        slot.copy_from_slice(&v.to_ne_bytes());
    }
    out
}

/// One channel's counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChannelCounters {
    /// Datagrams relayed client → peer.
    pub packets_to_peer: u64,
    /// Payload bytes relayed client → peer.
    pub bytes_to_peer: u64,
    /// Datagrams relayed peer → client.
    pub packets_to_client: u64,
    /// Payload bytes relayed peer → client.
    pub bytes_to_client: u64,
    /// Datagrams dropped over the allocation's packet or byte rate.
    pub dropped_over_limit: u64,
}

impl ChannelCounters {
    /// Adds one CPU's `struct counters`.
    pub fn add_raw(&mut self, raw: &CountersVal) {
        let mut f = raw
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])));
        let mut next = || f.next().unwrap_or(0);
        self.packets_to_peer += next();
        self.bytes_to_peer += next();
        self.packets_to_client += next();
        self.bytes_to_client += next();
        self.dropped_over_limit += next();
    }

    /// Adds `other`.
    pub fn add(&mut self, other: &Self) {
        self.packets_to_peer += other.packets_to_peer;
        self.bytes_to_peer += other.bytes_to_peer;
        self.packets_to_client += other.packets_to_client;
        self.bytes_to_client += other.bytes_to_client;
        self.dropped_over_limit += other.dropped_over_limit;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use geoturn_relay_proto::types::FiveTuple;
    use geoturn_relay_proto::{ClientSocket, PeerSocket, RelayAddr, Transport};

    use super::*;

    fn channel(peer: &str) -> OffloadedChannel {
        OffloadedChannel {
            five_tuple: FiveTuple {
                client: ClientSocket::new("198.51.100.7:40000".parse().unwrap()),
                server: "192.0.2.1:3478".parse().unwrap(),
                transport: Transport::Udp,
            },
            channel: 0x4001,
            peer: PeerSocket::new(peer.parse().unwrap()),
            relay: RelayAddr::new("192.0.2.2:50000".parse().unwrap()),
            expires: Instant::now(),
            limits: OffloadLimits::default(),
        }
    }

    #[test]
    fn layout_matches_the_c_structs() {
        let e = encode(&channel("203.0.113.50:7000"), 0x0102_0304_0506_0708).unwrap();
        assert_eq!(
            e.channel,
            [
                198, 51, 100, 7, 192, 0, 2, 1, 0x9c, 0x40, 0x0d, 0x96, 0x40, 0x01, 0, 0
            ]
        );
        assert_eq!(
            &e.channel_val[..12],
            &[203, 0, 113, 50, 192, 0, 2, 2, 0x1b, 0x58, 0xc3, 0x50]
        );
        assert_eq!(
            e.channel_val[16..24],
            0x0102_0304_0506_0708u64.to_ne_bytes()
        );
        assert_eq!(
            e.peer,
            [203, 0, 113, 50, 192, 0, 2, 2, 0x1b, 0x58, 0xc3, 0x50]
        );
        assert_eq!(e.peer_val[..16], e.channel);
        assert_eq!(e.alloc, e.channel[..12]);
    }

    #[test]
    fn ipv6_is_never_encoded() {
        assert!(encode(&channel("[2001:db8::1]:7000"), 1).is_none());
    }

    #[test]
    fn limits_start_full() {
        let l = OffloadLimits {
            bytes_per_sec: 1000,
            byte_burst: 16384,
            packets_per_sec: 10,
            packet_burst: 256,
        };
        let raw = encode_limits(&l, 5);
        let word = |i: usize| u64::from_ne_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!(word(0), 0, "lock and padding");
        assert_eq!(word(1), 5);
        assert_eq!(word(2), 16384 * 1_000_000_000);
        assert_eq!(word(3), 256 * 1_000_000_000);
        assert_eq!([word(4), word(5), word(6), word(7)], [1000, 10, 16384, 256]);
    }

    #[test]
    fn counters_sum_over_cpus() {
        let mut raw = [0u8; 40];
        for (i, c) in raw.chunks_exact_mut(8).enumerate() {
            c.copy_from_slice(&(i as u64 + 1).to_ne_bytes());
        }
        let mut sum = ChannelCounters::default();
        sum.add_raw(&raw);
        sum.add_raw(&raw);
        assert_eq!(
            sum,
            ChannelCounters {
                packets_to_peer: 2,
                bytes_to_peer: 4,
                packets_to_client: 6,
                bytes_to_client: 8,
                dropped_over_limit: 10,
            }
        );
    }
}
