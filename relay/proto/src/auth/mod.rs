//! The long-term credential mechanism (RFC 8489 §9.2) over TURN REST credentials.
//!
//! [`nonce`] issues and checks stateless nonces; [`credentials`] authenticates a request against
//! the relay's [`geoturn_shared::SecretSet`] and yields the key that signs the response.

pub mod credentials;
pub mod nonce;

pub use credentials::{AuthFailure, Authenticated, IntegrityKey, authenticate};
pub use nonce::{NonceCheck, Nonces};
