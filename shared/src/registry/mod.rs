//! The relay registry: where relays publish their load and state, where the credential API
//! reads the fleet, where encrypted secrets live, and the events channel (DESIGN.md §4).
//!
//! [`Registry`] is an enum rather than a trait object so its methods are plain `async fn`s
//! with no boxing and no `async-trait`: [`Registry::Memory`] for `geoturn up` and tests,
//! [`Registry::Redis`] for a fleet. Both behave the same way; `tests/registry_redis.rs` runs
//! one set of behavioural tests against each.
//!
//! Events: [`Registry::subscribe`] returns a `tokio::sync::broadcast::Receiver`. Pub/sub keeps
//! no history, so an event published while a subscriber was cut off is lost; the Redis
//! registry sends [`RegistryEvent::Resync`] after re-subscribing, and a receiver that lags
//! gets `RecvError::Lagged`. Treat both as "reload everything" (secrets, drain state).

mod addrs;
mod crypto;
mod event;
mod memory;
mod mesh;
mod record;
mod redis;
mod subscriber;

use std::time::Duration;

use tokio::sync::broadcast;

pub use self::addrs::{
    AddrTransport, MAX_ADDRS_PER_TRANSPORT, RelayAddrs, UrlChoice, is_valid_host,
};
pub use self::crypto::parse_secrets_key;
pub use self::event::RegistryEvent;
pub use self::memory::{Clock, MemoryRegistry};
pub use self::mesh::{
    MAX_MESH_NODES, MAX_MESH_SAMPLES, MESH_FRESH, MeshKey, MeshNode, MeshRefusal, MeshRow,
    MeshSample, cert_fingerprint, hex,
};
pub use self::record::{RelayRecord, RelayState};
pub use self::redis::RedisRegistry;
use crate::secret_set::{Secret, SecretSet};
use record::check_name;

/// The key prefix when none is configured. On Redis Cluster use a hash tag (`{geoturn}:`) so
/// every key lands in one slot.
pub const DEFAULT_PREFIX: &str = "geoturn:";

/// Events a slow receiver may fall behind by before it sees `RecvError::Lagged`.
const EVENT_CAPACITY: usize = 1024;

/// Longest key prefix.
const MAX_PREFIX_LEN: usize = 64;

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Redis could not be reached or did not answer in time (down, restarting, network
    /// partition). Transient: the connection is re-established by itself; try again later.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    /// Redis answered with an error that retrying will not fix: wrong password or ACL, a key
    /// of the wrong type under the prefix, an unsupported command. Fix the configuration.
    #[error("registry refused the request: {0}")]
    Rejected(String),
    /// A record, event, stored secret or setting is malformed; `field` names it.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field (`lat`, `udp`, `registry url`, ...).
        field: &'static str,
        /// What is wrong with it (never a secret's value).
        reason: String,
    },
    /// A stored secret did not decrypt (another secrets key, or the value was altered), or
    /// encryption failed.
    #[error("secret encryption: {0}")]
    Crypto(String),
    /// Secrets were stored or loaded through Redis with no secrets key configured; they are
    /// never stored in plaintext.
    #[error(
        "no secrets key configured: give every relay and API the same 32-byte secrets key \
         (e.g. `openssl rand -base64 32`) to store or load secrets in Redis"
    )]
    MissingSecretsKey,
}

impl RegistryError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// The registry a relay or API instance talks to.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Registry {
    /// In this process only.
    Memory(MemoryRegistry),
    /// Shared through Redis.
    Redis(RedisRegistry),
}

/// How long a client network's measured round trips live after their last update: the
/// network's users keep them fresh; a network nobody calls from lets them go.
pub const CLIENT_RTT_TTL: Duration = Duration::from_secs(3600);
/// Most regions read back per client network (a fleet has far fewer; a bound on a hash that a
/// misconfigured fleet could grow).
pub const MAX_RTT_REGIONS: usize = 64;

/// Most revocations stored; a relay remembers as many.
pub const MAX_REVOCATIONS: usize = 100_000;
/// Longest user id a revocation takes (TURN usernames are short; this bounds the stored list).
const MAX_USER_LEN: usize = 256;

fn check_user(user: &str) -> Result<(), RegistryError> {
    if user.is_empty() || user.len() > MAX_USER_LEN || user.chars().any(char::is_control) {
        return Err(RegistryError::invalid(
            "user",
            format!("must be 1-{MAX_USER_LEN} bytes without control characters"),
        ));
    }
    Ok(())
}

