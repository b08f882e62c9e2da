//! Building and reading back block-device images: the one module of this
//! crate that runs programs (mkfs.ext4 and debugfs from e2fsprogs,
//! mkfs.erofs from erofs-utils) and writes files. Planning never calls it;
//! `vmshare image build` and the runner do.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::plan::ImageContent;
use crate::ImageFormat;

/// Why an image could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A tool is not installed.
    #[error("{tool} not found; install {package}")]
    MissingTool {
        /// Program name.
        tool: &'static str,
        /// Debian package that has it.
        package: &'static str,
    },
    /// The source is not a directory.
    #[error("{}: not a directory; give the directory to put in the image", .0.display())]
    NotADirectory(PathBuf),
    /// The output exists already.
    #[error("{}: exists; remove it or choose another output", .0.display())]
    OutputExists(PathBuf),
    /// What an interrupted build left (or a file of that name) is in the way.
    #[error("{}: exists, left by an interrupted build or not; remove it and build again", .0.display())]
    PartialExists(PathBuf),
    /// The output would be inside the tree it is made from.
    #[error("{}: inside {}, the directory it is made from; write the image elsewhere", .output.display(), .source_dir.display())]
    OutputInside {
        /// The output.
        output: PathBuf,
        /// The source directory.
        source_dir: PathBuf,
    },
    /// The requested size cannot hold the tree.
    #[error("--size {size} bytes cannot hold the tree, which needs at least {least} bytes; give a larger --size, or none for {default} bytes")]
    TooSmall {
        /// Requested size.
        size: u64,
        /// Below this the tree cannot fit.
        least: u64,
        /// The size chosen without --size.
        default: u64,
    },
    /// A tool failed.
    #[error("{tool} failed ({status}): {message}")]
    Failed {
        /// Program name.
        tool: &'static str,
        /// Exit status.
        status: String,
        /// Its last line of error output.
        message: String,
    },
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The guest's image wrote out to more than the host gives it.
    #[error("{}: written out, the guest's version would take more than {limit}; not read back (a sparse file comes back whole, and each name of a hard-linked file as a file of its own)", .image.display())]
    TooLarge {
        /// The guest's image.
        image: PathBuf,
        /// The limit it went past, in words.
        limit: String,
    },
    /// The extraction cannot be confined on this host.
    #[error("cannot read an image the guest wrote without Landlock to keep the extraction inside its directory ({0}); Linux 5.13 or later with Landlock enabled is needed")]
    NoSandbox(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let what = what.into();
    move |source| ImageError::Io { what, source }
}

/// Where an ext2/3/4 superblock's `s_magic` (0xEF53, little-endian u16)
/// is: the superblock starts at byte 1024 and the magic is 56 bytes in.
const EXT4_MAGIC_AT: u64 = 1024 + 0x38;
const EXT4_MAGIC: [u8; 2] = [0x53, 0xEF];
/// erofs's superblock also starts at byte 1024, with its magic first
/// (0xE0F5E1E2, little-endian u32).
const EROFS_MAGIC_AT: u64 = 1024;
const EROFS_MAGIC: [u8; 4] = [0xE2, 0xE1, 0xF5, 0xE0];

/// The filesystem in an image file, from its superblock's magic number
/// (not from the file's name); `Ok(None)` when it is neither ext2/3/4
/// (which the kernel's ext4 driver mounts) nor erofs.
pub fn detect_format(image: &Path) -> Result<Option<ImageFormat>, ImageError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(image).map_err(io(format!("opening {}", image.display())))?;
    let mut at = |offset: u64, buf: &mut [u8]| -> Result<bool, ImageError> {
        f.seek(SeekFrom::Start(offset))
            .map_err(io(format!("reading {}", image.display())))?;
        match f.read_exact(buf) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(io(format!("reading {}", image.display()))(e)),
        }
    };
    let mut erofs = [0u8; 4];
    if at(EROFS_MAGIC_AT, &mut erofs)? && erofs == EROFS_MAGIC {
        return Ok(Some(ImageFormat::Erofs));
    }
    let mut ext = [0u8; 2];
    if at(EXT4_MAGIC_AT, &mut ext)? && ext == EXT4_MAGIC {
        return Ok(Some(ImageFormat::Ext4));
    }
    Ok(None)
}

/// Progress of a build: bytes written to the image so far, of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes allocated in the image so far.
    pub done: u64,
    /// Bytes of file data in the tree.
    pub total: u64,
}

/// What a tree holds, and what it takes in an ext4 filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TreeSize {
    /// Bytes of file data (what the progress bar counts).
    pub data: u64,
    /// Entries, directories included.
    pub files: u64,
    /// Bytes the tree's blocks take in 4 KiB blocks: data rounded up to
    /// whole blocks, directories' entries, and extended attributes too
    /// large for the inode.
    pub blocks: u64,
}

/// Extended attributes larger than this (names, values and their
/// entries together) do not fit in a 256-byte inode and take a block of
/// their own.
const IN_INODE_XATTRS: u64 = 80;
const BLOCK: u64 = 4096;

