//! NFSv3 data types (RFC 1813 §2.5–2.6) and their XDR codecs.
//!
//! Decoders bound every variable-length item: handles by [`FHSIZE`], names
//! by [`MAX_NAME_WIRE`] (longer than any real name so that the backend can
//! answer NAMETOOLONG rather than GARBAGE_ARGS), paths by [`MAX_PATH_WIRE`].

use vmshare_wire::{Decoder, Encoder, XdrError};

/// NFSv3's largest file handle (`NFS3_FHSIZE`).
pub const FHSIZE: usize = 64;
/// Longest name accepted off the wire; the backend refuses names over 255
/// bytes with NAMETOOLONG.
pub const MAX_NAME_WIRE: u32 = 1024;
/// Longest symlink target accepted off the wire (Linux `PATH_MAX`).
pub const MAX_PATH_WIRE: u32 = 4096;
/// Size of a cookie verifier, write verifier and create verifier.
pub const VERIFIER_SIZE: usize = 8;

/// An 8-byte verifier.
pub type Verifier = [u8; VERIFIER_SIZE];

/// NFSv3 status codes (`nfsstat3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
#[repr(u32)]
pub enum NfsStat {
    Ok = 0,
    Perm = 1,
    NoEnt = 2,
    Io = 5,
    NxIo = 6,
    Acces = 13,
    Exist = 17,
    XDev = 18,
    NoDev = 19,
    NotDir = 20,
    IsDir = 21,
    Inval = 22,
    FBig = 27,
    NoSpc = 28,
    RoFs = 30,
    MLink = 31,
    NameTooLong = 63,
    NotEmpty = 66,
    DQuot = 69,
    Stale = 70,
    Remote = 71,
    BadHandle = 10001,
    NotSync = 10002,
    BadCookie = 10003,
    NotSupp = 10004,
    TooSmall = 10005,
    ServerFault = 10006,
    BadType = 10007,
    Jukebox = 10008,
}

/// File types (`ftype3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
#[repr(u32)]
pub enum FileType {
    Reg = 1,
    Dir = 2,
    Blk = 3,
    Chr = 4,
    Lnk = 5,
    Sock = 6,
    Fifo = 7,
}

impl FileType {
    fn from_u32(v: u32) -> Result<Self, XdrError> {
        Ok(match v {
            1 => FileType::Reg,
            2 => FileType::Dir,
            3 => FileType::Blk,
            4 => FileType::Chr,
            5 => FileType::Lnk,
            6 => FileType::Sock,
            7 => FileType::Fifo,
            _ => return Err(XdrError::BadDiscriminant(v)),
        })
    }
}

/// A file handle: at most 64 opaque bytes, kept inline so that building
/// one never allocates.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileHandle {
    len: u8,
    bytes: [u8; FHSIZE],
}

impl std::fmt::Debug for FileHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileHandle(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

impl FileHandle {
    /// A handle holding `bytes`; `None` if longer than 64 bytes.
    pub fn new(bytes: &[u8]) -> Option<FileHandle> {
        if bytes.len() > FHSIZE {
            return None;
        }
        let mut fh = FileHandle {
            len: 0,
            bytes: [0; FHSIZE],
        };
        fh.bytes[..bytes.len()].copy_from_slice(bytes);
        fh.len = u8::try_from(bytes.len()).ok()?;
        Some(fh)
    }

    /// The handle's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub(crate) fn decode(d: &mut Decoder<'_>) -> Result<FileHandle, XdrError> {
        #[allow(clippy::cast_possible_truncation, reason = "FHSIZE is 64")]
        const MAX: u32 = FHSIZE as u32;
        let b = d.opaque(MAX)?;
        FileHandle::new(b).ok_or(XdrError::TooLong {
            len: u32::try_from(b.len()).unwrap_or(u32::MAX),
            max: MAX,
        })
    }

    pub(crate) fn encode(&self, e: &mut Encoder) {
        e.opaque(self.as_bytes());
    }
}

