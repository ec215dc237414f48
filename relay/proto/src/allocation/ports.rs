//! Relayed port selection, shared by every shard of a relay: random within the configured range
//! (RFC 8656 §7.2 asks for unpredictable ports), with EVEN-PORT and the RESERVATION-TOKEN of
//! the next-higher port. Locked only when allocations are created or freed, never per packet.

use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

#[derive(Debug)]
struct Inner {
    used: HashSet<u16>,
    reservations: HashMap<Token, (u16, Instant)>,
    rng: u64,
}

/// The relayed ports of one relay.
#[derive(Debug)]
pub struct PortPool {
    range: RangeInclusive<u16>,
    inner: Mutex<Inner>,
}

impl Inner {
    fn next_random(&mut self) -> u64 {
        // xorshift64*: unpredictable enough for port choice, and deterministic under test.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn expire(&mut self, now: Instant) {
        let used = &mut self.used;
        self.reservations.retain(|_, (port, until)| {
            let keep = now < *until;
            if !keep {
                used.remove(port);
            }
            keep
        });
    }
}

impl PortPool {
    /// A pool over `range`, with port choice seeded by `seed`.
    pub fn new(range: RangeInclusive<u16>, seed: u64) -> Self {
        Self {
            range,
            inner: Mutex::new(Inner {
                used: HashSet::new(),
                reservations: HashMap::new(),
                rng: seed | 1,
            }),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update keeps the sets consistent before it can panic; keep going after one.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A free port, even when `even`; with `reserve_next`, an even port whose successor is free
    /// too, the successor reserved under a new token.
    pub fn pick(&self, even: bool, reserve_next: bool, now: Instant) -> Option<Picked> {
        let mut inner = self.inner();
        inner.expire(now);
        let first = u32::from(*self.range.start());
        let span = u32::from(*self.range.end()).checked_sub(first)? + 1;
        let start = (inner.next_random() % u64::from(span)) as u32;
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
            let token = inner.next_random().to_be_bytes();
            inner.used.insert(port);
            inner.used.insert(next);
            inner
                .reservations
                .insert(token, (next, now + RESERVATION_LIFETIME));
            return Some(Picked {
                port,
                reservation: Some(token),
            });
        }
        None
    }

    /// Takes the port reserved under `token`, if the reservation is still live.
    pub fn take_reservation(&self, token: &Token, now: Instant) -> Option<u16> {
        let mut inner = self.inner();
        inner.expire(now);
        inner.reservations.remove(token).map(|(port, _)| port)
    }

    /// Returns a port (and, if it was reserved, its reservation) to the pool.
    pub fn release(&self, port: u16) {
        let mut inner = self.inner();
        inner.used.remove(&port);
    }

    /// Drops a reservation made with a port whose Allocate failed.
    pub fn cancel_reservation(&self, token: &Token) {
        let mut inner = self.inner();
        if let Some((port, _)) = inner.reservations.remove(token) {
            inner.used.remove(&port);
        }
    }

    /// Ports in use or reserved.
    pub fn in_use(&self) -> usize {
        self.inner().used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_every_port_once() {
        let now = crate::test_epoch();
        let pool = PortPool::new(50000..=50009, 1);
        let mut seen = HashSet::new();
        while let Some(p) = pool.pick(false, false, now) {
            assert!(seen.insert(p.port));
        }
        assert_eq!(seen.len(), 10);
        pool.release(50002);
        assert_eq!(pool.pick(false, false, now).unwrap().port, 50002);
    }

    #[test]
    fn even_ports_and_reservations() {
        let now = crate::test_epoch();
        let pool = PortPool::new(50001..=50006, 7);
        let p = pool.pick(false, true, now).unwrap();
        assert_eq!(p.port % 2, 0);
        let token = p.reservation.unwrap();
        assert_eq!(pool.in_use(), 2);
        assert_eq!(pool.take_reservation(&token, now), Some(p.port + 1));
        assert_eq!(pool.take_reservation(&token, now), None);
        // A reservation nobody claims frees its port after 30 s.
        let q = pool.pick(false, true, now).unwrap();
        assert_eq!(pool.in_use(), 4);
        let later = now + RESERVATION_LIFETIME;
        assert_eq!(pool.take_reservation(&q.reservation.unwrap(), later), None);
        assert_eq!(pool.in_use(), 3);
    }
}
