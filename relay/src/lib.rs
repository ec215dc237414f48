//! geoturn-relay: runs the sans-IO TURN core ([`geoturn_relay_proto`]) on real sockets.
//!
//! - [`client_rtt`]: clients' round trips, by network, waiting for the registry heartbeat.
//! - [`config`]: options from flags, `GEOTURN_*` variables and a TOML file, validated at start.
//! - [`net`]: the UDP listener workers (one per core, `SO_REUSEPORT`), batched syscalls and
//!   relayed sockets.
//! - [`offload`]: the eBPF fast path for established channels (`--offload`).
//! - [`run`]: starting and stopping the relay's workers.
//! - [`ops`]: metrics, status, health, drain over HTTP.
//! - [`mesh`]: the QUIC mesh between relays (inter-relay RTT and loss, pinned through the
//!   registry).
//! - [`service`]: the relay as a process: workers + ops + signals + drain.
//! - [`signal`]: SIGTERM/SIGINT handlers installed before any work is taken.

pub mod client_rtt;
pub mod config;
pub mod mesh;
pub mod net;
pub mod offload;
pub mod ops;
pub mod run;
pub mod service;
pub mod signal;

pub use config::{RelayConfig, RelayOptions};
pub use run::{RelayHandle, start};
