//! Permissions: which peer IP addresses may send to, and receive from, an allocation
//! ([RFC 8656 §9](https://www.rfc-editor.org/rfc/rfc8656#section-9)). Ports are ignored.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::hash::FoldMap;

/// A permission lives 300 s unless refreshed (RFC 8656 §9).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Most permissions one allocation may hold; bounds memory per allocation.
pub const MAX_PERMISSIONS: usize = 128;

/// The permissions of one allocation.
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    expires: FoldMap<IpAddr, Instant>,
}

/// The allocation already holds [`MAX_PERMISSIONS`] live permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PermissionsFull;

impl Permissions {
    /// True when `ip` has a live permission at `now`.
    pub fn allows(&self, ip: IpAddr, now: Instant) -> bool {
        self.expires.get(&ip).is_some_and(|&t| now < t)
    }

    /// When the permission for `ip` expires, if it is live at `now` (the kernel fast path is
    /// told this deadline, so it stops relaying on time without asking).
    pub fn expiry(&self, ip: IpAddr, now: Instant) -> Option<Instant> {
        self.expires.get(&ip).copied().filter(|&t| now < t)
    }

    /// Checks that installing `ips` would stay within the limit.
    pub fn can_install<'a>(
        &self,
        ips: impl Iterator<Item = &'a IpAddr>,
        now: Instant,
    ) -> Result<(), PermissionsFull> {
        let live = self.expires.values().filter(|&&t| now < t).count();
        let new = ips.filter(|ip| !self.allows(**ip, now)).count();
        if live + new > MAX_PERMISSIONS {
            Err(PermissionsFull)
        } else {
            Ok(())
        }
    }

    /// Installs or refreshes the permission for `ip`.
    pub fn install(&mut self, ip: IpAddr, now: Instant) {
        self.expires.retain(|_, t| now < *t);
        self.expires.insert(ip, now + PERMISSION_LIFETIME);
    }

    /// Number of live permissions.
    pub fn live_count(&self, now: Instant) -> usize {
        self.expires.values().filter(|&&t| now < t).count()
    }
}
