#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The backend against a real directory tree: confinement, handles,
//! credentials, exclusive create and directory cookies. Runs as root in CI
//! (identity switching and open_by_handle_at need it).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use vmshare_fs::{ClientMatch, ClientRule, ExportConfig, ExportOptions, FsBackend, Squash};
use vmshare_proto::backend::*;
use vmshare_proto::mount::MountStat;
use vmshare_proto::nfs3::*;
use vmshare_proto::NfsStat;
use vmshare_wire::rpc::{AuthSys, Credential};

struct Tree {
    top: PathBuf,
}

impl Tree {
    fn new(tag: &str) -> Tree {
        let top = std::env::temp_dir().join(format!("vmshare-fs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        std::fs::create_dir_all(top.join("export/sub")).expect("mkdir");
        std::fs::create_dir_all(top.join("other")).expect("mkdir");
        std::fs::create_dir_all(top.join("state")).expect("mkdir");
        std::fs::write(top.join("secret"), "outside").expect("write");
        std::fs::write(top.join("export/file"), "inside").expect("write");
        Tree { top }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.top.join(rel)
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        // The backend leaves this thread acting as its last caller (see
        // `CredGuard`): act as the test's own user again to clean up.
        vmshare_fs::cred::as_server(rustix::process::geteuid().is_root());
        let _ = std::fs::remove_dir_all(&self.top);
    }
}

fn rule(opts: ExportOptions) -> Vec<ClientRule> {
    vec![ClientRule {
        client: ClientMatch::Any,
        options: opts,
    }]
}

fn opts() -> ExportOptions {
    ExportOptions {
        secure: false,
        squash: Squash::None,
        ..ExportOptions::default()
    }
}

/// [`opts`], read-only.
fn read_only() -> ExportOptions {
    ExportOptions {
        writable: false,
        ..opts()
    }
}

fn backend(t: &Tree, o: ExportOptions) -> FsBackend {
    let exports = vec![
        ExportConfig::new(t.p("export"), "/data", rule(o.clone())),
        ExportConfig::new(t.p("other"), "/other", rule(o)),
    ];
    FsBackend::new(exports, &t.p("state")).expect("backend")
}

fn addr() -> SocketAddr {
    "127.0.0.1:700".parse().expect("addr")
}

/// A caller from [`addr`] with `cred`.
fn caller(cred: &Credential) -> Caller<'_> {
    Caller { addr: addr(), cred }
}

/// An AUTH_SYS credential.
fn sys_cred(uid: u32, gid: u32, gids: Vec<u32>) -> Credential {
    Credential::Sys(AuthSys {
        stamp: 0,
        machine_name: b"t".to_vec(),
        uid,
        gid,
        gids,
    })
}

fn root_cred() -> Credential {
    sys_cred(0, 0, vec![])
}

fn user_cred(uid: u32) -> Credential {
    sys_cred(uid, uid, vec![])
}

/// Sets `path`'s permission bits (as the server: a test thread may still
/// act as the backend's last caller).
fn chmod(path: &Path, mode: u32) {
    vmshare_fs::cred::as_server(rustix::process::geteuid().is_root());
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .expect("chmod");
}

/// A file in the export with these contents, owner and mode.
fn owned_file(t: &Tree, rel: &str, contents: &[u8], owner: (u32, u32), mode: u32) -> PathBuf {
    let path = t.p(rel);
    std::fs::write(&path, contents).expect("write");
    std::os::unix::fs::chown(&path, Some(owner.0), Some(owner.1)).expect("chown");
    chmod(&path, mode);
    path
}

/// Whether this test can run: it needs root `to` do something; says so
/// when it is skipped.
fn running_as_root(to: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        eprintln!("skipped: needs root to {to}");
    }
    root
}

/// A backend on `t` with [`opts`], and the root handle of `/data`.
fn served(t: &Tree) -> (FsBackend, FileHandle) {
    let b = backend(t, opts());
    let root = root_fh(&b, &caller(&root_cred()), "/data");
    (b, root)
}

fn root_fh(b: &FsBackend, c: &Caller<'_>, path: &str) -> FileHandle {
    b.mount(c, path.as_bytes()).expect("mount")
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

#[test]
fn names_cannot_escape_the_export() {
    let t = Tree::new("names");
    let b = backend(&t, opts());
    let cred = root_cred();
    let c = caller(&cred);
    let root = root_fh(&b, &c, "/data");
    let how = CreateHow::Unchecked(Sattr {
        mode: Some(0o644),
        ..Sattr::default()
    });
    let abs = format!("/tmp/vmshare-escape-{}", std::process::id());
    for bad in [
        &b"../x"[..],
        abs.as_bytes(),
        b"a/b",
        b"",
        b"x\0y",
        b".",
        b"..",
    ] {
        assert!(
            b.create(&c, &root, bad, &how).is_err(),
            "create {:?}",
            String::from_utf8_lossy(bad)
        );
        assert!(b.mkdir(&c, &root, bad, &Sattr::default()).is_err());
        assert!(b.symlink(&c, &root, bad, &Sattr::default(), b"t").is_err());
    }
    assert!(!exists(&t.p("x")) && !exists(Path::new(&abs)));
    // Long names: NAMETOOLONG, not a crash or truncation.
    let long = vec![b'a'; 256];
    assert_eq!(
        b.create(&c, &root, &long, &how).err().map(|f| f.status),
        Some(NfsStat::NameTooLong)
    );
    // `..` of the export root is the root itself.
    let up = b.lookup(&c, &root, b"..").expect("lookup ..");
    assert_eq!(up.fh, root);
    // Rename can't move anything out either.
    assert!(b.rename(&c, &root, b"file", &root, b"../moved").is_err());
    assert!(exists(&t.p("export/file")));
}

/// A directory the host moves out of the export keeps its handle, but
/// `..` from it is refused: `..` after `..` walked up to the host's `/`,
/// where the client could read /etc/shadow and create files. `..` inside
/// the export still works, from any depth.
#[test]
fn dot_dot_never_leaves_the_export() {
    let t = Tree::new("dotdot");
    std::fs::create_dir_all(t.p("export/sub/deep")).expect("mkdir");
    std::fs::create_dir_all(t.p("export/mv")).expect("mkdir");
    let (b, root) = served(&t);
    let cred = root_cred();
    let c = caller(&cred);
    let sub = b.lookup(&c, &root, b"sub").expect("sub").fh;
    let deep = b.lookup(&c, &sub, b"deep").expect("deep").fh;
    assert_eq!(b.lookup(&c, &deep, b"..").expect("deep/..").fh, sub);
    assert_eq!(b.lookup(&c, &sub, b"..").expect("sub/..").fh, root);
    let mv = b.lookup(&c, &root, b"mv").expect("mv").fh;
    std::fs::rename(t.p("export/mv"), t.p("other/mv")).expect("move out");
    assert!(
        b.getattr(&c, &mv).is_ok(),
        "the moved directory keeps its handle"
    );
    assert_eq!(
        b.lookup(&c, &mv, b"..").err().map(|f| f.status),
        Some(NfsStat::Acces)
    );
    // Moved back in, its parent is the export's again.
    std::fs::rename(t.p("other/mv"), t.p("export/sub/mv")).expect("move in");
    assert_eq!(b.lookup(&c, &mv, b"..").expect("mv/..").fh, sub);
}

/// Without CAP_DAC_READ_SEARCH, a handle whose descriptor the cache let go
/// is opened again where it was found, so objects whose names have not
/// changed stay reachable when the guest touches more than the server
/// keeps open (four times as many; directories longer still): a
/// directory in use and the files in it went STALE once the guest had
/// touched more objects than the server keeps open. A file renamed
/// through the server is found by its new name; one the host renamed
/// behind its back is never mistaken for what has its name now.
#[test]
fn without_handle_opens_evicted_handles_are_found_again_by_name() {
    let t = Tree::new("unprivileged");
    std::fs::create_dir_all(t.p("export/a/b")).expect("mkdir");
    for i in 0..200 {
        std::fs::write(t.p(&format!("export/a/b/f{i}")), format!("{i}")).expect("write");
    }
    let b = backend(&t, opts()).as_if_unprivileged(16);
    let cred = root_cred();
    let c = caller(&cred);
    let root = root_fh(&b, &c, "/data");
    let a = b.lookup(&c, &root, b"a").expect("a").fh;
    let dir = b.lookup(&c, &a, b"b").expect("b").fh;
    let first = b.lookup(&c, &dir, b"f0").expect("f0").fh;
    let moved = b.lookup(&c, &dir, b"f1").expect("f1").fh;
    let host_moved = b.lookup(&c, &dir, b"f2").expect("f2").fh;
    b.rename(&c, &dir, b"f1", &a, b"g1").expect("rename");
    // Three times as many objects as the cache keeps (16).
    let handles: Vec<_> = (3..50)
        .map(|i| {
            b.lookup(&c, &dir, format!("f{i}").as_bytes())
                .expect("lookup")
                .fh
        })
        .collect();
    std::fs::rename(t.p("export/a/b/f2"), t.p("export/a/f2")).expect("host rename");
    std::fs::write(t.p("export/a/b/f2"), "new").expect("another file, same name");
    let read = |fh| {
        let mut buf = [0u8; 16];
        b.read(&c, fh, 0, &mut buf)
            .map(|r| String::from_utf8_lossy(&buf[..r.count as usize]).into_owned())
            .map_err(|f| f.status)
    };
    assert_eq!(read(&first), Ok("0".into()));
    assert_eq!(read(&handles[0]), Ok("3".into()));
    assert_eq!(read(&moved), Ok("1".into()), "renamed through the server");
    assert!(b.getattr(&c, &dir).is_ok() && b.getattr(&c, &a).is_ok());
    // Its name leads to another file now: still kept, it is the file it
    // was; evicted (the cache's choice), it is STALE; never the new one.
    for fh in &handles {
        let _ = b.getattr(&c, fh);
    }
    let got = read(&host_moved);
    assert!(
        got == Ok("2".into()) || got == Err(NfsStat::Stale),
        "{got:?}"
    );
    // Far more files than origins are kept (64): the directories' stay.
    for i in 50..200 {
        b.lookup(&c, &dir, format!("f{i}").as_bytes())
            .expect("lookup in a directory evicted again and again");
    }
    assert!(b.getattr(&c, &dir).is_ok() && b.getattr(&c, &a).is_ok());
}

/// Descriptors of this process open on `path`, which the kernel shows as
/// `PATH (deleted)` once it is removed.
/// Descriptors of this process whose target `pick` chooses.
fn open_where(pick: impl Fn(&Path) -> bool) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| pick(l))
        .count()
}

fn open_on(path: &Path) -> usize {
    let deleted = format!("{} (deleted)", path.display());
    open_where(|l| l.as_os_str() == deleted.as_str())
}

/// A file the host removes is closed by the server's sweep, so that its
/// space is freed: the handle and I/O caches held it open while the
/// server ran, and a full disk stayed full.
#[test]
fn files_removed_on_the_host_are_closed() {
    let t = Tree::new("unlinked");
    let (b, root) = served(&t);
    let cred = root_cred();
    let c = caller(&cred);
    let f = b.lookup(&c, &root, b"file").expect("lookup").fh;
    b.write(&c, &f, 0, StableHow::Unstable, b"data")
        .expect("write");
    let path = t.p("export/file");
    std::fs::remove_file(&path).expect("rm");
    assert!(open_on(&path) > 0, "the caches hold the file");
    b.close_unlinked();
    // Closed on the backend's closer thread.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while open_on(&path) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(open_on(&path), 0);
    assert_eq!(b.getattr(&c, &f).err(), Some(NfsStat::Stale));
    // Files still linked are kept.
    let sub = b.lookup(&c, &root, b"sub").expect("sub").fh;
    b.close_unlinked();
    assert!(b.getattr(&c, &sub).is_ok());
}

#[test]
fn guest_symlinks_are_never_followed() {
    let t = Tree::new("links");
    let b = backend(&t, opts());
    let cred = root_cred();
    let c = caller(&cred);
    let root = root_fh(&b, &c, "/data");
    let made = b
        .symlink(&c, &root, b"etc", &Sattr::default(), b"/etc")
        .expect("symlink");
    let up = b
        .symlink(
            &c,
            &root,
            b"up",
            &Sattr::default(),
            t.p("").to_str().expect("utf8").as_bytes(),
        )
        .expect("symlink");
    let link = made.fh.expect("handle");
    // The link itself is an object: READLINK works, READ and LOOKUP through it don't.
    assert_eq!(b.readlink(&c, &link).expect("readlink").1, b"/etc");
    let mut buf = [0u8; 64];
    assert!(b.read(&c, &link, 0, &mut buf).is_err());
    assert_eq!(
        b.lookup(&c, &link, b"passwd").err().map(|f| f.status),
        Some(NfsStat::NotDir)
    );
    assert!(b
        .create(&c, &link, b"pwned", &CreateHow::Guarded(Sattr::default()))
        .is_err());
    assert!(b.lookup(&c, &up.fh.expect("fh"), b"secret").is_err());
    // Writing "through" a symlink by name replaces nothing outside.
    assert!(b
        .create(&c, &root, b"etc", &CreateHow::Unchecked(Sattr::default()))
        .is_err());
    assert_eq!(
        std::fs::read_to_string(t.p("secret")).expect("read"),
        "outside"
    );
    // A host-made symlink inside the export pointing out is not followed either.
    std::os::unix::fs::symlink(t.p("secret"), t.p("export/host-link")).expect("symlink");
    let l = b.lookup(&c, &root, b"host-link").expect("lookup");
    assert_eq!(l.attr.map(|a| a.ftype), Some(FileType::Lnk));
    assert!(b.read(&c, &l.fh, 0, &mut buf).is_err());
    let w = b.write(&c, &l.fh, 0, StableHow::FileSync, b"pwned");
    assert!(w.is_err());
    assert_eq!(
        std::fs::read_to_string(t.p("secret")).expect("read"),
        "outside"
    );
}

