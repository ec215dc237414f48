//! The data path: packets from clients (STUN, Send indications, ChannelData) and datagrams from
//! peers. Nothing here allocates; peer data is framed in place in the driver's buffer.

use std::time::Instant;

use super::{DropReason, Server, ToClient, ToPeer};
use crate::stun::attribute::{encode_address, types};
use crate::stun::channel_data::{self, ChannelData};
use crate::stun::header::HEADER_LEN;
use crate::stun::reader::Writer;
use crate::stun::{
    Attribute, Class, Message, MessageType, Method, PacketKind, TransactionId, classify,
};
use crate::types::{FiveTuple, PeerSocket, RelayAddr};

/// Bytes the driver must leave free in front of peer data so the server can prepend a Data
/// indication header in place: STUN header + XOR-PEER-ADDRESS (IPv6) + DATA attribute header.
pub const PEER_HEADROOM: usize = HEADER_LEN + 4 + 20 + 4;
/// Bytes the driver must leave free after peer data for padding.
pub const PEER_TAILROOM: usize = 3;

impl Server {
    /// Handles one packet from a client. Returns the data to forward to a peer, if any; replies
    /// and other work are queued as commands.
    pub fn handle_client_input<'a>(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        packet: &'a [u8],
    ) -> Option<ToPeer<'a>> {
        match classify(packet) {
            PacketKind::ChannelData => self.client_channel_data(now, tuple, packet),
            PacketKind::Stun => self.client_stun(now, tuple, packet),
            PacketKind::Other => {
                self.stats.drop_packet(DropReason::Malformed);
                None
            }
        }
    }

    fn client_stun<'a>(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        packet: &'a [u8],
    ) -> Option<ToPeer<'a>> {
        let msg = match Message::parse(packet) {
            Ok(m) => m,
            Err(_) => {
                self.stats.drop_packet(DropReason::Malformed);
                return None;
            }
        };
        if !msg.fingerprint_ok() {
            self.stats.drop_packet(DropReason::BadFingerprint);
            return None;
        }
        match (msg.class(), msg.method()) {
            (Class::Request, _) => {
                self.handle_request(now, tuple, &msg);
                None
            }
            (Class::Indication, Method::Send) => self.send_indication(now, tuple, &msg),
            _ => {
                self.stats.drop_packet(DropReason::UnexpectedMessage);
                None
            }
        }
    }

    fn send_indication<'a>(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        msg: &Message<'a>,
    ) -> Option<ToPeer<'a>> {
        let (Some(Ok(Attribute::XorPeerAddress(peer))), Some(Ok(Attribute::Data(payload)))) = (
            msg.attribute(types::XOR_PEER_ADDRESS),
            msg.attribute(types::DATA),
        ) else {
            self.stats.drop_packet(DropReason::Malformed);
            return None;
        };
        self.forward_to_peer(now, tuple, PeerSocket(peer), payload)
    }

    fn client_channel_data<'a>(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        packet: &'a [u8],
    ) -> Option<ToPeer<'a>> {
        let Ok(cd) = ChannelData::parse(packet) else {
            self.stats.drop_packet(DropReason::Malformed);
            return None;
        };
        // One lookup of the 5-tuple serves the channel and the forward.
        let Some(alloc) = self.allocations.get_mut(&tuple) else {
            self.stats.drop_packet(DropReason::NoAllocation);
            return None;
        };
        let Some(peer) = alloc.channels.peer(cd.channel, now) else {
            self.stats.drop_packet(DropReason::NoChannel);
            return None;
        };
        forward(&mut self.stats, alloc, now, PeerSocket(peer), cd.payload)
    }

    fn forward_to_peer<'a>(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        peer: PeerSocket,
        payload: &'a [u8],
    ) -> Option<ToPeer<'a>> {
        let Some(alloc) = self.allocations.get_mut(&tuple) else {
            self.stats.drop_packet(DropReason::NoAllocation);
            return None;
        };
        forward(&mut self.stats, alloc, now, peer, payload)
    }

    /// Handles a datagram from `peer` on relayed address `relay`. The payload is at
    /// `buf[PEER_HEADROOM..PEER_HEADROOM + len]`, and `buf` has [`PEER_TAILROOM`] more bytes;
    /// the framed message for the client is written around it in place.
    pub fn handle_peer_input(
        &mut self,
        now: Instant,
        relay: RelayAddr,
        peer: PeerSocket,
        buf: &mut [u8],
        len: usize,
    ) -> Option<ToClient> {
        let Some(alloc) = self.allocations.by_relay_mut(&relay) else {
            self.stats.drop_packet(DropReason::NoAllocation);
            return None;
        };
        if !alloc.permissions.allows(peer.0.ip(), now) {
            self.stats.drop_packet(DropReason::NoPermission);
            return None;
        }
        if !alloc.within_bandwidth(len, now) {
            self.stats.drop_packet(DropReason::OverBandwidth);
            return None;
        }
        let stream = alloc.five_tuple.transport.is_stream();
        let five_tuple = alloc.five_tuple;
        let channel = alloc.channels.number(peer.0, now);
        let framed = match channel {
            Some(number) => frame_channel_data(buf, number, len, stream),
            None => frame_data_indication(buf, peer, len),
        };
        let Some(range) = framed else {
            self.stats.drop_packet(DropReason::TooLarge);
            return None;
        };
        alloc.counters.packets_to_client += 1;
        alloc.counters.bytes_to_client += len as u64;
        self.stats.packets_to_client += 1;
        self.stats.bytes_to_client += len as u64;
        Some(ToClient { five_tuple, range })
    }
}

