//! The mesh measures real delays: three relays, each in its own network namespace, joined
//! through a hub namespace (Redis, the API, the TURN client and the echo peer live there).
//! Relays a, b, c are worth 20, 60 and 140 ms of delay, so the pairs' round trips are
//! 80 (a–b), 160 (a–c) and 200 ms (b–c): long enough that the forwarder's own few ms (threads
//! woken on a busy two-core machine; 40 ms pairs measured 42.8 idle and 44.5 while a build ran)
//! stay well inside the 10 %. The delay comes from [`DelayLine`], a UDP forwarder in
//! the hub that each relay advertises as its mesh address (`--mesh-advertise`): this VM's
//! kernel has no `sch_netem` ("Specified qdisc kind is unknown"), so `tc netem` cannot be
//! relied on; the forwarder holds each datagram for half the pair's round trip each way. The matrix the API builds from the mesh must match
//! within 10 %. Then relay c is cut off the mesh (its mesh UDP port dropped with iptables in
//! its namespace): it keeps relaying TURN traffic, and the pairs with c turn stale (their last
//! value kept and aged, never ranked on) while a–b stays fresh and right. Needs root.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use geoturn_tests::client::{Received, TurnClient};
use geoturn_tests::netns::{NetNs, veth};
use geoturn_tests::peer::EchoPeer;
use geoturn_tests::process::{ChildGuard, geoturn_bin};
use serde_json::Value;

const SECRET: &str = "mesh-netns-secret-0123456789";
const KEY: &str = "0909090909090909090909090909090909090909090909090909090909090909";
const APP_KEY: &str = "app-key-0123456789abcdef";
const HUB_IP: &str = "10.9.0.1";
const MESH_PORT: u16 = 9643;
/// One-way egress delay of relay a, b, c (ms).
const DELAY_MS: [u64; 3] = [20, 60, 140];
const REGIONS: [&str; 3] = ["ra", "rb", "rc"];
/// The hub's forwarder for relay n listens on this port + n.
const PROXY_PORT: u16 = 7000;

/// A UDP delay line in the hub: for each relay n a socket on `HUB_IP:PROXY_PORT+n` (what
/// relay n advertises), and per other relay k an upstream socket, so n sees k's datagrams
/// from a fixed address. Every datagram is held for (d_k + d_n) / 2 before it goes on, both
/// ways. Threads poll a stop flag every 50 ms and end when the line is dropped.
struct DelayLine {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

type Item = (Instant, Arc<UdpSocket>, SocketAddr, Vec<u8>);

fn relay_index(addr: SocketAddr) -> Option<usize> {
    match addr.ip() {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            (o[0] == 10 && (1..=3).contains(&o[1])).then(|| usize::from(o[1] - 1))
        }
        std::net::IpAddr::V6(_) => None,
    }
}

impl DelayLine {
    /// Binds every socket (call inside the hub namespace) and starts the threads.
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Item>();
        let mut threads = Vec::new();
        let real =
            |n: usize| -> SocketAddr { format!("10.{}.0.2:{MESH_PORT}", n + 1).parse().unwrap() };
        let half = |a: usize, b: usize| Duration::from_millis((DELAY_MS[a] + DELAY_MS[b]) / 2);
        let bind = |addr: &str| {
            let s = UdpSocket::bind(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            Arc::new(s)
        };
        for n in 0..3 {
            let front = bind(&format!("{HUB_IP}:{}", PROXY_PORT + n as u16 + 1));
            // upstream[k]: carries relay k's datagrams to relay n.
            let upstream: Vec<Arc<UdpSocket>> =
                (0..3).map(|_| bind(&format!("{HUB_IP}:0"))).collect();
            // Front: k → n.
            {
                let (stop, tx, front, upstream) =
                    (stop.clone(), tx.clone(), front.clone(), upstream.clone());
                threads.push(std::thread::spawn(move || {
                    let mut buf = [0u8; 2048];
                    while !stop.load(Ordering::Relaxed) {
                        let Ok((len, from)) = front.recv_from(&mut buf) else {
                            continue;
                        };
                        let Some(k) = relay_index(from) else { continue };
                        let due = Instant::now() + half(k, n);
                        let _ = tx.send((due, upstream[k].clone(), real(n), buf[..len].to_vec()));
                    }
                }));
            }
            // Back: n → k, from the front socket (k dialed or answered that address).
            for (k, up) in upstream.into_iter().enumerate() {
                let (stop, tx, front) = (stop.clone(), tx.clone(), front.clone());
                threads.push(std::thread::spawn(move || {
                    let mut buf = [0u8; 2048];
                    while !stop.load(Ordering::Relaxed) {
                        let Ok((len, _)) = up.recv_from(&mut buf) else {
                            continue;
                        };
                        let due = Instant::now() + half(k, n);
                        let _ = tx.send((due, front.clone(), real(k), buf[..len].to_vec()));
                    }
                }));
            }
        }
        drop(tx);
        // The scheduler: sends each datagram at its time (items arrive in due order per pair,
        // and a heap keeps the rest in order).
        let stop2 = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut heap: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
            let mut items: std::collections::HashMap<u64, Item> = std::collections::HashMap::new();
            let mut seq = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let wait = heap
                    .peek()
                    .map_or(Duration::from_millis(50), |Reverse((due, _))| {
                        due.saturating_duration_since(Instant::now())
                    })
                    .min(Duration::from_millis(50));
                if let Ok(item) = rx.recv_timeout(wait) {
                    seq += 1;
                    heap.push(Reverse((item.0, seq)));
                    items.insert(seq, item);
                }
                while let Some(Reverse((due, id))) = heap.peek().copied() {
                    if due > Instant::now() {
                        break;
                    }
                    heap.pop();
                    if let Some((_, sock, to, bytes)) = items.remove(&id) {
                        let _ = sock.send_to(&bytes, to);
                    }
                }
            }
        }));
        Self { stop, threads }
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

