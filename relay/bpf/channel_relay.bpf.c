// SPDX-License-Identifier: MIT OR GPL-2.0-only
//
// geoturn's kernel fast path for established TURN channels (RFC 8656 §12), IPv4 only.
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
// Everything else passes up unchanged (TC_ACT_OK) to the relay's sockets, which stay the
// authority: STUN, Send/Data indications, unknown 5-tuples or channels, ChannelData whose
// length field does not match the datagram exactly (short, padded, or trailing bytes),
// fragments, IP options, IPv6, GSO/GRO aggregates, datagrams whose checksum is still to be
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
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// Map sizes: the userspace side refuses (keeps in userspace) what does not fit, so these bound
// kernel memory, not correctness. Keep in step with relay/src/offload/maps.rs.
#define MAX_CHANNELS 65536
#define MAX_ALLOCATIONS 16384

#define CHANNELDATA_HEADER 4
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define NS_PER_SEC 1000000000ULL
// A relayed datagram leaves as a datagram the relay sends itself: a fresh TTL.
#define RELAY_TTL 64

// All addresses and ports in network byte order, as they are in the packet.

// An allocation: the client's 5-tuple (UDP, so the protocol is implied).
struct alloc_key {
	__be32 client_ip;
	__be32 listen_ip;
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
	__be32 peer_ip;
	__be32 relay_ip;
	__be16 peer_port;
	__be16 relay_port;
	__u32 pad;
	// CLOCK_MONOTONIC (bpf_ktime_get_ns): the earliest of the binding's, the permission's and
	// the allocation's expiry. Past it, packets go up to userspace, which has the final word.
	__u64 expires_ns;
};

// A peer as seen at a relayed address.
struct peer_key {
	__be32 peer_ip;
	__be32 relay_ip;
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

// Where a datagram from `src` to `dst` of `tot_len` bytes leaves: the egress interface and the
// next hop's MAC, written into `fib`. 0 when the route lookup placed it, otherwise the packet
// goes up (no route, no neighbour yet, MTU exceeded: userspace's send resolves those).
static __always_inline int route(struct __sk_buff *skb, struct bpf_fib_lookup *fib, __be32 src,
				 __be32 dst, __u16 tot_len)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = 2; // AF_INET
	fib->l4_protocol = IPPROTO_UDP;
	fib->tot_len = tot_len;
	fib->ipv4_src = src;
	fib->ipv4_dst = dst;
	// An input lookup from the interface the datagram arrived on. The kernel answers only
	// where forwarding is enabled on that interface (userspace checks before attaching), and
	// an output lookup is no way around it: it makes the same check and also pins the route
	// to the interface given.
	fib->ifindex = skb->ingress_ifindex;
	return bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
}

// Rewrites the IPv4 header (addresses, total length, TTL, checksum) and the UDP header in place
// at `l3`, with incremental checksums. `old_udp_len` is the UDP length before the ChannelData
// header was stripped or pushed.
static __always_inline int rewrite(struct __sk_buff *skb, __be32 old_src, __be32 old_dst,
				   __be32 src, __be32 dst, __be16 sport, __be16 dport,
				   __u16 old_udp_len, __u16 udp_len, __u16 old_sum, __u8 old_ttl)
{
	const int l3 = ETH_HLEN;
	const int ip_csum = l3 + offsetof(struct iphdr, check);
	__be16 old_tot = bpf_htons(old_udp_len + sizeof(struct iphdr));
	__be16 tot = bpf_htons(udp_len + sizeof(struct iphdr));
	__u16 old_ttl_word = bpf_htons((__u16)old_ttl << 8 | IPPROTO_UDP);
	__u16 ttl_word = bpf_htons((__u16)RELAY_TTL << 8 | IPPROTO_UDP);

	// IPv4 header: addresses, total length, TTL.
	if (bpf_skb_store_bytes(skb, l3 + offsetof(struct iphdr, saddr), &src, 4, 0) ||
	    bpf_skb_store_bytes(skb, l3 + offsetof(struct iphdr, daddr), &dst, 4, 0) ||
	    bpf_skb_store_bytes(skb, l3 + offsetof(struct iphdr, tot_len), &tot, 2, 0) ||
	    bpf_skb_store_bytes(skb, l3 + offsetof(struct iphdr, ttl), &ttl_word, 2, 0))
		return -1;
	if (bpf_l3_csum_replace(skb, ip_csum, old_src, src, 4) ||
	    bpf_l3_csum_replace(skb, ip_csum, old_dst, dst, 4) ||
	    bpf_l3_csum_replace(skb, ip_csum, old_tot, tot, 2) ||
	    bpf_l3_csum_replace(skb, ip_csum, old_ttl_word, ttl_word, 2))
		return -1;

	// UDP header, written whole: after a strip its first bytes were removed, after a push it
	// moved. The checksum starts from the one the datagram arrived with.
	struct udphdr udp = {
		.source = sport,
		.dest = dport,
		.len = bpf_htons(udp_len),
		.check = old_sum,
	};
	if (bpf_skb_store_bytes(skb, l3 + sizeof(struct iphdr), &udp, sizeof(udp), 0))
		return -1;
	return 0;
}

