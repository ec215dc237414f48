//! The fleet as operators see it: `GET /v1/relays` answers it and `GET /v1/events` pushes it.

use geoturn_geo::Candidate;
use geoturn_shared::registry::{RelayRecord, RelayState};

use crate::snapshot::Snapshot;
use crate::state::AppState;

/// The load snapshot as `GET /v1/relays` answers it and `GET /v1/events` pushes it: every
/// record plus its heartbeat age and staleness at the read, a relay the API was told is
/// draining shown draining before its own heartbeat says so, the stale limit, and whether the
/// registry could be read. Each relay carries its record's `addresses` and its TURN `urls`
/// (what the dashboard shows). Names are camelCase and times RFC 3339, as in every answer of
/// the API; durations are whole milliseconds named `…Ms`.
pub(crate) fn fleet_json(state: &AppState, snap: &Snapshot) -> serde_json::Value {
    let stale_after = state.config.rank.stale_after;
    let relays: Vec<_> = snap
        .relays
        .iter()
        .zip(&snap.candidates)
        .map(|(r, c)| {
            let state = shown_state(r, c);
            serde_json::json!({
                "id": r.id,
                "region": r.region,
                "lat": r.lat,
                "lon": r.lon,
                "state": state.as_str(),
                "version": r.version,
                "addresses": r.addresses,
                "urls": r.addresses.turn_urls(),
                "allocations": r.allocations,
                "capacityAllocations": r.capacity_allocations,
                "capacityMbps": r.capacity_mbps,
                "bpsIn": r.bps_in,
                "bpsOut": r.bps_out,
                "ppsIn": r.pps_in,
                "ppsOut": r.pps_out,
                "cpu": r.cpu,
                "startedAt": crate::rfc3339::format_utc_ms(r.started_at_ms),
                "updatedAt": crate::rfc3339::format_utc_ms(r.updated_at_ms),
                "heartbeatAgeMs": u64::try_from(c.heartbeat_age.as_millis()).unwrap_or(u64::MAX),
                "stale": c.heartbeat_age > stale_after,
            })
        })
        .collect();
    serde_json::json!({
        "relays": relays,
        "fetchedAt": crate::rfc3339::format_utc_ms(snap.fetched_at_ms),
        "staleAfterMs": u64::try_from(stale_after.as_millis()).unwrap_or(u64::MAX),
        "stale": snap.stale.is_some(),
        "error": snap.stale.as_ref().map(|s| s.error.clone()),
    })
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
