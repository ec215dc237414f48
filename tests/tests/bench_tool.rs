//! The load generator (`geoturn bench`) against an in-process relay and the raw forwarder: it
//! sets its allocations up, gets its packets back, and notices when they do not come back.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::process::Command;

use geoturn_bench::conn::ClientTransport;
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

/// Runs the generator on another thread and watches the relay meanwhile: the most live
/// allocations it saw by client transport (UDP, TCP, TLS), and the report.
fn run_watching(relay: &TestRelay, opts: BenchOptions) -> ([usize; 3], Report) {
    let bench = std::thread::spawn(move || geoturn_bench::run(&opts));
    let mut most = [0usize; 3];
    while !bench.is_finished() {
        let snap = relay.handle().snapshot();
        for (m, n) in most.iter_mut().zip(snap.allocations_by_transport) {
            *m = (*m).max(n);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (most, bench.join().unwrap().unwrap())
}

#[test]
fn tcp_and_tls_clients_relay_through_geoturn() {
    let dir = geoturn_tests::temp_dir("bench-streams");
    let cert = geoturn_tests::tls::write_cert(&dir, "relay");
    let relay = TestRelay::start(|o| {
        o.tls_cert = Some(cert.cert_path.clone());
        o.tls_key = Some(cert.key_path.clone());
        o.tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
    });
    let tls_addr = relay.handle().tls_addrs()[0];
    let opts = |transport, server| BenchOptions {
        transport,
        duration: 1.0,
        ..options(server)
    };

    // TCP on the relay's UDP/TCP port: every allocation is a TCP one.
    let (most, r) = run_watching(&relay, opts(ClientTransport::Tcp, relay.addr()));
    assert_eq!(r.transport, ClientTransport::Tcp);
    assert_clean(&r, 4);
    assert_eq!(most, [0, 4, 0], "live allocations by transport");
    // ChannelData is padded to 4 bytes on a stream: 4 + 160 already is.
    assert_eq!(r.packet_bytes, 164);

    // TLS, trusting the relay's self-signed certificate.
    let tls = BenchOptions {
        tls_ca: Some(cert.cert_path.clone()),
        tls_server_name: Some("localhost".into()),
        ..opts(ClientTransport::Tls, tls_addr)
    };
    let (most, r) = run_watching(&relay, tls.clone());
    assert_clean(&r, 4);
    assert_eq!(most[2], 4, "live allocations by transport: {most:?}");
    // Send indications over TLS too.
    let (_, r) = run_watching(
        &relay,
        BenchOptions {
            send_indications: true,
            ..tls.clone()
        },
    );
    assert_clean(&r, 4);

    // A certificate the generator does not trust: refused, and the error says so.
    let other = geoturn_tests::tls::write_cert(&dir, "other");
    let err = geoturn_bench::run(&BenchOptions {
        tls_ca: Some(other.cert_path),
        ..tls.clone()
    })
    .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    // TCP or TLS only towards a TURN server.
    let err = geoturn_bench::run(&BenchOptions {
        target: Target::Raw,
        ..opts(ClientTransport::Tcp, relay.addr())
    })
    .unwrap_err();
    assert!(err.to_string().contains("--transport"), "{err}");
}
