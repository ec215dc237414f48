//! The in-process registry: the embedded default (`geoturn up`) and unit tests.
//!
//! Same behaviour as the Redis registry, minus durability and encryption (secrets never leave
//! the process): records past their TTL are not listed, events go through a tokio broadcast
//! channel, secrets load newest first. Expiry is judged against a clock the caller can supply,
//! so tests need not sleep.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::record::check_name;
use super::{EVENT_CAPACITY, RegistryError, RegistryEvent, RelayRecord};
use crate::clock::unix_ms;
use crate::latency::MeasuredRtt;

/// Most client networks the in-memory registry keeps measurements for.
pub const MAX_CLIENT_NETWORKS: usize = 100_000;
use crate::secret_set::{Secret, SecretSet};

/// The monotonic clock expiry is measured against.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// An in-memory registry; clones share the same state.
#[derive(Clone)]
pub struct MemoryRegistry {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<RegistryEvent>,
    clock: Clock,
    /// The mesh's node records and measurements (`mesh.rs`).
    pub(super) mesh: Arc<Mutex<super::mesh::MemoryMesh>>,
}

#[derive(Default)]
struct State {
    /// Relay id → (record, instant after which it is no longer listed).
    relays: HashMap<String, (RelayRecord, Instant)>,
    /// Secret id → (created, Unix ms; the secret).
    secrets: HashMap<String, (u64, Secret)>,
    /// The last `created` handed out, so secrets stored within one millisecond still order.
    last_created: u64,
    /// Revoked user → until (Unix seconds).
    revoked: HashMap<String, u64>,
    /// Client network → region → measured round trip.
    client_rtts: HashMap<ipnet::IpNet, HashMap<String, MeasuredRtt>>,
}

