//! vmshare's state directory: cached guest assets, named volumes, and one
//! directory per running VM.
//!
//! A run directory records who owns it (pid and process start time) and
//! what it started (QEMU's pid, a network namespace). If vmshare is killed
//! with SIGKILL nothing in-process can clean up, so every new run first
//! sweeps the directories whose owner is gone: kills their QEMU, deletes
//! their namespace, removes the files.

use std::path::{Path, PathBuf};

use crate::VmmError;

/// Environment variable naming the state directory.
pub const STATE_DIR_ENV: &str = "VMSHARE_STATE_DIR";

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// `explicit` (`--state-dir`), else [`default_root`](Self::default_root).
    /// Created if missing.
    pub fn resolve(explicit: Option<&Path>) -> Result<StateDir, VmmError> {
        if let Some(p) = explicit {
            return Self::at(p);
        }
        let given = matches!(std::env::var_os(STATE_DIR_ENV), Some(p) if !p.is_empty());
        let Some(root) = Self::default_root() else {
            return Err(VmmError::io(
                "finding a state directory (set VMSHARE_STATE_DIR or HOME)",
                std::io::ErrorKind::NotFound.into(),
            ));
        };
        if given || rustix::process::geteuid().is_root() {
            return Self::at(root);
        }
        // A user with no home of its own (su and setpriv leave HOME at
        // /nonexistent) was told only "creating
        // /nonexistent/.local/state/vmshare/cache: Permission denied", not
        // where that path came from or what to do.
        Self::at(&root).map_err(|e| match e {
            VmmError::Io { what, source } => VmmError::io(
                format!(
                    "{what} (the default state directory, from XDG_STATE_HOME or HOME; give \
                     --state-dir DIR or set VMSHARE_STATE_DIR)"
                ),
                source,
            ),
            e => e,
        })
    }

    /// Where the state directory is when none is given, without making
    /// it: `$VMSHARE_STATE_DIR`, else `/var/lib/vmshare` for root and
    /// `$XDG_STATE_HOME/vmshare` (or `~/.local/state/vmshare`) for others;
    /// `None` for another user with neither variable.
    pub fn default_root() -> Option<PathBuf> {
        match std::env::var_os(STATE_DIR_ENV) {
            Some(p) if !p.is_empty() => return Some(PathBuf::from(p)),
            _ => {}
        }
        if rustix::process::geteuid().is_root() {
            return Some(PathBuf::from("/var/lib/vmshare"));
        }
        match (std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME")) {
            (Some(x), _) if !x.is_empty() => Some(PathBuf::from(x).join("vmshare")),
            (_, Some(h)) => Some(PathBuf::from(h).join(".local/state/vmshare")),
            _ => None,
        }
    }

    /// A state directory at exactly `root` (created if missing).
    ///
    /// What it holds is its user's alone: a run's initramfs carries CMD's
    /// environment (`-e PASSWORD=...`), a copy volume's image a copy of
    /// the host tree, a console log whatever the guest printed, a named
    /// volume its data; and a run's port sockets would take a connection
    /// from anyone who can reach them, in place of QEMU's. All of it was
    /// world-readable (0755 directories, 0644 files). Directories made
    /// here are 0700, and `runs`, `volumes` and `failed-consoles`, which
    /// are vmshare's own, are made so where an earlier version left them
    /// open. A root given by the user keeps the mode it has.
    pub fn at(root: impl Into<PathBuf>) -> Result<StateDir, VmmError> {
        use std::os::unix::fs::DirBuilderExt;
        let root = root.into();
        for sub in ["cache", "runs", "volumes", "failed-consoles"] {
            let dir = root.join(sub);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| VmmError::io(format!("creating {}", dir.display()), e))?;
            if sub != "cache" {
                private(&dir)?;
            }
        }
        Ok(StateDir { root })
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Where built assets are cached, keyed by a hash of their inputs.
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// Where named volumes live (`-v NAME:/path`), one directory each.
    pub fn volumes_dir(&self) -> PathBuf {
        self.root.join("volumes")
    }

    /// Sweeps runs whose vmshare died, then makes a directory for a new
    /// run owned by this process.
    pub fn new_run(&self) -> Result<RunDir, VmmError> {
        self.clean_stale_runs();
        let pid = std::process::id();
        let mut rnd = [0u8; 4];
        getrandom::fill(&mut rnd)
            .map_err(|e| VmmError::io("random run id", std::io::Error::other(e.to_string())))?;
        let id = format!("{pid}-{:08x}", u32::from_le_bytes(rnd));
        let path = self.root.join("runs").join(&id);
        std::fs::create_dir(&path)
            .map_err(|e| VmmError::io(format!("creating {}", path.display()), e))?;
        let run = RunDir { path, id };
        run.record(
            "owner",
            &format!("{pid} {}", start_time(pid).unwrap_or_default()),
        )?;
        Ok(run)
    }

    /// Cleans up after every run whose owner is no longer alive. Returns
    /// what was cleaned, for `--verbose`.
    pub fn clean_stale_runs(&self) -> Vec<String> {
        let mut cleaned = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.root.join("runs")) else {
            return cleaned;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            let owner = std::fs::read_to_string(dir.join("owner")).unwrap_or_default();
            let mut parts = owner.split_whitespace();
            let pid: Option<u32> = parts.next().and_then(|p| p.parse().ok());
            let started: Option<u64> = parts.next().and_then(|s| s.parse().ok());
            if let Some(pid) = pid {
                if start_time(pid).is_some() && start_time(pid) == started {
                    continue; // Still running.
                }
            } else if recently_modified(&dir) {
                continue; // Being created right now.
            }
            kill_recorded_qemu(&dir);
            if let Ok(ns) = std::fs::read_to_string(dir.join("netns")) {
                crate::netns::delete_stale(ns.trim());
            }
            let _ = vmshare_plan::sync::remove_tree(&dir);
            cleaned.push(dir.display().to_string());
        }
        cleaned
    }
}

