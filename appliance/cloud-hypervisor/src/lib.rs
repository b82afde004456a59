//! Cloud Hypervisor backend of [`dc_vmm::Hypervisor`].
//!
//! [`CloudHypervisor`] starts one detached `cloud-hypervisor --api-socket`
//! process per VM and drives it over its REST API ([`api`], a small HTTP/1.1
//! client on a Unix socket). What is sent to `vm.create` comes from the pure
//! function [`vm_config`], pinned by golden files and checked against the v54
//! OpenAPI description. Regular, SEV-SNP (IGVM) and VFIO/GPU VMs; TCG and TDX
//! are refused (QEMU runs those).
//!
//! Disks with a base get a qcow2 overlay made with `qemu-img` at launch
//! ([`dc_vmm::disk`], sized to `Disk::size_gib`). The serial console is the
//! VMM's stdout, appended to `run_dir/serial.log` so that
//! [`dc_vmm::cap_log`] can cap it (see [`vm_config`] for why not `File`
//! mode); the VMM's own messages go to `run_dir/cloud-hypervisor.log`.

pub mod api;
mod config;
pub mod igvm;
pub mod stub;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dc_vmm::{
    process, BackendKind, Device, Hypervisor, VmCounters, VmHandle, VmInfo, VmSpec, VmState,
    VmmError,
};
use serde_json::{json, Value};

pub use api::ApiClient;
pub use config::{
    check_spec, disk_config, disk_id, vfio_config, vfio_id, vm_config, API_SOCKET_NAME, LOG_NAME,
    VSOCK_SOCKET_NAME,
};

use config::BACKEND;

/// How long `launch` waits for the API socket by default.
pub const DEFAULT_SOCKET_TIMEOUT_MS: u64 = 10_000;
/// How long `delete` lets the VMM exit after `vmm.shutdown` before SIGKILL.
pub const SHUTDOWN_GRACE_MS: u64 = 3_000;

/// The Cloud Hypervisor backend: `binary` is the `cloud-hypervisor`
/// executable; `qemu_img` makes the VMs' qcow2 disk overlays (Cloud
/// Hypervisor has no image tool of its own), needed only for disks with a
/// base whose overlay does not exist yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudHypervisor {
    pub binary: PathBuf,
    pub qemu_img: Option<PathBuf>,
}

