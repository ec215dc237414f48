//! Starting and stopping a relay: binds one listening socket per worker, spawns the workers and
//! hands back a [`RelayHandle`] to rotate secrets, drain, read status and stop.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use geoturn_relay_proto::Transport;
use geoturn_relay_proto::allocation::ports::PortPool;
use geoturn_relay_proto::allocation::quota::Quota;
use geoturn_relay_proto::allocation::revoked::Revocations;
use geoturn_relay_proto::allocation::tcp::TcpConnections;
use geoturn_relay_proto::server::{Alternate, Drain};
use geoturn_relay_proto::{Server, ServerConfig, SharedTables, WallClock};
use geoturn_shared::SecretSet;
use rand::Rng;
use tokio::sync::watch;

use crate::config::RelayConfig;
use crate::net::tls::{self, CertStore};
use crate::net::worker::{self, ShardSnapshot, WorkerContext};
use crate::net::{listen, socket};

/// A running relay.
#[derive(Debug)]
pub struct RelayHandle {
    local_addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    cert_store: Option<Arc<CertStore>>,
    workers: Mutex<Vec<JoinHandle<std::io::Result<()>>>>,
    shutdown: watch::Sender<bool>,
    secrets: watch::Sender<SecretSet>,
    drain: watch::Sender<Option<Drain>>,
    anycast_addrs: Vec<SocketAddr>,
    first_contact: watch::Sender<Vec<Alternate>>,
    snapshots: Vec<Arc<Mutex<ShardSnapshot>>>,
    revocations: Arc<Revocations>,
    /// Bumped on each revocation, to wake the workers.
    revoked_tx: watch::Sender<u64>,
    tcp_relay: Arc<crate::net::tcp_relay::TcpRelay>,
    client_rtts: Arc<crate::client_rtt::ClientRtts>,
    /// The kernel fast path, when on; taken (and so detached) by [`RelayHandle::stop`].
    offload: Mutex<Option<Arc<crate::offload::Offload>>>,
}

