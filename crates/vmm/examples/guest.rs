//! Boots a guest and runs a command in it, for poking at the VM side by
//! hand: `cargo run -p vmshare-vmm --example guest -- INIT_BINARY CMD...`
//! (INIT_BINARY: a static vmshare, e.g.
//! target/x86_64-unknown-linux-gnu/debug/vmshare). Set VMSHARE_NET=user
//! for a network.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(init) = args.next() else {
        eprintln!("usage: guest INIT_BINARY CMD...");
        return ExitCode::from(2);
    };
    let mut run = vmshare_vmm::GuestRun::command(args)
        .init_binary(init)
        .stdout(vmshare_vmm::Sink::Inherit)
        .stderr(vmshare_vmm::Sink::Inherit)
        .on_event(|e| eprintln!("[{:>8.3}s] {}", e.at.as_secs_f64(), e.text));
    if std::env::var("VMSHARE_NET").as_deref() == Ok("user") {
        run = run.network(vmshare_vmm::GuestNetwork::User);
    }
    match run.run() {
        Ok(out) => {
            for e in &out.errors {
                eprintln!("guest error: {e}");
            }
            ExitCode::from(u8::try_from(out.status).unwrap_or(255))
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(125)
        }
    }
}
