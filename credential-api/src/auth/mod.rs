//! Who may call the credential API: API keys (stored as SHA-256 hashes) and JWTs signed by a
//! configured key (HS256, RS256 or ES256).
//!
//! [`AuthConfig`] is the config file's `[auth]` section; [`Authenticator::from_config`] checks
//! it (naming the bad field, e.g. `jwt_keys[1].public_key_file`) and loads key files once, so a
//! request never touches the disk. [`Authenticator::authenticate`] turns an `Authorization`
//! header into a [`Caller`] or an [`AuthError`] whose [`code`](AuthError::code) is stable and
//! whose message is safe to send back: no error, `Debug` or log line carries a key, secret or
//! token.
//!
//! Time is passed in (`now_unix`) rather than read from the clock, so expiry is tested with a
//! virtual clock and one request sees one instant.

mod api_key;
mod jwks;
mod jwt;

use std::fmt;
use std::path::PathBuf;

pub use api_key::{generate_api_key, hash_api_key};
pub use jwks::JwksConfig;

/// Longest token (API key or JWT) looked at; longer ones are refused before any parsing, so a
/// huge header costs no base64 or JSON work.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The config file's `[auth]` section: who may call.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// API keys, stored hashed (`[[auth.api_keys]]`).
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    /// Keys that sign accepted JWTs (`[[auth.jwt_keys]]`).
    #[serde(default)]
    pub jwt_keys: Vec<JwtKeyConfig>,
    /// JWKS URLs whose keys sign accepted JWTs (`[[auth.jwks]]`).
    #[serde(default)]
    pub jwks: Vec<JwksConfig>,
}

/// One API key, as its SHA-256 hash (the plain key is never written to the config).
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Caller name for logs and rate limits: 1–64 characters of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// Hex SHA-256 of the key (64 hex digits, either case), as printed by [`hash_api_key`].
    pub sha256: String,
    /// Admin scope (secret rotation and other operator calls).
    #[serde(default)]
    pub admin: bool,
    /// Narrower scopes: `secrets:read` lets a signaling server that mints credentials itself
    /// read the live TURN secrets (`GET /v1/admin/secrets`) without the admin scope's power to
    /// rotate them, revoke users or drain relays. The admin scope includes it.
    #[serde(default)]
    pub scopes: Vec<String>,
}

impl fmt::Debug for ApiKeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash of a weak key is as good as the key, so it is not printed either.
        f.debug_struct("ApiKeyConfig")
            .field("name", &self.name)
            .field("sha256", &"<redacted>")
            .field("admin", &self.admin)
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// One key that signs accepted JWTs. Its algorithm is fixed here: a token never chooses how it
/// is verified.
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// Key id, matched against the token header's `kid` when the token has one.
    #[serde(default)]
    pub id: Option<String>,
    /// The one algorithm this key verifies.
    pub algorithm: JwtAlgorithm,
    /// HS256 only: the shared secret, inline (at least 32 bytes).
    #[serde(default)]
    pub secret: Option<String>,
    /// HS256 only: a file holding the shared secret (trailing newlines are dropped).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// RS256/ES256: the PEM public key, inline.
    #[serde(default)]
    pub public_key_pem: Option<String>,
    /// RS256/ES256: a file holding the PEM public key.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// Required `iss`: the token's issuer must equal it.
    pub issuer: String,
    /// Required `aud`: the token's audience (string or array) must contain it.
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
}

fn default_leeway() -> u64 {
    30
}

impl fmt::Debug for JwtKeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The PEM is redacted too: a private key pasted there by mistake must not reach a log
        // before validation refuses it.
        f.debug_struct("JwtKeyConfig")
            .field("id", &self.id)
            .field("algorithm", &self.algorithm)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .field(
                "public_key_pem",
                &self.public_key_pem.as_ref().map(|_| "<pem>"),
            )
            .field("public_key_file", &self.public_key_file)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// JWT signature algorithms a key can be configured for.
#[allow(clippy::upper_case_acronyms)] // The JOSE names, which are also the config values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[non_exhaustive]
pub enum JwtAlgorithm {
    /// HMAC SHA-256 with a shared secret.
    HS256,
    /// RSASSA-PKCS1-v1_5 SHA-256 with an RSA public key (2048 bits or more).
    RS256,
    /// ECDSA P-256 SHA-256 with an EC public key.
    ES256,
}

