//! The fleet as operators see it: `GET /v1/relays` answers it and `GET /v1/events` pushes it.

use geoturn_geo::Candidate;
use geoturn_shared::registry::{RelayRecord, RelayState};

use crate::answers::{Fleet, RelayView};
use crate::rfc3339::Timestamp;
use crate::snapshot::Snapshot;
use crate::state::AppState;

/// The load snapshot as `GET /v1/relays` answers it and `GET /v1/events` pushes it: every
/// record plus its heartbeat age and staleness at the read, a relay the API was told is
/// draining shown draining before its own heartbeat says so, the stale limit, and whether the
/// registry could be read. Each relay carries its record's `addresses` and its TURN `urls`
/// (what the dashboard shows). Names are camelCase and times RFC 3339, as in every answer of
/// the API; durations are whole milliseconds named `…Ms`.
pub(crate) fn fleet_json(state: &AppState, snap: &Snapshot) -> Fleet {
    let stale_after = state.config.rank.stale_after;
    let relays = snap
        .relays
        .iter()
        .zip(&snap.candidates)
        .map(|(r, c)| RelayView {
            id: r.id.clone(),
            region: r.region.clone(),
            lat: r.lat,
            lon: r.lon,
            state: shown_state(r, c),
            version: r.version.clone(),
            addresses: r.addresses.clone(),
            urls: r.addresses.turn_urls(),
            allocations: r.allocations,
            capacity_allocations: r.capacity_allocations,
            capacity_mbps: r.capacity_mbps,
            bps_in: r.bps_in,
            bps_out: r.bps_out,
            pps_in: r.pps_in,
            pps_out: r.pps_out,
            cpu: r.cpu,
            started_at: Timestamp::millis(r.started_at_ms),
            updated_at: Timestamp::millis(r.updated_at_ms),
            heartbeat_age_ms: millis(c.heartbeat_age),
            stale: c.heartbeat_age > stale_after,
            drain_deadline: r.drain_deadline_ms.map(Timestamp::millis),
        })
        .collect();
    Fleet {
        relays,
        fetched_at: Timestamp::millis(snap.fetched_at_ms),
        stale_after_ms: millis(stale_after),
        stale: snap.stale.is_some(),
        error: snap.stale.as_ref().map(|s| s.error.clone()),
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A relay's state as operators are shown it: draining as soon as the API was told so (the
/// candidate's hint), before the relay's own heartbeat says it.
pub(crate) fn shown_state(r: &RelayRecord, c: &Candidate) -> RelayState {
    if c.draining && r.state == RelayState::Active {
        RelayState::Draining
    } else {
        r.state
    }
}
