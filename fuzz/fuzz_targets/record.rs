//! Record marking: any byte stream, any record limit. Reassembly must never
//! panic, never return a record over the limit, and never return more bytes
//! than the stream held.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmshare_wire::record::{next_record, RecordAssembler};

fuzz_target!(|data: &[u8]| {
    let Some((limit, stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let max = u32::from(u16::from_be_bytes(*limit));
    let mut asm = RecordAssembler::new(max);
    let mut input = stream;
    let mut total = 0usize;
    while let Ok(Some(record)) = next_record(&mut asm, &mut input) {
        assert!(record.len() <= max as usize);
        total += record.len();
        assert!(total <= stream.len());
    }
});
