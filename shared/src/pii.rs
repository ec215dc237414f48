//! A wrapper that keeps client addresses and user ids out of logs unless an operator opts in.
//!
//! Logs are shipped to third parties more often than anyone plans; a client IP is personal data.
//! Every log line that names a client address or user id goes through [`Pii`].

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

static REVEAL: AtomicBool = AtomicBool::new(false);

/// Shows wrapped values in logs from now on (`--log-pii`); off by default.
pub fn reveal_in_logs(reveal: bool) {
    REVEAL.store(reveal, Ordering::Relaxed);
}

/// Personally identifying data: prints as `<redacted>` unless revealing was switched on.
#[derive(Clone, Copy)]
pub struct Pii<T>(pub T);

impl<T: fmt::Display> fmt::Display for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if REVEAL.load(Ordering::Relaxed) {
            self.0.fmt(f)
        } else {
            f.write_str("<redacted>")
        }
    }
}

impl<T: fmt::Display> fmt::Debug for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
