//! `geoturn route --ip ADDR`: which relays a client at ADDR would be given, and why.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use geoturn_geo::{ClientLocation, GeoIp, RankConfig, rank_relays_measured};
use geoturn_shared::registry::Registry;

/// Options of `geoturn route`.
#[derive(Debug, Clone, clap::Args)]
pub struct RouteOptions {
    /// The client address to route.
    #[arg(long)]
    pub ip: IpAddr,
    /// Registry to read relays from (`redis://…`, `rediss://…`).
    #[arg(long, env = "GEOTURN_REGISTRY", hide_env_values = true)]
    pub registry: String,
    /// Key prefix in the registry.
    #[arg(long, env = "GEOTURN_REGISTRY_PREFIX", default_value = "geoturn:")]
    pub registry_prefix: String,
    /// MaxMind `.mmdb` file (GeoIP2/GeoLite2-City or DB-IP city layout); repeatable.
    #[arg(long = "geoip", env = "GEOTURN_GEOIP", value_delimiter = ',')]
    pub geoip: Vec<PathBuf>,
    /// Region served first when the client's location is unknown.
    #[arg(long, env = "GEOTURN_DEFAULT_REGION")]
    pub default_region: Option<String>,
    /// Relays to choose.
    #[arg(long, default_value_t = 4)]
    pub count: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Why routing could not be shown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// A GeoIP database could not be read.
    #[error(transparent)]
    Geo(#[from] geoturn_geo::GeoError),
    /// The registry could not be read.
    #[error("registry: {0}")]
    Registry(String),
    /// The ranking settings are invalid.
    #[error("{0}")]
    Config(String),
}

/// Ranks the registry's relays for `opts.ip` and renders the result.
pub async fn route(opts: &RouteOptions) -> Result<String, RouteError> {
    let geo = GeoIp::open(&opts.geoip)?;
    let registry = Registry::connect(&opts.registry, &opts.registry_prefix, None)
        .await
        .map_err(|e| RouteError::Registry(e.to_string()))?;
    let records = registry
        .list()
        .await
        .map_err(|e| RouteError::Registry(e.to_string()))?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let candidates: Vec<_> = records
        .iter()
        .map(|r| crate::candidates::candidate(r, now_ms))
        .collect();
    let location = geo.lookup(opts.ip);
    let client = ClientLocation::from(location.clone());
    let config = RankConfig {
        default_region: opts.default_region.clone(),
        max_results: opts.count.max(1),
        ..RankConfig::default()
    };
    config
        .validate()
        .map_err(|e| RouteError::Config(e.to_string()))?;
    let measured = crate::measured::read(&registry, opts.ip, now_ms)
        .await
        .map_err(|e| RouteError::Registry(e.to_string()))?;
    let ranking = rank_relays_measured(&client, &measured, &candidates, &config);
    let answer = crate::answers::RouteAnswer::new(opts.ip, location.as_ref(), &ranking, &records);
    Ok(if opts.json {
        serde_json::to_string(&answer).unwrap_or_default()
    } else {
        answer.to_text()
    })
}
