//! ICE servers for a client, in three shapes: ours (`/v1/ice-servers`, W3C `RTCIceServer`
//! with `ttl` and `expiresAt`), the TURN REST API draft's (`/v1/turn-rest`,
//! draft-uberti-behave-turn-rest-00 §2.2) and Cloudflare's (`generate-ice-servers`), so
//! client code written for either switches by changing a URL.
//!
//! All three go the same way: authenticate, find the client's address and place, rank the
//! snapshot's relays, mint one credential with the active secret.

use geoturn_shared::clock::unix_secs;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use geoturn_shared::RestCredential;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::json_body;
use crate::answers::{
    CloudflareAnswer, CloudflareError, CloudflareErrorItem, IceServersAnswer, TurnRestAnswer,
};
use crate::auth::{Caller, CallerKind};
use crate::caller::{PathParam, authenticate, authenticate_key, request_ip, require_api_key};
use crate::error::ApiError;
use crate::ice::{IceServer, chosen, ice_servers, turn_uris};
use crate::openapi::{CloudflareProblems, IpAddress, Problems, TurnService, UserId};
use crate::rfc3339::Timestamp;
use crate::state::AppState;
use crate::state::{ClientRanking, credential_headers, relay_count};

/// Longest user id put into a username.
const MAX_USER_LEN: usize = 128;

/// What a caller may ask for (query string or JSON body).
#[derive(Debug, Default, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[schema(as = IceRequest)]
#[into_params(parameter_in = Query)]
pub struct IceParams {
    /// Credential lifetime in seconds, capped by --max-ttl.
    #[serde(default, deserialize_with = "ttl_seconds")]
    #[schema(minimum = 1, maximum = 4_294_967_295_u64)]
    #[param(minimum = 1, maximum = 4_294_967_295_u64)]
    pub ttl: Option<u64>,
    /// The client's address, when a backend asks on a browser's behalf (API-key callers only);
    /// its first spelling, client_ip, is still accepted.
    #[serde(rename = "clientIp", alias = "client_ip")]
    #[schema(value_type = Option<IpAddress>)]
    #[param(value_type = Option<IpAddress>)]
    pub client_ip: Option<IpAddr>,
    /// Relays to return.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 8)]
    #[param(minimum = 1, maximum = 8)]
    pub count: Option<usize>,
    /// TURN user id (API-key callers; a JWT's sub is its user). Without one, each credential
    /// gets its own: the key's name, `~` and 12 random hex digits.
    #[schema(value_type = Option<UserId>)]
    #[param(value_type = Option<UserId>)]
    pub user: Option<String>,
}

/// An optional whole number as JSON (`8`, and `8.0`, which JSON Schema counts as an integer
/// too) or as a query-string value (`"8"`).
fn whole_number<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Whole(u64),
        Float(f64),
        Text(String),
    }
    let whole = match Option::<Number>::deserialize(de)? {
        None => return Ok(None),
        Some(Number::Whole(n)) => Some(n),
        // Exactly representable and without a fraction: 2^53 bounds what f64 holds exactly.
        Some(Number::Float(f))
            if f.fract() == 0.0 && (0.0..9_007_199_254_740_992.0).contains(&f) =>
        {
            Some(f as u64)
        }
        Some(Number::Float(_)) => None,
        Some(Number::Text(s)) => s.parse::<u64>().ok(),
    };
    whole
        .and_then(|n| T::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("expected a whole number"))
}

/// An optional credential lifetime in seconds, a whole number up to 2^32 − 1 (longer is
/// capped by `--max-ttl` anyway; more than 136 years is a mistake worth a 400).
fn ttl_seconds<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    Ok(whole_number::<D, u32>(de)?.map(u64::from))
}

/// A minted answer.
struct Minted {
    servers: Vec<IceServer>,
    uris: Vec<String>,
    credential: RestCredential,
    ttl: u64,
    expires_at: u64,
}

/// Ranks relays for the request's client and mints a credential.
/// `NAME~` and 12 random hex digits: unique per credential, and still says which key minted it.
fn anonymous_user(key_name: &str) -> String {
    let random: [u8; 6] = rand::random();
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("{key_name}~{hex}")
}

