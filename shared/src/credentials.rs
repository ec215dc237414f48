//! TURN REST API credentials (draft-uberti-behave-turn-rest-00, coturn `use-auth-secret`).
//!
//! username = `<expiry unix seconds>:<user id>`, password = base64(HMAC-SHA1(secret, username)).
//! Anyone holding the secret can mint credentials; a relay checks them with nothing but the
//! secret, so the data path never needs a database.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

/// Why a username or credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The username does not start with a decimal expiry timestamp.
    #[error("username is not `<expiry>:<user>`")]
    MalformedUsername,
    /// The expiry timestamp in the username is in the past.
    #[error("credential expired at {expiry}")]
    Expired {
        /// Unix seconds the credential stopped being valid.
        expiry: u64,
    },
    /// No live secret produces this password.
    #[error("password does not match any live secret")]
    BadPassword,
    /// The secret set holds no live secret.
    #[error("no live secret")]
    NoLiveSecret,
}

/// A parsed REST username: `<expiry>:<user id>` or just `<expiry>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestUsername<'a> {
    /// Unix seconds after which the credential is refused.
    pub expiry: u64,
    /// The application's user id (may be empty); may itself contain ':'.
    pub user: &'a str,
}

impl<'a> RestUsername<'a> {
    /// Parses a username; the timestamp is everything before the first ':'.
    pub fn parse(username: &'a str) -> Result<Self, CredentialError> {
        let (ts, user) = match username.split_once(':') {
            Some((ts, user)) => (ts, user),
            None => (username, ""),
        };
        // Refuse signs, spaces and overlong values rather than letting u64 parsing guess.
        if ts.is_empty() || ts.len() > 20 || !ts.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CredentialError::MalformedUsername);
        }
        let expiry = ts.parse().map_err(|_| CredentialError::MalformedUsername)?;
        Ok(Self { expiry, user })
    }

    /// Refuses a credential whose expiry is strictly before `now_unix`.
    pub fn check_not_expired(&self, now_unix: u64) -> Result<(), CredentialError> {
        if self.expiry < now_unix {
            Err(CredentialError::Expired {
                expiry: self.expiry,
            })
        } else {
            Ok(())
        }
    }
}

/// A minted username/password pair.
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
pub struct RestCredential {
    /// `<expiry>:<user>`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub password: String,
    /// Seconds the credential stays valid from when it was minted.
    pub ttl: u64,
}

impl std::fmt::Debug for RestCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestCredential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl RestCredential {
    /// Mints a credential for `user` valid `ttl` seconds from `now_unix`.
    pub fn mint(secret: &[u8], user: &str, now_unix: u64, ttl: u64) -> Self {
        let username = if user.is_empty() {
            now_unix.saturating_add(ttl).to_string()
        } else {
            format!("{}:{}", now_unix.saturating_add(ttl), user)
        };
        let password = rest_password(secret, &username);
        Self {
            username,
            password,
            ttl,
        }
    }
}

/// base64(HMAC-SHA1(secret, username)): the password a relay expects for `username`.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    BASE64.encode(rest_password_raw(secret, username))
}

/// The raw 20-byte HMAC before base64.
pub fn rest_password_raw(secret: &[u8], username: &str) -> [u8; 20] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(username.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_from_turn_rest_draft() {
        // The vector every coturn-compatible implementation agrees on.
        assert_eq!(
            rest_password(b"north", "1266890800:mbzrxpgjys"),
            "nbRcrnq5h6xXhyNhlwk+lDLvVVo="
        );
    }

    #[test]
    fn mint_builds_expiry_username() {
        let c = RestCredential::mint(b"north", "mbzrxpgjys", 1266890800 - 600, 600);
        assert_eq!(c.username, "1266890800:mbzrxpgjys");
        assert_eq!(c.password, "nbRcrnq5h6xXhyNhlwk+lDLvVVo=");
        assert!(!format!("{c:?}").contains(&c.password));
    }

    #[test]
    fn parses_usernames() {
        let u = RestUsername::parse("1700000000:alice:with:colons").unwrap();
        assert_eq!(u.expiry, 1700000000);
        assert_eq!(u.user, "alice:with:colons");
        assert_eq!(RestUsername::parse("42").unwrap().user, "");
        for bad in [
            "",
            ":alice",
            "abc:alice",
            "-5:x",
            "+5:x",
            " 5:x",
            "99999999999999999999999:x",
        ] {
            assert_eq!(
                RestUsername::parse(bad),
                Err(CredentialError::MalformedUsername),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn expiry_is_enforced() {
        let u = RestUsername::parse("100:a").unwrap();
        assert!(u.check_not_expired(100).is_ok());
        assert_eq!(
            u.check_not_expired(101),
            Err(CredentialError::Expired { expiry: 100 })
        );
    }
}