/// A time (`nfstime3`): seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NfsTime {
    /// Seconds.
    pub seconds: u32,
    /// Nanoseconds, below 10⁹.
    pub nseconds: u32,
}

impl NfsTime {
    fn decode(d: &mut Decoder<'_>) -> Result<NfsTime, XdrError> {
        Ok(NfsTime {
            seconds: d.u32()?,
            nseconds: d.u32()?,
        })
    }
    fn encode(&self, e: &mut Encoder) {
        e.u32(self.seconds).u32(self.nseconds);
    }
}

/// File attributes (`fattr3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Fattr {
    pub ftype: FileType,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub used: u64,
    /// Device numbers (major, minor) for block and character devices.
    pub rdev: (u32, u32),
    pub fsid: u64,
    pub fileid: u64,
    pub atime: NfsTime,
    pub mtime: NfsTime,
    pub ctime: NfsTime,
}

/// Encoded size of [`Fattr`].
pub const FATTR_SIZE: usize = 84;

impl Fattr {
    /// Encodes the attributes.
    pub fn encode(&self, e: &mut Encoder) {
        e.u32(self.ftype as u32)
            .u32(self.mode)
            .u32(self.nlink)
            .u32(self.uid)
            .u32(self.gid);
        e.u64(self.size)
            .u64(self.used)
            .u32(self.rdev.0)
            .u32(self.rdev.1);
        e.u64(self.fsid).u64(self.fileid);
        self.atime.encode(e);
        self.mtime.encode(e);
        self.ctime.encode(e);
    }

    /// Decodes attributes (for clients and tests).
    pub fn decode(d: &mut Decoder<'_>) -> Result<Fattr, XdrError> {
        Ok(Fattr {
            ftype: FileType::from_u32(d.u32()?)?,
            mode: d.u32()?,
            nlink: d.u32()?,
            uid: d.u32()?,
            gid: d.u32()?,
            size: d.u64()?,
            used: d.u64()?,
            rdev: (d.u32()?, d.u32()?),
            fsid: d.u64()?,
            fileid: d.u64()?,
            atime: NfsTime::decode(d)?,
            mtime: NfsTime::decode(d)?,
            ctime: NfsTime::decode(d)?,
        })
    }

    /// The subset kept as pre-operation attributes.
    pub fn wcc(&self) -> WccAttr {
        WccAttr {
            size: self.size,
            mtime: self.mtime,
            ctime: self.ctime,
        }
    }
}

/// Pre-operation attributes (`wcc_attr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct WccAttr {
    pub size: u64,
    pub mtime: NfsTime,
    pub ctime: NfsTime,
}

/// Weak cache consistency data (`wcc_data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WccData {
    /// Attributes just before the operation, if taken.
    pub before: Option<WccAttr>,
    /// Attributes just after.
    pub after: Option<Fattr>,
}

/// `post_op_attr`.
pub type PostOpAttr = Option<Fattr>;

/// How to set a time in SETATTR (`set_atime`/`set_mtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetTime {
    /// Leave it.
    #[default]
    DontChange,
    /// Set to the server's current time.
    ServerTime,
    /// Set to this time.
    ClientTime(NfsTime),
}

/// Attributes to set (`sattr3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct Sattr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: SetTime,
    pub mtime: SetTime,
}

