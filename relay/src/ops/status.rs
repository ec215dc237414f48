//! `/status` JSON and the load rates (bit/s and packets/s) derived from the traffic counters.

use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use super::Ops;

/// Relayed traffic per second, in both directions. "in" is client → peer, "out" is
/// peer → client (payload bytes, as the client sees them).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Rates {
    /// Bits per second client → peer.
    pub bps_in: u64,
    /// Bits per second peer → client.
    pub bps_out: u64,
    /// Packets per second client → peer.
    pub pps_in: u64,
    /// Packets per second peer → client.
    pub pps_out: u64,
}

#[derive(Debug, Default)]
struct Sample {
    at: Option<Instant>,
    counters: [u64; 4],
    rates: Rates,
}

/// Turns counter samples into rates; sampled every second by the service.
#[derive(Debug, Default)]
pub struct LoadMeter {
    inner: Mutex<Sample>,
}

impl LoadMeter {
    /// Records counters (bytes in, bytes out, packets in, packets out) seen at `now`.
    pub fn sample(&self, now: Instant, counters: [u64; 4]) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = s.at {
            let secs = now.saturating_duration_since(at).as_secs_f64();
            if secs > 0.0 {
                let d = |i: usize| {
                    let now_v = counters.get(i).copied().unwrap_or(0);
                    let then = s.counters.get(i).copied().unwrap_or(0);
                    now_v.saturating_sub(then) as f64 / secs
                };
                s.rates = Rates {
                    bps_in: (d(0) * 8.0) as u64,
                    bps_out: (d(1) * 8.0) as u64,
                    pps_in: d(2) as u64,
                    pps_out: d(3) as u64,
                };
            }
        }
        s.at = Some(now);
        s.counters = counters;
    }

    /// The latest rates.
    pub fn rates(&self) -> Rates {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).rates
    }
}

/// Sessions by transport.
#[derive(Debug, Clone, Serialize)]
pub struct Sessions {
    /// Over UDP.
    pub udp: usize,
    /// Over TCP.
    pub tcp: usize,
    /// Over TLS.
    pub tls: usize,
}

/// Drain progress.
#[derive(Debug, Clone, Serialize)]
pub struct DrainStatus {
    /// Seconds until the relay exits regardless.
    pub remaining_s: u64,
}

/// The `/status` document.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Node id.
    pub node_id: String,
    /// Region.
    pub region: String,
    /// `active` or `draining`.
    pub state: &'static str,
    /// geoturn version.
    pub version: &'static str,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Live allocations.
    pub allocations: usize,
    /// Allocation capacity.
    pub capacity_allocations: u64,
    /// Bandwidth capacity.
    pub capacity_mbps: u64,
    /// Allocations by client transport.
    pub sessions: Sessions,
    /// Live permissions.
    pub permissions: usize,
    /// Live channel bindings.
    pub channels: usize,
    /// Traffic rates.
    #[serde(flatten)]
    pub rates: Rates,
    /// Listening addresses.
    pub listeners: Listeners,
    /// Drain progress, when draining.
    pub drain: Option<DrainStatus>,
    /// `disabled`, `ok` or `unavailable`.
    pub registry: &'static str,
    /// The relay mesh: state, peers, their RTT and loss.
    pub mesh: crate::mesh::MeshStatus,
    /// The kernel fast path's counters (its traffic is also in the rates); null while off.
    pub offload: Option<crate::offload::OffloadStatus>,
}

/// Where the relay listens.
#[derive(Debug, Clone, Serialize)]
pub struct Listeners {
    /// UDP and TCP address.
    pub udp: String,
    /// TLS addresses.
    pub tls: Vec<String>,
    /// Anycast (first-contact) addresses, UDP/TCP and TLS.
    pub anycast: Vec<String>,
    /// Where anycast first contacts are sent now, best first (`udp 192.0.2.10:3478`).
    pub first_contact: Vec<String>,
}

/// Builds the status document.
pub fn status(ops: &Ops) -> Status {
    let snap = ops.relay.snapshot();
    let drain = ops.relay.drain().map(|d| DrainStatus {
        remaining_s: d
            .deadline
            .saturating_duration_since(Instant::now())
            .as_secs(),
    });
    let [udp, tcp, tls] = snap.allocations_by_transport;
    Status {
        node_id: ops.config.node_id.clone(),
        region: ops.config.region.clone(),
        state: if drain.is_some() {
            "draining"
        } else {
            "active"
        },
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: ops.started.elapsed().as_secs(),
        allocations: snap.allocations,
        capacity_allocations: ops.config.capacity_allocations,
        capacity_mbps: ops.config.capacity_mbps,
        sessions: Sessions { udp, tcp, tls },
        permissions: snap.permissions,
        channels: snap.channels,
        rates: ops.load.rates(),
        listeners: Listeners {
            udp: ops.relay.local_addr().to_string(),
            tls: ops
                .relay
                .tls_addrs()
                .iter()
                .map(|a| a.to_string())
                .collect(),
            anycast: ops
                .relay
                .anycast_addrs()
                .iter()
                .map(|a| a.to_string())
                .collect(),
            first_contact: if ops.relay.anycast_addrs().is_empty() {
                Vec::new()
            } else {
                ops.relay
                    .first_contact()
                    .iter()
                    .map(|a| format!("{:?} {}", a.transport, a.addr).to_lowercase())
                    .collect()
            },
        },
        drain,
        registry: ops.registry.as_str(),
        mesh: ops.mesh.status(),
        offload: snap.offload,
    }
}