impl MemoryRegistry {
    /// A registry on the system's monotonic clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(Instant::now))
    }

    /// A registry whose expiry follows `clock` (a test's virtual clock).
    pub fn with_clock(clock: Clock) -> Self {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Self {
            state: Arc::default(),
            events,
            clock,
            mesh: Arc::default(),
        }
    }

    /// Now on the registry's clock.
    pub(super) fn now(&self) -> Instant {
        (self.clock)()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the maps consistent, so a panic elsewhere cannot have
        // left half an update behind: keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores `record`, listed until `ttl` from now unless refreshed.
    pub fn heartbeat(&self, record: &RelayRecord, ttl: Duration) -> Result<(), RegistryError> {
        record.validate()?;
        let deadline = (self.clock)() + ttl;
        self.state()
            .relays
            .insert(record.id.clone(), (record.clone(), deadline));
        Ok(())
    }

    /// Forgets a relay at once.
    pub fn remove(&self, id: &str) {
        self.state().relays.remove(id);
    }

    /// Records still within their TTL, sorted by id.
    pub fn list(&self) -> Vec<RelayRecord> {
        let now = (self.clock)();
        let mut state = self.state();
        state.relays.retain(|_, (_, deadline)| *deadline > now);
        let mut live: Vec<RelayRecord> = state.relays.values().map(|(r, _)| r.clone()).collect();
        live.sort_by(|a, b| a.id.cmp(&b.id));
        live
    }

    /// Stores round trips measured from client networks to `region`. Bounded as Redis is by
    /// its TTL: measurements older than [`super::CLIENT_RTT_TTL`] are dropped, and past
    /// [`MAX_CLIENT_NETWORKS`] networks new ones are not stored.
    pub fn store_client_rtts(&self, region: &str, entries: &[(ipnet::IpNet, MeasuredRtt)]) {
        let oldest = unix_ms().saturating_sub(super::CLIENT_RTT_TTL.as_millis() as u64);
        let mut state = self.state();
        let map = &mut state.client_rtts;
        if map.len() + entries.len() > MAX_CLIENT_NETWORKS {
            map.retain(|_, regions| {
                regions.retain(|_, m| m.updated_ms >= oldest);
                !regions.is_empty()
            });
        }
        for (net, m) in entries {
            if map.len() >= MAX_CLIENT_NETWORKS && !map.contains_key(net) {
                continue;
            }
            let regions = map.entry(*net).or_default();
            if regions.len() < super::MAX_RTT_REGIONS || regions.contains_key(region) {
                regions.insert(region.to_owned(), *m);
            }
        }
    }

    /// What was measured from each of `networks`, per region.
    pub fn client_rtts(&self, networks: &[ipnet::IpNet]) -> Vec<Vec<(String, MeasuredRtt)>> {
        let oldest = unix_ms().saturating_sub(super::CLIENT_RTT_TTL.as_millis() as u64);
        let state = self.state();
        networks
            .iter()
            .map(|n| {
                state
                    .client_rtts
                    .get(n)
                    .into_iter()
                    .flatten()
                    .filter(|(_, m)| m.updated_ms >= oldest)
                    .map(|(r, m)| (r.clone(), *m))
                    .collect()
            })
            .collect()
    }

    /// Delivers `event` to every current subscriber (none is fine).
    pub fn publish(&self, event: &RegistryEvent) {
        let _ = self.events.send(event.clone());
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RegistryEvent> {
        self.events.subscribe()
    }

    /// Stores or updates a secret; an update keeps the secret's original creation time.
    pub fn store_secret(&self, secret: &Secret) -> Result<(), RegistryError> {
        check_name("secret id", &secret.id)?;
        let mut state = self.state();
        let created = match state.secrets.get(&secret.id) {
            Some((created, _)) => *created,
            None => {
                let created = unix_ms().max(state.last_created + 1);
                state.last_created = created;
                created
            }
        };
        state
            .secrets
            .insert(secret.id.clone(), (created, secret.clone()));
        Ok(())
    }

    /// Stores `secrets`, oldest first, under one lock (see [`super::Registry::store_secrets`]).
    pub fn store_secrets(&self, secrets: &[Secret]) -> Result<(), RegistryError> {
        for secret in secrets {
            check_name("secret id", &secret.id)?;
        }
        let mut state = self.state();
        for secret in secrets {
            let created = unix_ms().max(state.last_created + 1);
            state.last_created = created;
            state
                .secrets
                .insert(secret.id.clone(), (created, secret.clone()));
        }
        Ok(())
    }

    /// Deletes a secret (one past its `not_after`, say).
    pub fn remove_secret(&self, id: &str) {
        self.state().secrets.remove(id);
    }

    /// Stores a revocation (see [`super::Registry::revoke`]).
    pub fn revoke(&self, user: &str, until: u64) {
        let now = crate::clock::unix_secs();
        let mut state = self.state();
        let revoked = &mut state.revoked;
        revoked.retain(|_, t| *t > now);
        if revoked.len() >= super::MAX_REVOCATIONS
            && !revoked.contains_key(user)
            && let Some(soonest) = revoked
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(u, _)| u.clone())
        {
            revoked.remove(&soonest);
        }
        let entry = revoked.entry(user.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Revocations in force at `now` (Unix seconds).
    pub fn revocations(&self, now: u64) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .state()
            .revoked
            .iter()
            .filter(|(_, t)| **t > now)
            .map(|(u, t)| (u.clone(), *t))
            .collect();
        out.sort();
        out
    }

    /// Every stored secret, newest first.
    pub fn load_secrets(&self) -> SecretSet {
        let state = self.state();
        let mut all: Vec<&(u64, Secret)> = state.secrets.values().collect();
        all.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
        SecretSet::new(all.into_iter().map(|(_, s)| s.clone()).collect())
    }
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Counts only: the state holds secrets.
        let state = self.state();
        f.debug_struct("MemoryRegistry")
            .field("relays", &state.relays.len())
            .field("secrets", &state.secrets.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::record::tests::sample;

    /// A clock that moves only when the test says so.
    fn manual_clock() -> (Clock, Arc<Mutex<Instant>>) {
        let now = Arc::new(Mutex::new(Instant::now()));
        let reader = now.clone();
        (Arc::new(move || *reader.lock().unwrap()), now)
    }

    #[test]
    fn ttl_on_a_virtual_clock() {
        let (clock, now) = manual_clock();
        let reg = MemoryRegistry::with_clock(clock);
        reg.heartbeat(&sample(), Duration::from_secs(3)).unwrap();
        *now.lock().unwrap() += Duration::from_millis(2999);
        assert_eq!(reg.list().len(), 1);
        // A refresh moves the deadline.
        reg.heartbeat(&sample(), Duration::from_secs(3)).unwrap();
        *now.lock().unwrap() += Duration::from_millis(2999);
        assert_eq!(reg.list().len(), 1);
        *now.lock().unwrap() += Duration::from_millis(1);
        assert!(reg.list().is_empty());
    }

    #[test]
    fn invalid_records_are_refused() {
        let reg = MemoryRegistry::new();
        let bad = RelayRecord {
            lat: 91.0,
            ..sample()
        };
        assert!(reg.heartbeat(&bad, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn secrets_newest_first_and_updates_keep_their_place() {
        let reg = MemoryRegistry::new();
        reg.store_secret(&Secret::new("a", "1")).unwrap();
        reg.store_secret(&Secret::new("b", "2")).unwrap();
        let mut a = Secret::new("a", "1");
        a.not_after = Some(5);
        reg.store_secret(&a).unwrap();
        let set = reg.load_secrets();
        assert_eq!(set, SecretSet::new(vec![Secret::new("b", "2"), a.clone()]));
        assert!(!format!("{reg:?}").contains('1'));
    }
}
