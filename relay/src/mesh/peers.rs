//! The mesh's connections: one QUIC endpoint (client and server on one UDP socket), a dialer
//! per higher-id peer, the listener for lower-id peers, and the loop that keeps them in line
//! with the registry.
//!
//! One connection per pair: only the relay with the lower id dials (ids are unique in the
//! registry), the other accepts. A dialer reconnects with exponential backoff (1 s doubling to
//! 30 s, with ±25 % jitter so a fleet that lost a relay does not redial it in step). Bounds:
//! at most `--mesh-max-peers` connections, at most [`MAX_HANDSHAKES`] accepted handshakes in
//! flight, each within [`HANDSHAKE_TIMEOUT`]; no streams are allowed (the mesh measures with
//! keep-alives) and the datagram buffer is small until relayed traffic rides the mesh.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use geoturn_shared::clock::unix_ms;
use geoturn_shared::registry::{MeshKey, MeshNode, Registry, hex};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rand::Rng as _;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::identity::MeshIdentity;
use super::measure::{Counters, PeerMeter};
use super::verify::{FleetClients, PinnedServer, Trusted, relay_of};
use super::{ALPN, MeshConfig, MeshState, PeerView, is_fresh};
use crate::config::RelayConfig;

/// Idle timeout: a peer silent this long is disconnected (keep-alives come every second).
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive PINGs: they keep the connection and the RTT estimate fresh.
const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// Longest handshake, dialing or accepting.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Accepted handshakes in flight at once.
const MAX_HANDSHAKES: usize = 32;
/// First and longest wait between two dials of one peer.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection that lived this long resets the backoff.
const STABLE: Duration = Duration::from_secs(30);
/// Room for RFC 9221 datagrams (enabled now so relayed traffic can ride the mesh later).
const DATAGRAM_BUFFER: usize = 64 * 1024;
/// Most refused node records remembered, to log each once.
const MAX_LOGGED_REFUSALS: usize = 1024;
/// The TLS server name dialers send; never checked (the certificate is pinned).
const SERVER_NAME: &str = "geoturn-mesh";

/// What [`run`] needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This relay's id.
    pub node_id: String,
    /// The mesh options.
    pub mesh: MeshConfig,
    /// The IP to advertise when `mesh.listen` is a wildcard and no `advertise` is given.
    pub advertise_ip: Option<IpAddr>,
    /// The registry heartbeat: how often the node record is published and peers re-read.
    pub heartbeat: Duration,
}

/// One peer as the mesh knows it.
#[derive(Debug)]
pub struct Peer {
    addr: SocketAddr,
    dialer: bool,
    conn: Option<quinn::Connection>,
    meter: PeerMeter,
}

impl Peer {
    pub(super) fn view(&self, id: &str, now_ms: u64) -> PeerView {
        let m = &self.meter;
        let age = (m.updated_ms > 0).then(|| now_ms.saturating_sub(m.updated_ms));
        PeerView {
            id: id.to_owned(),
            addr: self.addr.to_string(),
            connected: self
                .conn
                .as_ref()
                .is_some_and(|c| c.close_reason().is_none()),
            dialer: self.dialer,
            rtt_ms: (m.updated_ms > 0).then(|| m.rtt_us as f64 / 1000.0),
            loss: m.loss,
            age_ms: age,
            fresh: age.is_some_and(is_fresh),
        }
    }
}

/// The IP peers reach a wildcard mesh listener at: the external IPv4 (1:1 NAT), else the
/// relay IPv4, else IPv6 likewise.
pub fn default_advertise_ip(config: &RelayConfig) -> Option<IpAddr> {
    config
        .external_ip_v4
        .or(config.relay_ip_v4)
        .or(config.external_ip_v6)
        .or(config.relay_ip_v6)
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(IDLE_TIMEOUT)
            .unwrap_or(quinn::VarInt::from_u32(10_000).into()),
    ))
    .keep_alive_interval(Some(KEEP_ALIVE))
    .max_concurrent_bidi_streams(quinn::VarInt::from_u32(0))
    .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
    .datagram_receive_buffer_size(Some(DATAGRAM_BUFFER))
    .datagram_send_buffer_size(DATAGRAM_BUFFER);
    Arc::new(t)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(identity: &MeshIdentity, trusted: Trusted) -> Result<quinn::ServerConfig, String> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(FleetClients::new(trusted))
        .with_single_cert(vec![identity.cert.clone()], identity.key())
        .map_err(|e| format!("mesh certificate: {e}"))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport());
    Ok(config)
}

