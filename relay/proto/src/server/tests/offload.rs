//! Offers to the driver's fast path: only bound, permitted channels of UDP allocations, with the
//! earliest deadline, refreshed when a request extends it, taken back when anything ends.

use super::*;
use crate::allocation::channel::CHANNEL_LIFETIME;
use crate::allocation::permission::PERMISSION_LIFETIME;

fn offloading() -> Harness {
    let mut h = Harness::new();
    h.server.enable_offload();
    h
}

#[test]
fn nothing_is_offered_unless_the_driver_enables_it() {
    let mut h = Harness::new();
    let (auth, _) = h.allocate();
    assert_eq!(code_of(&h.channel_bind(&auth, 0x4001, peer())), None);
    assert!(h.offloads.is_empty());
}

#[test]
fn a_bound_channel_is_offered_with_the_earliest_deadline_and_taken_back_on_refresh_zero() {
    let mut h = offloading();
    let (auth, _) = h.allocate();
    // A permission alone offers nothing: there is no channel to relay.
    h.allow_peer(&auth, peer());
    assert!(h.offloads.is_empty());
    let bound_at = h.now;
    assert_eq!(code_of(&h.channel_bind(&auth, 0x4001, peer())), None);
    assert_eq!(h.offloads.len(), 1);
    let (install, c) = h.offloads[0];
    assert!(install);
    assert_eq!(c.channel, 0x4001);
    assert_eq!(c.peer.addr(), peer());
    assert_eq!(c.five_tuple, h.tuple);
    assert_eq!(
        c.relay.addr().ip(),
        "192.0.2.1".parse::<std::net::IpAddr>().unwrap()
    );
    // The permission (300 s) ends before the binding (600 s) and the allocation (600 s).
    assert_eq!(c.expires, bound_at + PERMISSION_LIFETIME);
    assert!(PERMISSION_LIFETIME < CHANNEL_LIFETIME);

    // A refresh of the permission moves the deadline: offered again.
    h.advance(100);
    h.allow_peer(&auth, peer());
    assert_eq!(h.offloads.len(), 2);
    assert!(h.offloads[1].0);
    assert_eq!(h.offloads[1].1.expires, h.now + PERMISSION_LIFETIME);

    // Refresh(0) ends the allocation: taken back.
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(0)], Some(&auth));
    assert_eq!(code_of(&resp), None);
    assert_eq!(h.offloads.len(), 3);
    assert!(!h.offloads[2].0);
    assert_eq!(h.offloads[2].1.channel, 0x4001);
    assert_eq!(h.server.offloaded_channels(), 0);
}

#[test]
fn an_expired_permission_is_taken_back_by_the_sweep() {
    let mut h = offloading();
    let (auth, _) = h.allocate();
    assert_eq!(code_of(&h.channel_bind(&auth, 0x4001, peer())), None);
    assert_eq!(h.offloads.len(), 1);
    h.advance(PERMISSION_LIFETIME.as_secs() - 1);
    assert_eq!(h.offloads.len(), 1, "still permitted");
    h.advance(2);
    assert_eq!(h.offloads.len(), 2);
    assert!(!h.offloads[1].0);
    assert_eq!(h.server.offloaded_channels(), 0);
}

#[test]
fn allocation_expiry_and_revocation_take_offers_back() {
    let mut h = offloading();
    let (auth, _) = h.allocate();
    assert_eq!(code_of(&h.channel_bind(&auth, 0x4001, peer())), None);
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(30)], Some(&auth));
    assert_eq!(code_of(&resp), None);
    // The allocation now ends first: offered again with its deadline.
    let last = h.offloads.last().unwrap().1;
    assert_eq!(last.expires, h.now + Duration::from_secs(30));
    h.advance(31);
    assert!(
        !h.offloads.last().unwrap().0,
        "taken back when the allocation expired"
    );

    let mut h = offloading();
    let (auth, _) = h.allocate();
    assert_eq!(code_of(&h.channel_bind(&auth, 0x4001, peer())), None);
    let until = h.now + Duration::from_secs(3600);
    h.server.revoke_user(h.now, "alice", until);
    h.pump();
    assert!(!h.offloads.last().unwrap().0, "taken back on revocation");
    assert_eq!(h.server.offloaded_channels(), 0);
}

