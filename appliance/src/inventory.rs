//! What the host has, measured from `/proc`, `/sys`, `/dev` under a root given
//! as a parameter (tests point it at a fake tree), and the data partition's
//! free space (statvfs).

use std::path::{Path, PathBuf};

use dc_ledger_core::{Confidential, NodeCapabilities};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::resources::EffectiveLimits;

/// PCI vendor id of NVIDIA.
pub const NVIDIA_VENDOR: u16 = 0x10de;

/// Why measuring failed.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
}

/// One GPU (a PCI display or 3D controller) and the IOMMU group it is passed through with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    /// PCI address, `0000:41:00.0`.
    pub pci_address: String,
    pub vendor_id: u16,
    pub device_id: u16,
    /// Marketing name for known devices (`H100`), else `10de:2330`-style ids.
    pub model: String,
    /// Memory of known models, 0 when unknown.
    pub memory_gib: u32,
    /// The IOMMU group number, `None` without an IOMMU (then it cannot be passed through).
    pub iommu_group: Option<String>,
    /// Every PCI function in that group (this one included), sorted.
    pub group_devices: Vec<String>,
}

/// The measured host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub cpu_model: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Free space of the data partition (what VMs' disks can use).
    pub storage_gib: u64,
    pub gpus: Vec<Gpu>,
    pub confidential: Confidential,
}

/// Model name and memory of NVIDIA device ids we know.
pub fn nvidia_model(device_id: u16) -> Option<(&'static str, u32)> {
    Some(match device_id {
        0x2330 | 0x2331 | 0x2324 | 0x2322 => ("H100", 80),
        0x2335 => ("H200", 141),
        0x20b0 | 0x20b2 | 0x20b5 => ("A100", 80),
        0x20f1 => ("A100", 40),
        0x26b5 => ("L40", 48),
        0x26b9 => ("L40S", 48),
        _ => return None,
    })
}

fn read(path: &Path) -> Result<String, InventoryError> {
    std::fs::read_to_string(path).map_err(|e| InventoryError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn parse_hex16(path: &Path, text: &str) -> Result<u16, InventoryError> {
    let t = text.trim();
    u16::from_str_radix(t.trim_start_matches("0x"), 16).map_err(|_| InventoryError::Parse {
        path: path.to_owned(),
        reason: format!("expected a 16-bit hex id, found {t:?}"),
    })
}

/// CPU model and logical CPU count from `/proc/cpuinfo`.
pub fn read_cpu(root: &Path) -> Result<(String, u32), InventoryError> {
    let path = root.join("proc/cpuinfo");
    let text = read(&path)?;
    let mut model = None;
    let mut count = 0u32;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "processor" => count += 1,
            "model name" if model.is_none() => model = Some(value.trim().to_string()),
            _ => {}
        }
    }
    if count == 0 {
        return Err(InventoryError::Parse {
            path,
            reason: "no \"processor\" entries".into(),
        });
    }
    Ok((model.unwrap_or_else(|| "unknown".into()), count))
}

/// `MemTotal` from `/proc/meminfo`, in MiB.
pub fn read_memory_mib(root: &Path) -> Result<u64, InventoryError> {
    let path = root.join("proc/meminfo");
    let text = read(&path)?;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("MemTotal:") {
            let kib: u64 = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .map_err(|_| InventoryError::Parse {
                    path: path.clone(),
                    reason: format!("MemTotal {:?} is not a number of kB", rest.trim()),
                })?;
            return Ok(kib / 1024);
        }
    }
    Err(InventoryError::Parse {
        path,
        reason: "no MemTotal line".into(),
    })
}

/// Space available to unprivileged users on the file system of `dir`, in GiB.
pub fn available_gib(dir: &Path) -> Result<u64, InventoryError> {
    use std::os::unix::ffi::OsStrExt;
    let c_path =
        std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| InventoryError::Parse {
            path: dir.to_owned(),
            reason: "path contains a NUL byte".into(),
        })?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(InventoryError::Read {
            path: dir.to_owned(),
            reason: std::io::Error::last_os_error().to_string(),
        });
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64) >> 30)
}

