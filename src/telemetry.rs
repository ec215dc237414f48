//! Logs and traces for every role: `tracing` to stderr (text or JSON lines, filtered by
//! `GEOTURN_LOG`), and, with `--otlp-endpoint`, spans exported over OTLP (HTTP/protobuf) to a
//! collector: the credential API's requests with their routing decision, the relays'
//! allocations from bind to free. Never a span per packet.

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Keeps the exporter alive; dropping it flushes spans still queued.
pub struct Telemetry(Option<SdkTracerProvider>);

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("flushing traces: {e}");
        }
    }
}

/// The OTLP/HTTP traces URL for `endpoint`: a bare collector address (`http://otel:4318`)
/// gets the standard `/v1/traces` path; a URL with a path is used as given.
pub fn traces_url(endpoint: &str) -> String {
    let after_scheme = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    if after_scheme.trim_end_matches('/').contains('/') {
        endpoint.to_owned()
    } else {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    }
}

/// Installs the global subscriber. `service` names this process in traces (`geoturn-relay`,
/// `geoturn-api`).
pub fn init(json: bool, otlp_endpoint: Option<&str>, service: &str) -> anyhow::Result<Telemetry> {
    let filter =
        || EnvFilter::try_from_env("GEOTURN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().with_filter(filter()).boxed()
    } else {
        fmt.with_filter(filter()).boxed()
    };
    let Some(endpoint) = otlp_endpoint else {
        tracing_subscriber::registry().with(fmt).init();
        return Ok(Telemetry(None));
    };
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        anyhow::bail!("--otlp-endpoint must be an http:// or https:// URL (OTLP over HTTP)");
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces_url(endpoint))
        .with_timeout(std::time::Duration::from_secs(5))
        .with_headers(Default::default())
        .build()
        .context("building the OTLP exporter")?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("geoturn");
    // Spans are exported whatever GEOTURN_LOG says about log lines: info everywhere, plus the
    // API's per-request spans, which are at debug so they cost nothing without a collector.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(EnvFilter::new("info,geoturn_api::server=debug"));
    tracing_subscriber::registry().with(fmt).with(otel).init();
    Ok(Telemetry(Some(provider)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_collector_addresses_get_the_traces_path() {
        assert_eq!(traces_url("http://otel:4318"), "http://otel:4318/v1/traces");
        assert_eq!(
            traces_url("http://otel:4318/"),
            "http://otel:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://c.example/custom/traces"),
            "https://c.example/custom/traces"
        );
    }
}
