//! One datagram per system call, where `recvmmsg` / `sendmmsg` do not exist.

use super::*;

/// Receives up to `out.len()` datagrams without blocking, one syscall each (the socket is
/// non-blocking).
pub fn recv_batch(
    sock: &UdpSocket,
    buf: &mut [u8],
    layout: SlotLayout,
    out: &mut [Option<Received>],
) -> io::Result<usize> {
    let mut got = 0;
    for (i, slot) in out.iter_mut().enumerate().take(BATCH) {
        let Some(area) = buf.get_mut(layout.range(i)) else {
            break;
        };
        match sock.recv_from(area) {
            Ok((len, from)) => {
                *slot = Some(Received {
                    from,
                    len,
                    truncated: false,
                    local: None,
                });
                got += 1;
            }
            Err(e) if got > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Up to `N` (and [`BATCH`]) datagrams, one syscall each, on a non-blocking socket (`wait`
/// is not supported here: a blocking socket would block on the second datagram too).
pub fn recv_batch_of<const N: usize>(
    sock: &UdpSocket,
    buf: &mut [u8],
    layout: SlotLayout,
    out: &mut [Option<Received>],
    _wait: bool,
) -> io::Result<usize> {
    let n = out.len().min(N);
    recv_batch(sock, buf, layout, out.get_mut(..n).unwrap_or_default())
}

/// No UDP GSO here.
pub fn gso_supported() -> bool {
    false
}

/// Sends the datagrams one syscall each.
pub fn send_batch(sock: &UdpSocket, msgs: &[Outgoing<'_>], _gso: &Gso) -> io::Result<usize> {
    let mut sent = 0;
    for m in msgs {
        match send_now(sock, *m) {
            Ok(_) => sent += 1,
            Err(e) if sent > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// Sends one datagram (from the kernel's choice of address: packet info is Linux's here).
pub fn send_now(sock: &UdpSocket, m: Outgoing<'_>) -> io::Result<usize> {
    socket2::SockRef::from(sock).send_to(m.data, &m.to.into())
}

/// Not supported here: a wildcard listener answers from the kernel's choice of address.
pub fn set_packet_info(_sock: &impl std::os::fd::AsRawFd, _ipv6: bool) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "packet info is not supported on this platform",
    ))
}