#[test]
fn handles_are_bound_to_their_export_and_survive_restart() {
    let t = Tree::new("handles");
    let cred = root_cred();
    let c = caller(&cred);
    let file = {
        let b = backend(&t, opts());
        let root = root_fh(&b, &c, "/data");
        let other = root_fh(&b, &c, "/other");
        let f = b.lookup(&c, &root, b"file").expect("lookup").fh;
        // Forged: a changed bit is refused (STALE: the server cannot tell
        // it from a handle of an earlier key), a length it never makes is
        // BADHANDLE.
        let mut bytes = f.as_bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x80;
        assert_eq!(
            b.getattr(&c, &FileHandle::new(&bytes).expect("fh")).err(),
            Some(NfsStat::Stale)
        );
        assert_eq!(
            b.getattr(&c, &FileHandle::new(&bytes[..last]).expect("fh"))
                .err(),
            Some(NfsStat::BadHandle)
        );
        // Made up from nothing.
        assert!(b
            .getattr(&c, &FileHandle::new(&[0u8; 32]).expect("fh"))
            .is_err());
        // A valid handle is never usable as a directory of another export.
        assert_eq!(
            b.rename(&c, &root, b"file", &other, b"stolen")
                .err()
                .map(|f| f.status),
            Some(NfsStat::XDev)
        );
        assert_eq!(
            b.link(&c, &f, &other, b"stolen").err().map(|f| f.status),
            Some(NfsStat::XDev)
        );
        assert!(!exists(&t.p("other/stolen")));
        f
    };
    // A new server instance with the same state directory decodes it.
    let b = backend(&t, opts());
    let a = b.getattr(&c, &file).expect("handle survives restart");
    assert_eq!(a.size, 6);
    // The same mount path serving another directory (same key, same
    // filesystem): the old handle is STALE there, even for a file the
    // new directory could reach.
    let moved = vec![ExportConfig::new(t.p("export/sub"), "/data", rule(opts()))];
    std::fs::write(t.p("export/sub/x"), "x").expect("write");
    let sub_fh = b
        .lookup(&c, &root_fh(&b, &c, "/data"), b"sub")
        .expect("lookup")
        .fh;
    let x = b.lookup(&c, &sub_fh, b"x").expect("lookup").fh;
    let b2 = FsBackend::new(moved, &t.p("state")).expect("backend");
    assert_eq!(b2.getattr(&c, &file).err(), Some(NfsStat::Stale));
    assert_eq!(b2.getattr(&c, &x).err(), Some(NfsStat::Stale));
    drop(b2);
    // Deleted: STALE.
    std::fs::remove_file(t.p("export/file")).expect("rm");
    assert_eq!(b.getattr(&c, &file).err(), Some(NfsStat::Stale));
    // A server with another key refuses it as STALE, which has the
    // client look the name up again.
    std::fs::remove_file(t.p("state/handle-key")).expect("rm key");
    let b = backend(&t, opts());
    assert_eq!(b.getattr(&c, &file).err(), Some(NfsStat::Stale));
}

/// Unmounts on drop, so that a failed assertion leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        vmshare_fs::cred::as_server(true);
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Names and fileids of a listing.
struct Fileids {
    plus: bool,
    ids: Vec<(Vec<u8>, u64)>,
}

impl DirSink for Fileids {
    fn plus(&self) -> bool {
        self.plus
    }
    fn push(&mut self, e: &DirEntry<'_>) -> bool {
        self.ids.push((e.name.to_vec(), e.fileid));
        true
    }
}

#[test]
fn a_filesystem_mounted_inside_the_export_is_served_across_a_restart() {
    if !running_as_root("mount a tmpfs") {
        return;
    }
    let t = Tree::new("submount");
    let point = t.p("export/sub/mnt");
    std::fs::create_dir_all(&point).expect("mkdir");
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "vmshare-test"])
        .arg(&point)
        .status()
        .expect("run mount");
    assert!(ok.success(), "mount -t tmpfs failed");
    let _mounted = Mounted(point.clone());
    std::fs::write(point.join("f"), "on tmpfs").expect("write");

    let cred = root_cred();
    let c = caller(&cred);
    let (file, export_fsid) = {
        let (b, root) = served(&t);
        let sub = b.lookup(&c, &root, b"sub").expect("sub").fh;
        let mnt = b.lookup(&c, &sub, b"mnt").expect("mnt").fh;
        let f = b.lookup(&c, &mnt, b"f").expect("f");
        let a = f.attr.expect("attributes");
        assert_eq!(a.size, 8);
        (f.fh, b.getattr(&c, &root).expect("root").fsid)
    };
    // A new instance has met no object on the tmpfs yet: it must find the
    // mount itself to decode the handle.
    let b = backend(&t, opts());
    let a = b
        .getattr(&c, &file)
        .expect("handle on the inner filesystem");
    assert_eq!(a.size, 8);
    // One export, one fsid, but fileids kept apart from the export's own,
    // in a listing as in GETATTR.
    assert_eq!(a.fsid, export_fsid);
    let root = root_fh(&b, &c, "/data");
    let sub = b.lookup(&c, &root, b"sub").expect("sub").fh;
    let mnt = b.lookup(&c, &sub, b"mnt").expect("mnt").fh;
    for plus in [false, true] {
        let mut ids = Fileids {
            plus,
            ids: Vec::new(),
        };
        b.readdir(&c, &mnt, 0, [0; 8], &mut ids).expect("readdir");
        let listed = ids.ids.iter().find(|(n, _)| n == b"f").map(|e| e.1);
        assert_eq!(listed, Some(a.fileid), "READDIR (plus: {plus}) as GETATTR");
        let dot = ids.ids.iter().find(|(n, _)| n == b".").map(|e| e.1);
        let mnt_id = b.getattr(&c, &mnt).expect("mnt").fileid;
        assert_eq!(dot, Some(mnt_id), "`.` as GETATTR (plus: {plus})");
    }
    let inner_ino = std::fs::metadata(point.join("f"))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .expect("stat");
    assert_ne!(a.fileid, inner_ino);
}

#[test]
fn readonly_exports_refuse_every_change() {
    let t = Tree::new("ro");
    let b = backend(&t, read_only());
    let cred = root_cred();
    let c = caller(&cred);
    let root = root_fh(&b, &c, "/data");
    let file = b.lookup(&c, &root, b"file").expect("lookup").fh;
    let rofs = Some(NfsStat::RoFs);
    assert_eq!(
        b.write(&c, &file, 0, StableHow::FileSync, b"x")
            .err()
            .map(|f| f.status),
        rofs
    );
    assert_eq!(
        b.create(&c, &root, b"n", &CreateHow::Guarded(Sattr::default()))
            .err()
            .map(|f| f.status),
        rofs
    );
    assert_eq!(
        b.mkdir(&c, &root, b"n", &Sattr::default())
            .err()
            .map(|f| f.status),
        rofs
    );
    assert_eq!(b.remove(&c, &root, b"file").err().map(|f| f.status), rofs);
    assert_eq!(
        b.setattr(
            &c,
            &file,
            &Sattr {
                size: Some(0),
                ..Sattr::default()
            },
            None
        )
        .err()
        .map(|f| f.status),
        rofs
    );
    assert_eq!(
        b.rename(&c, &root, b"file", &root, b"g")
            .err()
            .map(|f| f.status),
        rofs
    );
    // Malformed names too: ROFS, not the name's own error (EXIST for
    // `.`, ACCES for `..`, INVAL for a rename of `.`), as for any change.
    assert_eq!(
        b.create(&c, &root, b".", &CreateHow::Guarded(Sattr::default()))
            .err()
            .map(|f| f.status),
        rofs
    );
    assert_eq!(b.remove(&c, &root, b"..").err().map(|f| f.status), rofs);
    assert_eq!(b.rmdir(&c, &root, b"a/b").err().map(|f| f.status), rofs);
    assert_eq!(
        b.rename(&c, &root, b".", &root, b"g")
            .err()
            .map(|f| f.status),
        rofs
    );
    assert_eq!(
        b.link(&c, &file, &root, b"..").err().map(|f| f.status),
        rofs
    );
    assert_eq!(
        std::fs::read_to_string(t.p("export/file")).expect("read"),
        "inside"
    );
    let mut buf = [0u8; 16];
    assert_eq!(b.read(&c, &file, 0, &mut buf).expect("read").count, 6);
}

#[test]
fn callers_act_as_their_mapped_identity() {
    if !running_as_root("switch identities") {
        return;
    }
    let t = Tree::new("cred");
    let b = backend(
        &t,
        ExportOptions {
            anonuid: 4321,
            anongid: 4321,
            ..ExportOptions {
                squash: Squash::Root,
                ..opts()
            }
        },
    );
    let rootc = root_cred();
    let c = caller(&rootc);
    let root = root_fh(&b, &c, "/data");
    // Root is squashed: the file belongs to the anonymous ids, and the
    // export root (root-owned, 0755) is not writable for it.
    chmod(&t.p("export"), 0o777);
    let made = b
        .create(
            &c,
            &root,
            b"by-root",
            &CreateHow::Guarded(Sattr {
                mode: Some(0o600),
                ..Sattr::default()
            }),
        )
        .expect("create");
    assert!(made.fh.is_some());
    let md = std::fs::metadata(t.p("export/by-root")).expect("stat");
    assert_eq!((md.uid(), md.gid()), (4321, 4321));
    let user = user_cred(1000);
    let cu = caller(&user);
    b.create(
        &cu,
        &root,
        b"by-user",
        &CreateHow::Guarded(Sattr {
            mode: Some(0o600),
            ..Sattr::default()
        }),
    )
    .expect("create");
    let md = std::fs::metadata(t.p("export/by-user")).expect("stat");
    assert_eq!((md.uid(), md.gid()), (1000, 1000));
    // The user can't read the squashed root's 0600 file: the kernel checks.
    let f = b.lookup(&cu, &root, b"by-root").expect("lookup").fh;
    let mut buf = [0u8; 4];
    assert_eq!(
        b.read(&cu, &f, 0, &mut buf).err().map(|f| f.status),
        Some(NfsStat::Acces)
    );
    // AUTH_NONE is anonymous, never root.
    let none = Credential::None;
    let cn = caller(&none);
    b.mkdir(&cn, &root, b"anon", &Sattr::default())
        .expect("mkdir");
    assert_eq!(
        std::fs::metadata(t.p("export/anon")).expect("stat").uid(),
        4321
    );
}

/// LOOKUP of `..` asks search permission on the directory, as knfsd
/// does, and no more. The check that the parent is still inside the
/// export walked up to the root as the caller, so a user who mounted
/// `/data/a/b` under a directory `a` it may not search got ACCES for
/// `cd ..` out of a directory of its own.
#[test]
fn lookup_of_dotdot_needs_search_on_the_directory_only() {
    if !running_as_root("switch identities") {
        return;
    }
    let t = Tree::new("dotdot-perm");
    std::fs::create_dir_all(t.p("export/a/b/c")).expect("mkdir");
    chmod(&t.p("export/a"), 0o700);
    for d in ["export/a/b", "export/a/b/c"] {
        std::os::unix::fs::chown(t.p(d), Some(1000), Some(1000)).expect("chown");
    }
    let b = backend(&t, opts());
    let user = user_cred(1000);
    let cu = caller(&user);
    let c = root_fh(&b, &cu, "/data/a/b/c");
    let up = b.lookup(&cu, &c, b"..").expect("`..` of a/b/c");
    let bdir = b
        .lookup(&cu, &root_fh(&b, &cu, "/data/a/b"), b".")
        .expect("b");
    assert_eq!(up.fh, bdir.fh);
    // Its own search permission still counts.
    chmod(&t.p("export/a/b/c"), 0o600);
    assert_eq!(
        b.lookup(&cu, &c, b"..").err().map(|f| f.status),
        Some(NfsStat::Acces)
    );
}

