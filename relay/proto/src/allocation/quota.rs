//! Allocation quotas shared by every shard: a per-user cap (486) and a total cap (508).

use std::collections::HashMap;
use std::sync::Mutex;

/// Which quota refused an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaExceeded {
    /// The user holds `per_user` allocations already: 486.
    User,
    /// The relay holds `total` allocations already: 508.
    Total,
}

/// Counts allocations per user and in total. Shared between shards behind an `Arc`;
/// touched only when allocations are created or deleted, never per packet.
#[derive(Debug, Default)]
pub struct Quota {
    per_user: u32,
    total: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_user: HashMap<String, u32>,
}

impl Quota {
    /// `per_user` = 0 and `total` = 0 mean unlimited.
    pub fn new(per_user: u32, total: usize) -> Self {
        Self {
            per_user,
            total,
            counts: Mutex::default(),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // A panic while holding this lock cannot leave counts half-updated; keep going.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one allocation for `user`, or says which quota is full.
    pub fn acquire(&self, user: &str) -> Result<(), QuotaExceeded> {
        let mut c = self.counts();
        if self.total != 0 && c.total >= self.total {
            return Err(QuotaExceeded::Total);
        }
        let n = c.by_user.get(user).copied().unwrap_or(0);
        if self.per_user != 0 && n >= self.per_user {
            return Err(QuotaExceeded::User);
        }
        c.total += 1;
        c.by_user.insert(user.to_owned(), n + 1);
        Ok(())
    }

    /// Returns one allocation of `user`.
    pub fn release(&self, user: &str) {
        let mut c = self.counts();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_user.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.by_user.remove(user);
            }
        }
    }

    /// Allocations held in total.
    pub fn total(&self) -> usize {
        self.counts().total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_total_caps() {
        let q = Quota::new(2, 3);
        q.acquire("a").unwrap();
        q.acquire("a").unwrap();
        assert_eq!(q.acquire("a"), Err(QuotaExceeded::User));
        q.acquire("b").unwrap();
        assert_eq!(q.acquire("c"), Err(QuotaExceeded::Total));
        q.release("a");
        q.acquire("c").unwrap();
        assert_eq!(q.total(), 3);
    }
}
