//! Just enough ELF to tell a static executable from a dynamic one: a
//! dynamic one has a PT_INTERP program header naming its loader, which does
//! not exist in the guest's initramfs.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::VmmError;

const PT_INTERP: u32 = 3;

/// The first four bytes of every ELF file.
pub(crate) const MAGIC: &[u8; 4] = b"\x7fELF";

/// Whether `path` starts as an ELF file does (`false` when it cannot be
/// read that far).
pub(crate) fn starts_as_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| &magic == MAGIC)
}

/// `Ok(())` when `path` is a 64-bit little-endian ELF without PT_INTERP.
pub(crate) fn check_static(path: &Path) -> Result<(), VmmError> {
    let io = |e| VmmError::io(format!("reading {}", path.display()), e);
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut header = [0u8; 64];
    f.read_exact(&mut header).map_err(io)?;
    if &header[..4] != MAGIC || header[4] != 2 || header[5] != 1 {
        return Err(VmmError::io(
            format!(
                "{} is not a 64-bit little-endian ELF executable",
                path.display()
            ),
            std::io::ErrorKind::InvalidData.into(),
        ));
    }
    let u16_at = |o: usize| u16::from_le_bytes([header[o], header[o + 1]]);
    let mut phoff = [0u8; 8];
    phoff.copy_from_slice(&header[0x20..0x28]);
    let phoff = u64::from_le_bytes(phoff);
    let (entsize, count) = (u64::from(u16_at(0x36)), u16_at(0x38));
    for i in 0..u64::from(count) {
        f.seek(SeekFrom::Start(phoff + i * entsize)).map_err(io)?;
        let mut p_type = [0u8; 4];
        f.read_exact(&mut p_type).map_err(io)?;
        if u32::from_le_bytes(p_type) == PT_INTERP {
            return Err(VmmError::NotStatic(path.to_path_buf()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busybox_static_is_static_and_sh_is_not() {
        // Both are on every machine vmshare supports (busybox-static is a
        // dependency); if one is missing the test says so by failing.
        assert!(check_static(Path::new("/bin/busybox")).is_ok());
        let dynamic = std::fs::canonicalize("/bin/bash").unwrap();
        assert!(matches!(
            check_static(&dynamic),
            Err(VmmError::NotStatic(_))
        ));
    }
}
