//! The ops HTTP listener: `/metrics`, `/status`, `/healthz`, `/readyz`, `POST /drain`.
//! Errors are RFC 9457 problem details (`geoturn_shared::http_error`).

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use subtle::ConstantTimeEq;

use super::{Ops, metrics, status};

/// The router.
pub fn router(ops: Arc<Ops>) -> Router {
    Router::new()
        .route("/metrics", get(get_metrics))
        .route("/status", get(get_status))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(get_readyz))
        .route("/drain", post(post_drain))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(ops)
}

/// Bounds on the ops port (scrapers, probes, an operator's curl): a handful of connections,
/// each of which must send its request headers within 30 s of accept or of its last response.
const HTTP_LIMITS: geoturn_shared::http_server::Limits = geoturn_shared::http_server::Limits {
    max_connections: 64,
    header_timeout: std::time::Duration::from_secs(30),
};

/// Serves the router on `listener` until the future is dropped.
pub async fn serve(listener: tokio::net::TcpListener, ops: Arc<Ops>) {
    geoturn_shared::http_server::serve(listener, router(ops), HTTP_LIMITS).await;
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    use geoturn_shared::http_error::{PROBLEM_JSON, error_body};
    (
        status,
        [(header::CONTENT_TYPE, PROBLEM_JSON)],
        Json(error_body(status.as_u16(), code, message)),
    )
        .into_response()
}

async fn get_metrics(State(ops): State<Arc<Ops>>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&ops),
    )
        .into_response()
}

async fn get_status(State(ops): State<Arc<Ops>>) -> Json<status::Status> {
    Json(status::status(&ops))
}

async fn get_readyz(State(ops): State<Arc<Ops>>) -> Response {
    if ops.drain.is_draining() {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "the relay is draining and takes no new allocations",
        )
    } else {
        "ready\n".into_response()
    }
}

async fn post_drain(State(ops): State<Arc<Ops>>, headers: HeaderMap) -> Response {
    let Some(token) = &ops.config.admin_token else {
        return error(
            StatusCode::FORBIDDEN,
            "drain_disabled",
            "no admin token is configured (--admin-token); drain with SIGTERM instead",
        );
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let ok: bool = presented.as_bytes().ct_eq(token.expose()).into();
    if !ok {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token",
        );
    }
    let deadline = ops.drain.begin("admin request");
    let body = serde_json::json!({
        "state": "draining",
        "allocations": ops.relay.snapshot().allocations,
        "remaining_s": deadline.saturating_duration_since(Instant::now()).as_secs(),
    });
    (StatusCode::ACCEPTED, Json(body)).into_response()
}
