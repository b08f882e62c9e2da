//! The OCI front end: the `mounts` of a runtime spec `config.json`.
//!
//! Types `bind`, `tmpfs`, `erofs`, `ext4` and `overlay` are planned; the
//! `mkdir/` prefix asks for the target (and overlay's upper and work
//! directories) to be created; the `format/` prefix allows `{{ mount N }}`
//! and `{{ overlay A B }}` in the source and options, naming earlier
//! entries of the same `mounts` array (as nerdbox and containerd's mount
//! manager do for overlays over erofs layers). The container's own system
//! mounts (`proc`, `sysfs`, `devpts`, `mqueue`, `cgroup`, and tmpfs on
//! `/dev`...) are the guest init's business and are skipped.
//!
//! Relative sources are relative to the bundle, the directory holding
//! `config.json`, as the runtime spec says: [`parse_config_in`] takes it;
//! [`parse_config`], given only the text, refuses them. The container
//! process (`process.args`, `env`, `cwd`, `user`) is read too, for
//! `vmshare run`; the rest of the spec (root, hooks, namespaces...) is not.

use serde::Deserialize;
use std::path::{Path, PathBuf};

use crate::plan::for_each_template;
use crate::spec::{
    check_target, normalize, ImageFormat, Source, Transport, VolumeSpec, GENERIC_FLAGS,
};
use crate::PlanError;

/// Only the parts of `config.json` vmshare reads.
#[derive(Debug, Deserialize)]
struct Spec {
    #[serde(default)]
    mounts: Vec<Mount>,
    #[serde(default)]
    process: Option<Process>,
    #[serde(default)]
    hostname: Option<String>,
}

/// The runtime spec's `process`, the fields vmshare uses.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Process {
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    user: Option<User>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct User {
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
    #[serde(default)]
    additional_gids: Vec<u32>,
}

/// The container process a runtime spec describes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OciProcess {
    /// `process.args` (empty when absent).
    pub args: Vec<String>,
    /// `process.env`, each `KEY=VALUE`.
    pub env: Vec<String>,
    /// `process.cwd`, absolute.
    pub cwd: Option<String>,
    /// `process.user`: uid, gid and additional gids.
    pub user: Option<OciUser>,
}

/// `process.user` (numeric; `username` is for Windows and ignored).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OciUser {
    /// User ID.
    pub uid: u32,
    /// Group ID.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
}

/// One OCI mount entry (every field the runtime spec defines). Fields it
/// does not define are ignored, as the spec says a runtime must ignore
/// unknown properties (they were refused).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Mount {
    #[serde(default)]
    destination: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    options: Vec<String>,
    #[serde(default)]
    uid_mappings: Vec<serde_json::Value>,
    #[serde(default)]
    gid_mappings: Vec<serde_json::Value>,
}

const SYSTEM_TYPES: &[&str] = &["proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2"];
const BIND_IGNORED: &[&str] = &["bind", "rbind", "private", "rprivate"];
/// Propagation a VM's mounts have anyway: accepted and dropped.
const PRIVATE: &[&str] = &["private", "rprivate"];

/// What the OCI front end read: the volumes, plus what it skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciVolumes {
    /// Volumes in spec order.
    pub volumes: Vec<VolumeSpec>,
    /// Human-readable notes (skipped system mounts).
    pub notes: Vec<String>,
    /// The container process, when the spec has one.
    pub process: Option<OciProcess>,
    /// The container's host name, when the spec gives one.
    pub hostname: Option<String>,
}

/// Reads the `mounts` (and `process`) of an OCI runtime spec whose bundle
/// is not known: relative sources are refused.
pub fn parse_config(json: &str) -> Result<OciVolumes, PlanError> {
    parse(json, None)
}

/// Reads an OCI runtime spec whose bundle (the directory holding
/// `config.json`) is `bundle`: relative sources are taken from there.
pub fn parse_config_in(json: &str, bundle: &Path) -> Result<OciVolumes, PlanError> {
    parse(json, Some(bundle))
}

