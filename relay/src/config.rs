//! Relay configuration: one struct read from flags and `GEOTURN_*` variables (clap) and from a
//! TOML file (serde, unknown keys refused), merged flag-over-file-over-default, then validated
//! into a [`RelayConfig`] with the offending option named in every error.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use geoturn_relay_proto::peer_policy::PeerPolicy;
use geoturn_shared::SecretSet;
use ipnet::IpNet;

pub use geoturn_shared::config::ConfigError;
use geoturn_shared::config::invalid;

/// Relay options as given; every field is optional so flags, variables and file merge.
#[derive(Debug, Clone, Default, clap::Args, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RelayOptions {
    /// TOML file with any of these options (kebab-case keys); flags and variables override it.
    #[arg(long, env = "GEOTURN_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// UDP and TCP address clients reach the relay on; repeat for dual stack (e.g.
    /// `0.0.0.0:3478` and `[::]:3478`) [default: 0.0.0.0:3478].
    #[arg(long = "listen", env = "GEOTURN_LISTEN", value_delimiter = ',')]
    #[serde(default)]
    pub listen: Vec<SocketAddr>,

    /// TLS (`turns:`) listen address; repeat to serve several (e.g. 5349 and 443)
    /// [default: port 5349 on each --listen IP when --tls-cert is set].
    #[arg(long = "tls-listen", env = "GEOTURN_TLS_LISTEN", value_delimiter = ',')]
    #[serde(default)]
    pub tls_listen: Vec<SocketAddr>,

    /// Anycast (first-contact) UDP and TCP address shared with other sites; repeatable.
    /// Allocates there are answered with 300 Try Alternate to a unicast relay of this region,
    /// so no session depends on the anycast route staying put.
    #[arg(
        long = "anycast-listen",
        env = "GEOTURN_ANYCAST_LISTEN",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub anycast_listen: Vec<SocketAddr>,

    /// Anycast TLS address; the certificate (--tls-cert) must also cover the anycast name.
    #[arg(
        long = "anycast-tls-listen",
        env = "GEOTURN_ANYCAST_TLS_LISTEN",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub anycast_tls_listen: Vec<SocketAddr>,

    /// PEM certificate chain for TLS; reloaded when the file changes or on SIGHUP.
    #[arg(long, env = "GEOTURN_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for TLS.
    #[arg(long, env = "GEOTURN_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Local IP relayed sockets bind to, at most one per address family; an IPv6 one enables
    /// IPv6 and dual-stack allocations [default: each listen IP; on an IPv4 wildcard, the
    /// first non-loopback IPv4 address].
    #[arg(long = "relay-ip", env = "GEOTURN_RELAY_IP", value_delimiter = ',')]
    #[serde(default)]
    pub relay_ip: Vec<IpAddr>,

    /// Relayed port range, `LOW-HIGH` [default: 49152-65535].
    #[arg(long, env = "GEOTURN_RELAY_PORTS")]
    pub relay_ports: Option<String>,

    /// Public address advertised to clients, `PUBLIC` or `PUBLIC/PRIVATE` (1:1 NAT, e.g. cloud
    /// VMs: relayed sockets bind to PRIVATE and clients are told PUBLIC); one per family.
    #[arg(
        long = "external-ip",
        env = "GEOTURN_EXTERNAL_IP",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub external_ip: Vec<String>,

    /// REALM of the long-term credential mechanism [default: geoturn].
    #[arg(long, env = "GEOTURN_REALM")]
    pub realm: Option<String>,

    /// Shared secret for TURN REST credentials; repeat (or comma-separate in the variable) to
    /// keep several live during rotation, newest first. Prefer the variable or the file: flags
    /// show in `ps`.
    #[arg(
        long = "auth-secret",
        env = "GEOTURN_AUTH_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    #[serde(default, rename = "auth-secrets")]
    pub auth_secrets: Vec<String>,

    /// Peer CIDR to allow even though it is in a range refused by default (repeatable).
    #[arg(
        long = "allow-peer",
        env = "GEOTURN_ALLOW_PEERS",
        value_delimiter = ','
    )]
    #[serde(default, rename = "allow-peers")]
    pub allow_peers: Vec<IpNet>,

    /// Peer CIDR to refuse (repeatable); wins over --allow-peer.
    #[arg(long = "deny-peer", env = "GEOTURN_DENY_PEERS", value_delimiter = ',')]
    #[serde(default, rename = "deny-peers")]
    pub deny_peers: Vec<IpNet>,

    /// Worker threads, each with its own listening socket (SO_REUSEPORT) [default: one per core].
    #[arg(long, env = "GEOTURN_WORKERS")]
    pub workers: Option<usize>,

    /// Most allocations this relay holds; more get 508 [default: 0 = unlimited].
    #[arg(long, env = "GEOTURN_MAX_ALLOCATIONS")]
    pub max_allocations: Option<usize>,

    /// Most allocations one user id holds; more get 486. A credential copied from a web page
    /// takes at most this many ports [default: 64; 0 = unlimited].
    #[arg(long, env = "GEOTURN_USER_QUOTA")]
    pub user_quota: Option<u32>,

    /// Most allocations one client IPv4 address or IPv6 /64 holds, whatever user ids its
    /// credentials carry (a signaling server's API key can mint any); more get 486. Room for an
    /// office behind one NAT [default: 500; 0 = unlimited].
    #[arg(long, env = "GEOTURN_ALLOCATIONS_PER_IP")]
    pub allocations_per_ip: Option<u32>,

    /// Relayed bits per second per allocation, both directions together; more is dropped.
    /// Far above a call's needs; bounds what one copied credential can push through the relay
    /// [default: 100000000; 0 = unlimited].
    #[arg(long, env = "GEOTURN_MAX_BPS")]
    pub max_bps: Option<u64>,

    /// Relayed datagrams per second per allocation, both directions together; more are
    /// dropped. A 4K screen share is a few thousand [default: 10000; 0 = unlimited].
    #[arg(long, env = "GEOTURN_MAX_PPS")]
    pub max_pps: Option<u64>,

    /// New peers per second per allocation, after a burst of 32: permissions for an IP that
    /// has none, and RFC 6062 Connects; more get 508. A call adds a handful of peers at its
    /// start; a scan through the relay adds them without end [default: 5; 0 = unlimited].
    #[arg(long, env = "GEOTURN_MAX_NEW_PEERS_PER_SEC")]
    pub max_new_peers_per_sec: Option<u32>,

    /// Receive and send buffer of each UDP listening socket in bytes; the kernel caps it at
    /// net.core.rmem_max / wmem_max [default: 4194304; 0 = the system default].
    #[arg(long, env = "GEOTURN_SOCKET_BUFFER")]
    pub socket_buffer: Option<usize>,

    /// Receive buffer of each relayed UDP socket in bytes, a limit the kernel charges only for
    /// what is queued; raise it (and net.core.rmem_max) when peers send bursts faster than a
    /// worker is scheduled [default: 0 = the system default].
    #[arg(long, env = "GEOTURN_RELAY_SOCKET_BUFFER")]
    pub relay_socket_buffer: Option<usize>,

    /// Relay established channels of UDP clients in the kernel (an eBPF TC program) instead
    /// of through sockets: `auto` does where the build, kernel and privileges allow, `on`
    /// refuses to start otherwise, `off` never does [default: auto].
    #[arg(long, env = "GEOTURN_OFFLOAD", value_enum)]
    pub offload: Option<crate::offload::OffloadMode>,

    /// Send runs of datagrams to one destination (a video frame's packets, say) as one UDP
    /// GSO send, where the kernel has it (Linux 4.18+); off sends every datagram on its own
    /// [default: true].
    #[arg(long, env = "GEOTURN_UDP_GSO", num_args = 0..=1, default_missing_value = "true")]
    pub udp_gso: Option<bool>,

    /// Responses to unauthenticated requests per second per source IP (bounds what a
    /// spoofed source can be sent; high enough for a busy office behind one NAT)
    /// [default: 100; 0 = unlimited].
    #[arg(long, env = "GEOTURN_UNAUTH_RATE")]
    pub unauth_rate: Option<u32>,

    /// Relay to this relay's own addresses (listen, relayed, external, anycast) at any port,
    /// not only at relayed ports in use. Off by default: on, a client reaches every service of
    /// this host through the relay. Only for test setups whose peers share the relay's address.
    #[arg(long, env = "GEOTURN_ALLOW_RELAY_TO_SELF", num_args = 0..=1, default_missing_value = "true")]
    pub allow_relay_to_self: Option<bool>,

    /// TCP and TLS client connections at once from one IPv4 address or IPv6 /64, relay-wide
    /// (room for an office behind one NAT, whose browsers open several each; one address
    /// cannot take every descriptor) [default: 500; 0 = unlimited].
    #[arg(long, env = "GEOTURN_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,

    /// Burst of responses to unauthenticated requests per source IP [default: 200].
    #[arg(long, env = "GEOTURN_UNAUTH_BURST")]
    pub unauth_burst: Option<u32>,

    /// Allocation lifetime in seconds when the client asks for none [default: 600].
    #[arg(long, env = "GEOTURN_DEFAULT_LIFETIME")]
    pub default_lifetime: Option<u64>,

    /// Longest allocation lifetime in seconds [default: 3600].
    #[arg(long, env = "GEOTURN_MAX_LIFETIME")]
    pub max_lifetime: Option<u64>,

    /// Address of the ops HTTP listener (/metrics, /status, /healthz, /readyz, POST /drain)
    /// [default: 127.0.0.1:9641].
    #[arg(long, env = "GEOTURN_HTTP")]
    pub http: Option<SocketAddr>,

    /// Bearer token that authorises `POST /drain`; without one, draining over HTTP is refused.
    #[arg(long, env = "GEOTURN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// This relay's id in the registry and in /status [default: the host name].
    #[arg(long, env = "GEOTURN_NODE_ID")]
    pub node_id: Option<String>,

    /// Region name [default: default].
    #[arg(long, env = "GEOTURN_REGION")]
    pub region: Option<String>,

    /// Latitude of this relay, for geo routing [default: 0].
    #[arg(long, env = "GEOTURN_LAT", allow_hyphen_values = true)]
    pub lat: Option<f64>,

    /// Longitude of this relay, for geo routing [default: 0].
    #[arg(long, env = "GEOTURN_LON", allow_hyphen_values = true)]
    pub lon: Option<f64>,

    /// Allocations this relay is sized for, reported as capacity [default: 10000].
    #[arg(long, env = "GEOTURN_CAPACITY_ALLOCATIONS")]
    pub capacity_allocations: Option<u64>,

    /// Relayed bandwidth this relay is sized for, in Mbit/s [default: 1000].
    #[arg(long, env = "GEOTURN_CAPACITY_MBPS")]
    pub capacity_mbps: Option<u64>,

    /// Seconds a drain waits for allocations to end before the relay exits anyway
    /// [default: 3600].
    #[arg(long, env = "GEOTURN_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<u64>,

    /// Registry to publish this relay's load in: `redis://[user:pass@]host:port/db` or
    /// `rediss://…` (TLS) [default: none: the relay runs alone].
    #[arg(long, env = "GEOTURN_REGISTRY", hide_env_values = true)]
    pub registry: Option<String>,

    /// Key prefix in the registry; a `{hash tag}` keeps Redis Cluster keys in one slot
    /// [default: geoturn:].
    #[arg(long, env = "GEOTURN_REGISTRY_PREFIX")]
    pub registry_prefix: Option<String>,

    /// Seconds between registry heartbeats; a record lives 3 heartbeats [default: 2].
    #[arg(long, env = "GEOTURN_HEARTBEAT")]
    pub heartbeat: Option<f64>,

    /// 32-byte key (64 hex digits or base64) that decrypts the shared secrets stored in the
    /// registry; with it the relay follows secret rotations without restarts.
    #[arg(long, env = "GEOTURN_SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<String>,

    /// UDP address of the relay-to-relay QUIC mesh (inter-relay RTT for the API's region
    /// matrix), e.g. `0.0.0.0:9643`; needs --registry and --secrets-key (peers are pinned
    /// through MAC'd registry records). Open it between relays only [default: off].
    #[arg(long, env = "GEOTURN_MESH_LISTEN")]
    pub mesh_listen: Option<SocketAddr>,

    /// Address other relays dial for the mesh [default: --mesh-listen, its wildcard IP
    /// replaced by the external or relay IP].
    #[arg(long, env = "GEOTURN_MESH_ADVERTISE")]
    pub mesh_advertise: Option<SocketAddr>,

    /// Most mesh peers (QUIC connections) at once [default: 256].
    #[arg(long, env = "GEOTURN_MESH_MAX_PEERS")]
    pub mesh_max_peers: Option<usize>,

    /// Host name clients use in `turn:`/`turns:` URLs (must match the TLS certificate)
    /// [default: the advertised IP].
    #[arg(long, env = "GEOTURN_PUBLIC_HOST")]
    pub public_host: Option<String>,

    /// Log format: `text` or `json` [default: text].
    #[arg(long, env = "GEOTURN_LOG_FORMAT")]
    pub log_format: Option<String>,

    /// Show client addresses and user ids in logs (off: they print as <redacted>).
    #[arg(long, env = "GEOTURN_LOG_PII", num_args = 0..=1, default_missing_value = "true")]
    pub log_pii: Option<bool>,
}

