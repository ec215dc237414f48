//! Every RFC 6062 peer connection of the relay, in one table
//! ([RFC 6062](https://www.rfc-editor.org/rfc/rfc6062)): from Connect or a peer's connection,
//! through ConnectionBind, to the splice that carries its bytes. The table owns each
//! connection's driver resource (a [`PeerHandle`]: the socket, later the task splicing it), so
//! removing an entry closes the connection; nothing else has to be kept in step.
//!
//! Shared by every shard: the data connection that binds a peer connection may land on any
//! worker (the kernel spreads new TCP connections over `SO_REUSEPORT` sockets). It is touched
//! per connection, never per byte.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::types::{ConnectionId, FiveTuple, source_of};

/// A peer connection not bound by ConnectionBind within this is closed (RFC 6062 §5.3, §5.4).
pub const BIND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the driver tries to connect for a Connect (RFC 6062 §5.2 suggests at least 30 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A Connect whose outcome the driver has not reported by then is forgotten (its socket, should
/// it still connect, is closed on arrival): the driver's own timeout plus slack.
const CONNECT_FORGET: Duration = Duration::from_secs(35);
/// Most connections connecting or waiting for ConnectionBind at once, relay-wide.
pub const MAX_UNBOUND: usize = 10_000;
/// Most peer connections one allocation holds, in any state.
pub const MAX_PER_ALLOCATION: usize = 64;
/// Most Connects in flight per allocation. A Connect to a blackholed address holds its place
/// for [`CONNECT_TIMEOUT`]; a client reaching real peers rarely has more than one pending.
pub const MAX_CONNECTING_PER_ALLOCATION: usize = 8;
/// Most Connects in flight per client address (IPv4 address or IPv6 /64), whatever the
/// allocations and users: one source cannot fill the relay's connecting table.
pub const MAX_CONNECTING_PER_SOURCE: usize = 64;
/// Most Connects in flight on the relay (each is a socket in SYN_SENT).
pub const MAX_CONNECTING: usize = 2_000;

/// The driver's resource for one peer connection: its socket while it waits, the task splicing
/// it once bound. The core never looks inside; dropping it closes the connection.
pub struct PeerHandle(Box<dyn Any + Send>);

impl PeerHandle {
    /// Wraps the driver's resource.
    pub fn new<T: Any + Send>(resource: T) -> Self {
        Self(Box::new(resource))
    }

    /// The resource back, when it is a `T`.
    pub fn downcast<T: Any>(self) -> Option<T> {
        self.0.downcast::<T>().ok().map(|b| *b)
    }
}

impl fmt::Debug for PeerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerHandle")
    }
}

/// Where a connection is in its life.
#[derive(Debug)]
enum Phase {
    /// The driver is connecting for a Connect; no handle yet.
    Connecting,
    /// Connected, waiting for ConnectionBind.
    Waiting(PeerHandle),
    /// Bound to a data connection: the driver takes the socket, then hands back the splice.
    Bound(Option<PeerHandle>),
}

#[derive(Debug)]
struct Entry {
    owner: FiveTuple,
    /// Who created the allocation; ConnectionBind must come from the same user.
    username: String,
    peer: SocketAddr,
    phase: Phase,
    /// When an unbound connection is dropped; unused once bound (it then lives as long as its
    /// allocation, RFC 6062 §5.5).
    expires: Instant,
}

impl Entry {
    fn is_unbound(&self) -> bool {
        !matches!(self.phase, Phase::Bound(_))
    }

    fn is_connecting(&self) -> bool {
        matches!(self.phase, Phase::Connecting)
    }
}

/// Why a Connect or an incoming peer connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddError {
    /// The allocation already has a connection to this peer address (RFC 6062 §5.2: 446).
    Duplicate,
    /// The relay or the allocation holds as many connections as it may (508).
    Full,
}

