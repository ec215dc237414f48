//! Users whose credentials must stop working, shared by every shard of a relay: a request from
//! a revoked user is refused (403) by whichever shard it reaches, and every shard closes the
//! user's allocations at its next sweep (it sees the table's generation change). Revocations
//! arrive from the registry (an event, or the stored list loaded at start and on every resync),
//! so none is lost to a full queue.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Most revoked users remembered; past it, revocations ending soonest are forgotten first.
pub const MAX_REVOKED: usize = 100_000;

/// Revoked user ids and until when.
#[derive(Debug, Default)]
pub struct Revocations {
    until: Mutex<HashMap<String, Instant>>,
    /// Bumped by every revocation, so shards know to look for allocations to close.
    generation: AtomicU64,
}

impl Revocations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses `user` until `until` (a later revocation of the same user only extends it).
    pub fn revoke(&self, user: &str, until: Instant, now: Instant) {
        let mut map = self.lock();
        if map.len() >= MAX_REVOKED && !map.contains_key(user) {
            map.retain(|_, t| *t > now);
            if map.len() >= MAX_REVOKED
                && let Some(soonest) = map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone())
            {
                map.remove(&soonest);
            }
        }
        let entry = map.entry(user.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// True while `user` is revoked.
    pub fn is_revoked(&self, user: &str, now: Instant) -> bool {
        self.lock().get(user).is_some_and(|t| now < *t)
    }

    /// Changes with every revocation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Revocations remembered (some may have ended).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when none are remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn revocations_extend_end_and_bump_the_generation() {
        let t0 = crate::test_epoch();
        let r = Revocations::default();
        let g0 = r.generation();
        r.revoke("alice", t0 + Duration::from_secs(10), t0);
        assert_ne!(r.generation(), g0);
        assert!(r.is_revoked("alice", t0));
        assert!(!r.is_revoked("bob", t0));
        // A shorter revocation does not shorten a longer one.
        r.revoke("alice", t0 + Duration::from_secs(5), t0);
        assert!(r.is_revoked("alice", t0 + Duration::from_secs(7)));
        assert!(!r.is_revoked("alice", t0 + Duration::from_secs(10)));
    }

    #[test]
    fn the_table_is_bounded() {
        let t0 = crate::test_epoch();
        let r = Revocations::default();
        for i in 0..MAX_REVOKED {
            let until = t0 + Duration::from_secs(100 + i as u64);
            r.revoke(&format!("u{i}"), until, t0);
        }
        r.revoke("late", t0 + Duration::from_secs(1_000_000), t0);
        assert_eq!(r.len(), MAX_REVOKED);
        assert!(r.is_revoked("late", t0));
        assert!(!r.is_revoked("u0", t0), "the one ending soonest made room");
        assert!(r.is_revoked("u1", t0));
    }
}