async fn mint(
    state: &AppState,
    caller: &Caller,
    params: &IceParams,
    request_ip: IpAddr,
) -> Result<Minted, ApiError> {
    let config = &state.config;
    let ttl = match params.ttl {
        None => config.default_ttl,
        Some(0) => return Err(ApiError::bad_request("bad_ttl", "ttl must be at least 1")),
        Some(t) => t.min(config.max_ttl),
    };
    let count = relay_count(params.count.unwrap_or(config.relays_per_answer))?;
    let client = match params.client_ip {
        None => request_ip,
        Some(ip) => {
            require_api_key(caller, "client_ip")?;
            ip
        }
    };
    let user = match (&caller.kind, &params.user, &caller.user) {
        (CallerKind::Jwt, Some(_), _) => {
            return Err(ApiError::forbidden(
                "user_not_allowed",
                "a JWT caller's user is its token's `sub`",
            ));
        }
        (_, Some(u), _) => u.clone(),
        (_, None, Some(sub)) => sub.clone(),
        // No user named: a user id of its own for this credential (the key's name and a
        // random part), so the relays' per-user quota is not one bucket shared by every user
        // of the key, and one copied credential exhausts only its own.
        (_, None, None) => anonymous_user(&caller.name),
    };
    if user.is_empty() || user.len() > MAX_USER_LEN || user.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "bad_user",
            format!("user must be 1 to {MAX_USER_LEN} bytes without control characters"),
        ));
    }

    let ClientRanking {
        snapshot,
        location,
        measured,
        ranking,
    } = state.rank_client(client, count, true).await;
    let relays = chosen(&ranking, &snapshot.relays);
    if relays.is_empty() {
        return Err(ApiError::unavailable(
            "no_relays",
            "no live relay can take new allocations right now",
        ));
    }
    let now = unix_secs();
    let secrets = state.secrets.snapshot();
    let Some(secret) = secrets.active(now) else {
        return Err(ApiError::unavailable(
            "no_secret",
            "no live TURN secret to mint credentials with",
        ));
    };
    let credential = RestCredential::mint(secret.value.expose(), &user, now, ttl);
    state.metrics.credential_issued();
    let span = tracing::Span::current();
    span.record("geoturn.caller", caller.name.as_str());
    span.record("geoturn.client_located", location.is_some());
    span.record("geoturn.measured_regions", measured.regions.len());
    span.record(
        "geoturn.relays",
        ranking
            .chosen
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>()
            .join(",")
            .as_str(),
    );
    span.record(
        "geoturn.snapshot",
        if snapshot.stale.is_some() {
            "stale"
        } else {
            "fresh"
        },
    );
    tracing::debug!(
        client = %geoturn_shared::pii::Pii(client),
        chosen = ?ranking.chosen.iter().map(|c| (&c.id, &c.reason)).collect::<Vec<_>>(),
        "ICE servers minted"
    );
    Ok(Minted {
        servers: ice_servers(
            &relays,
            &credential,
            &config.anycast_urls,
            config.answer_urls,
        ),
        uris: turn_uris(&relays, config.answer_urls)
            .into_iter()
            .chain(config.anycast_urls.iter().cloned())
            .collect(),
        credential,
        ttl,
        expires_at: now.saturating_add(ttl),
    })
}

fn ice_response(state: &Arc<AppState>, minted: Minted) -> Response {
    let body = IceServersAnswer {
        ice_servers: minted.servers,
        ttl: minted.ttl,
        expires_at: Timestamp::secs(minted.expires_at),
    };
    let mut response = Json(body).into_response();
    credential_headers(&mut response, state);
    response
}

/// `GET /v1/ice-servers?ttl=&clientIp=&count=&user=`
#[utoipa::path(get, tag = "credentials", path = "/v1/ice-servers", summary = "ICE servers for the caller's client",
    params(IceParams), security(("bearer" = [])),
    responses((status = 200, description = "ICE servers", body = IceServersAnswer), Problems))]
pub async fn get_ice_servers(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<IceParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let ip = request_ip(&state, peer, &headers);
    let caller = authenticate(&state, &headers, ip).await?;
    let Query(params) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let minted = mint(&state, &caller, &params, ip).await?;
    Ok(ice_response(&state, minted))
}

/// `POST /v1/ice-servers` with the same fields as a JSON body (an empty body is fine).
#[utoipa::path(post, tag = "credentials", path = "/v1/ice-servers",
    summary = "ICE servers for the caller's client (JSON body)",
    request_body(content = Option<IceParams>, content_type = "application/json"),
    security(("bearer" = [])),
    responses((status = 200, description = "ICE servers", body = IceServersAnswer), Problems))]
pub async fn post_ice_servers(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let ip = request_ip(&state, peer, &headers);
    let caller = authenticate(&state, &headers, ip).await?;
    let params: IceParams = json_body(body)?;
    let minted = mint(&state, &caller, &params, ip).await?;
    Ok(ice_response(&state, minted))
}

/// The TURN REST draft's query: `service`, `username`, `key`, plus our `ttl`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TurnRestParams {
    /// Must be `turn`.
    #[param(required = true, value_type = TurnService)]
    pub service: Option<String>,
    /// The user id the username carries.
    #[param(value_type = Option<UserId>)]
    pub username: Option<String>,
    /// The API key (the draft's way); the Authorization header works too.
    pub key: Option<String>,
    /// Lifetime in seconds.
    #[serde(default, deserialize_with = "ttl_seconds")]
    #[param(minimum = 1, maximum = 4_294_967_295_u64)]
    pub ttl: Option<u64>,
}