/// Sizes a tree (not following symlinks). A sparse file counts what it
/// has allocated, not its length: mkfs.ext4 keeps the holes, and a 1 GiB
/// disk image with 30 MB written needed a 1.6 GB image. Each file's data
/// takes whole blocks and large extended attributes a block more: a tree
/// of 5,000 one-byte files with a 200-byte `user.` attribute each had
/// been sized from its bytes alone, and mkfs ran out of room.
pub fn tree_size(dir: &Path) -> Result<TreeSize, ImageError> {
    use std::os::unix::fs::MetadataExt;
    let mut t = TreeSize {
        blocks: BLOCK + xattr_blocks(dir),
        ..TreeSize::default()
    };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        // Bytes of directory entries: 8 and the name, in 4-byte steps.
        let mut entries = 24u64;
        for entry in std::fs::read_dir(&d).map_err(io(format!("reading {}", d.display())))? {
            let entry = entry.map_err(io(format!("reading {}", d.display())))?;
            let meta = entry
                .metadata()
                .map_err(io(format!("stat {}", entry.path().display())))?;
            let path = entry.path();
            t.files += 1;
            entries += (8 + entry.file_name().len() as u64).div_ceil(4) * 4;
            t.blocks += xattr_blocks(&path);
            if meta.is_dir() {
                stack.push(path);
            } else {
                let allocated = meta.len().min(meta.blocks().saturating_mul(512));
                t.data += allocated;
                // A symbolic link up to 60 bytes lives in its inode.
                if !(meta.file_type().is_symlink() && meta.len() < 60) {
                    t.blocks += allocated.div_ceil(BLOCK) * BLOCK;
                }
            }
        }
        // Large directories are indexed: a quarter more for the index.
        t.blocks += (entries + entries / 4).div_ceil(BLOCK) * BLOCK;
    }
    Ok(t)
}

/// A block if `path`'s extended attributes do not fit in its inode.
/// A filesystem without them, or a file that went away, has none.
fn xattr_blocks(path: &Path) -> u64 {
    let Ok(len) = rustix::fs::llistxattr_query(path) else {
        return 0;
    };
    if len == 0 {
        return 0;
    }
    let mut names = vec![0u8; len];
    let Ok(got) = rustix::fs::llistxattr(path, &mut names[..]) else {
        return 0;
    };
    let total: u64 = names
        .get(..got)
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| {
            let value = std::ffi::CStr::from_bytes_with_nul(&[n, b"\0"].concat())
                .ok()
                .and_then(|name| rustix::fs::lgetxattr_query(path, name).ok())
                .unwrap_or(0);
            // An entry: 16 bytes, the name and the value, each padded.
            16 + (n.len() as u64).div_ceil(4) * 4 + (value as u64).div_ceil(4) * 4
        })
        .sum();
    if total > IN_INODE_XATTRS {
        total.div_ceil(BLOCK) * BLOCK
    } else {
        0
    }
}

/// An ext4 size that holds a tree whose blocks take `blocks` bytes, with
/// room for metadata, the journal and some growth: half again, 4 KiB per
/// inode, 16 MiB, and 32 MiB at least.
pub fn ext4_size_for(blocks: u64, files: u64) -> u64 {
    let raw = blocks + blocks / 2 + files * 4096 + (16 << 20);
    raw.max(32 << 20).div_ceil(1 << 20) << 20
}

/// Finds a system tool in `PATH` or the sbin directories (not in a
/// non-root user's `PATH` on Debian).
pub fn find_tool(tool: &'static str, package: &'static str) -> Result<PathBuf, ImageError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .ok_or(ImageError::MissingTool { tool, package })
}

