//! Hostile input: garbage, unauthenticated floods, amplification.

use super::*;

#[test]
fn garbage_does_not_disturb_a_live_allocation() {
    let mut h = Harness::new();
    let (auth, _) = h.allocate();
    h.allow_peer(&auth, peer());
    let garbage: [&[u8]; 6] = [
        b"",
        b"\x00",
        b"\x00\x01\x00\x08\x21\x12\xa4\x42garbagegarbage",
        b"\x40\x01\xff\xff",
        b"\xff\xff\xff\xff\xff\xff",
        &[0u8; 600],
    ];
    for g in garbage {
        assert!(h.input(g).is_none());
        assert!(h.pump().is_empty(), "garbage must not be answered");
    }
    assert_eq!(h.server.allocations().len(), 1);
    let send = encode_request(
        Method::Send,
        Class::Indication,
        TransactionId([9; 12]),
        &[
            Attribute::XorPeerAddress(peer()),
            Attribute::Data(b"still here"),
        ],
        None,
    )
    .unwrap();
    assert!(h.input(&send).is_some());
}

#[test]
fn unauthenticated_responses_are_rate_limited_per_source() {
    let mut h = Harness::with_unauth_limit(10, 5);
    let mut answered = 0;
    for _ in 0..10 {
        let tid = h.tid();
        let req = encode_request(Method::Binding, Class::Request, tid, &[], None).unwrap();
        assert!(h.input(&req).is_none());
        answered += h.pump().len();
    }
    assert_eq!(answered, 5);
    assert_eq!(h.server.stats().drops(DropReason::RateLimited), 5);
    // Another source is not affected, and the first recovers with time.
    h.tuple = FiveTuple {
        client: ClientSocket::new(SocketAddr::from(([198, 51, 100, 99], 1))),
        ..h.tuple
    };
    h.request(Method::Binding, &[], None);
    h.tuple = tuple(40000);
    h.advance(1);
    h.request(Method::Binding, &[], None);
}

/// A spoofed flood from a client's address spends that address's unauthenticated budget; the
/// client's own Refresh with a stale nonce still gets its 438 (its integrity verified and the
/// 5-tuple holds the allocation), so the session survives. An Allocate with a stale nonce
/// from a tuple without an allocation stays limited.
#[test]
fn a_flood_from_the_clients_address_does_not_starve_its_stale_nonce_challenge() {
    let mut h = Harness::with_unauth_limit(10, 5);
    let (mut auth, _) = h.allocate();
    // Outlive the nonce (600 s), not the allocation.
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(3600)], Some(&auth));
    assert_eq!(code_of(&resp), None);
    h.advance(601);
    let spend_the_budget = |h: &mut Harness| {
        let spoofed = FiveTuple {
            client: ClientSocket::new(SocketAddr::from(([198, 51, 100, 7], 9))),
            ..h.tuple
        };
        for i in 0..20u8 {
            let req = encode_request(
                Method::Binding,
                Class::Request,
                TransactionId([i; 12]),
                &[],
                None,
            )
            .unwrap();
            assert!(h.server.handle_client_input(h.now, spoofed, &req).is_none());
        }
        h.pump();
    };
    spend_the_budget(&mut h);
    let limited = h.server.stats().drops(DropReason::RateLimited);
    assert!(limited >= 15, "{limited}");
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(600)], Some(&auth));
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), Some(438));
    assert!(auth.update_from_challenge(&m));
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(600)], Some(&auth));
    assert_eq!(code_of(&resp), None);

    // Same user, same address, but a tuple with no allocation: its 438 is budgeted.
    h.advance(601);
    spend_the_budget(&mut h);
    h.tuple = tuple(40001);
    let tid = h.tid();
    let req = encode_request(
        Method::Allocate,
        Class::Request,
        tid,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    )
    .unwrap();
    assert!(h.input(&req).is_none());
    assert!(
        h.pump().is_empty(),
        "a budgeted 438 was sent past the limit"
    );
}

