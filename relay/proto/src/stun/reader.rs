//! A bounds-checked cursor over a byte slice: every read returns `None` instead of panicking.

/// Reads big-endian fields from a slice; never indexes out of bounds.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Takes the next `n` bytes, or `None` when fewer remain.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        // checked_add: a hostile length field must not wrap the cursor.
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Option<u8> {
        Some(u8::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian u16.
    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian u32.
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.array()?))
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Everything not yet read, consuming it.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        out
    }

    /// Offset of the cursor from the start of the slice.
    pub fn position(&self) -> usize {
        self.pos
    }
}

/// Writes big-endian fields into a caller-provided buffer; fails instead of overrunning it.
#[derive(Debug)]
pub struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> Writer<'b> {
    /// Writes from the start of `buf`.
    pub fn new(buf: &'b mut [u8]) -> Self {
        Self { buf, len: 0 }
    }

    /// Appends bytes.
    pub fn put(&mut self, bytes: &[u8]) -> Result<(), super::EncodeError> {
        let end = self
            .len
            .checked_add(bytes.len())
            .ok_or(super::EncodeError::BufferTooSmall)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(super::EncodeError::BufferTooSmall)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// Appends a big-endian u16.
    pub fn u16(&mut self, v: u16) -> Result<(), super::EncodeError> {
        self.put(&v.to_be_bytes())
    }

    /// Appends a big-endian u32.
    pub fn u32(&mut self, v: u32) -> Result<(), super::EncodeError> {
        self.put(&v.to_be_bytes())
    }

    /// Appends `n` zero bytes (padding).
    pub fn zeros(&mut self, n: usize) -> Result<(), super::EncodeError> {
        const ZERO: [u8; 4] = [0; 4];
        self.put(ZERO.get(..n).ok_or(super::EncodeError::BufferTooSmall)?)
    }

    /// Overwrites a big-endian u16 already written at `pos`.
    pub fn set_u16(&mut self, pos: usize, v: u16) -> Result<(), super::EncodeError> {
        let end = pos
            .checked_add(2)
            .ok_or(super::EncodeError::BufferTooSmall)?;
        if end > self.len {
            return Err(super::EncodeError::BufferTooSmall);
        }
        self.buf
            .get_mut(pos..end)
            .ok_or(super::EncodeError::BufferTooSmall)?
            .copy_from_slice(&v.to_be_bytes());
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// Forgets everything written after `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Number of bytes written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_never_overruns() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16(), Some(0x0102));
        assert_eq!(r.u16(), None);
        assert_eq!(r.u8(), Some(3));
        assert_eq!(r.take(usize::MAX), None);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn writer_refuses_overflow() {
        let mut buf = [0u8; 3];
        let mut w = Writer::new(&mut buf);
        w.u16(7).unwrap();
        assert!(w.u16(8).is_err());
        assert_eq!(w.written(), &[0, 7]);
    }
}
