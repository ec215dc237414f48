//! Routing on measured round trips beyond a network's own measurements (issue 17), through a
//! real `geoturn api` reading a real `redis-server`: relays registered in Frankfurt, Ashburn
//! and Singapore; three client networks GeoIP puts in Frankfurt; round trips stored the way
//! relays publish them.
//!
//! - GeoIP city: two Frankfurt networks measured Ashburn at 20 ms and Frankfurt at 120 ms (a
//!   VPN exit's picture); a third, never measured, is ranked by distance until the API has read
//!   the other two, then by its city's median, and `/v1/route` says so.
//! - Exploring: Singapore was never measured from the first network. With
//!   `--explore-percent 20`, about a fifth of its ICE answers carry Singapore as the fallback,
//!   never as the best relay, and `geoturn_api_explorations_total` counts exactly those; a
//!   network with nothing measured never explores, and `/v1/route` never does.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use geoturn_shared::latency::{MeasuredRtt, client_prefix};
use geoturn_shared::registry::{Registry, RelayRecord, RelayState};
use geoturn_tests::http::{metric, request};
use geoturn_tests::process::{ChildGuard, geoturn_bin};
use geoturn_tests::redis::{RedisServer, free_port};
use serde_json::Value;

const APP_KEY: &str = "app-key-0123456789abcdef";
const ADMIN_KEY: &str = "ops-key-0123456789abcdef";
const SECRET: &str = "measured-routing-secret-0123456789";
/// Networks GeoIP puts in Frankfurt: two measured, one not.
const MEASURED_A: &str = "192.0.2.10";
const MEASURED_B: &str = "198.51.100.10";
const NEWCOMER: &str = "203.0.113.10";
/// Not in the GeoIP database, nothing measured.
const UNPLACED: &str = "100.64.0.10";
/// ICE answers asked for the exploring share; 20 % of them is 40 on average (σ ≈ 5.7).
const ANSWERS: usize = 200;

fn record(id: &str, region: &str, place: (f64, f64), udp: &str) -> RelayRecord {
    let udp = udp.parse().unwrap();
    geoturn_tests::redis::relay_record(id, region, place, udp, RelayState::Active)
}

/// GET with the caller's key, as if from `client` behind the trusted proxy (loopback).
fn get(api: SocketAddr, path: &str, key: &str, client: &str) -> (u16, String) {
    let auth = format!("Bearer {key}");
    let r = request(
        api,
        "GET",
        path,
        &[("Authorization", &auth), ("X-Forwarded-For", client)],
        "",
    )
    .unwrap();
    (r.status, r.body)
}

