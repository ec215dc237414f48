//! Relaying data: Send/Data indications, channels, the peer policy, bandwidth limits.

use super::*;

#[test]
fn send_indication_and_data_indication_round_trip() {
    let mut h = Harness::new();
    let (auth, relayed) = h.allocate();
    let send = encode_request(
        Method::Send,
        Class::Indication,
        TransactionId([9; 12]),
        &[Attribute::XorPeerAddress(peer()), Attribute::Data(b"hello")],
        None,
    )
    .unwrap();
    // No permission yet: dropped.
    assert!(h.input(&send).is_none());
    assert_eq!(h.server.stats().drops(DropReason::NoPermission), 1);
    h.allow_peer(&auth, peer());
    let (relay, to, payload) = h.input(&send).unwrap();
    assert_eq!(relay.addr(), relayed);
    assert_eq!(to.addr(), peer());
    assert_eq!(payload, b"hello");

    // The peer answers: the client gets a Data indication.
    let mut buf = [0u8; 2048];
    buf[PEER_HEADROOM..PEER_HEADROOM + 3].copy_from_slice(b"hey");
    let out = h
        .server
        .handle_peer_input(h.now, relay, PeerSocket::new(peer()), &mut buf, 3)
        .unwrap();
    assert_eq!(out.five_tuple, h.tuple);
    let m = Message::parse(&buf[out.range]).unwrap();
    assert_eq!((m.method(), m.class()), (Method::Data, Class::Indication));
    assert_eq!(
        m.attribute(types::XOR_PEER_ADDRESS).unwrap().unwrap(),
        Attribute::XorPeerAddress(peer())
    );
    assert_eq!(
        m.attribute(types::DATA).unwrap().unwrap(),
        Attribute::Data(b"hey")
    );

    // An unknown comprehension-required attribute: discarded, not relayed (RFC 8489 §6.3).
    // An unknown comprehension-optional one (0x8000 and up) is ignored.
    let malformed = h.server.stats().drops(DropReason::Malformed);
    for (typ, relayed) in [(0x7ABC, false), (0x8ABC, true)] {
        let send = encode_request(
            Method::Send,
            Class::Indication,
            TransactionId([10; 12]),
            &[
                Attribute::XorPeerAddress(peer()),
                Attribute::Data(b"hello"),
                Attribute::Unknown { typ, value: b"zz" },
            ],
            None,
        )
        .unwrap();
        assert_eq!(h.input(&send).is_some(), relayed, "attribute {typ:#x}");
    }
    assert_eq!(h.server.stats().drops(DropReason::Malformed), malformed + 1);

    // Another peer IP has no permission.
    let stranger = SocketAddr::from(([203, 0, 113, 51], 7000));
    assert!(
        h.server
            .handle_peer_input(h.now, relay, PeerSocket::new(stranger), &mut buf, 3)
            .is_none()
    );
    // A different port on the permitted IP is fine: permissions ignore ports.
    let other_port = SocketAddr::from(([203, 0, 113, 50], 7001));
    assert!(
        h.server
            .handle_peer_input(h.now, relay, PeerSocket::new(other_port), &mut buf, 3)
            .is_some()
    );
}

#[test]
fn data_indication_for_ipv6_peer_and_odd_length() {
    let config = ServerConfig {
        relay_ip_v4: None,
        relay_ip_v6: Some("2001:db8::1".parse().unwrap()),
        ..ServerConfig::default()
    };
    let mut h = Harness::with(config, Quota::new(0, 0, 0), 50000..=50010);
    let mut auth = h.credentials(3600);
    h.challenge(&mut auth, 17);
    // Default family IPv4 is unavailable: 440.
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(440));
    let resp = h.request(
        Method::Allocate,
        &[
            Attribute::RequestedTransport(17),
            Attribute::RequestedAddressFamily(crate::stun::AddressFamily::V6),
        ],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), None);
    let v6peer: SocketAddr = "[2001:db8:99::5]:9999".parse().unwrap();
    // An IPv4 peer on an IPv6 allocation: 443.
    let resp = h.request(
        Method::CreatePermission,
        &[Attribute::XorPeerAddress(peer())],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(443));
    h.allow_peer(&auth, v6peer);
    let relay = h.bound[0];
    let mut buf = [0u8; 2048];
    buf[PEER_HEADROOM..PEER_HEADROOM + 5].copy_from_slice(b"odd!!");
    let out = h
        .server
        .handle_peer_input(h.now, relay, PeerSocket::new(v6peer), &mut buf, 5)
        .unwrap();
    let m = Message::parse(&buf[out.range]).unwrap();
    assert_eq!(
        m.attribute(types::XOR_PEER_ADDRESS).unwrap().unwrap(),
        Attribute::XorPeerAddress(v6peer)
    );
    assert_eq!(
        m.attribute(types::DATA).unwrap().unwrap(),
        Attribute::Data(b"odd!!")
    );
}

