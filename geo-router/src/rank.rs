//! Which relays a client should use, and why: a pure function of the client's position, the
//! relays' last heartbeats and the configuration.
//!
//! No I/O and no clock: heartbeat ages come in with the candidates, so the same input always
//! gives the same answer, and tests and benchmarks need no setup.
//!
//! The score is an estimated round trip in ms plus a load penalty in ms:
//! `score = rtt_ms + load_weight_ms × load²`. RTT comes, in this order, from what the relays
//! measured from the client's network to the relay's region ([`MeasuredRtts`]), from the
//! region matrix when both ends' regions are known, else from great-circle distance. The square
//! keeps light load nearly free and makes a nearly full relay cost up to `load_weight_ms`.

mod config;
mod distance;
mod explain;
mod select;
#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

pub use config::{RankConfig, RankConfigError};
pub use distance::{EARTH_RADIUS_KM, haversine_km};

/// One relay as the ranking sees it, taken from its last heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The relay's unique id.
    pub id: String,
    /// Its region (e.g. `eu-west`).
    pub region: String,
    /// Latitude in degrees, −90 to 90.
    pub lat: f64,
    /// Longitude in degrees, −180 to 180.
    pub lon: f64,
    /// Allocations held now.
    pub allocations: u64,
    /// Most allocations it takes; 0 means not reported, and allocations then add no load.
    pub capacity_allocations: u64,
    /// Relayed bandwidth now, in + out, in the same unit as `capacity_bps`.
    pub bps: u64,
    /// Bandwidth it is sized for, in + out; 0 means not reported, and bandwidth then adds no
    /// load.
    pub capacity_bps: u64,
    /// Draining relays finish their allocations but take no new clients.
    pub draining: bool,
    /// Time since its last heartbeat, measured by the caller.
    pub heartbeat_age: Duration,
    /// The position as a unit vector, computed from `lat` and `lon` at the first ranking and
    /// kept (a snapshot's candidates are ranked for every request). Build a new candidate, or
    /// reset this to `Default::default()`, when the position changes.
    pub unit_vector: UnitVectorCache,
}

/// A candidate's position as a unit vector, computed once; see [`Candidate::unit_vector`].
#[derive(Debug, Clone, Default)]
pub struct UnitVectorCache(std::sync::OnceLock<[f64; 3]>);

impl UnitVectorCache {
    fn get(&self, lat: f64, lon: f64) -> &[f64; 3] {
        self.0.get_or_init(|| distance::unit_vector(lat, lon))
    }
}

/// A cache is not part of a candidate's value: two candidates are equal whatever they have
/// computed so far.
impl PartialEq for UnitVectorCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Round trips the relays measured from the client's network, per region: the best knowledge
/// the ranking has, used before the matrix and the distance estimate. A handful of entries (one
/// per region measured), looked up by linear scan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeasuredRtts {
    /// One entry per region, the most specific measurement first.
    pub regions: Vec<MeasuredRegion>,
    /// This answer may explore: when every chosen relay is in a measured region, the last of
    /// at least two picks gives way to the best relay of a region never measured from the
    /// client's network, so that region gets measured too. A region that is never handed out
    /// is never measured, and its distance estimate may hide a better path (GeoIP is wrong for
    /// VPNs and carriers); the caller sets this for a small share of answers, and the best
    /// relay is never the one replaced.
    pub explore: bool,
}

/// A round trip measured from the client's network to one region.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasuredRegion {
    /// The region.
    pub region: String,
    /// The median round trip, ms.
    pub rtt_ms: f64,
    /// Samples behind it.
    pub samples: u32,
    /// The network it was measured from, for the explanation (`203.0.113.0/24`).
    pub network: String,
    /// How old the measurement is, seconds.
    pub age_secs: u64,
}

impl MeasuredRtts {
    fn get(&self, region: &str) -> Option<&MeasuredRegion> {
        self.regions.iter().find(|m| m.region == region)
    }

    /// Whether there is nothing measured.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }
}

/// Where the client is, as far as we know.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientLocation {
    /// A position from GeoIP or the caller.
    Known {
        /// Latitude in degrees.
        lat: f64,
        /// Longitude in degrees.
        lon: f64,
        /// The client's region, when known: selects the RTT-matrix row.
        region: Option<String>,
    },
    /// Private address, not in the database, or no database.
    Unknown,
}

