//! Prometheus text for the credential API (prefix `geoturn_api_`): requests by route and
//! status with a latency histogram, credentials issued, authentication failures, rate limiting,
//! and the load snapshot's freshness.
//!
//! One small mutex guards the counters: it is held for a few map updates per request, far
//! below the cost of the request itself, and keeps the exposition simple.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

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
];

/// Histogram bucket bounds, seconds.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: BTreeMap<(&'static str, u16), u64>,
    latency: BTreeMap<&'static str, Histogram>,
    credentials: u64,
    auth_failures: BTreeMap<&'static str, u64>,
    rate_limited: u64,
    rotations: u64,
}

/// The API's counters.
#[derive(Debug, Default)]
pub struct ApiMetrics {
    inner: Mutex<Counters>,
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

impl ApiMetrics {
    fn with(&self, f: impl FnOnce(&mut Counters)) {
        match self.inner.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// Counts a finished request. `route` is the matched route pattern (bounded set).
    pub fn request(&self, route: &'static str, status: u16, took: Duration) {
        self.with(|c| {
            *c.requests.entry((route, status)).or_default() += 1;
            let h = c.latency.entry(route).or_default();
            let secs = took.as_secs_f64();
            for (slot, bound) in h.counts.iter_mut().zip(BUCKETS) {
                if secs <= bound {
                    *slot += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        });
    }

    /// Counts a minted credential.
    pub fn credential_issued(&self) {
        self.with(|c| c.credentials += 1);
    }

    /// Counts a refused caller by reason code (a fixed set of `&'static str`s).
    pub fn auth_failure(&self, code: &'static str) {
        self.with(|c| *c.auth_failures.entry(code).or_default() += 1);
    }

    /// Counts a 429.
    pub fn rate_limited(&self) {
        self.with(|c| c.rate_limited += 1);
    }

    /// Counts a secret rotation.
    pub fn rotation(&self) {
        self.with(|c| c.rotations += 1);
    }

    /// The exposition text.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let w = &mut out;
        self.with(|c| {
            header(w, "geoturn_api_requests_total", "counter", "HTTP requests by route and status.");
            for ((route, status), n) in &c.requests {
                let _ = writeln!(w, "geoturn_api_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
            }
            header(w, "geoturn_api_request_duration_seconds", "histogram", "Time to answer, by route.");
            for (route, h) in &c.latency {
                for (n, bound) in h.counts.iter().zip(BUCKETS) {
                    let _ = writeln!(w, "geoturn_api_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}");
                }
                let _ = writeln!(w, "geoturn_api_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(w, "geoturn_api_request_duration_seconds_sum{{route=\"{route}\"}} {}", h.sum);
                let _ = writeln!(w, "geoturn_api_request_duration_seconds_count{{route=\"{route}\"}} {}", h.count);
            }
            header(w, "geoturn_api_credentials_issued_total", "counter", "TURN credentials minted.");
            let _ = writeln!(w, "geoturn_api_credentials_issued_total {}", c.credentials);
            header(w, "geoturn_api_auth_failures_total", "counter", "Refused callers by reason.");
            for (code, n) in &c.auth_failures {
                let _ = writeln!(w, "geoturn_api_auth_failures_total{{reason=\"{code}\"}} {n}");
            }
            header(w, "geoturn_api_rate_limited_total", "counter", "Requests answered 429.");
            let _ = writeln!(w, "geoturn_api_rate_limited_total {}", c.rate_limited);
            header(w, "geoturn_api_secret_rotations_total", "counter", "Secret rotations done by this instance.");
            let _ = writeln!(w, "geoturn_api_secret_rotations_total {}", c.rotations);
        });
        header(
            w,
            "geoturn_api_snapshot_age_seconds",
            "gauge",
            "Age of the relay load snapshot.",
        );
        let _ = writeln!(
            w,
            "geoturn_api_snapshot_age_seconds {}",
            gauges.snapshot_age.as_secs_f64()
        );
        header(
            w,
            "geoturn_api_snapshot_stale",
            "gauge",
            "1 while the registry cannot be read.",
        );
        let _ = writeln!(
            w,
            "geoturn_api_snapshot_stale {}",
            u8::from(gauges.snapshot_stale)
        );
        header(
            w,
            "geoturn_api_relays",
            "gauge",
            "Relays in the snapshot by state.",
        );
        for (state, n) in &gauges.relays {
            let _ = writeln!(w, "geoturn_api_relays{{state=\"{state}\"}} {n}");
        }
        header(w, "geoturn_api_secrets", "gauge", "Live TURN secrets.");
        let _ = writeln!(w, "geoturn_api_secrets {}", gauges.secrets);
        out.push_str(&geoturn_shared::process_metrics::render());
        out
    }
}

fn header(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}");
    let _ = writeln!(w, "# TYPE {name} {kind}");
}

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
    }
}
