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

use serde::Deserialize;
use std::path::PathBuf;

use crate::plan::for_each_template;
use crate::spec::{check_target, ImageFormat, Source, Transport, VolumeSpec, GENERIC_FLAGS};
use crate::PlanError;

/// Only the part of `config.json` the planner reads.
#[derive(Debug, Deserialize)]
struct Spec {
    #[serde(default)]
    mounts: Vec<Mount>,
}

/// One OCI mount entry (every field the runtime spec defines).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
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

/// What the OCI front end read: the volumes, plus what it skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciVolumes {
    /// Volumes in spec order.
    pub volumes: Vec<VolumeSpec>,
    /// Human-readable notes (skipped system mounts).
    pub notes: Vec<String>,
}

/// Reads the `mounts` of an OCI runtime spec.
pub fn parse_config(json: &str) -> Result<OciVolumes, PlanError> {
    let spec: Spec = serde_json::from_str(json).map_err(|e| PlanError::Syntax {
        volume: "config.json".into(),
        reason: format!("not an OCI runtime spec ({e}); check the JSON"),
    })?;
    // Skipped entries shift indexes: map the spec's numbering to ours.
    let mut index_map: Vec<Option<usize>> = Vec::new();
    let mut volumes = Vec::new();
    let mut notes = Vec::new();
    for (i, m) in spec.mounts.iter().enumerate() {
        match parse_mount(i, m, &index_map, spec.mounts.len())? {
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
    Ok(OciVolumes { volumes, notes })
}

fn parse_mount(
    i: usize,
    m: &Mount,
    index_map: &[Option<usize>],
    total: usize,
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
    if SYSTEM_TYPES.contains(&kind) {
        return Ok(None);
    }
    if let Some(d) = &m.destination {
        if kind == "tmpfs" && (d == "/dev" || d.starts_with("/dev/")) {
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
    for o in &m.options {
        match o.as_str() {
            "ro" => readonly = true,
            "rw" => readonly = false,
            _ => options.push(o.clone()),
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
        match m.source.as_deref() {
            Some(s) if s.starts_with('/') => Ok(crate::spec::normalize(std::path::Path::new(s))),
            Some(s) if !s.is_empty() => Err(PlanError::RelativeSource {
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
        "tmpfs" => Source::Tmpfs,
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
