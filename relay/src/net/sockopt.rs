//! Socket options socket2 does not cover.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;

/// Sets the DF bit on every datagram the socket sends (DONT-FRAGMENT, RFC 8656 §18.8).
#[cfg(target_os = "linux")]
pub fn set_dont_fragment(sock: &impl AsRawFd, ipv6: bool) -> io::Result<()> {
    let (level, name, value) = if ipv6 {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        )
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
    };
    // SAFETY: a valid fd, a c_int option value and its exact size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Not supported here: the Allocate still succeeds, datagrams may be fragmented.
#[cfg(not(target_os = "linux"))]
pub fn set_dont_fragment(_sock: &impl AsRawFd, _ipv6: bool) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "DF not supported on this platform",
    ))
}
