//! The fleet as the API last read it from the registry.
//!
//! Requests never touch the registry: a background task lists the relays about once a second
//! and swaps in a new [`Snapshot`]. When the registry cannot be read the last snapshot stays in
//! use and is marked stale, so clients keep getting relays (DESIGN.md §1: Redis down costs
//! freshness, never service). Heartbeat ages are measured when the records were read, so a
//! stale snapshot does not age every relay out while Redis is away.

use geoturn_shared::clock::unix_ms;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use geoturn_geo::Candidate;
use geoturn_shared::registry::{Registry, RelayRecord};
use tokio::sync::watch;

use crate::candidates::candidate;

/// Longest wait for one registry listing.
const LIST_TIMEOUT: Duration = Duration::from_secs(2);

/// The relays as of one registry read.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Records, sorted by id.
    pub relays: Vec<RelayRecord>,
    /// The same relays as ranking candidates (same order), ages taken at `fetched_at_ms`.
    pub candidates: Vec<Candidate>,
    /// When the registry answered, Unix ms; 0 before the first answer.
    pub fetched_at_ms: u64,
    /// Set while the registry cannot be read: what went wrong and since when (Unix ms).
    pub stale: Option<Staleness>,
    /// The region-to-region RTT matrix from the relay mesh, as of `fetched_at_ms`.
    pub mesh: Arc<crate::mesh::MeshMatrix>,
}

/// The fleet as known before an outage, kept for a while after the registry returns.
#[derive(Debug)]
struct Recovery {
    until_ms: u64,
    known: Arc<Snapshot>,
}

/// Why and since when the snapshot has not been refreshed.
#[derive(Debug, Clone, PartialEq)]
pub struct Staleness {
    /// First failed refresh, Unix ms.
    pub since_ms: u64,
    /// The last error (never holds a password: registry errors redact URLs).
    pub error: String,
}

impl Snapshot {
    /// Builds a fresh snapshot from records read at `now_ms`.
    pub fn fresh(relays: Vec<RelayRecord>, now_ms: u64) -> Self {
        let candidates = relays.iter().map(|r| candidate(r, now_ms)).collect();
        Self {
            relays,
            candidates,
            fetched_at_ms: now_ms,
            stale: None,
            mesh: Arc::default(),
        }
    }

    /// Whether the registry has answered at least once.
    pub fn loaded(&self) -> bool {
        self.fetched_at_ms > 0
    }

    /// Age of the data at `now_ms`.
    pub fn age(&self, now_ms: u64) -> Duration {
        Duration::from_millis(now_ms.saturating_sub(self.fetched_at_ms))
    }
}

/// The current snapshot, shared by every request.
#[derive(Debug, Default)]
pub struct SnapshotStore {
    current: RwLock<Arc<Snapshot>>,
    /// Relays announced draining (`relay_draining` event) by id → the `started_at_ms` of the
    /// record that was draining, so the hint outlives a refresh that raced the relay's next
    /// heartbeat but never sticks to a restarted relay with the same id.
    draining: Mutex<HashMap<String, u64>>,
    /// Set when the registry answers again after an outage: the relays known before it.
    recovery: Mutex<Option<Recovery>>,
    /// See [`SnapshotStore::set_recovery_grace`].
    recovery_grace_ms: AtomicU64,
    /// Bumped on every swap (refresh, failed refresh, drain hint), for `GET /v1/events`.
    changes: watch::Sender<u64>,
    /// The operator's `[[rtt]]` table, which overrides the mesh's measurements.
    rtt_overrides: RwLock<crate::mesh::Overrides>,
}

