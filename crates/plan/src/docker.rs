//! The docker front end: `-v`, `--mount` and `--tmpfs`, as `vmshare run`
//! takes them.
//!
//! Docker's spelling is kept, including its quirks, so commands move over
//! unchanged. Options that only mean something to Docker Desktop or SELinux
//! (`z`, `Z`, `cached`, `delegated`, `consistent`, `nocopy`) are accepted and
//! ignored: refusing them would break copied command lines for no gain.
//! What docker refuses is refused too (`ro,rw` or `z,Z` in one `-v`, an
//! empty `--mount` field, `volume-nocopy` or `-v ...:nocopy` on a bind), so that a command
//! line vmshare takes also runs under docker.
//! Mount propagation cannot cross the VM boundary, so `shared`/`slave` and
//! their `r` forms are refused, while `private`/`rprivate` (what a VM gives
//! anyway) are accepted.

use std::path::Path;

use crate::spec::{check_target, host_path, ImageFormat, Source, Transport, VolumeSpec};
use crate::PlanError;

const VOLUME_OPTIONS_HINT: &str =
    "use ro, rw or copy (z, Z, cached, delegated, consistent, nocopy, private and rprivate are accepted and ignored)";
const MOUNT_KEYS_HINT: &str = "use type, source/src, target/destination/dst, readonly/ro, bind-propagation, bind-recursive, volume-nocopy, tmpfs-size, tmpfs-mode or consistency";
const REFUSED_PROPAGATION: &[&str] = &["shared", "rshared", "slave", "rslave"];

/// The kind of a `-v` option, of which docker takes one each
/// (`linuxValidMountMode`): `ro,rw`, `z,Z`, `cached,delegated` and `ro,ro`
/// are refused there, and were taken here. `None` for an unknown option.
fn option_class(opt: &str) -> Option<&'static str> {
    Some(match opt {
        "ro" | "rw" => "access mode (ro or rw)",
        "z" | "Z" => "SELinux label (z or Z)",
        "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => "propagation",
        "nocopy" => "nocopy",
        "consistent" | "cached" | "delegated" => "consistency (consistent, cached or delegated)",
        "copy" => "copy",
        _ => return None,
    })
}

/// Parses one `-v SRC:DST[:OPTS]`.
///
/// `SRC` is an absolute host path, a path relative to `cwd` when it starts
/// with `.` or contains a `/`, or else a named volume. `OPTS` is a
/// comma-separated list: `ro`, `rw`, `copy` (copy in at start, write back at
/// exit; with `ro`, copy in only) and the ignored docker options above.
pub fn parse_volume(text: &str, cwd: &Path) -> Result<VolumeSpec, PlanError> {
    let name = format!("-v {text}");
    let parts: Vec<&str> = text.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        // `/a:b:/data`: a colon inside the host path, not options.
        [_, _, opts] if opts.starts_with('/') => {
            return Err(syntax(
                &name,
                "expected HOST:GUEST[:OPTIONS] (paths cannot contain ':')",
            ))
        }
        [src, dst] => (*src, *dst, None),
        [src, dst, opts] => (*src, *dst, Some(*opts)),
        [_] => {
            return Err(syntax(
                &name,
                "anonymous volumes are not supported; use --tmpfs GUEST or -v NAME:GUEST",
            ))
        }
        _ => {
            return Err(syntax(
                &name,
                "expected HOST:GUEST[:OPTIONS] (paths cannot contain ':')",
            ))
        }
    };
    if src.is_empty() || dst.is_empty() {
        return Err(syntax(
            &name,
            "expected HOST:GUEST[:OPTIONS] with both paths",
        ));
    }
    let target = check_target(&name, dst)?;
    let mut readonly = None;
    let mut copy = false;
    // docker takes at most one option of each kind, and no empty one.
    let mut given: Vec<(&str, &str)> = Vec::new();
    for opt in opts.into_iter().flat_map(|o| o.split(',')) {
        let Some(class) = option_class(opt) else {
            return Err(match opt {
                "" => syntax(
                    &name,
                    "an empty option (a comma or colon too many); remove it",
                ),
                o => unknown(&name, o, VOLUME_OPTIONS_HINT),
            });
        };
        if let Some((first, _)) = given.iter().find(|(_, c)| *c == class) {
            let reason = if *first == opt {
                format!("'{opt}' given twice; keep one")
            } else {
                format!("'{first}' and '{opt}' both set the {class}; keep one")
            };
            return Err(syntax(&name, &reason));
        }
        given.push((opt, class));
        match opt {
            "ro" | "rw" => readonly = Some(opt == "ro"),
            "copy" => copy = true,
            o if REFUSED_PROPAGATION.contains(&o) => return Err(propagation(&name, o)),
            _ => {}
        }
    }
    refuse_tilde(&name, src)?;
    // docker refuses the volume-only and bind-only options on the other
    // kind ("field VolumeOptions must not be specified" for a bind's
    // nocopy, "field BindOptions ..." for a named volume's propagation).
    let has = |class: &str| given.iter().find(|(_, c)| *c == class).map(|(o, _)| *o);
    if is_path(src) && has("nocopy").is_some() {
        return Err(syntax(
            &name,
            "nocopy is for named volumes (docker refuses it on a host path); drop it",
        ));
    }
    if let Some(p) = has("propagation").filter(|_| !is_path(src)) {
        return Err(syntax(
            &name,
            &format!(
                "{p} is for host paths (docker refuses propagation on a named volume); drop it"
            ),
        ));
    }
    let source = if is_path(src) {
        let path = host_path(cwd, src);
        if copy {
            Source::Copy { path }
        } else {
            Source::Host {
                path,
                transport: Transport::Nfs,
            }
        }
    } else {
        check_volume_name(&name, src)?;
        if copy {
            return Err(syntax(
                &name,
                "copy needs a host directory, not a named volume; named volumes are already live",
            ));
        }
        Source::Named {
            volume: src.to_string(),
        }
    };
    Ok(VolumeSpec {
        name,
        source,
        target: Some(target),
        readonly: readonly.unwrap_or(false),
        options: Vec::new(),
        mkdir: false,
        tag: None,
    })
}

