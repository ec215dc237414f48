//! The few system calls the load generator and the raw forwarder need beyond `std` and the
//! relay's own batched receives and sends (`geoturn_relay::net::batch`, with GSO): `epoll` over
//! many sockets, the open-file limit and the clock-tick rate. Linux only, like the relay's
//! `net/batch.rs`; every `unsafe` block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use geoturn_relay::net::batch::{self, Received, SlotLayout};

/// Datagrams per `recvmmsg`.
pub const BATCH: usize = 64;

/// One received datagram: who sent it and how long it is.
#[derive(Debug, Clone, Copy)]
pub struct RecvMeta {
    /// Sender (unspecified when the kernel gave none).
    pub from: SocketAddr,
    /// Bytes written into the slot.
    pub len: usize,
}

impl Default for RecvMeta {
    fn default() -> Self {
        Self {
            from: SocketAddr::from(([0, 0, 0, 0], 0)),
            len: 0,
        }
    }
}

/// Receives up to `out.len()` (at most [`BATCH`]) datagrams into consecutive `slot`-byte slots of
/// `buf`, with the relay's own batched receive. `wait` blocks for the first one (up to the
/// socket's receive timeout) and takes the rest that are already queued (`MSG_WAITFORONE`);
/// otherwise nothing blocks. Datagrams longer than a slot are cut (the caller sees `len == slot`).
pub fn recv_mmsg(
    sock: &UdpSocket,
    buf: &mut [u8],
    slot: usize,
    out: &mut [RecvMeta],
    wait: bool,
) -> io::Result<usize> {
    let layout = SlotLayout {
        size: slot,
        head: 0,
        tail: 0,
    };
    let mut received: [Option<Received>; BATCH] = [None; BATCH];
    let n = out.len().min(BATCH);
    let got = batch::recv_batch_of::<BATCH>(
        sock,
        buf,
        layout,
        received.get_mut(..n).unwrap_or_default(),
        wait,
    )?;
    for (meta, r) in out.iter_mut().zip(&received).take(got) {
        *meta = r.map_or_else(RecvMeta::default, |r| RecvMeta {
            from: r.from,
            len: r.len,
        });
    }
    Ok(got)
}

/// An epoll instance: readiness of many sockets, each with a caller-chosen token.
#[derive(Debug)]
pub struct Epoll(OwnedFd);

/// One ready socket: its token.
pub type Token = u64;

impl Epoll {
    /// A new instance (close-on-exec).
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; on success it returns a new descriptor we then own.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor nobody else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `fd` for input (level-triggered), reported with `token`.
    pub fn add(&self, fd: RawFd, token: Token) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both descriptors are valid; `ev` is a live event the kernel copies.
        let r = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops watching `fd`.
    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add`; the event is ignored for EPOLL_CTL_DEL.
        let r = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` (0 = poll) and writes the ready tokens into `out`.
    pub fn wait(&self, out: &mut [Token], timeout_ms: i32) -> io::Result<usize> {
        const MAX: usize = 256;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX];
        let max = out.len().min(MAX) as i32;
        // SAFETY: `events` has room for `max` entries, which the kernel fills.
        let r =
            unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        let n = r as usize;
        for (ev, o) in events.iter().zip(out.iter_mut()).take(n) {
            // Copy out of the (packed) event before use.
            let token = ev.u64;
            *o = token;
        }
        Ok(n)
    }
}

/// Raises the soft open-file limit to the hard one (thousands of allocations are thousands of
/// sockets); returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a live rlimit the kernel fills.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit with cur <= max.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// Clock ticks per second of `/proc/PID/stat` times.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}
