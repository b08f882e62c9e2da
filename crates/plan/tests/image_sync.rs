#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Real images (mkfs.ext4, mkfs.erofs, debugfs) and sync-back on temp dirs.

use std::fs;
use std::path::Path;

use vmshare_plan::image::{build_image, detect_format, extract_ext4, ImageError};
use vmshare_plan::plan::ImageContent;
use vmshare_plan::sync::{sync_back, Snapshot, SyncError};
use vmshare_plan::ImageFormat;

fn tree(dir: &Path, files: &[(&str, &str)]) {
    for (name, body) in files {
        let p = dir.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, body).unwrap();
    }
}

/// `dir` made whole into the image `img`, with the default size.
fn build_whole(img: &Path, format: ImageFormat, dir: &Path) -> Result<(), ImageError> {
    build_image(img, format, &[content(dir, "")], None, &mut |_| {})
}

fn content(dir: &Path, subdir: &str) -> ImageContent {
    ImageContent {
        host_path: dir.to_path_buf(),
        subdir: subdir.into(),
    }
}

/// What a copy volume goes through before the guest's changes: `host`
/// built into an ext4 image in `dir`, and extracted again to `dir/guest`.
fn copy_volume_round_trip(dir: &Path, host: &Path) -> std::path::PathBuf {
    let img = dir.join("copy.ext4");
    build_image(
        &img,
        ImageFormat::Ext4,
        &[content(host, "")],
        None,
        &mut |_| {},
    )
    .unwrap();
    let guest = dir.join("guest");
    extract_ext4(&img, "", &guest).unwrap();
    guest
}

#[test]
fn ext4_image_round_trips_through_debugfs() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src, &[("a.txt", "alpha"), ("sub/b.txt", "beta")]);
    let img = t.path().join("vol.ext4");
    let mut calls = 0;
    build_image(
        &img,
        ImageFormat::Ext4,
        &[content(&src, "")],
        None,
        &mut |p| {
            calls += 1;
            assert!(p.done <= p.total);
        },
    )
    .unwrap();
    assert!(calls >= 1);
    assert_eq!(fs::metadata(&img).unwrap().len(), 32 << 20);
    let out = t.path().join("out");
    extract_ext4(&img, "", &out).unwrap();
    assert_eq!(fs::read_to_string(out.join("sub/b.txt")).unwrap(), "beta");
    assert_eq!(fs::read_to_string(out.join("a.txt")).unwrap(), "alpha");
    assert!(!out.join("lost+found").exists());
}

#[test]
fn erofs_image_has_the_erofs_magic() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src, &[("model.bin", "weights")]);
    let img = t.path().join("vol.erofs");
    build_whole(&img, ImageFormat::Erofs, &src).unwrap();
    let bytes = fs::read(&img).unwrap();
    assert_eq!(&bytes[1024..1028], &0xE0F5_E1E2u32.to_le_bytes());
}

/// An erofs image is built outside /tmp's filesystem too: mkfs.erofs's
/// chunked files go through a temporary file in /tmp, copied with
/// copy_file_range, and every such build failed with "Input/output
/// error" (`/dev/shm` here; `$HOME` where /tmp is a tmpfs).
#[test]
fn an_erofs_image_builds_outside_tmps_filesystem() {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &str| fs::metadata(p).map(|m| m.dev()).ok();
    if dev("/dev/shm").is_none() || dev("/dev/shm") == dev("/tmp") {
        eprintln!("skipped: /dev/shm is not another filesystem than /tmp here");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src, &[("a", "alpha"), ("d/b", "beta")]);
    let img = std::path::PathBuf::from(format!(
        "/dev/shm/vmshare-erofs-{}.erofs",
        std::process::id()
    ));
    let r = build_whole(&img, ImageFormat::Erofs, &src);
    let bytes = fs::read(&img);
    let _ = fs::remove_file(&img);
    r.unwrap();
    assert_eq!(&bytes.unwrap()[1024..1028], &0xE0F5_E1E2u32.to_le_bytes());
}

/// `--rootfs IMAGE` tells ext4 from erofs by the superblock, whatever the
/// file is called, and anything else (text, a short file) is neither.
#[test]
fn formats_are_detected_by_magic_not_by_name() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src, &[("etc/os-release", "ID=test\n")]);
    for (format, name) in [
        (ImageFormat::Ext4, "root.img"),
        (ImageFormat::Erofs, "root.ext4"),
    ] {
        let img = t.path().join(name);
        build_image(&img, format, &[content(&src, "")], None, &mut |_| {}).unwrap();
        assert_eq!(detect_format(&img).unwrap(), Some(format), "{name}");
    }
    let text = t.path().join("notes.erofs");
    fs::write(&text, "x".repeat(4096)).unwrap();
    assert_eq!(detect_format(&text).unwrap(), None);
    let short = t.path().join("short");
    fs::write(&short, "tiny").unwrap();
    assert_eq!(detect_format(&short).unwrap(), None);
    assert!(detect_format(&t.path().join("missing")).is_err());
}

