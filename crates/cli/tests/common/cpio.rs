//! Reading an initramfs back as the kernel unpacks it: "newc" cpio
//! archives one after another, later entries replacing earlier ones.

use std::collections::BTreeMap;

/// One entry: its mode (type and permission bits) and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub mode: u32,
    pub data: Vec<u8>,
}

/// The tree the kernel would unpack from `bytes`, by path without the
/// leading `/`. Panics on anything that is not newc.
pub fn unpack(bytes: &[u8]) -> BTreeMap<String, Entry> {
    let mut tree = BTreeMap::new();
    let mut at = 0usize;
    while at < bytes.len() {
        // Archives may be padded with zeros between them.
        if bytes[at] == 0 {
            at += 1;
            continue;
        }
        let header = std::str::from_utf8(&bytes[at..at + 110]).expect("header is text");
        assert_eq!(&header[..6], "070701", "not a newc header at byte {at}");
        let field =
            |i: usize| u32::from_str_radix(&header[6 + 8 * i..14 + 8 * i], 16).expect("hex field");
        let (mode, size, name_size) = (field(1), field(6) as usize, field(11) as usize);
        let name_at = at + 110;
        let name = std::str::from_utf8(&bytes[name_at..name_at + name_size - 1])
            .expect("name is text")
            .to_string();
        let data_at = (name_at + name_size).next_multiple_of(4);
        let data = bytes[data_at..data_at + size].to_vec();
        at = (data_at + size).next_multiple_of(4);
        if name != "TRAILER!!!" {
            tree.insert(name, Entry { mode, data });
        }
    }
    tree
}