/// A process's stderr, kept in the test's temp directory for a failure's post-mortem.
fn log(name: &str) -> Stdio {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| geoturn_tests::temp_dir("mesh-netns"));
    Stdio::from(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn get_json(hub: &NetNs, addr: SocketAddr, path: &'static str) -> Option<Value> {
    hub.enter(move || {
        let auth = format!("Bearer {APP_KEY}");
        let r = geoturn_tests::http::request(addr, "GET", path, &[("Authorization", &auth)], "")
            .ok()?;
        (r.status == 200).then(|| serde_json::from_str(&r.body).ok())?
    })
}

/// The API's region pairs, keyed "from-to".
fn pairs(hub: &NetNs, api: SocketAddr) -> Vec<Value> {
    get_json(hub, api, "/v1/mesh")
        .and_then(|m| m["regions"].as_array().cloned())
        .unwrap_or_default()
}

fn pair<'a>(pairs: &'a [Value], from: &str, to: &str) -> Option<&'a Value> {
    pairs.iter().find(|p| p["from"] == from && p["to"] == to)
}

fn within_10_percent(pairs: &[Value], from: &str, to: &str, want_ms: f64) -> bool {
    pair(pairs, from, to)
        .and_then(|p| p["measuredMs"].as_f64())
        .is_some_and(|ms| (ms - want_ms).abs() <= want_ms * 0.10)
}

/// Allocates on `relay` from the hub, echoes one packet through it and returns whether it
/// came back.
fn relays_an_echo(hub: &NetNs, relay: SocketAddr, peer: SocketAddr) -> bool {
    let c = geoturn_shared::RestCredential::mint(
        SECRET.as_bytes(),
        "meshuser",
        geoturn_tests::unix_secs(),
        600,
    );
    hub.enter(move || {
        let mut client = TurnClient::new(relay, &c.username, &c.password).unwrap();
        if client.allocate().is_err() || client.create_permission(peer).is_err() {
            return false;
        }
        client.channel_bind(0x4001, peer).unwrap();
        for _ in 0..5 {
            client.send_channel(0x4001, b"through c").unwrap();
            let until = Instant::now() + Duration::from_millis(500);
            while let Ok(Some(r)) = client.recv(until.saturating_duration_since(Instant::now())) {
                if let Received::Channel { payload, .. } = r
                    && payload == b"through c"
                {
                    return true;
                }
            }
        }
        false
    })
}