fn client_config(identity: &MeshIdentity, pinned: [u8; 32]) -> Result<quinn::ClientConfig, String> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(PinnedServer::new(pinned))
        .with_client_auth_cert(vec![identity.cert.clone()], identity.key())
        .map_err(|e| format!("mesh certificate: {e}"))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport());
    Ok(config)
}

/// What the loops share.
struct Mesh {
    settings: Settings,
    state: Arc<MeshState>,
    endpoint: quinn::Endpoint,
    identity: MeshIdentity,
    trusted: Trusted,
}

/// Runs the mesh until aborted; an `Err` says why it cannot run at all (bind failed...).
pub async fn run(
    state: Arc<MeshState>,
    settings: Settings,
    registry: Registry,
    key: MeshKey,
) -> Result<(), String> {
    let identity = MeshIdentity::generate(&settings.node_id)
        .map_err(|e| format!("generating the mesh certificate: {e}"))?;
    let trusted: Trusted = Arc::new(RwLock::new(HashMap::new()));
    let endpoint = quinn::Endpoint::server(
        server_config(&identity, trusted.clone())?,
        settings.mesh.listen,
    )
    .map_err(|e| {
        format!(
            "binding the mesh socket (--mesh-listen {}): {e}",
            settings.mesh.listen
        )
    })?;
    let bound = endpoint
        .local_addr()
        .map_err(|e| format!("mesh socket address: {e}"))?;
    let advertise = match settings.mesh.advertise {
        Some(a) => a,
        None if bound.ip().is_unspecified() => match settings.advertise_ip {
            Some(ip) => SocketAddr::new(ip, bound.port()),
            None => return Err("no address to advertise: set --mesh-advertise".into()),
        },
        None => bound,
    };
    {
        let mut inner = state.lock();
        inner.status.state = "on";
        inner.status.listen = Some(bound.to_string());
        inner.status.advertise = Some(advertise.to_string());
        inner.status.fingerprint = Some(hex(&identity.fingerprint));
    }
    tracing::info!(listen = %bound, %advertise, fingerprint = %hex(&identity.fingerprint), "mesh listening");
    let mesh = Arc::new(Mesh {
        settings,
        state,
        endpoint,
        identity,
        trusted,
    });
    let accept = tokio::spawn(accept_loop(mesh.clone()));
    let sample = tokio::spawn(super::publish::row_loop(
        mesh.state.clone(),
        mesh.settings.node_id.clone(),
        registry.clone(),
    ));
    let result = reconcile_loop(mesh.clone(), registry, key, advertise).await;
    accept.abort();
    sample.abort();
    mesh.endpoint
        .close(quinn::VarInt::from_u32(0), b"mesh stopped");
    result
}

