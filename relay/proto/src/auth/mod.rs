//! The long-term credential mechanism (RFC 8489 §9.2) over TURN REST credentials.
//!
//! [`nonce`] issues and checks stateless nonces; [`credentials`] authenticates a request against
//! the relay's [`geoturn_shared::SecretSet`] and yields the key that signs the response.

pub mod credentials;
pub mod nonce;

pub use credentials::{AuthFailure, Authenticated, IntegrityKey, authenticate};
pub use nonce::{NonceCheck, NonceIssue, Nonces};

/// A 32-byte key for one purpose (`label`) derived from a root secret with HMAC-SHA256, so the
/// root never serves two purposes and relays sharing the root derive the same key.
pub fn derive_key(root: &[u8], label: &[u8]) -> [u8; 32] {
    crate::stun::integrity::hmac_sha256(root, &[label])
}
