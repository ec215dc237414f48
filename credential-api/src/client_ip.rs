//! Which client address an HTTP request is for, behind zero or more reverse proxies.
//!
//! The credential API ranks relays by the client's location and rate-limits per client, so it
//! needs the client's address rather than the load balancer's. `X-Forwarded-For` carries that
//! address, but anyone can send the header: only entries appended by proxies we run (the
//! `trusted` networks) can be believed, so the walk starts at the socket's peer and moves left
//! only while each hop is one of ours. The first address a trusted hop vouches for that is not
//! itself trusted is the client; anything left of it was written by the client and is ignored.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// How many `X-Forwarded-For` entries [`client_ip`] looks at, at most.
///
/// Counted from the right, empty ones included, so a request cannot make the walk arbitrarily
/// long. No real deployment chains anywhere near this many proxies of its own.
pub const MAX_FORWARDED_ENTRIES: usize = 32;

/// The client address of an HTTP request.
///
/// `peer` is the socket's remote address; `forwarded_for` holds the raw value of every
/// `X-Forwarded-For` header line in the order received (each a comma-separated list); `trusted`
/// are the networks of our own proxies.
///
/// - If `peer` is not trusted, it is the client and the header is ignored (it may be forged).
/// - Otherwise the entries are walked from the right (nearest hop first), skipping trusted
///   addresses; the first untrusted one is the client.
/// - If an entry does not parse, the walk stops there and the hop to its right is returned:
///   an unparsable value is never believed, and nothing left of it either, since a trusted proxy
///   would not have written it.
/// - If every entry is trusted (or there are none, or the [`MAX_FORWARDED_ENTRIES`] limit is
///   reached), the leftmost trusted hop seen is returned.
///
/// Entries may carry a port (`203.0.113.7:1234`, `[2001:db8::1]:443`) and surrounding spaces.
/// IPv4-mapped IPv6 addresses (`::ffff:203.0.113.7`), in entries and in `peer`, are treated as
/// the IPv4 address they carry, so trusted IPv4 networks match dual-stack sockets; write trusted
/// IPv4 proxies as IPv4 networks.
#[must_use]
pub fn client_ip(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |addr: &IpAddr| trusted.iter().any(|net| net.contains(addr));

    let mut hop = peer.to_canonical();
    if !is_trusted(&hop) {
        return hop;
    }
    // Later header lines were appended by later (nearer) hops, and within a line the rightmost
    // entry is the nearest, so reversing both gives nearest-first order.
    let entries = forwarded_for
        .iter()
        .rev()
        .flat_map(|line| line.rsplit(','))
        .take(MAX_FORWARDED_ENTRIES);
    for entry in entries {
        let entry = entry.trim_matches([' ', '\t']);
        if entry.is_empty() {
            // HTTP list syntax allows empty elements ("a, , b", or an empty header line); they
            // name no hop, so they neither stop the walk nor count as a client.
            continue;
        }
        let Some(addr) = parse_entry(entry) else {
            return hop;
        };
        if !is_trusted(&addr) {
            return addr;
        }
        hop = addr;
    }
    hop
}

/// One `X-Forwarded-For` entry: a bare address, `IPv4:port` or `[IPv6]:port` (some proxies add
/// the client's source port), canonicalised so mapped IPv4 addresses come back as IPv4.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(addr) = entry.parse::<IpAddr>() {
        return Some(addr.to_canonical());
    }
    let addr = if let Some(rest) = entry.strip_prefix('[') {
        // Brackets are how IPv6 is written with a port; `[addr]` alone is accepted as well.
        let (inside, after) = rest.split_once(']')?;
        if !after.is_empty() && !after.strip_prefix(':').is_some_and(is_port) {
            return None;
        }
        IpAddr::V6(inside.parse::<Ipv6Addr>().ok()?)
    } else {
        // A bare IPv6 address with a port would be ambiguous, so only IPv4 may carry one
        // unbracketed (a second colon fails the port check).
        let (host, port) = entry.split_once(':')?;
        if !is_port(port) {
            return None;
        }
        IpAddr::V4(host.parse::<Ipv4Addr>().ok()?)
    };
    Some(addr.to_canonical())
}