/// Every heartbeat: publish this relay's node record, read the others', trust those whose MAC
/// verifies, and start or stop dialers to match.
async fn reconcile_loop(
    mesh: Arc<Mesh>,
    registry: Registry,
    key: MeshKey,
    advertise: SocketAddr,
) -> Result<(), String> {
    let me = mesh.settings.node_id.clone();
    // A record lives 3 heartbeats, like the relay record; its MAC'd expiry bounds a replay.
    let ttl = (mesh.settings.heartbeat * 3).max(Duration::from_secs(3));
    let mut dialers: HashMap<String, (MeshNode, JoinHandle<()>)> = HashMap::new();
    let mut refused_logged: HashSet<(String, [u8; 32])> = HashSet::new();
    let mut registry_down = false;
    let mut tick = tokio::time::interval(mesh.settings.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = unix_ms();
        let own = MeshNode::signed(
            &key,
            &me,
            advertise,
            mesh.identity.fingerprint,
            now + ttl.as_millis() as u64,
        );
        let published = registry.publish_mesh_node(&own, ttl).await;
        let nodes = match published {
            Ok(()) => registry.mesh_nodes().await,
            Err(e) => Err(e),
        };
        let nodes = match nodes {
            Ok(n) => {
                if registry_down {
                    tracing::info!("mesh: registry reachable again");
                    registry_down = false;
                }
                n
            }
            Err(error) => {
                // Keep the peers we have: a Redis outage must not tear the mesh down.
                if !registry_down {
                    tracing::warn!(%error, "mesh: registry unavailable; keeping current peers");
                    registry_down = true;
                }
                continue;
            }
        };
        let mut verified = Vec::new();
        for n in nodes {
            if n.id == me {
                continue;
            }
            match n.verify(&key, now) {
                Ok(()) => verified.push(n),
                Err(refusal) => {
                    if refused_logged.len() < MAX_LOGGED_REFUSALS
                        && refused_logged.insert((n.id.clone(), n.fingerprint))
                    {
                        tracing::warn!(%refusal, "mesh: ignoring a node record");
                    }
                }
            }
        }
        verified.truncate(mesh.settings.mesh.max_peers);
        {
            let mut table = mesh.trusted.write().unwrap_or_else(|p| p.into_inner());
            table.clear();
            for n in &verified {
                table.insert(n.fingerprint, n.id.clone());
            }
        }
        // Dial higher ids; a changed record (restart: new certificate or address) redials.
        let wanted: HashMap<&str, &MeshNode> = verified
            .iter()
            .filter(|n| n.id.as_str() > me.as_str())
            .map(|n| (n.id.as_str(), n))
            .collect();
        dialers.retain(|id, (node, task)| {
            let keep = wanted
                .get(id.as_str())
                .is_some_and(|w| w.fingerprint == node.fingerprint && w.addr == node.addr)
                && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (id, node) in wanted {
            if !dialers.contains_key(id) {
                let task = tokio::spawn(dial_loop(mesh.clone(), (*node).clone()));
                dialers.insert(id.to_owned(), ((*node).clone(), task));
            }
        }
        // Forget peers that left the registry or have been silent too long.
        let known: HashSet<&str> = verified.iter().map(|n| n.id.as_str()).collect();
        let forget_ms = super::FORGET_AFTER.as_millis() as u64;
        let mut inner = mesh.state.lock();
        inner.peers.retain(|id, p| {
            let live = p.conn.as_ref().is_some_and(|c| c.close_reason().is_none());
            let recent = now.saturating_sub(p.meter.updated_ms) < forget_ms;
            let keep = known.contains(id.as_str()) && (live || recent);
            if !keep && let Some(c) = &p.conn {
                c.close(quinn::VarInt::from_u32(0), b"peer left the registry");
            }
            keep
        });
    }
}

/// The number of connections up now.
fn connected(state: &MeshState) -> usize {
    state
        .lock()
        .peers
        .values()
        .filter(|p| p.conn.as_ref().is_some_and(|c| c.close_reason().is_none()))
        .count()
}

/// Records a new connection to `id` (replacing and closing an older one) and waits for it to
/// close.
async fn hold(mesh: &Mesh, id: &str, addr: SocketAddr, dialer: bool, conn: quinn::Connection) {
    {
        let mut inner = mesh.state.lock();
        let peer = inner.peers.entry(id.to_owned()).or_insert_with(|| Peer {
            addr,
            dialer,
            conn: None,
            meter: PeerMeter::default(),
        });
        if let Some(old) = peer.conn.replace(conn.clone()) {
            old.close(quinn::VarInt::from_u32(0), b"replaced");
        }
        peer.addr = addr;
        peer.dialer = dialer;
        peer.meter.connected();
    }
    tracing::info!(peer = %id, %addr, dialer, "mesh: connected");
    let reason = conn.closed().await;
    tracing::info!(peer = %id, %reason, "mesh: disconnected");
    let mut inner = mesh.state.lock();
    if let Some(p) = inner.peers.get_mut(id)
        && p.conn
            .as_ref()
            .is_some_and(|c| c.stable_id() == conn.stable_id())
    {
        p.conn = None;
    }
}

/// Dials `node` and holds the connection, redialing with backoff, until aborted.
async fn dial_loop(mesh: Arc<Mesh>, node: MeshNode) {
    let config = match client_config(&mesh.identity, node.fingerprint) {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(peer = %node.id, %error, "mesh: cannot build the client config");
            return;
        }
    };
    let mut backoff = BACKOFF_MIN;
    let mut logged = false;
    loop {
        if connected(&mesh.state) >= mesh.settings.mesh.max_peers {
            tracing::debug!(peer = %node.id, "mesh: at --mesh-max-peers; not dialing");
        } else {
            let attempt = async {
                let connecting = mesh
                    .endpoint
                    .connect_with(config.clone(), node.addr, SERVER_NAME)
                    .map_err(|e| e.to_string())?;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err("handshake timed out".to_owned()),
                }
            };
            match attempt.await {
                Ok(conn) => {
                    logged = false;
                    let since = Instant::now();
                    hold(&mesh, &node.id, node.addr, true, conn).await;
                    if since.elapsed() >= STABLE {
                        backoff = BACKOFF_MIN;
                    }
                }
                Err(error) => {
                    // Once per run of failures: a peer that is down is not news every second.
                    if !logged {
                        tracing::warn!(peer = %node.id, addr = %node.addr, %error, "mesh: dial failed; retrying with backoff");
                        logged = true;
                    }
                }
            }
        }
        let jitter = rand::rng().random_range(0.75..1.25);
        tokio::time::sleep(backoff.mul_f64(jitter)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Accepts connections from lower-id relays of the fleet.
async fn accept_loop(mesh: Arc<Mesh>) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    while let Some(incoming) = mesh.endpoint.accept().await {
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        if connected(&mesh.state) >= mesh.settings.mesh.max_peers {
            incoming.refuse();
            continue;
        }
        let mesh = mesh.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
                Ok(Ok(c)) => c,
                Ok(Err(error)) => {
                    tracing::debug!(%remote, %error, "mesh: refused a handshake");
                    return;
                }
                Err(_) => return,
            };
            drop(permit);
            let id = conn
                .peer_identity()
                .and_then(|any| {
                    any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                        .ok()
                })
                .and_then(|certs| certs.first().and_then(|c| relay_of(&mesh.trusted, c)));
            match id {
                // Only lower ids dial: anything else is a misbehaving or confused peer.
                Some(id) if id.as_str() < mesh.settings.node_id.as_str() => {
                    hold(&mesh, &id, remote, false, conn).await;
                }
                other => {
                    tracing::warn!(%remote, peer = ?other, "mesh: refused a connection not from a lower-id fleet relay");
                    conn.close(quinn::VarInt::from_u32(1), b"not expected");
                }
            }
        });
    }
}

