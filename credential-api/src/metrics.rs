//! Prometheus text for the credential API (prefix `geoturn_api_`): requests by route and
//! status with a latency histogram, credentials issued, authentication failures, rate limiting,
//! and the load snapshot's freshness.
//!
//! Counters and the histogram are prometheus-client metrics updated as requests finish (a
//! read lock and a hash per labelled update: per request, never per packet); the gauges are
//! set from the load snapshot at each scrape.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Every metric name the API exports (dashboards and alert rules are checked against it).
pub const METRIC_NAMES: &[&str] = &[
    "geoturn_api_requests_total",
    "geoturn_api_request_duration_seconds",
    "geoturn_api_credentials_issued_total",
    "geoturn_api_auth_failures_total",
    "geoturn_api_rate_limited_total",
    "geoturn_api_secret_rotations_total",
    "geoturn_api_snapshot_age_seconds",
    "geoturn_api_snapshot_stale",
    "geoturn_api_relays",
    "geoturn_api_secrets",
    "geoturn_api_answers_total",
    "geoturn_api_explorations_total",
];

/// Histogram bucket bounds, seconds.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EstimateLabel {
    estimate: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The API's metrics and the registry that writes them. The metric handles share their
/// values with the registry (each is an `Arc` inside).
#[derive(Debug)]
pub struct ApiMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabel, Histogram>,
    credentials: Counter,
    auth_failures: Family<ReasonLabel, Counter>,
    rate_limited: Counter,
    rotations: Counter,
    snapshot_age: Gauge<f64, AtomicU64>,
    snapshot_stale: Gauge,
    relays: Family<StateLabel, Gauge>,
    secrets: Gauge,
    answers: Family<EstimateLabel, Counter>,
    explorations: Counter,
}

/// Gauges read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Age of the load snapshot.
    pub snapshot_age: Duration,
    /// Whether the registry could not be read at the last refresh.
    pub snapshot_stale: bool,
    /// Relays in the snapshot by state (`active`, `draining`, `stale`).
    pub relays: Vec<(&'static str, u64)>,
    /// Live TURN secrets.
    pub secrets: u64,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        let m = Self {
            registry: Registry::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            credentials: Counter::default(),
            auth_failures: Family::default(),
            rate_limited: Counter::default(),
            rotations: Counter::default(),
            snapshot_age: Gauge::default(),
            snapshot_stale: Gauge::default(),
            relays: Family::default(),
            secrets: Gauge::default(),
            answers: Family::default(),
            explorations: Counter::default(),
        };
        // The registry appends a full stop to each help text, and `_total` to counter names.
        let mut r = Registry::default();
        r.register(
            "geoturn_api_requests",
            "HTTP requests by route and status",
            m.requests.clone(),
        );
        r.register(
            "geoturn_api_request_duration_seconds",
            "Time to answer, by route",
            m.latency.clone(),
        );
        r.register(
            "geoturn_api_credentials_issued",
            "TURN credentials minted",
            m.credentials.clone(),
        );
        r.register(
            "geoturn_api_auth_failures",
            "Refused callers by reason",
            m.auth_failures.clone(),
        );
        r.register(
            "geoturn_api_rate_limited",
            "Requests answered 429",
            m.rate_limited.clone(),
        );
        r.register(
            "geoturn_api_secret_rotations",
            "Secret rotations done by this instance",
            m.rotations.clone(),
        );
        r.register(
            "geoturn_api_snapshot_age_seconds",
            "Age of the relay load snapshot",
            m.snapshot_age.clone(),
        );
        r.register(
            "geoturn_api_snapshot_stale",
            "1 while the registry cannot be read",
            m.snapshot_stale.clone(),
        );
        r.register(
            "geoturn_api_relays",
            "Relays in the snapshot by state",
            m.relays.clone(),
        );
        r.register(
            "geoturn_api_secrets",
            "Live TURN secrets",
            m.secrets.clone(),
        );
        // Every estimate from zero, so a rate() over a label that has not happened yet is 0,
        // not absent.
        for estimate in ["measured", "matrix", "distance", "unknown"] {
            drop(m.answers.get_or_create(&EstimateLabel { estimate }));
        }
        r.register(
            "geoturn_api_answers",
            "Relay answers by where the best relay's round trip came from (measured, matrix, distance, unknown)",
            m.answers.clone(),
        );
        r.register(
            "geoturn_api_explorations",
            "Answers whose fallback relay explores a region never measured from the client's network",
            m.explorations.clone(),
        );
        r.register_collector(Box::new(geoturn_shared::process_metrics::Process));
        Self { registry: r, ..m }
    }
}

