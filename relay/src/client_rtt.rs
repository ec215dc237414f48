//! Round trips measured from clients ([`geoturn_relay_proto::server::RttSample`]), gathered by
//! client network until the registry heartbeat publishes them for the router (DESIGN.md,
//! "Latency and the relay mesh").
//!
//! Each network (the client's /24 or /48, and its /16 or /32) keeps the last [`WINDOW`]
//! samples and publishes their median, which one slow or lucky sample cannot move. One client
//! address holds at most [`MAX_PER_SOURCE`] of a window's places, so a client that delays its
//! answers on purpose cannot decide its neighbours' route alone. Everything is bounded: the
//! networks tracked ([`MAX_NETWORKS`]) and the writes per heartbeat ([`MAX_WRITES`]).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use geoturn_relay_proto::server::RttSample;
use geoturn_shared::latency::{MeasuredRtt, client_network, client_prefix};
use ipnet::IpNet;

/// Samples a network's median is taken over.
pub const WINDOW: usize = 16;
/// Places of a window one client address may hold.
pub const MAX_PER_SOURCE: usize = 4;
/// Networks tracked at once; past it, networks idle longest make room, or new ones wait.
pub const MAX_NETWORKS: usize = 50_000;
/// Networks published per heartbeat; the rest wait for the next.
pub const MAX_WRITES: usize = 2_000;

/// One network's recent samples.
#[derive(Debug, Clone, Default)]
struct Window {
    /// (round trip ms, source address hash), oldest first.
    samples: Vec<(u32, u64)>,
    /// When the last sample came, Unix ms.
    updated_ms: u64,
    dirty: bool,
}

impl Window {
    fn push(&mut self, rtt_ms: u32, source: u64, now_ms: u64) {
        let from_source = self.samples.iter().filter(|(_, s)| *s == source).count();
        let evict = if from_source >= MAX_PER_SOURCE {
            // This source's oldest place, not someone else's.
            self.samples.iter().position(|(_, s)| *s == source)
        } else if self.samples.len() >= WINDOW {
            Some(0)
        } else {
            None
        };
        if let Some(i) = evict {
            self.samples.remove(i);
        }
        self.samples.push((rtt_ms, source));
        self.updated_ms = now_ms;
        self.dirty = true;
    }

    fn median(&self) -> MeasuredRtt {
        let mut values: Vec<u32> = self.samples.iter().map(|(v, _)| *v).collect();
        values.sort_unstable();
        let n = values.len();
        // The lower median of an even count: a value that was measured.
        let rtt_ms = values.get(n.saturating_sub(1) / 2).copied().unwrap_or(0);
        MeasuredRtt {
            rtt_ms,
            samples: n as u32,
            updated_ms: self.updated_ms,
        }
    }
}

/// What the relay measured from client networks and has not published yet.
#[derive(Debug, Default)]
pub struct ClientRtts {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    networks: HashMap<IpNet, Window>,
    /// Samples not kept because the table was full.
    dropped: u64,
    /// Samples taken.
    taken: u64,
}

impl ClientRtts {
    /// Adds `samples`, taken at `now_ms`.
    pub fn record(&self, samples: &[RttSample], now_ms: u64) {
        if samples.is_empty() {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        for sample in samples {
            let source = source_hash(sample.client);
            for net in [client_prefix(sample.client), client_network(sample.client)] {
                if !inner.networks.contains_key(&net) && !make_room(&mut inner.networks, now_ms) {
                    inner.dropped += 1;
                    continue;
                }
                inner
                    .networks
                    .entry(net)
                    .or_default()
                    .push(sample.rtt_ms, source, now_ms);
            }
            inner.taken += 1;
        }
    }

    /// Up to `limit` networks measured since they were last published, with their medians.
    pub fn take_changed(&self, limit: usize) -> Vec<(IpNet, MeasuredRtt)> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .networks
            .iter_mut()
            .filter(|(_, w)| w.dirty)
            .take(limit)
            .map(|(net, w)| {
                w.dirty = false;
                (*net, w.median())
            })
            .collect()
    }

