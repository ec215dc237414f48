//! API keys: stored as SHA-256 hashes, looked up in constant time.
//!
//! Only hashes are kept, so a leaked config file or memory dump yields no usable key (generated
//! keys carry 256 random bits, far beyond brute force). A presented key is hashed and compared
//! with every stored hash using `subtle`, without stopping at a match, so the response time says
//! nothing about which key, or how much of a hash, matched.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::{ConditionallySelectable as _, ConstantTimeEq as _};

use super::{ApiKeyConfig, AuthConfigError, AuthError, Caller, CallerKind, MAX_TOKEN_LEN, jwt};

/// Longest API key name.
const MAX_NAME_LEN: usize = 64;

/// Prefix of generated keys: makes them recognisable to secret scanners and people.
const GENERATED_PREFIX: &str = "gt_";

/// Lowercase hex SHA-256 of an API key: the value for `sha256` in `[[auth.api_keys]]`.
pub fn hash_api_key(key: &str) -> String {
    let digest = digest(key);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
    }
    hex
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// A new random API key: `gt_` followed by 32 random bytes in base64url without padding.
pub fn generate_api_key() -> String {
    let mut bytes = [0u8; 32];
    // ThreadRng is a CSPRNG seeded from the OS.
    rand::rng().fill_bytes(&mut bytes);
    format!("{GENERATED_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The scope that reads the live TURN secrets.
pub const SECRETS_READ: &str = "secrets:read";

/// One configured key.
#[derive(Clone)]
struct Entry {
    name: String,
    hash: [u8; 32],
    admin: bool,
    secrets_read: bool,
}

/// The configured API keys.
#[derive(Clone, Default)]
pub(super) struct ApiKeys {
    entries: Vec<Entry>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names and scopes only: hashes stay out of logs.
        f.debug_list()
            .entries(
                self.entries
                    .iter()
                    .map(|e| format!("{}{}", e.name, if e.admin { " (admin)" } else { "" })),
            )
            .finish()
    }
}

impl ApiKeys {
    /// Checks and loads the `[[auth.api_keys]]` entries.
    pub(super) fn from_config(configs: &[ApiKeyConfig]) -> Result<Self, AuthConfigError> {
        let mut keys = Self::default();
        for (i, cfg) in configs.iter().enumerate() {
            let field = |name: &str| format!("api_keys[{i}].{name}");
            check_name(&cfg.name)
                .map_err(|reason| AuthConfigError::invalid(field("name"), reason))?;
            let hash = parse_hex_sha256(&cfg.sha256)
                .map_err(|reason| AuthConfigError::invalid(field("sha256"), reason))?;
            let mut secrets_read = cfg.admin;
            for scope in &cfg.scopes {
                match scope.as_str() {
                    SECRETS_READ => secrets_read = true,
                    other => {
                        return Err(AuthConfigError::invalid(
                            field("scopes"),
                            format!("unknown scope {other:?}: the scopes are {SECRETS_READ:?}"),
                        ));
                    }
                }
            }
            keys.insert(&cfg.name, hash, cfg.admin, &field("name"), &field("sha256"))?;
            if let Some(entry) = keys.entries.last_mut() {
                entry.secrets_read = secrets_read;
            }
        }
        Ok(keys)
    }

    /// Adds a key given in plain text; only its hash is kept.
    pub(super) fn add_plain(
        &mut self,
        name: &str,
        key: &str,
        admin: bool,
    ) -> Result<(), AuthConfigError> {
        check_name(name).map_err(|reason| AuthConfigError::invalid("name", reason))?;
        check_plain_key(key).map_err(|reason| AuthConfigError::invalid("key", reason))?;
        self.insert(name, digest(key), admin, "name", "key")
    }

    fn insert(
        &mut self,
        name: &str,
        hash: [u8; 32],
        admin: bool,
        name_field: &str,
        key_field: &str,
    ) -> Result<(), AuthConfigError> {
        if self.entries.iter().any(|e| e.name == name) {
            return Err(AuthConfigError::invalid(
                name_field,
                format!("API key name `{name}` is used twice"),
            ));
        }
        // Two names for one key would make the caller's name (and admin scope) ambiguous.
        if let Some(other) = self.entries.iter().find(|e| e.hash == hash) {
            return Err(AuthConfigError::invalid(
                key_field,
                format!("the same key is already configured as `{}`", other.name),
            ));
        }
        self.entries.push(Entry {
            name: name.to_owned(),
            hash,
            admin,
            secrets_read: admin,
        });
        Ok(())
    }

    /// True when no key is configured.
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The caller holding `key`, comparing against every entry in constant time.
    pub(super) fn lookup(&self, key: &str) -> Result<Caller, AuthError> {
        let presented = digest(key);
        let mut found = subtle::Choice::from(0);
        let mut index = 0u64;
        // No early exit and no data-dependent branch: every entry is compared the same way.
        for (i, entry) in self.entries.iter().enumerate() {
            let equal = entry.hash[..].ct_eq(&presented[..]);
            index.conditional_assign(&(i as u64), equal);
            found |= equal;
        }
        if !bool::from(found) {
            return Err(AuthError::UnknownApiKey);
        }
        let entry = usize::try_from(index)
            .ok()
            .and_then(|i| self.entries.get(i))
            .ok_or(AuthError::UnknownApiKey)?;
        Ok(Caller {
            name: entry.name.clone(),
            kind: CallerKind::ApiKey,
            admin: entry.admin,
            secrets_read: entry.secrets_read,
            user: None,
        })
    }
}

/// 1–64 characters of `A-Z a-z 0-9 . _ -`: safe in logs, metrics labels and `NAME:KEY` flags.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "an API key name must be 1-{MAX_NAME_LEN} characters"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "API key name `{}` may only use A-Z a-z 0-9 . _ -",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// A plain key must be presentable as `Bearer <key>` and must not be taken for a JWT there.
/// Messages never repeat the key.
fn check_plain_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the key is empty".into());
    }
    if key.len() > MAX_TOKEN_LEN {
        return Err(format!("the key is longer than {MAX_TOKEN_LEN} bytes"));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the key contains whitespace or control characters".into());
    }
    if jwt::looks_like_jwt(key) {
        return Err(
            "the key is shaped like a JWT (three base64url parts joined by dots) and would be \
             verified as one"
                .into(),
        );
    }
    Ok(())
}