impl JwtAlgorithm {
    /// The JOSE name (`"HS256"`, …), as in a token's `alg` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
        }
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The API key's name, or `jwt:<key id>` (`jwt:<algorithm>` for a key without id).
    pub name: String,
    /// How the caller authenticated.
    pub kind: CallerKind,
    /// Admin scope; only API keys configured with `admin = true` have it, never JWT callers.
    pub admin: bool,
    /// May read the live TURN secrets (`secrets:read`, or admin); never JWT callers.
    pub secrets_read: bool,
    /// The JWT `sub`, which becomes the TURN user id; `None` for API keys.
    pub user: Option<String>,
}

/// How a caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CallerKind {
    /// A configured API key.
    ApiKey,
    /// A JWT signed by a configured key.
    Jwt,
}

/// Why a request is not authenticated. Every variant is a 401; the message is safe to return to
/// the caller (it never repeats the token or anything from it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No credentials at all.
    #[error("no credentials: send `Authorization: Bearer <API key or JWT>`")]
    MissingCredentials,
    /// An `Authorization` header that is not `Bearer <token>`.
    #[error("the Authorization header must be `Bearer <API key or JWT>`")]
    MalformedAuthorization,
    /// A token longer than [`MAX_TOKEN_LEN`].
    #[error("the token is longer than 8192 bytes")]
    TokenTooLarge,
    /// An API key that matches no configured key.
    #[error("the API key is not recognised")]
    UnknownApiKey,
    /// A JWT that is malformed or whose signature does not verify.
    #[error("invalid token: {reason}")]
    InvalidToken {
        /// What is wrong (fixed text, never token content).
        reason: &'static str,
    },
    /// A JWT past its `exp` (plus leeway).
    #[error("the token has expired")]
    TokenExpired,
    /// A JWT before its `nbf` (minus leeway).
    #[error("the token is not valid yet (nbf is in the future)")]
    TokenNotYetValid,
    /// A JWT without `exp`: tokens that never expire are refused.
    #[error("the token has no exp claim; only expiring tokens are accepted")]
    MissingExpiry,
    /// A JWT whose `iss` is missing or not the configured issuer.
    #[error("the token's issuer (iss) is not accepted")]
    WrongIssuer,
    /// A JWT whose `aud` is missing or does not contain the configured audience.
    #[error("the token's audience (aud) does not include this service")]
    WrongAudience,
    /// A JWT whose `alg` is not accepted (`none`, unsupported, or not the key's algorithm).
    #[error("token algorithm not accepted: {reason}")]
    AlgorithmNotAllowed {
        /// Why (fixed text).
        reason: &'static str,
    },
    /// A JWT whose `kid` names no configured key.
    #[error("the token's key id (kid) is not configured")]
    UnknownKeyId,
    /// A JWT without a `sub`.
    #[error("the token has no subject (sub)")]
    MissingSubject,
    /// A JWT whose `sub` is not a string of 1–128 bytes without control characters.
    #[error("the token's subject (sub) must be a string of 1-128 bytes without control characters")]
    InvalidSubject,
}

impl AuthError {
    /// True when the keys tried had none for the token, so other keys (a JWKS's) may: an
    /// unknown key id, no key of its algorithm, or, for a token without a key id, a signature
    /// none of them verifies.
    fn no_key_for_token(&self) -> bool {
        *self == Self::UnknownKeyId
            || *self == jwt::NO_KEY_FOR_ALG
            || *self == jwt::SIGNATURE_DOES_NOT_VERIFY
    }

    /// Stable machine-readable code for API responses and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingCredentials => "missing_credentials",
            Self::MalformedAuthorization => "malformed_authorization",
            Self::TokenTooLarge => "token_too_large",
            Self::UnknownApiKey => "unknown_api_key",
            Self::InvalidToken { .. } => "invalid_token",
            Self::TokenExpired => "token_expired",
            Self::TokenNotYetValid => "token_not_yet_valid",
            Self::MissingExpiry => "missing_expiry",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::AlgorithmNotAllowed { .. } => "algorithm_not_allowed",
            Self::UnknownKeyId => "unknown_key_id",
            Self::MissingSubject => "missing_subject",
            Self::InvalidSubject => "invalid_subject",
        }
    }
}

