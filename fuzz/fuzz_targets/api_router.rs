//! Drives the credential API's full axum router (`geoturn_api::server::router`: every route,
//! the metrics/timeout middleware, the body limit, CORS, the JSON 404/405 fallbacks) with
//! fuzzed HTTP requests, on state built as `geoturn_api::start` builds it with the in-memory
//! registry (`geoturn up`): one relay registered, a static TURN secret, an API key, an admin
//! key and an HS256 JWT key. No socket: each request goes through `tower::ServiceExt::oneshot`
//! on a current-thread tokio runtime built once, with the peer address the accept loop would
//! attach (`ConnectInfo`).
//!
//! Invariants: no panic; no 5xx but a 503 the API documents (no relays, no secret, registry
//! unavailable, too many event streams, `/readyz` not ready); every 4xx carries a JSON body
//! (`application/json` or `application/problem+json`) that parses; a body labelled JSON
//! parses whatever the status.
//!
//! Bounded state: the router and its state are built once, and built again after any request
//! that changed them for good (a secret rotated, a user revoked, a relay drained: each adds
//! to a store that later requests would read), so every input starts from the same state and
//! nothing grows across executions. The rate-limited router (one input bit picks it) keeps
//! its limiter, which holds at most [`LIMITED_KEYS`] callers. `/v1/events` streams are dropped
//! unread, which gives their slot back.
//!
//! Input: five selector bytes (method, path, Authorization, header flags, peer), then chunks
//! of one length byte and that many bytes (path segment or suffix, query string, arbitrary
//! method, garbage Authorization, X-Forwarded-For, Content-Type, Origin), then the body.

#![no_main]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use geoturn_api::ApiOptions;
use geoturn_api::metrics::ApiMetrics;
use geoturn_api::rate_limit::RateLimiter;
use geoturn_api::secrets::ApiSecrets;
use geoturn_api::server::{MAX_BODY, router};
use geoturn_api::snapshot::SnapshotStore;
use geoturn_api::state::AppState;
use geoturn_geo::GeoIp;
use geoturn_shared::registry::{MemoryRegistry, Registry, RelayAddrs, RelayRecord, RelayState};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt as _;

const API_KEY: &str = "app-key-0123456789abcdef";
const ADMIN_KEY: &str = "ops-key-0123456789abcdef";
const JWT_SECRET: &str = "fuzz-jwt-secret-0123456789abcdef0123";
/// HS256 over `JWT_SECRET`: `{"sub":"fuzz-user","iss":"https://issuer.example",
/// "aud":"geoturn","iat":1700000000,"exp":4102444800}` (valid until 2100).
const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJmdXp6LXVzZXIiLCJpc3MiOiJodHRwczovL2lzc3Vlci5leGFtcGxlIiwiYXVkIjoiZ2VvdHVybiIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwfQ.gTXwH4FeapZP3bngRfyV_8d83SgmIvFIR3lJtYVx3I4";
const RELAY_ID: &str = "fra-1";
/// Callers the rate-limited router tracks at most (the API's own cap is 100 000).
const LIMITED_KEYS: usize = 64;

/// 503 error codes the API documents.
const DOCUMENTED_503: &[&str] = &[
    "no_relays",
    "no_secret",
    "registry_unavailable",
    "too_many_streams",
];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime")
    })
}

fn relay(id: &str, region: &str, lat: f64, lon: f64, ip: [u8; 4]) -> RelayRecord {
    let now_ms = geoturn_shared::clock::unix_ms();
    let addr = |port| SocketAddr::from((ip, port));
    RelayRecord {
        id: id.into(),
        region: region.into(),
        lat,
        lon,
        addresses: RelayAddrs {
            udp: vec![addr(3478)],
            tcp: vec![addr(3478)],
            tls: vec![addr(5349)],
            host: None,
        },
        capacity_allocations: 10_000,
        capacity_mbps: 1_000,
        allocations: 10,
        bps_in: 1_000_000,
        bps_out: 1_000_000,
        pps_in: 100,
        pps_out: 100,
        cpu: 0.1,
        state: RelayState::Active,
        version: "fuzz".into(),
        started_at_ms: now_ms,
        updated_at_ms: now_ms,
        drain_deadline_ms: None,
    }
}

