//! Ranking 1 000 relays in 20 regions for one client: the work the credential API does per
//! ICE-server request.
//!
//! Method: the fleet is generated deterministically (no RNG crate, a fixed LCG), so every run
//! ranks the same input: 20 regions spread round the globe, 50 relays each scattered within a
//! few degrees of the region centre, loads between 0 and ~110 % so some relays are over
//! capacity, and one in 25 draining or stale. Four clients: a known position (distance RTT),
//! a known position with a region matrix, a known position with round trips measured to five
//! regions, and an unknown location (default-region fallback).
//! Each iteration includes building the explanations of the chosen relays, as a request does.
//! Run: `cargo bench -p geoturn-geo --bench rank` (add `-- --quick` for a short run).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use geoturn_geo::{
    Candidate, ClientLocation, MeasuredRegion, MeasuredRtts, RankConfig, rank_relays,
    rank_relays_measured,
};

const REGIONS: usize = 20;
const RELAYS: usize = 1000;

/// A tiny deterministic generator: the benchmark input must not change between runs.
struct Lcg(u64);

impl Lcg {
    fn next_unit(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn region_centre(r: usize) -> (f64, f64) {
    // Latitudes between -45 and 60, longitudes round the globe.
    let lat = -45.0 + 105.0 * ((r * 7) % REGIONS) as f64 / REGIONS as f64;
    let lon = -180.0 + 360.0 * r as f64 / REGIONS as f64;
    (lat, lon)
}

fn fleet() -> Vec<Candidate> {
    let mut rng = Lcg(0x6765_6f74_7572_6e21);
    (0..RELAYS)
        .map(|i| {
            let region = i % REGIONS;
            let (lat, lon) = region_centre(region);
            let capacity_allocations = 10_000;
            let capacity_bps = 125_000_000;
            Candidate {
                id: format!("relay-{i:04}"),
                region: format!("region-{region:02}"),
                lat: (lat + 4.0 * (rng.next_unit() - 0.5)).clamp(-90.0, 90.0),
                lon: (lon + 4.0 * (rng.next_unit() - 0.5)).clamp(-180.0, 180.0),
                allocations: (rng.next_unit() * 1.1 * capacity_allocations as f64) as u64,
                capacity_allocations,
                bps: (rng.next_unit() * 0.9 * capacity_bps as f64) as u64,
                capacity_bps,
                draining: i % 50 == 7,
                heartbeat_age: Duration::from_millis(if i % 50 == 13 { 9_000 } else { 1_500 }),
                unit_vector: Default::default(),
            }
        })
        .collect()
}

fn matrix() -> HashMap<(String, String), f64> {
    let mut m = HashMap::new();
    for a in 0..REGIONS {
        for b in 0..REGIONS {
            let (la, oa) = region_centre(a);
            let (lb, ob) = region_centre(b);
            let rtt = 3.0 + 0.015 * geoturn_geo::haversine_km(la, oa, lb, ob);
            m.insert((format!("region-{a:02}"), format!("region-{b:02}")), rtt);
        }
    }
    m
}

fn bench_rank(c: &mut Criterion) {
    let relays = fleet();
    let config = RankConfig {
        default_region: Some("region-03".to_owned()),
        ..RankConfig::default()
    };
    let with_matrix = RankConfig {
        rtt_matrix: Some(std::sync::Arc::new(matrix())),
        ..config.clone()
    };
    let london = ClientLocation::Known {
        lat: 51.5,
        lon: -0.13,
        region: None,
    };
    let london_in_region = ClientLocation::Known {
        lat: 51.5,
        lon: -0.13,
        region: Some("region-09".to_owned()),
    };

    let mut group = c.benchmark_group("rank_relays/1000 relays, 20 regions");
    group.bench_function("known location (great circle)", |b| {
        b.iter(|| rank_relays(black_box(&london), black_box(&relays), black_box(&config)))
    });
    group.bench_function("known location + region matrix", |b| {
        b.iter(|| {
            rank_relays(
                black_box(&london_in_region),
                black_box(&relays),
                black_box(&with_matrix),
            )
        })
    });
    // Measured from the client's network to 5 of the 20 regions (the usual picture: the
    // regions its answers listed), the rest by distance.
    let measured = MeasuredRtts {
        regions: (0..5)
            .map(|r| MeasuredRegion {
                region: format!("region-{:02}", r * 4),
                rtt_ms: 20.0 + 30.0 * r as f64,
                samples: 12,
                network: "203.0.113.0/24".to_owned(),
                age_secs: 30,
            })
            .collect(),
        explore: false,
    };
    group.bench_function("known location + measured (5 regions)", |b| {
        b.iter(|| {
            rank_relays_measured(
                black_box(&london),
                black_box(&measured),
                black_box(&relays),
                black_box(&config),
            )
        })
    });
    // The same, for an answer that explores: the measured regions are the nearest, so every
    // pick is measured and the fallback gives way to the best never-measured region (one more
    // pass over the relays).
    let exploring = MeasuredRtts {
        regions: measured
            .regions
            .iter()
            .map(|m| MeasuredRegion {
                rtt_ms: m.rtt_ms / 20.0,
                ..m.clone()
            })
            .collect(),
        explore: true,
    };
    assert!(rank_relays_measured(&london, &exploring, &relays, &config).explored);
    group.bench_function("known location + measured (5 regions), exploring", |b| {
        b.iter(|| {
            rank_relays_measured(
                black_box(&london),
                black_box(&exploring),
                black_box(&relays),
                black_box(&config),
            )
        })
    });
    group.bench_function("unknown location (default region)", |b| {
        b.iter(|| {
            rank_relays(
                black_box(&ClientLocation::Unknown),
                black_box(&relays),
                black_box(&config),
            )
        })
    });
    group.finish();

    // Sanity check outside the timed loop: the input exercises every path.
    let ranking = rank_relays(&london, &relays, &config);
    assert_eq!(ranking.chosen.len(), 4);
    assert!(!ranking.excluded.is_empty());
}

criterion_group!(benches, bench_rank);
criterion_main!(benches);