fn parse(json: &str, bundle: Option<&Path>) -> Result<OciVolumes, PlanError> {
    let spec: Spec = serde_json::from_str(json).map_err(|e| PlanError::Syntax {
        volume: "config.json".into(),
        reason: format!("not an OCI runtime spec ({e}); check the JSON"),
    })?;
    let process = spec.process.map(process).transpose()?;
    // Skipped entries shift indexes: map the spec's numbering to ours.
    let mut index_map: Vec<Option<usize>> = Vec::new();
    let mut volumes = Vec::new();
    let mut notes = Vec::new();
    for (i, m) in spec.mounts.iter().enumerate() {
        match parse_mount(i, m, &index_map, spec.mounts.len(), bundle)? {
            Some(v) => {
                index_map.push(Some(volumes.len()));
                volumes.push(v);
            }
            None => {
                index_map.push(None);
                notes.push(format!(
                    "mounts[{i}] ({} on {}) skipped: the guest init provides it",
                    m.kind.as_deref().unwrap_or("bind"),
                    m.destination.as_deref().unwrap_or("-")
                ));
            }
        }
    }
    Ok(OciVolumes {
        volumes,
        notes,
        process,
        hostname: spec.hostname.filter(|h| !h.is_empty()),
    })
}

fn process(p: Process) -> Result<OciProcess, PlanError> {
    let syntax = |field: &str, reason: String| PlanError::Syntax {
        volume: format!("config.json process.{field}"),
        reason,
    };
    if let Some(cwd) = p.cwd.as_deref().filter(|c| !c.starts_with('/')) {
        return Err(syntax(
            "cwd",
            format!("'{cwd}' is not absolute; the runtime spec wants an absolute path"),
        ));
    }
    if let Some(e) = p.env.iter().find(|e| !e.contains('=')) {
        return Err(syntax("env", format!("'{e}' is not KEY=VALUE")));
    }
    Ok(OciProcess {
        args: p.args,
        env: p.env,
        cwd: p.cwd,
        user: p.user.map(|u| OciUser {
            uid: u.uid,
            gid: u.gid,
            additional_gids: u.additional_gids,
        }),
    })
}