impl SnapshotStore {
    /// The snapshot now (cheap: one `Arc` clone).
    pub fn get(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// A receiver told each time the snapshot is swapped (the value is a swap counter).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Marks a relay draining at once, before its next heartbeat says so.
    pub fn mark_draining(&self, id: &str) {
        let current = self.get();
        let Some(record) = current.relays.iter().find(|r| r.id == id) else {
            return;
        };
        self.hints().insert(id.to_owned(), record.started_at_ms);
        self.set((*current).clone());
    }

    fn hints(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.draining.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, mut snapshot: Snapshot) {
        {
            let mut hints = self.hints();
            hints.retain(|id, started| {
                snapshot
                    .relays
                    .iter()
                    .any(|r| &r.id == id && r.started_at_ms == *started)
            });
            for (r, c) in snapshot.relays.iter().zip(snapshot.candidates.iter_mut()) {
                if hints.get(&r.id) == Some(&r.started_at_ms) {
                    c.draining = true;
                }
            }
        }
        let snapshot = Arc::new(snapshot);
        match self.current.write() {
            Ok(mut g) => *g = snapshot,
            Err(p) => *p.into_inner() = snapshot,
        }
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// How long after the registry comes back relays it no longer lists are still kept from
    /// the last snapshot (the relays' staleness limit: they re-register within it).
    pub fn set_recovery_grace(&self, grace: Duration) {
        let ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        self.recovery_grace_ms.store(ms, Ordering::Relaxed);
    }

    /// The `[[rtt]]` entries that override measured region pairs.
    pub fn set_rtt_overrides(&self, overrides: crate::mesh::Overrides) {
        match self.rtt_overrides.write() {
            Ok(mut g) => *g = overrides,
            Err(p) => *p.into_inner() = overrides,
        }
    }

    /// The mesh matrix for `relays` from the registry's mesh rows; an unreadable mesh is an
    /// empty one (the ranking falls back to `[[rtt]]` and distances), logged at debug.
    async fn mesh_matrix(
        &self,
        registry: &Registry,
        relays: &[RelayRecord],
        now: u64,
    ) -> crate::mesh::MeshMatrix {
        let rows = match tokio::time::timeout(LIST_TIMEOUT, registry.mesh_rows()).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(error)) => {
                tracing::debug!(%error, "cannot read the mesh measurements");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        let overrides = match self.rtt_overrides.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        crate::mesh::build(relays, &rows, &overrides, now)
    }

    fn recovery(&self) -> std::sync::MutexGuard<'_, Option<Recovery>> {
        self.recovery.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh snapshot of `relays`, plus, while recovering from an outage, the relays of the
    /// last snapshot not listed yet (their heartbeat ages as they were when last read).
    fn with_recovered(&self, mut relays: Vec<RelayRecord>, now: u64) -> Snapshot {
        let mut recovery = self.recovery();
        let Some(r) = recovery.as_ref().filter(|r| now < r.until_ms) else {
            *recovery = None;
            return Snapshot::fresh(relays, now);
        };
        let mut carried = Vec::new();
        for (old, c) in r.known.relays.iter().zip(&r.known.candidates) {
            if !relays.iter().any(|n| n.id == old.id) {
                carried.push((old.clone(), c.clone()));
            }
        }
        let mut snapshot = Snapshot::fresh(std::mem::take(&mut relays), now);
        for (record, candidate) in carried {
            snapshot.relays.push(record);
            snapshot.candidates.push(candidate);
        }
        snapshot
    }

    /// Reads the registry once; on failure keeps the last snapshot and marks it stale.
    /// Returns whether the read succeeded.
    pub async fn refresh(&self, registry: &Registry) -> bool {
        let result = tokio::time::timeout(LIST_TIMEOUT, registry.list()).await;
        let now = unix_ms();
        let error = match result {
            Ok(Ok(relays)) => {
                let prev = self.get();
                if let Some(s) = &prev.stale {
                    tracing::info!(
                        down_ms = now.saturating_sub(s.since_ms),
                        "registry readable again"
                    );
                    // A Redis that restarted without its data lists nothing until every
                    // relay's next heartbeat: keep the relays we knew for one staleness
                    // window instead of answering "no relays" meanwhile.
                    let grace = self.recovery_grace_ms.load(Ordering::Relaxed);
                    *self.recovery() = Some(Recovery {
                        until_ms: now.saturating_add(grace),
                        known: prev.clone(),
                    });
                }
                let mut next = self.with_recovered(relays, now);
                next.mesh = Arc::new(self.mesh_matrix(registry, &next.relays, now).await);
                self.set(next);
                return true;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {LIST_TIMEOUT:?}"),
        };
        let mut next = (*self.get()).clone();
        match &mut next.stale {
            Some(s) => s.error = error,
            None => {
                tracing::warn!(%error, "cannot read the registry; answering from the last snapshot");
                next.stale = Some(Staleness {
                    since_ms: now,
                    error,
                });
            }
        }
        self.set(next);
        false
    }
}

/// Refreshes `store` every `period` until the task is aborted.
pub async fn refresh_loop(store: Arc<SnapshotStore>, registry: Registry, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        store.refresh(&registry).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geoturn_shared::registry::RelayState;

    fn record(id: &str, updated_at_ms: u64) -> RelayRecord {
        RelayRecord {
            id: id.into(),
            region: "r".into(),
            lat: 0.0,
            lon: 0.0,
            addresses: geoturn_shared::registry::RelayAddrs {
                udp: vec!["192.0.2.1:3478".parse().unwrap()],
                ..Default::default()
            },
            capacity_allocations: 10,
            capacity_mbps: 10,
            allocations: 0,
            bps_in: 0,
            bps_out: 0,
            pps_in: 0,
            pps_out: 0,
            cpu: 0.0,
            state: RelayState::Active,
            version: "0".into(),
            started_at_ms: 0,
            updated_at_ms,
            drain_deadline_ms: None,
        }
    }

    #[tokio::test]
    async fn relays_known_before_an_outage_stay_until_they_re_register_or_the_grace_ends() {
        let store = SnapshotStore::default();
        store.set_recovery_grace(Duration::from_millis(300));
        let now = unix_ms();
        // Before the outage: two relays, heartbeats 100 ms old; then the registry failed.
        let mut before = Snapshot::fresh(vec![record("a", now - 100), record("b", now - 100)], now);
        before.stale = Some(Staleness {
            since_ms: now,
            error: "down".into(),
        });
        store.set(before);
        // Redis is back, empty, and then lists only `a` again.
        let empty = Registry::connect("memory", "", None).await.unwrap();
        assert!(store.refresh(&empty).await);
        let snap = store.get();
        assert!(snap.stale.is_none());
        let ids: Vec<&str> = snap.relays.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, vec!["a", "b"], "kept while the relays re-register");
        // Their ages are as last measured, not "since 1970": they stay eligible.
        assert!(
            snap.candidates
                .iter()
                .all(|c| c.heartbeat_age < Duration::from_secs(1))
        );
        // After the grace, only what the registry lists.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(store.refresh(&empty).await);
        assert!(store.get().relays.is_empty());
    }
}
