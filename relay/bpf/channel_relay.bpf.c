// SPDX-License-Identifier: MIT OR GPL-2.0-only
//
// geoturn's kernel fast path for established TURN channels (RFC 8656 §12), IPv4 and IPv6.
//
// A TC (clsact ingress) program on the interfaces that carry the relay's listening and
// relayed addresses. It relays only what userspace installed in its maps:
//
// - ChannelData from a client's 5-tuple to the listening address, for a channel bound to a
//   permitted peer, leaves from the allocation's relayed address as plain UDP to the peer
//   (the 4-byte ChannelData header stripped);
// - a UDP datagram from that peer to the relayed address leaves from the listening address to
//   the client as ChannelData (the 4-byte header pushed; over UDP no padding is needed,
//   RFC 8656 §12.5).
//
// Client, listening address, relayed address and peer are all IPv4 or all IPv6: the program
// never translates between families (userspace never installs such a channel).
//
// Everything else passes up unchanged (TC_ACT_OK) to the relay's sockets, which stay the
// authority: STUN, Send/Data indications, unknown 5-tuples or channels, ChannelData whose
// length field does not match the datagram exactly (short, padded, or trailing bytes),
// fragments, IP options, IPv6 extension headers, GSO/GRO aggregates, datagrams whose checksum is still to be
// computed by a device, expired entries, packets the route lookup cannot place (no route,
// forwarding off, MTU exceeded). Per-allocation packet and byte rates are enforced
// here with the same token buckets userspace uses; a packet over either limit is dropped and
// counted, as userspace drops it.
//
// The license string is "Dual MIT/GPL" because bpf_fib_lookup is a GPL-only helper; this
// file alone is dual-licensed so the kernel accepts it (the rest of geoturn is Apache-2.0).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// Map sizes: the userspace side refuses (keeps in userspace) what does not fit, so these bound
// kernel memory, not correctness. The structs' layouts are mirrored in relay/src/offload/entry.rs.
#define MAX_CHANNELS 65536
#define MAX_ALLOCATIONS 16384

#define CHANNELDATA_HEADER 4
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define NS_PER_SEC 1000000000ULL
// A relayed datagram leaves as a datagram the relay sends itself: a fresh TTL.
#define RELAY_TTL 64

// All addresses and ports in network byte order, as they are in the packet. Addresses are
// IPv6; an IPv4 address is stored IPv4-mapped (::ffff:a.b.c.d), so one set of maps serves
// both families and a key never matches across them.

// An allocation: the client's 5-tuple (UDP, so the protocol is implied).
struct alloc_key {
	__be32 client_ip[4];
	__be32 listen_ip[4];
	__be16 client_port;
	__be16 listen_port;
};

// One channel of one allocation.
struct channel_key {
	struct alloc_key alloc;
	__be16 channel;
	__u16 pad;
};

struct channel_val {
	__be32 peer_ip[4];
	__be32 relay_ip[4];
	__be16 peer_port;
	__be16 relay_port;
	__u32 pad;
	// CLOCK_MONOTONIC (bpf_ktime_get_ns): the earliest of the binding's, the permission's and
	// the allocation's expiry. Past it, packets go up to userspace, which has the final word.
	__u64 expires_ns;
};

// A peer as seen at a relayed address.
struct peer_key {
	__be32 peer_ip[4];
	__be32 relay_ip[4];
	__be16 peer_port;
	__be16 relay_port;
};

struct peer_val {
	struct channel_key chan;
	__u64 expires_ns;
};

// Per channel, per CPU; payload bytes (the ChannelData header not counted), as userspace
// counts them.
struct counters {
	__u64 packets_to_peer;
	__u64 bytes_to_peer;
	__u64 packets_to_client;
	__u64 bytes_to_client;
	__u64 dropped_over_limit;
};

// Token buckets of one allocation, shared by its channels and both directions, as userspace's
// are. Tokens are scaled by NS_PER_SEC so refilling needs no division on the hot path.
struct limits {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 last_ns;
	__u64 byte_tokens;
	__u64 packet_tokens;
	// 0: no limit.
	__u64 bytes_per_sec;
	__u64 packets_per_sec;
	__u64 byte_burst;
	__u64 packet_burst;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_CHANNELS);
	__type(key, struct channel_key);
	__type(value, struct channel_val);
} channels SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_CHANNELS);
	__type(key, struct peer_key);
	__type(value, struct peer_val);
} peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MAX_CHANNELS);
	__type(key, struct channel_key);
	__type(value, struct counters);
} channel_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ALLOCATIONS);
	__type(key, struct alloc_key);
	__type(value, struct limits);
} allocation_limits SEC(".maps");