/// The state `geoturn_api::start` builds for `--registry memory`, without the listener and
/// the background tasks (snapshot refresh, secret reloads), which requests do not need.
async fn build_state(rate_limit: f64) -> Arc<AppState> {
    let options = ApiOptions {
        auth_secrets: vec!["fuzz-turn-secret".into()],
        api_keys: vec![format!("app:{API_KEY}")],
        admin_keys: vec![format!("ops:{ADMIN_KEY}")],
        jwt_hs256_secret: Some(JWT_SECRET.into()),
        jwt_issuer: Some("https://issuer.example".into()),
        jwt_audience: Some("geoturn".into()),
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        cors_origins: vec!["https://app.example".into()],
        anycast_urls: vec!["turn:global.example.com:3478?transport=udp".into()],
        default_region: Some("eu-central".into()),
        rate_limit: Some(rate_limit),
        rate_burst: Some(3),
        ..ApiOptions::default()
    };
    let config = options.resolve().expect("the fuzz API config resolves");
    assert!(
        config
            .auth
            .authenticate(
                Some(&format!("Bearer {JWT}")),
                geoturn_shared::clock::unix_secs()
            )
            .is_ok(),
        "the fuzz JWT verifies"
    );
    let registry = Registry::Memory(MemoryRegistry::new());
    // Records are listed for a day; the snapshot is read once, so heartbeat ages stay ~0.
    let ttl = Duration::from_secs(86_400);
    for r in [
        relay(RELAY_ID, "eu-central", 50.11, 8.68, [198, 51, 100, 10]),
        relay("iad-1", "us-east", 38.95, -77.45, [203, 0, 113, 20]),
    ] {
        registry
            .heartbeat(&r, ttl)
            .await
            .expect("a valid relay record");
    }
    let geo = GeoIp::open(&[]).expect("no GeoIP database");
    // As `start` for a memory registry: registry-backed secrets (rotation works), the static
    // secret minting until one is rotated in.
    let secrets = ApiSecrets::new(config.static_secrets.clone(), true);
    secrets
        .reload(&registry)
        .await
        .expect("the memory registry loads secrets");
    let snapshot = Arc::new(SnapshotStore::default());
    snapshot.set_recovery_grace(config.rank.stale_after);
    assert!(
        snapshot.refresh(&registry).await,
        "the memory registry lists relays"
    );
    let limiter = RateLimiter::new(config.rate_limit, config.rate_burst, LIMITED_KEYS);
    let auth = std::sync::RwLock::new(Arc::new(config.auth.clone()));
    let history = std::sync::Mutex::new(geoturn_api::history::History::new(config.history_step));
    Arc::new(AppState {
        config,
        registry,
        geo,
        secrets,
        snapshot,
        limiter,
        metrics: ApiMetrics::default(),
        started: Instant::now(),
        stopping: tokio::sync::watch::Sender::new(false),
        auth,
        history,
        measured: geoturn_api::measured::MeasuredCache::default(),
    })
}

/// The two routers: rate limiting off (most inputs, so callers are not refused after a few
/// executions), and on (1 request/s, burst 3).
#[derive(Default)]
struct Routers {
    open: Option<Router>,
    limited: Option<Router>,
}

thread_local! {
    static ROUTERS: RefCell<Routers> = RefCell::new(Routers::default());
}

fn get_router(limited: bool) -> Router {
    ROUTERS.with(|r| {
        let mut r = r.borrow_mut();
        let slot = if limited { &mut r.limited } else { &mut r.open };
        slot.get_or_insert_with(|| {
            router(runtime().block_on(build_state(if limited { 1.0 } else { 0.0 })))
        })
        .clone()
    })
}

fn reset_router(limited: bool) {
    ROUTERS.with(|r| {
        let mut r = r.borrow_mut();
        if limited {
            r.limited = None;
        } else {
            r.open = None;
        }
    });
}

/// Reads the input front to back; missing bytes are zeros / empty.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.byte()).min(self.0.len());
        let (c, rest) = self.0.split_at(n);
        self.0 = rest;
        c
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A path from the real routes, `{}` taking the fuzzed segment.
const PATHS: &[&str] = &[
    "/v1/ice-servers",
    "/v1/turn-rest",
    "/v1/turn/keys/app/credentials/generate-ice-servers",
    "/v1/turn/keys/{}/credentials/generate-ice-servers",
    "/v1/relays",
    "/v1/admin/secrets",
    "/v1/admin/secrets/rotate",
    "/v1/admin/users/{}/revoke",
    "/v1/admin/relays/fra-1/drain",
    "/v1/admin/relays/{}/drain",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/dashboard",
    "/dashboard/app.js",
    "/dashboard/{}",
    "/v1/events",
    "/v1/client.js",
    "/{}",
];

