//! Two clients behind NAT reach each other only through the relay. Network namespaces the
//! test builds: a "public" namespace with the relay, two NAT routers (iptables MASQUERADE),
//! and a client behind each on a private network. The relay sees each NAT's public address,
//! a packet sent straight to the other client's NAT mapping is dropped, and data flows both
//! ways through the two allocations.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use geoturn_tests::client::{Received, TurnClient, TurnError};
use geoturn_tests::netns::{NetNs, veth};
use geoturn_tests::process::{ChildGuard, geoturn_bin, require_tool};

const SECRET: &str = "nat-test-secret-0123456789abcdef";
const RELAY: &str = "198.18.100.1:3478";

/// A client namespace on 192.168.`n`.2 behind a NAT router whose public side is
/// 198.18.10`n`.2, linked to `public`.
fn behind_nat(public: &NetNs, n: u8) -> (NetNs, NetNs) {
    let nat = NetNs::new(&format!("n{n}"));
    let client = NetNs::new(&format!("c{n}"));
    nat.sysctl("net.ipv4.ip_forward=1");
    veth(
        &nat,
        "inside",
        &format!("192.168.{n}.1/24"),
        &client,
        "eth0",
        &format!("192.168.{n}.2/24"),
    );
    veth(
        public,
        &format!("to-nat{n}"),
        &format!("198.18.10{n}.1/24"),
        &nat,
        "outside",
        &format!("198.18.10{n}.2/24"),
    );
    client.ip(&["route", "add", "default", "via", &format!("192.168.{n}.1")]);
    nat.ip(&["route", "add", "default", "via", &format!("198.18.10{n}.1")]);
    let status = nat
        .command("iptables")
        .args([
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "outside",
            "-j",
            "MASQUERADE",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "iptables MASQUERADE in {}", nat.name());
    (nat, client)
}

fn client_in(ns: &NetNs, user: &str) -> TurnClient {
    let c = geoturn_shared::RestCredential::mint(
        SECRET.as_bytes(),
        user,
        geoturn_tests::unix_secs(),
        600,
    );
    let server: SocketAddr = RELAY.parse().unwrap();
    ns.enter(move || TurnClient::new(server, &c.username, &c.password).unwrap())
}

#[test]
fn clients_behind_nat_talk_only_through_the_relay() {
    require_tool(
        "iptables",
        "apt-get install -y --no-install-recommends iptables",
    );
    let public = NetNs::new("pub");
    public.ip(&["addr", "add", "198.18.100.1/32", "dev", "lo"]);
    let (_nat1, c1) = behind_nat(&public, 1);
    let (_nat2, c2) = behind_nat(&public, 2);
    let _relay = ChildGuard::spawn(
        public
            .command(geoturn_bin())
            .args(["relay", "--listen", RELAY, "--http", "127.0.0.1:9641"])
            // The relayed addresses live on 198.18.100.1 too: allow that range as peers.
            .args(["--allow-peer", "198.18.100.0/24", "--workers", "1"])
            .args(["--drain-timeout", "1"])
            .env("GEOTURN_AUTH_SECRETS", SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();

    let mut a = client_in(&c1, "alice");
    let mut b = client_in(&c2, "bob");
    // The relay sees each client as its NAT's public address, never the private one.
    let t0 = Instant::now();
    let a_public = loop {
        match a.binding() {
            Ok(m) => break m,
            Err(TurnError::Timeout) if t0.elapsed() < Duration::from_secs(10) => {}
            Err(e) => panic!("binding: {e:?}"),
        }
    };
    let b_public = b.binding().unwrap();
    assert_eq!(a_public.ip().to_string(), "198.18.101.2", "{a_public}");
    assert_eq!(b_public.ip().to_string(), "198.18.102.2", "{b_public}");

    let a_relayed = a.allocate().unwrap();
    let b_relayed = b.allocate().unwrap();
    a.create_permission(b_relayed).unwrap();
    b.create_permission(a_relayed).unwrap();

    // No direct path: a packet straight to bob's NAT mapping is dropped by his NAT.
    let frame = [0x40, 0x01, 0x00, 0x04, b'd', b'i', b'r', b'!'];
    a.send_direct(b_public, &frame).unwrap();
    assert_eq!(b.recv(Duration::from_millis(500)).unwrap(), None);

    // Through the relay, both ways (Send indication one way, channel the other).
    a.send_indication(b_relayed, b"hello bob").unwrap();
    match b.recv(Duration::from_secs(2)).unwrap() {
        Some(Received::Data { peer, payload }) => {
            assert_eq!(peer, a_relayed);
            assert_eq!(payload, b"hello bob");
        }
        other => panic!("bob got {other:?}"),
    }
    b.channel_bind(0x4002, a_relayed).unwrap();
    b.send_channel(0x4002, b"hello alice").unwrap();
    match a.recv(Duration::from_secs(2)).unwrap() {
        Some(Received::Data { peer, payload }) => {
            assert_eq!(peer, b_relayed);
            assert_eq!(payload, b"hello alice");
        }
        other => panic!("alice got {other:?}"),
    }
    a.refresh(0).unwrap();
    b.refresh(0).unwrap();
}
