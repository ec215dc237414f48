//! The fleet's recent past, kept in memory by each API instance for the dashboard's charts
//! (`GET /v1/history`): fleet totals, per-region and per-relay series of allocations and
//! relayed bit/s, sampled from the load snapshots.
//!
//! Data only, no I/O and no clock: [`History::record`] takes the snapshot and the time it was
//! read, so tests drive it with any timeline. Each series is a ring of at most [`POINTS`]
//! points, one per step (`--history-step-ms`, 10 s by default, so an hour). A step holds the
//! last snapshot read in it (these are gauges: the newest value is the truest, and a step's
//! point then equals what the page computes itself from the last live snapshot it saw). A
//! snapshot the API could not refresh (registry down) is not recorded: the chart shows a gap
//! rather than a flat line of old numbers.
//!
//! Why 10 s × 360: the snapshot is read every second and the relays heartbeat every 2 s, so a
//! step of 10 s loses nothing a person reads off a chart an hour wide, and 360 points is one per
//! pixel of a chart 360 pixels wide. It is also what keeps the memory bound below small.
//!
//! # Memory bound
//! At most `1 + MAX_REGIONS + MAX_RELAYS` series of at most [`POINTS`] points of
//! `size_of::<Point>()` = 48 bytes: (1 + 100 + 1 000) × 360 × 48 B ≈ 19 MB with a fleet of a
//! thousand relays or more ([`History::max_bytes`], plus the ids and map overhead, a few
//! hundred bytes per series); a fleet of 20 relays in 4 regions uses about 430 KB. New relays
//! beyond [`MAX_RELAYS`] (regions beyond [`MAX_REGIONS`]) take the place of one that has left,
//! or are not tracked (counted in `untrackedRelays`); a relay that left keeps its series until
//! its last point is older than the window, then it is dropped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use geoturn_shared::registry::RelayState;
use serde::Serialize;

use crate::rfc3339::Timestamp;
use crate::snapshot::Snapshot;

/// Points one series holds: an hour at the default step.
pub const POINTS: usize = 360;

/// The default step between points.
pub const DEFAULT_STEP: Duration = Duration::from_secs(10);

/// Relays with a series of their own at once.
pub const MAX_RELAYS: usize = 1_000;

/// Regions with a series of their own at once.
pub const MAX_REGIONS: usize = 100;

/// One step of one series: the relays it covers, as of the last snapshot read in the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Point {
    /// Start of the step, Unix ms (a multiple of the step).
    pub t_ms: u64,
    /// Allocations held.
    pub allocations: u64,
    /// Relayed bit/s, client → peer.
    pub bps_in: u64,
    /// Relayed bit/s, peer → client.
    pub bps_out: u64,
    /// Relays active (heartbeating, taking allocations).
    pub active: u32,
    /// Relays draining.
    pub draining: u32,
    /// Relays whose heartbeat is older than the stale limit.
    pub stale: u32,
}

impl Point {
    fn add(&mut self, relay: &RelaySample) {
        self.allocations = self.allocations.saturating_add(relay.allocations);
        self.bps_in = self.bps_in.saturating_add(relay.bps_in);
        self.bps_out = self.bps_out.saturating_add(relay.bps_out);
        let count = match relay.status {
            Status::Active => &mut self.active,
            Status::Draining => &mut self.draining,
            Status::Stale => &mut self.stale,
        };
        *count = count.saturating_add(1);
    }
}

/// What the dashboard shows a relay as: stale first (its numbers are old), then its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Heartbeating and taking allocations.
    Active,
    /// Finishing its allocations, taking no new ones.
    Draining,
    /// No heartbeat within the stale limit.
    Stale,
}

/// One relay in one snapshot, as the history needs it.
#[derive(Debug, Clone)]
pub struct RelaySample {
    /// Relay id.
    pub id: String,
    /// Its region.
    pub region: String,
    /// Active, draining or stale.
    pub status: Status,
    /// Allocations held.
    pub allocations: u64,
    /// Relayed bit/s in.
    pub bps_in: u64,
    /// Relayed bit/s out.
    pub bps_out: u64,
}

