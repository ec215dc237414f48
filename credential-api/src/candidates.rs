//! Registry records as the ranking's input.

use std::time::Duration;

use geoturn_geo::Candidate;
use geoturn_shared::registry::{RelayRecord, RelayState};

/// A relay's registry record as a ranking candidate, its heartbeat age taken at `now_ms`.
///
/// Units: the record's `bps_in`/`bps_out` are bits per second of relayed payload (client → peer
/// and peer → client) and `capacity_mbps` is megabits per second for that traffic, so the
/// utilisation compares their sums.
pub fn candidate(r: &RelayRecord, now_ms: u64) -> Candidate {
    Candidate {
        id: r.id.clone(),
        region: r.region.clone(),
        lat: r.lat,
        lon: r.lon,
        allocations: r.allocations,
        capacity_allocations: r.capacity_allocations,
        bps: r.bps_in.saturating_add(r.bps_out),
        capacity_bps: r.capacity_mbps.saturating_mul(1_000_000),
        draining: !matches!(r.state, RelayState::Active),
        // The relay's clock stamped the record; skew shifts staleness by the same amount.
        heartbeat_age: Duration::from_millis(now_ms.saturating_sub(r.updated_at_ms)),
        unit_vector: Default::default(),
    }
}