/// A READ or WRITE descriptor opened for one caller is not lent to another
/// whose supplementary groups differ, even when uid, gid and the number
/// of groups match: the open is where the kernel checked permission.
#[test]
fn io_descriptors_are_not_shared_between_group_sets() {
    if !running_as_root("switch identities") {
        return;
    }
    let t = Tree::new("io-groups");
    let (b, root) = served(&t);
    owned_file(&t, "export/staff-only", b"secret", (0, 5000), 0o060);
    let (staff, users) = (
        sys_cred(1000, 1000, vec![5000]),
        sys_cred(1000, 1000, vec![6000]),
    );
    let f = b
        .lookup(&caller(&staff), &root, b"staff-only")
        .expect("lookup")
        .fh;
    let mut buf = [0u8; 6];
    let got = b
        .read(&caller(&staff), &f, 0, &mut buf)
        .expect("staff reads");
    assert_eq!(&buf[..got.count as usize], b"secret");
    for who in [&users, &user_cred(1000)] {
        assert_eq!(
            b.read(&caller(who), &f, 0, &mut buf)
                .err()
                .map(|e| e.status),
            Some(NfsStat::Acces)
        );
    }
    b.write(&caller(&staff), &f, 0, StableHow::Unstable, b"SECRET")
        .expect("staff writes");
    assert_eq!(
        b.write(&caller(&users), &f, 0, StableHow::Unstable, b"hacked")
            .err()
            .map(|e| e.status),
        Some(NfsStat::Acces)
    );
    // Read back through the backend: this thread may still carry the last
    // caller's fsuid, which the backend keeps between calls.
    let got = b
        .read(&caller(&staff), &f, 0, &mut buf)
        .expect("staff reads");
    assert_eq!(&buf[..got.count as usize], b"SECRET");
}

/// A thread keeps its last caller's identity for the next call when the
/// caller is the same. "The same" is the whole identity: these two group
/// lists had the same hash under the key the thread once kept, and the
/// second caller ran with the first one's groups, group 0 included.
#[test]
fn a_thread_never_keeps_another_callers_groups() {
    if !running_as_root("switch identities") {
        return;
    }
    let t = Tree::new("cred-groups");
    let (b, root) = served(&t);
    owned_file(&t, "export/group-0-only", b"group 0", (0, 0), 0o040);
    let (victim, attacker) = (
        sys_cred(1000, 1000, vec![0, 1000, 5]),
        sys_cred(1000, 1000, vec![1, 130, 189_230]),
    );
    let f = b
        .lookup(&caller(&victim), &root, b"group-0-only")
        .expect("lookup")
        .fh;
    let mut buf = [0u8; 7];
    let got = b
        .read(&caller(&victim), &f, 0, &mut buf)
        .expect("victim reads");
    assert_eq!(&buf[..got.count as usize], b"group 0");
    // Same thread, next call: the attacker's READ opens the file as the
    // attacker (its own descriptor-cache key), and must be refused.
    assert_eq!(
        b.read(&caller(&attacker), &f, 0, &mut buf)
            .err()
            .map(|e| e.status),
        Some(NfsStat::Acces)
    );
}

#[test]
fn mknod_gives_the_new_node_the_owner_asked_for() {
    if !running_as_root("make nodes for another owner") {
        return;
    }
    use std::os::unix::fs::FileTypeExt;
    let t = Tree::new("mknod");
    let b = backend(&t, opts());
    let rootc = root_cred();
    let c = caller(&rootc);
    let root = root_fh(&b, &c, "/data");
    let a = Sattr {
        mode: Some(0o640),
        uid: Some(1234),
        gid: Some(5678),
        ..Sattr::default()
    };
    b.mknod(&c, &root, b"fifo", &MknodKind::Fifo(a))
        .expect("mknod fifo");
    b.mknod(&c, &root, b"sock", &MknodKind::Sock(a))
        .expect("mknod socket");
    for (name, fifo) in [("fifo", true), ("sock", false)] {
        let md = std::fs::symlink_metadata(t.p(&format!("export/{name}"))).expect("stat");
        assert_eq!(md.file_type().is_fifo(), fifo, "{name}");
        assert_eq!(md.file_type().is_socket(), !fifo, "{name}");
        assert_eq!((md.uid(), md.gid()), (1234, 5678), "{name}");
        assert_eq!(md.mode() & 0o7777, 0o640, "{name}");
    }
}

/// A device is made with the numbers asked for, or not at all: numbers
/// Linux cannot hold (12 bits of major, 20 of minor) are INVAL, as in
/// knfsd, where they had been cut to another device (4096:0 to 0:0).
#[test]
fn mknod_makes_the_device_asked_for_or_none() {
    if !running_as_root("make device nodes") {
        return;
    }
    let t = Tree::new("mknod-dev");
    let b = backend(&t, opts());
    let rootc = root_cred();
    let c = caller(&rootc);
    let root = root_fh(&b, &c, "/data");
    let a = Sattr::default();
    let made = b
        .mknod(&c, &root, b"max", &MknodKind::Chr(a, (0xfff, 0xf_ffff)))
        .expect("the largest device Linux holds");
    let attr = made.attr.expect("attributes");
    assert_eq!(attr.rdev, (0xfff, 0xf_ffff));
    let md = std::fs::symlink_metadata(t.p("export/max")).expect("stat");
    assert_eq!(md.rdev(), rustix::fs::makedev(0xfff, 0xf_ffff));
    for (name, dev) in [
        (&b"a"[..], (4096, 0)),
        (b"b", (0, 1 << 20)),
        (b"c", (0x12345, 7)),
        (b"d", (u32::MAX, u32::MAX)),
    ] {
        let r = b.mknod(&c, &root, name, &MknodKind::Blk(a, dev));
        assert_eq!(r.err().map(|f| f.status), Some(NfsStat::Inval), "{dev:?}");
        assert!(std::fs::symlink_metadata(
            t.p("export").join(std::str::from_utf8(name).expect("utf8"))
        )
        .is_err());
    }
    let r = b.mknod(&c, &root, b"e", &MknodKind::Other(0));
    assert_eq!(r.err().map(|f| f.status), Some(NfsStat::BadType));
}

/// One SETATTR that gives a file to another owner and a mode with it
/// cannot keep setuid (nor setgid with group execute), as with knfsd; a
/// directory keeps them. A size no file can have is FBIG, not INVAL.
#[test]
fn setattr_owner_and_mode_together_drop_set_id_bits() {
    if !running_as_root("chown") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let t = Tree::new("setattr-sid");
    let b = backend(&t, opts());
    let rootc = root_cred();
    let c = caller(&rootc);
    let root = root_fh(&b, &c, "/data");
    let file = b.lookup(&c, &root, b"file").expect("file").fh;
    let mode_of = |p: &str| {
        std::fs::symlink_metadata(t.p(p))
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    };
    let give = |mode| Sattr {
        mode: Some(mode),
        uid: Some(1000),
        gid: Some(1000),
        ..Sattr::default()
    };
    b.setattr(&c, &file, &give(0o6755), None).expect("setattr");
    assert_eq!(mode_of("export/file"), 0o755);
    b.setattr(&c, &file, &give(0o6745), None).expect("setattr");
    assert_eq!(
        mode_of("export/file"),
        0o2745,
        "setgid without group execute is a lock mark"
    );
    // The mode alone, by root, is what it asks for.
    let chmod = Sattr {
        mode: Some(0o4755),
        ..Sattr::default()
    };
    b.setattr(&c, &file, &chmod, None).expect("chmod");
    assert_eq!(mode_of("export/file"), 0o4755);
    let dir = b
        .mkdir(&c, &root, b"d", &Sattr::default())
        .expect("mkdir")
        .fh
        .expect("handle");
    b.setattr(&c, &dir, &give(0o3775), None)
        .expect("setattr dir");
    assert_eq!(mode_of("export/d"), 0o3775);
    let huge = Sattr {
        size: Some(1 << 63),
        ..Sattr::default()
    };
    let r = b.setattr(&c, &file, &huge, None);
    assert_eq!(r.err().map(|f| f.status), Some(NfsStat::FBig));
}

#[test]
fn exclusive_create_is_idempotent_for_its_verifier() {
    let t = Tree::new("excl");
    let b = backend(&t, opts());
    let cred = root_cred();
    let c = caller(&cred);
    let root = root_fh(&b, &c, "/data");
    let v = *b"\x01\x02\x03\x04\x05\x06\x07\x08";
    let first = b
        .create(&c, &root, b"lock", &CreateHow::Exclusive(v))
        .expect("create");
    let again = b
        .create(&c, &root, b"lock", &CreateHow::Exclusive(v))
        .expect("retransmission succeeds");
    assert_eq!(first.fh, again.fh);
    let other = b.create(&c, &root, b"lock", &CreateHow::Exclusive(*b"zzzzzzzz"));
    assert_eq!(other.err().map(|f| f.status), Some(NfsStat::Exist));
    assert_eq!(
        b.create(&c, &root, b"lock", &CreateHow::Guarded(Sattr::default()))
            .err()
            .map(|f| f.status),
        Some(NfsStat::Exist)
    );
}

struct Collect {
    plus: bool,
    max: usize,
    entries: Vec<(Vec<u8>, u64, bool)>,
}

impl DirSink for Collect {
    fn plus(&self) -> bool {
        self.plus
    }
    fn push(&mut self, e: &DirEntry<'_>) -> bool {
        if self.entries.len() >= self.max {
            return false;
        }
        self.entries
            .push((e.name.to_vec(), e.cookie, e.fh.is_some()));
        true
    }
}

fn list_all(
    b: &FsBackend,
    c: &Caller<'_>,
    dir: &FileHandle,
    page: usize,
    plus: bool,
    mut between: impl FnMut(usize),
) -> Vec<Vec<u8>> {
    let mut names = Vec::new();
    let (mut cookie, mut verf) = (0u64, [0u8; 8]);
    for round in 0.. {
        let mut s = Collect {
            plus,
            max: page,
            entries: Vec::new(),
        };
        let ok = b.readdir(c, dir, cookie, verf, &mut s).expect("readdir");
        verf = ok.verf;
        for (n, ck, has_fh) in &s.entries {
            assert_ne!(*ck, 0, "cookie 0 is reserved");
            assert!(*ck < 1 << 63, "cookie must stay below 2^63");
            if plus && n != b"." && n != b".." {
                assert!(has_fh, "READDIRPLUS gives handles");
            }
            names.push(n.clone());
        }
        if ok.eof {
            break;
        }
        assert!(!s.entries.is_empty(), "no empty pages without eof");
        cookie = s.entries.last().map(|e| e.1).unwrap_or(0);
        between(round);
    }
    names
}

#[test]
fn readdir_cookies_survive_changes() {
    let t = Tree::new("readdir");
    let b = backend(&t, opts());
    let cred = root_cred();
    let c = caller(&cred);
    let root = root_fh(&b, &c, "/data");
    let dir = t.p("export/big");
    std::fs::create_dir(&dir).expect("mkdir");
    for i in 0..3000 {
        std::fs::write(dir.join(format!("f{i:05}")), "").expect("write");
    }
    let big = b.lookup(&c, &root, b"big").expect("lookup").fh;
    let names = list_all(&b, &c, &big, 100, true, |_| {});
    let set: HashSet<_> = names.iter().cloned().collect();
    assert_eq!(names.len(), set.len(), "no entry twice");
    assert_eq!(names.len(), 3002);
    // Delete and add entries between pages: every entry that exists
    // throughout is listed exactly once.
    let mut k = 0;
    let names = list_all(&b, &c, &big, 100, false, |_| {
        for _ in 0..20 {
            let _ = std::fs::remove_file(dir.join(format!("f{:05}", 2999 - k)));
            std::fs::write(dir.join(format!("new{k}")), "").expect("write");
            k += 1;
        }
    });
    let seen: HashSet<_> = names.iter().cloned().collect();
    assert_eq!(names.len(), seen.len(), "no entry listed twice");
    for i in 0..(3000 - k) {
        assert!(
            seen.contains(format!("f{i:05}").as_bytes()),
            "f{i:05} skipped"
        );
    }
    // A cookie with a verifier for another directory is refused.
    let mut s = Collect {
        plus: false,
        max: 10,
        entries: Vec::new(),
    };
    assert_eq!(
        b.readdir(&c, &big, 12345, *b"bogusvrf", &mut s)
            .err()
            .map(|f| f.status),
        Some(NfsStat::BadCookie)
    );
}

