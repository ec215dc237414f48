//! `recvmmsg` / `sendmmsg` (with UDP GSO runs) on Linux.

use super::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

/// Writes `addr` as a sockaddr into `storage`; returns its length.
fn to_storage(addr: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            let sin = unsafe { &mut *(storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above.
            let sin6 = unsafe { &mut *(storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads the sockaddr the kernel wrote into `storage`.
fn from_storage(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let sin = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Empty address, iovec and header arrays for one `recvmmsg` / `sendmmsg` of `N`.
#[inline]
fn batch_arrays<const N: usize>() -> (
    [libc::sockaddr_storage; N],
    [libc::iovec; N],
    [libc::mmsghdr; N],
) {
    let iov = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    // SAFETY: sockaddr_storage and mmsghdr are plain data; all-zero is a valid value.
    unsafe { (std::mem::zeroed(), [iov; N], std::mem::zeroed()) }
}

/// Room for a datagram's control messages, aligned as the kernel reads and writes them: on
/// receive an `IP_PKTINFO` / `IPV6_PKTINFO` (40 bytes at most), on send a `UDP_SEGMENT` (24)
/// and a packet-info (40).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Cmsgs([u8; 64]);

impl Cmsgs {
    const EMPTY: Self = Self([0; 64]);

    /// Appends a control message of `level`/`kind` carrying `data` after the first `used`
    /// bytes; returns the bytes used now, or `used` unchanged when it does not fit.
    fn push(&mut self, used: usize, level: libc::c_int, kind: libc::c_int, data: &[u8]) -> usize {
        let data_len = data.len() as u32;
        // SAFETY: CMSG_SPACE / CMSG_LEN are pure arithmetic.
        let (space, len, header) = unsafe {
            (
                libc::CMSG_SPACE(data_len) as usize,
                libc::CMSG_LEN(data_len) as usize,
                libc::CMSG_LEN(0) as usize,
            )
        };
        let Some(room) = self.0.get_mut(used..used + space) else {
            debug_assert!(false, "control messages past {used} bytes do not fit");
            return used;
        };
        room.fill(0);
        let hdr = libc::cmsghdr {
            cmsg_len: len as _,
            cmsg_level: level,
            cmsg_type: kind,
        };
        // SAFETY: `room` holds CMSG_SPACE(data) bytes, so the header fits at its start; written
        // unaligned, though `used` is a multiple of CMSG_SPACE's alignment in an 8-aligned buffer.
        unsafe { std::ptr::write_unaligned(room.as_mut_ptr().cast::<libc::cmsghdr>(), hdr) };
        if let Some(d) = room.get_mut(header..header + data.len()) {
            d.copy_from_slice(data);
        }
        used + space
    }
}

/// The destination address of a received datagram, from its `IP_PKTINFO` / `IPV6_PKTINFO`
/// control message (present when the socket asked with [`set_packet_info`]).
// msg_controllen is a usize with glibc and a u32 with musl.
#[allow(clippy::unnecessary_cast)]
fn destination(hdr: &libc::msghdr) -> Option<IpAddr> {
    if hdr.msg_control.is_null()
        || (hdr.msg_controllen as usize) < std::mem::size_of::<libc::cmsghdr>()
    {
        return None;
    }
    // SAFETY: `hdr` is a header the kernel filled: msg_control/msg_controllen describe the
    // control messages it wrote into our buffer, which CMSG_FIRSTHDR / CMSG_NXTHDR walk within
    // those bounds; each message's data is read unaligned, for the length its type implies,
    // after checking cmsg_len covers it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            let level = (*c).cmsg_level;
            let kind = (*c).cmsg_type;
            let len = (*c).cmsg_len as usize;
            let data = libc::CMSG_DATA(c);
            if level == libc::IPPROTO_IP
                && kind == libc::IP_PKTINFO
                && len >= libc::CMSG_LEN(std::mem::size_of::<libc::in_pktinfo>() as u32) as usize
            {
                let info = std::ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                return Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    info.ipi_addr.s_addr,
                ))));
            }
            if level == libc::IPPROTO_IPV6
                && kind == libc::IPV6_PKTINFO
                && len >= libc::CMSG_LEN(std::mem::size_of::<libc::in6_pktinfo>() as u32) as usize
            {
                let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                return Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    None
}

/// Asks the kernel to say, with each datagram, which address it was sent to (`IP_PKTINFO`,
/// `IPV6_RECVPKTINFO`): what a socket bound to a wildcard address needs to tell the host's
/// addresses apart.
pub fn set_packet_info(sock: &impl AsRawFd, ipv6: bool) -> io::Result<()> {
    let (level, name) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    };
    crate::net::sockopt::set_int(sock, level, name, 1)
}

/// Appends a packet-info control message that makes the kernel send from `from`.
fn source_cmsg(cmsgs: &mut Cmsgs, used: usize, from: IpAddr) -> usize {
    match from {
        IpAddr::V4(ip) => {
            // SAFETY: in_pktinfo is plain data; all-zero is a valid value.
            let mut info: libc::in_pktinfo = unsafe { std::mem::zeroed() };
            info.ipi_spec_dst.s_addr = u32::from(ip).to_be();
            // SAFETY: viewing a plain-data struct as its bytes, for its exact size.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&info as *const libc::in_pktinfo).cast::<u8>(),
                    std::mem::size_of::<libc::in_pktinfo>(),
                )
            };
            cmsgs.push(used, libc::IPPROTO_IP, libc::IP_PKTINFO, bytes)
        }
        IpAddr::V6(ip) => {
            // SAFETY: in6_pktinfo is plain data; all-zero is a valid value.
            let mut info: libc::in6_pktinfo = unsafe { std::mem::zeroed() };
            info.ipi6_addr.s6_addr = ip.octets();
            // SAFETY: as above.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&info as *const libc::in6_pktinfo).cast::<u8>(),
                    std::mem::size_of::<libc::in6_pktinfo>(),
                )
            };
            cmsgs.push(used, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, bytes)
        }
    }
}