/// Parses one `--mount KEY=VALUE,...`.
///
/// Types: `bind` (host path, served over NFS), `volume` (named volume, the
/// default as in docker), `tmpfs`, and vmshare's own `ext4` and `erofs`
/// (an image file attached as a block device; erofs is always read-only).
/// The text is one line of CSV, as docker reads it: a field in double
/// quotes may hold commas (`"source=/a,b"`), and `""` inside it is a
/// quote. Keys are case-insensitive, as in docker.
pub fn parse_mount(text: &str, cwd: &Path) -> Result<VolumeSpec, PlanError> {
    let name = format!("--mount {text}");
    let fields = csv_fields(text).map_err(|why| syntax(&name, &why))?;
    let mut kind = String::from("volume");
    let mut src: Option<&str> = None;
    let mut dst: Option<&str> = None;
    let mut readonly = None;
    let mut options = Vec::new();
    let mut tmpfs_key: Option<String> = None;
    let mut volume_key: Option<String> = None;
    let mut bind_key: Option<String> = None;
    let mut recursive_readonly = false;
    for field in &fields {
        // docker: "invalid field '' must be a key=value pair".
        if field.is_empty() {
            return Err(syntax(
                &name,
                "an empty field (two commas in a row, or one at an end); remove it",
            ));
        }
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        let key = key.as_str();
        match (key, value) {
            (
                "type" | "source" | "src" | "target" | "destination" | "dst" | "bind-propagation"
                | "bind-recursive" | "volume-subpath" | "consistency" | "tmpfs-size" | "tmpfs-mode",
                None,
            ) => return Err(syntax(&name, &format!("{key} needs a value ({key}=...)"))),
            ("type", Some(v)) => kind = v.to_ascii_lowercase(),
            ("source" | "src", Some(v)) => src = Some(v),
            ("target" | "destination" | "dst", Some(v)) => dst = Some(v),
            ("readonly" | "ro", v) => readonly = Some(parse_bool(&name, key, v)?),
            ("bind-propagation", Some(v)) => {
                bind_key = Some(key.to_string());
                match v.to_ascii_lowercase().as_str() {
                    "private" | "rprivate" => {}
                    p if REFUSED_PROPAGATION.contains(&p) => return Err(propagation(&name, v)),
                    _ => {
                        return Err(syntax(
                            &name,
                            &format!(
                                "bind-propagation={v} is not a propagation; use private or \
                                 rprivate (shared, slave, rshared and rslave cannot cross the \
                                 VM boundary)"
                            ),
                        ))
                    }
                }
            }
            // The server always serves what is mounted below an export,
            // read-only when the export is: docker's default (`enabled`),
            // and `readonly`, which asks for that explicitly.
            ("bind-recursive", Some(v)) => {
                bind_key = Some(key.to_string());
                match v.to_ascii_lowercase().as_str() {
                    "enabled" => {}
                    "readonly" => recursive_readonly = true,
                    "disabled" | "writable" => {
                        return Err(syntax(
                            &name,
                            &format!(
                                "bind-recursive={v} cannot be served: the guest sees every \
                                 filesystem mounted below the source, read-only when the \
                                 volume is; drop it (enabled and readonly are what vmshare does)"
                            ),
                        ))
                    }
                    _ => {
                        return Err(syntax(
                            &name,
                            &format!(
                                "bind-recursive={v}: use enabled, disabled, writable or readonly"
                            ),
                        ))
                    }
                }
            }
            // docker resolves the subpath inside the volume; here the
            // server would open it by path on the host, and a guest can
            // make a volume's directory a symlink between two runs.
            ("volume-subpath", Some(_)) => {
                return Err(syntax(
                    &name,
                    "volume-subpath is not supported: a guest can replace a directory of its \
                     volume with a symlink, which the next run's export would follow; mount \
                     the whole volume and use the subdirectory inside the guest",
                ))
            }
            ("volume-nocopy", v) => {
                volume_key = Some(key.to_string());
                parse_bool(&name, key, v)?;
            }
            ("consistency", Some(_)) => {}
            ("tmpfs-size", Some(v)) => {
                tmpfs_key = Some(key.to_string());
                // docker leaves a size of 0 out (tmpfs's default, half of
                // memory); the kernel would read size=0 as no limit.
                let bytes = crate::size::parse_bytes(v)
                    .map_err(|why| syntax(&name, &format!("tmpfs-size={v}: {why}")))?;
                if bytes != 0 {
                    options.push(format!("size={}", kernel_size(bytes)));
                }
            }
            ("tmpfs-mode", Some(v)) => {
                tmpfs_key = Some(key.to_string());
                options.push(format!("mode={:o}", tmpfs_mode(&name, v)?));
            }
            _ => return Err(unknown(&name, field, MOUNT_KEYS_HINT)),
        }
    }
    let target = match dst {
        Some(d) if !d.is_empty() => check_target(&name, d)?,
        _ => return Err(syntax(&name, "missing target=GUEST_PATH")),
    };
    // docker: "cannot mix 'volume-*' options with mount type 'bind'".
    for (key, needs) in [
        (tmpfs_key, "tmpfs"),
        (volume_key, "volume"),
        (bind_key, "bind"),
    ] {
        if let Some(key) = key.filter(|_| kind != needs) {
            return Err(syntax(
                &name,
                &format!("{key} needs type={needs} (this is type={kind}); drop it"),
            ));
        }
    }
    // docker: "option 'BindOptions.ReadOnlyForceRecursive' requires
    // 'ReadOnly' to be set".
    if recursive_readonly && readonly != Some(true) {
        return Err(syntax(
            &name,
            "bind-recursive=readonly needs readonly; add it, or drop bind-recursive",
        ));
    }
    if let Some(s) = src {
        refuse_tilde(&name, s)?;
    }
    let need_src = |what: &str| match src {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(syntax(&name, &format!("missing source={what}"))),
    };
    let source = match kind.as_str() {
        "bind" => Source::Host {
            path: host_path(cwd, need_src("HOST_PATH")?),
            transport: Transport::Nfs,
        },
        "volume" => {
            let v = need_src("VOLUME_NAME")?;
            if is_path(v) {
                return Err(syntax(
                    &name,
                    &format!("'{v}' is a path, and type=volume (the default) takes a volume name; add type=bind for a host directory"),
                ));
            }
            check_volume_name(&name, v)?;
            Source::Named {
                volume: v.to_string(),
            }
        }
        "tmpfs" => {
            if src.is_some() {
                return Err(syntax(&name, "tmpfs takes no source; drop source="));
            }
            Source::Tmpfs
        }
        "ext4" | "erofs" => {
            let format = if kind == "ext4" {
                ImageFormat::Ext4
            } else {
                ImageFormat::Erofs
            };
            if format == ImageFormat::Erofs && readonly == Some(false) {
                return Err(syntax(
                    &name,
                    "erofs images are read-only; drop readonly=false",
                ));
            }
            Source::Image {
                path: host_path(cwd, need_src("IMAGE_FILE")?),
                format,
            }
        }
        other => {
            return Err(syntax(
                &name,
                &format!("unknown type '{other}'; use bind, volume, tmpfs, ext4 or erofs"),
            ))
        }
    };
    let readonly = readonly.unwrap_or(false)
        || matches!(
            source,
            Source::Image {
                format: ImageFormat::Erofs,
                ..
            }
        );
    Ok(VolumeSpec {
        name,
        source,
        target: Some(target),
        readonly,
        options,
        mkdir: false,
        tag: None,
    })
}

