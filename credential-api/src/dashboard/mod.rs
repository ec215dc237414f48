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

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::answers::SnapshotEvent;
use crate::caller::{ApiCaller, PathParam, require_api_key};
use crate::error::ApiError;
use crate::fleet::fleet_json;
use crate::state::{AppState, credential_headers};
use geoturn_shared::http_error::Problem;

/// Event streams open at once in this process; more get 503 (a reconnect loop or a crowd of
/// tabs cannot exhaust the server's connections).
pub const MAX_STREAMS: usize = 100;

/// Event streams one caller (API key or JWT subject) holds at once: a few dashboard tabs; one
/// key cannot take the process's [`MAX_STREAMS`] from everyone else.
pub const MAX_STREAMS_PER_CALLER: usize = 8;

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
#[utoipa::path(get, tag = "dashboard", path = "/dashboard",
    summary = "The operators' dashboard (HTML; asks for an API key, then reads /v1/events)",
    responses((status = 200, description = "The page, with a Content-Security-Policy allowing this origin only",
        body = String, content_type = "text/html")))]
pub async fn page() -> Response {
    embedded("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /dashboard/{asset}`: the page's script, style sheet and map.
#[utoipa::path(get, tag = "dashboard", path = "/dashboard/{asset}", summary = "The dashboard's files",
    params(("asset" = String, Path, description = "app.js, style.css, world.svg or favicon.svg")),
    responses(
        (status = 200, description = "JavaScript, CSS or SVG",
            content((String = "text/javascript"), (String = "text/css"), (String = "image/svg+xml"))),
        (status = 404, description = "No such file", body = Problem, content_type = "application/problem+json")))]
pub async fn asset(PathParam(name): PathParam) -> Response {
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

/// Event streams open now per caller; only callers with open streams are kept.
static PER_CALLER: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);

fn per_caller() -> std::sync::MutexGuard<'static, Option<HashMap<String, usize>>> {
    PER_CALLER.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a stream was refused.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// [`MAX_STREAMS`] are open in the process.
    Process,
    /// The caller holds [`MAX_STREAMS_PER_CALLER`].
    Caller,
}

/// One of the [`MAX_STREAMS`] places, and one of its caller's, given back when the stream is
/// dropped (the client went away, the stream's lifetime ended, or the server stopped).
#[derive(Debug)]
struct StreamSlot {
    caller: String,
}

impl StreamSlot {
    fn take(caller: &str) -> Result<Self, Refused> {
        let mut map = per_caller();
        let map = map.get_or_insert_with(HashMap::new);
        if map
            .get(caller)
            .is_some_and(|n| *n >= MAX_STREAMS_PER_CALLER)
        {
            return Err(Refused::Caller);
        }
        OPEN_STREAMS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_STREAMS).then_some(n + 1)
            })
            .map_err(|_| Refused::Process)?;
        *map.entry(caller.to_owned()).or_insert(0) += 1;
        Ok(Self {
            caller: caller.to_owned(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::AcqRel);
        let mut map = per_caller();
        if let Some(map) = map.as_mut()
            && let Some(held) = map.get_mut(&self.caller)
        {
            *held = held.saturating_sub(1);
            if *held == 0 {
                map.remove(&self.caller);
            }
        }
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
    /// Ends the stream when the API shuts down, so a graceful shutdown is not held by it.
    stopping: watch::Receiver<bool>,
    deadline: Instant,
    sent: bool,
    _slot: StreamSlot,
}

impl Feed {
    /// The next event: the snapshot now for the first, then the snapshot after the next swap;
    /// `None` once the lifetime is over.
    async fn next(mut self) -> Option<(Result<Event, axum::Error>, Self)> {
        if *self.stopping.borrow() {
            return None;
        }
        if self.sent {
            let mut stopping = self.stopping.clone();
            let changed = async {
                tokio::time::sleep(MIN_EVENT_GAP).await;
                // A swap during the sleep counts: `changed` answers at once for it.
                tokio::time::timeout_at(self.deadline, self.changes.changed()).await
            };
            tokio::select! {
                r = changed => match r {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => return None,
                },
                _ = stopping.wait_for(|s| *s) => return None,
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
#[utoipa::path(get, tag = "dashboard", path = "/v1/events",
    summary = "The relay load snapshot (the /v1/relays JSON) as server-sent events: one `snapshot` event at once, then one per snapshot refresh (API keys)",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "text/event-stream of `event: snapshot` with the /v1/relays JSON (the Fleet schema) as data; keep-alive comments every 15 s; the stream ends after 30 minutes (reconnect)",
            body = SnapshotEvent, content_type = "text/event-stream"),
        (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an API key (JWT callers may not read the fleet)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited, or this caller already holds 8 event streams (too_many_streams); see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many event streams open (too_many_streams); poll /v1/relays or retry after Retry-After", body = Problem, content_type = "application/problem+json")))]
pub async fn events(
    State(state): State<Arc<AppState>>,
    ApiCaller(caller): ApiCaller,
) -> Result<Response, ApiError> {
    require_api_key(&caller, "the event stream")?;
    let slot = match StreamSlot::take(&caller.name) {
        Ok(slot) => slot,
        Err(Refused::Process) => {
            tracing::warn!(max = MAX_STREAMS, "event stream refused: too many open");
            return Err(ApiError {
                retry_after: Some(STREAMS_FULL_RETRY),
                ..ApiError::unavailable(
                    "too_many_streams",
                    format!("{MAX_STREAMS} event streams are open; poll /v1/relays or retry later"),
                )
            });
        }
        Err(Refused::Caller) => {
            return Err(ApiError {
                retry_after: Some(STREAMS_FULL_RETRY),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_streams",
                    format!(
                        "this caller holds {MAX_STREAMS_PER_CALLER} event streams; close one or poll /v1/relays"
                    ),
                )
            });
        }
    };
    let feed = Feed {
        changes: state.snapshot.subscribe(),
        stopping: state.stopping.subscribe(),
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
    fn stream_slots_are_bounded_per_process_and_per_caller_and_given_back() {
        let before = open_streams();
        // Many callers: the process's cap.
        let mut slots = Vec::new();
        for i in 0..=MAX_STREAMS {
            match StreamSlot::take(&format!("caller-{}", i % 50)) {
                Ok(slot) => slots.push(slot),
                Err(e) => {
                    assert_eq!(e, Refused::Process);
                    break;
                }
            }
        }
        assert_eq!(slots.len(), MAX_STREAMS - before);
        assert_eq!(StreamSlot::take("another").err(), Some(Refused::Process));
        drop(slots);
        assert_eq!(open_streams(), before);
        // One caller: its own cap, long before the process's.
        let mine: Vec<_> = (0..MAX_STREAMS_PER_CALLER)
            .map(|_| StreamSlot::take("greedy").unwrap())
            .collect();
        assert_eq!(StreamSlot::take("greedy").err(), Some(Refused::Caller));
        assert!(StreamSlot::take("modest").is_ok());
        drop(mine);
        assert!(StreamSlot::take("greedy").is_ok());
        assert_eq!(open_streams(), before);
    }
}
