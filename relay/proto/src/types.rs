//! Newtypes so a client address can never be passed where a peer address belongs.

use std::fmt;
use std::net::SocketAddr;

/// The transport a client reached us over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Transport {
    /// Stream transports frame ChannelData with padding (RFC 8656 §12.5).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// Lower-case name for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// A TURN client's transport address as the relay sees it (after any NAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientSocket(SocketAddr);

/// A peer's transport address, on the far side of a relayed address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerSocket(SocketAddr);

/// A relayed transport address owned by one allocation (the local bind address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayAddr(SocketAddr);

/// The 5-tuple that names an allocation (RFC 8656 §2.2): client, server listener, transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiveTuple {
    /// Client transport address.
    pub client: ClientSocket,
    /// The server address the client sent to.
    pub server: SocketAddr,
    /// Transport protocol between client and server.
    pub transport: Transport,
}

macro_rules! socket_newtype {
    ($($name:ident),*) => {$(
        impl $name {
            /// Wraps an address known to be of this kind.
            pub const fn new(addr: SocketAddr) -> Self {
                Self(addr)
            }

            /// The address itself, for the socket call that needs it.
            pub const fn addr(self) -> SocketAddr {
                self.0
            }
        }
    )*};
}

socket_newtype!(ClientSocket, PeerSocket, RelayAddr);

impl fmt::Display for ClientSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for PeerSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for RelayAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An RFC 6062 CONNECTION-ID: names one peer TCP connection relay-wide, from Connect or a
/// peer's connection to ConnectionBind and through the splice that follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(u32);

impl ConnectionId {
    /// The id carried in a CONNECTION-ID attribute.
    pub const fn new(wire: u32) -> Self {
        Self(wire)
    }

    /// The value for the CONNECTION-ID attribute.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The source a per-client limit counts: an IPv4 address (an IPv4-mapped IPv6 one counts as
/// it), or an IPv6 /64 — one subscriber's prefix, whose addresses cost an attacker nothing.
pub fn source_of(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv6Addr};
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}
