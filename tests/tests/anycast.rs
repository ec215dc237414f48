//! Anycast first contact across a route flip, on one machine: two "sites" (network
//! namespaces), each with a relay that owns the shared anycast address 198.18.0.1 plus its own
//! unicast address, a router namespace holding the echo peer and the anycast route, and a
//! client namespace. The client allocates through the anycast address, is sent (300, signed)
//! to site 1's unicast address, and keeps relaying while the route to the anycast address
//! moves to site 2. For comparison, an allocation made directly on an anycast address (relays
//! that treat it as a plain listener) breaks at the flip.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use geoturn_tests::client::{Received, TurnClient, TurnError};
use geoturn_tests::netns::{NetNs, veth};
use geoturn_tests::peer::EchoPeer;
use geoturn_tests::process::{ChildGuard, geoturn_bin};

const SECRET: &str = "anycast-test-secret-0123456789";
const ANYCAST: &str = "198.18.0.1";
const PEER_IP: &str = "10.9.0.1";

struct Topology {
    router: NetNs,
    client: NetNs,
    sites: [NetNs; 2],
}

/// client 10.0.0.2 — router — site1 10.1.0.2 / site2 10.2.0.2; the peer on the router at
/// 10.9.0.1; 198.18.0.1 on both sites' `lo`, routed by the router to `site`.
fn topology() -> Topology {
    let router = NetNs::new("r");
    let client = NetNs::new("c");
    let sites = [NetNs::new("s1"), NetNs::new("s2")];
    router.sysctl("net.ipv4.ip_forward=1");
    veth(
        &router,
        "to-c",
        "10.0.0.1/24",
        &client,
        "eth0",
        "10.0.0.2/24",
    );
    client.ip(&["route", "add", "default", "via", "10.0.0.1"]);
    for (i, site) in sites.iter().enumerate() {
        let n = i + 1;
        veth(
            &router,
            &format!("to-s{n}"),
            &format!("10.{n}.0.1/24"),
            site,
            "eth0",
            &format!("10.{n}.0.2/24"),
        );
        site.ip(&["route", "add", "default", "via", &format!("10.{n}.0.1")]);
        site.ip(&["addr", "add", &format!("{ANYCAST}/32"), "dev", "lo"]);
    }
    router.ip(&["addr", "add", &format!("{PEER_IP}/32"), "dev", "lo"]);
    let t = Topology {
        router,
        client,
        sites,
    };
    t.route_anycast_to(1);
    t
}

impl Topology {
    /// Points the router's route for the anycast address at site `n` (what a BGP change does).
    fn route_anycast_to(&self, n: usize) {
        self.router.ip(&[
            "route",
            "replace",
            &format!("{ANYCAST}/32"),
            "via",
            &format!("10.{n}.0.2"),
        ]);
    }
}

