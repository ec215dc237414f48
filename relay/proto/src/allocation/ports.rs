//! Relayed port selection, shared by every shard of a relay: random within the configured range
//! (RFC 8656 §7.2 asks for unpredictable ports), with EVEN-PORT and the RESERVATION-TOKEN of
//! the next-higher port. Locked only when allocations are created or freed, never per packet.
//!
//! Ports and tokens come from ChaCha12, a CSPRNG: a client sees its own port and token, and
//! must learn nothing from them about the next ones (a predictable token is a stolen port).

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha12Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// How long a reserved port waits for the Allocate that names its token (RFC 8656 §7.2).
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// A reservation token (RESERVATION-TOKEN).
pub type Token = [u8; 8];

/// What the pool handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picked {
    /// The port for this allocation.
    pub port: u16,
    /// When the next port was reserved: its token.
    pub reservation: Option<Token>,
}

/// A port held for the Allocate that names its token.
#[derive(Debug)]
struct Reservation {
    port: u16,
    /// Only the user who reserved it may take it: a token seen by someone else is no use.
    username: String,
    until: Instant,
}

/// One bit per port: set while the port is in use or reserved. Written under the pool's lock,
/// read without it, per datagram, by [`PortPool::holds`].
#[derive(Debug)]
struct PortBits(Box<[AtomicU64]>);

impl PortBits {
    fn new() -> Self {
        Self((0..1024).map(|_| AtomicU64::new(0)).collect())
    }

    /// The word holding `port`'s bit (1024 words cover every port), and the bit.
    fn word(&self, port: u16) -> Option<(&AtomicU64, u64)> {
        let word = self.0.get(usize::from(port / 64))?;
        Some((word, 1 << (port % 64)))
    }

    fn set(&self, port: u16, on: bool) {
        if let Some((word, bit)) = self.word(port) {
            if on {
                word.fetch_or(bit, Ordering::Release);
            } else {
                word.fetch_and(!bit, Ordering::Release);
            }
        }
    }

    fn get(&self, port: u16) -> bool {
        self.word(port)
            .is_some_and(|(word, bit)| word.load(Ordering::Acquire) & bit != 0)
    }
}

/// The ports in use or reserved: the bitmap (shared with lock-free readers) is the record,
/// with a count beside it so `in_use` does not scan 1 024 words. Changed only under the pool's
/// lock.
#[derive(Debug)]
struct UsedPorts {
    bits: Arc<PortBits>,
    count: usize,
}

impl UsedPorts {
    fn insert(&mut self, port: u16) {
        if !self.bits.get(port) {
            self.bits.set(port, true);
            self.count += 1;
        }
    }

    fn remove(&mut self, port: &u16) {
        if self.bits.get(*port) {
            self.bits.set(*port, false);
            self.count -= 1;
        }
    }

    fn contains(&self, port: &u16) -> bool {
        self.bits.get(*port)
    }

    fn len(&self) -> usize {
        self.count
    }
}

#[derive(Debug)]
struct Inner {
    used: UsedPorts,
    reservations: HashMap<Token, Reservation>,
    rng: ChaCha12Rng,
}

/// The relayed ports of one relay.
#[derive(Debug)]
pub struct PortPool {
    range: RangeInclusive<u16>,
    inner: Mutex<Inner>,
    bits: Arc<PortBits>,
}

impl Inner {
    fn expire(&mut self, now: Instant) {
        let used = &mut self.used;
        self.reservations.retain(|_, r| {
            let keep = now < r.until;
            if !keep {
                used.remove(&r.port);
            }
            keep
        });
    }
}

