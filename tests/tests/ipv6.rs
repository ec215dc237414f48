//! IPv6 on ::1: a client over IPv6 with an IPv6 relayed address, and a dual-stack allocation
//! (ADDITIONAL-ADDRESS-FAMILY) relaying to an IPv4 and an IPv6 peer at once.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::time::Duration;

use geoturn_relay_proto::stun::{AddressFamily, Attribute};
use geoturn_tests::client::{Received, TurnClient};
use geoturn_tests::peer::EchoPeer;
use geoturn_tests::relay::TestRelay;

fn dual_stack_relay() -> TestRelay {
    TestRelay::start(|o| {
        o.listen = vec!["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()];
        o.allow_peers = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        // IPv6 has one loopback address, so the peers share the relay's ::1: the guard that
        // keeps a relay from relaying to itself is turned off here (tests/tests/udp_relay.rs
        // tests it).
        o.allow_relay_to_self = Some(true);
    })
}

fn creds(user: &str) -> geoturn_shared::RestCredential {
    TestRelay::credentials(user, 600)
}

#[test]
fn ipv6_client_relays_over_an_ipv6_address() {
    let relay = dual_stack_relay();
    let v6 = relay.handle().local_addrs()[1];
    assert!(v6.is_ipv6());
    let peer = EchoPeer::start_on("[::1]:0".parse().unwrap()).unwrap();
    let c = creds("six");
    let mut client = TurnClient::new(v6, &c.username, &c.password).unwrap();
    let relayed = client
        .allocate_with(&[Attribute::RequestedAddressFamily(AddressFamily::V6)])
        .unwrap();
    assert_eq!(relayed.len(), 1);
    assert_eq!(relayed[0].ip().to_string(), "::1");
    client.channel_bind(0x4006, peer.addr()).unwrap();
    client.send_channel(0x4006, b"over ipv6").unwrap();
    assert_eq!(
        client.recv(Duration::from_secs(2)).unwrap(),
        Some(Received::Channel {
            channel: 0x4006,
            payload: b"over ipv6".to_vec()
        })
    );
    // An IPv4 peer on an IPv6-only allocation is refused with 443.
    let v4peer = EchoPeer::start().unwrap();
    assert_eq!(
        client.create_permission(v4peer.addr()),
        Err(geoturn_tests::client::TurnError::Code(443))
    );
}

#[test]
fn dual_stack_allocation_reaches_both_families() {
    let relay = dual_stack_relay();
    let v4peer = EchoPeer::start().unwrap();
    let v6peer = EchoPeer::start_on("[::1]:0".parse().unwrap()).unwrap();
    let c = creds("dual");
    let mut client = TurnClient::new(relay.addr(), &c.username, &c.password).unwrap();
    let relayed = client
        .allocate_with(&[Attribute::AdditionalAddressFamily(AddressFamily::V6)])
        .unwrap();
    assert_eq!(relayed.len(), 2, "{relayed:?}");
    assert!(relayed[0].is_ipv4() && relayed[1].is_ipv6());
    client.create_permission(v4peer.addr()).unwrap();
    client.create_permission(v6peer.addr()).unwrap();
    for peer in [v4peer.addr(), v6peer.addr()] {
        let payload = format!("to {peer}").into_bytes();
        client.send_indication(peer, &payload).unwrap();
        assert_eq!(
            client.recv(Duration::from_secs(2)).unwrap(),
            Some(Received::Data { peer, payload })
        );
    }
    assert_eq!((v4peer.received(), v6peer.received()), (1, 1));
}