/// `bytes` as docker writes a tmpfs size for the kernel: in the largest of
/// k, m and g that divides it (`64MiB` is `64m`, `1.5g` is `1536m`, `1t`
/// is `1024g`), else in bytes.
fn kernel_size(bytes: u64) -> String {
    let (mut n, mut suffix) = (bytes, "");
    for unit in ["k", "m", "g"] {
        if n % 1024 != 0 {
            break;
        }
        n /= 1024;
        suffix = unit;
    }
    format!("{n}{suffix}")
}

/// `tmpfs-mode`, which docker reads as octal (`strconv.ParseUint(v, 8,
/// 32)`): `1777` and `01777` alike. Above 7777 the kernel would drop the
/// extra bits without a word, so it is refused.
fn tmpfs_mode(name: &str, value: &str) -> Result<u32, PlanError> {
    let mode = Some(value)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| (b'0'..=b'7').contains(&b)))
        .and_then(|v| u32::from_str_radix(v, 8).ok())
        .filter(|m| *m <= 0o7777);
    mode.ok_or_else(|| {
        syntax(
            name,
            &format!(
                "tmpfs-mode={value}: not an octal mode of at most 7777; write e.g. 1777 or 0755"
            ),
        )
    })
}

/// Splits one line of CSV into its fields, the way Go's `encoding/csv`
/// (which docker's `--mount` uses) reads a record: a field that starts
/// with `"` runs to the next lone `"` and may hold commas, `""` inside it
/// is one quote, and a quote anywhere else is an error rather than a
/// guess. A line break outside quotes would end docker's record and drop
/// the rest silently, so it is an error here.
fn csv_fields(text: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("a quoted field has no closing \"".into()),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => {}
                Some(_) => {
                    return Err(
                        "a quoted field must end at a comma; write \"\" for a quote inside it"
                            .into(),
                    )
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => {
                        return Err(
                            "a \" inside a field; quote the whole field instead (\"source=/a,b\")"
                                .into(),
                        )
                    }
                    Some('\n' | '\r') => return Err("a line break in the value".into()),
                    Some(c) => field.push(c),
                }
            }
        }
        fields.push(field);
    }
}

