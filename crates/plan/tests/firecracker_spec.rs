#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Every Firecracker config the golden tests produce is checked against
//! Firecracker's own API description (`shared/reference/firecracker-api.yaml`):
//! each top-level key of `--config-file` is the body of the matching PUT.

use serde_json::Value;
use serde_yaml::Value as Yaml;
use std::path::Path;

/// Config-file key, schema name, whether the key holds a list of them.
const SECTIONS: &[(&str, &str, bool)] = &[
    ("boot-source", "BootSource", false),
    ("drives", "Drive", true),
    ("machine-config", "MachineConfiguration", false),
    ("network-interfaces", "NetworkInterface", true),
    ("vsock", "Vsock", false),
];

fn api() -> Yaml {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/reference/firecracker-api.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap()
}

fn definition<'a>(api: &'a Yaml, name: &str) -> &'a Yaml {
    &api["definitions"][name]
}

/// Checks `value` against `schema`, appending one line per problem.
fn check(api: &Yaml, schema: &Yaml, value: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/definitions/");
        return check(api, definition(api, name), value, at, errors);
    }
    if let Some(options) = schema["enum"].as_sequence() {
        let allowed: Vec<String> = options.iter().map(yaml_text).collect();
        match value.as_str() {
            Some(s) if allowed.iter().any(|a| a == s) => {}
            _ => errors.push(format!("{at}: {value} not in {allowed:?}")),
        }
    }
    match schema["type"].as_str() {
        Some("object") | None if schema["properties"].is_mapping() => {
            let Some(obj) = value.as_object() else {
                return errors.push(format!("{at}: expected an object"));
            };
            for r in schema["required"].as_sequence().into_iter().flatten() {
                let key = r.as_str().unwrap();
                if !obj.contains_key(key) {
                    errors.push(format!("{at}: missing required {key}"));
                }
            }
            for (k, v) in obj {
                let prop = &schema["properties"][k.as_str()];
                if prop.is_null() {
                    errors.push(format!("{at}: unknown property {k}"));
                } else {
                    check(api, prop, v, &format!("{at}.{k}"), errors);
                }
            }
        }
        Some("string") if !value.is_string() => errors.push(format!("{at}: expected a string")),
        Some("boolean") if !value.is_boolean() => errors.push(format!("{at}: expected a boolean")),
        Some("integer") => match value.as_i64() {
            None => errors.push(format!("{at}: expected an integer")),
            Some(n) => {
                if schema["minimum"].as_i64().is_some_and(|min| n < min) {
                    errors.push(format!("{at}: {n} below minimum"));
                }
                if schema["maximum"].as_i64().is_some_and(|max| n > max) {
                    errors.push(format!("{at}: {n} above maximum"));
                }
            }
        },
        Some("array") => match value.as_array() {
            None => errors.push(format!("{at}: expected an array")),
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    check(api, &schema["items"], item, &format!("{at}[{i}]"), errors);
                }
            }
        },
        _ => {}
    }
}

fn yaml_text(y: &Yaml) -> String {
    match y {
        Yaml::String(s) => s.clone(),
        other => serde_yaml::to_string(other).unwrap().trim().to_string(),
    }
}

/// All problems of one config file.
fn validate(api: &Yaml, config: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(obj) = config.as_object() else {
        return vec!["config is not an object".into()];
    };
    for key in obj.keys() {
        if !SECTIONS.iter().any(|(k, _, _)| k == key) {
            errors.push(format!("unknown top-level key {key}"));
        }
    }
    for (key, name, list) in SECTIONS {
        let Some(v) = obj.get(*key) else { continue };
        let schema = definition(api, name);
        assert!(schema.is_mapping(), "{name} not in the API description");
        if *list {
            match v.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        check(api, schema, item, &format!("{key}[{i}]"), &mut errors);
                    }
                }
                None => errors.push(format!("{key}: expected a list")),
            }
        } else {
            check(api, schema, v, key, &mut errors);
        }
    }
    for required in ["boot-source", "machine-config"] {
        if !obj.contains_key(required) {
            errors.push(format!("missing {required}"));
        }
    }
    errors
}

#[test]
fn golden_firecracker_configs_follow_the_api() {
    let api = api();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".firecracker.golden.json") {
            continue;
        }
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let Some(config) = doc.pointer("/render/config_file/content") else {
            continue;
        };
        let errors = validate(&api, config);
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        let drives = config["drives"].as_array().unwrap();
        assert!(
            drives.iter().all(|d| d["cache_type"] == "Writeback"),
            "{}",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} firecracker configs checked");
}

#[test]
fn validator_catches_mistakes() {
    let api = api();
    let bad = serde_json::json!({
        "boot-source": { "boot_args": "x" },
        "drives": [{ "drive_id": "vda", "is_root_device": "no", "cache_type": "Fast", "colour": 1 }],
        "machine-config": { "vcpu_count": 0, "mem_size_mib": 128 },
        "vsock": { "guest_cid": 3, "uds_path": "/s" },
        "balloon": {}
    });
    let errors = validate(&api, &bad);
    for want in [
        "boot-source: missing required kernel_image_path",
        "drives[0].is_root_device: expected a boolean",
        "drives[0].cache_type: \"Fast\" not in",
        "drives[0]: unknown property colour",
        "machine-config.vcpu_count: 0 below minimum",
        "unknown top-level key balloon",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "{want} not in {errors:#?}"
        );
    }
}
