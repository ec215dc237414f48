//! Who is calling and from where: the caller's address (behind trusted proxies), its
//! authentication (API key or JWT) charged to its rate limit, the scopes a route needs, and the
//! extractors that do all of it before a handler runs ([`ApiCaller`], [`Admin`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use geoturn_shared::clock::unix_secs;

use crate::auth::{Caller, CallerKind};
use crate::error::ApiError;
use crate::state::AppState;

/// An authenticated caller (API key or JWT), charged to its rate limit.
#[derive(Debug)]
pub struct ApiCaller(pub Caller);

/// An authenticated caller with the admin scope (403 `admin_required` otherwise).
#[derive(Debug)]
pub struct Admin(pub Caller);

/// An authenticated caller that may read the TURN secrets: the `secrets:read` scope or admin
/// (403 `scope_required` otherwise).
#[derive(Debug)]
pub struct SecretsReader(pub Caller);

impl FromRequestParts<Arc<AppState>> for SecretsReader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let ApiCaller(caller) = ApiCaller::from_request_parts(parts, state).await?;
        if !caller.secrets_read {
            return Err(ApiError::forbidden(
                "scope_required",
                "this endpoint needs an API key with the secrets:read or admin scope",
            ));
        }
        Ok(Self(caller))
    }
}

impl FromRequestParts<Arc<AppState>> for ApiCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>().copied()
        else {
            // The router is always served with connect info; without it nothing can be rate
            // limited, so refuse rather than serve unaccounted.
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no_peer_address",
                "the server was started without peer addresses",
            ));
        };
        let ip = request_ip(state, peer, &parts.headers);
        authenticate(state, &parts.headers, ip).await.map(Self)
    }
}

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let ApiCaller(caller) = ApiCaller::from_request_parts(parts, state).await?;
        require_admin(&caller)?;
        Ok(Self(caller))
    }
}

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
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    ip: IpAddr,
) -> Result<Caller, ApiError> {
    // A header that is not visible ASCII cannot hold a valid key: authenticate sees it as
    // malformed rather than absent.
    let value = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let auth = state.authenticator();
    let result = auth.authenticate_fresh(value, unix_secs()).await;
    charge(state, result, ip)
}

/// Like [`authenticate`] for a bare API key (the TURN REST draft's `?key=`).
pub(crate) fn authenticate_key(
    state: &AppState,
    key: &str,
    ip: IpAddr,
) -> Result<Caller, ApiError> {
    let result = state.authenticator().authenticate_api_key(key);
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

/// A path parameter (`{id}`, `{key_id}`, `{asset}`), or a 400 problem when it is not valid
/// UTF-8 after percent-decoding (axum's own rejection is plain text).
#[derive(Debug)]
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(e) => Err(ApiError::bad_request("bad_path", e.body_text())),
        }
    }
}