#[test]
fn packed_image_holds_each_volume_in_its_subdirectory() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    tree(&a, &[("x", "from a")]);
    tree(&b, &[("x", "from b")]);
    let img = t.path().join("packed.ext4");
    build_image(
        &img,
        ImageFormat::Ext4,
        &[content(&a, "v0"), content(&b, "v1")],
        None,
        &mut |_| {},
    )
    .unwrap();
    assert!(
        !t.path().join("packed.contents.d").exists(),
        "scratch left behind"
    );
    let out = t.path().join("v1");
    extract_ext4(&img, "v1", &out).unwrap();
    assert_eq!(fs::read_to_string(out.join("x")).unwrap(), "from b");
}

#[test]
fn build_refusals() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src, &[("f", &"x".repeat(100_000))]);
    let img = t.path().join("small.ext4");
    let e = build_image(
        &img,
        ImageFormat::Ext4,
        &[content(&src, "")],
        Some(4096),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(e, ImageError::TooSmall { .. }), "{e}");
    fs::write(&img, "x").unwrap();
    let e = build_whole(&img, ImageFormat::Ext4, &src).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("exists; remove it or choose another output"),
        "{e}"
    );
    let e = build_image(
        &t.path().join("o.ext4"),
        ImageFormat::Ext4,
        &[content(&t.path().join("nope"), "")],
        None,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(e, ImageError::NotADirectory(_)));
}

/// An image is built as `OUTPUT.partial` and renamed when complete: built
/// in place, a killed build left a plausible image under the output's
/// name (mkfs.ext4 finishes on its own, without the debugfs fix-ups).
/// A failure, sizing included, leaves neither file; a leftover
/// `.partial` is refused by name.
#[test]
fn the_output_appears_only_when_complete() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src, &[("f", "x")]);
    for (name, format) in [
        ("o.ext4", ImageFormat::Ext4),
        ("o.erofs", ImageFormat::Erofs),
    ] {
        let img = t.path().join(name);
        let partial = t.path().join(format!("{name}.partial"));
        let mut seen = false;
        build_image(&img, format, &[content(&src, "")], None, &mut |_| {
            if partial.exists() {
                seen = true;
                assert!(!img.exists(), "{name} appeared before it was complete");
            }
        })
        .unwrap();
        assert!(seen, "{name} was not built as {}", partial.display());
        assert_eq!(detect_format(&img).unwrap(), Some(format));
        assert!(!partial.exists());

        // What a killed build leaves: refused, and the output not made.
        fs::remove_file(&img).unwrap();
        fs::write(&partial, "left over").unwrap();
        let e = build_image(&img, format, &[content(&src, "")], None, &mut |_| {});
        let e = e.unwrap_err();
        assert!(matches!(e, ImageError::PartialExists(_)), "{e}");
        assert!(!img.exists());
        assert_eq!(fs::read_to_string(&partial).unwrap(), "left over");
        fs::remove_file(&partial).unwrap();
    }
    // A size no file can have (set_len refuses it anywhere): the sized
    // file had been left behind, and the next build refused it.
    let img = t.path().join("huge.ext4");
    let e = build_image(
        &img,
        ImageFormat::Ext4,
        &[content(&src, "")],
        Some(u64::MAX),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("sizing "), "{e}");
    assert!(!img.exists() && !t.path().join("huge.ext4.partial").exists());
}

/// An output directory that does not exist is named: mkfs.erofs said
/// only the last line of its usage, "Available compressors are: ...".
#[test]
fn a_missing_output_directory_is_named_for_erofs_too() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src, &[("f", "x")]);
    for name in ["o.erofs", "o.ext4"] {
        let format = if name.ends_with("erofs") {
            ImageFormat::Erofs
        } else {
            ImageFormat::Ext4
        };
        let img = t.path().join("missing").join(name);
        let e = build_image(&img, format, &[content(&src, "")], None, &mut |_| {}).unwrap_err();
        let e = e.to_string();
        assert!(
            e.starts_with(&format!("creating {}.partial: ", img.display()))
                && e.contains("No such file"),
            "{e}"
        );
    }
}

#[test]
fn sync_back_applies_guest_changes() {
    let t = tempfile::tempdir().unwrap();
    let host = t.path().join("host");
    tree(
        &host,
        &[
            ("keep", "same"),
            ("edit", "old"),
            ("gone", "bye"),
            ("d/old", "x"),
        ],
    );
    let baseline = Snapshot::take(&host).unwrap();
    // What the guest would have done, applied to the extracted image.
    let guest = copy_volume_round_trip(t.path(), &host);
    fs::write(guest.join("edit"), "new and longer").unwrap();
    fs::remove_file(guest.join("gone")).unwrap();
    fs::remove_dir_all(guest.join("d")).unwrap();
    tree(&guest, &[("added/f", "hello")]);
    let report = sync_back(&host, &guest, &baseline, &t.path().join("kept")).unwrap();
    assert_eq!(
        fs::read_to_string(host.join("edit")).unwrap(),
        "new and longer"
    );
    assert_eq!(fs::read_to_string(host.join("added/f")).unwrap(), "hello");
    assert_eq!(fs::read_to_string(host.join("keep")).unwrap(), "same");
    assert!(!host.join("gone").exists() && !host.join("d").exists());
    assert_eq!(report.written, 2, "{report:?}");
    assert!(!t.path().join("kept").exists());
}

