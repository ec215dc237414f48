//! The one-line explanation every chosen relay carries.
//!
//! Built only for the chosen few, after sorting: formatting floats is the costliest step per
//! relay, and a request ranks every relay but hands out a handful.

use std::fmt::Write;

use super::{Choice, Client, Estimate, Load, RankConfig, RttSource, Scored};

pub(super) fn choice(
    scored: &Scored<'_>,
    for_diversity: bool,
    client: &Client<'_>,
    config: &RankConfig,
) -> Choice {
    let candidate = scored.candidate;
    let distance_km = scored.distance_km.or_else(|| {
        let origin = client.position?;
        Some(origin.km_to(candidate.lat, candidate.lon))
    });
    let mut reason = String::with_capacity(128);
    // Writing to a String cannot fail; the results are ignored for that reason.
    match scored.source {
        RttSource::Distance => {
            let _ = write!(
                reason,
                "{:.0} km away, est. RTT {:.1} ms (great circle x{} at {} km/ms)",
                distance_km.unwrap_or_default(),
                scored.rtt_ms,
                config.route_inflation,
                config.fibre_km_per_ms,
            );
        }
        RttSource::Measured => {
            if let Some(m) = client.measured.get(&candidate.region) {
                let _ = write!(
                    reason,
                    "RTT {:.1} ms measured from {} ({} samples, {} s old)",
                    scored.rtt_ms, m.network, m.samples, m.age_secs,
                );
            }
        }
        RttSource::Matrix => {
            let _ = write!(
                reason,
                "{:.0} km away, RTT {:.1} ms (matrix {} -> {})",
                distance_km.unwrap_or_default(),
                scored.rtt_ms,
                client.region.unwrap_or_default(),
                candidate.region,
            );
        }
        RttSource::Unknown { default_region } => {
            reason.push_str("unknown location: ");
            match (&config.default_region, default_region) {
                (Some(region), true) => {
                    let _ = write!(reason, "default region {region}");
                }
                (Some(region), false) => {
                    let _ = write!(reason, "least loaded outside default region {region}");
                }
                (None, _) => reason.push_str("least loaded"),
            }
        }
    }
    let _ = write!(reason, ", load {}", describe_load(scored.load));
    let _ = write!(reason, ", score {:.1}", scored.score);
    if for_diversity {
        reason.push_str("; picked so the answer spans more regions (min_regions)");
    }
    Choice {
        id: candidate.id.clone(),
        region: candidate.region.clone(),
        index: scored.index,
        distance_km,
        rtt_ms: scored.rtt_ms,
        load: scored.load.value,
        score: scored.score,
        reason,
        estimate: match scored.source {
            RttSource::Measured => Estimate::Measured,
            RttSource::Matrix => Estimate::Matrix,
            RttSource::Distance => Estimate::Distance,
            RttSource::Unknown { .. } => Estimate::Unknown,
        },
    }
}

fn describe_load(load: Load) -> String {
    let percent = load.value * 100.0;
    if load.value == 0.0 {
        "0%".to_owned()
    } else if load.by_bandwidth {
        format!("{percent:.0}% (bandwidth)")
    } else {
        format!("{percent:.0}% (allocations)")
    }
}
