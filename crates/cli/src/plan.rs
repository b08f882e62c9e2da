//! `vmshare plan` (in progress).

use std::process::ExitCode;

/// Arguments of `vmshare plan`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn main(_args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    Err("not implemented yet".into())
}
