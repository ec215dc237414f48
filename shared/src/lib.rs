//! geoturn-shared: the types the relay, the credential API and the tools agree on.
//!
//! - [`clock`]: the wall clock (unix seconds and milliseconds), read in one place.
//! - [`config`]: the configuration error type and `--config` file reading.
//! - [`credentials`]: the TURN REST API credential scheme (coturn's `use-auth-secret`).
//! - [`secret_set`]: several live shared secrets at once, so secrets rotate without restarts.
//! - [`http_error`]: the JSON error body of every HTTP surface.
//! - [`latency`]: client round trips measured by the relays, keyed by client network.
//! - [`load`]: a relay's load, the one formula ranking and sibling choice use.
//! - [`pii`]: a redacting wrapper for client addresses and user ids in logs.
//! - [`process_metrics`]: the standard `process_*` metrics (descriptors, memory, CPU).
//! - `registry` (feature `registry`): relay records, events and encrypted secrets, in memory
//!   or in Redis. Behind a feature so the sans-IO core, which depends on this crate, stays free
//!   of tokio and sockets.

pub mod clock;
pub mod config;
pub mod credentials;
pub mod http_error;
#[cfg(feature = "http-server")]
pub mod http_server;
pub mod latency;
pub mod load;
pub mod pii;
#[cfg(feature = "metrics")]
pub mod process_metrics;
#[cfg(feature = "registry")]
pub mod registry;
pub mod secret_set;

pub use credentials::{CredentialError, RestCredential, RestUsername};
pub use secret_set::{Secret, SecretSet, SecretValue};
