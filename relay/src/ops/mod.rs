//! Operating a relay: the ops HTTP listener, Prometheus metrics, status, load rates and drain.

pub mod drain;
pub mod http;
pub mod metrics;
pub mod registry;
pub mod status;

use std::sync::Arc;
use std::time::Instant;

use crate::config::RelayConfig;
use crate::run::RelayHandle;

/// What the ops endpoints and background tasks share.
#[derive(Debug)]
pub struct Ops {
    /// The running relay.
    pub relay: Arc<RelayHandle>,
    /// Its configuration.
    pub config: RelayConfig,
    /// When it started.
    pub started: Instant,
    /// Relayed traffic rates.
    pub load: status::LoadMeter,
    /// Drain control.
    pub drain: drain::DrainController,
    /// Registry reachability, for /status.
    pub registry: registry::RegistryHealth,
    /// The relay mesh's peers and measurements, for /status and /metrics.
    pub mesh: Arc<crate::mesh::MeshState>,
}

impl Ops {
    /// Ops state for `relay` started with `config`.
    pub fn new(relay: Arc<RelayHandle>, config: RelayConfig) -> Arc<Self> {
        let drain = drain::DrainController::new(relay.clone(), config.drain_timeout);
        Arc::new(Self {
            relay,
            config,
            started: Instant::now(),
            load: status::LoadMeter::default(),
            drain,
            registry: registry::RegistryHealth::default(),
            mesh: Arc::default(),
        })
    }
}
