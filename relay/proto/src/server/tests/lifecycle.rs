//! Allocation lifetimes: expiry, Refresh, ownership, drain, closed connections, revocation.

use super::*;

#[test]
fn lifetimes_expire_on_the_virtual_clock() {
    let mut h = Harness::new();
    let (auth, relayed) = h.allocate();
    let resp = h.channel_bind(&auth, 0x4001, peer());
    assert_eq!(code_of(&resp), None);
    let mut frame = [0u8; 64];
    let n = crate::stun::channel_data::encode(&mut frame, 0x4001, b"m", false).unwrap();
    // Permission (installed by ChannelBind) expires at 300 s even though the channel lives on.
    h.advance(299);
    assert!(h.input(&frame[..n]).is_some());
    h.advance(2);
    assert!(h.input(&frame[..n]).is_none());
    // Refreshing the binding refreshes the permission.
    let resp = h.channel_bind(&auth, 0x4001, peer());
    assert_eq!(code_of(&resp), None);
    assert!(h.input(&frame[..n]).is_some());
    // The allocation expires after its 600 s default lifetime.
    h.advance(298);
    assert_eq!(h.server.allocations().len(), 1);
    h.advance(2);
    assert!(h.server.allocations().is_empty());
    assert_eq!(h.freed, vec![RelayAddr::new(relayed)]);
    assert_eq!(h.server.stats().allocations_expired, 1);
}

#[test]
fn an_expired_allocation_relays_nothing_before_the_sweep() {
    let mut h = Harness::new();
    let (auth, relayed) = h.allocate();
    let resp = h.channel_bind(&auth, 0x4001, peer());
    assert_eq!(code_of(&resp), None);
    // Keep the permission and the channel alive past the allocation's 600 s.
    h.advance(290);
    let resp = h.channel_bind(&auth, 0x4001, peer());
    assert_eq!(code_of(&resp), None);
    h.advance(290);
    let resp = h.channel_bind(&auth, 0x4001, peer());
    assert_eq!(code_of(&resp), None);
    let mut frame = [0u8; 64];
    let n = crate::stun::channel_data::encode(&mut frame, 0x4001, b"m", false).unwrap();
    let relay = RelayAddr::new(relayed);
    let mut buf = [0u8; 2048];
    buf[PEER_HEADROOM..PEER_HEADROOM + 1].copy_from_slice(b"p");
    // 599 s: still relaying both ways.
    h.now += Duration::from_secs(19);
    assert!(h.input(&frame[..n]).is_some());
    let from_peer = PeerSocket::new(peer());
    assert!(
        h.server
            .handle_peer_input(h.now, relay, from_peer, &mut buf, 1)
            .is_some()
    );
    // 600 s: expired. The clock moved without a timeout, as it does between sweeps, so the
    // allocation is still in the table, but nothing is relayed either way.
    h.now += Duration::from_secs(1);
    assert_eq!(h.server.allocations().len(), 1);
    let before = h.server.stats().drops(DropReason::NoAllocation);
    assert!(h.input(&frame[..n]).is_none());
    assert!(
        h.server
            .handle_peer_input(h.now, relay, from_peer, &mut buf, 1)
            .is_none()
    );
    assert_eq!(h.server.stats().drops(DropReason::NoAllocation), before + 2);
    h.advance(1);
    assert!(h.server.allocations().is_empty());
}

