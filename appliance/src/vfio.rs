//! Binding GPUs to vfio-pci, a whole IOMMU group at a time, through sysfs.
//!
//! The IOMMU isolates groups, not devices, so a VMM can only open a group's
//! `/dev/vfio/<group>` when every device in it is bound to vfio-pci (or is a
//! bridge, see below). [`bind_group`] therefore takes a group number, never a
//! device: it binds every function in the group (the GPU, its audio function,
//! anything else the hardware put there), and returns what it bound with the
//! driver each device had, which [`release_group`] gives back afterwards.
//!
//! The steps are the ones the kernel documents for `driver_override`
//! (`Documentation/ABI/testing/sysfs-bus-pci`): write `vfio-pci` to the
//! device's `driver_override`, write its address to its current driver's
//! `unbind`, then to `/sys/bus/pci/drivers_probe`. Both `unbind` and
//! `drivers_probe` probe synchronously, so the device's `driver` link is read
//! right after to verify the result; nothing polls.
//!
//! What is refused, before anything is written:
//! - the host's boot VGA device (`boot_vga` reads 1): the console and the
//!   firmware framebuffer live on it;
//! - a storage or network controller bound to a host driver: with poor ACS a
//!   GPU can share its group with the host's NVMe or NIC, and passing the
//!   group whole would take the disk or the network from the host. A provider
//!   who really means to give it away unbinds it first.
//!
//! PCI bridges in a group (class 0x0604 PCI-to-PCI, 0x0609 semi-transparent,
//! 0x0607 CardBus: the classes of header types 1 and 2) are left with their
//! driver: vfio-pci refuses devices without a type-0 header, and the kernel's
//! viability check accepts bridges bound to `pcieport` or to nothing (see
//! `Documentation/driver-api/vfio.rst`). They are not in the returned list, so
//! that list is exactly what the VMM is given.
//!
//! The vfio-pci module must be loaded (the appliance image lists it in
//! `modules-load.d`). This library does not run `modprobe`: loading kernel
//! modules is the boot's job, and a library that spawns commands is harder to
//! test and to reason about; a missing driver is a clear error instead.
//!
//! All I/O goes through the [`Sysfs`] trait, with every path under a host root
//! given as a parameter: [`HostSysfs`] reads and writes files, and
//! [`fake::FakeKernel`] also plays the kernel's part (a write to
//! `drivers_probe` moves the `driver` link) so tests can follow the writes.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The name of the vfio-pci driver in sysfs.
pub const VFIO_PCI: &str = "vfio-pci";

/// A driver that only holds devices away from other drivers; the host does
/// not use a device bound to it.
const PCI_STUB: &str = "pci-stub";

/// Reads and writes of sysfs. Paths are absolute (the host root already joined).
pub trait Sysfs {
    /// The whole content of a file.
    fn read_to_string(&self, path: &Path) -> io::Result<String>;
    /// Writes `value` to an existing attribute in one `write(2)`: a sysfs
    /// attribute's store function sees one buffer per call.
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;
    /// The target of a symbolic link.
    fn read_link(&self, path: &Path) -> io::Result<PathBuf>;
    /// The names in a directory, in any order.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Whether the path exists (following links).
    fn exists(&self, path: &Path) -> bool;
}

/// The real thing: the files under the host root.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostSysfs;

impl Sysfs for HostSysfs {
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        // No `create`: sysfs attributes exist or the kernel lacks the feature,
        // and creating a regular file in their place would hide that.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)?;
        // One write() rather than write_all(): a split write would reach the
        // kernel as two separate stores of partial values.
        let written = file.write(value.as_bytes())?;
        if written != value.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {written} of {} bytes", value.len()),
            ));
        }
        Ok(())
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::read_link(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        std::fs::read_dir(path)?
            .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

/// One device [`bind_group`] bound to vfio-pci, and the driver it had before.
///
/// The agent journals these with the VM: after a restart, binding again would
/// find the devices on vfio-pci already and could no longer tell which driver
/// to give them back to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundDevice {
    /// PCI address, `0000:41:00.0`.
    pub pci_address: String,
    /// The driver before binding: `None` when it had none, `vfio-pci` when it
    /// was bound already (then [`release_group`] leaves it bound).
    pub previous_driver: Option<String>,
}

impl BoundDevice {
    /// `sys/bus/pci/devices/<address>` under the host root: what the VMM is given.
    pub fn sysfs_path(&self, host_root: &Path) -> PathBuf {
        host_root
            .join("sys/bus/pci/devices")
            .join(&self.pci_address)
    }
}

/// Why binding or releasing failed. Paths are the sysfs files involved.
#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    #[error("IOMMU group {0:?} is not a group number")]
    BadGroup(String),
    #[error("{0:?} is not a PCI address (expected domain:bus:device.function, like 0000:41:00.0)")]
    BadAddress(String),
    #[error("IOMMU group {group} does not exist ({path} is missing); is the IOMMU enabled (amd_iommu=on or intel_iommu=on)?")]
    NoGroup { group: String, path: PathBuf },
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("{device}: writing {value:?} to {path} failed: {reason}")]
    Write {
        device: String,
        path: PathBuf,
        value: String,
        reason: String,
    },
    #[error("the vfio-pci driver is not loaded ({path} is missing): run `modprobe vfio-pci` (the appliance image loads it at boot)")]
    VfioPciNotLoaded { path: PathBuf },
    #[error("{device} is the host's boot VGA device ({path} reads 1): the host console uses it; refusing to pass it through")]
    BootVga { device: String, path: PathBuf },
    #[error("{device} in IOMMU group {group} is a {kind} (class {class:#08x}) in use by the host driver {driver}: passing the group through would take it from the host; fix the grouping (ACS) or unbind it first if the host does not need it")]
    HostDevice {
        device: String,
        group: String,
        kind: &'static str,
        class: u32,
        driver: String,
    },
    #[error(
        "IOMMU group {group} has no device to pass through ({path} lists only bridges, or nothing)"
    )]
    NothingToPass { group: String, path: PathBuf },
    #[error(
        "{device}: after writing its address to {path}, its driver is {found}, expected vfio-pci"
    )]
    NotBound {
        device: String,
        path: PathBuf,
        found: String,
    },
    #[error("{device}: after release its driver is {found}, expected {expected} (its driver before binding)")]
    NotRestored {
        device: String,
        expected: String,
        found: String,
    },
    #[error("{path} is missing after binding IOMMU group {group} to vfio-pci; the VMM opens it (is the kernel built with CONFIG_VFIO_GROUP?)")]
    NoGroupNode { group: String, path: PathBuf },
    #[error("{device} is not in IOMMU group {group} ({path}); refusing to release it")]
    NotInGroup {
        device: String,
        group: String,
        path: PathBuf,
    },
}