/// NVIDIA display and 3D controllers under `sys/bus/pci/devices`, with their IOMMU groups.
pub fn read_gpus(root: &Path) -> Result<Vec<Gpu>, InventoryError> {
    let devices = root.join("sys/bus/pci/devices");
    let entries = match std::fs::read_dir(&devices) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => {
            return Err(InventoryError::Read {
                path: devices,
                reason: e.to_string(),
            })
        }
    };
    let mut gpus = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        let address = entry.file_name().to_string_lossy().into_owned();
        let class_path = dir.join("class");
        let Ok(class_text) = std::fs::read_to_string(&class_path) else {
            continue;
        };
        let class =
            u32::from_str_radix(class_text.trim().trim_start_matches("0x"), 16).map_err(|_| {
                InventoryError::Parse {
                    path: class_path.clone(),
                    reason: format!("expected a hex class, found {:?}", class_text.trim()),
                }
            })?;
        // Base class 0x03: display controllers (VGA 0x0300, 3D 0x0302, other 0x0380).
        if class >> 16 != 0x03 {
            continue;
        }
        let vendor_path = dir.join("vendor");
        let vendor_id = parse_hex16(&vendor_path, &read(&vendor_path)?)?;
        if vendor_id != NVIDIA_VENDOR {
            continue;
        }
        let device_path = dir.join("device");
        let device_id = parse_hex16(&device_path, &read(&device_path)?)?;
        let (model, memory_gib) = match nvidia_model(device_id) {
            Some((m, g)) => (m.to_string(), g),
            None => (format!("{vendor_id:04x}:{device_id:04x}"), 0),
        };
        let iommu_group = std::fs::read_link(dir.join("iommu_group"))
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
        let group_devices = match &iommu_group {
            Some(g) => {
                let gdir = root.join("sys/kernel/iommu_groups").join(g).join("devices");
                let mut list: Vec<String> = std::fs::read_dir(&gdir)
                    .map(|it| {
                        it.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                if !list.contains(&address) {
                    list.push(address.clone());
                }
                list.sort();
                list
            }
            None => vec![address.clone()],
        };
        gpus.push(Gpu {
            pci_address: address,
            vendor_id,
            device_id,
            model,
            memory_gib,
            iommu_group,
            group_devices,
        });
    }
    gpus.sort_by(|a, b| a.pci_address.cmp(&b.pci_address));
    Ok(gpus)
}

fn flag_on(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .map(|t| matches!(t.trim(), "Y" | "y" | "1"))
        .unwrap_or(false)
}

/// SEV-SNP when `/dev/sev` exists and kvm_amd has `sev_snp` on; TDX when kvm_intel has `tdx` on.
pub fn read_confidential(root: &Path) -> Confidential {
    if root.join("dev/sev").exists() && flag_on(&root.join("sys/module/kvm_amd/parameters/sev_snp"))
    {
        Confidential::SevSnp
    } else if flag_on(&root.join("sys/module/kvm_intel/parameters/tdx")) {
        Confidential::Tdx
    } else {
        Confidential::None
    }
}

/// Measures everything: `root` holds `proc/`, `sys/`, `dev/`; `data_dir` is statvfs'ed.
pub fn measure(root: &Path, data_dir: &Path) -> Result<Inventory, InventoryError> {
    let (cpu_model, vcpus) = read_cpu(root)?;
    Ok(Inventory {
        cpu_model,
        vcpus,
        memory_mib: read_memory_mib(root)?,
        storage_gib: available_gib(data_dir)?,
        gpus: read_gpus(root)?,
        confidential: read_confidential(root),
    })
}

impl Inventory {
    /// What the node advertises to the ledger: the measured host capped by the
    /// effective limits, so the ledger never sells more than the agent will accept
    /// (GPUs: the limits' passable IOMMU groups, one per group, see
    /// [`EffectiveLimits::gpu_specs`]); region, country, bandwidth and image
    /// hash from the configuration.
    pub fn capabilities(&self, config: &Config, limits: &EffectiveLimits) -> NodeCapabilities {
        NodeCapabilities {
            cpu_model: self.cpu_model.clone(),
            vcpus: self.vcpus.min(limits.vcpus),
            ram_gib: u32::try_from(self.memory_mib.min(limits.memory_mib) / 1024)
                .unwrap_or(u32::MAX),
            storage_gib: u32::try_from(self.storage_gib.min(limits.storage_gib))
                .unwrap_or(u32::MAX),
            bandwidth_mbps: config.bandwidth_mbps,
            gpus: limits.gpu_specs(self),
            confidential: self.confidential,
            region: config.region.clone(),
            country: config.country.clone(),
            image_hash: config.image_hash.clone(),
        }
    }
}

/// Writes a fake host tree for tests (here and in the integration tests).
pub mod fake {
    use std::path::Path;