const METHODS: &[Method] = &[
    Method::GET,
    Method::POST,
    Method::HEAD,
    Method::OPTIONS,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::CONNECT,
    Method::TRACE,
];

/// The request an input makes (parts, body, and whether the rate-limited router takes it), or
/// none when its bytes cannot make one.
fn build(data: &[u8]) -> Option<(axum::http::request::Parts, Vec<u8>, bool)> {
    let mut input = Input(data);
    let method_sel = input.byte();
    let path_sel = input.byte();
    let auth_sel = input.byte();
    let flags = input.byte();
    let peer_sel = input.byte();
    let segment = input.chunk();
    let query = input.chunk();
    let method_text = input.chunk();
    let auth_text = input.chunk();
    let xff = input.chunk();
    let content_type = input.chunk();
    let origin = input.chunk();
    let body = input.0;

    let method = match METHODS.get(usize::from(method_sel) % (METHODS.len() + 1)) {
        Some(m) => m.clone(),
        None => Method::from_bytes(method_text).ok()?,
    };

    // The path: a real route (with the segment where it takes one, else appended to it) or the
    // segment alone; then the query, if any. Bytes an URI cannot hold make no request (hyper
    // would refuse them before the router).
    let mut path = match PATHS.get(usize::from(path_sel) % (PATHS.len() + 1)) {
        Some(p) if p.contains("{}") => p.replace("{}", &text(segment)),
        Some(p) if path_sel & 0x80 != 0 => format!("{p}{}", text(segment)),
        Some(p) => (*p).to_owned(),
        None => text(segment),
    };
    if !query.is_empty() || flags & 0x01 != 0 {
        path.push('?');
        path.push_str(&text(query));
    }
    if auth_sel % 8 == 6 {
        // The TURN REST draft's way: the API key in the query.
        path.push_str(if path.contains('?') { "&key=" } else { "?key=" });
        path.push_str(API_KEY);
    }

    let mut request = Request::builder()
        .method(method)
        .uri(path.as_str())
        .body(())
        .ok()?;
    let headers = request.headers_mut();
    let authorization = match auth_sel % 8 {
        1 => Some(format!("Bearer {API_KEY}").into_bytes()),
        2 => Some(format!("Bearer {ADMIN_KEY}").into_bytes()),
        3 => Some(format!("Bearer {JWT}").into_bytes()),
        4 => Some(auth_text.to_vec()),
        5 => Some([b"Bearer ", auth_text].concat()),
        7 => Some([format!("bearer {ADMIN_KEY}").as_bytes(), auth_text].concat()),
        _ => None,
    };
    if let Some(v) = authorization.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
        headers.insert(header::AUTHORIZATION, v);
    }
    match flags >> 1 & 0x03 {
        1 => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        2 => {
            if let Ok(v) = HeaderValue::from_bytes(content_type) {
                headers.insert(header::CONTENT_TYPE, v);
            }
        }
        _ => {}
    }
    if flags & 0x08 != 0
        && let Ok(v) = HeaderValue::from_bytes(xff)
    {
        headers.append("x-forwarded-for", v);
    }
    match flags >> 4 & 0x03 {
        1 => {
            headers.insert(
                header::ORIGIN,
                HeaderValue::from_static("https://app.example"),
            );
        }
        2 => {
            if let Ok(v) = HeaderValue::from_bytes(origin) {
                headers.insert(header::ORIGIN, v);
            }
        }
        3 => {
            // A CORS preflight from the allowed origin.
            headers.insert(
                header::ORIGIN,
                HeaderValue::from_static("https://app.example"),
            );
            headers.insert(
                header::ACCESS_CONTROL_REQUEST_METHOD,
                HeaderValue::from_static("POST"),
            );
            headers.insert(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                HeaderValue::from_static("authorization, content-type"),
            );
        }
        _ => {}
    }
    let limited = flags & 0x40 != 0;
    // Past the body limit (16 KiB): more than libFuzzer's default input length. Two bits, so
    // only one input in four pays for 16 KiB.
    let body = if flags & 0x80 != 0 && peer_sel & 0x80 != 0 {
        let mut big = body.to_vec();
        big.resize(MAX_BODY + 1, b' ');
        big
    } else {
        body.to_vec()
    };
    // The socket peer: a trusted proxy (X-Forwarded-For is believed), or a client.
    let peer = match peer_sel % 4 {
        0 => SocketAddr::from(([10, 1, 2, 3], 443)),
        1 => SocketAddr::from(([198, 51, 100, 77], 50_000)),
        2 => "[::1]:443".parse().unwrap(),
        _ => "[2001:db8::77]:50000".parse().unwrap(),
    };
    let (mut parts, ()) = request.into_parts();
    parts.extensions.insert(ConnectInfo(peer));
    Some((parts, body, limited))
}

