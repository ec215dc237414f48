//! The Redis registry (DESIGN.md §4), keys under a configurable prefix (default `geoturn:`):
//!
//! | key | type | written by |
//! |---|---|---|
//! | `{prefix}relay:{id}` | hash of [`RelayRecord::to_fields`], PEXPIRE = heartbeat TTL | `heartbeat` |
//! | `{prefix}relays` | sorted set id → last heartbeat (Unix ms), to list without SCAN | `heartbeat` |
//! | `{prefix}secrets` | hash secret id → encrypted secret (see `crypto`) | `store_secret` |
//! | `{prefix}events` | pub/sub channel of [`RegistryEvent`] JSON | `publish` |
//! | `{prefix}mesh:…` | the relay mesh's node records and measurements | see `mesh.rs` |
//!
//! Liveness is the hash's TTL; the sorted set is only an index. Each heartbeat prunes index
//! entries older than 10 × its TTL, and `list` prunes entries older than an hour (for a fleet
//! where no relay heartbeats any more). Pruning compares the writer's clock with the scores:
//! relays' clocks must agree within 10 × TTL (NTP does far better).
//!
//! Availability: every call is bounded (about 1.5 s) and fails with
//! [`RegistryError::Unavailable`] while Redis is down; the connection manager reconnects by
//! itself, and a call that hits a connection dropped by a restart is retried once on the new
//! connection. Callers decide when to try again.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, ErrorKind, RedisError, RedisResult, ServerErrorKind};
use tokio::sync::{broadcast, watch};
use tokio::time::timeout;

use super::crypto::{SecretsKey, StoredSecret};
use super::record::check_name;
use super::subscriber::{self, AbortOnDrop};
use super::{EVENT_CAPACITY, RegistryError, RegistryEvent, RelayRecord, redact_url};
use crate::clock::unix_ms;
use crate::secret_set::{Secret, SecretSet};

/// Time to open a TCP (and TLS) connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Time Redis has to answer one command or pipeline.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound on a whole call, including the one retry after a dropped connection.
const CALL_TIMEOUT: Duration = Duration::from_millis(1500);
/// Index entries older than this are neither read nor kept by `list`.
const LIST_HORIZON: Duration = Duration::from_secs(3600);
/// How long `subscribe` waits for the background subscription to be live.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(1);

/// Key names under the prefix.
#[derive(Debug)]
pub(super) struct Keys {
    pub(super) prefix: String,
    relays: String,
    secrets: String,
    events: String,
    revoked: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            relays: format!("{prefix}relays"),
            secrets: format!("{prefix}secrets"),
            events: format!("{prefix}events"),
            revoked: format!("{prefix}revoked"),
        }
    }

    fn relay(&self, id: &str) -> String {
        format!("{}relay:{id}", self.prefix)
    }

    fn client_rtt(&self, network: &ipnet::IpNet) -> String {
        format!("{}rtt:{network}", self.prefix)
    }
}

/// A registry in Redis; clones share one connection and one event subscription.
#[derive(Clone)]
pub struct RedisRegistry {
    conn: ConnectionManager,
    pub(super) keys: Arc<Keys>,
    secrets_key: Option<Arc<SecretsKey>>,
    events: broadcast::Sender<RegistryEvent>,
    subscribed: watch::Receiver<bool>,
    _subscriber: Arc<AbortOnDrop>,
    /// The URL with any password replaced, for logs and errors.
    url: Arc<str>,
}