// Adjusts the UDP checksum (already in the packet) for the new pseudo-header and ports;
// `extra_from`/`extra_to` account for the ChannelData header leaving or arriving (a removed
// word sums like a word replaced by zero: everything after it stays 2-byte aligned).
static __always_inline int fix_udp_csum(struct __sk_buff *skb, __be32 old_src, __be32 old_dst,
					__be32 src, __be32 dst, __be16 old_sport, __be16 old_dport,
					__be16 sport, __be16 dport, __u16 old_udp_len, __u16 udp_len,
					__be32 extra_from, __be32 extra_to)
{
	const int off = ETH_HLEN + sizeof(struct iphdr) + offsetof(struct udphdr, check);
	// A zero checksum means "none" over IPv4 (RFC 768): MARK_MANGLED_0 leaves it so, and
	// writes 0xffff where a real sum comes out as zero.
	const __u64 pseudo = BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0;
	const __u64 plain = BPF_F_MARK_MANGLED_0;
	__be16 old_len = bpf_htons(old_udp_len), len = bpf_htons(udp_len);
	if (bpf_l4_csum_replace(skb, off, old_src, src, pseudo | 4) ||
	    bpf_l4_csum_replace(skb, off, old_dst, dst, pseudo | 4) ||
	    bpf_l4_csum_replace(skb, off, old_sport, sport, plain | 2) ||
	    bpf_l4_csum_replace(skb, off, old_dport, dport, plain | 2) ||
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
static __always_inline int send(struct __sk_buff *skb, struct bpf_fib_lookup *fib, int routed)
{
	if (routed == BPF_FIB_LKUP_RET_NO_NEIGH) {
		struct bpf_redir_neigh nh = {
			.nh_family = 2, // AF_INET
			.ipv4_nh = fib->ipv4_dst,
		};
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

// The folded one's-complement sum of the UDP pseudo-header (addresses, protocol, length), in
// the byte order the checksum field is stored in.
static __always_inline __u16 pseudo_sum(__be32 saddr, __be32 daddr, __be16 len)
{
	__u32 sum = (saddr >> 16) + (saddr & 0xffff) + (daddr >> 16) + (daddr & 0xffff) +
		    bpf_htons(IPPROTO_UDP) + len;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

SEC("classifier")
int channel_relay(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return TC_ACT_OK;
	// Options or fragments: rare on this path and not worth relaying here.
	if (ip->version != 4 || ip->ihl != 5 || ip->protocol != IPPROTO_UDP ||
	    (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		return TC_ACT_OK;
	// Aggregates (GRO) would need per-segment rewriting.
	if (skb->gso_segs > 1 || skb->gso_size)
		return TC_ACT_OK;
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return TC_ACT_OK;
	__u16 tot_len = bpf_ntohs(ip->tot_len);
	__u16 udp_len = bpf_ntohs(udp->len);
	// The IP and UDP lengths must agree with each other and with the frame (no trailing bytes,
	// no Ethernet padding): otherwise the stack, which trims and checks, decides.
	if (udp_len < sizeof(struct udphdr) || tot_len != udp_len + sizeof(struct iphdr) ||
	    skb->len != ETH_HLEN + (__u32)tot_len)
		return TC_ACT_OK;

	__be32 saddr = ip->saddr, daddr = ip->daddr;
	__be16 sport = udp->source, dport = udp->dest;
	__u16 old_sum = udp->check;
	// A datagram sent by a process on this host (through a veth, say) may still await its
	// checksum (CHECKSUM_PARTIAL): the field holds only the pseudo-header's sum, and the
	// device will sum the rest from an offset that moves with the 4 bytes this program adds or
	// removes. The program cannot see that state, but it can see the field: a full checksum
	// equals the bare pseudo-header sum once in 65535 datagrams, and those few simply go up.
	if (old_sum == pseudo_sum(saddr, daddr, udp->len))
		return TC_ACT_OK;
	__u8 old_ttl = ip->ttl;
	__u64 now = bpf_ktime_get_ns();
	struct bpf_fib_lookup fib;

	// Peer → client: a datagram to a relayed address from a peer with a channel.
	struct peer_key pk = {
		.peer_ip = saddr,
		.relay_ip = daddr,
		.peer_port = sport,
		.relay_port = dport,
	};
	struct peer_val *pv = bpf_map_lookup_elem(&peers, &pk);
	if (pv) {
		if (now >= pv->expires_ns)
			return TC_ACT_OK;
		struct channel_key ck = pv->chan;
		__u16 payload = udp_len - sizeof(struct udphdr);
		__u16 new_udp_len = udp_len + CHANNELDATA_HEADER;
		// The ChannelData length field is 16 bits and so is the IP total length.
		if (new_udp_len < udp_len || new_udp_len + sizeof(struct iphdr) > 0xffff)
			return TC_ACT_OK;
		int routed = route(skb, &fib, ck.alloc.listen_ip, ck.alloc.client_ip,
				   new_udp_len + sizeof(struct iphdr));
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
		if (rewrite(skb, saddr, daddr, ck.alloc.listen_ip, ck.alloc.client_ip,
			    ck.alloc.listen_port, ck.alloc.client_port, udp_len, new_udp_len, old_sum,
			    old_ttl) ||
		    bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(struct iphdr) + sizeof(struct udphdr),
					&cd, 4, 0) ||
		    fix_udp_csum(skb, saddr, daddr, ck.alloc.listen_ip, ck.alloc.client_ip, sport,
				 dport, ck.alloc.listen_port, ck.alloc.client_port, udp_len,
				 new_udp_len, 0, cd))
			return TC_ACT_SHOT;
		if (c) {
			c->packets_to_client++;
			c->bytes_to_client += payload;
		}
		return send(skb, &fib, routed);
	}

	// Client → peer: ChannelData from a client's 5-tuple to the listening address.
	__u8 *hdr = (void *)(udp + 1);
	if ((void *)(hdr + CHANNELDATA_HEADER) > end) {
		// The ChannelData header is past the linear part: receive paths may keep only the
		// headers there and the payload in page fragments (a NIC driver's header split, a
		// GSO send segmented in software on its way through a veth). Make it linear; the
		// pull invalidates every packet pointer, so they are taken again.
		__u32 need = ETH_HLEN + sizeof(struct iphdr) + sizeof(struct udphdr) + CHANNELDATA_HEADER;
		if (skb->len < need || bpf_skb_pull_data(skb, need))
			return TC_ACT_OK;
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
		hdr = data + ETH_HLEN + sizeof(struct iphdr) + sizeof(struct udphdr);
		if ((void *)(hdr + CHANNELDATA_HEADER) > end)
			return TC_ACT_OK;
	}
	__u16 channel = (__u16)hdr[0] << 8 | hdr[1];
	__u16 length = (__u16)hdr[2] << 8 | hdr[3];
	// Bits 01 start ChannelData; anything else (STUN starts 00) is not ours.
	if ((channel & 0xc000) != 0x4000)
		return TC_ACT_OK;
	__u16 payload = udp_len - sizeof(struct udphdr) - CHANNELDATA_HEADER;
	if (udp_len < sizeof(struct udphdr) + CHANNELDATA_HEADER || length != payload)
		return TC_ACT_OK;
	struct channel_key ck = {
		.alloc = {
			.client_ip = saddr,
			.listen_ip = daddr,
			.client_port = sport,
			.listen_port = dport,
		},
		.channel = bpf_htons(channel),
	};
	struct channel_val *cv = bpf_map_lookup_elem(&channels, &ck);
	if (!cv || now >= cv->expires_ns)
		return TC_ACT_OK;
	__be32 relay_ip = cv->relay_ip, peer_ip = cv->peer_ip;
	__be16 relay_port = cv->relay_port, peer_port = cv->peer_port;
	__u16 new_udp_len = udp_len - CHANNELDATA_HEADER;
	int routed = route(skb, &fib, relay_ip, peer_ip, new_udp_len + sizeof(struct iphdr));
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
	    rewrite(skb, saddr, daddr, relay_ip, peer_ip, relay_port, peer_port, udp_len,
		    new_udp_len, old_sum, old_ttl) ||
	    fix_udp_csum(skb, saddr, daddr, relay_ip, peer_ip, sport, dport, relay_port, peer_port,
			 udp_len, new_udp_len, cd, 0))
		return TC_ACT_SHOT;
	if (c) {
		c->packets_to_peer++;
		c->bytes_to_peer += payload;
	}
	return send(skb, &fib, routed);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
