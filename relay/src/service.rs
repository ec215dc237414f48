//! The relay as a service: workers, the ops HTTP listener, the load sampler, signals and drain,
//! until the process should exit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::RelayConfig;
use geoturn_shared::registry::Registry;

use crate::ops::{Ops, http, registry};
use crate::run::{self, RelayHandle};
use crate::signal::ShutdownSignals;

/// Why the service could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Binding a socket or starting a thread failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The registry URL could not be used.
    #[error("registry: {0}")]
    Registry(String),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> ServiceError {
    move |source| ServiceError::Io { what, source }
}

/// Runs a relay until a drain (SIGTERM, SIGINT or `POST /drain`) finishes or a second signal
/// arrives. `on_ready` runs once everything listens.
pub fn run(
    config: RelayConfig,
    on_ready: impl FnOnce(&RelayHandle, std::net::SocketAddr),
) -> Result<(), ServiceError> {
    run_with_registry(config, None, on_ready)
}

/// [`run`] with a registry already connected (`geoturn up` shares one in-memory registry
/// between the relay and the API); `None` connects to `config.registry`, if any.
pub fn run_with_registry(
    config: RelayConfig,
    shared_registry: Option<Registry>,
    on_ready: impl FnOnce(&RelayHandle, std::net::SocketAddr),
) -> Result<(), ServiceError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("starting the ops runtime"))?;
    // Before the workers answer a single Allocate: a SIGTERM from then on drains.
    let mut signals = {
        let _runtime = rt.enter();
        ShutdownSignals::install().map_err(io("installing signal handlers"))?
    };
    let relay = Arc::new(run::start(&config).map_err(io("starting the relay"))?);
    let result = rt.block_on(async {
        let ops = Ops::new(relay.clone(), config.clone());
        let listener = tokio::net::TcpListener::bind(config.http)
            .await
            .map_err(io("binding the ops HTTP listener (--http)"))?;
        let http_addr = listener.local_addr().map_err(io("ops listener address"))?;
        tracing::info!(http = %http_addr, "ops HTTP listening");
        let http_task = tokio::spawn(http::serve(listener, ops.clone()));
        let sampler = tokio::spawn(sample_load(ops.clone()));
        let reloader = relay
            .cert_store()
            .cloned()
            .map(|store| tokio::spawn(reload_certs(store)));
        let registry = match (&config.registry, shared_registry) {
            (None, _) => None,
            (Some(_), Some(shared)) => Some(shared),
            (Some(rc), None) => Some(
                Registry::connect(&rc.url, &rc.prefix, rc.secrets_key)
                    .await
                    .map_err(|e| ServiceError::Registry(e.to_string()))?,
            ),
        };
        let mut registry_tasks = Vec::new();
        if let (Some(reg), Some(rc)) = (&registry, &config.registry) {
            // An in-memory registry holds secrets without encryption (it never leaves the process).
            let from_registry = rc.secrets_key.is_some() || matches!(reg, Registry::Memory(_));
            if from_registry {
                registry::reload_secrets(&ops, reg, registry::SecretsLoad::Start).await;
            }
            registry::load_revocations(&ops, reg).await;
            registry_tasks.push(tokio::spawn(registry::heartbeat_loop(
                ops.clone(),
                reg.clone(),
                rc.heartbeat,
            )));
            registry_tasks.push(tokio::spawn(registry::event_loop(
                ops.clone(),
                reg.clone(),
                from_registry,
            )));
        }
        // The mesh needs the registry (peers, pinning); it runs beside relaying, never in its way.
        let mesh_task = crate::mesh::start(ops.mesh.clone(), &config, registry.as_ref());
        on_ready(&relay, http_addr);

        tokio::select! {
            () = signals.recv() => {
                ops.drain.begin("signal");
            }
            () = ops.drain.started() => {}
        }
        tokio::select! {
            () = ops.drain.finished() => {}
            () = signals.recv() => {
                tracing::warn!("second signal: stopping without waiting for allocations");
            }
        }
        for t in registry_tasks {
            t.abort();
        }
        if let Some(t) = mesh_task {
            t.abort();
        }
        if let Some(reg) = &registry {
            // A clean exit leaves no stale record behind.
            let id = &config.node_id;
            if config.mesh.is_some() {
                let _ = tokio::time::timeout(Duration::from_secs(1), reg.remove_mesh(id)).await;
            }
            match tokio::time::timeout(Duration::from_secs(2), reg.remove(id)).await {
                Ok(Ok(())) => tracing::info!("removed from the registry"),
                _ => tracing::warn!("could not remove the registry record; it expires by itself"),
            }
        }
        http_task.abort();
        sampler.abort();
        if let Some(r) = reloader {
            r.abort();
        }
        Ok(())
    });
    relay.stop().map_err(io("stopping workers"))?;
    tracing::info!("relay stopped");
    result
}

async fn sample_load(ops: Arc<Ops>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let s = ops.relay.snapshot().stats;
        ops.load.sample(
            Instant::now(),
            [
                s.bytes_to_peer,
                s.bytes_to_client,
                s.packets_to_peer,
                s.packets_to_client,
            ],
        );
    }
}

/// How often certificate files are checked for changes.
const CERT_POLL: Duration = Duration::from_secs(5);

/// Reloads the TLS certificate when its files change (checked every 5 s) or on SIGHUP. New
/// handshakes use the new certificate; established sessions are untouched.
async fn reload_certs(store: std::sync::Arc<crate::net::tls::CertStore>) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(CERT_POLL);
    loop {
        #[cfg(unix)]
        let forced = match hup.as_mut() {
            Some(h) => tokio::select! {
                _ = tick.tick() => false,
                _ = h.recv() => true,
            },
            None => {
                tick.tick().await;
                false
            }
        };
        #[cfg(not(unix))]
        let forced = {
            tick.tick().await;
            false
        };
        let result = if forced {
            store.reload().map(|()| true)
        } else {
            store.reload_if_changed()
        };
        match result {
            Ok(true) => tracing::info!(forced, "TLS certificate reloaded"),
            Ok(false) => {}
            // Keep serving with the previous certificate; say so once per attempt.
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate reload failed; keeping the old one")
            }
        }
    }
}