#[test]
fn single_file_export_hides_siblings() {
    let t = Tree::new("single");
    std::fs::write(t.p("export/secret-sibling"), "no").expect("write");
    let mut e = ExportConfig::new(t.p("export"), "/f", rule(opts()));
    e.single_file = Some("file".into());
    let b = FsBackend::new(vec![e], &t.p("state")).expect("backend");
    let cred = root_cred();
    let c = caller(&cred);
    let root = root_fh(&b, &c, "/f");
    assert!(b.lookup(&c, &root, b"file").is_ok());
    assert_eq!(
        b.lookup(&c, &root, b"secret-sibling")
            .err()
            .map(|f| f.status),
        Some(NfsStat::NoEnt)
    );
    assert!(b.lookup(&c, &root, b"sub").is_err());
    let names = list_all(&b, &c, &root, 100, true, |_| {});
    let mut names: Vec<_> = names
        .into_iter()
        .filter(|n| n != b"." && n != b"..")
        .collect();
    names.sort();
    assert_eq!(names, vec![b"file".to_vec()]);
    assert!(b
        .create(&c, &root, b"new", &CreateHow::Unchecked(Sattr::default()))
        .is_err());
    assert!(b.remove(&c, &root, b"file").is_err());
    assert!(b.mount(&c, b"/f/sub").is_err());
    // The root is the file's host directory: no chmod, chown or utimes of
    // it, while the file itself takes them.
    let before = std::fs::metadata(t.p("export")).expect("stat").mode();
    let chmod = Sattr {
        mode: Some(0o777),
        ..Sattr::default()
    };
    assert_eq!(
        b.setattr(&c, &root, &chmod, None).err().map(|f| f.status),
        Some(NfsStat::Acces)
    );
    assert_eq!(
        std::fs::metadata(t.p("export")).expect("stat").mode(),
        before
    );
    let file = b.lookup(&c, &root, b"file").expect("lookup").fh;
    b.setattr(&c, &file, &chmod, None).expect("chmod the file");
}

/// The one file of a single-file export, removed on the host and made
/// again: NOENT while it is gone, never STALE (the Linux client calls an
/// inode it was told is STALE stale for good, and the guest's bind mount
/// of the file would stay broken once it is back), then the new file.
#[test]
fn single_file_export_answers_noent_while_its_file_is_gone() {
    let t = Tree::new("single-gone");
    let mut e = ExportConfig::new(t.p("export"), "/f", rule(opts()));
    e.single_file = Some("file".into());
    let b = FsBackend::new(vec![e], &t.p("state")).expect("backend");
    let cred = root_cred();
    let c = caller(&cred);
    let root = root_fh(&b, &c, "/f");
    let file = b.lookup(&c, &root, b"file").expect("lookup").fh;
    let before = b.getattr(&c, &file).expect("getattr");
    std::fs::remove_file(t.p("export/file")).expect("remove");
    assert_eq!(b.getattr(&c, &file).err(), Some(NfsStat::NoEnt));
    std::fs::create_dir(t.p("export/file")).expect("a directory in its place");
    assert_eq!(b.getattr(&c, &file).err(), Some(NfsStat::NoEnt));
    std::fs::remove_dir(t.p("export/file")).expect("rmdir");
    std::fs::write(t.p("export/file"), "again").expect("write");
    let after = b.getattr(&c, &file).expect("getattr once it is back");
    assert_eq!(after.fileid, before.fileid);
    assert_eq!(after.size, 5);
}

#[test]
fn client_rules_and_secure_ports() {
    let t = Tree::new("rules");
    let rules = vec![ClientRule {
        client: ClientMatch::Net {
            addr: "10.0.0.0".parse().expect("ip"),
            prefix: 8,
        },
        options: ExportOptions {
            secure: true,
            ..opts()
        },
    }];
    let b = FsBackend::new(
        vec![ExportConfig::new(t.p("export"), "/data", rules)],
        &t.p("state"),
    )
    .expect("backend");
    let cred = root_cred();
    let outsider = Caller {
        addr: "192.0.2.1:700".parse().expect("addr"),
        cred: &cred,
    };
    assert!(b.mount(&outsider, b"/data").is_err());
    let insecure = Caller {
        addr: "10.1.1.1:40000".parse().expect("addr"),
        cred: &cred,
    };
    assert!(b.mount(&insecure, b"/data").is_err());
    let ok = Caller {
        addr: "10.1.1.1:800".parse().expect("addr"),
        cred: &cred,
    };
    let root = b.mount(&ok, b"/data").expect("mount");
    // A handle obtained legitimately is still refused to an outsider.
    assert_eq!(b.getattr(&outsider, &root).err(), Some(NfsStat::Acces));
    // An export with a mount path is not found by its host path (a guest
    // must not learn the host's layout by probing); subdirectories of the
    // mount path resolve beneath it.
    assert_eq!(
        b.mount(&ok, t.p("export").to_str().expect("utf8").as_bytes())
            .err(),
        Some(MountStat::NoEnt)
    );
    assert!(b.mount(&ok, b"/data/sub").is_ok());
    assert!(b.mount(&ok, b"/data/../secret").is_err());
}

#[test]
fn an_address_rule_beats_everyone_written_before_it() {
    // Read from an exports line, as a user writes it: everyone may write,
    // 10.0.0.5 only read. In line order `*` would match 10.0.0.5 first.
    let t = Tree::new("precedence");
    let line = format!(
        "{} /data *(rw,insecure,no_root_squash) 10.0.0.5(ro,insecure,no_root_squash)",
        t.p("export").display()
    );
    let exports = vmshare_fs::exports_file::parse_exports(&line, "exports").expect("parses");
    let b = FsBackend::new(exports, &t.p("state")).expect("backend");
    let cred = root_cred();
    let how = CreateHow::Unchecked(Sattr::default());
    let reader = Caller {
        addr: "10.0.0.5:40000".parse().expect("addr"),
        cred: &cred,
    };
    let root = b.mount(&reader, b"/data").expect("mount");
    assert_eq!(
        b.create(&reader, &root, b"by-reader", &how)
            .err()
            .map(|f| f.status),
        Some(NfsStat::RoFs)
    );
    let writer = Caller {
        addr: "10.0.0.6:40000".parse().expect("addr"),
        cred: &cred,
    };
    b.create(&writer, &root, b"by-writer", &how)
        .expect("create");
    assert!(t.p("export/by-writer").exists());
    assert!(!t.p("export/by-reader").exists());
}

