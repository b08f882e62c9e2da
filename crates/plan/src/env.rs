//! The `FILESYSTEM_*` front end, docker-vm-runner's variables.
//!
//! `FILESYSTEM_SOURCE`, `_TARGET`, `_DRIVER`, `_ACCESSMODE`, `_READONLY`
//! describe the first share; `FILESYSTEM2_*`, `FILESYSTEM3_*`... the next
//! ones, in number order. A relative `TARGET` is a tag (one name:
//! letters, digits, `_`, `-`, `.`), mounted at `/mnt/TAG` as
//! docker-vm-runner's cloud-init does; an absolute one is the
//! guest path and the tag is chosen by the planner. `DRIVER` defaults to
//! `nfs`, the one transport every VMM has. Where docker-vm-runner is
//! lenient, so is this: no `TARGET` means the source's last name, and a
//! group with nothing set is skipped.

use std::collections::BTreeMap;
use std::path::Path;

use crate::spec::{normalize, AccessMode, Source, Transport, VolumeSpec};
use crate::PlanError;

const FIELDS: &[&str] = &["SOURCE", "TARGET", "DRIVER", "ACCESSMODE", "READONLY"];

/// Reads the shares described by `FILESYSTEM*_*` variables among `vars`;
/// other variables are ignored.
pub fn parse_env<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Result<Vec<VolumeSpec>, PlanError>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    // group number -> field -> value; FILESYSTEM_ is group 1.
    let mut groups: BTreeMap<u32, BTreeMap<String, String>> = BTreeMap::new();
    for (k, v) in vars {
        let (k, v) = (k.as_ref(), v.as_ref());
        let Some(rest) = k.strip_prefix("FILESYSTEM") else {
            continue;
        };
        let Some((number, field)) = rest.split_once('_') else {
            continue;
        };
        let group = if number.is_empty() {
            1
        } else if !number.chars().all(|c| c.is_ascii_digit()) {
            continue;
        } else {
            // FILESYSTEM1_ was ignored without a word, and FILESYSTEM02_
            // silently overrode FILESYSTEM2_.
            match number.parse::<u32>() {
                Ok(n) if n >= 2 && !number.starts_with('0') => n,
                _ => {
                    return Err(PlanError::Env {
                        var: k.to_string(),
                        reason: "the first share is FILESYSTEM_*, the next FILESYSTEM2_*, \
                                 FILESYSTEM3_*... (no 1, no leading zeros)"
                            .into(),
                    })
                }
            }
        };
        if !FIELDS.contains(&field) {
            return Err(PlanError::Env {
                var: k.to_string(),
                reason: "unknown variable; use _SOURCE, _TARGET, _DRIVER, _ACCESSMODE or _READONLY"
                    .into(),
            });
        }
        groups
            .entry(group)
            .or_default()
            .insert(field.to_string(), v.to_string());
    }
    groups
        .iter()
        .filter(|(_, fields)| !blank(fields))
        .map(|(n, fields)| share(*n, fields))
        .collect()
}

/// A group that describes no share: docker-vm-runner skips it, so that a
/// compose file can write `FILESYSTEM2_SOURCE=${SHARE:-}` and leave the
/// share out by leaving the variable empty. A `_READONLY` that asks for
/// read-only is enough to make it a share (whose missing source is then
/// named), as there.
fn blank(fields: &BTreeMap<String, String>) -> bool {
    let set = |f: &str| fields.get(f).is_some_and(|v| !v.trim().is_empty());
    let readonly = fields
        .get("READONLY")
        .is_some_and(|v| TRUE_WORDS.contains(&v.trim().to_ascii_lowercase().as_str()));
    !["SOURCE", "TARGET", "DRIVER", "ACCESSMODE"]
        .iter()
        .any(|f| set(f))
        && !readonly
}

/// The `_READONLY` values that mean read-only; `FALSE_WORDS` the ones that
/// do not. Anything else is refused.
const TRUE_WORDS: &[&str] = &["1", "true", "yes", "on"];
const FALSE_WORDS: &[&str] = &["0", "false", "no", "off"];

