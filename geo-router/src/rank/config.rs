//! The ranking's knobs, their defaults and their validation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How relays are scored and how many are returned.
#[derive(Debug, Clone, PartialEq)]
pub struct RankConfig {
    /// Speed of light in fibre, km per ms [default: 200, i.e. about 2/3 of c].
    pub fibre_km_per_ms: f64,
    /// How much longer real routes are than the great circle [default: 1.5].
    pub route_inflation: f64,
    /// A relay whose last heartbeat is older than this is stale and never chosen
    /// [default: 6 s = 3 heartbeats of 2 s, the life of its registry record].
    pub stale_after: Duration,
    /// The RTT, in ms, that a fully loaded relay is worth: the penalty is this times load²,
    /// so a lightly loaded relay costs almost nothing and a nearly full one almost this much
    /// [default: 50].
    pub load_weight_ms: f64,
    /// Measured region-to-region RTTs in ms, keyed `(from, to)`. Used instead of the distance
    /// estimate when the client's region is known and the pair is present; `(to, from)` is used
    /// when only the reverse is given [default: none]. Shared (`Arc`): a request's copy of the
    /// configuration must not copy the matrix.
    pub rtt_matrix: Option<Arc<HashMap<(String, String), f64>>>,
    /// Region served first when the client's location is unknown [default: none].
    pub default_region: Option<String>,
    /// Most relays returned [default: 4].
    pub max_results: usize,
    /// Fewest regions the answer spans when the eligible relays span that many; 0 or 1 turns
    /// the guarantee off [default: 2].
    pub min_regions: usize,
}

impl Default for RankConfig {
    fn default() -> Self {
        Self {
            fibre_km_per_ms: 200.0,
            route_inflation: 1.5,
            stale_after: Duration::from_secs(6),
            load_weight_ms: 50.0,
            rtt_matrix: None,
            default_region: None,
            max_results: 4,
            min_regions: 2,
        }
    }
}

/// A [`RankConfig`] field with a value the ranking cannot use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RankConfigError {
    /// The named field is out of range; the message says what it must be.
    #[error("invalid ranking setting {field}: {reason}")]
    Invalid {
        /// The `RankConfig` field.
        field: &'static str,
        /// What the value must be.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> RankConfigError {
    RankConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl RankConfig {
    /// Checks every field once at start-up, naming the first bad one. `rank_relays` never
    /// panics on a bad configuration, but its scores would mean nothing.
    pub fn validate(&self) -> Result<(), RankConfigError> {
        if !(self.fibre_km_per_ms.is_finite() && self.fibre_km_per_ms > 0.0) {
            return Err(invalid("fibre_km_per_ms", "must be a finite number > 0"));
        }
        // Routes are never shorter than the great circle.
        if !(self.route_inflation.is_finite() && self.route_inflation >= 1.0) {
            return Err(invalid("route_inflation", "must be a finite number >= 1"));
        }
        if self.stale_after.is_zero() {
            return Err(invalid("stale_after", "must be longer than zero"));
        }
        if !(self.load_weight_ms.is_finite() && self.load_weight_ms >= 0.0) {
            return Err(invalid("load_weight_ms", "must be a finite number >= 0"));
        }
        if self.max_results == 0 {
            return Err(invalid("max_results", "must be at least 1"));
        }
        if self.default_region.as_deref() == Some("") {
            return Err(invalid("default_region", "must not be empty"));
        }
        for ((from, to), rtt) in self.rtt_matrix.iter().flat_map(|m| m.iter()) {
            if from.is_empty() || to.is_empty() {
                return Err(invalid("rtt_matrix", "region names must not be empty"));
            }
            if !(rtt.is_finite() && *rtt >= 0.0) {
                return Err(invalid(
                    "rtt_matrix",
                    format!("{from} -> {to}: {rtt} is not a finite number of ms >= 0"),
                ));
            }
        }
        Ok(())
    }

    /// RTT from `client_region` to every region the matrix knows, with the reverse pair as a
    /// fallback. Built once per ranking by scanning the matrix: no key allocation per relay,
    /// and the result does not depend on the map's iteration order.
    pub(super) fn matrix_row(&self, client_region: &str) -> HashMap<&str, f64> {
        let mut row = HashMap::new();
        let Some(matrix) = self.rtt_matrix.as_deref() else {
            return row;
        };
        let usable = |rtt: f64| rtt.is_finite() && rtt >= 0.0;
        for ((from, to), &rtt) in matrix {
            if from == client_region && usable(rtt) {
                row.insert(to.as_str(), rtt);
            }
        }
        for ((from, to), &rtt) in matrix {
            if to == client_region && usable(rtt) {
                row.entry(from.as_str()).or_insert(rtt);
            }
        }
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = RankConfig::default();
        c.validate().unwrap();
        assert_eq!(c.fibre_km_per_ms, 200.0);
        assert_eq!(c.route_inflation, 1.5);
        assert_eq!(c.stale_after, Duration::from_secs(6));
        assert_eq!(c.load_weight_ms, 50.0);
        assert_eq!((c.max_results, c.min_regions), (4, 2));
    }

    #[test]
    fn validation_names_the_field() {
        let cases: [(&str, RankConfig); 5] = [
            (
                "fibre_km_per_ms",
                RankConfig {
                    fibre_km_per_ms: 0.0,
                    ..Default::default()
                },
            ),
            (
                "route_inflation",
                RankConfig {
                    route_inflation: f64::NAN,
                    ..Default::default()
                },
            ),
            (
                "load_weight_ms",
                RankConfig {
                    load_weight_ms: -1.0,
                    ..Default::default()
                },
            ),
            (
                "max_results",
                RankConfig {
                    max_results: 0,
                    ..Default::default()
                },
            ),
            (
                "rtt_matrix",
                RankConfig {
                    rtt_matrix: Some(Arc::new([(("a".into(), "b".into()), -3.0)].into())),
                    ..Default::default()
                },
            ),
        ];
        for (field, config) in cases {
            let err = config.validate().unwrap_err();
            assert!(matches!(&err, RankConfigError::Invalid { field: f, .. } if *f == field));
            assert!(err.to_string().contains(field));
        }
    }

    #[test]
    fn matrix_row_prefers_the_forward_pair() {
        let config = RankConfig {
            rtt_matrix: Some(Arc::new(
                [
                    (("eu".into(), "us".into()), 80.0),
                    (("us".into(), "eu".into()), 90.0),
                    (("ap".into(), "eu".into()), 150.0),
                    (("us".into(), "ap".into()), 120.0),
                ]
                .into(),
            )),
            ..Default::default()
        };
        let row = config.matrix_row("eu");
        assert_eq!(row.get("us"), Some(&80.0));
        assert_eq!(row.get("ap"), Some(&150.0));
        assert_eq!(row.len(), 2);
    }
}
