//! JWT callers: tokens signed by a configured key, HS256, RS256 or ES256.
//!
//! Each configured key has one algorithm and the token's `alg` must equal it. The key is chosen
//! by the header's `kid` when there is one, else among the keys of the token's `alg`. A token
//! therefore never picks how it is checked: `alg: none` is refused, and an HS256 token
//! "signed" with an RSA public key's PEM as HMAC secret never reaches an HMAC check with that
//! PEM (the classic algorithm-confusion forgery).
//!
//! jsonwebtoken verifies the signature only; the claims are checked here against the caller's
//! `now_unix`, each failure with its own [`AuthError`] code. Error messages are fixed text, so
//! nothing from the token (or the token itself) is echoed back.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::{
    AuthConfigError, AuthError, Caller, CallerKind, JwtAlgorithm, JwtKeyConfig, MAX_TOKEN_LEN,
};

/// Shortest HS256 secret: RFC 7518 §3.2 wants a key at least as long as the hash output.
const MIN_HS256_SECRET_LEN: usize = 32;
/// Smallest RSA modulus accepted (NIST SP 800-131A).
const MIN_RSA_BITS: usize = 2048;
/// Largest leeway: clock skew is seconds; hours would quietly extend every token's life.
const MAX_LEEWAY_SECS: u64 = 3600;
/// Longest key id.
const MAX_KID_LEN: usize = 128;
/// Longest `sub`; it becomes the TURN user id, which goes into the TURN username.
const MAX_SUB_LEN: usize = 128;

pub(super) const SIGNATURE_DOES_NOT_VERIFY: AuthError = AuthError::InvalidToken {
    reason: "signature does not verify",
};
pub(super) const NO_KEY_FOR_ALG: AuthError = AuthError::AlgorithmNotAllowed {
    reason: "no key is configured for the token's alg",
};

/// A loaded JWT key, ready to verify.
#[derive(Clone)]
pub(super) struct JwtKey {
    /// `jwt:<id>` or `jwt:<algorithm>`: the [`Caller`] name.
    caller_name: String,
    id: Option<String>,
    algorithm: JwtAlgorithm,
    key: DecodingKey,
    /// Built once: signature and `alg` only (see [`signature_only`]).
    validation: Validation,
    issuer: String,
    audience: String,
    leeway_secs: u64,
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No key material, not even public: a line per key is enough to see what is loaded.
        f.debug_struct("JwtKey")
            .field("name", &self.caller_name)
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// Checks and loads the `[[auth.jwt_keys]]` entries, reading key files.
pub(super) fn load_keys(configs: &[JwtKeyConfig]) -> Result<Vec<JwtKey>, AuthConfigError> {
    let mut keys: Vec<JwtKey> = Vec::with_capacity(configs.len());
    for (i, cfg) in configs.iter().enumerate() {
        let key = JwtKey::load(i, cfg)?;
        // A `kid` must name one key, or which key verifies would depend on config order.
        if let Some(id) = &key.id
            && keys.iter().any(|k| k.id.as_ref() == Some(id))
        {
            return Err(AuthConfigError::invalid(
                format!("jwt_keys[{i}].id"),
                format!("key id `{id}` is used twice"),
            ));
        }
        keys.push(key);
    }
    Ok(keys)
}

impl JwtKey {
    fn load(index: usize, cfg: &JwtKeyConfig) -> Result<Self, AuthConfigError> {
        let field = |name: &str| format!("jwt_keys[{index}].{name}");
        let invalid = |name: &str, reason: String| AuthConfigError::invalid(field(name), reason);

        if let Some(id) = &cfg.id {
            check_kid(id).map_err(|reason| invalid("id", reason))?;
        }
        if cfg.issuer.is_empty() {
            return Err(invalid("issuer", "must not be empty".into()));
        }
        if cfg.audience.is_empty() {
            return Err(invalid("audience", "must not be empty".into()));
        }
        if cfg.leeway_secs > MAX_LEEWAY_SECS {
            return Err(invalid(
                "leeway_secs",
                format!("at most {MAX_LEEWAY_SECS} seconds"),
            ));
        }

        let alg = cfg.algorithm;
        let key = match alg {
            JwtAlgorithm::HS256 => {
                for (name, given) in [
                    ("public_key_pem", cfg.public_key_pem.is_some()),
                    ("public_key_file", cfg.public_key_file.is_some()),
                ] {
                    if given {
                        return Err(invalid(
                            name,
                            "only for RS256/ES256 keys; an HS256 key takes `secret` or \
                             `secret_file`"
                                .into(),
                        ));
                    }
                }
                let (secret, source) = match (&cfg.secret, &cfg.secret_file) {
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            "secret_file",
                            "give `secret` or `secret_file`, not both".into(),
                        ));
                    }
                    (None, None) => {
                        return Err(invalid(
                            "secret",
                            "an HS256 key needs `secret` or `secret_file`".into(),
                        ));
                    }
                    (Some(secret), None) => (secret.as_bytes().to_vec(), "secret"),
                    (None, Some(path)) => {
                        let secret =
                            read_secret_file(path).map_err(|source| AuthConfigError::ReadFile {
                                field: field("secret_file"),
                                path: path.clone(),
                                source,
                            })?;
                        (secret, "secret_file")
                    }
                };
                check_hs256_secret(&secret).map_err(|reason| invalid(source, reason))?;
                DecodingKey::from_secret(&secret)
            }
            JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
                for (name, given) in [
                    ("secret", cfg.secret.is_some()),
                    ("secret_file", cfg.secret_file.is_some()),
                ] {
                    if given {
                        return Err(invalid(
                            name,
                            format!(
                                "only for HS256 keys; an {alg} key takes `public_key_pem` or \
                                 `public_key_file`"
                            ),
                        ));
                    }
                }
                let (pem, source) = match (&cfg.public_key_pem, &cfg.public_key_file) {
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            "public_key_file",
                            "give `public_key_pem` or `public_key_file`, not both".into(),
                        ));
                    }
                    (None, None) => {
                        return Err(invalid(
                            "public_key_pem",
                            format!("an {alg} key needs `public_key_pem` or `public_key_file`"),
                        ));
                    }
                    (Some(pem), None) => (pem.clone(), "public_key_pem"),
                    (None, Some(path)) => {
                        let pem = std::fs::read_to_string(path).map_err(|source| {
                            AuthConfigError::ReadFile {
                                field: field("public_key_file"),
                                path: path.clone(),
                                source,
                            }
                        })?;
                        (pem, "public_key_file")
                    }
                };
                load_public_key(alg, &pem).map_err(|reason| invalid(source, reason))?
            }
        };

        Ok(Self {
            caller_name: format!("jwt:{}", cfg.id.as_deref().unwrap_or(alg.as_str())),
            id: cfg.id.clone(),
            algorithm: alg,
            key,
            validation: signature_only(alg),
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            leeway_secs: cfg.leeway_secs,
        })
    }
}

