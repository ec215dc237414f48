//! End to end over real UDP sockets: a relay in this process, the test client, an echo peer.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::time::Duration;

use geoturn_tests::client::{Received, TurnClient, TurnError};
use geoturn_tests::peer::EchoPeer;
use geoturn_tests::relay::TestRelay;

const WAIT: Duration = Duration::from_secs(2);

fn client(relay: &TestRelay, user: &str) -> TurnClient {
    let c = TestRelay::credentials(user, 3600);
    TurnClient::new(relay.addr(), &c.username, &c.password).unwrap()
}

#[test]
fn allocate_permission_send_and_data_indications() {
    let relay = TestRelay::start(|_| {});
    let peer = EchoPeer::start().unwrap();
    let mut c = client(&relay, "alice");
    let relayed = c.allocate().unwrap();
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");
    assert!((40000..=48999).contains(&relayed.port()));
    c.create_permission(peer.addr()).unwrap();
    for i in 0..20u8 {
        let payload = vec![i; 100 + usize::from(i)];
        c.send_indication(peer.addr(), &payload).unwrap();
        let got = c.recv(WAIT).unwrap();
        let got = got.unwrap_or_else(|| {
            std::thread::sleep(Duration::from_millis(600));
            panic!(
                "no echo; peer got {} {:?}",
                peer.received(),
                relay.handle().snapshot()
            )
        });
        assert_eq!(
            got,
            Received::Data {
                peer: peer.addr(),
                payload
            }
        );
    }
    assert_eq!(peer.received(), 20);
}

#[test]
fn channel_data_both_ways() {
    let relay = TestRelay::start(|_| {});
    let peer = EchoPeer::start().unwrap();
    let mut c = client(&relay, "bob");
    c.allocate().unwrap();
    c.channel_bind(0x4abc, peer.addr()).unwrap();
    for i in 0..50u16 {
        let payload = format!("frame {i}").into_bytes();
        c.send_channel(0x4abc, &payload).unwrap();
        let got = c.recv(WAIT).unwrap().expect("echo comes back");
        assert_eq!(
            got,
            Received::Channel {
                channel: 0x4abc,
                payload
            }
        );
    }
    let snap = relay.handle().snapshot();
    // Snapshots are published every tick; wait for one that counts our traffic.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut snap = snap;
    while snap.stats.packets_to_peer < 50 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        snap = relay.handle().snapshot();
    }
    assert_eq!(snap.stats.packets_to_peer, 50);
    assert_eq!(snap.stats.packets_to_client, 50);
    assert_eq!(snap.allocations, 1);
}

#[test]
fn refresh_zero_deletes_and_lifetime_expires() {
    let relay = TestRelay::start(|o| {
        o.default_lifetime = Some(2);
        o.max_lifetime = Some(2);
    });
    let peer = EchoPeer::start().unwrap();
    let mut c = client(&relay, "carol");
    c.allocate().unwrap();
    assert_eq!(c.refresh(3600).unwrap(), 2, "capped at max lifetime");
    c.channel_bind(0x4001, peer.addr()).unwrap();
    c.send_channel(0x4001, b"before").unwrap();
    assert!(c.recv(WAIT).unwrap().is_some());
    // Let it expire: 2 s lifetime, the sweep runs every second.
    std::thread::sleep(Duration::from_millis(3500));
    c.send_channel(0x4001, b"after").unwrap();
    assert_eq!(c.recv(Duration::from_millis(500)).unwrap(), None);
    assert_eq!(c.refresh(2), Err(TurnError::Code(437)));

    // A new allocation, deleted explicitly.
    let mut d = client(&relay, "dave");
    d.allocate().unwrap();
    assert_eq!(d.refresh(0).unwrap(), 0);
    assert_eq!(d.refresh(2), Err(TurnError::Code(437)));
}

