//! The fleet as operators see it: `GET /v1/relays` answers it and `GET /v1/events` pushes it.

use geoturn_shared::registry::RelayState;

use crate::snapshot::Snapshot;
use crate::state::AppState;

/// The load snapshot as `GET /v1/relays` answers it and `GET /v1/events` pushes it: every
/// record plus its heartbeat age and staleness at the read, a relay the API was told is
/// draining shown draining before its own heartbeat says so, the stale limit, and whether the
/// registry could be read. Each relay carries its record's `addresses` and, as before them,
/// its TURN `urls` (what the dashboard shows).
pub(crate) fn fleet_json(state: &AppState, snap: &Snapshot) -> serde_json::Value {
    let stale_after = state.config.rank.stale_after;
    let relays: Vec<_> = snap
        .relays
        .iter()
        .zip(&snap.candidates)
        .map(|(r, c)| {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("urls".into(), r.addresses.turn_urls().into());
                o.insert(
                    "heartbeat_age_ms".into(),
                    u64::try_from(c.heartbeat_age.as_millis())
                        .unwrap_or(u64::MAX)
                        .into(),
                );
                o.insert("stale".into(), (c.heartbeat_age > stale_after).into());
                if c.draining && r.state == RelayState::Active {
                    o.insert("state".into(), RelayState::Draining.as_str().into());
                }
            }
            v
        })
        .collect();
    serde_json::json!({
        "relays": relays,
        "fetchedAt": crate::rfc3339::format_utc(snap.fetched_at_ms / 1000),
        "fetchedAtMs": snap.fetched_at_ms,
        "staleAfterMs": u64::try_from(stale_after.as_millis()).unwrap_or(u64::MAX),
        "stale": snap.stale.is_some(),
        "error": snap.stale.as_ref().map(|s| s.error.clone()),
    })
}