/// 64 hex digits, either case.
fn parse_hex_sha256(hex: &str) -> Result<[u8; 32], String> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return Err(format!(
            "expected 64 hex digits (a SHA-256), got {} characters",
            hex.chars().count()
        ));
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let (Some(hi), Some(lo)) = (
            pair.first().copied().and_then(hex_value),
            pair.get(1).copied().and_then(hex_value),
        ) else {
            return Err("expected 64 hex digits (a SHA-256): found a non-hex character".into());
        };
        *byte = (hi << 4) | lo;
    }
    Ok(out)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{AuthConfig, Authenticator};
    use super::*;

    fn entry(name: &str, sha256: &str, admin: bool) -> ApiKeyConfig {
        ApiKeyConfig {
            name: name.into(),
            sha256: sha256.into(),
            admin,
            scopes: vec![],
        }
    }

    fn config_error(api_keys: Vec<ApiKeyConfig>) -> AuthConfigError {
        Authenticator::from_config(&AuthConfig {
            api_keys,
            jwt_keys: vec![],
            jwks: vec![],
        })
        .unwrap_err()
    }

    #[test]
    fn hash_is_lowercase_hex_sha256() {
        assert_eq!(
            hash_api_key("foo"),
            "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
        );
        assert_eq!(
            hash_api_key(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn generated_keys_are_random_base64url_and_usable() {
        let a = generate_api_key();
        let b = generate_api_key();
        assert_ne!(a, b);
        for key in [&a, &b] {
            let body = key.strip_prefix("gt_").unwrap();
            assert_eq!(body.len(), 43, "32 bytes in unpadded base64");
            assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
            assert!(
                body.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            );
            assert!(!jwt::looks_like_jwt(key));
        }
        let auth = Authenticator::from_config(&AuthConfig {
            api_keys: vec![entry("gen", &hash_api_key(&a), false)],
            jwt_keys: vec![],
            jwks: vec![],
        })
        .unwrap();
        assert_eq!(
            auth.authenticate(Some(&format!("Bearer {a}")), 0)
                .unwrap()
                .name,
            "gen"
        );
        assert_eq!(
            auth.authenticate_api_key(&b).unwrap_err().code(),
            "unknown_api_key"
        );
    }

    #[test]
    fn right_key_is_accepted_wrong_key_refused() {
        let auth = Authenticator::from_config(&AuthConfig {
            api_keys: vec![
                entry("backend", &hash_api_key("key-one"), true),
                // Uppercase hex is accepted too.
                entry("web", &hash_api_key("key-two").to_uppercase(), false),
            ],
            jwt_keys: vec![],
            jwks: vec![],
        })
        .unwrap();

        let caller = auth.authenticate(Some("Bearer key-one"), 0).unwrap();
        assert_eq!(
            caller,
            Caller {
                name: "backend".into(),
                kind: CallerKind::ApiKey,
                admin: true,
                secrets_read: true,
                user: None,
            }
        );
        let caller = auth.authenticate_api_key("key-two").unwrap();
        assert_eq!(caller.name, "web");
        assert!(!caller.admin);
        assert_eq!(caller.kind, CallerKind::ApiKey);

        for wrong in ["key-three", "key-on", "key-one ", "KEY-ONE", "x"] {
            let err = auth.authenticate_api_key(wrong).unwrap_err();
            assert_eq!(err, AuthError::UnknownApiKey, "{wrong:?}");
            assert_eq!(err.code(), "unknown_api_key");
            assert!(!err.to_string().contains(wrong.trim()));
        }
        // The hash itself is not a key.
        let err = auth
            .authenticate_api_key(&hash_api_key("key-one"))
            .unwrap_err();
        assert_eq!(err.code(), "unknown_api_key");
    }

    #[test]
    fn no_keys_configured_refuses_every_key() {
        let auth = Authenticator::default();
        assert_eq!(
            auth.authenticate(Some("Bearer anything"), 0)
                .unwrap_err()
                .code(),
            "unknown_api_key"
        );
    }

    #[test]
    fn plain_key_is_hashed_and_not_kept() {
        let mut auth = Authenticator::default();
        auth.add_plain_api_key("dev", "devkey", false).unwrap();
        auth.add_plain_api_key("ops", "opskey-123", true).unwrap();
        let dev = auth.authenticate_api_key("devkey").unwrap();
        assert_eq!((dev.name.as_str(), dev.admin), ("dev", false));
        let ops = auth.authenticate(Some("Bearer opskey-123"), 0).unwrap();
        assert_eq!((ops.name.as_str(), ops.admin), ("ops", true));
        // Stored as the SHA-256, nothing else.
        let stored: Vec<[u8; 32]> = auth.api_keys.entries.iter().map(|e| e.hash).collect();
        assert_eq!(stored, vec![digest("devkey"), digest("opskey-123")]);
        assert!(!format!("{auth:?}").contains("devkey"));
    }

    #[test]
    fn plain_key_checks() {
        let mut auth = Authenticator::default();
        for (name, key, field) in [
            ("", "k", "name"),
            ("has space", "k", "name"),
            ("a:b", "k", "name"),
            ("dev", "", "key"),
            ("dev", "two words", "key"),
            ("dev", "tab\tkey", "key"),
            ("dev", "aaa.bbb.ccc", "key"),
        ] {
            let err = auth.add_plain_api_key(name, key, false).unwrap_err();
            assert_eq!(err.field(), field, "{name:?} {key:?}: {err}");
            assert!(err.to_string().starts_with(&format!("{field}: ")), "{err}");
            if field == "key" && key.len() > 3 {
                assert!(!err.to_string().contains(key), "{err}");
            }
        }
        let err = auth
            .add_plain_api_key("dev", &"k".repeat(MAX_TOKEN_LEN + 1), false)
            .unwrap_err();
        assert_eq!(err.field(), "key");
        assert!(auth.is_empty());
    }

    #[test]
    fn duplicate_names_are_refused() {
        let err = config_error(vec![
            entry("backend", &hash_api_key("a"), false),
            entry("backend", &hash_api_key("b"), false),
        ]);
        assert_eq!(err.field(), "api_keys[1].name");
        assert!(err.to_string().starts_with("api_keys[1].name: "), "{err}");

        let mut auth = Authenticator::from_config(&AuthConfig {
            api_keys: vec![entry("backend", &hash_api_key("a"), false)],
            jwt_keys: vec![],
            jwks: vec![],
        })
        .unwrap();
        let err = auth.add_plain_api_key("backend", "b", false).unwrap_err();
        assert_eq!(err.field(), "name");
        // The first entry is untouched.
        assert_eq!(auth.authenticate_api_key("a").unwrap().name, "backend");
        assert!(auth.authenticate_api_key("b").is_err());
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let err = config_error(vec![
            entry("one", &hash_api_key("same"), false),
            entry("two", &hash_api_key("same").to_uppercase(), true),
        ]);
        assert_eq!(err.field(), "api_keys[1].sha256");
        assert!(err.to_string().contains("`one`"), "{err}");

        let mut auth = Authenticator::default();
        auth.add_plain_api_key("one", "same", false).unwrap();
        let err = auth.add_plain_api_key("two", "same", true).unwrap_err();
        assert_eq!(err.field(), "key");
    }

    #[test]
    fn config_errors_name_the_field() {
        let good = hash_api_key("k");
        for (entries, field) in [
            (vec![entry("a", &good[..63], false)], "api_keys[0].sha256"),
            (
                vec![entry("a", &format!("{good}0"), false)],
                "api_keys[0].sha256",
            ),
            (
                vec![entry("a", &format!("{}g", &good[..63]), false)],
                "api_keys[0].sha256",
            ),
            (
                vec![entry("a", &"é".repeat(32), false)],
                "api_keys[0].sha256",
            ),
            (vec![entry("a", "", false)], "api_keys[0].sha256"),
            (vec![entry("", &good, false)], "api_keys[0].name"),
            (
                vec![
                    entry("ok", &hash_api_key("x"), false),
                    entry("bad name", &good, false),
                ],
                "api_keys[1].name",
            ),
            (
                vec![entry(&"n".repeat(65), &good, false)],
                "api_keys[0].name",
            ),
        ] {
            let err = config_error(entries);
            assert_eq!(err.field(), field, "{err}");
            assert!(err.to_string().starts_with(&format!("{field}: ")), "{err}");
        }
        // The longest allowed name and all allowed characters pass.
        let name = format!("{}Az09._-", "n".repeat(MAX_NAME_LEN - 7));
        Authenticator::from_config(&AuthConfig {
            api_keys: vec![entry(&name, &good, false)],
            jwt_keys: vec![],
            jwks: vec![],
        })
        .unwrap();
    }

    #[test]
    fn hex_parsing() {
        let hash = digest("foo");
        assert_eq!(parse_hex_sha256(&hash_api_key("foo")).unwrap(), hash);
        assert_eq!(
            parse_hex_sha256(&hash_api_key("foo").to_uppercase()).unwrap(),
            hash
        );
        assert!(parse_hex_sha256(&"+1".repeat(32)).is_err());
        assert!(parse_hex_sha256(&" 0".repeat(32)).is_err());
    }

    #[test]
    fn secrets_read_is_a_scope_of_its_own_and_part_of_admin() {
        let scoped = |name: &str, key: &str, admin: bool, scopes: &[&str]| ApiKeyConfig {
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            ..entry(name, &hash_api_key(key), admin)
        };
        let auth = Authenticator::from_config(&AuthConfig {
            api_keys: vec![
                scoped("signaling", "key-signaling", false, &[SECRETS_READ]),
                scoped("web", "key-web", false, &[]),
                scoped("ops", "key-ops", true, &[]),
            ],
            jwt_keys: vec![],
            jwks: vec![],
        })
        .unwrap();
        let scopes = |key: &str| {
            let c = auth.authenticate_api_key(key).unwrap();
            (c.admin, c.secrets_read)
        };
        assert_eq!(scopes("key-signaling"), (false, true));
        assert_eq!(scopes("key-web"), (false, false));
        assert_eq!(scopes("key-ops"), (true, true));
        let err = config_error(vec![scoped("x", "key-x", false, &["secrets:write"])]);
        assert!(err.to_string().contains("unknown scope"), "{err}");
    }
}