#[test]
fn stream_clients_and_wildcard_listeners_are_never_offered() {
    let mut h = offloading();
    h.tuple.transport = Transport::Tcp;
    let (auth, _) = h.allocate();
    assert_eq!(code_of(&h.channel_bind(&auth, 0x4001, peer())), None);
    assert!(h.offloads.is_empty());

    let mut h = offloading();
    h.tuple.server = SocketAddr::from(([0, 0, 0, 0], 3478));
    let (auth, _) = h.allocate();
    assert_eq!(code_of(&h.channel_bind(&auth, 0x4001, peer())), None);
    assert!(h.offloads.is_empty());
}

#[test]
fn limits_the_fast_path_cannot_hold_keep_channels_in_the_core() {
    let config = ServerConfig {
        relay_ip_v4: Some("192.0.2.1".parse().unwrap()),
        allocation_bps: 80_000_000,
        allocation_pps: 500,
        ..ServerConfig::default()
    };
    let mut h = Harness::with(config.clone(), Quota::new(0, 0, 0), 50000..=50099);
    h.server.enable_offload();
    let (auth, _) = h.allocate();
    assert_eq!(code_of(&h.channel_bind(&auth, 0x4001, peer())), None);
    let limits = h.offloads[0].1.limits;
    assert_eq!(limits.bytes_per_sec, 10_000_000);
    assert_eq!(limits.byte_burst, 10_000_000);
    assert_eq!(limits.packets_per_sec, 500);
    assert_eq!(limits.packet_burst, 500);

    let huge = ServerConfig {
        allocation_bps: 8 * (MAX_OFFLOAD_RATE + 1),
        ..config
    };
    let mut h = Harness::with(huge, Quota::new(0, 0, 0), 50000..=50099);
    h.server.enable_offload();
    let (auth, _) = h.allocate();
    assert_eq!(code_of(&h.channel_bind(&auth, 0x4001, peer())), None);
    assert!(h.offloads.is_empty());
}

/// IPv6 clients with IPv6 relayed addresses and peers are offered like IPv4 ones; a client
/// whose relayed address is of the other family never is (the program does not translate IP
/// headers), nor a link-local listening address.
#[test]
fn ipv6_channels_are_offered_within_one_family_only() {
    let config = dual_stack();
    let v6peer: SocketAddr = "[2001:db8:99::5]:9999".parse().unwrap();
    let cases = [
        ("[2001:db8:7::7]:40000", "[2001:db8::3]:3478", true),
        ("198.51.100.7:40000", "192.0.2.1:3478", false),
        ("[fe80::7]:40000", "[fe80::3]:3478", false),
    ];
    for (client, server, offered) in cases {
        let mut h = Harness::with(config.clone(), Quota::new(0, 0, 0), 50000..=50010);
        h.server.enable_offload();
        h.tuple.client = ClientSocket::new(client.parse().unwrap());
        h.tuple.server = server.parse().unwrap();
        let mut auth = h.credentials(3600);
        h.challenge(&mut auth, 17);
        let resp = h.request(
            Method::Allocate,
            &[
                Attribute::RequestedTransport(17),
                Attribute::RequestedAddressFamily(crate::stun::AddressFamily::V6),
            ],
            Some(&auth),
        );
        assert_eq!(code_of(&resp), None, "{client}");
        assert_eq!(code_of(&h.channel_bind(&auth, 0x4001, v6peer)), None);
        let installs: Vec<_> = h.offloads.iter().filter(|(install, _)| *install).collect();
        assert_eq!(
            installs.len(),
            usize::from(offered),
            "{client}: {installs:?}"
        );
        if offered {
            assert_eq!(installs[0].1.peer.addr(), v6peer);
            assert!(installs[0].1.relay.addr().is_ipv6());
        }
    }
}
