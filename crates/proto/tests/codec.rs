#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Round trips of every NFSv3 argument encoding, and decoders fed garbage.

use proptest::prelude::*;
use vmshare_proto::nfs3::*;
use vmshare_wire::Encoder;

fn fh(b: u8) -> FileHandle {
    FileHandle::new(&[b; 24]).expect("24 bytes fit")
}

fn samples() -> Vec<Nfs3Call<'static>> {
    let at = DirOpArgs {
        dir: fh(1),
        name: b"name",
    };
    let attrs = Sattr {
        mode: Some(0o644),
        uid: None,
        gid: Some(5),
        size: Some(1 << 40),
        atime: SetTime::ServerTime,
        mtime: SetTime::ClientTime(NfsTime {
            seconds: 5,
            nseconds: 6,
        }),
    };
    vec![
        Nfs3Call::Null,
        Nfs3Call::Getattr(fh(2)),
        Nfs3Call::Setattr {
            fh: fh(3),
            attrs,
            guard: Some(NfsTime {
                seconds: 1,
                nseconds: 2,
            }),
        },
        Nfs3Call::Lookup(at),
        Nfs3Call::Access {
            fh: fh(4),
            access: 0x3f,
        },
        Nfs3Call::Readlink(fh(5)),
        Nfs3Call::Read {
            fh: fh(6),
            offset: 1 << 33,
            count: 4096,
        },
        Nfs3Call::Write {
            fh: fh(7),
            offset: 9,
            stable: StableHow::DataSync,
            data: b"hello",
        },
        Nfs3Call::Create {
            at,
            how: CreateHow::Unchecked(attrs),
        },
        Nfs3Call::Create {
            at,
            how: CreateHow::Guarded(Sattr::default()),
        },
        Nfs3Call::Create {
            at,
            how: CreateHow::Exclusive(*b"12345678"),
        },
        Nfs3Call::Mkdir { at, attrs },
        Nfs3Call::Symlink {
            at,
            attrs,
            target: b"../x",
        },
        Nfs3Call::Mknod {
            at,
            kind: MknodKind::Chr(attrs, (1, 3)),
        },
        Nfs3Call::Mknod {
            at,
            kind: MknodKind::Fifo(attrs),
        },
        Nfs3Call::Mknod {
            at,
            kind: MknodKind::Other(FileType::Reg as u32),
        },
        Nfs3Call::Mknod {
            at,
            kind: MknodKind::Other(0),
        },
        Nfs3Call::Mknod {
            at,
            kind: MknodKind::Other(8),
        },
        Nfs3Call::Remove(at),
        Nfs3Call::Rmdir(at),
        Nfs3Call::Rename {
            from: at,
            to: DirOpArgs {
                dir: fh(9),
                name: b"other",
            },
        },
        Nfs3Call::Link { fh: fh(8), at },
        Nfs3Call::Readdir {
            dir: fh(1),
            cookie: 77,
            verf: *b"abcdefgh",
            count: 4096,
        },
        Nfs3Call::Readdirplus {
            dir: fh(1),
            cookie: 0,
            verf: [0; 8],
            dircount: 512,
            maxcount: 32768,
        },
        Nfs3Call::Fsstat(fh(1)),
        Nfs3Call::Fsinfo(fh(1)),
        Nfs3Call::Pathconf(fh(1)),
        Nfs3Call::Commit {
            fh: fh(1),
            offset: 0,
            count: 0,
        },
    ]
}

#[test]
fn every_procedure_round_trips() {
    for call in samples() {
        let mut e = Encoder::default();
        encode_call(&mut e, &call);
        let p = procedure_number(&call);
        let back = decode_call(p, e.as_slice()).unwrap_or_else(|err| panic!("{call:?}: {err:?}"));
        assert_eq!(back, call);
        // Every strict prefix that cuts into the arguments must fail, not
        // panic or succeed with made-up values.
        let bytes = e.as_slice();
        for cut in 0..bytes.len() {
            assert!(
                decode_call(p, &bytes[..cut]).is_err(),
                "{call:?} cut at {cut}"
            );
        }
    }
}

#[test]
fn oversized_handle_and_name_are_garbage() {
    let mut e = Encoder::default();
    e.opaque(&[0u8; 65]);
    assert!(decode_call(1, e.as_slice()).is_err());
    let mut e = Encoder::default();
    e.opaque(&[0u8; 8])
        .opaque(&vec![b'a'; MAX_NAME_WIRE as usize + 1]);
    assert!(decode_call(3, e.as_slice()).is_err());
}

#[test]
fn write_count_must_match_data() {
    let mut e = Encoder::default();
    e.opaque(&[1u8; 8]).u64(0).u32(10).u32(0).opaque(b"short");
    assert!(decode_call(7, e.as_slice()).is_err());
}

#[test]
fn unknown_procedure() {
    assert_eq!(decode_call(22, &[]), Err(DecodeError::NoSuchProcedure(22)));
}

proptest! {
    #[test]
    fn decoders_never_panic(proc_ in 0u32..24, bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = vmshare_proto::fuzz_decode(100003, 3, proc_, &bytes);
        let _ = vmshare_proto::fuzz_decode(100005, 3, proc_ % 7, &bytes);
        let _ = vmshare_proto::fuzz_decode(100000, 2, proc_ % 6, &bytes);
    }
}