/// TLS settings.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Listen addresses.
    pub listen: Vec<SocketAddr>,
    /// Anycast (first-contact) TLS listen addresses.
    pub anycast_listen: Vec<SocketAddr>,
    /// Certificate chain file.
    pub cert: PathBuf,
    /// Key file.
    pub key: PathBuf,
}

/// Registry settings.
#[derive(Clone)]
pub struct RegistryConfig {
    /// `redis://…`, `rediss://…` or `memory`.
    pub url: String,
    /// Key prefix.
    pub prefix: String,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Key for the encrypted secrets.
    pub secrets_key: Option<[u8; 32]>,
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &geoturn_shared::registry::redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("heartbeat", &self.heartbeat)
            .field("secrets_key", &self.secrets_key.map(|_| "<redacted>"))
            .finish()
    }
}

/// A validated relay configuration.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Listening UDP and TCP addresses.
    pub listen: Vec<SocketAddr>,
    /// Anycast (first-contact) UDP and TCP addresses.
    pub anycast_listen: Vec<SocketAddr>,
    /// TLS listeners, when a certificate is configured.
    pub tls: Option<TlsConfig>,
    /// Local IP of relayed sockets.
    pub relay_ip_v4: Option<IpAddr>,
    /// Local IPv6 address of relayed sockets.
    pub relay_ip_v6: Option<IpAddr>,
    /// Relayed port range.
    pub relay_ports: RangeInclusive<u16>,
    /// Advertised IPv4 address, if different from the relay IP.
    pub external_ip_v4: Option<IpAddr>,
    /// Advertised IPv6 address, if different from the relay IP.
    pub external_ip_v6: Option<IpAddr>,
    /// Realm.
    pub realm: String,
    /// Secrets.
    pub secrets: SecretSet,
    /// Peer policy.
    pub peer_policy: PeerPolicy,
    /// Worker threads.
    pub workers: usize,
    /// Total allocation cap (0 = none).
    pub max_allocations: usize,
    /// Per-user cap (0 = none).
    pub user_quota: u32,
    /// Allocations per client IPv4 address or IPv6 /64 (0 = unlimited).
    pub allocations_per_ip: u32,
    /// Per-allocation bandwidth limit in bit/s (0 = none).
    pub max_bps: u64,
    /// Per-allocation datagrams per second (0 = none).
    pub max_pps: u64,
    /// Per-allocation new peers per second after a burst of 32 (0 = none).
    pub max_new_peers_per_sec: u32,
    /// Listening sockets' buffer size in bytes (0 = system default).
    pub socket_buffer: usize,
    /// Relayed sockets' receive buffer size in bytes (0 = system default).
    pub relay_socket_buffer: usize,
    /// Batched sends use UDP GSO where the kernel has it.
    pub udp_gso: bool,
    /// The eBPF fast path for established channels.
    pub offload: crate::offload::OffloadMode,
    /// Unauthenticated responses per second per source (0 = no limit).
    pub unauth_rate: u32,
    /// Their burst.
    pub unauth_burst: u32,
    /// TCP/TLS client connections per IPv4 address or IPv6 /64 (0 = no limit).
    pub max_connections_per_ip: usize,
    /// Relay to the relay's own addresses at any port (the guard off).
    pub allow_relay_to_self: bool,
    /// Default allocation lifetime.
    pub default_lifetime: Duration,
    /// Maximum allocation lifetime.
    pub max_lifetime: Duration,
    /// JSON logs.
    pub log_json: bool,
    /// Reveal PII in logs.
    pub log_pii: bool,
    /// Ops HTTP listener.
    pub http: SocketAddr,
    /// Token for `POST /drain`.
    pub admin_token: Option<geoturn_shared::SecretValue>,
    /// Node id.
    pub node_id: String,
    /// Region.
    pub region: String,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// Allocation capacity.
    pub capacity_allocations: u64,
    /// Bandwidth capacity in Mbit/s.
    pub capacity_mbps: u64,
    /// Longest drain.
    pub drain_timeout: Duration,
    /// Registry, if any.
    pub registry: Option<RegistryConfig>,
    /// Host name for URLs.
    pub public_host: Option<String>,
    /// The relay mesh, when `--mesh-listen` is set.
    pub mesh: Option<crate::mesh::MeshConfig>,
}

