//! [`VmSpec`] → Cloud Hypervisor `VmConfig` (the body of `PUT vm.create`).
//!
//! A pure function: no I/O, so golden files and the OpenAPI schema test pin
//! exactly what is sent. Field names follow the v54 OpenAPI description
//! (`shared/vendor-specs/cloud-hypervisor-v54.openapi.yaml`).

use dc_vmm::{Accel, Boot, Confidential, Disk, Network, VfioDevice, VmSpec, VmmError};
use serde_json::{json, Map, Value};

pub(crate) const BACKEND: &str = "cloud-hypervisor";

/// Name of the API socket inside the run directory.
pub const API_SOCKET_NAME: &str = "ch.sock";
/// Name of the vsock proxy socket inside the run directory.
pub const VSOCK_SOCKET_NAME: &str = "vsock.sock";
/// Name of the VMM's own log (stdout and stderr) inside the run directory.
pub const LOG_NAME: &str = "cloud-hypervisor.log";

fn unsupported(reason: impl Into<String>) -> VmmError {
    VmmError::Unsupported {
        backend: BACKEND,
        reason: reason.into(),
    }
}

fn path_str(p: &std::path::Path, what: &str) -> Result<String, VmmError> {
    p.to_str()
        .map(str::to_owned)
        .ok_or_else(|| VmmError::InvalidSpec(format!("{what} path {} is not UTF-8", p.display())))
}

/// What this backend refuses, independent of the host: TCG, TDX, user-mode
/// networking, firmware-plus-kernel boot, SEV-SNP without IGVM.
pub fn check_spec(spec: &VmSpec) -> Result<(), VmmError> {
    spec.validate()?;
    if spec.accel == Accel::Tcg {
        return Err(unsupported(
            "Cloud Hypervisor needs KVM; software emulation (TCG) is QEMU's",
        ));
    }
    if let Confidential::Tdx { .. } = spec.confidential {
        return Err(unsupported(
            "Cloud Hypervisor's TDX build is disabled since v53; launch TDX guests with QEMU",
        ));
    }
    if let Network::User { .. } = spec.network {
        return Err(unsupported(
            "Cloud Hypervisor has no user-mode networking; use a tap device",
        ));
    }
    if let Boot::Kernel {
        firmware: Some(_), ..
    } = spec.boot
    {
        // PayloadConfig::validate accepts a firmware or a kernel, not both
        // (except for TDX); measured direct boot through OVMF is QEMU's.
        return Err(unsupported(
            "Cloud Hypervisor boots a firmware or a kernel, not a firmware that loads a kernel",
        ));
    }
    if let Confidential::SevSnp { .. } = spec.confidential {
        if !matches!(spec.boot, Boot::Igvm { .. }) {
            return Err(unsupported(
                "Cloud Hypervisor launches SEV-SNP guests from an IGVM file only",
            ));
        }
    }
    Ok(())
}

/// Device id of the `index`th disk (ids are ours, so `vm.info` and hot-plug agree).
pub fn disk_id(index: usize) -> String {
    format!("disk{index}")
}

/// Device id of the `index`th VFIO function.
pub fn vfio_id(index: usize) -> String {
    format!("vfio{index}")
}

/// `DiskConfig` for one disk with the given id.
///
/// The image type is always explicit (`Qcow2` for an overlay of a base,
/// `Raw` otherwise): when it is left to auto-detection, Cloud Hypervisor
/// (checked against v54) rewrites the stored config of a detected qcow2 to
/// `backing_files: false`, so the next `vm.reboot` fails to reopen the overlay
/// ("Maximum disk nesting depth exceeded") and leaves the VM dead; a detected
/// raw image gets sector-0 writes disabled; and auto-detection is deprecated.
pub fn disk_config(disk: &Disk, id: &str) -> Result<Value, VmmError> {
    let mut d = Map::new();
    d.insert("path".into(), json!(path_str(&disk.path, "disk")?));
    d.insert("readonly".into(), json!(disk.readonly));
    if disk.base.is_some() {
        // A qcow2 overlay names its base inside the file; v54 opens backing
        // files only when told to (DiskConfig.backing_files, default false).
        d.insert("backing_files".into(), json!(true));
        d.insert("image_type".into(), json!("Qcow2"));
    } else {
        d.insert("image_type".into(), json!("Raw"));
    }
    d.insert("id".into(), json!(id));
    Ok(Value::Object(d))
}

/// `DeviceConfig` for one VFIO function (`path` is its sysfs directory).
pub fn vfio_config(device: &VfioDevice, id: &str) -> Result<Value, VmmError> {
    Ok(json!({ "path": path_str(&device.sysfs_path, "VFIO device")?, "id": id }))
}

