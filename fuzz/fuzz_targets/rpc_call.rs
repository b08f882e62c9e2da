//! RPC call headers: any record. A parsed call must re-encode to the same
//! header fields; nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmshare_wire::rpc::{encode_call, parse_call, parse_reply, peek_call};
use vmshare_wire::Encoder;

fuzz_target!(|data: &[u8]| {
    let _ = parse_reply(data);
    let peeked = peek_call(data);
    let Ok(call) = parse_call(data) else { return };
    // The scheduler's peek must see every parsed call as it is.
    assert_eq!(
        peeked.map(|t| (t.prog, t.vers, t.proc_, t.args)),
        Some((call.prog, call.vers, call.proc_, call.args))
    );
    let mut e = Encoder::default();
    encode_call(
        &mut e, call.xid, call.prog, call.vers, call.proc_, &call.cred,
    );
    e.fixed(call.args);
    // A fuzz target reports a bug by panicking: this one fires only if the
    // codec cannot read back what it wrote.
    let again = parse_call(e.as_slice()).expect("a re-encoded call parses");
    assert_eq!(
        (again.xid, again.prog, again.vers, again.proc_),
        (call.xid, call.prog, call.vers, call.proc_)
    );
    assert_eq!(again.cred, call.cred);
});