    /// A GPU to put in the fake tree: (pci address, device id, iommu group, other functions in the group).
    pub struct FakeGpu<'a> {
        pub address: &'a str,
        pub vendor: u16,
        pub device: u16,
        pub class: u32,
        pub group: Option<&'a str>,
        pub group_peers: &'a [&'a str],
    }

    /// `proc/cpuinfo` with `vcpus` processors, `proc/meminfo` with `memory_mib`, and the GPUs.
    pub fn write_host(root: &Path, cpu_model: &str, vcpus: u32, memory_mib: u64, gpus: &[FakeGpu]) {
        std::fs::create_dir_all(root.join("proc")).unwrap();
        let mut cpuinfo = String::new();
        for i in 0..vcpus {
            cpuinfo.push_str(&format!(
                "processor\t: {i}\nvendor_id\t: AuthenticAMD\nmodel name\t: {cpu_model}\n\n"
            ));
        }
        std::fs::write(root.join("proc/cpuinfo"), cpuinfo).unwrap();
        std::fs::write(
            root.join("proc/meminfo"),
            format!(
                "MemTotal:       {} kB\nMemFree:        1000 kB\n",
                memory_mib * 1024
            ),
        )
        .unwrap();
        for g in gpus {
            let dir = root.join("sys/bus/pci/devices").join(g.address);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("vendor"), format!("0x{:04x}\n", g.vendor)).unwrap();
            std::fs::write(dir.join("device"), format!("0x{:04x}\n", g.device)).unwrap();
            std::fs::write(dir.join("class"), format!("0x{:06x}\n", g.class)).unwrap();
            if let Some(group) = g.group {
                let gdir = root
                    .join("sys/kernel/iommu_groups")
                    .join(group)
                    .join("devices");
                std::fs::create_dir_all(&gdir).unwrap();
                for peer in g.group_peers.iter().chain(std::iter::once(&g.address)) {
                    let _ = std::fs::write(gdir.join(peer), "");
                }
                std::os::unix::fs::symlink(
                    format!("../../../kernel/iommu_groups/{group}"),
                    dir.join("iommu_group"),
                )
                .unwrap();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::*;
    use super::*;
    use dc_ledger_core::GpuSpec;

    #[test]
    fn cpu_memory_and_gpus_are_read_from_the_tree() {
        let root = tempfile::tempdir().unwrap();
        write_host(
            root.path(),
            "AMD EPYC 9654 96-Core Processor",
            8,
            65536,
            &[
                FakeGpu {
                    address: "0000:41:00.0",
                    vendor: 0x10de,
                    device: 0x2330,
                    class: 0x030200,
                    group: Some("17"),
                    group_peers: &["0000:41:00.1"],
                },
                FakeGpu {
                    address: "0000:c1:00.0",
                    vendor: 0x10de,
                    device: 0x1234,
                    class: 0x030000,
                    group: Some("40"),
                    group_peers: &[],
                },
                // The BMC's VGA: not NVIDIA, ignored.
                FakeGpu {
                    address: "0000:02:00.0",
                    vendor: 0x1a03,
                    device: 0x2000,
                    class: 0x030000,
                    group: Some("3"),
                    group_peers: &[],
                },
                // An NVIDIA audio function: not a display controller, ignored.
                FakeGpu {
                    address: "0000:41:00.1",
                    vendor: 0x10de,
                    device: 0x22a3,
                    class: 0x040300,
                    group: None,
                    group_peers: &[],
                },
            ],
        );
        let inv = measure(root.path(), root.path()).unwrap();
        assert_eq!(inv.cpu_model, "AMD EPYC 9654 96-Core Processor");
        assert_eq!(inv.vcpus, 8);
        assert_eq!(inv.memory_mib, 65536);
        assert_eq!(inv.confidential, Confidential::None);
        assert_eq!(inv.gpus.len(), 2);
        let h100 = &inv.gpus[0];
        assert_eq!(h100.model, "H100");
        assert_eq!(h100.memory_gib, 80);
        assert_eq!(h100.iommu_group.as_deref(), Some("17"));
        assert_eq!(h100.group_devices, vec!["0000:41:00.0", "0000:41:00.1"]);
        assert_eq!(inv.gpus[1].model, "10de:1234");
        let limits = EffectiveLimits::resolve(&crate::config::Limits::default(), &inv);
        assert_eq!(
            limits.gpu_specs(&inv),
            vec![
                GpuSpec {
                    model: "10de:1234".into(),
                    count: 1,
                    memory_gib: 0
                },
                GpuSpec {
                    model: "H100".into(),
                    count: 1,
                    memory_gib: 80
                },
            ]
        );
    }

    #[test]
    fn confidential_platform_is_detected() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        assert_eq!(read_confidential(r), Confidential::None);
        std::fs::create_dir_all(r.join("sys/module/kvm_amd/parameters")).unwrap();
        std::fs::write(r.join("sys/module/kvm_amd/parameters/sev_snp"), "Y\n").unwrap();
        assert_eq!(
            read_confidential(r),
            Confidential::None,
            "needs /dev/sev too"
        );
        std::fs::create_dir_all(r.join("dev")).unwrap();
        std::fs::write(r.join("dev/sev"), "").unwrap();
        assert_eq!(read_confidential(r), Confidential::SevSnp);
        std::fs::write(r.join("sys/module/kvm_amd/parameters/sev_snp"), "N\n").unwrap();
        std::fs::create_dir_all(r.join("sys/module/kvm_intel/parameters")).unwrap();
        std::fs::write(r.join("sys/module/kvm_intel/parameters/tdx"), "1\n").unwrap();
        assert_eq!(read_confidential(r), Confidential::Tdx);
    }

    #[test]
    fn missing_or_bad_files_are_named() {
        let root = tempfile::tempdir().unwrap();
        let e = measure(root.path(), root.path()).unwrap_err().to_string();
        assert!(e.contains("cpuinfo"), "{e}");
        write_host(root.path(), "x", 1, 1024, &[]);
        std::fs::write(root.path().join("proc/meminfo"), "MemTotal: lots\n").unwrap();
        let e = measure(root.path(), root.path()).unwrap_err().to_string();
        assert!(e.contains("meminfo") && e.contains("lots"), "{e}");
    }
}
