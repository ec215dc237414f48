//! Splitting a TCP/TLS byte stream into STUN and ChannelData messages
//! ([RFC 8656 §12.5](https://www.rfc-editor.org/rfc/rfc8656#section-12.5)): the first two bits
//! say which, the length field says how long; ChannelData is padded to 4 bytes on streams.

use super::channel_data;
use super::header::HEADER_LEN;
use super::reader::Reader;

/// The longest frame a stream may carry: a STUN header plus the largest length field.
pub const MAX_FRAME: usize = HEADER_LEN + 0xFFFF;

/// The stream holds something that is neither STUN nor ChannelData: close the connection,
/// since the framing cannot be recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stream is not STUN or ChannelData")]
pub struct FramingError;

/// The length of the complete frame at the start of `buf`, `Ok(None)` when more bytes are
/// needed to tell.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FramingError> {
    let mut r = Reader::new(buf);
    let (Some(first), Some(len)) = (r.u16(), r.u16()) else {
        return Ok(None);
    };
    let len = usize::from(len);
    let total = match first >> 14 {
        0b00 => HEADER_LEN + len,
        0b01 => channel_data::HEADER_LEN + ((len + 3) & !3),
        _ => return Err(FramingError),
    };
    Ok((buf.len() >= total).then_some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_stun_and_padded_channel_data() {
        // A STUN header announcing 8 attribute bytes.
        let mut stun = vec![0x00, 0x01, 0x00, 0x08];
        stun.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        stun.extend_from_slice(&[0; 12]);
        assert_eq!(frame_len(&stun), Ok(None));
        stun.extend_from_slice(&[0; 8]);
        assert_eq!(frame_len(&stun), Ok(Some(28)));
        // ChannelData with 5 payload bytes takes 4 + 8 on a stream.
        let cd = [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0, 0xFF];
        assert_eq!(frame_len(&cd[..11]), Ok(None));
        assert_eq!(frame_len(&cd), Ok(Some(12)));
        assert_eq!(frame_len(&[0x40]), Ok(None));
        assert_eq!(frame_len(&[0x80, 0, 0, 0]), Err(FramingError));
        assert_eq!(frame_len(&[0xC0, 0, 0, 0]), Err(FramingError));
    }
}