// Refills one bucket: `tokens` scaled by NS_PER_SEC, at most `burst` tokens.
static __always_inline __u64 refill(__u64 tokens, __u64 rate, __u64 burst, __u64 elapsed)
{
	__u64 cap = burst * NS_PER_SEC;
	// Past this much time the bucket is full whatever it held; checking first keeps
	// elapsed * rate from overflowing (userspace keeps burst * NS_PER_SEC within u64).
	if (elapsed >= cap / rate)
		return cap;
	tokens += elapsed * rate;
	return tokens < cap ? tokens : cap;
}

// Takes one packet of `bytes` from the allocation's buckets; false when either is spent
// (nothing is taken then).
static __always_inline int within_limits(struct channel_key *ck, __u64 bytes, __u64 now)
{
	struct limits *l = bpf_map_lookup_elem(&allocation_limits, &ck->alloc);
	if (!l)
		return 1;
	int ok = 1;
	bpf_spin_lock(&l->lock);
	__u64 elapsed = now > l->last_ns ? now - l->last_ns : 0;
	l->last_ns = now;
	if (l->packets_per_sec) {
		l->packet_tokens = refill(l->packet_tokens, l->packets_per_sec, l->packet_burst, elapsed);
		if (l->packet_tokens < NS_PER_SEC)
			ok = 0;
	}
	if (l->bytes_per_sec) {
		l->byte_tokens = refill(l->byte_tokens, l->bytes_per_sec, l->byte_burst, elapsed);
		if (l->byte_tokens < bytes * NS_PER_SEC)
			ok = 0;
	}
	if (ok) {
		if (l->packets_per_sec)
			l->packet_tokens -= NS_PER_SEC;
		if (l->bytes_per_sec)
			l->byte_tokens -= bytes * NS_PER_SEC;
	}
	bpf_spin_unlock(&l->lock);
	return ok;
}

static __always_inline struct counters *counters_of(struct channel_key *ck)
{
	struct counters *c = bpf_map_lookup_elem(&channel_counters, ck);
	if (c)
		return c;
	struct counters zero = {};
	// BPF_NOEXIST: another CPU may have created it meanwhile; either way look it up again.
	bpf_map_update_elem(&channel_counters, ck, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&channel_counters, ck);
}

#define FAMILY_INET 2
#define FAMILY_INET6 10

// What the program needs of a parsed datagram, for either family. Addresses as the maps hold
// them (IPv4-mapped for IPv4).
struct parsed {
	int v6;
	// Offset of the UDP header.
	__u32 l4;
	__be32 saddr[4];
	__be32 daddr[4];
	__be16 sport;
	__be16 dport;
	__be16 udp_len_be;
	__u16 udp_len;
	__u16 old_sum;
	__u8 old_ttl;
};

static __always_inline void copy_addr(__be32 dst[4], const __be32 src[4])
{
	dst[0] = src[0];
	dst[1] = src[1];
	dst[2] = src[2];
	dst[3] = src[3];
}

static __always_inline void map_v4(__be32 out[4], __be32 v4)
{
	out[0] = 0;
	out[1] = 0;
	out[2] = bpf_htonl(0xffff);
	out[3] = v4;
}

// Folds a 32-bit one's-complement sum to 16 bits.
static __always_inline __u16 fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

// The folded one's-complement sum of the UDP pseudo-header (addresses, protocol, length), in
// the byte order the checksum field is stored in.
static __always_inline __u16 pseudo_sum(const struct parsed *p)
{
	__u32 sum = bpf_htons(IPPROTO_UDP) + p->udp_len_be;
	int words = p->v6 ? 4 : 1;
	int first = 4 - words;
	for (int i = 0; i < 4; i++) {
		if (i < first)
			continue;
		sum += (p->saddr[i] >> 16) + (p->saddr[i] & 0xffff);
		sum += (p->daddr[i] >> 16) + (p->daddr[i] & 0xffff);
		sum = (sum & 0xffff) + (sum >> 16);
	}
	return fold(sum);
}

