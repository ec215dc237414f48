//! Allocation quotas shared by every shard: a per-user cap (486), a per-source cap (486: one
//! IPv4 address or IPv6 /64, whatever user ids its credentials carry) and a total cap (508).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::types::source_of;

/// Which quota refused an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaExceeded {
    /// The user holds `per_user` allocations already: 486.
    User,
    /// The client's address (or IPv6 /64) holds `per_source` allocations already: 486.
    Source,
    /// The relay holds `total` allocations already: 508.
    Total,
}

/// Counts allocations per user and in total. Shared between shards behind an `Arc`;
/// touched only when allocations are created or deleted, never per packet.
#[derive(Debug, Default)]
pub struct Quota {
    per_user: u32,
    per_source: u32,
    total: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_user: HashMap<String, u32>,
    by_source: HashMap<IpAddr, u32>,
}

/// Takes one from `key`'s count, forgetting the key at zero so the map holds only holders.
fn decrement<K, Q>(map: &mut HashMap<K, u32>, key: &Q)
where
    K: std::hash::Hash + Eq + std::borrow::Borrow<Q>,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Quota {
    /// `per_user`, `per_source` and `total` of 0 mean unlimited.
    pub fn new(per_user: u32, per_source: u32, total: usize) -> Self {
        Self {
            per_user,
            per_source,
            total,
            counts: Mutex::default(),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // A panic while holding this lock cannot leave counts half-updated; keep going.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one allocation for `user` from client address `from`, or says which quota is full.
    pub fn acquire(&self, user: &str, from: IpAddr) -> Result<(), QuotaExceeded> {
        let source = source_of(from);
        let mut c = self.counts();
        if self.total != 0 && c.total >= self.total {
            return Err(QuotaExceeded::Total);
        }
        let by_user = c.by_user.get(user).copied().unwrap_or(0);
        if self.per_user != 0 && by_user >= self.per_user {
            return Err(QuotaExceeded::User);
        }
        let by_source = c.by_source.get(&source).copied().unwrap_or(0);
        if self.per_source != 0 && by_source >= self.per_source {
            return Err(QuotaExceeded::Source);
        }
        c.total += 1;
        c.by_user.insert(user.to_owned(), by_user + 1);
        c.by_source.insert(source, by_source + 1);
        Ok(())
    }

    /// Returns one allocation of `user` from `from`.
    pub fn release(&self, user: &str, from: IpAddr) {
        let mut c = self.counts();
        c.total = c.total.saturating_sub(1);
        decrement(&mut c.by_user, user);
        decrement(&mut c.by_source, &source_of(from));
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
    fn user_source_and_total_caps() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let q = Quota::new(2, 3, 4);
        q.acquire("a", ip("192.0.2.1")).unwrap();
        q.acquire("a", ip("192.0.2.1")).unwrap();
        assert_eq!(q.acquire("a", ip("192.0.2.2")), Err(QuotaExceeded::User));
        // Another user id from the same address: the address's cap.
        q.acquire("b", ip("192.0.2.1")).unwrap();
        assert_eq!(q.acquire("c", ip("192.0.2.1")), Err(QuotaExceeded::Source));
        // One IPv6 /64 is one source.
        q.acquire("d", ip("2001:db8::1")).unwrap();
        assert_eq!(
            q.acquire("e", ip("198.51.100.1")),
            Err(QuotaExceeded::Total)
        );
        q.release("a", ip("192.0.2.1"));
        q.acquire("c", ip("192.0.2.1")).unwrap();
        assert_eq!(q.total(), 4);
        for (user, from) in [("a", "192.0.2.1"), ("b", "192.0.2.1"), ("c", "192.0.2.1")] {
            q.release(user, ip(from));
        }
        q.release("d", ip("2001:db8::1"));
        assert_eq!(q.total(), 0);
        let c = q.counts();
        assert!(
            c.by_user.is_empty() && c.by_source.is_empty(),
            "only holders are kept"
        );
        drop(c);
        let v6 = Quota::new(0, 1, 0);
        v6.acquire("x", ip("2001:db8:0:1::1")).unwrap();
        assert_eq!(
            v6.acquire("y", ip("2001:db8:0:1:ffff::2")),
            Err(QuotaExceeded::Source)
        );
        assert!(v6.acquire("y", ip("2001:db8:0:2::1")).is_ok());
    }
}
