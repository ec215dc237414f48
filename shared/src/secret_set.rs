//! Several shared secrets live at once, so a secret rotates without a restart or a failed call.
//!
//! The newest secret mints new credentials; older ones keep validating credentials minted before
//! the rotation until their `not_after` (rotation time + the longest credential TTL) passes.

use std::fmt;

use subtle::ConstantTimeEq;

use crate::credentials::{CredentialError, RestUsername, rest_password_raw};

/// Secret bytes that never print.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Vec<u8>);

impl SecretValue {
    /// Wraps raw secret bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The secret bytes, for HMAC.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// One shared secret with its identity and validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// A stable name for logs and the registry (never the secret itself).
    pub id: String,
    /// The secret bytes.
    pub value: SecretValue,
    /// Unix seconds after which this secret validates nothing; `None` while it is the active one.
    pub not_after: Option<u64>,
}

impl Secret {
    /// A secret with no end of validity.
    pub fn new(id: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            id: id.into(),
            value: SecretValue::new(value),
            not_after: None,
        }
    }

    fn is_live(&self, now_unix: u64) -> bool {
        self.not_after.is_none_or(|t| now_unix <= t)
    }
}

/// The secrets a relay or API accepts; the first one is active (mints), the others only validate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretSet {
    secrets: Vec<Secret>,
}

/// A credential that validated, with the secret that signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidCredential<'a> {
    /// The id of the secret that matched.
    pub secret_id: &'a str,
    /// The parsed username.
    pub username: RestUsername<'a>,
}

/// Most secrets an operator can keep live at once; bounds the work per authentication.
pub const MAX_SECRETS: usize = 16;

/// Shortest shared secret the relay, the API and `geoturn creds` take. Every credential handed
/// to a web page is an HMAC of a known username under the secret, so an attacker holding one
/// can search for the secret offline; 16 bytes of a random value puts that out of reach.
pub const MIN_SECRET_LEN: usize = 16;

/// Refuses a configured shared secret shorter than [`MIN_SECRET_LEN`], saying how to make one.
pub fn check_secret_len(secret: &str) -> Result<(), String> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(format!(
            "secrets must be at least {MIN_SECRET_LEN} bytes (use a random value, e.g. \
             `openssl rand -hex 32`)"
        ));
    }
    Ok(())
}

impl SecretSet {
    /// Builds a set; the first secret is the active one. Keeps at most [`MAX_SECRETS`].
    pub fn new(mut secrets: Vec<Secret>) -> Self {
        secrets.truncate(MAX_SECRETS);
        Self { secrets }
    }

    /// Builds a set of never-expiring secrets named `s0`, `s1`, … (from flags or variables).
    pub fn from_values<I, V>(values: I) -> Self
    where
        I: IntoIterator<Item = V>,
        V: Into<Vec<u8>>,
    {
        Self::new(
            values
                .into_iter()
                .enumerate()
                .map(|(i, v)| Secret::new(format!("s{i}"), v))
                .collect(),
        )
    }

    /// Makes `secret` the active one; the previous active secret keeps validating until
    /// `now_unix + max_ttl`. Secrets already past their `not_after` are dropped.
    pub fn rotate(&mut self, secret: Secret, now_unix: u64, max_ttl: u64) {
        self.secrets.retain(|s| s.is_live(now_unix));
        for s in &mut self.secrets {
            let until = now_unix.saturating_add(max_ttl);
            s.not_after = Some(s.not_after.map_or(until, |t| t.min(until)));
        }
        self.secrets.insert(0, secret);
        self.secrets.truncate(MAX_SECRETS);
    }

    /// The secret that mints new credentials.
    pub fn active(&self, now_unix: u64) -> Option<&Secret> {
        self.secrets.iter().find(|s| s.is_live(now_unix))
    }

    /// Secrets that still validate at `now_unix`, newest first.
    pub fn live(&self, now_unix: u64) -> impl Iterator<Item = &Secret> {
        self.secrets.iter().filter(move |s| s.is_live(now_unix))
    }

    /// Every secret held, expired ones included, newest first.
    pub fn all(&self) -> impl Iterator<Item = &Secret> {
        self.secrets.iter()
    }

    /// True when no secret is configured at all.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Checks a username/password pair against every live secret in constant time per secret.
    pub fn validate<'a>(
        &'a self,
        username: &'a str,
        password: &str,
        now_unix: u64,
    ) -> Result<ValidCredential<'a>, CredentialError> {
        let parsed = RestUsername::parse(username)?;
        parsed.check_not_expired(now_unix)?;
        let mut live = self.live(now_unix).peekable();
        if live.peek().is_none() {
            return Err(CredentialError::NoLiveSecret);
        }
        // Decode the presented password; a wrong length simply matches nothing.
        let mut matched = None;
        for secret in live {
            let expected = rest_password_raw(secret.value.expose(), username);
            let expected_b64 = base64_of(&expected);
            // Check every live secret without early exit so timing does not reveal which matched.
            let eq: bool = expected_b64.as_bytes().ct_eq(password.as_bytes()).into();
            if eq && matched.is_none() {
                matched = Some(secret.id.as_str());
            }
        }
        match matched {
            Some(secret_id) => Ok(ValidCredential {
                secret_id,
                username: parsed,
            }),
            None => Err(CredentialError::BadPassword),
        }
    }
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::RestCredential;

    #[test]
    fn validates_with_any_live_secret() {
        let mut set = SecretSet::from_values(["old"]);
        let old = RestCredential::mint(b"old", "u", 1000, 600);
        set.rotate(Secret::new("new", "new"), 1100, 600);
        let new = RestCredential::mint(b"new", "u", 1100, 600);
        assert_eq!(
            set.validate(&old.username, &old.password, 1200)
                .unwrap()
                .secret_id,
            "s0"
        );
        assert_eq!(
            set.validate(&new.username, &new.password, 1200)
                .unwrap()
                .secret_id,
            "new"
        );
        assert_eq!(set.active(1200).unwrap().id, "new");
    }

    #[test]
    fn old_secret_stops_after_not_after() {
        let mut set = SecretSet::from_values(["old"]);
        set.rotate(Secret::new("new", "new"), 1000, 600);
        // A long-lived credential minted with the old secret stops working at rotation + max TTL.
        let old = RestCredential::mint(b"old", "u", 1000, 100_000);
        assert!(set.validate(&old.username, &old.password, 1600).is_ok());
        assert_eq!(
            set.validate(&old.username, &old.password, 1601),
            Err(CredentialError::BadPassword)
        );
    }

    #[test]
    fn refuses_expired_and_wrong() {
        let set = SecretSet::from_values(["north"]);
        assert_eq!(
            set.validate(
                "1266890800:mbzrxpgjys",
                "nbRcrnq5h6xXhyNhlwk+lDLvVVo=",
                1266890801
            ),
            Err(CredentialError::Expired { expiry: 1266890800 })
        );
        assert!(
            set.validate(
                "1266890800:mbzrxpgjys",
                "nbRcrnq5h6xXhyNhlwk+lDLvVVo=",
                1266890800
            )
            .is_ok()
        );
        assert_eq!(
            set.validate("1266890800:mbzrxpgjys", "nbRcrnq5h6xXhyNhlwk+lDLvVVo", 0),
            Err(CredentialError::BadPassword)
        );
        assert_eq!(
            SecretSet::default().validate("5:x", "y", 0),
            Err(CredentialError::NoLiveSecret)
        );
    }

    #[test]
    fn secrets_never_print() {
        let set = SecretSet::from_values(["hunter2"]);
        assert!(!format!("{set:?}").contains("hunter2"));
    }
}
