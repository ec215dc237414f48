//! The ranking learns from measured round trips (issue 17). In a network namespace of the
//! test's own: a client network, 192.0.2.0/24, that GeoIP places in Frankfurt, next to relay
//! `fra` (region eu-central), while its path to `fra` takes 120 ms and to `iad` (us-east,
//! Ashburn, 6 500 km away) 20 ms: a VPN exit, a satellite link, an anycast-routed network.
//! Before any call the API ranks `fra` first by distance; after three allocations from that
//! network (the relays sample the 401 → Allocate round trip) it ranks `iad` first and says it
//! was measured. A second network, 198.51.100.0/24, also in Frankfurt by GeoIP and never
//! measured (nor its /16), keeps the distance order.
//!
//! The delays come from a UDP delay line per relay (this VM's kernel has no `sch_netem`, so
//! `tc netem` cannot be relied on): the client's datagrams leave the line from 192.0.2.20, so
//! the relays see the client network. Needs root.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::net::{SocketAddr, UdpSocket};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use geoturn_tests::client::TurnClient;
use geoturn_tests::netns::NetNs;
use geoturn_tests::process::{ChildGuard, geoturn_bin};
use serde_json::Value;

const SECRET: &str = "client-rtt-secret-0123456789";
const KEY: &str = "0909090909090909090909090909090909090909090909090909090909090909";
const APP_KEY: &str = "app-key-0123456789abcdef";
/// Where the delay lines send from: inside the client network.
const CLIENT_SOURCE: &str = "192.0.2.20";
const FRA: &str = "203.0.113.1";
const IAD: &str = "203.0.113.2";