#[test]
fn a_challenge_is_at_most_four_times_the_smallest_allocate() {
    let mut h = Harness::new();
    // The smallest Allocate a client can send: header + REQUESTED-TRANSPORT, no FINGERPRINT.
    let mut buf = [0u8; 64];
    let mut w = crate::stun::MessageWriter::new(
        &mut buf,
        crate::stun::MessageType::new(Method::Allocate, Class::Request),
        TransactionId([3; 12]),
    )
    .unwrap();
    w.add(&Attribute::RequestedTransport(17)).unwrap();
    let n = w.finish();
    assert_eq!(n, 28);
    let resp = h.request_raw(&buf[..n]);
    assert_eq!(code_of(&resp), Some(401));
    assert!(
        resp.len() <= 4 * n,
        "401 of {} bytes to a {n}-byte request",
        resp.len()
    );
    // Binding: the response to a bare 20-byte request stays under twice its size.
    let tid = h.tid();
    let mut buf = [0u8; 20];
    let w = crate::stun::MessageWriter::new(
        &mut buf,
        crate::stun::MessageType::new(Method::Binding, Class::Request),
        tid,
    )
    .unwrap();
    let n = w.finish();
    let resp = h.request_raw(&buf[..n]);
    assert!(resp.len() < 2 * n, "{} bytes", resp.len());
}

/// Sends CreatePermission for `ips` (203.0.113.x, port ignored); returns the error code.
fn permit(h: &mut Harness, auth: &ClientAuth, ips: impl Iterator<Item = u8>) -> Option<u16> {
    let peers: Vec<SocketAddr> = ips
        .map(|i| SocketAddr::from(([203, 0, 113, i], 9)))
        .collect();
    let attrs: Vec<Attribute<'_>> = peers
        .iter()
        .map(|p| Attribute::XorPeerAddress(*p))
        .collect();
    let resp = h.request(Method::CreatePermission, &attrs, Some(auth));
    code_of(&resp)
}

#[test]
fn new_peers_are_limited_per_second_after_a_burst() {
    let config = ServerConfig {
        relay_ip_v4: Some("192.0.2.1".parse().unwrap()),
        new_peers_per_sec: 5,
        ..ServerConfig::default()
    };
    let mut h = Harness::with(config, Quota::new(0, 0, 0), 50000..=50099);
    let (auth, _) = h.allocate();
    // A browser's whole candidate list at once: 32 new peers pass.
    assert_eq!(permit(&mut h, &auth, 1..=16), None);
    assert_eq!(permit(&mut h, &auth, 17..=32), None);
    // The 33rd is refused; refreshing the ones it has costs nothing.
    assert_eq!(permit(&mut h, &auth, 33..=33), Some(508));
    assert_eq!(permit(&mut h, &auth, 1..=16), None);
    // A ChannelBind to a new peer is refused too, and leaves no channel behind.
    let new_peer = SocketAddr::from(([203, 0, 113, 40], 9));
    assert_eq!(code_of(&h.channel_bind(&auth, 0x4001, new_peer)), Some(508));
    let mut frame = [0u8; 8];
    let n = crate::stun::channel_data::encode(&mut frame, 0x4001, b"x", false).unwrap();
    assert!(h.input(&frame[..n]).is_none(), "no channel was bound");
    // A ChannelBind to a permitted peer costs nothing.
    let known = SocketAddr::from(([203, 0, 113, 1], 9));
    assert_eq!(code_of(&h.channel_bind(&auth, 0x4002, known)), None);
    assert_eq!(h.server.stats().refusals(Limit::NewPeers), 2);
    // A second later, 5 more; not 6.
    h.advance(1);
    assert_eq!(permit(&mut h, &auth, 41..=45), None);
    assert_eq!(permit(&mut h, &auth, 46..=46), Some(508));
    // Another allocation has its own budget.
    h.tuple = tuple(40001);
    let (other, _) = h.allocate();
    assert_eq!(permit(&mut h, &other, 1..=16), None);
}
