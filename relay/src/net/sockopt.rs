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
    set_int(sock, level, name, value)
}

/// Sets an integer socket option (`setsockopt` with a `c_int` value).
#[cfg(target_os = "linux")]
pub fn set_int(
    sock: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
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

/// The kernel's smoothed round-trip estimate of a TCP connection (`TCP_INFO`'s `tcpi_rtt`),
/// or `None` when it has none yet or the call fails.
#[cfg(target_os = "linux")]
pub fn tcp_rtt(fd: std::os::fd::RawFd) -> Option<std::time::Duration> {
    // SAFETY: tcp_info is plain old data; zeroed is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: a descriptor the caller holds open, a buffer of `len` bytes and its length.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (r == 0 && info.tcpi_rtt > 0).then(|| std::time::Duration::from_micros(info.tcpi_rtt.into()))
}

/// Not read here.
#[cfg(not(target_os = "linux"))]
pub fn tcp_rtt(_fd: std::os::fd::RawFd) -> Option<std::time::Duration> {
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_connected_socket_has_a_kernel_rtt() {
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let rtt = super::tcp_rtt(server.as_raw_fd());
        // Loopback: tens of microseconds, never seconds.
        assert!(
            rtt.is_some_and(|r| r < std::time::Duration::from_secs(1)),
            "{rtt:?}"
        );
        drop(client);
        assert_eq!(super::tcp_rtt(-1), None);
    }
}