impl JwtKey {
    /// A key from a JWKS document (`jwks.rs`): an RS256 key of at least 2048 bits or an ES256
    /// key on P-256, checked as configured keys are; `None` for anything else (other key types
    /// and algorithms, encryption keys), which the document may hold for other relying parties.
    pub(super) fn from_jwk(
        jwk: &Jwk,
        issuer: &str,
        audience: &str,
        leeway_secs: u64,
    ) -> Option<Self> {
        use jsonwebtoken::jwk::{KeyAlgorithm, PublicKeyUse};
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return None;
        }
        let kid = jwk.common.key_id.clone().filter(|k| check_kid(k).is_ok())?;
        let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => JwtAlgorithm::RS256,
            (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
                if p.curve == EllipticCurve::P256 =>
            {
                JwtAlgorithm::ES256
            }
            _ => return None,
        };
        if let AlgorithmParameters::RSA(params) = &jwk.algorithm {
            let modulus = URL_SAFE_NO_PAD.decode(&params.n).ok()?;
            if bit_length(&modulus) < MIN_RSA_BITS {
                return None;
            }
        }
        let key = DecodingKey::from_jwk(jwk).ok()?;
        if alg == JwtAlgorithm::ES256 {
            // Builds the verifier, which checks the point is on the curve.
            jsonwebtoken::crypto::verify("", b"", &key, Algorithm::ES256).ok()?;
        }
        Some(Self {
            caller_name: format!("jwt:{kid}"),
            id: Some(kid),
            algorithm: alg,
            key,
            validation: signature_only(alg),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            leeway_secs,
        })
    }
}

/// jsonwebtoken's settings for one key: check the signature and that `alg` is the key's; every
/// claim is left to [`check_claims`], which uses the caller's clock and our error codes.
fn signature_only(alg: JwtAlgorithm) -> Validation {
    let mut validation = Validation::new(jsonwebtoken_algorithm(alg));
    validation.required_spec_claims = HashSet::new();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    validation
}

fn jsonwebtoken_algorithm(alg: JwtAlgorithm) -> Algorithm {
    match alg {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
    }
}

fn check_kid(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_KID_LEN {
        return Err(format!("a key id must be 1-{MAX_KID_LEN} bytes"));
    }
    if id.chars().any(char::is_control) {
        return Err("a key id must not contain control characters".into());
    }
    Ok(())
}

/// The file's bytes without trailing newlines (editors and `echo` add one).
fn read_secret_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut secret = std::fs::read(path)?;
    while secret.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
        secret.pop();
    }
    Ok(secret)
}

/// Messages give lengths, never content.
fn check_hs256_secret(secret: &[u8]) -> Result<(), String> {
    if secret.len() < MIN_HS256_SECRET_LEN {
        return Err(format!(
            "an HS256 secret must be at least {MIN_HS256_SECRET_LEN} bytes (this one has {})",
            secret.len()
        ));
    }
    // A PEM here means a key pair was meant: as an HMAC secret a public key lets anyone sign.
    if secret.trim_ascii_start().starts_with(b"-----BEGIN") {
        return Err(
            "this is a PEM key, not a shared secret; for a key pair use RS256/ES256 with \
             `public_key_pem` or `public_key_file`"
                .into(),
        );
    }
    Ok(())
}

/// The label of the first PEM block (`PUBLIC KEY` for `-----BEGIN PUBLIC KEY-----`), the block
/// jsonwebtoken's PEM parser reads.
fn pem_label(pem: &str) -> Option<&str> {
    let start = pem.find("-----BEGIN ")? + "-----BEGIN ".len();
    let rest = pem.get(start..)?;
    let end = rest.find("-----")?;
    rest.get(..end)
}

/// Parses and checks a PEM public key for `alg`: the right kind, large enough, on the right
/// curve, so a bad key is a config error rather than every token failing later.
fn load_public_key(alg: JwtAlgorithm, pem: &str) -> Result<DecodingKey, String> {
    let label = pem_label(pem)
        .ok_or("not a PEM public key (expected a -----BEGIN PUBLIC KEY----- block)")?;
    if label.contains("PRIVATE") {
        return Err(
            "this is a private key: give its public half (`openssl pkey -pubout`), \
                    the private key stays with the token issuer"
                .into(),
        );
    }
    let accepted: &[&str] = match alg {
        // SPKI, or PKCS#1 as some RSA tools write it.
        JwtAlgorithm::RS256 => &["PUBLIC KEY", "RSA PUBLIC KEY"],
        _ => &["PUBLIC KEY"],
    };
    if !accepted.contains(&label) {
        return Err(format!(
            "expected a -----BEGIN PUBLIC KEY----- block, found -----BEGIN {label}-----"
        ));
    }

    match alg {
        JwtAlgorithm::RS256 => {
            let key = DecodingKey::from_rsa_pem(pem.as_bytes())
                .map_err(|e| format!("not an RSA public key ({e})"))?;
            // Building the JWK parses the key, so a broken one fails here, and gives the modulus.
            let jwk = Jwk::from_decoding_key(&key, Some(Algorithm::RS256))
                .map_err(|e| format!("not a usable RSA public key ({e})"))?;
            let AlgorithmParameters::RSA(params) = &jwk.algorithm else {
                return Err("not an RSA public key".into());
            };
            let modulus = URL_SAFE_NO_PAD
                .decode(&params.n)
                .map_err(|_| "not a usable RSA public key (modulus)".to_owned())?;
            let bits = bit_length(&modulus);
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "the RSA key has {bits} bits; at least {MIN_RSA_BITS} are needed"
                ));
            }
            Ok(key)
        }
        JwtAlgorithm::ES256 => {
            let key = DecodingKey::from_ec_pem(pem.as_bytes())
                .map_err(|e| format!("not an EC public key ({e})"))?;
            let jwk = Jwk::from_decoding_key(&key, Some(Algorithm::ES256))
                .map_err(|e| format!("not a usable EC public key ({e})"))?;
            if !matches!(
                &jwk.algorithm,
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256
            ) {
                return Err("ES256 needs a P-256 (prime256v1) key".into());
            }
            // Verifying anything builds the verifier, which checks the point is on the curve;
            // the `false` result for this empty signature is expected.
            jsonwebtoken::crypto::verify("", b"", &key, Algorithm::ES256)
                .map_err(|e| format!("not a valid P-256 public key ({e})"))?;
            Ok(key)
        }
        JwtAlgorithm::HS256 => Err("HS256 takes a shared secret, not a public key".into()),
    }
}

fn bit_length(big_endian: &[u8]) -> usize {
    let Some(first) = big_endian.iter().position(|&b| b != 0) else {
        return 0;
    };
    let leading = big_endian
        .get(first)
        .map_or(0, |b| usize::try_from(b.leading_zeros()).unwrap_or(8));
    (big_endian.len() - first) * 8 - leading
}

/// Three base64url segments joined by dots, the first two non-empty; the signature may be
/// empty so an unsigned (`alg: none`) token is still recognised, and refused, as a JWT.
pub(super) fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !header.is_empty()
        && !payload.is_empty()
        && [header, payload, signature]
            .iter()
            .all(|part| part.bytes().all(is_base64url))
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// What the JOSE header says about how to verify.
struct TokenHeader {
    alg: JwtAlgorithm,
    kid: Option<String>,
}

