//! geoturn-relay: runs the sans-IO TURN core ([`geoturn_relay_proto`]) on real sockets.
//!
//! - [`config`]: options from flags, `GEOTURN_*` variables and a TOML file, validated at start.
//! - [`net`]: the UDP listener workers (one per core, `SO_REUSEPORT`), batched syscalls and
//!   relayed sockets.
//! - [`run`]: starting and stopping a relay.

pub mod config;
pub mod net;
pub mod run;

pub use config::{RelayConfig, RelayOptions};
pub use run::{RelayHandle, start};
