//! The TURN server state machine ([RFC 8656](https://www.rfc-editor.org/rfc/rfc8656)), sans-IO.
//!
//! The driver calls [`Server::handle_client_input`] for every packet from a client and
//! [`Server::handle_peer_input`] for every datagram arriving on a relayed socket; both return the
//! data-path forward (if any) directly, without allocating. Control-plane work (responses, opening
//! and closing relayed sockets) is queued as [`Command`]s the driver drains with
//! [`Server::poll_command`]. Time only advances through the `now` arguments.

mod allocate;
mod config;
mod data_path;
mod offload;
mod own;
mod requests;
mod response;
mod rfc6062;
mod rtt;
mod stats;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use geoturn_shared::SecretSet;

pub use self::config::{NEW_PEER_BURST, ServerConfig};
pub use self::data_path::{PEER_HEADROOM, PEER_TAILROOM};
pub use self::offload::{MAX_OFFLOAD_RATE, OffloadLimits, OffloadedChannel};
pub use self::rtt::{RttSample, SAMPLE_WINDOW_MS};
pub use self::stats::{DropReason, Limit, ServerStats};

use crate::allocation::AllocationTable;
use crate::allocation::ports::{PortPool, Token};
use crate::allocation::quota::Quota;
use crate::allocation::revoked::Revocations;
use crate::auth::{Authenticated, Nonces};
use crate::stun::{AddressFamily, TransactionId};
use crate::transaction_cache::TransactionCache;
use crate::types::{ConnectionId, FiveTuple, PeerSocket, RelayAddr, Transport};

/// A unicast relay an anycast first contact is sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternate {
    /// The client transport it serves (the client keeps its transport when redirected).
    pub transport: Transport,
    /// Its address, for ALTERNATE-SERVER.
    pub addr: SocketAddr,
    /// For TLS: the name its certificate is valid for, sent as ALTERNATE-DOMAIN
    /// (RFC 8489 §14.16) so the client can check the new server's certificate.
    pub domain: Option<String>,
}

/// Work for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send `data` to the client of `five_tuple` over the listener it used.
    SendToClient {
        /// Whom to send to, and through which listener.
        five_tuple: FiveTuple,
        /// The encoded message.
        data: Vec<u8>,
    },
    /// Open a relayed socket on `relay`, then report with [`Server::handle_relay_bound`].
    BindRelay {
        /// Local address to bind.
        relay: RelayAddr,
        /// Set the DF bit on datagrams sent from it (the client sent DONT-FRAGMENT).
        dont_fragment: bool,
        /// A TCP listening socket (RFC 6062) instead of a UDP socket; peers that connect are
        /// reported with [`Server::handle_peer_tcp_accepted`].
        tcp: bool,
    },
    /// Open a TCP connection from `relay` to `peer` (RFC 6062 Connect), then report with
    /// [`Server::handle_peer_connect_result`].
    ConnectPeer {
        /// CONNECTION-ID.
        id: ConnectionId,
        /// Source address (the relayed address).
        relay: RelayAddr,
        /// Destination.
        peer: PeerSocket,
    },
    /// After the queued ConnectionBind success response, turn the data connection of
    /// `five_tuple` into a raw pipe to peer connection `id`, whose socket the driver takes
    /// from [`crate::allocation::tcp::TcpConnections::take_socket`].
    SpliceData {
        /// The client's data connection.
        five_tuple: FiveTuple,
        /// CONNECTION-ID.
        id: ConnectionId,
    },
    /// Close the relayed socket on `relay`.
    FreeRelay {
        /// Local address to close.
        relay: RelayAddr,
    },
    /// The driver's fast path may relay this channel both ways until its deadline (install,
    /// or update the deadline or limits of an installed one). Only after
    /// [`Server::enable_offload`].
    OffloadChannel(OffloadedChannel),
    /// The fast path must stop relaying this channel: its binding, permission or allocation
    /// ended. Every offer is taken back this way.
    RemoveOffload(OffloadedChannel),
}

