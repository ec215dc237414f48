//! The ranking rules, one scenario each, with real cities so the numbers can be checked by hand.

use std::time::Duration;

use super::*;

const LONDON: (f64, f64) = (51.5074, -0.1278);
const PARIS: (f64, f64) = (48.8566, 2.3522);
const FRANKFURT: (f64, f64) = (50.1109, 8.6821);
const NEW_YORK: (f64, f64) = (40.7128, -74.0060);
const SINGAPORE: (f64, f64) = (1.3521, 103.8198);

fn relay(id: &str, region: &str, (lat, lon): (f64, f64)) -> Candidate {
    Candidate {
        id: id.to_owned(),
        region: region.to_owned(),
        lat,
        lon,
        allocations: 0,
        capacity_allocations: 1000,
        bps: 0,
        capacity_bps: 125_000_000,
        draining: false,
        heartbeat_age: Duration::from_secs(1),
        unit_vector: Default::default(),
    }
}

fn loaded(mut c: Candidate, allocations: u64) -> Candidate {
    c.allocations = allocations;
    c
}

fn at((lat, lon): (f64, f64)) -> ClientLocation {
    ClientLocation::Known {
        lat,
        lon,
        region: None,
    }
}

fn ids(ranking: &Ranking) -> Vec<&str> {
    ranking.chosen.iter().map(|c| c.id.as_str()).collect()
}

#[test]
fn nearest_wins_at_equal_load() {
    let relays = [
        relay("sin-1", "ap-southeast", SINGAPORE),
        relay("nyc-1", "us-east", NEW_YORK),
        relay("fra-1", "eu-central", FRANKFURT),
    ];
    let ranking = rank_relays(&at(LONDON), &relays, &RankConfig::default());
    assert_eq!(ids(&ranking), ["fra-1", "nyc-1", "sin-1"]);
    assert!(ranking.excluded.is_empty());

    let fra = &ranking.chosen[0];
    assert_eq!(fra.index, 2);
    let km = fra.distance_km.unwrap();
    assert!((630.0..650.0).contains(&km), "{km}");
    // 2 x 638 km x 1.5 / 200 km/ms ~ 9.6 ms; idle, so the score is the RTT.
    assert!((fra.rtt_ms - 2.0 * km * 1.5 / 200.0).abs() < 1e-9);
    assert_eq!(fra.load, 0.0);
    assert_eq!(fra.score, fra.rtt_ms);
    assert!(fra.reason.contains("km away"), "{}", fra.reason);
    assert!(fra.reason.contains("est. RTT 9.6 ms"), "{}", fra.reason);
    assert!(fra.reason.contains("load 0%"), "{}", fra.reason);
}

#[test]
fn a_loaded_near_relay_loses_to_an_idle_farther_one() {
    // London relay at 90%: 0 ms + 50 x 0.81 = 40.5; Paris idle: ~343 km -> ~5.1 ms.
    let relays = [
        loaded(relay("lon-1", "eu-west", LONDON), 900),
        relay("par-1", "eu-west", PARIS),
    ];
    let config = RankConfig {
        min_regions: 1,
        ..Default::default()
    };
    let ranking = rank_relays(&at(LONDON), &relays, &config);
    assert_eq!(ids(&ranking), ["par-1", "lon-1"]);
    let lon = &ranking.chosen[1];
    assert!((lon.load - 0.9).abs() < 1e-12);
    assert!((lon.score - 40.5).abs() < 1e-6, "{}", lon.score);
    assert!(
        lon.reason.contains("load 90% (allocations)"),
        "{}",
        lon.reason
    );

    // At 30% the penalty (4.5 ms) is less than the extra distance (5.1 ms): London wins.
    let relays = [
        loaded(relay("lon-1", "eu-west", LONDON), 300),
        relay("par-1", "eu-west", PARIS),
    ];
    assert_eq!(
        ids(&rank_relays(&at(LONDON), &relays, &config)),
        ["lon-1", "par-1"]
    );

    // Without a load penalty, distance alone decides.
    let config = RankConfig {
        load_weight_ms: 0.0,
        ..config
    };
    let relays = [
        loaded(relay("lon-1", "eu-west", LONDON), 990),
        relay("par-1", "eu-west", PARIS),
    ];
    assert_eq!(
        ids(&rank_relays(&at(LONDON), &relays, &config)),
        ["lon-1", "par-1"]
    );
}

