//! The operators' dashboard: `GET /dashboard` (one page) and `GET /v1/events` (its live feed).
//!
//! The page, its script, style sheet and world map are compiled into the binary with
//! `include_str!`: nothing comes from a CDN, it works offline, and a strict
//! Content-Security-Policy holds (`'self'` only: no inline script or style, no other origin).
//! The page itself is public and holds no data; it asks the operator for an API key, keeps it in
//! `sessionStorage` (never in a URL) and sends it as `Authorization: Bearer` to
//! `GET /v1/events` (read with `fetch()`, since `EventSource` cannot send headers), falling back
//! to polling `GET /v1/relays` every 2 s, and to `POST /v1/admin/relays/{id}/drain` for its
//! Drain buttons (admin keys).
//!
//! `GET /v1/events` pushes the snapshot (the `GET /v1/relays` JSON) as a `snapshot` event at once
//! and again each time the snapshot store swaps in a new one (every `--refresh-ms`, and when a
//! relay is marked draining), at most every [`MIN_EVENT_GAP`]. Streams are bounded: at most
//! [`MAX_STREAMS`] at once in the process (503 beyond), each closed after
//! [`MAX_STREAM_LIFETIME`] (the page reconnects), with a keep-alive comment every
//! [`KEEP_ALIVE`] so proxies keep idle streams open.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::caller::{ApiCaller, require_api_key};
use crate::error::ApiError;
use crate::fleet::fleet_json;
use crate::state::{AppState, credential_headers};

/// Event streams open at once in this process; more get 503 (a reconnect loop or a crowd of
/// tabs cannot exhaust the server's connections).
pub const MAX_STREAMS: usize = 100;

/// Shortest gap between two events of one stream: refreshes and drain hints that come closer
/// together are sent as one.
pub const MIN_EVENT_GAP: Duration = Duration::from_millis(200);

/// A stream ends after this long; the page opens a new one (and authenticates again).
pub const MAX_STREAM_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// A comment line this often keeps idle streams open through proxies.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Retry-After for a refused stream.
const STREAMS_FULL_RETRY: Duration = Duration::from_secs(5);

/// Only this origin, nothing inline: the page's script and style sheet are files of their own.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("index.html");

/// The page's files under `/dashboard/{asset}`: name, content type, body.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("style.css"),
    ),
    ("world.svg", "image/svg+xml", include_str!("world.svg")),
    ("favicon.svg", "image/svg+xml", include_str!("favicon.svg")),
];

/// `GET /dashboard`: the page.
pub async fn page() -> Response {
    embedded("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /dashboard/{asset}`: the page's script, style sheet and map.
pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => embedded(content_type, body),
        None => ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such dashboard file")
            .into_response(),
    }
}

fn embedded(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Revalidated on each load, so an upgraded API serves its own page and script together.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Event streams open now, in this process.
static OPEN_STREAMS: AtomicUsize = AtomicUsize::new(0);

/// One of the [`MAX_STREAMS`] places, given back when the stream is dropped (the client went
/// away, the stream's lifetime ended, or the server stopped).
#[derive(Debug)]
struct StreamSlot;

impl StreamSlot {
    fn take() -> Option<Self> {
        OPEN_STREAMS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_STREAMS).then_some(n + 1)
            })
            .ok()
            .map(|_| Self)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Event streams open now, in this process.
pub fn open_streams() -> usize {
    OPEN_STREAMS.load(Ordering::Acquire)
}

/// One client's stream.
struct Feed {
    state: Arc<AppState>,
    changes: watch::Receiver<u64>,
    deadline: Instant,
    sent: bool,
    _slot: StreamSlot,
}

impl Feed {
    /// The next event: the snapshot now for the first, then the snapshot after the next swap;
    /// `None` once the lifetime is over.
    async fn next(mut self) -> Option<(Result<Event, axum::Error>, Self)> {
        if self.sent {
            tokio::time::sleep(MIN_EVENT_GAP).await;
            // A swap during the sleep counts: `changed` answers at once for it.
            match tokio::time::timeout_at(self.deadline, self.changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return None,
            }
        }
        self.sent = true;
        self.changes.borrow_and_update();
        let body = fleet_json(&self.state, &self.state.snapshot.get());
        let event = Event::default().event("snapshot").json_data(body);
        Some((event, self))
    }
}

/// `GET /v1/events`: the load snapshot as server-sent events (API keys, as `GET /v1/relays`).
pub async fn events(
    State(state): State<Arc<AppState>>,
    ApiCaller(caller): ApiCaller,
) -> Result<Response, ApiError> {
    require_api_key(&caller, "the event stream")?;
    let Some(slot) = StreamSlot::take() else {
        tracing::warn!(max = MAX_STREAMS, "event stream refused: too many open");
        return Err(ApiError {
            retry_after: Some(STREAMS_FULL_RETRY),
            ..ApiError::unavailable(
                "too_many_streams",
                format!("{MAX_STREAMS} event streams are open; poll /v1/relays or retry later"),
            )
        });
    };
    let feed = Feed {
        changes: state.snapshot.subscribe(),
        state: state.clone(),
        deadline: Instant::now() + MAX_STREAM_LIFETIME,
        sent: false,
        _slot: slot,
    };
    let stream = futures_util::stream::unfold(feed, Feed::next);
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    credential_headers(&mut response, &state);
    // nginx and friends would otherwise buffer the stream.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_served_with_its_type_and_the_page_links_them() {
        for (name, content_type, body) in ASSETS {
            assert!(!body.is_empty(), "{name}");
            assert!(content_type.contains('/'), "{name}");
        }
        for link in [
            "dashboard/app.js",
            "dashboard/style.css",
            "dashboard/world.svg",
            "dashboard/favicon.svg",
        ] {
            assert!(INDEX_HTML.contains(link), "index.html must load {link}");
        }
        // Nothing inline, nothing from elsewhere: the CSP would block it.
        assert!(!INDEX_HTML.contains("<style"), "inline style");
        assert!(!INDEX_HTML.contains(" style="), "inline style attribute");
        assert!(!INDEX_HTML.contains("<script>"), "inline script");
        assert!(!INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"));
    }

    #[test]
    fn stream_slots_are_bounded_and_given_back() {
        let before = open_streams();
        let slots: Vec<_> = std::iter::from_fn(StreamSlot::take)
            .take(MAX_STREAMS + 1)
            .collect();
        assert_eq!(slots.len(), MAX_STREAMS - before);
        assert!(StreamSlot::take().is_none());
        drop(slots);
        assert_eq!(open_streams(), before);
        assert!(StreamSlot::take().is_some());
    }
}
