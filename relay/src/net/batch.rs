//! Batched datagram syscalls: `recvmmsg` / `sendmmsg` on Linux move up to [`BATCH`] datagrams
//! per system call, which is most of the cost of relaying small packets. Other platforms fall
//! back to one datagram per call. Sockets are non-blocking `std` sockets (registered with the
//! runtime through `AsyncFd`, which tracks readiness); these functions never wait.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;

use std::net::UdpSocket;

/// Datagrams per syscall.
pub const BATCH: usize = 32;

/// One received datagram: where it came from and how long it is.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Sender.
    pub from: SocketAddr,
    /// Bytes written into the slot.
    pub len: usize,
    /// The datagram was larger than the slot and was cut: drop it.
    pub truncated: bool,
}

/// How a contiguous receive buffer is cut into [`BATCH`] slots: slot `i` receives into
/// `buf[i * size + head .. (i + 1) * size - tail]`, leaving room to frame data in place.
#[derive(Debug, Clone, Copy)]
pub struct SlotLayout {
    /// Bytes per slot.
    pub size: usize,
    /// Bytes kept free before the datagram.
    pub head: usize,
    /// Bytes kept free after the datagram.
    pub tail: usize,
}

impl SlotLayout {
    /// The bytes of slot `i`'s receive area.
    pub fn range(&self, i: usize) -> std::ops::Range<usize> {
        i * self.size + self.head..(i + 1) * self.size - self.tail
    }

    /// The whole slot `i`.
    pub fn slot(&self, i: usize) -> std::ops::Range<usize> {
        i * self.size..(i + 1) * self.size
    }

    /// A zeroed buffer for [`BATCH`] slots.
    pub fn buffer(&self) -> Vec<u8> {
        vec![0; self.size * BATCH]
    }
}

/// One datagram to send.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Destination.
    pub to: SocketAddr,
    /// Bytes.
    pub data: &'a [u8],
}

#[cfg(target_os = "linux")]
mod sys {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
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

    /// Receives up to `out.len()` (at most [`BATCH`]) datagrams without blocking into the
    /// slots of `buf`. The caller keeps track of readiness (a short count means the socket was
    /// drained; `WouldBlock` that it was already empty).
    pub fn recv_batch(
        sock: &UdpSocket,
        buf: &mut [u8],
        layout: SlotLayout,
        out: &mut [Option<Received>],
    ) -> io::Result<usize> {
        // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
        let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
        let mut iovs: [libc::iovec; BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        // SAFETY: mmsghdr is plain data; all-zero is a valid value.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        let mut n = 0;
        for (i, ((iov, hdr), addr)) in iovs
            .iter_mut()
            .zip(hdrs.iter_mut())
            .zip(addrs.iter_mut())
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
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: the first `n` headers point at live iovecs into `buf` and at live address
        // storage of this frame.
        let r = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT,
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
            });
        }
        Ok(got)
    }

    /// Sends the datagrams, as many per syscall as possible; returns how many were sent.
    pub fn send_batch(sock: &UdpSocket, msgs: &[Outgoing<'_>]) -> io::Result<usize> {
        let mut sent = 0;
        while sent < msgs.len() {
            let chunk = msgs.get(sent..).unwrap_or_default();
            let n = chunk.len().min(BATCH);
            // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
            let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
            let mut iovs: [libc::iovec; BATCH] = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; BATCH];
            // SAFETY: mmsghdr is plain data; all-zero is a valid value.
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for (i, m) in chunk.iter().take(n).enumerate() {
                let (Some(iov), Some(hdr), Some(addr)) =
                    (iovs.get_mut(i), hdrs.get_mut(i), addrs.get_mut(i))
                else {
                    break;
                };
                iov.iov_base = m.data.as_ptr() as *mut libc::c_void;
                iov.iov_len = m.data.len();
                hdr.msg_hdr.msg_namelen = to_storage(m.to, addr);
                hdr.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
                hdr.msg_hdr.msg_iov = iov;
                hdr.msg_hdr.msg_iovlen = 1;
            }
            // Straight to the syscall, not through the runtime's readiness: a datagram socket is
            // almost always writable, and a full buffer means the datagram is dropped anyway
            // (UDP semantics).
            // SAFETY: headers point at live iovecs, data and addresses; `n` is in bounds.
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    n as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            let r = if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(r as usize)
            };
            match r {
                Ok(0) => break,
                Ok(k) => sent += k,
                Err(e) if sent > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
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
                    });
                    got += 1;
                }
                Err(e) if got > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }

    /// Sends the datagrams one syscall each.
    pub fn send_batch(sock: &UdpSocket, msgs: &[Outgoing<'_>]) -> io::Result<usize> {
        let mut sent = 0;
        for m in msgs {
            match super::send_now(sock, m.data, m.to) {
                Ok(_) => sent += 1,
                Err(e) if sent > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }
}

pub use sys::{recv_batch, send_batch};

/// Registers a non-blocking socket with the current runtime for read readiness.
pub fn register(sock: UdpSocket) -> io::Result<tokio::io::unix::AsyncFd<UdpSocket>> {
    // SAFETY: the socket owns its descriptor, which stays open and the same until the AsyncFd
    // (now its owner) drops it; the relay only ever borrows it back with `get_ref`.
    let fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(sock, tokio::io::Interest::READABLE)
    };
    Ok(fd?)
}

/// Sends one datagram now, without consulting tokio's readiness (see [`send_batch`]).
pub fn send_now(sock: &UdpSocket, data: &[u8], to: SocketAddr) -> io::Result<usize> {
    socket2::SockRef::from(sock).send_to(data, &to.into())
}
