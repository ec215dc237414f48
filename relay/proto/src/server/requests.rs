//! Requests: Binding, Allocate, Refresh, CreatePermission, ChannelBind
//! ([RFC 8656 §7–§11](https://www.rfc-editor.org/rfc/rfc8656#section-7)).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::response::{Answer, Budget};
use super::{Command, MAX_BIND_ATTEMPTS, PendingAllocation, Server};
use crate::allocation::quota::QuotaExceeded;
use crate::allocation::{Allocation, AllocationAddrs};
use crate::auth::{AuthFailure, Authenticated, authenticate};
use crate::rate_limit::TokenBucket;
use crate::stun::attribute::types;
use crate::stun::channel_data::{MAX_CHANNEL, MIN_CHANNEL};
use crate::stun::{AddressFamily, Attribute, ErrorCode, Message, Method};
use crate::types::{FiveTuple, RelayAddr, Transport};

/// Protocol number of UDP in REQUESTED-TRANSPORT.
const PROTO_UDP: u8 = 17;
/// Protocol number of TCP in REQUESTED-TRANSPORT (RFC 6062).
const PROTO_TCP: u8 = 6;
/// Most XOR-PEER-ADDRESS attributes one CreatePermission may carry.
const MAX_PEERS_PER_REQUEST: usize = 16;

