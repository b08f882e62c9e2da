//! File handles: stable, tied to one export, and unforgeable.
//!
//! Layout (at most 64 bytes, NFSv3's limit):
//!
//! ```text
//! version(1) export_id(4) dev(4) kernel_type(1) kernel_len(1) kernel_handle(≤40) mac(12)
//! ```
//!
//! The kernel handle (from `name_to_handle_at`) names the inode and its
//! generation, so it survives a server restart and goes stale when the
//! file is deleted — exactly NFS's semantics. The MAC, keyed by a secret
//! kept in the state directory, binds it to the export: a guest cannot
//! make up a handle for a file it never looked up, nor move a handle from
//! one export to another (the export id is under the MAC). `open_by_handle_at`
//! could otherwise open any inode on the filesystem, outside the export.

use std::io::{Read, Write};
use std::path::Path;

use vmshare_proto::nfs3::{FileHandle, FHSIZE};
use vmshare_proto::NfsStat;

use crate::sys::{KernelHandle, MAX_KERNEL_HANDLE};

const VERSION: u8 = 1;
const MAC_LEN: usize = 12;
const HEADER: usize = 1 + 4 + 4 + 1 + 1;
const KEY_FILE: &str = "handle-key";

/// A decoded, authenticated handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Which export it belongs to.
    pub export_id: u32,
    /// Which filesystem inside the export (compressed `st_dev`).
    pub dev: u32,
    /// The kernel's handle.
    pub kernel: KernelHandle,
}

/// Signs and checks handles.
pub struct HandleCodec {
    key: [u8; 32],
}

impl std::fmt::Debug for HandleCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandleCodec { key: <secret> }")
    }
}

/// Refuses a key that someone else could have read or chosen: whoever
/// knows it can forge a handle for any file of any export. It must be
/// this user's, readable by no one else, and whole. These errors are
/// `InvalidData`, and say what to do.
fn check_key_file(f: &std::fs::File, path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let md = f.metadata()?;
    let me = rustix::process::geteuid().as_raw();
    let bad = |problem: String| {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("handle key {}: {problem}", path.display()),
        ))
    };
    if !md.is_file() {
        return bad(
            "not a regular file (remove it: a new key is made at the next start, which makes \
             every handle given out so far stale)"
                .to_string(),
        );
    }
    if md.uid() != me {
        return bad(format!(
            "owned by uid {}, not by this server's uid {me}: whoever made it may know it \
             and forge handles (remove it, or give --state-dir a directory of this user's)",
            md.uid()
        ));
    }
    if md.mode() & 0o077 != 0 {
        return bad(format!(
            "mode {:o} lets others read it and forge handles (chmod 600 it, or remove it \
             to make a new key, which makes every handle given out so far stale)",
            md.mode() & 0o777
        ));
    }
    if md.len() != 32 {
        return bad(format!(
            "{} bytes, not 32: damaged (remove it to make a new key, which makes every \
             handle given out so far stale)",
            md.len()
        ));
    }
    Ok(())
}

/// Refuses a state directory someone else controls: they could not read
/// the key (that is [`check_key_file`]'s), but they could remove or
/// rename it at any time, and every handle given out so far would go
/// stale. Owned by this user (or root) and writable by no one else, as
/// ssh asks of `~/.ssh`. A path that is not a directory gets a plain
/// message rather than "File exists" from the attempt to create it.
fn check_state_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let md = match std::fs::metadata(dir) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let bad = |problem: String| {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("state directory {}: {problem}", dir.display()),
        ))
    };
    if !md.is_dir() {
        return bad("not a directory (give --state-dir a directory)".to_string());
    }
    let me = rustix::process::geteuid().as_raw();
    if md.uid() != me && md.uid() != 0 {
        return bad(format!(
            "owned by uid {}, not by this server's uid {me}: its owner could remove the \
             handle key kept there, which makes every handle given out stale (give \
             --state-dir a directory of this user's)",
            md.uid()
        ));
    }
    if md.mode() & 0o022 != 0 {
        return bad(format!(
            "mode {:o} lets others write in it: they could remove the handle key kept \
             there, which makes every handle given out stale (chmod go-w it, or give \
             --state-dir a directory of this user's)",
            md.mode() & 0o7777
        ));
    }
    Ok(())
}

impl HandleCodec {
    /// A codec with an explicit key (tests).
    pub fn with_key(key: [u8; 32]) -> Self {
        HandleCodec { key }
    }