    /// Puts networks back as unpublished (the registry write failed).
    pub fn mark_changed(&self, networks: &[(IpNet, MeasuredRtt)]) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        for (net, _) in networks {
            if let Some(w) = inner.networks.get_mut(net) {
                w.dirty = true;
            }
        }
    }

    /// (samples taken, samples not kept for want of room, networks tracked).
    pub fn counts(&self) -> (u64, u64, usize) {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        (inner.taken, inner.dropped, inner.networks.len())
    }
}

/// Room for one more network: true when there is, after dropping networks not measured for
/// the registry's lifetime of a measurement (and already published).
fn make_room(networks: &mut HashMap<IpNet, Window>, now_ms: u64) -> bool {
    if networks.len() < MAX_NETWORKS {
        return true;
    }
    let ttl_ms = geoturn_shared::registry::CLIENT_RTT_TTL.as_millis() as u64;
    let oldest = now_ms.saturating_sub(ttl_ms);
    networks.retain(|_, w| w.dirty || w.updated_ms >= oldest);
    networks.len() < MAX_NETWORKS
}

fn source_hash(ip: IpAddr) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ip.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ip: &str, rtt_ms: u32) -> RttSample {
        RttSample {
            client: ip.parse().unwrap(),
            rtt_ms,
        }
    }

    #[test]
    fn medians_per_prefix_and_network_published_once() {
        let r = ClientRtts::default();
        r.record(
            &[
                sample("203.0.113.1", 20),
                sample("203.0.113.2", 22),
                sample("203.0.113.3", 900),
                sample("203.0.200.9", 60),
            ],
            1_000,
        );
        let mut changed = r.take_changed(10);
        changed.sort_by_key(|(n, _)| n.to_string());
        let view: Vec<_> = changed
            .iter()
            .map(|(n, m)| (n.to_string(), m.rtt_ms, m.samples))
            .collect();
        assert_eq!(
            view,
            [
                ("203.0.0.0/16".to_owned(), 22, 4),
                ("203.0.113.0/24".to_owned(), 22, 3),
                ("203.0.200.0/24".to_owned(), 60, 1),
            ]
        );
        assert!(r.take_changed(10).is_empty());
        r.mark_changed(&changed[..1]);
        assert_eq!(r.take_changed(10).len(), 1);
        assert_eq!(r.counts().0, 4);
    }

    #[test]
    fn one_source_cannot_own_a_window() {
        let r = ClientRtts::default();
        for i in 0..10 {
            r.record(&[sample(&format!("198.51.100.{}", 10 + i), 30)], 1);
        }
        // One address sends 50 slow answers: it keeps 4 places of 16, the median stays.
        for _ in 0..50 {
            r.record(&[sample("198.51.100.66", 1_900)], 2);
        }
        let net: IpNet = "198.51.100.0/24".parse().unwrap();
        let m = r
            .take_changed(10)
            .into_iter()
            .find(|(n, _)| *n == net)
            .unwrap()
            .1;
        assert_eq!((m.rtt_ms, m.samples), (30, 14));
    }

    #[test]
    fn networks_tracked_are_bounded() {
        let r = ClientRtts::default();
        let samples: Vec<_> = (0..(MAX_NETWORKS as u32))
            .map(|i| RttSample {
                // A /24 of its own each (plus their /16s): more networks than the cap.
                client: IpAddr::from([1 + (i >> 16) as u8, (i >> 8) as u8, i as u8, 1]),
                rtt_ms: 5,
            })
            .collect();
        r.record(&samples, 1);
        let (_, dropped, tracked) = r.counts();
        assert_eq!(tracked, MAX_NETWORKS);
        assert!(dropped > 0);
        assert!(r.take_changed(MAX_WRITES).len() == MAX_WRITES);
    }
}