/// A relay in site `n` with `args` (listen addresses), peers on 10.9.0.0/24 allowed;
/// `instance` keeps two relays of one site apart (ops port, relayed ports).
fn relay(t: &Topology, n: usize, instance: u16, args: &[&str]) -> ChildGuard {
    let site = &t.sites[n - 1];
    let ports = format!("{}-{}", 40000 + instance * 1000, 40999 + instance * 1000);
    ChildGuard::spawn(
        site.command(geoturn_bin())
            .args(["relay", "--relay-ip", &format!("10.{n}.0.2")])
            .args(["--allow-peer", "10.9.0.0/24", "--relay-ports", &ports])
            .args(["--http", &format!("127.0.0.1:{}", 9641 + instance)])
            .args(["--node-id", &format!("site{n}-{instance}")])
            .args(["--drain-timeout", "1", "--workers", "1"])
            .args(args)
            .env("GEOTURN_AUTH_SECRETS", SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap()
}

fn client(t: &Topology, server: SocketAddr) -> TurnClient {
    let c = geoturn_shared::RestCredential::mint(
        SECRET.as_bytes(),
        "anycaster",
        geoturn_tests::unix_secs(),
        600,
    );
    t.client
        .enter(move || TurnClient::new(server, &c.username, &c.password).unwrap())
}

/// Allocates, retrying while the relay process starts.
fn allocate(t: &Topology, server: SocketAddr) -> (TurnClient, Result<SocketAddr, TurnError>) {
    let t0 = Instant::now();
    loop {
        let mut c = client(t, server);
        match c.allocate() {
            Err(TurnError::Timeout) if t0.elapsed() < Duration::from_secs(10) => continue,
            r => return (c, r),
        }
    }
}

/// Streams 300 channel packets, one every 5 ms, flipping the anycast route to site 2 after
/// the 100th; returns how many of the first 100 and of the last 200 came back.
fn stream_across_flip(t: &Topology, c: &mut TurnClient, peer: SocketAddr) -> (usize, usize) {
    c.create_permission(peer).unwrap();
    c.channel_bind(0x4001, peer).unwrap();
    let mut back = [false; 300];
    for seq in 0..300u16 {
        if seq == 100 {
            t.route_anycast_to(2);
        }
        c.send_channel(0x4001, &seq.to_be_bytes()).unwrap();
        let until = Instant::now() + Duration::from_millis(5);
        while let Some(r) = c
            .recv(until.saturating_duration_since(Instant::now()))
            .unwrap()
        {
            if let Received::Channel { payload: data, .. } = r
                && let Ok(b) = <[u8; 2]>::try_from(data.as_slice())
            {
                back[usize::from(u16::from_be_bytes(b)).min(299)] = true;
            }
            if Instant::now() >= until {
                break;
            }
        }
    }
    // Late echoes.
    let until = Instant::now() + Duration::from_millis(300);
    while let Ok(Some(r)) = c.recv(until.saturating_duration_since(Instant::now())) {
        if let Received::Channel { payload: data, .. } = r
            && let Ok(b) = <[u8; 2]>::try_from(data.as_slice())
        {
            back[usize::from(u16::from_be_bytes(b)).min(299)] = true;
        }
    }
    let before = back[..100].iter().filter(|b| **b).count();
    let after = back[100..].iter().filter(|b| **b).count();
    (before, after)
}

#[test]
fn sessions_survive_an_anycast_route_flip_and_naive_anycast_allocations_do_not() {
    let t = topology();
    let anycast: SocketAddr = format!("{ANYCAST}:3478").parse().unwrap();
    let _relays = [
        relay(
            &t,
            1,
            0,
            &[
                "--listen",
                "10.1.0.2:3478",
                "--anycast-listen",
                "198.18.0.1:3478",
            ],
        ),
        relay(
            &t,
            2,
            0,
            &[
                "--listen",
                "10.2.0.2:3478",
                "--anycast-listen",
                "198.18.0.1:3478",
            ],
        ),
    ];
    let peer_addr: SocketAddr = format!("{PEER_IP}:7000").parse().unwrap();
    let _peer = t
        .router
        .enter(move || EchoPeer::start_on(peer_addr).unwrap());

    // First contact on the anycast address: a 300 (the client checked its MESSAGE-INTEGRITY
    // before following it) to site 1's unicast address.
    let (_, first) = allocate(&t, anycast);
    assert_eq!(
        first,
        Err(TurnError::Redirect("10.1.0.2:3478".parse().unwrap())),
        "first contact via site 1"
    );
    let (mut session, relayed) = allocate(&t, "10.1.0.2:3478".parse().unwrap());
    let relayed = relayed.unwrap();
    assert_eq!(relayed.ip().to_string(), "10.1.0.2");

    // The route to the anycast address moves to site 2 mid-stream: nothing is lost.
    let (before, after) = stream_across_flip(&t, &mut session, peer_addr);
    eprintln!("unicast session across the flip: {before}/100 before, {after}/200 after");
    assert_eq!(
        (before, after),
        (100, 200),
        "packets lost across the route flip"
    );
    session.refresh(0).unwrap();

    // New first contacts now reach site 2 and go to its unicast address.
    let (_, second) = allocate(&t, anycast);
    assert_eq!(
        second,
        Err(TurnError::Redirect("10.2.0.2:3478".parse().unwrap())),
        "first contact via site 2 after the flip"
    );

    // For comparison: relays that serve the anycast address as a plain listener. The
    // allocation lives on site 1's anycast listener; after the flip the client's packets reach
    // site 2, which has no such allocation.
    t.route_anycast_to(1);
    let _naive = [
        relay(
            &t,
            1,
            1,
            &["--listen", "198.18.0.1:3479", "--listen", "10.1.0.2:3479"],
        ),
        relay(
            &t,
            2,
            1,
            &["--listen", "198.18.0.1:3479", "--listen", "10.2.0.2:3479"],
        ),
    ];
    let (mut naive, relayed) = allocate(&t, format!("{ANYCAST}:3479").parse().unwrap());
    assert!(relayed.is_ok(), "{relayed:?}");
    let (before, after) = stream_across_flip(&t, &mut naive, peer_addr);
    eprintln!(
        "allocation on the anycast address across the flip: {before}/100 before, {after}/200 after"
    );
    assert_eq!(before, 100, "the naive allocation relays before the flip");
    assert!(
        after < 10,
        "an allocation on the anycast address should break at the flip: {after}/200 came back"
    );
    // Site 2 does not know it: a Refresh over the anycast route is refused.
    assert_eq!(naive.refresh(600), Err(TurnError::Code(437)));
}