/// Builds `output` from `contents` (each host directory copied to its
/// `subdir`, `""` for the root). Several contents are first gathered in a
/// scratch directory beside the output. `size` applies to ext4 (erofs is
/// exactly as large as it needs). `progress` is called while mkfs runs.
///
/// The image is built as `OUTPUT.partial` (made here, so that an output
/// directory that is missing or read-only is named as such: mkfs.erofs
/// said only "Available compressors are: lz4hc, lz4") and renamed to
/// `output` once complete. Built in place, an interrupted build (Ctrl-C,
/// or mkfs.ext4 finishing on its own after `vmshare` was killed) left an
/// image under the output's name that e2fsck passed but that lacked the
/// debugfs fix-ups, or half its files; and a `--size` the output's
/// filesystem could not hold left an empty output behind.
pub fn build_image(
    output: &Path,
    format: ImageFormat,
    contents: &[ImageContent],
    size: Option<u64>,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), ImageError> {
    for c in contents {
        match std::fs::metadata(&c.host_path) {
            Ok(m) if m.is_dir() => {}
            // Said as it is: run by a user other than root, a tree under
            // a directory it cannot search was called "not a directory".
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(ImageError::Io {
                    what: format!("looking at {}", c.host_path.display()),
                    source: e,
                })
            }
            _ => return Err(ImageError::NotADirectory(c.host_path.clone())),
        }
    }
    // Not `exists()`: a dangling link would be followed, and the image
    // written wherever it points.
    if std::fs::symlink_metadata(output).is_ok() {
        return Err(ImageError::OutputExists(output.to_path_buf()));
    }
    let out_dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(out_dir) = std::fs::canonicalize(out_dir) {
        for c in contents {
            if let Ok(src) = std::fs::canonicalize(&c.host_path) {
                if out_dir.starts_with(&src) {
                    return Err(ImageError::OutputInside {
                        output: output.to_path_buf(),
                        source_dir: c.host_path.clone(),
                    });
                }
            }
        }
    }
    let partial = partial_path(output);
    if std::fs::symlink_metadata(&partial).is_ok() {
        return Err(ImageError::PartialExists(partial));
    }
    // Before the output is made: missing, it would be left behind.
    let tool_path = match format {
        ImageFormat::Ext4 => find_tool("mkfs.ext4", "e2fsprogs")?,
        ImageFormat::Erofs => find_tool("mkfs.erofs", "erofs-utils")?,
    };
    let scratch;
    let source = match contents {
        [one] if one.subdir.is_empty() => one.host_path.clone(),
        _ => {
            scratch = Scratch(output.with_extension("contents.d"));
            gather(&scratch.0, contents)?;
            scratch.0.clone()
        }
    };
    let tree = tree_size(&source)?;
    let (bytes, files) = (tree.data, tree.files);
    let mut cmd = match format {
        ImageFormat::Ext4 => {
            let default = ext4_size_for(tree.blocks, files);
            let size = size.unwrap_or(default);
            // The tree's blocks, inodes for it, and a journal: below it
            // mkfs fails halfway with no word of the size.
            let least = tree.blocks + files * 512 + (8 << 20);
            if size < least {
                return Err(ImageError::TooSmall {
                    size,
                    least,
                    default,
                });
            }
            let f = create_partial(&partial)?;
            if let Err(e) = f.set_len(size) {
                let _ = std::fs::remove_file(&partial);
                return Err(io(format!("sizing {}", output.display()))(e));
            }
            // At least half as many inodes again as the tree has files:
            // past 512 MiB mke2fs gives one per 16 KiB, and a tree of
            // many small files (node_modules) did not fit at all.
            let per_inode = if size > 512 << 20 { 16 << 10 } else { 4 << 10 };
            let inodes = (size / per_inode).max(files + files / 2 + 4096);
            let mut c = Command::new(&tool_path);
            // 4 KiB blocks whatever the size: below 512 MiB mke2fs
            // picks 1 KiB, and a file's extended attributes must fit in
            // one block (a 2 KB one did not).
            c.args(["-q", "-F", "-t", "ext4", "-b", "4096", "-N"])
                .arg(inodes.to_string())
                .arg("-d")
                .arg(&source)
                .arg(&partial);
            c
        }
        ImageFormat::Erofs => {
            create_partial(&partial)?;
            let mut c = Command::new(&tool_path);
            // Chunk-based files in 4 KiB chunks, identical chunks stored
            // once: a sparse file's holes then take no room (without
            // chunks mkfs.erofs wrote a 1 GiB sparse file out whole), and
            // identical files are stored once. Linux reads them since 5.15.
            // Only on /tmp's filesystem, though: mkfs.erofs (1.5, Debian
            // 12's) gathers the chunks in a temporary file in /tmp, always
            // there whatever TMPDIR says, and copies them into the image
            // with copy_file_range, which fails across filesystems with no
            // fallback. Every image outside /tmp's filesystem failed with
            // "Input/output error" (in $HOME where /tmp is a tmpfs, and
            // vmshare run's state directory). Elsewhere, files are stored
            // whole: larger for sparse and duplicate files, never wrong.
            c.arg("--quiet");
            if same_filesystem(&partial, Path::new("/tmp")) {
                c.arg("--chunksize=4096");
            }
            c.arg(&partial).arg(&source);
            c
        }
    };
    let tool = if format == ImageFormat::Ext4 {
        "mkfs.ext4"
    } else {
        "mkfs.erofs"
    };
    // Gathered contents have a scratch directory as their root, nothing of
    // the user's to copy.
    let direct = matches!(contents, [one] if one.subdir.is_empty());
    // The times are taken before mkfs reads the tree: its reads move the
    // host's access times, and a time taken after it, put together with
    // the seconds mkfs had copied, made times that never existed.
    let fix_up = match format {
        ImageFormat::Ext4 => Some(ext4_fix_up_script(&source, direct)),
        ImageFormat::Erofs => None,
    };
    let mut result = run_watching(tool, &mut cmd, &partial, bytes, progress)
        .map_err(|e| explain_failure(e, format, &source))
        .map_err(|e| explain_no_room(e, &partial, bytes));
    if let (Ok(()), Some(script)) = (&result, fix_up) {
        result = script.and_then(|script| run_debugfs(&partial, script));
    }
    if result.is_ok() {
        result = std::fs::rename(&partial, output).map_err(io(format!(
            "renaming {} to {}",
            partial.display(),
            output.display()
        )));
    }
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Whether `a` and `b` are on one filesystem (false when either cannot
/// be looked at).
fn same_filesystem(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev(),
        _ => false,
    }
}

