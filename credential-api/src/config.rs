//! Credential-API configuration: flags and `GEOTURN_*` variables (clap) over a TOML file (serde,
//! unknown keys refused), validated into an [`ApiConfig`] with the offending option named in
//! every error. Caller keys live in the file's `[auth]` section (hashed API keys, JWT keys); a
//! few flags cover development and single-key setups.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use geoturn_geo::RankConfig;
use geoturn_shared::SecretSet;
use ipnet::IpNet;

use crate::auth::{AuthConfig, Authenticator, JwtAlgorithm, JwtKeyConfig};

pub use geoturn_shared::config::ConfigError;
use geoturn_shared::config::invalid;

/// Which of the chosen relays' URLs an ICE-server answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnswerUrls {
    /// The best relay's UDP, TCP and one TLS URL; one URL of every other relay and of the
    /// anycast ones.
    #[default]
    Compact,
    /// Every URL of every chosen relay, and every anycast URL.
    All,
}

/// One measured region-to-region round trip (config file `[[rtt]]`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RttEntry {
    /// Client region.
    pub from: String,
    /// Relay region.
    pub to: String,
    /// Round trip in ms.
    pub ms: f64,
}

/// API options as given; every field optional so flags, variables and the file merge.
#[derive(Debug, Clone, Default, clap::Args, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ApiOptions {
    /// TOML file with any of these options (kebab-case keys) plus `[auth]` (API keys, JWT keys)
    /// and `[[rtt]]` entries; flags and variables override it.
    #[arg(long, env = "GEOTURN_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// HTTP address to listen on [default: 0.0.0.0:8080].
    #[arg(long, env = "GEOTURN_API_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Registry: `memory`, `redis://…` or `rediss://…` [default: memory].
    #[arg(long, env = "GEOTURN_REGISTRY", hide_env_values = true)]
    pub registry: Option<String>,

    /// Key prefix in the registry [default: geoturn:].
    #[arg(long, env = "GEOTURN_REGISTRY_PREFIX")]
    pub registry_prefix: Option<String>,

    /// 32-byte key (base64 or hex) that encrypts TURN secrets in the registry; the relays use
    /// the same one. Needed for secret rotation through Redis.
    #[arg(long, env = "GEOTURN_SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<String>,

    /// Static TURN shared secrets (comma-separated in the variable), after any from the
    /// registry. The first mints credentials when the registry holds none.
    #[arg(
        long = "auth-secret",
        env = "GEOTURN_AUTH_SECRETS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    #[serde(default)]
    pub auth_secrets: Vec<String>,

    /// MaxMind DB city database (GeoIP2/GeoLite2-City or DB-IP layout); repeatable, e.g. one
    /// IPv4 and one IPv6 file.
    #[arg(long = "geoip", env = "GEOTURN_GEOIP", value_delimiter = ',')]
    #[serde(default)]
    pub geoip: Vec<PathBuf>,

    /// Region served first to clients that cannot be located.
    #[arg(long, env = "GEOTURN_DEFAULT_REGION")]
    pub default_region: Option<String>,

    /// Longest credential lifetime in seconds; longer requests are capped [default: 86400].
    #[arg(long, env = "GEOTURN_MAX_TTL")]
    pub max_ttl: Option<u64>,

    /// Credential lifetime when the caller gives none [default: the smaller of 43200 and
    /// --max-ttl].
    #[arg(long, env = "GEOTURN_DEFAULT_TTL")]
    pub default_ttl: Option<u64>,

    /// Relays per answer when the caller gives no `count`: the best one and a fallback in
    /// another region [default: 2].
    #[arg(long, env = "GEOTURN_RELAYS_PER_ANSWER")]
    pub relays_per_answer: Option<usize>,

    /// Percent of answers, for clients whose network has measurements, whose fallback relay is
    /// the best one of a region never measured from that network, so its round trip gets
    /// measured too; the best relay is never replaced. 0 turns exploring off [default: 5, at
    /// most 20].
    #[arg(long, env = "GEOTURN_EXPLORE_PERCENT")]
    pub explore_percent: Option<u8>,

    /// Which URLs of each relay an answer carries: `compact` (the best relay's UDP, TCP and one
    /// TLS URL, on 443 when it has one; one URL of each other relay, and of the anycast ones)
    /// or `all` (every URL of every relay). Browsers allocate on every URL they are given
    /// [default: compact].
    #[arg(long, env = "GEOTURN_ANSWER_URLS", value_enum)]
    pub answer_urls: Option<AnswerUrls>,

    /// Proxy or load balancer whose X-Forwarded-For is believed (CIDR); repeatable.
    #[arg(
        long = "trusted-proxy",
        env = "GEOTURN_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,

    /// Development API key `NAME:KEY` (comma-separated in the variable). Production keys go in
    /// the config file, hashed.
    #[arg(
        long = "api-key",
        env = "GEOTURN_API_KEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    #[serde(skip)]
    pub api_keys: Vec<String>,

    /// Like --api-key, with the admin scope (secret rotation, revocation, drain).
    #[arg(
        long = "admin-key",
        env = "GEOTURN_ADMIN_KEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    #[serde(skip)]
    pub admin_keys: Vec<String>,

    /// HS256 secret that signs browser JWTs (needs --jwt-issuer and --jwt-audience).
    #[arg(long, env = "GEOTURN_JWT_HS256_SECRET", hide_env_values = true)]
    #[serde(skip)]
    pub jwt_hs256_secret: Option<String>,

    /// PEM public key (RSA → RS256, EC P-256 → ES256) that verifies browser JWTs.
    #[arg(long, env = "GEOTURN_JWT_PUBLIC_KEY")]
    #[serde(skip)]
    pub jwt_public_key: Option<PathBuf>,

    /// Required `iss` of browser JWTs given by flags.
    #[arg(long, env = "GEOTURN_JWT_ISSUER")]
    #[serde(skip)]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of browser JWTs given by flags.
    #[arg(long, env = "GEOTURN_JWT_AUDIENCE")]
    #[serde(skip)]
    pub jwt_audience: Option<String>,

    /// Requests per second per caller (API key, JWT subject, or client address for
    /// unauthenticated requests); 0 disables [default: 20].
    #[arg(long, env = "GEOTURN_RATE_LIMIT")]
    pub rate_limit: Option<f64>,

    /// Requests a caller may make at once above the rate [default: 40].
    #[arg(long, env = "GEOTURN_RATE_BURST")]
    pub rate_burst: Option<u32>,

    /// Origin browsers may call the API from (`https://app.example`, or `*`); repeatable.
    /// Without one, no CORS headers are sent.
    #[arg(
        long = "cors-origin",
        env = "GEOTURN_CORS_ORIGINS",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub cors_origins: Vec<String>,

    /// Seconds between the relays' heartbeats (as given to the relays); a relay silent for 3
    /// of them is stale [default: 2].
    #[arg(long, env = "GEOTURN_HEARTBEAT")]
    pub heartbeat: Option<f64>,

    /// Milliseconds between refreshes of the load snapshot from the registry [default: 1000].
    #[arg(long, env = "GEOTURN_REFRESH_MS")]
    pub refresh_ms: Option<u64>,

    /// Milliseconds between two points of the dashboard's history (it keeps 360 of them: an
    /// hour at the default) [default: 10000].
    #[arg(long, env = "GEOTURN_HISTORY_STEP_MS")]
    pub history_step_ms: Option<u64>,

    /// Anycast TURN URL (`turn:global.example.com:3478?transport=udp`); repeatable. Every
    /// answer then ends with one entry holding these URLs: the fallback that reaches a live
    /// region whatever happened since the answer was made.
    #[arg(
        long = "anycast-url",
        env = "GEOTURN_ANYCAST_URLS",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub anycast_urls: Vec<String>,

    /// Log as JSON lines.
    #[arg(long, env = "GEOTURN_LOG_JSON")]
    #[serde(default)]
    pub log_json: bool,

    /// Caller keys (file only).
    #[arg(skip)]
    #[serde(default)]
    pub auth: AuthConfig,

    /// Measured region-to-region RTTs (file only).
    #[arg(skip)]
    #[serde(default)]
    pub rtt: Vec<RttEntry>,
}

