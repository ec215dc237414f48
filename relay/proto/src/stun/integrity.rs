//! MESSAGE-INTEGRITY (HMAC-SHA1), MESSAGE-INTEGRITY-SHA256, FINGERPRINT and long-term keys
//! ([RFC 8489 §9.2.2, §14.5–14.7](https://www.rfc-editor.org/rfc/rfc8489#section-14.5)).
//!
//! Verification hashes the message in place, with the header's length field replaced, so no
//! copy of the message is made.

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;

use super::header::HEADER_LEN;

const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// HMAC-SHA1 over the concatenation of `parts`.
pub fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA256 over the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// FINGERPRINT value over the concatenation of `parts` (CRC-32 XOR 0x5354554e).
pub fn fingerprint(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize() ^ FINGERPRINT_XOR
}

/// The long-term key for MD5: MD5(username ":" realm ":" password).
///
/// RFC 8489 asks for OpaqueString (SASLprep in RFC 5389) on realm and password; TURN REST
/// passwords are base64 and realms ASCII, for which the preparation is the identity.
pub fn long_term_key_md5(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// The long-term key for SHA-256: SHA-256(username ":" realm ":" password).
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// USERHASH: SHA-256(username ":" realm) (RFC 8489 §14.4).
pub fn userhash(username: &str, realm: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.finalize().into()
}

/// The header with its length field set to end right after an attribute of `attr_len` value
/// bytes at offset `at`, and the body before `at`: the bytes an integrity check covers.
fn covered(raw: &[u8], at: usize, attr_len: usize) -> Option<([u8; HEADER_LEN], &[u8])> {
    let mut header: [u8; HEADER_LEN] = raw.get(..HEADER_LEN)?.try_into().ok()?;
    let len = u16::try_from(at.checked_add(4 + attr_len)?.checked_sub(HEADER_LEN)?).ok()?;
    let [hi, lo] = len.to_be_bytes();
    header[2] = hi;
    header[3] = lo;
    Some((header, raw.get(HEADER_LEN..at)?))
}

fn attr_value(raw: &[u8], at: usize) -> Option<&[u8]> {
    let len = usize::from(u16::from_be_bytes(
        raw.get(at + 2..at + 4)?.try_into().ok()?,
    ));
    raw.get(at + 4..at + 4 + len)
}

/// Checks the MESSAGE-INTEGRITY attribute at offset `at`.
pub fn verify_sha1(raw: &[u8], at: usize, key: &[u8]) -> bool {
    let Some(value) = attr_value(raw, at) else {
        return false;
    };
    let Some((header, body)) = covered(raw, at, 20) else {
        return false;
    };
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(&header);
    mac.update(body);
    // verify_slice compares in constant time.
    value.len() == 20 && mac.verify_slice(value).is_ok()
}

/// Checks the MESSAGE-INTEGRITY-SHA256 attribute at offset `at` (possibly truncated to 16+ bytes).
pub fn verify_sha256(raw: &[u8], at: usize, key: &[u8]) -> bool {
    let Some(value) = attr_value(raw, at) else {
        return false;
    };
    if value.len() < 16 || value.len() > 32 || value.len() % 4 != 0 {
        return false;
    }
    let Some((header, body)) = covered(raw, at, value.len()) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(&header);
    mac.update(body);
    mac.verify_truncated_left(value).is_ok()
}

/// Checks the FINGERPRINT attribute at offset `at`.
pub fn verify_fingerprint(raw: &[u8], at: usize) -> bool {
    let Some(value) = attr_value(raw, at) else {
        return false;
    };
    let Ok(value) = <[u8; 4]>::try_from(value) else {
        return false;
    };
    let Some((header, body)) = covered(raw, at, 4) else {
        return false;
    };
    fingerprint(&[&header, body]) == u32::from_be_bytes(value)
}
