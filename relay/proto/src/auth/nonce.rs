//! Stateless nonces: the relay remembers nothing between the 401 challenge and the retry.
//!
//! Layout: `obMatJos2` + 4 base64 characters of the 24-bit security feature set
//! ([RFC 8489 §9.2](https://www.rfc-editor.org/rfc/rfc8489#section-9.2)), then unpadded
//! base64url of `issued (Unix ms, 6 bytes: until the year 10889) || tag (2 bytes) ||
//! HMAC-SHA256(fleet key, client address || issued || tag)[..12]`: 40 characters in all, short
//! because every 401 carries one to whoever asked (a 401 stays within 4× the smallest Allocate). A forged, expired or replayed-from-elsewhere nonce fails the HMAC or the
//! lifetime and gets 438.
//!
//! The issue time, in milliseconds, makes the authenticated request that answers a 401 a
//! round-trip sample for free (DESIGN.md, latency): the time from the challenge to the answer.
//! The tag names the relay process that issued the nonce, so a nonce from a sibling (the key is
//! the fleet's, and a redirected client may bring one) never yields a sample measured across
//! two clocks.

use std::net::{IpAddr, SocketAddr};

use subtle::ConstantTimeEq;

use crate::stun::integrity::hmac_sha256;

/// The "nonce cookie" that announces the security feature set.
pub const NONCE_COOKIE: &str = "obMatJos2";
/// Security feature set with only "Password algorithms" set: 0x800000 in base64.
const FEATURES_PASSWORD_ALGORITHMS: &str = "gAAA";
const MAC_LEN: usize = 12;
const TIME_LEN: usize = 6;
const RAW_LEN: usize = TIME_LEN + 2 + MAC_LEN;

/// Outcome of checking a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// The fleet's, for this client, not expired.
    Valid {
        /// The nonce announced the password-algorithms feature.
        password_algorithms: bool,
        /// When and by whom it was issued.
        issued: NonceIssue,
    },
    /// Expired, for another client, or not one of ours: answer 438 with a fresh one.
    Stale,
}

/// Where a valid nonce came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceIssue {
    /// Unix milliseconds at issue.
    pub at_ms: u64,
    /// Issued by this relay process (its tag), not a sibling.
    pub ours: bool,
    /// The nonce's MAC: names the nonce (to take one sample per nonce).
    pub mac: [u8; MAC_LEN],
}

/// Issues and checks nonces with the fleet's key.
#[derive(Clone)]
pub struct Nonces {
    key: [u8; 32],
    lifetime_ms: u64,
    tag: [u8; 2],
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces")
            .field("lifetime_ms", &self.lifetime_ms)
            .finish_non_exhaustive()
    }
}

impl Nonces {
    /// Nonces keyed with `key` (the fleet's, or random per node), valid `lifetime_secs`, tagged
    /// `tag` (random per process).
    pub fn new(key: [u8; 32], lifetime_secs: u64, tag: u16) -> Self {
        Self {
            key,
            lifetime_ms: lifetime_secs.saturating_mul(1000),
            tag: tag.to_be_bytes(),
        }
    }

    fn mac(&self, client: SocketAddr, issued_ms: u64, tag: [u8; 2]) -> [u8; MAC_LEN] {
        let ip = match client.ip() {
            IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
            IpAddr::V6(ip) => ip.octets(),
        };
        // Bound to the client's IP, not its port: a TCP client's data connections
        // (RFC 6062 ConnectionBind) come from new ports and reuse the control connection's
        // nonce, as RFC 8489 §9.2 lets them.
        let full = hmac_sha256(&self.key, &[&ip, &time_bytes(issued_ms), &tag]);
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(full.get(..MAC_LEN).unwrap_or(&[0; MAC_LEN]));
        out
    }

    /// A fresh nonce for `client` at `now_ms` (Unix milliseconds).
    pub fn issue(&self, client: SocketAddr, now_ms: u64) -> String {
        let mut raw = [0u8; RAW_LEN];
        let (issued, rest) = raw.split_at_mut(TIME_LEN);
        let (tag, mac) = rest.split_at_mut(2);
        issued.copy_from_slice(&time_bytes(now_ms));
        tag.copy_from_slice(&self.tag);
        mac.copy_from_slice(&self.mac(client, now_ms, self.tag));
        let mut s = String::with_capacity(NONCE_COOKIE.len() + 4 + 27);
        s.push_str(NONCE_COOKIE);
        s.push_str(FEATURES_PASSWORD_ALGORITHMS);
        push_base64url(&mut s, &raw);
        s
    }

