//! Claiming the addresses the workers listen on.
//!
//! Every worker binds the client port with `SO_REUSEPORT`, which lets any process of the same
//! user bind it too; the kernel then spreads datagrams and connections over both. A second
//! relay started on a port in use (or a test relay on a port another test took) would silently
//! take a share of the first one's clients and allocations. So before the workers bind, the
//! address is bound once without `SO_REUSEPORT`, for UDP and TCP both (RFC 8656 §3.1: TURN over
//! TCP uses the UDP port), which fails while anyone holds either; then the probe is closed.
//! With port 0 the kernel picks a UDP port whose TCP twin may be taken (an outgoing
//! connection's local port, say): then another port is tried.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Ports tried when the kernel picks one (port 0) before giving up.
const PICK_ATTEMPTS: usize = 32;

/// Which protocols must be free on a listen address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// A TURN listener: UDP and TCP on the same port.
    UdpAndTcp,
    /// A TLS listener: TCP only.
    Tcp,
}

/// The address the workers should bind for `addr`, checked free of other owners: `addr`
/// itself, or with port 0, a port the kernel picked that is free for every protocol.
pub fn claim(addr: SocketAddr, protocols: Protocols) -> io::Result<SocketAddr> {
    if addr.port() != 0 {
        return probe(addr, protocols).map_err(|e| in_use(addr, e));
    }
    let mut last = None;
    for _ in 0..PICK_ATTEMPTS {
        match probe(addr, protocols) {
            Ok(claimed) => return Ok(claimed),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}

fn in_use(addr: SocketAddr, e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::AddrInUse {
        io::Error::new(
            e.kind(),
            format!("{addr} is in use (UDP or TCP): is another relay listening on it?"),
        )
    } else {
        e
    }
}

/// Binds `addr` without `SO_REUSEPORT` for each protocol and returns the bound address.
fn probe(addr: SocketAddr, protocols: Protocols) -> io::Result<SocketAddr> {
    let tcp = socket(addr, Type::STREAM, Protocol::TCP)?;
    // As the listeners will: TIME_WAIT leftovers of an earlier run must not block a restart.
    tcp.set_reuse_address(true)?;
    match protocols {
        Protocols::Tcp => {
            tcp.bind(&addr.into())?;
            local(&tcp)
        }
        Protocols::UdpAndTcp => {
            let udp = socket(addr, Type::DGRAM, Protocol::UDP)?;
            udp.bind(&addr.into())?;
            let picked = local(&udp)?;
            tcp.bind(&picked.into())?;
            Ok(picked)
        }
    }
}

fn socket(addr: SocketAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    Ok(sock)
}

fn local(sock: &Socket) -> io::Result<SocketAddr> {
    sock.local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound socket has no IP address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: &str = "127.0.0.1:0";

    #[test]
    fn port_zero_gets_a_port_free_for_udp_and_tcp() {
        let addr = claim(LOOPBACK.parse().unwrap(), Protocols::UdpAndTcp).unwrap();
        assert_ne!(addr.port(), 0);
        std::net::UdpSocket::bind(addr).unwrap();
        std::net::TcpListener::bind(addr).unwrap();
    }

    #[test]
    fn a_port_held_with_reuseport_by_someone_else_is_refused() {
        // What another relay's worker holds: SO_REUSEPORT, which would let a second
        // SO_REUSEPORT bind share the port silently.
        let other = crate::net::socket::bind_reuseport(LOOPBACK.parse().unwrap(), 0).unwrap();
        let taken = other.local_addr().unwrap();
        let e = claim(taken, Protocols::UdpAndTcp).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("another relay"), "{e}");
        let listener = crate::net::socket::bind_reuseport_tcp(LOOPBACK.parse().unwrap()).unwrap();
        let taken = listener.local_addr().unwrap();
        assert_eq!(
            claim(taken, Protocols::Tcp).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
    }

    #[test]
    fn a_udp_port_whose_tcp_twin_is_taken_is_refused() {
        let tcp = std::net::TcpListener::bind(LOOPBACK).unwrap();
        let addr = tcp.local_addr().unwrap();
        assert_eq!(
            claim(addr, Protocols::UdpAndTcp).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
    }
}
