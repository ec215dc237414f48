//! Request handlers, one module per surface: [`credentials`] (ICE servers in three shapes),
//! [`admin`] (secrets, revocation, drain, the relay list) and [`ops`] (health, metrics,
//! OpenAPI). This module holds what they share: who is calling, from where, and rate limits.

pub mod admin;
pub mod credentials;
pub mod ops;

use geoturn_shared::clock::unix_secs;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use serde::de::DeserializeOwned;

use crate::auth::{Caller, CallerKind};
use crate::error::ApiError;
use crate::server::{AppState, SNAPSHOT_HEADER};

/// The address the request is about: the socket peer, or the X-Forwarded-For client when the
/// peer is a trusted proxy.
pub(crate) fn request_ip(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    crate::client_ip::client_ip(peer.ip(), &forwarded, &state.config.trusted_proxies)
}

/// Authenticates the `Authorization` header and charges the caller's rate limit. A refused
/// caller is charged to its address, so guessing keys is rate limited too.
pub(crate) fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    ip: IpAddr,
) -> Result<Caller, ApiError> {
    // A header that is not visible ASCII cannot hold a valid key: authenticate sees it as
    // malformed rather than absent.
    let value = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let result = state.config.auth.authenticate(value, unix_secs());
    charge(state, result, ip)
}

/// Like [`authenticate`] for a bare API key (the TURN REST draft's `?key=`).
pub(crate) fn authenticate_key(
    state: &AppState,
    key: &str,
    ip: IpAddr,
) -> Result<Caller, ApiError> {
    let result = state.config.auth.authenticate_api_key(key);
    charge(state, result, ip)
}

fn charge(
    state: &AppState,
    result: Result<Caller, crate::auth::AuthError>,
    ip: IpAddr,
) -> Result<Caller, ApiError> {
    let now = std::time::Instant::now();
    match result {
        Ok(caller) => {
            let key = match (&caller.kind, &caller.user) {
                (CallerKind::Jwt, Some(sub)) => format!("jwt:{}:{sub}", caller.name),
                _ => format!("key:{}", caller.name),
            };
            if let Err(after) = state.limiter.check(&key, now) {
                state.metrics.rate_limited();
                return Err(ApiError::rate_limited(after));
            }
            Ok(caller)
        }
        Err(e) => {
            state.metrics.auth_failure(e.code());
            if let Err(after) = state.limiter.check(&format!("ip:{ip}"), now) {
                state.metrics.rate_limited();
                return Err(ApiError::rate_limited(after));
            }
            Err(e.into())
        }
    }
}

/// 403 unless the caller has the admin scope.
pub(crate) fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.admin {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "admin_required",
            "this endpoint needs an API key with the admin scope",
        ))
    }
}

/// 403 unless the caller is a server holding an API key (not a browser's JWT).
pub(crate) fn require_api_key(caller: &Caller, what: &str) -> Result<(), ApiError> {
    match caller.kind {
        CallerKind::ApiKey => Ok(()),
        _ => Err(ApiError::forbidden(
            "api_key_required",
            format!("{what} is only for API-key callers"),
        )),
    }
}

/// A JSON body parsed into `T`; an empty body is `T::default()`. Errors are 4xx with the JSON
/// error shape (axum's own rejections are plain text).
pub(crate) fn json_body<T: DeserializeOwned + Default>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| ApiError::new(r.status(), "bad_body", r.body_text()))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("bad_json", format!("request body: {e}")))
}

/// Marks a response as never cacheable (it holds credentials) and says how fresh its relays are.
pub(crate) fn credential_headers(response: &mut Response, state: &Arc<AppState>) {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let snap = state.snapshot.get();
    let age = snap.age(geoturn_shared::clock::unix_ms()).as_secs();
    let value = match &snap.stale {
        None => format!("fresh; age={age}"),
        Some(_) => format!("stale; age={age}"),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(SNAPSHOT_HEADER, v);
    }
}
