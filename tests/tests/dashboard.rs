//! The operators' dashboard in a real browser: a `redis-server`, three `geoturn relay` processes
//! in three regions, `geoturn api`, and Debian's headless Chromium driven by `playwright-core`
//! (`tests/browser/dashboard.mjs`, run with node). Two page loads:
//!
//! 1. `fleet`: the table, map and region totals show the three registrations within 3 s of page
//!    load; a key without the admin scope gets its 403 shown; a relay SIGKILLed turns stale, then
//!    leaves; Drain (confirmed) on another shows it draining, and that relay process exits; Redis
//!    frozen (SIGSTOP) shows the registry unreachable, and readable again after SIGCONT.
//! 2. `scale`: 500 synthetic records written straight into Redis render within a few seconds,
//!    sort, and the filter box narrows them.
//!
//!    Then, at the end of (1): the history charts hold the API's `/v1/history` points and keep
//!    those of before a reload; a relay row's link opens that relay's history, a killed relay's
//!    too; at 1280x800 (the window of both phases) the page never scrolls sideways and every
//!    Drain button is in view; at 1000 px the table scrolls inside its card.
//!
//! A third test checks `GET /v1/history` without a browser: authenticated as `/v1/relays`,
//! bounded (1 000 relays, 100 regions), shaped as documented.
//!
//! Screenshots go to `target/test-artifacts/dashboard/`. The browser side needs
//! `npm ci --prefix tests/browser` (CI runs it) and `/usr/bin/chromium`; without them this test
//! fails with the command to run, never skips.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use geoturn_shared::registry::{Registry, RelayAddrs, RelayRecord, RelayState};
use geoturn_tests::http::request;
use geoturn_tests::process::{ChildGuard, geoturn_bin, require_tool};
use geoturn_tests::redis::{RedisServer, free_port};
use serde_json::{Value, json};

const APP_KEY: &str = "app-key-0123456789abcdef";
const ADMIN_KEY: &str = "ops-key-0123456789abcdef";
const SECRETS_KEY: &str = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a";
const HEARTBEAT: f64 = 0.3;
/// Longest run of one browser phase (the script has its own, shorter, limit).
const NODE_TIMEOUT: Duration = Duration::from_secs(150);
/// Synthetic records for the scale phase.
const SYNTHETIC: usize = 500;
/// The APIs' `--history-step-ms`: a point a second, so a test minute holds 60 of them.
const HISTORY_STEP_MS: u64 = 1000;
/// When the synthetic relays "started", before the test.
const STARTED_AGO_MS: u64 = 3_600_000;

struct Relay {
    id: &'static str,
    region: &'static str,
    lat: f64,
    lon: f64,
    child: ChildGuard,
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// node ≥ 20, playwright-core installed by `npm ci`, and Debian's Chromium; fails with the fix.
fn browser_tools() -> (PathBuf, PathBuf) {
    let node = require_tool(
        "node",
        "install Node.js 20 or newer (`apt-get install -y --no-install-recommends nodejs npm`)",
    );
    let version = Command::new(&node).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 20,
        "node {version} is too old: playwright-core needs Node.js 20 or newer"
    );
    let playwright = browser_dir().join("node_modules/playwright-core/package.json");
    assert!(
        playwright.is_file(),
        "{} is missing: run `npm ci --prefix tests/browser` (CI does) to install playwright-core",
        playwright.display()
    );
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        chromium.is_file(),
        "{} not found: install Debian's Chromium with `apt-get install -y \
         --no-install-recommends chromium` (never a downloaded browser), or set CHROMIUM",
        chromium.display()
    );
    (node, chromium)
}

/// `target/test-artifacts/dashboard/`, emptied of earlier screenshots.
fn artifacts_dir() -> PathBuf {
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .parent()
        .and_then(|deps| deps.parent())
        .and_then(|profile| profile.parent())
        .unwrap();
    let dir = target.join("test-artifacts").join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "png" || e == "json") {
            std::fs::remove_file(path).unwrap();
        }
    }
    dir
}

/// A log file for a child's stderr (shown when a wait times out).
fn log_file(logs: &Path, name: &str) -> std::fs::File {
    std::fs::File::create(logs.join(format!("{name}.log"))).unwrap()
}

