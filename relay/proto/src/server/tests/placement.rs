//! Where allocations go: quotas, the port pool, EVEN-PORT, dual stack, anycast first contact.

use super::*;

#[test]
fn quotas_give_486_and_508() {
    let config = ServerConfig {
        relay_ip_v4: Some("192.0.2.1".parse().unwrap()),
        ..ServerConfig::default()
    };
    let mut h = Harness::with(config, Quota::new(1, 0, 2), 50000..=50099);
    h.allocate();
    h.tuple = tuple(40001);
    let mut auth = h.credentials(3600);
    h.challenge(&mut auth, 17);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(486));
    let c = RestCredential::mint(SECRET, "bob", UNIX_START, 3600);
    let bob = ClientAuth {
        username: c.username,
        password: c.password,
        ..auth.clone()
    };
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&bob),
    );
    assert_eq!(code_of(&resp), None);
    h.tuple = tuple(40002);
    let c = RestCredential::mint(SECRET, "carol", UNIX_START, 3600);
    let mut carol = ClientAuth {
        username: c.username,
        password: c.password,
        ..auth
    };
    h.challenge(&mut carol, 17);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&carol),
    );
    assert_eq!(code_of(&resp), Some(508));
}

#[test]
fn one_address_holds_at_most_its_allocations_whatever_the_user_ids() {
    let config = ServerConfig {
        relay_ip_v4: Some("192.0.2.1".parse().unwrap()),
        ..ServerConfig::default()
    };
    let mut h = Harness::with(config, Quota::new(0, 1, 0), 50000..=50099);
    let (alice, _) = h.allocate();
    let alice_tuple = h.tuple;
    // Another user id (an API key can mint any) from the same address: 486.
    h.tuple = tuple(40001);
    let c = RestCredential::mint(SECRET, "bob", UNIX_START, 3600);
    let mut bob = ClientAuth {
        username: c.username,
        password: c.password,
        ..alice.clone()
    };
    h.challenge(&mut bob, 17);
    let allocate = |h: &mut Harness, who: &ClientAuth| {
        let resp = h.request(
            Method::Allocate,
            &[Attribute::RequestedTransport(17)],
            Some(who),
        );
        code_of(&resp)
    };
    assert_eq!(allocate(&mut h, &bob), Some(486));
    // From another address it is served.
    h.tuple.client = ClientSocket::new(SocketAddr::from(([198, 51, 100, 8], 40001)));
    h.challenge(&mut bob, 17);
    assert_eq!(allocate(&mut h, &bob), None);
    // Alice's allocation ends: her address has room again.
    h.tuple = alice_tuple;
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(0)], Some(&alice));
    assert_eq!(code_of(&resp), None);
    h.tuple = tuple(40002);
    h.challenge(&mut bob, 17);
    assert_eq!(allocate(&mut h, &bob), None);
}

#[test]
fn port_range_exhaustion_gives_508_and_bind_failures_retry() {
    let config = ServerConfig {
        relay_ip_v4: Some("192.0.2.1".parse().unwrap()),
        ..ServerConfig::default()
    };
    let mut h = Harness::with(config, Quota::new(0, 0, 0), 50000..=50002);
    h.fail_binds = 2;
    h.allocate(); // two ports fail to bind, the third works
    assert_eq!(h.bound.len(), 1);
    h.tuple = tuple(40001);
    let mut auth = h.credentials(3600);
    h.challenge(&mut auth, 17);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), None);
    h.tuple = tuple(40002);
    h.challenge(&mut auth, 17);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), None);
    h.tuple = tuple(40003);
    h.challenge(&mut auth, 17);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(508));
}

