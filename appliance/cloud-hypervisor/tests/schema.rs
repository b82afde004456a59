//! Every property `vm_config` emits exists in Cloud Hypervisor v54's OpenAPI
//! description, with the schema's required properties present, so a typo or
//! a field renamed upstream fails here.

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::Value;
use serde_yaml::Value as Yaml;

fn openapi() -> Option<Yaml> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/vendor-specs/cloud-hypervisor-v54.openapi.yaml");
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(serde_yaml::from_str(&text).expect("the OpenAPI file parses")),
        Err(e) => {
            eprintln!("skipped: {} not readable ({e}); the schema check needs shared/ beside the repository", path.display());
            None
        }
    }
}

fn schema<'a>(doc: &'a Yaml, name: &str) -> &'a Yaml {
    doc.get("components")
        .and_then(|c| c.get("schemas"))
        .and_then(|s| s.get(name))
        .unwrap_or_else(|| panic!("schema {name} missing from the OpenAPI file"))
}

/// The schema name a `$ref` points to (`#/components/schemas/X` → `X`).
fn ref_name(prop: &Yaml) -> Option<String> {
    let r = prop
        .get("$ref")
        .or_else(|| prop.get("items").and_then(|i| i.get("$ref")))?;
    r.as_str()?.rsplit('/').next().map(str::to_owned)
}

/// Checks `value` against schema `name`, recursing into `$ref`'d objects and
/// arrays of them; returns the schemas visited.
fn check(doc: &Yaml, name: &str, value: &Value, at: &str, visited: &mut Vec<String>) {
    visited.push(name.to_string());
    let s = schema(doc, name);
    if let Some(values) = s.get("enum").and_then(Yaml::as_sequence) {
        let ok = values.iter().any(|v| v.as_str() == value.as_str());
        assert!(ok, "{at}: {value} is not one of {name}'s values {values:?}");
        return;
    }
    let obj = value
        .as_object()
        .unwrap_or_else(|| panic!("{at}: {name} must be an object, got {value}"));
    let props = s
        .get("properties")
        .unwrap_or_else(|| panic!("{name} has no properties"));
    for required in s
        .get("required")
        .and_then(Yaml::as_sequence)
        .into_iter()
        .flatten()
    {
        let required = required.as_str().unwrap();
        assert!(
            obj.contains_key(required),
            "{at}: {name} requires {required:?}, missing from {value}"
        );
    }
    for (key, v) in obj {
        let prop = props
            .get(key.as_str())
            .unwrap_or_else(|| panic!("{at}.{key}: {name} has no property {key:?}"));
        let ty = prop.get("type").and_then(Yaml::as_str);
        match (ref_name(prop), ty) {
            (Some(r), Some("array")) => {
                let items = v
                    .as_array()
                    .unwrap_or_else(|| panic!("{at}.{key} must be an array"));
                for (i, item) in items.iter().enumerate() {
                    check(doc, &r, item, &format!("{at}.{key}[{i}]"), visited);
                }
            }
            (Some(r), _) => check(doc, &r, v, &format!("{at}.{key}"), visited),
            (None, Some("string")) => {
                assert!(v.is_string(), "{at}.{key} must be a string, got {v}")
            }
            (None, Some("boolean")) => {
                assert!(v.is_boolean(), "{at}.{key} must be a boolean, got {v}")
            }
            (None, Some("integer")) => {
                let n = v.as_u64().unwrap_or_else(|| {
                    panic!("{at}.{key} must be a non-negative integer, got {v}")
                });
                if let Some(min) = prop.get("minimum").and_then(Yaml::as_u64) {
                    assert!(n >= min, "{at}.{key} = {n} is below the minimum {min}");
                }
            }
            (None, other) => panic!("{at}.{key}: unexpected schema type {other:?}"),
        }
    }
}

#[test]
fn vm_configs_match_the_openapi_schema() {
    let Some(doc) = openapi() else { return };
    let run_dir = golden_run_dir();
    let mut visited = Vec::new();
    for spec in [
        base_spec(&run_dir),
        firmware_spec(&run_dir),
        snp_spec(&run_dir),
        gpu_spec(&run_dir),
        tap_vsock_spec(&run_dir),
    ] {
        let config = dc_vmm_ch::vm_config(&spec).unwrap();
        check(&doc, "VmConfig", &config, "VmConfig", &mut visited);
    }
    for expected in [
        "VmConfig",
        "CpusConfig",
        "MemoryConfig",
        "PayloadConfig",
        "DiskConfig",
        "NetConfig",
        "VsockConfig",
        "DeviceConfig",
        "ConsoleConfig",
        "SerialConfig",
        "ConsoleMode",
        "PlatformConfig",
    ] {
        assert!(
            visited.iter().any(|v| v == expected),
            "no test config exercised {expected}"
        );
    }
}

#[test]
fn hot_plug_bodies_match_the_openapi_schema() {
    let Some(doc) = openapi() else { return };
    let mut visited = Vec::new();
    let disk = dc_vmm::Disk {
        path: "/run/dc/vms/c42/extra.qcow2".into(),
        base: Some("/b".into()),
        readonly: true,
        size_gib: None,
    };
    check(
        &doc,
        "DiskConfig",
        &dc_vmm_ch::disk_config(&disk, "disk1").unwrap(),
        "add-disk",
        &mut visited,
    );
    let vfio = dc_vmm::VfioDevice {
        sysfs_path: "/sys/bus/pci/devices/0000:41:00.0".into(),
    };
    check(
        &doc,
        "DeviceConfig",
        &dc_vmm_ch::vfio_config(&vfio, "vfio0").unwrap(),
        "add-device",
        &mut visited,
    );
    check(
        &doc,
        "VmRemoveDevice",
        &serde_json::json!({ "id": "disk1" }),
        "remove-device",
        &mut visited,
    );
}

/// The checker itself catches a misspelt field and a missing required one.
#[test]
fn the_schema_check_catches_typos() {
    let Some(doc) = openapi() else { return };
    let mut config = dc_vmm_ch::vm_config(&base_spec(&golden_run_dir())).unwrap();
    config["cpus"]["boot_vcpu"] = 2.into();
    let typo =
        std::panic::catch_unwind(|| check(&doc, "VmConfig", &config, "VmConfig", &mut Vec::new()));
    assert!(typo.is_err());
    let mut config = dc_vmm_ch::vm_config(&base_spec(&golden_run_dir())).unwrap();
    config["serial"].as_object_mut().unwrap().remove("mode");
    let missing =
        std::panic::catch_unwind(|| check(&doc, "VmConfig", &config, "VmConfig", &mut Vec::new()));
    assert!(missing.is_err());
}