/// The validated configuration.
#[derive(Clone)]
pub struct ApiConfig {
    /// HTTP address.
    pub listen: SocketAddr,
    /// Registry URL (`memory` or redis).
    pub registry: String,
    /// Registry key prefix.
    pub registry_prefix: String,
    /// Secret-encryption key.
    pub secrets_key: Option<[u8; 32]>,
    /// Static TURN secrets.
    pub static_secrets: SecretSet,
    /// GeoIP databases.
    pub geoip: Vec<PathBuf>,
    /// Ranking settings (default region, RTT matrix, staleness).
    pub rank: RankConfig,
    /// Longest credential lifetime, seconds.
    pub max_ttl: u64,
    /// Lifetime when none is asked for, seconds.
    pub default_ttl: u64,
    /// Relays per answer by default.
    pub relays_per_answer: usize,
    /// Which of their URLs an answer carries.
    pub answer_urls: AnswerUrls,
    /// Share of answers that explore a region never measured from the client's network, 0 to
    /// [`MAX_EXPLORE_PERCENT`] percent.
    pub explore_percent: u8,
    /// Trusted proxies.
    pub trusted_proxies: Vec<IpNet>,
    /// Who may call.
    pub auth: Authenticator,
    /// Requests per second per caller (0: off).
    pub rate_limit: f64,
    /// Burst per caller.
    pub rate_burst: u32,
    /// CORS origins.
    pub cors_origins: Vec<String>,
    /// Snapshot refresh period.
    pub refresh: Duration,
    /// Step between two points of the history.
    pub history_step: Duration,
    /// Anycast TURN URLs, offered last.
    pub anycast_urls: Vec<String>,
    /// JSON logs.
    pub log_json: bool,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets, keys and the registry password stay out of debug output.
        f.debug_struct("ApiConfig")
            .field("listen", &self.listen)
            .field(
                "registry",
                &geoturn_shared::registry::redact_url(&self.registry),
            )
            .field("max_ttl", &self.max_ttl)
            .field("relays_per_answer", &self.relays_per_answer)
            .finish_non_exhaustive()
    }
}

