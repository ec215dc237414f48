//! Operator and signaling-server endpoints: secret rotation and listing, user revocation,
//! relay drain (admin scope), and the fleet snapshot (any API key).

use geoturn_shared::clock::unix_secs;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use geoturn_shared::registry::{RegistryError, RegistryEvent};

use crate::answers::{DrainRequested, LiveSecret, RetiringSecret, Revoked, Rotated, SecretsList};
use crate::answers::{Fleet, RouteAnswer};
use crate::caller::{Admin, ApiCaller, PathParam, SecretsReader, require_api_key};
use crate::error::ApiError;
use crate::fleet::fleet_json;
use crate::history::HistoryAnswer;
use crate::openapi::{IpAddress, Problems, UserId};
use crate::rfc3339::Timestamp;
use crate::state::{AppState, credential_headers, relay_count};
use geoturn_shared::http_error::Problem;
use std::net::IpAddr;

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
#[utoipa::path(post, tag = "admin", path = "/v1/admin/secrets/rotate",
    summary = "Create a new active secret; older ones retire after max TTL (admin)",
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Rotated", body = Rotated),
        (status = 409, description = "Secrets are static (no --secrets-key): nothing to rotate; or 16 secrets are still valid (too_many_secrets): rotate again once the oldest retires",
            body = Problem, content_type = "application/problem+json"),
        Problems))]