impl From<Option<crate::Location>> for ClientLocation {
    /// A GeoIP answer as a client position; the region stays unknown (GeoIP has none).
    fn from(found: Option<crate::Location>) -> Self {
        match found {
            Some(l) => Self::Known {
                lat: l.lat,
                lon: l.lon,
                region: None,
            },
            None => Self::Unknown,
        }
    }
}

/// The answer: the relays to hand out, best first, and the relays that were ruled out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ranking {
    /// Best first; at most `max_results`.
    pub chosen: Vec<Choice>,
    /// Relays that may not be handed out at all, by id.
    pub excluded: Vec<Excluded>,
    /// A chosen relay is there to explore ([`MeasuredRtts::explore`]).
    pub explored: bool,
}

/// A chosen relay and how it scored.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The relay's id.
    pub id: String,
    /// The relay's region.
    pub region: String,
    /// Its position in the `candidates` slice given to [`rank_relays`].
    pub index: usize,
    /// Great-circle distance to the client; `None` when the client's location is unknown.
    pub distance_km: Option<f64>,
    /// Estimated round trip in ms (distance or matrix); 0 when the client's location is unknown.
    pub rtt_ms: f64,
    /// Utilisation, the larger of allocations and bandwidth, 0 to 1.
    pub load: f64,
    /// What it was ranked by, lower is better: `rtt_ms + load_weight_ms × load²`.
    pub score: f64,
    /// One line for humans: distance, RTT and its source, load, score, or the fallback used.
    pub reason: String,
    /// Where `rtt_ms` came from.
    pub estimate: Estimate,
}

/// Where a chosen relay's round trip came from, best knowledge first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Estimate {
    /// Measured by the relays from the client's network, its wider network or its GeoIP city.
    Measured,
    /// The region-to-region matrix (the mesh's measurements, or `[[rtt]]`).
    Matrix,
    /// Great-circle distance.
    Distance,
    /// No position and nothing measured: default region, then load.
    Unknown,
}

impl Estimate {
    /// A short name, for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Measured => "measured",
            Self::Matrix => "matrix",
            Self::Distance => "distance",
            Self::Unknown => "unknown",
        }
    }
}

/// A relay that may not be handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excluded {
    /// The relay's id.
    pub id: String,
    /// Why.
    pub reason: ExclusionReason,
}

/// Why a relay may not be handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExclusionReason {
    /// It is draining: existing allocations finish, new clients go elsewhere.
    Draining,
    /// No heartbeat for longer than `stale_after`: it may be gone.
    Stale {
        /// Time since its last heartbeat.
        age: Duration,
    },
    /// Allocations or bandwidth at or above capacity.
    OverCapacity,
    /// Latitude or longitude not a number or off the globe: a broken record.
    InvalidPosition,
}

impl fmt::Display for ExclusionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Draining => f.write_str("draining"),
            Self::Stale { age } => {
                write!(f, "stale: last heartbeat {:.1} s ago", age.as_secs_f64())
            }
            Self::OverCapacity => f.write_str("at or over capacity"),
            Self::InvalidPosition => f.write_str("invalid latitude/longitude"),
        }
    }
}

/// Ranks `candidates` for a client at `client`; see the module doc for the score.
///
/// - Draining, stale, over-capacity and badly positioned relays go to `excluded` (sorted by
///   id), with the reason.
/// - The others are ordered by score, then RTT, then load, then id, so ties break the same way
///   every time; the first `max_results` are chosen.
/// - When the eligible relays span at least `min_regions` regions, the answer does too: the
///   worst pick of a region that has two is replaced by the best relay of a missing region.
///   With fewer regions available it spans as many as it can.
/// - An unknown client location puts relays of `default_region` first, least loaded first,
///   then every other relay least loaded first.
///
/// To explain every eligible relay (as `geoturn route` does), pass `max_results: usize::MAX`.
pub fn rank_relays(
    client: &ClientLocation,
    candidates: &[Candidate],
    config: &RankConfig,
) -> Ranking {
    rank_relays_measured(client, &MeasuredRtts::default(), candidates, config)
}

