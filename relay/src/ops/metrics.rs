//! Prometheus text exposition of the relay's counters (prefix `geoturn_`), written by
//! prometheus-client's text encoder. Counters move as packets flow (workers publish every
//! 500 ms), not when sessions end.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet, prometheus_text};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

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
    "geoturn_client_rtt_samples_total",
    "geoturn_client_rtt_samples_dropped_total",
    "geoturn_client_rtt_networks",
    "geoturn_offload_channels",
    "geoturn_offload_relayed_packets_total",
    "geoturn_offload_relayed_bytes_total",
    "geoturn_offload_dropped_packets_total",
];

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
    /// Clients' round-trip samples taken, not kept for want of room, and networks tracked
    /// ([`crate::client_rtt::ClientRtts::counts`]).
    pub client_rtt: (u64, u64, usize),
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
            client_rtt: ops.relay.client_rtts().counts(),
        }
    }
}

/// Renders the metrics page: the relay's own metrics, then the `process_*` ones (descriptors
/// above all: every allocation and TCP client holds one).
pub fn render(ops: &Ops) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(RelayState::of(ops)));
    // The mesh's families (crate::mesh::METRIC_NAMES); a bounded label set (its peers).
    registry.register_collector(Box::new(ops.mesh.metrics()));
    registry.register_collector(Box::new(geoturn_shared::process_metrics::Process));
    text(&registry)
}

/// The relay's own metrics for `state`, in Prometheus text format 0.0.4
/// ([`CONTENT_TYPE`]).
pub fn encode(state: RelayState) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(state));
    text(&registry)
}

fn text(registry: &Registry) -> String {
    let mut out = String::with_capacity(8192);
    // Writing into a String cannot fail.
    let _ = prometheus_text::encode(&mut out, registry);
    out
}

/// The `Content-Type` of [`encode`]'s text: the classic text format, which every Prometheus
/// and `promtool check metrics` read (OpenMetrics would add `# EOF` and `# UNIT` lines).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The relay's state is read once per scrape and written as constant samples: the packet path
/// counts in plain integers owned by each shard (no atomics, no lock), and workers publish
/// them every 500 ms, so there is nothing for a live metric object to track.
impl Collector for RelayState {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let snap = &self.snapshot;
        let s = &snap.stats;
        gauge(&mut e, "geoturn_up", "1 while the relay runs.", 1)?;
        // `Info` adds the `_info` suffix and a value of 1; the type line says gauge.
        e.encode_descriptor(
            "geoturn_build",
            "Version, node and region of this relay.",
            None,
            MetricType::Info,
        )?
        .encode_info(&[
            ("version", env!("CARGO_PKG_VERSION")),
            ("node_id", self.node_id.as_str()),
            ("region", self.region.as_str()),
        ])?;
        gauge(
            &mut e,
            "geoturn_uptime_seconds",
            "Seconds since the relay started.",
            self.uptime_seconds,
        )?;
        labelled(
            &mut e,
            Gauge("geoturn_allocations"),
            "Live allocations by client transport.",
            "transport",
            ["udp", "tcp", "tls"]
                .into_iter()
                .zip(snap.allocations_by_transport.map(|n| n as u64)),
        )?;
        gauge(
            &mut e,
            "geoturn_permissions",
            "Live permissions.",
            snap.permissions as u64,
        )?;
        gauge(
            &mut e,
            "geoturn_channels",
            "Live channel bindings.",
            snap.channels as u64,
        )?;
        counter(
            &mut e,
            "geoturn_allocations_created",
            "Allocations created.",
            s.allocations_created,
        )?;
        counter(
            &mut e,
            "geoturn_allocations_deleted",
            "Allocations deleted by the client (Refresh with lifetime 0).",
            s.allocations_deleted,
        )?;
        counter(
            &mut e,
            "geoturn_allocations_expired",
            "Allocations that expired.",
            s.allocations_expired,
        )?;
        labelled(
            &mut e,
            Counter("geoturn_relayed_packets"),
            "Packets relayed, by direction.",
            "direction",
            [
                ("to_peer", s.packets_to_peer),
                ("to_client", s.packets_to_client),
            ],
        )?;
        labelled(
            &mut e,
            Counter("geoturn_relayed_bytes"),
            "Payload bytes relayed, by direction.",
            "direction",
            [
                ("to_peer", s.bytes_to_peer),
                ("to_client", s.bytes_to_client),
            ],
        )?;
        labelled(
            &mut e,
            Counter("geoturn_auth_failures"),
            "Requests refused by authentication, by reason (challenge = the normal first 401).",
            "reason",
            AuthFailure::ALL.iter().map(|r| {
                let n = s.auth_failures.get(r.as_str()).copied().unwrap_or(0);
                (r.as_str(), n)
            }),
        )?;
        counter(
            &mut e,
            "geoturn_peers_denied",
            "Peer addresses refused by the peer policy.",
            s.peers_denied,
        )?;
        labelled(
            &mut e,
            Counter("geoturn_dropped_packets"),
            "Packets dropped without a response, by reason.",
            "reason",
            DropReason::ALL.iter().map(|r| (r.as_str(), s.drops(*r))),
        )?;
        labelled(
            &mut e,
            Counter("geoturn_limit_refusals"),
            "Requests refused (486 or 508) because a limit was reached, by limit: user_quota, \
             source_quota, allocations, permissions, new_peers, peer_connections.",
            "limit",
            Limit::ALL.iter().map(|l| (l.as_str(), s.refusals(*l))),
        )?;
        counter(
            &mut e,
            "geoturn_send_errors",
            "Datagrams the kernel refused (socket buffer full).",
            snap.send_errors,
        )?;
        labelled(
            &mut e,
            Counter("geoturn_redirects"),
            "Allocates answered with 300 Try Alternate, by reason: drain (to a sibling while \
             draining), anycast (a first contact sent to a unicast relay), anycast_refused (403: \
             no unicast relay known).",
            "reason",
            [
                ("drain", s.redirects),
                ("anycast", s.first_contact_redirects),
                ("anycast_refused", s.first_contact_refused),
            ],
        )?;
        gauge(
            &mut e,
            "geoturn_draining",
            "1 while draining.",
            u64::from(self.draining),
        )?;
        gauge(
            &mut e,
            "geoturn_capacity_allocations",
            "Allocations this relay is sized for.",
            self.capacity_allocations,
        )?;
        gauge(
            &mut e,
            "geoturn_capacity_bytes_per_second",
            "Relayed bandwidth this relay is sized for, bytes per second (--capacity-mbps x 125000).",
            self.capacity_bytes_per_second,
        )?;
        // No sample without a registry (nothing to alert on), nor before the first heartbeat.
        let mut registry_up = e.encode_descriptor(
            "geoturn_registry_up",
            "1 while heartbeats reach the registry (Redis), 0 while it is unreachable.",
            None,
            MetricType::Gauge,
        )?;
        if let Some(up) = self.registry_up {
            registry_up.encode_gauge(&u64::from(up))?;
        }
        let (samples, dropped, networks) = self.client_rtt;
        counter(
            &mut e,
            "geoturn_client_rtt_samples",
            "Clients' round trips sampled (401 to authenticated Allocate), for latency routing.",
            samples,
        )?;
        counter(
            &mut e,
            "geoturn_client_rtt_samples_dropped",
            "Round-trip samples not kept: the table of client networks was full.",
            dropped,
        )?;
        gauge(
            &mut e,
            "geoturn_client_rtt_networks",
            "Client networks (/24, /16, /48, /32) with round trips measured here.",
            networks as u64,
        )?;
        // The kernel fast path (zero while it is off); its traffic is also in the relayed
        // totals above.
        let o = snap.offload.unwrap_or_default();
        gauge(
            &mut e,
            "geoturn_offload_channels",
            "Channels relayed in the kernel (eBPF) now.",
            o.channels as u64,
        )?;
        labelled(
            &mut e,
            Counter("geoturn_offload_relayed_packets"),
            "Packets relayed in the kernel (included in geoturn_relayed_packets_total).",
            "direction",
            [
                ("to_peer", o.counters.packets_to_peer),
                ("to_client", o.counters.packets_to_client),
            ],
        )?;
        labelled(
            &mut e,
            Counter("geoturn_offload_relayed_bytes"),
            "Payload bytes relayed in the kernel (included in geoturn_relayed_bytes_total).",
            "direction",
            [
                ("to_peer", o.counters.bytes_to_peer),
                ("to_client", o.counters.bytes_to_client),
            ],
        )?;
        counter(
            &mut e,
            "geoturn_offload_dropped_packets",
            "Packets the kernel dropped over their allocation's packet or byte rate.",
            o.counters.dropped_over_limit,
        )?;
        Ok(())
    }
}

