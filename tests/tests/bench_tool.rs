//! The load generator (`geoturn bench`) against an in-process relay and the raw forwarder: it
//! sets its allocations up, gets its packets back, and notices when they do not come back.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::process::Command;

use geoturn_bench::forwarder::{Forwarder, ForwarderConfig};
use geoturn_bench::{BenchOptions, Report, Target};
use geoturn_tests::TEST_SECRET;
use geoturn_tests::process::geoturn_bin;
use geoturn_tests::relay::TestRelay;

fn options(server: std::net::SocketAddr) -> BenchOptions {
    BenchOptions {
        server,
        allocations: 4,
        rate: vec![200.0],
        duration: 0.6,
        warmup: 0.1,
        drain: 0.3,
        secret: vec![TEST_SECRET.into()],
        ..BenchOptions::default()
    }
}

/// What a healthy step looks like: (nearly) everything back, at the asked rate, in
/// loopback time.
fn assert_clean(r: &Report, allocations: usize) {
    assert_eq!(r.setup.ok, allocations, "{:?}", r.setup.errors);
    assert_eq!(r.setup.failed, 0);
    assert!(r.setup.per_second > 0.0);
    let s = r.steps.first().expect("one step");
    let expected = (s.rate_per_allocation * s.seconds) as u64 * allocations as u64;
    assert!(
        s.sent >= expected * 95 / 100 && s.sent <= expected,
        "sent {} of {expected}",
        s.sent
    );
    // A loaded 2-core machine may drop the odd packet; a broken path drops them all.
    assert!(s.loss < 0.02, "loss {}", s.loss);
    assert!(s.received <= s.sent);
    assert!(
        s.rtt_us.p50 > 0.0 && s.rtt_us.p50 < 100_000.0,
        "{:?}",
        s.rtt_us
    );
    assert!(s.rtt_us.p50 <= s.rtt_us.p99 && s.rtt_us.p99 <= s.rtt_us.p999);
    assert!(s.rtt_us.p999 <= s.rtt_us.max);
    let mbps = s.received as f64 * r.payload as f64 * 8.0 / s.seconds / 1e6;
    assert!((s.received_mbps - mbps).abs() < 1e-6);
}

#[test]
fn bench_binary_relays_through_geoturn_and_reports_json() {
    let relay = TestRelay::start(|_| {});
    let out = Command::new(geoturn_bin())
        .args(["bench", "--json", "--allocations", "4", "--rate", "200"])
        .args(["--duration", "0.6", "--warmup", "0.1", "--drain", "0.3"])
        .args(["--server", &relay.addr().to_string()])
        // The relay runs in this process: its CPU and memory are ours.
        .args(["--server-pid", &std::process::id().to_string()])
        .env("GEOTURN_AUTH_SECRETS", TEST_SECRET)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "geoturn bench failed: {stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["mode"], "turn-channel");
    assert_eq!(json["setup"]["ok"], 4);
    let step = &json["steps"][0];
    assert_eq!(
        step["loss"].as_f64().map(|l| l < 0.02),
        Some(true),
        "{step}"
    );
    assert!(step["received"].as_u64().unwrap() >= 400, "{step}");
    // Both directions cross the relay: about twice the echoes.
    let relayed = step["relayed_pps"].as_f64().unwrap();
    let echoed = step["received_pps"].as_f64().unwrap();
    assert!(relayed >= 1.9 * echoed && relayed <= 2.1 * echoed, "{step}");
    assert!(step["server_cpu_us_per_packet"].as_f64().unwrap() > 0.0);
    assert!(json["setup"]["server_rss_after"].as_u64().unwrap() > 0);
    // The relay counted the data too (its snapshot is published every 500 ms).
    let echoed = step["received"].as_u64().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut snap = relay.handle().snapshot();
    while snap.stats.packets_to_client < echoed && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        snap = relay.handle().snapshot();
    }
    assert!(
        snap.stats.packets_to_peer >= echoed && snap.stats.packets_to_client >= echoed,
        "{snap:?}"
    );
}

#[test]
fn send_indications_through_geoturn_lose_nothing() {
    let relay = TestRelay::start(|_| {});
    let r = geoturn_bench::run(&BenchOptions {
        send_indications: true,
        ..options(relay.addr())
    })
    .unwrap();
    assert_eq!(r.mode, "turn-send-indication");
    assert_clean(&r, 4);
    // Freed at the end (Refresh 0): the relay empties.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while relay.handle().snapshot().allocations > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(relay.handle().snapshot().allocations, 0);
}

#[test]
fn raw_forwarder_mode_loses_nothing() {
    let fwd = Forwarder::start(&ForwarderConfig::default()).unwrap();
    let r = geoturn_bench::run(&BenchOptions {
        target: Target::Raw,
        secret: vec![],
        ..options(fwd.addr())
    })
    .unwrap();
    assert_eq!(r.packet_bytes, 160);
    assert_clean(&r, 4);
    assert!(fwd.forwarded() >= 2 * r.steps[0].received);
}

#[test]
fn loss_and_refusals_are_reported() {
    // 200 packets/s of 160 bytes is 256 kbit/s per allocation, both ways 512: a 64 kbit/s
    // allocation limit drops most of it, and the generator must say so.
    let relay = TestRelay::start(|o| o.max_bps = Some(64_000));
    let r = geoturn_bench::run(&options(relay.addr())).unwrap();
    let s = &r.steps[0];
    assert!(s.loss > 0.5, "loss {} should show the limit", s.loss);
    assert!(!s.sustained);
    assert!(r.max_sustained.is_none());
    // A wrong secret: no allocation, and an error that says why.
    let err = geoturn_bench::run(&BenchOptions {
        secret: vec!["not-the-relay-secret-0123456789".into()],
        allocations: 2,
        ..options(relay.addr())
    })
    .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
}