/// Where `output` is built: `OUTPUT.partial`, beside it.
fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Makes the file an image is built in; never one that exists.
fn create_partial(partial: &Path) -> Result<std::fs::File, ImageError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(partial)
        .map_err(io(format!("creating {}", partial.display())))
}

/// Puts back in an ext4 image what `mkfs.ext4 -d` leaves out, with
/// debugfs (no mount, no root needed).
///
/// - With `root` (the image is one directory's copy): the root directory
///   gets that directory's mode, owner and times, and its entries. mkfs
///   leaves the root 0755 root:root: a copy volume of a directory owned
///   by 1000 was not writable at its top by the guest's user 1000, and a
///   1777 directory lost its sticky bit. It also adds `lost+found`, which
///   an empty directory's copy volume then listed (programs such as
///   `initdb` refuse a data directory that is not empty); e2fsck makes it
///   again if it ever needs one.
/// - Always: the fractions of a second of every file's modification and
///   access times, and the high bits of times past 2038. mkfs copies
///   whole seconds only, so every file in a copy volume looked changed to
///   tools that compare times to the nanosecond (make, rsync, git's index)
///   against the host's copy, and a time past 2038 came back before 1970.
///
/// The script is made from the tree before mkfs reads it, and run on the
/// image after.
fn ext4_fix_up_script(dir: &Path, root: bool) -> Result<Vec<u8>, ImageError> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(dir).map_err(io(format!("stat {}", dir.display())))?;
    let mut script = Vec::new();
    if root {
        if std::fs::symlink_metadata(dir.join("lost+found")).is_err() {
            script.extend_from_slice(b"rmdir lost+found\n");
        }
        script.extend_from_slice(
            format!(
                "sif <2> mode 0{:o}\nsif <2> uid {}\nsif <2> gid {}\n",
                md.mode(),
                md.uid(),
                md.gid(),
            )
            .as_bytes(),
        );
        times(&mut script, b"<2>", &md, true);
    }
    sub_second_times(dir, &mut Vec::new(), &mut script)?;
    Ok(script)
}

/// Runs a debugfs `script` on `image`, failing on any complaint.
fn run_debugfs(image: &Path, script: Vec<u8>) -> Result<(), ImageError> {
    use std::io::Write;
    let mut child = Command::new(find_tool("debugfs", "e2fsprogs")?)
        .args(["-w", "-f", "-"])
        .arg(image)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(io("starting debugfs"))?;
    // Written from a thread while its complaints are read here: a long
    // script could otherwise fill one pipe while debugfs waits on the
    // other.
    let stdin = child.stdin.take();
    let (written, out) = std::thread::scope(|s| {
        let writer = s.spawn(move || match stdin {
            Some(mut stdin) => stdin.write_all(&script),
            None => Ok(()),
        });
        let out = child.wait_with_output();
        (writer.join(), out)
    });
    let out = out.map_err(io("running debugfs"))?;
    if let Ok(Err(e)) = written {
        return Err(io("writing to debugfs")(e));
    }
    // debugfs exits 0 even when a command fails; its complaints say so.
    let err = String::from_utf8_lossy(&out.stderr);
    let complaint = err
        .lines()
        .find(|l| !l.starts_with("debugfs ") && !l.trim().is_empty());
    match (out.status.success(), complaint) {
        (true, None) => Ok(()),
        (_, c) => Err(ImageError::Failed {
            tool: "debugfs",
            status: out.status.to_string(),
            message: c
                .unwrap_or("setting attributes mkfs.ext4 left out")
                .to_string(),
        }),
    }
}