    /// Checks a nonce presented by `client` at `now_ms` (Unix milliseconds).
    pub fn check(&self, nonce: &str, client: SocketAddr, now_ms: u64) -> NonceCheck {
        let Some(rest) = nonce.strip_prefix(NONCE_COOKIE) else {
            return NonceCheck::Stale;
        };
        let Some(features) = rest.get(..4) else {
            return NonceCheck::Stale;
        };
        let Some(body) = rest.get(4..) else {
            return NonceCheck::Stale;
        };
        let mut raw = [0u8; RAW_LEN];
        if !parse_base64url(body, &mut raw) {
            return NonceCheck::Stale;
        }
        let (issued, rest) = raw.split_at(TIME_LEN);
        let (tag, mac) = rest.split_at(2);
        let mut wide = [0u8; 8];
        wide[8 - TIME_LEN..].copy_from_slice(issued);
        let issued_ms = u64::from_be_bytes(wide);
        let tag: [u8; 2] = tag.try_into().unwrap_or([0; 2]);
        let expected = self.mac(client, issued_ms, tag);
        let ok: bool = expected.ct_eq(mac).into();
        // Valid for the lifetime after issue. A sibling's clock may run a little ahead, so an
        // issue time in the future is fine; the MAC says the fleet issued it.
        if !ok || issued_ms.saturating_add(self.lifetime_ms) < now_ms {
            return NonceCheck::Stale;
        }
        NonceCheck::Valid {
            password_algorithms: features == FEATURES_PASSWORD_ALGORITHMS,
            issued: NonceIssue {
                at_ms: issued_ms,
                ours: tag == self.tag,
                mac: expected,
            },
        }
    }
}

/// The low 48 bits of `ms`, big-endian.
fn time_bytes(ms: u64) -> [u8; TIME_LEN] {
    let all = ms.to_be_bytes();
    let mut out = [0u8; TIME_LEN];
    out.copy_from_slice(&all[8 - TIME_LEN..]);
    out
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
    fn issued_nonce_checks_until_expiry_and_says_when_and_by_whom() {
        let n = Nonces::new([1; 32], 600, 7);
        let nonce = n.issue(client(), 1_000_123);
        assert!(nonce.starts_with("obMatJos2gAAA"));
        assert_eq!(nonce.len(), 40);
        let NonceCheck::Valid {
            password_algorithms: true,
            issued,
        } = n.check(&nonce, client(), 1_600_123)
        else {
            panic!("not valid at the end of its lifetime");
        };
        assert_eq!((issued.at_ms, issued.ours), (1_000_123, true));
        assert_eq!(n.check(&nonce, client(), 1_600_124), NonceCheck::Stale);
        // A sibling (same fleet key, another tag) accepts it, and knows it is not its own.
        let sibling = Nonces::new([1; 32], 600, 8);
        let NonceCheck::Valid { issued, .. } = sibling.check(&nonce, client(), 1_000_200) else {
            panic!("a sibling refused the fleet's nonce");
        };
        assert!(!issued.ours);
        // Another nonce for the same client has another MAC: samples are one per nonce.
        let NonceCheck::Valid { issued: other, .. } =
            n.check(&n.issue(client(), 1_000_124), client(), 1_000_200)
        else {
            panic!("second nonce refused");
        };
        assert_ne!(other.mac, issued.mac);
    }

    #[test]
    fn nonce_is_bound_to_client_ip_and_key() {
        let n = Nonces::new([1; 32], 600, 7);
        let nonce = n.issue(client(), 1_000_000);
        let other_port: SocketAddr = "203.0.113.5:4001".parse().unwrap();
        assert!(matches!(
            n.check(&nonce, other_port, 1_000_000),
            NonceCheck::Valid { .. }
        ));
        let other: SocketAddr = "203.0.113.6:4000".parse().unwrap();
        assert_eq!(n.check(&nonce, other, 1_000_000), NonceCheck::Stale);
        assert_eq!(
            Nonces::new([2; 32], 600, 7).check(&nonce, client(), 1_000_000),
            NonceCheck::Stale
        );
        // Tampering with the expiry breaks the MAC.
        let mut forged = nonce.clone().into_bytes();
        let i = "obMatJos2gAAA".len() + 10;
        forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            n.check(std::str::from_utf8(&forged).unwrap(), client(), 1_000_000),
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