#[test]
fn the_measured_matrix_matches_the_configured_delays_and_a_cut_off_relay_turns_stale() {
    let hub = NetNs::new("mh");
    let sites = [NetNs::new("ma"), NetNs::new("mb"), NetNs::new("mc")];
    hub.sysctl("net.ipv4.ip_forward=1");
    hub.ip(&["addr", "add", &format!("{HUB_IP}/32"), "dev", "lo"]);
    for (i, site) in sites.iter().enumerate() {
        let n = i + 1;
        veth(
            &hub,
            &format!("to-{n}"),
            &format!("10.{n}.0.1/24"),
            site,
            "eth0",
            &format!("10.{n}.0.2/24"),
        );
        site.ip(&["route", "add", "default", "via", &format!("10.{n}.0.1")]);
    }
    let _delay = hub.enter(DelayLine::start);
    let _redis = ChildGuard::spawn(
        hub.command("redis-server")
            .args(["--port", "6379", "--bind", HUB_IP])
            // Not loopback: protected mode would refuse the relays.
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let registry = format!("redis://{HUB_IP}:6379");
    let _relays: Vec<ChildGuard> = sites
        .iter()
        .enumerate()
        .map(|(i, site)| {
            let n = i + 1;
            let ip = format!("10.{n}.0.2");
            ChildGuard::spawn(
                site.command(geoturn_bin())
                    .args(["relay", "--listen", &format!("{ip}:3478")])
                    .args(["--relay-ip", &ip, "--allow-peer", "10.9.0.0/24"])
                    .args(["--http", "127.0.0.1:9641", "--workers", "1"])
                    .args(["--node-id", &format!("relay-{}", REGIONS[i])])
                    .args(["--region", REGIONS[i]])
                    .args(["--registry", &registry, "--heartbeat", "0.5"])
                    .args(["--mesh-listen", &format!("{ip}:{MESH_PORT}")])
                    .args([
                        "--mesh-advertise",
                        &format!("{HUB_IP}:{}", PROXY_PORT + n as u16),
                    ])
                    .env("GEOTURN_SECRETS_KEY", KEY)
                    .env("GEOTURN_AUTH_SECRETS", SECRET)
                    .stdout(Stdio::null())
                    .stderr(log(&format!("relay-{}", REGIONS[i]))),
            )
            .unwrap()
        })
        .collect();
    let api: SocketAddr = format!("{HUB_IP}:8080").parse().unwrap();
    let _api = ChildGuard::spawn(
        hub.command(geoturn_bin())
            .args(["api", "--listen", &api.to_string()])
            .args(["--registry", &registry, "--refresh-ms", "250"])
            .args(["--heartbeat", "0.5"])
            .env("GEOTURN_SECRETS_KEY", KEY)
            .env("GEOTURN_API_KEYS", format!("app:{APP_KEY}"))
            .env_remove("GEOTURN_AUTH_SECRETS")
            .stdout(Stdio::null())
            .stderr(log("api")),
    )
    .unwrap();

    // A few seconds after start: every pair within 10 % of its configured round trip.
    let want = [("ra", "rb", 80.0), ("ra", "rc", 160.0), ("rb", "rc", 200.0)];
    let t0 = Instant::now();
    let mut last = Vec::new();
    while t0.elapsed() < Duration::from_secs(30) {
        last = pairs(&hub, api);
        if want
            .iter()
            .all(|(a, b, ms)| within_10_percent(&last, a, b, *ms))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let settled = t0.elapsed();
    for (a, b, ms) in want {
        assert!(
            within_10_percent(&last, a, b, ms),
            "{a}-{b}: want {ms} ms ± 10 %, matrix {last:?}"
        );
    }
    let measured: Vec<String> = want
        .iter()
        .map(|(a, b, ms)| {
            let got = pair(&last, a, b).unwrap()["measuredMs"].as_f64().unwrap();
            format!("{a}-{b}: configured {ms} ms, measured {got:.1} ms")
        })
        .collect();
    // The figures for the report (`cargo test -- --nocapture`).
    println!("matrix settled in {settled:?}: {}", measured.join("; "));

    // The echo peer in the hub, and relay c relays before the cut.
    let peer = hub.enter(|| EchoPeer::start_on(format!("{HUB_IP}:0").parse().unwrap()).unwrap());
    let relay_c: SocketAddr = "10.3.0.2:3478".parse().unwrap();
    assert!(relays_an_echo(&hub, relay_c, peer.addr()), "before the cut");

    // Cut c off the mesh: its mesh port, both ways, in its own namespace.
    for (chain, dir) in [("INPUT", "--dport"), ("OUTPUT", "--sport")] {
        run(sites[2].command("iptables").args([
            "-A",
            chain,
            "-p",
            "udp",
            dir,
            &MESH_PORT.to_string(),
            "-j",
            "DROP",
        ]));
    }
    // Within the freshness window (5 s) and a couple of refreshes, pairs with c turn stale.
    let t1 = Instant::now();
    let stale_c = |p: &[Value]| {
        ["ra", "rb"].iter().all(|a| {
            pair(p, a, "rc").is_some_and(|x| {
                x["stale"] == true && x["measuredMs"].is_null() && x["effectiveMs"].is_null()
            })
        })
    };
    while t1.elapsed() < Duration::from_secs(15) {
        last = pairs(&hub, api);
        if stale_c(&last) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(stale_c(&last), "pairs with c stale after the cut: {last:?}");
    println!("c stale {:?} after the cut: {last:?}", t1.elapsed());
    // Stale, not wrong: the last values are the old measurements, and a–b is still right.
    for (b, ms) in [("ra", 160.0), ("rb", 200.0)] {
        let x = pair(&last, b, "rc").unwrap();
        let got = x["lastMs"].as_f64().unwrap();
        assert!((got - ms).abs() <= ms * 0.10, "{x}");
        assert!(x["ageMs"].as_u64().unwrap() >= 5000, "{x}");
    }
    assert!(within_10_percent(&last, "ra", "rb", 80.0), "{last:?}");
    assert_eq!(pair(&last, "ra", "rb").unwrap()["stale"], false);

    // Relay c keeps relaying without its mesh.
    assert!(relays_an_echo(&hub, relay_c, peer.addr()), "after the cut");
    let status = sites[2].enter(|| {
        let r = geoturn_tests::http::request(
            "127.0.0.1:9641".parse().unwrap(),
            "GET",
            "/status",
            &[],
            "",
        )
        .unwrap();
        serde_json::from_str::<Value>(&r.body).unwrap()
    });
    assert_eq!(status["mesh"]["state"], "on");
    assert!(
        status["mesh"]["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["fresh"] == false),
        "{status}"
    );
}