impl RelaySample {
    /// The relays of `snap` as `GET /v1/relays` shows them: a relay the API was told is draining
    /// counts as draining, one whose heartbeat is older than `stale_after` as stale.
    pub fn from_snapshot(snap: &Snapshot, stale_after: Duration) -> Vec<Self> {
        snap.relays
            .iter()
            .zip(&snap.candidates)
            .map(|(r, c)| Self {
                id: r.id.clone(),
                region: r.region.clone(),
                status: if c.heartbeat_age > stale_after {
                    Status::Stale
                } else if crate::fleet::shown_state(r, c) == RelayState::Draining {
                    Status::Draining
                } else {
                    Status::Active
                },
                allocations: r.allocations,
                bps_in: r.bps_in,
                bps_out: r.bps_out,
            })
            .collect()
    }
}

/// A ring of points, oldest first, in increasing time.
#[derive(Debug, Clone, Default)]
struct Series {
    region: String,
    points: VecDeque<Point>,
}

impl Series {
    fn new(region: &str) -> Self {
        Self {
            region: region.to_owned(),
            points: VecDeque::with_capacity(POINTS),
        }
    }

    /// Stores `point` as its step's: replaces the newest point when it is of the same step,
    /// is dropped when older (a clock that went back: the ring stays in time order).
    fn put(&mut self, point: Point) {
        match self.points.back_mut() {
            Some(last) if last.t_ms > point.t_ms => {}
            Some(last) if last.t_ms == point.t_ms => *last = point,
            _ => {
                if self.points.len() == POINTS {
                    self.points.pop_front();
                }
                self.points.push_back(point);
            }
        }
    }

    fn last_t(&self) -> u64 {
        self.points.back().map_or(0, |p| p.t_ms)
    }

    /// Drops points before `cutoff`; true when none is left.
    fn prune(&mut self, cutoff: u64) -> bool {
        while self.points.front().is_some_and(|p| p.t_ms < cutoff) {
            self.points.pop_front();
        }
        self.points.is_empty()
    }
}

/// A bounded set of named series (regions, or relays): at most `cap`.
#[derive(Debug, Default)]
struct Family {
    cap: usize,
    series: HashMap<String, Series>,
    /// Names of the last sample that got no series (the cap was reached).
    untracked: usize,
}

impl Family {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            series: HashMap::new(),
            untracked: 0,
        }
    }

    /// Stores one step's point per name (name → region, point). Names with a series go first,
    /// so that a new name only ever takes the place of one absent from this step.
    fn record(&mut self, t: u64, step: BTreeMap<&str, (&str, Point)>) {
        self.untracked = 0;
        let (known, new): (Vec<_>, Vec<_>) = step
            .into_iter()
            .partition(|(name, _)| self.series.contains_key(*name));
        for (name, (region, point)) in known.into_iter().chain(new) {
            if !self.series.contains_key(name) && !self.make_room(t) {
                self.untracked += 1;
                continue;
            }
            let series = self
                .series
                .entry(name.to_owned())
                .or_insert_with(|| Series::new(region));
            region.clone_into(&mut series.region);
            series.put(point);
        }
    }

    /// Whether a new series fits: under the cap, or after dropping the one updated longest
    /// ago when it is not part of step `t` (a relay or region that has left).
    fn make_room(&mut self, t: u64) -> bool {
        if self.series.len() < self.cap {
            return true;
        }
        let oldest = self
            .series
            .iter()
            .filter(|(_, s)| s.last_t() < t)
            .min_by_key(|(_, s)| s.last_t())
            .map(|(name, _)| name.clone());
        match oldest {
            Some(name) => {
                self.series.remove(&name);
                true
            }
            None => false,
        }
    }

    fn prune(&mut self, cutoff: u64) {
        self.series.retain(|_, s| !s.prune(cutoff));
    }
}

/// The last [`POINTS`] steps of the fleet, its regions and its relays.
#[derive(Debug)]
pub struct History {
    step_ms: u64,
    fleet: Series,
    regions: Family,
    relays: Family,
}

impl History {
    /// An empty history with one point per `step` (at least a millisecond).
    pub fn new(step: Duration) -> Self {
        Self {
            step_ms: u64::try_from(step.as_millis()).unwrap_or(u64::MAX).max(1),
            fleet: Series::new(""),
            regions: Family::new(MAX_REGIONS),
            relays: Family::new(MAX_RELAYS),
        }
    }

    /// The step between points, ms.
    pub fn step_ms(&self) -> u64 {
        self.step_ms
    }

    /// The most bytes the points of every series can take ([`MAX_RELAYS`] relays and
    /// [`MAX_REGIONS`] regions of [`POINTS`] points), ids and map overhead aside.
    pub const fn max_bytes() -> usize {
        (1 + MAX_REGIONS + MAX_RELAYS) * POINTS * std::mem::size_of::<Point>()
    }

