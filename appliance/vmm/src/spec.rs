//! What to launch.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::VmmError;

/// SEV-SNP guest policy bit 19: debugging allowed.
pub const SNP_POLICY_DEBUG: u64 = 1 << 19;

/// Longest VM id (it names files and sockets).
pub const MAX_VM_ID_LEN: usize = 48;

/// A VM to launch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// `[a-z0-9-]`, 1 to 48 characters (the supervisor uses `c<contract id>`).
    pub id: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub boot: Boot,
    pub disks: Vec<Disk>,
    pub network: Network,
    /// virtio-vsock context id (3 or more) for host↔guest channels.
    pub vsock_cid: Option<u32>,
    /// VFIO devices: every PCI function of each IOMMU group to pass through.
    pub vfio: Vec<VfioDevice>,
    pub confidential: Confidential,
    /// Hardware virtualization or software emulation.
    pub accel: Accel,
    /// Private directory of this VM: sockets, serial log, overlays.
    pub run_dir: PathBuf,
}

impl VmSpec {
    /// Serial console log inside the run directory.
    pub fn serial_log(&self) -> PathBuf {
        self.run_dir.join("serial.log")
    }

    /// Checks what does not depend on the backend.
    pub fn validate(&self) -> Result<(), VmmError> {
        let bad = |m: String| Err(VmmError::InvalidSpec(m));
        if self.id.is_empty()
            || self.id.len() > MAX_VM_ID_LEN
            || !self.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return bad(format!("id {:?} must be 1 to {MAX_VM_ID_LEN} of [a-z0-9-]", self.id));
        }
        if self.vcpus == 0 || self.vcpus > 512 {
            return bad(format!("vcpus {} must be 1 to 512", self.vcpus));
        }
        if self.memory_mib < 64 {
            return bad(format!("memory_mib {} must be at least 64", self.memory_mib));
        }
        if let Some(cid) = self.vsock_cid {
            if cid < 3 {
                return bad(format!("vsock cid {cid} must be 3 or more"));
            }
        }
        if let Confidential::SevSnp { policy, .. } = self.confidential {
            if policy & SNP_POLICY_DEBUG != 0 {
                return bad(format!("SEV-SNP guest policy {policy:#x} allows debugging; confidential VMs never do"));
            }
        }
        if self.confidential != Confidential::None && self.accel == Accel::Tcg {
            return bad("a confidential VM needs hardware virtualization".into());
        }
        for disk in &self.disks {
            match (disk.size_gib, &disk.base) {
                (Some(0), _) => return bad(format!("disk {}: size_gib must be at least 1", disk.path.display())),
                (Some(_), None) => {
                    return bad(format!(
                        "disk {}: size_gib sizes the overlay made over a base image, and this disk has no base",
                        disk.path.display()
                    ))
                }
                (Some(gib), Some(_)) if gib.checked_mul(crate::disk::GIB).is_none() => {
                    return bad(format!("disk {}: size_gib {gib} overflows bytes", disk.path.display()))
                }
                _ => {}
            }
        }
        if let Network::User { forwards } = &self.network {
            for f in forwards {
                if f.guest_port == 0 {
                    return bad("a port forward needs a guest port".into());
                }
            }
        }
        Ok(())
    }
}

/// How the guest starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Boot {
    /// Direct kernel boot (the firmware, when given, measures kernel, initrd
    /// and command line: OVMF for SEV-SNP and TDX).
    Kernel { kernel: PathBuf, initrd: Option<PathBuf>, cmdline: String, firmware: Option<PathBuf> },
    /// Firmware boot from the first disk.
    Firmware { firmware: PathBuf },
    /// An IGVM file (Cloud Hypervisor SEV-SNP launches).
    Igvm { igvm: PathBuf, cmdline: String },
}

/// A disk: a per-VM copy-on-write overlay over a base image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// The VM's own file (qcow2 overlay, or a raw file).
    pub path: PathBuf,
    /// Read-only base image the overlay was made from, if any.
    pub base: Option<PathBuf>,
    pub readonly: bool,
    /// Virtual size of the overlay in GiB (1 GiB = 2^30 bytes), applied when
    /// the backend creates it ([`crate::disk::create_overlay`]); `None` keeps
    /// the base image's size. Only meaningful with a `base`. An overlay that
    /// already exists (a relaunch over the tenant's disk) is used as it is.
    /// Absent in journals written before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_gib: Option<u64>,
}