/// Binds every device of IOMMU group `group` to vfio-pci through the real
/// sysfs under `host_root`. See [`bind_group_with`].
pub fn bind_group(host_root: &Path, group: &str) -> Result<Vec<BoundDevice>, VfioError> {
    bind_group_with(&HostSysfs, host_root, group)
}

/// Gives the devices of `group` listed in `previous` back to the drivers they
/// had, through the real sysfs under `host_root`. See [`release_group_with`].
pub fn release_group(
    host_root: &Path,
    group: &str,
    previous: &[BoundDevice],
) -> Result<(), VfioError> {
    release_group_with(&HostSysfs, host_root, group, previous)
}

/// Binds every device of IOMMU group `group` (bridges excepted) to vfio-pci
/// and checks that `dev/vfio/<group>` exists; returns the bound devices with
/// their previous drivers, in address order.
///
/// Devices already on vfio-pci are left untouched, so binding twice is a
/// no-op. Every refusal (boot VGA, host storage or network device, vfio-pci
/// not loaded, unreadable files) happens before the first write. If a later
/// step fails, the devices this call changed are given back to their drivers
/// (best effort, logged) and the first error is returned.
/// What [`bind_group_with`] would bind, with each device's current driver,
/// after every check it makes; writes nothing. The agent journals this
/// before the first write, so a crash mid-bind still knows which drivers to
/// give the devices back to.
pub fn plan_group_with(
    sysfs: &dyn Sysfs,
    host_root: &Path,
    group: &str,
) -> Result<Vec<BoundDevice>, VfioError> {
    check_group(group)?;
    let cx = Ctx {
        sysfs,
        root: host_root,
    };
    let members = cx.group_members(group)?;
    let vfio_driver = cx.root.join("sys/bus/pci/drivers").join(VFIO_PCI);
    if !sysfs.exists(&vfio_driver) {
        return Err(VfioError::VfioPciNotLoaded { path: vfio_driver });
    }

    // Decide about every device before changing any.
    let mut plan = Vec::new();
    for device in &members {
        let class = cx.class(device)?;
        let driver = cx.driver(device)?;
        if is_bridge(class) {
            tracing::debug!(device = %device, group, driver = ?driver, "vfio: leaving a bridge with its driver");
            continue;
        }
        if cx.is_boot_vga(device)? {
            return Err(VfioError::BootVga {
                device: device.clone(),
                path: cx.device_dir(device).join("boot_vga"),
            });
        }
        if let (Some(kind), Some(d)) = (host_critical_kind(class), &driver) {
            if d != VFIO_PCI && d != PCI_STUB {
                return Err(VfioError::HostDevice {
                    device: device.clone(),
                    group: group.to_string(),
                    kind,
                    class,
                    driver: d.clone(),
                });
            }
        }
        plan.push(BoundDevice {
            pci_address: device.clone(),
            previous_driver: driver,
        });
    }
    if plan.is_empty() {
        return Err(VfioError::NothingToPass {
            group: group.to_string(),
            path: cx.group_dir(group),
        });
    }
    Ok(plan)
}

/// Binds every device of IOMMU group `group` (bridges excluded) to
/// vfio-pci, after the checks of [`plan_group_with`]; see [`bind_group`].
pub fn bind_group_with(
    sysfs: &dyn Sysfs,
    host_root: &Path,
    group: &str,
) -> Result<Vec<BoundDevice>, VfioError> {
    let plan = plan_group_with(sysfs, host_root, group)?;
    let cx = Ctx {
        sysfs,
        root: host_root,
    };
    for (i, device) in plan.iter().enumerate() {
        if let Err(e) = cx.bind_one(device) {
            cx.roll_back(group, &plan[..=i]);
            return Err(e);
        }
    }
    let node = cx.root.join("dev/vfio").join(group);
    if !sysfs.exists(&node) {
        cx.roll_back(group, &plan);
        return Err(VfioError::NoGroupNode {
            group: group.to_string(),
            path: node,
        });
    }
    tracing::info!(
        group,
        devices = plan.len(),
        "vfio: IOMMU group bound to vfio-pci"
    );
    Ok(plan)
}

