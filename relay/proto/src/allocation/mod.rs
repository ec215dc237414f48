//! Allocation state (RFC 8656 §5–§12): the table of allocations by 5-tuple and by relayed
//! address, each allocation's permissions and channel bindings, relayed-port selection and quotas.

pub mod channel;
pub mod hash;
pub mod permission;
pub mod ports;
pub mod quota;
pub mod revoked;
pub mod table;
pub mod tcp;

pub use table::{Allocation, AllocationAddrs, AllocationTable, PeerTransport};