#[test]
fn sync_back_refuses_when_host_changed_and_keeps_both() {
    let t = tempfile::tempdir().unwrap();
    let host = t.path().join("host");
    tree(&host, &[("f", "v1")]);
    let baseline = Snapshot::take(&host).unwrap();
    let guest = t.path().join("guest");
    tree(&guest, &[("f", "guest version")]);
    fs::write(host.join("f"), "host edit").unwrap();
    let kept = t.path().join("host.guest");
    let e = sync_back(&host, &guest, &baseline, &kept).unwrap_err();
    assert!(matches!(e, SyncError::HostChanged { .. }));
    assert!(
        e.to_string()
            .contains("changed on the host while the VM ran (f)"),
        "{e}"
    );
    assert_eq!(fs::read_to_string(host.join("f")).unwrap(), "host edit");
    assert_eq!(fs::read_to_string(kept.join("f")).unwrap(), "guest version");
}

/// What a copy volume's write-back got wrong (an audit, with real images):
/// a guest that replaced one of two hard-linked names changed both on the
/// host; a host FIFO the guest never saw (the extraction skips FIFOs) was
/// deleted; a same-size edit whose time was put back was not written; a
/// sticky directory lost its bit; written files took the time of the
/// write-back instead of the guest's.
#[test]
fn sync_back_keeps_what_the_guest_left_alone_and_writes_what_it_changed() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let t = tempfile::tempdir().unwrap();
    let host = t.path().join("host");
    tree(&host, &[("a", "OLD"), ("same", "HOSTS"), ("pub/x", "x")]);
    fs::hard_link(host.join("a"), host.join("b")).unwrap();
    fs::set_permissions(host.join("pub"), fs::Permissions::from_mode(0o1777)).unwrap();
    let fifo = host.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let baseline = Snapshot::take(&host).unwrap();
    let guest = copy_volume_round_trip(t.path(), &host);
    // The guest replaces `a` (the extraction has `a` and `b` apart), and
    // edits `same` in place, putting its time back.
    fs::write(guest.join("a"), "NEW").unwrap();
    let then = fs::metadata(guest.join("same"))
        .unwrap()
        .modified()
        .unwrap();
    fs::write(guest.join("same"), "GUEST").unwrap();
    let restore = fs::FileTimes::new().set_modified(then);
    fs::OpenOptions::new()
        .write(true)
        .open(guest.join("same"))
        .unwrap()
        .set_times(restore)
        .unwrap();
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_117_584_000);
    fs::OpenOptions::new()
        .write(true)
        .open(guest.join("a"))
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(old))
        .unwrap();
    sync_back(&host, &guest, &baseline, &t.path().join("kept")).unwrap();
    assert_eq!(fs::read_to_string(host.join("a")).unwrap(), "NEW");
    assert_eq!(
        fs::read_to_string(host.join("b")).unwrap(),
        "OLD",
        "the other name"
    );
    assert_eq!(fs::read_to_string(host.join("same")).unwrap(), "GUEST");
    assert!(fs::symlink_metadata(&fifo).is_ok(), "the FIFO is kept");
    let mode = fs::metadata(host.join("pub")).unwrap().mode();
    assert_eq!(mode & 0o7777, 0o1777, "the sticky bit is kept");
    assert_eq!(fs::metadata(host.join("a")).unwrap().mtime(), 1_117_584_000);
}

/// An ext4 image's root is the source directory's (mode, owner, time):
/// `mkfs.ext4 -d` left it 0755 root:root, so a copy volume of a directory
/// owned by 1000 was not writable at its top by the guest's user 1000.
/// An output inside the source, or a dangling link as the output, is
/// refused before anything is written.
#[test]
fn ext4_root_is_the_source_directory_and_bad_outputs_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src, &[("a", "x")]);
    fs::set_permissions(&src, fs::Permissions::from_mode(0o1777)).unwrap();
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_012_608_000);
    fs::File::open(&src)
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(when).set_accessed(when))
        .unwrap();
    let img = t.path().join("root.ext4");
    build_whole(&img, ImageFormat::Ext4, &src).unwrap();
    let out = std::process::Command::new("debugfs")
        .args(["-R", "stat <2>"])
        .arg(&img)
        .output()
        .unwrap();
    let stat = String::from_utf8_lossy(&out.stdout);
    assert!(stat.contains("Mode:  01777"), "{stat}");
    assert!(stat.contains("mtime: 0x3c5b2c00"), "{stat}");

    let inside = src.join("self.ext4");
    let e = build_whole(&inside, ImageFormat::Ext4, &src).unwrap_err();
    assert!(matches!(e, ImageError::OutputInside { .. }), "{e}");
    assert!(!inside.exists());
    let target = t.path().join("elsewhere.ext4");
    let link = t.path().join("link.ext4");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = build_whole(&link, ImageFormat::Ext4, &src).unwrap_err();
    assert!(matches!(e, ImageError::OutputExists(_)), "{e}");
    assert!(!target.exists(), "nothing written through the link");
}

