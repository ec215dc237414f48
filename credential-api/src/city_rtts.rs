//! Round trips measured from client networks, gathered per GeoIP city: the knowledge the
//! ranking falls back on for a network the relays have never measured from (nor its wider
//! network) when other networks of the same city have been.
//!
//! The relays do not know cities (they hold no GeoIP database), so each API instance learns
//! them from the prefix measurements it reads for its own clients ([`super::measured`]): a
//! prefix's per-region medians are kept under the city GeoIP put that client in. A city is
//! the position GeoIP gives (every address of a city record shares its coordinates), to
//! 0.01°. A city's estimate for a region is the median over its networks, and only once at
//! least [`MIN_NETWORKS`] networks agree to speak for it: one VPN exit must not reroute a
//! whole city. Kept in memory, bounded ([`MAX_CITIES`], [`MAX_REGIONS`], [`NETWORKS_KEPT`]),
//! forgotten after the registry's own lifetime for measurements.

use std::collections::HashMap;

use geoturn_geo::{Location, MeasuredRegion};
use geoturn_shared::latency::MeasuredRtt;
use geoturn_shared::registry::CLIENT_RTT_TTL;
use ipnet::IpNet;

/// Cities remembered; past this, cities with nothing fresh are dropped and new ones wait.
pub const MAX_CITIES: usize = 10_000;
/// Regions remembered per city.
pub const MAX_REGIONS: usize = 32;
/// Networks remembered per city and region, the most recently updated.
pub const NETWORKS_KEPT: usize = 8;
/// Networks of a city that must have measured a region before the city speaks for it.
pub const MIN_NETWORKS: usize = 2;

/// A city, as the position GeoIP gives its addresses, in hundredths of a degree (about 1 km).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CityKey {
    lat: i32,
    lon: i32,
}

impl CityKey {
    /// The city of a GeoIP answer.
    pub fn of(location: &Location) -> Self {
        // Positions are checked to be on the globe, so the products fit an i32.
        Self {
            lat: (location.lat * 100.0).round() as i32,
            lon: (location.lon * 100.0).round() as i32,
        }
    }
}

impl std::fmt::Display for CityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GeoIP city at {:.2},{:.2}",
            f64::from(self.lat) / 100.0,
            f64::from(self.lon) / 100.0
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct NetworkRtt {
    network: IpNet,
    rtt: MeasuredRtt,
}

/// Per city, per region, the latest measurement of each of its networks.
#[derive(Debug, Default)]
pub struct CityRtts {
    cities: HashMap<CityKey, Vec<(String, Vec<NetworkRtt>)>>,
}

impl CityRtts {
    /// Records what was measured from `network` (a client prefix GeoIP puts in `city`).
    pub fn learn(
        &mut self,
        city: CityKey,
        network: IpNet,
        measured: &[(String, MeasuredRtt)],
        now_ms: u64,
    ) {
        if measured.is_empty() {
            return;
        }
        if !self.cities.contains_key(&city) && self.cities.len() >= MAX_CITIES {
            let oldest = oldest_kept(now_ms);
            self.cities.retain(|_, regions| {
                regions
                    .iter()
                    .any(|(_, nets)| nets.iter().any(|n| n.rtt.updated_ms >= oldest))
            });
            if self.cities.len() >= MAX_CITIES {
                return;
            }
        }
        let regions = self.cities.entry(city).or_default();
        for (region, rtt) in measured {
            if rtt.samples == 0 {
                continue;
            }
            let nets = match regions.iter_mut().position(|(r, _)| r == region) {
                Some(i) => &mut regions[i].1,
                None if regions.len() < MAX_REGIONS => {
                    regions.push((region.clone(), Vec::new()));
                    match regions.last_mut() {
                        Some((_, nets)) => nets,
                        None => continue,
                    }
                }
                None => continue,
            };
            let entry = NetworkRtt { network, rtt: *rtt };
            if let Some(known) = nets.iter_mut().find(|n| n.network == network) {
                *known = entry;
                continue;
            }
            if nets.len() < NETWORKS_KEPT {
                nets.push(entry);
            } else if let Some(stalest) = nets.iter_mut().min_by_key(|n| n.rtt.updated_ms)
                && stalest.rtt.updated_ms <= rtt.updated_ms
            {
                // Full: the least recently updated network makes room.
                *stalest = entry;
            }
        }
    }

    /// The city's estimate per region, for regions at least [`MIN_NETWORKS`] of its networks
    /// measured within the registry's lifetime for measurements.
    pub fn estimate(&self, city: CityKey, now_ms: u64) -> Vec<MeasuredRegion> {
        let Some(regions) = self.cities.get(&city) else {
            return Vec::new();
        };
        let oldest = oldest_kept(now_ms);
        let mut out = Vec::new();
        for (region, nets) in regions {
            let mut fresh: Vec<&NetworkRtt> =
                nets.iter().filter(|n| n.rtt.updated_ms >= oldest).collect();
            if fresh.len() < MIN_NETWORKS {
                continue;
            }
            fresh.sort_unstable_by_key(|n| n.rtt.rtt_ms);
            let mid = fresh.len() / 2;
            let rtt_ms = match (fresh.get(mid), fresh.len() % 2) {
                (Some(m), 1) => f64::from(m.rtt.rtt_ms),
                (Some(hi), _) => {
                    let lo = fresh.get(mid - 1).map_or(hi.rtt.rtt_ms, |n| n.rtt.rtt_ms);
                    (f64::from(lo) + f64::from(hi.rtt.rtt_ms)) / 2.0
                }
                (None, _) => continue,
            };
            let newest = fresh.iter().map(|n| n.rtt.updated_ms).max().unwrap_or(0);
            out.push(MeasuredRegion {
                region: region.clone(),
                rtt_ms,
                samples: fresh.iter().map(|n| n.rtt.samples).sum(),
                network: format!("{city} ({} networks)", fresh.len()),
                age_secs: now_ms.saturating_sub(newest) / 1000,
            });
        }
        out
    }