    /// Loads the key from `state_dir`, creating it (0600, in a 0700
    /// directory) on first use; servers starting together agree on one. Keeping it is what lets handles survive a
    /// restart; deleting it invalidates every handle ever given out.
    pub fn load_or_create(state_dir: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        // Before: a file there gets its own message, not "File exists".
        // After: someone else may have made it in between.
        check_state_dir(state_dir)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)?;
        check_state_dir(state_dir)?;
        let path = state_dir.join(KEY_FILE);
        let mut key = [0u8; 32];
        if std::fs::symlink_metadata(&path).is_err() {
            // Written whole under a name of its own, then linked into
            // place: a key created empty and then written was seen empty
            // (and refused as damaged) by a server starting at the same
            // moment, and a crash in between left it empty for good.
            getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
            let mut nonce = [0u8; 8];
            getrandom::fill(&mut nonce).map_err(|e| std::io::Error::other(e.to_string()))?;
            let tmp = state_dir.join(format!(
                ".{KEY_FILE}.{}.{:016x}",
                std::process::id(),
                u64::from_le_bytes(nonce)
            ));
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .and_then(|mut f| f.write_all(&key).and_then(|()| f.sync_all()))
                .and_then(|()| std::fs::hard_link(&tmp, &path));
            let _ = std::fs::remove_file(&tmp);
            match written {
                Ok(()) => {
                    // The new name made durable with the key.
                    std::fs::File::open(state_dir)?.sync_all()?;
                    return Ok(HandleCodec { key });
                }
                // Another server made it first: use that one.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        let mut f = std::fs::File::open(&path)?;
        check_key_file(&f, &path)?;
        f.read_exact(&mut key)?;
        Ok(HandleCodec { key })
    }

    fn mac(&self, body: &[u8]) -> [u8; MAC_LEN] {
        let h = blake3::keyed_hash(&self.key, body);
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&h.as_bytes()[..MAC_LEN]);
        out
    }

