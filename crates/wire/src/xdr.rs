//! XDR (RFC 4506) primitives.
//!
//! [`Decoder`] reads from a borrowed slice and never copies opaque data it
//! does not have to; variable-length items take an explicit maximum so that a
//! length field can never claim more than the protocol allows, and the
//! remaining input is checked before any allocation.

use thiserror::Error;

/// Why an XDR item could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum XdrError {
    /// The input ended before the item did.
    #[error("XDR input truncated: needed {needed} more bytes, {remaining} left")]
    Truncated {
        /// Bytes the item needed.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// A length field exceeded the protocol's limit for that item.
    #[error("XDR length {len} exceeds the limit of {max}")]
    TooLong {
        /// The length on the wire.
        len: u32,
        /// The limit for this item.
        max: u32,
    },
    /// A discriminant or boolean had a value the protocol does not define.
    #[error("invalid XDR discriminant {0}")]
    BadDiscriminant(u32),
    /// A string was not valid for its use (for example, not UTF-8 where text
    /// is required).
    #[error("invalid XDR string")]
    BadString,
}

/// Reads XDR items from a byte slice.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// Rounds `len` up to the 4-byte XDR unit, without overflow for any `u32`.
fn padded(len: u32) -> usize {
    (len as usize).div_ceil(4) * 4
}

impl<'a> Decoder<'a> {
    /// Starts decoding at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { buf, pos: 0 }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Offset of the next byte to be read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The unread input.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], XdrError> {
        let remaining = self.remaining();
        if n > remaining {
            return Err(XdrError::Truncated {
                needed: n,
                remaining,
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Reads an unsigned 32-bit integer.
    pub fn u32(&mut self) -> Result<u32, XdrError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a signed 32-bit integer.
    pub fn i32(&mut self) -> Result<i32, XdrError> {
        Ok(self.u32()? as i32)
    }

    /// Reads an unsigned 64-bit integer (XDR "unsigned hyper").
    pub fn u64(&mut self) -> Result<u64, XdrError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// Reads a boolean; anything but 0 or 1 is an error.
    pub fn bool(&mut self) -> Result<bool, XdrError> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(XdrError::BadDiscriminant(v)),
        }
    }

    /// Reads fixed-length opaque data of `N` bytes (plus padding).
    pub fn fixed<const N: usize>(&mut self) -> Result<[u8; N], XdrError> {
        let pad = N.div_ceil(4) * 4;
        let b = self.take(pad)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&b[..N]);
        Ok(out)
    }

    /// Reads variable-length opaque data of at most `max` bytes, borrowing it
    /// from the input.
    pub fn opaque(&mut self, max: u32) -> Result<&'a [u8], XdrError> {
        let len = self.u32()?;
        if len > max {
            return Err(XdrError::TooLong { len, max });
        }
        let b = self.take(padded(len))?;
        Ok(&b[..len as usize])
    }

    /// Reads a string of at most `max` bytes. XDR strings are bytes; file
    /// names need not be UTF-8, so no check is made here.
    pub fn string(&mut self, max: u32) -> Result<&'a [u8], XdrError> {
        self.opaque(max)
    }

    /// Reads the length of a variable-length array and checks it against
    /// `max` and against the input left, assuming each element takes at
    /// least `min_elem_size` bytes. The caller then decodes that many
    /// elements; the check means a lying count cannot make it reserve
    /// memory the input could not fill.
    pub fn array_len(&mut self, max: u32, min_elem_size: usize) -> Result<u32, XdrError> {
        let len = self.u32()?;
        if len > max {
            return Err(XdrError::TooLong { len, max });
        }
        let need = (len as usize).saturating_mul(min_elem_size.max(1));
        if need > self.remaining() {
            return Err(XdrError::Truncated {
                needed: need,
                remaining: self.remaining(),
            });
        }
        Ok(len)
    }

    /// Reads an XDR optional (`*T`): a boolean, then the item if present.
    pub fn optional<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, XdrError>,
    ) -> Result<Option<T>, XdrError> {
        if self.bool()? {
            Ok(Some(f(self)?))
        } else {
            Ok(None)
        }
    }
}

