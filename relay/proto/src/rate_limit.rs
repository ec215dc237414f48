//! Token buckets: the per-allocation bandwidth limit and the per-source limit on responses to
//! unauthenticated requests (which bounds how much a spoofed source can be sent: every such
//! response is a few times larger than the request that caused it).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// A token bucket refilled continuously at `rate` tokens per second up to `burst`.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes `n` tokens if there are that many.
    pub fn take(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// Most sources tracked at once; bounds memory under a spoofed-source flood.
const MAX_SOURCES: usize = 65_536;

/// Per source IP, how many unauthenticated responses may be sent.
#[derive(Debug, Clone)]
pub struct SourceLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<IpAddr, TokenBucket>,
}

impl SourceLimiter {
    /// `rate` responses per second per source, bursts of `burst`; a rate of 0 disables it.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// True when a response to `source` may be sent now.
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        if !self.buckets.contains_key(&source) && self.buckets.len() >= MAX_SOURCES {
            // Forget sources that are idle (full bucket: they lose nothing by being forgotten).
            self.buckets.retain(|_, b| !b.is_full(now));
            if self.buckets.len() >= MAX_SOURCES {
                // A flood from more sources than we track: stop answering new ones until
                // the tracked ones go idle, rather than growing without bound.
                return false;
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        self.buckets
            .entry(source)
            .or_insert_with(|| TokenBucket::new(rate, burst, now))
            .take(1.0, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills_at_its_rate() {
        let t0 = crate::test_epoch();
        let mut b = TokenBucket::new(1000.0, 1500.0, t0);
        assert!(b.take(1500.0, t0));
        assert!(!b.take(1.0, t0));
        assert!(b.take(500.0, t0 + Duration::from_millis(500)));
        assert!(!b.take(100.0, t0 + Duration::from_millis(500)));
        // Never more than the burst, however long it rested.
        assert!(!b.take(1501.0, t0 + Duration::from_secs(100)));
    }

    #[test]
    fn sources_are_limited_separately() {
        let t0 = crate::test_epoch();
        let mut l = SourceLimiter::new(10, 3);
        let a: IpAddr = [198, 51, 100, 1].into();
        let b: IpAddr = [198, 51, 100, 2].into();
        for _ in 0..3 {
            assert!(l.allow(a, t0));
        }
        assert!(!l.allow(a, t0));
        assert!(l.allow(b, t0));
        assert!(l.allow(a, t0 + Duration::from_millis(100)));
        assert!(SourceLimiter::new(0, 0).allow(a, t0));
    }
}