#[test]
fn even_port_with_reservation_then_reservation_token() {
    let mut h = Harness::new();
    let mut auth = h.credentials(3600);
    h.challenge(&mut auth, 17);
    let resp = h.request(
        Method::Allocate,
        &[
            Attribute::RequestedTransport(17),
            Attribute::EvenPort { reserve: true },
        ],
        Some(&auth),
    );
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), None);
    let Some(Ok(Attribute::XorRelayedAddress(rtp))) = m.attribute(types::XOR_RELAYED_ADDRESS)
    else {
        panic!()
    };
    assert_eq!(rtp.port() % 2, 0);
    let Some(Ok(Attribute::ReservationToken(token))) = m.attribute(types::RESERVATION_TOKEN) else {
        panic!("no token")
    };
    // Another user who saw the token cannot take the port, nor spoil it for its owner.
    h.tuple = tuple(40003);
    let c = RestCredential::mint(SECRET, "mallory", UNIX_START, 3600);
    let mut mallory = ClientAuth {
        username: c.username,
        password: c.password,
        ..auth.clone()
    };
    h.challenge(&mut mallory, 17);
    let resp = h.request(
        Method::Allocate,
        &[
            Attribute::RequestedTransport(17),
            Attribute::ReservationToken(token),
        ],
        Some(&mallory),
    );
    assert_eq!(code_of(&resp), Some(508));
    // The RTCP allocation from another client port claims the reserved port.
    h.tuple = tuple(40001);
    h.challenge(&mut auth, 17);
    let resp = h.request(
        Method::Allocate,
        &[
            Attribute::RequestedTransport(17),
            Attribute::ReservationToken(token),
        ],
        Some(&auth),
    );
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), None);
    let Some(Ok(Attribute::XorRelayedAddress(rtcp))) = m.attribute(types::XOR_RELAYED_ADDRESS)
    else {
        panic!()
    };
    assert_eq!(rtcp.port(), rtp.port() + 1);
    // The token is single use.
    h.tuple = tuple(40002);
    h.challenge(&mut auth, 17);
    let resp = h.request(
        Method::Allocate,
        &[
            Attribute::RequestedTransport(17),
            Attribute::ReservationToken(token),
        ],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(508));
}

#[test]
fn dual_stack_allocation_relays_both_families() {
    use crate::stun::AddressFamily;
    let config = dual_stack();
    let mut h = Harness::with(config, Quota::new(0, 0, 0), 50000..=50099);
    let mut auth = h.credentials(3600);
    h.challenge(&mut auth, 17);
    let resp = h.request(
        Method::Allocate,
        &[
            Attribute::RequestedTransport(17),
            Attribute::AdditionalAddressFamily(AddressFamily::V6),
        ],
        Some(&auth),
    );
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), None);
    let relayed: Vec<SocketAddr> = m
        .attributes_of(types::XOR_RELAYED_ADDRESS)
        .map(|a| match a.unwrap() {
            Attribute::XorRelayedAddress(a) => a,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(relayed.len(), 2);
    assert!(relayed[0].is_ipv4() && relayed[1].is_ipv6());
    assert_eq!(h.bound.len(), 2);
    let v6peer: SocketAddr = "[2001:db8:77::9]:5000".parse().unwrap();
    h.allow_peer(&auth, peer());
    h.allow_peer(&auth, v6peer);
    // Each family goes out of its own relayed socket.
    for (p, relay) in [(peer(), relayed[0]), (v6peer, relayed[1])] {
        let send = encode_request(
            Method::Send,
            Class::Indication,
            TransactionId([9; 12]),
            &[Attribute::XorPeerAddress(p), Attribute::Data(b"x")],
            None,
        )
        .unwrap();
        let (r, to, _) = h.input(&send).unwrap();
        assert_eq!((r.addr(), to.addr()), (relay, p));
    }
    let mut buf = [0u8; 2048];
    let out = h
        .server
        .handle_peer_input(
            h.now,
            RelayAddr::new(relayed[1]),
            PeerSocket::new(v6peer),
            &mut buf,
            0,
        )
        .unwrap();
    assert_eq!(out.five_tuple, h.tuple);
    // Refresh(0) for IPv6 only drops the IPv6 address; then Refresh(0) drops the rest.
    let resp = h.request(
        Method::Refresh,
        &[
            Attribute::Lifetime(0),
            Attribute::RequestedAddressFamily(AddressFamily::V6),
        ],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), None);
    h.pump();
    assert_eq!(h.freed, vec![RelayAddr::new(relayed[1])]);
    assert_eq!(h.server.allocations().len(), 1);
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(0)], Some(&auth));
    assert_eq!(code_of(&resp), None);
    assert_eq!(
        h.freed,
        vec![RelayAddr::new(relayed[1]), RelayAddr::new(relayed[0])]
    );
}