#[test]
fn bandwidth_counts_as_load() {
    let mut busy = relay("lon-1", "eu-west", LONDON);
    busy.bps = 100_000_000; // 80% of 125 MB/s, while allocations are at 0%
    let ranking = rank_relays(&at(LONDON), &[busy], &RankConfig::default());
    let choice = &ranking.chosen[0];
    assert!((choice.load - 0.8).abs() < 1e-12);
    assert!(
        choice.reason.contains("load 80% (bandwidth)"),
        "{}",
        choice.reason
    );
}

#[test]
fn draining_stale_over_capacity_and_broken_relays_are_excluded() {
    let mut draining = relay("d-drain", "eu-west", LONDON);
    draining.draining = true;
    let mut stale = relay("c-stale", "eu-west", LONDON);
    stale.heartbeat_age = Duration::from_millis(6001);
    let full = loaded(relay("b-full", "eu-west", LONDON), 1000);
    let mut saturated = relay("a-saturated", "eu-west", LONDON);
    saturated.bps = 200_000_000;
    let mut broken = relay("e-broken", "eu-west", LONDON);
    broken.lat = f64::NAN;
    // Exactly stale_after old is still fresh; one allocation short of full is still eligible.
    let mut edge = loaded(relay("z-edge", "eu-west", PARIS), 999);
    edge.heartbeat_age = Duration::from_secs(6);

    let relays = [draining, stale, full, saturated, broken, edge];
    let ranking = rank_relays(&at(LONDON), &relays, &RankConfig::default());
    assert_eq!(ids(&ranking), ["z-edge"]);
    let excluded: Vec<(&str, ExclusionReason)> = ranking
        .excluded
        .iter()
        .map(|e| (e.id.as_str(), e.reason))
        .collect();
    assert_eq!(
        excluded,
        [
            ("a-saturated", ExclusionReason::OverCapacity),
            ("b-full", ExclusionReason::OverCapacity),
            (
                "c-stale",
                ExclusionReason::Stale {
                    age: Duration::from_millis(6001)
                }
            ),
            ("d-drain", ExclusionReason::Draining),
            ("e-broken", ExclusionReason::InvalidPosition),
        ]
    );
    assert_eq!(ExclusionReason::Draining.to_string(), "draining");
    assert_eq!(
        ExclusionReason::Stale {
            age: Duration::from_millis(6001)
        }
        .to_string(),
        "stale: last heartbeat 6.0 s ago"
    );
    assert_eq!(
        ExclusionReason::OverCapacity.to_string(),
        "at or over capacity"
    );
}

#[test]
fn zero_capacity_means_not_reported() {
    let mut c = loaded(relay("lon-1", "eu-west", LONDON), 50);
    c.capacity_allocations = 0;
    c.capacity_bps = 0;
    c.bps = 1_000_000;
    let ranking = rank_relays(&at(LONDON), &[c], &RankConfig::default());
    assert_eq!(ranking.chosen[0].load, 0.0);
}

#[test]
fn the_answer_spans_two_regions_when_two_exist() {
    let relays = [
        relay("lon-1", "eu-west", LONDON),
        relay("lon-2", "eu-west", LONDON),
        relay("par-1", "eu-west", PARIS),
        relay("par-2", "eu-west", PARIS),
        relay("par-3", "eu-west", PARIS),
        relay("nyc-2", "us-east", NEW_YORK),
        relay("nyc-1", "us-east", NEW_YORK),
    ];
    let ranking = rank_relays(&at(LONDON), &relays, &RankConfig::default());
    assert_eq!(ids(&ranking), ["lon-1", "lon-2", "par-1", "nyc-1"]);
    let nyc = &ranking.chosen[3];
    assert!(nyc.reason.contains("spans more regions"), "{}", nyc.reason);
    assert!(!ranking.chosen[0].reason.contains("spans"));

    // Turned off, the four nearest win.
    let config = RankConfig {
        min_regions: 1,
        ..Default::default()
    };
    let ranking = rank_relays(&at(LONDON), &relays, &config);
    assert_eq!(ids(&ranking), ["lon-1", "lon-2", "par-1", "par-2"]);

    // Three regions asked for and available, in three slots.
    let mut relays = relays.to_vec();
    relays.push(relay("sin-1", "ap-southeast", SINGAPORE));
    let config = RankConfig {
        max_results: 3,
        min_regions: 3,
        ..Default::default()
    };
    let ranking = rank_relays(&at(LONDON), &relays, &config);
    assert_eq!(ids(&ranking), ["lon-1", "nyc-1", "sin-1"]);
}