/// An ext4 image holds what the directory holds, as mkfs.ext4 alone did
/// not: an empty directory's image lists nothing at its root (no
/// `lost+found`), a 2 KB extended attribute fits (mke2fs picks 1 KiB
/// blocks for small images, and an attribute must fit in a block), and a
/// 1 GiB sparse file with a few bytes written fits in 64 MiB.
#[test]
fn ext4_images_hold_what_the_directory_holds() {
    let t = tempfile::tempdir().unwrap();
    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let img = t.path().join("empty.ext4");
    build_whole(&img, ImageFormat::Ext4, &empty).unwrap();
    let debugfs = |img: &Path, request: &str| {
        let out = std::process::Command::new("debugfs")
            .args(["-R", request])
            .arg(img)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let fsck_clean = |img: &Path| {
        std::process::Command::new("e2fsck")
            .arg("-fn")
            .arg(img)
            .output()
            .unwrap()
            .status
            .success()
    };
    let root = debugfs(&img, "ls /");
    assert!(!root.contains("lost+found"), "{root}");
    assert!(fsck_clean(&img));

    let src = t.path().join("src");
    tree(&src, &[("f", "x")]);
    rustix::fs::setxattr(
        src.join("f").as_path(),
        "user.big",
        &[b'A'; 2000],
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let sparse = fs::File::create(src.join("disk.img")).unwrap();
    sparse.set_len(1 << 30).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"end", (1 << 30) - 3).unwrap();
    let img = t.path().join("full.ext4");
    build_image(
        &img,
        ImageFormat::Ext4,
        &[content(&src, "")],
        Some(64 << 20),
        &mut |_| {},
    )
    .unwrap();
    let attr = debugfs(&img, "ea_list /f");
    assert!(attr.contains("user.big (2000)"), "{attr}");
    let st = debugfs(&img, "stat /disk.img");
    assert!(st.contains("Size: 1073741824"), "{st}");
    assert!(fsck_clean(&img));
}

/// An inode's modification time as the image holds it, read with debugfs
/// (`mtime: 0xSECONDS:0xEXTRA`): seconds and nanoseconds, ext4's two
/// epoch bits applied.
fn image_mtime(img: &Path, path: &str) -> (i64, u32) {
    image_time(img, path, "mtime")
}

/// `field` (`mtime`, `atime`) of `path` in an ext4 image, from debugfs.
fn image_time(img: &Path, path: &str, field: &str) -> (i64, u32) {
    let out = std::process::Command::new("debugfs")
        .args(["-R", &format!("stat \"{}\"", path.replace('"', "\"\""))])
        .arg(img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} for {path}: {text}"));
    let hex = line.split_whitespace().nth(1).unwrap();
    let (lo, extra) = hex.split_once(':').unwrap();
    let lo = u32::from_str_radix(lo.trim_start_matches("0x"), 16).unwrap();
    let extra = u32::from_str_radix(extra.trim_start_matches("0x"), 16).unwrap_or(0);
    (
        i64::from(i32::from_ne_bytes(lo.to_ne_bytes())) + (i64::from(extra & 3) << 32),
        extra >> 2,
    )
}

/// mkfs.ext4 copies whole seconds; the image keeps the fractions (and
/// times past 2038), for every file, the root and odd names alike, so a
/// copy volume's files do not look changed to tools that compare
/// nanoseconds.
#[test]
fn ext4_images_keep_sub_second_times() {
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, SystemTime};
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(
        &src,
        &[("a b", "1"), ("q\"x", "2"), ("d/f", "3"), ("future", "4")],
    );
    let at = |secs: u64, nanos: u32| SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
    let set = |p: &Path, when: SystemTime| {
        let f = fs::File::open(p).unwrap();
        f.set_times(fs::FileTimes::new().set_modified(when).set_accessed(when))
            .unwrap();
    };
    set(&src.join("a b"), at(1_577_934_245, 123_456_789));
    set(&src.join("q\"x"), at(1_577_934_245, 500_000_000));
    set(&src.join("d/f"), at(1_600_000_000, 250_000_000));
    set(&src.join("future"), at(4_102_444_800, 750_000_000));
    set(&src.join("d"), at(1_600_000_001, 1));
    // A socket is copied too, and its time kept.
    let _sock = std::os::unix::net::UnixListener::bind(src.join("d/sock")).unwrap();
    set(&src, at(1_600_000_002, 999_999_999));
    let direct = t.path().join("direct.ext4");
    build_whole(&direct, ImageFormat::Ext4, &src).unwrap();
    let packed = t.path().join("packed.ext4");
    build_image(
        &packed,
        ImageFormat::Ext4,
        &[content(&src, "in")],
        None,
        &mut |_| {},
    )
    .unwrap();
    for name in ["a b", "q\"x", "d/f", "future", "d", "d/sock"] {
        let md = fs::symlink_metadata(src.join(name)).unwrap();
        let want = (md.mtime(), u32::try_from(md.mtime_nsec()).unwrap());
        assert_eq!(image_mtime(&direct, &format!("/{name}")), want, "{name}");
        assert_eq!(image_mtime(&packed, &format!("/in/{name}")), want, "{name}");
    }
    assert_eq!(image_mtime(&direct, "/"), (1_600_000_002, 999_999_999));
}