/// Samples every peer's connection once (see [`super::measure`]).
pub(super) fn sample_all(state: &MeshState, now_ms: u64) {
    let mut inner = state.lock();
    for peer in inner.peers.values_mut() {
        let Some(conn) = &peer.conn else { continue };
        if conn.close_reason().is_some() {
            continue;
        }
        let stats = conn.stats();
        peer.meter.observe(
            now_ms,
            conn.rtt(),
            Counters {
                rx_datagrams: stats.udp_rx.datagrams,
                sent_packets: stats.path.sent_packets,
                lost_packets: stats.path.lost_packets,
            },
        );
    }
}

/// The row to publish: every peer with a measurement no older than the forget horizon.
pub(super) fn samples(state: &MeshState, now_ms: u64) -> Vec<geoturn_shared::registry::MeshSample> {
    let forget_ms = super::FORGET_AFTER.as_millis() as u64;
    state
        .lock()
        .peers
        .iter()
        .filter(|(_, p)| {
            p.meter.updated_ms > 0 && now_ms.saturating_sub(p.meter.updated_ms) < forget_ms
        })
        .map(|(id, p)| geoturn_shared::registry::MeshSample {
            peer: id.clone(),
            rtt_us: p.meter.rtt_us,
            loss: p.meter.loss.clamp(0.0, 1.0),
            updated_ms: p.meter.updated_ms,
        })
        .collect()
}
