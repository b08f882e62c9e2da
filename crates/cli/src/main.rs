//! The `vmshare` binary: a thin clap front end over the library crates.
//!
//! Each subcommand lives in its own module with its own `Args` type, so the
//! wiring here stays a table of contents. When the binary runs as PID 1 in a
//! guest (as `/init`), it is the guest init whatever its arguments are.

mod image;
mod plan;
mod process;
mod run;
mod serve;
mod volumes;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "vmshare", version, about = "Docker-style volumes for microVMs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve host directories over NFSv3 (with MOUNT and a portmapper).
    Serve(serve::Args),
    /// Boot a microVM with docker-style volumes and run a command in it.
    Run(run::Args),
    /// Print the launch plan and VMM configuration for a set of volumes.
    Plan(plan::Args),
    /// Build block-device volume images.
    Image(image::Args),
    /// Run as the guest's init (PID 1). Used inside the VM only.
    Init,
}

fn main() -> ExitCode {
    if rustix::process::getpid().is_init() {
        return vmshare_init::main();
    }
    // 125 for a command line that does not parse, as for vmshare's other
    // errors and docker's: clap's own 2 cannot be told from CMD's exit 2.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 125 } else { 0 });
        }
    };
    let result = match cli.command {
        Command::Serve(a) => serve::main(a),
        Command::Run(a) => run::main(a),
        Command::Plan(a) => plan::main(a),
        Command::Image(a) => image::main(a),
        Command::Init => return vmshare_init::main(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vmshare: {e:#}");
            ExitCode::from(125)
        }
    }
}