/// Checks and counts one client → peer datagram of `alloc`.
fn forward<'a>(
    stats: &mut super::ServerStats,
    alloc: &mut crate::allocation::Allocation,
    now: Instant,
    peer: PeerSocket,
    payload: &'a [u8],
) -> Option<ToPeer<'a>> {
    // Permissions are only ever installed for peers the policy allows, so this one lookup
    // also enforces the peer policy on the data path.
    if !alloc.permissions.allows(peer.0.ip(), now) {
        stats.drop_packet(DropReason::NoPermission);
        return None;
    }
    if !alloc.within_bandwidth(payload.len(), now) {
        stats.drop_packet(DropReason::OverBandwidth);
        return None;
    }
    let len = payload.len() as u64;
    alloc.counters.packets_to_peer += 1;
    alloc.counters.bytes_to_peer += len;
    stats.packets_to_peer += 1;
    stats.bytes_to_peer += len;
    // A dual-stack allocation sends from the relayed address of the peer's family.
    let relay = alloc.relay_for(peer.0.ip())?;
    Some(ToPeer {
        relay,
        peer,
        payload,
    })
}

fn frame_channel_data(
    buf: &mut [u8],
    number: u16,
    len: usize,
    stream: bool,
) -> Option<std::ops::Range<usize>> {
    let start = PEER_HEADROOM - channel_data::HEADER_LEN;
    channel_data::write_header(buf.get_mut(start..)?, number, len).ok()?;
    let mut end = PEER_HEADROOM.checked_add(len)?;
    if stream {
        // Streams carry ChannelData padded to 4 bytes (RFC 8656 §12.5).
        let padded = (end + 3) & !3;
        buf.get_mut(end..padded)?.fill(0);
        end = padded;
    }
    Some(start..end)
}

fn frame_data_indication(
    buf: &mut [u8],
    peer: PeerSocket,
    len: usize,
) -> Option<std::ops::Range<usize>> {
    let addr_len = if peer.0.is_ipv4() { 8 } else { 20 };
    let padded_len = (len + 3) & !3;
    let body_len = 4 + addr_len + 4 + padded_len;
    let msg_len = u16::try_from(body_len).ok()?;
    let data_len = u16::try_from(len).ok()?;
    let start = PEER_HEADROOM - (HEADER_LEN + 4 + addr_len + 4);
    // Indications need a transaction id but nobody answers them; a fixed one costs nothing and
    // reveals nothing (the XOR with it only obscures the IPv6 peer address from middleboxes).
    let tid = TransactionId(*b"geoturn-data");
    let mut w = Writer::new(buf.get_mut(start..PEER_HEADROOM)?);
    w.u16(MessageType::new(Method::Data, Class::Indication).to_u16())
        .ok()?;
    w.u16(msg_len).ok()?;
    w.u32(crate::stun::MAGIC_COOKIE).ok()?;
    w.put(&tid.0).ok()?;
    w.u16(types::XOR_PEER_ADDRESS).ok()?;
    w.u16(addr_len as u16).ok()?;
    encode_address(&mut w, peer.0, Some(&tid)).ok()?;
    w.u16(types::DATA).ok()?;
    w.u16(data_len).ok()?;
    let end = PEER_HEADROOM.checked_add(len)?;
    buf.get_mut(end..PEER_HEADROOM + padded_len)?.fill(0);
    Some(start..PEER_HEADROOM + padded_len)
}
