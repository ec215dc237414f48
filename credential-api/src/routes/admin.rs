//! Operator and signaling-server endpoints: secret rotation and listing, user revocation,
//! relay drain (admin scope), and the fleet snapshot (any API key).

use geoturn_shared::clock::unix_secs;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use geoturn_shared::registry::{RegistryError, RegistryEvent, RelayState};

use super::{authenticate, credential_headers, request_ip, require_admin, require_api_key};
use crate::error::ApiError;
use crate::server::AppState;
use crate::snapshot::Snapshot;

fn registry_error(e: RegistryError) -> ApiError {
    tracing::warn!(error = %e, "registry call failed");
    match e {
        RegistryError::Invalid { .. } => ApiError::bad_request("invalid", e.to_string()),
        _ => ApiError::unavailable("registry_unavailable", e.to_string()),
    }
}

/// A path id (user or relay): bounded and printable.
fn check_id(id: &str, what: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "bad_id",
            format!("{what} must be 1 to 128 bytes without control characters"),
        ));
    }
    Ok(())
}

/// `POST /v1/admin/secrets/rotate` → 201 with the new secret's id and the retiring ones.
pub async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers, request_ip(&state, peer, &headers))?;
    require_admin(&caller)?;
    if !state.secrets.registry_backed() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "rotation_unavailable",
            "secrets live in the registry only with --secrets-key; this API has static secrets",
        ));
    }
    let rotation = state
        .secrets
        .rotate(&state.registry, unix_secs(), state.config.max_ttl)
        .await
        .map_err(registry_error)?;
    state.metrics.rotation();
    tracing::info!(caller = %caller.name, secret_id = %rotation.id, "secret rotated");
    let body = serde_json::json!({
        "id": rotation.id,
        "retiring": rotation.retiring.iter().map(|r| serde_json::json!({
            "id": r.id, "notAfter": r.not_after,
        })).collect::<Vec<_>>(),
        "removed": rotation.removed,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /v1/admin/secrets`: the live set, newest (active) first, for signaling servers that
/// mint credentials themselves.
pub async fn list_secrets(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers, request_ip(&state, peer, &headers))?;
    require_admin(&caller)?;
    let now = unix_secs();
    let set = state.secrets.snapshot();
    let active = set.active(now).map(|s| s.id.clone());
    let secrets: Vec<_> = set
        .live(now)
        .map(|s| {
            serde_json::json!({
                "id": s.id,
                "secret": String::from_utf8_lossy(s.value.expose()),
                "notAfter": s.not_after,
                "active": Some(&s.id) == active.as_ref(),
            })
        })
        .collect();
    let mut response =
        Json(serde_json::json!({"secrets": secrets, "maxTtl": state.config.max_ttl}))
            .into_response();
    credential_headers(&mut response, &state);
    Ok(response)
}

/// `POST /v1/admin/users/{id}/revoke` → 202: every relay refuses the user's current
/// credentials from now on.
pub async fn revoke_user(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers, request_ip(&state, peer, &headers))?;
    require_admin(&caller)?;
    check_id(&user, "user id")?;
    state
        .registry
        .publish(&RegistryEvent::UserRevoked { user: user.clone() })
        .await
        .map_err(registry_error)?;
    tracing::info!(caller = %caller.name, user = %geoturn_shared::pii::Pii(&user), "user revoked");
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"user": user, "revoked": true})),
    )
        .into_response())
}

/// `POST /v1/admin/relays/{id}/drain` → 202 once the request is published: from then on this
/// API instance no longer hands the relay out (others as soon as the event reaches them).
/// The relay stops taking allocations, finishes the ones it has, and leaves; its own registry
/// record says `draining` once it has heard, normally within milliseconds.
pub async fn drain_relay(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(relay): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers, request_ip(&state, peer, &headers))?;
    require_admin(&caller)?;
    check_id(&relay, "relay id")?;
    if !state.snapshot.get().relays.iter().any(|r| r.id == relay) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_relay",
            "no relay with this id is registered",
        ));
    }
    state
        .registry
        .publish(&RegistryEvent::RelayDraining {
            relay_id: relay.clone(),
        })
        .await
        .map_err(registry_error)?;
    // Not only when our own subscription echoes the event: the answer's promise holds at once.
    state.snapshot.mark_draining(&relay);
    tracing::info!(caller = %caller.name, %relay, "drain requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"relay": relay, "draining": true})),
    )
        .into_response())
}

/// `GET /v1/relays`: the load snapshot, for dashboards and operators (API keys only: it lists
/// the fleet's addresses and load).
pub async fn relays(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers, request_ip(&state, peer, &headers))?;
    require_api_key(&caller, "the relay list")?;
    let mut response = Json(fleet_json(&state, &state.snapshot.get())).into_response();
    credential_headers(&mut response, &state);
    Ok(response)
}

/// The load snapshot as `GET /v1/relays` answers it and `GET /v1/events` pushes it: every
/// record plus its heartbeat age and staleness at the read, a relay the API was told is
/// draining shown draining before its own heartbeat says so, the stale limit, and whether the
/// registry could be read.
pub(crate) fn fleet_json(state: &AppState, snap: &Snapshot) -> serde_json::Value {
    let stale_after = state.config.rank.stale_after;
    let relays: Vec<_> = snap
        .relays
        .iter()
        .zip(&snap.candidates)
        .map(|(r, c)| {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert(
                    "heartbeat_age_ms".into(),
                    u64::try_from(c.heartbeat_age.as_millis())
                        .unwrap_or(u64::MAX)
                        .into(),
                );
                o.insert("stale".into(), (c.heartbeat_age > stale_after).into());
                if c.draining && r.state == RelayState::Active {
                    o.insert("state".into(), RelayState::Draining.as_str().into());
                }
            }
            v
        })
        .collect();
    serde_json::json!({
        "relays": relays,
        "fetchedAt": crate::rfc3339::format_utc(snap.fetched_at_ms / 1000),
        "fetchedAtMs": snap.fetched_at_ms,
        "staleAfterMs": u64::try_from(stale_after.as_millis()).unwrap_or(u64::MAX),
        "stale": snap.stale.is_some(),
        "error": snap.stale.as_ref().map(|s| s.error.clone()),
    })
}