/// Gives the devices in `previous` (what [`bind_group_with`] returned for
/// `group`) back: clears `driver_override`, unbinds from vfio-pci and
/// reprobes, so the host driver takes the device again; a device that had no
/// driver is left unbound, and one that was on vfio-pci before is left as it
/// was. Releasing twice is a no-op.
///
/// Call it only once the VMM has closed the devices: the kernel's unbind from
/// vfio-pci waits until the device is released, blocking the caller.
///
/// Every device listed must be in the group (checked before any change, so a
/// mixed-up record cannot take another tenant's GPU). All devices are tried
/// even when one fails; the first error is returned.
pub fn release_group_with(
    sysfs: &dyn Sysfs,
    host_root: &Path,
    group: &str,
    previous: &[BoundDevice],
) -> Result<(), VfioError> {
    check_group(group)?;
    for device in previous {
        check_address(&device.pci_address)?;
    }
    let cx = Ctx {
        sysfs,
        root: host_root,
    };
    let members = cx.group_members(group)?;
    if let Some(stranger) = previous.iter().find(|d| !members.contains(&d.pci_address)) {
        return Err(VfioError::NotInGroup {
            device: stranger.pci_address.clone(),
            group: group.to_string(),
            path: cx.group_dir(group),
        });
    }
    let mut first_error = None;
    for device in previous {
        if let Err(e) = cx.release_one(device) {
            tracing::warn!(device = %device.pci_address, group, error = %e, "vfio: release failed");
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => {
            tracing::info!(
                group,
                devices = previous.len(),
                "vfio: IOMMU group released"
            );
            Ok(())
        }
    }
}

/// IOMMU group names are decimal numbers; anything else could walk out of
/// `iommu_groups/` once joined to a path.
fn check_group(group: &str) -> Result<(), VfioError> {
    if group.is_empty() || group.len() > 10 || !group.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VfioError::BadGroup(group.to_string()));
    }
    Ok(())
}

/// `domain:bus:device.function` in hex (domains wider than 4 digits exist,
/// behind Intel VMD). Anything else is refused before it becomes a path.
fn is_pci_address(s: &str) -> bool {
    let hex = |p: &str, min: usize, max: usize| {
        (min..=max).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_hexdigit())
    };
    let mut parts = s.split(':');
    let (Some(domain), Some(bus), Some(rest), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some((slot, function)) = rest.split_once('.') else {
        return false;
    };
    hex(domain, 4, 8)
        && hex(bus, 2, 2)
        && hex(slot, 2, 2)
        && function.len() == 1
        && matches!(function.as_bytes()[0], b'0'..=b'7')
}

fn check_address(address: &str) -> Result<(), VfioError> {
    if is_pci_address(address) {
        Ok(())
    } else {
        Err(VfioError::BadAddress(address.to_string()))
    }
}

/// Classes of type-1 and type-2 header devices, which vfio-pci does not take.
fn is_bridge(class: u32) -> bool {
    matches!(class >> 8, 0x0604 | 0x0607 | 0x0609)
}

/// Classes whose loss cuts the host off (its disks, its network).
fn host_critical_kind(class: u32) -> Option<&'static str> {
    match class >> 16 {
        0x01 => Some("storage controller"),
        0x02 => Some("network controller"),
        _ => None,
    }
}

fn describe(driver: Option<&str>) -> String {
    driver.map_or_else(|| "no driver".to_string(), str::to_string)
}

/// The sysfs reads and writes, with errors naming the file.
struct Ctx<'a> {
    sysfs: &'a dyn Sysfs,
    root: &'a Path,
}