#[test]
fn forbidden_peers_get_403() {
    let mut h = Harness::new();
    let (auth, _) = h.allocate();
    for bad in [
        "127.0.0.1:80",
        "10.0.0.1:80",
        "169.254.169.254:80",
        "192.168.1.1:5",
    ] {
        let resp = h.request(
            Method::CreatePermission,
            &[Attribute::XorPeerAddress(bad.parse().unwrap())],
            Some(&auth),
        );
        assert_eq!(code_of(&resp), Some(403), "{bad}");
        let resp = h.request(
            Method::ChannelBind,
            &[
                Attribute::ChannelNumber(0x4000),
                Attribute::XorPeerAddress(bad.parse().unwrap()),
            ],
            Some(&auth),
        );
        assert_eq!(code_of(&resp), Some(403), "{bad}");
    }
    assert_eq!(h.server.stats().peers_denied, 8);
    // A request mixing a good and a bad peer installs neither.
    let resp = h.request(
        Method::CreatePermission,
        &[
            Attribute::XorPeerAddress(peer()),
            Attribute::XorPeerAddress("127.0.0.1:1".parse().unwrap()),
        ],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(403));
    let send = encode_request(
        Method::Send,
        Class::Indication,
        TransactionId([9; 12]),
        &[Attribute::XorPeerAddress(peer()), Attribute::Data(b"x")],
        None,
    )
    .unwrap();
    assert!(h.input(&send).is_none());
}

#[test]
fn channel_bind_and_channel_data_both_ways() {
    let mut h = Harness::new();
    let (auth, _) = h.allocate();
    let resp = h.channel_bind(&auth, 0x4001, peer());
    assert_eq!(code_of(&resp), None);
    // Out-of-range number and rebinding the peer to another number are refused.
    for number in [0x3FFF, 0x8000, 0xFFFF, 0x4002] {
        let resp = h.channel_bind(&auth, number, peer());
        assert_eq!(code_of(&resp), Some(400), "{number:#x}");
    }
    let mut frame = [0u8; 64];
    let n = crate::stun::channel_data::encode(&mut frame, 0x4001, b"media", false).unwrap();
    let (relay, to, payload) = h.input(&frame[..n]).unwrap();
    assert_eq!((to.addr(), payload.as_slice()), (peer(), &b"media"[..]));
    // Unbound channel: dropped.
    let n = crate::stun::channel_data::encode(&mut frame, 0x4009, b"media", false).unwrap();
    assert!(h.input(&frame[..n]).is_none());
    assert_eq!(h.server.stats().drops(DropReason::NoChannel), 1);

    let mut buf = [0u8; 2048];
    buf[PEER_HEADROOM..PEER_HEADROOM + 4].copy_from_slice(b"back");
    let out = h
        .server
        .handle_peer_input(h.now, relay, PeerSocket::new(peer()), &mut buf, 4)
        .unwrap();
    let cd = ChannelData::parse(&buf[out.range]).unwrap();
    assert_eq!((cd.channel, cd.payload), (0x4001, &b"back"[..]));
    assert_eq!(h.server.stats().packets_to_client, 1);
    assert_eq!(h.server.stats().packets_to_peer, 1);
}

#[test]
fn allocation_bandwidth_is_limited_in_both_directions() {
    let config = ServerConfig {
        relay_ip_v4: Some("192.0.2.1".parse().unwrap()),
        // 10 000 bytes/s; the burst is the 16 KiB floor.
        allocation_bps: 80_000,
        ..ServerConfig::default()
    };
    let mut h = Harness::with(config, Quota::new(0, 0, 0), 50000..=50099);
    let (auth, _) = h.allocate();
    let resp = h.channel_bind(&auth, 0x4001, peer());
    assert_eq!(code_of(&resp), None);
    let mut frame = [0u8; 1100];
    let n = crate::stun::channel_data::encode(&mut frame, 0x4001, &[7u8; 1000], false).unwrap();
    let passed = (0..30).filter(|_| h.input(&frame[..n]).is_some()).count();
    assert_eq!(passed, 16);
    // Peer → client draws from the same bucket.
    let relay = h.bound[0];
    let mut buf = [0u8; 2048];
    assert!(
        h.server
            .handle_peer_input(h.now, relay, PeerSocket::new(peer()), &mut buf, 1000)
            .is_none()
    );
    assert_eq!(h.server.stats().drops(DropReason::OverBandwidth), 15);
    // One second later, ten more kilobytes.
    h.now += Duration::from_secs(1);
    let passed = (0..30).filter(|_| h.input(&frame[..n]).is_some()).count();
    assert_eq!(passed, 10);
}

