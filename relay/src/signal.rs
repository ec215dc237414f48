//! SIGTERM and SIGINT, caught from the moment a process starts serving.
//!
//! tokio installs a signal's handler on the first `signal(kind)` call. Until then the kernel's
//! default action applies, and for SIGTERM that is death without a drain: a relay that answers
//! Allocates before its handler is installed (workers start before the ops listener, the
//! registry connection and the rest) loses those allocations to a SIGTERM that arrives in
//! between, as a rolling deploy's does. So the handlers are installed first, and the same
//! [`ShutdownSignals`] is awaited for the first and for the second signal.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Handlers for SIGTERM and SIGINT, installed when this is built.
#[derive(Debug)]
pub struct ShutdownSignals {
    term: Signal,
    int: Signal,
}

impl ShutdownSignals {
    /// Installs the handlers now. Must run inside a tokio runtime (`Runtime::enter` will do)
    /// and before the process takes any work a signal should let it finish.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next SIGTERM or SIGINT (one that arrived since the last call counts).
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
