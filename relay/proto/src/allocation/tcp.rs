//! TCP relaying state shared by every shard ([RFC 6062](https://www.rfc-editor.org/rfc/rfc6062)):
//! peer connections waiting for the client's ConnectionBind. The data connection that binds one
//! may land on any worker (the kernel spreads new TCP connections over `SO_REUSEPORT`
//! sockets), so the table is shared; it is touched per connection, never per byte.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::types::FiveTuple;

/// A peer connection not bound by ConnectionBind within this is closed (RFC 6062 §5.3, §5.4).
pub const BIND_TIMEOUT: Duration = Duration::from_secs(30);
/// Most peer connections waiting at once, relay-wide.
pub const MAX_PENDING: usize = 10_000;

/// A peer connection waiting for its data connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingConnection {
    /// The allocation's control connection.
    pub owner: FiveTuple,
    /// Who created the allocation; ConnectionBind must come from the same user.
    pub username: String,
    /// The peer.
    pub peer: SocketAddr,
    /// False while the relay is still connecting to the peer (Connect).
    pub ready: bool,
    /// When it is closed if nobody binds it.
    pub expires: Instant,
}

/// Why a ConnectionBind fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindError {
    /// No such connection id (or it expired, or is still connecting): 400.
    Unknown,
    /// Another user's connection: 441.
    WrongUser,
}

/// Pending peer connections by CONNECTION-ID.
#[derive(Debug)]
pub struct TcpConnections {
    next: AtomicU32,
    pending: Mutex<HashMap<u32, PendingConnection>>,
}

impl TcpConnections {
    /// An empty table; ids start from `seed` so they are not guessable across restarts.
    pub fn new(seed: u32) -> Self {
        Self {
            next: AtomicU32::new(seed | 1),
            pending: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, PendingConnection>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a connection; its id, or `None` when the table is full.
    pub fn insert(&self, conn: PendingConnection) -> Option<u32> {
        let mut map = self.lock();
        if map.len() >= MAX_PENDING {
            return None;
        }
        loop {
            // A Weyl sequence over u32 visits every value once before repeating; skip 0 and
            // ids still in use.
            let id = self.next.fetch_add(0x9E37_79B9, Ordering::Relaxed);
            if id != 0 && !map.contains_key(&id) {
                map.insert(id, conn);
                return Some(id);
            }
        }
    }

    /// The relay finished connecting to the peer: the connection may now be bound.
    pub fn set_ready(&self, id: u32, expires: Instant) {
        if let Some(c) = self.lock().get_mut(&id) {
            c.ready = true;
            c.expires = expires;
        }
    }

    /// Takes a ready connection for a ConnectionBind by `username`.
    pub fn take_for_bind(
        &self,
        id: u32,
        username: &str,
        now: Instant,
    ) -> Result<PendingConnection, BindError> {
        let mut map = self.lock();
        match map.get(&id) {
            Some(c) if c.ready && now < c.expires && c.username == username => {}
            Some(c) if c.ready && now < c.expires => return Err(BindError::WrongUser),
            _ => return Err(BindError::Unknown),
        }
        map.remove(&id).ok_or(BindError::Unknown)
    }

    /// The peer of a pending connection.
    pub fn peer_of(&self, id: u32) -> Option<SocketAddr> {
        self.lock().get(&id).map(|c| c.peer)
    }

    /// Forgets a connection (closed, failed, or its allocation ended).
    pub fn remove(&self, id: u32) -> Option<PendingConnection> {
        self.lock().remove(&id)
    }

    /// Removes and returns the ids of connections nobody bound in time.
    pub fn expire(&self, now: Instant) -> Vec<u32> {
        let mut map = self.lock();
        let expired: Vec<u32> = map
            .iter()
            .filter(|(_, c)| c.ready && c.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            map.remove(id);
        }
        expired
    }

    /// Connections waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when none wait.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ClientSocket, Transport};

    fn conn(user: &str, now: Instant) -> PendingConnection {
        PendingConnection {
            owner: FiveTuple {
                client: ClientSocket::new(([198, 51, 100, 1], 5000).into()),
                server: ([192, 0, 2, 1], 3478).into(),
                transport: Transport::Tcp,
            },
            username: user.into(),
            peer: ([203, 0, 113, 9], 80).into(),
            ready: true,
            expires: now + BIND_TIMEOUT,
        }
    }

    #[test]
    fn bind_once_by_the_same_user_before_expiry() {
        let t0 = crate::test_epoch();
        let table = TcpConnections::new(7);
        let a = table.insert(conn("1:alice", t0)).unwrap();
        let b = table.insert(conn("1:alice", t0)).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            table.take_for_bind(a, "1:bob", t0),
            Err(BindError::WrongUser)
        );
        assert!(table.take_for_bind(a, "1:alice", t0).is_ok());
        assert_eq!(
            table.take_for_bind(a, "1:alice", t0),
            Err(BindError::Unknown)
        );
        assert_eq!(table.expire(t0 + BIND_TIMEOUT), vec![b]);
        assert!(table.is_empty());
    }

    #[test]
    fn connecting_connections_cannot_be_bound_yet() {
        let t0 = crate::test_epoch();
        let table = TcpConnections::new(7);
        let id = table
            .insert(PendingConnection {
                ready: false,
                ..conn("1:alice", t0)
            })
            .unwrap();
        assert_eq!(
            table.take_for_bind(id, "1:alice", t0),
            Err(BindError::Unknown)
        );
        assert!(
            table.expire(t0 + BIND_TIMEOUT * 10).is_empty(),
            "connect has its own timeout"
        );
        table.set_ready(id, t0 + BIND_TIMEOUT);
        assert!(table.take_for_bind(id, "1:alice", t0).is_ok());
    }
}
