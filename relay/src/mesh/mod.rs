//! The relay-to-relay QUIC mesh (issue 17): every relay keeps one QUIC connection (quinn over
//! the workspace's rustls) to every other relay of the registry, measures its RTT and loss
//! continuously and publishes them, so the credential API can build its region-to-region
//! matrix from measurements instead of distances.
//!
//! - [`identity`]: the ephemeral self-signed certificate made at start.
//! - [`verify`]: exact pinning: a peer is accepted only with the certificate the registry lists
//!   for it, in a node record MAC'd under a key derived from the fleet's secrets key
//!   (`geoturn_shared::registry::MeshKey`). Nothing else for the operator to set up.
//! - [`peers`]: the QUIC endpoint, the dialers (only the relay with the lower id dials, so
//!   one connection per pair; exponential backoff with jitter), the listener, bounds.
//! - [`measure`]: RTT and loss per peer from quinn's own estimates.
//! - [`publish`]: the node record and the row of measurements in the registry.
//!
//! Relayed traffic is meant to ride these connections later as QUIC datagrams (RFC 9221):
//! the transport config enables them now and carries none. The mesh runs on the ops runtime
//! as its own tasks; none of them is on the data path, and a failing or panicking mesh task
//! ends the mesh, never the relay.

pub mod identity;
pub mod measure;
pub mod peers;
pub mod publish;
pub mod verify;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use geoturn_shared::clock::unix_ms;
use geoturn_shared::registry::{MESH_FRESH, MeshKey, Registry};
use serde::Serialize;

use crate::config::RelayConfig;

/// ALPN of the mesh protocol; a version bump makes old and new relays refuse each other
/// cleanly instead of misreading each other's datagrams.
pub const ALPN: &[u8] = b"geoturn-mesh/1";
/// How often RTT and loss are sampled and the row published.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// A peer whose last answer is older than this is dropped from the row (after a while stale
/// it says nothing useful any more).
pub const FORGET_AFTER: Duration = Duration::from_secs(60);

/// The mesh's options, from `--mesh-listen`, `--mesh-advertise`, `--mesh-max-peers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshConfig {
    /// UDP address the QUIC endpoint binds.
    pub listen: SocketAddr,
    /// Address peers dial, when not derived from `listen` (NAT, wildcard listen).
    pub advertise: Option<SocketAddr>,
    /// Most peers (connections) at once.
    pub max_peers: usize,
}

/// One peer as `/status` and `/metrics` show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PeerView {
    /// The peer's relay id.
    pub id: String,
    /// Its mesh address.
    pub addr: String,
    /// Whether a connection is up now.
    pub connected: bool,
    /// Whether this relay dialed it (the lower id dials).
    pub dialer: bool,
    /// Smoothed RTT in ms when it last answered; `None` before any answer.
    pub rtt_ms: Option<f64>,
    /// Share of packets lost recently.
    pub loss: f32,
    /// Ms since it last answered; `None` before any answer.
    pub age_ms: Option<u64>,
    /// Whether the measurement is fresh (it answered within the freshness window).
    pub fresh: bool,
}

/// The mesh for `/status`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MeshStatus {
    /// `off` (not configured), `disabled` (configured but cannot run: see `reason`), `starting`,
    /// `on` or `failed`.
    pub state: &'static str,
    /// Why it is disabled or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Bound UDP address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Address published for peers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// SHA-256 of this relay's mesh certificate, hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Peers, by id.
    pub peers: Vec<PeerView>,
}

#[derive(Debug)]
struct Inner {
    status: MeshStatus,
    peers: BTreeMap<String, peers::Peer>,
}

/// What the mesh tasks share with `/status` and `/metrics`.
#[derive(Debug)]
pub struct MeshState {
    inner: Mutex<Inner>,
}

impl Default for MeshState {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                status: MeshStatus {
                    state: "off",
                    reason: None,
                    listen: None,
                    advertise: None,
                    fingerprint: None,
                    peers: Vec::new(),
                },
                peers: BTreeMap::new(),
            }),
        }
    }
}

impl MeshState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the map consistent; keep serving after a panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_state(&self, state: &'static str, reason: Option<String>) {
        let mut inner = self.lock();
        inner.status.state = state;
        inner.status.reason = reason;
    }

    /// The mesh now, peers with their measurements.
    pub fn status(&self) -> MeshStatus {
        let now = unix_ms();
        let inner = self.lock();
        let mut status = inner.status.clone();
        status.peers = inner.peers.iter().map(|(id, p)| p.view(id, now)).collect();
        status
    }

    /// The mesh's metric families for the relay's page, from one read of its state.
    pub fn metrics(&self) -> MeshMetrics {
        MeshMetrics(self.status())
    }
}

/// The mesh's families: `geoturn_mesh_peers` (connected now) and, per peer with a measurement,
/// `geoturn_mesh_rtt_seconds`, `geoturn_mesh_loss_ratio` and `geoturn_mesh_age_seconds`.
/// Peers are at most `--mesh-max-peers`, so the label set is bounded; the encoder escapes the
/// ids, which come from other relays' registry records.
#[derive(Debug, Clone)]
pub struct MeshMetrics(pub MeshStatus);

/// One per-peer gauge's value.
type PeerValue = fn(&PeerView) -> f64;