fn route(api: SocketAddr, client: &str) -> Value {
    let (status, body) = get(
        api,
        &format!("/v1/route?ip={client}&count=2"),
        ADMIN_KEY,
        client,
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// (id, reason) of the best relay.
fn first(route: &Value) -> (String, String) {
    let c = &route["chosen"][0];
    (
        c["id"].as_str().unwrap_or_default().to_owned(),
        c["reason"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The relay hosts of an ICE answer's TURN entries, best first.
fn relay_hosts(body: &str) -> Vec<String> {
    let answer: Value = serde_json::from_str(body).unwrap();
    answer["iceServers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s.get("username").is_some())
        .map(|s| {
            let url = match &s["urls"] {
                Value::Array(urls) => urls[0].as_str().unwrap().to_owned(),
                other => other.as_str().unwrap().to_owned(),
            };
            // turn:HOST:PORT?transport=udp
            url.trim_start_matches("turn:")
                .split(':')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn explorations(api: SocketAddr) -> f64 {
    let (status, page) = get(api, "/metrics", ADMIN_KEY, "127.0.0.1");
    assert_eq!(status, 200);
    metric(&page, "geoturn_api_explorations_total", "").unwrap()
}

#[test]
fn a_city_speaks_for_its_unmeasured_networks_and_a_share_of_answers_explores() {
    let redis = RedisServer::start();
    let dir = geoturn_tests::temp_dir("measured-routing");
    let geo = geoturn_tests::geo::write_city_db(
        &dir,
        &[
            ("192.0.2.0/24", 50.11, 8.68),
            ("198.51.100.0/24", 50.11, 8.68),
            ("203.0.113.0/24", 50.11, 8.68),
        ],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let registry = rt.block_on(async {
        let reg = Registry::connect(&redis.url(), "geoturn:", None)
            .await
            .unwrap();
        for r in [
            record("fra", "eu-central", (50.1, 8.7), "192.0.2.201:3478"),
            record("iad", "us-east", (39.0, -77.5), "192.0.2.202:3478"),
            record("sin", "ap-southeast", (1.35, 103.8), "192.0.2.203:3478"),
        ] {
            // Long enough for the whole test: the API must not see them go stale.
            reg.heartbeat(&r, Duration::from_secs(120)).await.unwrap();
        }
        reg
    });
    let store = |ip: &str, region: &str, rtt_ms: u32| {
        let prefix = client_prefix(ip.parse().unwrap());
        let m = MeasuredRtt {
            rtt_ms,
            samples: 5,
            updated_ms: geoturn_shared::clock::unix_ms(),
        };
        rt.block_on(registry.store_client_rtts(region, &[(prefix, m)]))
            .unwrap();
    };
    for (ip, iad, fra) in [(MEASURED_A, 20, 120), (MEASURED_B, 22, 118)] {
        store(ip, "us-east", iad);
        store(ip, "eu-central", fra);
    }

    let port = free_port();
    let api: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _api = ChildGuard::spawn(
        Command::new(geoturn_bin())
            .args(["api", "--listen", &api.to_string()])
            .args(["--registry", &redis.url()])
            .arg("--geoip")
            .arg(&geo)
            // Relays count as stale after 3 heartbeats: 90 s, so the records written once above
            // stay live for the whole test.
            .args([
                "--heartbeat",
                "30",
                "--refresh-ms",
                "200",
                "--rate-limit",
                "0",
            ])
            .args(["--trusted-proxy", "127.0.0.1/32"])
            .args(["--explore-percent", "20"])
            .env("GEOTURN_API_KEYS", format!("app:{APP_KEY}"))
            .env("GEOTURN_ADMIN_KEYS", format!("ops:{ADMIN_KEY}"))
            .env("GEOTURN_AUTH_SECRETS", SECRET)
            .env_remove("GEOTURN_SECRETS_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let t0 = Instant::now();
    loop {
        let ready = request(api, "GET", "/readyz", &[], "").is_ok_and(|r| r.status == 200);
        if ready
            && route(api, UNPLACED)["chosen"]
                .as_array()
                .map_or(0, Vec::len)
                == 2
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the API never saw the relays"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // GeoIP city. Before the API has read the measured networks, the newcomer is ranked by
    // distance: Frankfurt.
    let before = route(api, NEWCOMER);
    println!("newcomer before: {before}");
    let (id, reason) = first(&before);
    assert_eq!(id, "fra", "{before}");
    assert!(reason.contains("great circle"), "{reason}");
    // Requests from the measured networks teach the API their city.
    for ip in [MEASURED_A, MEASURED_B] {
        let own = route(api, ip);
        let (id, reason) = first(&own);
        assert_eq!(id, "iad", "{own}");
        assert!(reason.contains("measured from "), "{reason}");
    }
    let after = route(api, NEWCOMER);
    println!("newcomer after: {after}");
    let (id, reason) = first(&after);
    assert_eq!(id, "iad", "{after}");
    assert!(
        reason.starts_with("RTT 21.0 ms measured from GeoIP city at 50.11,8.68 (2 networks)"),
        "{reason}"
    );
    assert_eq!(after["chosen"][1]["id"], "fra", "{after}");
    assert!(
        after["chosen"][1]["reason"]
            .as_str()
            .unwrap()
            .starts_with("RTT 119.0 ms measured from GeoIP city"),
        "{after}"
    );

    // Exploring. Singapore was never measured from MEASURED_A: a share of its answers try it
    // as the fallback, never as the best relay.
    assert_eq!(explorations(api), 0.0);
    let mut explored = 0;
    for _ in 0..ANSWERS {
        let (status, body) = get(api, "/v1/ice-servers", APP_KEY, MEASURED_A);
        assert_eq!(status, 200, "{body}");
        let hosts = relay_hosts(&body);
        assert_eq!(hosts.len(), 2, "{body}");
        assert_eq!(
            hosts[0], "192.0.2.202",
            "the best relay is never replaced: {body}"
        );
        match hosts[1].as_str() {
            "192.0.2.201" => {}
            "192.0.2.203" => explored += 1,
            other => panic!("unexpected fallback {other}: {body}"),
        }
    }
    println!("{explored} of {ANSWERS} answers explored");
    assert!((15..=70).contains(&explored), "{explored} of {ANSWERS}");
    assert_eq!(explorations(api), f64::from(explored));
    // Nothing measured, nothing to explore; the operator's explanation never explores.
    for _ in 0..40 {
        let (status, body) = get(api, "/v1/ice-servers", APP_KEY, UNPLACED);
        assert_eq!(status, 200, "{body}");
        let route = route(api, MEASURED_A);
        assert_eq!(route["chosen"][1]["id"], "fra", "{route}");
    }
    assert_eq!(explorations(api), f64::from(explored));
    let (_, page) = get(api, "/metrics", ADMIN_KEY, "127.0.0.1");
    let measured = metric(&page, "geoturn_api_answers_total", "estimate=\"measured\"").unwrap();
    assert_eq!(measured, ANSWERS as f64, "{page}");
    let _ = std::fs::remove_dir_all(dir);
}
