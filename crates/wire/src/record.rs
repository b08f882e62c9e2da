//! RPC record marking over a byte stream (RFC 5531 §11).
//!
//! A record is one or more fragments, each preceded by a 4-byte mark whose
//! top bit says "last fragment" and whose low 31 bits give the fragment's
//! length. Linux sends each call as one fragment, but a server must join
//! several, and a hostile client can send an endless run of small fragments
//! or one mark claiming 2 GiB. [`RecordAssembler`] caps the *total* record
//! size, not each fragment, and says how many bytes to read next so that the
//! caller can grow its buffer only as data actually arrives.

use thiserror::Error;

/// The top bit of a record mark: this fragment ends the record.
pub const LAST_FRAGMENT: u32 = 0x8000_0000;

/// Why a stream of fragments is not a valid record.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The record would be larger than the configured maximum.
    #[error("RPC record of at least {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Size the record would reach.
        size: u64,
        /// The limit.
        max: u32,
    },
    /// A record ended with nothing in it.
    #[error("empty RPC record")]
    Empty,
}

/// One fragment header, decoded and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// Bytes of payload that follow the mark.
    pub len: u32,
    /// Whether this fragment completes the record.
    pub last: bool,
}

/// Tracks the fragments of the record being received.
#[derive(Debug, Clone)]
pub struct RecordAssembler {
    max: u32,
    total: u64,
}

impl RecordAssembler {
    /// An assembler that refuses records larger than `max` bytes.
    pub fn new(max: u32) -> Self {
        RecordAssembler { max, total: 0 }
    }

    /// The configured maximum record size.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Accepts the next 4-byte fragment mark. On success the caller reads
    /// exactly `len` payload bytes; when `last` is set the record is
    /// complete and the assembler is ready for the next one.
    pub fn fragment(&mut self, mark: [u8; 4]) -> Result<Fragment, RecordError> {
        let raw = u32::from_be_bytes(mark);
        let last = raw & LAST_FRAGMENT != 0;
        let len = raw & !LAST_FRAGMENT;
        // A fragment that continues the record counts its mark too, so that
        // an endless run of empty fragments reaches the limit like any
        // other stream that never ends its record.
        let total = self.total + u64::from(len) + if last { 0 } else { 4 };
        if total > u64::from(self.max) {
            return Err(RecordError::TooLarge {
                size: total,
                max: self.max,
            });
        }
        if last {
            self.total = 0;
            if total == 0 {
                return Err(RecordError::Empty);
            }
        } else {
            self.total = total;
        }
        Ok(Fragment { len, last })
    }
}

/// The record mark for a single-fragment record of `len` bytes.
pub fn mark(len: u32) -> [u8; 4] {
    (len | LAST_FRAGMENT).to_be_bytes()
}

/// Splits a buffer holding whole records into their payloads, joining
/// fragments; stops at the first error or at an incomplete record, which is
/// returned as `Ok(None)`. Used by tests and fuzzing, where the whole stream
/// is in memory; the server drives [`RecordAssembler`] directly.
pub fn next_record(
    asm: &mut RecordAssembler,
    input: &mut &[u8],
) -> Result<Option<Vec<u8>>, RecordError> {
    let mut out = Vec::new();
    loop {
        let Some((mark, rest)) = input.split_first_chunk::<4>() else {
            return Ok(None);
        };
        let frag = asm.fragment(*mark)?;
        let len = frag.len as usize;
        if rest.len() < len {
            return Ok(None);
        }
        out.extend_from_slice(&rest[..len]);
        *input = &rest[len..];
        if frag.last {
            return Ok(Some(out));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_fragments() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&3u32.to_be_bytes());
        stream.extend_from_slice(b"abc");
        stream.extend_from_slice(&mark(2));
        stream.extend_from_slice(b"de");
        let mut asm = RecordAssembler::new(100);
        let mut input = &stream[..];
        assert_eq!(
            next_record(&mut asm, &mut input),
            Ok(Some(b"abcde".to_vec()))
        );
        assert!(input.is_empty());
    }

    #[test]
    fn huge_mark_is_refused_before_reading() {
        let mut asm = RecordAssembler::new(1 << 20);
        assert!(matches!(
            asm.fragment(0xffff_fff0u32.to_be_bytes()),
            Err(RecordError::TooLarge { .. })
        ));
    }

    #[test]
    fn many_small_fragments_hit_total_cap() {
        // Each continuing fragment costs its 4 payload bytes and its mark.
        let mut asm = RecordAssembler::new(20);
        for _ in 0..2 {
            assert!(asm.fragment(4u32.to_be_bytes()).is_ok());
        }
        assert!(asm.fragment(4u32.to_be_bytes()).is_err());
    }

    #[test]
    fn endless_empty_fragments_hit_the_cap() {
        let mut asm = RecordAssembler::new(1 << 10);
        let refused = (0..1000).find(|_| asm.fragment(0u32.to_be_bytes()).is_err());
        assert_eq!(refused, Some(256));
        // A last fragment may still fill the record to exactly the cap.
        let mut asm = RecordAssembler::new(8);
        assert!(asm.fragment(0u32.to_be_bytes()).is_ok());
        assert!(asm.fragment(mark(4)).is_ok());
    }

    #[test]
    fn empty_record_is_an_error() {
        let mut asm = RecordAssembler::new(10);
        assert_eq!(asm.fragment(mark(0)), Err(RecordError::Empty));
    }
}