/// Whether `text` is a decimal port number.
fn is_port(text: &str) -> bool {
    // `u16::from_str` alone would also accept a leading `+`.
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && text.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    /// Our load balancers: `10.0.0.0/8` and `fd00::/8`.
    fn ours() -> Vec<IpNet> {
        nets(&["10.0.0.0/8", "fd00::/8"])
    }

    #[test]
    fn untrusted_peer_ignores_forwarded_for() {
        // A client talking to us directly can write whatever it likes in the header.
        let got = client_ip(ip("198.51.100.9"), &["203.0.113.7"], &ours());
        assert_eq!(got, ip("198.51.100.9"));
        let got = client_ip(ip("198.51.100.9"), &["10.0.0.1"], &ours());
        assert_eq!(got, ip("198.51.100.9"));
    }

    #[test]
    fn no_trusted_networks_means_peer() {
        let got = client_ip(ip("10.0.0.1"), &["203.0.113.7"], &[]);
        assert_eq!(got, ip("10.0.0.1"));
    }

    #[test]
    fn trusted_peer_uses_rightmost_untrusted_entry() {
        // The client forged "1.2.3.4"; our proxy appended the real source address on the right.
        let got = client_ip(ip("10.0.0.1"), &["1.2.3.4, 203.0.113.7"], &ours());
        assert_eq!(got, ip("203.0.113.7"));
    }

    #[test]
    fn chain_of_trusted_proxies() {
        let got = client_ip(
            ip("10.0.0.1"),
            &["1.2.3.4, 203.0.113.7, 10.1.1.1, 10.2.2.2"],
            &ours(),
        );
        assert_eq!(got, ip("203.0.113.7"));
    }

    #[test]
    fn every_hop_trusted_returns_leftmost_hop() {
        let got = client_ip(ip("10.0.0.1"), &["10.3.3.3, 10.2.2.2"], &ours());
        assert_eq!(got, ip("10.3.3.3"));
    }

    #[test]
    fn garbage_entry_stops_the_walk() {
        // "unknown" is not an address; the hop to its right (10.2.2.2) vouched for it, so the
        // answer is that hop, and nothing further left (1.2.3.4) is believed.
        let got = client_ip(ip("10.0.0.1"), &["1.2.3.4, unknown, 10.2.2.2"], &ours());
        assert_eq!(got, ip("10.2.2.2"));
        // Garbage as the nearest entry: the peer itself.
        let got = client_ip(ip("10.0.0.1"), &["1.2.3.4, 203.0.113.7 x"], &ours());
        assert_eq!(got, ip("10.0.0.1"));
        for bad in [
            "203.0.113.7:",
            "203.0.113.7:+80",
            "203.0.113.7:65536",
            "203.0.113.7:80:80",
            "[2001:db8::1",
            "[2001:db8::1]x",
            "[2001:db8::1]:",
            "[203.0.113.7]",
            "2001:db8::1:443x",
            "fe80::1%eth0",
            "\"203.0.113.7\"",
            "999.0.0.1",
        ] {
            let got = client_ip(ip("10.0.0.1"), &[bad], &ours());
            assert_eq!(got, ip("10.0.0.1"), "{bad:?}");
        }
    }

    #[test]
    fn entries_with_ports() {
        let got = client_ip(ip("10.0.0.1"), &["203.0.113.7:1234"], &ours());
        assert_eq!(got, ip("203.0.113.7"));
        let got = client_ip(ip("10.0.0.1"), &["[2001:db8::1]:443"], &ours());
        assert_eq!(got, ip("2001:db8::1"));
        let got = client_ip(ip("10.0.0.1"), &["[2001:db8::1]"], &ours());
        assert_eq!(got, ip("2001:db8::1"));
        // A trusted hop with a port is skipped like any other trusted hop.
        let got = client_ip(ip("10.0.0.1"), &["203.0.113.7, 10.2.2.2:8080"], &ours());
        assert_eq!(got, ip("203.0.113.7"));
    }

    #[test]
    fn ipv6() {
        let got = client_ip(ip("fd00::1"), &["2001:db8::7, fd00::2"], &ours());
        assert_eq!(got, ip("2001:db8::7"));
        // An unbracketed IPv6 address is an address, never "address:port".
        let got = client_ip(ip("fd00::1"), &["2001:db8::1:443"], &ours());
        assert_eq!(got, ip("2001:db8::1:443"));
        // Untrusted IPv6 peer.
        let got = client_ip(ip("2001:db8::9"), &["203.0.113.7"], &ours());
        assert_eq!(got, ip("2001:db8::9"));
    }

    #[test]
    fn mapped_addresses_normalise_to_ipv4() {
        // A dual-stack socket reports our IPv4 proxy as ::ffff:10.0.0.1; it is still trusted.
        let got = client_ip(ip("::ffff:10.0.0.1"), &["::ffff:203.0.113.7"], &ours());
        assert_eq!(got, ip("203.0.113.7"));
        let got = client_ip(ip("::ffff:10.0.0.1"), &["[::ffff:203.0.113.7]:99"], &ours());
        assert_eq!(got, ip("203.0.113.7"));
        // Mapped trusted hops are skipped.
        let got = client_ip(ip("10.0.0.1"), &["203.0.113.7, ::ffff:10.2.2.2"], &ours());
        assert_eq!(got, ip("203.0.113.7"));
        // An untrusted mapped peer comes back as IPv4 too.
        let got = client_ip(ip("::ffff:198.51.100.9"), &[], &ours());
        assert_eq!(got, ip("198.51.100.9"));
    }

    #[test]
    fn multiple_header_lines() {
        // Lines are in order received: the last line's last entry is the nearest hop.
        let got = client_ip(
            ip("10.0.0.1"),
            &["1.2.3.4, 203.0.113.7", "10.2.2.2", "10.3.3.3, 10.4.4.4"],
            &ours(),
        );
        assert_eq!(got, ip("203.0.113.7"));
        let got = client_ip(ip("10.0.0.1"), &["1.2.3.4", "203.0.113.7"], &ours());
        assert_eq!(got, ip("203.0.113.7"));
    }

    #[test]
    fn empty_header() {
        assert_eq!(client_ip(ip("10.0.0.1"), &[], &ours()), ip("10.0.0.1"));
        assert_eq!(client_ip(ip("10.0.0.1"), &[""], &ours()), ip("10.0.0.1"));
        assert_eq!(
            client_ip(ip("10.0.0.1"), &[" , ,"], &ours()),
            ip("10.0.0.1")
        );
        // Empty elements and lines are skipped, not treated as garbage.
        let got = client_ip(
            ip("10.0.0.1"),
            &["203.0.113.7,,", "", "\t10.2.2.2 "],
            &ours(),
        );
        assert_eq!(got, ip("203.0.113.7"));
    }

    #[test]
    fn walk_is_bounded() {
        // 40 trusted hops between the client and us: the client is out of reach, so the walk
        // ends at the leftmost hop it looked at (the 32nd from the right).
        let hops: Vec<String> = (1..=40).map(|i| format!("10.0.0.{i}")).collect();
        let line = format!("203.0.113.7, {}", hops.join(", "));
        let got = client_ip(ip("10.0.0.100"), &[&line], &ours());
        assert_eq!(got, ip("10.0.0.9"));
        // Exactly at the limit the client is still found; one hop more and it is not.
        let line = format!("203.0.113.7, {}", hops[9..].join(", "));
        assert_eq!(line.split(',').count(), MAX_FORWARDED_ENTRIES);
        let got = client_ip(ip("10.0.0.100"), &[&line], &ours());
        assert_eq!(got, ip("203.0.113.7"));
        let line = format!("203.0.113.7, {}", hops[8..].join(", "));
        let got = client_ip(ip("10.0.0.100"), &[&line], &ours());
        assert_eq!(got, ip("10.0.0.9"));
    }
}
