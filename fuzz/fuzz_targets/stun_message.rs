//! Fuzzes `Message::parse` and every accessor, with three oracles:
//!
//! 1. per attribute: every attribute that decodes is written alone into a fresh message by
//!    `MessageWriter`, parsed back, and must decode to the same value;
//! 2. whole message: all attributes are written back in order (undecodable ones verbatim) and
//!    the result must be byte-for-byte the original with reserved bits and padding zeroed (the
//!    only freedom the wire format leaves; see `canonical_value`);
//! 3. integrity: the attributes that count are re-signed with MESSAGE-INTEGRITY,
//!    MESSAGE-INTEGRITY-SHA256 and FINGERPRINT, which must all verify.
#![no_main]

use geoturn_relay_proto::stun::attribute::{is_known_comprehension_required, types};
use geoturn_relay_proto::stun::message::MAX_ATTRIBUTES;
use geoturn_relay_proto::stun::{Attribute, Message, MessageWriter, ParseError};
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"fuzz-key";
const OTHER_KEY: &[u8] = b"fuzz-kez";
const HEADER_LEN: usize = 20;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    exercise_accessors(&msg, data);
    per_attribute_round_trip(&msg);
    whole_message_round_trip(&msg, data);
    resign(&msg);
});

fn exercise_accessors(msg: &Message<'_>, data: &[u8]) {
    let _ = (msg.header(), msg.typ(), msg.method(), msg.class());
    assert_eq!(msg.raw(), data);
    assert_eq!(&msg.transaction_id().0[..], &data[8..20]);

    let counted: Vec<(u16, &[u8])> = msg.raw_attributes().collect();
    let all: Vec<(u16, &[u8])> = msg.all_raw_attributes().collect();
    // The attributes that count are a prefix of all of them.
    assert!(counted.len() <= all.len());
    assert_eq!(&all[..counted.len()], &counted[..]);
    // The TLVs tile the body exactly.
    let body: usize = all.iter().map(|(_, v)| 4 + ((v.len() + 3) & !3)).sum();
    assert_eq!(HEADER_LEN + body, data.len());
    // Nothing that counts is an integrity or fingerprint attribute.
    for (t, _) in &counted {
        assert!(
            ![
                types::MESSAGE_INTEGRITY,
                types::MESSAGE_INTEGRITY_SHA256,
                types::FINGERPRINT
            ]
            .contains(t)
        );
    }
    // FINGERPRINT, when present, is last.
    if msg.has_fingerprint() {
        assert_eq!(all.last().map(|(t, _)| *t), Some(types::FINGERPRINT));
    }

    for (t, v) in &counted {
        assert!(msg.get(*t).is_some());
        let first = msg.attribute(*t).expect("a counted attribute is found");
        let n = msg.attributes_of(*t).count();
        assert!(n >= 1);
        if msg.get(*t) == Some(*v) {
            assert_eq!(first, Attribute::decode(*t, v, msg.transaction_id()));
        }
    }

    // Unknown comprehension-required types: the first 8 counted ones, in order.
    let expected: Vec<u16> = counted
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| *t < 0x8000 && !is_known_comprehension_required(*t))
        .take(8)
        .collect();
    assert_eq!(msg.unknown_comprehension_required(), &expected[..]);

    let mi = msg.verify_integrity(KEY);
    let mi256 = msg.verify_integrity_sha256(KEY);
    assert!(!mi || msg.has_integrity());
    assert!(!mi256 || msg.has_integrity_sha256());
    let fp = msg.fingerprint_ok();
    assert!(fp || msg.has_fingerprint());

    let decoded: Vec<Result<Attribute<'_>, ParseError>> = msg.decode_all().collect();
    assert_eq!(decoded.len(), all.len());
}

fn per_attribute_round_trip(msg: &Message<'_>) {
    for attr in msg.decode_all().flatten() {
        let mut buf = [0u8; 2048];
        let mut w = MessageWriter::new(&mut buf, msg.typ(), *msg.transaction_id())
            .expect("a header fits in 2048 bytes");
        if w.add(&attr).is_err() {
            // Only a value too large for the 2048-byte buffer may fail.
            continue;
        }
        let n = w.finish();
        let back = Message::parse(&buf[..n]).expect("a re-encoded attribute parses");
        assert_eq!(back.typ(), msg.typ());
        assert_eq!(back.transaction_id(), msg.transaction_id());
        let mut it = back.decode_all();
        let again = it
            .next()
            .expect("one attribute")
            .expect("a re-encoded attribute decodes");
        assert_eq!(again, attr, "attribute round trip");
        assert!(it.next().is_none());
    }
}

