//! RFC 6062 (TCP relaying): Connect, ConnectionBind, and the driver's reports about peer TCP
//! connections ([RFC 6062](https://www.rfc-editor.org/rfc/rfc6062)).

use std::time::Instant;

use super::response::Answer;
use super::{Command, Server};
use crate::allocation::Allocation;
use crate::auth::Authenticated;
use crate::stun::attribute::types;
use crate::stun::{Attribute, ErrorCode, Message, Method};
use crate::types::RelayAddr;

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
        let Some(alloc) = self.allocations.get_mut(&tuple) else {
            return Err(ErrorCode::ALLOCATION_MISMATCH);
        };
        // One connection per peer address and allocation (RFC 6062 §5.2: 446).
        let duplicate = alloc
            .tcp_connections()
            .iter()
            .any(|id| self.tcp.peer_of(*id) == Some(peer));
        if duplicate {
            return Err(ErrorCode::CONNECTION_ALREADY_EXISTS);
        }
        let Some(relay) = alloc.relay_for(peer.ip()) else {
            return Err(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
        };
        let pending = crate::allocation::tcp::PendingConnection {
            owner: tuple,
            username: auth.username.clone(),
            peer,
            ready: false,
            expires: now + crate::allocation::tcp::BIND_TIMEOUT,
        };
        let Some(id) = self.tcp.insert(pending) else {
            return Err(ErrorCode::INSUFFICIENT_CAPACITY);
        };
        // Data will flow to this peer: the permission comes with the connection.
        alloc.permissions.install(peer.ip(), now);
        alloc.add_tcp_connection(id);
        self.connecting.insert(id, (*to, auth.key.clone()));
        self.commands.push_back(Command::ConnectPeer {
            id,
            relay,
            peer: crate::types::PeerSocket::new(peer),
        });
        Ok(())
    }

    /// The driver reports whether the TCP connection for Connect `id` was established.
    pub fn handle_peer_connect_result(&mut self, now: Instant, id: u32, connected: bool) {
        let Some((to, key)) = self.connecting.remove(&id) else {
            return;
        };
        if connected {
            self.tcp
                .set_ready(id, now + crate::allocation::tcp::BIND_TIMEOUT);
            self.reply_signed(now, &to, None, &[Attribute::ConnectionId(id)], &key);
        } else {
            self.tcp.remove(id);
            if let Some(alloc) = self.allocations.get_mut(&to.five_tuple) {
                alloc.remove_tcp_connection(id);
            }
            self.reply_signed(now, &to, Some(ErrorCode::CONNECTION_TIMEOUT), &[], &key);
        }
    }

    /// A peer connected to the TCP relayed address `relay`. Returns the CONNECTION-ID to keep
    /// the connection under, or `None` when it must be closed (no permission, no allocation).
    pub fn handle_peer_tcp_accepted(
        &mut self,
        now: Instant,
        relay: RelayAddr,
        peer: crate::types::PeerSocket,
    ) -> Option<u32> {
        let alloc = self.allocations.by_relay_mut(&relay)?;
        if !alloc.is_tcp() || !alloc.permissions.allows(peer.addr().ip(), now) {
            return None;
        }
        let owner = alloc.five_tuple();
        let id = self.tcp.insert(crate::allocation::tcp::PendingConnection {
            owner,
            username: alloc.username.clone(),
            peer: peer.addr(),
            ready: true,
            expires: now + crate::allocation::tcp::BIND_TIMEOUT,
        })?;
        alloc.add_tcp_connection(id);
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
            w.add(&Attribute::ConnectionId(id))?;
            w.add_fingerprint()?;
            Ok::<usize, crate::stun::EncodeError>(w.finish())
        })();
        if let Ok(n) = encoded {
            self.commands.push_back(Command::SendToClient {
                five_tuple: owner,
                data: buf.get(..n).unwrap_or_default().to_vec(),
            });
        }
        Some(id)
    }

    /// The driver could not keep peer connection `id` (it closed before it was stored).
    pub fn handle_peer_tcp_closed(&mut self, id: u32) {
        self.tcp.remove(id);
    }

    /// Indications need a transaction id; one derived from the connection id is unique enough
    /// and reveals nothing new (the CONNECTION-ID travels in the same message).
    fn attempt_tid(&self, id: u32) -> [u8; 12] {
        let [a, b, c, d] = id.to_be_bytes();
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
        // A data connection is a stream of its own with no allocation (RFC 6062 §5.3).
        if !to.five_tuple.transport.is_stream() || self.allocations.get(&to.five_tuple).is_some() {
            return Err(ErrorCode::BAD_REQUEST);
        }
        self.tcp
            .take_for_bind(id, &auth.username, now)
            .map_err(|e| match e {
                crate::allocation::tcp::BindError::WrongUser => ErrorCode::WRONG_CREDENTIALS,
                crate::allocation::tcp::BindError::Unknown => ErrorCode::BAD_REQUEST,
            })?;
        self.reply_signed(now, to, None, &[], &auth.key);
        self.commands.push_back(Command::SpliceData {
            five_tuple: to.five_tuple,
            id,
        });
        Ok(())
    }
}
