//! JWT keys from a JWKS URL (`[[auth.jwks]]`): what Auth0, Clerk, Firebase and most identity
//! providers publish, and rotate, at `…/.well-known/jwks.json`. The keys are fetched at start,
//! again every `refresh_secs`, and at once when a token names a key id none of them has (a
//! rotation), at most once per [`MIN_REFETCH`] whatever tokens arrive: a stream of made-up key
//! ids cannot turn the API into a load generator against the provider. Each fetch is bounded in
//! time and size; a failed one keeps the keys in hand.
//!
//! Only RS256 (≥ 2048 bits) and ES256 (P-256) signing keys are taken, with the issuer and
//! audience configured here: a JWKS never brings a symmetric key, and a token never picks how
//! it is checked.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use axum::http::Uri;
use jsonwebtoken::jwk::JwkSet;

use crate::http_client::{Request, tls_config};

use super::AuthConfigError;
use super::jwt::JwtKey;

/// Fewest seconds between two fetches of one JWKS.
pub const MIN_REFETCH: Duration = Duration::from_secs(30);
/// Longest a fetch may take, connection and TLS handshake included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document read.
const MAX_BODY: usize = 256 * 1024;
/// Most keys kept from one document.
const MAX_KEYS: usize = 32;

/// One `[[auth.jwks]]` entry.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    /// The JWKS document: `https://…`, or `http://` to a loopback address only (a provider
    /// running on the same host).
    pub url: String,
    /// Required `iss` of tokens verified with these keys.
    pub issuer: String,
    /// Required `aud` of tokens verified with these keys.
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// Seconds between regular fetches [default: 600; 60 to 86400].
    #[serde(default = "default_refresh")]
    pub refresh_secs: u64,
    /// A PEM file of CA certificates trusted for this URL besides the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_leeway() -> u64 {
    30
}

fn default_refresh() -> u64 {
    600
}

/// A JWKS URL and the keys last fetched from it.
pub(super) struct JwksSource {
    cfg: JwksConfig,
    uri: Uri,
    tls: Option<Arc<rustls::ClientConfig>>,
    keys: RwLock<Arc<Vec<JwtKey>>>,
    /// When the last fetch started; one fetch at a time.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    /// The last fetch's outcome, for the log's "keys back" line.
    failing: Mutex<bool>,
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksSource")
            .field("url", &self.cfg.url)
            .field("issuer", &self.cfg.issuer)
            .field("keys", &self.keys().len())
            .finish()
    }
}

impl JwksSource {
    /// Checks entry `index` (URL, issuer, audience, bounds, CA file); no fetch yet.
    pub(super) fn new(index: usize, cfg: &JwksConfig) -> Result<Self, AuthConfigError> {
        let field = |name: &str| format!("jwks[{index}].{name}");
        let invalid = |name: &str, reason: String| AuthConfigError::invalid(field(name), reason);
        let uri: Uri = cfg
            .url
            .parse()
            .map_err(|e| invalid("url", format!("not a URL ({e})")))?;
        let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let tls = match uri.scheme_str() {
            Some("https") => Some(Arc::new(
                tls_config(cfg.ca_file.as_deref()).map_err(|reason| invalid("ca_file", reason))?,
            )),
            Some("http") if loopback => None,
            _ => {
                return Err(invalid(
                    "url",
                    "must be https:// (http:// only to a loopback address)".into(),
                ));
            }
        };
        if host.is_empty() {
            return Err(invalid("url", "has no host".into()));
        }
        for (name, value) in [("issuer", &cfg.issuer), ("audience", &cfg.audience)] {
            if value.is_empty() {
                return Err(invalid(name, "must not be empty".into()));
            }
        }
        if cfg.leeway_secs > 3600 {
            return Err(invalid("leeway_secs", "at most 3600 seconds".into()));
        }
        if !(60..=86_400).contains(&cfg.refresh_secs) {
            return Err(invalid("refresh_secs", "must be 60 to 86400".into()));
        }
        Ok(Self {
            cfg: cfg.clone(),
            uri,
            tls,
            keys: RwLock::new(Arc::new(Vec::new())),
            last_fetch: tokio::sync::Mutex::new(None),
            failing: Mutex::new(false),
        })
    }

    /// The keys as last fetched.
    pub(super) fn keys(&self) -> Arc<Vec<JwtKey>> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Fetches the keys unless a fetch started less than [`MIN_REFETCH`] ago; waits for a
    /// fetch in progress instead of starting another.
    pub(super) async fn refresh(&self, why: &str) {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < MIN_REFETCH) {
            return;
        }
        *last = Some(Instant::now());
        let request = Request::get(self.uri.clone(), self.tls.clone());
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, request.send(MAX_BODY))
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
            .and_then(|(status, body)| {
                if status == 200 {
                    Ok(body)
                } else {
                    Err(format!("HTTP {status}"))
                }
            })
            .and_then(|body| self.parse(&body));
        let mut failing = self
            .failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match fetched {
            Ok(keys) => {
                tracing::info!(url = %self.cfg.url, keys = keys.len(), why, "JWKS fetched");
                *self
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
                *failing = false;
            }
            Err(e) => {
                // Once per outage at warn level; the keys in hand stay.
                if *failing {
                    tracing::debug!(url = %self.cfg.url, error = %e, "JWKS fetch failed again");
                } else {
                    tracing::warn!(url = %self.cfg.url, error = %e, why, "JWKS fetch failed; keeping the keys in hand");
                }
                *failing = true;
            }
        }
    }

    /// The signing keys of a JWKS document this source may use.
    fn parse(&self, body: &[u8]) -> Result<Vec<JwtKey>, String> {
        let set: JwkSet =
            serde_json::from_slice(body).map_err(|e| format!("not a JWKS document ({e})"))?;
        let keys: Vec<JwtKey> = set
            .keys
            .iter()
            .filter_map(|jwk| {
                JwtKey::from_jwk(
                    jwk,
                    &self.cfg.issuer,
                    &self.cfg.audience,
                    self.cfg.leeway_secs,
                )
            })
            .take(MAX_KEYS)
            .collect();
        if keys.is_empty() {
            return Err("no RS256 or ES256 signing key with a kid".into());
        }
        Ok(keys)
    }

    /// Fetches at once, then every `refresh_secs`, until the source is dropped (a reload
    /// replaced it).
    pub(super) async fn run(source: Weak<Self>) {
        let mut why = "start";
        loop {
            let Some(s) = source.upgrade() else { return };
            s.refresh(why).await;
            let every = Duration::from_secs(s.cfg.refresh_secs);
            drop(s);
            tokio::time::sleep(every).await;
            why = "refresh interval";
        }
    }
}
