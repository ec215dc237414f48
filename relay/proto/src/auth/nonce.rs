//! Stateless nonces: the relay remembers nothing between the 401 challenge and the retry.
//!
//! Layout: `obMatJos2` + 4 base64 characters of the 24-bit security feature set
//! ([RFC 8489 §9.2](https://www.rfc-editor.org/rfc/rfc8489#section-9.2)), then unpadded
//! base64url of `expiry (8 bytes) || HMAC-SHA256(node key, client address || expiry)[..12]`:
//! 40 characters in all, short because every 401 carries one to whoever asked. A forged, expired
//! or replayed-from-elsewhere nonce fails the HMAC or the expiry and gets 438.

use std::net::{IpAddr, SocketAddr};

use subtle::ConstantTimeEq;

use crate::stun::integrity::hmac_sha256;

/// The "nonce cookie" that announces the security feature set.
pub const NONCE_COOKIE: &str = "obMatJos2";
/// Security feature set with only "Password algorithms" set: 0x800000 in base64.
const FEATURES_PASSWORD_ALGORITHMS: &str = "gAAA";
const MAC_LEN: usize = 12;

/// Outcome of checking a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Ours, for this client, not expired.
    Valid {
        /// The nonce announced the password-algorithms feature.
        password_algorithms: bool,
    },
    /// Expired, for another client, or not one of ours: answer 438 with a fresh one.
    Stale,
}

/// Issues and checks nonces with a per-node key.
#[derive(Clone)]
pub struct Nonces {
    key: [u8; 32],
    lifetime_secs: u64,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces")
            .field("lifetime_secs", &self.lifetime_secs)
            .finish_non_exhaustive()
    }
}

impl Nonces {
    /// Nonces keyed with `key` (random per node), valid `lifetime_secs`.
    pub fn new(key: [u8; 32], lifetime_secs: u64) -> Self {
        Self { key, lifetime_secs }
    }

    fn mac(&self, client: SocketAddr, expiry: u64) -> [u8; MAC_LEN] {
        let ip = match client.ip() {
            IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
            IpAddr::V6(ip) => ip.octets(),
        };
        // Bound to the client's IP, not its port: a TCP client's data connections
        // (RFC 6062 ConnectionBind) come from new ports and reuse the control connection's
        // nonce, as RFC 8489 §9.2 lets them.
        let full = hmac_sha256(&self.key, &[&ip, &expiry.to_be_bytes()]);
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(full.get(..MAC_LEN).unwrap_or(&[0; MAC_LEN]));
        out
    }

    /// A fresh nonce for `client` at `now_unix`.
    pub fn issue(&self, client: SocketAddr, now_unix: u64) -> String {
        let expiry = now_unix.saturating_add(self.lifetime_secs);
        let mut raw = [0u8; 8 + MAC_LEN];
        let (exp, mac) = raw.split_at_mut(8);
        exp.copy_from_slice(&expiry.to_be_bytes());
        mac.copy_from_slice(&self.mac(client, expiry));
        let mut s = String::with_capacity(NONCE_COOKIE.len() + 4 + 27);
        s.push_str(NONCE_COOKIE);
        s.push_str(FEATURES_PASSWORD_ALGORITHMS);
        push_base64url(&mut s, &raw);
        s
    }

    /// Checks a nonce presented by `client` at `now_unix`.
    pub fn check(&self, nonce: &str, client: SocketAddr, now_unix: u64) -> NonceCheck {
        let Some(rest) = nonce.strip_prefix(NONCE_COOKIE) else {
            return NonceCheck::Stale;
        };
        let Some(features) = rest.get(..4) else {
            return NonceCheck::Stale;
        };
        let Some(body) = rest.get(4..) else {
            return NonceCheck::Stale;
        };
        let mut raw = [0u8; 8 + MAC_LEN];
        if !parse_base64url(body, &mut raw) {
            return NonceCheck::Stale;
        }
        let (exp, mac) = raw.split_at(8);
        let expiry = u64::from_be_bytes(exp.try_into().unwrap_or([0; 8]));
        let ok: bool = self.mac(client, expiry).ct_eq(mac).into();
        if !ok || expiry < now_unix {
            return NonceCheck::Stale;
        }
        NonceCheck::Valid {
            password_algorithms: features == FEATURES_PASSWORD_ALGORITHMS,
        }
    }
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64url; NONCE is quoted text, and these characters need no quoting.
fn push_base64url(s: &mut String, bytes: &[u8]) {
    let mut acc = 0u32;
    let mut bits = 0u32;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            let i = ((acc >> bits) & 63) as usize;
            s.push(char::from(B64URL.get(i).copied().unwrap_or(b'A')));
        }
    }
    if bits > 0 {
        let i = ((acc << (6 - bits)) & 63) as usize;
        s.push(char::from(B64URL.get(i).copied().unwrap_or(b'A')));
    }
}

/// Decodes unpadded base64url of exactly `out.len()` bytes; false on anything else.
fn parse_base64url(s: &str, out: &mut [u8]) -> bool {
    if s.len() != (out.len() * 8).div_ceil(6) {
        return false;
    }
    let mut acc = 0u32;
    let mut bits = 0u32;
    let mut n = 0usize;
    for c in s.bytes() {
        let Some(v) = B64URL.iter().position(|&x| x == c) else {
            return false;
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            let Some(slot) = out.get_mut(n) else {
                return false;
            };
            *slot = (acc >> bits) as u8;
            n += 1;
        }
    }
    // The leftover bits must be zero, so each nonce has exactly one spelling.
    n == out.len() && acc & ((1 << bits) - 1) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> SocketAddr {
        "203.0.113.5:4000".parse().unwrap()
    }

    #[test]
    fn issued_nonce_checks_until_expiry() {
        let n = Nonces::new([1; 32], 600);
        let nonce = n.issue(client(), 1000);
        assert!(nonce.starts_with("obMatJos2gAAA"));
        assert_eq!(nonce.len(), 40);
        assert_eq!(
            n.check(&nonce, client(), 1600),
            NonceCheck::Valid {
                password_algorithms: true
            }
        );
        assert_eq!(n.check(&nonce, client(), 1601), NonceCheck::Stale);
    }

    #[test]
    fn nonce_is_bound_to_client_ip_and_key() {
        let n = Nonces::new([1; 32], 600);
        let nonce = n.issue(client(), 1000);
        let other_port: SocketAddr = "203.0.113.5:4001".parse().unwrap();
        assert!(matches!(
            n.check(&nonce, other_port, 1000),
            NonceCheck::Valid { .. }
        ));
        let other: SocketAddr = "203.0.113.6:4000".parse().unwrap();
        assert_eq!(n.check(&nonce, other, 1000), NonceCheck::Stale);
        assert_eq!(
            Nonces::new([2; 32], 600).check(&nonce, client(), 1000),
            NonceCheck::Stale
        );
        // Tampering with the expiry breaks the MAC.
        let mut forged = nonce.clone().into_bytes();
        let i = "obMatJos2gAAA".len() + 10;
        forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            n.check(std::str::from_utf8(&forged).unwrap(), client(), 1000),
            NonceCheck::Stale
        );
        for junk in [
            "",
            "obMatJos2",
            "obMatJos2gAAAzz",
            "xyz",
            "obMatJos2gAAA\u{e9}",
        ] {
            assert_eq!(n.check(junk, client(), 1000), NonceCheck::Stale);
        }
    }
}