/// Parses one `--tmpfs GUEST[:OPTS]`; `OPTS` are mount options (`size=64m`,
/// `mode=1777`, `ro`, `noexec`, ...), passed to the guest's tmpfs.
pub fn parse_tmpfs(text: &str) -> Result<VolumeSpec, PlanError> {
    let name = format!("--tmpfs {text}");
    let (dst, opts) = text.split_once(':').unwrap_or((text, ""));
    let target = check_target(&name, dst)?;
    let mut readonly = false;
    let mut options = Vec::new();
    for opt in opts.split(',').filter(|o| !o.is_empty()) {
        match opt {
            "ro" => readonly = true,
            "rw" => readonly = false,
            // docker takes propagation among --tmpfs options (its
            // ParseTmpfsOptions knows them as mount flags).
            "private" | "rprivate" => {}
            o if REFUSED_PROPAGATION.contains(&o) => return Err(propagation(&name, o)),
            o => options.push(o.to_string()),
        }
    }
    Ok(VolumeSpec {
        name,
        source: Source::Tmpfs,
        target: Some(target),
        readonly,
        options,
        mkdir: false,
        tag: None,
    })
}

/// Parses all docker-style options of one command line and orders them as
/// docker does: by the depth of the target, so `/a` is mounted before
/// `/a/b` whatever the order on the command line. Duplicate targets are
/// refused.
pub fn parse_args(
    volumes: &[String],
    mounts: &[String],
    tmpfs: &[String],
    cwd: &Path,
) -> Result<Vec<VolumeSpec>, PlanError> {
    let mut specs = Vec::new();
    for v in volumes {
        specs.push(parse_volume(v, cwd)?);
    }
    for m in mounts {
        specs.push(parse_mount(m, cwd)?);
    }
    for t in tmpfs {
        specs.push(parse_tmpfs(t)?);
    }
    crate::plan::check_duplicates(&specs)?;
    crate::plan::sort_by_depth(&mut specs);
    Ok(specs)
}