/// Guest networking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    None,
    /// User-mode networking (QEMU `-netdev user`): unprivileged, for tests
    /// and hosts without a bridge; inbound only through `forwards`.
    User {
        forwards: Vec<PortForward>,
    },
    /// A tap device already attached to the tenant bridge.
    Tap {
        tap: String,
        mac: String,
    },
}

/// Host address:port forwarded to a guest TCP port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    pub host_addr: std::net::IpAddr,
    pub host_port: u16,
    pub guest_port: u16,
}

/// A PCI function passed through with VFIO (`/sys/bus/pci/devices/0000:41:00.0`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfioDevice {
    pub sysfs_path: PathBuf,
}

/// Confidential-computing launch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidential {
    None,
    /// AMD SEV-SNP: the guest policy (debug never allowed) and HOST_DATA,
    /// which binds the contract into the launch.
    SevSnp {
        policy: u64,
        #[serde(with = "hex_array")]
        host_data: [u8; 32],
    },
    /// Intel TDX: MRCONFIGID binds the contract into the launch.
    Tdx {
        #[serde(with = "hex_array")]
        mrconfigid: [u8; 48],
    },
}

/// Hardware virtualization (KVM) or software emulation (QEMU TCG).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accel {
    Kvm,
    Tcg,
}

/// Fixed-size byte arrays as hex strings in the journal.
mod hex_array {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(bytes: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(d)?;
        let bytes = hex::decode(&text).map_err(serde::de::Error::custom)?;
        bytes
            .try_into()
            .map_err(|b: Vec<u8>| serde::de::Error::custom(format!("expected {N} bytes of hex, got {}", b.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            id: "c42".into(),
            vcpus: 2,
            memory_mib: 512,
            boot: Boot::Kernel { kernel: "/k".into(), initrd: None, cmdline: "console=ttyS0".into(), firmware: None },
            disks: vec![],
            network: Network::User { forwards: vec![] },
            vsock_cid: None,
            vfio: vec![],
            confidential: Confidential::None,
            accel: Accel::Tcg,
            run_dir: "/run/dc/vms/c42".into(),
        }
    }

    fn disk(size_gib: Option<u64>) -> Disk {
        Disk { path: "/v/root.qcow2".into(), base: Some("/i/base.qcow2".into()), readonly: false, size_gib }
    }

    #[test]
    fn validation_names_what_is_wrong() {
        assert!(spec().validate().is_ok());
        assert!(VmSpec { disks: vec![disk(Some(20)), disk(None)], ..spec() }.validate().is_ok());
        for (s, needle) in [
            (VmSpec { id: "C42".into(), ..spec() }, "id"),
            (VmSpec { vcpus: 0, ..spec() }, "vcpus"),
            (VmSpec { memory_mib: 1, ..spec() }, "memory_mib"),
            (VmSpec { vsock_cid: Some(2), ..spec() }, "cid"),
            (VmSpec { disks: vec![disk(Some(0))], ..spec() }, "at least 1"),
            (VmSpec { disks: vec![Disk { base: None, ..disk(Some(4)) }], ..spec() }, "no base"),
            (VmSpec { disks: vec![disk(Some(u64::MAX))], ..spec() }, "overflows"),
            (VmSpec { confidential: Confidential::Tdx { mrconfigid: [0; 48] }, ..spec() }, "hardware"),
            (
                VmSpec {
                    confidential: Confidential::SevSnp { policy: 0x30000 | SNP_POLICY_DEBUG, host_data: [0; 32] },
                    accel: Accel::Kvm,
                    ..spec()
                },
                "debug",
            ),
        ] {
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{e} should mention {needle}");
        }
    }

    #[test]
    fn specs_round_trip_through_json() {
        let s = VmSpec {
            confidential: Confidential::SevSnp { policy: 0x30000, host_data: [7; 32] },
            accel: Accel::Kvm,
            ..spec()
        };
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(&"07".repeat(32)));
        assert_eq!(serde_json::from_str::<VmSpec>(&json).unwrap(), s);
    }

    #[test]
    fn disks_of_old_journals_have_no_size_and_sizes_round_trip() {
        let old = r#"{"path":"/v/root.qcow2","base":"/i/base.qcow2","readonly":false}"#;
        assert_eq!(serde_json::from_str::<Disk>(old).unwrap(), disk(None));
        assert_eq!(serde_json::to_string(&disk(None)).unwrap(), old, "an unsized disk serializes as before");
        let sized = serde_json::to_string(&disk(Some(20))).unwrap();
        assert!(sized.contains(r#""size_gib":20"#), "{sized}");
        assert_eq!(serde_json::from_str::<Disk>(&sized).unwrap(), disk(Some(20)));
    }
}