/// Extended attributes too large for the inode take a block each. The
/// size had counted file bytes only: 5,000 one-byte files with a
/// 200-byte `user.` attribute each made mkfs.ext4 fail halfway ("Could
/// not allocate block"), and so did the copy volume of such a tree.
#[test]
fn ext4_images_have_room_for_extended_attributes() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..5000 {
        let p = src.join(format!("f{i:05}"));
        fs::write(&p, "x").unwrap();
        let value = format!("{i:0200}");
        if let Err(e) = rustix::fs::setxattr(
            &p,
            "user.meta",
            value.as_bytes(),
            rustix::fs::XattrFlags::empty(),
        ) {
            eprintln!("skipped: {} takes no user xattrs ({e})", src.display());
            return;
        }
    }
    let img = t.path().join("x.ext4");
    build_whole(&img, ImageFormat::Ext4, &src).unwrap();
    // Far too small: the message gives the least that could work and
    // the default, where it had called the default the need.
    let e = build_image(
        &t.path().join("small.ext4"),
        ImageFormat::Ext4,
        &[content(&src, "")],
        Some(8 << 20),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("needs at least") && e.contains("or none for"),
        "{e}"
    );
}

/// The image's times come from one look at the tree, taken before mkfs
/// reads it. mkfs's reads move the host's access times (relatime moves
/// one older than the modification time), and the fractions had been
/// taken after that and put with the seconds mkfs had copied: an access
/// time of 2001's seconds with a fraction from the build.
#[test]
fn ext4_image_times_are_times_the_files_had() {
    use std::time::{Duration, SystemTime};
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src, &[("old-atime", "read me\n")]);
    let f = fs::File::open(src.join("old-atime")).unwrap();
    f.set_times(
        fs::FileTimes::new()
            .set_accessed(SystemTime::UNIX_EPOCH + Duration::new(1_000_000_000, 250_000_000))
            .set_modified(SystemTime::UNIX_EPOCH + Duration::new(1_600_000_000, 500_000_000)),
    )
    .unwrap();
    drop(f);
    let img = t.path().join("t.ext4");
    build_whole(&img, ImageFormat::Ext4, &src).unwrap();
    assert_eq!(
        image_time(&img, "/old-atime", "atime"),
        (1_000_000_000, 250_000_000)
    );
    assert_eq!(
        image_time(&img, "/old-atime", "mtime"),
        (1_600_000_000, 500_000_000)
    );
}

/// An ext4 image as a guest can write it: `link` a symlink to `target`,
/// then a regular file also named `link` holding `payload` (a name twice
/// in one directory, which no kernel makes but a crafted directory block
/// holds). Made with debugfs (a symlink and a file `y`), then `y` renamed
/// to `link` in the root directory's block by hand.
fn hostile_image(dir: &Path, target: &Path, payload: &str) -> std::path::PathBuf {
    let img = dir.join("hostile.ext4");
    let f = fs::File::create(&img).unwrap();
    f.set_len(8 << 20).unwrap();
    let ok = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-O", "^metadata_csum"])
        .arg(&img)
        .status()
        .unwrap();
    assert!(ok.success());
    let body = dir.join("payload");
    fs::write(&body, payload).unwrap();
    let script = format!(
        "symlink link {}\nwrite {} y\n",
        target.display(),
        body.display()
    );
    debugfs_writes(&img, &script);
    use std::io::{Read, Seek, SeekFrom, Write};
    let blocks = std::process::Command::new("debugfs")
        .args(["-R", "blocks /"])
        .arg(&img)
        .output()
        .unwrap();
    let block: u64 = String::from_utf8_lossy(&blocks.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let mut dirblock = vec![0u8; 4096];
    f.seek(SeekFrom::Start(block * 4096)).unwrap();
    f.read_exact(&mut dirblock).unwrap();
    // ext4 directory entries: inode (4), record length (2), name length
    // (1), file type (1), name. `y` becomes `x`... of `link`'s length: the
    // record of `y` has room, as it runs to the end of the block.
    let mut off = 0;
    let mut patched = false;
    while off + 8 <= dirblock.len() {
        let rec = u16::from_le_bytes([dirblock[off + 4], dirblock[off + 5]]) as usize;
        let len = dirblock[off + 6] as usize;
        if &dirblock[off + 8..off + 8 + len] == b"y" {
            dirblock[off + 6] = 4;
            dirblock[off + 8..off + 12].copy_from_slice(b"link");
            patched = true;
        }
        if rec == 0 {
            break;
        }
        off += rec;
    }
    assert!(patched, "no entry y in the root directory");
    f.seek(SeekFrom::Start(block * 4096)).unwrap();
    f.write_all(&dirblock).unwrap();
    img
}

/// A guest's image cannot make the extraction write outside its
/// directory: the file named like the symlink before it was written
/// through the link, wherever it pointed, as whoever ran vmshare. The
/// extraction now fails, saying why, and the link's target is untouched.
#[test]
fn a_crafted_image_cannot_write_outside_the_extraction() {
    let t = tempfile::tempdir().unwrap();
    let victim = t.path().join("outside").join("victim");
    fs::create_dir_all(victim.parent().unwrap()).unwrap();
    fs::write(&victim, "the host's own\n").unwrap();
    let img = hostile_image(t.path(), &victim, "from the guest\n");
    let listing = std::process::Command::new("debugfs")
        .args(["-R", "ls"])
        .arg(&img)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&listing.stdout);
    assert_eq!(names.matches("link").count(), 2, "{names}");
    let e = extract_ext4(&img, "", &t.path().join("out")).unwrap_err();
    assert!(
        matches!(
            &e,
            ImageError::Failed {
                tool: "debugfs",
                ..
            }
        ) && e.to_string().contains("Permission denied")
            && e.to_string().contains("link"),
        "{e}"
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "the host's own\n");
    assert!(!t.path().join("out").exists());
}

