//! The relay binary's operations surface: metrics that move with traffic, status, health,
//! and a drain started over HTTP that keeps the live allocation, refuses new ones, turns
//! /readyz to 503 and lets the process exit once the last allocation is gone.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use geoturn_tests::client::{Received, TurnClient, TurnError};
use geoturn_tests::http::{metric, request};
use geoturn_tests::peer::EchoPeer;
use geoturn_tests::process::{ChildGuard, geoturn_bin};

const SECRET: &str = "ops-test-secret-0123456789";
const TOKEN: &str = "ops-admin-token-0123456789";

fn start_relay(udp: u16, http: u16, extra: &[&str]) -> ChildGuard {
    ChildGuard::spawn(
        Command::new(geoturn_bin())
            .args(["relay", "--listen", &format!("127.0.0.1:{udp}")])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args([
                "--allow-peer",
                "127.0.0.0/8",
                "--relay-ports",
                "31000-31999",
            ])
            .args(["--node-id", "relay-a", "--region", "eu-west"])
            .args(extra)
            .env("GEOTURN_AUTH_SECRETS", SECRET)
            .env("GEOTURN_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap()
}

fn client_for(udp: u16, user: &str) -> TurnClient {
    let cred = geoturn_shared::RestCredential::mint(
        SECRET.as_bytes(),
        user,
        geoturn_tests::unix_secs(),
        600,
    );
    TurnClient::new(
        format!("127.0.0.1:{udp}").parse().unwrap(),
        &cred.username,
        &cred.password,
    )
    .unwrap()
}

fn wait_http(http: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while request(http, "GET", "/healthz", &[], "").is_err() {
        assert!(Instant::now() < deadline, "ops HTTP did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_and_status_follow_traffic() {
    let (udp, http_port) = (
        geoturn_tests::free_tcp_port(),
        geoturn_tests::free_tcp_port(),
    );
    let _relay = start_relay(udp, http_port, &[]);
    let http = format!("127.0.0.1:{http_port}").parse().unwrap();
    wait_http(http);
    let peer = EchoPeer::start().unwrap();
    let mut c = client_for(udp, "metrics");
    c.allocate().unwrap();
    c.channel_bind(0x4010, peer.addr()).unwrap();
    for i in 0..40u8 {
        c.send_channel(0x4010, &[i; 200]).unwrap();
        assert!(c.recv(Duration::from_secs(2)).unwrap().is_some());
    }
    // Workers publish every 500 ms.
    std::thread::sleep(Duration::from_millis(1500));
    let page = request(http, "GET", "/metrics", &[], "").unwrap();
    assert_eq!(page.status, 200);
    let m = |name: &str, labels: &str| metric(&page.body, name, labels).unwrap_or(-1.0);
    assert_eq!(m("geoturn_allocations", "transport=\"udp\""), 1.0);
    assert_eq!(m("geoturn_channels", ""), 1.0);
    assert_eq!(m("geoturn_permissions", ""), 1.0);
    assert_eq!(
        m("geoturn_relayed_packets_total", "direction=\"to_peer\""),
        40.0
    );
    assert_eq!(
        m("geoturn_relayed_packets_total", "direction=\"to_client\""),
        40.0
    );
    assert_eq!(
        m("geoturn_relayed_bytes_total", "direction=\"to_peer\""),
        8000.0
    );
    assert_eq!(
        m("geoturn_auth_failures_total", "reason=\"challenge\""),
        1.0
    );
    assert_eq!(m("geoturn_draining", ""), 0.0);
    // No registry, nothing to report: the gauge has its # TYPE line and no sample.
    assert_eq!(metric(&page.body, "geoturn_registry_up", ""), None);
    assert!(page.body.contains("# TYPE geoturn_registry_up gauge"));
    // Every exported sample belongs to a documented metric name.
    for line in page.body.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(
            geoturn_relay::ops::metrics::METRIC_NAMES.contains(&name)
                || geoturn_relay::mesh::METRIC_NAMES.contains(&name)
                || geoturn_shared::process_metrics::NAMES.contains(&name),
            "undocumented metric {name}"
        );
    }
    // The process metrics: descriptors counted, memory and CPU measured.
    for name in geoturn_shared::process_metrics::NAMES {
        assert!(
            metric(&page.body, name, "").is_some_and(|v| v >= 0.0),
            "{name} missing"
        );
    }
    let status = request(http, "GET", "/status", &[], "").unwrap();
    assert_eq!(status.status, 200);
    for needle in [
        "\"node_id\":\"relay-a\"",
        "\"region\":\"eu-west\"",
        "\"state\":\"active\"",
        "\"allocations\":1",
        "\"udp\":1",
    ] {
        assert!(status.body.contains(needle), "{needle} in {}", status.body);
    }
    let bad = request(http, "GET", "/nope", &[], "").unwrap();
    assert_eq!(bad.status, 404);
    assert!(bad.body.contains("\"error\""), "{}", bad.body);
}

#[test]
fn drain_keeps_live_allocations_refuses_new_and_exits_when_empty() {
    let (udp, http_port) = (
        geoturn_tests::free_tcp_port(),
        geoturn_tests::free_tcp_port(),
    );
    let mut relay = start_relay(udp, http_port, &["--drain-timeout", "60"]);
    let http = format!("127.0.0.1:{http_port}").parse().unwrap();
    wait_http(http);
    assert_eq!(
        request(http, "GET", "/readyz", &[], "").unwrap().status,
        200
    );
    let peer = EchoPeer::start().unwrap();
    let mut live = client_for(udp, "live");
    live.allocate().unwrap();
    live.channel_bind(0x4020, peer.addr()).unwrap();

    // Wrong and missing tokens are refused.
    let r = request(
        http,
        "POST",
        "/drain",
        &[("Authorization", "Bearer nope")],
        "",
    )
    .unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(
        request(http, "POST", "/drain", &[], "").unwrap().status,
        401
    );
    let auth = format!("Bearer {TOKEN}");
    let r = request(http, "POST", "/drain", &[("Authorization", &auth)], "").unwrap();
    assert_eq!(r.status, 202, "{}", r.body);
    let started = Instant::now();
    let ready = request(http, "GET", "/readyz", &[], "").unwrap();
    assert_eq!(ready.status, 503);
    assert!(ready.body.contains("draining"));

    // Workers apply the drain within one tick.
    std::thread::sleep(Duration::from_millis(700));
    let mut late = client_for(udp, "late");
    assert_eq!(late.allocate(), Err(TurnError::Code(403)));
    // The live allocation keeps relaying and refreshing.
    live.send_channel(0x4020, b"during drain").unwrap();
    assert_eq!(
        live.recv(Duration::from_secs(2)).unwrap(),
        Some(Received::Channel {
            channel: 0x4020,
            payload: b"during drain".to_vec()
        })
    );
    assert!(
        live.refresh(600).unwrap() <= 60,
        "lifetime capped at the drain deadline"
    );
    let status = request(http, "GET", "/status", &[], "").unwrap();
    assert!(
        status.body.contains("\"state\":\"draining\""),
        "{}",
        status.body
    );
    assert!(
        relay.0.try_wait().unwrap().is_none(),
        "must not exit with a live allocation"
    );

    // The last allocation ends: the process exits on its own, cleanly.
    live.refresh(0).unwrap();
    let status = relay
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("relay exits once the last allocation is gone");
    assert!(status.success(), "{status}");
    println!(
        "drain: exited {:.1} s after drain start, 0 allocations left",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn sigterm_drains_and_exits_at_the_deadline() {
    let (udp, http_port) = (
        geoturn_tests::free_tcp_port(),
        geoturn_tests::free_tcp_port(),
    );
    let mut relay = start_relay(udp, http_port, &["--drain-timeout", "2"]);
    let http = format!("127.0.0.1:{http_port}").parse().unwrap();
    wait_http(http);
    let mut live = client_for(udp, "stuck");
    live.allocate().unwrap();
    let t0 = Instant::now();
    relay.terminate();
    let status = relay
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("relay exits at the drain deadline");
    assert!(status.success());
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1800),
        "exited after {took:?}, before the 2 s deadline, with an allocation alive"
    );
}

/// The relay's log at start, from a relay started with `extra` flags (and no other policy
/// flags apart from the listeners and the relayed ports).
fn startup_log(extra: &[&str]) -> String {
    let dir = geoturn_tests::temp_dir("startup-log");
    let log_path = dir.join("relay.log");
    // Port 0 everywhere: the relay picks free ports itself (a port chosen here could be taken
    // by a parallel test before the relay binds it).
    let mut cmd = Command::new(geoturn_bin());
    cmd.args(["relay", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(["--relay-ports", "31000-31999"])
        .args(extra)
        .env("GEOTURN_AUTH_SECRETS", SECRET)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    let mut child = ChildGuard::spawn(&mut cmd).unwrap();
    // The start-up warnings follow the "relay listening" line at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("relay listening") {
            break;
        }
        let exited = child.wait_timeout(Duration::from_millis(50)).unwrap();
        assert!(
            exited.is_none() && Instant::now() < deadline,
            "the relay did not start ({exited:?}):\n{log}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    drop(child);
    std::fs::read_to_string(&log_path).unwrap()
}

/// A relay whose configuration lets clients reach inside the host or its network says so at
/// start, naming what it reaches; one with the defaults says nothing of the kind.
#[test]
fn a_relay_that_reaches_inside_says_so_at_start() {
    let loosened = startup_log(&[
        "--allow-peer",
        "127.0.0.0/8",
        "--allow-peer",
        "169.254.169.254/32",
        "--allow-relay-to-self",
    ]);
    for named in [
        "loopback",
        "cloud metadata 169.254.169.254",
        "--allow-relay-to-self",
    ] {
        assert!(
            loosened.contains(named),
            "no warning naming {named} at start:\n{loosened}"
        );
    }
    assert!(!loosened.contains("private 10.0.0.0/8"), "{loosened}");
    let default = startup_log(&[]);
    assert!(
        !default.contains("reaches") && !default.contains("allow-relay-to-self"),
        "a relay with the default policy warned:\n{default}"
    );
}

/// A relayed address that is not one of this host's (here TEST-NET-1, on no machine) is named
/// in a warning at start: every Allocate would fail to bind. The default (the listening
/// address) is not.
#[test]
fn a_relayed_address_of_another_host_says_so_at_start() {
    let elsewhere = startup_log(&["--relay-ip", "192.0.2.123"]);
    assert!(
        elsewhere.contains("not an address of this host") && elsewhere.contains("192.0.2.123"),
        "no warning at start:\n{elsewhere}"
    );
    let default = startup_log(&[]);
    assert!(
        !default.contains("not an address of this host"),
        "a relay on its own address warned:\n{default}"
    );
}

/// A relay with TLS but no `--public-host` warns that browsers will refuse its `turns:` URLs
/// (they check the certificate against the URL's host, here an IP); with a name it does not.
#[test]
fn a_tls_relay_without_a_name_says_so_at_start() {
    let dir = geoturn_tests::temp_dir("tls-name");
    let cert = geoturn_tests::tls::write_cert(&dir, "relay");
    let tls = "127.0.0.1:0".to_owned();
    let flags = |name: Option<&str>| {
        let mut f = vec![
            "--tls-cert".to_owned(),
            cert.cert_path.display().to_string(),
            "--tls-key".to_owned(),
            cert.key_path.display().to_string(),
            "--tls-listen".to_owned(),
            tls.clone(),
        ];
        if let Some(n) = name {
            f.extend(["--public-host".to_owned(), n.to_owned()]);
        }
        f
    };
    let unnamed = flags(None);
    let log = startup_log(&unnamed.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(log.contains("--public-host is not set"), "{log}");
    let named = flags(Some("localhost"));
    let log = startup_log(&named.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!log.contains("--public-host is not set"), "{log}");
}
