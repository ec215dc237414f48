//! Batched datagram syscalls: `recvmmsg` / `sendmmsg` on Linux move up to [`BATCH`] datagrams
//! per system call, which is most of the cost of relaying small packets. Other platforms fall
//! back to one datagram per call. Sockets are non-blocking `std` sockets (registered with the
//! runtime through `AsyncFd`, which tracks readiness); these functions never wait.
#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, SocketAddr};

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
    /// The address it was sent to, on a socket that asked for it ([`set_packet_info`]): a
    /// wildcard listener learns which of the host's addresses each client reached.
    pub local: Option<IpAddr>,
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
    /// Source address, for a socket bound to a wildcard address: a reply must leave from the
    /// address the client sent to, which the kernel's own choice (by route) need not be on a
    /// host with several. `None`: the kernel's choice.
    pub from: Option<IpAddr>,
    /// Bytes.
    pub data: &'a [u8],
}

impl<'a> Outgoing<'a> {
    /// `data` to `to`, from the address the kernel picks.
    pub const fn new(to: SocketAddr, data: &'a [u8]) -> Self {
        Self {
            to,
            from: None,
            data,
        }
    }
}

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux::gso_supported;
#[cfg(target_os = "linux")]
pub use linux::{recv_batch, recv_batch_of, send_batch, send_now, set_packet_info};
#[cfg(not(target_os = "linux"))]
mod portable;
#[cfg(not(target_os = "linux"))]
use portable::gso_supported;
#[cfg(not(target_os = "linux"))]
pub use portable::{recv_batch, recv_batch_of, send_batch, send_now, set_packet_info};

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
        Self(AtomicBool::new(wanted && gso_supported()))
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
/// the same destination from the same source, each as long as the first except the last, which may be shorter
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
            || m.from != first.from
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

#[cfg(test)]
mod tests;
