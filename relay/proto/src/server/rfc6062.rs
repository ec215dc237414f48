//! RFC 6062 (TCP relaying): Connect, ConnectionBind, and the driver's reports about peer TCP
//! connections ([RFC 6062](https://www.rfc-editor.org/rfc/rfc6062)).

use std::time::Instant;

use super::requests::admit_peers;
use super::response::Answer;
use super::{Command, Limit, Server};
use crate::allocation::Allocation;
use crate::allocation::tcp::{AddError, BindError, PeerHandle};
use crate::auth::Authenticated;
use crate::stun::attribute::types;
use crate::stun::{Attribute, ErrorCode, Message, Method};
use crate::types::{ConnectionId, PeerSocket, RelayAddr};

impl Server {
    pub(super) fn connect(
        &mut self,
        now: Instant,
        to: &Answer,
        msg: &Message<'_>,
        auth: &Authenticated,
    ) -> Result<(), ErrorCode> {
        let tuple = to.five_tuple;
        if !self.allocations.get(&tuple).is_some_and(Allocation::is_tcp) {
            return Err(ErrorCode::BAD_REQUEST);
        }
        let Some(Ok(Attribute::XorPeerAddress(peer))) = msg.attribute(types::XOR_PEER_ADDRESS)
        else {
            return Err(ErrorCode::BAD_REQUEST);
        };
        self.check_peer(&tuple, peer)?;
        self.check_peer_port(peer)?;
        let Some(alloc) = self.allocations.get_mut(&tuple) else {
            return Err(ErrorCode::ALLOCATION_MISMATCH);
        };
        let Some(relay) = alloc.relay_for(peer.ip()) else {
            return Err(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
        };
        // Every Connect opens a connection from the relay's address: it counts as a new peer
        // even to an IP with a permission, so an allocation cannot scan ports at line rate.
        admit_peers(alloc, &mut self.stats, &[peer.ip()], 1, now)?;
        let id = match self.tcp.connect(tuple, &auth.username, peer, now) {
            Ok(id) => id,
            // One connection per peer address and allocation (RFC 6062 §5.2: 446).
            Err(AddError::Duplicate) => return Err(ErrorCode::CONNECTION_ALREADY_EXISTS),
            Err(AddError::Full) => {
                self.stats.refuse(Limit::PeerConnections);
                return Err(ErrorCode::INSUFFICIENT_CAPACITY);
            }
        };
        // Data will flow to this peer: the permission comes with the connection.
        alloc.permissions.install(peer.ip(), now);
        self.connecting.insert(id, (*to, auth.key.clone()));
        self.commands.push_back(Command::ConnectPeer {
            id,
            relay,
            peer: PeerSocket::new(peer),
        });
        Ok(())
    }

    /// The driver reports the TCP connection for Connect `id`: its socket, or `None` when it
    /// could not connect.
    pub fn handle_peer_connect_result(
        &mut self,
        now: Instant,
        id: ConnectionId,
        socket: Option<PeerHandle>,
    ) {
        let Some((to, key)) = self.connecting.remove(&id) else {
            return;
        };
        // False when the allocation ended meanwhile: the table closed the socket.
        let kept = socket.is_some_and(|s| self.tcp.connected(id, s, now));
        if kept {
            let attrs = [Attribute::ConnectionId(id.get())];
            self.reply_signed(now, &to, None, &attrs, &key);
        } else {
            self.tcp.close(id);
            self.reply_signed(now, &to, Some(ErrorCode::CONNECTION_TIMEOUT), &[], &key);
        }
    }

    /// A peer connected to the TCP relayed address `relay`. The connection is kept (until its
    /// ConnectionBind) only when an allocation there permits the peer; otherwise `socket` is
    /// dropped, which closes it.
    pub fn handle_peer_tcp_accepted(
        &mut self,
        now: Instant,
        relay: RelayAddr,
        peer: PeerSocket,
        socket: PeerHandle,
    ) {
        let Some(alloc) = self.allocations.by_relay_mut(&relay) else {
            return;
        };
        if !alloc.is_tcp() || !alloc.permissions.allows(peer.addr().ip(), now) {
            return;
        }
        let owner = alloc.five_tuple();
        let Ok(id) = self
            .tcp
            .accepted(owner, &alloc.username, peer.addr(), socket, now)
        else {
            return;
        };
        // ConnectionAttempt tells the client to open a data connection (RFC 6062 §5.4).
        let mut buf = [0u8; 128];
        let tid = crate::stun::TransactionId(self.attempt_tid(id));
        let encoded = (|| {
            let mut w = crate::stun::MessageWriter::new(
                &mut buf,
                crate::stun::MessageType::new(
                    Method::ConnectionAttempt,
                    crate::stun::Class::Indication,
                ),
                tid,
            )?;
            w.add(&Attribute::XorPeerAddress(peer.addr()))?;
            w.add(&Attribute::ConnectionId(id.get()))?;
            w.add_fingerprint()?;
            Ok::<usize, crate::stun::EncodeError>(w.finish())
        })();
        if let Ok(n) = encoded {
            self.commands.push_back(Command::SendToClient {
                five_tuple: owner,
                data: buf.get(..n).unwrap_or_default().to_vec(),
            });
        }
    }

    /// Indications need a transaction id; one derived from the connection id is unique enough
    /// and reveals nothing new (the CONNECTION-ID travels in the same message).
    fn attempt_tid(&self, id: ConnectionId) -> [u8; 12] {
        let [a, b, c, d] = id.get().to_be_bytes();
        [b'g', b'e', b'o', b't', b'u', b'r', b'n', b'!', a, b, c, d]
    }

    pub(super) fn connection_bind(
        &mut self,
        now: Instant,
        to: &Answer,
        msg: &Message<'_>,
        auth: &Authenticated,
    ) -> Result<(), ErrorCode> {
        let Some(Ok(Attribute::ConnectionId(id))) = msg.attribute(types::CONNECTION_ID) else {
            return Err(ErrorCode::BAD_REQUEST);
        };
        let id = ConnectionId::new(id);
        // A data connection is a stream of its own with no allocation (RFC 6062 §5.3).
        if !to.five_tuple.transport.is_stream() || self.allocations.get(&to.five_tuple).is_some() {
            return Err(ErrorCode::BAD_REQUEST);
        }
        self.tcp
            .bind(id, &auth.username, now)
            .map_err(|e| match e {
                BindError::WrongUser => ErrorCode::WRONG_CREDENTIALS,
                BindError::Unknown => ErrorCode::BAD_REQUEST,
            })?;
        self.reply_signed(now, to, None, &[], &auth.key);
        self.commands.push_back(Command::SpliceData {
            five_tuple: to.five_tuple,
            id,
        });
        Ok(())
    }
}