// Reads the IPv4 or IPv6 and UDP headers; 0 when the datagram is one the program may relay
// (see the file's comment for what is not).
static __always_inline int parse(struct __sk_buff *skb, struct parsed *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return -1;
	// Aggregates (GRO) would need per-segment rewriting.
	if (skb->gso_segs > 1 || skb->gso_size)
		return -1;
	struct udphdr *udp;
	__u32 l3_len;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return -1;
		// Options or fragments: rare on this path and not worth relaying here.
		if (ip->version != 4 || ip->ihl != 5 || ip->protocol != IPPROTO_UDP ||
		    (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
			return -1;
		udp = (void *)(ip + 1);
		if ((void *)(udp + 1) > end)
			return -1;
		l3_len = sizeof(struct iphdr);
		if (bpf_ntohs(ip->tot_len) != bpf_ntohs(udp->len) + l3_len)
			return -1;
		p->v6 = 0;
		map_v4(p->saddr, ip->saddr);
		map_v4(p->daddr, ip->daddr);
		p->old_ttl = ip->ttl;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return -1;
		// Extension headers (fragments among them): rare on this path; the stack decides.
		if (ip6->version != 6 || ip6->nexthdr != IPPROTO_UDP)
			return -1;
		udp = (void *)(ip6 + 1);
		if ((void *)(udp + 1) > end)
			return -1;
		l3_len = sizeof(struct ipv6hdr);
		if (ip6->payload_len != udp->len)
			return -1;
		// A zero UDP checksum is not allowed over IPv6 (RFC 8200 §8.1).
		if (udp->check == 0)
			return -1;
		p->v6 = 1;
		copy_addr(p->saddr, ip6->saddr.in6_u.u6_addr32);
		copy_addr(p->daddr, ip6->daddr.in6_u.u6_addr32);
		p->old_ttl = ip6->hop_limit;
	} else {
		return -1;
	}
	p->l4 = ETH_HLEN + l3_len;
	p->sport = udp->source;
	p->dport = udp->dest;
	p->udp_len_be = udp->len;
	p->udp_len = bpf_ntohs(udp->len);
	p->old_sum = udp->check;
	// The lengths must agree with the frame (no trailing bytes, no Ethernet padding):
	// otherwise the stack, which trims and checks, decides.
	if (p->udp_len < sizeof(struct udphdr) || skb->len != p->l4 + (__u32)p->udp_len)
		return -1;
	// A datagram sent by a process on this host (through a veth, say) may still await its
	// checksum (CHECKSUM_PARTIAL): the field holds only the pseudo-header's sum, and the
	// device will sum the rest from an offset that moves with the 4 bytes this program adds or
	// removes. The program cannot see that state, but it can see the field: a full checksum
	// equals the bare pseudo-header sum once in 65535 datagrams, and those few simply go up.
	if (p->old_sum == pseudo_sum(p))
		return -1;
	return 0;
}

// Where a datagram from `src` to `dst` of `tot_len` bytes (from the IP header on) leaves: the
// egress interface and the next hop's MAC, written into `fib`. 0 when the route lookup placed
// it, otherwise the packet goes up (no route, no neighbour yet, MTU exceeded: userspace's send
// resolves those).
static __always_inline int route(struct __sk_buff *skb, struct bpf_fib_lookup *fib, int v6,
				 const __be32 src[4], const __be32 dst[4], __u16 tot_len)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->l4_protocol = IPPROTO_UDP;
	fib->tot_len = tot_len;
	if (v6) {
		fib->family = FAMILY_INET6;
		copy_addr(fib->ipv6_src, src);
		copy_addr(fib->ipv6_dst, dst);
	} else {
		fib->family = FAMILY_INET;
		fib->ipv4_src = src[3];
		fib->ipv4_dst = dst[3];
	}
	// An input lookup from the interface the datagram arrived on. The kernel answers only
	// where forwarding is enabled on that interface (userspace checks before attaching), and
	// an output lookup is no way around it: it makes the same check and also pins the route
	// to the interface given.
	fib->ifindex = skb->ingress_ifindex;
	return bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
}

