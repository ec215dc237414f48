//! Traces over OTLP: `geoturn api` and `geoturn relay` started with `--otlp-endpoint` pointing at
//! a minimal OTLP/HTTP collector in this test, which keeps every export body. The API's request
//! spans carry the routing decision; the relay's allocation spans open and close with the
//! allocation.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use geoturn_tests::client::TurnClient;
use geoturn_tests::http::request;
use geoturn_tests::process::{ChildGuard, geoturn_bin};
use geoturn_tests::redis::RedisServer;

/// Bodies POSTed to /v1/traces.
type Exports = Arc<Mutex<Vec<Vec<u8>>>>;

/// Accepts OTLP/HTTP exports (protobuf) on a loopback port and answers 200 to each.
fn collector() -> (SocketAddr, Exports) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let exports: Exports = Arc::default();
    let store = exports.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(stream) = stream else { continue };
            let store = store.clone();
            std::thread::spawn(move || serve(stream, &store));
        }
    });
    (addr, exports)
}

fn serve(stream: std::net::TcpStream, store: &Exports) {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    // Keep-alive: one request after another on the same connection, bounded.
    for _ in 0..1000 {
        let mut path = String::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if path.is_empty() {
                path = line.split(' ').nth(1).unwrap_or_default().to_owned();
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap();
            }
        }
        assert!(length <= 16 << 20, "export of {length} bytes");
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        assert_eq!(path, "/v1/traces");
        store.lock().unwrap().push(body);
        writer
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
            )
            .unwrap();
    }
}

fn contains(exports: &Exports, needle: &str) -> bool {
    exports
        .lock()
        .unwrap()
        .iter()
        .any(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

#[test]
fn api_requests_and_relay_allocations_are_exported_as_spans() {
    let (collector, exports) = collector();
    let endpoint = format!("http://{collector}");
    let (udp, http) = (
        geoturn_tests::free_udp_port(),
        geoturn_tests::free_tcp_port(),
    );
    let api_port = geoturn_tests::free_tcp_port();
    let api: SocketAddr = format!("127.0.0.1:{api_port}").parse().unwrap();
    let secret = "otlp-test-secret-0123456789";
    let redis = RedisServer::start();

    let mut relay = ChildGuard::spawn(
        Command::new(geoturn_bin())
            .args(["relay", "--listen", &format!("127.0.0.1:{udp}")])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--otlp-endpoint", &endpoint])
            .args(["--registry", &redis.url(), "--heartbeat", "0.2"])
            .env("GEOTURN_AUTH_SECRETS", secret)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let mut api_child = ChildGuard::spawn(
        Command::new(geoturn_bin())
            .args(["api", "--listen", &api.to_string(), "--auth-secret", secret])
            .args(["--api-key", "tracer:trace-key-0123456789"])
            .args(["--registry", &redis.url(), "--refresh-ms", "100"])
            .args(["--otlp-endpoint", &endpoint])
            .env_remove("GEOTURN_API_KEYS")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();

    // Until the relay's first heartbeat the answer is 503 no_relays; then 200 with the relay,
    // and the request span records which relays were chosen.
    let t0 = Instant::now();
    loop {
        let r = request(
            api,
            "GET",
            "/v1/ice-servers",
            &[("Authorization", "Bearer trace-key-0123456789")],
            "",
        );
        if r.is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no ICE servers in 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let cred = geoturn_shared::RestCredential::mint(
        secret.as_bytes(),
        "traced",
        geoturn_tests::unix_secs(),
        300,
    );
    let server = format!("127.0.0.1:{udp}").parse().unwrap();
    let t0 = Instant::now();
    let mut c = loop {
        let mut c = TurnClient::new(server, &cred.username, &cred.password).unwrap();
        if c.allocate().is_ok() {
            break c;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the relay never allocated"
        );
    };
    c.refresh(0).unwrap();

    // Spans are batched; stopping each process flushes what is queued.
    api_child.terminate();
    relay.terminate();
    for child in [&mut api_child, &mut relay] {
        assert!(
            child
                .wait_timeout(Duration::from_secs(15))
                .unwrap()
                .is_some_and(|s| s.success())
        );
    }
    for needle in [
        "geoturn-api",
        "GET /v1/ice-servers",
        "http.response.status_code",
        "geoturn.relays",
        "geoturn-relay",
        "allocation",
        "relayed",
    ] {
        assert!(
            contains(&exports, needle),
            "{needle:?} not in any of {} exports",
            exports.lock().unwrap().len()
        );
    }
}