/// The request of `data`, for a failure message (built again: only failures pay for it).
fn describe(data: &[u8]) -> String {
    match build(data) {
        Some((parts, body, limited)) => {
            let peer = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0);
            format!(
                "{} {} {:?} peer={peer:?} limited={limited} body({} bytes)={:?}",
                parts.method,
                parts.uri,
                parts.headers,
                body.len(),
                String::from_utf8_lossy(&body[..body.len().min(2000)])
            )
        }
        None => "no request".into(),
    }
}

/// Known findings, reported (not fixed here), tolerated so the campaign goes on past them;
/// set `API_ROUTER_STRICT=1` to fail on them again:
///
/// - A path parameter that percent-decodes to invalid UTF-8 (`GET /dashboard/%FF`,
///   `POST /v1/turn/keys/%FF/credentials/generate-ice-servers`, and with an admin key
///   `POST /v1/admin/users/%FF/revoke`, `POST /v1/admin/relays/%FF/drain`) is refused by
///   axum's `Path` extractor with `400 text/plain` "Invalid URL: Invalid UTF-8 in `…`", not
///   the JSON error shape.
/// - `/v1/client.js` is routed after the JSON 405 fallback and the layers, so any method but
///   GET/HEAD gets axum's bare `405` (no body, no Content-Type).
fn known_finding(
    status: StatusCode,
    content_type: &str,
    body: &[u8],
    head: bool,
    path: &str,
) -> bool {
    // HEAD answers carry no body: the percent-encoded path says it.
    let path_utf8 = status == StatusCode::BAD_REQUEST
        && content_type.starts_with("text/plain")
        && if head {
            path.contains('%')
        } else {
            body.starts_with(b"Invalid URL: ")
        };
    let client_js_405 = status == StatusCode::METHOD_NOT_ALLOWED
        && path == "/v1/client.js"
        && content_type.is_empty()
        && body.is_empty();
    path_utf8 || client_js_405
}

fn strict() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("API_ROUTER_STRICT").is_some_and(|v| v != "0"))
}

fn is_json_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "application/problem+json"
}

fuzz_target!(|data: &[u8]| {
    let Some((parts, body, limited)) = build(data) else {
        return;
    };
    let request = Request::from_parts(parts, Body::from(body));
    let head = request.method() == Method::HEAD;
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let app = get_router(limited);
    runtime().block_on(async {
        let response = app
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        // An event stream never ends: drop it unread (that gives its slot back).
        let streaming = content_type.starts_with("text/event-stream");
        let body = if streaming {
            drop(response);
            Vec::new()
        } else {
            axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("a buffered body")
                .to_vec()
        };
        let json = (is_json_type(&content_type) && !head)
            .then(|| serde_json::from_slice::<serde_json::Value>(&body));
        let shown = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();

        if status.is_server_error() {
            let code = json
                .as_ref()
                .and_then(|j| j.as_ref().ok())
                .and_then(|j| j.pointer("/error/code"))
                .and_then(|c| c.as_str())
                .map(str::to_owned);
            let documented = status == StatusCode::SERVICE_UNAVAILABLE
                && (code.as_deref().is_some_and(|c| DOCUMENTED_503.contains(&c))
                    || (path == "/readyz" && method == Method::GET)
                    || head);
            assert!(
                documented,
                "{status} (code {code:?}) for {}\nresponse {content_type:?}: {shown}",
                describe(data)
            );
        }
        if status.is_client_error()
            && !(known_finding(status, &content_type, &body, head, &path) && !strict())
        {
            assert!(
                is_json_type(&content_type),
                "{status} without a JSON content type ({content_type:?}) for {}\nresponse: {shown}",
                describe(data)
            );
        }
        if let Some(Err(e)) = &json {
            panic!(
                "{status} labelled {content_type:?} does not parse ({e}) for {}\nresponse: {shown}",
                describe(data)
            );
        }
        // Requests that changed the state for good: start the next input from a fresh one.
        let mutating = method == Method::POST
            && status.is_success()
            && (path.ends_with("/rotate") || path.ends_with("/revoke") || path.ends_with("/drain"));
        if mutating {
            reset_router(limited);
        }
    });
});
