//! The appliance's view of a virtual machine monitor.
//!
//! [`Hypervisor`] is the one trait the supervisor drives; Cloud Hypervisor
//! (`dc-vmm-ch`) and QEMU (`dc-vmm-qemu`) implement it. A [`VmSpec`] says
//! what to launch; a [`VmHandle`] is everything needed to find the running VMM
//! again after the supervisor restarts (the VMM process is not a child that
//! dies with it). [`process`] has the detached spawn and the liveness check
//! both backends use, [`disk`] the qcow2 overlays (sized to
//! [`Disk::size_gib`]), and [`cap_log`] keeps the logs a VMM writes bounded.

pub mod disk;
mod log;
pub mod process;
mod spec;

pub use log::{cap_log, read_log_tail, rotate_log, rotated_path};
pub use spec::*;

use std::path::{Path, PathBuf};

/// Which VMM runs a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    CloudHypervisor,
    Qemu,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::CloudHypervisor => "cloud-hypervisor",
            BackendKind::Qemu => "qemu",
        }
    }
}

/// What the supervisor journals to find a VM again: the VMM's process (pid
/// plus its start time, so a recycled pid is never mistaken for it) and its
/// control socket.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VmHandle {
    pub id: String,
    pub backend: BackendKind,
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat` (clock ticks since boot) when launched.
    pub pid_start_ticks: u64,
    /// REST socket (Cloud Hypervisor) or QMP socket (QEMU).
    pub api_socket: PathBuf,
    /// The VM's private directory: sockets, serial log, disk overlays.
    pub run_dir: PathBuf,
}

impl VmHandle {
    /// True while the VMM process that was launched is still the one running.
    pub fn is_alive(&self) -> bool {
        process::is_same_process_alive(self.pid, self.pid_start_ticks)
    }
}

/// Run state as the VMM reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Configured, not booted.
    Created,
    Running,
    Paused,
    /// The guest powered off; the VMM process may still be there.
    Shutdown,
}

/// What `info` returns.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VmInfo {
    pub state: VmState,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Devices by the id the VMM gave them (disks, nets, VFIO, vsock).
    pub devices: Vec<String>,
}

/// Per-device counters (`{"disk0": {"read_bytes": 1, ...}, ...}`).
pub type VmCounters = std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>;

/// Errors a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The spec asks for something this backend or host cannot do.
    #[error("{backend} cannot run this VM: {reason}")]
    Unsupported { backend: &'static str, reason: String },
    /// The spec itself is inconsistent.
    #[error("invalid VM spec: {0}")]
    InvalidSpec(String),
    /// Starting the VMM process failed.
    #[error("starting {program}: {reason}")]
    Spawn { program: String, reason: String },
    /// The VMM did not open its control socket in time.
    #[error("{backend} did not open {socket} within {timeout_ms} ms")]
    Timeout { backend: &'static str, socket: PathBuf, timeout_ms: u64 },
    /// The VMM answered an API call with an error.
    #[error("{backend} refused {operation}: {reason}")]
    Api { backend: &'static str, operation: String, reason: String },
    /// Talking to the VMM failed (socket, framing, decoding).
    #[error("{backend} control socket {socket}: {reason}")]
    Transport { backend: &'static str, socket: PathBuf, reason: String },
    /// The VMM process is gone.
    #[error("VM {id}: its VMM process {pid} is gone")]
    Gone { id: String, pid: u32 },
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
}

impl VmmError {
    pub fn io(path: &Path, e: impl std::fmt::Display) -> Self {
        VmmError::Io { path: path.to_path_buf(), reason: e.to_string() }
    }
}

/// A device added to (or removed from) a running VM.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Device {
    Disk(Disk),
    Vfio(VfioDevice),
}

/// The one interface the supervisor drives. Calls are blocking and short
/// (local sockets); the supervisor runs them off its async threads.
pub trait Hypervisor: Send + Sync {
    fn kind(&self) -> BackendKind;

    /// Whether this backend can run `spec` on this host, and if not why.
    fn check(&self, spec: &VmSpec) -> Result<(), VmmError>;

    /// Starts a detached VMM for `spec` in `spec.run_dir`, configures the VM
    /// and boots it. On error nothing keeps running.
    fn launch(&self, spec: &VmSpec) -> Result<VmHandle, VmmError>;

    /// Reconnects to a VM launched earlier (after a supervisor restart) and
    /// returns its state; [`VmmError::Gone`] if its VMM died meanwhile.
    fn adopt(&self, handle: &VmHandle) -> Result<VmInfo, VmmError>;

    fn info(&self, handle: &VmHandle) -> Result<VmInfo, VmmError>;
    fn counters(&self, handle: &VmHandle) -> Result<VmCounters, VmmError>;
    fn pause(&self, handle: &VmHandle) -> Result<(), VmmError>;
    fn resume(&self, handle: &VmHandle) -> Result<(), VmmError>;
    fn reboot(&self, handle: &VmHandle) -> Result<(), VmmError>;
    /// Asks the guest to power off (ACPI power button).
    fn shutdown(&self, handle: &VmHandle) -> Result<(), VmmError>;
    /// Stops the VM and its VMM process for good (the run directory stays for
    /// the caller to wipe).
    fn delete(&self, handle: &VmHandle) -> Result<(), VmmError>;
    /// Hot-plugs a device; returns the id the VMM gave it.
    fn add_device(&self, handle: &VmHandle, device: &Device) -> Result<String, VmmError>;
    fn remove_device(&self, handle: &VmHandle, device_id: &str) -> Result<(), VmmError>;
}
