//! The volume planner.
//!
//! One input model (a list of [`VolumeSpec`]-like mounts) from several front
//! ends (docker `-v`/`--mount`, OCI `config.json`, `FILESYSTEM_*`), planned
//! into what each VMM needs. The planner is pure: it reads nothing from disk
//! and starts nothing, so every plan can be snapshot-tested.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod guest;

pub use guest::{GuestMount, GuestNet, GuestProcess, GuestSpec};
