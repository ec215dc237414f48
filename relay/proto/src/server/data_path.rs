//! The data path: packets from clients (STUN, Send indications, ChannelData) and datagrams from
//! peers. Nothing here allocates; peer data is framed in place in the driver's buffer.

use std::ops::Range;
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

/// Where `part`, a subslice of `whole`, lies in it. The STUN parser hands out subslices of the
/// packet; the driver wants positions, to send from its own buffer without a copy.
fn range_within(whole: &[u8], part: &[u8]) -> Option<Range<usize>> {
    let start = part.as_ptr().addr().checked_sub(whole.as_ptr().addr())?;
    let end = start.checked_add(part.len())?;
    (end <= whole.len()).then_some(start..end)
}

impl Server {
    /// Handles one packet from a client. Returns the data to forward to a peer, if any; replies
    /// and other work are queued as commands.
    pub fn handle_client_input(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        packet: &[u8],
    ) -> Option<ToPeer> {
        match classify(packet) {
            PacketKind::ChannelData => self.client_channel_data(now, tuple, packet),
            PacketKind::Stun => self.client_stun(now, tuple, packet),
            PacketKind::Other => {
                self.stats.drop_packet(DropReason::Malformed);
                None
            }
        }
    }

    fn client_stun(&mut self, now: Instant, tuple: FiveTuple, packet: &[u8]) -> Option<ToPeer> {
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
            (Class::Indication, Method::Send) => self.send_indication(now, tuple, &msg, packet),
            _ => {
                self.stats.drop_packet(DropReason::UnexpectedMessage);
                None
            }
        }
    }

    fn send_indication(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        msg: &Message<'_>,
        packet: &[u8],
    ) -> Option<ToPeer> {
        // An indication with an unknown comprehension-required attribute is discarded
        // (RFC 8489 §6.3): the sender asked for a meaning this relay cannot honour.
        if !msg.unknown_comprehension_required().is_empty() {
            self.stats.drop_packet(DropReason::Malformed);
            return None;
        }
        let (Some(Ok(Attribute::XorPeerAddress(peer))), Some(Ok(Attribute::Data(payload)))) = (
            msg.attribute(types::XOR_PEER_ADDRESS),
            msg.attribute(types::DATA),
        ) else {
            self.stats.drop_packet(DropReason::Malformed);
            return None;
        };
        let Some(range) = range_within(packet, payload) else {
            self.stats.drop_packet(DropReason::Malformed);
            return None;
        };
        self.forward_to_peer(now, tuple, PeerSocket::new(peer), range)
    }

    fn client_channel_data(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        packet: &[u8],
    ) -> Option<ToPeer> {
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
        // The payload follows the 4-byte header (RFC 8656 §12.4).
        let range = channel_data::HEADER_LEN..channel_data::HEADER_LEN + cd.payload.len();
        forward(
            &mut self.stats,
            &self.own,
            alloc,
            now,
            PeerSocket::new(peer),
            range,
        )
    }

    fn forward_to_peer(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        peer: PeerSocket,
        range: Range<usize>,
    ) -> Option<ToPeer> {
        let Some(alloc) = self.allocations.get_mut(&tuple) else {
            self.stats.drop_packet(DropReason::NoAllocation);
            return None;
        };
        forward(&mut self.stats, &self.own, alloc, now, peer, range)
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
        if now >= alloc.expires {
            // Expired but not yet swept: the sweep runs on a timer that data never wakes.
            self.stats.drop_packet(DropReason::NoAllocation);
            return None;
        }
        if !alloc.permissions.allows(peer.addr().ip(), now) {
            self.stats.drop_packet(DropReason::NoPermission);
            return None;
        }
        if !alloc.within_packet_rate(now) {
            self.stats.drop_packet(DropReason::OverPacketRate);
            return None;
        }
        if !alloc.within_bandwidth(len, now) {
            self.stats.drop_packet(DropReason::OverBandwidth);
            return None;
        }
        let stream = alloc.five_tuple().transport.is_stream();
        let five_tuple = alloc.five_tuple();
        let channel = alloc.channels.number(peer.addr(), now);
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

/// Checks and counts one client → peer datagram of `alloc`, `range` of the client's packet.
fn forward(
    stats: &mut super::ServerStats,
    own: &super::own::OwnAddresses,
    alloc: &mut crate::allocation::Allocation,
    now: Instant,
    peer: PeerSocket,
    range: Range<usize>,
) -> Option<ToPeer> {
    // An expired allocation relays nothing (RFC 8656 §7.3), even before the sweep (up to a
    // second later, on a timer that data never wakes) frees it.
    if now >= alloc.expires {
        stats.drop_packet(DropReason::NoAllocation);
        return None;
    }
    // Permissions are only ever installed for peers the policy allows, so this one lookup
    // also enforces the peer policy on the data path.
    if !alloc.permissions.allows(peer.addr().ip(), now) {
        stats.drop_packet(DropReason::NoPermission);
        return None;
    }
    if !own.allows(peer.addr()) {
        stats.drop_packet(DropReason::OwnAddress);
        return None;
    }
    let len = range.len();
    if !alloc.within_packet_rate(now) {
        stats.drop_packet(DropReason::OverPacketRate);
        return None;
    }
    if !alloc.within_bandwidth(len, now) {
        stats.drop_packet(DropReason::OverBandwidth);
        return None;
    }
    alloc.counters.packets_to_peer += 1;
    alloc.counters.bytes_to_peer += len as u64;
    stats.packets_to_peer += 1;
    stats.bytes_to_peer += len as u64;
    // A dual-stack allocation sends from the relayed address of the peer's family.
    let relay = alloc.relay_for(peer.addr().ip())?;
    Some(ToPeer { relay, peer, range })
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
    let addr_len = if peer.addr().is_ipv4() { 8 } else { 20 };
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
    encode_address(&mut w, peer.addr(), Some(&tid)).ok()?;
    w.u16(types::DATA).ok()?;
    w.u16(data_len).ok()?;
    let end = PEER_HEADROOM.checked_add(len)?;
    buf.get_mut(end..PEER_HEADROOM + padded_len)?.fill(0);
    Some(start..PEER_HEADROOM + padded_len)
}
