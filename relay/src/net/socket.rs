//! Socket set-up: the listening sockets every worker binds with `SO_REUSEPORT` (after
//! [`super::listen::claim`] checked the address is free), and relayed sockets.

use std::io;
use std::net::SocketAddr;

use geoturn_relay_proto::RelayAddr;
use socket2::{Domain, Protocol, Socket, Type};

use super::sockopt;

/// Binds a UDP socket with `SO_REUSEPORT` so every worker can listen on the same address, with
/// `buffer` bytes of receive and send buffer (the kernel caps it at `net.core.rmem_max` /
/// `wmem_max`; 0 keeps the system default).
pub fn bind_reuseport(addr: SocketAddr, buffer: usize) -> io::Result<std::net::UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    #[cfg(all(unix, not(target_os = "solaris"), not(target_os = "illumos")))]
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    // Bursts of small packets from many clients: give the kernel room before it drops.
    if buffer > 0 {
        let _ = sock.set_recv_buffer_size(buffer);
        let _ = sock.set_send_buffer_size(buffer);
    }
    // On a wildcard address, each datagram says which of the host's addresses it reached: the
    // 5-tuple needs it, replies must leave from it (a client drops an answer from another
    // address), and the eBPF fast path matches on it.
    if addr.ip().is_unspecified()
        && let Err(e) = super::batch::set_packet_info(&sock, addr.is_ipv6())
    {
        tracing::warn!(error = %e, %addr, "cannot learn the destination address of datagrams; \
            replies leave from the kernel's choice of address");
    }
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

pub(super) fn bind_relay(
    relay: RelayAddr,
    dont_fragment: bool,
    buffer: usize,
) -> io::Result<std::net::UdpSocket> {
    let addr = relay.addr();
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    if buffer > 0 {
        // A limit, not an allocation: the kernel charges only what is queued.
        let _ = sock.set_recv_buffer_size(buffer);
    }
    if dont_fragment {
        sockopt::set_dont_fragment(&sock, addr.is_ipv6())?;
    }
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Binds a TCP listening socket with `SO_REUSEPORT`.
pub fn bind_reuseport_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let sock = reuse_tcp_socket(addr)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    Ok(sock.into())
}

/// A non-blocking TCP socket for `addr`'s family with address and port reuse: every worker
/// listens on the client port, and a TCP relayed address both listens and connects out.
pub(super) fn reuse_tcp_socket(addr: SocketAddr) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    #[cfg(all(unix, not(target_os = "solaris"), not(target_os = "illumos")))]
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}
