//! How the guest's command runs, for `vmshare run` and for the initramfs
//! `vmshare plan --write-initrd` writes: CMD, `-e`, `--env-file`, `-w` and
//! `-u`, over what an OCI spec's `process` gives.

use std::path::{Path, PathBuf};

use vmshare_plan::oci::OciProcess;
use vmshare_plan::GuestProcess;

/// The options that say how the guest's command runs (flattened into
/// `vmshare run` and `vmshare plan`).
#[derive(Debug, clap::Args)]
pub(crate) struct ProcessArgs {
    /// Set an environment variable (KEY=VALUE, or KEY to copy the host's).
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,
    /// Working directory in the guest (created if missing).
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// Run as UID[:GID] (numeric; `root` is 0).
    #[arg(short = 'u', long = "user", value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// The command and its arguments (required unless --oci gives
    /// process.args).
    #[arg(trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl ProcessArgs {
    /// Whether none of these options was given.
    pub(crate) fn is_empty(&self) -> bool {
        self.env.is_empty()
            && self.env_files.is_empty()
            && self.workdir.is_none()
            && self.user.is_none()
            && self.command.is_empty()
    }

    /// These options spelled for a command line, CMD last after `--`, for
    /// hints that name a `vmshare plan` command.
    pub(crate) fn to_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in &self.env {
            out.extend(["-e".into(), e.clone()]);
        }
        for f in &self.env_files {
            out.extend(["--env-file".into(), f.display().to_string()]);
        }
        if let Some(w) = &self.workdir {
            out.extend(["-w".into(), w.clone()]);
        }
        if let Some(u) = &self.user {
            out.extend(["-u".into(), u.clone()]);
        }
        if !self.command.is_empty() {
            out.push("--".into());
            out.extend(self.command.iter().cloned());
        }
        out
    }
}

/// CMD and how it runs: the command line's CMD, -e/--env-file, -w and -u,
/// over what an OCI spec's process gives (docker's way with an image's
/// CMD, ENV, WORKDIR and USER).
///
/// `oci_path` is the `--oci` file, and `usage` the command line to show
/// when there is no CMD.
pub(crate) fn guest_process(
    args: &ProcessArgs,
    oci: Option<OciProcess>,
    oci_path: Option<&Path>,
    usage: &str,
) -> Result<GuestProcess, String> {
    let oci = oci.unwrap_or_default();
    let command = if args.command.is_empty() {
        oci.args
    } else {
        args.command.clone()
    };
    if command.is_empty() {
        return Err(match oci_path {
            Some(c) => format!(
                "no command: {} has no process.args; give CMD after the options",
                c.display()
            ),
            None => format!("no command: give CMD after the options ({usage})"),
        });
    }
    let mut env = oci.env;
    for f in &args.env_files {
        env.extend(read_env_file(f)?);
    }
    for e in &args.env {
        env.extend(expand_env(e).map_err(|why| format!("-e {e:?}: {why}"))?);
    }
    // As docker: a relative directory would be relative to whatever the
    // image's default is, which says nothing here.
    if let Some(w) = args.workdir.as_deref().filter(|w| !w.starts_with('/')) {
        return Err(format!(
            "-w {w}: the working directory must be an absolute path"
        ));
    }
    let (uid, gid, additional_gids) = match (&args.user, oci.user) {
        (Some(u), _) => {
            let (uid, gid) = parse_user(Some(u))?;
            (uid, gid, Vec::new())
        }
        (None, Some(u)) => (u.uid, u.gid, u.additional_gids),
        (None, None) => (0, 0, Vec::new()),
    };
    Ok(GuestProcess {
        args: command,
        env,
        cwd: args.workdir.clone().or(oci.cwd),
        uid,
        gid,
        additional_gids,
        ..GuestProcess::default()
    })
}

fn parse_user(user: Option<&str>) -> Result<(u32, u32), String> {
    let Some(user) = user else { return Ok((0, 0)) };
    let id = |s: &str| match s {
        "root" => Ok(0),
        // setuid(2) reads (uid_t)-1 as "leave it as it is".
        "4294967295" => Err(format!(
            "-u {user}: 4294967295 is not an id (it means \"no change\" to setuid)"
        )),
        _ => s.parse::<u32>().map_err(|_| {
            format!("-u {user}: give numeric UID[:GID] (the guest has no user database)")
        }),
    };
    match user.split_once(':') {
        Some((u, g)) => Ok((id(u)?, id(g)?)),
        // docker: a uid with no passwd entry gets gid 0.
        None => Ok((id(user)?, 0)),
    }
}

/// `KEY=VALUE` as is; `KEY` alone takes the host's value (dropped if unset),
/// as docker does. A name that is empty or has white space is refused, as
/// docker refuses it (`export K=V` from a shell file became a variable
/// called "export K").
fn expand_env(item: &str) -> Result<Option<String>, String> {
    let name = item.split_once('=').map_or(item, |(n, _)| n);
    if name.is_empty() {
        return Err("no variable name".into());
    }
    if name.chars().any(char::is_whitespace) {
        return Err(format!("the name {name:?} has white space"));
    }
    if item.contains('=') {
        return Ok(Some(item.to_string()));
    }
    Ok(std::env::var(item).ok().map(|v| format!("{item}={v}")))
}

/// docker's env-file: `KEY=VALUE` or `KEY` lines, `#` comments; leading
/// white space is dropped, and the value is kept as written to its end.
fn read_env_file(path: &Path) -> Result<Vec<String>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--env-file {}: {e}", path.display()))?;
    // A byte-order mark (editors on Windows write one) is not part of the
    // first name, as docker's reader drops it too.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let item = expand_env(line)
            .map_err(|why| format!("--env-file {}:{}: {why}", path.display(), i + 1))?;
        out.extend(item);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_as_docker_takes_it() {
        assert_eq!(expand_env("A=1 2 "), Ok(Some("A=1 2 ".into())));
        for bad in ["", "=x", "export D=x", "G =v"] {
            assert!(expand_env(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_env_file_may_start_with_a_byte_order_mark() {
        let dir = std::env::temp_dir().join(format!("vmshare-envbom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("test directory");
        let f = dir.join("env");
        std::fs::write(&f, "\u{feff}FIRST=1\nSECOND=2\n").expect("env file");
        let read = read_env_file(&f);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            read,
            Ok(vec!["FIRST=1".to_string(), "SECOND=2".to_string()])
        );
    }

    #[test]
    fn users() {
        assert_eq!(parse_user(Some("1000:1000")), Ok((1000, 1000)));
        assert_eq!(parse_user(Some("1000")), Ok((1000, 0)));
        assert_eq!(parse_user(Some("root")), Ok((0, 0)));
        assert!(parse_user(Some("alice")).is_err());
        assert!(parse_user(Some("4294967295")).is_err());
        assert!(parse_user(Some("1:4294967295")).is_err());
    }
}
