//! The Redis `events` subscription: a background task on a dedicated pub/sub connection that
//! forwards events into a broadcast channel and re-subscribes after Redis restarts.
//!
//! Reconnection backs off from 100 ms to 5 s. Logging is per outage, not per attempt: one
//! `warn!` when the subscription cannot be re-established, one `info!` when it is back, so a
//! long outage does not flood the logs. After any gap the task sends [`RegistryEvent::Resync`]
//! because events published meanwhile are lost (Redis pub/sub keeps no history).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::RegistryEvent;

/// First delay before re-subscribing after a failed attempt.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest delay between attempts: bounds how stale events get after Redis comes back.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Bound on connecting plus SUBSCRIBE; `get_async_pubsub` has no timeout of its own.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A quiet subscription is pinged this often, so a half-open TCP connection (a peer that
/// vanished without a FIN, e.g. behind a NAT) is noticed instead of silently losing events.
const PING_EVERY: Duration = Duration::from_secs(15);
/// How long a keep-alive ping may take.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// Aborts the task when the last registry handle is dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the subscription task. The watch reads `true` while subscribed.
pub(crate) fn spawn(
    client: redis::Client,
    channel: String,
    url: Arc<str>,
    events: broadcast::Sender<RegistryEvent>,
) -> (watch::Receiver<bool>, AbortOnDrop) {
    let (live_tx, live_rx) = watch::channel(false);
    let task = tokio::spawn(run(client, channel, url, events, live_tx));
    (live_rx, AbortOnDrop(task))
}

async fn run(
    client: redis::Client,
    channel: String,
    url: Arc<str>,
    events: broadcast::Sender<RegistryEvent>,
    live: watch::Sender<bool>,
) {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let mut outage = OutageLog::default();
    // Nothing to resync before the first subscription: callers load their state at start.
    let mut gap = false;
    loop {
        match subscribe(&client, &channel).await {
            Ok((sink, stream)) => {
                backoff.reset();
                live.send_replace(true);
                if let Some(down_for) = outage.recovered() {
                    tracing::info!(url = %url, ?down_for, "registry events: subscribed again");
                }
                if gap {
                    let _ = events.send(RegistryEvent::Resync);
                }
                let why = forward(sink, stream, &events).await;
                live.send_replace(false);
                gap = true;
                // Try again at once: a connection reset with Redis still up costs no delay,
                // and no warning unless that attempt fails too.
                tracing::debug!(url = %url, why, "registry events: subscription lost");
            }
            Err(error) => {
                gap = true;
                if outage.failed() {
                    tracing::warn!(
                        url = %url,
                        %error,
                        "registry events unavailable (Redis unreachable); retrying with backoff up to 5 s"
                    );
                } else {
                    tracing::debug!(url = %url, %error, "registry events: subscribe attempt failed");
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> Result<(PubSubSink, PubSubStream), String> {
    let attempt = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub.split())
    };
    match timeout(SUBSCRIBE_TIMEOUT, attempt).await {
        Ok(Ok(parts)) => Ok(parts),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {SUBSCRIBE_TIMEOUT:?}")),
    }
}

/// Forwards messages until the connection ends; returns why.
async fn forward(
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    events: &broadcast::Sender<RegistryEvent>,
) -> &'static str {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { return "connection closed" };
                let payload: String = match msg.get_payload() {
                    Ok(p) => p,
                    Err(_) => continue,
                };
                match RegistryEvent::from_json(&payload) {
                    // A publisher may not send Resync: it would make every subscriber reload.
                    Ok(RegistryEvent::Resync) => {}
                    Ok(event) => {
                        let _ = events.send(event);
                    }
                    // Possibly a newer version's event type during a rolling upgrade. The
                    // payload may name a user, so it is not logged.
                    Err(error) => tracing::warn!(%error, "registry events: ignoring an unreadable event"),
                }
            }
            _ = ping.tick() => {
                match timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    _ => return "keep-alive ping failed",
                }
            }
        }
    }
}

/// Exponential backoff between reconnection attempts.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Decides which failures are worth a log line: the first of each outage, and the recovery.
#[derive(Debug, Default)]
struct OutageLog {
    down_since: Option<Instant>,
}

impl OutageLog {
    /// Records a failed attempt; true if it starts an outage (log it).
    fn failed(&mut self) -> bool {
        if self.down_since.is_some() {
            return false;
        }
        self.down_since = Some(Instant::now());
        true
    }

    /// Records a success; how long the outage lasted if one was logged.
    fn recovered(&mut self) -> Option<Duration> {
        self.down_since.take().map(|t| t.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let delays: Vec<u128> = (0..9).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), BACKOFF_MIN);
    }

    #[test]
    fn one_warning_per_outage() {
        let mut log = OutageLog::default();
        assert_eq!(log.recovered(), None, "no outage, nothing to announce");
        assert!(log.failed());
        assert!(!log.failed());
        assert!(!log.failed());
        assert!(log.recovered().is_some());
        assert_eq!(log.recovered(), None);
        assert!(log.failed(), "a new outage warns again");
    }
}
