//! Starting and stopping a relay: binds one listening socket per worker, spawns the workers and
//! hands back a [`RelayHandle`] to rotate secrets, drain, read status and stop.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use geoturn_relay_proto::allocation::ports::PortPool;
use geoturn_relay_proto::allocation::quota::Quota;
use geoturn_relay_proto::server::{Drain, DropReason};
use geoturn_relay_proto::{Server, ServerConfig};
use geoturn_shared::SecretSet;
use rand::Rng;
use tokio::sync::watch;

use crate::config::RelayConfig;
use crate::net::udp::{self, ShardSnapshot, WorkerContext};

/// A running relay.
#[derive(Debug)]
pub struct RelayHandle {
    local_addr: SocketAddr,
    workers: Mutex<Vec<JoinHandle<std::io::Result<()>>>>,
    shutdown: watch::Sender<bool>,
    secrets: watch::Sender<SecretSet>,
    drain: watch::Sender<Option<Drain>>,
    snapshots: Vec<Arc<Mutex<ShardSnapshot>>>,
}

/// Binds and starts a relay with `config`.
pub fn start(config: &RelayConfig) -> std::io::Result<RelayHandle> {
    let mut rng = rand::rng();
    // One nonce key for all shards: a client's retry may land on the same shard anyway (the
    // kernel hashes its 4-tuple), but a shared key keeps that an implementation detail.
    let nonce_key: [u8; 32] = rng.random();
    let quota = Arc::new(Quota::new(config.user_quota, config.max_allocations));
    let ports = Arc::new(PortPool::new(config.relay_ports.clone(), rng.random()));
    let (shutdown, _) = watch::channel(false);
    let (secrets, _) = watch::channel(config.secrets.clone());
    let (drain, _) = watch::channel(None);

    // Bind every listener before starting any worker so a bind error fails the start.
    let first = udp::bind_reuseport(config.listen)?;
    let local_addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..config.workers {
        listeners.push(udp::bind_reuseport(local_addr)?);
    }

    let mut workers = Vec::new();
    let mut snapshots = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let (relay_ip_v4, relay_ip_v6) = if config.relay_ip.is_ipv4() {
            (Some(config.relay_ip), None)
        } else {
            (None, Some(config.relay_ip))
        };
        let (external_ip_v4, external_ip_v6) = match config.external_ip {
            Some(ip) if ip.is_ipv4() => (Some(ip), None),
            Some(ip) => (None, Some(ip)),
            None => (None, None),
        };
        let server_config = ServerConfig {
            realm: config.realm.clone(),
            relay_ip_v4,
            relay_ip_v6,
            external_ip_v4,
            external_ip_v6,
            default_lifetime: config.default_lifetime,
            max_lifetime: config.max_lifetime,
            peer_policy: config.peer_policy.clone(),
            nonce_key,
            ..ServerConfig::default()
        };
        let snapshot = Arc::new(Mutex::new(ShardSnapshot::default()));
        snapshots.push(snapshot.clone());
        let ctx = WorkerContext {
            server: Server::new(
                server_config,
                config.secrets.clone(),
                quota.clone(),
                ports.clone(),
            ),
            secrets: secrets.subscribe(),
            drain: drain.subscribe(),
            shutdown: shutdown.subscribe(),
            snapshot,
        };
        let handle = std::thread::Builder::new()
            .name(format!("geoturn-udp-{i}"))
            .spawn(move || udp::run_worker(ctx, listener))?;
        workers.push(handle);
    }
    tracing::info!(
        listen = %local_addr,
        relay_ip = %config.relay_ip,
        workers = config.workers,
        "relay listening (udp)"
    );
    Ok(RelayHandle {
        local_addr,
        workers: Mutex::new(workers),
        shutdown,
        secrets,
        drain,
        snapshots,
    })
}

impl RelayHandle {
    /// The UDP address the relay listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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
            let t = &mut total.stats;
            t.allocations_created += s.stats.allocations_created;
            t.allocations_deleted += s.stats.allocations_deleted;
            t.allocations_expired += s.stats.allocations_expired;
            t.peers_denied += s.stats.peers_denied;
            t.redirects += s.stats.redirects;
            for reason in DropReason::ALL {
                t.add_drops(reason, s.stats.drops(reason));
            }
            t.packets_to_peer += s.stats.packets_to_peer;
            t.bytes_to_peer += s.stats.bytes_to_peer;
            t.packets_to_client += s.stats.packets_to_client;
            t.bytes_to_client += s.stats.bytes_to_client;
            for (k, v) in &s.stats.auth_failures {
                *t.auth_failures.entry(k).or_default() += v;
            }
        }
        total
    }

    /// Stops every worker and waits for them (a second call does nothing).
    pub fn stop(&self) -> std::io::Result<()> {
        self.shutdown.send_replace(true);
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in workers {
            match w.join() {
                Ok(r) => r?,
                Err(_) => return Err(std::io::Error::other("relay worker panicked")),
            }
        }
        Ok(())
    }
}

/// A random 32-byte secret, hex encoded (for `geoturn up` and tests).
pub fn random_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