impl prometheus_client::collector::Collector for MeshMetrics {
    fn encode(&self, mut e: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use prometheus_client::metrics::MetricType;
        let peers = &self.0.peers;
        let connected = peers.iter().filter(|p| p.connected).count() as u64;
        e.encode_descriptor(
            "geoturn_mesh_peers",
            "Mesh peers with a QUIC connection up now.",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&connected)?;
        let measured: Vec<&PeerView> = peers.iter().filter(|p| p.rtt_ms.is_some()).collect();
        let families: [(&str, &str, PeerValue); 3] = [
            (
                "geoturn_mesh_rtt_seconds",
                "Smoothed QUIC RTT to a mesh peer when it last answered, seconds.",
                |p| p.rtt_ms.unwrap_or(0.0) / 1000.0,
            ),
            (
                "geoturn_mesh_loss_ratio",
                "Share of mesh packets to a peer declared lost recently.",
                |p| f64::from(p.loss),
            ),
            (
                "geoturn_mesh_age_seconds",
                "Seconds since a mesh peer last answered (stale past 5).",
                |p| p.age_ms.unwrap_or(0) as f64 / 1000.0,
            ),
        ];
        for (name, help, value) in families {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for p in &measured {
                let labels = [("peer", p.id.as_str())];
                family.encode_family(&labels)?.encode_gauge(&value(p))?;
            }
        }
        Ok(())
    }
}

/// Every metric name the mesh exports.
pub const METRIC_NAMES: &[&str] = &[
    "geoturn_mesh_peers",
    "geoturn_mesh_rtt_seconds",
    "geoturn_mesh_loss_ratio",
    "geoturn_mesh_age_seconds",
];

/// Starts the mesh on the current (ops) runtime when `--mesh-listen` is set and the fleet
/// shares a secrets key; otherwise logs once why it stays off. Returns the supervising task.
pub fn start(
    state: Arc<MeshState>,
    config: &RelayConfig,
    registry: Option<&Registry>,
) -> Option<tokio::task::JoinHandle<()>> {
    let mesh = config.mesh.clone()?;
    let (registry, key) = match (registry, config.registry.as_ref()) {
        (Some(reg), Some(rc)) => match rc.secrets_key {
            Some(k) => (reg.clone(), MeshKey::derive(&k)),
            None => {
                return disabled(
                    &state,
                    "no --secrets-key: mesh peers authenticate through records MAC'd with a key \
                     derived from it",
                );
            }
        },
        _ => {
            return disabled(
                &state,
                "no --registry: peers are found through the registry",
            );
        }
    };
    state.set_state("starting", None);
    let heartbeat = config
        .registry
        .as_ref()
        .map_or(Duration::from_secs(2), |r| r.heartbeat);
    let settings = peers::Settings {
        node_id: config.node_id.clone(),
        mesh,
        advertise_ip: crate::mesh::peers::default_advertise_ip(config),
        heartbeat,
    };
    let task_state = state.clone();
    Some(tokio::spawn(async move {
        // The mesh's own task: if it fails (or panics, which tokio contains in the task),
        // the relay goes on relaying without it.
        let mut run = AbortOnDrop(tokio::spawn(peers::run(
            task_state.clone(),
            settings,
            registry,
            key,
        )));
        let reason = match (&mut run.0).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(e) if e.is_panic() => "a mesh task panicked".to_owned(),
            Err(_) => return, // aborted at shutdown
        };
        tracing::error!(%reason, "mesh stopped; relaying goes on without it");
        task_state.set_state("failed", Some(reason));
    }))
}

/// Aborts the task when dropped: aborting the supervisor stops the mesh too.
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), String>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn disabled(state: &MeshState, why: &str) -> Option<tokio::task::JoinHandle<()>> {
    tracing::warn!("mesh disabled: {why}");
    state.set_state("disabled", Some(why.to_owned()));
    None
}

/// Whether a measurement with this age is fresh.
fn is_fresh(age_ms: u64) -> bool {
    age_ms <= MESH_FRESH.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, rtt_ms: Option<f64>, connected: bool) -> PeerView {
        PeerView {
            id: id.to_owned(),
            addr: "192.0.2.1:9643".to_owned(),
            connected,
            dialer: true,
            rtt_ms,
            loss: 0.25,
            age_ms: rtt_ms.map(|_| 1500),
            fresh: true,
        }
    }

    #[test]
    fn metrics_name_each_measured_peer_and_escape_its_id() {
        let mut status = MeshState::default().status();
        status.peers = vec![
            peer("fra-1", Some(42.5), true),
            peer("never", None, false),
            // Ids come from other relays' records: a hostile one must not forge a sample.
            peer("x\"} 1\ngeoturn_up{", Some(1.0), true),
        ];
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(MeshMetrics(status)));
        let mut page = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut page, &registry).unwrap();
        assert!(page.contains("geoturn_mesh_peers 2\n"), "{page}");
        assert!(
            page.contains("geoturn_mesh_rtt_seconds{peer=\"fra-1\"} 0.0425\n"),
            "{page}"
        );
        assert!(page.contains("geoturn_mesh_loss_ratio{peer=\"fra-1\"} 0.25\n"));
        assert!(page.contains("geoturn_mesh_age_seconds{peer=\"fra-1\"} 1.5\n"));
        assert!(
            !page.contains("peer=\"never\""),
            "unmeasured peers have no samples"
        );
        assert!(
            !page.lines().any(|l| l.starts_with("geoturn_up")),
            "an id broke out of its label: {page}"
        );
        for name in METRIC_NAMES {
            assert!(
                page.contains(&format!("# TYPE {name} gauge")),
                "{name}: {page}"
            );
        }
    }
}
