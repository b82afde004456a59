//! `vm_config` output pinned by committed golden files
//! (`DC_UPDATE_GOLDEN=1 cargo test -p dc-vmm-ch --test golden` rewrites them).

mod common;

use std::path::PathBuf;

use common::*;
use dc_vmm::VmSpec;

fn golden(name: &str, spec: &VmSpec) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.json"));
    let config = dc_vmm_ch::vm_config(spec).expect("spec is supported");
    let text = serde_json::to_string_pretty(&sorted(&config)).unwrap() + "\n";
    if std::env::var_os("DC_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (DC_UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(
        text,
        expected,
        "{name}: VmConfig differs from {} (DC_UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

/// Object keys in sorted order, whatever serde_json's `preserve_order`
/// feature (which the whole workspace's feature unification may switch on).
fn sorted(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = serde_json::Map::new();
            for k in keys {
                out.insert(k.clone(), sorted(&map[k]));
            }
            serde_json::Value::Object(out)
        }
        serde_json::Value::Array(items) => serde_json::Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[test]
fn direct_kernel_boot() {
    golden("direct-boot", &base_spec(&golden_run_dir()));
}

#[test]
fn firmware_boot() {
    golden("firmware-boot", &firmware_spec(&golden_run_dir()));
}

#[test]
fn sev_snp_igvm_with_host_data() {
    golden("snp-igvm", &snp_spec(&golden_run_dir()));
}

#[test]
fn gpu_with_two_vfio_functions() {
    golden("gpu-vfio", &gpu_spec(&golden_run_dir()));
}

#[test]
fn tap_and_vsock() {
    golden("tap-vsock", &tap_vsock_spec(&golden_run_dir()));
}
