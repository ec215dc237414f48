//! Prometheus text exposition of the relay's counters (prefix `geoturn_`). Counters move as
//! packets flow (workers publish every 500 ms), not when sessions end.

use std::fmt::Write as _;

use geoturn_relay_proto::auth::AuthFailure;
use geoturn_relay_proto::server::{DropReason, Limit};

use super::Ops;

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

/// Renders the metrics page.
pub fn render(ops: &Ops) -> String {
    let snap = ops.relay.snapshot();
    let s = &snap.stats;
    let node = ops.config.node_id.as_str();
    let region = ops.config.region.as_str();
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
        ops.started.elapsed().as_secs(),
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
        u8::from(ops.relay.drain().is_some()),
    );
    w.single(
        "geoturn_capacity_allocations",
        "gauge",
        "Allocations this relay is sized for.",
        ops.config.capacity_allocations,
    );
    w.single(
        "geoturn_capacity_bytes_per_second",
        "gauge",
        "Relayed bandwidth this relay is sized for, bytes per second (--capacity-mbps x 125000).",
        ops.config.capacity_mbps.saturating_mul(125_000),
    );
    // No sample without a registry (nothing to alert on), nor before the first heartbeat.
    w.header(
        "geoturn_registry_up",
        "gauge",
        "1 while heartbeats reach the registry (Redis), 0 while it is unreachable.",
    );
    if let Some(up) = ops.registry.is_up() {
        w.value("geoturn_registry_up", &[], u8::from(up));
    }
    // The mesh renders its own families (crate::mesh::METRIC_NAMES), kept apart for merging.
    w.0.push_str(&ops.mesh.render_metrics());
    // Descriptors above all: every allocation and TCP client holds one.
    w.0.push_str(&geoturn_shared::process_metrics::render());
    w.0
}