/// `GET /v1/turn-rest?service=turn&username=U&key=K` → `{"username","password","ttl","uris"}`.
#[utoipa::path(get, tag = "credentials", path = "/v1/turn-rest",
    summary = "draft-uberti-behave-turn-rest-00 credentials (API keys, in `key` or the Authorization header)",
    params(TurnRestParams),
    responses((status = 200, description = "Credentials", body = TurnRestAnswer), Problems))]
pub async fn turn_rest(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<TurnRestParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let ip = request_ip(&state, peer, &headers);
    let Query(q) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let caller = match &q.key {
        Some(key) => authenticate_key(&state, key, ip)?,
        None => authenticate(&state, &headers, ip).await?,
    };
    if q.service.as_deref() != Some("turn") {
        return Err(ApiError::bad_request(
            "bad_service",
            "service must be \"turn\" (draft-uberti-behave-turn-rest-00 §2.1)",
        ));
    }
    let params = IceParams {
        ttl: q.ttl,
        user: q.username,
        ..IceParams::default()
    };
    let minted = mint(&state, &caller, &params, ip).await?;
    let body = TurnRestAnswer {
        username: minted.credential.username,
        password: minted.credential.password,
        ttl: minted.ttl,
        uris: minted.uris,
    };
    let mut response = Json(body).into_response();
    credential_headers(&mut response, &state);
    Ok(response)
}

/// Cloudflare's request body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = CloudflareRequest)]
pub struct CloudflareParams {
    /// Lifetime in seconds.
    #[serde(default, deserialize_with = "ttl_seconds")]
    #[schema(minimum = 1, maximum = 4_294_967_295_u64)]
    pub ttl: Option<u64>,
    /// Cloudflare's name for a caller-chosen user id.
    #[schema(value_type = Option<UserId>)]
    pub custom_identifier: Option<String>,
}

/// `POST /v1/turn/keys/{key_id}/credentials/generate-ice-servers` → 201 `{"iceServers":[…]}`.
/// `key_id` is the calling API key's name. Errors come in Cloudflare's envelope, so a client
/// written for Cloudflare's TURN service reads them as it reads Cloudflare's.
#[utoipa::path(post, tag = "credentials", path = "/v1/turn/keys/{key_id}/credentials/generate-ice-servers",
    summary = "Cloudflare-compatible ICE servers (key_id is the API key's name)",
    params(("key_id" = UserId, Path, description = "The calling API key's name")),
    request_body(content = Option<CloudflareParams>, content_type = "application/json"),
    security(("bearer" = [])),
    responses((status = 201, description = "ICE servers", body = CloudflareAnswer), CloudflareProblems))]
pub async fn cloudflare_generate(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    key_id: Result<PathParam, ApiError>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = match key_id {
        Ok(PathParam(key_id)) => cloudflare_answer(&state, peer, &key_id, &headers, body).await,
        Err(e) => Err(e),
    };
    answer.unwrap_or_else(|e| cloudflare_error(&e))
}

/// Cloudflare's API error envelope for `e`, with `e`'s status and headers (Retry-After,
/// WWW-Authenticate): `{"success": false, "errors": [{"code", "message"}], "messages": [],
/// "result": null}`. The code is 10000 for authentication errors, as Cloudflare's, else the
/// HTTP status.
fn cloudflare_error(e: &ApiError) -> Response {
    let code = match e.status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => 10_000,
        s => s.as_u16(),
    };
    let body = CloudflareError {
        success: false,
        errors: vec![CloudflareErrorItem {
            code,
            message: e.message.clone(),
        }],
        messages: Vec::new(),
        result: None,
    };
    let mut response = (e.status, Json(body)).into_response();
    e.add_headers(response.headers_mut());
    response
}

async fn cloudflare_answer(
    state: &Arc<AppState>,
    peer: SocketAddr,
    key_id: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let ip = request_ip(state, peer, headers);
    let caller = authenticate(state, headers, ip).await?;
    require_api_key(&caller, "generate-ice-servers")?;
    if caller.name != key_id {
        return Err(ApiError::forbidden(
            "key_mismatch",
            "the key id in the path is not the calling API key's name",
        ));
    }
    let p: CloudflareParams = json_body(body)?;
    let params = IceParams {
        ttl: p.ttl,
        user: p.custom_identifier,
        ..IceParams::default()
    };
    let minted = mint(state, &caller, &params, ip).await?;
    let mut response = (
        StatusCode::CREATED,
        Json(CloudflareAnswer {
            ice_servers: minted.servers,
        }),
    )
        .into_response();
    credential_headers(&mut response, state);
    Ok(response)
}
