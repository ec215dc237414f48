//! The row of measurements in the registry: sampled and published every second (one atomic
//! pipeline, replacing the row whole), living a few seconds unless refreshed. A registry
//! outage is logged once and costs only freshness.

use std::sync::Arc;
use std::time::Duration;

use geoturn_shared::clock::unix_ms;
use geoturn_shared::registry::Registry;

use super::{MeshState, SAMPLE_EVERY, peers};

/// How long a published row lives without a refresh.
const ROW_TTL: Duration = Duration::from_secs(10);

/// Samples every peer and publishes the row, every [`SAMPLE_EVERY`], until aborted.
pub async fn row_loop(state: Arc<MeshState>, node_id: String, registry: Registry) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut down = false;
    loop {
        tick.tick().await;
        let now = unix_ms();
        peers::sample_all(&state, now);
        let row = peers::samples(&state, now);
        match registry.publish_mesh_row(&node_id, &row, ROW_TTL).await {
            Ok(()) if down => {
                tracing::info!("mesh: measurements reach the registry again");
                down = false;
            }
            Ok(()) => {}
            Err(error) if !down => {
                tracing::warn!(%error, "mesh: cannot publish measurements; retrying every second");
                down = true;
            }
            Err(_) => {}
        }
    }
}
