//! ChannelData framing ([RFC 8656 §12.4–12.5](https://www.rfc-editor.org/rfc/rfc8656#section-12.4)):
//! 2-byte channel number, 2-byte length, payload. Zero-copy, allocation-free both ways.

use super::error::{EncodeError, ParseError};
use super::reader::Reader;

/// Lowest channel number a client may bind.
pub const MIN_CHANNEL: u16 = 0x4000;
/// Highest channel number a client may bind.
///
/// RFC 8656 §12 narrows RFC 5766's 0x4000–0x7FFF to 0x4FFF, but deployed clients still pick
/// from the old range: libwebrtc (Chrome, Safari, native apps) chooses channel numbers up to
/// 0x7FFF, and so does coturn's `turnutils_uclient`. Refusing them would break three binds in
/// four, so geoturn accepts the RFC 5766 range, as coturn does. Nothing else on a TURN port
/// starts with bits 01, so demultiplexing is unaffected.
pub const MAX_CHANNEL: u16 = 0x7FFF;
/// ChannelData header length.
pub const HEADER_LEN: usize = 4;

/// A borrowed ChannelData message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// The channel number.
    pub channel: u16,
    /// The application data.
    pub payload: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Parses ChannelData from a datagram (trailing padding allowed) or a stream frame.
    pub fn parse(packet: &'a [u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(packet);
        let channel = r.u16().ok_or(ParseError::BadChannelData)?;
        let len = usize::from(r.u16().ok_or(ParseError::BadChannelData)?);
        if !(MIN_CHANNEL..=MAX_CHANNEL).contains(&channel) {
            return Err(ParseError::BadChannelData);
        }
        // Over UDP the datagram may carry up to 3 padding bytes after the payload
        // (RFC 8656 §12.5); a shorter datagram than the length field says is malformed.
        let payload = r.take(len).ok_or(ParseError::BadChannelData)?;
        if r.remaining() > 3 {
            return Err(ParseError::BadChannelData);
        }
        Ok(Self { channel, payload })
    }

    /// The total frame length on a stream: header + payload rounded up to 4 bytes.
    /// Returns `None` when `prefix` holds fewer than 4 bytes.
    pub fn stream_frame_len(prefix: &[u8]) -> Option<usize> {
        let mut r = Reader::new(prefix);
        let _channel = r.u16()?;
        let len = usize::from(r.u16()?);
        Some(HEADER_LEN + ((len + 3) & !3))
    }
}

/// Writes the ChannelData header for `payload_len` bytes into the first 4 bytes of `out`.
/// The caller places the payload right after, so the payload is copied at most once.
pub fn write_header(out: &mut [u8], channel: u16, payload_len: usize) -> Result<(), EncodeError> {
    let len = u16::try_from(payload_len).map_err(|_| EncodeError::ValueTooLong)?;
    let header = out
        .get_mut(..HEADER_LEN)
        .ok_or(EncodeError::BufferTooSmall)?;
    let [c0, c1] = channel.to_be_bytes();
    let [l0, l1] = len.to_be_bytes();
    header.copy_from_slice(&[c0, c1, l0, l1]);
    Ok(())
}

/// Encodes a full ChannelData frame into `out`, padded to 4 bytes when `pad` (streams).
/// Returns the number of bytes written.
pub fn encode(
    out: &mut [u8],
    channel: u16,
    payload: &[u8],
    pad: bool,
) -> Result<usize, EncodeError> {
    write_header(out, channel, payload.len())?;
    let end = HEADER_LEN + payload.len();
    out.get_mut(HEADER_LEN..end)
        .ok_or(EncodeError::BufferTooSmall)?
        .copy_from_slice(payload);
    if !pad {
        return Ok(end);
    }
    let padded = (end + 3) & !3;
    out.get_mut(end..padded)
        .ok_or(EncodeError::BufferTooSmall)?
        .fill(0);
    Ok(padded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let mut buf = [0u8; 16];
        let n = encode(&mut buf, 0x4001, b"hello", true).unwrap();
        assert_eq!(n, 12);
        assert_eq!(ChannelData::stream_frame_len(&buf), Some(12));
        let cd = ChannelData::parse(&buf[..n]).unwrap();
        assert_eq!(cd.channel, 0x4001);
        assert_eq!(cd.payload, b"hello");
        let n = encode(&mut buf, 0x7FFF, b"hello", false).unwrap();
        assert_eq!(n, 9);
        assert_eq!(ChannelData::parse(&buf[..n]).unwrap().payload, b"hello");
    }

    #[test]
    fn rejects_bad_frames() {
        assert!(ChannelData::parse(&[0x40, 0x00, 0x00]).is_err());
        assert!(ChannelData::parse(&[0x80, 0x00, 0x00, 0x00]).is_err());
        assert!(ChannelData::parse(&[0x3F, 0xFF, 0x00, 0x00]).is_err());
        assert!(ChannelData::parse(&[0x40, 0x00, 0x00, 0x05, 1, 2]).is_err());
        assert!(ChannelData::parse(&[0x40, 0x00, 0x00, 0x00, 0, 0, 0, 0]).is_err());
        assert!(ChannelData::parse(&[0x40, 0x00, 0x00, 0x00, 0, 0, 0]).is_ok());
    }
}
