//! Secrets at rest: AES-256-GCM (`ring::aead`) under a 32-byte key that relays and the API get
//! from their own configuration, never from Redis (DESIGN.md §3).
//!
//! Stored value (the `secrets` hash field `{id}`), JSON:
//! `{"v": 2, "created": <unix ms>, "not_after": <unix s or null>, "nonce": <base64, 12 bytes>,
//! "ciphertext": <base64, secret ‖ 16-byte tag>}`. The associated data binds the secret id,
//! `created` and `not_after` ([`StoredSecret::aad`]): a ciphertext moved under another id, a
//! retired secret whose `not_after` was cleared, or a secret made to look newest by a changed
//! `created` fails to open, so write access to Redis cannot revive or promote a secret.
//! Records without `v` (written before version 2) bound only the id; they are still read, and
//! the credential API re-seals them at start ([`super::Registry::reseal_legacy_secrets`]).
//! `created` is in milliseconds so two rotations within one second still order; `not_after`
//! keeps [`Secret`]'s unit (seconds).
//! Nonces are random: a key encrypts a few secrets per rotation, far below the 2^32 messages
//! at which random 96-bit nonces start to risk a collision.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::RegistryError;
use crate::secret_set::{Secret, SecretValue};

/// The key that encrypts secrets in the registry. Never printed.
pub(crate) struct SecretsKey(LessSafeKey);

impl SecretsKey {
    /// Wraps 32 raw key bytes.
    pub(crate) fn new(bytes: &[u8; 32]) -> Result<Self, RegistryError> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| RegistryError::Crypto("the secrets key was refused".into()))?;
        Ok(Self(LessSafeKey::new(unbound)))
    }
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretsKey(<redacted>)")
    }
}

/// Parses an operator-supplied secrets key: 64 hex digits, or base64 of 32 bytes (e.g. the
/// output of `openssl rand -base64 32`). The error never repeats the input.
pub fn parse_secrets_key(text: &str) -> Result<[u8; 32], RegistryError> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| {
                text.get(2 * i..2 * i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
    } else {
        STANDARD
            .decode(text)
            .or_else(|_| STANDARD_NO_PAD.decode(text))
            .ok()
    };
    bytes
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            RegistryError::invalid(
                "secrets key",
                "must be 32 bytes as 64 hex digits or base64 (openssl rand -base64 32)",
            )
        })
}

/// The format written now: metadata in the associated data.
const VERSION: u8 = 2;

/// One encrypted secret as stored in the `secrets` hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredSecret {
    /// Format version; absent in records from before version 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<u8>,
    /// When the secret was first stored, Unix milliseconds; orders the set newest first.
    pub created: u64,
    /// Unix seconds after which the secret validates nothing; `None` while active.
    pub not_after: Option<u64>,
    /// Base64 of the 12-byte nonce.
    pub nonce: String,
    /// Base64 of the ciphertext with its tag.
    pub ciphertext: String,
}

impl StoredSecret {
    /// The associated data of a record: the id alone for a legacy record; otherwise a label,
    /// the version, the id and both times, length-prefixed so no two records share one.
    fn aad(id: &str, version: Option<u8>, created: u64, not_after: Option<u64>) -> Vec<u8> {
        let Some(v) = version else {
            return id.as_bytes().to_vec();
        };
        let mut aad = b"geoturn secret".to_vec();
        aad.push(v);
        aad.extend_from_slice(&(id.len() as u64).to_be_bytes());
        aad.extend_from_slice(id.as_bytes());
        aad.extend_from_slice(&created.to_be_bytes());
        match not_after {
            Some(t) => {
                aad.push(1);
                aad.extend_from_slice(&t.to_be_bytes());
            }
            None => aad.push(0),
        }
        aad
    }

    /// True for a record written before version 2 (metadata not authenticated).
    pub(crate) fn is_legacy(&self) -> bool {
        self.v.is_none()
    }

