//! Graceful drain: stop taking allocations at once, keep the existing ones until they end or
//! the deadline passes, then let the process exit. Started by SIGTERM/SIGINT or `POST /drain`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use geoturn_relay_proto::server::Drain;
use tokio::sync::Notify;

use crate::run::RelayHandle;

const POLL: Duration = Duration::from_millis(100);

/// Starts a drain once and tells waiters when it is done.
#[derive(Debug)]
pub struct DrainController {
    relay: Arc<RelayHandle>,
    timeout: Duration,
    /// When the drain began, and its deadline in wall-clock time (Unix ms), fixed then: the
    /// registry record carries it for readers on other hosts, and deriving it from the
    /// monotonic deadline at each heartbeat would make it wander by a millisecond.
    started: Mutex<Option<(Instant, u64)>>,
    alternates: Mutex<Vec<SocketAddr>>,
    notify: Notify,
}

impl DrainController {
    /// A controller for `relay` whose drains last at most `timeout`.
    pub fn new(relay: Arc<RelayHandle>, timeout: Duration) -> Self {
        Self {
            relay,
            timeout,
            started: Mutex::new(None),
            alternates: Mutex::new(Vec::new()),
            notify: Notify::new(),
        }
    }

    /// Starts draining (idempotent); returns the deadline.
    pub fn begin(&self, reason: &str) -> Instant {
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, _)) = *started {
            return at + self.timeout;
        }
        let now = Instant::now();
        let deadline_unix_ms = geoturn_shared::clock::unix_ms()
            .saturating_add(u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX));
        *started = Some((now, deadline_unix_ms));
        let deadline = now + self.timeout;
        let alternates = self
            .alternates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.relay.set_drain(Some(Drain {
            deadline,
            alternates,
        }));
        tracing::info!(
            reason,
            timeout_s = self.timeout.as_secs(),
            allocations = self.relay.snapshot().allocations,
            "drain started: no new allocations"
        );
        self.notify.notify_waiters();
        deadline
    }

    /// Sets the sibling relays new Allocates are redirected to while draining.
    pub fn set_alternates(&self, alternates: Vec<SocketAddr>) {
        let mut current = self.alternates.lock().unwrap_or_else(|e| e.into_inner());
        if *current == alternates {
            return;
        }
        current.clone_from(&alternates);
        if let Some(mut drain) = self.relay.drain() {
            drain.alternates = alternates;
            self.relay.set_drain(Some(drain));
        }
    }

    /// When a started drain's deadline passes, Unix milliseconds; None before it starts.
    pub fn deadline_unix_ms(&self) -> Option<u64> {
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|(_, unix_ms)| unix_ms)
    }

    /// True once a drain has started.
    pub fn is_draining(&self) -> bool {
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Waits until a drain starts.
    pub async fn started(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_draining() {
                return;
            }
            notified.await;
        }
    }

    /// Waits until a started drain is done: no allocations left, or the deadline passed.
    pub async fn finished(&self) {
        self.started().await;
        let Some((start, _)) = *self.started.lock().unwrap_or_else(|e| e.into_inner()) else {
            return;
        };
        let deadline = start + self.timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(
                    allocations = self.relay.snapshot().allocations,
                    "drain deadline passed; closing the remaining allocations"
                );
                return;
            }
            // Only counts every worker took after the drain began: an Allocate finished just
            // before it may not be in an older count.
            if self.relay.allocations_counted_since(start) == Some(0) {
                tracing::info!(
                    after_s = now.duration_since(start).as_secs(),
                    "drain finished: no allocations left"
                );
                return;
            }
            tokio::time::sleep(POLL.min(deadline - now)).await;
        }
    }
}
