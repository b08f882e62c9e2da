//! Host directories for tests, under cargo's per-target temp dir.

use std::path::PathBuf;

/// A fresh directory for a test's host files (removed and recreated), so
/// that a rerun never sees what an earlier, perhaps failed, run left.
pub fn scratch_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("scratch")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}
