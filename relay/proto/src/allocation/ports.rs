//! Relayed port selection: random within the configured range (RFC 8656 §7.2 asks for
//! unpredictable ports), partitioned between shards so no two shards ever pick the same port.

use std::collections::HashSet;
use std::ops::RangeInclusive;

/// Picks free relayed ports for one shard.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    first: u16,
    owned: u32,
    shard: u32,
    shards: u32,
    used: HashSet<u16>,
    rng: u64,
}

impl PortAllocator {
    /// Ports of `range` whose offset from the start ≡ `shard` (mod `shards`) belong to this shard.
    pub fn new(range: RangeInclusive<u16>, shard: u32, shards: u32, seed: u64) -> Self {
        let shards = shards.max(1);
        let shard = shard % shards;
        let first = *range.start();
        let span = u32::from(range.end().saturating_sub(first)) + 1;
        let owned = if range.is_empty() || shard >= span {
            0
        } else {
            (span - shard).div_ceil(shards)
        };
        Self {
            first,
            owned,
            shard,
            shards,
            used: HashSet::new(),
            rng: seed | 1,
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: unpredictable enough for port choice, and deterministic under test.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn port_at(&self, k: u32) -> Option<u16> {
        let off = self.shard.checked_add(k.checked_mul(self.shards)?)?;
        u16::try_from(u32::from(self.first).checked_add(off)?).ok()
    }

    /// A free port (even when `even`), now marked used; `None` when the shard's range is full.
    pub fn pick(&mut self, even: bool) -> Option<u16> {
        if self.owned == 0 {
            return None;
        }
        let start = (self.next_random() % u64::from(self.owned)) as u32;
        for i in 0..self.owned {
            let k = (start + i) % self.owned;
            let port = self.port_at(k)?;
            if (even && port % 2 != 0) || self.used.contains(&port) {
                continue;
            }
            self.used.insert(port);
            return Some(port);
        }
        None
    }

    /// Returns a port to the pool.
    pub fn release(&mut self, port: u16) {
        self.used.remove(&port);
    }

    /// Ports in use.
    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_range() {
        let mut a = PortAllocator::new(50000..=50009, 0, 2, 1);
        let mut b = PortAllocator::new(50000..=50009, 1, 2, 2);
        let mut seen = HashSet::new();
        while let Some(p) = a.pick(false) {
            assert!(seen.insert(p));
        }
        while let Some(p) = b.pick(false) {
            assert!(seen.insert(p));
        }
        assert_eq!(seen.len(), 10);
        assert!(seen.iter().all(|p| (50000..=50009).contains(p)));
        a.release(50002);
        assert_eq!(a.pick(false), Some(50002));
    }

    #[test]
    fn even_ports_and_exhaustion() {
        let mut a = PortAllocator::new(50001..=50004, 0, 1, 7);
        let mut evens = vec![a.pick(true).unwrap(), a.pick(true).unwrap()];
        evens.sort();
        assert_eq!(evens, vec![50002, 50004]);
        assert_eq!(a.pick(true), None);
        assert!(a.pick(false).is_some());
        assert!(a.pick(false).is_some());
        assert_eq!(a.pick(false), None);
    }
}