/// [`rank_relays`] with round trips measured from the client's network: a relay in a measured
/// region is scored by the measurement (usable values only: finite, ≥ 0), whether or not the
/// client's place is known; the others as [`rank_relays`] scores them.
pub fn rank_relays_measured(
    client: &ClientLocation,
    measured: &MeasuredRtts,
    candidates: &[Candidate],
    config: &RankConfig,
) -> Ranking {
    let client = Client::new(client, measured, config);
    let mut excluded = Vec::new();
    let mut scored = Vec::with_capacity(candidates.len());
    for (index, candidate) in candidates.iter().enumerate() {
        let load = load_of(candidate);
        match exclusion(candidate, load, config) {
            Some(reason) => excluded.push(Excluded {
                id: candidate.id.clone(),
                reason,
            }),
            None => scored.push(client.score(index, candidate, load, config)),
        }
    }
    excluded.sort_by(|a, b| a.id.cmp(&b.id));

    let mut picks = select::pick(
        &mut scored,
        config.max_results,
        config.min_regions,
        Scored::cmp,
    );
    let explored = if measured.explore {
        explore(&mut picks, &scored, &client)
    } else {
        None
    };
    let chosen = picks
        .into_iter()
        .filter_map(|pick| {
            let s = scored.get(pick.position)?;
            let mut choice = explain::choice(s, pick.for_diversity, &client, config);
            if explored == Some(pick.position) {
                choice.reason.push_str(
                    "; exploring: no round trip measured from this network to its region yet",
                );
            }
            Some(choice)
        })
        .collect();
    Ranking {
        chosen,
        excluded,
        explored: explored.is_some(),
    }
}

/// Swaps the last of at least two picks for the best relay of a region nothing was measured
/// to from the client's network, when something was measured and every pick's region is
/// measured; answers the explorer's position. The replaced pick is the worst one, never the
/// best, and the explorer's region is new to the answer, so it keeps its regional spread.
fn explore(
    picks: &mut [select::Pick],
    scored: &[Scored<'_>],
    client: &Client<'_>,
) -> Option<usize> {
    // Scoring already looked the region up: a usable measurement made the source `Measured`.
    let measured = |s: &Scored<'_>| s.source == RttSource::Measured;
    if client.measured.is_empty() || picks.len() < 2 {
        return None;
    }
    let all_measured = picks
        .iter()
        .all(|p| scored.get(p.position).is_some_and(measured));
    if !all_measured {
        return None;
    }
    let (position, _) = scored
        .iter()
        .enumerate()
        .filter(|(_, s)| !measured(s))
        .min_by(|(_, a), (_, b)| a.cmp(b))?;
    let last = picks.last_mut()?;
    *last = select::Pick {
        position,
        for_diversity: false,
    };
    Some(position)
}

fn exclusion(candidate: &Candidate, load: Load, config: &RankConfig) -> Option<ExclusionReason> {
    if candidate.draining {
        Some(ExclusionReason::Draining)
    } else if candidate.heartbeat_age > config.stale_after {
        Some(ExclusionReason::Stale {
            age: candidate.heartbeat_age,
        })
    } else if load.value >= 1.0 {
        Some(ExclusionReason::OverCapacity)
    } else if !on_globe(candidate.lat, candidate.lon) {
        Some(ExclusionReason::InvalidPosition)
    } else {
        None
    }
}

/// `contains` is false for NaN, so NaN is off the globe too.
fn on_globe(lat: f64, lon: f64) -> bool {
    (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)
}

/// The one load formula, shared with the relay's choice of siblings.
type Load = geoturn_shared::load::Load;

fn load_of(c: &Candidate) -> Load {
    Load::of(c.allocations, c.capacity_allocations, c.bps, c.capacity_bps)
}

/// Where the RTT estimate of a relay came from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RttSource {
    Distance,
    Matrix,
    /// Measured by the relays from the client's network.
    Measured,
    /// Unknown client: in the default region (true) or not.
    Unknown {
        default_region: bool,
    },
}

/// An eligible relay with its numbers, before explanation.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scored<'a> {
    candidate: &'a Candidate,
    index: usize,
    /// Measured for every relay ranked by distance; for matrix-ranked ones only when chosen.
    distance_km: Option<f64>,
    rtt_ms: f64,
    source: RttSource,
    load: Load,
    score: f64,
}