/// The value `MessageWriter` must produce for a value that decoded: the original with the
/// bits the decoder ignores (reserved/RFFU fields, PASSWORD-ALGORITHM parameters) cleared.
fn canonical_value(t: u16, v: &[u8]) -> Vec<u8> {
    match t {
        types::MAPPED_ADDRESS
        | types::XOR_MAPPED_ADDRESS
        | types::XOR_PEER_ADDRESS
        | types::XOR_RELAYED_ADDRESS
        | types::ALTERNATE_SERVER => {
            let mut c = v.to_vec();
            c[0] = 0;
            c
        }
        types::ERROR_CODE => {
            let mut c = vec![0, 0, v[2] & 0x07, v[3]];
            c.extend_from_slice(&v[4..]);
            c
        }
        types::ADDRESS_ERROR_CODE => {
            let mut c = vec![v[0], 0, v[2] & 0x07, v[3]];
            c.extend_from_slice(&v[4..]);
            c
        }
        types::CHANNEL_NUMBER | types::PASSWORD_ALGORITHM => vec![v[0], v[1], 0, 0],
        types::REQUESTED_ADDRESS_FAMILY
        | types::ADDITIONAL_ADDRESS_FAMILY
        | types::REQUESTED_TRANSPORT => vec![v[0], 0, 0, 0],
        types::EVEN_PORT => vec![v[0] & 0x80],
        types::ICMP => vec![0, 0, v[2] & 0x7F, v[3], v[4], v[5], v[6], v[7]],
        _ => v.to_vec(),
    }
}

fn whole_message_round_trip(msg: &Message<'_>, data: &[u8]) {
    let tid = *msg.transaction_id();
    let mut buf = vec![0u8; data.len()];
    let mut expected = data[..HEADER_LEN].to_vec();
    let mut w = MessageWriter::new(&mut buf, msg.typ(), tid).expect("header fits");
    for (t, v) in msg.all_raw_attributes() {
        let value = match Attribute::decode(t, v, &tid) {
            Ok(attr) => {
                w.add(&attr).expect("a canonical value is never longer");
                canonical_value(t, v)
            }
            Err(_) => {
                // Undecodable: carried verbatim.
                w.add(&Attribute::Unknown { typ: t, value: v })
                    .expect("a verbatim value fits");
                v.to_vec()
            }
        };
        expected.extend_from_slice(&t.to_be_bytes());
        expected.extend_from_slice(&(value.len() as u16).to_be_bytes());
        expected.extend_from_slice(&value);
        expected.resize((expected.len() + 3) & !3, 0);
    }
    let n = w.finish();
    let body = (expected.len() - HEADER_LEN) as u16;
    expected[2..4].copy_from_slice(&body.to_be_bytes());
    assert_eq!(&buf[..n], &expected[..], "canonical re-encoding");

    let back = Message::parse(&buf[..n]).expect("the re-encoded message parses");
    assert_eq!(back.typ(), msg.typ());
    assert_eq!(
        back.unknown_comprehension_required(),
        msg.unknown_comprehension_required()
    );
    assert_eq!(back.has_integrity(), msg.has_integrity());
    assert_eq!(back.has_integrity_sha256(), msg.has_integrity_sha256());
    assert_eq!(back.has_fingerprint(), msg.has_fingerprint());
    assert_eq!(back.raw_attributes().count(), msg.raw_attributes().count());
    let a: Vec<_> = msg.decode_all().collect();
    let b: Vec<_> = back.decode_all().collect();
    assert_eq!(a, b, "decoded attributes after whole-message round trip");
    if &buf[..n] == data {
        assert_eq!(back.verify_integrity(KEY), msg.verify_integrity(KEY));
        assert_eq!(back.fingerprint_ok(), msg.fingerprint_ok());
    }
}

fn resign(msg: &Message<'_>) {
    // Three attributes are added; stay within the parser's attribute limit.
    if msg.raw_attributes().count() + 3 > MAX_ATTRIBUTES {
        return;
    }
    let mut buf = vec![0u8; msg.raw().len() + 128];
    let mut w = MessageWriter::new(&mut buf, msg.typ(), *msg.transaction_id()).expect("fits");
    for (t, v) in msg.raw_attributes() {
        w.add(&Attribute::Unknown { typ: t, value: v })
            .expect("fits");
    }
    // The re-signed message may exceed the 16-bit length: then the writer must refuse.
    if w.add_integrity(KEY).is_err()
        || w.add_integrity_sha256(KEY).is_err()
        || w.add_fingerprint().is_err()
    {
        return;
    }
    let n = w.finish();
    let back = Message::parse(&buf[..n]).expect("a re-signed message parses");
    assert!(back.verify_integrity(KEY));
    assert!(!back.verify_integrity(OTHER_KEY));
    assert!(back.verify_integrity_sha256(KEY));
    assert!(!back.verify_integrity_sha256(OTHER_KEY));
    assert!(back.fingerprint_ok());
    assert_eq!(
        back.unknown_comprehension_required(),
        msg.unknown_comprehension_required()
    );
    assert!(back.raw_attributes().eq(msg.raw_attributes()));
}
