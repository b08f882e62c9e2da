//! Every NFSv3, MOUNT v3, NFSACL v3, portmap v2 and rpcbind v3/v4 argument
//! decoder: the first two bytes pick the program and procedure, the rest
//! are the arguments.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmshare_proto::{fuzz_decode, programs};

fuzz_target!(|data: &[u8]| {
    let Some(([which, proc_], args)) = data.split_first_chunk::<2>() else {
        return;
    };
    let (prog, vers) = match which % 6 {
        0 => (programs::NFS, 3),
        1 => (programs::MOUNT, 3),
        2 => (programs::NFSACL, 3),
        3 => (programs::PORTMAP, 2),
        4 => (programs::PORTMAP, 3),
        _ => (programs::PORTMAP, 4),
    };
    let _ = fuzz_decode(prog, vers, u32::from(*proc_ % 24), args);
});