/// Descriptors of this process that point at a deleted file under `dir`.
fn open_deleted_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc/self/fd")
        .map(|rd| {
            rd.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .map(|p| p.to_string_lossy().into_owned())
                .filter(|p| p.starts_with(&prefix) && p.ends_with(" (deleted)"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_removed_file_is_not_kept_open() {
    // The caches hold descriptors (O_PATH for handles, read-write for
    // I/O); one left open would keep a deleted file's blocks on the host.
    let t = Tree::new("removed");
    let b = backend(&t, opts());
    let cred = root_cred();
    let c = caller(&cred);
    let root = root_fh(&b, &c, "/data");
    for (name, replace) in [(&b"gone"[..], false), (&b"replaced"[..], true)] {
        let fh = b
            .create(&c, &root, name, &CreateHow::Unchecked(Sattr::default()))
            .expect("create")
            .fh
            .expect("handle");
        b.write(&c, &fh, 0, StableHow::Unstable, &[7u8; 8192])
            .expect("write");
        let mut buf = [0u8; 4096];
        b.read(&c, &fh, 0, &mut buf).expect("read");
        if replace {
            b.create(&c, &root, b"new", &CreateHow::Unchecked(Sattr::default()))
                .expect("create");
            b.rename(&c, &root, b"new", &root, name).expect("rename");
        } else {
            b.remove(&c, &root, name).expect("remove");
        }
    }
    // The descriptors are closed on the backend's closer thread.
    let export = t.p("export");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !open_deleted_under(&export).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(open_deleted_under(&export), Vec::<String>::new());
}

/// READDIRPLUS of a small directory: name → (fileid, size), for the
/// entries that came with attributes and a handle.
struct Attrs(std::collections::HashMap<Vec<u8>, (u64, u64)>);

impl DirSink for Attrs {
    fn plus(&self) -> bool {
        true
    }
    fn push(&mut self, e: &DirEntry<'_>) -> bool {
        if let (Some(a), Some(_)) = (e.attr, e.fh) {
            self.0.insert(e.name.to_vec(), (a.fileid, a.size));
        }
        true
    }
}

fn listed(b: &FsBackend, c: &Caller<'_>, dir: &FileHandle) -> Attrs {
    let mut s = Attrs(Default::default());
    let ok = b.readdir(c, dir, 0, [0; 8], &mut s).expect("readdirplus");
    assert!(ok.eof);
    s
}

#[test]
fn listings_show_changes_through_the_server_at_once_and_host_ones_in_time() {
    let t = Tree::new("listing");
    let ttl = std::time::Duration::from_millis(300);
    let b = backend(&t, opts()).with_attr_cache(ttl);
    let cred = root_cred();
    let c = caller(&cred);
    let root = root_fh(&b, &c, "/data");
    let dir = t.p("export/d");
    std::fs::create_dir(&dir).expect("mkdir");
    for name in ["a", "b", "c"] {
        std::fs::write(dir.join(name), "1").expect("write");
    }
    let d = b.lookup(&c, &root, b"d").expect("lookup").fh;
    // A directory changed within the last 50 ms is never cached.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let size = |l: &Attrs, n: &str| l.0.get(n.as_bytes()).map(|x| x.1);
    assert_eq!(size(&listed(&b, &c, &d), "a"), Some(1));
    // A WRITE through the server: the next listing shows it.
    let a = b.lookup(&c, &d, b"a").expect("lookup").fh;
    b.write(&c, &a, 0, StableHow::Unstable, b"22")
        .expect("write");
    assert_eq!(size(&listed(&b, &c, &d), "a"), Some(2));
    // A name replaced on the host: the directory's ctime moved, so the
    // listing shows the new object at once.
    std::fs::remove_file(dir.join("c")).expect("rm");
    std::fs::write(dir.join("c"), "4444").expect("write");
    let ino = std::fs::metadata(dir.join("c")).expect("stat").ino();
    let l = listed(&b, &c, &d);
    assert_eq!(l.0.get(&b"c"[..]), Some(&(ino, 4)));
    // A file written on the host: shown within the cache's time.
    std::thread::sleep(std::time::Duration::from_millis(100));
    listed(&b, &c, &d);
    std::fs::write(dir.join("b"), "333").expect("write");
    std::thread::sleep(ttl);
    assert_eq!(size(&listed(&b, &c, &d), "b"), Some(3));
}

#[test]
fn cached_listings_need_search_permission() {
    if !running_as_root("switch identities") {
        return;
    }
    let t = Tree::new("listing-perm");
    let b = backend(&t, opts()).with_attr_cache(std::time::Duration::from_secs(60));
    let rootc = root_cred();
    let c = caller(&rootc);
    let root = root_fh(&b, &c, "/data");
    let dir = t.p("export/d");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("f"), "1").expect("write");
    std::thread::sleep(std::time::Duration::from_millis(100));
    let d = b.lookup(&c, &root, b"d").expect("lookup").fh;
    // Readable, not searchable, for others: a user may list the names but
    // not look the entries up, from the cache or otherwise. Root's listing
    // fills the cache first.
    chmod(&dir, 0o744);
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(
        listed(&b, &c, &d).0.len(),
        1,
        "root sees the entry's attributes"
    );
    let user = user_cred(1000);
    let cu = caller(&user);
    assert_eq!(listed(&b, &cu, &d).0.len(), 0);
}

/// A cached READ/WRITE descriptor is lent only while the file's mode and
/// owner are what they were at its open: a chmod made any way (here on
/// the host) is checked again at the next call, and so is one made by a
/// SETATTR.
#[test]
fn a_permission_change_is_seen_by_the_next_read() {
    if !running_as_root("switch identities") {
        return;
    }
    let t = Tree::new("io-revoke");
    let (b, root) = served(&t);
    let path = owned_file(&t, "export/shared", b"shared", (1000, 5000), 0o660);
    let member = sys_cred(2000, 5000, vec![]);
    let owner = user_cred(1000);
    let f = b
        .lookup(&caller(&member), &root, b"shared")
        .expect("lookup")
        .fh;
    let mut buf = [0u8; 6];
    b.read(&caller(&member), &f, 0, &mut buf)
        .expect("member reads");
    b.write(&caller(&member), &f, 0, StableHow::Unstable, b"SHARED")
        .expect("member writes");
    // Revoked on the host: the cached descriptors must not serve.
    chmod(&path, 0o600);
    let refused = |b: &FsBackend| {
        let mut buf = [0u8; 6];
        (
            b.read(&caller(&member), &f, 0, &mut buf)
                .err()
                .map(|e| e.status),
            b.write(&caller(&member), &f, 0, StableHow::Unstable, b"hacked")
                .err()
                .map(|e| e.status),
        )
    };
    assert_eq!(refused(&b), (Some(NfsStat::Acces), Some(NfsStat::Acces)));
    // Given back, used again (and cached again) ...
    chmod(&path, 0o660);
    b.read(&caller(&member), &f, 0, &mut buf)
        .expect("member reads again");
    // A SETATTR by the owner that would take it, but fails on its size (past
    // the largest file), changes nothing: the size is tried first. The
    // member still reads.
    let take = Sattr {
        mode: Some(0o400),
        size: Some(u64::MAX),
        ..Sattr::default()
    };
    let failed = b
        .setattr(&caller(&owner), &f, &take, None)
        .err()
        .map(|e| e.status);
    assert!(failed.is_some(), "the truncation failed");
    vmshare_fs::cred::as_server(true);
    let mode = std::fs::metadata(&path).expect("stat").mode();
    assert_eq!(mode & 0o777, 0o660, "nothing was changed");
    b.read(&caller(&member), &f, 0, &mut buf)
        .expect("member reads after the failed SETATTR");
    // Taken by the owner's SETATTR: the member is refused at once.
    let take = Sattr {
        mode: Some(0o400),
        ..Sattr::default()
    };
    b.setattr(&caller(&owner), &f, &take, None)
        .expect("owner takes it");
    assert_eq!(refused(&b), (Some(NfsStat::Acces), Some(NfsStat::Acces)));
    vmshare_fs::cred::as_server(true);
    assert_eq!(std::fs::read(&path).expect("read"), b"SHARED");
}

/// Sets `path`'s access ACL (as the server), in the kernel's xattr form:
/// `(tag, perm, id)` entries, sorted by tag and id. `false` when the
/// filesystem has no ACLs.
fn set_acl(path: &Path, entries: &[(u16, u16, u32)]) -> bool {
    vmshare_fs::cred::as_server(true);
    let mut blob = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        blob.extend_from_slice(&tag.to_le_bytes());
        blob.extend_from_slice(&perm.to_le_bytes());
        blob.extend_from_slice(&id.to_le_bytes());
    }
    match rustix::fs::setxattr(
        path,
        "system.posix_acl_access",
        &blob,
        rustix::fs::XattrFlags::empty(),
    ) {
        Ok(()) => true,
        Err(rustix::io::Errno::OPNOTSUPP) => false,
        Err(e) => panic!("setxattr {}: {e}", path.display()),
    }
}

/// An ACL taken away on the host leaves the mode, owner and group as they
/// were; the descriptors cached for the user it named must not go on
/// serving them, whether the change came in the same timestamp tick as
/// their last use or long after.
#[test]
fn an_acl_change_is_seen_by_the_next_call() {
    if !running_as_root("switch identities") {
        return;
    }
    const UNDEFINED: u32 = u32::MAX;
    let (user_obj, user, group_obj, mask, other) = (0x01, 0x02, 0x04, 0x10, 0x20);
    let acl = |named: u16| {
        [
            (user_obj, 6, UNDEFINED),
            (user, named, 2000),
            (group_obj, 0, UNDEFINED),
            (mask, 6, UNDEFINED),
            (other, 0, UNDEFINED),
        ]
    };
    let t = Tree::new("acl-revoke");
    let (b, root) = served(&t);
    let path = owned_file(&t, "export/shared", b"shared", (1000, 5000), 0o600);
    if !set_acl(&path, &acl(6)) {
        eprintln!("skipped: {} has no POSIX ACLs", path.display());
        return;
    }
    let mode = || {
        vmshare_fs::cred::as_server(true);
        std::fs::metadata(&path).expect("stat").mode() & 0o7777
    };
    // The mask is the group class: 0660, and it stays so below.
    assert_eq!(mode(), 0o660);
    let named = sys_cred(2000, 6000, vec![]);
    let f = b
        .lookup(&caller(&named), &root, b"shared")
        .expect("lookup")
        .fh;
    let read = |b: &FsBackend| {
        let mut buf = [0u8; 6];
        b.read(&caller(&named), &f, 0, &mut buf)
            .err()
            .map(|e| e.status)
    };
    let write = |b: &FsBackend| {
        b.write(&caller(&named), &f, 0, StableHow::Unstable, b"SHARED")
            .err()
            .map(|e| e.status)
    };
    assert_eq!((read(&b), write(&b)), (None, None), "granted by the ACL");
    // At once: the ctime may not even have moved on.
    assert!(set_acl(&path, &acl(4)));
    assert_eq!(mode(), 0o660);
    assert_eq!((read(&b), write(&b)), (None, Some(NfsStat::Acces)));
    // Given back, used, and left alone long enough to be trusted ...
    assert!(set_acl(&path, &acl(6)));
    assert_eq!((read(&b), write(&b)), (None, None));
    std::thread::sleep(std::time::Duration::from_millis(60));
    assert_eq!(read(&b), None);
    assert_eq!(read(&b), None);
    // ... then taken away altogether.
    std::thread::sleep(std::time::Duration::from_millis(60));
    assert!(set_acl(&path, &acl(0)));
    assert_eq!(mode(), 0o660);
    assert_eq!(
        (read(&b), write(&b)),
        (Some(NfsStat::Acces), Some(NfsStat::Acces))
    );
    vmshare_fs::cred::as_server(true);
    assert_eq!(std::fs::read(&path).expect("read"), b"SHARED");
}

/// The owner reads, writes and truncates their own file whatever its
/// mode, as with knfsd: a guest process that created a file read-only
/// (git's objects) writes through the descriptor that created it. Nobody
/// else does; but whoever may execute a file may read it.
#[test]
fn the_owner_writes_a_file_it_created_read_only() {
    if !running_as_root("switch identities") {
        return;
    }
    let t = Tree::new("owner-override");
    let (b, root) = served(&t);
    chmod(&t.p("export"), 0o777);
    let owner = user_cred(1000);
    let other = user_cred(2000);
    let ro = Sattr {
        mode: Some(0o444),
        ..Sattr::default()
    };
    let fh = b
        .create(&caller(&owner), &root, b"object", &CreateHow::Guarded(ro))
        .expect("create")
        .fh
        .expect("handle");
    b.write(&caller(&owner), &fh, 0, StableHow::Unstable, b"blob")
        .expect("the owner writes its read-only file");
    b.commit(&caller(&owner), &fh, 0, 0).expect("commit");
    let status =
        |r: Result<WriteOk, vmshare_proto::backend::Fail<WccData>>| r.err().map(|e| e.status);
    assert_eq!(
        status(b.write(&caller(&other), &fh, 0, StableHow::Unstable, b"evil")),
        Some(NfsStat::Acces),
        "another user may not"
    );
    // A truncation through the descriptor that created it (SETATTR size).
    let cut = Sattr {
        size: Some(2),
        ..Sattr::default()
    };
    b.setattr(&caller(&owner), &fh, &cut, None)
        .expect("the owner truncates its read-only file");
    assert_eq!(
        b.setattr(&caller(&other), &fh, &cut, None)
            .err()
            .map(|e| e.status),
        Some(NfsStat::Acces),
        "another user may not"
    );
    b.write(&caller(&owner), &fh, 2, StableHow::Unstable, b"ob")
        .expect("write");
    // Mode 0 (a guest's fchmod(fd, 0)): the owner still reads it.
    chmod(&t.p("export/object"), 0o000);
    let mut buf = [0u8; 4];
    b.read(&caller(&owner), &fh, 0, &mut buf)
        .expect("the owner reads its mode-0 file");
    assert_eq!(&buf, b"blob");
    assert_eq!(
        b.read(&caller(&other), &fh, 0, &mut buf)
            .err()
            .map(|e| e.status),
        Some(NfsStat::Acces)
    );
    // Whoever may execute a file may read it (the guest reads a binary to
    // run it); without the x bit, or to write, no.
    vmshare_fs::cred::as_server(true);
    owned_file(&t, "export/tool", b"\x7fELF", (0, 0), 0o711);
    owned_file(&t, "export/private", b"\x7fELF", (0, 0), 0o700);
    let tool = b
        .lookup(&caller(&other), &root, b"tool")
        .expect("lookup")
        .fh;
    let private = b
        .lookup(&caller(&other), &root, b"private")
        .expect("lookup")
        .fh;
    b.read(&caller(&other), &tool, 0, &mut buf)
        .expect("an executable file is readable");
    assert_eq!(&buf, b"\x7fELF");
    assert_eq!(
        b.read(&caller(&other), &private, 0, &mut buf)
            .err()
            .map(|e| e.status),
        Some(NfsStat::Acces)
    );
    assert_eq!(
        status(b.write(&caller(&other), &tool, 0, StableHow::Unstable, b"evil")),
        Some(NfsStat::Acces)
    );
    // The write went through as the owner's file, and the mode is as set.
    vmshare_fs::cred::as_server(true);
    let md = std::fs::metadata(t.p("export/object")).expect("stat");
    assert_eq!((md.uid(), md.mode() & 0o7777), (1000, 0));
}

/// Descriptors of this process open for reading and writing on `path`
/// (not the O_PATH ones the handle cache keeps).
fn open_rw_on(path: &Path) -> usize {
    let rw = |fd: &std::ffi::OsStr| {
        let info =
            std::fs::read_to_string(Path::new("/proc/self/fdinfo").join(fd)).unwrap_or_default();
        info.lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
            .is_some_and(|f| f & 3 == 2)
    };
    std::fs::read_dir("/proc/self/fd")
        .expect("fds")
        .filter_map(Result::ok)
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == path))
        .filter(|e| rw(&e.file_name()))
        .count()
}

/// The descriptor CREATE opened serves its caller's WRITEs (no reopen per
/// new file), and only that caller's.
#[test]
fn a_created_file_is_written_through_the_descriptor_that_made_it() {
    if !running_as_root("switch identities") {
        return;
    }
    let t = Tree::new("create-fd");
    let (b, root) = served(&t);
    chmod(&t.p("export"), 0o777);
    let owner = user_cred(1000);
    let other = user_cred(2000);
    let fh = b
        .create(
            &caller(&owner),
            &root,
            b"new",
            &CreateHow::Guarded(Sattr::default()),
        )
        .expect("create")
        .fh
        .expect("handle");
    let path = t.p("export/new");
    assert_eq!(open_rw_on(&path), 1, "CREATE keeps its descriptor");
    b.write(&caller(&owner), &fh, 0, StableHow::Unstable, b"data")
        .expect("write");
    assert_eq!(open_rw_on(&path), 1, "the WRITE used it");
    assert_eq!(
        b.write(&caller(&other), &fh, 0, StableHow::Unstable, b"evil")
            .err()
            .map(|e| e.status),
        Some(NfsStat::Acces),
        "not another caller's: 0644 lets them read only"
    );
    b.remove(&caller(&owner), &root, b"new").expect("remove");
    vmshare_fs::cred::as_server(true);
    assert!(!exists(&path));
}

/// COMMIT on a read-only export is ROFS; CREATE UNCHECKED over a FIFO is
/// EXIST (nfsd's answer) and leaves the FIFO alone.
#[test]
fn commit_on_ro_and_unchecked_create_over_a_fifo() {
    let t = Tree::new("ro-commit");
    let b = backend(&t, read_only());
    let rootc = root_cred();
    let c = caller(&rootc);
    let root = root_fh(&b, &c, "/data");
    let f = b.lookup(&c, &root, b"file").expect("lookup").fh;
    assert_eq!(
        b.commit(&c, &f, 0, 0).err().map(|e| e.status),
        Some(NfsStat::RoFs)
    );
    let t2 = Tree::new("fifo-create");
    let b = backend(&t2, opts());
    let root = root_fh(&b, &c, "/data");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        t2.p("export/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
    let a = Sattr {
        mode: Some(0o600),
        ..Sattr::default()
    };
    assert_eq!(
        b.create(&c, &root, b"fifo", &CreateHow::Unchecked(a))
            .err()
            .map(|e| e.status),
        Some(NfsStat::Exist)
    );
    let md = std::fs::symlink_metadata(t2.p("export/fifo")).expect("stat");
    assert_eq!(md.mode() & 0o7777, 0o644);
}

/// A directory `export/shared` holding files X and Y, and a thread that
/// runs `step` on it (the directory path) over and over until stopped.
struct Renamer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Renamer {
    fn start(t: &Tree, step: impl Fn(&Path) + Send + 'static) -> Renamer {
        let d = t.p("export/shared");
        std::fs::create_dir(&d).expect("mkdir");
        std::fs::write(d.join("X"), "x").expect("write");
        std::fs::write(d.join("Y"), "y").expect("write");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    step(&d);
                }
            })
        };
        Renamer { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("renamer");
    }
}

/// A caller other than root works without CAP_SYS_RESOURCE (which would
/// let its writes pass quotas and take ext4's reserved blocks); root's
/// calls have it back. Meaningful only where the server has it.
#[test]
fn non_root_callers_work_without_the_resource_capability() {
    use rustix::thread::{capabilities, CapabilitySet};
    if !running_as_root("switch identities") {
        return;
    }
    let has = |set: fn(&rustix::thread::CapabilitySets) -> CapabilitySet| {
        set(&capabilities(None).expect("capget")).contains(CapabilitySet::SYS_RESOURCE)
    };
    if !has(|c| c.permitted) {
        eprintln!("skipped: this process has no CAP_SYS_RESOURCE to drop");
        return;
    }
    let t = Tree::new("caps");
    chmod(&t.p("export"), 0o777);
    let (b, root) = served(&t);
    let user = user_cred(1000);
    b.mkdir(&caller(&user), &root, b"by-user", &Sattr::default())
        .expect("mkdir as a user");
    assert!(!has(|c| c.effective), "a user's call kept CAP_SYS_RESOURCE");
    b.mkdir(&caller(&root_cred()), &root, b"by-root", &Sattr::default())
        .expect("mkdir as root");
    assert!(has(|c| c.effective), "root's call did not get it back");
}