#[test]
fn refresh_extends_and_zero_deletes() {
    let mut h = Harness::new();
    let (mut auth, relayed) = h.allocate();
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(99_999)], Some(&auth));
    let m = Message::parse(&resp).unwrap();
    // Capped at the 3600 s maximum.
    assert_eq!(
        m.attribute(types::LIFETIME).unwrap().unwrap(),
        Attribute::Lifetime(3600)
    );
    h.advance(3000);
    assert_eq!(h.server.allocations().len(), 1);
    // The nonce is long stale by now: 438, then the retry with the fresh nonce succeeds.
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(0)], Some(&auth));
    assert_eq!(code_of(&resp), Some(438));
    auth.update_from_challenge(&Message::parse(&resp).unwrap());
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(0)], Some(&auth));
    assert_eq!(code_of(&resp), None);
    assert!(h.server.allocations().is_empty());
    assert_eq!(h.freed, vec![RelayAddr::new(relayed)]);
    // Refresh without an allocation: 437.
    let resp = h.request(Method::Refresh, &[], Some(&auth));
    assert_eq!(code_of(&resp), Some(437));
}

#[test]
fn another_user_on_the_same_five_tuple_gets_441() {
    let mut h = Harness::new();
    let (auth, _) = h.allocate();
    let c = RestCredential::mint(SECRET, "mallory", UNIX_START, 3600);
    let other = ClientAuth {
        username: c.username,
        password: c.password,
        ..auth
    };
    let resp = h.request(Method::Refresh, &[], Some(&other));
    assert_eq!(code_of(&resp), Some(441));
}

#[test]
fn draining_redirects_new_allocations_and_keeps_old_ones() {
    let mut h = Harness::new();
    let (mut auth, _) = h.allocate();
    let deadline = h.now + Duration::from_secs(100);
    h.server.set_drain(Some(Drain {
        deadline,
        alternates: vec![
            "[2001:db8::9]:3478".parse().unwrap(),
            "192.0.2.9:3478".parse().unwrap(),
        ],
    }));
    // Existing allocation: Refresh works, capped at the drain deadline.
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(3600)], Some(&auth));
    let m = Message::parse(&resp).unwrap();
    assert_eq!(
        m.attribute(types::LIFETIME).unwrap().unwrap(),
        Attribute::Lifetime(100)
    );
    h.allow_peer(&auth, peer());
    // New allocation: 300 with the sibling of the same family, signed.
    h.tuple = tuple(40001);
    h.challenge(&mut auth, 17);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), Some(300));
    assert_eq!(
        m.attribute(types::ALTERNATE_SERVER).unwrap().unwrap(),
        Attribute::AlternateServer("192.0.2.9:3478".parse().unwrap())
    );
    assert!(m.verify_integrity(&auth.key()));
    assert_eq!(h.server.stats().redirects, 1);
    // No sibling known: 403.
    h.server.set_drain(Some(Drain {
        deadline,
        alternates: vec![],
    }));
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(403));
    // The old allocation expires at the deadline.
    h.advance(101);
    assert!(h.server.allocations().is_empty());
}

#[test]
fn a_closed_stream_connection_takes_its_allocation_along() {
    let mut h = Harness::new();
    h.tuple.transport = Transport::Tcp;
    let (_, relayed) = h.allocate();
    let other = tuple(40001);
    h.server.handle_client_disconnected(&other);
    assert_eq!(
        h.server.allocations().len(),
        1,
        "only the closed connection's allocation"
    );
    let t = h.tuple;
    h.server.handle_client_disconnected(&t);
    h.pump();
    assert!(h.server.allocations().is_empty());
    assert_eq!(h.freed, vec![RelayAddr::new(relayed)]);
}

#[test]
fn revoked_users_lose_allocations_and_are_refused() {
    let mut h = Harness::new();
    let (auth, relayed) = h.allocate();
    let until = h.now + Duration::from_secs(3600);
    h.server.revoke_user(h.now, "bob", until);
    assert_eq!(
        h.server.allocations().len(),
        1,
        "only alice's own revocation counts"
    );
    h.server.revoke_user(h.now, "alice", until);
    h.pump();
    assert!(h.server.allocations().is_empty());
    assert_eq!(h.freed, vec![RelayAddr::new(relayed)]);
    h.tuple = tuple(40001);
    let mut auth = ClientAuth { ..auth };
    h.challenge(&mut auth, 17);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(403));
}
