//! Channel bindings: a 2-byte channel number standing for a peer transport address
//! ([RFC 8656 §12](https://www.rfc-editor.org/rfc/rfc8656#section-12)).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::hash::FoldMap;

/// A binding lives 600 s unless refreshed.
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// After expiry neither the number nor the peer may be rebound to something else for 5 minutes,
/// so late packets are not delivered to the wrong peer (RFC 8656 §12).
pub const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
struct Binding {
    peer: SocketAddr,
    expires: Instant,
}

/// The channel bindings of one allocation (at most 4096, the size of the number space).
#[derive(Debug, Clone, Default)]
pub struct Channels {
    by_number: FoldMap<u16, Binding>,
    by_peer: FoldMap<SocketAddr, u16>,
}

/// A ChannelBind that conflicts with an existing or cooling-down binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelConflict;

impl Channels {
    fn purge(&mut self, now: Instant) {
        let by_peer = &mut self.by_peer;
        self.by_number.retain(|_, b| {
            let keep = now < b.expires + CHANNEL_COOLDOWN;
            if !keep {
                by_peer.remove(&b.peer);
            }
            keep
        });
    }

    /// Binds (or refreshes) `number` to `peer`.
    pub fn bind(
        &mut self,
        number: u16,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<(), ChannelConflict> {
        self.purge(now);
        match (self.by_number.get(&number), self.by_peer.get(&peer)) {
            (Some(b), _) if b.peer != peer => return Err(ChannelConflict),
            (_, Some(&n)) if n != number => return Err(ChannelConflict),
            _ => {}
        }
        self.by_number.insert(
            number,
            Binding {
                peer,
                expires: now + CHANNEL_LIFETIME,
            },
        );
        self.by_peer.insert(peer, number);
        Ok(())
    }

    /// The peer bound to `number`, if the binding is live.
    pub fn peer(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        self.by_number
            .get(&number)
            .filter(|b| now < b.expires)
            .map(|b| b.peer)
    }

    /// The channel bound to `peer`, if the binding is live.
    pub fn number(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let n = *self.by_peer.get(&peer)?;
        self.by_number
            .get(&n)
            .filter(|b| now < b.expires)
            .map(|_| n)
    }

    /// Every live binding: number, peer and when it expires unless refreshed.
    pub fn live(&self, now: Instant) -> impl Iterator<Item = (u16, SocketAddr, Instant)> + '_ {
        self.by_number
            .iter()
            .filter(move |(_, b)| now < b.expires)
            .map(|(&n, b)| (n, b.peer, b.expires))
    }

    /// Number of live bindings.
    pub fn live_count(&self, now: Instant) -> usize {
        self.by_number.values().filter(|b| now < b.expires).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_refresh_conflict_expiry_and_cooldown() {
        let t0 = crate::test_epoch();
        let a: SocketAddr = "203.0.113.1:1000".parse().unwrap();
        let b: SocketAddr = "203.0.113.2:1000".parse().unwrap();
        let mut c = Channels::default();
        c.bind(0x4000, a, t0).unwrap();
        c.bind(0x4000, a, t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(c.bind(0x4000, b, t0), Err(ChannelConflict));
        assert_eq!(c.bind(0x4001, a, t0), Err(ChannelConflict));
        assert_eq!(c.peer(0x4000, t0), Some(a));
        assert_eq!(c.number(a, t0), Some(0x4000));
        let expired = t0 + Duration::from_secs(10) + CHANNEL_LIFETIME;
        assert_eq!(c.peer(0x4000, expired), None);
        // Still cooling down: cannot rebind to another peer.
        assert_eq!(c.bind(0x4000, b, expired), Err(ChannelConflict));
        let later = expired + CHANNEL_COOLDOWN;
        c.bind(0x4000, b, later).unwrap();
        assert_eq!(c.peer(0x4000, later), Some(b));
    }
}