    /// A keyed 64-bit digest of `data`, for values that must be stable and
    /// not guessable (cookie verifiers, fsids).
    pub fn digest64(&self, data: &[u8]) -> u64 {
        let h = blake3::keyed_hash(&self.key, data);
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.as_bytes()[..8]);
        u64::from_be_bytes(b)
    }

    /// Builds the handle for a kernel handle in an export.
    pub fn encode(&self, export_id: u32, dev: u32, k: &KernelHandle) -> Option<FileHandle> {
        let kind = u8::try_from(k.kind).ok()?;
        let klen = u8::try_from(k.len).ok()?;
        if k.len > MAX_KERNEL_HANDLE || HEADER + k.len + MAC_LEN > FHSIZE {
            return None;
        }
        let mut buf = [0u8; FHSIZE];
        buf[0] = VERSION;
        buf[1..5].copy_from_slice(&export_id.to_be_bytes());
        buf[5..9].copy_from_slice(&dev.to_be_bytes());
        buf[9] = kind;
        buf[10] = klen;
        buf[HEADER..HEADER + k.len].copy_from_slice(&k.bytes[..k.len]);
        let body = HEADER + k.len;
        let mac = self.mac(&buf[..body]);
        buf[body..body + MAC_LEN].copy_from_slice(&mac);
        FileHandle::new(&buf[..body + MAC_LEN])
    }

    /// Checks and decodes a handle sent by a client. A malformed one (a
    /// length or version this server never makes) is BADHANDLE. One that
    /// is well-formed but not signed by this key is STALE: most often it
    /// was given out under an earlier key (the state directory was lost
    /// or changed), and STALE is what makes the Linux client look its
    /// names up again, where BADHANDLE reaches programs as errno 521. A
    /// forgery gets the same answer and reaches nothing either way.
    pub fn decode(&self, fh: &FileHandle) -> Result<Decoded, NfsStat> {
        let b = fh.as_bytes();
        if b.len() < HEADER + MAC_LEN || b[0] != VERSION {
            return Err(NfsStat::BadHandle);
        }
        let klen = usize::from(b[10]);
        if klen > MAX_KERNEL_HANDLE || b.len() != HEADER + klen + MAC_LEN {
            return Err(NfsStat::BadHandle);
        }
        let body = HEADER + klen;
        let want = self.mac(&b[..body]);
        // Constant-time comparison: no early exit that would time-leak how
        // many MAC bytes a forgery got right.
        let diff = want
            .iter()
            .zip(&b[body..])
            .fold(0u8, |acc, (x, y)| acc | (x ^ y));
        if diff != 0 {
            return Err(NfsStat::Stale);
        }
        let export_id = u32::from_be_bytes([b[1], b[2], b[3], b[4]]);
        let dev = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
        let mut bytes = [0u8; MAX_KERNEL_HANDLE];
        bytes[..klen].copy_from_slice(&b[HEADER..body]);
        Ok(Decoded {
            export_id,
            dev,
            kernel: KernelHandle {
                kind: i32::from(b[9]),
                len: klen,
                bytes,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kh() -> KernelHandle {
        let mut bytes = [0u8; MAX_KERNEL_HANDLE];
        bytes[..8].copy_from_slice(b"inodegen");
        KernelHandle {
            kind: 1,
            len: 8,
            bytes,
        }
    }

    #[test]
    fn round_trip_and_tamper() {
        let c = HandleCodec::with_key([7; 32]);
        let fh = c.encode(42, 9, &kh()).expect("fits");
        let d = c.decode(&fh).expect("authentic");
        assert_eq!((d.export_id, d.dev, d.kernel), (42, 9, kh()));
        // Flip each byte in turn: every change must be refused.
        for i in 0..fh.as_bytes().len() {
            let mut b = fh.as_bytes().to_vec();
            b[i] ^= 1;
            let forged = FileHandle::new(&b).expect("same length");
            assert!(c.decode(&forged).is_err(), "byte {i}");
        }
        // Another key (another server's state) refuses it too, as stale.
        assert_eq!(
            HandleCodec::with_key([8; 32]).decode(&fh),
            Err(NfsStat::Stale)
        );
    }

    #[test]
    fn short_and_empty_handles_are_bad() {
        let c = HandleCodec::with_key([7; 32]);
        for len in 0..20 {
            let fh = FileHandle::new(&vec![1u8; len]).expect("fits");
            assert_eq!(c.decode(&fh), Err(NfsStat::BadHandle));
        }
    }

    #[test]
    fn key_persists() {
        let dir = std::env::temp_dir().join(format!("vmshare-key-{}", std::process::id()));
        let a = HandleCodec::load_or_create(&dir).expect("create");
        let b = HandleCodec::load_or_create(&dir).expect("load");
        assert_eq!(a.key, b.key);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Servers starting together on a fresh state directory agree on one
    /// key. The key was created empty and then written, and one started
    /// at the same moment found it empty and refused it as damaged (11
    /// starts in 30 in an audit).
    #[test]
    fn servers_starting_together_share_one_key() {
        let top = std::env::temp_dir().join(format!("vmshare-key-race-{}", std::process::id()));
        for round in 0..20 {
            let dir = top.join(round.to_string());
            let go = std::sync::Barrier::new(8);
            let keys: Vec<_> = std::thread::scope(|s| {
                let started: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            go.wait();
                            HandleCodec::load_or_create(&dir).map(|c| c.key)
                        })
                    })
                    .collect();
                started
                    .into_iter()
                    .map(|t| t.join().expect("thread"))
                    .collect()
            });
            let first = keys[0].as_ref().expect("round's first server");
            for k in &keys {
                assert_eq!(
                    k.as_ref().expect("every server starts"),
                    first,
                    "round {round}"
                );
            }
            let names: Vec<_> = std::fs::read_dir(&dir)
                .expect("ls")
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert_eq!(names, [KEY_FILE], "no temporary left behind");
        }
        let _ = std::fs::remove_dir_all(&top);
    }

    /// A key others can read (they could forge handles) or a damaged one
    /// is refused, saying what to do, rather than used.
    #[test]
    fn a_key_others_can_read_or_a_damaged_one_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vmshare-key-bad-{}", std::process::id()));
        HandleCodec::load_or_create(&dir).expect("create");
        let key = dir.join(KEY_FILE);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = HandleCodec::load_or_create(&dir).expect_err("world-readable");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::write(&key, [0u8; 5]).expect("write");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let e = HandleCodec::load_or_create(&dir).expect_err("short");
        assert!(e.to_string().contains("5 bytes, not 32"), "{e}");
        std::fs::remove_file(&key).expect("rm");
        std::fs::create_dir(&key).expect("mkdir");
        let e = HandleCodec::load_or_create(&dir).expect_err("a directory");
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A state directory others may write in (they could remove the key
    /// and make every handle stale), or a path that is not a directory,
    /// is refused with what to do; the key is not made there.
    #[test]
    fn a_state_dir_others_can_write_or_a_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let top = std::env::temp_dir().join(format!("vmshare-state-bad-{}", std::process::id()));
        std::fs::create_dir_all(&top).expect("mkdir");
        let shared = top.join("shared");
        std::fs::create_dir(&shared).expect("mkdir");
        for mode in [0o777, 0o1777, 0o770] {
            std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(mode))
                .expect("chmod");
            let e = HandleCodec::load_or_create(&shared).expect_err("writable by others");
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
            assert!(e.to_string().contains("chmod go-w"), "{mode:o}: {e}");
            assert!(!shared.join(KEY_FILE).exists(), "{mode:o}: no key made");
        }
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        HandleCodec::load_or_create(&shared).expect("0755 is this user's alone to write");
        let file = top.join("file");
        std::fs::write(&file, "x").expect("write");
        let e = HandleCodec::load_or_create(&file).expect_err("a file");
        assert!(e.to_string().contains("not a directory"), "{e}");
        assert_eq!(std::fs::read(&file).expect("read"), b"x");
        let _ = std::fs::remove_dir_all(&top);
    }
}