/// Most relays one answer may carry: each costs the browser an allocation per transport.
pub const MAX_RELAYS_PER_ANSWER: usize = 8;

/// Most answers, in percent, that may explore: each gives its client a fallback that is
/// probably worse than the usual one, so this stays a small share.
pub const MAX_EXPLORE_PERCENT: u8 = 20;

impl ApiOptions {
    /// Fills every option not given by flag or variable from the `--config` file.
    pub fn with_file(self) -> Result<Self, ConfigError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let file: ApiOptions = geoturn_shared::config::read_file(&path, |t| toml::from_str(t))?;
        Ok(self.over(file))
    }

    /// `self` where set, `base` otherwise (keys and RTTs: both, file first).
    pub fn over(self, base: ApiOptions) -> ApiOptions {
        fn vec_or<T>(a: Vec<T>, b: Vec<T>) -> Vec<T> {
            if a.is_empty() { b } else { a }
        }
        ApiOptions {
            config: self.config.or(base.config),
            listen: self.listen.or(base.listen),
            registry: self.registry.or(base.registry),
            registry_prefix: self.registry_prefix.or(base.registry_prefix),
            secrets_key: self.secrets_key.or(base.secrets_key),
            auth_secrets: vec_or(self.auth_secrets, base.auth_secrets),
            geoip: vec_or(self.geoip, base.geoip),
            default_region: self.default_region.or(base.default_region),
            max_ttl: self.max_ttl.or(base.max_ttl),
            default_ttl: self.default_ttl.or(base.default_ttl),
            relays_per_answer: self.relays_per_answer.or(base.relays_per_answer),
            answer_urls: self.answer_urls.or(base.answer_urls),
            explore_percent: self.explore_percent.or(base.explore_percent),
            trusted_proxies: vec_or(self.trusted_proxies, base.trusted_proxies),
            api_keys: self.api_keys,
            admin_keys: self.admin_keys,
            jwt_hs256_secret: self.jwt_hs256_secret,
            jwt_public_key: self.jwt_public_key,
            jwt_issuer: self.jwt_issuer,
            jwt_audience: self.jwt_audience,
            rate_limit: self.rate_limit.or(base.rate_limit),
            rate_burst: self.rate_burst.or(base.rate_burst),
            cors_origins: vec_or(self.cors_origins, base.cors_origins),
            heartbeat: self.heartbeat.or(base.heartbeat),
            refresh_ms: self.refresh_ms.or(base.refresh_ms),
            history_step_ms: self.history_step_ms.or(base.history_step_ms),
            anycast_urls: vec_or(self.anycast_urls, base.anycast_urls),
            log_json: self.log_json || base.log_json,
            auth: AuthConfig {
                api_keys: [base.auth.api_keys, self.auth.api_keys].concat(),
                jwt_keys: [base.auth.jwt_keys, self.auth.jwt_keys].concat(),
                jwks: [base.auth.jwks, self.auth.jwks].concat(),
            },
            rtt: [base.rtt, self.rtt].concat(),
        }
    }

    /// Applies defaults and validates.
    pub fn resolve(self) -> Result<ApiConfig, ConfigError> {
        let max_ttl = self.max_ttl.unwrap_or(86_400);
        // A week: long enough for any call, short enough that a leaked credential dies.
        if !(60..=7 * 86_400).contains(&max_ttl) {
            return Err(invalid("max-ttl", "must be 60 to 604800 seconds"));
        }
        let default_ttl = self.default_ttl.unwrap_or(43_200.min(max_ttl));
        if default_ttl == 0 || default_ttl > max_ttl {
            return Err(invalid("default-ttl", "must be 1 to --max-ttl seconds"));
        }
        let relays_per_answer = self.relays_per_answer.unwrap_or(2);
        if !(1..=MAX_RELAYS_PER_ANSWER).contains(&relays_per_answer) {
            return Err(invalid(
                "relays-per-answer",
                format!("must be 1 to {MAX_RELAYS_PER_ANSWER}"),
            ));
        }
        let explore_percent = self.explore_percent.unwrap_or(5);
        if explore_percent > MAX_EXPLORE_PERCENT {
            return Err(invalid(
                "explore-percent",
                format!("must be 0 to {MAX_EXPLORE_PERCENT}"),
            ));
        }
        let heartbeat = self.heartbeat.unwrap_or(2.0);
        if !(0.05..=60.0).contains(&heartbeat) {
            return Err(invalid("heartbeat", "must be between 0.05 and 60 seconds"));
        }
        let refresh_ms = self.refresh_ms.unwrap_or(1000);
        if !(50..=60_000).contains(&refresh_ms) {
            return Err(invalid("refresh-ms", "must be 50 to 60000"));
        }
        let history_step_ms = self.history_step_ms.unwrap_or(10_000);
        // A second at the finest (a point per snapshot at most), a minute at the coarsest
        // (6 hours of 360 points, the same memory).
        if !(1_000..=60_000).contains(&history_step_ms) {
            return Err(invalid("history-step-ms", "must be 1000 to 60000"));
        }
        let rate_limit = self.rate_limit.unwrap_or(20.0);
        if !(rate_limit.is_finite() && rate_limit >= 0.0) {
            return Err(invalid("rate-limit", "must be a number >= 0"));
        }
        let rate_burst = self.rate_burst.unwrap_or(40);
        if rate_limit > 0.0 && rate_burst == 0 {
            return Err(invalid("rate-burst", "must be at least 1"));
        }
        let registry = self.registry.clone().unwrap_or_else(|| "memory".to_owned());
        let secrets_key = match &self.secrets_key {
            None => None,
            Some(k) => Some(
                geoturn_shared::registry::parse_secrets_key(k)
                    .map_err(|e| invalid("secrets-key", e.to_string()))?,
            ),
        };
        for o in &self.cors_origins {
            if o != "*" && !(o.starts_with("https://") || o.starts_with("http://")) {
                return Err(invalid(
                    "cors-origin",
                    format!("{o:?} is neither `*` nor an http(s) origin"),
                ));
            }
        }
        for u in &self.anycast_urls {
            let ok = (u.starts_with("turn:") || u.starts_with("turns:"))
                && u.len() <= 256
                && !u.chars().any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                return Err(invalid(
                    "anycast-url",
                    format!("{u:?} is not a turn: or turns: URL"),
                ));
            }
        }
        let mut matrix = HashMap::new();
        for e in &self.rtt {
            if !(e.ms.is_finite() && e.ms >= 0.0) {
                return Err(invalid(
                    "rtt",
                    format!("{} → {}: ms must be >= 0", e.from, e.to),
                ));
            }
            matrix.insert((e.from.clone(), e.to.clone()), e.ms);
        }
        let rank = RankConfig {
            default_region: self.default_region.clone(),
            stale_after: Duration::from_secs_f64(3.0 * heartbeat),
            rtt_matrix: (!matrix.is_empty()).then(|| std::sync::Arc::new(matrix)),
            max_results: relays_per_answer,
            ..RankConfig::default()
        };
        rank.validate().map_err(|e| invalid("rtt", e.to_string()))?;

        for secret in &self.auth_secrets {
            geoturn_shared::secret_set::check_secret_len(secret)
                .map_err(|e| invalid("auth-secret", e))?;
        }
        let mut auth_config = self.auth.clone();
        if let Some(secret) = &self.jwt_hs256_secret {
            auth_config.jwt_keys.push(self.flag_jwt_key(
                JwtAlgorithm::HS256,
                Some(secret.clone()),
                None,
            )?);
        }
        if let Some(path) = &self.jwt_public_key {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| invalid("jwt-public-key", format!("{}: {e}", path.display())))?;
            // The key's type fixes the algorithm, so a token can never pick it.
            let alg = if jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()).is_ok() {
                JwtAlgorithm::RS256
            } else {
                JwtAlgorithm::ES256
            };
            auth_config
                .jwt_keys
                .push(self.flag_jwt_key(alg, None, Some(pem))?);
        }
        let mut auth =
            Authenticator::from_config(&auth_config).map_err(|e| invalid("auth", e.to_string()))?;
        for (list, admin, option) in [
            (&self.api_keys, false, "api-key"),
            (&self.admin_keys, true, "admin-key"),
        ] {
            for entry in list {
                let (name, key) = entry
                    .split_once(':')
                    .ok_or_else(|| invalid(option, "expected NAME:KEY"))?;
                auth.add_plain_api_key(name, key, admin)
                    .map_err(|e| invalid(option, e.to_string()))?;
            }
        }
        Ok(ApiConfig {
            listen: self
                .listen
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080))),
            registry,
            registry_prefix: self
                .registry_prefix
                .unwrap_or_else(|| geoturn_shared::registry::DEFAULT_PREFIX.to_owned()),
            secrets_key,
            static_secrets: SecretSet::from_values(
                self.auth_secrets.iter().map(|s| s.as_bytes().to_vec()),
            ),
            geoip: self.geoip,
            rank,
            max_ttl,
            default_ttl,
            relays_per_answer,
            answer_urls: self.answer_urls.unwrap_or_default(),
            explore_percent,
            trusted_proxies: self.trusted_proxies,
            auth,
            rate_limit,
            rate_burst,
            cors_origins: self.cors_origins,
            refresh: Duration::from_millis(refresh_ms),
            history_step: Duration::from_millis(history_step_ms),
            anycast_urls: self.anycast_urls,
            log_json: self.log_json,
        })
    }

    fn flag_jwt_key(
        &self,
        algorithm: JwtAlgorithm,
        secret: Option<String>,
        public_key_pem: Option<String>,
    ) -> Result<JwtKeyConfig, ConfigError> {
        let issuer = self
            .jwt_issuer
            .clone()
            .ok_or_else(|| invalid("jwt-issuer", "required with a JWT key"))?;
        let audience = self
            .jwt_audience
            .clone()
            .ok_or_else(|| invalid("jwt-audience", "required with a JWT key"))?;
        Ok(JwtKeyConfig {
            id: None,
            algorithm,
            secret,
            secret_file: None,
            public_key_pem,
            public_key_file: None,
            issuer,
            audience,
            leeway_secs: 30,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ApiOptions {
        ApiOptions {
            auth_secrets: vec!["config-test-secret-0123".into()],
            ..ApiOptions::default()
        }
    }

    #[test]
    fn a_short_secret_is_refused_with_the_option_named() {
        let err = ApiOptions {
            auth_secrets: vec!["config-test-secret-0123".into(), "fifteen-bytes!!".into()],
            ..ApiOptions::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("auth-secret") && err.contains("16 bytes"),
            "{err}"
        );
        let sixteen = ApiOptions {
            auth_secrets: vec!["sixteen-bytes!!!".into()],
            ..ApiOptions::default()
        };
        assert!(sixteen.resolve().is_ok());
    }

    #[test]
    fn defaults_resolve() {
        let c = base().resolve().unwrap();
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.registry, "memory");
        assert_eq!((c.max_ttl, c.default_ttl), (86_400, 43_200));
        assert_eq!(c.rank.stale_after, Duration::from_secs(6));
        assert_eq!(c.rank.max_results, 2);
        assert_eq!(c.answer_urls, AnswerUrls::Compact);
    }

    #[test]
    fn errors_name_the_option() {
        for (opts, option) in [
            (
                ApiOptions {
                    max_ttl: Some(10),
                    ..base()
                },
                "max-ttl",
            ),
            (
                ApiOptions {
                    default_ttl: Some(100_000),
                    ..base()
                },
                "default-ttl",
            ),
            (
                ApiOptions {
                    relays_per_answer: Some(0),
                    ..base()
                },
                "relays-per-answer",
            ),
            (
                ApiOptions {
                    history_step_ms: Some(999),
                    ..base()
                },
                "history-step-ms",
            ),
            (
                ApiOptions {
                    api_keys: vec!["nocolon".into()],
                    ..base()
                },
                "api-key",
            ),
            (
                ApiOptions {
                    cors_origins: vec!["app.example".into()],
                    ..base()
                },
                "cors-origin",
            ),
            (
                ApiOptions {
                    jwt_hs256_secret: Some("x".repeat(40)),
                    ..base()
                },
                "jwt-issuer",
            ),
            (
                ApiOptions {
                    secrets_key: Some("short".into()),
                    ..base()
                },
                "secrets-key",
            ),
        ] {
            let err = opts.resolve().unwrap_err().to_string();
            assert!(err.contains(&format!("`{option}`")), "{option}: {err}");
        }
    }

    #[test]
    fn file_keys_and_flags_merge() {
        let file: ApiOptions = toml::from_str(
            r#"
            max-ttl = 3600
            default-region = "eu"
            [[auth.api_keys]]
            name = "backend"
            sha256 = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
            [[rtt]]
            from = "eu"
            to = "us"
            ms = 80
            "#,
        )
        .unwrap();
        let opts = ApiOptions {
            max_ttl: Some(7200),
            api_keys: vec!["dev:devkey".into()],
            ..base()
        }
        .over(file);
        let c = opts.resolve().unwrap();
        assert_eq!(c.max_ttl, 7200);
        assert_eq!(c.rank.default_region.as_deref(), Some("eu"));
        assert_eq!(
            c.rank
                .rtt_matrix
                .as_ref()
                .unwrap()
                .get(&("eu".into(), "us".into())),
            Some(&80.0)
        );
        assert_eq!(c.auth.authenticate_api_key("foo").unwrap().name, "backend");
        assert_eq!(c.auth.authenticate_api_key("devkey").unwrap().name, "dev");
        assert!(toml::from_str::<ApiOptions>("bogus = 1").is_err());
    }
}
