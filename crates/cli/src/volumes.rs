//! The volume front ends `vmshare plan` and `vmshare run` both read: an
//! OCI runtime spec (`--oci config.json`), docker's `-v`/`--mount`/
//! `--tmpfs`, and the `FILESYSTEM_*` variables (`--from-env`), merged into
//! one list of volumes for the planner.

use std::error::Error;
use std::path::{Path, PathBuf};

use vmshare_plan::oci::{self, OciProcess};
use vmshare_plan::spec::normalize;
use vmshare_plan::{docker, env, plan, HostFacts, HostKind, ImageFormat, Source, VolumeSpec};

/// The volume options of `vmshare plan` and `vmshare run` (flattened into
/// both), front end by front end.
#[derive(Debug, clap::Args)]
pub(crate) struct FrontEnds {
    /// Bind a host path or a named volume: HOST:GUEST[:ro|rw] or NAME:GUEST;
    /// HOST:GUEST:copy copies HOST into a disk image and back at exit.
    #[arg(short = 'v', long = "volume", value_name = "SRC:GUEST[:OPTS]")]
    volumes: Vec<String>,
    /// docker --mount: type=bind|volume|tmpfs|ext4|erofs,source=..,target=..[,readonly]
    /// (ext4 and erofs attach an image file as a disk).
    #[arg(long = "mount", value_name = "KEY=VALUE,...")]
    mounts: Vec<String>,
    /// A tmpfs at GUEST[:OPTS].
    #[arg(long = "tmpfs", value_name = "GUEST[:OPTS]")]
    tmpfs: Vec<String>,
    /// The mounts of an OCI runtime spec, before the other volumes;
    /// relative sources are relative to the config's directory. vmshare run
    /// also takes its process: process.args is CMD when no CMD is given;
    /// process.env comes before --env-file and -e, which override it;
    /// process.cwd applies unless -w, process.user uid/gid/additionalGids
    /// unless -u (a non-root process.user counts as -u for --volume-owner).
    /// Everything else in it (root, hooks, terminal...) is ignored.
    #[arg(long, value_name = "CONFIG_JSON")]
    pub oci: Option<PathBuf>,
    /// Also mount the shares this process's FILESYSTEM_* variables describe
    /// (_SOURCE, _TARGET, _DRIVER nfs, 9p or virtiofs, _ACCESSMODE,
    /// _READONLY; then FILESYSTEM2_*...), after the other volumes.
    #[arg(long)]
    from_env: bool,
}

impl FrontEnds {
    /// These options spelled for a command line, for hints that name a
    /// `vmshare plan` command.
    pub(crate) fn to_args(&self) -> Vec<String> {
        let pairs = [
            ("-v", &self.volumes),
            ("--mount", &self.mounts),
            ("--tmpfs", &self.tmpfs),
        ];
        let mut out: Vec<String> = pairs
            .iter()
            .flat_map(|(flag, values)| {
                values
                    .iter()
                    .flat_map(move |v| [flag.to_string(), v.clone()])
            })
            .collect();
        if let Some(oci) = &self.oci {
            out.extend(["--oci".into(), oci.display().to_string()]);
        }
        if self.from_env {
            out.push("--from-env".into());
        }
        out
    }
}

/// The merged volumes.
pub(crate) struct Volumes {
    /// In mount order.
    pub specs: Vec<VolumeSpec>,
    /// The front ends' notes (skipped OCI system mounts).
    pub notes: Vec<String>,
    /// The OCI spec's process, when `--oci` gave one.
    pub process: Option<OciProcess>,
    /// The OCI spec's host name, when `--oci` gave one.
    pub hostname: Option<String>,
}

/// Reads every front end the user asked for. The OCI mounts come first:
/// their `{{ mount N }}` templates count from the first volume of the
/// plan, and docker's volumes then go over them as they go over an
/// image; `FILESYSTEM_*` shares come last. Relative OCI sources are taken
/// from the bundle (the config's directory); relative `-v` paths from `cwd`.
pub(crate) fn read(f: &FrontEnds, cwd: &Path) -> Result<Volumes, Box<dyn Error>> {
    let mut out = Volumes {
        specs: Vec::new(),
        notes: Vec::new(),
        process: None,
        hostname: None,
    };
    if let Some(path) = &f.oci {
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
        out.hostname = o.hostname;
    }
    let oci_end = out.specs.len();
    out.specs
        .extend(docker::parse_args(&f.volumes, &f.mounts, &f.tmpfs, cwd)?);
    let docker_end = out.specs.len();
    if f.from_env {
        out.specs.extend(env::parse_env(env_as_text()?)?);
    }
    let front = |i: usize| match i {
        i if i < oci_end => Front::Oci,
        i if i < docker_end => Front::Docker,
        _ => Front::Env,
    };
    // The planner's own advice, "list the outer one first", cannot be
    // followed across front ends: their order is fixed.
    plan::check_duplicates(&out.specs)?;
    if let Some((i, j)) = plan::first_hidden(&out.specs)? {
        if front(i) != front(j) {
            return Err(hidden_across(&out.specs[i], front(i), &out.specs[j], front(j)).into());
        }
    }
    Ok(out)
}

