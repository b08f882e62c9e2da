//! The "newc" cpio format the kernel unpacks into its initial root
//! filesystem. Only what an initramfs needs: directories, files, symlinks,
//! character devices. Several archives may follow one another; the kernel
//! unpacks them all, later entries replacing earlier ones, which is how a
//! per-run archive is appended to the cached base one.

use std::io::{self, Write};

/// Writes one archive.
pub(crate) struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl<W: Write> CpioWriter<W> {
    pub(crate) fn new(out: W) -> Self {
        // Inode numbers only need to be distinct within an archive; start
        // high so an appended archive never looks like a hard link to an
        // entry of the base one.
        CpioWriter {
            out,
            written: 0,
            ino: 1000,
        }
    }

    pub(crate) fn dir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        self.entry(path, S_IFDIR | mode, 0, b"")
    }

    pub(crate) fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, S_IFREG | mode, 0, data)
    }

    pub(crate) fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.entry(path, S_IFLNK | 0o777, 0, target.as_bytes())
    }

    pub(crate) fn char_dev(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> io::Result<()> {
        self.entry(path, S_IFCHR | mode, (major << 8) | minor, b"")
    }

    /// Writes the trailer and returns the writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.raw_entry("TRAILER!!!", 0, 0, 0, b"")?;
        Ok(self.out)
    }

    fn entry(&mut self, path: &str, mode: u32, rdev: u32, data: &[u8]) -> io::Result<()> {
        // The kernel wants names relative to the root, without a leading '/'.
        let name = path.trim_start_matches('/');
        self.ino += 1;
        self.raw_entry(name, self.ino, mode, rdev, data)
    }

    fn raw_entry(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        rdev: u32,
        data: &[u8],
    ) -> io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: larger than 4 GiB"),
            )
        })?;
        let name_len = u32::try_from(name.len() + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name too long"))?;
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let header = format!(
            "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{size:08x}{dmaj:08x}{dmin:08x}{rmaj:08x}{rmin:08x}{name_len:08x}{check:08x}",
            uid = 0,
            gid = 0,
            mtime = 0,
            dmaj = 0,
            dmin = 0,
            rmaj = rdev >> 8,
            rmin = rdev & 0xff,
            check = 0,
        );
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let pad = (4 - (self.written % 4)) % 4;
        let zeros = [0u8; 3];
        self.put(&zeros[..pad as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_parse_back() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("/etc", 0o755).unwrap();
        w.file("/etc/hostname", 0o644, b"guest\n").unwrap();
        w.symlink("/bin/sh", "busybox").unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);

        // Walk the archive the way the kernel does.
        let mut names = Vec::new();
        let mut at = 0usize;
        loop {
            let h = std::str::from_utf8(&bytes[at..at + 110]).unwrap();
            assert_eq!(&h[..6], "070701");
            let field =
                |i: usize| u32::from_str_radix(&h[6 + 8 * i..14 + 8 * i], 16).unwrap() as usize;
            let (size, namesize) = (field(6), field(11));
            let name = std::str::from_utf8(&bytes[at + 110..at + 110 + namesize - 1])
                .unwrap()
                .to_string();
            let data_at = (at + 110 + namesize).next_multiple_of(4);
            if name == "etc/hostname" {
                assert_eq!(&bytes[data_at..data_at + size], b"guest\n");
            }
            at = (data_at + size).next_multiple_of(4);
            names.push(name.clone());
            if name == "TRAILER!!!" {
                break;
            }
        }
        assert_eq!(names, ["etc", "etc/hostname", "bin/sh", "TRAILER!!!"]);
        assert_eq!(at, bytes.len());
    }
}