fn parse_mount(
    i: usize,
    m: &Mount,
    index_map: &[Option<usize>],
    total: usize,
    bundle: Option<&Path>,
) -> Result<Option<VolumeSpec>, PlanError> {
    let raw_type = m.kind.as_deref().unwrap_or("bind");
    let name = format!(
        "mounts[{i}] ({raw_type} {} on {})",
        m.source.as_deref().unwrap_or("-"),
        m.destination.as_deref().unwrap_or("-")
    );
    let syntax = |reason: String| PlanError::Syntax {
        volume: name.clone(),
        reason,
    };
    let mut kind = raw_type;
    let (mut format, mut mkdir) = (false, false);
    loop {
        if let Some(rest) = kind.strip_prefix("format/") {
            format = true;
            kind = rest;
        } else if let Some(rest) = kind.strip_prefix("mkdir/") {
            mkdir = true;
            kind = rest;
        } else {
            break;
        }
    }
    // runc's type "none" with bind or rbind among the options is a bind
    // mount (podman and older docker write it so).
    // runc joins the options with commas into the mount's data, so one
    // option string may hold several: "lowerdir=/a:/b,upperdir=/u,...".
    // Taken as one, its upperdir went unseen and a tmpfs layer was added
    // after it, whose upperdir won: the writes meant for /u were dropped.
    // `\,` is a comma within a value (overlayfs reads it so).
    let given: Vec<String> = m
        .options
        .iter()
        .flat_map(|o| split_unescaped(o, ','))
        .collect();
    if kind == "none" && given.iter().any(|o| o == "bind" || o == "rbind") {
        kind = "bind";
    }
    if SYSTEM_TYPES.contains(&kind) {
        return Ok(None);
    }
    if let Some(d) = &m.destination {
        if kind == "tmpfs" && (d == "/dev" || d.starts_with("/dev/")) {
            return Ok(None);
        }
        // docker's config.json binds a directory of its own on /dev/shm
        // (the container's `--shm-size` tmpfs): memory shared between
        // processes cannot reach a VM through a host directory, and the
        // guest has a /dev/shm of its own. It refused every such config.
        if kind == "bind" && d.trim_end_matches('/') == "/dev/shm" {
            return Ok(None);
        }
    }
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(syntax(
            "uidMappings/gidMappings (idmapped mounts) are not supported; remove them".into(),
        ));
    }
    let target = match m.destination.as_deref() {
        Some(d) if !d.is_empty() => Some(check_target(&name, d)?),
        _ => None,
    };
    let mut readonly = false;
    let mut options = Vec::new();
    for o in given {
        match o.as_str() {
            "ro" => readonly = true,
            "rw" => readonly = false,
            _ => options.push(o),
        }
    }
    let templated = |t: &str| t.contains("{{");
    if !format
        && (m.source.as_deref().is_some_and(templated) || options.iter().any(|o| templated(o)))
    {
        return Err(syntax(format!(
            "uses '{{{{' templates without the format/ prefix; write type format/{raw_type}"
        )));
    }
    // Renumber template references to the indexes after skipping.
    let renumber = |text: &str| renumber(&name, text, index_map, total);
    let options: Vec<String> = options
        .iter()
        .map(|o| renumber(o))
        .collect::<Result<_, _>>()?;
    let host = |what: &str| -> Result<PathBuf, PlanError> {
        match (m.source.as_deref(), bundle) {
            (Some(s), _) if s.starts_with('/') => Ok(normalize(Path::new(s))),
            (Some(s), Some(bundle)) if !s.is_empty() => Ok(normalize(&bundle.join(s))),
            (Some(s), None) if !s.is_empty() => Err(PlanError::RelativeSource {
                volume: name.clone(),
                source_path: s.to_string(),
            }),
            _ => Err(syntax(format!("missing source ({what})"))),
        }
    };
    let mut options = options;
    let source = match kind {
        "bind" => {
            let path = host("a host path")?;
            options.retain(|o| !BIND_IGNORED.contains(&o.as_str()));
            if let Some(o) = options.iter().find(|o| !GENERIC_FLAGS.contains(&o.as_str())) {
                return Err(PlanError::UnknownOption {
                    volume: name.clone(),
                    option: o.clone(),
                    hint: format!("bind mounts take ro, rw, bind, rbind, rprivate and {}", GENERIC_FLAGS.join(", ")),
                });
            }
            Source::Host {
                path,
                transport: Transport::Nfs,
            }
        }
        "tmpfs" => {
            // docker writes its tmpfs mounts with "rprivate" (runc takes it
            // as propagation, not tmpfs data); a VM's mounts are private.
            options.retain(|o| !PRIVATE.contains(&o.as_str()));
            Source::Tmpfs
        }
        "erofs" | "ext4" => {
            let format = if kind == "erofs" { ImageFormat::Erofs } else { ImageFormat::Ext4 };
            readonly |= format == ImageFormat::Erofs;
            Source::Image {
                path: host("an image file")?,
                format,
            }
        }
        "overlay" => Source::Derived {
            fstype: "overlay".into(),
            source: match m.source.as_deref() {
                Some(s) if !s.is_empty() => renumber(s)?,
                _ => "overlay".into(),
            },
        },
        other => {
            return Err(syntax(format!(
                "unsupported type '{other}'; use bind, tmpfs, erofs, ext4 or overlay (with optional format/ and mkdir/ prefixes)"
            )))
        }
    };
    if target.is_none() && !format_referable(kind) {
        return Err(syntax(
            "missing destination; only erofs, ext4, tmpfs and overlay mounts may omit it".into(),
        ));
    }
    Ok(Some(VolumeSpec {
        name,
        source,
        target,
        readonly,
        options,
        mkdir,
        tag: None,
    }))
}

/// `text` split at each `sep` not escaped with a backslash, empty parts
/// left out.
fn split_unescaped(text: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut part = String::new();
    let mut escaped = false;
    for c in text.chars() {
        if c == sep && !escaped {
            parts.push(std::mem::take(&mut part));
            continue;
        }
        escaped = c == '\\' && !escaped;
        part.push(c);
    }
    parts.push(part);
    parts.retain(|p| !p.is_empty());
    parts
}

/// Mounts that make sense without a destination, as layers for later ones.
fn format_referable(kind: &str) -> bool {
    matches!(kind, "erofs" | "ext4" | "tmpfs" | "overlay")
}

