//! Unauthenticated operations endpoints: liveness, readiness (with why), Prometheus metrics,
//! and the OpenAPI description.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::answers::{Freshness, Readiness, RegistryHealth};
use crate::metrics::Gauges;
use crate::state::AppState;
use geoturn_shared::clock::unix_ms;
use geoturn_shared::clock::unix_secs;

/// `GET /healthz`: the process answers.
#[utoipa::path(get, tag = "ops", path = "/healthz", summary = "Liveness",
    responses((status = 200, description = "ok", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 once the registry has been read and a secret can mint, with the
/// snapshot's freshness in the body (a stale snapshot still serves, so it stays ready), but
/// not why the registry is unreachable.
#[utoipa::path(get, tag = "ops", path = "/readyz", summary = "Readiness with snapshot freshness",
    responses(
        (status = 200, description = "ready", body = Readiness),
        (status = 503, description = "not ready (or stopping)", body = Readiness)))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let snap = state.snapshot.get();
    let secrets = state.secrets.snapshot();
    let can_mint = secrets.active(unix_secs()).is_some();
    // A stopping API is not ready: load balancers and Kubernetes take it out of rotation
    // while it finishes what it has.
    let stopping = state.is_stopping();
    let ready = snap.loaded() && can_mint && !stopping;
    let body = Readiness {
        ready,
        stopping,
        registry: if snap.stale.is_some() {
            RegistryHealth::Unreachable
        } else if snap.loaded() {
            RegistryHealth::Ok
        } else {
            RegistryHealth::NeverRead
        },
        snapshot: if snap.stale.is_some() {
            Freshness::Stale
        } else {
            Freshness::Fresh
        },
        snapshot_age_ms: u64::try_from(snap.age(unix_ms()).as_millis()).unwrap_or(u64::MAX),
        relays: snap.relays.len() as u64,
        secrets: secrets.live(unix_secs()).count() as u64,
    };
    // No registry error text here: this endpoint is unauthenticated, and the text can name
    // hosts and ports. It is in the log (once per outage) and in `/v1/relays` for callers.
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text.
#[utoipa::path(get, tag = "ops", path = "/metrics", summary = "Prometheus metrics",
    responses((status = 200, description = "Prometheus text exposition", body = String,
        content_type = "text/plain; version=0.0.4; charset=utf-8")))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let snap = state.snapshot.get();
    let stale_after = state.config.rank.stale_after;
    let (mut active, mut draining, mut stale) = (0, 0, 0);
    for c in &snap.candidates {
        if c.heartbeat_age > stale_after {
            stale += 1;
        } else if c.draining {
            draining += 1;
        } else {
            active += 1;
        }
    }
    let gauges = Gauges {
        snapshot_age: snap.age(unix_ms()),
        snapshot_stale: snap.stale.is_some(),
        relays: vec![("active", active), ("draining", draining), ("stale", stale)],
        secrets: state.secrets.snapshot().live(unix_secs()).count() as u64,
    };
    let mut response = state.metrics.render(&gauges).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    response
}

/// The browser client module (`credential-api/src/client/geoturn-client.js`).
pub const CLIENT_JS: &str = include_str!("../client/geoturn-client.js");

/// `GET /v1/client.js`: the browser client, an ES module any origin may import (it holds no
/// secret; module scripts from another origin need CORS).
#[utoipa::path(get, tag = "ops", path = "/v1/client.js",
    summary = "The browser client: an ES module that fetches ICE servers, refreshes them before expiresAt and backs off on 429/503 (no authentication; any origin may import it)",
    responses((status = 200, description = "JavaScript module", body = String, content_type = "text/javascript")))]
pub async fn client_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        CLIENT_JS,
    )
        .into_response()
}

/// `GET /openapi.json`.
#[utoipa::path(get, tag = "ops", path = "/openapi.json", summary = "This document",
    responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
pub async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
