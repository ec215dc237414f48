//! What the tasks around a shard tell its event loop. TCP/TLS client connections and RFC 6062
//! peer connections run as tasks of their own and never touch the shard: they post one of
//! these on the worker's channel, and the loop alone feeds the sans-IO server and runs the
//! commands it queues (the way quinn's `Connection`s and `Endpoint` trade events). Answers the
//! loop owes a task travel back on a oneshot channel.

use geoturn_relay_proto::allocation::tcp::PeerHandle;
use geoturn_relay_proto::types::FiveTuple;
use geoturn_relay_proto::{ConnectionId, PeerSocket, RelayAddr};
use tokio::sync::{mpsc, oneshot};

/// The queue of frames to one stream client; full means the client reads too slowly and
/// frames drop (relayed media is datagram-like: late is as bad as lost).
pub type StreamTx = mpsc::Sender<Vec<u8>>;

/// Where tasks post events for their worker's loop.
pub type EventTx = mpsc::Sender<ShardEvent>;

/// Events queued for a worker's loop at once; a task posting into a full queue waits.
pub const EVENT_QUEUE: usize = 1024;

/// Something a task saw that the shard's server must hear.
#[derive(Debug)]
pub enum ShardEvent {
    /// A TCP or TLS client connected; frames for it go to `tx`.
    StreamOpened {
        /// Its 5-tuple.
        tuple: FiveTuple,
        /// Its write queue.
        tx: StreamTx,
    },
    /// A whole STUN or ChannelData frame from a stream client.
    StreamFrame {
        /// The client's 5-tuple.
        tuple: FiveTuple,
        /// The frame.
        frame: Vec<u8>,
        /// Set for a ConnectionBind request: the loop answers with the peer connection the
        /// stream now belongs to (RFC 6062 §5.4), or `None`; the reader reads no further
        /// frame until then, since the bytes after a successful bind are the peer's.
        bound: Option<oneshot::Sender<Option<ConnectionId>>>,
    },
    /// A stream client sent nothing for the idle timeout: the loop answers whether it holds an
    /// allocation (then the connection stays open).
    StreamIdle {
        /// The client's 5-tuple.
        tuple: FiveTuple,
        /// The answer.
        holds_allocation: oneshot::Sender<bool>,
    },
    /// A stream client's framed phase ended (closed, broken, or spliced to a peer).
    StreamClosed {
        /// The client's 5-tuple.
        tuple: FiveTuple,
    },
    /// A peer connected to a TCP relayed address (RFC 6062 §5.3).
    PeerAccepted {
        /// The relayed address.
        relay: RelayAddr,
        /// The peer.
        from: PeerSocket,
        /// The connection, kept only if the server finds a permission.
        socket: PeerHandle,
    },
    /// A Connect's outgoing connection (RFC 6062 §5.2) finished.
    PeerConnectResult {
        /// The CONNECTION-ID.
        id: ConnectionId,
        /// The connection, or `None` when it could not be made.
        socket: Option<PeerHandle>,
    },
}