/// Receives up to `out.len()` (at most [`BATCH`]) datagrams without blocking into the
/// slots of `buf`. The caller keeps track of readiness (a short count means the socket was
/// drained; `WouldBlock` that it was already empty).
pub fn recv_batch(
    sock: &UdpSocket,
    buf: &mut [u8],
    layout: SlotLayout,
    out: &mut [Option<Received>],
) -> io::Result<usize> {
    recv_up_to::<BATCH>(sock, buf, layout, out, libc::MSG_DONTWAIT)
}

/// [`recv_batch`] for up to `N` datagrams per call, for callers outside the relay (the load
/// generator, the raw forwarder) that pick their own batch. With `wait` it blocks for the
/// first datagram (up to the socket's receive timeout, on a blocking socket) and takes the
/// rest that are already queued (`MSG_WAITFORONE`).
pub fn recv_batch_of<const N: usize>(
    sock: &UdpSocket,
    buf: &mut [u8],
    layout: SlotLayout,
    out: &mut [Option<Received>],
    wait: bool,
) -> io::Result<usize> {
    let flags = if wait {
        libc::MSG_WAITFORONE
    } else {
        libc::MSG_DONTWAIT
    };
    recv_up_to::<N>(sock, buf, layout, out, flags)
}

fn recv_up_to<const N: usize>(
    sock: &UdpSocket,
    buf: &mut [u8],
    layout: SlotLayout,
    out: &mut [Option<Received>],
    flags: libc::c_int,
) -> io::Result<usize> {
    let (mut addrs, mut iovs, mut hdrs) = batch_arrays::<N>();
    // Left uninitialised: the kernel writes them, and only what it wrote (msg_controllen) is
    // read, so a receive costs no 2 KiB memset.
    let mut cmsgs = [const { std::mem::MaybeUninit::<Cmsgs>::uninit() }; N];
    let mut n = 0;
    for (i, (((iov, hdr), addr), cmsg)) in iovs
        .iter_mut()
        .zip(hdrs.iter_mut())
        .zip(addrs.iter_mut())
        .zip(cmsgs.iter_mut())
        .enumerate()
        .take(out.len())
    {
        let Some(area) = buf.get_mut(layout.range(i)) else {
            break;
        };
        iov.iov_base = area.as_mut_ptr().cast();
        iov.iov_len = area.len();
        hdr.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
        hdr.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
        // Only sockets that asked for packet info get any: the others pay nothing for it.
        hdr.msg_hdr.msg_control = cmsg.as_mut_ptr().cast();
        hdr.msg_hdr.msg_controllen = std::mem::size_of::<Cmsgs>() as _;
        n += 1;
    }
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: the first `n` headers point at live iovecs into `buf` (disjoint slots), at
    // live address storage and control buffers of this frame; the kernel writes at most
    // `iov_len` / `msg_controllen` into each.
    let r = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            hdrs.as_mut_ptr(),
            n as u32,
            flags,
            std::ptr::null_mut(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = r as usize;
    for ((hdr, addr), slot) in hdrs.iter().zip(addrs.iter()).zip(out.iter_mut()).take(got) {
        *slot = from_storage(addr).map(|from| Received {
            from,
            len: hdr.msg_len as usize,
            truncated: hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            local: destination(&hdr.msg_hdr),
        });
    }
    Ok(got)
}

/// `UDP_SEGMENT` of `<linux/udp.h>` (Linux 4.18+; the libc crate has it only for some
/// targets): the segment size of a GSO send, as a socket option or a `cmsg`.
const UDP_SEGMENT: libc::c_int = 103;

/// True when the kernel knows `UDP_SEGMENT` (it answers the socket option).
pub fn gso_supported() -> bool {
    let Ok(sock) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
        return false;
    };
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid fd, and a c_int with its exact size to write the value into.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_UDP,
            UDP_SEGMENT,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    r == 0
}

