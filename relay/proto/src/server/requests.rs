//! Requests: how every request is answered (unknown attributes, Binding, authentication,
//! the one place a handler's error becomes its error response), and Refresh,
//! CreatePermission and ChannelBind
//! ([RFC 8656 §7–§11](https://www.rfc-editor.org/rfc/rfc8656#section-7)). Allocate is in
//! `allocate.rs`, RFC 6062's Connect and ConnectionBind in `rfc6062.rs`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::response::{Answer, Budget};
use super::{Command, Limit, Server, ServerStats};
use crate::allocation::Allocation;
use crate::auth::{AuthFailure, Authenticated, authenticate};
use crate::stun::attribute::types;
use crate::stun::channel_data::{MAX_CHANNEL, MIN_CHANNEL};
use crate::stun::{AddressFamily, Attribute, ErrorCode, Message, Method};
use crate::types::FiveTuple;

/// Most XOR-PEER-ADDRESS attributes one CreatePermission may carry.
const MAX_PEERS_PER_REQUEST: usize = 16;

/// Whether `alloc` may add permissions for `ips`: room among its permissions, and its
/// new-peer limit (each IP without a permission is a new peer; a request costs at least
/// `min_cost`, which is how an RFC 6062 Connect always counts). Takes the new peers from the
/// limit when it answers yes; answers 508 otherwise, counting which limit refused.
pub(super) fn admit_peers(
    alloc: &mut Allocation,
    stats: &mut ServerStats,
    ips: &[IpAddr],
    min_cost: usize,
    now: Instant,
) -> Result<(), ErrorCode> {
    if alloc.permissions.can_install(ips.iter(), now).is_err() {
        stats.refuse(Limit::Permissions);
        return Err(ErrorCode::INSUFFICIENT_CAPACITY);
    }
    let new = ips
        .iter()
        .filter(|ip| !alloc.permissions.allows(**ip, now))
        .count();
    if !alloc.admit_new_peers(new.max(min_cost), now) {
        stats.refuse(Limit::NewPeers);
        tracing::debug!(new, "new peers over the allocation's rate: 508");
        return Err(ErrorCode::INSUFFICIENT_CAPACITY);
    }
    Ok(())
}

impl Server {
    pub(super) fn handle_request(&mut self, now: Instant, tuple: FiveTuple, msg: &Message<'_>) {
        let to = Answer {
            five_tuple: tuple,
            method: msg.method(),
            transaction_id: *msg.transaction_id(),
            fingerprint: msg.has_fingerprint(),
        };
        let unknown = msg.unknown_comprehension_required();
        if !unknown.is_empty() {
            let mut raw = [0u8; 2 * crate::stun::message::MAX_UNKNOWN_REPORTED];
            for (slot, t) in raw.chunks_exact_mut(2).zip(unknown) {
                slot.copy_from_slice(&t.to_be_bytes());
            }
            let len = 2 * unknown.len();
            let list = raw.get(..len).unwrap_or_default();
            self.reply_unsigned(
                now,
                &to,
                Some(ErrorCode::UNKNOWN_ATTRIBUTE),
                &[Attribute::UnknownAttributes(list)],
            );
            return;
        }
        match msg.method() {
            Method::Binding => {
                self.reply_unsigned(
                    now,
                    &to,
                    None,
                    &[Attribute::XorMappedAddress(tuple.client.addr())],
                );
                return;
            }
            Method::Allocate
            | Method::Refresh
            | Method::CreatePermission
            | Method::ChannelBind
            | Method::Connect
            | Method::ConnectionBind => {}
            // Unknown methods get 400 (RFC 8489 §6.3.1).
            _ => {
                self.reply_unsigned(now, &to, Some(ErrorCode::BAD_REQUEST), &[]);
                return;
            }
        }
        if self.replay_cached(now, &to) {
            return;
        }
        let auth = match authenticate(
            msg,
            tuple.client.addr(),
            &self.config.realm,
            &self.secrets,
            &self.nonces,
            self.unix_now_ms(now),
        ) {
            Ok(auth) => auth,
            Err(failure) => {
                *self
                    .stats
                    .auth_failures
                    .entry(failure.as_str())
                    .or_default() += 1;
                match failure {
                    AuthFailure::BadRequest => {
                        self.reply_unsigned(now, &to, Some(ErrorCode::BAD_REQUEST), &[]);
                    }
                    AuthFailure::StaleNonce if self.is_allocation_holder(tuple, msg) => {
                        // The request's integrity verified and this 5-tuple holds that user's
                        // allocation: the 438 is owed to a live session, so it does not
                        // spend the source's unauthenticated budget. Otherwise anyone who
                        // spoofs the client's address (or shares its NAT) could spend it, and
                        // the session's Refresh would go unanswered until it expired.
                        self.reply_challenge(now, &to, ErrorCode::STALE_NONCE, Budget::Exempt);
                    }
                    AuthFailure::StaleNonce => {
                        self.reply_challenge(now, &to, ErrorCode::STALE_NONCE, Budget::Spend);
                    }
                    _ => self.reply_challenge(now, &to, ErrorCode::UNAUTHENTICATED, Budget::Spend),
                }
                return;
            }
        };
        if msg.method() == Method::Allocate {
            let now_ms = self.unix_now_ms(now);
            self.rtt
                .observe(tuple.client.addr().ip(), &auth.nonce, now_ms);
        }
        // One place turns a handler's error into its signed error response.
        let key = auth.key.clone();
        if let Err(code) = self.authenticated_request(now, &to, msg, auth) {
            self.reply_error(now, &to, code, &key);
        }
        // These change what may be relayed, or until when: the fast path follows.
        if matches!(
            msg.method(),
            Method::Refresh | Method::CreatePermission | Method::ChannelBind
        ) {
            self.sync_offload(tuple, now);
        }
    }