    /// Records the relays of a snapshot read at `now_ms` into the step it falls in, and drops
    /// what is older than the window.
    pub fn record(&mut self, now_ms: u64, relays: &[RelaySample]) {
        let t = now_ms - now_ms % self.step_ms;
        if self.fleet.last_t() > t {
            // Older than what is recorded (the clock went back): keep the rings in order.
            return;
        }
        let window = self.step_ms.saturating_mul(POINTS as u64 - 1);
        let cutoff = t.saturating_sub(window);
        self.fleet.prune(cutoff);
        self.regions.prune(cutoff);
        self.relays.prune(cutoff);
        let empty = Point {
            t_ms: t,
            ..Point::default()
        };
        let mut fleet = empty;
        let mut regions: BTreeMap<&str, (&str, Point)> = BTreeMap::new();
        let mut each: BTreeMap<&str, (&str, Point)> = BTreeMap::new();
        for relay in relays {
            fleet.add(relay);
            for (map, name) in [(&mut regions, &relay.region), (&mut each, &relay.id)] {
                map.entry(name)
                    .or_insert((&relay.region, empty))
                    .1
                    .add(relay);
            }
        }
        self.fleet.put(fleet);
        self.regions.record(t, regions);
        self.relays.record(t, each);
    }

    /// The fleet's series, oldest first.
    pub fn fleet(&self) -> impl Iterator<Item = &Point> {
        self.fleet.points.iter()
    }

    /// Every region's series, by name.
    pub fn regions(&self) -> impl Iterator<Item = (&str, impl Iterator<Item = &Point>)> {
        let mut names: Vec<&String> = self.regions.series.keys().collect();
        names.sort();
        names
            .into_iter()
            .map(|n| (n.as_str(), self.regions.series[n].points.iter()))
    }

    /// One relay's series and its region (as last recorded), if it has one.
    pub fn relay(&self, id: &str) -> Option<(&str, impl Iterator<Item = &Point>)> {
        self.relays
            .series
            .get(id)
            .map(|s| (s.region.as_str(), s.points.iter()))
    }

    /// Relays with a series now.
    pub fn tracked_relays(&self) -> usize {
        self.relays.series.len()
    }

    /// Relays of the last sample without a series (beyond [`MAX_RELAYS`]).
    pub fn untracked_relays(&self) -> usize {
        self.relays.untracked
    }

    /// Regions of the last sample without a series (beyond [`MAX_REGIONS`]).
    pub fn untracked_regions(&self) -> usize {
        self.regions.untracked
    }

    /// The answer of `GET /v1/history`: the fleet and every region, or (`relay` given) that
    /// relay alone; `None` when that relay has no series.
    pub fn answer(&self, now_ms: u64, relay: Option<&str>) -> Option<HistoryAnswer> {
        let points = |it: &mut dyn Iterator<Item = &Point>| it.map(PointJson::from).collect();
        let (fleet, regions, relay) = match relay {
            None => (
                Some(points(&mut self.fleet())),
                Some(
                    self.regions()
                        .map(|(name, mut it)| RegionHistory {
                            region: name.to_owned(),
                            points: points(&mut it),
                        })
                        .collect(),
                ),
                None,
            ),
            Some(id) => {
                let (region, mut it) = self.relay(id)?;
                let relay = RelayHistory {
                    id: id.to_owned(),
                    region: region.to_owned(),
                    points: points(&mut it),
                };
                (None, None, Some(relay))
            }
        };
        Some(HistoryAnswer {
            step_ms: self.step_ms,
            points: POINTS,
            window_ms: self.step_ms.saturating_mul(POINTS as u64),
            generated_at: Timestamp::millis(now_ms),
            max_relays: MAX_RELAYS,
            max_regions: MAX_REGIONS,
            untracked_relays: self.untracked_relays(),
            untracked_regions: self.untracked_regions(),
            fleet,
            regions,
            relay,
        })
    }
}

/// `GET /v1/history`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryAnswer {
    /// Milliseconds between points (`--history-step-ms`).
    pub step_ms: u64,
    /// Most points a series holds.
    pub points: usize,
    /// `stepMs × points`: how far back a series reaches.
    pub window_ms: u64,
    /// When this answer was made, RFC 3339.
    pub generated_at: Timestamp,
    /// Most relays with a series.
    pub max_relays: usize,
    /// Most regions with a series.
    pub max_regions: usize,
    /// Relays of the last snapshot without a series (beyond `maxRelays`).
    pub untracked_relays: usize,
    /// Regions of the last snapshot without a series (beyond `maxRegions`).
    pub untracked_regions: usize,
    /// The whole fleet, oldest first (without `?relay=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<Vec<PointJson>>,
    /// Every region, by name (without `?relay=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<RegionHistory>>,
    /// The relay asked for (with `?relay=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayHistory>,
}