impl Sattr {
    fn decode(d: &mut Decoder<'_>) -> Result<Sattr, XdrError> {
        let mode = d.optional(|d| d.u32())?;
        let uid = d.optional(|d| d.u32())?;
        let gid = d.optional(|d| d.u32())?;
        let size = d.optional(|d| d.u64())?;
        let time = |d: &mut Decoder<'_>| -> Result<SetTime, XdrError> {
            Ok(match d.u32()? {
                0 => SetTime::DontChange,
                1 => SetTime::ServerTime,
                2 => SetTime::ClientTime(NfsTime::decode(d)?),
                v => return Err(XdrError::BadDiscriminant(v)),
            })
        };
        let atime = time(d)?;
        let mtime = time(d)?;
        Ok(Sattr {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        })
    }

    /// Encodes (for clients and tests).
    pub fn encode(&self, e: &mut Encoder) {
        let opt32 = |e: &mut Encoder, v: Option<u32>| match v {
            Some(v) => {
                e.bool(true).u32(v);
            }
            None => {
                e.bool(false);
            }
        };
        opt32(e, self.mode);
        opt32(e, self.uid);
        opt32(e, self.gid);
        match self.size {
            Some(s) => e.bool(true).u64(s),
            None => e.bool(false),
        };
        for t in [self.atime, self.mtime] {
            match t {
                SetTime::DontChange => {
                    e.u32(0);
                }
                SetTime::ServerTime => {
                    e.u32(1);
                }
                SetTime::ClientTime(t) => {
                    e.u32(2);
                    t.encode(e);
                }
            }
        }
    }
}

/// A directory and a name in it (`diropargs3`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DirOpArgs<'a> {
    /// The directory.
    pub dir: FileHandle,
    /// The name: raw bytes, not necessarily UTF-8, not yet validated.
    pub name: &'a [u8],
}

/// The name as text (bytes that are not UTF-8 escaped), so that a debug
/// log reads `name: "a.txt"`, not a list of byte values.
impl std::fmt::Debug for DirOpArgs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirOpArgs")
            .field("dir", &self.dir)
            .field("name", &self.name.escape_ascii().to_string())
            .finish()
    }
}

impl<'a> DirOpArgs<'a> {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, XdrError> {
        Ok(DirOpArgs {
            dir: FileHandle::decode(d)?,
            name: d.string(MAX_NAME_WIRE)?,
        })
    }
}

/// Write stability (`stable_how`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[allow(missing_docs)]
#[repr(u32)]
pub enum StableHow {
    Unstable = 0,
    DataSync = 1,
    FileSync = 2,
}

/// How to create a file (`createhow3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateHow {
    /// Create, or truncate/open an existing file (then apply attrs).
    Unchecked(Sattr),
    /// Fail with EXIST if it exists.
    Guarded(Sattr),
    /// Exclusive create, idempotent for retransmissions with this verifier.
    Exclusive(Verifier),
}

/// What MKNOD makes (`mknoddata3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MknodKind {
    /// Character device (major, minor).
    Chr(Sattr, (u32, u32)),
    /// Block device (major, minor).
    Blk(Sattr, (u32, u32)),
    /// Unix socket.
    Sock(Sattr),
    /// Named pipe.
    Fifo(Sattr),
    /// A type MKNOD does not make: a regular file, directory or link, or
    /// no `ftype3` at all. The union's default arm has no body, so the
    /// call decodes and is answered NFS3ERR_BADTYPE, as knfsd answers.
    Other(u32),
}

/// Bits of the ACCESS procedure.
pub mod access {
    /// Read data / list directory.
    pub const READ: u32 = 0x01;
    /// Look up names in a directory.
    pub const LOOKUP: u32 = 0x02;
    /// Modify file data.
    pub const MODIFY: u32 = 0x04;
    /// Extend a file / add entries.
    pub const EXTEND: u32 = 0x08;
    /// Delete directory entries.
    pub const DELETE: u32 = 0x10;
    /// Execute a file.
    pub const EXECUTE: u32 = 0x20;
}

