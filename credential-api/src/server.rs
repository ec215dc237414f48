//! The HTTP service: shared state, the router, the request middleware (metrics, CORS, body
//! limit, JSON 404/405), and starting and stopping the background tasks (load snapshot,
//! secret reloads).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use geoturn_geo::GeoIp;
use geoturn_shared::registry::{Registry, RegistryEvent};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument as _;

use crate::config::ApiConfig;
use crate::error::ApiError;
use crate::metrics::ApiMetrics;
use crate::rate_limit::RateLimiter;
use crate::routes;
use crate::secrets::ApiSecrets;
use crate::snapshot::SnapshotStore;
use crate::state::{AppState, SNAPSHOT_HEADER};

/// Connections at once, and the time to send a request's headers (from accept, or from the
/// end of the last response on a kept-alive connection): a client that trickles headers or
/// idles holds a connection 30 s at most, and no number of them takes every descriptor. A load
/// balancer in front must close idle connections sooner (the terraform ALB: 25 s).
const HTTP_LIMITS: geoturn_shared::http_server::Limits = geoturn_shared::http_server::Limits {
    max_connections: 4096,
    header_timeout: Duration::from_secs(30),
};
/// A request must be answered within this, its body read included (a body sent a byte at a
/// time gets 408). Handlers bound their own registry calls far below it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest request body: ICE-server requests are a few small fields.
pub const MAX_BODY: usize = 16 * 1024;

/// Callers tracked by the rate limiter at once.
const MAX_RATE_KEYS: usize = 100_000;

/// Secrets are reloaded this often even without events (an event lost while the subscription
/// was down, a secret deleted by hand).
const SECRET_RELOAD: Duration = Duration::from_secs(30);

