//! Sockets: UDP listener workers, relayed sockets, batched syscalls, interface discovery,
//! claiming listen addresses.

pub mod batch;
pub mod event;
pub mod interfaces;
pub mod listen;
pub mod socket;
pub mod sockopt;
pub mod stream;
pub mod tcp_relay;
pub mod tls;
pub mod worker;