/// A LOOKUP's handle and attributes are one object's, even while the name
/// is renamed back and forth: the handle cache was once filled from two
/// separate lookups by name (stat, then handle), and a rename between
/// them cached one file's handle under the other's inode. A fresh backend
/// each round stands for a cache miss. On the old code, one of the two
/// runs tried (10,000 rounds each) caught a wrong pair: it can pass by
/// luck, never fail falsely.
#[test]
fn a_rename_racing_a_lookup_never_pairs_two_files() {
    let t = Tree::new("lookup-race");
    let renamer = Renamer::start(&t, |d| {
        let _ = std::fs::rename(d.join("X"), d.join("t"));
        let _ = std::fs::rename(d.join("Y"), d.join("X"));
        let _ = std::fs::rename(d.join("X"), d.join("Y"));
        let _ = std::fs::rename(d.join("t"), d.join("X"));
    });
    let rootc = root_cred();
    let c = caller(&rootc);
    let mut wrong = Vec::new();
    for _ in 0..10_000 {
        let b = backend(&t, opts());
        let root = root_fh(&b, &c, "/data");
        let dir = b.lookup(&c, &root, b"shared").expect("lookup").fh;
        for name in [&b"X"[..], b"Y"] {
            let Ok(l) = b.lookup(&c, &dir, name) else {
                continue;
            };
            let by_handle = b.getattr(&c, &l.fh).expect("getattr").fileid;
            let claimed = l.attr.map(|a| a.fileid);
            if claimed != Some(by_handle) {
                wrong.push((claimed, by_handle));
            }
        }
    }
    renamer.stop();
    assert!(
        wrong.is_empty(),
        "LOOKUP paired other files' attributes: {wrong:?}"
    );
}

/// Every READDIRPLUS entry that has both, as (attributes' fileid, handle).
struct Pairs(Vec<(u64, FileHandle)>);

impl DirSink for Pairs {
    fn plus(&self) -> bool {
        true
    }
    fn push(&mut self, e: &DirEntry<'_>) -> bool {
        if let (Some(a), Some(fh)) = (e.attr, e.fh) {
            self.0.push((a.fileid, fh));
        }
        true
    }
}

/// The READDIRPLUS form of the test above, with the names swapped
/// atomically (`RENAME_EXCHANGE`). An entry is looked up by name
/// and then opened (a warm handle cache), or opened first (a cold one,
/// which is every fresh backend here after its first entry): either way
/// its handle and attributes must be of one file while names move.
#[test]
fn a_rename_racing_a_listing_never_pairs_two_files() {
    let t = Tree::new("listing-race");
    // X and Y swapped atomically, over and over: each name always names
    // one of the two files, and changes file every few microseconds.
    let renamer = Renamer::start(&t, |d| {
        let (x, y) = (d.join("X"), d.join("Y"));
        let cwd = rustix::fs::CWD;
        let _ = rustix::fs::renameat_with(cwd, &x, cwd, &y, rustix::fs::RenameFlags::EXCHANGE);
    });
    let rootc = root_cred();
    let c = caller(&rootc);
    let (mut wrong, mut pairs) = (Vec::new(), 0usize);
    for round in 0..4_000 {
        // Fresh backends (cold caches) for most rounds, one kept warm for
        // a few listings in a row otherwise.
        let b = backend(&t, opts());
        let root = root_fh(&b, &c, "/data");
        let dir = b.lookup(&c, &root, b"shared").expect("lookup").fh;
        for _ in 0..(1 + round % 4) {
            let mut s = Pairs(Vec::new());
            if b.readdir(&c, &dir, 0, [0; 8], &mut s).is_err() {
                continue;
            }
            for (claimed, fh) in s.0 {
                pairs += 1;
                let by_handle = b.getattr(&c, &fh).expect("getattr").fileid;
                if claimed != by_handle {
                    wrong.push((claimed, by_handle));
                }
            }
        }
    }
    renamer.stop();
    assert!(
        pairs > 1_000,
        "only {pairs} entries with handle and attributes"
    );
    assert!(
        wrong.is_empty(),
        "READDIRPLUS paired other files' attributes: {wrong:?}"
    );
}

/// A creation succeeds whole or leaves nothing. A caller other than root
/// asking for an owner it could not give is given its own (knfsd drops
/// it too): made, then refused the chown, the object stayed behind under
/// a PERM, and the client's retry found EXIST. MKDIR ignores a size; and
/// attributes that do fail take the new object away again.
#[test]
fn a_new_objects_attributes_never_fail_it_halfway() {
    if !running_as_root("switch identities") {
        return;
    }
    let t = Tree::new("newattrs");
    let (b, root) = served(&t);
    chmod(&t.p("export"), 0o1777);
    let user = sys_cred(1000, 1000, vec![4000]);
    let c = caller(&user);
    let give_away = Sattr {
        mode: Some(0o640),
        uid: Some(0),
        gid: Some(4242),
        ..Sattr::default()
    };
    b.create(&c, &root, b"f", &CreateHow::Guarded(give_away))
        .expect("create");
    b.mkdir(&c, &root, b"d", &give_away).expect("mkdir");
    b.symlink(&c, &root, b"l", &give_away, b"target")
        .expect("symlink");
    b.mknod(&c, &root, b"p", &MknodKind::Fifo(give_away))
        .expect("mknod");
    vmshare_fs::cred::as_server(true);
    for n in ["f", "d", "l", "p"] {
        let md = std::fs::symlink_metadata(t.p(&format!("export/{n}"))).expect("stat");
        assert_eq!((md.uid(), md.gid()), (1000, 1000), "{n} is the caller's");
    }
    // A group of the caller's own is given.
    let own_group = Sattr {
        gid: Some(4000),
        ..Sattr::default()
    };
    b.create(&c, &root, b"g", &CreateHow::Unchecked(own_group))
        .expect("create in a group of one's own");
    vmshare_fs::cred::as_server(true);
    assert_eq!(
        std::fs::metadata(t.p("export/g")).expect("stat").gid(),
        4000
    );
    // MKDIR with a size: made, the size ignored.
    let rootc = root_cred();
    let rc = caller(&rootc);
    let sized = Sattr {
        size: Some(10),
        ..Sattr::default()
    };
    b.mkdir(&rc, &root, b"sized", &sized)
        .expect("mkdir with a size");
    // Attributes that fail (a size past the largest file) leave nothing.
    let too_big = Sattr {
        size: Some(u64::MAX),
        ..Sattr::default()
    };
    assert!(b
        .create(&rc, &root, b"huge", &CreateHow::Guarded(too_big))
        .is_err());
    assert!(!exists(&t.p("export/huge")), "the failed file was removed");
    b.create(&rc, &root, b"huge", &CreateHow::Guarded(Sattr::default()))
        .expect("a retry that can succeed does");
    // UNCHECKED over a file the caller may not write finds it; over a
    // directory it is EXIST.
    owned_file(&t, "export/theirs", b"x", (0, 0), 0o444);
    b.create(
        &c,
        &root,
        b"theirs",
        &CreateHow::Unchecked(Sattr::default()),
    )
    .expect("unchecked over a read-only file");
    vmshare_fs::cred::as_server(true);
    assert_eq!(std::fs::read(t.p("export/theirs")).expect("read"), b"x");
    assert_eq!(
        b.create(&c, &root, b"sub", &CreateHow::Unchecked(Sattr::default()))
            .err()
            .map(|f| f.status),
        Some(NfsStat::Exist)
    );
}

/// Offsets, counts and cookies no file or directory reaches get the
/// answers RFC 1813 gives them, not EINVAL from the system call.
#[test]
fn offsets_and_cookies_past_any_file_are_answered_as_the_rfc_says() {
    let t = Tree::new("edges");
    let (b, root) = served(&t);
    let rootc = root_cred();
    let c = caller(&rootc);
    let f = b.lookup(&c, &root, b"file").expect("lookup").fh;
    let mut buf = [0u8; 8];
    for offset in [1 << 63, u64::MAX] {
        let r = b.read(&c, &f, offset, &mut buf).expect("read past i64");
        assert_eq!((r.count, r.eof), (0, true), "at {offset}");
    }
    let w = b.write(&c, &f, (1 << 63) - 2, StableHow::Unstable, b"xyz");
    assert_eq!(w.err().map(|e| e.status), Some(NfsStat::FBig));
    // More than wtmax: a short write, which the client completes.
    let big = vec![7u8; vmshare_proto::MAX_IO as usize + 4];
    let w = b
        .write(&c, &f, 0, StableHow::Unstable, &big)
        .expect("write");
    assert_eq!(w.count, vmshare_proto::MAX_IO);
    let mut s = Collect {
        plus: false,
        max: 10,
        entries: Vec::new(),
    };
    assert_eq!(
        b.readdir(&c, &root, u64::MAX, [0; 8], &mut s)
            .err()
            .map(|e| e.status),
        Some(NfsStat::BadCookie)
    );
    // `.` and `..`: REMOVE answers ACCES (as knfsd), RENAME INVAL (as
    // rename(2)); EXIST is for CREATE.
    assert_eq!(
        b.remove(&c, &root, b".").err().map(|e| e.status),
        Some(NfsStat::Acces)
    );
    for (from, to) in [(&b".."[..], &b"x"[..]), (b"file", b".")] {
        assert_eq!(
            b.rename(&c, &root, from, &root, to).err().map(|e| e.status),
            Some(NfsStat::Inval)
        );
    }
    assert!(exists(&t.p("export/file")));
    // FSINFO gives the filesystem's own largest file where it is known.
    let (_, info) = b.fsinfo(&c, &root).expect("fsinfo");
    let fs = rustix::fs::statfs(t.p("export")).expect("statfs");
    if u64::try_from(fs.f_type) == Ok(0xef53) {
        let bsize = u64::try_from(fs.f_bsize).expect("block size");
        assert_eq!(info.maxfilesize, ((1 << 32) - 1) * bsize);
    } else {
        assert_eq!(info.maxfilesize, i64::MAX as u64);
    }
}

/// A filesystem that gives no file handles (procfs) cannot be served: it
/// is refused at start, saying why, not by every MNT later.
#[test]
fn an_export_without_file_handles_is_refused_at_start() {
    let t = Tree::new("nohandles");
    let e = FsBackend::new(
        vec![ExportConfig::new("/proc", "/p", rule(opts()))],
        &t.p("state"),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("gives no file handles"), "{e:?}");
}

/// MNT reads a path as the exports file does: repeated slashes and `.`
/// components go; `..` is still refused by the walk beneath the export.
#[test]
fn mount_paths_are_read_as_the_exports_file_reads_them() {
    let t = Tree::new("mntpaths");
    let b = backend(&t, opts());
    let cred = root_cred();
    let c = caller(&cred);
    let root = root_fh(&b, &c, "/data");
    for p in ["//data", "/./data/", "/data/."] {
        assert_eq!(b.mount(&c, p.as_bytes()).ok(), Some(root), "{p}");
    }
    let sub = b.lookup(&c, &root, b"sub").expect("sub").fh;
    assert_eq!(b.mount(&c, b"/data//./sub").ok(), Some(sub));
    assert!(b.mount(&c, b"/data/sub/../../other").is_err());
}

/// An export whose directory was removed on the host after the start is
/// refused at MNT (NOENT, and a line in the log), instead of handing out a
/// handle every call of which is STALE.
#[test]
fn an_export_whose_directory_was_removed_is_refused_at_mnt() {
    let t = Tree::new("rmexport");
    let b = backend(&t, opts());
    let cred = root_cred();
    let c = caller(&cred);
    assert!(b.mount(&c, b"/other").is_ok());
    std::fs::remove_dir(t.p("other")).expect("rmdir");
    std::fs::create_dir(t.p("other")).expect("mkdir");
    assert_eq!(b.mount(&c, b"/other").err(), Some(MountStat::NoEnt));
}

/// New objects get exactly the mode asked for, whatever the umask; and
/// the process's umask is left alone (it was set to 0 for the whole
/// process, and `vmshare run` then wrote its cached guest init 0666).
#[test]
fn modes_are_the_clients_and_the_process_umask_is_left_alone() {
    let t = Tree::new("umask");
    use rustix::fs::Mode;
    let before = rustix::process::umask(Mode::from_raw_mode(0o022));
    let worker = std::thread::spawn({
        let t = t.p("");
        move || {
            let b = FsBackend::new(
                vec![ExportConfig::new(t.join("export"), "/data", rule(opts()))],
                &t.join("state"),
            )
            .expect("backend");
            let cred = root_cred();
            let c = caller(&cred);
            let root = root_fh(&b, &c, "/data");
            let a = Sattr {
                mode: Some(0o666),
                ..Sattr::default()
            };
            b.create(&c, &root, b"open", &CreateHow::Guarded(a))
                .expect("create");
        }
    });
    worker.join().expect("worker");
    let now = rustix::process::umask(before);
    assert_eq!(
        now,
        Mode::from_raw_mode(0o022),
        "the process umask is unchanged"
    );
    vmshare_fs::cred::as_server(true);
    let mode = std::fs::metadata(t.p("export/open")).expect("stat").mode();
    assert_eq!(mode & 0o777, 0o666);
}