/// Writes XDR items into a growable buffer.
///
/// Encoding is only ever done of values the server built itself, so it
/// cannot fail; lengths larger than `u32::MAX` are a bug in the caller and
/// are clamped rather than panicking.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// An encoder with room for `cap` bytes before it reallocates.
    pub fn with_capacity(cap: usize) -> Self {
        Encoder {
            buf: Vec::with_capacity(cap),
        }
    }

    /// Continues writing after the bytes already in `buf` (used to reuse
    /// a buffer, or to leave room for a record mark).
    pub fn from_vec(buf: Vec<u8>) -> Self {
        Encoder { buf }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The encoded bytes.
    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    /// The encoded bytes, borrowed.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// Truncates the output back to `len` bytes (to undo a partly written
    /// item that turned out not to fit a reply size limit).
    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(len);
    }

    /// Overwrites a `u32` written earlier at byte offset `at`.
    pub fn patch_u32(&mut self, at: usize, v: u32) {
        if let Some(slot) = self.buf.get_mut(at..at + 4) {
            slot.copy_from_slice(&v.to_be_bytes());
        }
    }

    /// Overwrites bytes written earlier, starting at offset `at`; does
    /// nothing if the range was never written.
    pub fn patch_bytes(&mut self, at: usize, data: &[u8]) {
        if let Some(slot) = self.buf.get_mut(at..at + data.len()) {
            slot.copy_from_slice(data);
        }
    }

    /// Writes an unsigned 32-bit integer.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Writes a signed 32-bit integer.
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.u32(v.cast_unsigned())
    }

    /// Writes an unsigned 64-bit integer.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Writes a boolean.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u32(u32::from(v))
    }

    /// Writes fixed-length opaque data (padded to 4 bytes).
    pub fn fixed(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        self.pad(data.len());
        self
    }

    /// Writes variable-length opaque data: its length, the bytes, padding.
    pub fn opaque(&mut self, data: &[u8]) -> &mut Self {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.buf.extend_from_slice(&data[..len as usize]);
        self.pad(len as usize);
        self
    }

    /// Writes a string (same encoding as opaque data).
    pub fn string(&mut self, s: &[u8]) -> &mut Self {
        self.opaque(s)
    }

    /// Appends `n` zero bytes of padding to reach the 4-byte boundary after
    /// an item of `len` bytes.
    fn pad(&mut self, len: usize) {
        let pad = (4 - len % 4) % 4;
        self.buf.extend_from_slice(&[0u8; 3][..pad]);
    }

    /// Reserves `len` bytes (plus XDR padding) of opaque data preceded by its
    /// length, and returns the slice to fill; lets READ write file data
    /// straight into the reply buffer.
    pub fn opaque_in_place(&mut self, len: usize) -> &mut [u8] {
        let len32 = u32::try_from(len).unwrap_or(u32::MAX);
        self.u32(len32);
        let start = self.buf.len();
        let padded = (len32 as usize).div_ceil(4) * 4;
        self.buf.resize(start + padded, 0);
        &mut self.buf[start..start + len32 as usize]
    }

    /// Shrinks opaque data written by [`Encoder::opaque_in_place`] at
    /// `len_at` (the offset of its length word) to `actual` bytes, when a
    /// read returned less than was reserved.
    pub fn shrink_opaque(&mut self, len_at: usize, actual: usize) {
        let actual32 = u32::try_from(actual).unwrap_or(u32::MAX);
        self.patch_u32(len_at, actual32);
        let end = len_at + 4 + (actual32 as usize).div_ceil(4) * 4;
        // Zero the padding, which may hold stale bytes of the larger read.
        let data_end = len_at + 4 + actual32 as usize;
        if let Some(pad) = self.buf.get_mut(data_end..end) {
            pad.fill(0);
        }
        self.buf.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn opaque_is_padded_and_bounded() {
        let mut e = Encoder::default();
        e.opaque(b"abcde");
        assert_eq!(
            e.as_slice(),
            &[0, 0, 0, 5, b'a', b'b', b'c', b'd', b'e', 0, 0, 0]
        );
        let mut d = Decoder::new(e.as_slice());
        assert_eq!(
            d.clone().opaque(4),
            Err(XdrError::TooLong { len: 5, max: 4 })
        );
        assert_eq!(d.opaque(5).ok(), Some(&b"abcde"[..]));
        assert_eq!(d.remaining(), 0);
    }

    #[test]
    fn huge_length_is_truncation_not_allocation() {
        let buf = [0xff, 0xff, 0xff, 0xfc];
        let mut d = Decoder::new(&buf);
        assert!(matches!(
            d.opaque(u32::MAX),
            Err(XdrError::Truncated { .. })
        ));
        let mut d = Decoder::new(&buf);
        assert!(matches!(
            d.array_len(u32::MAX, 4),
            Err(XdrError::Truncated { .. })
        ));
    }

    #[test]
    fn bool_rejects_other_values() {
        let mut d = Decoder::new(&[0, 0, 0, 2]);
        assert_eq!(d.bool(), Err(XdrError::BadDiscriminant(2)));
    }

    #[test]
    fn in_place_opaque_shrinks() {
        let mut e = Encoder::default();
        let at = e.len();
        e.opaque_in_place(10).copy_from_slice(b"0123456789");
        e.shrink_opaque(at, 3);
        assert_eq!(e.as_slice(), &[0, 0, 0, 3, b'0', b'1', b'2', 0]);
    }

    proptest! {
        #[test]
        fn roundtrip(a in any::<u32>(), b in any::<u64>(), c in any::<bool>(),
                     data in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut e = Encoder::default();
            e.u32(a).u64(b).bool(c).opaque(&data).i32(a as i32);
            prop_assert_eq!(e.len() % 4, 0);
            let mut d = Decoder::new(e.as_slice());
            prop_assert_eq!(d.u32().ok(), Some(a));
            prop_assert_eq!(d.u64().ok(), Some(b));
            prop_assert_eq!(d.bool().ok(), Some(c));
            prop_assert_eq!(d.opaque(100).ok(), Some(&data[..]));
            prop_assert_eq!(d.i32().ok(), Some(a as i32));
            prop_assert_eq!(d.remaining(), 0);
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), max in any::<u32>()) {
            let mut d = Decoder::new(&bytes);
            while d.remaining() > 0 {
                if d.opaque(max).is_err() && d.u32().is_err() { break; }
            }
        }

        #[test]
        fn truncated_input_errors(data in proptest::collection::vec(any::<u8>(), 1..40), cut in 1usize..4) {
            let mut e = Encoder::default();
            e.opaque(&data);
            let bytes = e.as_slice();
            let mut d = Decoder::new(&bytes[..bytes.len() - cut]);
            prop_assert!(d.opaque(64).is_err());
        }
    }
}
