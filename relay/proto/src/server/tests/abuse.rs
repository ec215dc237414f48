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