impl RelayOptions {
    /// Fills every option not given on the command line or in the environment from the
    /// `--config` file, if any.
    pub fn with_file(self) -> Result<Self, ConfigError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let file: RelayOptions = geoturn_shared::config::read_file(&path, |t| toml::from_str(t))?;
        Ok(self.over(file))
    }

    /// `self` where set, `base` otherwise.
    pub fn over(self, base: RelayOptions) -> RelayOptions {
        fn vec_or<T>(a: Vec<T>, b: Vec<T>) -> Vec<T> {
            if a.is_empty() { b } else { a }
        }
        RelayOptions {
            config: self.config.or(base.config),
            listen: vec_or(self.listen, base.listen),
            tls_listen: vec_or(self.tls_listen, base.tls_listen),
            anycast_listen: vec_or(self.anycast_listen, base.anycast_listen),
            anycast_tls_listen: vec_or(self.anycast_tls_listen, base.anycast_tls_listen),
            tls_cert: self.tls_cert.or(base.tls_cert),
            tls_key: self.tls_key.or(base.tls_key),
            relay_ip: vec_or(self.relay_ip, base.relay_ip),
            relay_ports: self.relay_ports.or(base.relay_ports),
            external_ip: vec_or(self.external_ip, base.external_ip),
            realm: self.realm.or(base.realm),
            auth_secrets: vec_or(self.auth_secrets, base.auth_secrets),
            allow_peers: vec_or(self.allow_peers, base.allow_peers),
            deny_peers: vec_or(self.deny_peers, base.deny_peers),
            workers: self.workers.or(base.workers),
            max_allocations: self.max_allocations.or(base.max_allocations),
            user_quota: self.user_quota.or(base.user_quota),
            allocations_per_ip: self.allocations_per_ip.or(base.allocations_per_ip),
            max_bps: self.max_bps.or(base.max_bps),
            max_pps: self.max_pps.or(base.max_pps),
            max_new_peers_per_sec: self.max_new_peers_per_sec.or(base.max_new_peers_per_sec),
            socket_buffer: self.socket_buffer.or(base.socket_buffer),
            relay_socket_buffer: self.relay_socket_buffer.or(base.relay_socket_buffer),
            udp_gso: self.udp_gso.or(base.udp_gso),
            offload: self.offload.or(base.offload),
            unauth_rate: self.unauth_rate.or(base.unauth_rate),
            unauth_burst: self.unauth_burst.or(base.unauth_burst),
            max_connections_per_ip: self.max_connections_per_ip.or(base.max_connections_per_ip),
            allow_relay_to_self: self.allow_relay_to_self.or(base.allow_relay_to_self),
            default_lifetime: self.default_lifetime.or(base.default_lifetime),
            max_lifetime: self.max_lifetime.or(base.max_lifetime),
            http: self.http.or(base.http),
            admin_token: self.admin_token.or(base.admin_token),
            node_id: self.node_id.or(base.node_id),
            region: self.region.or(base.region),
            lat: self.lat.or(base.lat),
            lon: self.lon.or(base.lon),
            capacity_allocations: self.capacity_allocations.or(base.capacity_allocations),
            capacity_mbps: self.capacity_mbps.or(base.capacity_mbps),
            drain_timeout: self.drain_timeout.or(base.drain_timeout),
            registry: self.registry.or(base.registry),
            registry_prefix: self.registry_prefix.or(base.registry_prefix),
            heartbeat: self.heartbeat.or(base.heartbeat),
            secrets_key: self.secrets_key.or(base.secrets_key),
            public_host: self.public_host.or(base.public_host),
            mesh_listen: self.mesh_listen.or(base.mesh_listen),
            mesh_advertise: self.mesh_advertise.or(base.mesh_advertise),
            mesh_max_peers: self.mesh_max_peers.or(base.mesh_max_peers),
            log_format: self.log_format.or(base.log_format),
            log_pii: self.log_pii.or(base.log_pii),
        }
    }

    /// Applies defaults and validates.
    pub fn resolve(self) -> Result<RelayConfig, ConfigError> {
        let listen = if self.listen.is_empty() {
            vec![SocketAddr::from(([0, 0, 0, 0], 3478))]
        } else {
            self.listen
        };
        let relay_ports = parse_port_range(self.relay_ports.as_deref().unwrap_or("49152-65535"))?;
        // Per family: [IPv4, IPv6].
        let mut external = [None, None];
        let mut private = [None, None];
        for e in &self.external_ip {
            let (public, private_ip) = parse_external_ip(e)?;
            let f = family_index(public);
            if external.get(f).copied().flatten().is_some() {
                return Err(invalid("external-ip", "at most one per address family"));
            }
            if let Some(slot) = external.get_mut(f) {
                *slot = Some(public);
            }
            if let (Some(p), Some(slot)) = (private_ip, private.get_mut(f)) {
                *slot = Some(p);
            }
        }
        let mut relay = [None, None];
        for ip in &self.relay_ip {
            if ip.is_unspecified() {
                return Err(invalid(
                    "relay-ip",
                    "must be a concrete address, not a wildcard",
                ));
            }
            match relay.get_mut(family_index(*ip)) {
                Some(slot) if slot.is_none() => *slot = Some(*ip),
                _ => return Err(invalid("relay-ip", "at most one per address family")),
            }
        }
        for f in 0..2 {
            let (Some(slot), Some(p)) = (relay.get_mut(f), private.get(f).copied()) else {
                continue;
            };
            if slot.is_none() {
                *slot = p;
            }
        }
        for l in &listen {
            let Some(slot) = relay.get_mut(family_index(l.ip())) else {
                continue;
            };
            if slot.is_some() {
                continue;
            }
            if !l.ip().is_unspecified() {
                *slot = Some(l.ip());
            } else if l.is_ipv4() {
                *slot = Some(
                    crate::net::interfaces::first_non_loopback_ipv4().ok_or_else(|| {
                        invalid(
                            "relay-ip",
                            "listening on a wildcard address and no non-loopback IPv4 interface \
                         found; set --relay-ip",
                        )
                    })?,
                );
            }
        }
        let [relay_ip_v4, relay_ip_v6] = relay;
        if relay_ip_v4.is_none() && relay_ip_v6.is_none() {
            return Err(invalid(
                "relay-ip",
                "no relay address: set --relay-ip (an IPv6 wildcard listen has no default)",
            ));
        }
        let [external_ip_v4, external_ip_v6] = external;
        let secrets_key = match self.secrets_key.as_deref() {
            None => None,
            Some(k) => Some(geoturn_shared::registry::parse_secrets_key(k).map_err(|_| {
                invalid("secrets-key", "must be 32 bytes as 64 hex digits or base64")
            })?),
        };
        let registry = match self.registry {
            None => {
                if secrets_key.is_some() {
                    return Err(invalid("secrets-key", "needs --registry"));
                }
                None
            }
            Some(url) => {
                if !(url == "memory" || url.starts_with("redis://") || url.starts_with("rediss://"))
                {
                    return Err(invalid(
                        "registry",
                        "must be redis://…, rediss://… or memory",
                    ));
                }
                let heartbeat = self.heartbeat.unwrap_or(2.0);
                if !(0.05..=60.0).contains(&heartbeat) {
                    return Err(invalid("heartbeat", "must be between 0.05 and 60 seconds"));
                }
                Some(RegistryConfig {
                    url,
                    prefix: self
                        .registry_prefix
                        .unwrap_or_else(|| geoturn_shared::registry::DEFAULT_PREFIX.into()),
                    heartbeat: Duration::from_secs_f64(heartbeat),
                    secrets_key,
                })
            }
        };
        let secrets_from_registry = registry.as_ref().is_some_and(|r| r.secrets_key.is_some());
        if self.auth_secrets.is_empty() && !secrets_from_registry {
            return Err(invalid(
                "auth-secret",
                "at least one shared secret is required (GEOTURN_AUTH_SECRETS), unless the \
                 secrets come from the registry (--registry with --secrets-key)",
            ));
        }
        for secret in &self.auth_secrets {
            geoturn_shared::secret_set::check_secret_len(secret)
                .map_err(|e| invalid("auth-secret", e))?;
        }
        let realm = self.realm.unwrap_or_else(|| "geoturn".into());
        if realm.is_empty() || realm.len() > 127 {
            return Err(invalid("realm", "must be 1 to 127 bytes"));
        }
        let workers = match self.workers {
            Some(0) => return Err(invalid("workers", "must be at least 1")),
            Some(n) if n > 256 => return Err(invalid("workers", "at most 256")),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let default_lifetime = self.default_lifetime.unwrap_or(600);
        let max_lifetime = self.max_lifetime.unwrap_or(3600);
        if default_lifetime == 0 || default_lifetime > max_lifetime {
            return Err(invalid(
                "default-lifetime",
                "must be between 1 and max-lifetime",
            ));
        }
        let log_json = match self.log_format.as_deref().unwrap_or("text") {
            "text" => false,
            "json" => true,
            other => {
                return Err(invalid(
                    "log-format",
                    format!("`{other}` is not text or json"),
                ));
            }
        };
        let node_id = match self.node_id {
            Some(id) => id,
            None => hostname().unwrap_or_else(|| "relay".into()),
        };
        check_name("node-id", &node_id)?;
        let region = self.region.unwrap_or_else(|| "default".into());
        check_name("region", &region)?;
        let lat = self.lat.unwrap_or(0.0);
        if !(-90.0..=90.0).contains(&lat) {
            return Err(invalid("lat", "must be between -90 and 90"));
        }
        let lon = self.lon.unwrap_or(0.0);
        if !(-180.0..=180.0).contains(&lon) {
            return Err(invalid("lon", "must be between -180 and 180"));
        }
        let admin_token = match self.admin_token {
            Some(t) if t.len() < 16 => {
                return Err(invalid("admin-token", "must be at least 16 bytes"));
            }
            t => t.map(geoturn_shared::SecretValue::new),
        };
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsConfig {
                listen: if self.tls_listen.is_empty() {
                    listen
                        .iter()
                        .map(|l| SocketAddr::new(l.ip(), 5349))
                        .collect()
                } else {
                    self.tls_listen
                },
                anycast_listen: self.anycast_tls_listen.clone(),
                cert,
                key,
            }),
            (None, None) if self.tls_listen.is_empty() && self.anycast_tls_listen.is_empty() => {
                None
            }
            (None, None) if self.tls_listen.is_empty() => {
                return Err(invalid(
                    "anycast-tls-listen",
                    "needs --tls-cert and --tls-key",
                ));
            }
            (None, None) => {
                return Err(invalid("tls-listen", "needs --tls-cert and --tls-key"));
            }
            (Some(_), None) => return Err(invalid("tls-key", "needed with --tls-cert")),
            (None, Some(_)) => return Err(invalid("tls-cert", "needed with --tls-key")),
        };
        if let Some(a) = self.anycast_listen.iter().find(|a| listen.contains(a)) {
            return Err(invalid(
                "anycast-listen",
                format!("{a} is also a --listen address; anycast addresses are first contact only"),
            ));
        }
        if let Some(h) = &self.public_host
            && !geoturn_shared::registry::is_valid_host(h)
        {
            // The registry would refuse every record carrying it, hiding the relay.
            return Err(invalid(
                "public-host",
                "1-253 characters of letters, digits, '-' and '.'",
            ));
        }
        let max = geoturn_shared::registry::MAX_ADDRS_PER_TRANSPORT;
        let tls_count = tls.as_ref().map_or(0, |t| t.listen.len());
        if registry.is_some() && listen.len().max(tls_count) > max {
            // The record holds at most this many addresses per transport.
            let option = if listen.len() > max {
                "listen"
            } else {
                "tls-listen"
            };
            return Err(invalid(
                option,
                format!("at most {max} addresses with a registry"),
            ));
        }
        let mesh = match self.mesh_listen {
            None if self.mesh_advertise.is_some() => {
                return Err(invalid("mesh-advertise", "needs --mesh-listen"));
            }
            None => None,
            Some(listen) => {
                let max_peers = self.mesh_max_peers.unwrap_or(256);
                let cap = geoturn_shared::registry::MAX_MESH_NODES;
                if !(1..=cap).contains(&max_peers) {
                    return Err(invalid("mesh-max-peers", format!("must be 1 to {cap}")));
                }
                if let Some(a) = self.mesh_advertise
                    && (a.ip().is_unspecified() || a.port() == 0)
                {
                    return Err(invalid(
                        "mesh-advertise",
                        "must be a concrete IP and port peers can dial",
                    ));
                }
                Some(crate::mesh::MeshConfig {
                    listen,
                    advertise: self.mesh_advertise,
                    max_peers,
                })
            }
        };
        Ok(RelayConfig {
            mesh,
            anycast_listen: self.anycast_listen,
            registry,
            public_host: self.public_host,
            tls,
            http: self
                .http
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9641))),
            admin_token,
            node_id,
            region,
            lat,
            lon,
            capacity_allocations: self.capacity_allocations.unwrap_or(10_000).max(1),
            capacity_mbps: self.capacity_mbps.unwrap_or(1000).max(1),
            drain_timeout: Duration::from_secs(self.drain_timeout.unwrap_or(3600)),
            listen,
            relay_ip_v4,
            relay_ip_v6,
            relay_ports,
            external_ip_v4,
            external_ip_v6,
            realm,
            secrets: SecretSet::from_values(self.auth_secrets),
            peer_policy: PeerPolicy::new(self.allow_peers, self.deny_peers),
            workers,
            max_allocations: self.max_allocations.unwrap_or(0),
            user_quota: self.user_quota.unwrap_or(64),
            allocations_per_ip: self.allocations_per_ip.unwrap_or(500),
            max_bps: self.max_bps.unwrap_or(100_000_000),
            max_pps: self.max_pps.unwrap_or(10_000),
            max_new_peers_per_sec: self.max_new_peers_per_sec.unwrap_or(5),
            socket_buffer: self.socket_buffer.unwrap_or(4 << 20),
            relay_socket_buffer: self.relay_socket_buffer.unwrap_or(0),
            udp_gso: self.udp_gso.unwrap_or(true),
            offload: self.offload.unwrap_or_default(),
            unauth_rate: self.unauth_rate.unwrap_or(100),
            unauth_burst: self.unauth_burst.unwrap_or(200),
            max_connections_per_ip: self.max_connections_per_ip.unwrap_or(500),
            allow_relay_to_self: self.allow_relay_to_self.unwrap_or(false),
            default_lifetime: Duration::from_secs(default_lifetime),
            max_lifetime: Duration::from_secs(max_lifetime),
            log_json,
            log_pii: self.log_pii.unwrap_or(false),
        })
    }
}