fn renumber(
    name: &str,
    text: &str,
    index_map: &[Option<usize>],
    total: usize,
) -> Result<String, PlanError> {
    if !text.contains("{{") {
        return Ok(text.to_string());
    }
    for_each_template(name, text, |reference, words| {
        let mut out = vec![words[0].to_string()];
        for w in &words[1..] {
            let n: usize = w.parse().map_err(|_| PlanError::Syntax {
                volume: name.to_string(),
                reason: format!("'{reference}': '{w}' is not a mount index"),
            })?;
            match index_map.get(n) {
                Some(Some(new)) => out.push(new.to_string()),
                Some(None) => {
                    return Err(PlanError::BadReference {
                        volume: name.to_string(),
                        reference: reference.to_string(),
                        index: n,
                        reason: "that is a system mount the guest init provides; refer to a volume"
                            .into(),
                    })
                }
                None => {
                    return Err(PlanError::BadReference {
                        volume: name.to_string(),
                        reference: reference.to_string(),
                        index: n,
                        reason: if n < total {
                            "it comes later; a mount can only use mounts listed before it".into()
                        } else {
                            format!("there are only {total} mounts (counting from 0)")
                        },
                    })
                }
            }
        }
        Ok(format!("{{{{ {} }}}}", out.join(" ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"{
        "process": {"args": ["sh", "-c", "id"], "env": ["A=1"], "cwd": "/w",
                    "user": {"uid": 7, "gid": 8, "additionalGids": [9]}},
        "mounts": [
            {"type": "erofs", "source": "layers/base.erofs"},
            {"type": "bind", "source": "./data", "destination": "/data"},
            {"type": "bind", "source": "/abs", "destination": "/abs"}
        ]
    }"#;

    #[test]
    fn relative_sources_come_from_the_bundle() {
        let o = parse_config_in(SPEC, Path::new("/b/bundle")).unwrap();
        let paths: Vec<PathBuf> = o
            .volumes
            .iter()
            .map(|v| match &v.source {
                Source::Image { path, .. } | Source::Host { path, .. } => path.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            paths,
            [
                PathBuf::from("/b/bundle/layers/base.erofs"),
                "/b/bundle/data".into(),
                "/abs".into()
            ]
        );
        let e = parse_config(SPEC).unwrap_err().to_string();
        assert!(
            e.ends_with("source 'layers/base.erofs' is relative; give an absolute host path"),
            "{e}"
        );
    }

    /// A config.json as docker writes it: its /dev/shm bind is skipped
    /// with the system mounts, and its /etc files are volumes.
    #[test]
    fn a_docker_config_with_its_shm_bind() {
        let json = r#"{"mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/shm", "type": "bind", "source": "/var/lib/docker/containers/c/mounts/shm", "options": ["rbind", "rprivate"]},
            {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/docker/containers/c/hosts", "options": ["rbind", "rprivate"]}
        ]}"#;
        let o = parse_config(json).unwrap();
        assert_eq!(o.volumes.len(), 1);
        assert_eq!(o.volumes[0].target.as_deref(), Some("/etc/hosts"));
        assert!(
            o.notes
                .iter()
                .any(|n| n.contains("/dev/shm") && n.contains("skipped")),
            "{:?}",
            o.notes
        );
    }

    /// docker writes a `--tmpfs` into config.json with "rprivate" among
    /// its options (runc takes it as propagation): it was refused as
    /// tmpfs data.
    #[test]
    fn a_tmpfs_as_docker_writes_it() {
        let json = r#"{"mounts": [{"destination": "/x", "type": "tmpfs", "source": "tmpfs",
            "options": ["rprivate", "nodev", "nosuid", "noexec", "size=65536k"]}]}"#;
        let o = parse_config(json).unwrap();
        assert_eq!(
            o.volumes[0].options,
            ["nodev", "nosuid", "noexec", "size=65536k"]
        );
    }

    #[test]
    fn the_process_is_read() {
        let o = parse_config_in(SPEC, Path::new("/b")).unwrap();
        assert_eq!(
            o.process,
            Some(OciProcess {
                args: vec!["sh".into(), "-c".into(), "id".into()],
                env: vec!["A=1".into()],
                cwd: Some("/w".into()),
                user: Some(OciUser {
                    uid: 7,
                    gid: 8,
                    additional_gids: vec![9]
                }),
            })
        );
        assert_eq!(parse_config(r#"{"mounts": []}"#).unwrap().process, None);
        let e = parse_config(r#"{"process": {"cwd": "w"}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config.json process.cwd: 'w' is not absolute; the runtime spec wants an absolute path"
        );
        let e = parse_config(r#"{"process": {"env": ["A"]}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config.json process.env: 'A' is not KEY=VALUE"
        );
    }
}