/// A problem in the `[auth]` configuration; the message starts with the field
/// (`api_keys[0].sha256: …`, `jwt_keys[1].public_key_file: …`) and never contains a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthConfigError {
    /// A field has a value that cannot work.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, e.g. `jwt_keys[1].secret`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A key file could not be read.
    #[error("{field}: cannot read {}: {source}", path.display())]
    ReadFile {
        /// The field naming the file.
        field: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl AuthConfigError {
    /// The offending field, e.g. `jwt_keys[1].public_key_file`.
    pub fn field(&self) -> &str {
        match self {
            Self::Invalid { field, .. } | Self::ReadFile { field, .. } => field,
        }
    }

    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Checks callers against the configured API keys and JWT keys. Cheap to clone; `Send + Sync`.
#[derive(Clone, Default)]
pub struct Authenticator {
    api_keys: api_key::ApiKeys,
    jwt_keys: Vec<jwt::JwtKey>,
    jwks: Vec<std::sync::Arc<jwks::JwksSource>>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("api_keys", &self.api_keys)
            .field("jwt_keys", &self.jwt_keys)
            .field("jwks", &self.jwks)
            .finish()
    }
}

impl Authenticator {
    /// Checks every entry and loads key files. Errors name the field; among the checks: one
    /// key source per JWT key and of the right kind for its algorithm, HS256 secrets of at
    /// least 32 bytes, public keys that parse (RSA ≥ 2048 bits, EC on P-256), hashes of 64 hex
    /// digits, API key names and JWT key ids unique.
    pub fn from_config(cfg: &AuthConfig) -> Result<Self, AuthConfigError> {
        let api_keys = api_key::ApiKeys::from_config(&cfg.api_keys)?;
        let jwt_keys = jwt::load_keys(&cfg.jwt_keys)?;
        let jwks = cfg
            .jwks
            .iter()
            .enumerate()
            .map(|(i, c)| jwks::JwksSource::new(i, c).map(std::sync::Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            api_keys,
            jwt_keys,
            jwks,
        })
    }

    /// Adds a development key given in plain text (`--api-key NAME:KEY`). The key is hashed at
    /// once and the plain text not kept. The errors name `name` or `key`.
    pub fn add_plain_api_key(
        &mut self,
        name: &str,
        key: &str,
        admin: bool,
    ) -> Result<(), AuthConfigError> {
        self.api_keys.add_plain(name, key, admin)
    }

    /// True when neither API keys nor JWT keys are configured (nobody can authenticate).
    pub fn is_empty(&self) -> bool {
        self.api_keys.is_empty() && self.jwt_keys.is_empty() && self.jwks.is_empty()
    }

    /// Checks an `Authorization` header value: `Bearer <token>`, the scheme in any case. A token
    /// shaped like a JWT (three base64url segments joined by dots) is verified as a JWT against
    /// `now_unix`; any other token is looked up as an API key.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        now_unix: u64,
    ) -> Result<Caller, AuthError> {
        let token = bearer_token(authorization)?;
        if !jwt::looks_like_jwt(token) {
            return self.api_keys.lookup(token);
        }
        let mut result = jwt::verify(&self.jwt_keys, token, now_unix);
        for source in &self.jwks {
            if !matches!(result, Err(ref e) if e.no_key_for_token()) {
                break;
            }
            result = jwt::verify(&source.keys(), token, now_unix);
        }
        result
    }

    /// Like [`Authenticator::authenticate`]; when the token names a key id no configured key
    /// or JWKS has, the JWKS URLs are fetched again first (at most once per 30 s each: a
    /// provider rotated its keys) and the token checked once more.
    pub async fn authenticate_fresh(
        &self,
        authorization: Option<&str>,
        now_unix: u64,
    ) -> Result<Caller, AuthError> {
        let result = self.authenticate(authorization, now_unix);
        if self.jwks.is_empty() || !matches!(result, Err(AuthError::UnknownKeyId)) {
            return result;
        }
        for source in &self.jwks {
            source.refresh("a token names an unknown key id").await;
        }
        self.authenticate(authorization, now_unix)
    }

    /// Starts fetching every JWKS URL (now, then on its interval) for as long as this
    /// authenticator is in use; a reload's new one starts its own. Needs a tokio runtime.
    pub fn start_jwks(&self) {
        for source in &self.jwks {
            tokio::spawn(jwks::JwksSource::run(std::sync::Arc::downgrade(source)));
        }
    }

    /// Checks a bare API key (the TURN REST draft passes it as `?key=`). JWTs are not accepted
    /// here: a query string ends up in access logs, and a JWT is a bearer credential for a
    /// user, so it is only taken from the header. A JWT given here is just an unknown key.
    pub fn authenticate_api_key(&self, key: &str) -> Result<Caller, AuthError> {
        if key.is_empty() {
            return Err(AuthError::MissingCredentials);
        }
        if key.len() > MAX_TOKEN_LEN {
            return Err(AuthError::TokenTooLarge);
        }
        self.api_keys.lookup(key)
    }
}