/// rdump exits 0 when it could not write a file (here, no room left), and
/// the tree it leaves has files cut short or empty; written back, they
/// replaced the host's. Any error it reports now fails the extraction.
#[test]
fn an_extraction_that_runs_out_of_room_fails() {
    if not_root("mounting a small tmpfs") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        fs::write(src.join(format!("f{i}")), vec![7u8; 1 << 20]).unwrap();
    }
    let img = t.path().join("vol.ext4");
    build_whole(&img, ImageFormat::Ext4, &src).unwrap();
    let small = t.path().join("small");
    fs::create_dir_all(&small).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "vmshare-test"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(ok.success());
    let e = extract_ext4(&img, "", &small.join("out"));
    let _ = std::process::Command::new("umount").arg(&small).status();
    let e = e.unwrap_err().to_string();
    assert!(e.contains("No space left on device"), "{e}");
    assert!(
        e.contains("more)"),
        "the errors are counted, not all listed: {e}"
    );
}

/// Whether this is not root, in which case the test, which needs root
/// for `why`, says so and passes.
fn not_root(why: &str) -> bool {
    let id = std::process::Command::new("id").arg("-u").output().unwrap();
    let root = String::from_utf8_lossy(&id.stdout).trim() == "0";
    if !root {
        eprintln!("SKIPPED: {why} needs root");
    }
    !root
}

/// A copy volume's image as a guest can leave it: built by vmshare from a
/// small tree, then `script` run in debugfs on it (as the guest's root
/// can write any blocks of its disk).
fn image_changed_by(dir: &Path, script: &str) -> std::path::PathBuf {
    let src = dir.join("src");
    tree(&src, &[("small", "hi\n")]);
    let img = dir.join("vol.ext4");
    build_whole(&img, ImageFormat::Ext4, &src).unwrap();
    debugfs_writes(&img, script);
    img
}

/// Runs the debugfs commands of `script`, one a line, on `img`, writable.
fn debugfs_writes(img: &Path, script: &str) {
    use std::io::Write;
    let mut debugfs = std::process::Command::new("debugfs")
        .args(["-w", "-f", "-"])
        .arg(img)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    debugfs
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(debugfs.wait().unwrap().success());
}

/// A guest's image takes no more room when read back than its size
/// allows: a 32 MiB image with a sparse file of 4 GiB (rdump writes holes
/// as zeros: a 1 TiB one filled the host's disk), with twenty sparse
/// files of 30 MiB each, or with 25,000 names for one empty file (each
/// comes back as a file, and the write-back holds every name in memory)
/// fails to extract, at once and saying why, with nothing left behind.
#[test]
fn a_guests_sparse_files_cannot_fill_the_hosts_disk() {
    let one = "sif small size 0x100000000\n".to_string();
    let many: String = (0..20)
        .map(|i| format!("write /dev/null f{i}\nsif f{i} size 0x1e00000\n"))
        .collect();
    // In 50 directories of 500 (debugfs's `ln` does not grow a full
    // directory block: `expand` does; and one directory of 25,000 took
    // debugfs 13 s to fill).
    let mut names = "write /dev/null f\n".to_string();
    for d in 0..50 {
        names.push_str(&format!("mkdir d{d}\n"));
        for i in 0..500 {
            names.push_str(&format!("ln f d{d}/l{i}\n"));
            if i % 200 == 199 {
                names.push_str(&format!("expand d{d}\n"));
            }
        }
    }
    for (script, limit) in [
        (one, "in one file"),
        (many, "bytes;"),
        (names, "files and directories"),
    ] {
        let t = tempfile::tempdir().unwrap();
        let img = image_changed_by(t.path(), &script);
        assert!(fs::metadata(&img).unwrap().len() <= 32 << 20);
        let start = std::time::Instant::now();
        let e = extract_ext4(&img, "", &t.path().join("out")).unwrap_err();
        assert!(
            matches!(&e, ImageError::TooLarge { .. }) && e.to_string().contains(limit),
            "{e}"
        );
        // Stopped early, not run until the disk is full (generous: CI is
        // shared, and this is not a measure of speed).
        assert!(start.elapsed() < std::time::Duration::from_secs(120));
        let left: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(!t.path().join("out").exists(), "{left:?}");
        assert!(
            left.iter().all(|n| !n.to_string_lossy().contains("rdump")),
            "{left:?}"
        );
    }
}