impl Registry {
    /// `"memory"` → an in-process registry (prefix and key unused); `redis://…` or
    /// `rediss://…` (TLS) → Redis with keys under `prefix`. Does not wait for Redis to answer.
    /// `secrets_key` encrypts secrets in Redis; without it secrets cannot be stored or loaded
    /// there ([`RegistryError::MissingSecretsKey`]).
    pub async fn connect(
        url: &str,
        prefix: &str,
        secrets_key: Option<[u8; 32]>,
    ) -> Result<Self, RegistryError> {
        if url == "memory" {
            return Ok(Self::Memory(MemoryRegistry::new()));
        }
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(RegistryError::invalid(
                "registry url",
                format!(
                    "{} is neither \"memory\" nor a redis:// or rediss:// URL",
                    redact_url(url)
                ),
            ));
        }
        check_prefix(prefix)?;
        Ok(Self::Redis(
            RedisRegistry::connect(url, prefix, secrets_key).await?,
        ))
    }

    /// Publishes a relay's record; it stays listed for `ttl` (3 × the heartbeat interval).
    pub async fn heartbeat(
        &self,
        record: &RelayRecord,
        ttl: Duration,
    ) -> Result<(), RegistryError> {
        match self {
            Self::Memory(m) => m.heartbeat(record, ttl),
            Self::Redis(r) => r.heartbeat(record, ttl).await,
        }
    }

    /// Removes a relay at once (clean shutdown).
    pub async fn remove(&self, id: &str) -> Result<(), RegistryError> {
        match self {
            Self::Memory(m) => {
                m.remove(id);
                Ok(())
            }
            Self::Redis(r) => r.remove(id).await,
        }
    }

    /// Every relay whose last heartbeat is within its TTL, sorted by id.
    pub async fn list(&self) -> Result<Vec<RelayRecord>, RegistryError> {
        match self {
            Self::Memory(m) => Ok(m.list()),
            Self::Redis(r) => r.list().await,
        }
    }

    /// Stores that `user` is revoked until `until` (Unix seconds; a later revocation of the
    /// same user only extends it), so relays that start, reconnect or missed the event still
    /// refuse them ([`Registry::revocations`]). Ended revocations are dropped as new ones come;
    /// past [`MAX_REVOCATIONS`] the ones ending soonest go first.
    pub async fn revoke(&self, user: &str, until: u64) -> Result<(), RegistryError> {
        check_user(user)?;
        match self {
            Self::Memory(m) => {
                m.revoke(user, until);
                Ok(())
            }
            Self::Redis(r) => r.revoke(user, until).await,
        }
    }

    /// Revocations in force at `now` (Unix seconds): user and until when, at most
    /// [`MAX_REVOCATIONS`].
    pub async fn revocations(&self, now: u64) -> Result<Vec<(String, u64)>, RegistryError> {
        match self {
            Self::Memory(m) => Ok(m.revocations(now)),
            Self::Redis(r) => r.revocations(now).await,
        }
    }

    /// Stores round trips measured from client networks to `region` (see
    /// [`crate::latency`]); each network's record expires [`CLIENT_RTT_TTL`] after its last
    /// update.
    pub async fn store_client_rtts(
        &self,
        region: &str,
        entries: &[(ipnet::IpNet, crate::latency::MeasuredRtt)],
    ) -> Result<(), RegistryError> {
        check_name("region", region)?;
        match self {
            Self::Memory(m) => {
                m.store_client_rtts(region, entries);
                Ok(())
            }
            Self::Redis(r) => r.store_client_rtts(region, entries).await,
        }
    }

    /// What was measured from each of `networks`, per region, in order.
    pub async fn client_rtts(
        &self,
        networks: &[ipnet::IpNet],
    ) -> Result<Vec<Vec<(String, crate::latency::MeasuredRtt)>>, RegistryError> {
        match self {
            Self::Memory(m) => Ok(m.client_rtts(networks)),
            Self::Redis(r) => r.client_rtts(networks).await,
        }
    }

    /// Sends an event to every subscriber (in every process for Redis, this one included).
    pub async fn publish(&self, event: &RegistryEvent) -> Result<(), RegistryError> {
        match self {
            Self::Memory(m) => {
                m.publish(event);
                Ok(())
            }
            Self::Redis(r) => r.publish(event).await,
        }
    }

    /// A receiver of events published from now on; see the module doc for gaps and
    /// [`RegistryEvent::Resync`]. For Redis, waits up to a second for the subscription to be
    /// live; it keeps working across Redis restarts.
    pub async fn subscribe(&self) -> broadcast::Receiver<RegistryEvent> {
        match self {
            Self::Memory(m) => m.subscribe(),
            Self::Redis(r) => r.subscribe().await,
        }
    }

    /// Stores or updates a secret (encrypted in Redis). An update, e.g. setting `not_after`
    /// on rotation, keeps the time the secret was first stored.
    pub async fn store_secret(&self, secret: &Secret) -> Result<(), RegistryError> {
        match self {
            Self::Memory(m) => m.store_secret(secret),
            Self::Redis(r) => r.store_secret(secret).await,
        }
    }

    /// Stores `secrets`, oldest first, in one write: a reader sees all of them or none (a
    /// relay that reloads meanwhile never gets a partial set without the active secret).
    /// Their creation times become now, one millisecond apart in the given order, so the last
    /// stays the active one. For re-storing a set into a registry that lost it.
    pub async fn store_secrets(&self, secrets: &[Secret]) -> Result<(), RegistryError> {
        match self {
            Self::Memory(m) => m.store_secrets(secrets),
            Self::Redis(r) => r.store_secrets(secrets).await,
        }
    }

    /// Re-seals secrets stored before format version 2, whose creation time and `not_after`
    /// were not authenticated (see `crypto.rs`); returns how many. Nothing to do in memory.
    pub async fn reseal_legacy_secrets(&self) -> Result<usize, RegistryError> {
        match self {
            Self::Memory(_) => Ok(0),
            Self::Redis(r) => r.reseal_legacy_secrets().await,
        }
    }

    /// Deletes a stored secret, e.g. once it is past its `not_after`: the registry keeps every
    /// secret until told otherwise. Unknown ids are fine.
    pub async fn remove_secret(&self, id: &str) -> Result<(), RegistryError> {
        match self {
            Self::Memory(m) => {
                m.remove_secret(id);
                Ok(())
            }
            Self::Redis(r) => r.remove_secret(id).await,
        }
    }

    /// Every stored secret, newest first by the time it was first stored, expired ones
    /// included (the set's `live` skips them); at most [`crate::secret_set::MAX_SECRETS`].
    pub async fn load_secrets(&self) -> Result<SecretSet, RegistryError> {
        match self {
            Self::Memory(m) => Ok(m.load_secrets()),
            Self::Redis(r) => r.load_secrets().await,
        }
    }
}