/// Number of components of an absolute path (`/` is 0, `/a/b` is 2).
pub(crate) fn depth(path: &str) -> usize {
    path.split('/').filter(|c| !c.is_empty()).count()
}

fn is_path(src: &str) -> bool {
    src.starts_with('/') || src.starts_with('.') || src.contains('/')
}

/// `~` is the shell's to expand: quoted, it reached here and became a
/// directory literally named `~` under the working directory.
fn refuse_tilde(name: &str, src: &str) -> Result<(), PlanError> {
    if src == "~" || src.starts_with("~/") {
        return Err(syntax(
            name,
            &format!("'{src}': ~ is not expanded here (the shell expands it unquoted); write the full path"),
        ));
    }
    Ok(())
}

/// docker's rule for a local volume name: two characters at least.
fn check_volume_name(name: &str, volume: &str) -> Result<(), PlanError> {
    let mut chars = volume.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest = chars.as_str();
    let rest_ok = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if first_ok && rest_ok {
        Ok(())
    } else if first_ok && rest.is_empty() {
        Err(syntax(
            name,
            &format!("'{volume}' is too short for a volume name (two characters at least, as in docker); write ./{volume} for a relative path"),
        ))
    } else {
        Err(syntax(
            name,
            &format!("'{volume}' is neither a path nor a volume name ([A-Za-z0-9][A-Za-z0-9_.-]+); write ./{volume} for a relative path"),
        ))
    }
}

/// A boolean option's value, as docker reads it (Go's `strconv.ParseBool`:
/// `readonly=True` or `ro=t` work there and must here too).
fn parse_bool(name: &str, key: &str, value: Option<&str>) -> Result<bool, PlanError> {
    match value {
        None | Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(v) => Err(syntax(name, &format!("{key}={v}: use true or false"))),
    }
}

fn syntax(name: &str, reason: &str) -> PlanError {
    PlanError::Syntax {
        volume: name.to_string(),
        reason: reason.to_string(),
    }
}

fn unknown(name: &str, option: &str, hint: &str) -> PlanError {
    PlanError::UnknownOption {
        volume: name.to_string(),
        option: option.to_string(),
        hint: hint.to_string(),
    }
}

