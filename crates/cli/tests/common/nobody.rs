//! `vmshare` run as a user other than root (nobody), which CI, running as
//! root, otherwise never does.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// A tree under the temporary directory for a run as nobody: `base`
/// (searchable by all) holding `home`, nobody's home. Removed when
/// dropped, a failed test's too.
pub struct Nobody {
    /// Everything the test makes for the run goes under here.
    pub base: PathBuf,
    /// nobody's HOME, where its state directory goes.
    pub home: PathBuf,
}

impl Nobody {
    /// `None` (the test skipped, saying so) unless this is root, which
    /// giving files to nobody and becoming it need.
    pub fn new(name: &str) -> Option<Nobody> {
        if !super::needs::root_or_skip("running vmshare as nobody needs root") {
            return None;
        }
        let base =
            std::env::temp_dir().join(format!("vmshare-nobody-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let home = base.join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        Some(Nobody { base, home })
    }

    /// Gives everything under `base` to nobody.
    pub fn give(&self) {
        let chown = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&self.base)
            .status()
            .unwrap();
        assert!(chown.success());
    }

    /// `vmshare` as nobody, with nobody's home and no state directory
    /// given, in `base`, its output piped; arguments and environment are
    /// the caller's to add.
    pub fn vmshare(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vmshare"));
        c.uid(65534)
            .gid(65534)
            .env("HOME", &self.home)
            .env_remove("VMSHARE_STATE_DIR")
            .env_remove("XDG_STATE_HOME")
            .current_dir(&self.base)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs `cmd` (from [`vmshare`](Self::vmshare)), killed after 300 s.
    pub fn run(&self, mut cmd: Command) -> Output {
        super::wait_with_watchdog(cmd.spawn().unwrap(), Duration::from_secs(300))
    }
}

impl Drop for Nobody {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}