    /// Runs an authenticated request; an error is answered by the caller.
    fn authenticated_request(
        &mut self,
        now: Instant,
        to: &Answer,
        msg: &Message<'_>,
        auth: Authenticated,
    ) -> Result<(), ErrorCode> {
        if self.is_revoked(auth.user_id(), now) {
            return Err(ErrorCode::FORBIDDEN);
        }
        match msg.method() {
            Method::Allocate => return self.allocate(now, to, msg, auth),
            // Arrives on a fresh data connection, which has no allocation of its own.
            Method::ConnectionBind => return self.connection_bind(now, to, msg, &auth),
            _ => {}
        }
        // Every other request needs this 5-tuple's allocation, created by the same user.
        let Some(alloc) = self.allocations.get(&to.five_tuple) else {
            return Err(ErrorCode::ALLOCATION_MISMATCH);
        };
        if alloc.username != auth.username {
            return Err(ErrorCode::WRONG_CREDENTIALS);
        }
        match msg.method() {
            Method::Refresh => self.refresh(now, to, msg, &auth),
            Method::CreatePermission => self.create_permission(now, to, msg, &auth),
            Method::ChannelBind => self.channel_bind(now, to, msg, &auth),
            Method::Connect => self.connect(now, to, msg, &auth),
            // Other methods were answered before authentication.
            _ => Ok(()),
        }
    }

    /// True when `tuple` holds an allocation of the user named in `msg` (call only once the
    /// message's integrity verified).
    fn is_allocation_holder(&self, tuple: FiveTuple, msg: &Message<'_>) -> bool {
        let Some(Ok(Attribute::Username(username))) = msg.attribute(types::USERNAME) else {
            return false;
        };
        self.allocations
            .get(&tuple)
            .is_some_and(|a| a.username == username)
    }

    pub(super) fn lifetime(&self, msg: &Message<'_>) -> Result<Duration, ErrorCode> {
        match msg.attribute(types::LIFETIME) {
            None => Ok(self.config.default_lifetime),
            Some(Ok(Attribute::Lifetime(secs))) => {
                Ok(Duration::from_secs(u64::from(secs)).min(self.config.max_lifetime))
            }
            Some(_) => Err(ErrorCode::BAD_REQUEST),
        }
    }

