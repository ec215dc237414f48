//! Round trips the relays measured from a client's network ([`geoturn_shared::latency`]), read
//! from the registry for the ranking: the client's own prefix first, then its wider network,
//! per region.
//!
//! A network measured neither itself nor through its wider network borrows its GeoIP city's
//! knowledge ([`crate::city_rtts`]), learned from the other networks of that city whose
//! measurements this cache has read.
//!
//! The API answers from memory, so the registry is asked once per network per
//! [`FRESH_FOR`] (answers, empty ones too, are kept that long, for at most [`MAX_CACHED`]
//! networks), within [`LOOKUP_TIMEOUT`], and not at all while the registry is unreachable: a
//! measurement improves an answer, its absence never delays one by more than that timeout.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use geoturn_geo::{MeasuredRegion, MeasuredRtts};

use crate::city_rtts::{CityKey, CityRtts};
use geoturn_shared::latency::{MeasuredRtt, client_network, client_prefix};
use geoturn_shared::registry::{CLIENT_RTT_TTL, Registry};
use ipnet::IpNet;

/// How long a network's measurements are reused before the registry is asked again.
pub const FRESH_FOR: Duration = Duration::from_secs(2);
/// Networks whose measurements are kept in memory.
pub const MAX_CACHED: usize = 100_000;
/// Longest wait for the registry on a request's path.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_millis(100);

type Measurements = Arc<Vec<(String, MeasuredRtt)>>;

/// Measurements per network, as last read, and per city, as learned from them.
#[derive(Debug, Default)]
pub struct MeasuredCache {
    entries: Mutex<HashMap<IpNet, (Instant, Measurements)>>,
    cities: Mutex<CityRtts>,
}

impl MeasuredCache {
    /// What was measured from `ip`'s networks, read through the cache, then what its GeoIP
    /// `city` knows for the regions still missing. `registry_up` false (the snapshot is stale)
    /// uses what is cached and asks nothing.
    pub async fn lookup(
        &self,
        registry: &Registry,
        ip: IpAddr,
        city: Option<CityKey>,
        registry_up: bool,
        now_ms: u64,
    ) -> MeasuredRtts {
        let nets = [client_prefix(ip), client_network(ip)];
        let now = Instant::now();
        let mut found: [Option<Measurements>; 2] = [None, None];
        let mut missing = Vec::new();
        {
            let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            for (i, net) in nets.iter().enumerate() {
                match entries.get(net) {
                    Some((at, m)) if now.duration_since(*at) < FRESH_FOR || !registry_up => {
                        found[i] = Some(m.clone());
                    }
                    _ if registry_up => missing.push(i),
                    _ => {}
                }
            }
        }
        if !missing.is_empty() {
            let ask: Vec<IpNet> = missing
                .iter()
                .filter_map(|&i| nets.get(i).copied())
                .collect();
            let answer = tokio::time::timeout(LOOKUP_TIMEOUT, registry.client_rtts(&ask)).await;
            // A failure is remembered as "nothing measured" for FRESH_FOR too: a registry that
            // times out is not asked again by every request.
            let lists = match answer {
                Ok(Ok(lists)) => lists,
                _ => vec![Vec::new(); ask.len()],
            };
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            if entries.len() + ask.len() > MAX_CACHED {
                entries.retain(|_, (at, _)| now.duration_since(*at) < FRESH_FOR);
            }
            let mut cities = self.cities.lock().unwrap_or_else(PoisonError::into_inner);
            for (&i, list) in missing.iter().zip(lists) {
                // The prefix's own measurements teach its city; a wider network spans many.
                if i == 0
                    && let Some(city) = city
                    && let Some(prefix) = nets.first()
                {
                    cities.learn(city, *prefix, &list, now_ms);
                }
                let list = Arc::new(list);
                if let Some(net) = nets.get(i)
                    && entries.len() < MAX_CACHED
                {
                    entries.insert(*net, (now, list.clone()));
                }
                if let Some(slot) = found.get_mut(i) {
                    *slot = Some(list);
                }
            }
        }
        let [prefix, network] = found;
        let mut measured = merge(
            (
                &nets[0],
                prefix.as_deref().map(Vec::as_slice).unwrap_or_default(),
            ),
            (
                &nets[1],
                network.as_deref().map(Vec::as_slice).unwrap_or_default(),
            ),
            now_ms,
        );
        if let Some(city) = city {
            let cities = self.cities.lock().unwrap_or_else(PoisonError::into_inner);
            for estimate in cities.estimate(city, now_ms) {
                if !measured.regions.iter().any(|r| r.region == estimate.region) {
                    measured.regions.push(estimate);
                }
            }
        }
        measured
    }