fn recently_modified(dir: &Path) -> bool {
    std::fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs() < 10)
}

/// Kills the QEMU a dead run left, after checking that the pid still is
/// that QEMU (its command line names the run directory).
fn kill_recorded_qemu(dir: &Path) {
    let Some(pid) = std::fs::read_to_string(dir.join("qemu.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let needle = dir.as_os_str().as_encoded_bytes();
    if cmdline.windows(needle.len()).any(|w| w == needle) {
        // SAFETY: kill has no memory effects; the pid was checked above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Makes `dir` (ours) 0700 if group or others have any access to it.
fn private(dir: &Path) -> Result<(), VmmError> {
    use std::os::unix::fs::PermissionsExt;
    let md =
        std::fs::metadata(dir).map_err(|e| VmmError::io(format!("stat {}", dir.display()), e))?;
    if md.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| VmmError::io(format!("chmod 0700 {}", dir.display()), e))?;
    }
    Ok(())
}

/// A process's start time in clock ticks since boot, which tells a live
/// owner from a recycled pid.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields after it
    // are plain. starttime is field 22, the 20th after the name.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The directory of one run; removed when dropped.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    id: String,
}

impl RunDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A short unique id (`<pid>-<random>`), used to name per-run kernel
    /// objects such as network namespaces.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Writes `value` to the file `key`, so that a later sweep knows what
    /// to clean (`qemu.pid`, `netns`).
    pub fn record(&self, key: &str, value: &str) -> Result<(), VmmError> {
        let path = self.path.join(key);
        std::fs::write(&path, value)
            .map_err(|e| VmmError::io(format!("writing {}", path.display()), e))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = vmshare_plan::sync::remove_tree(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run's initramfs holds CMD's environment, a copy volume's image a
    /// copy of the host's tree: no one but the owner may read the state
    /// directory, also where an earlier version made it 0755.
    #[test]
    fn the_state_directory_is_its_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = std::env::temp_dir().join(format!("vmshare-state-mode-{}", std::process::id()));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let state = StateDir::at(tmp.join("new")).unwrap();
        for sub in ["", "cache", "runs", "volumes", "failed-consoles"] {
            assert_eq!(mode(&state.path().join(sub)), 0o700, "{sub}");
        }
        let old = tmp.join("old");
        for sub in ["cache", "runs", "volumes"] {
            std::fs::create_dir_all(old.join(sub)).unwrap();
            std::fs::set_permissions(old.join(sub), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
        StateDir::at(&old).unwrap();
        assert_eq!(mode(&old.join("runs")), 0o700);
        assert_eq!(mode(&old.join("volumes")), 0o700);
        assert_eq!(mode(&old.join("failed-consoles")), 0o700);
        // The user's own choices stay: the root, and the shared cache.
        assert_eq!(mode(&old), 0o755);
        assert_eq!(mode(&old.join("cache")), 0o755);
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn stale_runs_are_swept_and_live_ones_kept() {
        let tmp = std::env::temp_dir().join(format!("vmshare-state-test-{}", std::process::id()));
        let state = StateDir::at(&tmp).unwrap();
        let live = state.new_run().unwrap();
        // A run whose owner pid does not exist (pid_max is below 2^22).
        let dead = tmp.join("runs/4194999-deadbeef");
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::write(dead.join("owner"), "4194999 12345").unwrap();
        std::fs::write(dead.join("scratch"), "x").unwrap();

        let cleaned = state.clean_stale_runs();
        assert_eq!(cleaned, [dead.display().to_string()]);
        assert!(!dead.exists());
        assert!(live.path().exists());
        let live_path = live.path().to_path_buf();
        drop(live);
        assert!(!live_path.exists());
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    /// A copy volume's extraction keeps the guest's modes: a read-only
    /// directory in it kept a user other than root from removing the
    /// run's directory (root passes whatever the modes, so this shows the
    /// difference only run as another user; the VM test
    /// `a_copy_volume_comes_back_for_a_user_other_than_root` runs as nobody).
    #[test]
    fn a_run_with_read_only_directories_is_removed() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = std::env::temp_dir().join(format!("vmshare-state-ro-{}", std::process::id()));
        let state = StateDir::at(&tmp).unwrap();
        let run = state.new_run().unwrap();
        let ro = run.path().join("guest0/cache/mod");
        std::fs::create_dir_all(&ro).unwrap();
        std::fs::write(ro.join("f"), "x").unwrap();
        std::os::unix::fs::symlink("/", ro.join("link")).unwrap();
        for d in [ro.as_path(), ro.parent().unwrap()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        let path = run.path().to_path_buf();
        drop(run);
        assert!(!path.exists(), "{} is left", path.display());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
