//! Prometheus text exposition of the relay's counters (prefix `geoturn_`). Counters move as
//! packets flow (workers publish every 500 ms), not when sessions end.

use std::fmt::Write as _;

use geoturn_relay_proto::auth::AuthFailure;
use geoturn_relay_proto::server::{DropReason, Limit};

use super::Ops;
use crate::net::worker::ShardSnapshot;

/// Every metric name geoturn exports (dashboards and alert rules are checked against it).
pub const METRIC_NAMES: &[&str] = &[
    "geoturn_up",
    "geoturn_build_info",
    "geoturn_uptime_seconds",
    "geoturn_allocations",
    "geoturn_permissions",
    "geoturn_channels",
    "geoturn_allocations_created_total",
    "geoturn_allocations_deleted_total",
    "geoturn_allocations_expired_total",
    "geoturn_relayed_packets_total",
    "geoturn_relayed_bytes_total",
    "geoturn_auth_failures_total",
    "geoturn_peers_denied_total",
    "geoturn_dropped_packets_total",
    "geoturn_limit_refusals_total",
    "geoturn_send_errors_total",
    "geoturn_redirects_total",
    "geoturn_draining",
    "geoturn_capacity_allocations",
    "geoturn_capacity_bytes_per_second",
    "geoturn_registry_up",
];

struct Writer(String);

