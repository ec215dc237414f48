//! The region-to-region RTT matrix from the relays' QUIC mesh (issue 17), pure: relay records
//! (id → region) and the mesh rows read from the registry in, the matrix the ranking uses
//! ([`geoturn_geo::RankConfig::rtt_matrix`]) and what `GET /v1/mesh` shows out.
//!
//! - Every fresh sample (the peer answered within `MESH_FRESH`) of a relay pair counts once
//!   per direction measured; a region pair's RTT is the median of its samples (robust to one
//!   odd relay). Stale samples never enter the median: a pair with only stale samples is shown
//!   stale with its last value and age, and the ranking does not use it.
//! - The operator's `[[rtt]]` entries override measured pairs, in both directions unless the
//!   reverse is given too.
//! - Pairs within one region are shown but not given to the ranking: relays of one region
//!   measure each other across a data centre, which says nothing about a client there (the
//!   distance estimate does better).

use std::collections::{BTreeMap, HashMap};

use geoturn_shared::registry::{MeshRow, RelayRecord};

/// The operator's `[[rtt]]` table, keyed `(from, to)`, ms.
pub type Overrides = HashMap<(String, String), f64>;

/// One region pair, unordered (`from` ≤ `to`).
#[derive(Debug, Clone, PartialEq)]
pub struct PairRtt {
    /// First region.
    pub from: String,
    /// Second region.
    pub to: String,
    /// Median of the fresh samples, ms; `None` when none is fresh.
    pub measured_ms: Option<f64>,
    /// Fresh samples behind the median.
    pub samples: usize,
    /// The newest sample's value (ms, fresh or not: what a stale pair last showed) and its
    /// age (ms); `None` for a pair only overridden.
    pub last: Option<(f64, u64)>,
    /// The operator's value, when `[[rtt]]` has one (either direction).
    pub override_ms: Option<f64>,
    /// What the ranking uses: the override, else the measurement (never within one region).
    pub effective_ms: Option<f64>,
}

/// One relay-to-relay measurement (also as `GET /v1/mesh` shows it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = MeshLink)]
pub struct LinkRtt {
    /// Measuring relay.
    pub from: String,
    /// Measured relay.
    pub to: String,
    /// QUIC's smoothed RTT, ms.
    pub rtt_ms: f64,
    /// Share of packets lost recently.
    pub loss: f32,
    /// Ms since the peer last answered.
    pub age_ms: u64,
    /// Within the freshness window.
    pub fresh: bool,
}

/// The matrix as of one registry read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeshMatrix {
    /// Region pairs, measured or overridden, sorted.
    pub pairs: Vec<PairRtt>,
    /// Relay links, sorted.
    pub links: Vec<LinkRtt>,
    /// The ranking's matrix (both directions), `None` when empty; shared with every request's
    /// ranking configuration.
    pub effective: Option<std::sync::Arc<HashMap<(String, String), f64>>>,
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