    /// Cities held now.
    pub fn len(&self) -> usize {
        self.cities.len()
    }

    /// Whether no city is held.
    pub fn is_empty(&self) -> bool {
        self.cities.is_empty()
    }
}

fn oldest_kept(now_ms: u64) -> u64 {
    now_ms.saturating_sub(CLIENT_RTT_TTL.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 100_000_000;

    fn berlin() -> CityKey {
        CityKey::of(&Location {
            lat: 52.5200,
            lon: 13.4049,
            country: Some("DE".into()),
        })
    }

    fn m(rtt_ms: u32, updated_ms: u64) -> MeasuredRtt {
        MeasuredRtt {
            rtt_ms,
            samples: 4,
            updated_ms,
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn a_city_speaks_for_a_region_once_two_networks_measured_it() {
        let mut cities = CityRtts::default();
        let city = berlin();
        cities.learn(
            city,
            net("192.0.2.0/24"),
            &[("eu".into(), m(20, NOW)), ("us".into(), m(90, NOW))],
            NOW,
        );
        assert!(
            cities.estimate(city, NOW).is_empty(),
            "one network is not a city"
        );
        cities.learn(
            city,
            net("198.51.100.0/24"),
            &[("eu".into(), m(30, NOW - 5_000))],
            NOW,
        );
        let est = cities.estimate(city, NOW);
        assert_eq!(est.len(), 1, "{est:?}");
        assert_eq!(est[0].region, "eu");
        assert_eq!(est[0].rtt_ms, 25.0);
        assert_eq!(est[0].samples, 8);
        assert_eq!(est[0].age_secs, 0);
        assert_eq!(est[0].network, "GeoIP city at 52.52,13.40 (2 networks)");

        // A third network: the median, not the mean, so one odd network cannot drag it.
        cities.learn(
            city,
            net("203.0.113.0/24"),
            &[("eu".into(), m(900, NOW))],
            NOW,
        );
        assert_eq!(cities.estimate(city, NOW)[0].rtt_ms, 30.0);
        // The same network again replaces its own entry.
        cities.learn(
            city,
            net("203.0.113.0/24"),
            &[("eu".into(), m(10, NOW))],
            NOW,
        );
        assert_eq!(cities.estimate(city, NOW)[0].rtt_ms, 20.0);

        // Another city knows nothing of it.
        let paris = CityKey::of(&Location {
            lat: 48.8566,
            lon: 2.3522,
            country: None,
        });
        assert!(cities.estimate(paris, NOW).is_empty());
    }

    #[test]
    fn old_measurements_stop_counting() {
        let mut cities = CityRtts::default();
        let city = berlin();
        for (i, network) in ["192.0.2.0/24", "198.51.100.0/24"].into_iter().enumerate() {
            cities.learn(
                city,
                net(network),
                &[("eu".into(), m(20 + i as u32, NOW))],
                NOW,
            );
        }
        assert_eq!(cities.estimate(city, NOW).len(), 1);
        let later = NOW + CLIENT_RTT_TTL.as_millis() as u64 + 1;
        assert!(cities.estimate(city, later).is_empty());
    }

    #[test]
    fn everything_is_bounded() {
        let mut cities = CityRtts::default();
        let city = berlin();
        // More networks than kept: the newest stay.
        for i in 0..(NETWORKS_KEPT as u64 + 5) {
            let network = net(&format!("10.{i}.0.0/24"));
            cities.learn(
                city,
                network,
                &[("eu".into(), m(100 + i as u32, NOW + i))],
                NOW,
            );
        }
        let est = cities.estimate(city, NOW + 100);
        assert!(
            est[0]
                .network
                .ends_with(&format!("({NETWORKS_KEPT} networks)"))
        );
        // More regions than kept.
        let many: Vec<(String, MeasuredRtt)> = (0..MAX_REGIONS + 5)
            .map(|r| (format!("r{r}"), m(10, NOW)))
            .collect();
        cities.learn(city, net("192.0.2.0/24"), &many, NOW);
        assert_eq!(cities.cities[&city].len(), MAX_REGIONS);
        // More cities than kept, all fresh: the new ones wait; once old, they make room.
        let mut cities = CityRtts::default();
        let key = |i: usize| CityKey {
            lat: i as i32,
            lon: 0,
        };
        for i in 0..MAX_CITIES + 3 {
            cities.learn(
                key(i),
                net("192.0.2.0/24"),
                &[("eu".into(), m(10, NOW))],
                NOW,
            );
        }
        assert_eq!(cities.len(), MAX_CITIES);
        let later = NOW + CLIENT_RTT_TTL.as_millis() as u64 + 1;
        cities.learn(
            key(MAX_CITIES + 9),
            net("192.0.2.0/24"),
            &[("eu".into(), m(10, later))],
            later,
        );
        assert_eq!(cities.len(), 1);
    }
}
