//! Fuzzes ChannelData framing: `ChannelData::parse`, `ChannelData::stream_frame_len`, and the
//! round trip through `encode` (unpadded as over UDP, padded as over a stream).
#![no_main]

use geoturn_relay_proto::stun::channel_data::{
    ChannelData, HEADER_LEN, MAX_CHANNEL, MIN_CHANNEL, encode,
};
use geoturn_relay_proto::stun::{PacketKind, classify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let frame = ChannelData::stream_frame_len(data);
    assert_eq!(frame.is_some(), data.len() >= HEADER_LEN);
    if let Some(n) = frame {
        let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
        assert_eq!(n, HEADER_LEN + len.div_ceil(4) * 4);
    }
    let kind = classify(data);

    let Ok(cd) = ChannelData::parse(data) else {
        return;
    };
    assert!((MIN_CHANNEL..=MAX_CHANNEL).contains(&cd.channel));
    assert_eq!(kind, PacketKind::ChannelData);
    // At most 3 bytes of padding follow the payload.
    let unpadded = HEADER_LEN + cd.payload.len();
    assert!(data.len() >= unpadded && data.len() - unpadded <= 3);
    assert_eq!(cd.payload, &data[HEADER_LEN..unpadded]);
    assert!(frame.is_some_and(|n| n >= unpadded && n - unpadded <= 3));

    let mut buf = vec![0u8; unpadded + 3];
    let n = encode(&mut buf, cd.channel, cd.payload, false).expect("fits");
    assert_eq!(n, unpadded);
    // Header and payload come back byte for byte (the padding is not reproduced).
    assert_eq!(&buf[..n], &data[..n]);
    assert_eq!(ChannelData::parse(&buf[..n]), Ok(cd));

    let n = encode(&mut buf, cd.channel, cd.payload, true).expect("fits");
    assert_eq!(n % 4, 0);
    assert_eq!(Some(n), ChannelData::stream_frame_len(&buf[..n]));
    assert_eq!(Some(n), frame);
    assert!(buf[unpadded..n].iter().all(|b| *b == 0));
    assert_eq!(ChannelData::parse(&buf[..n]), Ok(cd));

    // Too small a buffer is an error, never a panic.
    let mut small = vec![0u8; unpadded - 1];
    assert!(encode(&mut small, cd.channel, cd.payload, false).is_err());
});