/// The `-v` volumes and writable `FILESYSTEM_*` shares whose host path
/// does not exist, with that path: `vmshare run` creates each as a
/// directory before planning, as docker does for `-v` and
/// docker-vm-runner for a share that is not read-only, and `vmshare
/// plan` plans them as directories (creating nothing). Not the others:
/// docker refuses a `--mount` bind of a missing source, and the planner
/// does, and does for OCI mounts and read-only shares too. Missing, not
/// merely unreachable: `/etc/hosts/` (ENOTDIR) is the planner's to
/// refuse, saying why.
pub(crate) fn missing_sources(specs: &[VolumeSpec]) -> Vec<(&VolumeSpec, &Path)> {
    specs
        .iter()
        .filter(|s| created_like(s).is_some())
        .filter_map(|s| match &s.source {
            Source::Host { path, .. } => Some((s, path.as_path())),
            _ => None,
        })
        .filter(|(_, path)| {
            std::fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        })
        .collect()
}

/// Whose rule it is that a missing source of `spec` is created, for the
/// messages that say so; `None` when it is not.
pub(crate) fn created_like(spec: &VolumeSpec) -> Option<&'static str> {
    if spec.name.starts_with("-v ") {
        Some("as docker does for -v")
    } else if spec.name.starts_with("FILESYSTEM") && !spec.readonly {
        Some("as docker-vm-runner does for a FILESYSTEM_SOURCE that is not read-only")
    } else {
        None
    }
}

/// The host as `vmshare run` will find it once it has created the
/// missing `-v` sources ([`missing_sources`]): those paths are
/// directories; everything else is asked of `H`.
pub(crate) struct AfterCreating<H> {
    /// The real host.
    pub host: H,
    /// The directories `vmshare run` would create, normalized.
    pub dirs: Vec<PathBuf>,
}

impl<H: HostFacts> AfterCreating<H> {
    /// `host` with the missing sources of `specs` as directories.
    pub(crate) fn new(host: H, specs: &[VolumeSpec]) -> Self {
        let dirs = missing_sources(specs)
            .into_iter()
            .map(|(_, p)| normalize(p))
            .collect();
        AfterCreating { host, dirs }
    }
}

impl<H: HostFacts> HostFacts for AfterCreating<H> {
    fn kind(&self, path: &Path) -> HostKind {
        if self.dirs.contains(&normalize(path)) {
            HostKind::Dir
        } else {
            self.host.kind(path)
        }
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        self.host.resolve(path)
    }

    fn image_format(&self, path: &Path) -> Option<Option<ImageFormat>> {
        self.host.image_format(path)
    }
}

/// The environment's `FILESYSTEM*` variables as text. `std::env::vars`
/// panics on any variable that is not UTF-8, wherever it is in the
/// environment: an unrelated `LANG`-era Latin-1 value aborted the plan.
/// Others are left out; a `FILESYSTEM*` name or value that is not UTF-8
/// is an error naming it.
fn env_as_text() -> Result<Vec<(String, String)>, vmshare_plan::PlanError> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    for (k, v) in std::env::vars_os() {
        if !k.as_bytes().starts_with(b"FILESYSTEM") {
            continue;
        }
        match (k.to_str(), v.to_str()) {
            (Some(k), Some(v)) => out.push((k.to_string(), v.to_string())),
            _ => {
                return Err(vmshare_plan::PlanError::Env {
                    var: k.to_string_lossy().into_owned(),
                    reason: "not UTF-8 text (FILESYSTEM_* names and values are read as UTF-8)"
                        .into(),
                })
            }
        }
    }
    Ok(out)
}

/// The front end a volume came from, in mount order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Front {
    Oci,
    Docker,
    Env,
}

/// Why `inner` (from `inner_front`) would be hidden by `outer`, mounted
/// later on a parent of its target by a later front end, and the two
/// things the user can do: give the outer volume through the inner one's
/// front end, before it, or the inner one through the outer one's, after
/// it. (docker's options are sorted parents first, so "before" and
/// "after" there need no care.)
fn hidden_across(
    inner: &VolumeSpec,
    inner_front: Front,
    outer: &VolumeSpec,
    outer_front: Front,
) -> String {
    let inner_target = inner.target.as_deref().unwrap_or("-");
    let parent = outer.target.as_deref().unwrap_or("-");
    let outer_in_inner_front = match inner_front {
        Front::Oci => format!(
            "put the mount on {parent} in config.json's mounts, before '{}'",
            inner.name
        ),
        _ => format!("give the volume on {parent} as a -v or --mount instead"),
    };
    let inner_in_outer_front = match outer_front {
        Front::Env => format!(
            "give {inner_target} as a FILESYSTEM<N>_* share numbered after the one on {parent}"
        ),
        _ => format!("give {inner_target} as a -v or --mount instead"),
    };
    format!(
        "'{}' would be hidden by '{}', mounted later on its parent {parent}: --oci mounts come first, \
         then -v/--mount/--tmpfs (parents first), then FILESYSTEM_* shares, whatever the order on the \
         command line; give both the same way: {outer_in_inner_front}, or {inner_in_outer_front}",
        inner.name, outer.name
    )
}