impl ApiMetrics {
    /// Counts a finished request. `route` is the matched route pattern (bounded set).
    pub fn request(&self, route: &'static str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.latency
            .get_or_create(&RouteLabel { route })
            .observe(took.as_secs_f64());
    }

    /// Counts a minted credential.
    pub fn credential_issued(&self) {
        self.credentials.inc();
    }

    /// Counts a refused caller by reason code (a fixed set of `&'static str`s).
    pub fn auth_failure(&self, code: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabel { reason: code })
            .inc();
    }

    /// Counts a 429.
    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    /// Counts a ranking handed to a client: where its best relay's round trip came from, and
    /// whether it explored.
    pub fn ranked(&self, ranking: &geoturn_geo::Ranking) {
        if let Some(best) = ranking.chosen.first() {
            self.answers
                .get_or_create(&EstimateLabel {
                    estimate: best.estimate.as_str(),
                })
                .inc();
        }
        if ranking.explored {
            self.explorations.inc();
        }
    }

    /// Counts a secret rotation.
    pub fn rotation(&self) {
        self.rotations.inc();
    }

    /// The exposition text (Prometheus text format 0.0.4, [`CONTENT_TYPE`]), the gauges set
    /// from `gauges` first.
    pub fn render(&self, gauges: &Gauges) -> String {
        self.snapshot_age.set(gauges.snapshot_age.as_secs_f64());
        self.snapshot_stale.set(i64::from(gauges.snapshot_stale));
        for (state, n) in &gauges.relays {
            self.relays
                .get_or_create(&StateLabel { state })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        self.secrets
            .set(i64::try_from(gauges.secrets).unwrap_or(i64::MAX));
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The `Content-Type` of [`ApiMetrics::render`]'s text: the classic text format, which every
/// Prometheus and `promtool check metrics` read.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_declared_metric_and_only_those() {
        let m = ApiMetrics::default();
        m.request("/v1/ice-servers", 200, Duration::from_millis(2));
        m.auth_failure("token_expired");
        let text = m.render(&Gauges {
            relays: vec![("active", 2)],
            ..Gauges::default()
        });
        for name in METRIC_NAMES {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split(' ').nth(2).unwrap();
            assert!(
                METRIC_NAMES.contains(&name)
                    || geoturn_shared::process_metrics::NAMES.contains(&name),
                "{name} undeclared"
            );
        }
        assert!(text.contains(
            "geoturn_api_request_duration_seconds_bucket{route=\"/v1/ice-servers\",le=\"0.0025\"} 1"
        ));
        assert!(text.contains(
            "geoturn_api_request_duration_seconds_bucket{route=\"/v1/ice-servers\",le=\"0.001\"} 0"
        ));
        assert!(
            text.contains("geoturn_api_requests_total{route=\"/v1/ice-servers\",status=\"200\"} 1")
        );
        assert!(text.contains("geoturn_api_answers_total{estimate=\"measured\"} 0"));
        assert!(text.contains("geoturn_api_explorations_total 0"));
        // The registry appends the full stop and the counter suffix itself: once each.
        assert!(text.contains(
            "# HELP geoturn_api_requests_total HTTP requests by route and status.\n\
             # TYPE geoturn_api_requests_total counter\n"
        ));
        assert!(
            !text.contains("..\n") && !text.contains("_total_total"),
            "{text}"
        );
        assert!(text.contains(
            "geoturn_api_request_duration_seconds_bucket{route=\"/v1/ice-servers\",le=\"+Inf\"} 1\n"
        ));
        assert!(
            text.contains(
                "geoturn_api_request_duration_seconds_count{route=\"/v1/ice-servers\"} 1\n"
            )
        );
        assert!(text.contains("geoturn_api_relays{state=\"active\"} 2\n"));
        // Families without a sample yet still say what they are.
        assert!(text.contains("# TYPE geoturn_api_auth_failures_total counter\n"));
    }
}