/// Decoded arguments of every NFSv3 procedure.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Nfs3Call<'a> {
    Null,
    Getattr(FileHandle),
    Setattr {
        fh: FileHandle,
        attrs: Sattr,
        guard: Option<NfsTime>,
    },
    Lookup(DirOpArgs<'a>),
    Access {
        fh: FileHandle,
        access: u32,
    },
    Readlink(FileHandle),
    Read {
        fh: FileHandle,
        offset: u64,
        count: u32,
    },
    Write {
        fh: FileHandle,
        offset: u64,
        stable: StableHow,
        data: &'a [u8],
    },
    Create {
        at: DirOpArgs<'a>,
        how: CreateHow,
    },
    Mkdir {
        at: DirOpArgs<'a>,
        attrs: Sattr,
    },
    Symlink {
        at: DirOpArgs<'a>,
        attrs: Sattr,
        target: &'a [u8],
    },
    Mknod {
        at: DirOpArgs<'a>,
        kind: MknodKind,
    },
    Remove(DirOpArgs<'a>),
    Rmdir(DirOpArgs<'a>),
    Rename {
        from: DirOpArgs<'a>,
        to: DirOpArgs<'a>,
    },
    Link {
        fh: FileHandle,
        at: DirOpArgs<'a>,
    },
    Readdir {
        dir: FileHandle,
        cookie: u64,
        verf: Verifier,
        count: u32,
    },
    Readdirplus {
        dir: FileHandle,
        cookie: u64,
        verf: Verifier,
        dircount: u32,
        maxcount: u32,
    },
    Fsstat(FileHandle),
    Fsinfo(FileHandle),
    Pathconf(FileHandle),
    Commit {
        fh: FileHandle,
        offset: u64,
        count: u32,
    },
}

/// Why arguments could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The procedure number is not defined in NFSv3.
    NoSuchProcedure(u32),
    /// The arguments are malformed.
    Garbage(XdrError),
}

impl From<XdrError> for DecodeError {
    fn from(e: XdrError) -> Self {
        DecodeError::Garbage(e)
    }
}

/// Decodes the arguments of NFSv3 procedure `proc_`. Trailing bytes are
/// tolerated, as other servers do.
pub fn decode_call(proc_: u32, args: &[u8]) -> Result<Nfs3Call<'_>, DecodeError> {
    let d = &mut Decoder::new(args);
    let fh = |d: &mut Decoder<'_>| FileHandle::decode(d);
    Ok(match proc_ {
        0 => Nfs3Call::Null,
        1 => Nfs3Call::Getattr(fh(d)?),
        2 => Nfs3Call::Setattr {
            fh: fh(d)?,
            attrs: Sattr::decode(d)?,
            guard: d.optional(NfsTime::decode)?,
        },
        3 => Nfs3Call::Lookup(DirOpArgs::decode(d)?),
        4 => Nfs3Call::Access {
            fh: fh(d)?,
            access: d.u32()?,
        },
        5 => Nfs3Call::Readlink(fh(d)?),
        6 => Nfs3Call::Read {
            fh: fh(d)?,
            offset: d.u64()?,
            count: d.u32()?,
        },
        7 => {
            let fh = fh(d)?;
            let offset = d.u64()?;
            let count = d.u32()?;
            let stable = match d.u32()? {
                0 => StableHow::Unstable,
                1 => StableHow::DataSync,
                2 => StableHow::FileSync,
                v => return Err(XdrError::BadDiscriminant(v).into()),
            };
            // The opaque is bounded by the record that holds it; a count
            // that disagrees with the data is malformed (RFC 1813 §3.3.7).
            let data = d.opaque(u32::MAX)?;
            if data.len() != count as usize {
                return Err(XdrError::BadDiscriminant(count).into());
            }
            Nfs3Call::Write {
                fh,
                offset,
                stable,
                data,
            }
        }
        8 => {
            let at = DirOpArgs::decode(d)?;
            let how = match d.u32()? {
                0 => CreateHow::Unchecked(Sattr::decode(d)?),
                1 => CreateHow::Guarded(Sattr::decode(d)?),
                2 => CreateHow::Exclusive(d.fixed::<VERIFIER_SIZE>()?),
                v => return Err(XdrError::BadDiscriminant(v).into()),
            };
            Nfs3Call::Create { at, how }
        }
        9 => Nfs3Call::Mkdir {
            at: DirOpArgs::decode(d)?,
            attrs: Sattr::decode(d)?,
        },
        10 => Nfs3Call::Symlink {
            at: DirOpArgs::decode(d)?,
            attrs: Sattr::decode(d)?,
            target: d.string(MAX_PATH_WIRE)?,
        },
        11 => {
            let at = DirOpArgs::decode(d)?;
            let raw = d.u32()?;
            let kind = match FileType::from_u32(raw) {
                Ok(FileType::Chr) => MknodKind::Chr(Sattr::decode(d)?, (d.u32()?, d.u32()?)),
                Ok(FileType::Blk) => MknodKind::Blk(Sattr::decode(d)?, (d.u32()?, d.u32()?)),
                Ok(FileType::Sock) => MknodKind::Sock(Sattr::decode(d)?),
                Ok(FileType::Fifo) => MknodKind::Fifo(Sattr::decode(d)?),
                _ => MknodKind::Other(raw),
            };
            Nfs3Call::Mknod { at, kind }
        }
        12 => Nfs3Call::Remove(DirOpArgs::decode(d)?),
        13 => Nfs3Call::Rmdir(DirOpArgs::decode(d)?),
        14 => Nfs3Call::Rename {
            from: DirOpArgs::decode(d)?,
            to: DirOpArgs::decode(d)?,
        },
        15 => Nfs3Call::Link {
            fh: fh(d)?,
            at: DirOpArgs::decode(d)?,
        },
        16 => Nfs3Call::Readdir {
            dir: fh(d)?,
            cookie: d.u64()?,
            verf: d.fixed::<VERIFIER_SIZE>()?,
            count: d.u32()?,
        },
        17 => Nfs3Call::Readdirplus {
            dir: fh(d)?,
            cookie: d.u64()?,
            verf: d.fixed::<VERIFIER_SIZE>()?,
            dircount: d.u32()?,
            maxcount: d.u32()?,
        },
        18 => Nfs3Call::Fsstat(fh(d)?),
        19 => Nfs3Call::Fsinfo(fh(d)?),
        20 => Nfs3Call::Pathconf(fh(d)?),
        21 => Nfs3Call::Commit {
            fh: fh(d)?,
            offset: d.u64()?,
            count: d.u32()?,
        },
        p => return Err(DecodeError::NoSuchProcedure(p)),
    })
}