#[test]
fn dual_stack_falls_back_to_one_family_with_address_error_code() {
    use crate::stun::AddressFamily;
    let config = dual_stack();
    let mut h = Harness::with(config, Quota::new(0, 0, 0), 50000..=50099);
    h.fail_v6 = true;
    let mut auth = h.credentials(3600);
    h.challenge(&mut auth, 17);
    let resp = h.request(
        Method::Allocate,
        &[
            Attribute::RequestedTransport(17),
            Attribute::AdditionalAddressFamily(AddressFamily::V6),
        ],
        Some(&auth),
    );
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), None);
    assert_eq!(m.attributes_of(types::XOR_RELAYED_ADDRESS).count(), 1);
    assert_eq!(
        m.attribute(types::ADDRESS_ERROR_CODE).unwrap().unwrap(),
        Attribute::AddressErrorCode {
            family: AddressFamily::V6,
            code: 508,
            reason: "Insufficient Capacity"
        }
    );
    assert_eq!(h.server.allocations().len(), 1);
}

#[test]
fn anycast_first_contact_is_redirected_signed_and_creates_nothing() {
    let anycast = SocketAddr::from(([203, 0, 113, 99], 3478));
    let config = ServerConfig {
        relay_ip_v4: Some("192.0.2.1".parse().unwrap()),
        anycast: vec![anycast],
        ..ServerConfig::default()
    };
    let mut h = Harness::with(config, Quota::new(0, 0, 0), 50000..=50099);
    h.server.set_first_contact(vec![
        Alternate {
            transport: Transport::Tls,
            addr: "192.0.2.10:5349".parse().unwrap(),
            domain: Some("eu.turn.example".into()),
        },
        Alternate {
            transport: Transport::Udp,
            addr: "[2001:db8::10]:3478".parse().unwrap(),
            domain: None,
        },
        Alternate {
            transport: Transport::Udp,
            addr: "192.0.2.10:3478".parse().unwrap(),
            domain: None,
        },
    ]);
    h.tuple.server = anycast;
    // Binding is answered as anywhere else.
    let resp = h.request(Method::Binding, &[], None);
    assert_eq!(Message::parse(&resp).unwrap().class(), Class::Success);
    // Unauthenticated: the usual 401, never a 300 a third party could have sent.
    let mut auth = h.credentials(3600);
    let resp = h.request(Method::Allocate, &[Attribute::RequestedTransport(17)], None);
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), Some(401));
    assert!(m.get(types::ALTERNATE_SERVER).is_none());
    assert!(auth.update_from_challenge(&m));
    // Authenticated: 300 to the unicast relay of the same transport and family, signed.
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), Some(300));
    assert!(m.verify_integrity(&auth.key()));
    assert_eq!(
        m.attribute(types::ALTERNATE_SERVER).unwrap().unwrap(),
        Attribute::AlternateServer("192.0.2.10:3478".parse().unwrap())
    );
    assert!(m.get(types::ALTERNATE_DOMAIN).is_none());
    // Nothing was created: no relayed port bound, no allocation, no quota used.
    assert!(h.pump().is_empty());
    assert!(h.bound.is_empty() && h.server.allocations().is_empty());
    assert_eq!(h.server.stats().first_contact_redirects, 1);
    // Refresh on the anycast address finds no allocation.
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(600)], Some(&auth));
    assert_eq!(code_of(&resp), Some(437));
    // TLS first contact: the TLS target, with ALTERNATE-DOMAIN for its certificate.
    h.tuple.transport = Transport::Tls;
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), Some(300));
    assert_eq!(
        m.attribute(types::ALTERNATE_SERVER).unwrap().unwrap(),
        Attribute::AlternateServer("192.0.2.10:5349".parse().unwrap())
    );
    assert_eq!(
        m.attribute(types::ALTERNATE_DOMAIN).unwrap().unwrap(),
        Attribute::AlternateDomain("eu.turn.example")
    );
    assert!(m.verify_integrity(&auth.key()));
    // No target for TCP: 403, still nothing created.
    h.tuple.transport = Transport::Tcp;
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(403));
    assert_eq!(h.server.stats().first_contact_refused, 1);
    assert!(h.server.allocations().is_empty());
    // The unicast listener still allocates.
    h.tuple = tuple(40002);
    let (_, relayed) = h.allocate();
    assert_eq!(
        relayed.ip(),
        "192.0.2.1".parse::<std::net::IpAddr>().unwrap()
    );
}