/// A WRITE the filesystem takes only part of answers OK with the count it
/// took, as knfsd does (RFC 1813 §3.3.7 lets a server write less than
/// asked); the client sends the rest and meets the error then. Failing
/// the call after part of it changed the file told the client nothing
/// was written when the file had grown.
#[test]
fn a_write_the_filesystem_takes_in_part_is_a_short_write() {
    if !running_as_root("mount a small tmpfs") {
        return;
    }
    let t = Tree::new("short-write");
    let point = t.p("export/small");
    std::fs::create_dir_all(&point).expect("mkdir");
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "vmshare-test"])
        .arg(&point)
        .status()
        .expect("run mount");
    assert!(ok.success(), "mount -t tmpfs failed");
    let _mounted = Mounted(point.clone());
    let cred = root_cred();
    let c = caller(&cred);
    let (b, root) = served(&t);
    let small = b.lookup(&c, &root, b"small").expect("small").fh;
    let f = b
        .create(&c, &small, b"f", &CreateHow::Unchecked(Sattr::default()))
        .expect("create")
        .fh
        .expect("handle");
    let data = vec![7u8; 1 << 20];
    let w = b
        .write(&c, &f, 0, StableHow::FileSync, &data)
        .expect("a short write, not an error");
    assert!(
        w.count > 0 && (w.count as usize) < data.len(),
        "{}",
        w.count
    );
    let size = std::fs::metadata(point.join("f")).expect("stat").len();
    assert_eq!(size, u64::from(w.count));
    assert_eq!(w.wcc.after.map(|a| a.size), Some(size));
    // The rest, as the client sends it, meets the full disk.
    let rest = b.write(&c, &f, size, StableHow::FileSync, &data[w.count as usize..]);
    assert_eq!(rest.err().map(|f| f.status), Some(NfsStat::NoSpc));

    // Past the largest size the filesystem allows: the byte below it is
    // written, the one at it is refused on the retry.
    let file = b.lookup(&c, &root, b"file").expect("file").fh;
    let max = b.fsinfo(&c, &root).expect("fsinfo").1.maxfilesize;
    if i64::try_from(max + 1).is_ok() {
        let w = b
            .write(&c, &file, max - 1, StableHow::Unstable, b"AB")
            .expect("a short write at the size limit");
        assert_eq!(w.count, 1);
        let rest = b.write(&c, &file, max, StableHow::Unstable, b"B");
        assert_eq!(rest.err().map(|f| f.status), Some(NfsStat::FBig));
    }
}

/// open(O_TRUNC) and `>` from the Linux client arrive as one SETATTR of
/// size 0 and "mtime: server time". A writer who does not own the file
/// (mode 0666, or its group's 0664) may do that locally; here the file
/// was emptied, and then the time change, asked again after the
/// truncation had made it, was refused as an owner's act: EPERM, and the
/// data gone. A time of the client's choosing stays the owner's.
#[test]
fn a_writer_who_is_not_the_owner_may_truncate() {
    if !running_as_root("act as other users") {
        return;
    }
    let t = Tree::new("trunc-writer");
    let path = owned_file(&t, "export/world.txt", b"keep me\n", (0, 0), 0o666);
    let (b, root) = served(&t);
    let writer = sys_cred(1001, 1001, vec![]);
    let c = caller(&writer);
    let fh = b.lookup(&c, &root, b"world.txt").expect("lookup").fh;
    let before = std::fs::metadata(&path)
        .expect("stat")
        .modified()
        .expect("mtime");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let trunc = Sattr {
        size: Some(0),
        mtime: SetTime::ServerTime,
        ..Sattr::default()
    };
    b.setattr(&c, &fh, &trunc, None)
        .expect("truncate as a writer");
    let md = std::fs::metadata(&path).expect("stat");
    assert_eq!(md.len(), 0);
    assert!(md.modified().expect("mtime") > before);
    b.write(&c, &fh, 0, StableHow::FileSync, b"replaced\n")
        .expect("write");
    assert_eq!(std::fs::read(&path).expect("read"), b"replaced\n");
    let set = Sattr {
        mtime: SetTime::ClientTime(NfsTime {
            seconds: 1,
            nseconds: 0,
        }),
        ..Sattr::default()
    };
    let r = b.setattr(&c, &fh, &set, None);
    assert_eq!(r.err().map(|f| f.status), Some(NfsStat::Perm));
}

/// Without handle opens, a file a guest has open (it read or wrote it,
/// or asked ACCESS as an open does) stays findable, with its directories, however many other files a
/// walk looks up in between: the origins of files only looked up go
/// first. Before, origins went in no order, and after a walk of 100,000
/// files the files opened before it were STALE (an append was lost).
#[test]
fn without_handle_opens_a_file_in_use_outlives_a_walk() {
    let t = Tree::new("unprivileged-walk");
    std::fs::create_dir_all(t.p("export/x/y/z")).expect("mkdir");
    std::fs::create_dir_all(t.p("export/walk")).expect("mkdir");
    // Files a guest holds open, read (a third of the origins kept) or
    // only opened (ACCESS, as the Linux client asks at open).
    const OPEN: usize = 20;
    const OPENED: usize = 10;
    for i in 0..OPEN + OPENED {
        std::fs::write(t.p(&format!("export/x/y/z/open{i}.log")), "first\n").expect("write");
    }
    for i in 0..600 {
        std::fs::write(t.p(&format!("export/walk/f{i}")), "w").expect("write");
    }
    // 16 descriptors kept, so 64 origins.
    let b = backend(&t, opts()).as_if_unprivileged(16);
    let cred = root_cred();
    let c = caller(&cred);
    let root = root_fh(&b, &c, "/data");
    let mut dir = root;
    for name in ["x", "y", "z"] {
        dir = b.lookup(&c, &dir, name.as_bytes()).expect("lookup").fh;
    }
    let logs: Vec<FileHandle> = (0..OPEN + OPENED)
        .map(|i| {
            let fh = b
                .lookup(&c, &dir, format!("open{i}.log").as_bytes())
                .expect("open.log")
                .fh;
            if i < OPEN {
                let mut buf = [0u8; 64];
                assert_eq!(b.read(&c, &fh, 0, &mut buf).expect("read").count, 6);
            } else {
                b.access(&c, &fh, 0x3f).expect("access");
            }
            fh
        })
        .collect();
    let walk = b.lookup(&c, &root, b"walk").expect("walk").fh;
    for i in 0..600 {
        let f = b
            .lookup(&c, &walk, format!("f{i}").as_bytes())
            .expect("lookup")
            .fh;
        let _ = b.getattr(&c, &f);
    }
    for (i, log) in logs.iter().enumerate() {
        let w = b
            .write(&c, log, 6, StableHow::FileSync, b"second\n")
            .unwrap_or_else(|f| panic!("open{i}.log is not found after the walk: {f:?}"));
        assert_eq!(w.count, 7);
        assert_eq!(
            std::fs::read_to_string(t.p(&format!("export/x/y/z/open{i}.log"))).expect("read"),
            "first\nsecond\n"
        );
    }
    assert!(b.getattr(&c, &dir).is_ok(), "and their directory");
}

/// A loop device on an image file, detached on drop.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.0])
            .status();
    }
}

fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("run a tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// On a `sync` export every change is on the disk when it is answered:
/// a host that crashed right after the replies keeps them. The export is
/// an ext4 on a loop device that commits its journal only every 60 s, and
/// a copy of the image taken just after the calls is what a crash would
/// have left; e2fsck replays its journal. With `async` (before there was
/// a `sync`), the copy had none of these changes.
#[test]
fn a_sync_export_has_each_change_on_disk_when_it_answers() {
    if !running_as_root("mount an ext4 image") {
        return;
    }
    let t = Tree::new("sync-export");
    let img = t.p("disk.img");
    let mnt = t.p("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(64 << 20))
        .expect("image file");
    run_ok(
        std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&img),
    );
    let dev = run_ok(
        std::process::Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&img),
    );
    let _loop = Loop(dev.trim().to_string());
    run_ok(
        std::process::Command::new("mount")
            .args(["-o", "commit=60", dev.trim()])
            .arg(&mnt),
    );
    let _mounted = Mounted(mnt.clone());
    for name in ["old", "gone", "chmodme"] {
        std::fs::write(mnt.join(name), name).expect("write");
    }
    rustix::fs::sync();

    let sync = ExportOptions {
        sync: true,
        ..opts()
    };
    let b = FsBackend::new(
        vec![ExportConfig::new(&mnt, "/data", rule(sync))],
        &t.p("state"),
    )
    .expect("backend");
    let cred = root_cred();
    let c = caller(&cred);
    let root = root_fh(&b, &c, "/data");
    // What the disk holds now, its journal replayed as after a crash:
    // `debugfs -R request` on a copy of the image. After every call, since
    // on ext4 one commit carries every change before it.
    let on_disk = |request: &str| {
        let copy = t.p("crash.img");
        std::fs::copy(&img, &copy).expect("copy the image");
        let _ = std::process::Command::new("e2fsck")
            .arg("-fy")
            .arg(&copy)
            .output()
            .expect("e2fsck");
        run_ok(
            std::process::Command::new("debugfs")
                .args(["-R", request])
                .arg(&copy),
        )
    };
    let names = || {
        on_disk("ls -l /")
            .lines()
            .filter_map(|l| l.split_whitespace().last().map(str::to_string))
            .collect::<Vec<_>>()
    };
    let has = |name: &str| names().iter().any(|n| n == name);
    let attrs = Sattr {
        mode: Some(0o644),
        ..Sattr::default()
    };
    let made = b
        .create(&c, &root, b"made", &CreateHow::Guarded(attrs))
        .expect("CREATE")
        .fh
        .expect("handle");
    assert!(has("made"), "CREATE is not on the disk");
    b.mkdir(&c, &root, b"dir", &attrs).expect("MKDIR");
    assert!(has("dir"), "MKDIR is not on the disk");
    b.symlink(&c, &root, b"ln", &attrs, b"target")
        .expect("SYMLINK");
    assert!(has("ln"), "SYMLINK is not on the disk");
    b.link(&c, &made, &root, b"made2").expect("LINK");
    assert!(has("made2"), "LINK is not on the disk");
    let stat = on_disk("stat /made");
    assert!(
        stat.contains("Links: 2"),
        "LINK's count is not on the disk:\n{stat}"
    );
    b.rename(&c, &root, b"old", &root, b"moved")
        .expect("RENAME");
    let after = names();
    assert!(
        after.iter().any(|n| n == "moved") && !after.iter().any(|n| n == "old"),
        "RENAME is not on the disk: {after:?}"
    );
    b.remove(&c, &root, b"gone").expect("REMOVE");
    assert!(!has("gone"), "REMOVE is not on the disk");
    let chmodme = b.lookup(&c, &root, b"chmodme").expect("LOOKUP").fh;
    let mode = Sattr {
        mode: Some(0o600),
        ..Sattr::default()
    };
    b.setattr(&c, &chmodme, &mode, None).expect("SETATTR");
    let stat = on_disk("stat /chmodme");
    assert!(
        stat.contains("Mode:  0600"),
        "SETATTR is not on the disk:\n{stat}"
    );
}

/// Descriptors this process holds on `dir` or anything beneath it.
fn open_beneath(dir: &Path) -> usize {
    open_where(|l| l.starts_with(dir))
}