/// Adds to `script` a debugfs `sif` for the extra time bits of each
/// entry under `dir` (`rel` is its path in the image) that has any.
/// Names debugfs cannot be given (with a line break) keep whole seconds.
fn sub_second_times(dir: &Path, rel: &mut Vec<u8>, script: &mut Vec<u8>) -> Result<(), ImageError> {
    use std::os::unix::ffi::OsStrExt;
    let entries = std::fs::read_dir(dir).map_err(io(format!("reading {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io(format!("reading {}", dir.display())))?;
        let name = entry.file_name();
        let name = name.as_bytes();
        if name.contains(&b'\n') || name.contains(&b'\r') {
            continue;
        }
        let md = entry
            .metadata()
            .map_err(io(format!("stat {}", entry.path().display())))?;
        let len = rel.len();
        rel.push(b'/');
        rel.extend_from_slice(name);
        let mut quoted = vec![b'"'];
        for &b in rel.iter() {
            if b == b'"' {
                quoted.push(b'"');
            }
            quoted.push(b);
        }
        quoted.push(b'"');
        times(script, &quoted, &md, false);
        if md.is_dir() {
            sub_second_times(&entry.path(), rel, script)?;
        }
        rel.truncate(len);
    }
    Ok(())
}

/// The `sif` lines that set an inode's modification and access times
/// from `md`: the seconds, and the `_extra` fields (the nanoseconds
/// shifted left by two, over the two bits that extend the 32-bit seconds,
/// ext4's on-disk format). For a time in whole seconds mkfs's copy is
/// already right, and nothing is added unless `always`.
fn times(script: &mut Vec<u8>, inode: &[u8], md: &std::fs::Metadata, always: bool) {
    use std::os::unix::fs::MetadataExt;
    let extra = |sec: i64, nsec: i64| {
        // The 32-bit field holds the low 32 bits read as signed; the
        // epoch bits count the 2^32 s the time is beyond that.
        let low = ((sec & 0xffff_ffff) ^ 0x8000_0000) - 0x8000_0000;
        let epoch = u64::try_from((sec.wrapping_sub(low) >> 32) & 3).unwrap_or(0);
        let nsec = u64::try_from(nsec.clamp(0, 999_999_999)).unwrap_or(0);
        (nsec << 2) | epoch
    };
    for (field, sec, value) in [
        ("mtime", md.mtime(), extra(md.mtime(), md.mtime_nsec())),
        ("atime", md.atime(), extra(md.atime(), md.atime_nsec())),
    ] {
        if value != 0 || always {
            // The seconds and the fraction from one stat: debugfs takes
            // `@SECONDS` (its low 32 bits), and the epoch bits come in
            // the extra field.
            for line in [
                format!(" {field} @{sec}\n"),
                format!(" {field}_extra {value}\n"),
            ] {
                script.extend_from_slice(b"sif ");
                script.extend_from_slice(inode);
                script.extend_from_slice(line.as_bytes());
            }
        }
    }
}

/// Runs `cmd`, reporting the output's allocated size as progress: ext4
/// images are sparse until written, erofs images grow as written.
fn run_watching(
    tool: &'static str,
    cmd: &mut Command,
    output: &Path,
    total: u64,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), ImageError> {
    use std::os::unix::fs::MetadataExt;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io(format!("starting {tool}")))?;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(io(format!("waiting for {tool}")))?
        {
            break status;
        }
        let done = std::fs::metadata(output)
            .map(|m| m.blocks() * 512)
            .unwrap_or(0);
        progress(Progress {
            done: done.min(total),
            total,
        });
        std::thread::sleep(Duration::from_millis(100));
    };
    progress(Progress { done: total, total });
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    Err(ImageError::Failed {
        tool,
        status: status.to_string(),
        message: stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string(),
    })
}

/// A mkfs failure with what in the tree caused it, where that can be
/// found: mkfs.ext4 says "Permission denied while populating file
/// system" without naming the file, and mkfs.erofs 1.5 fails on a
/// 255-byte name with "No such file or directory".
fn explain_failure(e: ImageError, format: ImageFormat, source: &Path) -> ImageError {
    let ImageError::Failed {
        tool,
        status,
        message,
    } = e
    else {
        return e;
    };
    let culprit = find_culprit(source, format);
    let message = match culprit {
        Some(why) => format!("{why} ({tool}: {message})"),
        None if message.contains("No such file or directory") => format!(
            "{message} (a file may have been removed from the tree while it was read; \
             build again)"
        ),
        None => message,
    };
    ImageError::Failed {
        tool,
        status,
        message,
    }
}

/// An mkfs.erofs "Could not format the device : [Error 5] Input/output
/// error", explained. mkfs.erofs 1.5 says that when the output is not on
/// /tmp's filesystem (its chunks are copied from an O_TMPFILE in /tmp with
/// copy_file_range, EXDEV across filesystems, with no fallback: any output
/// outside /tmp's filesystem, as in $HOME when /tmp is a tmpfs), and when
/// the output's filesystem is out of room.
/// Measured after the partial image is removed, so `needed` (the tree's
/// data) is what the whole image had to find.
fn explain_no_room(e: ImageError, partial: &Path, needed: u64) -> ImageError {
    let ImageError::Failed {
        tool: tool @ "mkfs.erofs",
        status,
        message,
    } = e
    else {
        return e;
    };
    let _ = std::fs::remove_file(partial);
    let dir = partial
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let free = rustix::fs::statvfs(dir)
        .ok()
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize));
    let across = message.contains("Input/output error")
        && std::fs::metadata(dir).is_ok()
        && !same_filesystem(dir, Path::new("/tmp"));
    let message = match free {
        _ if across => format!(
            "{}: not on /tmp's filesystem; mkfs.erofs 1.5 copies chunked files from a \
             temporary file in /tmp with copy_file_range, which fails across filesystems: \
             build the image on /tmp's filesystem and move it ({tool}: {message})",
            dir.display()
        ),
        Some(free) if free < needed => format!(
            "{}: {} MiB free, and the tree holds {} MiB of data: no room for the image, \
             write it elsewhere ({tool}: {message})",
            dir.display(),
            free >> 20,
            needed.div_ceil(1 << 20)
        ),
        _ => message,
    };
    ImageError::Failed {
        tool,
        status,
        message,
    }
}