/// What a guest could do to a copy volume that made the write-back fail
/// halfway, with some of the host's files already replaced and removed:
/// a host FIFO (which the extraction leaves out) replaced by a directory
/// (creating it found the FIFO in the way), and a file with a name of 250
/// bytes rewritten (its temporary name, the name with a prefix and a
/// suffix, was too long).
#[test]
fn sync_back_does_not_stop_halfway_on_what_a_guest_can_make() {
    let t = tempfile::tempdir().unwrap();
    let host = t.path().join("host");
    let long = "l".repeat(250);
    tree(
        &host,
        &[("a", "old a"), (&long, "old long"), ("z", "old z")],
    );
    let fifo = host.join("p");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(ok.success());
    let baseline = Snapshot::take(&host).unwrap();
    let guest = copy_volume_round_trip(t.path(), &host);
    tree(
        &guest,
        &[
            ("a", "new a"),
            (&long, "new long"),
            ("p/inside", "in p"),
            ("z", "new z"),
        ],
    );
    let report = sync_back(&host, &guest, &baseline, &t.path().join("kept")).unwrap();
    assert_eq!(report.written, 4, "{report:?}");
    for (name, body) in [
        ("a", "new a"),
        (&long, "new long"),
        ("p/inside", "in p"),
        ("z", "new z"),
    ] {
        assert_eq!(fs::read_to_string(host.join(name)).unwrap(), body, "{name}");
    }
    let names: Vec<_> = fs::read_dir(&host)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 4, "nothing else is left: {names:?}");
}

