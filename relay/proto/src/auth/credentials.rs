//! Authenticates a TURN request with the long-term credential mechanism
//! ([RFC 8489 §9.2.4](https://www.rfc-editor.org/rfc/rfc8489#section-9.2.4)) where the password
//! is derived from the username by each live shared secret (TURN REST API scheme).

use std::net::SocketAddr;

use geoturn_shared::{RestUsername, SecretSet, credentials::rest_password};

use super::nonce::{NonceCheck, NonceIssue, Nonces};
use crate::stun::attribute::{Attribute, PasswordAlgorithm, password_algorithms, types};
use crate::stun::integrity::{long_term_key_md5, long_term_key_sha256};
use crate::stun::{Message, MessageWriter};

/// The PASSWORD-ALGORITHMS value geoturn offers: MD5 then SHA-256, no parameters.
pub const OFFERED_PASSWORD_ALGORITHMS: [u8; 8] = [0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00];

/// The long-term key and the MAC the client used, so the response is signed the same way.
#[derive(Clone, PartialEq, Eq)]
pub enum IntegrityKey {
    /// Key from MD5(username:realm:password), response signed with MESSAGE-INTEGRITY.
    Md5Sha1([u8; 16]),
    /// Key from MD5, response signed with MESSAGE-INTEGRITY-SHA256.
    Md5Sha256([u8; 16]),
    /// Key from SHA-256(username:realm:password), response signed with MESSAGE-INTEGRITY.
    Sha256Sha1([u8; 32]),
    /// Key from SHA-256, response signed with MESSAGE-INTEGRITY-SHA256.
    Sha256Sha256([u8; 32]),
}

impl std::fmt::Debug for IntegrityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IntegrityKey(<redacted>)")
    }
}

impl IntegrityKey {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Md5Sha1(k) | Self::Md5Sha256(k) => k,
            Self::Sha256Sha1(k) | Self::Sha256Sha256(k) => k,
        }
    }

    /// Checks a message's integrity attribute with this key and MAC.
    pub fn verify(&self, msg: &Message<'_>) -> bool {
        match self {
            Self::Md5Sha1(_) | Self::Sha256Sha1(_) => msg.verify_integrity(self.bytes()),
            Self::Md5Sha256(_) | Self::Sha256Sha256(_) => msg.verify_integrity_sha256(self.bytes()),
        }
    }

    /// Signs a message being written.
    pub fn sign(&self, w: &mut MessageWriter<'_>) -> Result<(), crate::stun::EncodeError> {
        match self {
            Self::Md5Sha1(_) | Self::Sha256Sha1(_) => w.add_integrity(self.bytes()),
            Self::Md5Sha256(_) | Self::Sha256Sha256(_) => w.add_integrity_sha256(self.bytes()),
        }
    }

    fn derive(alg: PasswordAlgorithm, sha256_mac: bool, user: &str, realm: &str, pw: &str) -> Self {
        match (alg == PasswordAlgorithm::SHA256, sha256_mac) {
            (false, false) => Self::Md5Sha1(long_term_key_md5(user, realm, pw)),
            (false, true) => Self::Md5Sha256(long_term_key_md5(user, realm, pw)),
            (true, false) => Self::Sha256Sha1(long_term_key_sha256(user, realm, pw)),
            (true, true) => Self::Sha256Sha256(long_term_key_sha256(user, realm, pw)),
        }
    }
}

/// A request that passed authentication.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The USERNAME as sent (`<expiry>:<user>`).
    pub username: String,
    /// The key that signs responses to this client.
    pub key: IntegrityKey,
    /// The request's nonce: when and by whom it was issued (a round-trip sample's start).
    pub nonce: NonceIssue,
}

impl Authenticated {
    /// The application user id part of the username (for per-user quotas).
    pub fn user_id(&self) -> &str {
        RestUsername::parse(&self.username)
            .map(|u| u.user)
            .unwrap_or_default()
    }
}

/// Why authentication did not pass, mapped to the response the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthFailure {
    /// No integrity attribute: the normal first step, answered with a 401 challenge.
    Challenge,
    /// Integrity present but USERNAME, REALM or NONCE missing, or a PASSWORD-ALGORITHMS
    /// downgrade: 400.
    BadRequest,
    /// Username malformed, from a realm we are not, or using USERHASH: 401.
    BadUsername,
    /// The username's expiry has passed: 401.
    Expired,
    /// No live secret produces a matching integrity: 401.
    BadIntegrity,
    /// Integrity fine but the nonce is stale or not ours: 438 with a fresh nonce.
    StaleNonce,
}