/// A family's name and type. Counters are named without `_total`: the encoder appends it.
enum Kind {
    Gauge(&'static str),
    Counter(&'static str),
}
use Kind::{Counter, Gauge};

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

/// One family with one label: HELP and TYPE once, then a sample per label value.
fn labelled<'a>(
    e: &mut DescriptorEncoder,
    kind: Kind,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (&'a str, u64)>,
) -> std::fmt::Result {
    let (name, metric_type) = match kind {
        Gauge(name) => (name, MetricType::Gauge),
        Counter(name) => (name, MetricType::Counter),
    };
    let mut family = e.encode_descriptor(name, help, None, metric_type)?;
    for (value, n) in samples {
        let labels = [(label, value)];
        let mut sample = family.encode_family(&labels)?;
        match metric_type {
            MetricType::Counter => sample.encode_counter::<NoLabelSet, _, u64>(&n, None)?,
            _ => sample.encode_gauge(&n)?,
        }
    }
    Ok(())
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
            offload: Some(crate::offload::OffloadStatus {
                counters: crate::offload::ChannelCounters {
                    packets_to_peer: 6_000_000_000,
                    bytes_to_peer: 1_200_000_000_000,
                    packets_to_client: 5_900_000_000,
                    bytes_to_client: 1_180_000_000_000,
                    dropped_over_limit: 7,
                },
                channels: 9_000,
                refused: 0,
            }),
        },
        node_id: "relay-fra-1".into(),
        region: "eu-central".into(),
        uptime_seconds: 864_000,
        draining: false,
        capacity_allocations: 16_000,
        capacity_bytes_per_second: 1_250_000_000,
        registry_up: Some(true),
        client_rtt: (42, 1, 17),
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
        let text = encode(sample_state()).replace(
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
        let text = encode(sample_state());
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

    /// Node ids and regions are validated at start, but the page must stay parseable whatever
    /// a label holds: quotes, backslashes and newlines are escaped (Prometheus text format).
    #[test]
    fn label_values_are_escaped() {
        let state = RelayState {
            node_id: "a\"b".into(),
            region: "c\\d\ne".into(),
            ..sample_state()
        };
        let text = encode(state);
        assert!(
            text.contains(r#"node_id="a\"b",region="c\\d\ne"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn registry_up_has_no_sample_without_a_registry() {
        let state = RelayState {
            registry_up: None,
            ..sample_state()
        };
        let text = encode(state);
        assert!(text.contains("# TYPE geoturn_registry_up gauge\n"));
        assert!(!text.contains("\ngeoturn_registry_up "));
        assert!(encode(sample_state()).contains("\ngeoturn_registry_up 1\n"));
    }
}