// Rewrites the IP header (addresses, length, TTL or hop limit, and over IPv4 the header
// checksum, incrementally) and the UDP header in place, for a UDP length of `udp_len` (after
// the ChannelData header was stripped or pushed).
static __always_inline int rewrite(struct __sk_buff *skb, const struct parsed *p,
				   const __be32 src[4], const __be32 dst[4], __be16 sport,
				   __be16 dport, __u16 udp_len)
{
	const int l3 = ETH_HLEN;
	if (p->v6) {
		__be16 plen = bpf_htons(udp_len);
		__u8 hops = RELAY_TTL;
		if (bpf_skb_store_bytes(skb, l3 + offsetof(struct ipv6hdr, saddr), src, 16, 0) ||
		    bpf_skb_store_bytes(skb, l3 + offsetof(struct ipv6hdr, daddr), dst, 16, 0) ||
		    bpf_skb_store_bytes(skb, l3 + offsetof(struct ipv6hdr, payload_len), &plen, 2,
					0) ||
		    bpf_skb_store_bytes(skb, l3 + offsetof(struct ipv6hdr, hop_limit), &hops, 1, 0))
			return -1;
	} else {
		const int ip_csum = l3 + offsetof(struct iphdr, check);
		__be32 old_src = p->saddr[3], old_dst = p->daddr[3];
		__be16 old_tot = bpf_htons(p->udp_len + sizeof(struct iphdr));
		__be16 tot = bpf_htons(udp_len + sizeof(struct iphdr));
		__u16 old_ttl_word = bpf_htons((__u16)p->old_ttl << 8 | IPPROTO_UDP);
		__u16 ttl_word = bpf_htons((__u16)RELAY_TTL << 8 | IPPROTO_UDP);
		if (bpf_skb_store_bytes(skb, l3 + offsetof(struct iphdr, saddr), &src[3], 4, 0) ||
		    bpf_skb_store_bytes(skb, l3 + offsetof(struct iphdr, daddr), &dst[3], 4, 0) ||
		    bpf_skb_store_bytes(skb, l3 + offsetof(struct iphdr, tot_len), &tot, 2, 0) ||
		    bpf_skb_store_bytes(skb, l3 + offsetof(struct iphdr, ttl), &ttl_word, 2, 0))
			return -1;
		if (bpf_l3_csum_replace(skb, ip_csum, old_src, src[3], 4) ||
		    bpf_l3_csum_replace(skb, ip_csum, old_dst, dst[3], 4) ||
		    bpf_l3_csum_replace(skb, ip_csum, old_tot, tot, 2) ||
		    bpf_l3_csum_replace(skb, ip_csum, old_ttl_word, ttl_word, 2))
			return -1;
	}
	// UDP header, written whole: after a strip its first bytes were removed, after a push it
	// moved. The checksum starts from the one the datagram arrived with.
	struct udphdr udp = {
		.source = sport,
		.dest = dport,
		.len = bpf_htons(udp_len),
		.check = p->old_sum,
	};
	if (bpf_skb_store_bytes(skb, p->v6 ? ETH_HLEN + sizeof(struct ipv6hdr)
					   : ETH_HLEN + sizeof(struct iphdr),
				&udp, sizeof(udp), 0))
		return -1;
	return 0;
}