/// Encodes `post_op_attr`.
pub fn encode_post_op(e: &mut Encoder, a: &PostOpAttr) {
    match a {
        Some(a) => {
            e.bool(true);
            a.encode(e);
        }
        None => {
            e.bool(false);
        }
    }
}

/// Encodes `wcc_data`.
pub fn encode_wcc(e: &mut Encoder, w: &WccData) {
    match &w.before {
        Some(b) => {
            e.bool(true).u64(b.size);
            b.mtime.encode(e);
            b.ctime.encode(e);
        }
        None => {
            e.bool(false);
        }
    }
    encode_post_op(e, &w.after);
}

/// Encodes `post_op_fh3`.
pub fn encode_post_op_fh(e: &mut Encoder, fh: &Option<FileHandle>) {
    match fh {
        Some(fh) => {
            e.bool(true);
            fh.encode(e);
        }
        None => {
            e.bool(false);
        }
    }
}

/// Encodes the arguments of a call (for clients, tests and benchmarks).
pub fn encode_call(e: &mut Encoder, call: &Nfs3Call<'_>) {
    let dirop = |e: &mut Encoder, a: &DirOpArgs<'_>| {
        a.dir.encode(e);
        e.string(a.name);
    };
    match call {
        Nfs3Call::Null => {}
        Nfs3Call::Getattr(fh)
        | Nfs3Call::Readlink(fh)
        | Nfs3Call::Fsstat(fh)
        | Nfs3Call::Fsinfo(fh)
        | Nfs3Call::Pathconf(fh) => fh.encode(e),
        Nfs3Call::Setattr { fh, attrs, guard } => {
            fh.encode(e);
            attrs.encode(e);
            match guard {
                Some(t) => {
                    e.bool(true);
                    t.encode(e);
                }
                None => {
                    e.bool(false);
                }
            }
        }
        Nfs3Call::Lookup(a) | Nfs3Call::Remove(a) | Nfs3Call::Rmdir(a) => dirop(e, a),
        Nfs3Call::Access { fh, access } => {
            fh.encode(e);
            e.u32(*access);
        }
        Nfs3Call::Read { fh, offset, count } | Nfs3Call::Commit { fh, offset, count } => {
            fh.encode(e);
            e.u64(*offset).u32(*count);
        }
        Nfs3Call::Write {
            fh,
            offset,
            stable,
            data,
        } => {
            fh.encode(e);
            e.u64(*offset)
                .u32(u32::try_from(data.len()).unwrap_or(u32::MAX))
                .u32(*stable as u32)
                .opaque(data);
        }
        Nfs3Call::Create { at, how } => {
            dirop(e, at);
            match how {
                CreateHow::Unchecked(s) => {
                    e.u32(0);
                    s.encode(e);
                }
                CreateHow::Guarded(s) => {
                    e.u32(1);
                    s.encode(e);
                }
                CreateHow::Exclusive(v) => {
                    e.u32(2).fixed(v);
                }
            }
        }
        Nfs3Call::Mkdir { at, attrs } => {
            dirop(e, at);
            attrs.encode(e);
        }
        Nfs3Call::Symlink { at, attrs, target } => {
            dirop(e, at);
            attrs.encode(e);
            e.string(target);
        }
        Nfs3Call::Mknod { at, kind } => {
            dirop(e, at);
            match kind {
                MknodKind::Chr(s, (a, b)) => {
                    e.u32(FileType::Chr as u32);
                    s.encode(e);
                    e.u32(*a).u32(*b);
                }
                MknodKind::Blk(s, (a, b)) => {
                    e.u32(FileType::Blk as u32);
                    s.encode(e);
                    e.u32(*a).u32(*b);
                }
                MknodKind::Sock(s) => {
                    e.u32(FileType::Sock as u32);
                    s.encode(e);
                }
                MknodKind::Fifo(s) => {
                    e.u32(FileType::Fifo as u32);
                    s.encode(e);
                }
                MknodKind::Other(t) => {
                    e.u32(*t);
                }
            }
        }
        Nfs3Call::Rename { from, to } => {
            dirop(e, from);
            dirop(e, to);
        }
        Nfs3Call::Link { fh, at } => {
            fh.encode(e);
            dirop(e, at);
        }
        Nfs3Call::Readdir {
            dir,
            cookie,
            verf,
            count,
        } => {
            dir.encode(e);
            e.u64(*cookie).fixed(verf).u32(*count);
        }
        Nfs3Call::Readdirplus {
            dir,
            cookie,
            verf,
            dircount,
            maxcount,
        } => {
            dir.encode(e);
            e.u64(*cookie).fixed(verf).u32(*dircount).u32(*maxcount);
        }
    }
}

