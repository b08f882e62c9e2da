//! The guest init (in progress).
#![deny(missing_docs)]

/// Runs as PID 1.
pub fn main() -> std::process::ExitCode {
    std::process::ExitCode::FAILURE
}
