//! The relay mesh on loopback, real processes and a real `redis-server`: three relays of one
//! fleet connect (one QUIC connection per pair), measure each other and publish; the API's
//! `GET /v1/mesh` shows the matrix. Impostors are refused: a relay with another secrets key
//! (its node record's MAC fails), and a node record forged in Redis (someone with write access
//! to Redis but not the fleet key) naming a real relay's address with another fingerprint.
//! Every wait is bounded.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use geoturn_tests::http::request;
use geoturn_tests::process::{ChildGuard, geoturn_bin};
use geoturn_tests::redis::{RedisServer, free_port};
use serde_json::Value;

const SECRET: &str = "mesh-test-secret-0123456789";
const KEY: &str = "0909090909090909090909090909090909090909090909090909090909090909";
const OTHER_KEY: &str = "0808080808080808080808080808080808080808080808080808080808080808";
const APP_KEY: &str = "app-key-0123456789abcdef";

struct Relay {
    _child: ChildGuard,
    http: SocketAddr,
}

fn relay(redis: &RedisServer, id: &str, region: &str, key: &str) -> Relay {
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let udp = geoturn_tests::free_udp_port();
    let child = ChildGuard::spawn(
        Command::new(geoturn_bin())
            .args(["relay", "--listen", &format!("127.0.0.1:{udp}")])
            .args(["--http", &http.to_string(), "--workers", "1"])
            .args(["--node-id", id, "--region", region])
            .args(["--registry", &redis.url(), "--heartbeat", "0.5"])
            .args(["--mesh-listen", "127.0.0.1:0"])
            .env("GEOTURN_SECRETS_KEY", key)
            .env("GEOTURN_AUTH_SECRETS", SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    Relay {
        _child: child,
        http,
    }
}

fn get_json(addr: SocketAddr, path: &str, key: Option<&str>) -> Option<Value> {
    let auth = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let r = request(addr, "GET", path, &headers, "").ok()?;
    (r.status == 200).then(|| serde_json::from_str(&r.body).ok())?
}

fn mesh_status(r: &Relay) -> Value {
    get_json(r.http, "/status", None).map_or(Value::Null, |s| s["mesh"].clone())
}

/// Connected peer ids with a fresh measurement.
fn fresh_peers(r: &Relay) -> Vec<String> {
    let m = mesh_status(r);
    let mut ids: Vec<String> = m["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["connected"] == true && p["fresh"] == true)
        .filter_map(|p| p["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

fn wait_for(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

#[test]
fn three_relays_measure_each_other_and_impostors_are_refused() {
    let redis = RedisServer::start();
    let relays = [
        relay(&redis, "m1", "region-a", KEY),
        relay(&redis, "m2", "region-b", KEY),
        relay(&redis, "m3", "region-c", KEY),
    ];
    // Lowest id: it would dial everyone, if anyone trusted it.
    let impostor = relay(&redis, "m0", "region-a", OTHER_KEY);
    let api_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _api = ChildGuard::spawn(
        Command::new(geoturn_bin())
            .args(["api", "--listen", &api_addr.to_string()])
            .args(["--registry", &redis.url(), "--refresh-ms", "200"])
            .args(["--heartbeat", "0.5"])
            .env("GEOTURN_SECRETS_KEY", KEY)
            .env("GEOTURN_API_KEYS", format!("app:{APP_KEY}"))
            .env_remove("GEOTURN_AUTH_SECRETS")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();

    let want = |me: &str| -> Vec<String> {
        ["m1", "m2", "m3"]
            .iter()
            .filter(|id| **id != me)
            .map(|s| (*s).to_owned())
            .collect()
    };
    wait_for(Duration::from_secs(20), "a full mesh of three", || {
        ["m1", "m2", "m3"]
            .iter()
            .zip(&relays)
            .all(|(id, r)| fresh_peers(r) == want(id))
    });
    // One connection per pair: m1 dialed both, m3 dialed none.
    let m1 = mesh_status(&relays[0]);
    assert!(
        m1["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["dialer"] == true),
        "{m1}"
    );
    let m3 = mesh_status(&relays[2]);
    assert!(
        m3["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["dialer"] == false),
        "{m3}"
    );
    assert_eq!(m1["state"], "on");
    assert_eq!(m1["fingerprint"].as_str().unwrap().len(), 64);
    // Loopback RTTs are small but measured.
    for p in m1["peers"].as_array().unwrap() {
        let rtt = p["rtt_ms"].as_f64().unwrap();
        assert!(rtt > 0.0 && rtt < 50.0, "{p}");
    }
    let metrics = request(relays[1].http, "GET", "/metrics", &[], "")
        .unwrap()
        .body;
    assert_eq!(
        geoturn_tests::http::metric(&metrics, "geoturn_mesh_peers", ""),
        Some(2.0)
    );
    assert!(
        geoturn_tests::http::metric(&metrics, "geoturn_mesh_rtt_seconds", "peer=\"m1\"")
            .is_some_and(|v| v > 0.0 && v < 0.05),
        "{metrics}"
    );
    // The other per-peer families carry the same `peer` label (the monitoring test, with one
    // relay, has none of these series and relies on this).
    for family in ["geoturn_mesh_loss_ratio", "geoturn_mesh_age_seconds"] {
        assert!(
            geoturn_tests::http::metric(&metrics, family, "peer=\"m1\"")
                .is_some_and(|v| (0.0..5.0).contains(&v)),
            "{family}: {metrics}"
        );
    }

    // The impostor (another key) is trusted by nobody and trusts nobody.
    let im = mesh_status(&impostor);
    assert_eq!(im["state"], "on");
    assert!(im["peers"].as_array().unwrap().is_empty(), "{im}");
    for r in &relays {
        let peers = mesh_status(r)["peers"].to_string();
        assert!(!peers.contains("\"m0\""), "{peers}");
    }

    // A record forged in Redis: a new id at m3's address, with the impostor's fingerprint,
    // the MAC copied from m3's record. Nobody dials it (m1 and m2 would: "m4" > theirs).
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let m3_record: String = redis::cmd("GET")
        .arg("geoturn:mesh:node:m3")
        .query(&mut conn)
        .unwrap();
    let mut forged: Value = serde_json::from_str(&m3_record).unwrap();
    forged["fp"] = im["fingerprint"].clone();
    let far = geoturn_tests::unix_ms() + 60_000;
    let _: () = redis::pipe()
        .cmd("SET")
        .arg("geoturn:mesh:node:m4")
        .arg(forged.to_string())
        .cmd("ZADD")
        .arg("geoturn:mesh:nodes")
        .arg(far)
        .arg("m4")
        .query(&mut conn)
        .unwrap();
    // Three reconcile rounds (heartbeat 0.5 s) later nobody lists m4.
    std::thread::sleep(Duration::from_secs(2));
    for r in &relays {
        let peers = mesh_status(r)["peers"].to_string();
        assert!(!peers.contains("\"m4\""), "{peers}");
        assert_eq!(fresh_peers(r).len(), 2, "the mesh is intact");
    }

    // The API's matrix: three region pairs, fresh, ranked on; no impostor anywhere.
    wait_for(Duration::from_secs(10), "the API's matrix", || {
        get_json(api_addr, "/v1/mesh", Some(APP_KEY)).is_some_and(|m| {
            m["regions"].as_array().is_some_and(|r| {
                r.len() == 3
                    && r.iter()
                        .all(|p| p["stale"] == false && p["effectiveMs"].as_f64().is_some())
            })
        })
    });
    let m = get_json(api_addr, "/v1/mesh", Some(APP_KEY)).unwrap();
    assert_eq!(m["links"].as_array().unwrap().len(), 6, "{m}");
    assert!(
        !m.to_string().contains("m0") && !m.to_string().contains("m4"),
        "{m}"
    );
    // API keys only.
    assert_eq!(
        request(api_addr, "GET", "/v1/mesh", &[], "")
            .unwrap()
            .status,
        401
    );
}
