//! Allocate ([RFC 8656 §7](https://www.rfc-editor.org/rfc/rfc8656#section-7)): checks,
//! relayed-port selection (EVEN-PORT, RESERVATION-TOKEN, dual stack), the driver's bind
//! reports, the success response; and 300 redirects for anycast first contact and drain.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::config::NEW_PEER_BURST;
use super::response::Answer;
use super::{Command, Limit, MAX_BIND_ATTEMPTS, PendingAllocation, Server};
use crate::allocation::quota::QuotaExceeded;
use crate::allocation::{Allocation, AllocationAddrs, PeerTransport};
use crate::auth::Authenticated;
use crate::rate_limit::TokenBucket;
use crate::stun::attribute::types;
use crate::stun::{AddressFamily, Attribute, ErrorCode, Message};
use crate::types::{RelayAddr, Transport};

/// Protocol number of UDP in REQUESTED-TRANSPORT.
const PROTO_UDP: u8 = 17;
/// Protocol number of TCP in REQUESTED-TRANSPORT (RFC 6062).
const PROTO_TCP: u8 = 6;

fn answer_for(pending: &PendingAllocation) -> Answer {
    Answer {
        five_tuple: pending.five_tuple,
        method: crate::stun::Method::Allocate,
        transaction_id: pending.transaction_id,
        fingerprint: pending.fingerprint,
    }
}

impl Server {
    /// An authenticated Allocate on an anycast listener: 300 Try Alternate, signed with
    /// MESSAGE-INTEGRITY (RFC 8489 §10: a client must ignore an unsigned one after
    /// authenticating, so it cannot be forged), to a unicast relay for the client's transport
    /// and address family; 403 when none is known. No state is created.
    fn redirect_first_contact(
        &mut self,
        now: Instant,
        to: &Answer,
        auth: &Authenticated,
    ) -> Result<(), ErrorCode> {
        let tuple = to.five_tuple;
        let target = self
            .first_contact
            .iter()
            .find(|a| a.transport == tuple.transport && a.addr.is_ipv4() == tuple.server.is_ipv4())
            .cloned();
        let Some(target) = target else {
            self.stats.first_contact_refused += 1;
            return Err(ErrorCode::FORBIDDEN);
        };
        self.stats.first_contact_redirects += 1;
        let mut attrs = vec![Attribute::AlternateServer(target.addr)];
        if let (Transport::Tls, Some(domain)) = (tuple.transport, target.domain.as_deref()) {
            attrs.push(Attribute::AlternateDomain(domain));
        }
        self.reply_signed(now, to, Some(ErrorCode::TRY_ALTERNATE), &attrs, &auth.key);
        Ok(())
    }