impl Writer {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn value(&mut self, name: &str, labels: &[(&str, &str)], v: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                // Label values here are fixed identifiers or validated names: no escaping needed.
                let _ = write!(self.0, "{k}=\"{val}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {v}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, v: impl std::fmt::Display) {
        self.header(name, kind, help);
        self.value(name, &[], v);
    }
}

/// What one scrape reads from the running relay: the encoder below is a pure function of it,
/// so tests and the bench render a known state without a live relay.
#[derive(Debug, Clone, Default)]
pub struct RelayState {
    /// Every worker's latest counters and gauges, summed.
    pub snapshot: ShardSnapshot,
    /// `--node-id`.
    pub node_id: String,
    /// `--region`.
    pub region: String,
    /// Whole seconds since start.
    pub uptime_seconds: u64,
    /// A drain is in progress.
    pub draining: bool,
    /// `--capacity-allocations`.
    pub capacity_allocations: u64,
    /// `--capacity-mbps`, in bytes per second.
    pub capacity_bytes_per_second: u64,
    /// Registry reachability; `None` without a registry or before the first heartbeat.
    pub registry_up: Option<bool>,
}

impl RelayState {
    /// Reads the running relay.
    pub fn of(ops: &Ops) -> Self {
        Self {
            snapshot: ops.relay.snapshot(),
            node_id: ops.config.node_id.clone(),
            region: ops.config.region.clone(),
            uptime_seconds: ops.started.elapsed().as_secs(),
            draining: ops.relay.drain().is_some(),
            capacity_allocations: ops.config.capacity_allocations,
            capacity_bytes_per_second: ops.config.capacity_mbps.saturating_mul(125_000),
            registry_up: ops.registry.is_up(),
        }
    }
}

/// Renders the metrics page: the relay's own metrics, then the `process_*` ones (descriptors
/// above all: every allocation and TCP client holds one).
pub fn render(ops: &Ops) -> String {
    let mut out = encode(&RelayState::of(ops));
    out.push_str(&geoturn_shared::process_metrics::render());
    out
}

/// The relay's own metrics for `state`, in Prometheus text format 0.0.4.
pub fn encode(state: &RelayState) -> String {
    let snap = &state.snapshot;
    let s = &snap.stats;
    let node = state.node_id.as_str();
    let region = state.region.as_str();
    let mut w = Writer(String::with_capacity(4096));
    w.single("geoturn_up", "gauge", "1 while the relay runs.", 1);
    w.header(
        "geoturn_build_info",
        "gauge",
        "Version, node and region of this relay.",
    );
    w.value(
        "geoturn_build_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("node_id", node),
            ("region", region),
        ],
        1,
    );
    w.single(
        "geoturn_uptime_seconds",
        "gauge",
        "Seconds since the relay started.",
        state.uptime_seconds,
    );
    w.header(
        "geoturn_allocations",
        "gauge",
        "Live allocations by client transport.",
    );
    for (t, n) in ["udp", "tcp", "tls"]
        .iter()
        .zip(snap.allocations_by_transport)
    {
        w.value("geoturn_allocations", &[("transport", t)], n);
    }
    w.single(
        "geoturn_permissions",
        "gauge",
        "Live permissions.",
        snap.permissions,
    );
    w.single(
        "geoturn_channels",
        "gauge",
        "Live channel bindings.",
        snap.channels,
    );
    w.single(
        "geoturn_allocations_created_total",
        "counter",
        "Allocations created.",
        s.allocations_created,
    );
    w.single(
        "geoturn_allocations_deleted_total",
        "counter",
        "Allocations deleted by the client (Refresh with lifetime 0).",
        s.allocations_deleted,
    );
    w.single(
        "geoturn_allocations_expired_total",
        "counter",
        "Allocations that expired.",
        s.allocations_expired,
    );
    w.header(
        "geoturn_relayed_packets_total",
        "counter",
        "Packets relayed, by direction.",
    );
    w.value(
        "geoturn_relayed_packets_total",
        &[("direction", "to_peer")],
        s.packets_to_peer,
    );
    w.value(
        "geoturn_relayed_packets_total",
        &[("direction", "to_client")],
        s.packets_to_client,
    );
    w.header(
        "geoturn_relayed_bytes_total",
        "counter",
        "Payload bytes relayed, by direction.",
    );
    w.value(
        "geoturn_relayed_bytes_total",
        &[("direction", "to_peer")],
        s.bytes_to_peer,
    );
    w.value(
        "geoturn_relayed_bytes_total",
        &[("direction", "to_client")],
        s.bytes_to_client,
    );
    w.header(
        "geoturn_auth_failures_total",
        "counter",
        "Requests refused by authentication, by reason (challenge = the normal first 401).",
    );
    for reason in AuthFailure::ALL {
        let n = s.auth_failures.get(reason.as_str()).copied().unwrap_or(0);
        w.value(
            "geoturn_auth_failures_total",
            &[("reason", reason.as_str())],
            n,
        );
    }
    w.single(
        "geoturn_peers_denied_total",
        "counter",
        "Peer addresses refused by the peer policy.",
        s.peers_denied,
    );
    w.header(
        "geoturn_dropped_packets_total",
        "counter",
        "Packets dropped without a response, by reason.",
    );
    for reason in DropReason::ALL {
        w.value(
            "geoturn_dropped_packets_total",
            &[("reason", reason.as_str())],
            s.drops(reason),
        );
    }
    w.header(
        "geoturn_limit_refusals_total",
        "counter",
        "Requests refused (486 or 508) because a limit was reached, by limit: user_quota, \
         source_quota, allocations, permissions, new_peers, peer_connections.",
    );
    for limit in Limit::ALL {
        w.value(
            "geoturn_limit_refusals_total",
            &[("limit", limit.as_str())],
            s.refusals(limit),
        );
    }
    w.single(
        "geoturn_send_errors_total",
        "counter",
        "Datagrams the kernel refused (socket buffer full).",
        snap.send_errors,
    );
    w.header(
        "geoturn_redirects_total",
        "counter",
        "Allocates answered with 300 Try Alternate, by reason: drain (to a sibling while \
         draining), anycast (a first contact sent to a unicast relay), anycast_refused (403: \
         no unicast relay known).",
    );
    for (reason, n) in [
        ("drain", s.redirects),
        ("anycast", s.first_contact_redirects),
        ("anycast_refused", s.first_contact_refused),
    ] {
        w.value("geoturn_redirects_total", &[("reason", reason)], n);
    }
    w.single(
        "geoturn_draining",
        "gauge",
        "1 while draining.",
        u8::from(state.draining),
    );
    w.single(
        "geoturn_capacity_allocations",
        "gauge",
        "Allocations this relay is sized for.",
        state.capacity_allocations,
    );
    w.single(
        "geoturn_capacity_bytes_per_second",
        "gauge",
        "Relayed bandwidth this relay is sized for, bytes per second (--capacity-mbps x 125000).",
        state.capacity_bytes_per_second,
    );
    // No sample without a registry (nothing to alert on), nor before the first heartbeat.
    w.header(
        "geoturn_registry_up",
        "gauge",
        "1 while heartbeats reach the registry (Redis), 0 while it is unreachable.",
    );
    if let Some(up) = state.registry_up {
        w.value("geoturn_registry_up", &[], u8::from(up));
    }
    w.0
}

