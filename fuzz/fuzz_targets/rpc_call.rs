//! RPC call headers: any record. A parsed call must re-encode to the same
//! header fields; nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmshare_wire::rpc::{encode_call, parse_call, parse_reply};
use vmshare_wire::Encoder;

fuzz_target!(|data: &[u8]| {
    let _ = parse_reply(data);
    let Ok(call) = parse_call(data) else { return };
    let mut e = Encoder::default();
    encode_call(
        &mut e, call.xid, call.prog, call.vers, call.proc_, &call.cred,
    );
    e.fixed(call.args);
    let again = parse_call(e.as_slice()).expect("a re-encoded call parses");
    assert_eq!(
        (again.xid, again.prog, again.vers, again.proc_),
        (call.xid, call.prog, call.vers, call.proc_)
    );
    assert_eq!(again.cred, call.cred);
});