#[test]
fn a_single_region_is_not_padded() {
    let relays = [
        relay("lon-1", "eu-west", LONDON),
        relay("par-1", "eu-west", PARIS),
    ];
    let ranking = rank_relays(&at(LONDON), &relays, &RankConfig::default());
    assert_eq!(ids(&ranking), ["lon-1", "par-1"]);
}

#[test]
fn unknown_location_serves_the_default_region_then_the_least_loaded() {
    let relays = [
        relay("fra-1", "eu-central", FRANKFURT),
        loaded(relay("sin-1", "ap-southeast", SINGAPORE), 500),
        loaded(relay("sin-2", "ap-southeast", SINGAPORE), 200),
        loaded(relay("nyc-1", "us-east", NEW_YORK), 100),
    ];
    let config = RankConfig {
        default_region: Some("ap-southeast".to_owned()),
        ..Default::default()
    };
    let ranking = rank_relays(&ClientLocation::Unknown, &relays, &config);
    assert_eq!(ids(&ranking), ["sin-2", "sin-1", "fra-1", "nyc-1"]);
    let first = &ranking.chosen[0];
    assert_eq!(first.distance_km, None);
    assert_eq!(first.rtt_ms, 0.0);
    assert!(
        first
            .reason
            .starts_with("unknown location: default region ap-southeast"),
        "{}",
        first.reason
    );
    assert!(
        ranking.chosen[2]
            .reason
            .contains("least loaded outside default region"),
        "{}",
        ranking.chosen[2].reason
    );

    // No default region: least loaded overall.
    let ranking = rank_relays(&ClientLocation::Unknown, &relays, &RankConfig::default());
    assert_eq!(ids(&ranking), ["fra-1", "nyc-1", "sin-2", "sin-1"]);
    assert!(
        ranking.chosen[0]
            .reason
            .starts_with("unknown location: least loaded")
    );

    // A position off the globe is treated as unknown, not ranked by NaN.
    let nowhere = ClientLocation::Known {
        lat: 123.0,
        lon: 0.0,
        region: None,
    };
    assert_eq!(
        ids(&rank_relays(&nowhere, &relays, &config)),
        ["sin-2", "sin-1", "fra-1", "nyc-1"]
    );
}

#[test]
fn unknown_location_still_spans_two_regions() {
    let relays = [
        relay("sin-1", "ap-southeast", SINGAPORE),
        relay("sin-2", "ap-southeast", SINGAPORE),
        relay("sin-3", "ap-southeast", SINGAPORE),
        relay("sin-4", "ap-southeast", SINGAPORE),
        loaded(relay("fra-1", "eu-central", FRANKFURT), 800),
    ];
    let config = RankConfig {
        default_region: Some("ap-southeast".to_owned()),
        ..Default::default()
    };
    let ranking = rank_relays(&ClientLocation::Unknown, &relays, &config);
    assert_eq!(ids(&ranking), ["sin-1", "sin-2", "sin-3", "fra-1"]);
}

#[test]
fn ties_break_by_id_whatever_the_input_order() {
    let mut relays = vec![
        relay("c", "eu-west", PARIS),
        relay("a", "eu-west", PARIS),
        relay("b", "eu-west", PARIS),
    ];
    let config = RankConfig {
        min_regions: 1,
        ..Default::default()
    };
    let first = rank_relays(&at(LONDON), &relays, &config);
    assert_eq!(ids(&first), ["a", "b", "c"]);
    relays.reverse();
    let second = rank_relays(&at(LONDON), &relays, &config);
    assert_eq!(ids(&second), ["a", "b", "c"]);
    // Same input, same output, down to the explanations.
    assert_eq!(second, rank_relays(&at(LONDON), &relays, &config));
}

