//! The fast path's map entries as bytes, laid out exactly as the C structs of
//! `relay/bpf/channel_relay.bpf.c` (little or big endian alike: addresses and ports in network
//! order as the packet has them, counters and deadlines in the host's order as the program
//! reads them). Addresses are 16 bytes, an IPv4 one IPv4-mapped, as the program keys them.
//! Plain byte arrays keep the map types free of `unsafe impl Pod`.

use std::net::{IpAddr, SocketAddr};

use geoturn_relay_proto::server::{OffloadLimits, OffloadedChannel};

/// `struct alloc_key`: client and listening address, client and listening port.
pub type AllocKey = [u8; 36];
/// `struct channel_key`: the allocation's key, the channel number, 2 bytes of padding.
pub type ChannelKey = [u8; 40];
/// `struct channel_val`: peer and relayed address and port, padding, the deadline.
pub type ChannelVal = [u8; 48];
/// `struct peer_key`: peer and relayed address and port.
pub type PeerKey = [u8; 36];
/// `struct peer_val`: the channel's key, the deadline.
pub type PeerVal = [u8; 48];
/// `struct counters`: five u64.
pub type CountersVal = [u8; 40];
/// `struct limits`: a spin lock (4 bytes), padding, then seven u64.
pub type LimitsVal = [u8; 64];

/// An address as the program keys it (IPv4-mapped for IPv4) and its port, in network order.
fn wire(addr: SocketAddr) -> ([u8; 16], [u8; 2]) {
    let ip = match addr.ip() {
        IpAddr::V4(ip) => ip.to_ipv6_mapped(),
        IpAddr::V6(ip) => ip,
    };
    (ip.octets(), addr.port().to_be_bytes())
}

/// Two addresses and their ports as the program lays them out: 16 + 16 + 2 + 2 bytes.
fn pair(a: SocketAddr, b: SocketAddr) -> [u8; 36] {
    let ((a_ip, a_port), (b_ip, b_port)) = (wire(a), wire(b));
    let mut out = [0u8; 36];
    out[0..16].copy_from_slice(&a_ip);
    out[16..32].copy_from_slice(&b_ip);
    out[32..34].copy_from_slice(&a_port);
    out[34..36].copy_from_slice(&b_port);
    out
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

/// Encodes `c`, to expire at `expires_ns` on the kernel's monotonic clock. `None` when the
/// client's side and the peer's side are of different address families (the program relays
/// within one family; the core never offers others).
pub fn encode(c: &OffloadedChannel, expires_ns: u64) -> Option<Entry> {
    let client = c.five_tuple.client.addr();
    let (peer, relay) = (c.peer.addr(), c.relay.addr());
    let v4 = client.is_ipv4();
    if c.five_tuple.server.is_ipv4() != v4 || peer.is_ipv4() != v4 || relay.is_ipv4() != v4 {
        return None;
    }
    let alloc = pair(client, c.five_tuple.server);
    let mut channel = [0u8; 40];
    channel[0..36].copy_from_slice(&alloc);
    channel[36..38].copy_from_slice(&c.channel.to_be_bytes());
    let peer = pair(peer, relay);
    let mut channel_val = [0u8; 48];
    channel_val[0..36].copy_from_slice(&peer);
    channel_val[40..48].copy_from_slice(&expires_ns.to_ne_bytes());
    let mut peer_val = [0u8; 48];
    peer_val[0..40].copy_from_slice(&channel);
    peer_val[40..48].copy_from_slice(&expires_ns.to_ne_bytes());
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
        let mapped = |v4: [u8; 4]| {
            let mut a = [0u8; 16];
            a[10..12].copy_from_slice(&[0xff, 0xff]);
            a[12..].copy_from_slice(&v4);
            a
        };
        let e = encode(&channel("203.0.113.50:7000"), 0x0102_0304_0506_0708).unwrap();
        let mut want = [0u8; 40];
        want[0..16].copy_from_slice(&mapped([198, 51, 100, 7]));
        want[16..32].copy_from_slice(&mapped([192, 0, 2, 1]));
        want[32..38].copy_from_slice(&[0x9c, 0x40, 0x0d, 0x96, 0x40, 0x01]);
        assert_eq!(e.channel, want);
        let mut peer = [0u8; 36];
        peer[0..16].copy_from_slice(&mapped([203, 0, 113, 50]));
        peer[16..32].copy_from_slice(&mapped([192, 0, 2, 2]));
        peer[32..36].copy_from_slice(&[0x1b, 0x58, 0xc3, 0x50]);
        assert_eq!(e.peer, peer);
        assert_eq!(e.channel_val[..36], peer);
        assert_eq!(e.channel_val[36..40], [0; 4], "padding");
        assert_eq!(
            e.channel_val[40..48],
            0x0102_0304_0506_0708u64.to_ne_bytes()
        );
        assert_eq!(e.peer_val[..40], e.channel);
        assert_eq!(e.peer_val[40..], e.channel_val[40..]);
        assert_eq!(e.alloc, e.channel[..36]);
    }

    #[test]
    fn ipv6_is_encoded_as_is() {
        let mut c = channel("[2001:db8::50]:7000");
        c.five_tuple.client = ClientSocket::new("[2001:db8:1::7]:40000".parse().unwrap());
        c.five_tuple.server = "[2001:db8:2::1]:3478".parse().unwrap();
        c.relay = RelayAddr::new("[2001:db8:2::2]:50000".parse().unwrap());
        let e = encode(&c, 1).unwrap();
        let ip = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
        assert_eq!(e.alloc[0..16], ip("2001:db8:1::7"));
        assert_eq!(e.alloc[16..32], ip("2001:db8:2::1"));
        assert_eq!(e.peer[0..16], ip("2001:db8::50"));
        assert_eq!(e.peer[16..32], ip("2001:db8:2::2"));
    }

    #[test]
    fn families_are_never_mixed() {
        // An IPv4 client with an IPv6 peer (RFC 8656's address families may differ): the
        // program would have to translate the IP header, so it is left to the sockets.
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
