//! `geoturn route`: relays registered in a real Redis, a GeoIP database written at test time,
//! and the ranking the binary prints for clients in two places.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::process::Command;
use std::time::Duration;

use geoturn_shared::registry::{Registry, RelayRecord, RelayState};
use geoturn_tests::process::geoturn_bin;
use geoturn_tests::redis::RedisServer;
use mmdb_writer::{IpVersion, Writer};

/// A flat DB-IP city record (what the ip-location-db packages ship).
#[derive(serde::Serialize)]
struct DbIpCity {
    country_code: String,
    latitude: f32,
    longitude: f32,
}

fn record(id: &str, region: &str, lat: f64, lon: f64, state: RelayState) -> RelayRecord {
    let udp = "192.0.2.1:3478".parse().unwrap();
    geoturn_tests::redis::relay_record(id, region, (lat, lon), udp, state)
}

#[test]
fn route_ranks_registered_relays_for_clients_in_two_places() {
    let redis = RedisServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let reg = Registry::connect(&redis.url(), "geoturn:", None)
            .await
            .unwrap();
        for r in [
            record("lon-1", "eu-west", 51.5, -0.1, RelayState::Active),
            record("lon-2", "eu-west", 51.5, -0.1, RelayState::Draining),
            record("nyc-1", "us-east", 40.7, -74.0, RelayState::Active),
            record("sgp-1", "ap-southeast", 1.35, 103.8, RelayState::Active),
        ] {
            reg.heartbeat(&r, Duration::from_secs(60)).await.unwrap();
        }
    });
    let dir = geoturn_tests::temp_dir("route");
    let db = dir.join("city.mmdb");
    let mut w = Writer::builder("DBIP-City")
        .ip_version(IpVersion::V4)
        .build();
    let place = |cc: &str, lat: f32, lon: f32| DbIpCity {
        country_code: cc.into(),
        latitude: lat,
        longitude: lon,
    };
    w.insert(
        "203.0.113.0/24".parse::<ipnet::IpNet>().unwrap(),
        &place("GB", 51.5, -0.12),
    )
    .unwrap();
    w.insert(
        "198.51.100.0/24".parse::<ipnet::IpNet>().unwrap(),
        &place("US", 40.7, -74.0),
    )
    .unwrap();
    std::fs::write(&db, w.to_bytes().unwrap()).unwrap();

    let run = |ip: &str, extra: &[&str]| -> String {
        let out = Command::new(geoturn_bin())
            .args([
                "route",
                "--ip",
                ip,
                "--registry",
                &redis.url(),
                "--count",
                "2",
            ])
            .arg("--geoip")
            .arg(&db)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let london = run("203.0.113.5", &[]);
    let lines: Vec<&str> = london.lines().collect();
    assert!(lines[0].contains("(GB)"), "{london}");
    assert!(lines[2].starts_with("1. lon-1 (eu-west)"), "{london}");
    // Two regions at least: the second pick is the nearest other region.
    assert!(lines[3].starts_with("2. nyc-1 (us-east)"), "{london}");
    assert!(london.contains("excluded lon-2: draining"), "{london}");

    let new_york = run("198.51.100.9", &[]);
    assert!(
        new_york.lines().nth(2).unwrap().starts_with("1. nyc-1"),
        "{new_york}"
    );

    // Unknown location: the default region first.
    let unknown = run("192.0.2.77", &["--default-region", "ap-southeast"]);
    assert!(unknown.contains("location unknown"), "{unknown}");
    assert!(
        unknown.lines().nth(2).unwrap().starts_with("1. sgp-1"),
        "{unknown}"
    );

    let json = run("203.0.113.5", &["--json"]);
    assert!(json.contains("\"id\":\"lon-1\""), "{json}");
    let _ = std::fs::remove_dir_all(dir);
}