pub async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
) -> Result<Response, ApiError> {
    if !state.secrets.registry_backed() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "rotation_unavailable",
            "secrets live in the registry only with --secrets-key; this API has static secrets",
        ));
    }
    // Relays and the API load at most MAX_SECRETS secrets, newest first: a rotation past that
    // many still-valid secrets would push the oldest out of every set before it expires, and
    // credentials minted with it would be refused early. So it waits for one to retire.
    let stored = state
        .registry
        .load_secrets()
        .await
        .map_err(registry_error)?;
    let now = unix_secs();
    let live = stored.live(now).count();
    if live >= geoturn_shared::secret_set::MAX_SECRETS {
        let next = stored.live(now).filter_map(|s| s.not_after).min();
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_secrets",
            format!(
                "{live} secrets are still valid, the most relays and the API keep; rotate again once the oldest retires{}",
                next.map(|t| format!(" ({})", crate::rfc3339::format_utc(t)))
                    .unwrap_or_default()
            ),
        ));
    }
    let rotation = state
        .secrets
        .rotate(&state.registry, now, state.config.max_ttl)
        .await
        .map_err(registry_error)?;
    state.metrics.rotation();
    tracing::info!(caller = %caller.name, secret_id = %rotation.id, "secret rotated");
    let body = Rotated {
        id: rotation.id,
        retiring: rotation
            .retiring
            .into_iter()
            .map(|r| RetiringSecret {
                id: r.id,
                not_after: Timestamp::secs(r.not_after),
            })
            .collect(),
        removed: rotation.removed,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /v1/admin/secrets`: the live set, newest (active) first, for signaling servers that
/// mint credentials themselves (the `secrets:read` scope, or admin).
#[utoipa::path(get, tag = "admin", path = "/v1/admin/secrets",
    summary = "Live TURN secrets, active first (an API key with the secrets:read scope, or admin)",
    security(("bearer" = [])),
    responses((status = 200, description = "The live secrets", body = SecretsList), Problems))]
pub async fn list_secrets(
    State(state): State<Arc<AppState>>,
    _reader: SecretsReader,
) -> Result<Response, ApiError> {
    let now = unix_secs();
    let set = state.secrets.snapshot();
    let active = set.active(now).map(|s| s.id.clone());
    let secrets: Vec<_> = set
        .live(now)
        .map(|s| LiveSecret {
            id: s.id.clone(),
            secret: String::from_utf8_lossy(s.value.expose()).into_owned(),
            not_after: s.not_after.map(Timestamp::secs),
            active: Some(&s.id) == active.as_ref(),
        })
        .collect();
    let mut response = Json(SecretsList {
        secrets,
        max_ttl: state.config.max_ttl,
    })
    .into_response();
    credential_headers(&mut response, &state);
    Ok(response)
}

/// How long past the longest credential a revocation lasts: clock skew between API and relays.
const REVOCATION_SLACK_SECS: u64 = 300;

/// `POST /v1/admin/users/{id}/revoke` → 202: every relay refuses the user's current
/// credentials from now on. The revocation is stored before it is announced, so relays that
/// start or reconnect later, or miss the event, load it; it lasts until every credential that
/// could have been minted before it has expired (`--max-ttl`, at least a day, for signaling
/// servers minting with the shared secret).
#[utoipa::path(post, tag = "admin", path = "/v1/admin/users/{id}/revoke",
    summary = "Refuse a user's current credentials on every relay (admin)",
    params(("id" = UserId, Path, description = "The TURN user id")),
    security(("bearer" = [])),
    responses((status = 202, description = "Revoked", body = Revoked), Problems))]
pub async fn revoke_user(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    PathParam(user): PathParam,
) -> Result<Response, ApiError> {
    check_id(&user, "user id")?;
    let until = geoturn_shared::clock::unix_secs()
        + state.config.max_ttl.max(86_400)
        + REVOCATION_SLACK_SECS;
    state
        .registry
        .revoke(&user, until)
        .await
        .map_err(registry_error)?;
    state
        .registry
        .publish(&RegistryEvent::UserRevoked {
            user: user.clone(),
            until: Some(until),
        })
        .await
        .map_err(registry_error)?;
    tracing::info!(caller = %caller.name, user = %geoturn_shared::pii::Pii(&user), "user revoked");
    Ok((
        StatusCode::ACCEPTED,
        Json(Revoked {
            user,
            revoked: true,
        }),
    )
        .into_response())
}

/// `POST /v1/admin/relays/{id}/drain` → 202 once the request is published: from then on this
/// API instance no longer hands the relay out (others as soon as the event reaches them).
/// The relay stops taking allocations, finishes the ones it has, and leaves; its own registry
/// record says `draining` once it has heard, normally within milliseconds.
#[utoipa::path(post, tag = "admin", path = "/v1/admin/relays/{id}/drain", summary = "Drain a relay (admin)",
    params(("id" = UserId, Path, description = "The relay id")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Drain requested", body = DrainRequested),
        (status = 404, description = "No relay with this id is registered (unknown_relay)",
            body = Problem, content_type = "application/problem+json"),
        Problems))]
pub async fn drain_relay(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    PathParam(relay): PathParam,
) -> Result<Response, ApiError> {
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
        Json(DrainRequested {
            relay,
            draining: true,
        }),
    )
        .into_response())
}

/// `GET /v1/relays`: the load snapshot, for dashboards and operators (API keys only: it lists
/// the fleet's addresses and load).
#[utoipa::path(get, tag = "admin", path = "/v1/relays", summary = "The relay load snapshot (API keys)",
    security(("bearer" = [])),
    responses((status = 200, description = "The fleet", body = Fleet), Problems))]
pub async fn relays(
    State(state): State<Arc<AppState>>,
    ApiCaller(caller): ApiCaller,
) -> Result<Response, ApiError> {
    require_api_key(&caller, "the relay list")?;
    let mut response = Json(fleet_json(&state, &state.snapshot.get())).into_response();
    credential_headers(&mut response, &state);
    Ok(response)
}

/// `GET /v1/mesh`: the region-to-region RTT matrix measured by the relays' QUIC mesh, the
/// `[[rtt]]` overrides and what the ranking uses, with every relay link behind it (API keys
/// only: it names the fleet's relays).
#[utoipa::path(get, tag = "admin", path = "/v1/mesh", summary = "The measured RTT matrix (API keys)",
    security(("bearer" = [])),
    responses((status = 200, description = "The matrix", body = crate::answers::MeshAnswer), Problems))]
pub async fn mesh(
    State(state): State<Arc<AppState>>,
    ApiCaller(caller): ApiCaller,
) -> Result<Response, ApiError> {
    require_api_key(&caller, "the mesh matrix")?;
    let snapshot = state.snapshot.get();
    let answer = crate::answers::MeshAnswer::new(&snapshot.mesh, snapshot.fetched_at_ms);
    let mut response = Json(answer).into_response();
    credential_headers(&mut response, &state);
    Ok(response)
}

/// `GET /v1/history`'s query.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// One relay's series instead of the fleet's and the regions'.
    #[param(value_type = Option<UserId>)]
    pub relay: Option<String>,
}

/// `GET /v1/history[?relay=ID]`: the last hour this API instance recorded (the dashboard's
/// charts), for API-key callers as `GET /v1/relays`. 404 `unknown_relay` for a relay without a
/// series (never seen in the window, or beyond the relay cap).
#[utoipa::path(get, tag = "admin", path = "/v1/history",
    summary = "The last hour of fleet, region and relay load this API instance recorded (API keys)",
    params(HistoryParams), security(("bearer" = [])),
    responses(
        (status = 200, description = "The history: the fleet's and every region's series, or one relay's with ?relay=",
            body = HistoryAnswer),
        (status = 404, description = "No series for this relay (unknown_relay): not seen in the window, or beyond the relays tracked",
            body = Problem, content_type = "application/problem+json"),
        Problems))]
pub async fn history(
    State(state): State<Arc<AppState>>,
    ApiCaller(caller): ApiCaller,
    query: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    require_api_key(&caller, "the history")?;
    let Query(params) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    if let Some(id) = &params.relay {
        check_id(id, "relay")?;
    }
    let answer = state
        .history()
        .answer(geoturn_shared::clock::unix_ms(), params.relay.as_deref())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_relay",
                "no history for this relay: not seen in the last hour, or beyond the relays tracked",
            )
        })?;
    let mut response = Json(answer).into_response();
    credential_headers(&mut response, &state);
    Ok(response)
}

/// `GET /v1/route`'s query.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RouteParams {
    /// The client address to route.
    #[param(value_type = IpAddress)]
    pub ip: IpAddr,
    /// Relays to choose (default: as many as an answer carries, --relays-per-answer).
    #[param(minimum = 1, maximum = 8)]
    pub count: Option<usize>,
}

/// `GET /v1/route?ip=ADDR[&count=N]`: the relays this API would give a client at ADDR now,
/// best first, with each one's score and reason and the relays left out (API keys, as
/// `GET /v1/relays`: it shows the fleet). The same ranking `GET /v1/ice-servers` uses, from the
/// same snapshot, GeoIP and settings; `geoturn ctl route` prints it.
#[utoipa::path(get, tag = "admin", path = "/v1/route",
    summary = "Which relays a client address would be given now, and why (API keys)",
    params(RouteParams), security(("bearer" = [])),
    responses((status = 200, description = "The ranking", body = RouteAnswer), Problems))]
pub async fn route(
    State(state): State<Arc<AppState>>,
    ApiCaller(caller): ApiCaller,
    query: Result<Query<RouteParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    require_api_key(&caller, "routing")?;
    let Query(params) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let count = relay_count(params.count.unwrap_or(state.config.relays_per_answer))?;
    let r = state.rank_client(params.ip, count, false).await;
    let answer = RouteAnswer::new(
        params.ip,
        r.location.as_ref(),
        &r.ranking,
        &r.snapshot.relays,
    );
    let mut response = Json(answer).into_response();
    credential_headers(&mut response, &state);
    Ok(response)
}
