//! geoturn-shared: the types the relay, the credential API and the tools agree on.
//!
//! - [`credentials`]: the TURN REST API credential scheme (coturn's `use-auth-secret`).
//! - [`secret_set`]: several live shared secrets at once, so secrets rotate without restarts.
//! - [`pii`]: a redacting wrapper for client addresses and user ids in logs.

pub mod credentials;
pub mod pii;
pub mod secret_set;

pub use credentials::{CredentialError, RestCredential, RestUsername};
pub use secret_set::{Secret, SecretSet, SecretValue};
