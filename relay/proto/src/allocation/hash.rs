//! The hasher of the maps every relayed packet looks into (allocations by 5-tuple and by
//! relayed address, permissions, channels).
//!
//! std's SipHash-1-3 cost about 60 % of the core's instructions per relayed packet (callgrind,
//! `benches/forward.rs`): a 5-tuple is a dozen small `write`s, each a SipHash round. This one
//! folds each write into the state with one 64×64→128-bit multiply (the construction of
//! foldhash and wyhash). It is keyed per map from std's `RandomState` (no system call: std
//! seeds once per thread and varies the keys per map), so crafting collisions needs the key.
//! Entries are only ever inserted for authenticated clients (allocations, their permissions and
//! channels, all capped), which bounds what a collision attack could build anyway.

use std::hash::{BuildHasher, Hasher};

/// Odd 64-bit constants (from the fractional digits of pi) that spread the seed.
const K0: u64 = 0x243f_6a88_85a3_08d3;
const K1: u64 = 0x1319_8a2e_0370_7344;

fn fold(a: u64, b: u64) -> u64 {
    let full = u128::from(a).wrapping_mul(u128::from(b));
    (full as u64) ^ ((full >> 64) as u64)
}

/// Builds [`FoldHasher`]s with a random key per map.
#[derive(Debug, Clone, Copy)]
pub struct RandomFold {
    key: u64,
}

impl Default for RandomFold {
    fn default() -> Self {
        Self {
            key: std::collections::hash_map::RandomState::new().hash_one(K0),
        }
    }
}

impl BuildHasher for RandomFold {
    type Hasher = FoldHasher;

    fn build_hasher(&self) -> FoldHasher {
        FoldHasher {
            acc: self.key,
            key: self.key | 1,
        }
    }
}

/// A keyed multiply-fold hasher for small keys.
#[derive(Debug, Clone, Copy)]
pub struct FoldHasher {
    acc: u64,
    key: u64,
}

impl FoldHasher {
    fn mix(&mut self, v: u64) {
        self.acc = fold(self.acc ^ v, self.key ^ K1);
    }
}

impl Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            if let Some(dst) = w.get_mut(..rest.len()) {
                dst.copy_from_slice(rest);
            }
            // The length goes in too, so "ab" and "ab\0" differ.
            self.mix(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    fn write_u16(&mut self, i: u16) {
        self.mix(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }

    fn finish(&self) -> u64 {
        fold(self.acc, self.key ^ K0)
    }
}

/// A `HashMap` with [`RandomFold`].
pub type FoldMap<K, V> = std::collections::HashMap<K, V, RandomFold>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::net::SocketAddr;

    #[test]
    fn nearby_addresses_spread_and_maps_work() {
        let b = RandomFold::default();
        let mut seen = HashSet::new();
        for port in 0..20_000u16 {
            let a = SocketAddr::from(([10, 0, 0, 1], port));
            // The low 16 bits pick hashbrown's bucket at this size: they must differ.
            seen.insert(b.hash_one(a) & 0xFFFF);
        }
        assert!(seen.len() > 14_000, "{} distinct low bits", seen.len());
        let mut m: FoldMap<SocketAddr, u16> = FoldMap::default();
        for port in 0..1000u16 {
            m.insert(SocketAddr::from(([192, 0, 2, 1], port)), port);
        }
        assert_eq!(m.get(&SocketAddr::from(([192, 0, 2, 1], 999))), Some(&999));
        assert_eq!(m.len(), 1000);
        // Two maps get two keys.
        assert_ne!(
            RandomFold::default().hash_one(1u64),
            RandomFold::default().hash_one(1u64)
        );
    }
}