/// The procedure number of a call.
pub fn procedure_number(call: &Nfs3Call<'_>) -> u32 {
    match call {
        Nfs3Call::Null => 0,
        Nfs3Call::Getattr(_) => 1,
        Nfs3Call::Setattr { .. } => 2,
        Nfs3Call::Lookup(_) => 3,
        Nfs3Call::Access { .. } => 4,
        Nfs3Call::Readlink(_) => 5,
        Nfs3Call::Read { .. } => 6,
        Nfs3Call::Write { .. } => 7,
        Nfs3Call::Create { .. } => 8,
        Nfs3Call::Mkdir { .. } => 9,
        Nfs3Call::Symlink { .. } => 10,
        Nfs3Call::Mknod { .. } => 11,
        Nfs3Call::Remove(_) => 12,
        Nfs3Call::Rmdir(_) => 13,
        Nfs3Call::Rename { .. } => 14,
        Nfs3Call::Link { .. } => 15,
        Nfs3Call::Readdir { .. } => 16,
        Nfs3Call::Readdirplus { .. } => 17,
        Nfs3Call::Fsstat(_) => 18,
        Nfs3Call::Fsinfo(_) => 19,
        Nfs3Call::Pathconf(_) => 20,
        Nfs3Call::Commit { .. } => 21,
    }
}