/// Every child log under `logs`, for a failure message.
fn dump_logs(logs: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(logs).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        out.push_str(&format!("\n--- {} (last lines)\n", path.display()));
        for line in tail.iter().rev() {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn start_relay(
    redis: &RedisServer,
    logs: &Path,
    id: &'static str,
    region: &'static str,
    lat: f64,
    lon: f64,
) -> Relay {
    // A free port probed here can be taken by a parallel test before the relay binds it
    // (UDP and TCP both): start again on other ports if the relay exits at once.
    let mut attempt = 0;
    let child = loop {
        attempt += 1;
        let (udp, http) = (geoturn_tests::free_udp_port(), free_port());
        let mut child = ChildGuard::spawn(
            Command::new(geoturn_bin())
                .args(["relay", "--listen", &format!("127.0.0.1:{udp}")])
                .args(["--http", &format!("127.0.0.1:{http}")])
                .args(["--node-id", id, "--region", region])
                .args(["--lat", &lat.to_string(), "--lon", &lon.to_string()])
                .args(["--capacity-allocations", "5000", "--capacity-mbps", "2000"])
                .args(["--registry", &redis.url()])
                .args(["--heartbeat", &HEARTBEAT.to_string()])
                .args(["--drain-timeout", "30"])
                .env("GEOTURN_SECRETS_KEY", SECRETS_KEY)
                .env("GEOTURN_LOG_FORMAT", "text")
                .env("NO_COLOR", "1")
                .env_remove("GEOTURN_AUTH_SECRETS")
                .stdout(Stdio::null())
                .stderr(log_file(logs, id)),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        match child.0.try_wait() {
            Ok(Some(_)) if attempt < 5 => continue,
            _ => break child,
        }
    };
    Relay {
        id,
        region,
        lat,
        lon,
        child,
    }
}

/// `geoturn api` on `redis`, told the relays' heartbeat and its own snapshot refresh period.
fn start_api(
    redis: &RedisServer,
    logs: &Path,
    heartbeat: f64,
    refresh_ms: u64,
) -> (ChildGuard, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = ChildGuard::spawn(
        Command::new(geoturn_bin())
            .args(["api", "--listen", &addr.to_string()])
            .args(["--registry", &redis.url()])
            .args(["--heartbeat", &heartbeat.to_string()])
            .args(["--refresh-ms", &refresh_ms.to_string()])
            .args(["--history-step-ms", &HISTORY_STEP_MS.to_string()])
            .env("GEOTURN_SECRETS_KEY", SECRETS_KEY)
            .env("GEOTURN_API_KEYS", format!("app:{APP_KEY}"))
            .env("GEOTURN_ADMIN_KEYS", format!("ops:{ADMIN_KEY}"))
            .env("NO_COLOR", "1")
            .env_remove("GEOTURN_AUTH_SECRETS")
            .stdout(Stdio::null())
            .stderr(log_file(logs, &format!("api-{}", addr.port()))),
    )
    .unwrap();
    (child, addr)
}

/// Relays the API's `/readyz` counts (not rate limited, so polling it costs no caller budget).
fn ready_relays(api: SocketAddr) -> Option<u64> {
    let r = request(api, "GET", "/readyz", &[], "").ok()?;
    serde_json::from_str::<Value>(&r.body).ok()?["relays"].as_u64()
}

fn wait_for(within: Duration, what: &str, mut pred: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    loop {
        if pred() {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Runs one phase of `dashboard.mjs` and returns its JSON report; fails the test on a failed
/// check, with the script's own message.
fn run_browser(phase: &str, env: &[(&str, String)], shots: &Path) -> Value {
    let (node, chromium) = browser_tools();
    let mut cmd = Command::new(node);
    cmd.arg(browser_dir().join("dashboard.mjs"))
        .current_dir(browser_dir())
        .env("GEOTURN_PHASE", phase)
        .env("GEOTURN_SCREENSHOTS", shots)
        .env("CHROMIUM", chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = ChildGuard::spawn(&mut cmd).unwrap();
    let mut stdout = child.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let status = child
        .wait_timeout(NODE_TIMEOUT)
        .unwrap()
        .unwrap_or_else(|| panic!("dashboard.mjs ({phase}) did not finish in {NODE_TIMEOUT:?}"));
    let out = reader.join().unwrap();
    let report: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("dashboard.mjs ({phase}) printed no JSON ({e}): {out}"));
    std::fs::write(
        shots.join(format!("results-{phase}.json")),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    assert!(
        status.success() && report["ok"] == true,
        "dashboard.mjs ({phase}) failed ({status}): {}",
        report["error"]
    );
    for c in report["checks"].as_array().unwrap() {
        eprintln!(
            "dashboard {phase}: {} in {} ms (limit {} ms)",
            c["name"].as_str().unwrap_or_default(),
            c["ms"],
            c["limitMs"]
        );
    }
    report
}

fn check_names(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Cities relays are placed in for the scale phase: region, latitude, longitude.
const CITIES: &[(&str, f64, f64)] = &[
    ("us-east", 39.0, -77.5),
    ("us-west", 45.6, -121.2),
    ("ca-central", 45.5, -73.6),
    ("sa-east", -23.5, -46.6),
    ("eu-west", 53.3, -6.3),
    ("eu-central", 50.1, 8.7),
    ("eu-north", 59.3, 18.1),
    ("me-central", 25.2, 55.3),
    ("af-south", -33.9, 18.4),
    ("ap-south", 19.1, 72.9),
    ("ap-southeast", 1.35, 103.8),
    ("ap-northeast", 35.7, 139.7),
    ("ap-east", 22.3, 114.2),
    ("au-southeast", -33.9, 151.2),
];

/// `SYNTHETIC` records spread over [`CITIES`] with loads from idle to full; a few draining and a
/// few stale (their `updated_at_ms` 10 s old, as a relay whose clock or heartbeat lags).
fn synthetic_records(now_ms: u64) -> Vec<RelayRecord> {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift64: deterministic, good enough to spread loads.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..SYNTHETIC)
        .map(|i| {
            let (region, lat, lon) = CITIES[i % CITIES.len()];
            let jitter = |r: u64| (r % 400) as f64 / 100.0 - 2.0;
            let capacity_allocations = 2000 + (next() % 4) * 2000;
            // Most relays lightly loaded, some busy, a few nearly full.
            let share = match next() % 20 {
                0 => 0.85 + (next() % 15) as f64 / 100.0,
                1..=3 => 0.5 + (next() % 30) as f64 / 100.0,
                _ => (next() % 45) as f64 / 100.0,
            };
            let allocations = (capacity_allocations as f64 * share) as u64;
            let bps = allocations * (150_000 + next() % 100_000);
            let stale = i % 97 == 5;
            let draining = i % 53 == 7;
            RelayRecord {
                id: format!("syn-{region}-{:03}", i / CITIES.len()),
                region: region.into(),
                lat: (lat + jitter(next())).clamp(-89.0, 89.0),
                lon: (lon + jitter(next())).clamp(-179.0, 179.0),
                addresses: {
                    let ip = std::net::Ipv4Addr::new(198, 51, 100, (i % 250 + 1) as u8);
                    let plain = std::net::SocketAddr::from((ip, 3478));
                    RelayAddrs {
                        udp: vec![plain],
                        tcp: vec![plain],
                        tls: vec![std::net::SocketAddr::from((ip, 5349))],
                        // Every other relay advertises a host name, as with --public-host.
                        host: (i % 2 == 1).then(|| format!("relay-{i}.example.net")),
                    }
                },
                capacity_allocations,
                capacity_mbps: 10_000,
                allocations,
                bps_in: bps / 2,
                bps_out: bps / 2 + next() % 1_000_000,
                pps_in: bps / 2 / 8 / 160,
                pps_out: bps / 2 / 8 / 160,
                cpu: share as f32 * 0.8,
                state: if draining {
                    RelayState::Draining
                } else {
                    RelayState::Active
                },
                version: "0.1.0".into(),
                started_at_ms: now_ms - STARTED_AGO_MS,
                updated_at_ms: if stale { now_ms - 10_000 } else { now_ms },
                drain_deadline_ms: draining.then_some(now_ms + 600_000),
            }
        })
        .collect()
}

/// The tests of this file run one at a time: the browser's timings should not measure the
/// other test's load.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn dashboard_in_chromium_shows_the_fleet_live_its_history_drains_and_scales_to_500_relays() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // Fail early, before starting anything, when the browser side is not installed.
    browser_tools();
    let shots = artifacts_dir();
    let logs = geoturn_tests::temp_dir("dashboard-logs");
    let redis = RedisServer::start();
    // The API first: it creates the first TURN secret, which the relays then load.
    let (_api, api) = start_api(&redis, &logs, HEARTBEAT, 200);
    wait_for(Duration::from_secs(15), "the API to be ready", || {
        ready_relays(api).is_some()
    });
    let mut relays = vec![
        start_relay(&redis, &logs, "fra-1", "eu-central", 50.11, 8.68),
        start_relay(&redis, &logs, "iad-1", "us-east", 39.04, -77.49),
        start_relay(&redis, &logs, "sin-1", "ap-southeast", 1.35, 103.82),
    ];
    let t0 = Instant::now();
    while ready_relays(api) != Some(3) {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "three relays did not register within 15 s (the API counts {:?}):{}",
            ready_relays(api),
            dump_logs(&logs)
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    let registered = t0.elapsed();
    eprintln!("dashboard: three relays registered {registered:?} after start");
    let (kill, drain) = ("iad-1", "fra-1");
    let relay_json: Vec<Value> = relays
        .iter()
        .map(|r| json!({"id": r.id, "region": r.region, "lat": r.lat, "lon": r.lon}))
        .collect();
    let kill_pid = relays.iter().find(|r| r.id == kill).unwrap().child.0.id();

    // Phase 1: three real relays, one killed, one drained from the page.
    let common = |api: SocketAddr| {
        vec![
            ("GEOTURN_API_URL", format!("http://{api}")),
            ("GEOTURN_ADMIN_KEY", ADMIN_KEY.to_owned()),
            ("GEOTURN_APP_KEY", APP_KEY.to_owned()),
            ("GEOTURN_HISTORY_STEP_MS", HISTORY_STEP_MS.to_string()),
        ]
    };
    let mut env = common(api);
    env.extend([
        ("GEOTURN_RELAYS", Value::from(relay_json).to_string()),
        ("GEOTURN_KILL_ID", kill.to_owned()),
        ("GEOTURN_KILL_PID", kill_pid.to_string()),
        ("GEOTURN_DRAIN_ID", drain.to_owned()),
        ("GEOTURN_REDIS_PID", redis.pid().unwrap().to_string()),
    ]);
    let fleet = run_browser("fleet", &env, &shots);
    assert_eq!(check_names(&fleet).len(), 15, "{fleet}");
    assert_eq!(fleet["remaining"], json!(["sin-1"]));

    // The page's SIGKILL hit our child; the drained relay exited by itself, cleanly.
    let killed = relays.iter_mut().find(|r| r.id == kill).unwrap();
    let status = killed
        .child
        .wait_timeout(Duration::from_secs(5))
        .unwrap()
        .expect("the killed relay is gone");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    let drained = relays.iter_mut().find(|r| r.id == drain).unwrap();
    let status = drained
        .child
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("the drained relay exited");
    assert!(status.success(), "drained relay exited with {status}");
    // Redis was frozen for a while: sin-1's record may have lapsed until its next heartbeat.
    wait_for(
        Duration::from_secs(5),
        "sin-1 alone in the registry",
        || ready_relays(api) == Some(1),
    );

    // Phase 2: 500 synthetic records, heartbeated from here every second while the page loads
    // them, read by a second API with the production defaults (2 s heartbeats, so stale after
    // 6 s, and a snapshot a second): 500 relays at once at 0.3 s would measure this machine's
    // load, not the dashboard.
    let (_api2, api2) = start_api(&redis, &logs, 2.0, 1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let registry = rt
        .block_on(Registry::connect(&redis.url(), "geoturn:", None))
        .unwrap();
    let records = synthetic_records(geoturn_tests::unix_ms());
    let filter = "sa-east";
    let filter_rows = records.iter().filter(|r| r.region == filter).count();
    let stop = Arc::new(AtomicBool::new(false));
    let beating = {
        let (stop, registry) = (stop.clone(), registry.clone());
        rt.spawn(async move {
            // Bounded: at most 2 minutes, a round every second; the records live 60 s.
            let until = Instant::now() + Duration::from_secs(120);
            let records: Vec<(RelayRecord, u64)> = records
                .into_iter()
                .map(|r| {
                    let lag = r.started_at_ms + STARTED_AGO_MS - r.updated_at_ms;
                    (r, lag)
                })
                .collect();
            let (mut slowest, mut failed) = (Duration::ZERO, 0usize);
            let mut rounds = 0u32;
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                let round = Instant::now();
                // The load swings from round to round (±20 %), so the history charts move.
                let swing = 1.0 + 0.2 * (f64::from(rounds) / 2.0).sin();
                rounds += 1;
                // 50 at a time (the connection pipelines them), each stamped as it is sent. A
                // write that times out on a busy machine is counted, not fatal: the record
                // lives 60 s and the next round rewrites it.
                for chunk in records.chunks(50) {
                    let mut writes = tokio::task::JoinSet::new();
                    for (r, lag) in chunk {
                        let (mut r, lag, registry) = (r.clone(), *lag, registry.clone());
                        r.allocations =
                            ((r.allocations as f64 * swing) as u64).min(r.capacity_allocations);
                        r.bps_in = (r.bps_in as f64 * swing) as u64;
                        r.bps_out = (r.bps_out as f64 * swing) as u64;
                        writes.spawn(async move {
                            r.updated_at_ms = geoturn_tests::unix_ms() - lag;
                            registry.heartbeat(&r, Duration::from_secs(60)).await
                        });
                    }
                    while let Some(written) = writes.join_next().await {
                        if !matches!(written, Ok(Ok(()))) {
                            failed += 1;
                        }
                    }
                }
                slowest = slowest.max(round.elapsed());
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
            (slowest, failed)
        })
    };
    let loaded = wait_for(Duration::from_secs(20), "500 synthetic relays", || {
        ready_relays(api2).is_some_and(|n| n > SYNTHETIC as u64)
    });
    eprintln!("dashboard: {SYNTHETIC} synthetic records visible to the API after {loaded:?}");
    let mut env = common(api2);
    env.extend([
        ("GEOTURN_MIN_ROWS", (SYNTHETIC + 1).to_string()),
        ("GEOTURN_FILTER", filter.to_owned()),
        ("GEOTURN_FILTER_ROWS", filter_rows.to_string()),
    ]);
    let scale = run_browser("scale", &env, &shots);
    stop.store(true, Ordering::Relaxed);
    let (slowest, failed) = rt.block_on(beating).unwrap();
    eprintln!(
        "dashboard: the slowest round of {SYNTHETIC} heartbeats took {slowest:?}; {failed} \
         writes failed"
    );
    assert_eq!(check_names(&scale).len(), 8, "{scale}");
    eprintln!(
        "dashboard: one render of {} rows takes {} ms in the page; screenshots in {}",
        SYNTHETIC + 1,
        scale["renderMs"],
        shots.display()
    );
    for name in [
        "1-initial",
        "2-after-kill",
        "3-after-drain",
        "3b-registry-unreachable",
        "4-500-relays",
        "5-500-relays-filtered",
        "6-history-after-reload",
        "7-relay-history",
        "8-500-relays-1280",
        "9-1000px-card-scrolled",
        "10-history-500-relays",
    ] {
        let path = shots.join(format!("{name}.png"));
        assert!(path.is_file(), "{name}.png");
        eprintln!("dashboard: screenshot {}", path.display());
    }
    drop(relays);
}

/// An open `GET /v1/events` (or its refusal): status, lower-cased head, and the connection with
/// whatever body bytes came with the head.
struct Stream {
    status: u16,
    head: String,
    conn: TcpStream,
    body: Vec<u8>,
}

/// `NAME:KEY` pairs: the app key, then twelve more, for the stream caps.
fn stream_keys() -> Vec<String> {
    std::iter::once(format!("app:{APP_KEY}"))
        .chain((0..12).map(|i| format!("k{i}:stream-key-{i:02}-0123456789abcdef")))
        .collect()
}

fn open_events(api: SocketAddr, key: Option<&str>) -> Stream {
    let mut conn = TcpStream::connect_timeout(&api, Duration::from_secs(2)).unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        conn,
        "GET /v1/events HTTP/1.1\r\nHost: {api}\r\nAccept: text/event-stream\r\n{auth}\r\n"
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "no response head from /v1/events"
        );
        match conn.read(&mut buf) {
            Ok(0) => panic!("/v1/events closed before its head"),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(e) => panic!("/v1/events: {e}"),
        }
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap();
    Stream {
        status,
        head,
        conn,
        body: raw[end + 4..].to_vec(),
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

impl Stream {
    /// Reads until `n` `snapshot` events have arrived (or `within` passed) and returns their data.
    fn events(&mut self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 64 * 1024];
        loop {
            let text = dechunk(&self.body);
            let events: Vec<Value> = text
                .split("\n\n")
                .filter(|block| block.lines().any(|l| l == "event: snapshot"))
                .filter_map(|block| {
                    let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
                    serde_json::from_str(data).ok()
                })
                .collect();
            if events.len() >= n || Instant::now() >= deadline {
                return events;
            }
            match self.conn.read(&mut buf) {
                Ok(0) => return events,
                Ok(k) => self.body.extend_from_slice(&buf[..k]),
                Err(e) if is_timeout(&e) => {}
                Err(e) => panic!("reading /v1/events: {e}"),
            }
        }
    }
}

/// The complete chunks of a chunked body, joined.
fn dechunk(mut raw: &[u8]) -> String {
    let mut out = Vec::new();
    while let Some(i) = raw.windows(2).position(|w| w == b"\r\n") {
        let Ok(size) = usize::from_str_radix(String::from_utf8_lossy(&raw[..i]).trim(), 16) else {
            break;
        };
        let rest = &raw[i + 2..];
        if size == 0 || rest.len() < size + 2 {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        raw = &rest[size + 2..];
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/v1/events` without a browser: authenticated like `/v1/relays`, the same JSON pushed at once
/// and on every refresh, at most 8 streams per caller (429 beyond) and 100 open in all (503
/// with Retry-After beyond, and a place freed when a client goes away); and `/dashboard`'s
/// files with their types and CSP.
#[test]
fn events_stream_is_authenticated_bounded_and_pushes_the_relays_json() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let logs = geoturn_tests::temp_dir("dashboard-events-logs");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _api = ChildGuard::spawn(
        Command::new(geoturn_bin())
            .args(["api", "--listen", &addr.to_string(), "--registry", "memory"])
            .args(["--refresh-ms", "200", "--rate-limit", "0"])
            .env("GEOTURN_AUTH_SECRETS", "events-test-secret-0123456789")
            // Thirteen keys of 8 streams each can fill the process's 100.
            .env("GEOTURN_API_KEYS", stream_keys().join(","))
            .env_remove("GEOTURN_ADMIN_KEYS")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log_file(&logs, "api")),
    )
    .unwrap();
    let t0 = Instant::now();
    while ready_relays(addr).is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the API did not start:{}",
            dump_logs(&logs)
        );
        std::thread::sleep(Duration::from_millis(25));
    }

    // The page and its files: types, CSP, nothing else served under /dashboard/.
    let page = request(addr, "GET", "/dashboard", &[], "").unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.starts_with("default-src 'none'; script-src 'self'"),
        "{csp}"
    );
    for (file, kind) in [
        ("app.js", "text/javascript"),
        ("style.css", "text/css"),
        ("world.svg", "image/svg+xml"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let r = request(addr, "GET", &format!("/dashboard/{file}"), &[], "").unwrap();
        assert_eq!(r.status, 200, "{file}");
        assert!(
            r.header("content-type").unwrap().starts_with(kind),
            "{file}"
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    }
    let missing = request(addr, "GET", "/dashboard/secrets.toml", &[], "").unwrap();
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("not_found"), "{}", missing.body);

    // Authenticated like /v1/relays.
    assert_eq!(open_events(addr, None).status, 401);
    assert_eq!(open_events(addr, Some("not-a-key")).status, 401);

    // The snapshot at once, then again on each refresh, in /v1/relays' shape.
    let t0 = Instant::now();
    let mut first = open_events(addr, Some(APP_KEY));
    assert_eq!(first.status, 200, "{}", first.head);
    assert!(
        first.head.contains("content-type: text/event-stream"),
        "{}",
        first.head
    );
    assert!(
        first.head.contains("cache-control: no-store"),
        "{}",
        first.head
    );
    let events = first.events(3, Duration::from_secs(3));
    let three_after = t0.elapsed();
    assert!(events.len() >= 3, "{events:?}");
    let relays = request(
        addr,
        "GET",
        "/v1/relays",
        &[("Authorization", &format!("Bearer {APP_KEY}"))],
        "",
    )
    .unwrap();
    let relays: Value = serde_json::from_str(&relays.body).unwrap();
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&events[0]), keys(&relays));
    assert_eq!(events[0]["staleAfterMs"], 6000);
    // RFC 3339 with fixed-width fields: text order is time order.
    assert!(events[2]["fetchedAt"].as_str() > events[0]["fetchedAt"].as_str());
    eprintln!("events: 3 snapshots {three_after:?} after connecting");

    // At most 8 streams per caller: the app key's 9th gets 429.
    let mut open = vec![first];
    while open.len() < 8 {
        let s = open_events(addr, Some(APP_KEY));
        assert_eq!(s.status, 200, "stream {}: {}", open.len() + 1, s.head);
        open.push(s);
    }
    let refused = open_events(addr, Some(APP_KEY));
    assert_eq!(refused.status, 429, "{}", refused.head);
    // At most 100 in all, whoever holds them; the 101st is refused with Retry-After; one
    // closed frees a place.
    let keys: Vec<String> = stream_keys()
        .iter()
        .skip(1)
        .map(|k| k.split_once(':').unwrap().1.to_owned())
        .collect();
    for key in keys.iter().cycle().take(92) {
        let s = open_events(addr, Some(key));
        assert_eq!(s.status, 200, "stream {}: {}", open.len() + 1, s.head);
        open.push(s);
    }
    assert_eq!(open.len(), 100);
    let last_key = keys.last().unwrap();
    let refused = open_events(addr, Some(last_key));
    assert_eq!(refused.status, 503, "{}", refused.head);
    assert!(refused.head.contains("retry-after: 5"), "{}", refused.head);
    drop(open.pop());
    let t0 = Instant::now();
    loop {
        // The server notices the closed connection at its next write (a refresh later).
        let s = open_events(addr, Some(last_key));
        if s.status == 200 {
            break;
        }
        assert_eq!(s.status, 503);
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no stream place freed after a client left"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "events: a place was free again {:?} after a client left",
        t0.elapsed()
    );
}

const JWT_SECRET: &str = "history-jwt-secret-0123456789abcdef";

/// An HS256 JWT for `sub`, valid for 5 minutes.
fn jwt(sub: &str) -> String {
    use base64::Engine as _;
    use hmac::{KeyInit as _, Mac as _};
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let now = geoturn_tests::unix_secs();
    let claims =
        json!({"sub": sub, "iss": "geoturn-test", "aud": "geoturn", "exp": now + 300, "iat": now});
    let input = format!(
        "{}.{}",
        b64(&json!({"alg": "HS256", "typ": "JWT"})),
        b64(&claims)
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(JWT_SECRET.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{input}.{sig}")
}

/// Relays and regions written for the history test: five of each beyond the API's caps.
const HISTORY_RELAYS: u64 = 1_005;
const HISTORY_REGIONS: u64 = 105;

fn history_record(i: u64, now_ms: u64) -> RelayRecord {
    let ip = std::net::Ipv4Addr::new(198, 51, 100, (i % 250 + 1) as u8);
    RelayRecord {
        id: format!("h-{i:04}"),
        region: format!("g-{:03}", i % HISTORY_REGIONS),
        lat: 0.0,
        lon: 0.0,
        addresses: RelayAddrs {
            udp: vec![SocketAddr::from((ip, 3478))],
            ..Default::default()
        },
        capacity_allocations: 100_000,
        capacity_mbps: 10_000,
        allocations: i,
        bps_in: i * 1000,
        bps_out: i * 2000,
        pps_in: 0,
        pps_out: 0,
        cpu: 0.1,
        state: RelayState::Active,
        version: "0.1.0".into(),
        started_at_ms: now_ms - 60_000,
        updated_at_ms: now_ms,
        drain_deadline_ms: None,
    }
}

fn sorted_keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

/// Checks one series as documented: at most 360 points of the seven fields, `at` RFC 3339 with
/// milliseconds on whole steps (1 s here), in increasing order. Returns the last point.
fn check_series(points: &Value, what: &str) -> Value {
    let points = points
        .as_array()
        .unwrap_or_else(|| panic!("{what}: {points}"));
    assert!(
        !points.is_empty() && points.len() <= 360,
        "{what}: {} points",
        points.len()
    );
    let mut last_at = String::new();
    for p in points {
        assert_eq!(
            sorted_keys(p),
            [
                "active",
                "allocations",
                "at",
                "bpsIn",
                "bpsOut",
                "draining",
                "stale"
            ],
            "{what}: {p}"
        );
        let at = p["at"].as_str().unwrap().to_owned();
        // 2026-01-02T03:04:05.000Z: fixed width, so text order is time order.
        assert_eq!(at.len(), 24, "{what}: {at}");
        assert!(
            at.ends_with(".000Z") && at.as_bytes()[10] == b'T',
            "{what}: {at}"
        );
        assert!(at > last_at, "{what}: {at} after {last_at}");
        last_at = at;
    }
    points.last().unwrap().clone()
}

/// `GET /v1/history` without a browser: authenticated as `/v1/relays` (401 without a valid key,
/// 403 for a JWT), bounded (1 005 relays in 105 regions: 1 000 and 100 get a series, the rest
/// are counted as untracked), and shaped as documented (camelCase, RFC 3339, sums that match
/// the registry's records); `?relay=` gives one relay's series, 404 for one without.
#[test]
fn history_is_authenticated_bounded_and_shaped_as_documented() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let logs = geoturn_tests::temp_dir("dashboard-history-logs");
    let redis = RedisServer::start();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _api = ChildGuard::spawn(
        Command::new(geoturn_bin())
            .args([
                "api",
                "--listen",
                &addr.to_string(),
                "--registry",
                &redis.url(),
            ])
            .args(["--refresh-ms", "200", "--rate-limit", "0"])
            .args(["--history-step-ms", &HISTORY_STEP_MS.to_string()])
            // Stale after 90 s: the records written once stay active for the whole test.
            .args(["--heartbeat", "30"])
            .args(["--jwt-issuer", "geoturn-test", "--jwt-audience", "geoturn"])
            .env("GEOTURN_JWT_HS256_SECRET", JWT_SECRET)
            .env("GEOTURN_AUTH_SECRETS", "history-test-secret-0123456789")
            .env("GEOTURN_API_KEYS", format!("app:{APP_KEY}"))
            .env_remove("GEOTURN_ADMIN_KEYS")
            .env_remove("GEOTURN_SECRETS_KEY")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log_file(&logs, "api")),
    )
    .unwrap();
    let t0 = Instant::now();
    while ready_relays(addr).is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the API did not start:{}",
            dump_logs(&logs)
        );
        std::thread::sleep(Duration::from_millis(25));
    }

    // 1 005 records, written once (they live 60 s), 50 at a time.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let now = geoturn_tests::unix_ms();
    let records: Vec<RelayRecord> = (0..HISTORY_RELAYS)
        .map(|i| history_record(i, now))
        .collect();
    rt.block_on(async {
        let registry = Registry::connect(&redis.url(), "geoturn:", None)
            .await
            .unwrap();
        for chunk in records.chunks(50) {
            let mut writes = tokio::task::JoinSet::new();
            for r in chunk {
                let (r, registry) = (r.clone(), registry.clone());
                writes.spawn(async move { registry.heartbeat(&r, Duration::from_secs(60)).await });
            }
            while let Some(written) = writes.join_next().await {
                written.unwrap().unwrap();
            }
        }
    });
    wait_for(
        Duration::from_secs(15),
        "the API to list every record",
        || ready_relays(addr) == Some(HISTORY_RELAYS),
    );

    let get = |path: &str, auth: Option<&str>| {
        let header = auth.map(|a| format!("Bearer {a}"));
        let headers: Vec<(&str, &str)> = header
            .as_deref()
            .map(|h| vec![("Authorization", h)])
            .unwrap_or_default();
        request(addr, "GET", path, &headers, "").unwrap()
    };

    // Authenticated as /v1/relays: 401 without a (valid) key, 403 for a JWT caller.
    for (auth, status) in [(None, 401), (Some("not-a-key"), 401)] {
        let r = get("/v1/history", auth);
        assert_eq!(r.status, status, "{auth:?}: {}", r.body);
    }
    let token = jwt("alice");
    assert_eq!(get("/v1/relays", Some(&token)).status, 403);
    let r = get("/v1/history", Some(&token));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("api_key_required"), "{}", r.body);

    // Three steps recorded with every record in them.
    let expected_allocations: u64 = records.iter().map(|r| r.allocations).sum();
    let mut body = Value::Null;
    wait_for(
        Duration::from_secs(10),
        "three full steps of history",
        || {
            let r = get("/v1/history", Some(APP_KEY));
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.header("cache-control"), Some("no-store"));
            assert!(
                r.header("content-type")
                    .unwrap()
                    .starts_with("application/json")
            );
            body = serde_json::from_str(&r.body).unwrap();
            body["fleet"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["allocations"] == expected_allocations)
                .count()
                >= 3
        },
    );
    let head = [
        "generatedAt",
        "maxRegions",
        "maxRelays",
        "points",
        "stepMs",
        "untrackedRegions",
        "untrackedRelays",
        "windowMs",
    ];
    let mut keys: Vec<&str> = head.to_vec();
    keys.extend(["fleet", "regions"]);
    keys.sort();
    assert_eq!(sorted_keys(&body), keys, "{body}");
    assert_eq!(body["stepMs"], HISTORY_STEP_MS);
    assert_eq!(body["points"], 360);
    assert_eq!(body["windowMs"], HISTORY_STEP_MS * 360);
    assert_eq!(body["maxRelays"], 1000);
    assert_eq!(body["maxRegions"], 100);
    // Bounded: five relays and five regions beyond the caps have no series.
    assert_eq!(body["untrackedRelays"], HISTORY_RELAYS - 1000);
    assert_eq!(body["untrackedRegions"], HISTORY_REGIONS - 100);
    assert!(body["generatedAt"].as_str().unwrap().ends_with('Z'));
    let last = check_series(&body["fleet"], "fleet");
    assert_eq!(last["allocations"], expected_allocations);
    assert_eq!(last["bpsIn"], expected_allocations * 1000);
    assert_eq!(last["bpsOut"], expected_allocations * 2000);
    assert_eq!(
        (&last["active"], &last["draining"], &last["stale"]),
        (&json!(HISTORY_RELAYS), &json!(0), &json!(0))
    );
    let regions = body["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 100);
    for region in regions {
        assert_eq!(sorted_keys(region), ["points", "region"]);
        let name = region["region"].as_str().unwrap();
        let last = check_series(&region["points"], name);
        let mine: Vec<&RelayRecord> = records.iter().filter(|r| r.region == name).collect();
        assert_eq!(
            last["allocations"],
            mine.iter().map(|r| r.allocations).sum::<u64>(),
            "{name}"
        );
        assert_eq!(last["active"], mine.len(), "{name}");
    }

    // One relay's series; one beyond the cap has none; bad queries are 400s.
    let r = get("/v1/history?relay=h-0042", Some(APP_KEY));
    assert_eq!(r.status, 200, "{}", r.body);
    let one: Value = serde_json::from_str(&r.body).unwrap();
    let mut keys: Vec<&str> = head.to_vec();
    keys.push("relay");
    keys.sort();
    assert_eq!(sorted_keys(&one), keys, "{one}");
    assert_eq!(sorted_keys(&one["relay"]), ["id", "points", "region"]);
    assert_eq!(one["relay"]["id"], "h-0042");
    assert_eq!(
        one["relay"]["region"],
        format!("g-{:03}", 42 % HISTORY_REGIONS)
    );
    let last = check_series(&one["relay"]["points"], "h-0042");
    assert_eq!(
        (&last["allocations"], &last["bpsOut"], &last["active"]),
        (&json!(42), &json!(84_000), &json!(1))
    );
    let beyond = get("/v1/history?relay=h-1004", Some(APP_KEY));
    assert_eq!(beyond.status, 404, "{}", beyond.body);
    assert!(beyond.body.contains("unknown_relay"), "{}", beyond.body);
    for bad in ["/v1/history?relay=", "/v1/history?region=g-000"] {
        let r = get(bad, Some(APP_KEY));
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    eprintln!(
        "history: {} fleet points; the fleet answer for {HISTORY_RELAYS} relays in 100 regions is {} bytes",
        body["fleet"].as_array().unwrap().len(),
        serde_json::to_string(&body).unwrap().len()
    );
}