impl CloudHypervisor {
    /// A backend running `binary`, with `qemu-img` from `PATH` if there is one.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        CloudHypervisor {
            binary: binary.into(),
            qemu_img: dc_vmm::disk::find_on_path("qemu-img"),
        }
    }

    /// The same backend with overlays made by `qemu_img` (`None`: refuse
    /// to launch a VM whose overlay is missing).
    pub fn with_qemu_img(self, qemu_img: Option<PathBuf>) -> Self {
        CloudHypervisor { qemu_img, ..self }
    }

    /// Where the VMM's own messages (stderr) go inside the run directory;
    /// its stdout is the serial console ([`VmSpec::serial_log`]).
    pub fn vmm_log(spec: &VmSpec) -> PathBuf {
        spec.run_dir.join(LOG_NAME)
    }

    /// [`Hypervisor::launch`] with an explicit wait for the API socket.
    pub fn launch_with_timeout(
        &self,
        spec: &VmSpec,
        socket_timeout: Duration,
    ) -> Result<VmHandle, VmmError> {
        let config = vm_config(spec)?;
        if let (
            dc_vmm::Confidential::SevSnp { policy, .. },
            dc_vmm::Boot::Igvm {
                igvm: igvm_path, ..
            },
        ) = (&spec.confidential, &spec.boot)
        {
            // The policy is not a VmConfig field: check the one the file carries.
            let bytes = std::fs::read(igvm_path).map_err(|e| VmmError::io(igvm_path, e))?;
            igvm::check_snp_policy(&bytes, *policy).map_err(|reason| {
                VmmError::InvalidSpec(format!("{}: {reason}", igvm_path.display()))
            })?;
        }
        if self.qemu_img.is_none() {
            // Refused before anything starts; the overlays themselves are
            // made once the VMM has shown it can run the VM.
            dc_vmm::disk::create_missing_overlays(None, &spec.disks)?;
        }
        std::fs::create_dir_all(&spec.run_dir).map_err(|e| VmmError::io(&spec.run_dir, e))?;
        let socket = spec.run_dir.join(API_SOCKET_NAME);
        // A socket left by an earlier VMM of this directory would be mistaken
        // for the new one being ready.
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(VmmError::io(&socket, e)),
        }
        let socket_arg = socket.to_str().ok_or_else(|| {
            VmmError::InvalidSpec(format!("run_dir {} is not UTF-8", spec.run_dir.display()))
        })?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--api-socket").arg(format!("path={socket_arg}"));
        let log = Self::vmm_log(spec);
        // The serial console is the VMM's stdout (VmConfig `serial.mode` Tty),
        // appended to a fresh log per launch (the previous one becomes
        // serial.log.1) so a readiness check never sees an old boot's marker.
        let serial_log = spec.serial_log();
        dc_vmm::rotate_log(&serial_log).map_err(|e| VmmError::io(&serial_log, e))?;
        let spawned = process::spawn_detached_split(cmd, &serial_log, &log)?;
        let handle = VmHandle {
            id: spec.id.clone(),
            backend: BackendKind::CloudHypervisor,
            pid: spawned.pid,
            pid_start_ticks: spawned.start_ticks,
            api_socket: socket,
            run_dir: spec.run_dir.clone(),
        };
        tracing::info!(vm = %spec.id, pid = spawned.pid, "cloud-hypervisor started");

        let configured = wait_for_socket(&handle, socket_timeout, &log).and_then(|()| {
            let client = ApiClient::new(&handle.api_socket);
            check_build_features(&client, spec)?;
            // Overlays only once the VMM is known to be able to run the VM,
            // so a refused launch leaves no disk behind.
            dc_vmm::disk::create_missing_overlays(self.qemu_img.as_deref(), &spec.disks)?;
            client.put("vm.create", Some(&config))?;
            client.put("vm.boot", None)?;
            Ok(())
        });
        if let Err(e) = configured {
            tracing::warn!(vm = %spec.id, pid = spawned.pid, error = %e, "launch failed; killing cloud-hypervisor");
            kill_and_wait(&handle);
            let _ = std::fs::remove_file(&handle.api_socket);
            return Err(e);
        }
        Ok(handle)
    }

    fn client(&self, handle: &VmHandle) -> Result<ApiClient, VmmError> {
        if !handle.is_alive() {
            return Err(VmmError::Gone {
                id: handle.id.clone(),
                pid: handle.pid,
            });
        }
        Ok(ApiClient::new(&handle.api_socket))
    }

    /// The first id `prefix<N>` not used by the VM's devices.
    fn free_id(client: &ApiClient, prefix: &str) -> Result<String, VmmError> {
        let info = parse_info(&client.get_json("vm.info")?)?;
        Ok((0..)
            .map(|i| format!("{prefix}{i}"))
            .find(|id| !info.devices.contains(id))
            .unwrap_or_else(|| format!("{prefix}x")))
    }
}

/// The build features (`vmm.ping`'s `features`) that `spec` needs: `igvm`
/// for an IGVM payload, `sev_snp` for SEV-SNP.
pub fn required_features(spec: &VmSpec) -> Vec<&'static str> {
    let mut needed = Vec::new();
    if matches!(spec.boot, dc_vmm::Boot::Igvm { .. }) {
        needed.push("igvm");
    }
    if matches!(spec.confidential, dc_vmm::Confidential::SevSnp { .. }) {
        needed.push("sev_snp");
    }
    needed
}

/// Refuses a spec that needs build features the running binary lacks.
///
/// Cloud Hypervisor's VmConfig fields `payload.igvm`, `payload.host_data`
/// and `platform.sev_snp` only exist in builds with those features, and its
/// JSON parser ignores unknown fields: a default build (features `kvm`,
/// `io_uring`) answers 204 to such a `vm.create` and drops them, which must
/// never turn an SEV-SNP launch into a regular one. Only asked when needed.
fn check_build_features(client: &ApiClient, spec: &VmSpec) -> Result<(), VmmError> {
    let needed = required_features(spec);
    if needed.is_empty() {
        return Ok(());
    }
    let ping = client.get_json("vmm.ping")?;
    let features: Vec<&str> = ping
        .get("features")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let missing: Vec<&str> = needed
        .into_iter()
        .filter(|f| !features.contains(f))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(VmmError::Unsupported {
        backend: BACKEND,
        reason: format!(
            "this cloud-hypervisor build lacks the feature(s) {} that the VM needs (it has {features:?}); build it with --features sev_snp",
            missing.join(", ")
        ),
    })
}