impl AuthFailure {
    /// Every reason, for exporting zero-valued series.
    pub const ALL: [AuthFailure; 6] = [
        Self::Challenge,
        Self::BadRequest,
        Self::BadUsername,
        Self::Expired,
        Self::BadIntegrity,
        Self::StaleNonce,
    ];

    /// A label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Challenge => "challenge",
            Self::BadRequest => "bad_request",
            Self::BadUsername => "bad_username",
            Self::Expired => "expired",
            Self::BadIntegrity => "bad_integrity",
            Self::StaleNonce => "stale_nonce",
        }
    }
}

/// Authenticates `msg` from `client` at `now_ms` (Unix milliseconds).
pub fn authenticate(
    msg: &Message<'_>,
    client: SocketAddr,
    realm: &str,
    secrets: &SecretSet,
    nonces: &Nonces,
    now_ms: u64,
) -> Result<Authenticated, AuthFailure> {
    let now_unix = now_ms / 1000;
    let sha256_mac = msg.has_integrity_sha256();
    if !msg.has_integrity() && !sha256_mac {
        return Err(AuthFailure::Challenge);
    }
    let username = match msg.attribute(types::USERNAME) {
        Some(Ok(Attribute::Username(u))) => u,
        // USERHASH cannot be inverted without a user database; treat like an unknown user.
        None if msg.get(types::USERHASH).is_some() => return Err(AuthFailure::BadUsername),
        _ => return Err(AuthFailure::BadRequest),
    };
    let Some(Ok(Attribute::Realm(req_realm))) = msg.attribute(types::REALM) else {
        return Err(AuthFailure::BadRequest);
    };
    let Some(Ok(Attribute::Nonce(nonce))) = msg.attribute(types::NONCE) else {
        return Err(AuthFailure::BadRequest);
    };
    let nonce_check = nonces.check(nonce, client, now_ms);

    let chosen = match msg.attribute(types::PASSWORD_ALGORITHM) {
        None => None,
        Some(Ok(Attribute::PasswordAlgorithm(alg)))
            if alg == PasswordAlgorithm::MD5 || alg == PasswordAlgorithm::SHA256 =>
        {
            Some(alg)
        }
        Some(_) => return Err(AuthFailure::BadRequest),
    };
    // Downgrade protection (RFC 8489 §9.2.4): with the feature bit set, a client that names an
    // algorithm must echo our list exactly; one that names none is treated as MD5.
    if let NonceCheck::Valid {
        password_algorithms: true,
        ..
    } = nonce_check
    {
        match (msg.get(types::PASSWORD_ALGORITHMS), chosen) {
            (None, None) => {}
            (Some(list), Some(alg))
                if list == OFFERED_PASSWORD_ALGORITHMS
                    && password_algorithms(list).any(|a| a == alg) => {}
            _ => return Err(AuthFailure::BadRequest),
        }
    }
    let algorithm = chosen.unwrap_or(PasswordAlgorithm::MD5);

    if req_realm != realm {
        return Err(AuthFailure::BadUsername);
    }
    let parsed = RestUsername::parse(username).map_err(|_| AuthFailure::BadUsername)?;
    if parsed.check_not_expired(now_unix).is_err() {
        return Err(AuthFailure::Expired);
    }

    // Try every live secret; do not stop at the first match so timing does not say which one.
    let mut found = None;
    for secret in secrets.live(now_unix) {
        let password = rest_password(secret.value.expose(), username);
        let key = IntegrityKey::derive(algorithm, sha256_mac, username, realm, &password);
        if key.verify(msg) && found.is_none() {
            found = Some(key);
        }
    }
    let key = found.ok_or(AuthFailure::BadIntegrity)?;
    // The nonce is checked after integrity, as RFC 8489 §9.2.4 orders it.
    let NonceCheck::Valid { issued, .. } = nonce_check else {
        return Err(AuthFailure::StaleNonce);
    };
    Ok(Authenticated {
        username: username.to_owned(),
        key,
        nonce: issued,
    })
}
