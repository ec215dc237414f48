//! Interop with a TURN client nobody here wrote: coturn's `turnutils_uclient` relays through
//! geoturn to coturn's `turnutils_peer`, over channels and over Send indications, with
//! RTP/RTCP allocation pairs (EVEN-PORT + RESERVATION-TOKEN). It must lose nothing.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::process::{Command, Stdio};
use std::time::Duration;

use geoturn_tests::TEST_SECRET;
use geoturn_tests::process::{ChildGuard, require_tool};
use geoturn_tests::relay::TestRelay;

const HINT: &str = "install coturn: apt-get install -y --no-install-recommends coturn";

struct Totals {
    sent: u64,
    received: u64,
    lost: u64,
}

fn parse_totals(out: &str) -> Option<Totals> {
    let num_after = |key: &str| -> Option<u64> {
        let line = out.lines().rev().find(|l| l.contains(key))?;
        let rest = &line[line.find(key)? + key.len()..];
        rest.trim_start_matches([' ', '=', ':'])
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some(Totals {
        sent: num_after("tot_send_msgs")?,
        received: num_after("tot_recv_msgs")?,
        lost: num_after("Total lost packets")?,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Over {
    Udp,
    Tcp,
    Tls,
}

/// One uclient run at a time: each one is a relay, a client and a peer busy on 2 cores, and
/// "0 % loss" should measure the relay, not the scheduler.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_uclient(over: Over, extra: &[&str]) -> (Totals, String) {
    let (t, out, _) = run_uclient_stats(over, extra);
    (t, out)
}

fn run_uclient_stats(
    over: Over,
    extra: &[&str],
) -> (Totals, String, geoturn_relay::net::worker::ShardSnapshot) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let uclient = require_tool("turnutils_uclient", HINT);
    let peer_bin = require_tool("turnutils_peer", HINT);
    let dir = geoturn_tests::temp_dir("uclient-tls");
    let cert = geoturn_tests::tls::write_cert(&dir, "relay");
    let relay = TestRelay::start(|o| {
        if over == Over::Tls {
            o.tls_cert = Some(cert.cert_path.clone());
            o.tls_key = Some(cert.key_path.clone());
            o.tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
        }
    });
    let (port, transport_args): (u16, &[&str]) = match over {
        Over::Udp => (relay.addr().port(), &[]),
        Over::Tcp => (relay.addr().port(), &["-t"]),
        Over::Tls => (relay.handle().tls_addrs()[0].port(), &["-t", "-S"]),
    };
    let peer_port = geoturn_tests::free_udp_port();
    let _peer = ChildGuard::spawn(
        Command::new(peer_bin)
            // Not the relay's address: a relay refuses itself as a peer but at relayed ports.
            .args(["-L", "127.0.0.2", "-p", &peer_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut child = ChildGuard::spawn(
        Command::new(uclient)
            .args(["-W", TEST_SECRET, "-u", "interop"])
            .args(["-e", "127.0.0.2", "-r", &peer_port.to_string()])
            .args(["-p", &port.to_string()])
            .args(["-m", "10", "-n", "300", "-l", "161", "-z", "2"])
            .args(transport_args)
            .args(extra)
            .arg("127.0.0.1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .unwrap();
    let status = child
        .wait_timeout(Duration::from_secs(90))
        .unwrap()
        .expect("turnutils_uclient finishes within 90 s");
    let mut out = String::new();
    use std::io::Read;
    if let Some(mut s) = child.0.stdout.take() {
        s.read_to_string(&mut out).unwrap();
    }
    if let Some(mut s) = child.0.stderr.take() {
        s.read_to_string(&mut out).unwrap();
    }
    assert!(status.success(), "uclient failed: {out}");
    // The sessions really went over the transport under test.
    let created = relay.handle().snapshot().stats.allocations_created;
    assert!(created >= 10, "only {created} allocations created: {out}");
    let _ = std::fs::remove_dir_all(dir);
    let totals = parse_totals(&out).unwrap_or_else(|| panic!("no totals in output:\n{out}"));
    (totals, out, relay.handle().snapshot())
}

#[test]
fn uclient_over_channels_loses_nothing() {
    let (t, out) = run_uclient(Over::Udp, &[]);
    assert_lossless(&t, &out, "udp channels");
}

#[test]
fn uclient_over_send_indications_loses_nothing() {
    let (t, out) = run_uclient(Over::Udp, &["-s"]);
    assert_lossless(&t, &out, "udp send indications");
}

#[test]
fn uclient_over_tcp_loses_nothing() {
    let (t, out) = run_uclient(Over::Tcp, &[]);
    assert_lossless(&t, &out, "tcp channels");
}

#[test]
fn uclient_over_tls_loses_nothing() {
    let (t, out) = run_uclient(Over::Tls, &[]);
    assert_lossless(&t, &out, "tls channels");
}

#[test]
fn uclient_over_tls_with_send_indications_loses_nothing() {
    let (t, out) = run_uclient(Over::Tls, &["-s"]);
    assert_lossless(&t, &out, "tls send indications");
}

fn assert_lossless(t: &Totals, out: &str, what: &str) {
    assert_eq!(t.sent, 3000, "{out}");
    assert_eq!(t.received, t.sent, "{out}");
    assert_eq!(t.lost, 0, "{out}");
    println!(
        "uclient {what}: sent {} received {} lost {}",
        t.sent, t.received, t.lost
    );
}

#[test]
fn uclient_rfc6062_tcp_relaying_loses_nothing() {
    // -T: TCP allocations (RFC 6062), clients in pairs: one Connects to the other's relayed
    // address, the other gets ConnectionAttempt; both bind data connections.
    let (t, out, snap) = run_uclient_stats(Over::Tcp, &["-T"]);
    assert_lossless(&t, &out, "rfc6062 tcp relaying");
    // Spliced bytes count in the relayed-bytes metrics: every message crossed the relay to a
    // peer (the other client's relayed address) and back.
    let payload = 3000 * 161;
    assert!(snap.stats.bytes_to_peer >= payload, "{:?}", snap.stats);
    assert!(snap.stats.bytes_to_client >= payload, "{:?}", snap.stats);
}

#[test]
fn uclient_rfc6062_over_tls_loses_nothing() {
    let (t, out) = run_uclient(Over::Tls, &["-T"]);
    assert_lossless(&t, &out, "rfc6062 over tls");
}