/// One region's series.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionHistory {
    /// Region name.
    pub region: String,
    /// Oldest first.
    pub points: Vec<PointJson>,
}

/// One relay's series.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelayHistory {
    /// Relay id.
    pub id: String,
    /// Its region, as last recorded.
    pub region: String,
    /// Oldest first.
    pub points: Vec<PointJson>,
}

/// One point as JSON.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = HistoryPoint)]
pub struct PointJson {
    /// Start of the step, RFC 3339 with milliseconds.
    pub at: Timestamp,
    /// Allocations held.
    pub allocations: u64,
    /// Relayed bit/s, client → peer.
    pub bps_in: u64,
    /// Relayed bit/s, peer → client.
    pub bps_out: u64,
    /// Relays active (for one relay: 1 or 0).
    pub active: u32,
    /// Relays draining.
    pub draining: u32,
    /// Relays stale.
    pub stale: u32,
}

impl From<&Point> for PointJson {
    fn from(p: &Point) -> Self {
        Self {
            at: Timestamp::millis(p.t_ms),
            allocations: p.allocations,
            bps_in: p.bps_in,
            bps_out: p.bps_out,
            active: p.active,
            draining: p.draining,
            stale: p.stale,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: u64 = 10_000;
    /// A time well after 1970, on a step boundary.
    const T0: u64 = 1_700_000_000_000;

    fn relay(id: &str, region: &str, status: Status, allocations: u64) -> RelaySample {
        RelaySample {
            id: id.into(),
            region: region.into(),
            status,
            allocations,
            bps_in: allocations * 1000,
            bps_out: allocations * 2000,
        }
    }

    fn history() -> History {
        History::new(Duration::from_millis(STEP))
    }

    #[test]
    fn a_step_holds_its_last_sample_and_sums_fleet_and_regions() {
        let mut h = history();
        let a = relay("a", "eu", Status::Active, 1);
        let b = relay("b", "eu", Status::Draining, 2);
        let c = relay("c", "us", Status::Stale, 4);
        h.record(T0 + 100, std::slice::from_ref(&a));
        // Same step, later: replaces, does not add.
        h.record(T0 + 9_999, &[a.clone(), b.clone(), c.clone()]);
        h.record(T0 + STEP + 1, &[a.clone(), c.clone()]);
        let fleet: Vec<Point> = h.fleet().copied().collect();
        assert_eq!(fleet.len(), 2);
        assert_eq!(
            fleet[0],
            Point {
                t_ms: T0,
                allocations: 7,
                bps_in: 7_000,
                bps_out: 14_000,
                active: 1,
                draining: 1,
                stale: 1,
            }
        );
        assert_eq!((fleet[1].t_ms, fleet[1].allocations), (T0 + STEP, 5));
        let regions: Vec<(String, Vec<u64>)> = h
            .regions()
            .map(|(n, it)| (n.to_owned(), it.map(|p| p.allocations).collect()))
            .collect();
        assert_eq!(
            regions,
            vec![("eu".into(), vec![3, 1]), ("us".into(), vec![4, 4])]
        );
        // b left after the first step: its series keeps its one point.
        let (region, b_points) = h.relay("b").unwrap();
        assert_eq!(region, "eu");
        let b_points: Vec<Point> = b_points.copied().collect();
        assert_eq!(b_points.len(), 1);
        assert_eq!((b_points[0].draining, b_points[0].allocations), (1, 2));
        assert!(h.relay("nobody").is_none());
    }

    #[test]
    fn a_clock_that_goes_back_changes_nothing() {
        let mut h = history();
        h.record(T0 + 2 * STEP, &[relay("a", "eu", Status::Active, 5)]);
        h.record(T0, &[relay("a", "eu", Status::Active, 9)]);
        let fleet: Vec<Point> = h.fleet().copied().collect();
        assert_eq!(fleet.len(), 1);
        assert_eq!(fleet[0].allocations, 5);
    }

    #[test]
    fn points_older_than_the_window_and_relays_that_left_drop_out() {
        let mut h = history();
        h.record(T0, &[relay("gone", "eu", Status::Active, 1)]);
        let steps = POINTS as u64 + 20;
        for i in 1..steps {
            h.record(T0 + i * STEP, &[relay("stays", "us", Status::Active, i)]);
        }
        assert_eq!(h.fleet().count(), POINTS);
        assert_eq!(h.fleet().next().unwrap().t_ms, T0 + 20 * STEP);
        assert!(h.relay("gone").is_none(), "left more than the window ago");
        assert_eq!(h.regions().map(|(n, _)| n).collect::<Vec<_>>(), vec!["us"]);
        assert_eq!(h.relay("stays").unwrap().1.count(), POINTS);
    }

    #[test]
    fn relays_and_regions_are_capped_and_new_ones_take_the_place_of_those_that_left() {
        let mut h = history();
        let crowd = |n: usize, prefix: &str| -> Vec<RelaySample> {
            (0..n)
                .map(|i| {
                    relay(
                        &format!("{prefix}-{i:04}"),
                        &format!("region-{:03}", i % (MAX_REGIONS + 50)),
                        Status::Active,
                        1,
                    )
                })
                .collect()
        };
        let first = crowd(MAX_RELAYS + 500, "first");
        h.record(T0, &first);
        assert_eq!(h.tracked_relays(), MAX_RELAYS);
        assert_eq!(h.untracked_relays(), 500);
        assert_eq!(h.regions().count(), MAX_REGIONS);
        assert_eq!(h.untracked_regions(), 50);
        // The fleet counts every relay, tracked or not.
        assert_eq!(h.fleet().next().unwrap().active as usize, MAX_RELAYS + 500);
        // A new fleet a step later: the relays that left make room.
        let second = crowd(10, "second");
        h.record(T0 + STEP, &second);
        assert_eq!(h.tracked_relays(), MAX_RELAYS);
        assert_eq!(h.untracked_relays(), 0);
        assert!(h.relay("second-0009").is_some());
    }

    #[test]
    fn memory_stays_within_the_documented_bound() {
        // The doc comment's figure: 48-byte points, (1 + 100 + 1 000) × 360 of them.
        assert_eq!(std::mem::size_of::<Point>(), 48);
        assert_eq!(History::max_bytes(), 19_025_280);
        let mut h = history();
        // A window and more of a churning fleet larger than the caps (the rings wrap): each
        // step, 1 100 relays in 110 regions, ten of them new.
        for step in 0..(POINTS as u64 + 10) {
            let relays: Vec<RelaySample> = (0..1_100u64)
                .map(|i| {
                    let id = i + step * 10;
                    relay(
                        &format!("r{id}"),
                        &format!("g{}", id % 110),
                        Status::Active,
                        id,
                    )
                })
                .collect();
            h.record(T0 + step * STEP, &relays);
        }
        assert!(h.tracked_relays() <= MAX_RELAYS);
        assert!(h.regions().count() <= MAX_REGIONS);
        let series = std::iter::once(&h.fleet)
            .chain(h.regions.series.values())
            .chain(h.relays.series.values());
        let mut bytes = 0;
        for s in series {
            assert!(s.points.len() <= POINTS);
            // with_capacity(POINTS) and never pushed past it: the ring does not grow.
            assert!(s.points.capacity() < 2 * POINTS, "{}", s.points.capacity());
            bytes += s.points.len() * std::mem::size_of::<Point>();
        }
        assert!(bytes <= History::max_bytes(), "{bytes}");
    }

    #[test]
    fn the_answer_is_camel_case_with_rfc3339_times() {
        let mut h = history();
        h.record(T0 + 5, &[relay("a", "eu", Status::Active, 3)]);
        let all = serde_json::to_value(h.answer(T0 + 6, None).unwrap()).unwrap();
        assert_eq!(all["stepMs"], 10_000);
        assert_eq!(all["points"], 360);
        assert_eq!(all["windowMs"], 3_600_000);
        assert_eq!(all["generatedAt"], "2023-11-14T22:13:20.006Z");
        assert_eq!(all["fleet"][0]["at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(all["fleet"][0]["bpsOut"], 6_000);
        assert_eq!(all["regions"][0]["region"], "eu");
        assert!(all.get("relay").is_none());
        let one = serde_json::to_value(h.answer(T0 + 6, Some("a")).unwrap()).unwrap();
        assert_eq!(one["relay"]["id"], "a");
        assert_eq!(one["relay"]["points"][0]["active"], 1);
        assert!(one.get("fleet").is_none() && one.get("regions").is_none());
        assert!(h.answer(T0, Some("b")).is_none());
    }
}