impl PortPool {
    /// A pool over `range`; ports and tokens drawn from a CSPRNG seeded with `seed` (from the
    /// operating system in production, fixed in tests).
    pub fn new(range: RangeInclusive<u16>, seed: [u8; 32]) -> Self {
        let bits = Arc::new(PortBits::new());
        Self {
            range,
            bits: bits.clone(),
            inner: Mutex::new(Inner {
                used: UsedPorts { bits, count: 0 },
                reservations: HashMap::new(),
                rng: ChaCha12Rng::from_seed(seed),
            }),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update keeps the sets consistent before it can panic; keep going after one.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A free port, even when `even`; with `reserve_next`, an even port whose successor is free
    /// too, the successor reserved for `username` under a new token.
    pub fn pick(
        &self,
        even: bool,
        reserve_next: bool,
        username: &str,
        now: Instant,
    ) -> Option<Picked> {
        let mut inner = self.inner();
        inner.expire(now);
        let first = u32::from(*self.range.start());
        let span = u32::from(*self.range.end()).checked_sub(first)? + 1;
        let start = (inner.rng.next_u64() % u64::from(span)) as u32;
        let even = even || reserve_next;
        for i in 0..span {
            let port = u16::try_from(first + (start + i) % span).ok()?;
            if (even && port % 2 != 0) || inner.used.contains(&port) {
                continue;
            }
            if !reserve_next {
                inner.used.insert(port);
                return Some(Picked {
                    port,
                    reservation: None,
                });
            }
            let Some(next) = port.checked_add(1).filter(|p| self.range.contains(p)) else {
                continue;
            };
            if inner.used.contains(&next) {
                continue;
            }
            let mut token = Token::default();
            // A fresh 64-bit token; a collision with a live one would hand over its port.
            while token == Token::default() || inner.reservations.contains_key(&token) {
                inner.rng.fill_bytes(&mut token);
            }
            inner.used.insert(port);
            inner.used.insert(next);
            let reservation = Reservation {
                port: next,
                username: username.to_owned(),
                until: now + RESERVATION_LIFETIME,
            };
            inner.reservations.insert(token, reservation);
            return Some(Picked {
                port,
                reservation: Some(token),
            });
        }
        None
    }

    /// Takes the port reserved under `token`, if the reservation is still live and `username`
    /// made it. Another user's attempt leaves the reservation in place.
    pub fn take_reservation(&self, token: &Token, username: &str, now: Instant) -> Option<u16> {
        let mut inner = self.inner();
        inner.expire(now);
        if inner.reservations.get(token)?.username != username {
            return None;
        }
        inner.reservations.remove(token).map(|r| r.port)
    }

    /// Returns a port (and, if it was reserved, its reservation) to the pool.
    pub fn release(&self, port: u16) {
        let mut inner = self.inner();
        inner.used.remove(&port);
    }

    /// Drops a reservation made with a port whose Allocate failed.
    pub fn cancel_reservation(&self, token: &Token) {
        let mut inner = self.inner();
        if let Some(r) = inner.reservations.remove(token) {
            inner.used.remove(&r.port);
        }
    }

    /// Ports in use or reserved.
    pub fn in_use(&self) -> usize {
        self.inner().used.len()
    }

    /// True while `port` is a relayed port of this relay (in use or reserved); lock-free, for
    /// the data path.
    pub fn holds(&self, port: u16) -> bool {
        self.bits.get(port)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn picks_every_port_once() {
        let now = crate::test_epoch();
        let pool = PortPool::new(50000..=50009, [1; 32]);
        let mut seen = HashSet::new();
        while let Some(p) = pool.pick(false, false, "1:alice", now) {
            assert!(seen.insert(p.port));
        }
        assert_eq!(seen.len(), 10);
        assert!(pool.holds(50002) && !pool.holds(50010) && !pool.holds(49999));
        pool.release(50002);
        assert!(!pool.holds(50002));
        assert_eq!(pool.pick(false, false, "1:alice", now).unwrap().port, 50002);
    }

    #[test]
    fn even_ports_and_reservations() {
        let now = crate::test_epoch();
        let pool = PortPool::new(50001..=50006, [7; 32]);
        let p = pool.pick(false, true, "1:alice", now).unwrap();
        assert_eq!(p.port % 2, 0);
        let token = p.reservation.unwrap();
        assert_eq!(pool.in_use(), 2);
        // Another user holding the token gets nothing, and takes nothing away.
        assert_eq!(pool.take_reservation(&token, "1:mallory", now), None);
        assert_eq!(
            pool.take_reservation(&token, "1:alice", now),
            Some(p.port + 1)
        );
        assert_eq!(pool.take_reservation(&token, "1:alice", now), None);
        // A reservation nobody claims frees its port after 30 s.
        let q = pool.pick(false, true, "1:alice", now).unwrap();
        assert_eq!(pool.in_use(), 4);
        let later = now + RESERVATION_LIFETIME;
        let token = q.reservation.unwrap();
        let reserved = q.port + 1;
        assert!(pool.holds(reserved));
        assert_eq!(pool.take_reservation(&token, "1:alice", later), None);
        assert_eq!(pool.in_use(), 3);
        assert!(
            !pool.holds(reserved),
            "an expired reservation frees its bit"
        );
    }
}