/// A UDP forwarder that holds every datagram `one_way` before passing it on, both ways:
/// clients talk to `addr`, the relay sees them from `CLIENT_SOURCE`. One client at a time (the
/// last one heard gets the answers). Its threads poll a stop flag every 20 ms.
struct DelayLine {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl DelayLine {
    /// Binds inside the current namespace (call from `NetNs::enter`).
    fn start(relay: SocketAddr, one_way: Duration) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let back = Arc::new(UdpSocket::bind(format!("{CLIENT_SOURCE}:0")).unwrap());
        let addr = front.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let client = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
        // Each direction: read, then send once the datagram's time has come (datagrams keep
        // their order: each waits for its own due time, which only grows).
        let pump = |from: Arc<UdpSocket>, to: Arc<UdpSocket>, upstream: bool| {
            let (stop, client) = (stop.clone(), client.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let mut queue: std::collections::VecDeque<(Instant, Vec<u8>)> = Default::default();
                while !stop.load(Ordering::Relaxed) {
                    // Wake for the next datagram's due time, not a poll interval later.
                    let wait = queue.front().map_or(Duration::from_millis(20), |(due, _)| {
                        due.saturating_duration_since(Instant::now())
                            .clamp(Duration::from_micros(200), Duration::from_millis(20))
                    });
                    let _ = from.set_read_timeout(Some(wait));
                    if let Ok((len, src)) = from.recv_from(&mut buf) {
                        if upstream {
                            *client.lock().unwrap() = Some(src);
                        }
                        // Bounded: a test sends a few dozen datagrams.
                        if queue.len() < 1024 {
                            queue.push_back((Instant::now() + one_way, buf[..len].to_vec()));
                        }
                    }
                    while queue.front().is_some_and(|(due, _)| *due <= Instant::now()) {
                        let (_, bytes) = queue.pop_front().unwrap();
                        let dest = if upstream {
                            Some(relay)
                        } else {
                            *client.lock().unwrap()
                        };
                        if let Some(dest) = dest {
                            let _ = to.send_to(&bytes, dest);
                        }
                    }
                }
            })
        };
        let threads = vec![
            pump(front.clone(), back.clone(), true),
            pump(back, front, false),
        ];
        Self {
            addr,
            stop,
            threads,
        }
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The API's ranking for `ip`, or `None` while it does not answer.
fn try_route(ns: &NetNs, api: SocketAddr, ip: &'static str) -> Option<Value> {
    ns.enter(move || {
        let auth = format!("Bearer {APP_KEY}");
        let path = format!("/v1/route?ip={ip}&count=2");
        let r = geoturn_tests::http::request(api, "GET", &path, &[("Authorization", &auth)], "")
            .ok()?;
        (r.status == 200).then(|| serde_json::from_str(&r.body).ok())?
    })
}

fn route(ns: &NetNs, api: SocketAddr, ip: &'static str) -> Value {
    try_route(ns, api, ip).expect("the API answers /v1/route")
}

/// One allocation through `line`, then its release.
fn allocate_through(ns: &NetNs, line: SocketAddr) {
    ns.enter(move || {
        let c = geoturn_shared::RestCredential::mint(
            SECRET.as_bytes(),
            "vpn-user",
            geoturn_tests::unix_secs(),
            600,
        );
        let mut client = TurnClient::new(line, &c.username, &c.password).unwrap();
        client.allocate().unwrap();
        client.refresh(0).unwrap();
    });
}

fn first(route: &Value) -> (&str, &str) {
    (
        route["chosen"][0]["id"].as_str().unwrap_or(""),
        route["chosen"][0]["reason"].as_str().unwrap_or(""),
    )
}

#[test]
fn measured_round_trips_outrank_geoip_for_the_network_that_was_measured() {
    geoturn_tests::netns::require_netns();
    let ns = NetNs::new("crtt");
    for ip in [CLIENT_SOURCE, FRA, IAD] {
        ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"]);
    }
    let dir = geoturn_tests::temp_dir("client-rtt-netns");
    let geo = geoturn_tests::geo::write_city_db(
        &dir,
        &[
            ("192.0.2.0/24", 50.11, 8.68),
            ("198.51.100.0/24", 50.11, 8.68),
        ],
    );
    let log = |name: &str| Stdio::from(std::fs::File::create(dir.join(name)).unwrap());
    let _redis = ChildGuard::spawn(
        ns.command("redis-server")
            .args(["--port", "6379", "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let registry = "redis://127.0.0.1:6379";
    let relay = |id: &str, ip: &str, region: &str, (lat, lon): (f64, f64), http: u16| {
        ChildGuard::spawn(
            ns.command(geoturn_bin())
                .args(["relay", "--listen", &format!("{ip}:3478"), "--relay-ip", ip])
                .args(["--http", &format!("127.0.0.1:{http}"), "--workers", "1"])
                .args(["--node-id", id, "--region", region])
                .args(["--lat", &lat.to_string(), "--lon", &lon.to_string()])
                .args(["--registry", registry, "--heartbeat", "0.5"])
                .env("GEOTURN_SECRETS_KEY", KEY)
                .env("GEOTURN_AUTH_SECRETS", SECRET)
                .stdout(Stdio::null())
                .stderr(log(&format!("relay-{id}.log"))),
        )
        .unwrap()
    };
    let _fra = relay("fra", FRA, "eu-central", (50.1, 8.7), 9641);
    let _iad = relay("iad", IAD, "us-east", (39.0, -77.5), 9642);
    let api: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let _api = ChildGuard::spawn(
        ns.command(geoturn_bin())
            .args(["api", "--listen", &api.to_string(), "--geoip"])
            .arg(&geo)
            .args([
                "--registry",
                registry,
                "--refresh-ms",
                "250",
                "--heartbeat",
                "0.5",
            ])
            .env("GEOTURN_SECRETS_KEY", KEY)
            .env("GEOTURN_API_KEYS", format!("app:{APP_KEY}"))
            .env_remove("GEOTURN_AUTH_SECRETS")
            .stdout(Stdio::null())
            .stderr(log("api.log")),
    )
    .unwrap();

    // Both relays registered: before any call, distance decides.
    let t0 = Instant::now();
    let mut before = Value::Null;
    while t0.elapsed() < Duration::from_secs(20) {
        if let Some(r) = try_route(&ns, api, "192.0.2.10")
            && r["chosen"].as_array().is_some_and(|c| c.len() == 2)
        {
            before = r;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (id, reason) = first(&before);
    assert_eq!(id, "fra", "{before}");
    assert!(reason.contains("great circle"), "{reason}");
    println!("before: {before}");

    // The client network's paths: 120 ms to fra, 20 ms to iad.
    let fra_line = ns.enter(|| {
        DelayLine::start(
            format!("{FRA}:3478").parse().unwrap(),
            Duration::from_millis(60),
        )
    });
    let iad_line = ns.enter(|| {
        DelayLine::start(
            format!("{IAD}:3478").parse().unwrap(),
            Duration::from_millis(10),
        )
    });
    // Three allocations, as a browser's answer spreads them: the best relay and the fallback.
    allocate_through(&ns, fra_line.addr);
    allocate_through(&ns, iad_line.addr);
    allocate_through(&ns, fra_line.addr);

    let t1 = Instant::now();
    let mut after = Value::Null;
    while t1.elapsed() < Duration::from_secs(10) {
        after = route(&ns, api, "192.0.2.10");
        if first(&after).0 == "iad" {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    println!("after {:?}: {after}", t1.elapsed());
    let (id, reason) = first(&after);
    assert_eq!(id, "iad", "{after}");
    assert!(reason.contains("measured from 192.0.2.0/24"), "{reason}");
    let measured = |i: usize| after["chosen"][i]["rttMs"].as_f64().unwrap();
    assert!((15.0..=40.0).contains(&measured(0)), "{after}");
    assert_eq!(after["chosen"][1]["id"], "fra");
    assert!((110.0..=160.0).contains(&measured(1)), "{after}");

    // The relays count what they sampled: two allocations through fra, one through iad.
    for (port, want) in [(9641u16, 2.0), (9642, 1.0)] {
        let page = ns.enter(move || {
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            geoturn_tests::http::request(addr, "GET", "/metrics", &[], "")
                .unwrap()
                .body
        });
        let samples = page
            .lines()
            .find_map(|l| l.strip_prefix("geoturn_client_rtt_samples_total "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        assert_eq!(samples, Some(want), "relay on :{port}");
    }

    // Never measured: GeoIP and distance, as before.
    let other = route(&ns, api, "198.51.100.10");
    let (id, reason) = first(&other);
    assert_eq!(id, "fra", "{other}");
    assert!(reason.contains("great circle"), "{reason}");
    drop((fra_line, iad_line));
}