#[test]
fn allocation_packet_rate_is_limited_in_both_directions() {
    let config = ServerConfig {
        relay_ip_v4: Some("192.0.2.1".parse().unwrap()),
        // 300 datagrams/s, a burst of one second's worth.
        allocation_pps: 300,
        ..ServerConfig::default()
    };
    let mut h = Harness::with(config, Quota::new(0, 0, 0), 50000..=50099);
    let (auth, _) = h.allocate();
    assert_eq!(code_of(&h.channel_bind(&auth, 0x4001, peer())), None);
    let mut frame = [0u8; 64];
    let n = crate::stun::channel_data::encode(&mut frame, 0x4001, b"tiny", false).unwrap();
    let passed = (0..250).filter(|_| h.input(&frame[..n]).is_some()).count();
    assert_eq!(passed, 250);
    // Peer → client draws from the same bucket.
    let relay = h.bound[0];
    let mut buf = [0u8; 2048];
    let from_peer = (0..100)
        .filter(|_| {
            h.server
                .handle_peer_input(h.now, relay, PeerSocket::new(peer()), &mut buf, 4)
                .is_some()
        })
        .count();
    assert_eq!(from_peer, 50);
    assert_eq!(h.server.stats().drops(DropReason::OverPacketRate), 50);
    // Small packets do not count against the bandwidth: no such limit here.
    assert_eq!(h.server.stats().drops(DropReason::OverBandwidth), 0);
    // A tenth of a second later, thirty more.
    h.now += Duration::from_millis(100);
    let passed = (0..100).filter(|_| h.input(&frame[..n]).is_some()).count();
    assert_eq!(passed, 30);
}

#[test]
fn the_relays_own_address_is_a_peer_only_at_a_relayed_port_in_use() {
    let mut h = Harness::new();
    // Two clients of this relay: the most common TURN call.
    let (a, a_relayed) = h.allocate();
    let a_tuple = h.tuple;
    h.tuple = tuple(40001);
    let (b, b_relayed) = h.allocate();
    let b_tuple = h.tuple;
    assert_eq!(a_relayed.ip(), b_relayed.ip());
    let listener = SocketAddr::new(a_relayed.ip(), 3478);
    let ops = SocketAddr::new(a_relayed.ip(), 9641);

    // B's relayed address works both ways: channel and Send.
    h.tuple = a_tuple;
    h.allow_peer(&a, b_relayed);
    assert_eq!(code_of(&h.channel_bind(&a, 0x4001, b_relayed)), None);
    let mut frame = [0u8; 64];
    let n = crate::stun::channel_data::encode(&mut frame, 0x4001, b"to b", false).unwrap();
    let cd = frame[..n].to_vec();
    let (_, to, _) = h.input(&cd).unwrap();
    assert_eq!(to.addr(), b_relayed);
    // The same IP at a listener or another service: ChannelBind refused, data dropped.
    assert_eq!(code_of(&h.channel_bind(&a, 0x4002, listener)), Some(403));
    let denied = h.server.stats().peers_denied;
    for target in [listener, ops] {
        let send = encode_request(
            Method::Send,
            Class::Indication,
            TransactionId([7; 12]),
            &[Attribute::XorPeerAddress(target), Attribute::Data(b"x")],
            None,
        )
        .unwrap();
        assert!(h.input(&send).is_none(), "relayed to {target}");
    }
    assert_eq!(h.server.stats().drops(DropReason::OwnAddress), 2);
    assert_eq!(h.server.stats().peers_denied, denied);

    // B leaves: its port is no longer a peer, even over the channel bound to it.
    h.tuple = b_tuple;
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(0)], Some(&b));
    assert_eq!(code_of(&resp), None);
    h.tuple = a_tuple;
    assert!(h.input(&cd).is_none());
    assert_eq!(h.server.stats().drops(DropReason::OwnAddress), 3);
}