    /// Encrypts `secret`, binding its id, `created` and `not_after` as associated data.
    pub(crate) fn seal(
        key: &SecretsKey,
        secret: &Secret,
        created: u64,
    ) -> Result<Self, RegistryError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| RegistryError::Crypto("no randomness for a nonce".into()))?;
        let mut buf = secret.value.expose().to_vec();
        let aad = Self::aad(&secret.id, Some(VERSION), created, secret.not_after);
        key.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_slice()),
                &mut buf,
            )
            .map_err(|_| {
                RegistryError::Crypto(format!("could not encrypt secret {}", secret.id))
            })?;
        Ok(Self {
            v: Some(VERSION),
            created,
            not_after: secret.not_after,
            nonce: STANDARD.encode(nonce),
            ciphertext: STANDARD.encode(buf),
        })
    }

    /// Decrypts the secret stored under `id`; fails on a wrong key, a wrong id or any change
    /// (to the metadata too, except in a legacy record).
    pub(crate) fn open(&self, key: &SecretsKey, id: &str) -> Result<Secret, RegistryError> {
        if self.v.is_some_and(|v| v != VERSION) {
            return Err(RegistryError::invalid(
                "secret",
                format!("secret {id}: format version {:?} is not {VERSION}", self.v),
            ));
        }
        let nonce: [u8; NONCE_LEN] = STANDARD
            .decode(&self.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| RegistryError::invalid("secret nonce", format!("secret {id}")))?;
        let mut buf = STANDARD
            .decode(&self.ciphertext)
            .map_err(|_| RegistryError::invalid("secret ciphertext", format!("secret {id}")))?;
        let aad = Self::aad(id, self.v, self.created, self.not_after);
        let plain = key
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_slice()),
                &mut buf,
            )
            .map_err(|_| {
                RegistryError::Crypto(format!(
                    "secret {id} does not decrypt: a different secrets key, or the value was altered"
                ))
            })?;
        Ok(Secret {
            id: id.to_owned(),
            value: SecretValue::new(plain.to_vec()),
            not_after: self.not_after,
        })
    }

    /// The hash value.
    pub(crate) fn to_json(&self) -> String {
        // A struct of numbers and strings always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the hash value stored under `id`.
    pub(crate) fn from_json(id: &str, json: &str) -> Result<Self, RegistryError> {
        serde_json::from_str(json)
            .map_err(|e| RegistryError::invalid("secret", format!("secret {id}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretsKey {
        SecretsKey::new(&[byte; 32]).unwrap()
    }

    #[test]
    fn round_trip() {
        let mut secret = Secret::new("s1", "correct horse battery staple");
        secret.not_after = Some(1_800_000_000);
        let stored = StoredSecret::seal(&key(7), &secret, 1_700_000_000_123).unwrap();
        let json = stored.to_json();
        assert!(!json.contains("correct horse"));
        let back = StoredSecret::from_json("s1", &json).unwrap();
        assert_eq!(back.created, 1_700_000_000_123);
        assert_eq!(back.open(&key(7), "s1").unwrap(), secret);
    }

    #[test]
    fn nonces_differ() {
        let secret = Secret::new("s1", "x");
        let a = StoredSecret::seal(&key(7), &secret, 0).unwrap();
        let b = StoredSecret::seal(&key(7), &secret, 0).unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn wrong_key_wrong_id_or_tampering_fail() {
        let secret = Secret::new("s1", "hunter2");
        let stored = StoredSecret::seal(&key(7), &secret, 0).unwrap();
        assert!(matches!(
            stored.open(&key(8), "s1"),
            Err(RegistryError::Crypto(_))
        ));
        assert!(matches!(
            stored.open(&key(7), "s2"),
            Err(RegistryError::Crypto(_))
        ));
        let mut raw = STANDARD.decode(&stored.ciphertext).unwrap();
        raw[0] ^= 1;
        let flipped = StoredSecret {
            ciphertext: STANDARD.encode(&raw),
            ..stored.clone()
        };
        assert!(matches!(
            flipped.open(&key(7), "s1"),
            Err(RegistryError::Crypto(_))
        ));
        let short_nonce = StoredSecret {
            nonce: STANDARD.encode([0u8; 8]),
            ..stored
        };
        assert!(matches!(
            short_nonce.open(&key(7), "s1"),
            Err(RegistryError::Invalid { .. })
        ));
    }

    #[test]
    fn changed_metadata_fails_to_open() {
        let mut secret = Secret::new("s1", "hunter2");
        secret.not_after = Some(1_800_000_000);
        let stored = StoredSecret::seal(&key(7), &secret, 1_700_000_000_000).unwrap();
        assert!(stored.open(&key(7), "s1").is_ok());
        // A retired secret revived by clearing not_after, or pushed later.
        for tampered in [
            StoredSecret {
                not_after: None,
                ..stored.clone()
            },
            StoredSecret {
                not_after: Some(1_900_000_000),
                ..stored.clone()
            },
            // Made to look newest, so it would become the active secret.
            StoredSecret {
                created: 1_700_000_000_001,
                ..stored.clone()
            },
            // Passed off as a legacy record, whose metadata is not bound.
            StoredSecret {
                v: None,
                ..stored.clone()
            },
        ] {
            assert!(
                matches!(tampered.open(&key(7), "s1"), Err(RegistryError::Crypto(_))),
                "{tampered:?} opened"
            );
        }
        let future = StoredSecret {
            v: Some(3),
            ..stored
        };
        assert!(matches!(
            future.open(&key(7), "s1"),
            Err(RegistryError::Invalid { .. })
        ));
    }

    #[test]
    fn legacy_records_still_open() {
        // Sealed as before version 2: the id alone as associated data, no `v`.
        let k = key(7);
        let mut buf = b"old secret".to_vec();
        let nonce = [5u8; NONCE_LEN];
        k.0.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(b"s0".as_slice()),
            &mut buf,
        )
        .unwrap();
        let json = format!(
            r#"{{"created":1,"not_after":null,"nonce":"{}","ciphertext":"{}"}}"#,
            STANDARD.encode(nonce),
            STANDARD.encode(&buf)
        );
        let stored = StoredSecret::from_json("s0", &json).unwrap();
        assert!(stored.is_legacy());
        assert_eq!(stored.open(&k, "s0").unwrap().value.expose(), b"old secret");
        assert!(
            !StoredSecret::seal(&k, &Secret::new("s1", "x"), 0)
                .unwrap()
                .is_legacy()
        );
    }

    #[test]
    fn key_parsing() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let k = parse_secrets_key(hex).unwrap();
        assert_eq!(k[1], 0x11);
        assert_eq!(k[31], 0xff);
        let b64 = STANDARD.encode([9u8; 32]);
        assert_eq!(parse_secrets_key(&format!(" {b64}\n")).unwrap(), [9u8; 32]);
        assert_eq!(
            parse_secrets_key(b64.trim_end_matches('=')).unwrap(),
            [9u8; 32]
        );
        let err = parse_secrets_key("tooshort-secret-material").unwrap_err();
        assert!(!err.to_string().contains("tooshort"));
        assert!(parse_secrets_key(&STANDARD.encode([1u8; 31])).is_err());
    }

    #[test]
    fn key_never_prints() {
        assert_eq!(format!("{:?}", key(1)), "SecretsKey(<redacted>)");
    }
}
