//! The VM side of vmshare: guest assets (kernel, modules, initramfs), the
//! QEMU `microvm` launcher, the KVM probe, the host end of the guest's
//! console and standard streams, and per-run state with crash cleanup.
//!
//! The one entry point most callers need is [`GuestRun`]: give it a
//! [`GuestSpec`](vmshare_plan::GuestSpec), optionally extra files and a
//! network, and [`GuestRun::run`] boots a VM, runs the command and returns
//! its exit status and output. `vmshare run` and the end-to-end tests both
//! use it, so what the tests prove is what users get.
//!
//! ```no_run
//! use std::time::Duration;
//! use vmshare_vmm::{GuestRun, StateDir};
//!
//! let out = GuestRun::command(["sh", "-c", "echo hi; exit 7"])
//!     .init_binary("/path/to/static/vmshare")
//!     .state_dir(StateDir::resolve(None)?)
//!     .timeout(Duration::from_secs(120))
//!     .run()?;
//! assert_eq!((out.status, out.stdout_str().as_str()), (7, "hi\n"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod assets;
mod channels;
mod cpio;
mod elf;
mod error;
pub mod kvm;
mod modules;
pub mod netns;
pub mod qemu;
mod run;
pub mod state;

pub use error::VmmError;
pub use run::{
    detect_accel, recorded_kvm_verdict, Event, GuestFile, GuestNetwork, GuestOutput, GuestRun,
    Sink, StdinSource, USER_NET_GUEST, USER_NET_HOST,
};
pub use state::{RunDir, StateDir};