impl Scored<'_> {
    /// Total order: groups (measured or estimated; unknown place in the default region;
    /// unknown place elsewhere), score, RTT, load, id, region, input position.
    /// `total_cmp` keeps it total even if a bad configuration produced NaN.
    fn cmp(&self, other: &Self) -> Ordering {
        // For a client of unknown place the default region's "0 ms" is a guess, not an
        // estimate: a measured region comes before it, and both before the other regions.
        let group = |s: &Self| match s.source {
            RttSource::Measured | RttSource::Distance | RttSource::Matrix => 0u8,
            RttSource::Unknown {
                default_region: true,
            } => 1,
            RttSource::Unknown {
                default_region: false,
            } => 2,
        };
        let id = |s: &Self| (&s.candidate.id, &s.candidate.region);
        group(self)
            .cmp(&group(other))
            .then(self.score.total_cmp(&other.score))
            .then(self.rtt_ms.total_cmp(&other.rtt_ms))
            .then(self.load.value.total_cmp(&other.load.value))
            .then_with(|| id(self).cmp(&id(other)))
            .then(self.index.cmp(&other.index))
    }
}

impl select::Regional for Scored<'_> {
    fn region(&self) -> &str {
        &self.candidate.region
    }
}

/// The client's position, checked, with its matrix row and what was measured from its network.
struct Client<'a> {
    position: Option<distance::Origin>,
    region: Option<&'a str>,
    matrix_row: HashMap<&'a str, f64>,
    measured: &'a MeasuredRtts,
}

impl<'a> Client<'a> {
    fn new(
        location: &'a ClientLocation,
        measured: &'a MeasuredRtts,
        config: &'a RankConfig,
    ) -> Self {
        match location {
            // A position off the globe is no position: rank as if unknown rather than by NaN.
            ClientLocation::Known { lat, lon, region } if on_globe(*lat, *lon) => {
                let region = region.as_deref();
                Self {
                    position: Some(distance::Origin::new(*lat, *lon)),
                    region,
                    matrix_row: region.map(|r| config.matrix_row(r)).unwrap_or_default(),
                    measured,
                }
            }
            _ => Self {
                position: None,
                region: None,
                matrix_row: HashMap::new(),
                measured,
            },
        }
    }

    /// The usable measurement for `region`, if any.
    fn measured_rtt(&self, region: &str) -> Option<f64> {
        if self.measured.is_empty() {
            return None;
        }
        self.measured
            .get(region)
            .map(|m| m.rtt_ms)
            .filter(|rtt| rtt.is_finite() && *rtt >= 0.0)
    }

    fn score<'c>(
        &self,
        index: usize,
        c: &'c Candidate,
        load: Load,
        config: &RankConfig,
    ) -> Scored<'c> {
        let penalty = config.load_weight_ms * load.value * load.value;
        // A measurement beats any estimate, and needs no position.
        if let Some(rtt_ms) = self.measured_rtt(&c.region) {
            return Scored {
                candidate: c,
                index,
                distance_km: None,
                rtt_ms,
                source: RttSource::Measured,
                load,
                score: rtt_ms + penalty,
            };
        }
        let Some(origin) = self.position else {
            let default_region = config.default_region.as_deref() == Some(c.region.as_str());
            // Outside the default region a relay costs as much as a fully loaded one, so every
            // default-region relay (load < 1) scores below every other and scores stay sorted.
            let offset = if default_region {
                0.0
            } else {
                config.load_weight_ms
            };
            return Scored {
                candidate: c,
                index,
                distance_km: None,
                rtt_ms: 0.0,
                source: RttSource::Unknown { default_region },
                load,
                score: offset + penalty,
            };
        };
        // With a matrix entry the distance is only for the explanation: `explain` measures it
        // for the chosen few rather than paying the trigonometry for every relay here.
        let (distance_km, rtt_ms, source) = match self.matrix_row.get(c.region.as_str()) {
            Some(&rtt) => (None, rtt, RttSource::Matrix),
            None => {
                let km = origin.km_to_unit(c.unit_vector.get(c.lat, c.lon));
                let rtt =
                    distance::estimated_rtt_ms(km, config.route_inflation, config.fibre_km_per_ms);
                (Some(km), rtt, RttSource::Distance)
            }
        };
        Scored {
            candidate: c,
            index,
            distance_km,
            rtt_ms,
            source,
            load,
            score: rtt_ms + penalty,
        }
    }
}