    pub(super) fn allocate(
        &mut self,
        now: Instant,
        to: &Answer,
        msg: &Message<'_>,
        auth: Authenticated,
    ) -> Result<(), ErrorCode> {
        let tuple = to.five_tuple;
        if self.allocations.get(&tuple).is_some() {
            // A retransmission was answered from the cache; anything else is a mismatch.
            return Err(ErrorCode::ALLOCATION_MISMATCH);
        }
        if self.pending.values().any(|p| p.five_tuple == tuple) {
            return Ok(()); // the first copy is being bound right now
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
                    return Err(ErrorCode::BAD_REQUEST);
                }
                true
            }
            Some(Ok(Attribute::RequestedTransport(_))) => {
                return Err(ErrorCode::UNSUPPORTED_TRANSPORT);
            }
            _ => return Err(ErrorCode::BAD_REQUEST),
        };
        let (even_port, reserve_next) = match msg.attribute(types::EVEN_PORT) {
            None => (false, false),
            Some(Ok(Attribute::EvenPort { reserve })) => (true, reserve),
            Some(_) => return Err(ErrorCode::BAD_REQUEST),
        };
        let token = match msg.attribute(types::RESERVATION_TOKEN) {
            None => None,
            Some(Ok(Attribute::ReservationToken(t))) => Some(t),
            Some(_) => return Err(ErrorCode::BAD_REQUEST),
        };
        // RFC 8656 §7.2: a token excludes EVEN-PORT and REQUESTED-ADDRESS-FAMILY.
        if token.is_some() && (even_port || msg.get(types::REQUESTED_ADDRESS_FAMILY).is_some()) {
            return Err(ErrorCode::BAD_REQUEST);
        }
        let requested = match msg.attribute(types::REQUESTED_ADDRESS_FAMILY) {
            None => None,
            Some(Ok(Attribute::RequestedAddressFamily(f))) => Some(f),
            Some(_) => return Err(ErrorCode::BAD_REQUEST),
        };
        let additional = match msg.attribute(types::ADDITIONAL_ADDRESS_FAMILY) {
            None => None,
            Some(Ok(Attribute::AdditionalAddressFamily(AddressFamily::V6))) => {
                Some(AddressFamily::V6)
            }
            Some(_) => return Err(ErrorCode::BAD_REQUEST),
        };
        if requested.is_some() && additional.is_some() {
            return Err(ErrorCode::BAD_REQUEST);
        }
        let family = requested.unwrap_or(AddressFamily::V4);
        let Some(relay_ip) = self.relay_ip(family) else {
            return Err(ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED);
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
                    );
                    Ok(())
                }
                None => Err(ErrorCode::FORBIDDEN),
            };
        }
        let lifetime = self.lifetime(msg)?;
        // RFC 8656 §7.2: never less than the default lifetime.
        let lifetime = lifetime.max(self.config.default_lifetime.min(self.config.max_lifetime));
        let from = tuple.client.addr().ip();
        match self.quota.acquire(auth.user_id(), from) {
            Ok(()) => {}
            Err(QuotaExceeded::User) => {
                self.stats.refuse(Limit::UserQuota);
                return Err(ErrorCode::ALLOCATION_QUOTA_REACHED);
            }
            Err(QuotaExceeded::Source) => {
                self.stats.refuse(Limit::SourceQuota);
                return Err(ErrorCode::ALLOCATION_QUOTA_REACHED);
            }
            Err(QuotaExceeded::Total) => {
                self.stats.refuse(Limit::Allocations);
                return Err(ErrorCode::INSUFFICIENT_CAPACITY);
            }
        }
        let reserved_port = match token {
            None => None,
            // Tied to the user id, not the full username: a credential renewed between the two
            // Allocates still takes the reservation.
            Some(t) => match self.ports.take_reservation(&t, auth.user_id(), now) {
                Some(port) => Some(port),
                None => {
                    self.quota.release(auth.user_id(), from);
                    return Err(ErrorCode::INSUFFICIENT_CAPACITY);
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
        Ok(())
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
            _ if second_stage => self
                .ports
                .pick(false, false, pending.auth.user_id(), now)
                .map(|p| p.port),
            Some(port) if pending.attempts == 1 => Some(port),
            Some(_) => None, // the reserved port could not be bound: no other port will do
            None => self
                .ports
                .pick(
                    pending.even_port,
                    pending.reserve_next,
                    pending.auth.user_id(),
                    now,
                )
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
            let from = pending.five_tuple.client.addr().ip();
            self.quota.release(pending.auth.user_id(), from);
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
            if pending.tcp {
                PeerTransport::Tcp
            } else {
                PeerTransport::Udp
            },
        );
        alloc.bandwidth = (self.config.allocation_bps > 0).then(|| {
            let bytes_per_sec = self.config.allocation_bps as f64 / 8.0;
            // One second of traffic, at least 16 KiB: a video keyframe must get through.
            TokenBucket::new(bytes_per_sec, bytes_per_sec.max(16_384.0), now)
        });
        alloc.packet_rate = (self.config.allocation_pps > 0).then(|| {
            let per_sec = self.config.allocation_pps as f64;
            // One second of packets, at least 256: a keyframe's burst must get through.
            TokenBucket::new(per_sec, per_sec.max(256.0), now)
        });
        alloc.new_peers = (self.config.new_peers_per_sec > 0).then(|| {
            let per_sec = f64::from(self.config.new_peers_per_sec);
            TokenBucket::new(per_sec, NEW_PEER_BURST.max(per_sec), now)
        });
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
}
