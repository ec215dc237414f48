//! Properties of `rank_relays` over arbitrary fleets, clients and configurations.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use geoturn_geo::{Candidate, ClientLocation, RankConfig, Ranking, rank_relays};
use proptest::prelude::*;

const REGIONS: [&str; 5] = [
    "eu-west",
    "eu-central",
    "us-east",
    "ap-southeast",
    "sa-east",
];

fn candidate() -> impl Strategy<Value = Candidate> {
    (
        0..REGIONS.len(),
        -90.0..=90.0f64,
        -180.0..=180.0f64,
        0u64..120,
        prop_oneof![Just(0u64), 1u64..100],
        0u64..2_000,
        prop_oneof![Just(0u64), 1u64..1_500],
        prop::bool::weighted(0.1),
        0u64..9_000,
    )
        .prop_map(
            |(
                region,
                lat,
                lon,
                allocations,
                capacity_allocations,
                bps,
                capacity_bps,
                draining,
                age_ms,
            )| {
                Candidate {
                    id: String::new(), // unique ids are assigned by `fleet`
                    region: REGIONS[region].to_owned(),
                    lat,
                    lon,
                    allocations,
                    capacity_allocations,
                    bps,
                    capacity_bps,
                    draining,
                    heartbeat_age: Duration::from_millis(age_ms),
                    unit_vector: Default::default(),
                }
            },
        )
}

/// 0 to 40 relays with unique ids, so ids identify relays in the assertions.
fn fleet() -> impl Strategy<Value = Vec<Candidate>> {
    prop::collection::vec(candidate(), 0..40).prop_map(|mut relays| {
        for (i, r) in relays.iter_mut().enumerate() {
            r.id = format!("relay-{i:02}");
        }
        relays
    })
}

fn client() -> impl Strategy<Value = ClientLocation> {
    prop_oneof![
        Just(ClientLocation::Unknown),
        (
            -90.0..=90.0f64,
            -180.0..=180.0f64,
            prop::option::of(0..REGIONS.len())
        )
            .prop_map(|(lat, lon, region)| ClientLocation::Known {
                lat,
                lon,
                region: region.map(|r| REGIONS[r].to_owned()),
            }),
    ]
}

fn config() -> impl Strategy<Value = RankConfig> {
    (
        1usize..8,
        0usize..5,
        0.0..200.0f64,
        prop::option::of(0..REGIONS.len()),
        prop::bool::ANY,
    )
        .prop_map(
            |(max_results, min_regions, load_weight_ms, default_region, matrix)| {
                let rtt_matrix = matrix.then(|| {
                    let mut m = HashMap::new();
                    for (i, a) in REGIONS.iter().enumerate() {
                        for (j, b) in REGIONS.iter().enumerate() {
                            m.insert(
                                ((*a).to_owned(), (*b).to_owned()),
                                5.0 + 37.0 * i.abs_diff(j) as f64,
                            );
                        }
                    }
                    std::sync::Arc::new(m)
                });
                RankConfig {
                    max_results,
                    min_regions,
                    load_weight_ms,
                    default_region: default_region.map(|r| REGIONS[r].to_owned()),
                    rtt_matrix,
                    ..RankConfig::default()
                }
            },
        )
}

/// The eligibility rule restated independently of the implementation.
fn eligible(c: &Candidate, config: &RankConfig) -> bool {
    let util = |used: u64, cap: u64| {
        if cap == 0 {
            0.0
        } else {
            used as f64 / cap as f64
        }
    };
    let load = util(c.allocations, c.capacity_allocations).max(util(c.bps, c.capacity_bps));
    !c.draining && c.heartbeat_age <= config.stale_after && load < 1.0
}

fn chosen_ids(r: &Ranking) -> Vec<&str> {
    r.chosen.iter().map(|c| c.id.as_str()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_hands_out_an_excluded_relay(relays in fleet(), client in client(), config in config()) {
        let ranking = rank_relays(&client, &relays, &config);
        let excluded: HashSet<&str> = ranking.excluded.iter().map(|e| e.id.as_str()).collect();
        for choice in &ranking.chosen {
            prop_assert!(!excluded.contains(choice.id.as_str()));
            let relay = &relays[choice.index];
            prop_assert_eq!(&relay.id, &choice.id);
            prop_assert!(eligible(relay, &config), "{relay:?} was chosen");
            prop_assert!((0.0..1.0).contains(&choice.load));
        }
        let eligible_count = relays.iter().filter(|c| eligible(c, &config)).count();
        prop_assert_eq!(ranking.excluded.len(), relays.len() - eligible_count);
    }

    #[test]
    fn length_is_capped_and_filled(relays in fleet(), client in client(), config in config()) {
        let ranking = rank_relays(&client, &relays, &config);
        let eligible_count = relays.iter().filter(|c| eligible(c, &config)).count();
        prop_assert!(ranking.chosen.len() <= config.max_results);
        prop_assert_eq!(ranking.chosen.len(), eligible_count.min(config.max_results));
        let ids: HashSet<&str> = chosen_ids(&ranking).into_iter().collect();
        prop_assert_eq!(ids.len(), ranking.chosen.len(), "a relay was chosen twice");
    }

    #[test]
    fn scores_never_decrease(relays in fleet(), client in client(), config in config()) {
        let ranking = rank_relays(&client, &relays, &config);
        for pair in ranking.chosen.windows(2) {
            prop_assert!(pair[0].score <= pair[1].score, "{} > {}", pair[0].score, pair[1].score);
        }
    }

    #[test]
    fn spans_the_regions_it_can(relays in fleet(), client in client(), config in config()) {
        let ranking = rank_relays(&client, &relays, &config);
        let available: HashSet<&str> = relays
            .iter()
            .filter(|c| eligible(c, &config))
            .map(|c| c.region.as_str())
            .collect();
        let spanned: HashSet<&str> = ranking.chosen.iter().map(|c| c.region.as_str()).collect();
        let want = config.min_regions.min(available.len()).min(config.max_results);
        prop_assert!(spanned.len() >= want, "{} regions, wanted {want}", spanned.len());
    }

    #[test]
    fn deterministic_and_independent_of_input_order(
        relays in fleet(),
        client in client(),
        config in config(),
    ) {
        let first = rank_relays(&client, &relays, &config);
        prop_assert_eq!(&first, &rank_relays(&client, &relays, &config));

        let mut reversed = relays.clone();
        reversed.reverse();
        let second = rank_relays(&client, &reversed, &config);
        prop_assert_eq!(chosen_ids(&first), chosen_ids(&second));
        prop_assert_eq!(&first.excluded, &second.excluded);
    }
}