fn answer_for(pending: &PendingAllocation) -> Answer {
    Answer {
        five_tuple: pending.five_tuple,
        method: Method::Allocate,
        transaction_id: pending.transaction_id,
        fingerprint: pending.fingerprint,
    }
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
            self.unix_now(now),
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
        if self.is_revoked(auth.user_id(), now) {
            self.reply_error(now, &to, ErrorCode::FORBIDDEN, &auth.key);
            return;
        }
        if msg.method() == Method::Allocate {
            self.allocate(now, &to, msg, auth);
            return;
        }
        if msg.method() == Method::ConnectionBind {
            // Arrives on a fresh data connection, which has no allocation of its own.
            self.connection_bind(now, &to, msg, &auth);
            return;
        }
        // Every other request needs this 5-tuple's allocation, created by the same user.
        let Some(alloc) = self.allocations.get(&tuple) else {
            self.reply_error(now, &to, ErrorCode::ALLOCATION_MISMATCH, &auth.key);
            return;
        };
        if alloc.username != auth.username {
            self.reply_error(now, &to, ErrorCode::WRONG_CREDENTIALS, &auth.key);
            return;
        }
        match msg.method() {
            Method::Refresh => self.refresh(now, &to, msg, &auth),
            Method::CreatePermission => self.create_permission(now, &to, msg, &auth),
            Method::ChannelBind => self.channel_bind(now, &to, msg, &auth),
            Method::Connect => self.connect(now, &to, msg, auth),
            _ => {}
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

    fn lifetime(&self, msg: &Message<'_>) -> Result<Duration, ()> {
        match msg.attribute(types::LIFETIME) {
            None => Ok(self.config.default_lifetime),
            Some(Ok(Attribute::Lifetime(secs))) => {
                Ok(Duration::from_secs(u64::from(secs)).min(self.config.max_lifetime))
            }
            Some(_) => Err(()),
        }
    }

    /// An authenticated Allocate on an anycast listener: 300 Try Alternate, signed with
    /// MESSAGE-INTEGRITY (RFC 8489 §10: a client must ignore an unsigned one after
    /// authenticating, so it cannot be forged), to a unicast relay for the client's transport
    /// and address family; 403 when none is known. No state is created.
    fn redirect_first_contact(&mut self, now: Instant, to: &Answer, auth: &Authenticated) {
        let tuple = to.five_tuple;
        let target = self
            .first_contact
            .iter()
            .find(|a| a.transport == tuple.transport && a.addr.is_ipv4() == tuple.server.is_ipv4())
            .cloned();
        let Some(target) = target else {
            self.stats.first_contact_refused += 1;
            return self.reply_error(now, to, ErrorCode::FORBIDDEN, &auth.key);
        };
        self.stats.first_contact_redirects += 1;
        let mut attrs = vec![Attribute::AlternateServer(target.addr)];
        if let (Transport::Tls, Some(domain)) = (tuple.transport, target.domain.as_deref()) {
            attrs.push(Attribute::AlternateDomain(domain));
        }
        self.reply_signed(now, to, Some(ErrorCode::TRY_ALTERNATE), &attrs, &auth.key)
    }

    fn allocate(&mut self, now: Instant, to: &Answer, msg: &Message<'_>, auth: Authenticated) {
        let tuple = to.five_tuple;
        if self.allocations.get(&tuple).is_some() {
            // A retransmission was answered from the cache; anything else is a mismatch.
            return self.reply_error(now, to, ErrorCode::ALLOCATION_MISMATCH, &auth.key);
        }
        if self.pending.values().any(|p| p.five_tuple == tuple) {
            return; // the first copy is being bound right now
        }
        let tcp = match msg.attribute(types::REQUESTED_TRANSPORT) {
            Some(Ok(Attribute::RequestedTransport(PROTO_UDP))) => false,
            // RFC 6062 §5.1: TCP relaying only for clients on TCP or TLS, with none of the
            // UDP-only attributes.
            Some(Ok(Attribute::RequestedTransport(PROTO_TCP))) => {
                let udp_only = [
                    types::DONT_FRAGMENT,
                    types::EVEN_PORT,
                    types::RESERVATION_TOKEN,
                    types::ADDITIONAL_ADDRESS_FAMILY,
                ];
                if !tuple.transport.is_stream() || udp_only.iter().any(|t| msg.get(*t).is_some()) {
                    return self.reply_error(now, to, ErrorCode::BAD_REQUEST, &auth.key);
                }
                true
            }
            Some(Ok(Attribute::RequestedTransport(_))) => {
                return self.reply_error(now, to, ErrorCode::UNSUPPORTED_TRANSPORT, &auth.key);
            }
            _ => return self.reply_error(now, to, ErrorCode::BAD_REQUEST, &auth.key),
        };
        let (even_port, reserve_next) = match msg.attribute(types::EVEN_PORT) {
            None => (false, false),
            Some(Ok(Attribute::EvenPort { reserve })) => (true, reserve),
            Some(_) => return self.reply_error(now, to, ErrorCode::BAD_REQUEST, &auth.key),
        };
        let token = match msg.attribute(types::RESERVATION_TOKEN) {
            None => None,
            Some(Ok(Attribute::ReservationToken(t))) => Some(t),
            Some(_) => return self.reply_error(now, to, ErrorCode::BAD_REQUEST, &auth.key),
        };
        // RFC 8656 §7.2: a token excludes EVEN-PORT and REQUESTED-ADDRESS-FAMILY.
        if token.is_some() && (even_port || msg.get(types::REQUESTED_ADDRESS_FAMILY).is_some()) {
            return self.reply_error(now, to, ErrorCode::BAD_REQUEST, &auth.key);
        }
        let requested = match msg.attribute(types::REQUESTED_ADDRESS_FAMILY) {
            None => None,
            Some(Ok(Attribute::RequestedAddressFamily(f))) => Some(f),
            Some(_) => return self.reply_error(now, to, ErrorCode::BAD_REQUEST, &auth.key),
        };
        let additional = match msg.attribute(types::ADDITIONAL_ADDRESS_FAMILY) {
            None => None,
            Some(Ok(Attribute::AdditionalAddressFamily(AddressFamily::V6))) => {
                Some(AddressFamily::V6)
            }
            Some(_) => return self.reply_error(now, to, ErrorCode::BAD_REQUEST, &auth.key),
        };
        if requested.is_some() && additional.is_some() {
            return self.reply_error(now, to, ErrorCode::BAD_REQUEST, &auth.key);
        }
        let family = requested.unwrap_or(AddressFamily::V4);
        let Some(relay_ip) = self.relay_ip(family) else {
            return self.reply_error(now, to, ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED, &auth.key);
        };
        // Dual stack (RFC 8656 §7.2): with an IPv6 relay address configured, a second socket
        // is bound after the IPv4 one; without, the IPv6 part is refused with
        // ADDRESS-ERROR-CODE and the IPv4 allocation still succeeds.
        let (additional, refused_additional) = match additional {
            Some(f) if self.relay_ip(f).is_some() => (Some(f), None),
            other => (None, other),
        };
        if self.config.anycast.contains(&tuple.server) {
            return self.redirect_first_contact(now, to, &auth);
        }
        if let Some(drain) = &self.drain {
            // Send the client to a sibling of the same address family (RFC 8656 §7.2 allows
            // 300 for Allocate); with none known, refuse.
            let same_family = |a: &&SocketAddr| a.is_ipv4() == tuple.server.is_ipv4();
            return match drain.alternates.iter().find(same_family).copied() {
                Some(alt) => {
                    self.stats.redirects += 1;
                    self.reply_signed(
                        now,
                        to,
                        Some(ErrorCode::TRY_ALTERNATE),
                        &[Attribute::AlternateServer(alt)],
                        &auth.key,
                    )
                }
                None => self.reply_error(now, to, ErrorCode::FORBIDDEN, &auth.key),
            };
        }
        let Ok(lifetime) = self.lifetime(msg) else {
            return self.reply_error(now, to, ErrorCode::BAD_REQUEST, &auth.key);
        };
        // RFC 8656 §7.2: never less than the default lifetime.
        let lifetime = lifetime.max(self.config.default_lifetime.min(self.config.max_lifetime));
        match self.quota.acquire(auth.user_id()) {
            Ok(()) => {}
            Err(QuotaExceeded::User) => {
                return self.reply_error(now, to, ErrorCode::ALLOCATION_QUOTA_REACHED, &auth.key);
            }
            Err(QuotaExceeded::Total) => {
                return self.reply_error(now, to, ErrorCode::INSUFFICIENT_CAPACITY, &auth.key);
            }
        }
        let reserved_port = match token {
            None => None,
            Some(t) => match self.ports.take_reservation(&t, now) {
                Some(port) => Some(port),
                None => {
                    self.quota.release(auth.user_id());
                    return self.reply_error(now, to, ErrorCode::INSUFFICIENT_CAPACITY, &auth.key);
                }
            },
        };
        let pending = PendingAllocation {
            five_tuple: tuple,
            transaction_id: to.transaction_id,
            auth,
            lifetime,
            even_port,
            reserve_next,
            reserved_port,
            issued_token: None,
            dont_fragment: msg.get(types::DONT_FRAGMENT).is_some(),
            tcp,
            fingerprint: to.fingerprint,
            refused_additional,
            additional,
            first: None,
            attempts: 0,
        };
        self.try_bind(now, pending, relay_ip);
    }

    fn relay_ip(&self, family: AddressFamily) -> Option<IpAddr> {
        match family {
            AddressFamily::V4 => self.config.relay_ip_v4,
            AddressFamily::V6 => self.config.relay_ip_v6,
        }
    }

    fn try_bind(&mut self, now: Instant, mut pending: PendingAllocation, relay_ip: IpAddr) {
        pending.attempts += 1;
        let second_stage = pending.first.is_some();
        let port = match pending.reserved_port {
            _ if pending.attempts > MAX_BIND_ATTEMPTS => None,
            // The additional family's socket takes any free port.
            _ if second_stage => self.ports.pick(false, false, now).map(|p| p.port),
            Some(port) if pending.attempts == 1 => Some(port),
            Some(_) => None, // the reserved port could not be bound: no other port will do
            None => self
                .ports
                .pick(pending.even_port, pending.reserve_next, now)
                .map(|picked| {
                    pending.issued_token = picked.reservation;
                    picked.port
                }),
        };
        let Some(port) = port else {
            if let (Some(first), Some(family)) = (pending.first, pending.additional) {
                // The first family is bound: succeed with it and say why the other failed.
                return self.finish_allocation(
                    now,
                    pending,
                    first,
                    None,
                    Some((family, ErrorCode::INSUFFICIENT_CAPACITY)),
                );
            }
            self.quota.release(pending.auth.user_id());
            let to = answer_for(&pending);
            return self.reply_error(
                now,
                &to,
                ErrorCode::INSUFFICIENT_CAPACITY,
                &pending.auth.key,
            );
        };
        let relay = RelayAddr::new(SocketAddr::new(relay_ip, port));
        self.commands.push_back(Command::BindRelay {
            relay,
            dont_fragment: pending.dont_fragment,
            tcp: pending.tcp,
        });
        self.pending.insert(relay, pending);
    }

    /// The driver reports whether the relayed socket for `relay` could be bound.
    pub fn handle_relay_bound(&mut self, now: Instant, relay: RelayAddr, bound: bool) {
        let Some(mut pending) = self.pending.remove(&relay) else {
            // Nobody waits for this socket any more: close it again.
            if bound {
                self.commands.push_back(Command::FreeRelay { relay });
            }
            return;
        };
        if !bound {
            // Someone else holds the port (the ephemeral range overlaps ours); pick another.
            self.ports.release(relay.addr().port());
            if pending.first.is_none()
                && let Some(token) = pending.issued_token.take()
            {
                self.ports.cancel_reservation(&token);
            }
            return self.try_bind(now, pending, relay.addr().ip());
        }
        match (pending.first, pending.additional) {
            // First socket bound, a second family wanted: bind it next.
            (None, Some(family)) => {
                let Some(ip) = self.relay_ip(family) else {
                    return self.finish_allocation(now, pending, relay, None, None);
                };
                pending.first = Some(relay);
                pending.attempts = 0;
                self.try_bind(now, pending, ip)
            }
            (Some(first), _) => self.finish_allocation(now, pending, first, Some(relay), None),
            (None, None) => self.finish_allocation(now, pending, relay, None, None),
        }
    }

    fn advertised(&self, relay: RelayAddr) -> SocketAddr {
        let external = if relay.addr().is_ipv4() {
            self.config.external_ip_v4
        } else {
            self.config.external_ip_v6
        };
        SocketAddr::new(external.unwrap_or(relay.addr().ip()), relay.addr().port())
    }

    fn finish_allocation(
        &mut self,
        now: Instant,
        pending: PendingAllocation,
        relay: RelayAddr,
        second: Option<RelayAddr>,
        second_error: Option<(AddressFamily, ErrorCode)>,
    ) {
        let to = answer_for(&pending);
        let advertised = self.advertised(relay);
        let second = second.map(|r| (r, self.advertised(r)));
        let mut alloc = Allocation::new(
            AllocationAddrs {
                five_tuple: pending.five_tuple,
                relay,
                advertised,
                second,
            },
            pending.auth.username.clone(),
            pending.auth.key.clone(),
            now,
            pending.lifetime,
        );
        alloc.bandwidth = (self.config.allocation_bps > 0).then(|| {
            let bytes_per_sec = self.config.allocation_bps as f64 / 8.0;
            // One second of traffic, at least 16 KiB: a video keyframe must get through.
            TokenBucket::new(bytes_per_sec, bytes_per_sec.max(16_384.0), now)
        });
        alloc.tcp = pending.tcp;
        tracing::info!(
            relay = %relay,
            second = ?second.map(|(r, _)| r.addr()),
            client = %geoturn_shared::pii::Pii(pending.five_tuple.client),
            transport = pending.five_tuple.transport.as_str(),
            lifetime_s = pending.lifetime.as_secs(),
            "allocation created"
        );
        self.allocations.insert(alloc);
        self.stats.allocations_created += 1;
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + super::SWEEP_INTERVAL);
        }
        let lifetime = u32::try_from(pending.lifetime.as_secs()).unwrap_or(u32::MAX);
        let mut attrs = vec![Attribute::XorRelayedAddress(advertised)];
        if let Some((_, adv)) = second {
            attrs.push(Attribute::XorRelayedAddress(adv));
        }
        attrs.push(Attribute::Lifetime(lifetime));
        attrs.push(Attribute::XorMappedAddress(
            pending.five_tuple.client.addr(),
        ));
        if let Some(token) = pending.issued_token {
            attrs.push(Attribute::ReservationToken(token));
        }
        let refused = pending
            .refused_additional
            .map(|f| (f, ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED))
            .or(second_error);
        if let Some((family, code)) = refused {
            attrs.push(Attribute::AddressErrorCode {
                family,
                code: code.0,
                reason: code.reason(),
            });
        }
        self.reply_signed(now, &to, None, &attrs, &pending.auth.key);
    }

    fn refresh(&mut self, now: Instant, to: &Answer, msg: &Message<'_>, auth: &Authenticated) {
        let Ok(lifetime) = self.lifetime(msg) else {
            return self.reply_error(now, to, ErrorCode::BAD_REQUEST, &auth.key);
        };
        let tuple = to.five_tuple;
        let family = match msg.attribute(types::REQUESTED_ADDRESS_FAMILY) {
            None => None,
            Some(Ok(Attribute::RequestedAddressFamily(f))) => Some(f),
            Some(_) => {
                return self.reply_error(now, to, ErrorCode::BAD_REQUEST, &auth.key);
            }
        };
        if let Some(f) = family {
            let has = self
                .allocations
                .get(&tuple)
                .is_some_and(|a| a.relays().any(|r| AddressFamily::of(r.addr().ip()) == f));
            if !has {
                return self.reply_error(
                    now,
                    to,
                    ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
                    &auth.key,
                );
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
            return self.reply_signed(now, to, None, &[Attribute::Lifetime(0)], &auth.key);
        }
        if lifetime.is_zero() {
            if let Some(alloc) = self.allocations.remove(&tuple) {
                tracing::info!(relay = %alloc.relay(), "allocation deleted by client");
                self.stats.allocations_deleted += 1;
                self.release_allocation_resources(&alloc);
            }
            return self.reply_signed(now, to, None, &[Attribute::Lifetime(0)], &auth.key);
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
    }

    /// Validates a peer address against the allocation's families and the peer policy.
    fn check_peer(&mut self, tuple: &FiveTuple, peer: SocketAddr) -> Result<(), ErrorCode> {
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

    fn create_permission(
        &mut self,
        now: Instant,
        to: &Answer,
        msg: &Message<'_>,
        auth: &Authenticated,
    ) {
        let mut peers = [IpAddr::from([0u8; 4]); MAX_PEERS_PER_REQUEST];
        let mut count = 0;
        for attr in msg.attributes_of(types::XOR_PEER_ADDRESS) {
            let (Ok(Attribute::XorPeerAddress(peer)), Some(slot)) = (attr, peers.get_mut(count))
            else {
                return self.reply_error(now, to, ErrorCode::BAD_REQUEST, &auth.key);
            };
            if let Err(code) = self.check_peer(&to.five_tuple, peer) {
                return self.reply_error(now, to, code, &auth.key);
            }
            *slot = peer.ip();
            count += 1;
        }
        let peers = peers.get(..count).unwrap_or_default();
        if peers.is_empty() {
            return self.reply_error(now, to, ErrorCode::BAD_REQUEST, &auth.key);
        }
        let Some(alloc) = self.allocations.get_mut(&to.five_tuple) else {
            return;
        };
        if alloc.permissions.can_install(peers.iter(), now).is_err() {
            return self.reply_error(now, to, ErrorCode::INSUFFICIENT_CAPACITY, &auth.key);
        }
        for ip in peers {
            alloc.permissions.install(*ip, now);
        }
        self.reply_signed(now, to, None, &[], &auth.key);
    }

    fn channel_bind(&mut self, now: Instant, to: &Answer, msg: &Message<'_>, auth: &Authenticated) {
        if self.allocations.get(&to.five_tuple).is_some_and(|a| a.tcp) {
            // Channels carry datagrams; a TCP allocation has none (RFC 6062 §5).
            return self.reply_error(now, to, ErrorCode::BAD_REQUEST, &auth.key);
        }
        let Some(Ok(Attribute::ChannelNumber(number))) = msg.attribute(types::CHANNEL_NUMBER)
        else {
            return self.reply_error(now, to, ErrorCode::BAD_REQUEST, &auth.key);
        };
        if !(MIN_CHANNEL..=MAX_CHANNEL).contains(&number) {
            tracing::debug!(number, "ChannelBind outside 0x4000-0x7FFF refused");
            return self.reply_error(now, to, ErrorCode::BAD_REQUEST, &auth.key);
        }
        let Some(Ok(Attribute::XorPeerAddress(peer))) = msg.attribute(types::XOR_PEER_ADDRESS)
        else {
            return self.reply_error(now, to, ErrorCode::BAD_REQUEST, &auth.key);
        };
        if let Err(code) = self.check_peer(&to.five_tuple, peer) {
            return self.reply_error(now, to, code, &auth.key);
        }
        let Some(alloc) = self.allocations.get_mut(&to.five_tuple) else {
            return;
        };
        if alloc
            .permissions
            .can_install(std::iter::once(&peer.ip()), now)
            .is_err()
        {
            return self.reply_error(now, to, ErrorCode::INSUFFICIENT_CAPACITY, &auth.key);
        }
        if alloc.channels.bind(number, peer, now).is_err() {
            tracing::debug!(number, "ChannelBind conflicts with an existing binding");
            return self.reply_error(now, to, ErrorCode::BAD_REQUEST, &auth.key);
        }
        // A channel binding installs or refreshes the permission for its peer (§11.2).
        alloc.permissions.install(peer.ip(), now);
        self.reply_signed(now, to, None, &[], &auth.key);
    }
}

/// RFC 6062: Connect, ConnectionBind, and the driver's reports about peer TCP connections.
impl Server {
    fn connect(&mut self, now: Instant, to: &Answer, msg: &Message<'_>, auth: Authenticated) {
        let tuple = to.five_tuple;
        if !self.allocations.get(&tuple).is_some_and(|a| a.tcp) {
            return self.reply_error(now, to, ErrorCode::BAD_REQUEST, &auth.key);
        }
        let Some(Ok(Attribute::XorPeerAddress(peer))) = msg.attribute(types::XOR_PEER_ADDRESS)
        else {
            return self.reply_error(now, to, ErrorCode::BAD_REQUEST, &auth.key);
        };
        if let Err(code) = self.check_peer(&tuple, peer) {
            return self.reply_error(now, to, code, &auth.key);
        }
        let Some(alloc) = self.allocations.get_mut(&tuple) else {
            return;
        };
        // One connection per peer address and allocation (RFC 6062 §5.2: 446).
        let duplicate = alloc
            .tcp_connections
            .iter()
            .any(|id| self.tcp.peer_of(*id) == Some(peer));
        if duplicate {
            return self.reply_error(now, to, ErrorCode::CONNECTION_ALREADY_EXISTS, &auth.key);
        }
        let Some(relay) = alloc.relay_for(peer.ip()) else {
            return;
        };
        let pending = crate::allocation::tcp::PendingConnection {
            owner: tuple,
            username: auth.username.clone(),
            peer,
            ready: false,
            expires: now + crate::allocation::tcp::BIND_TIMEOUT,
        };
        let Some(id) = self.tcp.insert(pending) else {
            return self.reply_error(now, to, ErrorCode::INSUFFICIENT_CAPACITY, &auth.key);
        };
        // Data will flow to this peer: the permission comes with the connection.
        alloc.permissions.install(peer.ip(), now);
        alloc.tcp_connections.push(id);
        self.connecting.insert(id, (*to, auth.key));
        self.commands.push_back(Command::ConnectPeer {
            id,
            relay,
            peer: crate::types::PeerSocket::new(peer),
        });
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
                alloc.tcp_connections.retain(|c| *c != id);
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
        if !alloc.tcp || !alloc.permissions.allows(peer.addr().ip(), now) {
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
        alloc.tcp_connections.push(id);
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

    /// Indications need a transaction id; one derived from the connection id is unique enough
    /// and reveals nothing new (the CONNECTION-ID travels in the same message).
    /// The driver could not keep peer connection `id` (it closed before it was stored).
    pub fn handle_peer_tcp_closed(&mut self, id: u32) {
        self.tcp.remove(id);
    }

    fn attempt_tid(&self, id: u32) -> [u8; 12] {
        let [a, b, c, d] = id.to_be_bytes();
        [b'g', b'e', b'o', b't', b'u', b'r', b'n', b'!', a, b, c, d]
    }

    fn connection_bind(
        &mut self,
        now: Instant,
        to: &Answer,
        msg: &Message<'_>,
        auth: &Authenticated,
    ) {
        let Some(Ok(Attribute::ConnectionId(id))) = msg.attribute(types::CONNECTION_ID) else {
            return self.reply_error(now, to, ErrorCode::BAD_REQUEST, &auth.key);
        };
        // A data connection is a stream of its own with no allocation (RFC 6062 §5.3).
        if !to.five_tuple.transport.is_stream() || self.allocations.get(&to.five_tuple).is_some() {
            return self.reply_error(now, to, ErrorCode::BAD_REQUEST, &auth.key);
        }
        match self.tcp.take_for_bind(id, &auth.username, now) {
            Ok(_) => {
                self.reply_signed(now, to, None, &[], &auth.key);
                self.commands.push_back(Command::SpliceData {
                    five_tuple: to.five_tuple,
                    id,
                });
            }
            Err(crate::allocation::tcp::BindError::WrongUser) => {
                self.reply_error(now, to, ErrorCode::WRONG_CREDENTIALS, &auth.key)
            }
            Err(crate::allocation::tcp::BindError::Unknown) => {
                self.reply_error(now, to, ErrorCode::BAD_REQUEST, &auth.key)
            }
        }
    }
}
