//! Per-caller token-bucket rate limiting for the HTTP API, with bounded memory.
//!
//! Every credential request costs an HMAC and a relay ranking, and credentials are worth
//! hoarding, so each caller (an API key or client address, as the caller chooses) gets a bucket
//! of `burst` tokens refilled at `rate_per_sec`. Keys come from the network, so the table of
//! buckets must not grow with the number of distinct callers an attacker can invent: it holds
//! at most `max_keys` entries.
//!
//! The bucket is kept in its GCRA form (generic cell rate algorithm): instead of a token count
//! and a refill time, each key stores one instant, its "theoretical arrival time" — when the
//! bucket would be full again. That is one `Instant` per key, needs no floating-point refill
//! arithmetic (so a caller who waits exactly the returned retry-after is admitted), and "the
//! bucket is full" is simply "that instant has passed".

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Slowest refill honoured: one token a year. Slower rates are clamped to it so the interval
/// between tokens stays far from `Instant` overflow.
const MAX_INTERVAL: Duration = Duration::from_secs(365 * 24 * 3600);

/// A token bucket per caller key; see the [module documentation](self).
#[derive(Debug)]
pub struct RateLimiter {
    /// Time one token takes to refill; `None` when the limiter is disabled.
    interval: Option<Duration>,
    /// How far ahead of `now` a key's full-again instant may be while still admitting a request:
    /// `burst - 1` intervals (the request being admitted takes the last token).
    tolerance: Duration,
    max_keys: usize,
    /// Per key: the instant its bucket is full again. Keys whose instant has passed hold no
    /// state and may be forgotten at any time.
    full_at: Mutex<HashMap<String, Instant>>,
}