#[test]
fn wrong_password_and_expired_username_are_refused() {
    let relay = TestRelay::start(|_| {});
    let good = TestRelay::credentials("eve", 3600);
    let mut c = TurnClient::new(relay.addr(), &good.username, "d3JvbmcgcGFzc3dvcmQ=").unwrap();
    assert_eq!(c.allocate(), Err(TurnError::Code(401)));

    // Correctly signed, but expired a minute ago.
    let now = geoturn_tests::unix_secs();
    let old = geoturn_shared::RestCredential::mint(
        geoturn_tests::TEST_SECRET.as_bytes(),
        "eve",
        now - 3660,
        3600,
    );
    let mut c = TurnClient::new(relay.addr(), &old.username, &old.password).unwrap();
    assert_eq!(c.allocate(), Err(TurnError::Code(401)));
    // A credential minted with another secret.
    let other = geoturn_shared::RestCredential::mint(b"another-secret-entirely", "eve", now, 60);
    let mut c = TurnClient::new(relay.addr(), &other.username, &other.password).unwrap();
    assert_eq!(c.allocate(), Err(TurnError::Code(401)));
}

#[test]
fn loopback_peer_is_forbidden_by_default() {
    // No --allow-peer: every 127.0.0.0/8 peer is refused, in any spelling.
    let relay = TestRelay::start(|o| o.allow_peers.clear());
    let peer = EchoPeer::start().unwrap();
    let mut c = client(&relay, "frank");
    c.allocate().unwrap();
    assert_eq!(c.create_permission(peer.addr()), Err(TurnError::Code(403)));
    assert_eq!(
        c.create_permission("169.254.169.254:80".parse().unwrap()),
        Err(TurnError::Code(403))
    );
    assert_eq!(
        c.channel_bind(0x4001, peer.addr()),
        Err(TurnError::Code(403))
    );
    c.send_indication(peer.addr(), b"sneak").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(peer.received(), 0);
}

