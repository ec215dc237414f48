//! Client round-trip samples, for free: the time from the 401 a client got to the
//! authenticated Allocate that answers it (the nonce carries its issue time; see
//! [`crate::auth::nonce`]). DESIGN.md, "Latency and the relay mesh": the ranking prefers what
//! the relays measured over what GeoIP guesses.
//!
//! A sample is taken only when the nonce is this process's (no second clock in it), the answer
//! came within [`SAMPLE_WINDOW_MS`] (a client that waited, or retransmitted after a loss, says
//! nothing about the path), and it is the first Allocate seen with that nonce (a client that
//! retries with the same nonce after an error would count twice). What the driver has not yet
//! taken is bounded; so is the memory of nonces already used.

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;

use crate::auth::NonceIssue;

/// Longest 401 → Allocate gap taken as a round trip: long enough for a satellite path
/// (600 ms) with room, short enough that a retransmission timeout (500 ms and up) plus a
/// normal path mostly falls outside it.
pub const SAMPLE_WINDOW_MS: u64 = 2_000;

/// Samples kept until the driver takes them; more are dropped (counted).
pub const MAX_PENDING: usize = 1_024;

/// Nonces remembered as used. A nonce only samples within [`SAMPLE_WINDOW_MS`] of its issue,
/// so this covers 2 000 Allocates a second; past that a reused nonce could sample twice, which
/// the per-prefix median absorbs.
const RECENT_NONCES: usize = 4_096;

/// One round-trip sample from a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RttSample {
    /// The client's address (the driver keeps only its prefix).
    pub client: IpAddr,
    /// The round trip, milliseconds (the nonce's resolution).
    pub rtt_ms: u32,
}

/// Samples waiting for the driver, and the nonces already used.
#[derive(Debug, Default)]
pub(super) struct RttSampler {
    pending: Vec<RttSample>,
    used: HashSet<[u8; 12]>,
    used_order: VecDeque<[u8; 12]>,
    /// Samples dropped because the driver had not taken the pending ones.
    pub(super) dropped: u64,
}

impl RttSampler {
    /// An authenticated Allocate from `client` with `nonce` at `now_ms`: a sample when it
    /// qualifies (see the module doc). True when one was taken.
    pub(super) fn observe(&mut self, client: IpAddr, nonce: &NonceIssue, now_ms: u64) -> bool {
        if !nonce.ours {
            return false;
        }
        let Some(rtt) = now_ms.checked_sub(nonce.at_ms) else {
            return false;
        };
        if rtt > SAMPLE_WINDOW_MS || !self.used.insert(nonce.mac) {
            return false;
        }
        self.used_order.push_back(nonce.mac);
        if self.used_order.len() > RECENT_NONCES
            && let Some(old) = self.used_order.pop_front()
        {
            self.used.remove(&old);
        }
        if self.pending.len() >= MAX_PENDING {
            self.dropped += 1;
            return false;
        }
        self.pending.push(RttSample {
            client: client.to_canonical(),
            // At most SAMPLE_WINDOW_MS: always fits.
            rtt_ms: u32::try_from(rtt).unwrap_or(u32::MAX),
        });
        true
    }

    /// The samples taken since the last call.
    pub(super) fn take(&mut self) -> Vec<RttSample> {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonce(at_ms: u64, ours: bool, id: u8) -> NonceIssue {
        NonceIssue {
            at_ms,
            ours,
            mac: [id; 12],
        }
    }

    #[test]
    fn one_sample_per_own_nonce_within_the_window() {
        let mut s = RttSampler::default();
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        assert!(s.observe(ip, &nonce(10_000, true, 1), 10_042));
        // The same nonce again (a retry after an error): no second sample.
        assert!(!s.observe(ip, &nonce(10_000, true, 1), 10_080));
        // A sibling's nonce, one answered too late, one from the future: none.
        assert!(!s.observe(ip, &nonce(10_000, false, 2), 10_030));
        assert!(!s.observe(ip, &nonce(10_000, true, 3), 12_001));
        assert!(!s.observe(ip, &nonce(10_100, true, 4), 10_000));
        assert!(s.observe(ip, &nonce(10_000, true, 5), 12_000));
        let taken = s.take();
        assert_eq!(
            taken,
            vec![
                RttSample {
                    client: ip,
                    rtt_ms: 42
                },
                RttSample {
                    client: ip,
                    rtt_ms: 2_000
                }
            ]
        );
        assert!(s.take().is_empty());
    }

    #[test]
    fn pending_and_remembered_nonces_are_bounded() {
        let mut s = RttSampler::default();
        let ip: IpAddr = "::ffff:198.51.100.1".parse().unwrap();
        for i in 0..(MAX_PENDING as u64 + 10) {
            let mut mac = [0u8; 12];
            mac[..8].copy_from_slice(&i.to_be_bytes());
            s.observe(
                ip,
                &NonceIssue {
                    at_ms: 0,
                    ours: true,
                    mac,
                },
                5,
            );
        }
        assert_eq!(s.dropped, 10);
        let taken = s.take();
        assert_eq!(taken.len(), MAX_PENDING);
        // IPv4-mapped addresses are reported as IPv4.
        assert_eq!(taken[0].client, "198.51.100.1".parse::<IpAddr>().unwrap());
        for i in 0..(RECENT_NONCES as u64 * 2) {
            let mut mac = [1u8; 12];
            mac[..8].copy_from_slice(&i.to_be_bytes());
            s.observe(
                ip,
                &NonceIssue {
                    at_ms: 0,
                    ours: true,
                    mac,
                },
                5,
            );
            s.take();
        }
        assert!(s.used.len() <= RECENT_NONCES && s.used_order.len() <= RECENT_NONCES);
    }
}
