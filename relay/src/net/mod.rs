//! Sockets: UDP listener workers, relayed sockets, batched syscalls, interface discovery.

pub mod batch;
pub mod interfaces;
pub mod sockopt;
pub mod udp;
