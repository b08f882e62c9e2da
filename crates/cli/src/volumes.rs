//! The volume front ends `vmshare plan` and `vmshare run` both read: an
//! OCI runtime spec (`--oci config.json`), docker's `-v`/`--mount`/
//! `--tmpfs`, and the `FILESYSTEM_*` variables (`--from-env`), merged into
//! one list of volumes for the planner.

use std::error::Error;
use std::path::Path;

use vmshare_plan::oci::{self, OciProcess};
use vmshare_plan::spec::normalize;
use vmshare_plan::{docker, env, VolumeSpec};

/// What the user gave, front end by front end.
pub(crate) struct FrontEnds<'a> {
    /// `--oci`: the path of a `config.json`.
    pub oci: Option<&'a Path>,
    /// `-v` values.
    pub volumes: &'a [String],
    /// `--mount` values.
    pub mounts: &'a [String],
    /// `--tmpfs` values.
    pub tmpfs: &'a [String],
    /// `--from-env`: read this process's `FILESYSTEM_*` variables.
    pub from_env: bool,
}

/// The merged volumes.
pub(crate) struct Volumes {
    /// In mount order.
    pub specs: Vec<VolumeSpec>,
    /// The front ends' notes (skipped OCI system mounts).
    pub notes: Vec<String>,
    /// The OCI spec's process, when `--oci` gave one.
    pub process: Option<OciProcess>,
}

/// Reads every front end the user asked for. The OCI mounts come first:
/// their `{{ mount N }}` templates count from the first volume of the
/// plan, and docker's volumes then go over them as they go over an
/// image; `FILESYSTEM_*` shares come last. Relative OCI sources are taken
/// from the bundle (the config's directory); relative `-v` paths from `cwd`.
pub(crate) fn read(f: &FrontEnds<'_>, cwd: &Path) -> Result<Volumes, Box<dyn Error>> {
    let mut out = Volumes {
        specs: Vec::new(),
        notes: Vec::new(),
        process: None,
    };
    if let Some(path) = f.oci {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "--oci {}: {e}; give the path of an OCI config.json",
                path.display()
            )
        })?;
        let bundle = normalize(&cwd.join(path.parent().unwrap_or(Path::new(""))));
        let o = oci::parse_config_in(&text, &bundle)?;
        out.specs = o.volumes;
        out.notes = o.notes;
        out.process = o.process;
    }
    out.specs
        .extend(docker::parse_args(f.volumes, f.mounts, f.tmpfs, cwd)?);
    if f.from_env {
        out.specs.extend(env::parse_env(std::env::vars())?);
    }
    Ok(out)
}