fn propagation(name: &str, mode: &str) -> PlanError {
    syntax(
        name,
        &format!("{mode} propagation cannot cross the VM boundary; drop it (mounts are private)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn cwd() -> PathBuf {
        PathBuf::from("/home/u/proj")
    }

    #[test]
    fn volume_forms() {
        let v = parse_volume("/srv/data:/data:ro", &cwd()).unwrap();
        assert_eq!(
            v.source,
            Source::Host {
                path: "/srv/data".into(),
                transport: Transport::Nfs
            }
        );
        assert_eq!(v.target.as_deref(), Some("/data"));
        assert!(v.readonly);
        assert_eq!(v.name, "-v /srv/data:/data:ro");

        let v = parse_volume("./src/../out:/out", &cwd()).unwrap();
        assert_eq!(
            v.source,
            Source::Host {
                path: "/home/u/proj/out".into(),
                transport: Transport::Nfs
            }
        );
        let v = parse_volume("cache:/root/.cache:z,rw", &cwd()).unwrap();
        assert_eq!(
            v.source,
            Source::Named {
                volume: "cache".into()
            }
        );
        assert!(!v.readonly);
        let v = parse_volume("build:/b:copy", &cwd());
        assert!(matches!(v, Err(PlanError::Syntax { .. })));
        let v = parse_volume("./build:/b:copy", &cwd()).unwrap();
        assert_eq!(
            v.source,
            Source::Copy {
                path: "/home/u/proj/build".into()
            }
        );
    }

    #[test]
    fn volume_errors_are_one_line_and_say_what_to_do() {
        let cases = [
            ("/a:data", "not an absolute path; write it as '/data'"),
            ("/a:/proc", "cannot mount on /proc"),
            (
                "/a:/b:ro,rw",
                "'ro' and 'rw' both set the access mode (ro or rw); keep one",
            ),
            ("/a:/b:ro,ro", "'ro' given twice; keep one"),
            ("/a:/b:z,Z", "'z' and 'Z' both set the SELinux label"),
            (
                "/a:/b:cached,delegated",
                "'cached' and 'delegated' both set the consistency",
            ),
            ("/a:/b:rprivate,private", "both set the propagation"),
            ("/a:/b:copy,ro,copy", "'copy' given twice"),
            ("/a:/b:ro,", "an empty option"),
            ("/a:/b:", "an empty option"),
            ("a:/b", "too short for a volume name"),
            ("/a:/b:bogus", "unknown option 'bogus'; use ro, rw or copy"),
            ("/a:/b:rshared", "propagation cannot cross the VM boundary"),
            ("/data", "anonymous volumes are not supported"),
            ("/a:/b:c:d", "paths cannot contain ':'"),
            ("/p/co:lon:/data", "paths cannot contain ':'"),
            ("bad name:/b", "neither a path nor a volume name"),
            ("~/x:/x", "~ is not expanded here"),
            // docker: "field VolumeOptions must not be specified" (a
            // bind) and "field BindOptions must not be specified" (a
            // named volume).
            ("/a:/b:nocopy", "nocopy is for named volumes"),
            ("./a:/b:ro,nocopy", "nocopy is for named volumes"),
            ("vol:/b:rprivate", "rprivate is for host paths"),
        ];
        for (text, want) in cases {
            let e = parse_volume(text, &cwd()).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
            assert!(!e.contains('\n'), "{text}: {e}");
            assert!(e.starts_with(&format!("-v {text}")), "{text}: {e}");
        }
    }

    #[test]
    fn mount_forms() {
        let m = parse_mount("type=bind,src=/h,dst=/g,readonly", &cwd()).unwrap();
        assert_eq!(
            m.source,
            Source::Host {
                path: "/h".into(),
                transport: Transport::Nfs
            }
        );
        assert!(m.readonly);
        // What vmshare does anyway: submounts served, read-only with the
        // volume.
        for recursive in ["bind-recursive=enabled", "readonly,bind-recursive=ReadOnly"] {
            let text = format!("type=bind,src=/h,dst=/g,{recursive}");
            let m = parse_mount(&text, &cwd()).unwrap();
            assert_eq!(m.readonly, recursive.starts_with("readonly"), "{text}");
        }
        let m = parse_mount("source=vol,target=/v", &cwd()).unwrap();
        assert_eq!(
            m.source,
            Source::Named {
                volume: "vol".into()
            }
        );
        let m = parse_mount("type=erofs,source=./app.erofs,target=/app", &cwd()).unwrap();
        assert_eq!(
            m.source,
            Source::Image {
                path: "/home/u/proj/app.erofs".into(),
                format: ImageFormat::Erofs
            }
        );
        assert!(m.readonly, "erofs is read-only by nature");
        let m = parse_mount("type=ext4,source=/i/db.ext4,target=/db,ro=false", &cwd()).unwrap();
        assert!(!m.readonly);
        let m = parse_mount(
            "type=tmpfs,target=/t,tmpfs-size=64m,tmpfs-mode=1777",
            &cwd(),
        )
        .unwrap();
        assert_eq!(m.source, Source::Tmpfs);
        assert_eq!(m.options, vec!["size=64m", "mode=1777"]);
    }

    /// docker reads `readonly=` with Go's `strconv.ParseBool`:
    /// `readonly=True` and `ro=t` were refused here ("use true or false").
    #[test]
    fn booleans_as_docker_reads_them() {
        for (value, want) in [
            ("1", true),
            ("t", true),
            ("T", true),
            ("TRUE", true),
            ("True", true),
            ("true", true),
            ("0", false),
            ("f", false),
            ("F", false),
            ("FALSE", false),
            ("False", false),
            ("false", false),
        ] {
            let text = format!("type=bind,src=/h,dst=/g,readonly={value}");
            assert_eq!(parse_mount(&text, &cwd()).unwrap().readonly, want, "{text}");
        }
        for value in ["yes", "on", "tRuE", ""] {
            let text = format!("type=bind,src=/h,dst=/g,ro={value}");
            assert!(parse_mount(&text, &cwd()).is_err(), "{text}");
        }
    }

    /// docker reads `tmpfs-size` with `units.RAMInBytes` and `tmpfs-mode`
    /// as octal, and hands the kernel the size in k, m or g: these were
    /// refused.
    #[test]
    fn tmpfs_size_and_mode_as_docker_reads_them() {
        let options = |extra: &str| {
            parse_mount(&format!("type=tmpfs,dst=/x,{extra}"), &cwd())
                .map(|m| m.options)
                .map_err(|e| e.to_string())
        };
        for (given, kernel) in [
            ("tmpfs-size=64MiB", "size=64m"),
            ("tmpfs-size=64mb", "size=64m"),
            ("tmpfs-size=1.5g", "size=1536m"),
            ("tmpfs-size=1t", "size=1024g"),
            ("tmpfs-size=1000", "size=1000"),
            ("tmpfs-size=4096", "size=4k"),
            ("tmpfs-mode=01777", "mode=1777"),
            ("tmpfs-mode=755", "mode=755"),
            ("tmpfs-mode=0", "mode=0"),
        ] {
            assert_eq!(options(given), Ok(vec![kernel.to_string()]), "{given}");
        }
        // As docker: a size of 0 is left out (the kernel's 0 is no limit).
        assert_eq!(options("tmpfs-size=0"), Ok(Vec::new()));
        for (bad, why) in [
            ("tmpfs-size=lots", "tmpfs-size=lots: not a size"),
            ("tmpfs-size=64q", "unknown unit"),
            ("tmpfs-mode=0o777", "not an octal mode"),
            ("tmpfs-mode=8", "not an octal mode"),
            ("tmpfs-mode=17777", "at most 7777"),
            ("tmpfs-mode=+777", "not an octal mode"),
        ] {
            let e = options(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let e = parse_mount("type=bind,src=/h,dst=/x,tmpfs-size=0", &cwd()).unwrap_err();
        assert!(
            e.to_string()
                .contains("tmpfs-size needs type=tmpfs (this is type=bind)"),
            "{e}"
        );
    }

    /// docker reads `--mount` as CSV: a quoted field may hold commas and
    /// doubled quotes, and keys are case-insensitive.
    #[test]
    fn mount_values_quoted_as_csv() {
        let m = parse_mount(r#"Type=BIND,"source=/h/a,b ""c""",dst=/g"#, &cwd()).unwrap();
        assert_eq!(
            m.source,
            Source::Host {
                path: r#"/h/a,b "c""#.into(),
                transport: Transport::Nfs
            }
        );
        assert_eq!(m.target.as_deref(), Some("/g"));
        let m = parse_mount(r#"type=bind,src=/h,"target=/g,x""#, &cwd()).unwrap();
        assert_eq!(m.target.as_deref(), Some("/g,x"));
        for (text, want) in [
            (r#"type=bind,src="/h",dst=/g"#, "quote the whole field"),
            (r#"type=bind,"src=/h,dst=/g"#, "no closing"),
            (r#"type=bind,"src=/h"x,dst=/g"#, "must end at a comma"),
            ("type=bind,src=/h,dst=/g\n,ro", "line break"),
        ] {
            let e = parse_mount(text, &cwd()).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn mount_errors() {
        let cases = [
            ("type=bind,target=/g", "missing source=HOST_PATH"),
            ("type=bind,source=/h", "missing target"),
            ("type=nfs,source=/h,target=/g", "unknown type 'nfs'"),
            (
                "type=bind,source=/h,target=/g,colour=red",
                "unknown option 'colour=red'",
            ),
            (
                "type=erofs,source=/i.erofs,target=/g,readonly=false",
                "erofs images are read-only",
            ),
            ("type=tmpfs,source=x,target=/g", "tmpfs takes no source"),
            (
                "type=bind,source=/h,target=/g,tmpfs-size=1m",
                "needs type=tmpfs",
            ),
            (
                "type=bind,source=/h,target=/g,readonly=maybe",
                "use true or false",
            ),
            ("type=volume,src=./a,dst=/x", "add type=bind"),
            ("src=/abs,dst=/x", "add type=bind"),
            // docker refuses these too.
            ("type=bind,src=/h,dst=/g,,", "an empty field"),
            ("type=bind,src=/h,dst=/g,", "an empty field"),
            (
                "type=bind,src=/h,dst=/g,volume-nocopy",
                "volume-nocopy needs type=volume (this is type=bind)",
            ),
            (
                "type=bind,src=/h,dst=/g,bind-recursive=disabled",
                "bind-recursive=disabled cannot be served",
            ),
            (
                "type=bind,src=/h,dst=/g,readonly,bind-recursive=writable",
                "bind-recursive=writable cannot be served",
            ),
            (
                "type=bind,src=/h,dst=/g,bind-recursive=readonly",
                "bind-recursive=readonly needs readonly",
            ),
            (
                "type=bind,src=/h,dst=/g,bind-recursive=sometimes",
                "use enabled, disabled, writable or readonly",
            ),
            (
                "type=volume,src=v1,dst=/g,bind-recursive=enabled",
                "bind-recursive needs type=bind",
            ),
            (
                "type=volume,src=v1,dst=/g,volume-subpath=sub",
                "volume-subpath is not supported",
            ),
            (
                "type=volume,src=v1,dst=/g,bind-propagation=rprivate",
                "bind-propagation needs type=bind (this is type=volume)",
            ),
            (
                "type=bind,src=/h,dst=/g,bind-propagation=bogus",
                "bind-propagation=bogus is not a propagation; use private or rprivate",
            ),
            (
                "type=bind,src=/h,dst=/g,bind-propagation",
                "bind-propagation needs a value",
            ),
            (
                "type=bind,src=/h,dst=/g,volume-nocopy=maybe",
                "use true or false",
            ),
        ];
        for (text, want) in cases {
            let e = parse_mount(text, &cwd()).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    /// What docker takes in the forms it refuses: one option of each kind,
    /// volume-nocopy on a volume, bind-propagation on a bind (any case).
    #[test]
    fn docker_forms_still_taken() {
        let v = parse_volume("/a:/b:ro,z,rprivate,cached", &cwd()).unwrap();
        assert!(v.readonly);
        assert!(parse_volume("v1:/b", &cwd()).is_ok());
        assert!(parse_volume("v1:/b:ro,Z,nocopy,delegated", &cwd()).is_ok());
        let m = parse_mount("type=volume,src=v1,dst=/g,volume-nocopy", &cwd()).unwrap();
        assert_eq!(
            m.source,
            Source::Named {
                volume: "v1".into()
            }
        );
        assert!(parse_mount("type=bind,src=/h,dst=/g,bind-propagation=RPRIVATE", &cwd()).is_ok());
    }

    #[test]
    fn tmpfs_options() {
        let t = parse_tmpfs("/scratch:size=1g,noexec,ro").unwrap();
        assert!(t.readonly);
        assert_eq!(t.options, vec!["size=1g", "noexec"]);
        assert_eq!(parse_tmpfs("/t").unwrap().options, Vec::<String>::new());
        assert!(parse_tmpfs("/dev/shm").is_err());
    }

    /// docker takes propagation among `--tmpfs` options: `rprivate` was
    /// refused as "not one tmpfs takes".
    #[test]
    fn tmpfs_propagation_as_docker_takes_it() {
        let t = parse_tmpfs("/t:rw,rprivate,noexec,size=64m").unwrap();
        assert_eq!(t.options, vec!["noexec", "size=64m"]);
        assert!(parse_tmpfs("/t:private").unwrap().options.is_empty());
        let e = parse_tmpfs("/t:rshared").unwrap_err().to_string();
        assert!(
            e.contains("propagation cannot cross the VM boundary"),
            "{e}"
        );
    }

    #[test]
    fn args_sorted_by_depth_and_duplicates_refused() {
        let specs = parse_args(
            &["/h/b:/a/b".into(), "/h/a:/a".into()],
            &[],
            &["/a/b/c".into()],
            &cwd(),
        )
        .unwrap();
        let targets: Vec<_> = specs.iter().map(|s| s.target.clone().unwrap()).collect();
        assert_eq!(targets, ["/a", "/a/b", "/a/b/c"]);

        let e = parse_args(
            &["/h:/a".into()],
            &["type=tmpfs,target=/a/".into()],
            &[],
            &cwd(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "two mounts on /a ('-v /h:/a' and '--mount type=tmpfs,target=/a/'); keep one"
        );
    }
}
