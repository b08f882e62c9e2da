//! The smallest end-to-end run: boot, run a shell command, get its output
//! and exit status back unchanged.

#![allow(clippy::unwrap_used)]

mod common;

#[test]
fn stdout_stderr_and_exit_status_pass_through() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let out = h.run(h.guest(["sh", "-c", "echo hi; echo oops >&2; exit 7"]));
    assert_eq!(out.stdout_str(), "hi\n", "console:\n{}", out.console);
    assert_eq!(out.stderr_str(), "oops\n");
    assert_eq!(out.status, 7);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
}