#[test]
fn the_matrix_overrides_distance_when_the_client_region_is_known() {
    let relays = [
        relay("nyc-1", "us-east", NEW_YORK),
        relay("sin-1", "ap-southeast", SINGAPORE),
    ];
    // Deliberately unphysical so the matrix visibly wins over geography.
    let config = RankConfig {
        rtt_matrix: Some(std::sync::Arc::new(
            [
                (("eu-west".to_owned(), "us-east".to_owned()), 70.0),
                // Only the reverse pair is given for Singapore: it is used.
                (("ap-southeast".to_owned(), "eu-west".to_owned()), 20.0),
            ]
            .into(),
        )),
        ..Default::default()
    };
    let client = ClientLocation::Known {
        lat: LONDON.0,
        lon: LONDON.1,
        region: Some("eu-west".to_owned()),
    };
    let ranking = rank_relays(&client, &relays, &config);
    assert_eq!(ids(&ranking), ["sin-1", "nyc-1"]);
    assert_eq!(ranking.chosen[0].rtt_ms, 20.0);
    assert_eq!(ranking.chosen[1].rtt_ms, 70.0);
    // The distance is still reported, the RTT says where it came from.
    assert!(ranking.chosen[0].distance_km.unwrap() > 10_000.0);
    assert!(
        ranking.chosen[0]
            .reason
            .contains("RTT 20.0 ms (matrix eu-west -> ap-southeast)"),
        "{}",
        ranking.chosen[0].reason
    );

    // Without the client's region the matrix cannot apply: geography decides.
    let ranking = rank_relays(&at(LONDON), &relays, &config);
    assert_eq!(ids(&ranking), ["nyc-1", "sin-1"]);
    assert!(ranking.chosen[0].reason.contains("great circle"));
}

#[test]
fn max_results_caps_the_answer() {
    let relays: Vec<Candidate> = (0..10)
        .map(|i| {
            relay(
                &format!("r{i}"),
                if i % 2 == 0 { "eu-west" } else { "us-east" },
                PARIS,
            )
        })
        .collect();
    let config = RankConfig {
        max_results: 3,
        ..Default::default()
    };
    assert_eq!(rank_relays(&at(LONDON), &relays, &config).chosen.len(), 3);
    let all = RankConfig {
        max_results: usize::MAX,
        ..Default::default()
    };
    assert_eq!(rank_relays(&at(LONDON), &relays, &all).chosen.len(), 10);
    assert!(rank_relays(&at(LONDON), &[], &config).chosen.is_empty());
}

#[test]
fn a_geoip_answer_becomes_a_client_location() {
    let found = crate::Location {
        lat: 1.0,
        lon: 2.0,
        country: Some("SG".to_owned()),
    };
    assert_eq!(
        ClientLocation::from(Some(found)),
        ClientLocation::Known {
            lat: 1.0,
            lon: 2.0,
            region: None
        }
    );
    assert_eq!(ClientLocation::from(None), ClientLocation::Unknown);
}

fn measured(entries: &[(&str, f64)]) -> MeasuredRtts {
    MeasuredRtts {
        regions: entries
            .iter()
            .map(|&(region, rtt_ms)| MeasuredRegion {
                region: region.to_owned(),
                rtt_ms,
                samples: 3,
                network: "203.0.113.0/24".to_owned(),
                age_secs: 4,
            })
            .collect(),
        explore: false,
    }
}

#[test]
fn a_measured_round_trip_beats_the_distance_estimate() {
    // GeoIP places the client in London, next to eu-central; its path there is 120 ms and to
    // us-east 20 ms (a VPN exit, a satellite link): the measurement decides.
    let relays = [
        relay("fra-1", "eu-central", FRANKFURT),
        relay("nyc-1", "us-east", NEW_YORK),
        relay("sin-1", "ap-southeast", SINGAPORE),
    ];
    let config = RankConfig::default();
    let before = rank_relays(&at(LONDON), &relays, &config);
    assert_eq!(ids(&before)[0], "fra-1");
    let m = measured(&[("eu-central", 120.0), ("us-east", 20.0)]);
    let after = rank_relays_measured(&at(LONDON), &m, &relays, &config);
    assert_eq!(ids(&after), ["nyc-1", "fra-1", "sin-1"]);
    assert_eq!(after.chosen[0].rtt_ms, 20.0);
    assert!(
        after.chosen[0]
            .reason
            .starts_with("RTT 20.0 ms measured from 203.0.113.0/24 (3 samples, 4 s old)"),
        "{}",
        after.chosen[0].reason
    );
    // Singapore was never measured from this network: still the distance estimate.
    assert!(
        after.chosen[2].reason.contains("great circle"),
        "{:?}",
        after.chosen[2]
    );
    // Load still counts on top of a measurement.
    let busy = [loaded(relays[1].clone(), 990), relays[0].clone()];
    let ranked = rank_relays_measured(&at(LONDON), &m, &busy, &config);
    assert_eq!(ranked.chosen[0].id, "nyc-1");
    assert!((ranked.chosen[0].score - (20.0 + 50.0 * 0.99 * 0.99)).abs() < 1e-9);
}

