//! RFC 5769 test vectors through the codec: parsing, integrity, fingerprint, addresses.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

#[path = "vectors/rfc5769.rs"]
mod vectors;

use geoturn_relay_proto::stun::attribute::types;
use geoturn_relay_proto::stun::integrity::long_term_key_md5;
use geoturn_relay_proto::stun::{Attribute, Class, Message, Method};
use vectors::*;

#[test]
fn sample_request() {
    let m = Message::parse(&SAMPLE_REQUEST).unwrap();
    assert_eq!(m.method(), Method::Binding);
    assert_eq!(m.class(), Class::Request);
    assert_eq!(
        m.attribute(types::USERNAME).unwrap().unwrap(),
        Attribute::Username(SHORT_TERM_USERNAME)
    );
    assert_eq!(
        m.attribute(types::SOFTWARE).unwrap().unwrap(),
        Attribute::Software("STUN test client")
    );
    assert!(m.fingerprint_ok());
    assert!(m.has_fingerprint());
    assert!(m.verify_integrity(SHORT_TERM_PASSWORD.as_bytes()));
    assert!(!m.verify_integrity(b"wrong"));
    // PRIORITY, ICE-CONTROLLED are understood; nothing to report as unknown.
    assert!(m.unknown_comprehension_required().is_empty());
}

#[test]
fn sample_ipv4_response() {
    let m = Message::parse(&SAMPLE_IPV4_RESPONSE).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert_eq!(
        m.attribute(types::XOR_MAPPED_ADDRESS).unwrap().unwrap(),
        Attribute::XorMappedAddress("192.0.2.1:32853".parse().unwrap())
    );
    assert!(m.fingerprint_ok());
    assert!(m.verify_integrity(SHORT_TERM_PASSWORD.as_bytes()));
}

#[test]
fn sample_ipv6_response() {
    let m = Message::parse(&SAMPLE_IPV6_RESPONSE).unwrap();
    assert_eq!(
        m.attribute(types::XOR_MAPPED_ADDRESS).unwrap().unwrap(),
        Attribute::XorMappedAddress(
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                .parse()
                .unwrap()
        )
    );
    assert!(m.fingerprint_ok());
    assert!(m.verify_integrity(SHORT_TERM_PASSWORD.as_bytes()));
}

#[test]
fn sample_long_term_request() {
    let m = Message::parse(&SAMPLE_LONG_TERM_REQUEST).unwrap();
    assert_eq!(
        m.attribute(types::USERNAME).unwrap().unwrap(),
        Attribute::Username(LONG_TERM_USERNAME)
    );
    assert_eq!(
        m.attribute(types::NONCE).unwrap().unwrap(),
        Attribute::Nonce(LONG_TERM_NONCE)
    );
    assert_eq!(
        m.attribute(types::REALM).unwrap().unwrap(),
        Attribute::Realm(LONG_TERM_REALM)
    );
    let key = long_term_key_md5(
        LONG_TERM_USERNAME,
        LONG_TERM_REALM,
        LONG_TERM_PASSWORD_PREPPED,
    );
    assert!(m.verify_integrity(&key));
    let wrong = long_term_key_md5(LONG_TERM_USERNAME, LONG_TERM_REALM, "TheMatrix");
    assert!(!m.verify_integrity(&wrong));
    assert!(!m.has_fingerprint());
}

#[test]
fn any_single_bit_flip_breaks_integrity_or_parsing() {
    // Integrity must cover every byte before MESSAGE-INTEGRITY.
    for i in 0..SAMPLE_REQUEST.len() - 32 {
        let mut copy = SAMPLE_REQUEST;
        copy[i] ^= 0x01;
        if let Ok(m) = Message::parse(&copy) {
            let intact = m.verify_integrity(SHORT_TERM_PASSWORD.as_bytes()) && m.fingerprint_ok();
            assert!(!intact, "flip at byte {i} went unnoticed");
        }
    }
}