/// Node ids and region names go into Redis keys and metrics labels: keep them plain.
fn check_name(option: &'static str, value: &str) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(option, "1 to 64 characters of A-Z a-z 0-9 . _ -"))
    }
}

fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    (!name.is_empty()).then_some(name)
}

fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, ConfigError> {
    let bad = || {
        invalid(
            "relay-ports",
            format!("`{s}` is not LOW-HIGH with 1024 <= LOW <= HIGH"),
        )
    };
    let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo < 1024 || lo > hi {
        return Err(bad());
    }
    Ok(lo..=hi)
}

fn family_index(ip: IpAddr) -> usize {
    usize::from(ip.is_ipv6())
}

fn parse_external_ip(s: &str) -> Result<(IpAddr, Option<IpAddr>), ConfigError> {
    let bad = || {
        invalid(
            "external-ip",
            format!("`{s}` is not PUBLIC or PUBLIC/PRIVATE of one address family"),
        )
    };
    match s.split_once('/') {
        None => Ok((s.trim().parse().map_err(|_| bad())?, None)),
        Some((public, private)) => {
            let public: IpAddr = public.trim().parse().map_err(|_| bad())?;
            let private: IpAddr = private.trim().parse().map_err(|_| bad())?;
            if public.is_ipv4() != private.is_ipv4() {
                return Err(bad());
            }
            Ok((public, Some(private)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> RelayOptions {
        RelayOptions {
            listen: vec!["127.0.0.1:3478".parse().unwrap()],
            auth_secrets: vec!["0123456789abcdef".into()],
            ..Default::default()
        }
    }

    #[test]
    fn defaults() {
        let c = base().resolve().unwrap();
        assert_eq!(c.relay_ip_v4, Some("127.0.0.1".parse::<IpAddr>().unwrap()));
        assert_eq!(c.relay_ip_v6, None);
        assert_eq!(c.relay_ports, 49152..=65535);
        assert_eq!(c.default_lifetime, Duration::from_secs(600));
        assert_eq!(c.realm, "geoturn");
    }

    #[test]
    fn errors_name_the_option() {
        let cases: Vec<(RelayOptions, &str)> = vec![
            (
                RelayOptions {
                    auth_secrets: vec![],
                    ..base()
                },
                "auth-secret",
            ),
            (
                RelayOptions {
                    auth_secrets: vec!["short".into()],
                    ..base()
                },
                "auth-secret",
            ),
            (
                RelayOptions {
                    relay_ports: Some("5-4".into()),
                    ..base()
                },
                "relay-ports",
            ),
            (
                RelayOptions {
                    relay_ports: Some("60000-50000".into()),
                    ..base()
                },
                "relay-ports",
            ),
            (
                RelayOptions {
                    external_ip: vec!["nope".into()],
                    ..base()
                },
                "external-ip",
            ),
            (
                RelayOptions {
                    workers: Some(0),
                    ..base()
                },
                "workers",
            ),
            (
                RelayOptions {
                    log_format: Some("xml".into()),
                    ..base()
                },
                "log-format",
            ),
            (
                RelayOptions {
                    default_lifetime: Some(7200),
                    ..base()
                },
                "default-lifetime",
            ),
            (
                RelayOptions {
                    public_host: Some("turn.example.com:3478".into()),
                    ..base()
                },
                "public-host",
            ),
            (
                RelayOptions {
                    public_host: Some("has space.example".into()),
                    ..base()
                },
                "public-host",
            ),
            (
                RelayOptions {
                    registry: Some("memory".into()),
                    listen: (3478..3487)
                        .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
                        .collect(),
                    ..base()
                },
                "listen",
            ),
        ];
        for (opts, option) in cases {
            let e = opts.resolve().unwrap_err().to_string();
            assert!(e.contains(option), "{e}");
        }
    }

    #[test]
    fn dual_stack_listens_and_relays_on_both_families() {
        let c = RelayOptions {
            listen: vec![
                "127.0.0.1:3478".parse().unwrap(),
                "[::1]:3478".parse().unwrap(),
            ],
            ..base()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.relay_ip_v4, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(c.relay_ip_v6, Some("::1".parse().unwrap()));
        let e = RelayOptions {
            relay_ip: vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()],
            ..base()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(e.contains("relay-ip"), "{e}");
        // An IPv6 wildcard alone has no relay address to default to.
        let e = RelayOptions {
            listen: vec!["[::]:3478".parse().unwrap()],
            ..base()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(e.contains("relay-ip"), "{e}");
    }

    #[test]
    fn external_ip_with_private_part_sets_bind_address() {
        let c = RelayOptions {
            listen: vec!["0.0.0.0:3478".parse().unwrap()],
            external_ip: vec!["203.0.113.5/10.0.0.5".into()],
            ..base()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.external_ip_v4, Some("203.0.113.5".parse().unwrap()));
        assert_eq!(c.relay_ip_v4, Some("10.0.0.5".parse::<IpAddr>().unwrap()));
    }

    #[test]
    fn file_fills_what_flags_leave_out_and_rejects_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("geoturn-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relay.toml");
        std::fs::write(
            &path,
            "realm = \"example.org\"\nrelay-ports = \"50000-50100\"\nauth-secrets = [\"fromfile-0123456789\"]\n",
        )
        .unwrap();
        let c = RelayOptions {
            config: Some(path.clone()),
            realm: Some("flag.example".into()),
            listen: vec!["127.0.0.1:3478".parse().unwrap()],
            ..Default::default()
        }
        .with_file()
        .unwrap()
        .resolve()
        .unwrap();
        assert_eq!(c.realm, "flag.example");
        assert_eq!(c.relay_ports, 50000..=50100);
        std::fs::write(&path, "relam = \"typo\"\n").unwrap();
        let e = RelayOptions {
            config: Some(path),
            ..Default::default()
        }
        .with_file()
        .unwrap_err()
        .to_string();
        assert!(e.contains("relam"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