impl RateLimiter {
    /// `rate_per_sec` tokens refill per second, up to `burst`; at most `max_keys` callers tracked.
    ///
    /// - `rate_per_sec <= 0`, NaN or infinite disables the limiter: [`check`](Self::check)
    ///   always admits and nothing is stored. (Zero means "no limit configured", not "refuse
    ///   everything"; a refusing limiter would never have a retry-after to give.)
    /// - `burst == 0` is treated as 1: requests are then admitted strictly one interval apart.
    /// - `max_keys == 0` is treated as 1.
    /// - Rates below one token a year are clamped to one a year.
    #[must_use]
    pub fn new(rate_per_sec: f64, burst: u32, max_keys: usize) -> Self {
        let interval = (rate_per_sec.is_finite() && rate_per_sec > 0.0).then(|| {
            Duration::try_from_secs_f64(1.0 / rate_per_sec)
                .unwrap_or(MAX_INTERVAL)
                .min(MAX_INTERVAL)
        });
        let tolerance = interval
            .unwrap_or_default()
            .saturating_mul(burst.saturating_sub(1));
        Self {
            interval,
            tolerance,
            max_keys: max_keys.max(1),
            full_at: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key` at `now`; `Ok(())` when the request is admitted.
    ///
    /// `now` is passed in so tests can use virtual time; instants slightly out of order (threads
    /// racing to the lock) are tolerated.
    ///
    /// # Errors
    ///
    /// `Err(retry_after)` when `key` has no token left: the exact time until one is available
    /// (always more than zero; HTTP callers round it up to whole seconds for `Retry-After`).
    /// A refused request takes nothing from the bucket.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let Some(interval) = self.interval else {
            return Ok(());
        };
        // Nothing done under the lock can leave the map half-updated (single inserts and
        // assignments, and `retain`s whose closures cannot panic), so a poisoned lock is still
        // usable.
        let mut full_at = self.full_at.lock().unwrap_or_else(PoisonError::into_inner);

        // A key never seen (or forgotten because it was full) starts with a full bucket.
        let known = full_at.get(key).copied();
        let start = known.map_or(now, |at| at.max(now));
        let ahead = start.saturating_duration_since(now);
        if let Some(short) = ahead.checked_sub(self.tolerance).filter(|d| !d.is_zero()) {
            return Err(short);
        }
        let Some(next) = start.checked_add(interval) else {
            // Only reachable with an `Instant` near the end of its range; refusing is the safe
            // answer and cannot panic.
            return Err(interval);
        };
        if let Some(at) = full_at.get_mut(key) {
            *at = next;
        } else {
            if full_at.len() >= self.max_keys {
                make_room(&mut full_at, self.max_keys, now);
            }
            full_at.insert(key.to_owned(), next);
        }
        Ok(())
    }

    /// Number of keys currently tracked (never more than `max_keys`).
    #[must_use]
    pub fn len(&self) -> usize {
        self.full_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no key is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Frees at least one slot in a table holding `max_keys` (or more) keys.
///
/// Keys whose bucket is full again carry no state, so they go first and no answer changes.
/// If that is not enough, the buckets closest to full are evicted: forgetting a key hands it a
/// full bucket, and these lose the fewest tokens — a caller that is being throttled has its
/// full-again instant far ahead and is the last to be forgotten, so flooding the table with new
/// keys does not reset an attacker's own bucket. Ties go by key, so the choice is
/// deterministic.
///
/// Each call scans the whole table, so it evicts a batch (1/16 of `max_keys`) at once: the next
/// new keys then find room without a scan, which keeps the cost per request constant on
/// average even when every request brings a new key.
fn make_room(full_at: &mut HashMap<String, Instant>, max_keys: usize, now: Instant) {
    full_at.retain(|_, at| *at > now);
    if full_at.len() < max_keys {
        return;
    }
    let keep = max_keys - (max_keys / 16).max(1);
    let evict = full_at.len() - keep; // at least 1, at most len
    let mut order: Vec<(Instant, &str)> = full_at
        .iter()
        .map(|(key, at)| (*at, key.as_str()))
        .collect();
    let (_, cutoff, _) = order.select_nth_unstable(evict - 1);
    let (cutoff_at, cutoff_key) = (cutoff.0, cutoff.1.to_owned());
    // (instant, key) is a total order, so exactly `evict` entries are at or below the cutoff.
    full_at.retain(|key, at| (*at, key.as_str()) > (cutoff_at, cutoff_key.as_str()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let limiter = RateLimiter::new(2.0, 3, 100);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check("a", t0), Ok(()));
        }
        // Three tokens spent at once; the next arrives after 1/2 s.
        assert_eq!(limiter.check("a", t0), Err(secs(0.5)));
        // A refusal takes nothing: asking again later gives a correspondingly shorter wait.
        let t1 = t0 + Duration::from_millis(200);
        assert_eq!(limiter.check("a", t1), Err(Duration::from_millis(300)));
    }

    #[test]
    fn waiting_exactly_retry_after_is_enough() {
        // 1/3 s is not a whole number of nanoseconds: the answer must still be exact.
        let limiter = RateLimiter::new(3.0, 1, 100);
        let mut now = Instant::now();
        assert_eq!(limiter.check("a", now), Ok(()));
        for _ in 0..100 {
            let wait = limiter.check("a", now).unwrap_err();
            assert!(wait > Duration::ZERO);
            let just_before = now + wait - Duration::from_nanos(1);
            assert!(limiter.check("a", just_before).is_err());
            now += wait;
            assert_eq!(limiter.check("a", now), Ok(()));
        }
    }

    #[test]
    fn refills_over_virtual_time() {
        let limiter = RateLimiter::new(1.0, 5, 100);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(limiter.check("a", t0), Ok(()));
        }
        assert!(limiter.check("a", t0).is_err());
        // 2.5 s later, two tokens have refilled (and half of a third).
        let t1 = t0 + secs(2.5);
        assert_eq!(limiter.check("a", t1), Ok(()));
        assert_eq!(limiter.check("a", t1), Ok(()));
        assert_eq!(limiter.check("a", t1), Err(secs(0.5)));
        // Refill stops at `burst`: after an hour of silence, exactly five are admitted.
        let t2 = t1 + secs(3600.0);
        for _ in 0..5 {
            assert_eq!(limiter.check("a", t2), Ok(()));
        }
        assert_eq!(limiter.check("a", t2), Err(secs(1.0)));
        // A steady caller at exactly the rate is never refused.
        let mut now = t2;
        for _ in 0..50 {
            now += secs(1.0);
            assert_eq!(limiter.check("a", now), Ok(()));
        }
    }

    #[test]
    fn keys_are_independent() {
        let limiter = RateLimiter::new(1.0, 2, 100);
        let t0 = Instant::now();
        assert_eq!(limiter.check("a", t0), Ok(()));
        assert_eq!(limiter.check("a", t0), Ok(()));
        assert!(limiter.check("a", t0).is_err());
        assert_eq!(limiter.check("b", t0), Ok(()));
        assert_eq!(limiter.check("b", t0), Ok(()));
        assert!(limiter.check("b", t0).is_err());
        assert!(limiter.check("a", t0).is_err());
        assert_eq!(limiter.len(), 2);
    }

    #[test]
    fn instants_out_of_order_are_tolerated() {
        let limiter = RateLimiter::new(1.0, 1, 100);
        let t0 = Instant::now() + secs(10.0);
        assert_eq!(limiter.check("a", t0), Ok(()));
        // A request whose instant was taken earlier, but reached the lock later.
        assert_eq!(limiter.check("a", t0 - secs(0.25)), Err(secs(1.25)));
    }

    #[test]
    fn keys_held_are_bounded() {
        let max_keys = 64;
        let limiter = RateLimiter::new(1.0, 3, max_keys);
        let t0 = Instant::now();
        for i in 0..max_keys * 3 {
            assert_eq!(limiter.check(&format!("k{i}"), t0), Ok(()));
            assert!(
                limiter.len() <= max_keys,
                "{} keys after {i}",
                limiter.len()
            );
        }
        // Much later every bucket is full again; new keys replace them without eviction loss.
        let t1 = t0 + secs(60.0);
        for i in 0..max_keys * 3 {
            assert_eq!(limiter.check(&format!("n{i}"), t1), Ok(()));
            assert!(limiter.len() <= max_keys);
        }
        assert!(!limiter.is_empty());
    }

    #[test]
    fn full_buckets_are_dropped_before_throttled_ones() {
        let limiter = RateLimiter::new(1.0, 2, 4);
        let t0 = Instant::now();
        // "hot" drains its bucket; three others take one token each.
        assert_eq!(limiter.check("hot", t0), Ok(()));
        assert_eq!(limiter.check("hot", t0), Ok(()));
        for key in ["a", "b", "c"] {
            assert_eq!(limiter.check(key, t0), Ok(()));
        }
        // 1 s later a, b and c are full again but "hot" still owes a token: a newcomer makes
        // room by forgetting the full ones, and "hot" keeps its state.
        let t1 = t0 + secs(1.0);
        assert_eq!(limiter.check("new", t1), Ok(()));
        assert_eq!(limiter.len(), 2);
        assert_eq!(limiter.check("hot", t1), Ok(()));
        assert_eq!(limiter.check("hot", t1), Err(secs(1.0)));
    }

    #[test]
    fn eviction_keeps_throttled_keys() {
        // Flooding the table with new keys must not reset a throttled caller's bucket.
        let limiter = RateLimiter::new(0.1, 3, 16);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check("attacker", t0), Ok(()));
        }
        assert!(limiter.check("attacker", t0).is_err());
        for i in 0..1000 {
            assert_eq!(limiter.check(&format!("spoof{i}"), t0), Ok(()));
            assert!(limiter.len() <= 16);
        }
        assert_eq!(limiter.check("attacker", t0), Err(secs(10.0)));
    }

    #[test]
    fn eviction_is_deterministic() {
        let run = || {
            let limiter = RateLimiter::new(1.0, 2, 8);
            let t0 = Instant::now();
            for i in 0..50 {
                let _ = limiter.check(&format!("k{i}"), t0);
            }
            let mut keys: Vec<String> = limiter.full_at.lock().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        let first = run();
        for _ in 0..10 {
            assert_eq!(run(), first);
        }
    }

    #[test]
    fn disabled_limiter_always_admits() {
        let t0 = Instant::now();
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let limiter = RateLimiter::new(rate, 1, 4);
            for i in 0..1000 {
                assert_eq!(limiter.check(&format!("k{}", i % 10), t0), Ok(()));
            }
            assert!(limiter.is_empty(), "rate {rate}");
        }
    }

    #[test]
    fn degenerate_settings_do_not_panic() {
        let t0 = Instant::now();
        // burst 0 behaves as 1.
        let limiter = RateLimiter::new(1.0, 0, 4);
        assert_eq!(limiter.check("a", t0), Ok(()));
        assert_eq!(limiter.check("a", t0), Err(secs(1.0)));
        // max_keys 0 behaves as 1.
        let limiter = RateLimiter::new(1.0, 1, 0);
        assert_eq!(limiter.check("a", t0), Ok(()));
        assert_eq!(limiter.check("b", t0), Ok(()));
        assert_eq!(limiter.len(), 1);
        // Absurdly slow and fast rates, and a huge burst.
        let limiter = RateLimiter::new(1e-300, u32::MAX, 4);
        assert_eq!(limiter.check("a", t0), Ok(()));
        let limiter = RateLimiter::new(1e-300, 1, 4);
        assert_eq!(limiter.check("a", t0), Ok(()));
        assert_eq!(limiter.check("a", t0), Err(MAX_INTERVAL));
        let limiter = RateLimiter::new(1e300, 1, 4);
        for _ in 0..100 {
            assert_eq!(limiter.check("a", t0), Ok(()));
        }
    }
}