/// Every route, as matched (metric labels and the OpenAPI test use this list).
pub const ROUTES: &[&str] = &[
    "/v1/ice-servers",
    "/v1/turn-rest",
    "/v1/turn/keys/{key_id}/credentials/generate-ice-servers",
    "/v1/relays",
    "/v1/mesh",
    "/v1/history",
    "/v1/route",
    "/v1/admin/secrets",
    "/v1/admin/secrets/rotate",
    "/v1/admin/users/{id}/revoke",
    "/v1/admin/relays/{id}/drain",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/dashboard",
    "/dashboard/{asset}",
    "/v1/events",
    "/v1/client.js",
];

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration cannot serve anyone.
    #[error("{0}")]
    Config(String),
    /// The registry URL is unusable.
    #[error("registry: {0}")]
    Registry(String),
    /// A GeoIP database could not be opened.
    #[error(transparent)]
    Geo(#[from] geoturn_geo::GeoError),
    /// Binding the listener failed.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// A started API: its address, state and background tasks. Dropping it stops them.
#[derive(Debug)]
pub struct RunningApi {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Shared state (tests read metrics and snapshots from it).
    pub state: Arc<AppState>,
    tasks: Vec<JoinHandle<()>>,
    auth_source: Option<Arc<crate::auth_reload::AuthSource>>,
}

impl RunningApi {
    /// Reloads the callers' keys from `source` on every change of its files from now on, and
    /// whenever [`RunningApi::reload_auth`] is called (SIGHUP).
    pub fn watch_auth(&mut self, source: crate::auth_reload::AuthSource) {
        let source = Arc::new(source);
        self.auth_source = Some(source.clone());
        // First in the list: `shutdown` takes the last task as the HTTP server.
        self.tasks.insert(
            0,
            tokio::spawn(crate::auth_reload::watch(self.state.clone(), source)),
        );
    }

    /// Reads the callers' keys again now (SIGHUP); false when they were kept.
    pub fn reload_auth(&self) -> bool {
        match &self.auth_source {
            Some(source) => crate::auth_reload::reload(&self.state, source, "SIGHUP"),
            None => false,
        }
    }

    /// Shuts down gracefully: `/readyz` turns 503 and event streams end at once, the listener
    /// closes, requests in progress are answered; returns when every connection has ended or
    /// `grace` has passed, whichever comes first (then the rest is cut when this is dropped).
    pub async fn shutdown(mut self, grace: Duration) {
        self.state.stopping.send_replace(true);
        tracing::info!(
            grace_s = grace.as_secs_f64(),
            "shutting down: readiness off, no new connections, finishing requests in progress"
        );
        // The HTTP server is the last task started.
        if let Some(server) = self.tasks.pop() {
            let abort = server.abort_handle();
            if tokio::time::timeout(grace, server).await.is_err() {
                tracing::warn!("connections still open after the grace period: closing them");
                abort.abort();
            }
        }
    }
}

impl Drop for RunningApi {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Connects the registry (or uses `registry`, for `geoturn up`'s shared in-memory one), opens
/// the GeoIP databases, loads secrets and the first snapshot, binds and serves.
pub async fn start(
    config: ApiConfig,
    registry: Option<Registry>,
) -> Result<RunningApi, StartError> {
    if config.auth.is_empty() {
        return Err(StartError::Config(
            "no caller keys configured: add API keys or JWT keys to the config file, or \
             --api-key NAME:KEY for development"
                .into(),
        ));
    }
    let registry = match registry {
        Some(r) => r,
        None => Registry::connect(
            &config.registry,
            &config.registry_prefix,
            config.secrets_key,
        )
        .await
        .map_err(|e| StartError::Registry(e.to_string()))?,
    };
    let registry_backed = matches!(registry, Registry::Memory(_)) || config.secrets_key.is_some();
    if !registry_backed && config.static_secrets.is_empty() {
        return Err(StartError::Config(
            "no TURN secret: give --auth-secret, or --secrets-key to use the registry's".into(),
        ));
    }
    let geo = GeoIp::open(&config.geoip)?;
    for db in geo.databases() {
        tracing::info!(path = %db.path.display(), kind = %db.database_type, ip_version = db.ip_version, "GeoIP database");
    }
    let secrets = ApiSecrets::new(config.static_secrets.clone(), registry_backed);
    if registry_backed {
        // Secrets stored by a version before 2 get their metadata authenticated now; until
        // then, whoever can write Redis could revive a retired one.
        match registry.reseal_legacy_secrets().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "re-sealed secrets stored in the old format"),
            Err(e) => tracing::warn!(error = %e, "cannot re-seal secrets stored in the old format"),
        }
    }
    if let Err(e) = secrets.reload(&registry).await {
        tracing::warn!(error = %e, "cannot load secrets from the registry yet; retrying in the background");
    }
    let snapshot = Arc::new(SnapshotStore::default());
    snapshot.set_recovery_grace(config.rank.stale_after);
    snapshot.set_rtt_overrides(
        config
            .rank
            .rtt_matrix
            .as_deref()
            .cloned()
            .unwrap_or_default(),
    );
    snapshot.refresh(&registry).await;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let refresh = config.refresh;
    let limiter = RateLimiter::new(config.rate_limit, config.rate_burst, MAX_RATE_KEYS);
    let auth = std::sync::RwLock::new(Arc::new(config.auth.clone()));
    let history = std::sync::Mutex::new(crate::history::History::new(config.history_step));
    let state = Arc::new(AppState {
        config,
        registry: registry.clone(),
        geo,
        secrets,
        snapshot: snapshot.clone(),
        limiter,
        metrics: ApiMetrics::default(),
        started: Instant::now(),
        stopping: tokio::sync::watch::Sender::new(false),
        auth,
        history,
        measured: crate::measured::MeasuredCache::default(),
    });
    // JWKS keys: fetched now and on their interval, for as long as these keys are in use.
    state.authenticator().start_jwks();
    let tasks = vec![
        tokio::spawn(crate::snapshot::refresh_loop(
            snapshot,
            registry.clone(),
            refresh,
        )),
        tokio::spawn(follow_events(state.clone())),
        tokio::spawn(record_history(state.clone())),
        tokio::spawn(serve(listener, state.clone())),
    ];
    tracing::info!(%addr, "credential API listening");
    Ok(RunningApi {
        addr,
        state,
        tasks,
        auth_source: None,
    })
}

async fn serve(listener: tokio::net::TcpListener, state: Arc<AppState>) {
    let stop = state.stopping.subscribe();
    geoturn_shared::http_server::serve_until(listener, router(state), HTTP_LIMITS, stop).await;
}

/// Reloads secrets on rotation events (from any API instance), after a gap in the
/// subscription, and periodically.
async fn follow_events(state: Arc<AppState>) {
    let mut events = state.registry.subscribe().await;
    let mut tick = tokio::time::interval(SECRET_RELOAD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let reload = tokio::select! {
            _ = tick.tick() => true,
            e = events.recv() => match e {
                Ok(RegistryEvent::SecretRotated { .. } | RegistryEvent::Resync)
                | Err(RecvError::Lagged(_)) => true,
                Ok(RegistryEvent::RelayDraining { relay_id }) => {
                    state.snapshot.mark_draining(&relay_id);
                    false
                }
                Ok(_) => false,
                Err(RecvError::Closed) => return,
            },
        };
        if reload && let Err(e) = state.secrets.reload(&state.registry).await {
            tracing::warn!(error = %e, "cannot reload secrets; keeping the current ones");
        }
    }
}

/// Records every new snapshot into the history (the first one, loaded before this starts, too).
/// A snapshot the registry could not refresh is left out: its numbers are old.
async fn record_history(state: Arc<AppState>) {
    let mut changes = state.snapshot.subscribe();
    let stale_after = state.config.rank.stale_after;
    loop {
        let snap = state.snapshot.get();
        if snap.loaded() && snap.stale.is_none() {
            let relays = crate::history::RelaySample::from_snapshot(&snap, stale_after);
            state.history().record(snap.fetched_at_ms, &relays);
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// The router with every route and layer.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route(
            "/v1/ice-servers",
            get(routes::credentials::get_ice_servers).post(routes::credentials::post_ice_servers),
        )
        .route("/v1/turn-rest", get(routes::credentials::turn_rest))
        .route(
            "/v1/turn/keys/{key_id}/credentials/generate-ice-servers",
            post(routes::credentials::cloudflare_generate),
        )
        .route("/v1/relays", get(routes::admin::relays))
        .route("/v1/mesh", get(routes::admin::mesh))
        .route("/v1/history", get(routes::admin::history))
        .route("/v1/route", get(routes::admin::route))
        .route("/v1/admin/secrets", get(routes::admin::list_secrets))
        .route(
            "/v1/admin/secrets/rotate",
            post(routes::admin::rotate_secret),
        )
        .route(
            "/v1/admin/users/{id}/revoke",
            post(routes::admin::revoke_user),
        )
        .route(
            "/v1/admin/relays/{id}/drain",
            post(routes::admin::drain_relay),
        )
        .route("/healthz", get(routes::ops::healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/metrics", get(routes::ops::metrics))
        .route("/openapi.json", get(routes::ops::openapi))
        .route("/dashboard", get(crate::dashboard::page))
        .route("/dashboard/{asset}", get(crate::dashboard::asset))
        .route("/v1/events", get(crate::dashboard::events))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), track));
    let api = match cors(&state.config.cors_origins) {
        Some(layer) => api.layer(layer),
        None => api,
    };
    // Outside the CORS layer: a public script, importable from any origin (it answers
    // `Access-Control-Allow-Origin: *` itself; the layer would add a second value).
    api.route(
        "/v1/client.js",
        get(routes::ops::client_js).fallback(method_not_allowed),
    )
    .with_state(state)
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .expose_headers([header::HeaderName::from_static(SNAPSHOT_HEADER)])
            .max_age(Duration::from_secs(600)),
    )
}

/// Counts every request by route and status, with its latency.
async fn track(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|m| ROUTES.iter().find(|r| **r == m.as_str()).copied())
        .unwrap_or("unmatched");
    // One span per request (exported over OTLP when enabled); handlers record the routing
    // decision on it (`routes::credentials::mint`).
    // Debug level: only the OTLP layer asks for it, so without a collector the span is
    // disabled and costs nothing (at info the log layer recorded it: ~12 µs a request).
    let span = tracing::debug_span!(
        "http.request",
        otel.name = %format_args!("{} {route}", req.method()),
        otel.kind = "server",
        http.request.method = %req.method(),
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        geoturn.caller = tracing::field::Empty,
        geoturn.client_located = tracing::field::Empty,
        geoturn.measured_regions = tracing::field::Empty,
        geoturn.relays = tracing::field::Empty,
        geoturn.snapshot = tracing::field::Empty,
    );
    let started = Instant::now();
    let response =
        match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req).instrument(span.clone())).await {
            Ok(response) => response,
            Err(_) => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request was not complete within 30 s",
            )
            .into_response(),
        };
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    state.metrics.request(route, status, started.elapsed());
    response
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /openapi.json",
    )
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; see /openapi.json",
    )
    .into_response()
}
