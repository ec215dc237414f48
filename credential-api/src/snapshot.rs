//! The fleet as the API last read it from the registry.
//!
//! Requests never touch the registry: a background task lists the relays about once a second
//! and swaps in a new [`Snapshot`]. When the registry cannot be read the last snapshot stays in
//! use and is marked stale, so clients keep getting relays (DESIGN.md §1: Redis down costs
//! freshness, never service). Heartbeat ages are measured when the records were read, so a
//! stale snapshot does not age every relay out while Redis is away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use geoturn_geo::Candidate;
use geoturn_shared::registry::{Registry, RelayRecord};

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
}

impl SnapshotStore {
    /// The snapshot now (cheap: one `Arc` clone).
    pub fn get(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
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
    }

    /// Reads the registry once; on failure keeps the last snapshot and marks it stale.
    /// Returns whether the read succeeded.
    pub async fn refresh(&self, registry: &Registry) -> bool {
        let result = tokio::time::timeout(LIST_TIMEOUT, registry.list()).await;
        let now = unix_ms();
        let error = match result {
            Ok(Ok(relays)) => {
                if let Some(s) = &self.get().stale {
                    tracing::info!(
                        down_ms = now.saturating_sub(s.since_ms),
                        "registry readable again"
                    );
                }
                self.set(Snapshot::fresh(relays, now));
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

/// Wall-clock Unix milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
