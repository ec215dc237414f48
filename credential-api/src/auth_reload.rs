//! Reloading the callers' keys without a restart: API keys and JWT keys come from the config
//! file and key files, which an operator edits (a new signaling server, a leaked key revoked, a
//! JWT signing key rotated). They are read again on SIGHUP and when one of the files changes
//! (checked every few seconds); a reload that fails, or that would leave nobody able to call,
//! keeps the keys in use and says why.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::auth::Authenticator;
use crate::state::AppState;

/// How often the files are checked for a change.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Where the callers' keys come from.
pub struct AuthSource {
    /// Reads the keys as at start (flags and variables over the config file), or says why not.
    pub load: Box<dyn Fn() -> Result<Authenticator, String> + Send + Sync>,
    /// The files the keys come from, as they are now (the config file, key files it names).
    pub files: Box<dyn Fn() -> Vec<PathBuf> + Send + Sync>,
}

impl std::fmt::Debug for AuthSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthSource")
    }
}

/// Reads the keys again into `state`; true when they were replaced.
pub fn reload(state: &AppState, source: &AuthSource, why: &str) -> bool {
    match (source.load)() {
        Ok(auth) if auth.is_empty() => {
            tracing::warn!(
                why,
                "caller keys not reloaded: the new configuration has none (nobody could call); keeping the current ones"
            );
            false
        }
        Ok(auth) => {
            auth.start_jwks();
            state.set_authenticator(auth);
            tracing::info!(why, "caller keys reloaded");
            true
        }
        Err(e) => {
            tracing::warn!(why, error = %e, "caller keys not reloaded; keeping the current ones");
            false
        }
    }
}

/// What identifies a file's content cheaply: its modification time and length (`None` when it
/// cannot be read, which is a change too).
fn stamp(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    files
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// Checks the files every [`CHECK_EVERY`] and reloads when one changed, until aborted.
pub async fn watch(state: Arc<AppState>, source: Arc<AuthSource>) {
    let mut files = (source.files)();
    let mut last = stamp(&files);
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let now = stamp(&files);
        if now != last {
            // A file written in several steps: give the writer a moment, then read.
            tokio::time::sleep(Duration::from_millis(200)).await;
            reload(&state, &source, "a key file changed");
            files = (source.files)();
            last = stamp(&files);
        }
    }
}