/// The first entry under `dir` this user cannot read, or (for erofs) with
/// a 255-byte name, described.
fn find_culprit(dir: &Path, format: ImageFormat) -> Option<String> {
    use rustix::fs::{Access, AtFlags};
    use std::os::unix::ffi::OsStrExt;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            return Some(format!("{}: cannot be read by this user", d.display()));
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if format == ImageFormat::Erofs && entry.file_name().as_bytes().len() >= 255 {
                return Some(format!(
                    "{}: mkfs.erofs 1.5 cannot store a name of 255 bytes; shorten it, or \
                     build an ext4 image",
                    path.display()
                ));
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let readable = |p: &Path| {
                rustix::fs::accessat(rustix::fs::CWD, p, Access::READ_OK, AtFlags::EACCESS).is_ok()
            };
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && !readable(&path) {
                return Some(format!(
                    "{}: cannot be read by this user (build as a user who can read \
                     every file, or as root)",
                    path.display()
                ));
            }
        }
    }
    None
}

/// Copies each content into `dir/subdir` with `cp -a` (keeping owners,
/// modes, links and times, as mkfs will read them).
fn gather(dir: &Path, contents: &[ImageContent]) -> Result<(), ImageError> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    for c in contents {
        let dest = dir.join(&c.subdir);
        std::fs::create_dir_all(&dest).map_err(io(format!("creating {}", dest.display())))?;
        let status = Command::new("cp")
            .arg("-a")
            .arg(c.host_path.join("."))
            .arg(&dest)
            .status()
            .map_err(io("starting cp"))?;
        if !status.success() {
            return Err(ImageError::Failed {
                tool: "cp",
                status: status.to_string(),
                message: format!("copying {} into {}", c.host_path.display(), dest.display()),
            });
        }
    }
    Ok(())
}

/// Copies `subdir` of an ext4 image (`""` for all of it) out to `dest`,
/// which must not exist, with debugfs: no mount, no root needed.
///
/// The image is the guest's, and a guest can write any bytes to it.
/// debugfs's `rdump` writes each entry at "directory/name" and follows
/// what is there: an image with a symlink `x -> /etc/cron.d/job` and then
/// a file also named `x` (two entries of one name, which the guest's
/// kernel never makes but a crafted directory block holds) wrote the
/// file's contents through the link, as whoever runs vmshare. So debugfs
/// runs confined by Landlock to writing beneath its staging directory,
/// and any error it reports fails the extraction: rdump reports a write
/// it could not make (a full disk, a refused path) and still exits 0,
/// and a partial tree would have been written back over the host's.
/// What it writes is bounded by the image's size (see `Budget`): past that
/// it is stopped and the extraction fails with [`ImageError::TooLarge`].
pub fn extract_ext4(image: &Path, subdir: &str, dest: &Path) -> Result<(), ImageError> {
    if dest.exists() {
        return Err(ImageError::OutputExists(dest.to_path_buf()));
    }
    let parent = dest.parent().unwrap_or(Path::new("."));
    let staging = Scratch(parent.join(format!(
        ".{}.rdump",
        dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    )));
    std::fs::create_dir_all(&staging.0).map_err(io(format!("creating {}", staging.0.display())))?;
    let from = format!("/{}", subdir.trim_matches('/'));
    let mut cmd = Command::new(find_tool("debugfs", "e2fsprogs")?);
    cmd.arg("-R")
        .arg(format!("rdump \"{from}\" \"{}\"", staging.0.display()))
        .arg(image);
    let len = std::fs::metadata(image)
        .map_err(io(format!("stat {}", image.display())))?
        .len();
    let out =
        confined_output(&mut cmd, &staging.0, &Budget::for_image(len)).map_err(|e| match e {
            Overrun::Limit(limit) => ImageError::TooLarge {
                image: image.to_path_buf(),
                limit,
            },
            Overrun::Error(e) => e,
        })?;
    // rdump puts the directory itself (or, for "/", its entries) in staging.
    let dumped = if from == "/" {
        staging.0.clone()
    } else {
        staging.0.join(from.rsplit('/').next().unwrap_or(""))
    };
    if !out.status.success() || !dumped.is_dir() || out.complaints > 0 {
        let mut message = out.first.join("; ");
        if out.complaints > out.first.len() {
            message.push_str(&format!(" (and {} more)", out.complaints - out.first.len()));
        }
        return Err(ImageError::Failed {
            tool: "debugfs",
            status: out.status.to_string(),
            message,
        });
    }
    std::fs::rename(&dumped, dest).map_err(io(format!("moving to {}", dest.display())))?;
    if from == "/" {
        // The root was dumped into staging itself, now renamed away.
        let _ = std::fs::remove_dir_all(dest.join("lost+found"));
    }
    Ok(())
}

