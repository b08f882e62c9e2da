//! What a test needs from the machine (root, a program): a test that lacks
//! it says it is skipped and why, except in CI, which must run every test.
//! A file of its own so that a test needing only this (`nfs_libnfs.rs`,
//! `rpc_tools.rs`) need not take in the VM harness.

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

/// Whether `tool` is on the PATH. If not, the test says it is skipped and
/// which Debian `package` has it, or fails under CI (whose install step
/// must have put it there).
#[allow(dead_code)] // Not every test binary that includes this runs tools.
pub fn tool_or_skip(tool: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()));
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} missing: CI must install {package}"
        );
        eprintln!("SKIPPED: {tool} not installed (apt-get install {package})");
    }
    found
}
