//! The relay's driver: sockets around the sans-IO core.
//!
//! - [`worker`]: one thread per core; its event loop, the only place that feeds the shard's
//!   server with events from the tasks below and runs the resulting commands.
//! - [`shard`]: the worker's state, the one command executor, relayed-socket readers and the
//!   outbox of peer data for UDP clients; [`udp_client`]: the UDP listeners' read path.
//! - [`stream`] (TCP/TLS clients) and [`tcp_relay`] (RFC 6062 peer connections): tasks that
//!   post [`event::ShardEvent`]s to the loop and never touch the shard.
//! - [`listen`] and [`socket`]: claiming listen ports and binding sockets; [`batch`]:
//!   `recvmmsg`/`sendmmsg`/GSO; [`sockopt`], [`interfaces`], [`tls`].

pub mod batch;
pub mod event;
pub mod interfaces;
pub mod listen;
pub mod shard;
pub mod socket;
pub mod sockopt;
pub mod stream;
pub mod tcp_relay;
pub mod tls;
pub mod udp_client;
pub mod worker;
