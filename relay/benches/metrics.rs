//! The relay's /metrics: the cost of writing the exposition with `prometheus-client`'s text
//! encoder against the hand-written writer it replaced, and the cost of counting one event
//! each way the code base counts (or could count) on a hot path.
//!
//! Method: both encoders render the same state, `geoturn_relay::ops::metrics::sample_state()`
//! (every family of the relay with all its label values, counters in the billions: 21 families,
//! 47 samples), without the `process_*` metrics (they read `/proc`, the same for both). The
//! hand-written writer is kept below, as it was in the crate at e8f272a, so both run side by
//! side in one process. The prometheus-client side includes building the per-scrape
//! `Registry`, as `/metrics` does; the clone of the state that it takes by value is outside
//! the timing (`iter_batched`). `process_metrics` times the `process_*` part alone, for scale.
//! The counter benches time one increment of:
//! a plain `u64` (the relay's shards: each shard owns its `ServerStats`), an `AtomicU64`
//! (the RFC 6062 splice's byte counters), the API's `Mutex<BTreeMap>` entry, and
//! prometheus-client's `Counter::inc`, `Family::get_or_create(labels).inc()` and a handle
//! resolved once from a `Family`.
//! Run: `cargo bench -p geoturn-relay --bench metrics` (add `-- --quick` for a short run).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use geoturn_relay::ops::metrics::{self, RelayState, sample_state};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// The hand-written exposition, as the crate had it before prometheus-client.
mod hand_written {
    use std::fmt::Write as _;

    use geoturn_relay::ops::metrics::RelayState;
    use geoturn_relay_proto::auth::AuthFailure;
    use geoturn_relay_proto::server::{DropReason, Limit};

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
}

fn exposition(c: &mut Criterion) {
    let state = sample_state();
    let mut g = c.benchmark_group("relay_metrics_page");
    g.bench_function("hand_written", |b| {
        b.iter(|| hand_written::encode(black_box(&state)))
    });
    g.bench_function("prometheus_client", |b| {
        b.iter_batched(
            || state.clone(),
            |s| metrics::encode(black_box(s)),
            BatchSize::SmallInput,
        )
    });
    // For scale: what every page adds on top, reading /proc/self (open fds, stat, status,
    // limits) and writing the process_* lines.
    g.bench_function("process_metrics", |b| {
        b.iter(geoturn_shared::process_metrics::render)
    });
    g.finish();
}

/// The label set of a labelled counter, shaped like the API's requests (route, status).
type Labels = [(&'static str, &'static str); 2];
const LABELS: Labels = [("route", "/v1/ice-servers"), ("status", "200")];

fn increment(c: &mut Criterion) {
    let mut g = c.benchmark_group("count_one_event");
    let mut plain = RelayState::default();
    g.bench_function("plain_u64_owned_by_shard", |b| {
        b.iter(|| black_box(&mut plain).snapshot.stats.packets_to_peer += 1)
    });
    let atomic = AtomicU64::new(0);
    g.bench_function("atomic_u64", |b| {
        b.iter(|| black_box(&atomic).fetch_add(1, Ordering::Relaxed))
    });
    let map: Mutex<BTreeMap<(&str, u16), u64>> = Mutex::default();
    g.bench_function("mutex_btreemap_labelled", |b| {
        b.iter(|| {
            *black_box(&map)
                .lock()
                .unwrap()
                .entry(("/v1/ice-servers", 200))
                .or_default() += 1;
        })
    });
    let counter: Counter = Counter::default();
    g.bench_function("pc_counter", |b| b.iter(|| black_box(&counter).inc()));
    let family: Family<Labels, Counter> = Family::default();
    g.bench_function("pc_family_get_or_create", |b| {
        b.iter(|| black_box(&family).get_or_create(black_box(&LABELS)).inc())
    });
    let handle = family.get_or_create_owned(&LABELS);
    g.bench_function("pc_family_resolved_handle", |b| {
        b.iter(|| black_box(&handle).inc())
    });
    g.finish();
}

criterion_group!(benches, exposition, increment);
criterion_main!(benches);