/// Reads `alg` (and `kid`) ourselves, before jsonwebtoken does, so `none` and other algorithms
/// get a clear refusal instead of a JSON error.
fn parse_header(segment: &str) -> Result<TokenHeader, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::InvalidToken {
            reason: "the header is not base64url",
        })?;
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| AuthError::InvalidToken {
            reason: "the header is not a JSON object",
        })?;
    let Some(Value::String(alg)) = header.get("alg") else {
        return Err(AuthError::InvalidToken {
            reason: "the header has no alg",
        });
    };
    let alg = match alg.as_str() {
        "HS256" => JwtAlgorithm::HS256,
        "RS256" => JwtAlgorithm::RS256,
        "ES256" => JwtAlgorithm::ES256,
        none if none.eq_ignore_ascii_case("none") => {
            return Err(AuthError::AlgorithmNotAllowed {
                reason: "unsigned tokens (alg \"none\") are not accepted",
            });
        }
        _ => {
            return Err(AuthError::AlgorithmNotAllowed {
                reason: "only HS256, RS256 and ES256 are accepted",
            });
        }
    };
    // RFC 7515 §4.1.11: extensions named in `crit` must be understood; none are.
    if header.contains_key("crit") {
        return Err(AuthError::InvalidToken {
            reason: "critical header extensions (crit) are not supported",
        });
    }
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => {
            return Err(AuthError::InvalidToken {
                reason: "the header's kid is not a string",
            });
        }
    };
    Ok(TokenHeader { alg, kid })
}

/// The keys that may verify a token with this header.
fn candidate_keys<'k>(
    keys: &'k [JwtKey],
    alg: JwtAlgorithm,
    kid: Option<&str>,
) -> Result<Vec<&'k JwtKey>, AuthError> {
    if let Some(kid) = kid {
        let key = keys
            .iter()
            .find(|k| k.id.as_deref() == Some(kid))
            .ok_or(AuthError::UnknownKeyId)?;
        // The key's configured algorithm rules: an HS256 token naming an RSA key's id is
        // refused here, before its "HMAC with the public key PEM" could be checked.
        if key.algorithm != alg {
            return Err(AuthError::AlgorithmNotAllowed {
                reason: "the token's alg is not the algorithm of its key",
            });
        }
        return Ok(vec![key]);
    }
    let matching: Vec<&JwtKey> = keys.iter().filter(|k| k.algorithm == alg).collect();
    if matching.is_empty() {
        return Err(NO_KEY_FOR_ALG);
    }
    Ok(matching)
}

/// Verifies a JWT-shaped token: header, key choice, signature, then claims at `now_unix`.
pub(super) fn verify(keys: &[JwtKey], token: &str, now_unix: u64) -> Result<Caller, AuthError> {
    // The callers check already; repeated so this function is safe on its own.
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::TokenTooLarge);
    }
    let header = parse_header(token.split('.').next().unwrap_or_default())?;
    for key in candidate_keys(keys, header.alg, header.kid.as_deref())? {
        match jsonwebtoken::decode::<Value>(token, &key.key, &key.validation) {
            Ok(data) => return check_claims(key, &data.claims, now_unix),
            // Without a kid several keys may be tried; only a signature mismatch moves on.
            Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => {}
            Err(e) => match e.kind() {
                ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidKeyFormat => {
                    // Keys are checked at load, so this is a bug or an odd key: say which key.
                    tracing::warn!(key = %key.caller_name, error = %e, "JWT key failed to verify");
                }
                _ => return Err(decode_error(e.kind())),
            },
        }
    }
    Err(SIGNATURE_DOES_NOT_VERIFY)
}

/// jsonwebtoken's errors, as fixed-text [`AuthError`]s (its messages may quote token content).
fn decode_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => AuthError::AlgorithmNotAllowed {
            reason: "the token's alg is not the algorithm of its key",
        },
        ErrorKind::InvalidSignature => SIGNATURE_DOES_NOT_VERIFY,
        ErrorKind::Base64(_) => AuthError::InvalidToken {
            reason: "a part is not valid base64url",
        },
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => AuthError::InvalidToken {
            reason: "the header or claims are not valid JSON",
        },
        ErrorKind::InvalidToken => AuthError::InvalidToken {
            reason: "not a JWT (header.payload.signature)",
        },
        _ => AuthError::InvalidToken {
            reason: "the token could not be verified",
        },
    }
}

/// How a fractional NumericDate is made whole: always towards the stricter instant.
#[derive(Clone, Copy)]
enum Round {
    Down,
    Up,
}

/// RFC 7519 NumericDate: non-negative seconds, possibly fractional.
fn numeric_date(value: &Value, round: Round) -> Option<u64> {
    let Value::Number(n) = value else {
        return None;
    };
    if let Some(secs) = n.as_u64() {
        return Some(secs);
    }
    let secs = n
        .as_f64()
        .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1e19)?;
    let whole = match round {
        Round::Down => secs.floor(),
        Round::Up => secs.ceil(),
    };
    // In range by the filter above.
    Some(whole as u64)
}