/// What debugfs may write when it extracts a guest's image of `len`
/// bytes. The image's size bounds what a guest can store, but not what
/// rdump writes out: a file's holes come back as zeros (a 32 MiB image
/// holding a 1 TiB sparse file wrote 5 GB in 20 s, and would have gone
/// on until the host's disk was full), each name of a hard-linked file
/// comes back as a file of its own, and a directory linked twice into
/// its parent, level after level, doubles the tree at each.
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// Largest file: no file the guest wrote outgrows its filesystem.
    file: u64,
    /// Bytes taken on the staging directory's filesystem, with room for
    /// the host's own block rounding and for what others write meanwhile.
    bytes: u64,
    /// Inodes taken there: vmshare's images have one inode per 4 KiB
    /// at most, or half as many again as the tree's files, which take
    /// 4 KiB each; twice that, for hard links (each of whose names comes
    /// back as a file). Every name is held in memory by the write-back
    /// after, so the guest must not choose their number: one per 256
    /// bytes, as a reformatted disk can have, was 40 million names for a
    /// 10 GiB image.
    inodes: u64,
}

impl Budget {
    fn for_image(len: u64) -> Budget {
        Budget {
            file: len,
            bytes: len.saturating_mul(2).saturating_add(256 << 20),
            inodes: len / 2048 + 4096,
        }
    }
}

/// Why a confined run stopped early.
enum Overrun {
    /// It went past its [`Budget`] (said in words).
    Limit(String),
    /// It could not run.
    Error(ImageError),
}

impl From<ImageError> for Overrun {
    fn from(e: ImageError) -> Overrun {
        Overrun::Error(e)
    }
}

/// How a confined debugfs ended: its status and the lines of error
/// output (every line but the one naming debugfs), of which only the
/// first few are kept.
struct Finished {
    status: std::process::ExitStatus,
    first: Vec<String>,
    complaints: usize,
}

/// Runs `cmd` to completion from a thread of its own that Landlock allows
/// to write only beneath `dir` (reading is not restricted); the child
/// inherits the thread's confinement, the rest of this process keeps its
/// own rights. It is stopped once it takes more than `budget` allows on
/// `dir`'s filesystem (measured there as free space and free inodes every
/// few milliseconds) or writes a file larger than `budget.file` (its
/// RLIMIT_FSIZE).
fn confined_output(cmd: &mut Command, dir: &Path, budget: &Budget) -> Result<Finished, Overrun> {
    let start =
        rustix::fs::statvfs(dir).map_err(|e| io(format!("statfs {}", dir.display()))(e.into()))?;
    // Opened for writing before the confinement, which refuses it after.
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(io("opening /dev/null"))?;
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            confine_writes_to(dir)?;
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(null)
                .stderr(Stdio::piped())
                .spawn()
                .map_err(io("starting debugfs"))?;
            if let Err(e) = limit_file_size(&child, budget.file) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io("limiting debugfs's file size")(e.into()).into());
            }
            // Read as it comes (a full pipe would stop debugfs).
            let stderr = child.stderr.take();
            let reader = scope.spawn(move || stderr.map(complaints).unwrap_or_default());
            if let Some(limit) = watch(&mut child, dir, budget, &start)? {
                let _ = child.kill();
                let _ = child.wait();
                let _ = reader.join();
                return Err(Overrun::Limit(limit));
            }
            let status = child.wait().map_err(io("waiting for debugfs"))?;
            let (first, complaints) = reader.join().unwrap_or_default();
            Ok(Finished {
                status,
                first,
                complaints,
            })
        });
        worker.join().unwrap_or_else(|_| {
            Err(ImageError::NoSandbox("the confined thread failed".into()).into())
        })
    })
}

/// Lets this thread, and the processes it starts, write only beneath
/// `dir` (reading is not restricted), with Landlock.
fn confine_writes_to(dir: &Path) -> Result<(), ImageError> {
    use landlock::{
        path_beneath_rules, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, ABI,
    };
    // The write rights of the newest ABI this crate knows; a kernel with
    // fewer enforces those it has (all of which rdump needs to escape:
    // creating and writing files, making links).
    let writes = AccessFs::from_write(ABI::V9);
    let status = Ruleset::default()
        .handle_access(writes)
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules([dir], writes)))
        .and_then(|r| r.restrict_self())
        .map_err(|e| ImageError::NoSandbox(e.to_string()))?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err(ImageError::NoSandbox(
            "this kernel does not enforce it".into(),
        ));
    }
    Ok(())
}

/// Sets `child`'s RLIMIT_FSIZE to `bytes`. On the running child, as this
/// crate has no unsafe code for a pre_exec hook: debugfs opens and reads
/// the image before it writes anything, and [`watch`] bounds the total
/// anyway. Never for pid 0, which would be this process.
fn limit_file_size(child: &std::process::Child, bytes: u64) -> rustix::io::Result<()> {
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or(rustix::io::Errno::SRCH)?;
    let limit = rustix::process::Rlimit {
        current: Some(bytes),
        maximum: Some(bytes),
    };
    rustix::process::prlimit(Some(pid), rustix::process::Resource::Fsize, limit).map(|_| ())
}

