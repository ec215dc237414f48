//! A server's settings, with RFC 8656's defaults.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::peer_policy::PeerPolicy;

/// New peers one allocation may add at once before `new_peers_per_sec` applies: a browser's
/// remote candidates (host, server-reflexive, relayed, for each family and interface) arrive
/// together and must all get their permission.
pub const NEW_PEER_BURST: f64 = 32.0;

/// Settings of one server (one shard of a relay).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// REALM sent in challenges and expected back.
    pub realm: String,
    /// SOFTWARE attribute in responses; `None` sends none (no version disclosure).
    pub software: Option<String>,
    /// Local IPv4 address relayed sockets bind to; `None` disables IPv4 relaying.
    pub relay_ip_v4: Option<IpAddr>,
    /// Local IPv6 address relayed sockets bind to; `None` disables IPv6 relaying.
    pub relay_ip_v6: Option<IpAddr>,
    /// IPv4 address advertised in XOR-RELAYED-ADDRESS when the relay is behind 1:1 NAT.
    pub external_ip_v4: Option<IpAddr>,
    /// IPv6 address advertised in XOR-RELAYED-ADDRESS.
    pub external_ip_v6: Option<IpAddr>,
    /// Allocation lifetime when the client asks for none (RFC 8656: 10 minutes).
    pub default_lifetime: Duration,
    /// Longest allocation lifetime granted (RFC 8656 recommends 1 hour).
    pub max_lifetime: Duration,
    /// How long a nonce stays valid.
    pub nonce_lifetime: Duration,
    /// Which peers may be reached.
    pub peer_policy: PeerPolicy,
    /// Names this relay process in its nonces (random per process), so a sibling's nonce never
    /// yields a round-trip sample here.
    pub nonce_tag: u16,
    /// Key for stateless nonces (random per node).
    pub nonce_key: [u8; 32],
    /// Responses remembered for retransmissions.
    pub transaction_cache_size: usize,
    /// Unsigned responses (challenges, Binding, errors before authentication) per second per
    /// source IP; 0 disables the limit.
    pub unauth_rate: u32,
    /// Burst of unsigned responses per source IP.
    pub unauth_burst: u32,
    /// Relayed payload bits per second per allocation, both directions together; 0 = no limit.
    pub allocation_bps: u64,
    /// Relayed datagrams per second per allocation, both directions together; 0 = no limit.
    pub allocation_pps: u64,
    /// New peers per second per allocation (permissions for an IP without one, and RFC 6062
    /// Connects), after a burst of [`NEW_PEER_BURST`]; 0 = no limit.
    pub new_peers_per_sec: u32,
    /// Listener addresses shared by several sites (anycast): first contact only. An Allocate
    /// arriving on one is answered, once authenticated, with 300 Try Alternate to a unicast
    /// relay (see [`Server::set_first_contact`]) and never creates state here, because the
    /// next route change could carry the client's packets to another site.
    pub anycast: Vec<SocketAddr>,
    /// More addresses of this relay (its listen addresses; every interface address when it
    /// listens on a wildcard). With the relayed, external and anycast ones, they are peers only
    /// at a relayed port in use (see `server/own.rs`).
    pub own_addresses: Vec<IpAddr>,
    /// Refuse relaying to the relay's own addresses except at relayed ports in use. On by
    /// default; off only for setups whose peers share the relay's address on purpose
    /// (`--allow-relay-to-self`).
    pub guard_own_addresses: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            realm: "geoturn".into(),
            software: None,
            relay_ip_v4: Some(IpAddr::from([127, 0, 0, 1])),
            relay_ip_v6: None,
            external_ip_v4: None,
            external_ip_v6: None,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            nonce_lifetime: Duration::from_secs(600),
            peer_policy: PeerPolicy::default(),
            nonce_tag: 0,
            nonce_key: [0; 32],
            transaction_cache_size: 8192,
            unauth_rate: 100,
            unauth_burst: 200,
            allocation_bps: 0,
            allocation_pps: 0,
            new_peers_per_sec: 0,
            anycast: Vec::new(),
            own_addresses: Vec::new(),
            guard_own_addresses: true,
        }
    }
}