impl RedisRegistry {
    /// Prepares a registry at `url` (`redis://` or `rediss://`) and starts the event
    /// subscription. Does not wait for Redis: a relay must start and relay while Redis is down,
    /// so an unreachable server shows up as `Unavailable` from the calls and one warning from
    /// the subscription.
    pub async fn connect(
        url: &str,
        prefix: &str,
        secrets_key: Option<[u8; 32]>,
    ) -> Result<Self, RegistryError> {
        let redacted: Arc<str> = redact_url(url).into();
        if url.starts_with("rediss://") {
            // redis's rustls support brings no crypto provider of its own (FIELD-NOTES);
            // an error only means one is installed already.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = redis::Client::open(url)
            .map_err(|e| RegistryError::invalid("registry url", format!("{redacted}: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            // No retry loop inside the manager: while Redis is down a call must fail fast,
            // and the manager reconnects on the next call anyway.
            .set_number_of_retries(0);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| RegistryError::invalid("registry url", format!("{redacted}: {e}")))?;
        let secrets_key = secrets_key
            .map(|k| SecretsKey::new(&k).map(Arc::new))
            .transpose()?;
        let keys = Arc::new(Keys::new(prefix));
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (subscribed, task) = subscriber::spawn(
            client,
            keys.events.clone(),
            redacted.clone(),
            events.clone(),
        );
        Ok(Self {
            conn,
            keys,
            secrets_key,
            events,
            subscribed,
            _subscriber: Arc::new(task),
            url: redacted,
        })
    }

    /// Writes the record and its index entry atomically; the record expires after `ttl`
    /// (use 3 × the heartbeat interval) unless refreshed.
    pub async fn heartbeat(
        &self,
        record: &RelayRecord,
        ttl: Duration,
    ) -> Result<(), RegistryError> {
        record.validate()?;
        let now = unix_ms();
        let key = self.keys.relay(&record.id);
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let stale = now
            .saturating_sub(u64::try_from(ttl.as_millis().saturating_mul(10)).unwrap_or(u64::MAX));
        let mut pipe = redis::pipe();
        pipe.atomic()
            // DEL first so a field an older version wrote does not linger.
            .del(&key)
            .ignore()
            .hset_multiple(&key, &record.to_fields())
            .ignore()
            .pexpire(&key, ttl_ms)
            .ignore()
            .zadd(&self.keys.relays, &record.id, now)
            .ignore()
            .zrembyscore(&self.keys.relays, "-inf", format!("({stale}"))
            .ignore();
        let pipe = &pipe;
        self.call("heartbeat", |mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await
    }

    /// Deletes a relay's record and index entry.
    pub async fn remove(&self, id: &str) -> Result<(), RegistryError> {
        let key = self.keys.relay(id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(&key)
            .ignore()
            .zrem(&self.keys.relays, id)
            .ignore();
        let pipe = &pipe;
        self.call("remove", |mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await
    }

    /// Live records sorted by id. Index entries whose hash expired are skipped; a record that
    /// does not decode is skipped with a warning rather than hiding the whole fleet.
    pub async fn list(&self) -> Result<Vec<RelayRecord>, RegistryError> {
        let now = unix_ms();
        let horizon = now.saturating_sub(u64::try_from(LIST_HORIZON.as_millis()).unwrap_or(0));
        let mut index = redis::pipe();
        index
            .zrembyscore(&self.keys.relays, "-inf", format!("({horizon}"))
            .ignore()
            .zrangebyscore(&self.keys.relays, horizon, "+inf");
        let keys = &self.keys;
        let index = &index;
        let hashes: Vec<HashMap<String, String>> = self
            .call("list", |mut c| async move {
                let c = &mut c;
                let (ids,): (Vec<String>,) = index.query_async(c).await?;
                if ids.is_empty() {
                    return Ok(Vec::new()); // redis refuses an empty pipeline
                }
                let mut fetch = redis::pipe();
                for id in &ids {
                    fetch.hgetall(keys.relay(id));
                }
                fetch.query_async(c).await
            })
            .await?;
        let mut records = Vec::with_capacity(hashes.len());
        for fields in hashes {
            if fields.is_empty() {
                continue; // expired since its last heartbeat
            }
            match RelayRecord::from_fields(fields) {
                Ok(r) => records.push(r),
                Err(error) => {
                    tracing::warn!(%error, "registry: skipping an unreadable relay record")
                }
            }
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    /// Publishes `event` to every subscriber, this process's included.
    pub async fn publish(&self, event: &RegistryEvent) -> Result<(), RegistryError> {
        let payload = &event.to_json();
        self.call("publish", |mut c| async move {
            c.publish::<_, _, ()>(&self.keys.events, payload).await
        })
        .await
    }

    /// Stores a revocation in the `revoked` sorted set (score: until, Unix seconds), dropping
    /// ended ones and, past the cap, those ending soonest; one transaction.
    pub async fn revoke(&self, user: &str, until: u64) -> Result<(), RegistryError> {
        let now = crate::clock::unix_secs();
        let key = &self.keys.revoked;
        self.call("revoke", |mut c| async move {
            redis::pipe()
                .atomic()
                // GT: a later revocation of the same user only extends it.
                .cmd("ZADD")
                .arg(key)
                .arg("GT")
                .arg(until)
                .arg(user)
                .ignore()
                .cmd("ZREMRANGEBYSCORE")
                .arg(key)
                .arg("-inf")
                .arg(now)
                .ignore()
                // Keep the MAX_REVOCATIONS ending last: drop ranks 0..len-MAX-1.
                .cmd("ZREMRANGEBYRANK")
                .arg(key)
                .arg(0)
                .arg(-(super::MAX_REVOCATIONS as i64) - 1)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// Revocations in force at `now`, at most `MAX_REVOCATIONS`.
    pub async fn revocations(&self, now: u64) -> Result<Vec<(String, u64)>, RegistryError> {
        let key = &self.keys.revoked;
        self.call("revocations", |mut c| async move {
            redis::cmd("ZRANGEBYSCORE")
                .arg(key)
                .arg(format!("({now}"))
                .arg("+inf")
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(super::MAX_REVOCATIONS)
                .query_async::<Vec<(String, u64)>>(&mut c)
                .await
        })
        .await
    }

    /// A receiver of events from now on. Waits up to a second for the background subscription
    /// to be live, so an event published after this returns is received; if Redis is down it
    /// returns anyway and the receiver gets [`RegistryEvent::Resync`] once subscribed.
    pub async fn subscribe(&self) -> broadcast::Receiver<RegistryEvent> {
        let receiver = self.events.subscribe();
        let mut live = self.subscribed.clone();
        let _ = timeout(SUBSCRIBE_WAIT, live.wait_for(|up| *up)).await;
        receiver
    }

    fn key(&self) -> Result<&SecretsKey, RegistryError> {
        self.secrets_key
            .as_deref()
            .ok_or(RegistryError::MissingSecretsKey)
    }

    /// Encrypts and stores a secret; an update keeps the secret's original creation time.
    pub async fn store_secret(&self, secret: &Secret) -> Result<(), RegistryError> {
        let key = self.key()?;
        check_name("secret id", &secret.id)?;
        let existing: Option<String> = self
            .call("store_secret", |mut c| async move {
                c.hget(&self.keys.secrets, &secret.id).await
            })
            .await?;
        // The creation time of a record that opens (its metadata is authentic); a record that
        // does not open gives none, and the secret counts as new.
        let created = existing
            .and_then(|json| StoredSecret::from_json(&secret.id, &json).ok())
            .filter(|s| s.open(key, &secret.id).is_ok())
            .map_or_else(unix_ms, |s| s.created);
        let value = &StoredSecret::seal(key, secret, created)?.to_json();
        self.call("store_secret", |mut c| async move {
            c.hset::<_, _, _, ()>(&self.keys.secrets, &secret.id, value)
                .await
        })
        .await
    }

    /// Stores `secrets`, oldest first, with one HSET of every field, so a reader sees all or
    /// none of them (see [`super::Registry::store_secrets`]).
    pub async fn store_secrets(&self, secrets: &[Secret]) -> Result<(), RegistryError> {
        let key = self.key()?;
        let first = unix_ms();
        let mut fields = Vec::with_capacity(secrets.len());
        for (created, secret) in (first..).zip(secrets) {
            check_name("secret id", &secret.id)?;
            let sealed = StoredSecret::seal(key, secret, created)?.to_json();
            fields.push((secret.id.clone(), sealed));
        }
        if fields.is_empty() {
            return Ok(());
        }
        let fields = &fields;
        self.call("store_secrets", |mut c| async move {
            c.hset_multiple::<_, _, _, ()>(&self.keys.secrets, fields)
                .await
        })
        .await
    }

    /// Re-seals records written before version 2 (their metadata was not authenticated) with
    /// the same value, creation time and `not_after`; returns how many. A record that does not
    /// open is left alone (`load_secrets` reports it).
    pub async fn reseal_legacy_secrets(&self) -> Result<usize, RegistryError> {
        let key = self.key()?;
        let stored: HashMap<String, String> = self
            .call("reseal_legacy_secrets", |mut c| async move {
                c.hgetall(&self.keys.secrets).await
            })
            .await?;
        let mut fields = Vec::new();
        for (id, json) in stored {
            let Ok(record) = StoredSecret::from_json(&id, &json) else {
                continue;
            };
            if !record.is_legacy() {
                continue;
            }
            let Ok(secret) = record.open(key, &id) else {
                continue;
            };
            let sealed = StoredSecret::seal(key, &secret, record.created)?.to_json();
            fields.push((id, sealed));
        }
        if fields.is_empty() {
            return Ok(0);
        }
        let fields = &fields;
        self.call("reseal_legacy_secrets", |mut c| async move {
            c.hset_multiple::<_, _, _, ()>(&self.keys.secrets, fields)
                .await
        })
        .await?;
        Ok(fields.len())
    }

    /// Deletes a secret (one past its `not_after`, say); needs no secrets key.
    pub async fn remove_secret(&self, id: &str) -> Result<(), RegistryError> {
        self.call("remove_secret", |mut c| async move {
            c.hdel::<_, _, ()>(&self.keys.secrets, id).await
        })
        .await
    }

    /// Decrypts every stored secret, newest first. Fails as a whole if any secret does not
    /// decrypt: a wrong key must be loud, and the caller keeps the set it had.
    pub async fn load_secrets(&self) -> Result<SecretSet, RegistryError> {
        let key = self.key()?;
        let stored: HashMap<String, String> = self
            .call("load_secrets", |mut c| async move {
                c.hgetall(&self.keys.secrets).await
            })
            .await?;
        let mut secrets = Vec::with_capacity(stored.len());
        for (id, json) in stored {
            let s = StoredSecret::from_json(&id, &json)?;
            secrets.push((s.created, s.open(key, &id)?));
        }
        secrets.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
        Ok(SecretSet::new(
            secrets.into_iter().map(|(_, s)| s).collect(),
        ))
    }

    /// Runs `op` with a bound on the whole call, retrying once if the connection had been
    /// dropped (the first command after a Redis restart fails that way; the manager has
    /// started a new connection by then).
    // `op` takes the connection by value: an `AsyncFn(&mut ConnectionManager)` would make
    // every caller's future fail `Send` for all lifetimes (a rustc limitation), and the
    // credential API runs these calls on a multi-threaded runtime.
    /// Stores round trips measured from client networks to `region`: one hash per network
    /// (`rtt:203.0.113.0/24`, a field per region), expiring [`super::CLIENT_RTT_TTL`] after its
    /// last write; one pipelined round trip for all of them.
    pub async fn store_client_rtts(
        &self,
        region: &str,
        entries: &[(ipnet::IpNet, crate::latency::MeasuredRtt)],
    ) -> Result<(), RegistryError> {
        if entries.is_empty() {
            return Ok(());
        }
        let writes: Vec<(String, String)> = entries
            .iter()
            .map(|(net, m)| (self.keys.client_rtt(net), m.encode()))
            .collect();
        let ttl = super::CLIENT_RTT_TTL.as_secs();
        self.call("store client round trips", |mut c| {
            let mut pipe = redis::pipe();
            for (key, value) in &writes {
                pipe.cmd("HSET").arg(key).arg(region).arg(value).ignore();
                pipe.cmd("EXPIRE").arg(key).arg(ttl).ignore();
            }
            async move { pipe.query_async::<()>(&mut c).await }
        })
        .await
    }

    /// What was measured from each of `networks`, per region (unreadable values skipped), in
    /// one pipelined round trip.
    pub async fn client_rtts(
        &self,
        networks: &[ipnet::IpNet],
    ) -> Result<Vec<Vec<(String, crate::latency::MeasuredRtt)>>, RegistryError> {
        let keys: Vec<String> = networks.iter().map(|n| self.keys.client_rtt(n)).collect();
        let raw = self
            .call("client round trips", |mut c| {
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.cmd("HGETALL").arg(key);
                }
                async move { pipe.query_async::<Vec<Vec<(String, String)>>>(&mut c).await }
            })
            .await?;
        Ok(raw
            .into_iter()
            .map(|fields| {
                fields
                    .into_iter()
                    .filter_map(|(region, v)| {
                        crate::latency::MeasuredRtt::decode(&v).map(|m| (region, m))
                    })
                    .take(super::MAX_RTT_REGIONS)
                    .collect()
            })
            .collect())
    }

    pub(super) async fn call<T, F, Fut>(
        &self,
        what: &'static str,
        op: F,
    ) -> Result<T, RegistryError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let attempt = async {
            match op(self.conn.clone()).await {
                Err(e) if e.is_unrecoverable_error() => op(self.conn.clone()).await,
                other => other,
            }
        };
        match timeout(CALL_TIMEOUT, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(classify(&e, what, &self.url)),
            Err(_) => Err(RegistryError::Unavailable(format!(
                "{what}: no answer from {} within {CALL_TIMEOUT:?}",
                self.url
            ))),
        }
    }
}

/// Transient failures (retry later) versus answers that configuration must fix.
fn classify(e: &RedisError, what: &str, url: &str) -> RegistryError {
    let transient = e.is_io_error()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            ) | ErrorKind::ClusterConnectionNotFound
        );
    // RedisError's text is the server's or the OS's message; it never contains the URL.
    let message = format!("{what} at {url}: {e}");
    if transient {
        RegistryError::Unavailable(message)
    } else {
        RegistryError::Rejected(message)
    }
}

impl fmt::Debug for RedisRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRegistry")
            .field("url", &self.url)
            .field("prefix", &self.keys.prefix)
            .field("secrets_key", &self.secrets_key.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}
