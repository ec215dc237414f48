//! Remembers responses to authenticated requests so a retransmitted request gets the identical
//! response instead of being executed twice (RFC 8489 §6.3.1; an Allocate retransmit would
//! otherwise earn 437). Bounded in entries and in time.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::stun::TransactionId;
use crate::types::FiveTuple;

/// How long a response is kept: RFC 8489's 39.5 s of UDP retransmissions, rounded up.
pub const RESPONSE_TTL: Duration = Duration::from_secs(40);

type Key = (FiveTuple, TransactionId);

/// A bounded FIFO cache of responses.
#[derive(Debug)]
pub struct TransactionCache {
    entries: HashMap<Key, (Vec<u8>, Instant)>,
    order: VecDeque<(Key, Instant)>,
    capacity: usize,
}

impl TransactionCache {
    /// A cache holding at most `capacity` responses.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    fn evict(&mut self, now: Instant) {
        while let Some(&(key, expires)) = self.order.front() {
            if expires > now && self.order.len() < self.capacity {
                break;
            }
            self.order.pop_front();
            // Only remove the entry if it is the one this queue slot stood for.
            if self.entries.get(&key).is_some_and(|(_, e)| *e == expires) {
                self.entries.remove(&key);
            }
        }
    }

    /// The cached response to this transaction, if any.
    pub fn get(&self, tuple: &FiveTuple, tid: &TransactionId, now: Instant) -> Option<&[u8]> {
        self.entries
            .get(&(*tuple, *tid))
            .filter(|(_, expires)| now < *expires)
            .map(|(r, _)| r.as_slice())
    }

    /// Remembers a response.
    pub fn insert(
        &mut self,
        tuple: FiveTuple,
        tid: TransactionId,
        response: Vec<u8>,
        now: Instant,
    ) {
        self.evict(now);
        let expires = now + RESPONSE_TTL;
        self.entries.insert((tuple, tid), (response, expires));
        self.order.push_back(((tuple, tid), expires));
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ClientSocket, Transport};

    fn tuple(port: u16) -> FiveTuple {
        FiveTuple {
            client: ClientSocket::new(([203, 0, 113, 1], port).into()),
            server: ([203, 0, 113, 9], 3478).into(),
            transport: Transport::Udp,
        }
    }

    #[test]
    fn bounded_and_expiring() {
        let t0 = crate::test_epoch();
        let mut c = TransactionCache::new(2);
        c.insert(tuple(1), TransactionId([1; 12]), vec![1], t0);
        c.insert(tuple(2), TransactionId([2; 12]), vec![2], t0);
        c.insert(tuple(3), TransactionId([3; 12]), vec![3], t0);
        assert!(c.len() <= 2);
        assert_eq!(
            c.get(&tuple(3), &TransactionId([3; 12]), t0),
            Some(&[3u8][..])
        );
        assert_eq!(c.get(&tuple(1), &TransactionId([1; 12]), t0), None);
        assert_eq!(
            c.get(&tuple(3), &TransactionId([3; 12]), t0 + RESPONSE_TTL),
            None
        );
    }
}
