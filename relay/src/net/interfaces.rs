//! The host's interface addresses: a usable local address when the relay listens on a
//! wildcard address, and every address of the host, which the relay must not relay to (see
//! `server/own.rs` in the core).
#![allow(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One interface address.
#[derive(Debug, Clone)]
struct InterfaceAddr {
    /// The interface's name (e.g. `eth0`).
    name: String,
    ip: IpAddr,
    up: bool,
    loopback: bool,
}

/// Every IPv4 and IPv6 address of the host's interfaces (empty if they cannot be listed).
fn list() -> Vec<InterfaceAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned and has not been freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr of the family it names.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let ip = if family == libc::AF_INET {
            // SAFETY: the family is AF_INET, so the sockaddr is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
        } else if family == libc::AF_INET6 {
            // SAFETY: the family is AF_INET6, so the sockaddr is a sockaddr_in6.
            let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
            IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
        } else {
            continue;
        };
        // SAFETY: ifa_name is a NUL-terminated string owned by the list, valid until freed.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        out.push(InterfaceAddr {
            name,
            ip,
            up: ifa.ifa_flags & (libc::IFF_UP as u32) != 0,
            loopback: ifa.ifa_flags & (libc::IFF_LOOPBACK as u32) != 0,
        });
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// The first IPv4 address of an interface that is up and not loopback.
pub fn first_non_loopback_ipv4() -> Option<IpAddr> {
    list()
        .into_iter()
        .find(|a| a.up && !a.loopback && a.ip.is_ipv4())
        .map(|a| a.ip)
}

/// Every IPv4 (`v6` false) or IPv6 address of an interface that is up and not loopback;
/// IPv6 link-local addresses left out (every interface has one, and a wildcard listener's
/// clients do not reach the relay through them).
pub fn up_non_loopback(v6: bool) -> Vec<IpAddr> {
    list()
        .into_iter()
        .filter(|a| a.up && !a.loopback && a.ip.is_ipv6() == v6)
        .filter(|a| !matches!(a.ip, IpAddr::V6(ip) if ip.is_unicast_link_local()))
        .map(|a| a.ip)
        .collect()
}

/// Every address of the host's interfaces, up or not (an interface may come up later).
pub fn all_addresses() -> Vec<IpAddr> {
    list().into_iter().map(|a| a.ip).collect()
}

/// The names of the interfaces that carry any of `ips` (each once), loopback left out: the
/// interfaces the relay's traffic arrives on, where the eBPF fast path attaches.
pub fn names_carrying(ips: &[IpAddr]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for a in list() {
        if !a.loopback && ips.contains(&a.ip) && !names.contains(&a.name) {
            names.push(a.name);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loopback_address_is_listed() {
        assert!(all_addresses().contains(&IpAddr::from([127, 0, 0, 1])));
    }
}