impl Ctx<'_> {
    fn device_dir(&self, device: &str) -> PathBuf {
        self.root.join("sys/bus/pci/devices").join(device)
    }

    fn group_dir(&self, group: &str) -> PathBuf {
        self.root
            .join("sys/kernel/iommu_groups")
            .join(group)
            .join("devices")
    }

    fn probe_path(&self) -> PathBuf {
        self.root.join("sys/bus/pci/drivers_probe")
    }

    fn read(&self, path: &Path) -> Result<String, VfioError> {
        self.sysfs
            .read_to_string(path)
            .map_err(|e| VfioError::Read {
                path: path.to_owned(),
                reason: e.to_string(),
            })
    }

    fn write(&self, device: &str, path: &Path, value: &str) -> Result<(), VfioError> {
        tracing::debug!(device, path = %path.display(), value = value.trim(), "vfio: sysfs write");
        self.sysfs.write(path, value).map_err(|e| VfioError::Write {
            device: device.to_string(),
            path: path.to_owned(),
            value: value.to_string(),
            reason: e.to_string(),
        })
    }

    /// The group's devices, sorted, each a valid PCI address.
    fn group_members(&self, group: &str) -> Result<Vec<String>, VfioError> {
        let dir = self.group_dir(group);
        let mut names = match self.sysfs.list_dir(&dir) {
            Ok(names) => names,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(VfioError::NoGroup {
                    group: group.to_string(),
                    path: dir,
                })
            }
            Err(e) => {
                return Err(VfioError::Read {
                    path: dir,
                    reason: e.to_string(),
                })
            }
        };
        if let Some(bad) = names.iter().find(|n| !is_pci_address(n)) {
            return Err(VfioError::Malformed {
                reason: format!("entry {bad:?} is not a PCI address"),
                path: dir,
            });
        }
        names.sort();
        Ok(names)
    }

    /// The 24-bit class code (`0x030200` for a 3D controller).
    fn class(&self, device: &str) -> Result<u32, VfioError> {
        let path = self.device_dir(device).join("class");
        let text = self.read(&path)?;
        let t = text.trim();
        match u32::from_str_radix(t.strip_prefix("0x").unwrap_or(t), 16) {
            Ok(class) if class <= 0xff_ffff => Ok(class),
            _ => Err(VfioError::Malformed {
                path,
                reason: format!("expected a 24-bit hex class like 0x030200, found {t:?}"),
            }),
        }
    }

    /// The bound driver's name, from the `driver` link; `None` when unbound.
    fn driver(&self, device: &str) -> Result<Option<String>, VfioError> {
        let path = self.device_dir(device).join("driver");
        match self.sysfs.read_link(&path) {
            Ok(target) => match target.file_name().and_then(|n| n.to_str()) {
                Some(name) if !name.is_empty() => Ok(Some(name.to_string())),
                _ => Err(VfioError::Malformed {
                    path,
                    reason: format!("link target {target:?} names no driver"),
                }),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(VfioError::Read {
                path,
                reason: e.to_string(),
            }),
        }
    }

    /// `driver_override`: the kernel shows `(null)` when unset.
    fn driver_override(&self, device: &str) -> Result<Option<String>, VfioError> {
        let path = self.device_dir(device).join("driver_override");
        let text = self.read(&path)?;
        let t = text.trim();
        Ok((!t.is_empty() && t != "(null)").then(|| t.to_string()))
    }

    /// `boot_vga` exists only for VGA-class devices; absent means no.
    fn is_boot_vga(&self, device: &str) -> Result<bool, VfioError> {
        let path = self.device_dir(device).join("boot_vga");
        match self.sysfs.read_to_string(&path) {
            Ok(text) => match text.trim() {
                "0" => Ok(false),
                "1" => Ok(true),
                other => Err(VfioError::Malformed {
                    path,
                    reason: format!("expected 0 or 1, found {other:?}"),
                }),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(VfioError::Read {
                path,
                reason: e.to_string(),
            }),
        }
    }

    fn bind_one(&self, device: &BoundDevice) -> Result<(), VfioError> {
        let address = device.pci_address.as_str();
        let dir = self.device_dir(address);
        // Read again rather than trusting the plan: the state is the kernel's.
        let current = self.driver(address)?;
        if current.as_deref() == Some(VFIO_PCI) {
            return Ok(());
        }
        // The override first, so that no other driver can grab the device
        // between the unbind and the probe.
        self.write(address, &dir.join("driver_override"), VFIO_PCI)?;
        if current.is_some() {
            self.write(address, &dir.join("driver/unbind"), address)?;
        }
        let probe = self.probe_path();
        self.write(address, &probe, address)?;
        let now = self.driver(address)?;
        if now.as_deref() != Some(VFIO_PCI) {
            return Err(VfioError::NotBound {
                device: address.to_string(),
                path: probe,
                found: describe(now.as_deref()),
            });
        }
        tracing::info!(device = address, previous_driver = ?current, "vfio: bound to vfio-pci");
        Ok(())
    }

    fn release_one(&self, device: &BoundDevice) -> Result<(), VfioError> {
        let address = device.pci_address.as_str();
        let previous = device.previous_driver.as_deref();
        if previous == Some(VFIO_PCI) {
            // It was on vfio-pci before us (bound at boot by the provider):
            // leave it as it was found.
            return Ok(());
        }
        let dir = self.device_dir(address);
        // Only our own override is cleared; "\n" because an empty write never
        // reaches the kernel's store function.
        if self.driver_override(address)?.as_deref() == Some(VFIO_PCI) {
            self.write(address, &dir.join("driver_override"), "\n")?;
        }
        if self.driver(address)?.as_deref() == Some(VFIO_PCI) {
            self.write(address, &dir.join("driver/unbind"), address)?;
        }
        if previous.is_some() && self.driver(address)?.is_none() {
            self.write(address, &self.probe_path(), address)?;
        }
        let now = self.driver(address)?;
        if now.as_deref() != previous {
            return Err(VfioError::NotRestored {
                device: address.to_string(),
                expected: describe(previous),
                found: describe(now.as_deref()),
            });
        }
        tracing::info!(device = address, driver = ?previous, "vfio: released from vfio-pci");
        Ok(())
    }

    /// Undoes a failed bind, newest first; failures are logged, since the
    /// error that caused the rollback is the one the caller needs.
    fn roll_back(&self, group: &str, devices: &[BoundDevice]) {
        for device in devices.iter().rev() {
            if let Err(e) = self.release_one(device) {
                tracing::warn!(device = %device.pci_address, group, error = %e, "vfio: rollback after a failed bind failed");
            }
        }
    }
}

/// A fake sysfs tree and a fake kernel reacting to writes, for tests here and
/// in the agent's tests. Pair with [`crate::inventory::fake::write_host`],
/// which writes the devices and their IOMMU groups.
pub mod fake {
    use std::collections::{BTreeMap, BTreeSet};
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use super::{Sysfs, VFIO_PCI};

    /// Makes driver `name` "loaded": `sys/bus/pci/drivers/<name>` with its
    /// `bind` and `unbind` files.
    pub fn load_driver(root: &Path, name: &str) -> io::Result<()> {
        let dir = root.join("sys/bus/pci/drivers").join(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("bind"), "")?;
        std::fs::write(dir.join("unbind"), "")
    }

    /// Gives device `address` (its directory already written) an unset
    /// `driver_override`, a `driver` link to `driver` when given, and creates
    /// `sys/bus/pci/drivers_probe`.
    pub fn prepare_device(root: &Path, address: &str, driver: Option<&str>) -> io::Result<()> {
        let dir = root.join("sys/bus/pci/devices").join(address);
        std::fs::write(dir.join("driver_override"), "(null)\n")?;
        std::fs::write(root.join("sys/bus/pci/drivers_probe"), "")?;
        if let Some(d) = driver {
            link_driver(root, address, d)?;
        }
        Ok(())
    }

    /// Writes the device's `boot_vga` file.
    pub fn set_boot_vga(root: &Path, address: &str, on: bool) -> io::Result<()> {
        let path = root
            .join("sys/bus/pci/devices")
            .join(address)
            .join("boot_vga");
        std::fs::write(path, if on { "1\n" } else { "0\n" })
    }

    fn link_driver(root: &Path, address: &str, driver: &str) -> io::Result<()> {
        // From sys/bus/pci/devices/<address>, like the kernel's relative links.
        std::os::unix::fs::symlink(
            format!("../../drivers/{driver}"),
            root.join("sys/bus/pci/devices")
                .join(address)
                .join("driver"),
        )
    }

    fn enodev() -> io::Error {
        io::Error::from_raw_os_error(libc::ENODEV)
    }

    /// Sysfs over a fake tree that reacts to writes the way the kernel does:
    /// `driver_override` stores a name (a blank write unsets it), a driver's
    /// `unbind` removes the device's `driver` link, `drivers_probe` links an
    /// unbound device to its override, or else to its native driver, when
    /// that driver is loaded; binding to vfio-pci creates `dev/vfio/<group>`.
    /// Every write is recorded.
    pub struct FakeKernel {
        root: PathBuf,
        native: BTreeMap<String, String>,
        vfio_refuses: BTreeSet<String>,
        writes: Mutex<Vec<(String, String)>>,
    }

    impl FakeKernel {
        /// A kernel over the tree at `root`, with no native drivers.
        pub fn new(root: &Path) -> Self {
            FakeKernel {
                root: root.to_owned(),
                native: BTreeMap::new(),
                vfio_refuses: BTreeSet::new(),
                writes: Mutex::new(Vec::new()),
            }
        }

        /// The driver that claims `address` when probed without an override.
        pub fn native(mut self, address: &str, driver: &str) -> Self {
            self.native.insert(address.into(), driver.into());
            self
        }

        /// vfio-pci's probe fails for `address` (as it does without an IOMMU).
        pub fn vfio_refuses(mut self, address: &str) -> Self {
            self.vfio_refuses.insert(address.into());
            self
        }

        /// Every write so far: (path relative to the root, value).
        pub fn writes(&self) -> Vec<(String, String)> {
            self.writes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        }

        fn device_dir(&self, address: &str) -> PathBuf {
            self.root.join("sys/bus/pci/devices").join(address)
        }

        fn driver_of(&self, address: &str) -> Option<String> {
            std::fs::read_link(self.device_dir(address).join("driver"))
                .ok()
                .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
        }

        fn unbind(&self, driver: &str, value: &str) -> io::Result<()> {
            let address = value.trim();
            if self.driver_of(address).as_deref() != Some(driver) {
                return Err(enodev());
            }
            std::fs::remove_file(self.device_dir(address).join("driver"))
        }

        fn probe(&self, value: &str) -> io::Result<()> {
            let address = value.trim();
            let dir = self.device_dir(address);
            if !dir.is_dir() {
                return Err(enodev());
            }
            if self.driver_of(address).is_some() {
                return Ok(());
            }
            let over = std::fs::read_to_string(dir.join("driver_override")).unwrap_or_default();
            let over = over.trim();
            let target = if over.is_empty() || over == "(null)" {
                self.native.get(address).cloned()
            } else {
                Some(over.to_string())
            };
            let Some(target) = target else {
                return Ok(());
            };
            let loaded = self.root.join("sys/bus/pci/drivers").join(&target).is_dir();
            if !loaded || (target == VFIO_PCI && self.vfio_refuses.contains(address)) {
                // A failed or impossible probe leaves the device unbound; the
                // write itself succeeds.
                return Ok(());
            }
            link_driver(&self.root, address, &target)?;
            if target == VFIO_PCI {
                if let Some(group) = std::fs::read_link(dir.join("iommu_group"))
                    .ok()
                    .and_then(|t| t.file_name().map(|n| n.to_owned()))
                {
                    let vfio_dev = self.root.join("dev/vfio");
                    std::fs::create_dir_all(&vfio_dev)?;
                    std::fs::write(vfio_dev.join(group), "")?;
                }
            }
            Ok(())
        }
    }

    impl Sysfs for FakeKernel {
        fn read_to_string(&self, path: &Path) -> io::Result<String> {
            std::fs::read_to_string(path)
        }

        fn write(&self, path: &Path, value: &str) -> io::Result<()> {
            let rel = path
                .strip_prefix(&self.root)
                .unwrap_or(path)
                .to_string_lossy()
                .into_owned();
            self.writes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((rel.clone(), value.to_string()));
            let parts: Vec<&str> = rel.split('/').collect();
            match parts.as_slice() {
                ["sys", "bus", "pci", "devices", _, "driver_override"] => {
                    if !path.is_file() {
                        return Err(io::ErrorKind::NotFound.into());
                    }
                    let v = value.trim();
                    std::fs::write(
                        path,
                        if v.is_empty() {
                            "(null)\n".to_string()
                        } else {
                            format!("{v}\n")
                        },
                    )
                }
                ["sys", "bus", "pci", "devices", address, "driver", "unbind"] => {
                    let driver = self.driver_of(address).ok_or(io::ErrorKind::NotFound)?;
                    self.unbind(&driver, value)
                }
                ["sys", "bus", "pci", "drivers", driver, "unbind"] => self.unbind(driver, value),
                ["sys", "bus", "pci", "drivers_probe"] => self.probe(value),
                _ => std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(path)
                    .and_then(|mut f| io::Write::write_all(&mut f, value.as_bytes())),
            }
        }

        fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
            std::fs::read_link(path)
        }

        fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
            super::HostSysfs.list_dir(path)
        }

        fn exists(&self, path: &Path) -> bool {
            path.exists()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::*;
    use super::*;
    use crate::inventory::fake::{write_host, FakeGpu};

    const GPU: &str = "0000:41:00.0";
    const AUDIO: &str = "0000:41:00.1";

    fn device(
        address: &'static str,
        class: u32,
        peers: &'static [&'static str],
    ) -> FakeGpu<'static> {
        FakeGpu {
            address,
            vendor: 0x10de,
            device: 0x2330,
            class,
            group: Some("17"),
            group_peers: peers,
        }
    }

    /// An H100 (group 17) and its audio function on their host drivers, with
    /// nvidia, snd_hda_intel and vfio-pci loaded.
    fn h100_host() -> (tempfile::TempDir, FakeKernel) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_host(
            root,
            "cpu",
            1,
            1024,
            &[
                device(GPU, 0x030200, &[AUDIO]),
                device(AUDIO, 0x040300, &[GPU]),
            ],
        );
        for d in ["nvidia", "snd_hda_intel", VFIO_PCI] {
            load_driver(root, d).unwrap();
        }
        prepare_device(root, GPU, Some("nvidia")).unwrap();
        prepare_device(root, AUDIO, Some("snd_hda_intel")).unwrap();
        let kernel = FakeKernel::new(root)
            .native(GPU, "nvidia")
            .native(AUDIO, "snd_hda_intel");
        (dir, kernel)
    }

    fn driver(root: &Path, address: &str) -> Option<String> {
        Ctx {
            sysfs: &HostSysfs,
            root,
        }
        .driver(address)
        .unwrap()
    }

    fn override_of(root: &Path, address: &str) -> String {
        std::fs::read_to_string(
            root.join("sys/bus/pci/devices")
                .join(address)
                .join("driver_override"),
        )
        .unwrap()
    }

    fn w(path: &str, value: &str) -> (String, String) {
        (path.to_string(), value.to_string())
    }

    fn bound(address: &str, previous: Option<&str>) -> BoundDevice {
        BoundDevice {
            pci_address: address.into(),
            previous_driver: previous.map(str::to_string),
        }
    }

    #[test]
    fn a_gpu_and_its_audio_function_are_bound_together() {
        let (dir, kernel) = h100_host();
        let root = dir.path();
        let got = bind_group_with(&kernel, root, "17").unwrap();
        assert_eq!(
            got,
            vec![
                bound(GPU, Some("nvidia")),
                bound(AUDIO, Some("snd_hda_intel"))
            ]
        );
        assert_eq!(
            kernel.writes(),
            vec![
                w(
                    "sys/bus/pci/devices/0000:41:00.0/driver_override",
                    "vfio-pci"
                ),
                w("sys/bus/pci/devices/0000:41:00.0/driver/unbind", GPU),
                w("sys/bus/pci/drivers_probe", GPU),
                w(
                    "sys/bus/pci/devices/0000:41:00.1/driver_override",
                    "vfio-pci"
                ),
                w("sys/bus/pci/devices/0000:41:00.1/driver/unbind", AUDIO),
                w("sys/bus/pci/drivers_probe", AUDIO),
            ]
        );
        assert_eq!(driver(root, GPU).as_deref(), Some(VFIO_PCI));
        assert_eq!(driver(root, AUDIO).as_deref(), Some(VFIO_PCI));
        assert!(root.join("dev/vfio/17").exists());
        assert_eq!(
            got[0].sysfs_path(root),
            root.join("sys/bus/pci/devices/0000:41:00.0")
        );
    }

    #[test]
    fn binding_an_already_bound_group_writes_nothing() {
        let (dir, kernel) = h100_host();
        bind_group_with(&kernel, dir.path(), "17").unwrap();
        let before = kernel.writes().len();
        let again = bind_group_with(&kernel, dir.path(), "17").unwrap();
        assert_eq!(kernel.writes().len(), before);
        assert_eq!(
            again,
            vec![bound(GPU, Some(VFIO_PCI)), bound(AUDIO, Some(VFIO_PCI))]
        );
    }

    #[test]
    fn an_unbound_device_is_probed_without_an_unbind() {
        let (dir, kernel) = h100_host();
        let root = dir.path();
        std::fs::remove_file(root.join("sys/bus/pci/devices").join(AUDIO).join("driver")).unwrap();
        let got = bind_group_with(&kernel, root, "17").unwrap();
        assert_eq!(got[1], bound(AUDIO, None));
        assert!(!kernel
            .writes()
            .iter()
            .any(|(p, _)| p.contains("0000:41:00.1/driver/unbind")));
        assert_eq!(driver(root, AUDIO).as_deref(), Some(VFIO_PCI));

        // Released, it stays unbound: no probe that could hand it to a driver.
        let before = kernel.writes().len();
        release_group_with(&kernel, root, "17", &got).unwrap();
        assert_eq!(driver(root, AUDIO), None);
        assert_eq!(driver(root, GPU).as_deref(), Some("nvidia"));
        let probes: Vec<_> = kernel.writes()[before..]
            .iter()
            .filter(|(p, _)| p == "sys/bus/pci/drivers_probe")
            .map(|(_, v)| v.clone())
            .collect();
        assert_eq!(probes, vec![GPU.to_string()]);
    }

    #[test]
    fn release_gives_devices_back_to_their_drivers_and_is_idempotent() {
        let (dir, kernel) = h100_host();
        let root = dir.path();
        let got = bind_group_with(&kernel, root, "17").unwrap();
        let before = kernel.writes().len();
        release_group_with(&kernel, root, "17", &got).unwrap();
        assert_eq!(
            kernel.writes()[before..].to_vec(),
            vec![
                w("sys/bus/pci/devices/0000:41:00.0/driver_override", "\n"),
                w("sys/bus/pci/devices/0000:41:00.0/driver/unbind", GPU),
                w("sys/bus/pci/drivers_probe", GPU),
                w("sys/bus/pci/devices/0000:41:00.1/driver_override", "\n"),
                w("sys/bus/pci/devices/0000:41:00.1/driver/unbind", AUDIO),
                w("sys/bus/pci/drivers_probe", AUDIO),
            ]
        );
        assert_eq!(driver(root, GPU).as_deref(), Some("nvidia"));
        assert_eq!(driver(root, AUDIO).as_deref(), Some("snd_hda_intel"));
        assert_eq!(override_of(root, GPU), "(null)\n");

        let before = kernel.writes().len();
        release_group_with(&kernel, root, "17", &got).unwrap();
        assert_eq!(
            kernel.writes().len(),
            before,
            "a second release writes nothing"
        );
    }

    #[test]
    fn devices_on_vfio_pci_before_binding_stay_there_on_release() {
        let (dir, kernel) = h100_host();
        let root = dir.path();
        bind_group_with(&kernel, root, "17").unwrap();
        // What a bind finds on a host that binds GPUs to vfio-pci at boot.
        let found = bind_group_with(&kernel, root, "17").unwrap();
        let before = kernel.writes().len();
        release_group_with(&kernel, root, "17", &found).unwrap();
        assert_eq!(kernel.writes().len(), before);
        assert_eq!(driver(root, GPU).as_deref(), Some(VFIO_PCI));
    }

    #[test]
    fn release_tries_every_device_and_reports_one_not_restored() {
        let (dir, kernel) = h100_host();
        let root = dir.path();
        let got = bind_group_with(&kernel, root, "17").unwrap();
        // The nvidia module was unloaded meanwhile.
        std::fs::remove_dir_all(root.join("sys/bus/pci/drivers/nvidia")).unwrap();
        let e = release_group_with(&kernel, root, "17", &got).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(e, VfioError::NotRestored { .. })
                && text.contains(GPU)
                && text.contains("nvidia"),
            "{text}"
        );
        assert_eq!(driver(root, GPU), None, "off vfio-pci all the same");
        assert_eq!(driver(root, AUDIO).as_deref(), Some("snd_hda_intel"));
    }

    #[test]
    fn release_refuses_devices_outside_the_group_before_any_change() {
        let (dir, kernel) = h100_host();
        let root = dir.path();
        let got = bind_group_with(&kernel, root, "17").unwrap();
        let before = kernel.writes().len();
        let mut list = got.clone();
        list.push(bound("0000:c1:00.0", Some("nvidia")));
        let e = release_group_with(&kernel, root, "17", &list).unwrap_err();
        assert!(matches!(e, VfioError::NotInGroup { .. }), "{e}");
        assert!(e.to_string().contains("0000:c1:00.0"), "{e}");
        assert_eq!(kernel.writes().len(), before);
        list.push(bound("../../x", None));
        let e = release_group_with(&kernel, root, "17", &list).unwrap_err();
        assert!(matches!(e, VfioError::BadAddress(_)), "{e}");
    }

    #[test]
    fn the_boot_vga_device_is_refused() {
        let (dir, kernel) = h100_host();
        let root = dir.path();
        set_boot_vga(root, GPU, true).unwrap();
        let e = bind_group_with(&kernel, root, "17").unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, VfioError::BootVga { .. }), "{text}");
        assert!(text.contains(GPU) && text.contains("boot_vga"), "{text}");
        assert!(kernel.writes().is_empty());
        set_boot_vga(root, GPU, false).unwrap();
        bind_group_with(&kernel, root, "17").unwrap();
    }

    #[test]
    fn a_missing_vfio_pci_driver_asks_for_modprobe() {
        let (dir, kernel) = h100_host();
        let root = dir.path();
        std::fs::remove_dir_all(root.join("sys/bus/pci/drivers/vfio-pci")).unwrap();
        let e = bind_group_with(&kernel, root, "17").unwrap_err();
        assert!(matches!(e, VfioError::VfioPciNotLoaded { .. }), "{e}");
        assert!(e.to_string().contains("modprobe vfio-pci"), "{e}");
        assert!(kernel.writes().is_empty());
        assert_eq!(driver(root, GPU).as_deref(), Some("nvidia"));
    }

    #[test]
    fn bridges_are_left_alone_and_not_returned() {
        let (dir, kernel) = h100_host();
        let root = dir.path();
        const BRIDGE: &str = "0000:40:01.1";
        write_host(root, "cpu", 1, 1024, &[device(BRIDGE, 0x060400, &[])]);
        load_driver(root, "pcieport").unwrap();
        prepare_device(root, BRIDGE, Some("pcieport")).unwrap();
        let got = bind_group_with(&kernel, root, "17").unwrap();
        assert_eq!(
            got.iter()
                .map(|d| d.pci_address.as_str())
                .collect::<Vec<_>>(),
            vec![GPU, AUDIO]
        );
        assert_eq!(driver(root, BRIDGE).as_deref(), Some("pcieport"));
        assert!(!kernel
            .writes()
            .iter()
            .any(|(p, v)| p.contains(BRIDGE) || v == BRIDGE));
    }

    #[test]
    fn a_host_storage_controller_in_the_group_is_refused() {
        let (dir, kernel) = h100_host();
        let root = dir.path();
        const NVME: &str = "0000:42:00.0";
        write_host(root, "cpu", 1, 1024, &[device(NVME, 0x010802, &[])]);
        load_driver(root, "nvme").unwrap();
        prepare_device(root, NVME, Some("nvme")).unwrap();
        let e = bind_group_with(&kernel, root, "17").unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, VfioError::HostDevice { .. }), "{text}");
        assert!(
            text.contains(NVME) && text.contains("nvme") && text.contains("0x010802"),
            "{text}"
        );
        assert!(kernel.writes().is_empty());
        // Unbound by the provider, it may go with the group.
        std::fs::remove_file(root.join("sys/bus/pci/devices").join(NVME).join("driver")).unwrap();
        assert_eq!(bind_group_with(&kernel, root, "17").unwrap().len(), 3);
    }

    #[test]
    fn a_failed_bind_gives_the_group_back() {
        let (dir, kernel) = h100_host();
        let root = dir.path();
        let kernel = kernel.vfio_refuses(AUDIO);
        let e = bind_group_with(&kernel, root, "17").unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, VfioError::NotBound { .. }), "{text}");
        assert!(
            text.contains(AUDIO) && text.contains("drivers_probe") && text.contains("no driver"),
            "{text}"
        );
        assert_eq!(driver(root, GPU).as_deref(), Some("nvidia"));
        assert_eq!(driver(root, AUDIO).as_deref(), Some("snd_hda_intel"));
        assert_eq!(override_of(root, GPU), "(null)\n");
        assert_eq!(override_of(root, AUDIO), "(null)\n");
    }

    #[test]
    fn a_missing_group_node_is_an_error_and_rolls_back() {
        // A kernel without the legacy group interface: binding works, /dev/vfio/17 never appears.
        struct NoNode(FakeKernel);
        impl Sysfs for NoNode {
            fn read_to_string(&self, p: &Path) -> io::Result<String> {
                self.0.read_to_string(p)
            }
            fn write(&self, p: &Path, v: &str) -> io::Result<()> {
                self.0.write(p, v)
            }
            fn read_link(&self, p: &Path) -> io::Result<PathBuf> {
                self.0.read_link(p)
            }
            fn list_dir(&self, p: &Path) -> io::Result<Vec<String>> {
                self.0.list_dir(p)
            }
            fn exists(&self, p: &Path) -> bool {
                !p.ends_with("dev/vfio/17") && self.0.exists(p)
            }
        }
        let (dir, kernel) = h100_host();
        let root = dir.path();
        let e = bind_group_with(&NoNode(kernel), root, "17").unwrap_err();
        assert!(matches!(e, VfioError::NoGroupNode { .. }), "{e}");
        assert!(e.to_string().contains("dev/vfio/17"), "{e}");
        assert_eq!(driver(root, GPU).as_deref(), Some("nvidia"));
    }

    #[test]
    fn odd_or_missing_files_are_named() {
        let (dir, kernel) = h100_host();
        let root = dir.path();
        let dev = root.join("sys/bus/pci/devices").join(GPU);
        let err =
            |kernel: &FakeKernel| bind_group_with(kernel, root, "17").unwrap_err().to_string();

        std::fs::write(dev.join("class"), "garbage\n").unwrap();
        let e = err(&kernel);
        assert!(
            e.contains(&format!("{GPU}/class")) && e.contains("garbage"),
            "{e}"
        );
        std::fs::remove_file(dev.join("class")).unwrap();
        let e = err(&kernel);
        assert!(
            e.contains(&format!("{GPU}/class")) && e.contains("cannot read"),
            "{e}"
        );
        std::fs::write(dev.join("class"), "0x030200\n").unwrap();

        std::fs::write(dev.join("boot_vga"), "maybe\n").unwrap();
        let e = err(&kernel);
        assert!(
            e.contains(&format!("{GPU}/boot_vga")) && e.contains("maybe"),
            "{e}"
        );
        std::fs::remove_file(dev.join("boot_vga")).unwrap();

        std::fs::remove_file(dev.join("driver")).unwrap();
        std::os::unix::fs::symlink("/", dev.join("driver")).unwrap();
        let e = err(&kernel);
        assert!(
            e.contains(&format!("{GPU}/driver")) && e.contains("names no driver"),
            "{e}"
        );
        std::fs::remove_file(dev.join("driver")).unwrap();
        std::os::unix::fs::symlink("../../drivers/nvidia", dev.join("driver")).unwrap();

        let group_dir = root.join("sys/kernel/iommu_groups/17/devices");
        std::fs::write(group_dir.join("not-a-device"), "").unwrap();
        let e = err(&kernel);
        assert!(
            e.contains("iommu_groups/17/devices") && e.contains("not-a-device"),
            "{e}"
        );
        std::fs::remove_file(group_dir.join("not-a-device")).unwrap();

        std::fs::remove_file(dev.join("driver_override")).unwrap();
        let e = err(&kernel);
        assert!(
            e.contains(&format!("{GPU}/driver_override")) && e.contains("writing"),
            "{e}"
        );
        assert_eq!(driver(root, GPU).as_deref(), Some("nvidia"));

        let e = bind_group_with(&kernel, root, "18").unwrap_err();
        assert!(
            matches!(e, VfioError::NoGroup { .. }) && e.to_string().contains("IOMMU"),
            "{e}"
        );
        for bad in ["", "../17", "17/devices", "x"] {
            assert!(
                matches!(
                    bind_group_with(&kernel, root, bad),
                    Err(VfioError::BadGroup(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn pci_addresses_are_checked() {
        for good in ["0000:41:00.0", "0000:c1:1f.7", "10000:e1:00.3"] {
            assert!(is_pci_address(good), "{good}");
        }
        for bad in [
            "41:00.0",
            "0000:41:00.8",
            "0000:41:00",
            "0000:4:00.0",
            "0000:41:00.0/..",
            "../41:00.0",
            "0000:41:00.0:1",
        ] {
            assert!(!is_pci_address(bad), "{bad}");
        }
    }

    #[test]
    fn the_host_implementation_writes_what_the_kernel_expects() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Truncates, writes exactly the value, never creates a missing attribute.
        let attr = root.join("attr");
        std::fs::write(&attr, "(null)\n").unwrap();
        HostSysfs.write(&attr, "vfio-pci").unwrap();
        assert_eq!(std::fs::read_to_string(&attr).unwrap(), "vfio-pci");
        assert!(HostSysfs.write(&root.join("missing"), "x").is_err());
        assert!(!root.join("missing").exists());

        // A whole bind against plain files: nothing rebinds, so it ends in
        // NotBound, after writing each file as the kernel expects.
        write_host(root, "cpu", 1, 1024, &[device(GPU, 0x030200, &[])]);
        load_driver(root, "nvidia").unwrap();
        load_driver(root, VFIO_PCI).unwrap();
        prepare_device(root, GPU, Some("nvidia")).unwrap();
        let e = bind_group(root, "17").unwrap_err();
        assert!(matches!(e, VfioError::NotBound { .. }), "{e}");
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
        assert_eq!(read("sys/bus/pci/drivers/nvidia/unbind"), GPU);
        assert_eq!(read("sys/bus/pci/drivers_probe"), GPU);
        // "vfio-pci" was written, then cleared by the rollback with "\n".
        assert_eq!(
            read("sys/bus/pci/devices/0000:41:00.0/driver_override"),
            "\n"
        );
        assert_eq!(driver(root, GPU).as_deref(), Some("nvidia"));
    }
}
