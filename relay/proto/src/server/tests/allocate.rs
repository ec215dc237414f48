//! Allocate: authentication, nonces, retransmissions, malformed requests.

use super::*;

#[test]
fn binding_reports_reflexive_address() {
    let mut h = Harness::new();
    let resp = h.request(Method::Binding, &[], None);
    let m = Message::parse(&resp).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert!(m.has_fingerprint() && m.fingerprint_ok());
    assert_eq!(
        m.attribute(types::XOR_MAPPED_ADDRESS).unwrap().unwrap(),
        Attribute::XorMappedAddress(h.tuple.client.addr())
    );
}

#[test]
fn allocate_challenge_then_success() {
    let mut h = Harness::new();
    let resp = h.request(Method::Allocate, &[Attribute::RequestedTransport(17)], None);
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), Some(401));
    assert!(matches!(
        m.attribute(types::REALM),
        Some(Ok(Attribute::Realm("geoturn")))
    ));
    let Some(Ok(Attribute::Nonce(nonce))) = m.attribute(types::NONCE) else {
        panic!()
    };
    assert!(nonce.starts_with("obMatJos2"));
    assert!(m.get(types::PASSWORD_ALGORITHMS).is_some());
    assert!(!m.has_integrity(), "a 401 must not be signed");

    let (_, relayed) = h.allocate();
    assert_eq!(
        relayed.ip(),
        "192.0.2.1".parse::<std::net::IpAddr>().unwrap()
    );
    assert!((50000..=50099).contains(&relayed.port()));
    assert_eq!(h.bound, vec![RelayAddr::new(relayed)]);
    assert_eq!(h.server.allocations().len(), 1);
}

#[test]
fn retransmitted_allocate_gets_identical_response_and_new_one_gets_437() {
    let mut h = Harness::new();
    let (auth, _) = h.allocate();
    // Build an Allocate, send it twice.
    let tid = h.tid();
    let req = encode_request(
        Method::Allocate,
        Class::Request,
        tid,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    )
    .unwrap();
    let first = h.request_raw(&req);
    assert_eq!(code_of(&first), Some(437));
    let again = h.request_raw(&req);
    assert_eq!(first, again);

    // The original Allocate's retransmission gets the original success, not 437.
    let mut h = Harness::new();
    let mut auth = h.credentials(3600);
    h.challenge(&mut auth, 17);
    let tid = h.tid();
    let req = encode_request(
        Method::Allocate,
        Class::Request,
        tid,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    )
    .unwrap();
    let a = h.request_raw(&req);
    let b = h.request_raw(&req);
    assert_eq!(code_of(&a), None);
    assert_eq!(a, b);
    assert_eq!(h.bound.len(), 1, "a retransmission must not allocate twice");
}

#[test]
fn wrong_password_and_expired_username_get_401() {
    let mut h = Harness::new();
    let mut auth = h.credentials(3600);
    h.challenge(&mut auth, 17);
    let mut wrong = auth.clone();
    wrong.password = "bm90IHRoZSBwYXNzd29yZA==".into();
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&wrong),
    );
    assert_eq!(code_of(&resp), Some(401));

    // A credential that expired a second ago, correctly signed, is refused.
    let old = RestCredential::mint(SECRET, "alice", UNIX_START - 100, 99);
    let expired = ClientAuth {
        username: old.username,
        password: old.password,
        ..auth.clone()
    };
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&expired),
    );
    assert_eq!(code_of(&resp), Some(401));
    assert_eq!(h.server.stats().auth_failures.get("expired"), Some(&1));
    assert_eq!(
        h.server.stats().auth_failures.get("bad_integrity"),
        Some(&1)
    );
    assert!(h.server.allocations().is_empty());
}

#[test]
fn stale_nonce_gets_438_with_fresh_nonce() {
    let mut h = Harness::new();
    let mut auth = h.credentials(7200);
    h.challenge(&mut auth, 17);
    h.advance(601);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), Some(438));
    let old_nonce = auth.nonce.clone();
    assert!(auth.update_from_challenge(&m));
    assert_ne!(auth.nonce, old_nonce);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(17)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), None);
}

#[test]
fn unknown_comprehension_required_attribute_gets_420() {
    let mut h = Harness::new();
    let resp = h.request(
        Method::Allocate,
        &[
            Attribute::RequestedTransport(17),
            Attribute::Unknown {
                typ: 0x7ABC,
                value: b"zz",
            },
        ],
        None,
    );
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), Some(420));
    assert_eq!(
        m.attribute(types::UNKNOWN_ATTRIBUTES).unwrap().unwrap(),
        Attribute::UnknownAttributes(&[0x7A, 0xBC])
    );
}

#[test]
fn unsupported_transport_gets_442_and_missing_transport_400() {
    let mut h = Harness::new();
    let mut auth = h.credentials(3600);
    h.challenge(&mut auth, 6);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(99)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(442));
    let resp = h.request(Method::Allocate, &[], Some(&auth));
    assert_eq!(code_of(&resp), Some(400));
}

#[test]
fn sha256_password_algorithm_and_integrity() {
    use crate::auth::IntegrityKey;
    use crate::stun::integrity::long_term_key_sha256;
    use crate::stun::{MessageType, MessageWriter, PasswordAlgorithm};
    let mut h = Harness::new();
    let mut auth = h.credentials(3600);
    let challenge = h.request(Method::Allocate, &[Attribute::RequestedTransport(17)], None);
    let cm = Message::parse(&challenge).unwrap();
    auth.update_from_challenge(&cm);
    let offered = cm.get(types::PASSWORD_ALGORITHMS).unwrap().to_vec();
    let key = long_term_key_sha256(&auth.username, &auth.realm, &auth.password);
    let build = |tid: TransactionId, algs: &[u8]| {
        let mut buf = [0u8; 512];
        let mut w = MessageWriter::new(
            &mut buf,
            MessageType::new(Method::Allocate, Class::Request),
            tid,
        )
        .unwrap();
        w.add(&Attribute::RequestedTransport(17)).unwrap();
        w.add(&Attribute::Username(&auth.username)).unwrap();
        w.add(&Attribute::Realm(&auth.realm)).unwrap();
        w.add(&Attribute::Nonce(&auth.nonce)).unwrap();
        w.add(&Attribute::PasswordAlgorithms(algs)).unwrap();
        w.add(&Attribute::PasswordAlgorithm(PasswordAlgorithm::SHA256))
            .unwrap();
        IntegrityKey::Sha256Sha256(key).sign(&mut w).unwrap();
        let n = w.finish();
        buf[..n].to_vec()
    };
    // A downgraded list (SHA-256 only, MD5 removed) is refused with 400.
    let tid = h.tid();
    let resp = h.request_raw(&build(tid, &[0, 2, 0, 0]));
    assert_eq!(code_of(&resp), Some(400));
    let tid = h.tid();
    let resp = h.request_raw(&build(tid, &offered));
    let m = Message::parse(&resp).unwrap();
    assert_eq!(error_code(&m), None);
    assert!(m.has_integrity_sha256());
    assert!(m.verify_integrity_sha256(&key));
}
