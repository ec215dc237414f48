//! End to end: three regions of relays on distinct loopback addresses (two relays in one
//! region), one `redis-server`, the credential API with a fixture GeoIP database, and a live
//! call (two TURN clients exchanging packets every 10 ms through the relay the API ranked
//! first) while operators rotate the secret, drain the relay carrying the call, lose a relay
//! to SIGKILL, lose Redis, and bad input is thrown at the relays and the API. Every fault
//! prints its measured figure; `tests/e2e/run.sh` runs this by hand with the output shown.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use geoturn_tests::client::{Received, TurnClient, TurnError};
use geoturn_tests::http::{HttpResponse, request};
use geoturn_tests::process::{ChildGuard, geoturn_bin};
use geoturn_tests::redis::{RedisServer, free_port};
use serde_json::Value;

const APP_KEY: &str = "e2e-app-key-0123456789abcdef";
const ADMIN_KEY: &str = "e2e-ops-key-0123456789abcdef";
const SECRETS_KEY: &str = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a";
const HEARTBEAT: f64 = 0.3;
const EU_CLIENT: &str = "192.0.2.10";

struct Relay {
    id: &'static str,
    ip: &'static str,
    child: ChildGuard,
}

/// (id, region, listen IP, lat, lon)
const RELAYS: [(&str, &str, &str, f64, f64); 4] = [
    ("eu-1", "eu-central", "127.0.0.11", 50.1, 8.7),
    ("eu-2", "eu-central", "127.0.0.12", 50.1, 8.7),
    ("us-1", "us-east", "127.0.0.21", 39.0, -77.5),
    ("ap-1", "ap-southeast", "127.0.0.31", 1.35, 103.8),
];

