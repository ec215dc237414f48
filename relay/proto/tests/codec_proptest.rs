//! Property tests of the STUN / ChannelData codec: every attribute variant survives
//! `MessageWriter` → `Message::parse` → `Attribute::decode`, integrity and fingerprint verify,
//! and the parsers never panic on arbitrary bytes or on mutations of valid messages.
//!
//! Generated values stay inside what the wire format can carry, because the encoder does not
//! check these limits itself (the decoder does):
//! - USERNAME ≤ 512 bytes, REALM / NONCE / SOFTWARE / ALTERNATE-DOMAIN / reason phrases
//!   ≤ 763 bytes (longer ones encode, then fail to decode as malformed);
//! - ERROR-CODE and ADDRESS-ERROR-CODE codes in 300..=699 (the encoder writes `code / 100`
//!   and `code % 100` unchecked);
//! - ICMP type ≤ 0x7F (the encoder masks the top bit, which is reserved on the wire);
//! - `Unknown` only with types the decoder does not interpret.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use geoturn_relay_proto::stun::attribute::{
    MAX_TEXT_LEN, MAX_USERNAME_LEN, is_known_comprehension_required, types,
};
use geoturn_relay_proto::stun::channel_data::{self, ChannelData, MAX_CHANNEL, MIN_CHANNEL};
use geoturn_relay_proto::stun::message::MAX_UNKNOWN_REPORTED;
use geoturn_relay_proto::stun::{
    AddressFamily, Attribute, Class, Message, MessageType, MessageWriter, Method,
    PasswordAlgorithm, TransactionId,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

/// An owned attribute, so strategies can produce the data the borrowed `Attribute` points to.
#[derive(Debug, Clone)]
enum Attr {
    MappedAddress(SocketAddr),
    XorMappedAddress(SocketAddr),
    XorPeerAddress(SocketAddr),
    XorRelayedAddress(SocketAddr),
    AlternateServer(SocketAddr),
    Username(String),
    Userhash([u8; 32]),
    MessageIntegrity([u8; 20]),
    MessageIntegritySha256(Vec<u8>),
    Fingerprint(u32),
    ErrorCode {
        code: u16,
        reason: String,
    },
    Realm(String),
    Nonce(String),
    PasswordAlgorithms(Vec<u8>),
    PasswordAlgorithm(u16),
    UnknownAttributes(Vec<u8>),
    Software(String),
    ChannelNumber(u16),
    Lifetime(u32),
    Data(Vec<u8>),
    RequestedAddressFamily(AddressFamily),
    EvenPort(bool),
    RequestedTransport(u8),
    DontFragment,
    ReservationToken([u8; 8]),
    AdditionalAddressFamily(AddressFamily),
    AddressErrorCode {
        family: AddressFamily,
        code: u16,
        reason: String,
    },
    Icmp {
        icmp_type: u8,
        icmp_code: u8,
        data: u32,
    },
    AlternateDomain(String),
    ConnectionId(u32),
    Unknown {
        typ: u16,
        value: Vec<u8>,
    },
}

impl Attr {
    fn attr(&self) -> Attribute<'_> {
        match self {
            Self::MappedAddress(a) => Attribute::MappedAddress(*a),
            Self::XorMappedAddress(a) => Attribute::XorMappedAddress(*a),
            Self::XorPeerAddress(a) => Attribute::XorPeerAddress(*a),
            Self::XorRelayedAddress(a) => Attribute::XorRelayedAddress(*a),
            Self::AlternateServer(a) => Attribute::AlternateServer(*a),
            Self::Username(s) => Attribute::Username(s),
            Self::Userhash(h) => Attribute::Userhash(*h),
            Self::MessageIntegrity(h) => Attribute::MessageIntegrity(*h),
            Self::MessageIntegritySha256(h) => Attribute::MessageIntegritySha256(h),
            Self::Fingerprint(v) => Attribute::Fingerprint(*v),
            Self::ErrorCode { code, reason } => Attribute::ErrorCode {
                code: *code,
                reason,
            },
            Self::Realm(s) => Attribute::Realm(s),
            Self::Nonce(s) => Attribute::Nonce(s),
            Self::PasswordAlgorithms(raw) => Attribute::PasswordAlgorithms(raw),
            Self::PasswordAlgorithm(number) => {
                Attribute::PasswordAlgorithm(PasswordAlgorithm { number: *number })
            }
            Self::UnknownAttributes(raw) => Attribute::UnknownAttributes(raw),
            Self::Software(s) => Attribute::Software(s),
            Self::ChannelNumber(n) => Attribute::ChannelNumber(*n),
            Self::Lifetime(v) => Attribute::Lifetime(*v),
            Self::Data(d) => Attribute::Data(d),
            Self::RequestedAddressFamily(f) => Attribute::RequestedAddressFamily(*f),
            Self::EvenPort(reserve) => Attribute::EvenPort { reserve: *reserve },
            Self::RequestedTransport(p) => Attribute::RequestedTransport(*p),
            Self::DontFragment => Attribute::DontFragment,
            Self::ReservationToken(t) => Attribute::ReservationToken(*t),
            Self::AdditionalAddressFamily(f) => Attribute::AdditionalAddressFamily(*f),
            Self::AddressErrorCode {
                family,
                code,
                reason,
            } => Attribute::AddressErrorCode {
                family: *family,
                code: *code,
                reason,
            },
            Self::Icmp {
                icmp_type,
                icmp_code,
                data,
            } => Attribute::Icmp {
                icmp_type: *icmp_type,
                icmp_code: *icmp_code,
                data: *data,
            },
            Self::AlternateDomain(s) => Attribute::AlternateDomain(s),
            Self::ConnectionId(v) => Attribute::ConnectionId(*v),
            Self::Unknown { typ, value } => Attribute::Unknown { typ: *typ, value },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies

fn address() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

fn family() -> impl Strategy<Value = AddressFamily> {
    prop_oneof![Just(AddressFamily::V4), Just(AddressFamily::V6)]
}

/// UTF-8 text of at most `max` bytes: printable ASCII, any Unicode, or exactly `max` bytes.
fn text(max: usize) -> impl Strategy<Value = String> {
    let ascii = |len: std::ops::RangeInclusive<usize>| {
        vec(0x20u8..0x7F, len).prop_map(|b| b.into_iter().map(char::from).collect::<String>())
    };
    prop_oneof![
        3 => ascii(0..=max),
        3 => vec(any::<char>(), 0..=max / 2).prop_map(move |chars| {
            let mut s = String::new();
            for c in chars {
                if s.len() + c.len_utf8() > max {
                    break;
                }
                s.push(c);
            }
            s
        }),
        1 => ascii(max..=max),
    ]
}

fn error_code() -> impl Strategy<Value = u16> {
    300u16..=699
}

/// True when the decoder has no typed variant for `t`, so `Unknown { typ: t, .. }` round-trips.
fn is_uninterpreted(t: u16) -> bool {
    matches!(
        Attribute::decode(t, &[], &TransactionId([0; 12])),
        Ok(Attribute::Unknown { .. })
    )
}

/// A PASSWORD-ALGORITHMS value: a well-formed list with padded parameters.
fn password_algorithms() -> impl Strategy<Value = Vec<u8>> {
    vec((any::<u16>(), vec(any::<u8>(), 0..8)), 0..5).prop_map(|algs| {
        let mut raw = Vec::new();
        for (number, params) in algs {
            raw.extend_from_slice(&number.to_be_bytes());
            raw.extend_from_slice(&(params.len() as u16).to_be_bytes());
            raw.extend_from_slice(&params);
            raw.resize((raw.len() + 3) & !3, 0);
        }
        raw
    })
}

/// Every attribute that may stand anywhere in a message (not the integrity / fingerprint ones).
fn body_attr() -> BoxedStrategy<Attr> {
    prop_oneof![
        address().prop_map(Attr::MappedAddress),
        address().prop_map(Attr::XorMappedAddress),
        address().prop_map(Attr::XorPeerAddress),
        address().prop_map(Attr::XorRelayedAddress),
        address().prop_map(Attr::AlternateServer),
        text(MAX_USERNAME_LEN).prop_map(Attr::Username),
        any::<[u8; 32]>().prop_map(Attr::Userhash),
        (error_code(), text(MAX_TEXT_LEN))
            .prop_map(|(code, reason)| Attr::ErrorCode { code, reason }),
        text(MAX_TEXT_LEN).prop_map(Attr::Realm),
        text(MAX_TEXT_LEN).prop_map(Attr::Nonce),
        password_algorithms().prop_map(Attr::PasswordAlgorithms),
        any::<u16>().prop_map(Attr::PasswordAlgorithm),
        vec(any::<u16>(), 0..8).prop_map(|ts| Attr::UnknownAttributes(
            ts.iter().flat_map(|t| t.to_be_bytes()).collect()
        )),
        text(MAX_TEXT_LEN).prop_map(Attr::Software),
        any::<u16>().prop_map(Attr::ChannelNumber),
        any::<u32>().prop_map(Attr::Lifetime),
        vec(any::<u8>(), 0..=1200).prop_map(Attr::Data),
        family().prop_map(Attr::RequestedAddressFamily),
        any::<bool>().prop_map(Attr::EvenPort),
        any::<u8>().prop_map(Attr::RequestedTransport),
        Just(Attr::DontFragment),
        any::<[u8; 8]>().prop_map(Attr::ReservationToken),
        family().prop_map(Attr::AdditionalAddressFamily),
        (family(), error_code(), text(MAX_TEXT_LEN)).prop_map(|(family, code, reason)| {
            Attr::AddressErrorCode {
                family,
                code,
                reason,
            }
        }),
        (0u8..=0x7F, any::<u8>(), any::<u32>()).prop_map(|(icmp_type, icmp_code, data)| {
            Attr::Icmp {
                icmp_type,
                icmp_code,
                data,
            }
        }),
        text(MAX_TEXT_LEN).prop_map(Attr::AlternateDomain),
        any::<u32>().prop_map(Attr::ConnectionId),
        (
            any::<u16>().prop_filter("a type the codec interprets", |t| is_uninterpreted(*t)),
            vec(any::<u8>(), 0..64)
        )
            .prop_map(|(typ, value)| Attr::Unknown { typ, value }),
    ]
    .boxed()
}

/// The attributes that end a message, as raw values.
fn trailer_attr() -> impl Strategy<Value = Attr> {
    prop_oneof![
        any::<[u8; 20]>().prop_map(Attr::MessageIntegrity),
        (4usize..=8)
            .prop_flat_map(|words| vec(any::<u8>(), words * 4))
            .prop_map(Attr::MessageIntegritySha256),
        any::<u32>().prop_map(Attr::Fingerprint),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    (0u16..0x1000).prop_map(Method::from_number)
}

fn class() -> impl Strategy<Value = Class> {
    prop_oneof![
        Just(Class::Request),
        Just(Class::Indication),
        Just(Class::Success),
        Just(Class::Error),
    ]
}

#[derive(Debug, Clone)]
struct Msg {
    typ: MessageType,
    tid: TransactionId,
    attrs: Vec<Attr>,
    /// MESSAGE-INTEGRITY key.
    mi: Option<Vec<u8>>,
    /// MESSAGE-INTEGRITY-SHA256 key.
    mi256: Option<Vec<u8>>,
    fingerprint: bool,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    // Up to 100 bytes: beyond the 64-byte HMAC block, where keys are hashed first.
    vec(any::<u8>(), 0..100)
}

fn message() -> impl Strategy<Value = Msg> {
    (
        method(),
        class(),
        any::<[u8; 12]>(),
        vec(body_attr(), 0..10),
        proptest::option::of(key()),
        proptest::option::of(key()),
        any::<bool>(),
    )
        .prop_map(|(method, class, tid, attrs, mi, mi256, fingerprint)| Msg {
            typ: MessageType::new(method, class),
            tid: TransactionId(tid),
            attrs,
            mi,
            mi256,
            fingerprint,
        })
}

/// Another key with a different HMAC. (Appending a zero byte would not do: HMAC pads short
/// keys with zeros, so `k` and `k || 0x00` are the same key.)
fn other_key(key: &[u8]) -> Vec<u8> {
    let mut other = key.to_vec();
    match other.first_mut() {
        Some(b) => *b ^= 0x01,
        None => other.push(0x01),
    }
    other
}

const BUF_LEN: usize = 16 * 1024;

fn encode(m: &Msg) -> Vec<u8> {
    let mut buf = vec![0u8; BUF_LEN];
    let mut w = MessageWriter::new(&mut buf, m.typ, m.tid).expect("header fits");
    for a in &m.attrs {
        w.add(&a.attr())
            .expect("generated attributes fit the buffer");
    }
    if let Some(k) = &m.mi {
        w.add_integrity(k).expect("MESSAGE-INTEGRITY fits");
    }
    if let Some(k) = &m.mi256 {
        w.add_integrity_sha256(k)
            .expect("MESSAGE-INTEGRITY-SHA256 fits");
    }
    if m.fingerprint {
        w.add_fingerprint().expect("FINGERPRINT fits");
    }
    let n = w.finish();
    buf.truncate(n);
    buf
}

/// Calls every accessor; for each attribute that decodes, checks it re-encodes to itself.
fn exercise(m: &Message<'_>) {
    let _ = (
        m.header(),
        m.typ(),
        m.method(),
        m.class(),
        m.transaction_id(),
    );
    let _ = m.raw();
    assert!(m.unknown_comprehension_required().len() <= MAX_UNKNOWN_REPORTED);
    let counted: Vec<(u16, &[u8])> = m.raw_attributes().collect();
    for (t, _) in &counted {
        assert!(m.get(*t).is_some());
        let _ = m.attribute(*t);
        let _ = m.attributes_of(*t).count();
    }
    let _ = m.all_raw_attributes().count();
    let _ = (
        m.has_integrity(),
        m.has_integrity_sha256(),
        m.has_fingerprint(),
    );
    let _ = m.verify_integrity(b"key");
    let _ = m.verify_integrity_sha256(b"key");
    let _ = m.fingerprint_ok();
    for a in m.decode_all().flatten() {
        let mut buf = [0u8; 2048];
        let mut w =
            MessageWriter::new(&mut buf, m.typ(), *m.transaction_id()).expect("header fits");
        if w.add(&a).is_err() {
            continue;
        }
        let n = w.finish();
        let back = Message::parse(&buf[..n]).expect("a re-encoded attribute parses");
        let again: Vec<_> = back.decode_all().collect();
        assert_eq!(again, vec![Ok(a)]);
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Truncate(Index),
    Extend(Vec<u8>),
    /// Rewrite the header length to match the (mutated) packet, to get past the framing check.
    FixLength,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::SetByte(i, v)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => vec(any::<u8>(), 1..16).prop_map(Mutation::Extend),
        2 => Just(Mutation::FixLength),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::FlipBit(i, bit) if !bytes.is_empty() => {
            let at = i.index(bytes.len());
            bytes[at] ^= 1 << bit;
        }
        Mutation::SetByte(i, v) if !bytes.is_empty() => {
            let at = i.index(bytes.len());
            bytes[at] = *v;
        }
        Mutation::Truncate(i) => {
            let at = i.index(bytes.len() + 1);
            bytes.truncate(at);
        }
        Mutation::Extend(tail) => bytes.extend_from_slice(tail),
        Mutation::FixLength if bytes.len() >= 20 => {
            let len = u16::try_from(bytes.len() - 20).unwrap_or(u16::MAX);
            bytes[2..4].copy_from_slice(&len.to_be_bytes());
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn message_round_trips(m in message()) {
        let bytes = encode(&m);
        let parsed = Message::parse(&bytes).unwrap();
        prop_assert_eq!(parsed.typ(), m.typ);
        prop_assert_eq!(parsed.method(), m.typ.method);
        prop_assert_eq!(parsed.class(), m.typ.class);
        prop_assert_eq!(parsed.transaction_id(), &m.tid);

        // Every attribute, trailers included, in order.
        let decoded: Vec<Attribute<'_>> = parsed.decode_all().collect::<Result<_, _>>().unwrap();
        let expected: Vec<Attribute<'_>> = m.attrs.iter().map(Attr::attr).collect();
        prop_assert_eq!(&decoded[..expected.len()], &expected[..]);
        let mut trailer = decoded[expected.len()..].iter();
        if m.mi.is_some() {
            prop_assert!(matches!(trailer.next(), Some(Attribute::MessageIntegrity(_))));
        }
        if m.mi256.is_some() {
            prop_assert!(
                matches!(trailer.next(), Some(Attribute::MessageIntegritySha256(h)) if h.len() == 32)
            );
        }
        if m.fingerprint {
            prop_assert!(matches!(trailer.next(), Some(Attribute::Fingerprint(_))));
        }
        prop_assert!(trailer.next().is_none());

        // The attributes that count are exactly the body ones (they precede every trailer).
        let counted: Vec<Attribute<'_>> = parsed
            .raw_attributes()
            .map(|(t, v)| Attribute::decode(t, v, &m.tid).unwrap())
            .collect();
        prop_assert_eq!(&counted, &expected);
        for a in &expected {
            let first = expected.iter().find(|b| b.typ() == a.typ()).unwrap();
            prop_assert_eq!(parsed.attribute(a.typ()).unwrap().unwrap(), first.clone());
            prop_assert_eq!(
                parsed.attributes_of(a.typ()).count(),
                expected.iter().filter(|b| b.typ() == a.typ()).count()
            );
        }

        let unknown: Vec<u16> = expected
            .iter()
            .map(Attribute::typ)
            .filter(|t| *t < 0x8000 && !is_known_comprehension_required(*t))
            .take(MAX_UNKNOWN_REPORTED)
            .collect();
        prop_assert_eq!(parsed.unknown_comprehension_required(), &unknown[..]);

        prop_assert_eq!(parsed.has_integrity(), m.mi.is_some());
        match &m.mi {
            Some(k) => {
                prop_assert!(parsed.verify_integrity(k));
                prop_assert!(!parsed.verify_integrity(&other_key(k)));
            }
            None => prop_assert!(!parsed.verify_integrity(b"")),
        }
        prop_assert_eq!(parsed.has_integrity_sha256(), m.mi256.is_some());
        match &m.mi256 {
            Some(k) => {
                prop_assert!(parsed.verify_integrity_sha256(k));
                prop_assert!(!parsed.verify_integrity_sha256(&other_key(k)));
            }
            None => prop_assert!(!parsed.verify_integrity_sha256(b"")),
        }
        prop_assert_eq!(parsed.has_fingerprint(), m.fingerprint);
        prop_assert!(parsed.fingerprint_ok());

        // A flipped bit in the protected attributes (before every trailer) breaks integrity
        // and fingerprint, whatever the flip does to the structure.
        let trailers = m.mi.as_ref().map_or(0, |_| 24)
            + m.mi256.as_ref().map_or(0, |_| 36)
            + if m.fingerprint { 8 } else { 0 };
        let body_len = bytes.len() - 20 - trailers;
        if body_len > 0 {
            let mut tampered = bytes.clone();
            tampered[20 + body_len / 2] ^= 0x10;
            if let Ok(t) = Message::parse(&tampered) {
                if let Some(k) = &m.mi {
                    prop_assert!(!t.verify_integrity(k));
                }
                if let Some(k) = &m.mi256 {
                    prop_assert!(!t.verify_integrity_sha256(k));
                }
                if m.fingerprint && t.has_fingerprint() {
                    prop_assert!(!t.fingerprint_ok());
                }
            }
        }
    }

    #[test]
    fn trailer_attributes_round_trip(
        a in trailer_attr(),
        typ in (method(), class()).prop_map(|(m, c)| MessageType::new(m, c)),
        tid in any::<[u8; 12]>().prop_map(TransactionId),
    ) {
        let mut buf = [0u8; 128];
        let mut w = MessageWriter::new(&mut buf, typ, tid).unwrap();
        w.add(&a.attr()).unwrap();
        let n = w.finish();
        let parsed = Message::parse(&buf[..n]).unwrap();
        let decoded: Vec<_> = parsed.decode_all().collect();
        prop_assert_eq!(decoded, vec![Ok(a.attr())]);
        prop_assert_eq!(parsed.raw_attributes().count(), 0);
    }

    #[test]
    fn channel_data_round_trips(
        channel in MIN_CHANNEL..=MAX_CHANNEL,
        payload in vec(any::<u8>(), 0..=1200),
        pad in any::<bool>(),
    ) {
        let mut buf = vec![0u8; 4 + payload.len() + 3];
        let n = channel_data::encode(&mut buf, channel, &payload, pad).unwrap();
        let unpadded = 4 + payload.len();
        prop_assert_eq!(n, if pad { (unpadded + 3) & !3 } else { unpadded });
        prop_assert_eq!(ChannelData::stream_frame_len(&buf[..n]), Some((unpadded + 3) & !3));
        let cd = ChannelData::parse(&buf[..n]).unwrap();
        prop_assert_eq!(cd.channel, channel);
        prop_assert_eq!(cd.payload, &payload[..]);
        // A buffer one byte short is an error, not a panic.
        prop_assert!(channel_data::encode(&mut buf[..unpadded - 1], channel, &payload, false).is_err());
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..=600)) {
        if let Ok(m) = Message::parse(&bytes) {
            exercise(&m);
        }
        if let Ok(cd) = ChannelData::parse(&bytes) {
            prop_assert!((MIN_CHANNEL..=MAX_CHANNEL).contains(&cd.channel));
        }
        let _ = ChannelData::stream_frame_len(&bytes);
    }

    /// Arbitrary bodies behind a valid header, so the attribute loop is reached.
    #[test]
    fn parser_never_panics_on_arbitrary_bodies(
        typ in 0u16..0x4000,
        tid in any::<[u8; 12]>(),
        words in vec(any::<[u8; 4]>(), 0..145),
    ) {
        let mut bytes = Vec::with_capacity(20 + words.len() * 4);
        bytes.extend_from_slice(&typ.to_be_bytes());
        bytes.extend_from_slice(&((words.len() * 4) as u16).to_be_bytes());
        bytes.extend_from_slice(&0x2112_A442u32.to_be_bytes());
        bytes.extend_from_slice(&tid);
        bytes.extend(words.iter().flatten());
        if let Ok(m) = Message::parse(&bytes) {
            exercise(&m);
        }
    }

    #[test]
    fn parsers_never_panic_on_mutated_messages(
        m in message(),
        mutations in vec(mutation(), 1..6),
    ) {
        let mut bytes = encode(&m);
        for mu in &mutations {
            apply(&mut bytes, mu);
        }
        if let Ok(parsed) = Message::parse(&bytes) {
            exercise(&parsed);
        }
        let _ = ChannelData::parse(&bytes);
        let _ = ChannelData::stream_frame_len(&bytes);
    }
}

/// Guards the strategy itself: every variant (every attribute type) is generated.
#[test]
fn strategies_cover_every_attribute_type() {
    use std::collections::HashSet;
    let mut runner = TestRunner::deterministic();
    let mut seen = HashSet::new();
    let body = body_attr();
    let trailer = trailer_attr();
    for _ in 0..3000 {
        let a = body.new_tree(&mut runner).unwrap().current();
        seen.insert(std::mem::discriminant(&a));
        let t = a.attr().typ();
        if matches!(a, Attr::Unknown { .. }) {
            assert!(is_uninterpreted(t));
        } else {
            assert!(!is_uninterpreted(t), "{t:#06x}");
        }
    }
    for _ in 0..100 {
        seen.insert(std::mem::discriminant(
            &trailer.new_tree(&mut runner).unwrap().current(),
        ));
    }
    // 31 variants of `Attribute`, one `Attr` each.
    assert_eq!(seen.len(), 31);
    // Types with a typed variant: all of `types` except the ICE ones decoded as Unknown.
    for t in [
        types::MAPPED_ADDRESS,
        types::FINGERPRINT,
        types::ICMP,
        types::CONNECTION_ID,
    ] {
        assert!(!is_uninterpreted(t));
    }
    for t in [
        types::PRIORITY,
        types::USE_CANDIDATE,
        types::ICE_CONTROLLED,
        types::ICE_CONTROLLING,
    ] {
        assert!(is_uninterpreted(t));
    }
}