/// Why a ConnectionBind fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindError {
    /// No such connection id (or it expired, or is still connecting, or is bound): 400.
    Unknown,
    /// Another user's connection: 441.
    WrongUser,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<ConnectionId, Entry>,
    /// The connections of each allocation, so it can close them all and check duplicates.
    by_owner: HashMap<FiveTuple, Vec<ConnectionId>>,
    /// Entries connecting or waiting (the ones a client can pile up without binding).
    unbound: usize,
    /// Entries connecting, on the relay and per client source.
    connecting: usize,
    connecting_by_source: HashMap<IpAddr, usize>,
}

impl Inner {
    fn add(&mut self, id: ConnectionId, entry: Entry) {
        self.unbound += usize::from(entry.is_unbound());
        if entry.is_connecting() {
            self.connecting += 1;
            *self
                .connecting_by_source
                .entry(source_of(entry.owner.client.addr().ip()))
                .or_default() += 1;
        }
        self.by_owner.entry(entry.owner).or_default().push(id);
        self.entries.insert(id, entry);
    }

    fn remove(&mut self, id: ConnectionId) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        self.unbound -= usize::from(entry.is_unbound());
        if entry.is_connecting() {
            self.done_connecting(&entry.owner);
        }
        if let Some(ids) = self.by_owner.get_mut(&entry.owner) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_owner.remove(&entry.owner);
            }
        }
        Some(entry)
    }

    /// A Connect of `owner` connected or ended.
    fn done_connecting(&mut self, owner: &FiveTuple) {
        self.connecting -= 1;
        let source = source_of(owner.client.addr().ip());
        if let Some(n) = self.connecting_by_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.connecting_by_source.remove(&source);
            }
        }
    }

    fn room_for(&self, owner: &FiveTuple) -> bool {
        let owned = self.by_owner.get(owner).map_or(0, Vec::len);
        self.unbound < MAX_UNBOUND && owned < MAX_PER_ALLOCATION
    }

    /// Room for one more Connect of `owner`, besides [`Inner::room_for`].
    fn room_to_connect(&self, owner: &FiveTuple) -> bool {
        let of_owner = self.by_owner.get(owner).map_or(0, |ids| {
            ids.iter()
                .filter(|id| self.entries.get(id).is_some_and(Entry::is_connecting))
                .count()
        });
        let source = source_of(owner.client.addr().ip());
        let of_source = self.connecting_by_source.get(&source).copied().unwrap_or(0);
        self.connecting < MAX_CONNECTING
            && of_owner < MAX_CONNECTING_PER_ALLOCATION
            && of_source < MAX_CONNECTING_PER_SOURCE
    }
}

/// Every peer connection by CONNECTION-ID.
pub struct TcpConnections {
    next: AtomicU32,
    inner: Mutex<Inner>,
}

impl fmt::Debug for TcpConnections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpConnections")
            .field("len", &self.len())
            .finish()
    }
}