// Adjusts the UDP checksum (already in the packet) for the new pseudo-header and ports;
// `extra_from`/`extra_to` account for the ChannelData header leaving or arriving (a removed
// word sums like a word replaced by zero: everything after it stays 2-byte aligned).
static __always_inline int fix_udp_csum(struct __sk_buff *skb, const struct parsed *p,
					const __be32 src[4], const __be32 dst[4], __be16 sport,
					__be16 dport, __u16 udp_len, __be32 extra_from,
					__be32 extra_to)
{
	const int off = (p->v6 ? ETH_HLEN + sizeof(struct ipv6hdr)
			       : ETH_HLEN + sizeof(struct iphdr)) +
			offsetof(struct udphdr, check);
	// A zero checksum means "none" over IPv4 (RFC 768): MARK_MANGLED_0 leaves it so, and
	// writes 0xffff where a real sum comes out as zero (over IPv6 zero never arrives here).
	const __u64 pseudo = BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0;
	const __u64 plain = BPF_F_MARK_MANGLED_0;
	__be16 old_len = p->udp_len_be, len = bpf_htons(udp_len);
	if (p->v6) {
		// All 32 bytes of both addresses, as one difference.
		__be32 from[8], to[8];
		copy_addr(from, p->saddr);
		copy_addr(from + 4, p->daddr);
		copy_addr(to, src);
		copy_addr(to + 4, dst);
		__s64 diff = bpf_csum_diff(from, sizeof(from), to, sizeof(to), 0);
		if (diff < 0 || bpf_l4_csum_replace(skb, off, 0, (__u32)diff, pseudo))
			return -1;
	} else if (bpf_l4_csum_replace(skb, off, p->saddr[3], src[3], pseudo | 4) ||
		   bpf_l4_csum_replace(skb, off, p->daddr[3], dst[3], pseudo | 4)) {
		return -1;
	}
	if (bpf_l4_csum_replace(skb, off, p->sport, sport, plain | 2) ||
	    bpf_l4_csum_replace(skb, off, p->dport, dport, plain | 2) ||
	    // The length is in the pseudo-header and in the UDP header itself.
	    bpf_l4_csum_replace(skb, off, old_len, len, pseudo | 2) ||
	    bpf_l4_csum_replace(skb, off, old_len, len, plain | 2) ||
	    bpf_l4_csum_replace(skb, off, extra_from, extra_to, plain | 4))
		return -1;
	return 0;
}

// Sends the rewritten datagram out of the interface the route lookup chose. With the next
// hop's MAC known (`routed` is SUCCESS) the Ethernet header is written here; without it
// (NO_NEIGH: nothing sent to that neighbour lately) the kernel's neighbour layer resolves it
// and holds the datagram meanwhile, as it would for a socket's send.
static __always_inline int send(struct __sk_buff *skb, struct bpf_fib_lookup *fib, int v6,
				int routed)
{
	if (routed == BPF_FIB_LKUP_RET_NO_NEIGH) {
		struct bpf_redir_neigh nh = {};
		if (v6) {
			nh.nh_family = FAMILY_INET6;
			copy_addr(nh.ipv6_nh, fib->ipv6_dst);
		} else {
			nh.nh_family = FAMILY_INET;
			nh.ipv4_nh = fib->ipv4_dst;
		}
		return bpf_redirect_neigh(fib->ifindex, &nh, sizeof(nh), 0);
	}
	if (bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_dest), fib->dmac, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_source), fib->smac, ETH_ALEN, 0))
		return TC_ACT_SHOT;
	return bpf_redirect(fib->ifindex, 0);
}

// Whether a route lookup's answer lets the datagram be relayed here.
static __always_inline int routable(int rc)
{
	return rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH;
}

