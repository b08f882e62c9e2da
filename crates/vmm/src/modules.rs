//! Kernel module resolution from `modules.dep`, the way modprobe does it
//! but at initramfs build time: the guest gets the files and a load order,
//! and needs no modprobe, depmod or kmod.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use crate::VmmError;

/// `modules.dep` of one kernel.
#[derive(Debug)]
pub(crate) struct ModuleIndex {
    dir: PathBuf,
    /// Module name (dashes as underscores) to its path relative to `dir`.
    paths: BTreeMap<String, String>,
    /// Path to the paths it depends on.
    deps: BTreeMap<String, Vec<String>>,
}

/// Dependencies modules.dep cannot express: a module asks the crypto layer
/// for an algorithm by name at run time (`softdep ... pre:`). Named by the
/// generic implementation, which works on every CPU model QEMU emulates.
const SOFT_DEPS: [(&str, &str); 2] = [("ext4", "crc32c_generic"), ("jbd2", "crc32c_generic")];

/// The module's name as the kernel knows it.
pub(crate) fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl ModuleIndex {
    pub(crate) fn load(dir: &Path) -> Result<ModuleIndex, VmmError> {
        let dep_file = dir.join("modules.dep");
        let text = std::fs::read_to_string(&dep_file).map_err(|e| {
            VmmError::io(
                format!(
                    "reading {} (are the kernel's modules installed?)",
                    dep_file.display()
                ),
                e,
            )
        })?;
        Ok(Self::parse(dir, &text))
    }

    fn parse(dir: &Path, text: &str) -> ModuleIndex {
        let mut paths = BTreeMap::new();
        let mut deps = BTreeMap::new();
        for line in text.lines() {
            let Some((module, rest)) = line.split_once(':') else {
                continue;
            };
            paths.insert(module_name(module), module.to_string());
            deps.insert(
                module.to_string(),
                rest.split_whitespace().map(str::to_string).collect(),
            );
        }
        ModuleIndex {
            dir: dir.to_path_buf(),
            paths,
            deps,
        }
    }

    /// Absolute path of a module file on the host.
    pub(crate) fn host_path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Whether the kernel has this module built in (so there is nothing to
    /// load).
    fn builtin(&self, name: &str) -> bool {
        let Ok(text) = std::fs::read_to_string(self.dir.join("modules.builtin")) else {
            return false;
        };
        text.lines().any(|l| module_name(l) == name)
    }

    /// The module files needed for `names`, each after everything it needs.
    /// Built-in modules are skipped; an unknown one is an error.
    pub(crate) fn resolve(&self, names: &[&str]) -> Result<Vec<String>, VmmError> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for name in names {
            let name = name.replace('-', "_");
            match self.paths.get(&name) {
                Some(path) => self.visit(path, &mut seen, &mut order),
                None if self.builtin(&name) => {}
                None => {
                    return Err(VmmError::NoModule {
                        module: name,
                        dir: self.dir.clone(),
                    })
                }
            }
        }
        Ok(order)
    }

    fn visit(&self, path: &str, seen: &mut HashSet<String>, order: &mut Vec<String>) {
        if !seen.insert(path.to_string()) {
            return;
        }
        let name = module_name(path);
        for (module, pre) in SOFT_DEPS {
            if module == name {
                if let Some(p) = self.paths.get(pre) {
                    self.visit(p, seen, order);
                }
            }
        }
        for dep in self.deps.get(path).into_iter().flatten() {
            self.visit(dep, seen, order);
        }
        order.push(path.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/nfs/nfsv3.ko: kernel/fs/nfs_common/nfs_acl.ko kernel/fs/nfs/nfs.ko kernel/net/sunrpc/sunrpc.ko
kernel/fs/nfs/nfs.ko: kernel/net/sunrpc/sunrpc.ko
kernel/net/sunrpc/sunrpc.ko:
kernel/fs/nfs_common/nfs_acl.ko: kernel/net/sunrpc/sunrpc.ko
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/crypto/crc32c_generic.ko:
kernel/drivers/net/virtio-net.ko.xz:
";

    #[test]
    fn dependencies_come_first_once() {
        let idx = ModuleIndex::parse(Path::new("/nonexistent"), DEP);
        let order = idx.resolve(&["nfsv3", "nfs"]).unwrap();
        let pos = |m: &str| order.iter().position(|p| p.ends_with(m)).unwrap();
        assert_eq!(order.len(), 4);
        assert!(pos("sunrpc.ko") < pos("nfs_acl.ko"));
        assert!(pos("nfs.ko") < pos("nfsv3.ko"));
        assert!(pos("nfs_acl.ko") < pos("nfsv3.ko"));
    }

    #[test]
    fn soft_dependencies_and_names() {
        let idx = ModuleIndex::parse(Path::new("/nonexistent"), DEP);
        let order = idx.resolve(&["ext4"]).unwrap();
        assert_eq!(
            order,
            [
                "kernel/crypto/crc32c_generic.ko",
                "kernel/fs/jbd2/jbd2.ko",
                "kernel/fs/ext4/ext4.ko"
            ]
        );
        assert_eq!(
            idx.resolve(&["virtio_net"]).unwrap(),
            ["kernel/drivers/net/virtio-net.ko.xz"]
        );
        assert!(matches!(
            idx.resolve(&["nope"]),
            Err(VmmError::NoModule { .. })
        ));
    }
}