impl TcpConnections {
    /// An empty table; ids start from `seed` so they are not guessable across restarts.
    pub fn new(seed: u32) -> Self {
        Self {
            next: AtomicU32::new(seed | 1),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh_id(&self, inner: &Inner) -> ConnectionId {
        loop {
            // A Weyl sequence over u32 visits every value once before repeating; skip 0 and
            // ids still in use (the table holds far fewer than 2^32, so this ends).
            let id = self.next.fetch_add(0x9E37_79B9, Ordering::Relaxed);
            if id != 0 && !inner.entries.contains_key(&ConnectionId::new(id)) {
                return ConnectionId::new(id);
            }
        }
    }

    /// A Connect from `owner`'s allocation to `peer`: the driver connects next and reports
    /// with [`TcpConnections::connected`].
    pub fn connect(
        &self,
        owner: FiveTuple,
        username: &str,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<ConnectionId, AddError> {
        let mut inner = self.lock();
        let duplicate = inner.by_owner.get(&owner).is_some_and(|ids| {
            ids.iter()
                .any(|id| inner.entries.get(id).is_some_and(|e| e.peer == peer))
        });
        if duplicate {
            return Err(AddError::Duplicate);
        }
        if !inner.room_to_connect(&owner) {
            return Err(AddError::Full);
        }
        self.add(
            &mut inner,
            owner,
            username,
            peer,
            Phase::Connecting,
            now + CONNECT_FORGET,
        )
    }

    /// A new entry under a fresh id, if `owner` and the relay have room.
    fn add(
        &self,
        inner: &mut Inner,
        owner: FiveTuple,
        username: &str,
        peer: SocketAddr,
        phase: Phase,
        expires: Instant,
    ) -> Result<ConnectionId, AddError> {
        if !inner.room_for(&owner) {
            return Err(AddError::Full);
        }
        let id = self.fresh_id(inner);
        let entry = Entry {
            owner,
            username: username.to_owned(),
            peer,
            phase,
            expires,
        };
        inner.add(id, entry);
        Ok(id)
    }

    /// The driver connected for Connect `id`: the connection may now be bound. False when the
    /// Connect was forgotten meanwhile (its allocation ended, or it took too long); the handle
    /// is then dropped, which closes the socket.
    pub fn connected(&self, id: ConnectionId, peer: PeerHandle, now: Instant) -> bool {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(&id) else {
            return false;
        };
        if !entry.is_connecting() {
            return false;
        }
        entry.phase = Phase::Waiting(peer);
        entry.expires = now + BIND_TIMEOUT;
        let owner = entry.owner;
        inner.done_connecting(&owner);
        true
    }

    /// A peer connected to `owner`'s relayed address; it waits for the client's
    /// ConnectionBind. When refused, the handle is dropped and the connection closed.
    pub fn accepted(
        &self,
        owner: FiveTuple,
        username: &str,
        peer: SocketAddr,
        handle: PeerHandle,
        now: Instant,
    ) -> Result<ConnectionId, AddError> {
        let mut inner = self.lock();
        let waiting = Phase::Waiting(handle);
        self.add(
            &mut inner,
            owner,
            username,
            peer,
            waiting,
            now + BIND_TIMEOUT,
        )
    }

    /// ConnectionBind by `username`: a waiting connection becomes bound; the driver then takes
    /// its socket with [`TcpConnections::take_socket`].
    pub fn bind(&self, id: ConnectionId, username: &str, now: Instant) -> Result<(), BindError> {
        let mut inner = self.lock();
        let entry = inner.entries.get_mut(&id).ok_or(BindError::Unknown)?;
        if !matches!(entry.phase, Phase::Waiting(_)) || now >= entry.expires {
            return Err(BindError::Unknown);
        }
        if entry.username != username {
            return Err(BindError::WrongUser);
        }
        if let Phase::Waiting(socket) = std::mem::replace(&mut entry.phase, Phase::Bound(None)) {
            entry.phase = Phase::Bound(Some(socket));
        }
        inner.unbound -= 1;
        Ok(())
    }

    /// The driver takes a bound connection's socket to splice it.
    pub fn take_socket(&self, id: ConnectionId) -> Option<PeerHandle> {
        match &mut self.lock().entries.get_mut(&id)?.phase {
            Phase::Bound(handle) => handle.take(),
            _ => None,
        }
    }

    /// The driver hands back what now carries connection `id` (the splice). When the
    /// connection was closed meanwhile, the handle comes back to be dropped.
    pub fn set_splice(&self, id: ConnectionId, splice: PeerHandle) -> Result<(), PeerHandle> {
        let mut inner = self.lock();
        match inner.entries.get_mut(&id).map(|e| &mut e.phase) {
            Some(Phase::Bound(slot)) => {
                *slot = Some(splice);
                Ok(())
            }
            _ => Err(splice),
        }
    }

    /// Closes connection `id` (a splice ended, a Connect failed).
    pub fn close(&self, id: ConnectionId) {
        let removed = self.lock().remove(id);
        // Dropped outside the lock: closing a socket is a syscall.
        drop(removed);
    }

    /// Closes every connection of an allocation that ended (RFC 6062 §5.5).
    pub fn close_owned_by(&self, owner: &FiveTuple) {
        let removed: Vec<Entry> = {
            let mut inner = self.lock();
            let ids = inner.by_owner.get(owner).cloned().unwrap_or_default();
            ids.into_iter().filter_map(|id| inner.remove(id)).collect()
        };
        drop(removed);
    }

    /// Closes connections nobody bound in time and Connects the driver never reported.
    pub fn expire(&self, now: Instant) {
        let removed: Vec<Entry> = {
            let mut inner = self.lock();
            let expired: Vec<ConnectionId> = inner
                .entries
                .iter()
                .filter(|(_, e)| e.is_unbound() && e.expires <= now)
                .map(|(id, _)| *id)
                .collect();
            expired
                .into_iter()
                .filter_map(|id| inner.remove(id))
                .collect()
        };
        drop(removed);
    }

    /// Connections of `owner`'s allocation, in any state.
    pub fn owned_by(&self, owner: &FiveTuple) -> usize {
        self.lock().by_owner.get(owner).map_or(0, Vec::len)
    }

    /// Connections in the table, in any state.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::types::{ClientSocket, Transport};

    /// A resource that records being closed (dropped).
    struct Flag(Arc<AtomicBool>);

    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn handle() -> (PeerHandle, Arc<AtomicBool>) {
        let closed = Arc::new(AtomicBool::new(false));
        (PeerHandle::new(Flag(closed.clone())), closed)
    }

    fn owner(port: u16) -> FiveTuple {
        FiveTuple {
            client: ClientSocket::new(([198, 51, 100, 1], port).into()),
            server: ([192, 0, 2, 1], 3478).into(),
            transport: Transport::Tcp,
        }
    }

    fn peer(port: u16) -> SocketAddr {
        ([203, 0, 113, 9], port).into()
    }

    #[test]
    fn bind_once_by_the_same_user_before_expiry() {
        let t0 = crate::test_epoch();
        let table = TcpConnections::new(7);
        let (h1, closed1) = handle();
        let (h2, closed2) = handle();
        let a = table
            .accepted(owner(1), "1:alice", peer(80), h1, t0)
            .unwrap();
        let b = table
            .accepted(owner(1), "1:alice", peer(81), h2, t0)
            .unwrap();
        assert_ne!(a, b);
        assert_eq!(table.bind(a, "1:bob", t0), Err(BindError::WrongUser));
        assert_eq!(table.bind(a, "1:alice", t0), Ok(()));
        assert_eq!(table.bind(a, "1:alice", t0), Err(BindError::Unknown));
        table.expire(t0 + BIND_TIMEOUT);
        assert!(closed2.load(Ordering::SeqCst), "unbound b expired");
        assert!(!closed1.load(Ordering::SeqCst), "bound a lives on");
        assert_eq!(table.len(), 1);
        // The driver takes the socket, splices it, and the splice ends.
        let socket = table.take_socket(a).unwrap();
        assert!(table.set_splice(a, socket).is_ok());
        table.close(a);
        assert!(closed1.load(Ordering::SeqCst));
        assert!(table.is_empty());
    }

    #[test]
    fn connecting_connections_cannot_be_bound_and_a_late_socket_is_closed() {
        let t0 = crate::test_epoch();
        let table = TcpConnections::new(7);
        let id = table.connect(owner(1), "1:alice", peer(80), t0).unwrap();
        assert_eq!(table.bind(id, "1:alice", t0), Err(BindError::Unknown));
        assert_eq!(
            table.connect(owner(1), "1:alice", peer(80), t0),
            Err(AddError::Duplicate)
        );
        let (h, closed) = handle();
        assert!(table.connected(id, h, t0));
        assert!(!closed.load(Ordering::SeqCst));
        assert_eq!(table.bind(id, "1:alice", t0), Ok(()));

        // The allocation ends while a second Connect is under way: its socket, when it comes,
        // is closed at once rather than left ESTABLISHED with no owner.
        let late = table.connect(owner(1), "1:alice", peer(81), t0).unwrap();
        table.close_owned_by(&owner(1));
        assert!(closed.load(Ordering::SeqCst), "the bound one closed too");
        let (h, closed) = handle();
        assert!(!table.connected(late, h, t0));
        assert!(closed.load(Ordering::SeqCst));
        assert!(table.is_empty());
    }

    #[test]
    fn connects_never_reported_are_forgotten() {
        let t0 = crate::test_epoch();
        let table = TcpConnections::new(7);
        table.connect(owner(1), "1:alice", peer(80), t0).unwrap();
        table.expire(t0 + CONNECT_TIMEOUT);
        assert_eq!(table.len(), 1, "the driver's own timeout comes first");
        table.expire(t0 + CONNECT_FORGET);
        assert!(table.is_empty());
    }

    #[test]
    fn one_allocation_holds_a_bounded_number() {
        let t0 = crate::test_epoch();
        let table = TcpConnections::new(7);
        let mut sockets = Vec::new();
        for p in 0..MAX_PER_ALLOCATION as u16 {
            let id = table.connect(owner(1), "1:alice", peer(p), t0).unwrap();
            let (h, closed) = handle();
            assert!(table.connected(id, h, t0));
            sockets.push(closed);
        }
        assert_eq!(
            table.connect(owner(1), "1:alice", peer(9999), t0),
            Err(AddError::Full)
        );
        let (h, closed) = handle();
        assert_eq!(
            table.accepted(owner(1), "1:alice", peer(9999), h, t0),
            Err(AddError::Full)
        );
        assert!(closed.load(Ordering::SeqCst), "a refused peer is closed");
        // Another allocation is not affected.
        assert!(table.connect(owner(2), "1:alice", peer(1), t0).is_ok());
        assert_eq!(table.owned_by(&owner(1)), MAX_PER_ALLOCATION);
    }

    fn owner_at(ip: [u8; 4], port: u16) -> FiveTuple {
        FiveTuple {
            client: ClientSocket::new((ip, port).into()),
            ..owner(port)
        }
    }

    #[test]
    fn connects_in_flight_are_bounded_per_allocation_source_and_relay() {
        let t0 = crate::test_epoch();
        let table = TcpConnections::new(7);
        // Per allocation: 8 in flight; the next is refused until one connects.
        let ids: Vec<ConnectionId> = (0..MAX_CONNECTING_PER_ALLOCATION as u16)
            .map(|p| table.connect(owner(1), "1:alice", peer(p), t0).unwrap())
            .collect();
        assert_eq!(
            table.connect(owner(1), "1:alice", peer(100), t0),
            Err(AddError::Full)
        );
        let (h, _closed) = handle();
        assert!(table.connected(ids[0], h, t0));
        assert!(table.connect(owner(1), "1:alice", peer(100), t0).is_ok());
        // A failed Connect gives its place back as well.
        table.close(ids[1]);
        assert!(table.connect(owner(1), "1:alice", peer(101), t0).is_ok());

        // Per source: other allocations of the same client address share 64 places; another
        // address is not affected.
        let table = TcpConnections::new(7);
        let mut held = 0;
        for port in 1..=20u16 {
            for p in 0..MAX_CONNECTING_PER_ALLOCATION as u16 {
                if table.connect(owner(port), "1:alice", peer(p), t0).is_ok() {
                    held += 1;
                }
            }
        }
        assert_eq!(held, MAX_CONNECTING_PER_SOURCE);
        assert!(
            table
                .connect(owner_at([198, 51, 100, 2], 1), "1:bob", peer(1), t0)
                .is_ok()
        );
        // Expiry gives every place back.
        table.expire(t0 + CONNECT_FORGET);
        assert!(table.is_empty());
        assert!(table.connect(owner(1), "1:alice", peer(1), t0).is_ok());

        // Relay-wide: many sources together stop at MAX_CONNECTING.
        let table = TcpConnections::new(7);
        let mut held = 0;
        'sources: for a in 0..=255u8 {
            for port in 1..=8u16 {
                for p in 0..MAX_CONNECTING_PER_ALLOCATION as u16 {
                    match table.connect(owner_at([10, 1, 0, a], port), "1:x", peer(p), t0) {
                        Ok(_) => held += 1,
                        Err(_) => break 'sources,
                    }
                }
            }
        }
        assert_eq!(held, MAX_CONNECTING);
    }
}