/// Binds and starts a relay with `config`.
pub fn start(config: &RelayConfig) -> std::io::Result<RelayHandle> {
    let mut rng = rand::rng();
    // One nonce key for all shards: a client's retry may land on the same shard anyway (the
    // kernel hashes its 4-tuple), but a shared key keeps that an implementation detail.
    let nonce_key = fleet_nonce_key(config).unwrap_or_else(|| rng.random());
    // Names this process in its nonces: only its own yield round-trip samples.
    let nonce_tag: u16 = rng.random();
    let quota = Arc::new(Quota::new(
        config.user_quota,
        config.allocations_per_ip,
        config.max_allocations,
    ));
    let ports = Arc::new(PortPool::new(config.relay_ports.clone(), rng.random()));
    let tcp_connections = Arc::new(TcpConnections::new(rng.random()));
    let revocations = Arc::new(Revocations::default());
    let client_rtts = Arc::new(crate::client_rtt::ClientRtts::default());
    let (revoked_tx, _) = watch::channel(0u64);
    let streams_per_source = Arc::new(crate::net::stream::StreamsPerSource::new(
        config.max_connections_per_ip,
    ));
    let tcp_relay = Arc::new(crate::net::tcp_relay::TcpRelay::new(
        tcp_connections.clone(),
        config.max_bps,
    ));
    let (shutdown, _) = watch::channel(false);
    let (secrets, _) = watch::channel(config.secrets.clone());
    let (drain, _) = watch::channel(None);

    // Bind every listener before starting any worker so a bind error fails the start. Per
    // listen address, the first worker's socket fixes the port when 0 was asked for; TCP shares
    // the UDP address (RFC 8656 §3.1: the same port for both).
    let mut udp_per_worker: Vec<Vec<std::net::UdpSocket>> =
        (0..config.workers).map(|_| Vec::new()).collect();
    let mut tcp_per_worker: Vec<Vec<std::net::TcpListener>> =
        (0..config.workers).map(|_| Vec::new()).collect();
    let mut local_addrs = Vec::new();
    let mut anycast_addrs = Vec::new();
    let all_listen = config.listen.iter().map(|a| (a, false));
    for (addr, anycast) in all_listen.chain(config.anycast_listen.iter().map(|a| (a, true))) {
        let local = listen::claim(*addr, listen::Protocols::UdpAndTcp)?;
        if anycast {
            anycast_addrs.push(local);
        } else {
            local_addrs.push(local);
        }
        for (udp, tcp) in udp_per_worker.iter_mut().zip(tcp_per_worker.iter_mut()) {
            udp.push(socket::bind_reuseport(local, config.socket_buffer)?);
            tcp.push(socket::bind_reuseport_tcp(local)?);
        }
    }
    if local_addrs.is_empty() {
        return Err(std::io::Error::other("no listen address"));
    }
    let (cert_store, tls_acceptor, tls_addrs) = match &config.tls {
        None => (None, None, Vec::new()),
        Some(t) => {
            let store = CertStore::load(&t.cert, &t.key).map_err(std::io::Error::other)?;
            let server_config = tls::server_config(store.clone()).map_err(std::io::Error::other)?;
            let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
            let mut addrs = Vec::new();
            for addr in t.listen.iter().chain(&t.anycast_listen) {
                addrs.push(listen::claim(*addr, listen::Protocols::Tcp)?);
            }
            (Some(store), Some(acceptor), addrs)
        }
    };
    let mut tls_per_worker: Vec<Vec<(std::net::TcpListener, tokio_rustls::TlsAcceptor)>> =
        Vec::new();
    for _ in 0..config.workers {
        let mut mine = Vec::new();
        if let Some(acceptor) = &tls_acceptor {
            for addr in &tls_addrs {
                mine.push((socket::bind_reuseport_tcp(*addr)?, acceptor.clone()));
            }
        }
        tls_per_worker.push(mine);
    }
    let mut tls_local = tls_addrs;
    let unicast_tls = config.tls.as_ref().map_or(0, |t| t.listen.len());
    let anycast_tls = tls_local.split_off(unicast_tls.min(tls_local.len()));
    let anycast: Vec<SocketAddr> = anycast_addrs.iter().chain(&anycast_tls).copied().collect();
    // The relay's own addresses are peers only at relayed ports in use (the core adds the
    // relayed, external and anycast ones). A wildcard listener answers on every address.
    let listen_ips = local_addrs.iter().chain(&tls_local).map(SocketAddr::ip);
    let own_addresses: Vec<std::net::IpAddr> = if listen_ips.clone().any(|ip| ip.is_unspecified()) {
        crate::net::interfaces::all_addresses()
    } else {
        listen_ips.collect()
    };
    // After the listeners are bound (their real addresses) and before any worker runs, so
    // every shard knows from its first packet whether it has a fast path.
    let offload = crate::offload::start(
        config.offload,
        &local_addrs,
        [config.relay_ip_v4, config.relay_ip_v6],
    )
    .map_err(std::io::Error::other)?;
    // Until the registry names a less loaded sibling, first contacts come to this relay.
    let (first_contact, _) = watch::channel(own_unicast(config, &local_addrs, &tls_local));

    let mut workers = Vec::new();
    let mut snapshots = Vec::new();
    let mut tcp_per_worker = tcp_per_worker.into_iter();
    let mut tls_per_worker = tls_per_worker.into_iter();
    for (i, udp) in udp_per_worker.into_iter().enumerate() {
        let server_config = ServerConfig {
            realm: config.realm.clone(),
            relay_ip_v4: config.relay_ip_v4,
            relay_ip_v6: config.relay_ip_v6,
            external_ip_v4: config.external_ip_v4,
            external_ip_v6: config.external_ip_v6,
            default_lifetime: config.default_lifetime,
            max_lifetime: config.max_lifetime,
            peer_policy: config.peer_policy.clone(),
            nonce_key,
            nonce_tag,
            unauth_rate: config.unauth_rate,
            unauth_burst: config.unauth_burst,
            allocation_bps: config.max_bps,
            allocation_pps: config.max_pps,
            new_peers_per_sec: config.max_new_peers_per_sec,
            anycast: anycast.clone(),
            own_addresses: own_addresses.clone(),
            guard_own_addresses: !config.allow_relay_to_self,
            ..ServerConfig::default()
        };
        let snapshot = Arc::new(Mutex::new(ShardSnapshot::default()));
        snapshots.push(snapshot.clone());
        let ctx = WorkerContext {
            revoked: revoked_tx.subscribe(),
            server: Server::new(
                server_config,
                config.secrets.clone(),
                SharedTables {
                    quota: quota.clone(),
                    ports: ports.clone(),
                    tcp: tcp_connections.clone(),
                    revoked: revocations.clone(),
                },
                WallClock {
                    at: std::time::Instant::now(),
                    unix_ms: geoturn_shared::clock::unix_ms(),
                },
            ),
            secrets: secrets.subscribe(),
            drain: drain.subscribe(),
            first_contact: first_contact.subscribe(),
            shutdown: shutdown.subscribe(),
            snapshot,
            udp,
            relay_socket_buffer: config.relay_socket_buffer,
            udp_gso: config.udp_gso,
            streams_per_source: streams_per_source.clone(),
            tcp: tcp_per_worker.next().unwrap_or_default(),
            tcp_relay: tcp_relay.clone(),
            tls: tls_per_worker.next().unwrap_or_default(),
            client_rtts: client_rtts.clone(),
            offload: offload.clone(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("geoturn-worker-{i}"))
            .spawn(move || worker::run_worker(ctx))?;
        workers.push(handle);
    }
    tracing::info!(
        listen = ?local_addrs,
        relay_ip_v4 = ?config.relay_ip_v4,
        relay_ip_v6 = ?config.relay_ip_v6,
        workers = config.workers,
        tls = ?tls_local,
        anycast = ?anycast,
        "relay listening (udp, tcp{})",
        if tls_local.is_empty() { "" } else { ", tls" }
    );
    warn_reaches_inside(config);
    warn_relay_ips_elsewhere(config);
    if !tls_local.is_empty() && config.public_host.is_none() {
        tracing::warn!(
            "TLS is on but --public-host is not set: turns: URLs carry the IP address, and \
             browsers check the certificate against the URL's host, so they refuse them; set \
             --public-host to the name the certificate covers"
        );
    }
    Ok(RelayHandle {
        local_addrs,
        tls_addrs: tls_local,
        anycast_addrs: anycast,
        first_contact,
        cert_store,
        workers: Mutex::new(workers),
        shutdown,
        secrets,
        drain,
        snapshots,
        revocations,
        revoked_tx,
        tcp_relay,
        client_rtts,
        offload: Mutex::new(offload),
    })
}

impl RelayHandle {
    /// Clients' round trips measured by the workers, for the registry heartbeat to publish.
    pub fn client_rtts(&self) -> &Arc<crate::client_rtt::ClientRtts> {
        &self.client_rtts
    }

    /// The first UDP/TCP address the relay listens on (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Every UDP/TCP address the relay listens on.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The anycast (first-contact) listen addresses, UDP/TCP and TLS.
    pub fn anycast_addrs(&self) -> &[SocketAddr] {
        &self.anycast_addrs
    }

    /// Sets where anycast first contacts are redirected, best first (the registry loop calls
    /// this with the least loaded live relay of the region).
    pub fn set_first_contact(&self, targets: Vec<Alternate>) {
        self.first_contact.send_if_modified(|current| {
            let changed = *current != targets;
            *current = targets;
            changed
        });
    }

    /// Where anycast first contacts go now.
    pub fn first_contact(&self) -> Vec<Alternate> {
        self.first_contact.borrow().clone()
    }

    /// The TLS listen addresses (real ports).
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// The TLS certificate store, when TLS is on (for reloads).
    pub fn cert_store(&self) -> Option<&Arc<CertStore>> {
        self.cert_store.as_ref()
    }

    /// Replaces the secret set on every worker (takes effect within one tick).
    pub fn set_secrets(&self, secrets: SecretSet) {
        self.secrets.send_replace(secrets);
    }

    /// Starts draining (or updates the alternates of a drain in progress); `None` cancels.
    /// Workers apply it within one tick.
    pub fn set_drain(&self, drain: Option<Drain>) {
        self.drain.send_replace(drain);
    }

    /// Closes `user`'s allocations on every worker and refuses the user for `duration`.
    pub fn revoke_user(&self, user: &str, duration: std::time::Duration) {
        let now = std::time::Instant::now();
        // Every worker refuses the user from now on; the nudge has each close the user's
        // allocations at once (the sweep would, within a second).
        self.revocations.revoke(user, now + duration, now);
        self.revoked_tx.send_modify(|n| *n += 1);
    }

    /// The drain in progress, if any.
    pub fn drain(&self) -> Option<Drain> {
        self.drain.borrow().clone()
    }

    /// Sum of every worker's latest snapshot.
    pub fn snapshot(&self) -> ShardSnapshot {
        let mut total = ShardSnapshot::default();
        for s in &self.snapshots {
            let Ok(s) = s.lock() else { continue };
            total.allocations += s.allocations;
            for (t, n) in total
                .allocations_by_transport
                .iter_mut()
                .zip(s.allocations_by_transport)
            {
                *t += n;
            }
            total.permissions += s.permissions;
            total.channels += s.channels;
            total.send_errors += s.send_errors;
            total.stats.merge(&s.stats);
        }
        // RFC 6062 data connections bypass the shards: their bytes are counted at the splice.
        use std::sync::atomic::Ordering::Relaxed;
        total.stats.bytes_to_peer += self.tcp_relay.bytes_to_peer.load(Relaxed);
        total.stats.bytes_to_client += self.tcp_relay.bytes_to_client.load(Relaxed);
        // Channels relayed in the kernel never reach a shard: their counters are the fast
        // path's, added to the relayed totals (metrics, /status, the registry's load) and also
        // kept apart.
        let offload = self.offload.lock().ok().and_then(|o| o.clone());
        if let Some(o) = offload {
            let status = o.status();
            let c = status.counters;
            total.stats.packets_to_peer += c.packets_to_peer;
            total.stats.bytes_to_peer += c.bytes_to_peer;
            total.stats.packets_to_client += c.packets_to_client;
            total.stats.bytes_to_client += c.bytes_to_client;
            total.offload = Some(status);
        }
        total
    }

    /// Allocations in total, if every worker published its count at or after `since`.
    pub fn allocations_counted_since(&self, since: std::time::Instant) -> Option<usize> {
        let mut total = 0;
        for s in &self.snapshots {
            let s = s.lock().ok()?;
            if s.taken.is_none_or(|t| t < since) {
                return None;
            }
            total += s.allocations;
        }
        Some(total)
    }

    /// Stops every worker and waits for them (a second call does nothing).
    pub fn stop(&self) -> std::io::Result<()> {
        self.shutdown.send_replace(true);
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        let mut result = Ok(());
        for w in workers {
            match w.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(std::io::Error::other("relay worker panicked")),
            }
        }
        // The workers' copies are gone with them: this detaches the program and frees its maps.
        drop(
            self.offload
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        result
    }
}

/// The nonce key every relay of a fleet derives alike, so a nonce one relay issued is valid at
/// its siblings: a client redirected by 300 Try Alternate (anycast first contact, drain) keeps
/// the nonce it has, and Chromium gives up on a 438 during Allocate instead of retrying. The
/// key comes from the registry's secrets key, else from the first static TURN secret, both
/// shared by the fleet; a relay with neither gets a random key.
fn fleet_nonce_key(config: &RelayConfig) -> Option<[u8; 32]> {
    let root: Vec<u8> = match config.registry.as_ref().and_then(|r| r.secrets_key) {
        Some(k) => k.to_vec(),
        None => config.secrets.all().next()?.value.expose().to_vec(),
    };
    Some(geoturn_relay_proto::auth::derive_key(
        &root,
        b"geoturn nonce key v1",
    ))
}

/// Says at start, as a warning, when a relayed address is not one of this host's: every
/// Allocate would then fail to bind its port (a mistyped `--relay-ip`, or the private half of
/// `--external-ip PUBLIC/PRIVATE` naming another machine). Only a warning: a floating address
/// may arrive after the relay starts.
fn warn_relay_ips_elsewhere(config: &RelayConfig) {
    for ip in [config.relay_ip_v4, config.relay_ip_v6]
        .into_iter()
        .flatten()
        .filter(|ip| !ip.is_unspecified())
    {
        if let Err(e) = std::net::UdpSocket::bind((ip, 0))
            && e.kind() == std::io::ErrorKind::AddrNotAvailable
        {
            tracing::warn!(
                relay_ip = %ip,
                error = %e,
                "the relayed address is not an address of this host: every allocation fails \
                 until it is (check --relay-ip, or the private half of --external-ip)"
            );
        }
    }
}

/// Says at start, as a warning, what a client can reach on this host through the relay when
/// the configuration loosens the defaults that keep it out.
fn warn_reaches_inside(config: &RelayConfig) {
    use std::net::IpAddr;
    // One address stands for each range the default policy keeps out.
    let inside: [(&str, IpAddr); 8] = [
        ("loopback", [127, 0, 0, 1].into()),
        ("loopback", std::net::Ipv6Addr::LOCALHOST.into()),
        (
            "cloud metadata 169.254.169.254",
            [169, 254, 169, 254].into(),
        ),
        (
            "cloud metadata fd00:ec2::254",
            std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254).into(),
        ),
        ("private 10.0.0.0/8", [10, 0, 0, 1].into()),
        ("private 172.16.0.0/12", [172, 16, 0, 1].into()),
        ("private 192.168.0.0/16", [192, 168, 0, 1].into()),
        (
            "unique local fc00::/7",
            std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).into(),
        ),
    ];
    let mut reached: Vec<&str> = Vec::new();
    for (name, ip) in inside {
        if config.peer_policy.check(ip).is_ok() && !reached.contains(&name) {
            reached.push(name);
        }
    }
    if !reached.is_empty() {
        tracing::warn!(
            reaches = %reached.join(", "),
            "the peer policy lets clients reach addresses inside this host or network through the \
             relay (fine for a development machine or a private deployment that needs it, never \
             for a public relay)"
        );
    }
    if config.allow_relay_to_self {
        tracing::warn!(
            "--allow-relay-to-self: clients can reach every port of this relay's own addresses \
         through it (its listeners, ops port and other services)"
        );
    }
}

