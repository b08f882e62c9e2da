//! The volume planner.
//!
//! One input model ([`VolumeSpec`]) from several front ends (docker
//! `-v`/`--mount`/`--tmpfs` in [`docker`], OCI `config.json`, the
//! `FILESYSTEM_*` variables), planned by [`plan()`] into a [`Plan`]: NFS
//! exports, block devices, virtio-fs/9p shares and the guest's mount table.
//! Planning is pure: it starts nothing and reads the host only through the
//! [`HostFacts`] the caller passes, so every plan can be snapshot-tested.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod docker;
pub mod env;
mod error;
pub mod guest;
pub mod host;
pub mod image;
pub mod oci;
pub mod plan;
pub mod render;
pub mod size;
pub mod spec;
pub mod sync;

pub use error::PlanError;
pub use guest::{GuestMount, GuestNet, GuestProcess, GuestSpec};
pub use host::{FakeHost, HostFacts, HostKind, SystemHost};
pub use plan::{plan, Plan, PlanConfig, PlannedMount, Vmm};
pub use spec::{AccessMode, ImageFormat, Source, Transport, VolumeSpec};