/// Sends the datagrams, as many per syscall as possible; returns how many were sent.
/// With `gso` on, each run of datagrams that [`gso_run`] groups leaves as one GSO send: the
/// kernel walks its stack once for the run and cuts it into the original datagrams at
/// the end (in the NIC when it offloads UDP segmentation).
pub fn send_batch(sock: &UdpSocket, msgs: &[Outgoing<'_>], gso: &Gso) -> io::Result<usize> {
    let mut sent = 0;
    while sent < msgs.len() {
        let chunk = msgs.get(sent..).unwrap_or_default();
        match send_chunk(sock, chunk, gso.enabled()) {
            Ok(0) => break,
            Ok(k) => sent += k,
            Err(e) if gso.enabled() && gso_run(chunk) > 1 && gso_refused(&e) => {
                // The kernel would not segment this run (EIO: the device cannot checksum
                // for GSO, and never will; EINVAL/EMSGSIZE: a segment above the route's
                // MTU): send it datagram by datagram.
                if e.raw_os_error() == Some(libc::EIO) {
                    gso.disable();
                    tracing::warn!(error = %e, "UDP GSO refused by the kernel; sending without it");
                }
                let run = chunk.get(..gso_run(chunk)).unwrap_or_default();
                match send_chunk(sock, run, false) {
                    Ok(k) if k == run.len() => sent += k,
                    Ok(k) => return Ok(sent + k),
                    Err(_) if sent > 0 => break,
                    Err(e) => return Err(e),
                }
            }
            // Whatever was sent counts; the rest is dropped (UDP semantics).
            Err(_) if sent > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::EMSGSIZE)
    )
}

/// One `sendmmsg` for the first [`BATCH`] datagrams of `msgs` (fewer headers when runs are
/// grouped for GSO); returns how many datagrams the kernel took.
fn send_chunk(sock: &UdpSocket, msgs: &[Outgoing<'_>], gso: bool) -> io::Result<usize> {
    let msgs = msgs.get(..msgs.len().min(BATCH)).unwrap_or_default();
    let (mut addrs, mut iovs, mut hdrs) = batch_arrays::<BATCH>();
    // Initialised only for the headers that carry control messages.
    let mut cmsgs = [const { std::mem::MaybeUninit::<Cmsgs>::uninit() }; BATCH];
    // Datagrams in each header, to count what a partial send took.
    let mut run_lens = [0usize; BATCH];
    for (iov, m) in iovs.iter_mut().zip(msgs) {
        iov.iov_base = m.data.as_ptr() as *mut libc::c_void;
        iov.iov_len = m.data.len();
    }
    let mut n_hdrs = 0;
    let mut next = 0;
    while next < msgs.len() {
        let rest = msgs.get(next..).unwrap_or_default();
        let run = if gso { gso_run(rest) } else { 1 };
        let (Some(first), Some(hdr), Some(addr), Some(cmsg), Some(count)) = (
            rest.first(),
            hdrs.get_mut(n_hdrs),
            addrs.get_mut(n_hdrs),
            cmsgs.get_mut(n_hdrs),
            run_lens.get_mut(n_hdrs),
        ) else {
            break;
        };
        let Some(iov) = iovs.get_mut(next) else { break };
        hdr.msg_hdr.msg_namelen = to_storage(first.to, addr);
        hdr.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = run as _;
        if run > 1 || first.from.is_some() {
            let cmsg = cmsg.write(Cmsgs::EMPTY);
            let mut used = 0;
            if run > 1 {
                // gso_run keeps segments at most MAX_GSO_BYTES, far below u16::MAX.
                let size = u16::try_from(first.data.len()).unwrap_or(u16::MAX);
                used = cmsg.push(used, libc::SOL_UDP, UDP_SEGMENT, &size.to_ne_bytes());
            }
            if let Some(from) = first.from {
                used = source_cmsg(cmsg, used, from);
            }
            hdr.msg_hdr.msg_controllen = used as _;
            hdr.msg_hdr.msg_control = cmsg.0.as_mut_ptr().cast();
        }
        *count = run;
        n_hdrs += 1;
        next += run;
    }
    if n_hdrs == 0 {
        return Ok(0);
    }
    // Straight to the syscall, not through the runtime's readiness: a datagram socket is
    // almost always writable, and a full buffer means the datagram is dropped anyway
    // (UDP semantics).
    // SAFETY: the first `n_hdrs` headers point at live iovecs (each run's `run` of them are
    // consecutive in `iovs`), data, addresses and control messages of this frame.
    let r = unsafe {
        libc::sendmmsg(
            sock.as_raw_fd(),
            hdrs.as_mut_ptr(),
            n_hdrs as u32,
            libc::MSG_DONTWAIT,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(run_lens.iter().take(r as usize).sum())
}

/// Sends one datagram now, without consulting tokio's readiness (see [`send_batch`]).
pub fn send_now(sock: &UdpSocket, m: Outgoing<'_>) -> io::Result<usize> {
    if m.from.is_none() {
        return socket2::SockRef::from(sock).send_to(m.data, &m.to.into());
    }
    match send_chunk(sock, std::slice::from_ref(&m), false)? {
        0 => Err(io::Error::from(io::ErrorKind::WouldBlock)),
        _ => Ok(m.data.len()),
    }
}