    fn refresh(
        &mut self,
        now: Instant,
        to: &Answer,
        msg: &Message<'_>,
        auth: &Authenticated,
    ) -> Result<(), ErrorCode> {
        let lifetime = self.lifetime(msg)?;
        let tuple = to.five_tuple;
        let family = match msg.attribute(types::REQUESTED_ADDRESS_FAMILY) {
            None => None,
            Some(Ok(Attribute::RequestedAddressFamily(f))) => Some(f),
            Some(_) => {
                return Err(ErrorCode::BAD_REQUEST);
            }
        };
        if let Some(f) = family {
            let has = self
                .allocations
                .get(&tuple)
                .is_some_and(|a| a.relays().any(|r| AddressFamily::of(r.addr().ip()) == f));
            if !has {
                return Err(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
            }
        }
        // Refresh(0) naming one family of a dual-stack allocation drops only that family
        // (RFC 8656 §7.3).
        if lifetime.is_zero()
            && let Some(f) = family
            && let Some(dropped) = self.allocations.drop_family(&tuple, f == AddressFamily::V4)
        {
            self.ports.release(dropped.addr().port());
            self.commands
                .push_back(Command::FreeRelay { relay: dropped });
            self.reply_signed(now, to, None, &[Attribute::Lifetime(0)], &auth.key);
            return Ok(());
        }
        if lifetime.is_zero() {
            if let Some(alloc) = self.allocations.remove(&tuple) {
                tracing::info!(relay = %alloc.relay(), "allocation deleted by client");
                self.stats.allocations_deleted += 1;
                self.release_allocation_resources(&alloc);
            }
            self.reply_signed(now, to, None, &[Attribute::Lifetime(0)], &auth.key);
            return Ok(());
        }
        // While draining, no allocation outlives the drain deadline.
        let lifetime = match &self.drain {
            Some(d) => lifetime.min(d.deadline.saturating_duration_since(now)),
            None => lifetime,
        };
        if let Some(alloc) = self.allocations.get_mut(&tuple) {
            alloc.expires = now + lifetime;
        }
        let secs = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
        self.reply_signed(now, to, None, &[Attribute::Lifetime(secs)], &auth.key);
        Ok(())
    }

    /// Validates a peer address against the allocation's families and the peer policy.
    pub(super) fn check_peer(
        &mut self,
        tuple: &FiveTuple,
        peer: SocketAddr,
    ) -> Result<(), ErrorCode> {
        let reachable = self
            .allocations
            .get(tuple)
            .is_some_and(|a| a.relay_for(peer.ip()).is_some());
        if !reachable {
            return Err(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
        }
        if self.config.peer_policy.check(peer.ip()).is_err() {
            self.stats.peers_denied += 1;
            tracing::debug!(peer = %geoturn_shared::pii::Pii(peer), "peer refused by policy");
            return Err(ErrorCode::FORBIDDEN);
        }
        Ok(())
    }

    /// For requests that name a peer's port (ChannelBind, Connect): one of the relay's own
    /// addresses only at a relayed port in use (`server/own.rs`).
    pub(super) fn check_peer_port(&mut self, peer: SocketAddr) -> Result<(), ErrorCode> {
        if self.own.allows(peer) {
            return Ok(());
        }
        self.stats.peers_denied += 1;
        tracing::debug!(peer = %geoturn_shared::pii::Pii(peer), "peer refused: the relay's own address");
        Err(ErrorCode::FORBIDDEN)
    }

    fn create_permission(
        &mut self,
        now: Instant,
        to: &Answer,
        msg: &Message<'_>,
        auth: &Authenticated,
    ) -> Result<(), ErrorCode> {
        let mut peers = [IpAddr::from([0u8; 4]); MAX_PEERS_PER_REQUEST];
        let mut count = 0;
        for attr in msg.attributes_of(types::XOR_PEER_ADDRESS) {
            let (Ok(Attribute::XorPeerAddress(peer)), Some(slot)) = (attr, peers.get_mut(count))
            else {
                return Err(ErrorCode::BAD_REQUEST);
            };
            self.check_peer(&to.five_tuple, peer)?;
            *slot = peer.ip();
            count += 1;
        }
        let peers = peers.get(..count).unwrap_or_default();
        if peers.is_empty() {
            return Err(ErrorCode::BAD_REQUEST);
        }
        let Some(alloc) = self.allocations.get_mut(&to.five_tuple) else {
            return Err(ErrorCode::ALLOCATION_MISMATCH);
        };
        admit_peers(alloc, &mut self.stats, peers, 0, now)?;
        for ip in peers {
            alloc.permissions.install(*ip, now);
        }
        self.reply_signed(now, to, None, &[], &auth.key);
        Ok(())
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        to: &Answer,
        msg: &Message<'_>,
        auth: &Authenticated,
    ) -> Result<(), ErrorCode> {
        if self
            .allocations
            .get(&to.five_tuple)
            .is_some_and(Allocation::is_tcp)
        {
            // Channels carry datagrams; a TCP allocation has none (RFC 6062 §5).
            return Err(ErrorCode::BAD_REQUEST);
        }
        let Some(Ok(Attribute::ChannelNumber(number))) = msg.attribute(types::CHANNEL_NUMBER)
        else {
            return Err(ErrorCode::BAD_REQUEST);
        };
        if !(MIN_CHANNEL..=MAX_CHANNEL).contains(&number) {
            tracing::debug!(number, "ChannelBind outside 0x4000-0x7FFF refused");
            return Err(ErrorCode::BAD_REQUEST);
        }
        let Some(Ok(Attribute::XorPeerAddress(peer))) = msg.attribute(types::XOR_PEER_ADDRESS)
        else {
            return Err(ErrorCode::BAD_REQUEST);
        };
        self.check_peer(&to.five_tuple, peer)?;
        self.check_peer_port(peer)?;
        let Some(alloc) = self.allocations.get_mut(&to.five_tuple) else {
            return Err(ErrorCode::ALLOCATION_MISMATCH);
        };
        if !alloc.permissions.allows(peer.ip(), now) {
            // Checked before the binding so a refused new peer leaves no channel behind.
            admit_peers(alloc, &mut self.stats, &[peer.ip()], 0, now)?;
        }
        if alloc.channels.bind(number, peer, now).is_err() {
            tracing::debug!(number, "ChannelBind conflicts with an existing binding");
            return Err(ErrorCode::BAD_REQUEST);
        }
        // A channel binding installs or refreshes the permission for its peer (§11.2).
        alloc.permissions.install(peer.ip(), now);
        self.reply_signed(now, to, None, &[], &auth.key);
        Ok(())
    }
}