/// A write-back that fails partway (here at a host file made immutable,
/// which even root cannot remove) leaves the host directory part old,
/// part new; the guest's version was in the run's directory, removed at
/// exit, and its changes not yet written were lost. It is now kept beside
/// the host directory, and the error says so.
#[test]
fn a_write_back_that_fails_partway_keeps_the_guests_version() {
    if not_root("giving the tree to nobody") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let host = t.path().join("host");
    tree(&host, &[("0", "fixed"), ("a", "old a"), ("b", "old b")]);
    let baseline = Snapshot::take(&host).unwrap();
    let guest = copy_volume_round_trip(t.path(), &host);
    fs::remove_file(guest.join("0")).unwrap();
    fs::remove_file(guest.join("b")).unwrap();
    tree(&guest, &[("a", "new a")]);
    let chattr = |flag: &str| {
        std::process::Command::new("chattr")
            .arg(flag)
            .arg(host.join("0"))
            .status()
            .unwrap()
            .success()
    };
    if !chattr("+i") {
        eprintln!("SKIPPED: chattr +i is not supported here");
        return;
    }
    let kept = t.path().join("kept");
    let e = sync_back(&host, &guest, &baseline, &kept);
    assert!(chattr("-i"));
    let e = e.unwrap_err();
    assert!(matches!(e, SyncError::Partial { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("partway") && text.contains(&kept.display().to_string()),
        "{text}"
    );
    assert_eq!(fs::read_to_string(kept.join("a")).unwrap(), "new a");
    assert!(!kept.join("0").exists() && !kept.join("b").exists());
}

/// The guest's version is kept beside the host directory also when that
/// is on another filesystem than the run's directory (a rename across
/// filesystems failed, and the guest's version was lost with the run's
/// directory).
#[test]
fn the_guests_version_is_kept_across_filesystems() {
    if not_root("giving the tree to nobody") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let other = t.path().join("other");
    fs::create_dir_all(&other).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "vmshare-test"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(ok.success());
    let result = std::panic::catch_unwind(|| {
        let host = other.join("host");
        tree(&host, &[("f", "v1"), ("d/g", "g")]);
        let baseline = Snapshot::take(&host).unwrap();
        let guest = copy_volume_round_trip(t.path(), &host);
        tree(&guest, &[("f", "guest version"), ("d/h", "new")]);
        std::os::unix::fs::symlink("d/h", guest.join("link")).unwrap();
        fs::write(host.join("f"), "host edit").unwrap();
        let kept = other.join("host.guest");
        let e = sync_back(&host, &guest, &baseline, &kept).unwrap_err();
        assert!(matches!(e, SyncError::HostChanged { .. }), "{e}");
        assert_eq!(fs::read_to_string(host.join("f")).unwrap(), "host edit");
        assert_eq!(fs::read_to_string(kept.join("f")).unwrap(), "guest version");
        assert_eq!(fs::read_to_string(kept.join("d/g")).unwrap(), "g");
        assert_eq!(fs::read_to_string(kept.join("link")).unwrap(), "new");
    });
    let _ = std::process::Command::new("umount").arg(&other).status();
    result.unwrap();
}

/// The write-back's temporary names are numbered on, not tried from 0 for
/// each file: a guest that left 3,000 names `.vmshare-sync-N` beside
/// 3,000 changed files had them all tried for each file, nine million
/// failed creations (with 500,000 of each, as a 1 GiB image may hold,
/// it would have run for hours).
#[test]
fn a_guests_names_do_not_slow_the_write_back() {
    let t = tempfile::tempdir().unwrap();
    let host = t.path().join("host");
    fs::create_dir_all(&host).unwrap();
    let n = 3000;
    for i in 0..n {
        fs::write(host.join(format!("f{i}")), "old").unwrap();
    }
    let baseline = Snapshot::take(&host).unwrap();
    let guest = t.path().join("guest");
    fs::create_dir_all(&guest).unwrap();
    for i in 0..n {
        fs::write(guest.join(format!("f{i}")), "new!").unwrap();
        fs::write(guest.join(format!(".vmshare-sync-{i}")), "").unwrap();
    }
    let start = std::time::Instant::now();
    let report = sync_back(&host, &guest, &baseline, &t.path().join("kept")).unwrap();
    let took = start.elapsed();
    assert_eq!(report.written, 2 * n, "{report:?}");
    assert_eq!(fs::read_to_string(host.join("f0")).unwrap(), "new!");
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
}

/// Written back by a user other than root, read-only directories (a Go
/// module cache is all 0555) could be neither emptied nor filled, and a
/// directory the guest made read-only refused the entries written into it
/// after its mode: the write-back stopped halfway. Run here on a thread
/// whose filesystem identity is nobody's (setfsuid also drops the
/// thread's filesystem capabilities), over a tree nobody owns.
#[test]
fn a_write_back_by_a_user_fills_and_empties_read_only_directories() {
    use std::os::unix::fs::PermissionsExt;
    if not_root("giving the tree to nobody") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (host, guest) = (t.path().join("host"), t.path().join("guest"));
    tree(
        &host,
        &[("ro/f", "f"), ("ro/keep", "k"), ("gone/sub/g", "g")],
    );
    tree(
        &guest,
        &[("ro/keep", "k"), ("ro/new", "n"), ("made/x", "x")],
    );
    let mode = |p: &Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    for (root, dirs) in [
        (&host, &["ro", "gone/sub", "gone"][..]),
        (&guest, &["ro", "made"][..]),
    ] {
        let chown = std::process::Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(root)
            .status()
            .unwrap();
        assert!(chown.success());
        for d in dirs {
            mode(&root.join(d), 0o555);
        }
    }
    // The guest's files as the host's, so that only the changes differ.
    let same_time = fs::FileTimes::new().set_modified(std::time::SystemTime::UNIX_EPOCH);
    for p in [host.join("ro/keep"), guest.join("ro/keep")] {
        fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_times(same_time)
            .unwrap();
    }
    let baseline = Snapshot::take(&host).unwrap();
    let kept = t.path().join("kept");
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setfsuid and setfsgid take plain integers and change
            // only this thread's filesystem identity, which ends with it.
            unsafe {
                libc::setfsgid(65534);
                libc::setfsuid(65534);
            }
            sync_back(&host, &guest, &baseline, &kept).map_err(|e| e.to_string())
        })
        .join()
        .unwrap()
    });
    result.unwrap();
    let m = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(fs::read_to_string(host.join("ro/new")).unwrap(), "n");
    assert!(!host.join("ro/f").exists());
    assert!(!host.join("gone").exists());
    assert_eq!(fs::read_to_string(host.join("made/x")).unwrap(), "x");
    assert_eq!(m(&host.join("ro")), 0o555);
    assert_eq!(m(&host.join("made")), 0o555);
    assert!(!kept.exists());
}

/// A read-only directory is opened for the write-back and given its mode
/// back at the end: through a descriptor of the directory, never by its
/// path, which the guest may have made a link meanwhile (`d -> /etc`
/// had /etc take the old directory's 0555).
#[test]
fn a_directory_the_guest_made_a_link_keeps_the_links_target_mode() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let (host, guest, victim) = (
        t.path().join("host"),
        t.path().join("guest"),
        t.path().join("victim"),
    );
    tree(&host, &[("d/x", "x")]);
    fs::create_dir_all(&guest).unwrap();
    fs::create_dir_all(&victim).unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&victim, guest.join("d")).unwrap();
    fs::set_permissions(host.join("d"), fs::Permissions::from_mode(0o555)).unwrap();
    let baseline = Snapshot::take(&host).unwrap();
    sync_back(&host, &guest, &baseline, &t.path().join("kept")).unwrap();
    assert_eq!(fs::read_link(host.join("d")).unwrap(), victim);
    let m = fs::metadata(&victim).unwrap().permissions().mode() & 0o7777;
    assert_eq!(m, 0o700);
}