/// What SIGHUP does to `vmshare serve`: a kept export keeps its handles
/// and takes its new options at once, a removed one is STALE and let go
/// of, a new one mounts, and a reload that cannot be done changes nothing.
#[test]
fn reload_keeps_handles_applies_options_and_lets_removed_exports_go() {
    let t = Tree::new("reload");
    let (b, root) = served(&t);
    let cred = root_cred();
    let c = caller(&cred);
    let file = b.lookup(&c, &root, b"file").expect("lookup").fh;
    b.write(&c, &file, 0, StableHow::Unstable, b"before")
        .expect("write");
    // Something of /other in every cache: its root, a file looked up and
    // written through.
    let other = root_fh(&b, &c, "/other");
    let o = b
        .create(&c, &other, b"o", &CreateHow::Unchecked(Sattr::default()))
        .expect("create")
        .fh
        .expect("handle");
    b.write(&c, &o, 0, StableHow::Unstable, b"other")
        .expect("write");
    assert!(open_beneath(&t.p("other")) > 0);
    // The new export sits in a directory only root may search, and this
    // thread last acted for an ordinary user: the reload still opens it,
    // as the server.
    std::fs::create_dir_all(t.p("private/third")).expect("mkdir");
    chmod(&t.p("private"), 0o700);
    let user = user_cred(1000);
    assert!(b.lookup(&caller(&user), &root, b"file").is_ok());

    let r = b
        .reload(vec![
            ExportConfig::new(t.p("export"), "/data", rule(read_only())),
            ExportConfig::new(t.p("private/third"), "/third", rule(opts())),
        ])
        .expect("reload");
    assert_eq!(r.added, ["/third"]);
    assert_eq!(r.removed, ["/other"]);
    assert_eq!(r.changed, ["/data"]);
    assert_eq!(r.unchanged, 0);
    assert!(r.closed > 0, "{r:?}");
    // Kept: the handle held before works, under the new options.
    assert_eq!(b.getattr(&c, &file).expect("getattr").size, 6);
    assert_eq!(
        b.write(&c, &file, 0, StableHow::Unstable, b"after")
            .err()
            .map(|f| f.status),
        Some(NfsStat::RoFs)
    );
    // Removed: STALE, unmountable, and nothing of it held open.
    assert_eq!(b.getattr(&c, &o).err(), Some(NfsStat::Stale));
    assert_eq!(b.getattr(&c, &other).err(), Some(NfsStat::Stale));
    assert_eq!(b.mount(&c, b"/other").err(), Some(MountStat::NoEnt));
    assert_eq!(open_beneath(&t.p("other")), 0);
    // Added.
    let third = root_fh(&b, &c, "/third");
    b.create(&c, &third, b"n", &CreateHow::Guarded(Sattr::default()))
        .expect("create in the new export");
    assert!(exists(&t.p("private/third/n")));
    assert_eq!(
        b.exports()
            .iter()
            .map(|e| e.mount_path.as_str())
            .collect::<Vec<_>>(),
        ["/data", "/third"]
    );

    // Reloads that cannot be done change nothing: a directory that is
    // not there, two exports on one mount path.
    let kept = b.exports();
    assert!(b
        .reload(vec![
            ExportConfig::new(t.p("export"), "/data", rule(opts())),
            ExportConfig::new(t.p("missing"), "/missing", rule(opts())),
        ])
        .is_err());
    assert!(matches!(
        b.reload(vec![
            ExportConfig::new(t.p("export"), "/data", rule(opts())),
            ExportConfig::new(t.p("private/third"), "/data", rule(opts())),
        ]),
        Err(vmshare_fs::FsError::Duplicate { .. })
    ));
    assert_eq!(b.exports(), kept);
    assert_eq!(
        b.write(&c, &file, 0, StableHow::Unstable, b"after")
            .err()
            .map(|f| f.status),
        Some(NfsStat::RoFs),
        "still read-only"
    );
    assert!(b.getattr(&c, &third).is_ok());

    // A directory replaced on the host is served anew: the old one's
    // handles are STALE, the new one mounts.
    std::fs::remove_dir_all(t.p("private/third")).expect("rm");
    std::fs::create_dir(t.p("private/third")).expect("mkdir");
    assert_eq!(b.mount(&c, b"/third").err(), Some(MountStat::NoEnt));
    let r = b.reload(kept).expect("reload");
    assert_eq!(
        (r.added.as_slice(), r.removed.as_slice()),
        (&["/third".to_string()][..], &["/third".to_string()][..])
    );
    assert_eq!(r.unchanged, 1);
    assert_eq!(b.getattr(&c, &third).err(), Some(NfsStat::Stale));
    let third = root_fh(&b, &c, "/third");
    assert!(b.getattr(&c, &third).is_ok());
}

/// Without the capability to open handles, what the caches keep is the
/// only way back to a file: a reload must keep that for the exports it
/// keeps.
#[test]
fn reload_without_handle_opens_keeps_the_kept_exports_handles() {
    let t = Tree::new("reload-unpriv");
    let b = backend(&t, opts()).as_if_unprivileged(1000);
    let cred = root_cred();
    let c = caller(&cred);
    let root = root_fh(&b, &c, "/data");
    let sub = b.lookup(&c, &root, b"sub").expect("lookup").fh;
    let file = b.lookup(&c, &root, b"file").expect("lookup").fh;
    let other = root_fh(&b, &c, "/other");
    let r = b
        .reload(vec![ExportConfig::new(
            t.p("export"),
            "/data",
            rule(opts()),
        )])
        .expect("reload");
    assert_eq!(r.removed, ["/other"]);
    assert_eq!(r.unchanged, 1);
    assert!(b.getattr(&c, &sub).is_ok());
    assert_eq!(b.getattr(&c, &file).expect("getattr").size, 6);
    assert_eq!(b.getattr(&c, &other).err(), Some(NfsStat::Stale));
}

/// LINK of a symlink handle links the symlink, never its target: the
/// target may be a host file outside the export on the same filesystem.
/// A guest's symlink `s` at the export's root pointing at the tree's
/// `secret`, outside the export.
fn symlink_to_secret(b: &FsBackend, c: &Caller<'_>, t: &Tree, root: &FileHandle) -> FileHandle {
    let target = t.p("secret");
    b.symlink(
        c,
        root,
        b"s",
        &Sattr::default(),
        target.to_str().expect("utf8").as_bytes(),
    )
    .expect("symlink")
    .fh
    .expect("fh")
}

#[test]
fn link_of_a_symlink_never_links_its_target() {
    let t = Tree::new("rv-link-sym");
    let (b, root) = served(&t);
    let cred = root_cred();
    let c = caller(&cred);
    let l = symlink_to_secret(&b, &c, &t, &root);
    // Linking the link itself is fine; linking its target is not.
    let _ = b.link(&c, &l, &root, b"hard");
    if let Ok(md) = std::fs::symlink_metadata(t.p("export/hard")) {
        assert!(md.file_type().is_symlink(), "linked the target: {md:?}");
    }
    assert_eq!(std::fs::metadata(t.p("secret")).expect("stat").nlink(), 1);
}

/// SETATTR of a symlink's times or mode touches the link, not its target.
#[test]
fn setattr_of_a_symlink_never_reaches_its_target() {
    if !running_as_root("give a link another owner") {
        return;
    }
    let t = Tree::new("rv-setattr-sym");
    let (b, root) = served(&t);
    let cred = root_cred();
    let c = caller(&cred);
    let before = std::fs::metadata(t.p("secret")).expect("stat");
    let l = symlink_to_secret(&b, &c, &t, &root);
    let a = Sattr {
        mode: Some(0o777),
        atime: SetTime::ClientTime(NfsTime {
            seconds: 12345,
            nseconds: 0,
        }),
        mtime: SetTime::ClientTime(NfsTime {
            seconds: 12345,
            nseconds: 0,
        }),
        ..Sattr::default()
    };
    b.setattr(&c, &l, &a, None).expect("setattr of the link");
    let _ = b.setattr(
        &c,
        &l,
        &Sattr {
            uid: Some(1234),
            gid: Some(1234),
            ..Sattr::default()
        },
        None,
    );
    let after = std::fs::metadata(t.p("secret")).expect("stat");
    assert_eq!(after.mtime(), before.mtime());
    assert_eq!(after.mode(), before.mode());
    assert_eq!(after.uid(), before.uid());
    let lm = std::fs::symlink_metadata(t.p("export/s")).expect("stat");
    assert_eq!(
        (lm.mtime(), lm.uid()),
        (12345, 1234),
        "the link itself changed"
    );
}

/// A squashed caller cannot make a device, nor can a plain user.
#[test]
fn mknod_of_a_device_as_a_squashed_or_plain_user_is_refused() {
    if !running_as_root("switch identities") {
        return;
    }
    let t = Tree::new("rv-mknod");
    let b = backend(
        &t,
        ExportOptions {
            squash: Squash::Root,
            ..opts()
        },
    );
    chmod(&t.p("export"), 0o777);
    for (i, cred) in [root_cred(), user_cred(1000), Credential::None]
        .iter()
        .enumerate()
    {
        let c = caller(cred);
        let root = root_fh(&b, &c, "/data");
        let name = format!("dev{i}");
        let r = b.mknod(
            &c,
            &root,
            name.as_bytes(),
            &MknodKind::Blk(Sattr::default(), (8, 0)),
        );
        assert!(r.is_err(), "{i}");
        assert!(!exists(&t.p(&format!("export/{name}"))), "{i}");
    }
}

/// READ, WRITE, COMMIT and truncation of a device or FIFO are refused
/// without opening it (a FIFO would hang, a device would be read).
#[test]
fn io_on_special_files_is_refused() {
    if !running_as_root("make a device node") {
        return;
    }
    let t = Tree::new("rv-special");
    let (b, root) = served(&t);
    let cred = root_cred();
    let c = caller(&cred);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        t.p("export/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o666),
        0,
    )
    .expect("mkfifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        t.p("export/null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .expect("mknod");
    for name in [&b"fifo"[..], b"null"] {
        let f = b.lookup(&c, &root, name).expect("lookup").fh;
        let mut buf = [0u8; 8];
        assert!(b.read(&c, &f, 0, &mut buf).is_err());
        assert!(b.write(&c, &f, 0, StableHow::FileSync, b"x").is_err());
        assert!(b.commit(&c, &f, 0, 0).is_err());
        assert!(b
            .setattr(
                &c,
                &f,
                &Sattr {
                    size: Some(0),
                    ..Sattr::default()
                },
                None
            )
            .is_err());
        b.setattr(
            &c,
            &f,
            &Sattr {
                mode: Some(0o600),
                ..Sattr::default()
            },
            None,
        )
        .expect("chmod");
    }
}

/// RENAME and LINK across a filesystem mounted inside the export fail
/// with XDEV and change nothing.
#[test]
fn rename_and_link_across_a_mount_point_are_xdev() {
    if !running_as_root("mount a tmpfs") {
        return;
    }
    let t = Tree::new("rv-xdev");
    let point = t.p("export/sub");
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "vmshare-test"])
        .arg(&point)
        .status()
        .expect("run mount");
    assert!(ok.success());
    let _m = Mounted(point.clone());
    let (b, root) = served(&t);
    let cred = root_cred();
    let c = caller(&cred);
    let sub = b.lookup(&c, &root, b"sub").expect("sub").fh;
    let f = b.lookup(&c, &root, b"file").expect("file").fh;
    assert_eq!(
        b.rename(&c, &root, b"file", &sub, b"x")
            .err()
            .map(|e| e.status),
        Some(NfsStat::XDev)
    );
    assert_eq!(
        b.link(&c, &f, &sub, b"y").err().map(|e| e.status),
        Some(NfsStat::XDev)
    );
    // The mount point itself is not moved or removed.
    assert!(b.rename(&c, &root, b"sub", &root, b"sub2").is_err());
    assert!(b.rmdir(&c, &root, b"sub").is_err());
}

/// A single-file export serves one file of its directory. A handle a
/// guest kept from an earlier server (the key is kept in the state
/// directory) that exported the whole directory, read-only, under the
/// same mount path (`vmshare run` names its exports `/v0`, `/v1`...),
/// must not reach the file's siblings, nor write them.
#[test]
fn a_single_file_export_takes_no_handle_of_a_whole_directory_export() {
    let t = Tree::new("rv-single-id");
    std::fs::write(t.p("export/secret-sibling"), "no").expect("write");
    let cred = root_cred();
    let c = caller(&cred);
    let (sibling, sub) = {
        let whole = ExportConfig::new(t.p("export"), "/v0", rule(read_only()));
        let b = FsBackend::new(vec![whole], &t.p("state")).expect("backend");
        let root = root_fh(&b, &c, "/v0");
        (
            b.lookup(&c, &root, b"secret-sibling").expect("lookup").fh,
            b.lookup(&c, &root, b"sub").expect("lookup").fh,
        )
    };
    let mut one = ExportConfig::new(t.p("export"), "/v0", rule(opts()));
    one.single_file = Some("file".into());
    let b = FsBackend::new(vec![one], &t.p("state")).expect("backend");
    let mut buf = [0u8; 8];
    assert_eq!(b.getattr(&c, &sibling).err(), Some(NfsStat::Stale));
    assert!(b.read(&c, &sibling, 0, &mut buf).is_err());
    assert!(b
        .write(&c, &sibling, 0, StableHow::FileSync, b"pwned")
        .is_err());
    assert!(b
        .create(&c, &sub, b"planted", &CreateHow::Guarded(Sattr::default()))
        .is_err());
    assert_eq!(
        std::fs::read_to_string(t.p("export/secret-sibling")).expect("read"),
        "no"
    );
    assert!(!exists(&t.p("export/sub/planted")));
    // The other way round too: a handle of the one file's export is not
    // one of a later whole-directory export.
    let root = root_fh(&b, &c, "/v0");
    let file = b.lookup(&c, &root, b"file").expect("lookup").fh;
    drop(b);
    let whole = ExportConfig::new(t.p("export"), "/v0", rule(opts()));
    let b = FsBackend::new(vec![whole], &t.p("state")).expect("backend");
    assert_eq!(b.getattr(&c, &file).err(), Some(NfsStat::Stale));
}