/// This relay's own unicast addresses as first-contact targets: each listener's public
/// address (the external IP when behind NAT), UDP and TCP, then TLS. Wildcard listeners
/// without an external IP have no address a client could be sent to and are skipped.
pub fn own_unicast(
    config: &RelayConfig,
    listen: &[SocketAddr],
    tls: &[SocketAddr],
) -> Vec<Alternate> {
    let public = |a: &SocketAddr| -> Option<SocketAddr> {
        let external = if a.is_ipv4() {
            config.external_ip_v4
        } else {
            config.external_ip_v6
        };
        let ip = external.unwrap_or(a.ip());
        (!ip.is_unspecified()).then(|| SocketAddr::new(ip, a.port()))
    };
    let mut out = Vec::new();
    for a in listen {
        if let Some(addr) = public(a) {
            for transport in [Transport::Udp, Transport::Tcp] {
                out.push(Alternate {
                    transport,
                    addr,
                    domain: None,
                });
            }
        }
    }
    for a in tls {
        if let Some(addr) = public(a) {
            out.push(Alternate {
                transport: Transport::Tls,
                addr,
                domain: config.public_host.clone(),
            });
        }
    }
    out
}

/// A random 32-byte secret, hex encoded (for `geoturn up` and tests).
pub fn random_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod nonce_key_tests {
    use super::*;
    use crate::RelayOptions;

    fn config(secret: &str, key: Option<&str>) -> RelayConfig {
        RelayOptions {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            auth_secrets: vec![secret.into()],
            registry: key.map(|_| "memory".into()),
            secrets_key: key.map(Into::into),
            ..RelayOptions::default()
        }
        .resolve()
        .unwrap()
    }

    #[test]
    fn relays_sharing_a_secret_share_the_nonce_key() {
        let k = "0b".repeat(32);
        let a = fleet_nonce_key(&config("fleet-secret-0123456789", None)).unwrap();
        let b = fleet_nonce_key(&config("fleet-secret-0123456789", None)).unwrap();
        let other = fleet_nonce_key(&config("other-secret-0123456789", None)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, other);
        // The registry's secrets key wins over static secrets when both are there.
        let r1 = fleet_nonce_key(&config("fleet-secret-0123456789", Some(&k))).unwrap();
        let r2 = fleet_nonce_key(&config("other-secret-0123456789", Some(&k))).unwrap();
        assert_eq!(r1, r2);
        assert_ne!(r1, a);
    }
}