/// Polls until the API socket accepts a connection, the process dies, or
/// `timeout` passes.
fn wait_for_socket(handle: &VmHandle, timeout: Duration, log: &Path) -> Result<(), VmmError> {
    let deadline = Instant::now() + timeout;
    loop {
        if UnixStream::connect(&handle.api_socket).is_ok() {
            return Ok(());
        }
        if !handle.is_alive() {
            return Err(VmmError::Spawn {
                program: "cloud-hypervisor".into(),
                reason: format!(
                    "exited before opening its API socket; log: {}",
                    log_tail(log)
                ),
            });
        }
        if Instant::now() >= deadline {
            return Err(VmmError::Timeout {
                backend: BACKEND,
                socket: handle.api_socket.clone(),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last few hundred bytes of the VMM log, for error messages.
fn log_tail(log: &Path) -> String {
    let Ok(bytes) = std::fs::read(log) else {
        return "(unreadable)".into();
    };
    let start = bytes.len().saturating_sub(512);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

fn wait_until_gone(handle: &VmHandle, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while handle.is_alive() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// SIGKILL (only if the pid is still the VMM we started) and wait a little.
fn kill_and_wait(handle: &VmHandle) -> bool {
    process::signal_if_same(handle.pid, handle.pid_start_ticks, libc::SIGKILL);
    wait_until_gone(handle, Duration::from_secs(5))
}

fn decode_error(operation: &str, reason: impl std::fmt::Display) -> VmmError {
    VmmError::Api {
        backend: BACKEND,
        operation: operation.into(),
        reason: format!("unexpected answer: {reason}"),
    }
}

/// `vm.info`'s JSON → [`VmInfo`]. Devices are the ids in the VM's config
/// (disks, net, VFIO devices, vsock), which include hot-plugged ones.
pub fn parse_info(info: &Value) -> Result<VmInfo, VmmError> {
    let state = match info.get("state").and_then(Value::as_str) {
        Some("Created") => VmState::Created,
        Some("Running") => VmState::Running,
        Some("Paused") => VmState::Paused,
        // Stopped at a debugger breakpoint: vCPUs are not running.
        Some("BreakPoint") => VmState::Paused,
        Some("Shutdown") => VmState::Shutdown,
        other => return Err(decode_error("vm.info", format!("state {other:?}"))),
    };
    let config = info
        .get("config")
        .ok_or_else(|| decode_error("vm.info", "no config"))?;
    let vcpus = config
        .pointer("/cpus/boot_vcpus")
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| decode_error("vm.info", "no cpus.boot_vcpus"))?;
    let memory_bytes = config
        .pointer("/memory/size")
        .and_then(Value::as_u64)
        .ok_or_else(|| decode_error("vm.info", "no memory.size"))?;
    let mut devices = Vec::new();
    for list in ["disks", "net", "devices"] {
        if let Some(items) = config.get(list).and_then(Value::as_array) {
            devices.extend(
                items
                    .iter()
                    .filter_map(|d| d.get("id").and_then(Value::as_str))
                    .map(str::to_owned),
            );
        }
    }
    if let Some(id) = config.pointer("/vsock/id").and_then(Value::as_str) {
        devices.push(id.to_owned());
    }
    Ok(VmInfo {
        state,
        vcpus,
        memory_mib: memory_bytes / (1024 * 1024),
        devices,
    })
}

impl Hypervisor for CloudHypervisor {
    fn kind(&self) -> BackendKind {
        BackendKind::CloudHypervisor
    }

    /// Refuses TCG (Cloud Hypervisor needs KVM), TDX (its TDX build is
    /// disabled since v53), user-mode networking, firmware+kernel, and
    /// SEV-SNP without IGVM. Does not probe the host.
    fn check(&self, spec: &VmSpec) -> Result<(), VmmError> {
        check_spec(spec)
    }

    fn launch(&self, spec: &VmSpec) -> Result<VmHandle, VmmError> {
        self.launch_with_timeout(spec, Duration::from_millis(DEFAULT_SOCKET_TIMEOUT_MS))
    }

    fn adopt(&self, handle: &VmHandle) -> Result<VmInfo, VmmError> {
        if handle.backend != BackendKind::CloudHypervisor {
            return Err(VmmError::InvalidSpec(format!(
                "handle of VM {} is for {}",
                handle.id,
                handle.backend.as_str()
            )));
        }
        self.info(handle)
    }

    fn info(&self, handle: &VmHandle) -> Result<VmInfo, VmmError> {
        parse_info(&self.client(handle)?.get_json("vm.info")?)
    }

    fn counters(&self, handle: &VmHandle) -> Result<VmCounters, VmmError> {
        let body = self.client(handle)?.call("GET", "vm.counters", None)?;
        serde_json::from_slice(&body).map_err(|e| decode_error("vm.counters", e))
    }

    fn pause(&self, handle: &VmHandle) -> Result<(), VmmError> {
        self.client(handle)?.put("vm.pause", None).map(drop)
    }

    fn resume(&self, handle: &VmHandle) -> Result<(), VmmError> {
        self.client(handle)?.put("vm.resume", None).map(drop)
    }

    fn reboot(&self, handle: &VmHandle) -> Result<(), VmmError> {
        self.client(handle)?.put("vm.reboot", None).map(drop)
    }

    /// ACPI power button (`vm.power-button`); `vm.shutdown` would stop the
    /// vCPUs without asking the guest.
    fn shutdown(&self, handle: &VmHandle) -> Result<(), VmmError> {
        self.client(handle)?.put("vm.power-button", None).map(drop)
    }

    /// `vm.delete`, `vmm.shutdown`, then SIGKILL if the process is still
    /// there after [`SHUTDOWN_GRACE_MS`]. API errors on the way are logged,
    /// not returned: the goal is that nothing keeps running.
    fn delete(&self, handle: &VmHandle) -> Result<(), VmmError> {
        if handle.is_alive() {
            let client = ApiClient::new(&handle.api_socket)
                .with_timeout(Duration::from_millis(SHUTDOWN_GRACE_MS));
            if let Err(e) = client.put("vm.delete", None) {
                tracing::warn!(vm = %handle.id, error = %e, "vm.delete failed");
            }
            // The VMM may exit before answering: a transport error is expected.
            if let Err(e) = client.put("vmm.shutdown", None) {
                tracing::debug!(vm = %handle.id, error = %e, "vmm.shutdown");
            }
            if !wait_until_gone(handle, Duration::from_millis(SHUTDOWN_GRACE_MS)) {
                tracing::warn!(vm = %handle.id, pid = handle.pid, "cloud-hypervisor lingers; SIGKILL");
                if !kill_and_wait(handle) {
                    return Err(VmmError::Api {
                        backend: BACKEND,
                        operation: "delete".into(),
                        reason: format!("process {} survived SIGKILL", handle.pid),
                    });
                }
            }
        }
        // Cloud Hypervisor leaves the lock file of its API socket
        // (`<socket>.lock`) behind; it is only meaningful while it runs.
        let mut lock = handle.api_socket.clone().into_os_string();
        lock.push(".lock");
        let _ = std::fs::remove_file(lock);
        match std::fs::remove_file(&handle.api_socket) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(VmmError::io(&handle.api_socket, e)),
        }
    }

    /// `vm.add-disk` or `vm.add-device` (VFIO) with an id chosen here (the
    /// first free `diskN` / `vfioN`), so the id is known even when the VM is
    /// not booted and Cloud Hypervisor answers 204 without a body.
    fn add_device(&self, handle: &VmHandle, device: &Device) -> Result<String, VmmError> {
        let client = self.client(handle)?;
        let (endpoint, id, body) = match device {
            Device::Disk(disk) => {
                let id = Self::free_id(&client, "disk")?;
                ("vm.add-disk", id.clone(), disk_config(disk, &id)?)
            }
            Device::Vfio(vfio) => {
                let id = Self::free_id(&client, "vfio")?;
                ("vm.add-device", id.clone(), vfio_config(vfio, &id)?)
            }
        };
        let answer = client.put(endpoint, Some(&body))?;
        if answer.is_empty() {
            return Ok(id);
        }
        let info: Value = serde_json::from_slice(&answer).map_err(|e| decode_error(endpoint, e))?;
        info.get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| decode_error(endpoint, "PciDeviceInfo without an id"))
    }

    fn remove_device(&self, handle: &VmHandle, device_id: &str) -> Result<(), VmmError> {
        self.client(handle)?
            .put("vm.remove-device", Some(&json!({ "id": device_id })))
            .map(drop)
    }
}