/// The token of a `Bearer` `Authorization` value.
fn bearer_token(authorization: Option<&str>) -> Result<&str, AuthError> {
    let value = authorization.unwrap_or_default().trim_matches([' ', '\t']);
    if value.is_empty() {
        return Err(AuthError::MissingCredentials);
    }
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MalformedAuthorization);
    }
    let token = rest.trim_start_matches([' ', '\t']);
    if token.is_empty() {
        return Err(AuthError::MalformedAuthorization);
    }
    // Before any other look at the token, so a huge one costs nothing more.
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::TokenTooLarge);
    }
    // RFC 6750 tokens are one word; `Bearer a b` is a client bug, not a key with a space.
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AuthError::MalformedAuthorization);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_key(name: &str, key: &str, admin: bool) -> Authenticator {
        let mut auth = Authenticator::default();
        auth.add_plain_api_key(name, key, admin).unwrap();
        auth
    }

    #[test]
    fn authenticator_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Authenticator>();
    }

    #[test]
    fn missing_credentials() {
        let auth = with_key("dev", "devkey", false);
        for value in [None, Some(""), Some("   ")] {
            let err = auth.authenticate(value, 0).unwrap_err();
            assert_eq!(err.code(), "missing_credentials", "{value:?}");
        }
        assert_eq!(
            auth.authenticate_api_key("").unwrap_err().code(),
            "missing_credentials"
        );
    }

    #[test]
    fn malformed_authorization() {
        let auth = with_key("dev", "devkey", false);
        for value in [
            "Basic x",
            "Basic ZGV2OmRldmtleQ==",
            "Bearer",
            "Bearer   ",
            "bearer\t",
            "Bearerdevkey",
            "devkey",
            "Bearer dev key",
            "Token devkey",
        ] {
            let err = auth.authenticate(Some(value), 0).unwrap_err();
            assert_eq!(err.code(), "malformed_authorization", "{value:?}");
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let auth = with_key("dev", "devkey", false);
        for value in [
            "Bearer devkey",
            "bearer devkey",
            "BEARER devkey",
            "Bearer   devkey  ",
            "Bearer\tdevkey",
        ] {
            let caller = auth.authenticate(Some(value), 0).unwrap();
            assert_eq!(caller.name, "dev", "{value:?}");
        }
    }

    #[test]
    fn oversized_token_is_refused_before_parsing() {
        let auth = with_key("dev", "devkey", false);
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        let err = auth
            .authenticate(Some(&format!("Bearer {long}")), 0)
            .unwrap_err();
        assert_eq!(err.code(), "token_too_large");
        assert_eq!(
            auth.authenticate_api_key(&long).unwrap_err().code(),
            "token_too_large"
        );
        // JWT-shaped (and with whitespace inside): the length check comes first.
        let jwt_like = format!(
            "{}.{}.{}",
            "a".repeat(4000),
            "b".repeat(4000),
            "c".repeat(200)
        );
        let err = auth
            .authenticate(Some(&format!("Bearer {jwt_like}")), 0)
            .unwrap_err();
        assert_eq!(err.code(), "token_too_large");
        let spaced = format!("{} x", "a".repeat(MAX_TOKEN_LEN));
        let err = auth
            .authenticate(Some(&format!("Bearer {spaced}")), 0)
            .unwrap_err();
        assert_eq!(err.code(), "token_too_large");
        // The limit itself is allowed: that token is merely unknown.
        let at_limit = "a".repeat(MAX_TOKEN_LEN);
        let err = auth
            .authenticate(Some(&format!("Bearer {at_limit}")), 0)
            .unwrap_err();
        assert_eq!(err.code(), "unknown_api_key");
    }

    #[test]
    fn is_empty() {
        assert!(Authenticator::default().is_empty());
        assert!(
            Authenticator::from_config(&AuthConfig::default())
                .unwrap()
                .is_empty()
        );
        assert!(!with_key("dev", "devkey", false).is_empty());
        let jwt_only = Authenticator::from_config(&AuthConfig {
            api_keys: vec![],
            jwt_keys: vec![JwtKeyConfig {
                id: None,
                algorithm: JwtAlgorithm::HS256,
                secret: Some("s".repeat(32)),
                secret_file: None,
                public_key_pem: None,
                public_key_file: None,
                issuer: "iss".into(),
                audience: "aud".into(),
                leeway_secs: 30,
            }],
            jwks: vec![],
        })
        .unwrap();
        assert!(!jwt_only.is_empty());
    }

    #[test]
    fn config_parses_from_toml() {
        let cfg: AuthConfig = toml::from_str(
            r#"
            [[api_keys]]
            name = "backend"
            sha256 = "2C26B46B68FFC68FF99B453C1D30413413422D706483BFA0F98A5E886266E7AE"
            admin = true

            [[api_keys]]
            name = "web"
            sha256 = "fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9"

            [[jwt_keys]]
            id = "k1"
            algorithm = "HS256"
            secret = "0123456789abcdef0123456789abcdef"
            issuer = "https://login.example"
            audience = "geoturn"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.api_keys.len(), 2);
        assert!(cfg.api_keys[0].admin);
        assert!(!cfg.api_keys[1].admin);
        assert_eq!(cfg.jwt_keys[0].algorithm, JwtAlgorithm::HS256);
        assert_eq!(cfg.jwt_keys[0].leeway_secs, 30, "default leeway");
        let auth = Authenticator::from_config(&cfg).unwrap();
        let caller = auth.authenticate(Some("Bearer foo"), 0).unwrap();
        assert_eq!(caller.name, "backend");
        assert!(caller.admin);
        assert_eq!(auth.authenticate_api_key("bar").unwrap().name, "web");

        assert!(
            toml::from_str::<AuthConfig>(
                "[[api_keys]]\nname = \"a\"\nsha256 = \"00\"\nsecret = \"x\""
            )
            .is_err()
        );
        assert!(toml::from_str::<AuthConfig>("bogus = 1").is_err());
        assert!(
            toml::from_str::<AuthConfig>(
                "[[jwt_keys]]\nalgorithm = \"none\"\nissuer = \"i\"\naudience = \"a\""
            )
            .is_err()
        );
        assert!(
            toml::from_str::<AuthConfig>(
                "[[jwt_keys]]\nalgorithm = \"HS512\"\nissuer = \"i\"\naudience = \"a\""
            )
            .is_err()
        );
    }

    #[test]
    fn debug_never_prints_secrets() {
        let secret = "supersecret-supersecret-supersecret";
        let cfg = AuthConfig {
            api_keys: vec![ApiKeyConfig {
                name: "backend".into(),
                sha256: hash_api_key("the-api-key"),
                admin: false,
                scopes: vec![],
            }],
            jwt_keys: vec![JwtKeyConfig {
                id: Some("k1".into()),
                algorithm: JwtAlgorithm::HS256,
                secret: Some(secret.into()),
                secret_file: None,
                public_key_pem: None,
                public_key_file: None,
                issuer: "iss".into(),
                audience: "aud".into(),
                leeway_secs: 30,
            }],
            jwks: vec![],
        };
        let mut auth = Authenticator::from_config(&cfg).unwrap();
        auth.add_plain_api_key("dev", "plain-dev-key", true)
            .unwrap();
        for text in [format!("{cfg:?}"), format!("{auth:?}")] {
            assert!(!text.contains(secret), "{text}");
            assert!(!text.contains(&hash_api_key("the-api-key")), "{text}");
            assert!(!text.contains("plain-dev-key"), "{text}");
            assert!(!text.contains(&hash_api_key("plain-dev-key")), "{text}");
            assert!(text.contains("backend"), "{text}");
        }
        assert!(format!("{auth:?}").contains("dev"));
    }

    #[test]
    fn error_codes_are_distinct() {
        let all = [
            AuthError::MissingCredentials,
            AuthError::MalformedAuthorization,
            AuthError::TokenTooLarge,
            AuthError::UnknownApiKey,
            AuthError::InvalidToken { reason: "x" },
            AuthError::TokenExpired,
            AuthError::TokenNotYetValid,
            AuthError::MissingExpiry,
            AuthError::WrongIssuer,
            AuthError::WrongAudience,
            AuthError::AlgorithmNotAllowed { reason: "x" },
            AuthError::UnknownKeyId,
            AuthError::MissingSubject,
            AuthError::InvalidSubject,
        ];
        let codes: std::collections::HashSet<_> = all.iter().map(AuthError::code).collect();
        assert_eq!(codes.len(), all.len());
    }
}