#[test]
fn garbage_does_not_disturb_a_live_allocation() {
    let relay = TestRelay::start(|_| {});
    let peer = EchoPeer::start().unwrap();
    let mut c = client(&relay, "grace");
    c.allocate().unwrap();
    c.channel_bind(0x4002, peer.addr()).unwrap();
    // Garbage from the client's own address and from a stranger.
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut seed = 0x1234_5678_u64;
    for len in [0usize, 1, 3, 4, 19, 20, 21, 100, 1200, 9000] {
        let mut junk = vec![0u8; len];
        for b in &mut junk {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        c.send_raw(&junk).unwrap();
        stranger.send_to(&junk, relay.addr()).unwrap();
    }
    // A STUN header with a huge length, a ChannelData header with a huge length.
    c.send_raw(&[
        0, 1, 0xff, 0xfc, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ])
    .unwrap();
    c.send_raw(&[0x40, 0x02, 0xff, 0xff, 1, 2]).unwrap();
    c.send_channel(0x4002, b"still alive").unwrap();
    let got = c.recv(WAIT).unwrap();
    assert_eq!(
        got,
        Some(Received::Channel {
            channel: 0x4002,
            payload: b"still alive".to_vec()
        })
    );
}

#[test]
fn secret_rotation_takes_effect_without_restart() {
    let relay = TestRelay::start(|_| {});
    let new_secret = "rotated-secret-abcdef0123456789";
    relay
        .handle()
        .set_secrets(geoturn_shared::SecretSet::new(vec![
            geoturn_shared::Secret::new("new", new_secret),
            geoturn_shared::Secret::new("old", geoturn_tests::TEST_SECRET),
        ]));
    std::thread::sleep(Duration::from_millis(700)); // one worker tick
    let now = geoturn_tests::unix_secs();
    let fresh = geoturn_shared::RestCredential::mint(new_secret.as_bytes(), "heidi", now, 600);
    let mut c = TurnClient::new(relay.addr(), &fresh.username, &fresh.password).unwrap();
    c.allocate().unwrap();
    let mut old = client(&relay, "ivan");
    old.allocate().unwrap();
}

/// A video frame's worth of datagrams in a burst each way, with UDP GSO on (the default) and
/// off: the relay sends runs of equal-size datagrams to one destination as one GSO send, and
/// each side must still get every datagram whole, separate and in order.
#[test]
fn bursts_arrive_whole_and_in_order_with_and_without_gso() {
    for gso in [true, false] {
        let relay = TestRelay::start(|o| o.udp_gso = Some(gso));
        // Not 127.0.0.1, the relay's own address (a peer only at its relayed ports).
        let peer = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
        peer.set_read_timeout(Some(WAIT)).unwrap();
        let mut c = client(&relay, "gso");
        let relayed = c.allocate().unwrap();
        c.channel_bind(0x4001, peer.local_addr().unwrap()).unwrap();
        // 1200-byte packets with a shorter last one per frame, as a video encoder sends them.
        let frame = |i: u8| -> Vec<u8> {
            let len = if i % 10 == 9 { 333 } else { 1200 };
            vec![i; len]
        };
        for i in 0..40u8 {
            c.send_channel(0x4001, &frame(i)).unwrap();
        }
        let mut buf = [0u8; 2048];
        for i in 0..40u8 {
            let (n, from) = peer.recv_from(&mut buf).unwrap();
            assert_eq!(from, relayed, "gso={gso}");
            // Not assert_eq: a merged datagram would print kilobytes.
            assert!(
                buf[..n] == frame(i)[..],
                "client -> peer datagram {i}, gso={gso}: got {n} bytes of {}",
                buf[0]
            );
        }
        for i in 0..40u8 {
            peer.send_to(&frame(i), relayed).unwrap();
        }
        for i in 0..40u8 {
            let got = c.recv(WAIT).unwrap().expect("relayed to the client");
            assert_eq!(
                got,
                Received::Channel {
                    channel: 0x4001,
                    payload: frame(i)
                },
                "peer -> client datagram {i}, gso={gso}"
            );
        }
    }
}

/// The relay's own address (127.0.0.1 here, where it listens and relays from) is a peer only
/// at a relayed port in use: two of its clients call each other as ever, but nothing else
/// listening on that address — its TURN listener, any other service — is reachable through it,
/// although `--allow-peer 127.0.0.0/8` allows the address.
#[test]
fn the_relays_own_address_is_reachable_only_at_relayed_ports() {
    let relay = TestRelay::start(|_| {});
    let mut a = client(&relay, "alice");
    let mut b = client(&relay, "bob");
    let a_relayed = a.allocate().unwrap();
    let b_relayed = b.allocate().unwrap();
    assert_eq!(b_relayed.ip(), relay.addr().ip());

    // A call between two clients of this relay.
    a.create_permission(b_relayed).unwrap();
    b.create_permission(a_relayed).unwrap();
    a.send_indication(b_relayed, b"hello b").unwrap();
    assert_eq!(
        b.recv(WAIT).unwrap(),
        Some(Received::Data {
            peer: a_relayed,
            payload: b"hello b".to_vec()
        })
    );
    b.channel_bind(0x4001, a_relayed).unwrap();
    b.send_channel(0x4001, b"hello a").unwrap();
    assert_eq!(
        a.recv(WAIT).unwrap(),
        Some(Received::Data {
            peer: b_relayed,
            payload: b"hello a".to_vec()
        })
    );

    // A service on the relay's address, and the same service one address over.
    let on_relay = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let elsewhere = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    for s in [&on_relay, &elsewhere] {
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
    }
    let service = on_relay.local_addr().unwrap();
    a.create_permission(service).unwrap();
    a.create_permission(elsewhere.local_addr().unwrap())
        .unwrap();
    assert_eq!(a.channel_bind(0x4002, service), Err(TurnError::Code(403)));
    let mut buf = [0u8; 64];
    a.send_indication(service, b"knock").unwrap();
    a.send_indication(relay.addr(), b"knock").unwrap();
    a.send_indication(elsewhere.local_addr().unwrap(), b"knock")
        .unwrap();
    assert_eq!(elsewhere.recv(&mut buf).unwrap(), 5, "the control case");
    assert!(
        on_relay.recv(&mut buf).is_err(),
        "relayed to a service on the relay's own address"
    );
    // Workers publish their counters every 500 ms.
    let own_drops_reach = |n: u64, what: &str| {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let stats = relay.handle().snapshot().stats;
            let drops = stats.drops(geoturn_relay_proto::server::DropReason::OwnAddress);
            if drops >= n {
                assert_eq!(drops, n, "{what}");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: {drops} drops"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    own_drops_reach(2, "the service and the TURN listener");
    // B's port stops being a peer once B is gone.
    b.refresh(0).unwrap();
    a.send_indication(b_relayed, b"anyone?").unwrap();
    own_drops_reach(3, "B's freed port");
}
