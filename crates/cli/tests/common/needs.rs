//! Tests that need root: they skip without it, except in CI, which must
//! run every test. A file of its own so that a test needing only this
//! (`nfs_libnfs.rs`) need not take in the VM harness.

/// Whether this process is root. If not, the test says it is skipped and
/// why (`needs`, as in "a network namespace needs root"), or fails under
/// CI.
pub fn root_or_skip(needs: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run this test as root: {needs}"
    );
    eprintln!("SKIPPED: {needs}");
    false
}