/// A key prefix: short, and free of spaces and control characters (it is a key fragment).
fn check_prefix(prefix: &str) -> Result<(), RegistryError> {
    if prefix.len() > MAX_PREFIX_LEN || prefix.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(RegistryError::invalid(
            "registry prefix",
            format!("at most {MAX_PREFIX_LEN} bytes without spaces (default {DEFAULT_PREFIX:?})"),
        ));
    }
    Ok(())
}

/// `url` with the password (if any) replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        // Not a URL we understand: it might be anything, including a bare password.
        return "<unparsable url>".to_owned();
    };
    let (scheme, rest) = url.split_at(scheme_end);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // The userinfo ends at the last '@' of the authority (a password may contain '@').
    match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            if userinfo.contains(':') {
                format!("{scheme}{user}:***{host}{tail}")
            } else {
                // `redis://secret@host` puts the password in the user position.
                format!("{scheme}***{host}{tail}")
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction() {
        for (url, want) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            (
                "redis://default:hunter2@r.example:6379/0",
                "redis://default:***@r.example:6379/0",
            ),
            ("rediss://:p@ss@r.example", "rediss://:***@r.example"),
            ("redis://hunter2@r.example", "redis://***@r.example"),
            ("hunter2", "<unparsable url>"),
        ] {
            assert_eq!(redact_url(url), want);
        }
    }

    #[tokio::test]
    async fn connect_refuses_bad_urls_without_echoing_passwords() {
        for url in ["memcached://x", "redis://u:hunter2@host:notaport"] {
            let err = Registry::connect(url, DEFAULT_PREFIX, None)
                .await
                .unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{err}");
            assert!(matches!(err, RegistryError::Invalid { .. }), "{err}");
        }
        assert!(
            Registry::connect("redis://127.0.0.1:1", "bad prefix", None)
                .await
                .is_err()
        );
        assert!(matches!(
            Registry::connect("memory", "", None).await.unwrap(),
            Registry::Memory(_)
        ));
    }

    #[tokio::test]
    async fn tls_urls_install_a_crypto_provider() {
        // Without a process-wide rustls provider, building the TLS config would panic; with
        // one, a closed port is just Unavailable.
        let reg = Registry::connect("rediss://127.0.0.1:1", DEFAULT_PREFIX, None)
            .await
            .unwrap();
        let err = reg.list().await.unwrap_err();
        assert!(matches!(err, RegistryError::Unavailable(_)), "{err}");
    }

    #[tokio::test]
    async fn redis_without_a_key_never_stores_secrets() {
        // Port 1 refuses connections; the key check comes first, without touching Redis.
        let reg = Registry::connect("redis://127.0.0.1:1", DEFAULT_PREFIX, None)
            .await
            .unwrap();
        let err = reg.store_secret(&Secret::new("s1", "x")).await.unwrap_err();
        assert!(matches!(err, RegistryError::MissingSecretsKey), "{err}");
        assert!(matches!(
            reg.load_secrets().await.unwrap_err(),
            RegistryError::MissingSecretsKey
        ));
    }
}