/// debugfs's error output: the first few lines, and how many there were.
/// It writes one per entry it fails on, and the names in them are the
/// guest's, so only a few are kept.
fn complaints(stderr: std::process::ChildStderr) -> (Vec<String>, usize) {
    use std::io::BufRead;
    let root = rustix::process::geteuid().is_root();
    let (mut first, mut count) = (Vec::new(), 0);
    for line in std::io::BufReader::new(stderr)
        .split(b'\n')
        .map_while(Result::ok)
    {
        let line = String::from_utf8_lossy(&line);
        // debugfs names itself on its first line; every other line is an
        // error, but one: run by a user other than root, it cannot give a
        // file to its owner in the image (root, for what the guest's root
        // made), and says so for each. That user keeps the files as its
        // own, as the write-back does; counted as an error, it failed
        // every such user's copy volume.
        if line.trim().is_empty()
            || line.starts_with("debugfs ")
            || (!root && line.contains("while changing ownership of"))
        {
            continue;
        }
        count += 1;
        if first.len() < 3 {
            first.push(line.chars().take(1000).collect::<String>());
        }
    }
    (first, count)
}

/// Waits for `child`, watching what it takes on `dir`'s filesystem
/// against `budget` every 10 ms (from `start`, as free blocks and free
/// inodes); the limit it went past, in words, or `None` once it has
/// ended within it.
fn watch(
    child: &mut std::process::Child,
    dir: &Path,
    budget: &Budget,
    start: &rustix::fs::StatVfs,
) -> Result<Option<String>, Overrun> {
    use std::os::unix::process::ExitStatusExt;
    loop {
        // Whether it is done is asked first, and what it took measured
        // after: a tree written between two looks is still counted once
        // it has ended.
        let done = child.try_wait().map_err(io("waiting for debugfs"))?;
        if let Ok(now) = rustix::fs::statvfs(dir) {
            // Free blocks, not those available to users: debugfs run as
            // root goes on into the blocks kept for root once none are
            // left to users, which the count of available ones, stuck at
            // 0, no longer shows.
            let bytes = start
                .f_bfree
                .saturating_sub(now.f_bfree)
                .saturating_mul(now.f_frsize);
            if bytes > budget.bytes {
                return Ok(Some(format!("{} bytes", budget.bytes)));
            }
            if start.f_ffree.saturating_sub(now.f_ffree) > budget.inodes {
                return Ok(Some(format!("{} files and directories", budget.inodes)));
            }
        }
        if let Some(status) = done {
            if status.signal() == Some(rustix::process::Signal::XFSZ.as_raw()) {
                return Ok(Some(format!("{} bytes in one file", budget.file)));
            }
            // The watch above sees the whole filesystem, where others
            // delete while debugfs writes: the count that decides is of
            // what debugfs left, and of nothing else.
            return Ok(over_budget(dir, budget));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What the tree under `dir` takes, against `budget`: the limit it goes
/// past, in words, or `None`. Counted by walking it (allocated blocks,
/// and entries), stopping as soon as it is over.
fn over_budget(dir: &Path, budget: &Budget) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let (mut bytes, mut entries) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(list) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in list.flatten() {
            entries += 1;
            if entries > budget.inodes {
                return Some(format!("{} files and directories", budget.inodes));
            }
            let Ok(md) = e.metadata() else { continue };
            bytes = bytes.saturating_add(md.blocks().saturating_mul(512));
            if bytes > budget.bytes {
                return Some(format!("{} bytes", budget.bytes));
            }
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    None
}

/// A directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::{explain_no_room, ImageError};

    fn failed() -> ImageError {
        ImageError::Failed {
            tool: "mkfs.erofs",
            status: "exit status: 1".into(),
            message: "Could not format the device : [Error 5] Input/output error".into(),
        }
    }

    /// mkfs.erofs out of room says "Input/output error" and no more
    /// (an 8 MiB tmpfs, a 20 MiB tree); the free space is named when it
    /// is less than the tree's data, and only then.
    #[test]
    fn an_erofs_build_out_of_room_says_so() {
        let partial = std::path::Path::new("/tmp/vmshare-no-room-test.erofs.partial");
        let e = explain_no_room(failed(), partial, u64::MAX).to_string();
        assert!(
            e.contains("no room for the image") && e.contains("Input/output error"),
            "{e}"
        );
        let e = explain_no_room(failed(), partial, 0).to_string();
        assert!(!e.contains("no room") && !e.contains("across"), "{e}");
        // An output outside /tmp's filesystem, where there is one here.
        use std::os::unix::fs::MetadataExt;
        let dev = |p: &str| std::fs::metadata(p).map(|m| m.dev()).ok();
        if dev("/dev/shm").is_some() && dev("/dev/shm") != dev("/tmp") {
            let shm = std::path::Path::new("/dev/shm/vmshare-test.erofs.partial");
            let e = explain_no_room(failed(), shm, 0).to_string();
            assert!(
                e.contains("copy_file_range, which fails across filesystems"),
                "{e}"
            );
        }
    }
}
