//! Which peer addresses a relay will send to: refuses loopback, private, link-local (cloud
//! metadata at 169.254.169.254), multicast and other non-public ranges by default, including
//! their IPv4-mapped, IPv4-compatible, NAT64, 6to4 and Teredo IPv6 spellings (the
//! CVE-2020-26262 class: a deny list checked only on the literal form is bypassed by `::ffff:127.0.0.1`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// IPv4 ranges refused unless allowed explicitly.
const DEFAULT_DENIED_V4: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8),      // "this network", unspecified
    (Ipv4Addr::new(10, 0, 0, 0), 8),     // RFC 1918
    (Ipv4Addr::new(100, 64, 0, 0), 10),  // CGNAT, RFC 6598
    (Ipv4Addr::new(127, 0, 0, 0), 8),    // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16), // link-local, cloud metadata
    (Ipv4Addr::new(172, 16, 0, 0), 12),  // RFC 1918
    (Ipv4Addr::new(192, 0, 0, 0), 24),   // IETF protocol assignments
    (Ipv4Addr::new(192, 168, 0, 0), 16), // RFC 1918
    (Ipv4Addr::new(198, 18, 0, 0), 15),  // benchmarking
    (Ipv4Addr::new(224, 0, 0, 0), 4),    // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4),    // reserved, limited broadcast
];

/// IPv6 ranges refused unless allowed explicitly.
const DEFAULT_DENIED_V6: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::UNSPECIFIED, 128),
    (Ipv6Addr::LOCALHOST, 128),
    (Ipv6Addr::new(0x0100, 0, 0, 0, 0, 0, 0, 0), 64), // discard-only
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),  // unique local
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10), // link-local
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10), // site-local (deprecated)
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),  // multicast
];

/// Why a peer was refused (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// In a range denied by default (loopback, private, …).
    DefaultDenied,
    /// In an operator's `--deny-peer` range.
    OperatorDenied,
}

/// The peer address policy.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    /// Skip the default deny list entirely (operators on private networks).
    pub allow_all_by_default: bool,
}

impl PeerPolicy {
    /// A policy with the default deny list, plus `allow` exemptions and `deny` additions.
    /// An explicit deny wins over an explicit allow.
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> Self {
        Self {
            allow,
            deny,
            allow_all_by_default: false,
        }
    }

    /// Decides whether relaying to `ip` is allowed.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        // Check the literal form and every IPv4 address it embeds; refuse if any is refused.
        let embedded = embedded_ipv4(ip);
        let forms = std::iter::once(ip).chain(embedded.map(IpAddr::V4));
        let mut verdict = Ok(());
        for form in forms {
            if self.deny.iter().any(|n| n.contains(&form)) {
                return Err(Refusal::OperatorDenied);
            }
            if self.allow.iter().any(|n| n.contains(&form)) {
                continue;
            }
            if !self.allow_all_by_default && default_denied(form) {
                verdict = Err(Refusal::DefaultDenied);
            }
        }
        verdict
    }
}

fn default_denied(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => DEFAULT_DENIED_V4
            .iter()
            .any(|&(net, len)| in_v4(v4, net, len)),
        IpAddr::V6(v6) => DEFAULT_DENIED_V6
            .iter()
            .any(|&(net, len)| in_v6(v6, net, len)),
    }
}

fn in_v4(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

/// The IPv4 address an IPv6 address stands for, in any of the transition forms.
pub fn embedded_ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else {
        return None;
    };
    let bits = u128::from(v6);
    let low32 = Ipv4Addr::from((bits & 0xFFFF_FFFF) as u32);
    let seg = v6.segments();
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4); // ::ffff:a.b.c.d
    }
    if bits >> 32 == 0 && bits > 1 {
        return Some(low32); // ::a.b.c.d (IPv4-compatible); ::, ::1 are IPv6 themselves
    }
    if in_v6(v6, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96)
        || in_v6(v6, Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48)
    {
        return Some(low32); // NAT64 well-known and local-use prefixes
    }
    if seg[0] == 0x2002 {
        // 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
        return Some(Ipv4Addr::from(((bits >> 80) & 0xFFFF_FFFF) as u32));
    }
    if seg[0] == 0x2001 && seg[1] == 0 {
        // Teredo: the client's IPv4 address is the last 32 bits, inverted.
        return Some(Ipv4Addr::from(!((bits & 0xFFFF_FFFF) as u32)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_internal_ranges_in_every_spelling() {
        let p = PeerPolicy::default();
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::c0a8:101",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "2001:0:4136:e378:8000:63bf:80ff:fffe", // Teredo for 127.0.0.1
        ] {
            assert!(p.check(ip(s)).is_err(), "{s} should be refused");
        }
    }

    #[test]
    fn allows_public_addresses() {
        let p = PeerPolicy::default();
        for s in [
            "8.8.8.8",
            "203.0.113.7",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(p.check(ip(s)).is_ok(), "{s} should be allowed");
        }
    }

    #[test]
    fn operator_lists() {
        let p = PeerPolicy::new(
            vec![
                "127.0.0.0/8".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ],
            vec![
                "10.9.0.0/16".parse().unwrap(),
                "8.8.8.0/24".parse().unwrap(),
            ],
        );
        assert!(p.check(ip("127.0.0.1")).is_ok());
        assert!(p.check(ip("::ffff:127.0.0.1")).is_ok());
        assert!(p.check(ip("10.1.0.1")).is_ok());
        assert_eq!(p.check(ip("10.9.0.1")), Err(Refusal::OperatorDenied));
        assert_eq!(p.check(ip("8.8.8.8")), Err(Refusal::OperatorDenied));
        assert_eq!(p.check(ip("::ffff:8.8.8.8")), Err(Refusal::OperatorDenied));
        assert_eq!(p.check(ip("192.168.0.1")), Err(Refusal::DefaultDenied));
    }
}