/// Data from a client to forward to a peer: where it lies in the client's packet (no copy),
/// as [`ToClient`] says where peer data lies in the driver's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToPeer {
    /// The relayed socket to send from.
    pub relay: RelayAddr,
    /// The peer to send to.
    pub peer: PeerSocket,
    /// The application data: `packet[range]` of the packet given to
    /// [`Server::handle_client_input`].
    pub range: Range<usize>,
}

/// Data from a peer framed for the client, in place in the driver's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToClient {
    /// The client, and the listener to send through.
    pub five_tuple: FiveTuple,
    /// The bytes of the buffer to send.
    pub range: Range<usize>,
}

/// An Allocate waiting for its relayed socket to be bound.
#[derive(Debug, Clone)]
struct PendingAllocation {
    five_tuple: FiveTuple,
    transaction_id: TransactionId,
    auth: Authenticated,
    lifetime: Duration,
    even_port: bool,
    /// EVEN-PORT with R: reserve the next port too.
    reserve_next: bool,
    /// The port named by a RESERVATION-TOKEN: bind exactly this one, no retries.
    reserved_port: Option<u16>,
    /// The token of the port reserved for a later Allocate, once picked.
    issued_token: Option<Token>,
    dont_fragment: bool,
    /// A TCP allocation (RFC 6062).
    tcp: bool,
    /// The request carried FINGERPRINT, so the response does too.
    fingerprint: bool,
    /// ADDITIONAL-ADDRESS-FAMILY asked for IPv6 that this relay cannot give.
    refused_additional: Option<AddressFamily>,
    /// ADDITIONAL-ADDRESS-FAMILY this relay will give: a second socket is bound after the first.
    additional: Option<AddressFamily>,
    /// While binding the additional socket: the first relayed address, already bound.
    first: Option<RelayAddr>,
    attempts: u8,
}

/// How many relayed ports an Allocate tries before answering 508.
const MAX_BIND_ATTEMPTS: u8 = 8;
/// How often expired allocations are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The TURN server state machine for one shard.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    secrets: SecretSet,
    nonces: Nonces,
    quota: Arc<Quota>,
    allocations: AllocationTable,
    pending: HashMap<RelayAddr, PendingAllocation>,
    ports: Arc<PortPool>,
    tcp: Arc<crate::allocation::tcp::TcpConnections>,
    /// The relay's own addresses, peers only at its relayed ports in use.
    own: own::OwnAddresses,
    /// Connect requests waiting for the driver to reach the peer, by CONNECTION-ID.
    connecting: HashMap<ConnectionId, (response::Answer, crate::auth::IntegrityKey)>,
    transactions: TransactionCache,
    commands: VecDeque<Command>,
    clock: WallClock,
    next_sweep: Option<Instant>,
    drain: Option<Drain>,
    /// Where Allocates on anycast listeners are sent, best first.
    first_contact: Vec<Alternate>,
    /// Users whose requests are refused, shared by every shard.
    revoked: Arc<Revocations>,
    /// The revocations' generation when this shard last closed revoked users' allocations.
    revoked_seen: u64,
    limiter: crate::rate_limit::SourceLimiter,
    stats: ServerStats,
    rtt: rtt::RttSampler,
    /// Channels offered to the driver's fast path.
    offload: offload::OffloadTable,
}

/// Drain settings: no new allocations; existing ones live at most until `deadline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    /// When the relay will exit regardless; Refresh lifetimes are capped to it.
    pub deadline: Instant,
    /// Live sibling relays (same region first) to send new Allocates to with 300 Try
    /// Alternate; empty means 403.
    pub alternates: Vec<std::net::SocketAddr>,
}