/// The `VmConfig` for `spec`, after [`check_spec`].
///
/// - cpus: `boot_vcpus` = `max_vcpus` = `spec.vcpus` (no vCPU hot-plug).
/// - memory: `size` in bytes; not `shared` (only vhost-user devices need
///   shared memory; VFIO maps guest memory itself).
/// - payload: kernel/initramfs/cmdline, or firmware, or igvm (+ `host_data`
///   as 64 hex digits for SEV-SNP).
/// - SEV-SNP: `platform.sev_snp = true`. The guest policy is not a VmConfig
///   field: it comes from the IGVM file, which `launch` checks first
///   ([`crate::igvm::check_snp_policy`]).
/// - serial in `Tty` mode, i.e. to the VMM's stdout, which `launch` points
///   at `run_dir/serial.log` opened `O_APPEND`; virtio-console off. `File`
///   mode is not used because Cloud Hypervisor opens that file with
///   `File::create` (checked in v54's `vmm/src/console_devices.rs`): no
///   `O_APPEND`, so [`dc_vmm::cap_log`] could not truncate it under the
///   running VMM (it would keep writing at its old offset, leaving a sparse
///   file). With a stdout that is not a terminal, `Tty` mode neither sets
///   raw mode nor reads input (same file, `modify_mode` and
///   `serial_manager.rs`), and the VMM's own messages go to stderr.
/// - no virtual IOMMU: VFIO on the host IOMMU does not need one, and for
///   SEV-SNP Cloud Hypervisor forces the platform-access feature on virtio
///   devices itself.
pub fn vm_config(spec: &VmSpec) -> Result<Value, VmmError> {
    check_spec(spec)?;
    let memory_bytes = spec.memory_mib.checked_mul(1024 * 1024).ok_or_else(|| {
        VmmError::InvalidSpec(format!("memory_mib {} overflows bytes", spec.memory_mib))
    })?;

    let mut payload = Map::new();
    match &spec.boot {
        Boot::Kernel {
            kernel,
            initrd,
            cmdline,
            firmware: _,
        } => {
            payload.insert("kernel".into(), json!(path_str(kernel, "kernel")?));
            if let Some(initrd) = initrd {
                payload.insert("initramfs".into(), json!(path_str(initrd, "initrd")?));
            }
            payload.insert("cmdline".into(), json!(cmdline));
        }
        Boot::Firmware { firmware } => {
            payload.insert("firmware".into(), json!(path_str(firmware, "firmware")?));
        }
        Boot::Igvm { igvm, cmdline } => {
            payload.insert("igvm".into(), json!(path_str(igvm, "IGVM")?));
            if !cmdline.is_empty() {
                payload.insert("cmdline".into(), json!(cmdline));
            }
        }
    }
    if let Confidential::SevSnp { host_data, .. } = &spec.confidential {
        payload.insert("host_data".into(), json!(hex::encode(host_data)));
    }

    let mut config = Map::new();
    config.insert(
        "cpus".into(),
        json!({ "boot_vcpus": spec.vcpus, "max_vcpus": spec.vcpus }),
    );
    config.insert("memory".into(), json!({ "size": memory_bytes }));
    config.insert("payload".into(), Value::Object(payload));

    if !spec.disks.is_empty() {
        let disks = spec
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| disk_config(d, &disk_id(i)))
            .collect::<Result<Vec<_>, _>>()?;
        config.insert("disks".into(), Value::Array(disks));
    }
    match &spec.network {
        Network::None => {}
        Network::Tap { tap, mac } => {
            config.insert(
                "net".into(),
                json!([{ "tap": tap, "mac": mac, "id": "net0" }]),
            );
        }
        // Refused by check_spec.
        Network::User { .. } => return Err(unsupported("user-mode networking")),
    }
    if let Some(cid) = spec.vsock_cid {
        let socket = path_str(&spec.run_dir.join(VSOCK_SOCKET_NAME), "vsock socket")?;
        config.insert(
            "vsock".into(),
            json!({ "cid": cid, "socket": socket, "id": "vsock0" }),
        );
    }
    if !spec.vfio.is_empty() {
        let devices = spec
            .vfio
            .iter()
            .enumerate()
            .map(|(i, d)| vfio_config(d, &vfio_id(i)))
            .collect::<Result<Vec<_>, _>>()?;
        config.insert("devices".into(), Value::Array(devices));
    }
    config.insert("serial".into(), json!({ "mode": "Tty" }));
    config.insert("console".into(), json!({ "mode": "Off" }));
    if let Confidential::SevSnp { .. } = spec.confidential {
        config.insert("platform".into(), json!({ "sev_snp": true }));
    }
    Ok(Value::Object(config))
}