fn ordered(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

#[derive(Default)]
struct Acc {
    fresh: Vec<f64>,
    newest: Option<(u64, f64)>,
}

/// Builds the matrix at `now_ms`. Samples naming a relay the registry does not list (gone, or
/// not yet heartbeating) are left out: their region is unknown.
pub fn build(
    relays: &[RelayRecord],
    rows: &[MeshRow],
    overrides: &Overrides,
    now_ms: u64,
) -> MeshMatrix {
    let region: HashMap<&str, &str> = relays
        .iter()
        .map(|r| (r.id.as_str(), r.region.as_str()))
        .collect();
    let mut acc: BTreeMap<(String, String), Acc> = BTreeMap::new();
    let mut links = Vec::new();
    for row in rows {
        let Some(from_region) = region.get(row.from.as_str()) else {
            continue;
        };
        for s in &row.samples {
            let Some(to_region) = region.get(s.peer.as_str()) else {
                continue;
            };
            let rtt_ms = s.rtt_us as f64 / 1000.0;
            let fresh = s.is_fresh(now_ms);
            let age_ms = now_ms.saturating_sub(s.updated_ms);
            links.push(LinkRtt {
                from: row.from.clone(),
                to: s.peer.clone(),
                rtt_ms,
                loss: s.loss,
                age_ms,
                fresh,
            });
            let a = acc.entry(ordered(from_region, to_region)).or_default();
            if fresh {
                a.fresh.push(rtt_ms);
            }
            if a.newest.is_none_or(|(t, _)| s.updated_ms > t) {
                a.newest = Some((s.updated_ms, rtt_ms));
            }
        }
    }
    let override_of = |a: &str, b: &str| {
        overrides
            .get(&(a.to_owned(), b.to_owned()))
            .or_else(|| overrides.get(&(b.to_owned(), a.to_owned())))
            .copied()
    };
    let mut pairs: Vec<PairRtt> = acc
        .into_iter()
        .map(|((from, to), mut a)| {
            let last = a.newest.map(|(t, ms)| (ms, now_ms.saturating_sub(t)));
            let measured_ms = median(&mut a.fresh);
            let override_ms = override_of(&from, &to);
            let effective_ms = override_ms.or(if from == to { None } else { measured_ms });
            PairRtt {
                samples: a.fresh.len(),
                measured_ms,
                last,
                override_ms,
                effective_ms,
                from,
                to,
            }
        })
        .collect();
    // Overridden pairs nobody measured are shown too (what the ranking uses).
    for (from, to) in overrides.keys() {
        let (a, b) = ordered(from, to);
        if !pairs.iter().any(|p| p.from == a && p.to == b) {
            let o = override_of(&a, &b);
            pairs.push(PairRtt {
                from: a,
                to: b,
                measured_ms: None,
                samples: 0,
                last: None,
                override_ms: o,
                effective_ms: o,
            });
        }
    }
    pairs.sort_by(|x, y| (&x.from, &x.to).cmp(&(&y.from, &y.to)));
    links.sort_by(|x, y| (&x.from, &x.to).cmp(&(&y.from, &y.to)));
    // The ranking's map: measured pairs both ways, then every override as given (a one-way
    // override also covers the reverse unless the reverse has its own).
    let mut effective: HashMap<(String, String), f64> = HashMap::new();
    for p in &pairs {
        if let (Some(ms), None, false) = (p.measured_ms, p.override_ms, p.from == p.to) {
            effective.insert((p.from.clone(), p.to.clone()), ms);
            effective.insert((p.to.clone(), p.from.clone()), ms);
        }
    }
    for ((from, to), ms) in overrides {
        effective.insert((from.clone(), to.clone()), *ms);
        if !overrides.contains_key(&(to.clone(), from.clone())) {
            effective.insert((to.clone(), from.clone()), *ms);
        }
    }
    MeshMatrix {
        pairs,
        links,
        effective: (!effective.is_empty()).then(|| std::sync::Arc::new(effective)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use geoturn_shared::registry::{MeshSample, RelayAddrs, RelayState};

    fn relay(id: &str, region: &str) -> RelayRecord {
        RelayRecord {
            id: id.into(),
            region: region.into(),
            lat: 0.0,
            lon: 0.0,
            addresses: RelayAddrs {
                udp: vec!["192.0.2.1:3478".parse().unwrap()],
                ..Default::default()
            },
            capacity_allocations: 1,
            capacity_mbps: 1,
            allocations: 0,
            bps_in: 0,
            bps_out: 0,
            pps_in: 0,
            pps_out: 0,
            cpu: 0.0,
            state: RelayState::Active,
            version: "0".into(),
            started_at_ms: 0,
            updated_at_ms: 0,
            drain_deadline_ms: None,
        }
    }

    fn row(from: &str, samples: &[(&str, f64, u64)]) -> MeshRow {
        MeshRow {
            from: from.into(),
            samples: samples
                .iter()
                .map(|(peer, ms, updated)| MeshSample {
                    peer: (*peer).into(),
                    rtt_us: (*ms * 1000.0) as u64,
                    loss: 0.0,
                    updated_ms: *updated,
                })
                .collect(),
        }
    }

    const NOW: u64 = 100_000;

    #[test]
    fn median_per_region_pair_both_directions() {
        let relays = [
            relay("eu-1", "eu"),
            relay("eu-2", "eu"),
            relay("us-1", "us"),
            relay("ap-1", "ap"),
        ];
        let rows = [
            row(
                "eu-1",
                &[
                    ("us-1", 80.0, NOW),
                    ("eu-2", 1.0, NOW),
                    ("ap-1", 200.0, NOW),
                ],
            ),
            row("eu-2", &[("us-1", 90.0, NOW - 1000)]),
            // A wild value from one relay does not move the median of three.
            row("us-1", &[("eu-1", 82.0, NOW), ("eu-2", 500.0, NOW)]),
        ];
        let m = build(&relays, &rows, &Overrides::new(), NOW);
        let eu_us = m
            .pairs
            .iter()
            .find(|p| p.from == "eu" && p.to == "us")
            .unwrap();
        assert_eq!(eu_us.samples, 4);
        assert_eq!(eu_us.measured_ms, Some(86.0)); // median of 80, 82, 90, 500
        let eff = m.effective.as_ref().unwrap();
        assert_eq!(eff[&("eu".into(), "us".into())], 86.0);
        assert_eq!(eff[&("us".into(), "eu".into())], 86.0);
        assert_eq!(eff[&("ap".into(), "eu".into())], 200.0);
        // Within one region: shown, not ranked on.
        let eu_eu = m
            .pairs
            .iter()
            .find(|p| p.from == "eu" && p.to == "eu")
            .unwrap();
        assert_eq!((eu_eu.measured_ms, eu_eu.effective_ms), (Some(1.0), None));
        assert!(!eff.contains_key(&("eu".into(), "eu".into())));
        assert_eq!(m.links.len(), 6);
    }

    #[test]
    fn stale_samples_are_shown_stale_never_ranked() {
        let relays = [relay("a-1", "a"), relay("b-1", "b"), relay("c-1", "c")];
        let old = NOW - 10_000;
        let rows = [
            row("a-1", &[("b-1", 40.0, NOW), ("c-1", 80.0, old)]),
            row("c-1", &[("a-1", 81.0, old - 500)]),
            // A sample about a relay the registry does not list is left out.
            row("b-1", &[("gone", 5.0, NOW)]),
            row("gone", &[("a-1", 5.0, NOW)]),
        ];
        let m = build(&relays, &rows, &Overrides::new(), NOW);
        let ac = m.pairs.iter().find(|p| p.to == "c").unwrap();
        assert_eq!(ac.measured_ms, None);
        assert_eq!(ac.effective_ms, None);
        assert_eq!(ac.last, Some((80.0, 10_000)));
        let eff = m.effective.unwrap();
        assert_eq!(eff.len(), 2, "{eff:?}");
        assert!(m.links.iter().filter(|l| !l.fresh).count() == 2);
        assert_eq!(m.links.len(), 3);
    }

    #[test]
    fn overrides_win_in_both_directions_unless_the_reverse_is_given() {
        let relays = [relay("a-1", "a"), relay("b-1", "b")];
        let rows = [row("a-1", &[("b-1", 40.0, NOW)])];
        let overrides: Overrides = [
            (("b".into(), "a".into()), 55.0),
            (("x".into(), "y".into()), 10.0),
            (("y".into(), "x".into()), 12.0),
        ]
        .into();
        let m = build(&relays, &rows, &overrides, NOW);
        let ab = m
            .pairs
            .iter()
            .find(|p| p.from == "a" && p.to == "b")
            .unwrap();
        assert_eq!(
            (ab.measured_ms, ab.override_ms, ab.effective_ms),
            (Some(40.0), Some(55.0), Some(55.0))
        );
        let eff = m.effective.unwrap();
        assert_eq!(eff[&("a".into(), "b".into())], 55.0);
        assert_eq!(eff[&("b".into(), "a".into())], 55.0);
        assert_eq!(eff[&("x".into(), "y".into())], 10.0);
        assert_eq!(eff[&("y".into(), "x".into())], 12.0);
        assert!(
            m.pairs
                .iter()
                .any(|p| p.from == "x" && p.effective_ms.is_some())
        );
    }

    #[test]
    fn nothing_measured_nothing_overridden_is_no_matrix() {
        let m = build(&[relay("a-1", "a")], &[], &Overrides::new(), NOW);
        assert_eq!(m, MeshMatrix::default());
    }
}
