//! Batched datagram syscalls: `recvmmsg` / `sendmmsg` on Linux move up to [`BATCH`] datagrams
//! per system call, which is most of the cost of relaying small packets. Other platforms fall
//! back to one datagram per call. Sockets are non-blocking `std` sockets (registered with the
//! runtime through `AsyncFd`, which tracks readiness); these functions never wait.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};

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
        // SAFETY: the first `n` headers point at live iovecs into `buf` (disjoint slots) and at
        // live address storage of this frame; the kernel writes at most `iov_len` into each.
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

    /// Room for one `cmsghdr` carrying a `u16`, aligned as the kernel reads it.
    #[repr(C, align(8))]
    #[derive(Clone, Copy)]
    struct SegmentCmsg([u8; 32]);

    /// Writes a `UDP_SEGMENT` control message of `size` into `buf`; returns its length.
    fn segment_cmsg(buf: &mut SegmentCmsg, size: u16) -> usize {
        let data_len = std::mem::size_of::<u16>() as u32;
        // SAFETY: CMSG_SPACE / CMSG_LEN are pure arithmetic.
        let (space, len) = unsafe { (libc::CMSG_SPACE(data_len), libc::CMSG_LEN(data_len)) };
        let space = space as usize;
        debug_assert!(space <= buf.0.len());
        let hdr = libc::cmsghdr {
            cmsg_len: len as _,
            cmsg_level: libc::SOL_UDP,
            cmsg_type: UDP_SEGMENT,
        };
        let hdr_size = std::mem::size_of::<libc::cmsghdr>();
        // SAFETY: `buf` is 8-aligned and holds CMSG_SPACE(2) bytes (checked above), so the
        // header fits at its start and the u16 right after it (where CMSG_DATA points).
        unsafe {
            std::ptr::write(buf.0.as_mut_ptr().cast::<libc::cmsghdr>(), hdr);
            std::ptr::write_unaligned(buf.0.as_mut_ptr().add(hdr_size).cast::<u16>(), size);
        }
        space
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
        let mut cmsgs = [SegmentCmsg([0; 32]); BATCH];
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
            if run > 1 {
                // gso_run keeps segments at most MAX_GSO_BYTES, far below u16::MAX.
                let size = u16::try_from(first.data.len()).unwrap_or(u16::MAX);
                hdr.msg_hdr.msg_controllen = segment_cmsg(cmsg, size) as _;
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
            match super::send_now(sock, m.data, m.to) {
                Ok(_) => sent += 1,
                Err(e) if sent > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }
}

pub use sys::{recv_batch, recv_batch_of, send_batch};

/// Most datagrams in one GSO send: the kernel's `UDP_MAX_SEGMENTS` (64 on every kernel that has
/// GSO; later ones allow more).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Most bytes in one GSO send: what one IP datagram carries (the kernel refuses more), less
/// room for the IPv6 and UDP headers.
pub const MAX_GSO_BYTES: usize = 65_535 - 48;

/// Whether sends may use UDP generic segmentation offload (GSO, `UDP_SEGMENT`, Linux 4.18+):
/// on when asked for and the kernel knows it, off for good once the kernel refuses it.
#[derive(Debug)]
pub struct Gso(AtomicBool);

impl Gso {
    /// GSO when `wanted` and this kernel has it.
    pub fn new(wanted: bool) -> Self {
        Self(AtomicBool::new(wanted && sys::gso_supported()))
    }

    /// Sends group runs of datagrams.
    pub fn enabled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Stops grouping (the device cannot segment).
    pub fn disable(&self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// How many datagrams from the start of `msgs` can leave as one GSO send: consecutive ones to
/// the same destination, each as long as the first except the last, which may be shorter
/// (the kernel cuts the run into segments of the first one's size), within
/// [`MAX_GSO_SEGMENTS`] and [`MAX_GSO_BYTES`]. Never 0 unless `msgs` is empty; 1 means
/// "send it alone". Order is kept: a run never skips over a datagram.
pub fn gso_run(msgs: &[Outgoing<'_>]) -> usize {
    let Some((first, rest)) = msgs.split_first() else {
        return 0;
    };
    let size = first.data.len();
    if size == 0 {
        return 1;
    }
    let (mut n, mut total) = (1, size);
    for m in rest {
        let len = m.data.len();
        if n == MAX_GSO_SEGMENTS
            || m.to != first.to
            || len == 0
            || len > size
            || total + len > MAX_GSO_BYTES
        {
            break;
        }
        n += 1;
        total += len;
        if len < size {
            // A shorter datagram can only be the last segment.
            break;
        }
    }
    n
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(to: &str, len: usize) -> Outgoing<'static> {
        static BYTES: [u8; 70_000] = [0; 70_000];
        Outgoing {
            to: to.parse().unwrap(),
            data: &BYTES[..len],
        }
    }

    #[test]
    fn runs_group_equal_datagrams_to_one_destination() {
        let a = "127.0.0.1:1000";
        let b = "127.0.0.1:2000";
        assert_eq!(gso_run(&[]), 0);
        assert_eq!(gso_run(&[msg(a, 100)]), 1);
        assert_eq!(gso_run(&[msg(a, 100), msg(a, 100), msg(a, 100)]), 3);
        // Another destination ends the run; so does a longer datagram.
        assert_eq!(gso_run(&[msg(a, 100), msg(a, 100), msg(b, 100)]), 2);
        assert_eq!(gso_run(&[msg(a, 100), msg(a, 101)]), 1);
        // A shorter one is the last segment.
        assert_eq!(gso_run(&[msg(a, 100), msg(a, 60), msg(a, 100)]), 2);
        assert_eq!(gso_run(&[msg(a, 100), msg(a, 60), msg(a, 60)]), 2);
        // Empty datagrams never join a run.
        assert_eq!(gso_run(&[msg(a, 0), msg(a, 0)]), 1);
        assert_eq!(gso_run(&[msg(a, 10), msg(a, 0)]), 1);
    }

    #[test]
    fn runs_stay_within_the_kernel_limits() {
        let a = "[::1]:1000";
        let many: Vec<_> = (0..100).map(|_| msg(a, 10)).collect();
        assert_eq!(gso_run(&many), MAX_GSO_SEGMENTS);
        let big: Vec<_> = (0..10).map(|_| msg(a, 16_000)).collect();
        // 4 x 16 000 fits in MAX_GSO_BYTES, 5 would not.
        assert_eq!(gso_run(&big), 4);
        assert_eq!(gso_run(&[msg(a, 65_000), msg(a, 600)]), 1);
    }

    /// Real sockets: a run sent with GSO arrives as the original datagrams, in order, and
    /// without GSO the same; the receiver never sees a merged datagram.
    #[test]
    fn gso_sends_arrive_as_the_original_datagrams() {
        for wanted in [true, false] {
            let gso = Gso::new(wanted);
            if wanted && cfg!(target_os = "linux") {
                assert!(gso.enabled(), "this Linux kernel should know UDP_SEGMENT");
            }
            let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
            let rx2 = UdpSocket::bind("127.0.0.1:0").unwrap();
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            let (to, to2) = (rx.local_addr().unwrap(), rx2.local_addr().unwrap());
            let payloads: Vec<Vec<u8>> = (0..40u8)
                .map(|i| {
                    let len = if i == 9 || i == 39 { 50 } else { 1200 };
                    vec![i; len]
                })
                .collect();
            let mut msgs: Vec<Outgoing<'_>> =
                payloads.iter().map(|p| Outgoing { to, data: p }).collect();
            // One datagram to another destination in the middle.
            msgs.insert(
                20,
                Outgoing {
                    to: to2,
                    data: b"other",
                },
            );
            assert_eq!(send_batch(&tx, &msgs, &gso).unwrap(), msgs.len());
            rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            let mut buf = [0u8; 70_000];
            for p in &payloads {
                let n = rx.recv(&mut buf).unwrap();
                // Not assert_eq: a merged datagram would print kilobytes.
                assert!(
                    buf[..n] == p[..],
                    "wanted GSO: {wanted}: got {n} bytes of {}, sent {} of {}",
                    buf[0],
                    p.len(),
                    p[0]
                );
            }
            rx2.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            let n = rx2.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"other");
        }
    }
}