/// The claims of a token whose signature verified with `key`.
fn check_claims(key: &JwtKey, claims: &Value, now_unix: u64) -> Result<Caller, AuthError> {
    let Value::Object(claims) = claims else {
        return Err(AuthError::InvalidToken {
            reason: "the claims are not a JSON object",
        });
    };
    let present = |name: &str| claims.get(name).filter(|v| !v.is_null());

    let exp = present("exp").ok_or(AuthError::MissingExpiry)?;
    // A fractional exp is rounded down, a fractional nbf up: the stricter reading.
    let exp = numeric_date(exp, Round::Down).ok_or(AuthError::InvalidToken {
        reason: "exp is not a NumericDate",
    })?;
    if now_unix > exp.saturating_add(key.leeway_secs) {
        return Err(AuthError::TokenExpired);
    }
    if let Some(nbf) = present("nbf") {
        let nbf = numeric_date(nbf, Round::Up).ok_or(AuthError::InvalidToken {
            reason: "nbf is not a NumericDate",
        })?;
        if now_unix.saturating_add(key.leeway_secs) < nbf {
            return Err(AuthError::TokenNotYetValid);
        }
    }

    if present("iss").and_then(Value::as_str) != Some(key.issuer.as_str()) {
        return Err(AuthError::WrongIssuer);
    }
    let audience_ok = match present("aud") {
        Some(Value::String(aud)) => *aud == key.audience,
        Some(Value::Array(auds)) => auds
            .iter()
            .any(|aud| aud.as_str() == Some(key.audience.as_str())),
        _ => false,
    };
    if !audience_ok {
        return Err(AuthError::WrongAudience);
    }

    let sub = match present("sub") {
        None => return Err(AuthError::MissingSubject),
        Some(Value::String(sub)) => sub,
        Some(_) => return Err(AuthError::InvalidSubject),
    };
    if sub.is_empty() {
        return Err(AuthError::MissingSubject);
    }
    if sub.len() > MAX_SUB_LEN || sub.chars().any(char::is_control) {
        return Err(AuthError::InvalidSubject);
    }

    Ok(Caller {
        name: key.caller_name.clone(),
        kind: CallerKind::Jwt,
        // Admin operations need an API key: a user's token never carries operator rights.
        admin: false,
        secrets_read: false,
        user: Some(sub.clone()),
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::super::{AuthConfig, Authenticator};
    use super::*;

    const NOW: u64 = 1_700_000_000;
    const ISS: &str = "https://login.example";
    const AUD: &str = "geoturn";
    /// 32 bytes, the minimum.
    const HS_SECRET: &str = "0123456789abcdef0123456789abcdef";

    const RSA_PRIVATE: &str = include_str!("testdata/test-only-rsa-private.pem");
    const RSA_PUBLIC: &str = include_str!("testdata/test-only-rsa-public.pem");
    const RSA1024_PUBLIC: &str = include_str!("testdata/test-only-rsa1024-public.pem");
    const EC_PRIVATE: &str = include_str!("testdata/test-only-ec-private.pem");
    const EC_PUBLIC: &str = include_str!("testdata/test-only-ec-public.pem");
    const EC_P384_PUBLIC: &str = include_str!("testdata/test-only-ec-p384-public.pem");

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/auth/testdata")
            .join(name)
    }

    fn key_config(algorithm: JwtAlgorithm, id: Option<&str>) -> JwtKeyConfig {
        JwtKeyConfig {
            id: id.map(str::to_owned),
            algorithm,
            secret: None,
            secret_file: None,
            public_key_pem: None,
            public_key_file: None,
            issuer: ISS.into(),
            audience: AUD.into(),
            leeway_secs: 30,
        }
    }

    fn hs_config(id: Option<&str>) -> JwtKeyConfig {
        JwtKeyConfig {
            secret: Some(HS_SECRET.into()),
            ..key_config(JwtAlgorithm::HS256, id)
        }
    }

    fn rs_config(id: Option<&str>) -> JwtKeyConfig {
        JwtKeyConfig {
            public_key_pem: Some(RSA_PUBLIC.into()),
            ..key_config(JwtAlgorithm::RS256, id)
        }
    }

    fn es_config(id: Option<&str>) -> JwtKeyConfig {
        JwtKeyConfig {
            public_key_pem: Some(EC_PUBLIC.into()),
            ..key_config(JwtAlgorithm::ES256, id)
        }
    }

    fn authenticator(jwt_keys: Vec<JwtKeyConfig>) -> Authenticator {
        Authenticator::from_config(&AuthConfig {
            api_keys: vec![],
            jwt_keys,
            jwks: vec![],
        })
        .unwrap()
    }

    fn config_error(jwt_keys: Vec<JwtKeyConfig>) -> AuthConfigError {
        Authenticator::from_config(&AuthConfig {
            api_keys: vec![],
            jwt_keys,
            jwks: vec![],
        })
        .unwrap_err()
    }

    fn claims() -> Value {
        json!({"sub": "user-1", "iss": ISS, "aud": AUD, "iat": NOW, "exp": NOW + 300})
    }

    fn with(changes: Value) -> Value {
        let mut claims = claims();
        for (name, value) in changes.as_object().unwrap() {
            claims[name] = value.clone();
        }
        claims
    }

    fn without(name: &str) -> Value {
        let mut claims = claims();
        claims.as_object_mut().unwrap().remove(name);
        claims
    }

    fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
        let header = Header {
            kid: kid.map(str::to_owned),
            ..Header::new(alg)
        };
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    fn hs_token(claims: &Value) -> String {
        sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(HS_SECRET.as_bytes()),
            None,
            claims,
        )
    }

    fn rs_token(kid: Option<&str>, claims: &Value) -> String {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        sign(Algorithm::RS256, &key, kid, claims)
    }

    fn es_token(kid: Option<&str>, claims: &Value) -> String {
        // The fixture is PKCS#8 (`BEGIN PRIVATE KEY`), which from_ec_pem needs.
        let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
        sign(Algorithm::ES256, &key, kid, claims)
    }

    fn b64(json: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).unwrap())
    }

    fn check(auth: &Authenticator, token: &str) -> Result<Caller, AuthError> {
        check_at(auth, token, NOW)
    }

    fn check_at(auth: &Authenticator, token: &str, now: u64) -> Result<Caller, AuthError> {
        auth.authenticate(Some(&format!("Bearer {token}")), now)
    }

    fn code(auth: &Authenticator, token: &str) -> &'static str {
        check(auth, token).unwrap_err().code()
    }

    #[test]
    fn hs256_happy_path() {
        let auth = authenticator(vec![hs_config(None)]);
        let caller = check(&auth, &hs_token(&claims())).unwrap();
        assert_eq!(
            caller,
            Caller {
                name: "jwt:HS256".into(),
                kind: CallerKind::Jwt,
                admin: false,
                secrets_read: false,
                user: Some("user-1".into()),
            }
        );
    }

    #[test]
    fn hs256_secret_file_drops_trailing_newline() {
        let secret = std::fs::read_to_string(testdata("test-only-hs256-secret.txt")).unwrap();
        assert!(secret.ends_with('\n'), "the fixture has a trailing newline");
        let auth = authenticator(vec![JwtKeyConfig {
            secret_file: Some(testdata("test-only-hs256-secret.txt")),
            ..key_config(JwtAlgorithm::HS256, Some("file"))
        }]);
        let token = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(secret.trim_end().as_bytes()),
            None,
            &claims(),
        );
        assert_eq!(check(&auth, &token).unwrap().name, "jwt:file");
        let with_newline = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(secret.as_bytes()),
            None,
            &claims(),
        );
        assert_eq!(code(&auth, &with_newline), "invalid_token");
    }

    #[test]
    fn rs256_happy_path() {
        let auth = authenticator(vec![rs_config(Some("rsa-1"))]);
        let caller = check(&auth, &rs_token(Some("rsa-1"), &claims())).unwrap();
        assert_eq!(caller.name, "jwt:rsa-1");
        assert_eq!(caller.kind, CallerKind::Jwt);
        assert_eq!(caller.user.as_deref(), Some("user-1"));
        assert!(!caller.admin);
        // Without kid the key is found by algorithm.
        assert_eq!(
            check(&auth, &rs_token(None, &claims())).unwrap().name,
            "jwt:rsa-1"
        );

        // The same key from a file.
        let from_file = authenticator(vec![JwtKeyConfig {
            public_key_file: Some(testdata("test-only-rsa-public.pem")),
            ..key_config(JwtAlgorithm::RS256, None)
        }]);
        let caller = check(&from_file, &rs_token(None, &claims())).unwrap();
        assert_eq!(caller.name, "jwt:RS256");
    }

    #[test]
    fn es256_happy_path() {
        let auth = authenticator(vec![es_config(None)]);
        let caller = check(&auth, &es_token(None, &claims())).unwrap();
        assert_eq!(caller.name, "jwt:ES256");
        assert_eq!(caller.user.as_deref(), Some("user-1"));

        let from_file = authenticator(vec![JwtKeyConfig {
            public_key_file: Some(testdata("test-only-ec-public.pem")),
            ..key_config(JwtAlgorithm::ES256, Some("ec"))
        }]);
        let caller = check(&from_file, &es_token(Some("ec"), &claims())).unwrap();
        assert_eq!(caller.name, "jwt:ec");
    }

    #[test]
    fn alg_none_is_refused() {
        let auth = authenticator(vec![
            hs_config(Some("k1")),
            rs_config(None),
            es_config(None),
        ]);
        let payload = b64(&claims());
        for header in [
            json!({"alg": "none", "typ": "JWT"}),
            json!({"alg": "None", "typ": "JWT"}),
            json!({"alg": "NONE"}),
            json!({"alg": "none", "kid": "k1"}),
        ] {
            // Unsigned: empty signature part.
            let token = format!("{}.{payload}.", b64(&header));
            assert!(looks_like_jwt(&token));
            let err = check(&auth, &token).unwrap_err();
            assert_eq!(err.code(), "algorithm_not_allowed", "{header}");
            assert!(err.to_string().contains("none"), "{err}");
            // With some signature anyway.
            let token = format!("{}.{payload}.c2ln", b64(&header));
            assert_eq!(code(&auth, &token), "algorithm_not_allowed", "{header}");
        }
    }

    #[test]
    fn other_algorithms_are_refused() {
        let auth = authenticator(vec![hs_config(None)]);
        let secret = EncodingKey::from_secret(HS_SECRET.as_bytes());
        // Same secret, same family, other algorithm: still not the configured one.
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let token = sign(alg, &secret, None, &claims());
            assert_eq!(code(&auth, &token), "algorithm_not_allowed", "{alg:?}");
        }
        let payload = b64(&claims());
        for header in [
            json!({"alg": "PS256"}),
            json!({"alg": "EdDSA"}),
            json!({"alg": "hs256"}),
            json!({"alg": "HS256 "}),
            json!({"alg": ""}),
        ] {
            let token = format!("{}.{payload}.c2ln", b64(&header));
            assert_eq!(code(&auth, &token), "algorithm_not_allowed", "{header}");
        }
        // No usable alg at all: malformed, not a panic.
        for header in [
            json!({"alg": 256}),
            json!({"typ": "JWT"}),
            json!({"alg": null}),
        ] {
            let token = format!("{}.{payload}.c2ln", b64(&header));
            assert_eq!(code(&auth, &token), "invalid_token", "{header}");
        }
    }

    #[test]
    fn hs256_signed_with_rsa_public_key_is_refused() {
        // The algorithm-confusion forgery: HMAC keyed with the (public) RSA key's PEM.
        let forged_key = EncodingKey::from_secret(RSA_PUBLIC.as_bytes());
        let auth = authenticator(vec![rs_config(Some("rsa"))]);
        for kid in [None, Some("rsa")] {
            let token = sign(Algorithm::HS256, &forged_key, kid, &claims());
            assert_eq!(code(&auth, &token), "algorithm_not_allowed", "kid {kid:?}");
        }
        // The key choice itself refuses it, before any signature check.
        let keys = load_keys(&[rs_config(Some("rsa"))]).unwrap();
        for kid in [None, Some("rsa")] {
            let err = candidate_keys(&keys, JwtAlgorithm::HS256, kid).unwrap_err();
            assert_eq!(err.code(), "algorithm_not_allowed");
        }
        // With an HS256 key configured too, the forged token meets only that key's secret.
        let auth = authenticator(vec![rs_config(Some("rsa")), hs_config(None)]);
        let token = sign(Algorithm::HS256, &forged_key, None, &claims());
        assert_eq!(code(&auth, &token), "invalid_token");
    }

    #[test]
    fn hs256_token_with_only_es256_key_is_refused() {
        let auth = authenticator(vec![es_config(None)]);
        assert_eq!(code(&auth, &hs_token(&claims())), "algorithm_not_allowed");
        // Naming the EC key's id does not help.
        let auth = authenticator(vec![es_config(Some("ec"))]);
        let token = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(EC_PUBLIC.as_bytes()),
            Some("ec"),
            &claims(),
        );
        assert_eq!(code(&auth, &token), "algorithm_not_allowed");
        // An RS256 token naming the EC key is refused the same way.
        assert_eq!(
            code(&auth, &rs_token(Some("ec"), &claims())),
            "algorithm_not_allowed"
        );
    }

    #[test]
    fn no_jwt_keys_configured() {
        let mut auth = Authenticator::default();
        auth.add_plain_api_key("dev", "devkey", false).unwrap();
        assert_eq!(code(&auth, &hs_token(&claims())), "algorithm_not_allowed");
        assert_eq!(
            code(&auth, &rs_token(Some("k"), &claims())),
            "unknown_key_id"
        );
    }

    #[test]
    fn expired_token_and_leeway() {
        let auth = authenticator(vec![hs_config(None)]);
        let exp = NOW - 100;
        let token = hs_token(&with(json!({ "exp": exp })));
        // Leeway is 30 s: accepted up to exp + 30 inclusive.
        assert!(check_at(&auth, &token, exp).is_ok());
        assert!(check_at(&auth, &token, exp + 30).is_ok());
        let err = check_at(&auth, &token, exp + 31).unwrap_err();
        assert_eq!(err, AuthError::TokenExpired);
        assert_eq!(err.code(), "token_expired");
        assert_eq!(code(&auth, &token), "token_expired");

        // Zero leeway: expired one second after exp.
        let strict = authenticator(vec![JwtKeyConfig {
            leeway_secs: 0,
            ..hs_config(None)
        }]);
        assert!(check_at(&strict, &token, exp).is_ok());
        assert_eq!(
            check_at(&strict, &token, exp + 1).unwrap_err().code(),
            "token_expired"
        );

        // A fractional exp counts as its whole second.
        let fractional = hs_token(&with(json!({ "exp": exp as f64 + 0.9 })));
        assert!(check_at(&strict, &fractional, exp).is_ok());
        assert_eq!(
            check_at(&strict, &fractional, exp + 1).unwrap_err().code(),
            "token_expired"
        );
        // A far-future exp does not overflow.
        assert!(check(&auth, &hs_token(&with(json!({ "exp": u64::MAX })))).is_ok());
    }

    #[test]
    fn token_without_valid_exp_is_refused() {
        let auth = authenticator(vec![hs_config(None)]);
        assert_eq!(code(&auth, &hs_token(&without("exp"))), "missing_expiry");
        assert_eq!(
            code(&auth, &hs_token(&with(json!({"exp": null})))),
            "missing_expiry"
        );
        for exp in [json!("1700000300"), json!(-5), json!(true), json!([NOW])] {
            let token = hs_token(&with(json!({ "exp": exp })));
            assert_eq!(code(&auth, &token), "invalid_token", "{exp}");
        }
    }

    #[test]
    fn nbf_in_the_future_is_refused() {
        let auth = authenticator(vec![hs_config(None)]);
        let token = hs_token(&with(json!({"nbf": NOW + 31})));
        let err = check(&auth, &token).unwrap_err();
        assert_eq!(err, AuthError::TokenNotYetValid);
        assert_eq!(err.code(), "token_not_yet_valid");
        // Within leeway, or reached: accepted.
        assert!(check(&auth, &hs_token(&with(json!({"nbf": NOW + 30})))).is_ok());
        assert!(check_at(&auth, &token, NOW + 1).is_ok());
        assert!(check(&auth, &hs_token(&with(json!({"nbf": NOW - 10})))).is_ok());
        let not_a_date = hs_token(&with(json!({"nbf": "soon"})));
        assert_eq!(code(&auth, &not_a_date), "invalid_token");
    }

    #[test]
    fn wrong_issuer_is_refused() {
        let auth = authenticator(vec![hs_config(None)]);
        for claims in [
            with(json!({"iss": "https://evil.example"})),
            with(json!({"iss": "https://login.example/"})),
            with(json!({"iss": [ISS]})),
            with(json!({"iss": null})),
            without("iss"),
        ] {
            let token = hs_token(&claims);
            let err = check(&auth, &token).unwrap_err();
            assert_eq!(err, AuthError::WrongIssuer, "{claims}");
            assert_eq!(err.code(), "wrong_issuer");
        }
    }

    #[test]
    fn wrong_audience_is_refused() {
        let auth = authenticator(vec![hs_config(None)]);
        for claims in [
            with(json!({"aud": "other-service"})),
            with(json!({"aud": ["other-service", "another"]})),
            with(json!({"aud": []})),
            with(json!({"aud": 7})),
            without("aud"),
        ] {
            let token = hs_token(&claims);
            let err = check(&auth, &token).unwrap_err();
            assert_eq!(err.code(), "wrong_audience", "{claims}");
        }
    }

    #[test]
    fn audience_array_containing_ours_is_accepted() {
        let auth = authenticator(vec![hs_config(None)]);
        let token = hs_token(&with(json!({"aud": ["other-service", AUD]})));
        assert_eq!(
            check(&auth, &token).unwrap().user.as_deref(),
            Some("user-1")
        );
        let token = hs_token(&with(json!({"aud": [AUD]})));
        assert!(check(&auth, &token).is_ok());
    }

    #[test]
    fn tampered_payload_fails_the_signature() {
        let auth = authenticator(vec![hs_config(None), rs_config(None), es_config(None)]);
        let evil = b64(&with(json!({"sub": "admin"})));
        for token in [
            hs_token(&claims()),
            rs_token(None, &claims()),
            es_token(None, &claims()),
        ] {
            let mut parts: Vec<&str> = token.split('.').collect();
            parts[1] = &evil;
            let tampered = parts.join(".");
            let err = check(&auth, &tampered).unwrap_err();
            assert_eq!(err.code(), "invalid_token");
            assert_eq!(err.to_string(), "invalid token: signature does not verify");
            // And an emptied signature.
            let unsigned = format!("{}.{}.", parts[0], parts[1]);
            assert_eq!(code(&auth, &unsigned), "invalid_token");
        }
    }

    #[test]
    fn token_signed_by_another_key_is_refused() {
        let auth = authenticator(vec![hs_config(None)]);
        let other = EncodingKey::from_secret(b"another-secret-another-secret-xx");
        let token = sign(Algorithm::HS256, &other, None, &claims());
        let err = check(&auth, &token).unwrap_err();
        assert_eq!(err.code(), "invalid_token");
        assert!(err.to_string().contains("signature does not verify"));
    }

    #[test]
    fn missing_subject_is_refused() {
        let auth = authenticator(vec![hs_config(None)]);
        for claims in [
            without("sub"),
            with(json!({"sub": null})),
            with(json!({"sub": ""})),
        ] {
            let err = check(&auth, &hs_token(&claims)).unwrap_err();
            assert_eq!(err, AuthError::MissingSubject, "{claims}");
            assert_eq!(err.code(), "missing_subject");
        }
    }

    #[test]
    fn subject_must_be_a_short_clean_string() {
        let auth = authenticator(vec![hs_config(None)]);
        for sub in [
            json!("u".repeat(129)),
            json!("user\n1"),
            json!("user\u{7}"),
            json!("user\u{85}"),
            json!(42),
            json!(true),
        ] {
            let token = hs_token(&with(json!({ "sub": sub })));
            assert_eq!(code(&auth, &token), "invalid_subject", "{sub}");
        }
        // An array or object `sub` is already refused by jsonwebtoken's own claim pre-parse
        // (as malformed JSON), before our check sees it.
        for sub in [json!(["user-1"]), json!({"id": "user-1"})] {
            let token = hs_token(&with(json!({ "sub": sub })));
            assert_eq!(code(&auth, &token), "invalid_token", "{sub}");
        }
        let longest = "u".repeat(128);
        let caller = check(&auth, &hs_token(&with(json!({ "sub": longest })))).unwrap();
        assert_eq!(caller.user, Some(longest));
        let unicode = check(&auth, &hs_token(&with(json!({"sub": "josé@example"})))).unwrap();
        assert_eq!(unicode.user.as_deref(), Some("josé@example"));
    }

    #[test]
    fn unknown_kid_is_refused() {
        let auth = authenticator(vec![hs_config(Some("k1")), rs_config(Some("rsa"))]);
        let token = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(HS_SECRET.as_bytes()),
            Some("k2"),
            &claims(),
        );
        let err = check(&auth, &token).unwrap_err();
        assert_eq!(err, AuthError::UnknownKeyId);
        assert_eq!(err.code(), "unknown_key_id");
        // A kid never falls back to the keys without id.
        let auth = authenticator(vec![hs_config(None)]);
        assert_eq!(code(&auth, &token), "unknown_key_id");
        // A non-string kid is malformed.
        let header = json!({"alg": "HS256", "kid": 5});
        let token = format!("{}.{}.c2ln", b64(&header), b64(&claims()));
        assert_eq!(code(&auth, &token), "invalid_token");
    }

    #[test]
    fn kid_selects_the_key_and_its_claims() {
        let a = JwtKeyConfig {
            issuer: "issuer-a".into(),
            ..hs_config(Some("a"))
        };
        let b = JwtKeyConfig {
            secret: Some("b".repeat(32)),
            issuer: "issuer-b".into(),
            ..hs_config(Some("b"))
        };
        let auth = authenticator(vec![a, b]);
        let b_key = EncodingKey::from_secret("b".repeat(32).as_bytes());
        let token = sign(
            Algorithm::HS256,
            &b_key,
            Some("b"),
            &with(json!({"iss": "issuer-b"})),
        );
        assert_eq!(check(&auth, &token).unwrap().name, "jwt:b");
        // Key b's issuer applies, not a's.
        let token = sign(
            Algorithm::HS256,
            &b_key,
            Some("b"),
            &with(json!({"iss": "issuer-a"})),
        );
        assert_eq!(code(&auth, &token), "wrong_issuer");
        // Signed by b but naming a: the signature fails with a's secret.
        let token = sign(
            Algorithm::HS256,
            &b_key,
            Some("a"),
            &with(json!({"iss": "issuer-a"})),
        );
        assert_eq!(code(&auth, &token), "invalid_token");
    }

    #[test]
    fn without_kid_every_key_of_the_alg_is_tried() {
        let first = hs_config(None);
        let second = JwtKeyConfig {
            secret: Some("s".repeat(40)),
            issuer: "second".into(),
            ..hs_config(Some("second"))
        };
        let auth = authenticator(vec![first, second, rs_config(None)]);
        let token = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret("s".repeat(40).as_bytes()),
            None,
            &with(json!({"iss": "second"})),
        );
        assert_eq!(check(&auth, &token).unwrap().name, "jwt:second");
        assert_eq!(
            check(&auth, &hs_token(&claims())).unwrap().name,
            "jwt:HS256"
        );
        assert_eq!(
            check(&auth, &rs_token(None, &claims())).unwrap().name,
            "jwt:RS256"
        );
    }

    #[test]
    fn malformed_tokens_are_invalid_not_panics() {
        let auth = authenticator(vec![hs_config(None)]);
        let payload = b64(&claims());
        for token in [
            // Header not base64url JSON.
            format!("YQ.{payload}.c2ln"),
            format!("e30.{payload}.c2ln"),
            format!("W10.{payload}.c2ln"),
            // Base64 with a non-canonical last character.
            format!("{}.{payload}.c2l", b64(&json!({"alg": "HS256"}))),
            format!("{}.eyJ.c2ln", b64(&json!({"alg": "HS256"}))),
            // Critical extensions are not understood.
            format!(
                "{}.{payload}.c2ln",
                b64(&json!({"alg": "HS256", "crit": ["exp"], "exp": 1}))
            ),
        ] {
            let err = check(&auth, &token).unwrap_err();
            assert_eq!(err.code(), "invalid_token", "{token}");
        }
        // Correctly signed, but the claims are not an object.
        let token = hs_token(&json!(["sub", "user-1"]));
        assert_eq!(code(&auth, &token), "invalid_token");
        let token = hs_token(&json!("just a string"));
        assert_eq!(code(&auth, &token), "invalid_token");
    }

    #[test]
    fn jwt_is_not_accepted_as_api_key() {
        let mut auth = authenticator(vec![hs_config(None)]);
        auth.add_plain_api_key("dev", "devkey", false).unwrap();
        let token = hs_token(&claims());
        assert!(check(&auth, &token).is_ok());
        assert_eq!(
            auth.authenticate_api_key(&token).unwrap_err().code(),
            "unknown_api_key"
        );
    }

    #[test]
    fn errors_never_echo_the_token() {
        let auth = authenticator(vec![hs_config(Some("k1")), rs_config(Some("rsa"))]);
        let sign_hs = |kid: Option<&str>, claims: &Value| {
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(HS_SECRET.as_bytes()),
                kid,
                claims,
            )
        };
        let secret_sub = "sub-that-must-not-leak";
        let tokens = [
            sign_hs(
                Some("k1"),
                &with(json!({"sub": secret_sub, "exp": NOW - 1000})),
            ),
            sign_hs(
                Some("k1"),
                &with(json!({"sub": secret_sub, "iss": "leaky-iss"})),
            ),
            sign_hs(
                Some("k1"),
                &with(json!({"sub": secret_sub, "aud": "leaky-aud"})),
            ),
            sign_hs(Some("leaky-kid"), &with(json!({ "sub": secret_sub }))),
            sign_hs(
                Some("k1"),
                &with(json!({ "sub": format!("{secret_sub}\n") })),
            ),
            format!("{}.{}.", b64(&json!({"alg": "leaky-alg"})), b64(&claims())),
            format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims())),
        ];
        for token in &tokens {
            let err = check(&auth, token).unwrap_err();
            let text = format!("{err} {err:?}");
            for leak in [token.as_str(), secret_sub, "leaky", HS_SECRET] {
                assert!(!text.contains(leak), "{text}");
            }
            for part in token.split('.').filter(|p| p.len() > 4) {
                assert!(!text.contains(part), "{text}");
            }
        }
    }

    #[test]
    fn jwt_shape_detection() {
        for token in ["a.b.c", "a.b.", "eyJ.eyJ.sig-_", "A-_.0.9"] {
            assert!(looks_like_jwt(token), "{token}");
        }
        for token in [
            "gt_abc", "a.b", "a.b.c.d", ".b.c", "a..c", "a.b.c=", "a.b+.c", "a.b/c.d", "..", "",
            "a b.c.d",
        ] {
            assert!(!looks_like_jwt(token), "{token}");
        }
    }

    #[test]
    fn config_errors_name_the_field() {
        let with_pem = |alg: JwtAlgorithm, pem: &str| JwtKeyConfig {
            public_key_pem: Some(pem.into()),
            ..key_config(alg, None)
        };
        let cases: Vec<(Vec<JwtKeyConfig>, &str)> = vec![
            // HS256 secrets.
            (
                vec![JwtKeyConfig {
                    secret: Some("s".repeat(31)),
                    ..hs_config(None)
                }],
                "jwt_keys[0].secret",
            ),
            (
                vec![JwtKeyConfig {
                    secret: None,
                    ..hs_config(None)
                }],
                "jwt_keys[0].secret",
            ),
            (
                vec![JwtKeyConfig {
                    secret_file: Some(testdata("test-only-hs256-secret.txt")),
                    ..hs_config(None)
                }],
                "jwt_keys[0].secret_file",
            ),
            (
                vec![JwtKeyConfig {
                    secret: None,
                    secret_file: Some(testdata("no-such-file")),
                    ..hs_config(None)
                }],
                "jwt_keys[0].secret_file",
            ),
            (
                vec![JwtKeyConfig {
                    secret: Some(RSA_PUBLIC.into()),
                    ..hs_config(None)
                }],
                "jwt_keys[0].secret",
            ),
            (
                vec![JwtKeyConfig {
                    public_key_pem: Some(RSA_PUBLIC.into()),
                    ..hs_config(None)
                }],
                "jwt_keys[0].public_key_pem",
            ),
            (
                vec![JwtKeyConfig {
                    public_key_file: Some(testdata("test-only-rsa-public.pem")),
                    ..hs_config(None)
                }],
                "jwt_keys[0].public_key_file",
            ),
            // Public keys.
            (
                vec![JwtKeyConfig {
                    secret: Some(HS_SECRET.into()),
                    ..rs_config(None)
                }],
                "jwt_keys[0].secret",
            ),
            (
                vec![JwtKeyConfig {
                    secret_file: Some(testdata("test-only-hs256-secret.txt")),
                    ..es_config(None)
                }],
                "jwt_keys[0].secret_file",
            ),
            (
                vec![key_config(JwtAlgorithm::RS256, None)],
                "jwt_keys[0].public_key_pem",
            ),
            (
                vec![JwtKeyConfig {
                    public_key_file: Some(testdata("test-only-rsa-public.pem")),
                    ..rs_config(None)
                }],
                "jwt_keys[0].public_key_file",
            ),
            (
                vec![
                    hs_config(None),
                    JwtKeyConfig {
                        public_key_file: Some(testdata("no-such-key.pem")),
                        ..key_config(JwtAlgorithm::ES256, None)
                    },
                ],
                "jwt_keys[1].public_key_file",
            ),
            (
                vec![with_pem(JwtAlgorithm::RS256, RSA_PRIVATE)],
                "jwt_keys[0].public_key_pem",
            ),
            (
                vec![with_pem(JwtAlgorithm::ES256, EC_PRIVATE)],
                "jwt_keys[0].public_key_pem",
            ),
            (
                vec![with_pem(JwtAlgorithm::RS256, EC_PUBLIC)],
                "jwt_keys[0].public_key_pem",
            ),
            (
                vec![with_pem(JwtAlgorithm::ES256, RSA_PUBLIC)],
                "jwt_keys[0].public_key_pem",
            ),
            (
                vec![with_pem(JwtAlgorithm::ES256, EC_P384_PUBLIC)],
                "jwt_keys[0].public_key_pem",
            ),
            (
                vec![with_pem(JwtAlgorithm::RS256, RSA1024_PUBLIC)],
                "jwt_keys[0].public_key_pem",
            ),
            (
                vec![with_pem(JwtAlgorithm::RS256, "not a pem")],
                "jwt_keys[0].public_key_pem",
            ),
            (
                vec![with_pem(
                    JwtAlgorithm::RS256,
                    "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                )],
                "jwt_keys[0].public_key_pem",
            ),
            (
                vec![with_pem(
                    JwtAlgorithm::ES256,
                    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                )],
                "jwt_keys[0].public_key_pem",
            ),
            // Other fields.
            (
                vec![JwtKeyConfig {
                    issuer: String::new(),
                    ..hs_config(None)
                }],
                "jwt_keys[0].issuer",
            ),
            (
                vec![JwtKeyConfig {
                    audience: String::new(),
                    ..es_config(None)
                }],
                "jwt_keys[0].audience",
            ),
            (
                vec![JwtKeyConfig {
                    leeway_secs: 3601,
                    ..hs_config(None)
                }],
                "jwt_keys[0].leeway_secs",
            ),
            (vec![hs_config(Some(""))], "jwt_keys[0].id"),
            (vec![hs_config(Some("a\nb"))], "jwt_keys[0].id"),
            (vec![hs_config(Some(&"k".repeat(129)))], "jwt_keys[0].id"),
            (
                vec![hs_config(Some("same")), rs_config(Some("same"))],
                "jwt_keys[1].id",
            ),
        ];
        for (keys, field) in cases {
            let err = config_error(keys);
            assert_eq!(err.field(), field, "{err}");
            let text = err.to_string();
            assert!(text.starts_with(&format!("{field}: ")), "{text}");
            assert!(!text.contains(HS_SECRET), "{text}");
            assert!(!text.contains("MII"), "no key material: {text}");
        }
    }

    #[test]
    fn config_error_messages_say_what_is_wrong() {
        let err = config_error(vec![JwtKeyConfig {
            secret: Some("s".repeat(31)),
            ..hs_config(None)
        }]);
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
        let err = config_error(vec![JwtKeyConfig {
            public_key_pem: Some(RSA_PRIVATE.into()),
            ..key_config(JwtAlgorithm::RS256, None)
        }]);
        assert!(err.to_string().contains("private key"), "{err}");
        let err = config_error(vec![JwtKeyConfig {
            public_key_pem: Some(RSA1024_PUBLIC.into()),
            ..key_config(JwtAlgorithm::RS256, None)
        }]);
        assert!(err.to_string().contains("1024 bits"), "{err}");
        let err = config_error(vec![JwtKeyConfig {
            public_key_pem: Some(EC_P384_PUBLIC.into()),
            ..key_config(JwtAlgorithm::ES256, None)
        }]);
        assert!(err.to_string().contains("P-256"), "{err}");
        let missing = testdata("no-such-key.pem");
        let err = config_error(vec![JwtKeyConfig {
            public_key_file: Some(missing.clone()),
            ..key_config(JwtAlgorithm::RS256, None)
        }]);
        assert!(matches!(err, AuthConfigError::ReadFile { .. }));
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
    }

    /// A JWKS entry from a PEM test key, under `kid`.
    fn jwk_of(pem: &str, alg: Algorithm, kid: &str) -> Jwk {
        let key = match alg {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            _ => DecodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        };
        let mut jwk = Jwk::from_decoding_key(&key, Some(alg)).unwrap();
        jwk.common.key_id = Some(kid.into());
        jwk
    }

    #[test]
    fn jwks_entries_are_taken_only_as_signing_keys_of_the_accepted_kinds() {
        let ec =
            JwtKey::from_jwk(&jwk_of(EC_PUBLIC, Algorithm::ES256, "ec"), ISS, AUD, 30).unwrap();
        assert_eq!(
            (ec.algorithm, ec.id.as_deref()),
            (JwtAlgorithm::ES256, Some("ec"))
        );
        let rsa =
            JwtKey::from_jwk(&jwk_of(RSA_PUBLIC, Algorithm::RS256, "rsa"), ISS, AUD, 30).unwrap();
        assert_eq!(rsa.algorithm, JwtAlgorithm::RS256);
        // Too short an RSA modulus, no kid, an encryption key, a symmetric key: none taken.
        assert!(
            JwtKey::from_jwk(
                &jwk_of(RSA1024_PUBLIC, Algorithm::RS256, "short"),
                ISS,
                AUD,
                30
            )
            .is_none()
        );
        let mut no_kid = jwk_of(EC_PUBLIC, Algorithm::ES256, "x");
        no_kid.common.key_id = None;
        assert!(JwtKey::from_jwk(&no_kid, ISS, AUD, 30).is_none());
        let mut enc = jwk_of(EC_PUBLIC, Algorithm::ES256, "enc");
        enc.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Encryption);
        assert!(JwtKey::from_jwk(&enc, ISS, AUD, 30).is_none());
        let oct: Jwk = serde_json::from_value(json!({"kty": "oct", "kid": "hs", "alg": "HS256", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"})).unwrap();
        assert!(JwtKey::from_jwk(&oct, ISS, AUD, 30).is_none());
        // A token signed by the EC test key verifies against the JWKS key.
        let token = jsonwebtoken::encode(
            &Header {
                kid: Some("ec".into()),
                ..Header::new(Algorithm::ES256)
            },
            &json!({"iss": ISS, "aud": AUD, "sub": "u", "exp": NOW + 60}),
            &EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            verify(&[ec], &token, NOW).unwrap().user.as_deref(),
            Some("u")
        );
    }

    #[test]
    fn bit_length_of_moduli() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[0, 0]), 0);
        assert_eq!(bit_length(&[1]), 1);
        assert_eq!(bit_length(&[0, 0x80, 0]), 16);
        assert_eq!(bit_length(&[0x7f; 256]), 2047);
    }
}