#[test]
fn unusable_measurements_are_ignored_and_unknown_clients_use_good_ones() {
    let relays = [
        relay("fra-1", "eu-central", FRANKFURT),
        relay("nyc-1", "us-east", NEW_YORK),
    ];
    let config = RankConfig::default();
    let bad = measured(&[("eu-central", f64::NAN), ("us-east", -1.0)]);
    assert_eq!(
        ids(&rank_relays_measured(&at(LONDON), &bad, &relays, &config)),
        ids(&rank_relays(&at(LONDON), &relays, &config))
    );
    // No place known, but a measurement: the measured region comes before the unmeasured one,
    // the default region's included (its 0 ms is a guess).
    let m = measured(&[("us-east", 30.0)]);
    let ranked = rank_relays_measured(&ClientLocation::Unknown, &m, &relays, &config);
    assert_eq!(ids(&ranked), ["nyc-1", "fra-1"]);
    let with_default = RankConfig {
        default_region: Some("eu-central".to_owned()),
        ..RankConfig::default()
    };
    let ranked = rank_relays_measured(&ClientLocation::Unknown, &m, &relays, &with_default);
    assert_eq!(ids(&ranked), ["nyc-1", "fra-1"]);
    assert_eq!(
        ids(&rank_relays(
            &ClientLocation::Unknown,
            &relays,
            &with_default
        )),
        ["fra-1", "nyc-1"]
    );
}

#[test]
fn exploring_swaps_the_fallback_for_a_region_never_measured() {
    let relays = [
        relay("fra-1", "eu-central", FRANKFURT),
        relay("par-1", "eu-west", PARIS),
        relay("nyc-1", "us-east", NEW_YORK),
        relay("sin-1", "ap-southeast", SINGAPORE),
    ];
    let config = RankConfig {
        max_results: 2,
        ..RankConfig::default()
    };
    // Measured to Frankfurt (1 ms) and New York (2 ms), never to Paris or Singapore: Paris's
    // distance estimate (about 5 ms) keeps it out of every answer, so it would never be measured.
    let mut m = measured(&[("eu-central", 1.0), ("us-east", 2.0)]);
    assert_eq!(
        ids(&rank_relays_measured(&at(LONDON), &m, &relays, &config)),
        ["fra-1", "nyc-1"]
    );
    m.explore = true;
    let explored = rank_relays_measured(&at(LONDON), &m, &relays, &config);
    // The best stays; the fallback gives way to the best never-measured region (Paris, nearer
    // than Singapore).
    assert_eq!(ids(&explored), ["fra-1", "par-1"]);
    assert!(
        explored.chosen[1].reason.contains("exploring"),
        "{}",
        explored.chosen[1].reason
    );
    assert!(!explored.chosen[0].reason.contains("exploring"));

    // Nothing to explore when a pick is already in an unmeasured region, when nothing was
    // measured, or with a single pick.
    let eu_only = MeasuredRtts {
        explore: true,
        ..measured(&[("eu-central", 1.0)])
    };
    let plain = rank_relays_measured(&at(LONDON), &eu_only, &relays, &config);
    assert_eq!(ids(&plain), ["fra-1", "par-1"]);
    assert!(plain.chosen.iter().all(|c| !c.reason.contains("exploring")));
    let nothing = MeasuredRtts {
        explore: true,
        ..MeasuredRtts::default()
    };
    assert_eq!(
        rank_relays_measured(&at(LONDON), &nothing, &relays, &config),
        rank_relays(&at(LONDON), &relays, &config)
    );
    let one = RankConfig {
        max_results: 1,
        ..config.clone()
    };
    assert_eq!(
        ids(&rank_relays_measured(&at(LONDON), &m, &relays, &one)),
        ["fra-1"]
    );

    // Every region measured: nothing left to explore.
    let all = MeasuredRtts {
        explore: true,
        ..measured(&[
            ("eu-central", 1.0),
            ("us-east", 2.0),
            ("eu-west", 3.0),
            ("ap-southeast", 4.0),
        ])
    };
    assert_eq!(
        ids(&rank_relays_measured(&at(LONDON), &all, &relays, &config)),
        ["fra-1", "nyc-1"]
    );
}