SEC("classifier")
int channel_relay(struct __sk_buff *skb)
{
	struct parsed p;
	if (parse(skb, &p))
		return TC_ACT_OK;
	__u32 l3_len = p.l4 - ETH_HLEN;
	__u64 now = bpf_ktime_get_ns();
	struct bpf_fib_lookup fib;

	// Peer → client: a datagram to a relayed address from a peer with a channel.
	struct peer_key pk = {
		.peer_port = p.sport,
		.relay_port = p.dport,
	};
	copy_addr(pk.peer_ip, p.saddr);
	copy_addr(pk.relay_ip, p.daddr);
	struct peer_val *pv = bpf_map_lookup_elem(&peers, &pk);
	if (pv) {
		if (now >= pv->expires_ns)
			return TC_ACT_OK;
		struct channel_key ck = pv->chan;
		__u16 payload = p.udp_len - sizeof(struct udphdr);
		__u16 new_udp_len = p.udp_len + CHANNELDATA_HEADER;
		// The ChannelData length field is 16 bits and so are the IP lengths.
		if (new_udp_len < p.udp_len || new_udp_len + l3_len > 0xffff)
			return TC_ACT_OK;
		int routed = route(skb, &fib, p.v6, ck.alloc.listen_ip, ck.alloc.client_ip,
				   new_udp_len + l3_len);
		if (!routable(routed))
			return TC_ACT_OK;
		struct counters *c = counters_of(&ck);
		if (!within_limits(&ck, payload, now)) {
			if (c)
				c->dropped_over_limit++;
			return TC_ACT_SHOT;
		}
		// Room for the ChannelData header between the IP and UDP headers; the UDP header is
		// then rewritten 4 bytes earlier and the ChannelData header written after it.
		if (bpf_skb_adjust_room(skb, CHANNELDATA_HEADER, BPF_ADJ_ROOM_NET, 0))
			return TC_ACT_SHOT;
		__be32 cd = bpf_htonl((__u32)bpf_ntohs(ck.channel) << 16 | payload);
		if (rewrite(skb, &p, ck.alloc.listen_ip, ck.alloc.client_ip, ck.alloc.listen_port,
			    ck.alloc.client_port, new_udp_len) ||
		    bpf_skb_store_bytes(skb, p.l4 + sizeof(struct udphdr), &cd, 4, 0) ||
		    fix_udp_csum(skb, &p, ck.alloc.listen_ip, ck.alloc.client_ip,
				 ck.alloc.listen_port, ck.alloc.client_port, new_udp_len, 0, cd))
			return TC_ACT_SHOT;
		if (c) {
			c->packets_to_client++;
			c->bytes_to_client += payload;
		}
		return send(skb, &fib, p.v6, routed);
	}

	// Client → peer: ChannelData from a client's 5-tuple to the listening address. The
	// ChannelData header may lie past the linear part (receive paths may keep only the
	// headers there and the payload in page fragments: a NIC driver's header split, a GSO
	// send segmented in software on its way through a veth): read it wherever it is.
	__u8 hdr[CHANNELDATA_HEADER];
	if (p.udp_len < sizeof(struct udphdr) + CHANNELDATA_HEADER ||
	    bpf_skb_load_bytes(skb, p.l4 + sizeof(struct udphdr), hdr, sizeof(hdr)))
		return TC_ACT_OK;
	__u16 channel = (__u16)hdr[0] << 8 | hdr[1];
	__u16 length = (__u16)hdr[2] << 8 | hdr[3];
	// Bits 01 start ChannelData; anything else (STUN starts 00) is not ours.
	if ((channel & 0xc000) != 0x4000)
		return TC_ACT_OK;
	__u16 payload = p.udp_len - sizeof(struct udphdr) - CHANNELDATA_HEADER;
	if (length != payload)
		return TC_ACT_OK;
	struct channel_key ck = {
		.alloc = {
			.client_port = p.sport,
			.listen_port = p.dport,
		},
		.channel = bpf_htons(channel),
	};
	copy_addr(ck.alloc.client_ip, p.saddr);
	copy_addr(ck.alloc.listen_ip, p.daddr);
	struct channel_val *cv = bpf_map_lookup_elem(&channels, &ck);
	if (!cv || now >= cv->expires_ns)
		return TC_ACT_OK;
	__be32 relay_ip[4], peer_ip[4];
	copy_addr(relay_ip, cv->relay_ip);
	copy_addr(peer_ip, cv->peer_ip);
	__be16 relay_port = cv->relay_port, peer_port = cv->peer_port;
	__u16 new_udp_len = p.udp_len - CHANNELDATA_HEADER;
	int routed = route(skb, &fib, p.v6, relay_ip, peer_ip, new_udp_len + l3_len);
	if (!routable(routed))
		return TC_ACT_OK;
	struct counters *c = counters_of(&ck);
	if (!within_limits(&ck, payload, now)) {
		if (c)
			c->dropped_over_limit++;
		return TC_ACT_SHOT;
	}
	__be32 cd = bpf_htonl((__u32)channel << 16 | length);
	// Removes the first 4 bytes after the IP header; the UDP header is rewritten whole over
	// what remains of it and the ChannelData header.
	if (bpf_skb_adjust_room(skb, -CHANNELDATA_HEADER, BPF_ADJ_ROOM_NET, 0) ||
	    rewrite(skb, &p, relay_ip, peer_ip, relay_port, peer_port, new_udp_len) ||
	    fix_udp_csum(skb, &p, relay_ip, peer_ip, relay_port, peer_port, new_udp_len, cd, 0))
		return TC_ACT_SHOT;
	if (c) {
		c->packets_to_peer++;
		c->bytes_to_peer += payload;
	}
	return send(skb, &fib, p.v6, routed);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