/// What the shards (worker threads) of one relay share, and why: a user's quota and the
/// relay's allocation cap count across every shard; a relayed port must be unique on the host;
/// an RFC 6062 CONNECTION-ID arrives on a new TCP connection that may land on any shard; a
/// revoked user may come back through any shard.
#[derive(Debug, Clone)]
pub struct SharedTables {
    /// Allocations per user and in all.
    pub quota: Arc<Quota>,
    /// Relayed ports and EVEN-PORT reservations.
    pub ports: Arc<PortPool>,
    /// Every RFC 6062 peer connection, and the socket or splice that carries it.
    pub tcp: Arc<crate::allocation::tcp::TcpConnections>,
    /// Revoked users: refused by every shard, whichever one heard of the revocation.
    pub revoked: Arc<Revocations>,
}

/// The wall-clock time (Unix milliseconds) at a monotonic instant: what credential and nonce
/// expiry are checked against, and nonces' issue times (round-trip samples) are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    /// The monotonic instant.
    pub at: Instant,
    /// Unix milliseconds at `at`.
    pub unix_ms: u64,
}

impl Server {
    /// A server with `config`, accepting credentials from `secrets`, sharing `shared` with its
    /// sibling shards. There is no server without a wall clock: one that assumed unix time 0
    /// would take every expired credential as valid.
    pub fn new(
        config: ServerConfig,
        secrets: SecretSet,
        shared: SharedTables,
        clock: WallClock,
    ) -> Self {
        let SharedTables {
            quota,
            ports,
            tcp,
            revoked,
        } = shared;
        let nonces = Nonces::new(
            config.nonce_key,
            config.nonce_lifetime.as_secs(),
            config.nonce_tag,
        );
        let transactions = TransactionCache::new(config.transaction_cache_size);
        let limiter =
            crate::rate_limit::SourceLimiter::new(config.unauth_rate, config.unauth_burst);
        let own_ips = if config.guard_own_addresses {
            let c = &config;
            let fixed = [
                c.relay_ip_v4,
                c.relay_ip_v6,
                c.external_ip_v4,
                c.external_ip_v6,
            ];
            let anycast = c.anycast.iter().map(SocketAddr::ip);
            fixed
                .into_iter()
                .flatten()
                .chain(anycast)
                .chain(c.own_addresses.iter().copied())
                .collect()
        } else {
            Vec::new()
        };
        let own = own::OwnAddresses::new(own_ips, ports.clone());
        Self {
            own,
            config,
            secrets,
            nonces,
            quota,
            allocations: AllocationTable::default(),
            pending: HashMap::new(),
            ports,
            tcp,
            connecting: HashMap::new(),
            transactions,
            commands: VecDeque::new(),
            clock,
            next_sweep: None,
            drain: None,
            first_contact: Vec::new(),
            revoked_seen: revoked.generation(),
            revoked,
            limiter,
            stats: ServerStats::default(),
            rtt: rtt::RttSampler::default(),
            offload: offload::OffloadTable::default(),
        }
    }

    /// Tells the server the wall-clock time (Unix milliseconds) again (the wall clock may
    /// step, the monotonic one does not); used for credential and nonce expiry. Call about once
    /// a second.
    pub fn set_unix_time(&mut self, now: Instant, unix_ms: u64) {
        self.clock = WallClock { at: now, unix_ms };
    }