fn start_relay(redis: &RedisServer, spec: (&'static str, &str, &'static str, f64, f64)) -> Relay {
    let (id, region, ip, lat, lon) = spec;
    let child = ChildGuard::spawn(
        Command::new(geoturn_bin())
            .args(["relay", "--listen", &format!("{ip}:3478")])
            .args(["--http", &format!("127.0.0.1:{}", free_port())])
            .args([
                "--allow-peer",
                "127.0.0.0/8",
                "--relay-ports",
                "36000-37999",
            ])
            .args(["--node-id", id, "--region", region])
            .args(["--lat", &lat.to_string(), "--lon", &lon.to_string()])
            .args(["--registry", &redis.url()])
            .args([
                "--heartbeat",
                &HEARTBEAT.to_string(),
                "--drain-timeout",
                "60",
            ])
            .env("GEOTURN_SECRETS_KEY", SECRETS_KEY)
            .env_remove("GEOTURN_AUTH_SECRETS")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    Relay { id, ip, child }
}

fn wait_for(within: Duration, what: &str, mut pred: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    loop {
        if pred() {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn http(api: SocketAddr, method: &str, path: &str, key: &str, body: &str) -> HttpResponse {
    let auth = format!("Bearer {key}");
    request(api, method, path, &[("Authorization", &auth)], body).unwrap()
}

fn json(r: &HttpResponse) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {} {}", r.status, r.body))
}

/// The ICE answer for a client in Frankfurt: (relay listen IPs best first, username, password,
/// snapshot header).
fn answer(api: SocketAddr) -> (Vec<String>, String, String, String) {
    try_answer(api).unwrap_or_else(|r| panic!("{} {}", r.status, r.body))
}

/// [`answer`], or the response when it is not a 200 (while relays start).
fn try_answer(api: SocketAddr) -> Result<(Vec<String>, String, String, String), HttpResponse> {
    let r = http(
        api,
        "GET",
        &format!("/v1/ice-servers?client_ip={EU_CLIENT}&count=8"),
        APP_KEY,
        "",
    );
    if r.status != 200 {
        return Err(r);
    }
    let header = r
        .header("x-geoturn-snapshot")
        .unwrap_or_default()
        .to_owned();
    let v = json(&r);
    let turn: Vec<&Value> = v["iceServers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s.get("username").is_some())
        .collect();
    let ips = turn
        .iter()
        .map(|s| {
            let url = s["urls"][0].as_str().unwrap();
            url.trim_start_matches("turn:")
                .split(':')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    Ok((
        ips,
        turn[0]["username"].as_str().unwrap().to_owned(),
        turn[0]["credential"].as_str().unwrap().to_owned(),
        header,
    ))
}

fn client(ip: &str, username: &str, password: &str) -> TurnClient {
    TurnClient::new(format!("{ip}:3478").parse().unwrap(), username, password).unwrap()
}

/// Two clients relaying to each other every 10 ms until stopped; counts what arrives.
struct Call {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<CallStats>>,
    thread: Option<std::thread::JoinHandle<(TurnClient, TurnClient)>>,
}

#[derive(Debug, Default, Clone)]
struct CallStats {
    sent: u64,
    received: u64,
    longest_gap: Duration,
}

impl Call {
    fn start(mut a: TurnClient, mut b: TurnClient) -> Self {
        let a_relayed = a.allocate().unwrap();
        let b_relayed = b.allocate().unwrap();
        a.create_permission(b_relayed).unwrap();
        b.create_permission(a_relayed).unwrap();
        a.channel_bind(0x4001, b_relayed).unwrap();
        b.channel_bind(0x4001, a_relayed).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(CallStats::default()));
        let (s, st) = (stop.clone(), stats.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut last = Instant::now();
            // Bounded: at most 10 minutes, whatever the test does.
            while !s.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600) {
                a.send_channel(0x4001, b"a->b").unwrap();
                b.send_channel(0x4001, b"b->a").unwrap();
                let mut got = 0;
                for c in [&mut a, &mut b] {
                    while let Ok(Some(r)) = c.recv(Duration::from_millis(5)) {
                        if matches!(r, Received::Channel { .. }) {
                            got += 1;
                        }
                    }
                }
                let mut stats = st.lock().unwrap();
                stats.sent += 2;
                stats.received += got;
                if got > 0 {
                    stats.longest_gap = stats.longest_gap.max(last.elapsed());
                    last = Instant::now();
                }
            }
            (a, b)
        });
        Self {
            stop,
            stats,
            thread: Some(thread),
        }
    }

    fn stats(&self) -> CallStats {
        self.stats.lock().unwrap().clone()
    }

    /// Stops and returns the clients (still allocated).
    fn end(mut self) -> (TurnClient, TurnClient, CallStats) {
        self.stop.store(true, Ordering::Relaxed);
        let (a, b) = self.thread.take().unwrap().join().unwrap();
        let stats = self.stats();
        (a, b, stats)
    }
}

/// Loss in percent between two snapshots of a call.
fn loss(before: &CallStats, after: &CallStats) -> f64 {
    let sent = after.sent - before.sent;
    let received = after.received - before.received;
    // Packets in flight at the edges may land in the next window: clamp.
    100.0 * sent.saturating_sub(received) as f64 / sent.max(1) as f64
}

/// Random and truncated STUN at a relay over UDP and TCP, and malformed HTTP at the API.
fn throw_garbage(relay_ip: &str, api: SocketAddr, seed: u64) {
    let mut x = seed | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let relay: SocketAddr = format!("{relay_ip}:3478").parse().unwrap();
    // A valid Binding request to truncate and corrupt.
    let mut binding = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    binding.extend_from_slice(&[7; 12]);
    for i in 0..2000u64 {
        let mut pkt: Vec<u8> = match i % 4 {
            0 => binding[..(next() as usize % binding.len())].to_vec(),
            1 => (0..(next() % 600)).map(|_| next() as u8).collect(),
            2 => {
                // STUN header claiming more attributes than it carries.
                let mut p = binding.clone();
                p[2] = 0x01;
                p.extend((0..(next() % 40)).map(|_| next() as u8));
                p
            }
            _ => {
                // ChannelData for channels nobody bound, with lying lengths.
                let mut p = vec![0x40, 0x01, 0xff, 0xff];
                p.extend((0..(next() % 100)).map(|_| next() as u8));
                p
            }
        };
        if i % 7 == 0 {
            pkt.reverse();
        }
        let _ = sock.send_to(&pkt, relay);
    }
    for _ in 0..20 {
        if let Ok(mut s) = TcpStream::connect(relay) {
            let junk: Vec<u8> = (0..(next() % 3000)).map(|_| next() as u8).collect();
            let _ = s.write_all(&junk);
        }
    }
    for body in [
        "{",
        "[]",
        "{\"ttl\":-1}",
        "{\"count\":\"x\"}",
        "\u{0}\u{1}",
        "",
    ] {
        let _ = request(
            api,
            "POST",
            "/v1/ice-servers",
            &[
                ("Authorization", &format!("Bearer {APP_KEY}")),
                ("Content-Type", "application/json"),
            ],
            body,
        );
    }
    for _ in 0..20 {
        if let Ok(mut s) = TcpStream::connect(api) {
            let junk: Vec<u8> = (0..(next() % 2000)).map(|_| next() as u8).collect();
            let _ = s.write_all(&junk);
        }
    }
}

#[test]
fn a_live_call_survives_rotation_drain_relay_loss_redis_loss_and_garbage() {
    let dir = geoturn_tests::temp_dir("e2e");
    let geo = geoturn_tests::geo::write_city_db(
        &dir,
        &[
            ("192.0.2.0/24", 50.11, 8.68),
            ("198.51.100.0/24", 39.04, -77.49),
            ("203.0.113.0/24", 1.29, 103.85),
        ],
    );
    let mut redis = RedisServer::start();
    let api: SocketAddr = format!("127.0.0.2:{}", free_port()).parse().unwrap();
    let mut api_child = ChildGuard::spawn(
        Command::new(geoturn_bin())
            .args([
                "api",
                "--listen",
                &api.to_string(),
                "--registry",
                &redis.url(),
            ])
            .arg("--geoip")
            .arg(&geo)
            .args(["--heartbeat", &HEARTBEAT.to_string(), "--refresh-ms", "200"])
            .args(["--rate-limit", "0"])
            .env("GEOTURN_SECRETS_KEY", SECRETS_KEY)
            .env("GEOTURN_API_KEYS", format!("app:{APP_KEY}"))
            .env("GEOTURN_ADMIN_KEYS", format!("ops:{ADMIN_KEY}"))
            .env_remove("GEOTURN_AUTH_SECRETS")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    wait_for(Duration::from_secs(15), "the API", || {
        request(api, "GET", "/readyz", &[], "").is_ok_and(|r| r.status == 200)
    });
    let mut relays: Vec<Relay> = RELAYS.iter().map(|s| start_relay(&redis, *s)).collect();
    wait_for(
        Duration::from_secs(15),
        "four relays in the answers",
        || try_answer(api).is_ok_and(|a| a.0.len() == 4),
    );

    // The ranking: the Frankfurt client gets both Frankfurt relays first, then another region;
    // clients in Ashburn and Singapore get their own region first.
    let (ips, user, pass, _) = answer(api);
    assert_eq!(&ips[..2], &["127.0.0.11", "127.0.0.12"], "{ips:?}");
    for (client_ip, first) in [
        ("198.51.100.7", "127.0.0.21"),
        ("203.0.113.9", "127.0.0.31"),
    ] {
        let r = http(
            api,
            "GET",
            &format!("/v1/ice-servers?client_ip={client_ip}&count=2"),
            APP_KEY,
            "",
        );
        let v = json(&r);
        let url = v["iceServers"][1]["urls"][0].as_str().unwrap();
        assert!(url.contains(first), "{client_ip}: {v}");
    }
    let call = Call::start(client(&ips[0], &user, &pass), client(&ips[0], &user, &pass));
    std::thread::sleep(Duration::from_millis(300));
    let mut figures = Vec::new();

    // 1. Secret rotation during the call.
    let before = call.stats();
    let r = http(api, "POST", "/v1/admin/secrets/rotate", ADMIN_KEY, "");
    assert_eq!(r.status, 201, "{}", r.body);
    let t0 = Instant::now();
    let (_, new_user, new_pass, _) = answer(api);
    for relay in &relays {
        wait_for(
            Duration::from_secs(1),
            "new credentials on every relay",
            || {
                let mut c = client(relay.ip, &new_user, &new_pass);
                c.allocate().is_ok_and(|_| c.refresh(0).is_ok())
            },
        );
    }
    let rotation = t0.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let after = call.stats();
    figures.push(format!(
        "rotation: new credentials on all 4 relays after {rotation:?}; call loss {:.2} %",
        loss(&before, &after)
    ));
    assert!(rotation < Duration::from_secs(1));
    assert!(loss(&before, &after) < 1.0);

    // 2. Drain the relay carrying the call.
    let before = call.stats();
    let t0 = Instant::now();
    let r = http(api, "POST", "/v1/admin/relays/eu-1/drain", ADMIN_KEY, "");
    assert_eq!(r.status, 202, "{}", r.body);
    let left = wait_for(Duration::from_secs(2), "eu-1 to leave the answers", || {
        !answer(api).0.contains(&"127.0.0.11".to_string())
    });
    // A client that still tries the drained relay is sent to its sibling (once the relay has
    // read its siblings from the registry, within a heartbeat of the drain).
    let redirected = wait_for(Duration::from_secs(2), "a 300 to eu-2", || {
        let mut late = client("127.0.0.11", &new_user, &new_pass);
        late.allocate() == Err(TurnError::Redirect("127.0.0.12:3478".parse().unwrap()))
    });
    std::thread::sleep(Duration::from_millis(500));
    let after = call.stats();
    figures.push(format!(
        "drain: eu-1 left the answers after {left:?}; a late Allocate there got 300 to eu-2 \
         within {redirected:?}; call loss during the drain {:.2} %",
        loss(&before, &after)
    ));
    assert!(loss(&before, &after) < 1.0);
    let (mut a, mut b, stats) = call.end();
    a.refresh(0).unwrap();
    b.refresh(0).unwrap();
    let t1 = Instant::now();
    let eu1 = relays.iter_mut().find(|r| r.id == "eu-1").unwrap();
    assert!(
        eu1.child
            .wait_timeout(Duration::from_secs(10))
            .unwrap()
            .is_some()
    );
    figures.push(format!(
        "drain: eu-1 exited {:?} after the call ended ({:.1} s after the drain began); whole \
         call: {} sent, {} received, longest gap {:?}",
        t1.elapsed(),
        t0.elapsed().as_secs_f64(),
        stats.sent,
        stats.received,
        stats.longest_gap
    ));
    assert!(stats.longest_gap < Duration::from_millis(200));

    // 3. SIGKILL a relay.
    let us = relays.iter().find(|r| r.id == "us-1").unwrap();
    us.child.signal(libc::SIGKILL);
    let gone = wait_for(Duration::from_secs(5), "us-1 to leave the answers", || {
        !answer(api).0.contains(&"127.0.0.21".to_string())
    });
    figures.push(format!(
        "SIGKILL: us-1 left every answer after {gone:?} (3 heartbeats = {:.1} s)",
        3.0 * HEARTBEAT
    ));
    assert!(gone.as_secs_f64() < 3.0 * HEARTBEAT + 0.5);

    // 4. Redis killed during a new call on eu-2.
    let (ips, user, pass, _) = answer(api);
    assert_eq!(ips[0], "127.0.0.12");
    let call = Call::start(client(&ips[0], &user, &pass), client(&ips[0], &user, &pass));
    std::thread::sleep(Duration::from_millis(200));
    let before = call.stats();
    let port = redis.port();
    redis.kill();
    let stale_after = wait_for(Duration::from_secs(5), "a stale answer", || {
        answer(api).3.starts_with("stale")
    });
    std::thread::sleep(Duration::from_secs_f64(4.0 * HEARTBEAT));
    let (stale_ips, ..) = answer(api);
    assert!(
        stale_ips.contains(&"127.0.0.12".to_string()),
        "{stale_ips:?}"
    );
    let during = call.stats();
    let _redis_back = RedisServer::start_on(port);
    let t0 = Instant::now();
    let converged = wait_for(
        Duration::from_secs(10),
        "fresh answers with the live relays",
        || {
            try_answer(api)
                .is_ok_and(|(ips, _, _, header)| header.starts_with("fresh") && ips.len() == 2)
        },
    );
    // Convergence of the registry itself: both live relays registered again.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let registry = rt
        .block_on(geoturn_shared::registry::Registry::connect(
            &format!("redis://127.0.0.1:{port}"),
            "geoturn:",
            None,
        ))
        .unwrap();
    wait_for(
        Duration::from_secs(10),
        "both live relays back in Redis",
        || rt.block_on(registry.list()).is_ok_and(|r| r.len() == 2),
    );
    let reregistered = t0.elapsed();
    figures.push(format!(
        "Redis down: answers marked stale after {stale_after:?}, call loss while down {:.2} %; \
         Redis back: fresh answers with every live relay after {converged:?}, every live relay \
         registered again after {reregistered:?} (2 heartbeats = {:.1} s)",
        loss(&before, &during),
        2.0 * HEARTBEAT
    ));
    assert!(loss(&before, &during) < 1.0);
    assert!(
        t0.elapsed().as_secs_f64() < 2.0 * HEARTBEAT + 1.5,
        "{:?}",
        t0.elapsed()
    );

    // 5. Garbage at every relay still running and at the API, during the call.
    let before = call.stats();
    for (i, relay) in relays
        .iter()
        .enumerate()
        .filter(|(_, r)| r.id != "eu-1" && r.id != "us-1")
    {
        throw_garbage(relay.ip, api, 0x9e37_79b9 + i as u64);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = call.stats();
    for relay in relays
        .iter_mut()
        .filter(|r| r.id == "eu-2" || r.id == "ap-1")
    {
        assert!(
            relay.child.0.try_wait().unwrap().is_none(),
            "{} died",
            relay.id
        );
    }
    assert!(api_child.0.try_wait().unwrap().is_none(), "the API died");
    let (mut a, mut b, _) = call.end();
    // The call's allocations are still there: a Refresh succeeds on both.
    a.refresh(600).unwrap();
    b.refresh(600).unwrap();
    figures.push(format!(
        "garbage: 2000 random/truncated STUN datagrams and 20 junk TCP streams at each live \
         relay, malformed JSON and 20 junk HTTP streams at the API: no crash, allocations \
         intact, call loss {:.2} %",
        loss(&before, &after)
    ));
    assert!(loss(&before, &after) < 1.0);
    for f in &figures {
        eprintln!("e2e: {f}");
    }
}