/// A busy relay's state: every labelled family populated, counters in the billions (the test
/// below and `benches/metrics.rs` render it).
pub fn sample_state() -> RelayState {
    let mut stats = geoturn_relay_proto::server::ServerStats::default();
    stats.allocations_created = 1_234_567;
    stats.allocations_deleted = 1_100_000;
    stats.allocations_expired = 120_000;
    stats.peers_denied = 42;
    stats.redirects = 7;
    stats.first_contact_redirects = 31_000;
    stats.first_contact_refused = 2;
    stats.packets_to_peer = 9_876_543_210;
    stats.bytes_to_peer = 1_975_308_642_000;
    stats.packets_to_client = 9_876_000_000;
    stats.bytes_to_client = 1_975_200_000_000;
    for (i, reason) in AuthFailure::ALL.iter().enumerate() {
        stats
            .auth_failures
            .insert(reason.as_str(), 1000 * i as u64 + 3);
    }
    for (i, reason) in DropReason::ALL.iter().enumerate() {
        for _ in 0..=i {
            stats.drop_packet(*reason);
        }
    }
    for limit in Limit::ALL {
        stats.refuse(limit);
    }
    RelayState {
        snapshot: ShardSnapshot {
            allocations: 16_000,
            allocations_by_transport: [12_000, 3_000, 1_000],
            permissions: 20_000,
            channels: 15_500,
            stats,
            send_errors: 12,
            taken: None,
        },
        node_id: "relay-fra-1".into(),
        region: "eu-central".into(),
        uptime_seconds: 864_000,
        draining: false,
        capacity_allocations: 16_000,
        capacity_bytes_per_second: 1_250_000_000,
        registry_up: Some(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole page for a known state, byte for byte: names, labels, HELP and TYPE lines
    /// and their order are what dashboards, alerts and scrapers depend on.
    #[test]
    fn the_page_for_a_known_state_is_the_golden_one() {
        // The crate version changes with releases, not with the page's shape.
        let text = encode(&sample_state()).replace(
            concat!("version=\"", env!("CARGO_PKG_VERSION"), "\""),
            "version=\"VERSION\"",
        );
        // GEOTURN_BLESS=1 rewrites the file after a deliberate change (then review its diff).
        if std::env::var_os("GEOTURN_BLESS").is_some() {
            std::fs::write(
                concat!(env!("CARGO_MANIFEST_DIR"), "/src/ops/metrics.golden"),
                &text,
            )
            .unwrap();
        }
        assert_eq!(text, include_str!("metrics.golden"));
    }

    #[test]
    fn each_family_has_one_help_and_one_type_line_before_its_samples() {
        let text = encode(&sample_state());
        let mut seen = std::collections::BTreeSet::new();
        let mut current = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap();
                assert!(seen.insert(current), "{current} typed twice");
            } else if !line.starts_with('#') {
                let name = &line[..line.find(['{', ' ']).unwrap()];
                assert_eq!(name, current, "{line} outside its family");
            }
        }
        let declared: std::collections::BTreeSet<&str> = METRIC_NAMES.iter().copied().collect();
        assert_eq!(seen, declared);
        assert_eq!(text.matches("# HELP ").count(), METRIC_NAMES.len());
    }

    #[test]
    fn registry_up_has_no_sample_without_a_registry() {
        let state = RelayState {
            registry_up: None,
            ..sample_state()
        };
        let text = encode(&state);
        assert!(text.contains("# TYPE geoturn_registry_up gauge\n"));
        assert!(!text.contains("\ngeoturn_registry_up "));
        assert!(encode(&sample_state()).contains("\ngeoturn_registry_up 1\n"));
    }
}