    /// Cities whose networks' measurements are held.
    pub fn cities(&self) -> usize {
        self.cities
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// What was measured from `ip`'s networks, read from the registry now, without the cache
/// (`geoturn route`).
pub async fn read(
    registry: &Registry,
    ip: IpAddr,
    now_ms: u64,
) -> Result<MeasuredRtts, geoturn_shared::registry::RegistryError> {
    let nets = [client_prefix(ip), client_network(ip)];
    let lists = registry.client_rtts(&nets).await?;
    let list = |i: usize| lists.get(i).map(Vec::as_slice).unwrap_or_default();
    Ok(merge((&nets[0], list(0)), (&nets[1], list(1)), now_ms))
}

/// One entry per region: the prefix's own measurement, else the wider network's; measurements
/// older than the registry keeps them are left out.
pub fn merge(
    prefix: (&IpNet, &[(String, MeasuredRtt)]),
    network: (&IpNet, &[(String, MeasuredRtt)]),
    now_ms: u64,
) -> MeasuredRtts {
    let oldest = now_ms.saturating_sub(CLIENT_RTT_TTL.as_millis() as u64);
    let mut regions: Vec<MeasuredRegion> = Vec::new();
    for (net, list) in [prefix, network] {
        for (region, m) in list {
            if m.updated_ms < oldest
                || m.samples == 0
                || regions.iter().any(|r| &r.region == region)
            {
                continue;
            }
            regions.push(MeasuredRegion {
                region: region.clone(),
                rtt_ms: f64::from(m.rtt_ms),
                samples: m.samples,
                network: net.to_string(),
                age_secs: now_ms.saturating_sub(m.updated_ms) / 1000,
            });
        }
    }
    MeasuredRtts {
        regions,
        explore: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rtt_ms: u32, samples: u32, updated_ms: u64) -> MeasuredRtt {
        MeasuredRtt {
            rtt_ms,
            samples,
            updated_ms,
        }
    }

    #[test]
    fn the_prefix_wins_over_its_network_and_old_ones_are_dropped() {
        let prefix: IpNet = "203.0.113.0/24".parse().unwrap();
        let network: IpNet = "203.0.0.0/16".parse().unwrap();
        let now = 10_000_000;
        let merged = merge(
            (&prefix, &[("eu".into(), m(120, 3, now - 4_000))]),
            (
                &network,
                &[
                    ("eu".into(), m(80, 9, now)),
                    ("us".into(), m(25, 2, now)),
                    ("ap".into(), m(300, 1, 1)),
                    ("sa".into(), m(90, 0, now)),
                ],
            ),
            now,
        );
        let view: Vec<_> = merged
            .regions
            .iter()
            .map(|r| (r.region.as_str(), r.rtt_ms, r.network.as_str(), r.age_secs))
            .collect();
        assert_eq!(
            view,
            [
                ("eu", 120.0, "203.0.113.0/24", 4),
                ("us", 25.0, "203.0.0.0/16", 0)
            ]
        );
    }

    #[tokio::test]
    async fn lookups_are_cached_and_skip_an_unreachable_registry() {
        let registry = Registry::Memory(Default::default());
        let cache = MeasuredCache::default();
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let now = geoturn_shared::clock::unix_ms();
        assert!(
            cache
                .lookup(&registry, ip, None, true, now)
                .await
                .is_empty()
        );
        registry
            .store_client_rtts("us-east", &[(client_prefix(ip), m(20, 2, now))])
            .await
            .unwrap();
        // Cached as empty for FRESH_FOR; with the registry down the cache is all there is.
        assert!(
            cache
                .lookup(&registry, ip, None, false, now)
                .await
                .is_empty()
        );
        cache.entries.lock().unwrap().clear();
        let found = cache.lookup(&registry, ip, None, true, now).await;
        assert_eq!(found.regions.len(), 1);
        assert_eq!(found.regions[0].rtt_ms, 20.0);
    }

    #[tokio::test]
    async fn a_network_never_measured_borrows_its_citys_knowledge() {
        let registry = Registry::Memory(Default::default());
        let cache = MeasuredCache::default();
        let now = geoturn_shared::clock::unix_ms();
        let berlin = CityKey::of(&geoturn_geo::Location {
            lat: 52.52,
            lon: 13.40,
            country: Some("DE".into()),
        });
        let measured: [(&str, u32); 2] = [("192.0.2.7", 20), ("198.51.100.7", 30)];
        for (ip, rtt) in measured {
            let ip: IpAddr = ip.parse().unwrap();
            registry
                .store_client_rtts("us-east", &[(client_prefix(ip), m(rtt, 3, now))])
                .await
                .unwrap();
            registry
                .store_client_rtts("eu-central", &[(client_prefix(ip), m(90, 3, now))])
                .await
                .unwrap();
            // Reading a network's measurements (as its clients' requests do) teaches its city.
            let own = cache.lookup(&registry, ip, Some(berlin), true, now).await;
            assert_eq!(own.regions.len(), 2);
            assert!(own.regions.iter().all(|r| r.network.ends_with("/24")));
        }
        // A third Berlin network, never measured, nor its /16: the city's median.
        let newcomer: IpAddr = "203.0.113.9".parse().unwrap();
        let borrowed = cache
            .lookup(&registry, newcomer, Some(berlin), true, now)
            .await;
        let mut view: Vec<_> = borrowed
            .regions
            .iter()
            .map(|r| (r.region.as_str(), r.rtt_ms, r.network.as_str()))
            .collect();
        view.sort_by(|a, b| a.0.cmp(b.0));
        assert_eq!(
            view,
            [
                ("eu-central", 90.0, "GeoIP city at 52.52,13.40 (2 networks)"),
                ("us-east", 25.0, "GeoIP city at 52.52,13.40 (2 networks)"),
            ],
            "{borrowed:?}"
        );
        // Elsewhere, or with no city, nothing.
        assert!(
            cache
                .lookup(&registry, newcomer, None, true, now)
                .await
                .is_empty()
        );
        // Its own measurement, once there, wins for its region.
        registry
            .store_client_rtts("us-east", &[(client_prefix(newcomer), m(200, 3, now))])
            .await
            .unwrap();
        cache.entries.lock().unwrap().clear();
        let own = cache
            .lookup(&registry, newcomer, Some(berlin), true, now)
            .await;
        let us = own.regions.iter().find(|r| r.region == "us-east").unwrap();
        assert_eq!((us.rtt_ms, us.network.as_str()), (200.0, "203.0.113.0/24"));
        assert_eq!(cache.cities(), 1);
    }
}