fn share(n: u32, fields: &BTreeMap<String, String>) -> Result<VolumeSpec, PlanError> {
    let prefix = if n == 1 {
        "FILESYSTEM".to_string()
    } else {
        format!("FILESYSTEM{n}")
    };
    let var = |f: &str| format!("{prefix}_{f}");
    let err = |f: &str, reason: String| PlanError::Env {
        var: var(f),
        reason,
    };
    let get = |f: &str| fields.get(f).map(String::as_str).filter(|v| !v.is_empty());
    let source = get("SOURCE").ok_or_else(|| {
        err(
            "SOURCE",
            "missing; set it to the host directory to share".into(),
        )
    })?;
    if !source.starts_with('/') {
        return Err(err(
            "SOURCE",
            format!("'{source}' is relative; give an absolute host path"),
        ));
    }
    // Without a TARGET the tag is the source's last name, as
    // docker-vm-runner derives it: FILESYSTEM_SOURCE=/srv/share is
    // tagged `share` and mounted at /mnt/share.
    let derived;
    let target = match get("TARGET") {
        Some(t) => t,
        None => {
            derived = normalize(Path::new(source))
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            derived.as_deref().ok_or_else(|| {
                err(
                    "TARGET",
                    format!(
                        "missing, and SOURCE '{source}' has no last name to take as the tag; \
                         set it to a tag or an absolute guest path"
                    ),
                )
            })?
        }
    };
    // docker-vm-runner reads these three with .strip().lower():
    // FILESYSTEM_DRIVER=9P or FILESYSTEM_READONLY=True work there.
    let word = |f: &str| {
        get(f)
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty())
    };
    let access = match word("ACCESSMODE").as_deref().unwrap_or("passthrough") {
        "passthrough" => AccessMode::Passthrough,
        "mapped" => AccessMode::Mapped,
        "squash" => AccessMode::Squash,
        other => {
            return Err(err(
                "ACCESSMODE",
                format!("'{other}' is not passthrough, mapped or squash"),
            ))
        }
    };
    let transport = match word("DRIVER").as_deref().unwrap_or("nfs") {
        "9p" => Transport::NineP { access },
        d @ ("virtiofs" | "nfs") => {
            if access != AccessMode::Passthrough {
                return Err(err(
                    "ACCESSMODE",
                    format!(
                        "{d} only supports passthrough; use {}=9p for mapped or squash",
                        var("DRIVER")
                    ),
                ));
            }
            if d == "nfs" {
                Transport::Nfs
            } else {
                Transport::Virtiofs
            }
        }
        other => {
            return Err(err(
                "DRIVER",
                format!("'{other}' is not virtiofs, 9p or nfs"),
            ))
        }
    };
    let readonly = match word("READONLY").as_deref().unwrap_or("0") {
        w if TRUE_WORDS.contains(&w) => true,
        w if FALSE_WORDS.contains(&w) => false,
        other => {
            return Err(err(
                "READONLY",
                format!(
                    "'{other}' is not one of 1, true, yes, on (read-only) or 0, false, no, off"
                ),
            ))
        }
    };
    // A relative TARGET is a tag, mounted at /mnt/TAG: one name, as a
    // virtio tag is. `.` was taken, made the tag `.` and mounted on /mnt.
    let is_tag = |t: &str| {
        t != "."
            && t != ".."
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    };
    if !target.starts_with('/') && !is_tag(target) && get("TARGET").is_none() {
        return Err(err(
            "TARGET",
            format!(
                "missing, and SOURCE's last name '{target}' is not a tag (letters, digits, \
                 '_', '-' and '.'); set it to a tag or an absolute guest path"
            ),
        ));
    }
    if !target.starts_with('/') && !is_tag(target) {
        return Err(err(
            "TARGET",
            format!(
                "'{target}' is neither a tag (letters, digits, '_', '-' and '.', not . or ..; \
                 mounted at /mnt/TAG) nor an absolute guest path; write e.g. data or /data"
            ),
        ));
    }
    let (guest, tag) = if target.starts_with('/') {
        (target.to_string(), None)
    } else {
        (format!("/mnt/{target}"), Some(target.to_string()))
    };
    let tag = if transport == Transport::Nfs {
        None
    } else {
        tag
    };
    let mut name = format!("{}={source} {}={target}", var("SOURCE"), var("TARGET"));
    if get("TARGET").is_none() {
        name.push_str(" (TARGET from SOURCE's name)");
    }
    if let Some(d) = get("DRIVER") {
        name.push_str(&format!(" {}={d}", var("DRIVER")));
    }
    Ok(VolumeSpec {
        name,
        source: Source::Host {
            path: normalize(Path::new(source)),
            transport,
        },
        target: Some(guest),
        readonly,
        options: Vec::new(),
        mkdir: false,
        tag,
    })
}