    /// Unix milliseconds at `now`.
    fn unix_now_ms(&self, now: Instant) -> u64 {
        let WallClock { at, unix_ms } = self.clock;
        let since = now.saturating_duration_since(at).as_millis();
        unix_ms.saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    /// The clients' round-trip samples taken since the last call (see [`RttSample`]); the
    /// driver aggregates them by client prefix. At most [`rtt::MAX_PENDING`] wait; call at
    /// least every heartbeat.
    pub fn take_rtt_samples(&mut self) -> Vec<RttSample> {
        self.rtt.take()
    }

    /// Round-trip samples dropped because they were not taken in time.
    pub fn rtt_samples_dropped(&self) -> u64 {
        self.rtt.dropped
    }

    /// Replaces the secret set (rotation without restart).
    pub fn set_secrets(&mut self, secrets: SecretSet) {
        self.secrets = secrets;
    }

    /// Starts draining (no new allocations, existing ones keep working until they end or the
    /// deadline), updates the alternates, or with `None` returns to normal service.
    pub fn set_drain(&mut self, drain: Option<Drain>) {
        self.drain = drain;
    }

    /// Sets the unicast relays that anycast first contacts are redirected to, best first;
    /// the first one matching the client's transport and address family is used.
    pub fn set_first_contact(&mut self, targets: Vec<Alternate>) {
        self.first_contact = targets;
    }

    /// The drain settings, if draining.
    pub fn drain(&self) -> Option<&Drain> {
        self.drain.as_ref()
    }

    /// Next command for the driver.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When [`Server::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// Expires allocations whose lifetime has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|t| now < t) {
            return;
        }
        self.next_sweep = Some(now + SWEEP_INTERVAL);
        self.tcp.expire(now);
        self.apply_revocations(now);
        self.expire_offload(now);
        for alloc in self.allocations.drain_expired(now) {
            tracing::info!(
                relay = %alloc.relay(),
                client = %geoturn_shared::pii::Pii(alloc.five_tuple().client),
                "allocation expired"
            );
            self.stats.allocations_expired += 1;
            self.release_allocation_resources(&alloc);
        }
    }

    /// Revokes `user` until `until` in the table every shard shares: this shard closes their
    /// allocations now, the others at their next sweep, and every shard refuses their requests
    /// (403) until then — long enough for every credential minted before the revocation to
    /// expire.
    pub fn revoke_user(&mut self, now: Instant, user: &str, until: Instant) {
        self.revoked.revoke(user, until, now);
        self.apply_revocations(now);
    }

    /// Closes the allocations of revoked users, if a revocation came (through any shard)
    /// since the last look. The sweep does this too; a driver that hears of a revocation
    /// calls it to act at once.
    pub fn apply_revocations(&mut self, now: Instant) {
        let generation = self.revoked.generation();
        if generation == self.revoked_seen {
            return;
        }
        self.revoked_seen = generation;
        let doomed: Vec<FiveTuple> = self
            .allocations
            .iter()
            .filter(|a| self.revoked.is_revoked(user_of(&a.username), now))
            .map(|a| a.five_tuple())
            .collect();
        for t in doomed {
            if let Some(alloc) = self.allocations.remove(&t) {
                tracing::info!(relay = %alloc.relay(), "allocation closed: user revoked");
                self.stats.allocations_deleted += 1;
                self.release_allocation_resources(&alloc);
            }
        }
    }

    fn is_revoked(&self, user: &str, now: Instant) -> bool {
        self.revoked.is_revoked(user, now)
    }

    /// A TCP/TLS client's connection closed: its allocation goes with it (RFC 8656 §5).
    pub fn handle_client_disconnected(&mut self, five_tuple: &FiveTuple) {
        if let Some(alloc) = self.allocations.remove(five_tuple) {
            tracing::info!(relay = %alloc.relay(), "allocation closed with its connection");
            self.stats.allocations_deleted += 1;
            self.release_allocation_resources(&alloc);
        }
    }

    fn release_allocation_resources(&mut self, alloc: &crate::allocation::Allocation) {
        self.remove_offload(&alloc.five_tuple());
        for relay in alloc.relays() {
            self.ports.release(relay.addr().port());
            self.commands.push_back(Command::FreeRelay { relay });
        }
        if alloc.is_tcp() {
            // Dropping the connections closes their sockets and splices (RFC 6062 §5.5).
            self.tcp.close_owned_by(&alloc.five_tuple());
        }
        let from = alloc.five_tuple().client.addr().ip();
        self.quota.release(user_of(&alloc.username), from);
    }

    /// Counts a packet the driver dropped before the server saw it (e.g. truncated).
    pub fn stats_mut_drop(&mut self, reason: DropReason) {
        self.stats.drop_packet(reason);
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// The allocation table (for status and tests).
    pub fn allocations(&self) -> &AllocationTable {
        &self.allocations
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }
}

fn user_of(username: &str) -> &str {
    geoturn_shared::RestUsername::parse(username)
        .map(|u| u.user)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
