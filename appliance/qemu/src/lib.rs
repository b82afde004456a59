//! QEMU behind the appliance's [`dc_vmm::Hypervisor`] trait.
//!
//! [`command_line`] turns a [`VmSpec`] into QEMU arguments (a pure function,
//! golden-tested); [`Qemu`] launches that detached, drives the VM over QMP
//! ([`qmp::QmpClient`]) and re-adopts it after a supervisor restart.
//!
//! What is exercised where: regular VMs with software emulation (TCG) are
//! booted for real by this crate's tests. Confidential (TDX, SEV-SNP) and GPU
//! (VFIO) launches are covered by golden command-line tests only: the test
//! machines have neither the CPUs nor the devices to run them.

mod cmdline;
pub mod qmp;

pub use cmdline::{
    command_line, cpu_model, disk_format, disk_id, hotplug_port_id, vfio_bdf, RunPaths, HOTPLUG_PORTS,
    MAX_SOCKET_PATH_BYTES, SNP_CPU_MODEL, SNP_SEV_FEATURES,
};
pub use dc_vmm::disk::{create_overlay, detect_format};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dc_vmm::disk::find_on_path;
use dc_vmm::process::{is_same_process_alive, signal_if_same, spawn_detached};
use dc_vmm::{
    BackendKind, Confidential, Device, Disk, Hypervisor, VmCounters, VmHandle, VmInfo, VmSpec, VmState, VmmError,
};
use serde_json::{json, Value};

use qmp::QmpClient;

const BACKEND: &str = "qemu";

/// How long launch waits for QEMU to open its QMP socket.
pub const LAUNCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `delete` waits after `quit` (and again after SIGKILL).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The QEMU backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qemu {
    /// `qemu-system-x86_64`.
    pub binary: PathBuf,
    /// `qemu-img`, for disk overlays.
    pub qemu_img: PathBuf,
    /// Whether `/dev/kvm` can be opened by this process.
    pub kvm_available: bool,
}

impl Qemu {
    /// Finds `qemu-system-x86_64` and `qemu-img` on `PATH` and checks that
    /// `/dev/kvm` opens read-write.
    pub fn detect() -> Result<Self, VmmError> {
        let find = |name: &str| {
            find_on_path(name)
                .ok_or_else(|| VmmError::Unsupported { backend: BACKEND, reason: format!("{name} not found on PATH") })
        };
        Ok(Qemu {
            binary: find("qemu-system-x86_64")?,
            qemu_img: find("qemu-img")?,
            kvm_available: std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok(),
        })
    }

    fn connect(&self, handle: &VmHandle) -> Result<QmpClient, VmmError> {
        if !handle.is_alive() {
            return Err(VmmError::Gone { id: handle.id.clone(), pid: handle.pid });
        }
        QmpClient::connect(&handle.api_socket, qmp::DEFAULT_TIMEOUT)
    }

    fn execute(&self, handle: &VmHandle, command: &str, arguments: Option<Value>) -> Result<Value, VmmError> {
        self.connect(handle)?.execute(command, arguments)
    }

    /// Waits for the QMP socket of a just-started QEMU, giving up early if
    /// the process dies (its log then says why).
    fn wait_for_qmp(&self, spec: &VmSpec, paths: &RunPaths, pid: u32, start_ticks: u64) -> Result<QmpClient, VmmError> {
        let deadline = Instant::now() + LAUNCH_TIMEOUT;
        loop {
            if !is_same_process_alive(pid, start_ticks) {
                return Err(VmmError::Spawn {
                    program: self.binary.display().to_string(),
                    reason: format!("QEMU for {} exited during start: {}", spec.id, log_tail(&paths.qemu_log)),
                });
            }
            if paths.qmp_socket.exists() {
                if let Ok(client) = QmpClient::connect(&paths.qmp_socket, qmp::DEFAULT_TIMEOUT) {
                    return Ok(client);
                }
            }
            if Instant::now() >= deadline {
                return Err(VmmError::Timeout {
                    backend: BACKEND,
                    socket: paths.qmp_socket.clone(),
                    timeout_ms: LAUNCH_TIMEOUT.as_millis() as u64,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn launch_started(
        &self,
        spec: &VmSpec,
        paths: &RunPaths,
        pid: u32,
        start_ticks: u64,
    ) -> Result<VmHandle, VmmError> {
        let mut client = self.wait_for_qmp(spec, paths, pid, start_ticks)?;
        let status = client.execute("query-status", None)?;
        let state = vm_state(&status);
        if state != VmState::Running {
            return Err(VmmError::Api {
                backend: BACKEND,
                operation: "query-status".into(),
                reason: format!("expected the new VM running, found {status}"),
            });
        }
        Ok(VmHandle {
            id: spec.id.clone(),
            backend: BackendKind::Qemu,
            pid,
            pid_start_ticks: start_ticks,
            api_socket: paths.qmp_socket.clone(),
            run_dir: spec.run_dir.clone(),
        })
    }
}

/// The last lines of QEMU's log, for error messages (its tail: the log is
/// appended to across launches).
fn log_tail(log: &Path) -> String {
    let bytes = dc_vmm::read_log_tail(log, 64 * 1024).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    if tail.is_empty() {
        "(no output)".into()
    } else {
        tail
    }
}

/// Maps QMP `query-status` to our run state.
pub fn vm_state(status: &Value) -> VmState {
    match status.get("status").and_then(Value::as_str).unwrap_or("") {
        "running" => VmState::Running,
        "prelaunch" | "inmigrate" => VmState::Created,
        "shutdown" | "guest-panicked" | "internal-error" => VmState::Shutdown,
        // paused, suspended, io-error, watchdog, debug, save-vm, ...
        _ if status.get("running").and_then(Value::as_bool) == Some(true) => VmState::Running,
        _ => VmState::Paused,
    }
}

/// Maps QMP `query-blockstats` to per-disk counters keyed by block node.
pub fn block_counters(blockstats: &Value) -> VmCounters {
    let mut counters = VmCounters::new();
    for entry in blockstats.as_array().into_iter().flatten() {
        let name = ["node-name", "device", "qdev"]
            .iter()
            .filter_map(|k| entry.get(*k).and_then(Value::as_str))
            .find(|s| !s.is_empty());
        let (Some(name), Some(stats)) = (name, entry.get("stats")) else { continue };
        let mut map = std::collections::BTreeMap::new();
        for (ours, theirs) in [
            ("read_bytes", "rd_bytes"),
            ("write_bytes", "wr_bytes"),
            ("read_ops", "rd_operations"),
            ("write_ops", "wr_operations"),
            ("flush_ops", "flush_operations"),
        ] {
            if let Some(v) = stats.get(theirs).and_then(Value::as_u64) {
                map.insert(ours.to_string(), v);
            }
        }
        counters.insert(name.to_string(), map);
    }
    counters
}

/// Whether the guest platform this host offers can run `spec`'s
/// confidential mode (KVM module parameters).
fn confidential_supported(confidential: &Confidential) -> Result<(), VmmError> {
    let param = |path: &str| std::fs::read_to_string(path).map(|s| matches!(s.trim(), "Y" | "1")).unwrap_or(false);
    let (ok, what) = match confidential {
        Confidential::None => return Ok(()),
        Confidential::Tdx { .. } => (param("/sys/module/kvm_intel/parameters/tdx"), "TDX (kvm_intel tdx=Y)"),
        Confidential::SevSnp { .. } => (param("/sys/module/kvm_amd/parameters/sev_snp"), "SEV-SNP (kvm_amd sev_snp=Y)"),
    };
    if ok {
        Ok(())
    } else {
        Err(VmmError::Unsupported { backend: BACKEND, reason: format!("this host's KVM does not offer {what}") })
    }
}

impl Hypervisor for Qemu {
    fn kind(&self) -> BackendKind {
        BackendKind::Qemu
    }

    fn check(&self, spec: &VmSpec) -> Result<(), VmmError> {
        command_line(spec, &RunPaths::for_spec(spec))?;
        if spec.accel == dc_vmm::Accel::Kvm && !self.kvm_available {
            return Err(VmmError::Unsupported { backend: BACKEND, reason: "/dev/kvm is not available".into() });
        }
        confidential_supported(&spec.confidential)?;
        if spec.vsock_cid.is_some() && !Path::new("/dev/vhost-vsock").exists() {
            return Err(VmmError::Unsupported { backend: BACKEND, reason: "/dev/vhost-vsock is missing".into() });
        }
        for device in &spec.vfio {
            if !device.sysfs_path.join("iommu_group").exists() {
                return Err(VmmError::Unsupported {
                    backend: BACKEND,
                    reason: format!("{} has no IOMMU group", device.sysfs_path.display()),
                });
            }
        }
        if !self.binary.exists() {
            return Err(VmmError::Unsupported {
                backend: BACKEND,
                reason: format!("{} is missing", self.binary.display()),
            });
        }
        Ok(())
    }

    fn launch(&self, spec: &VmSpec) -> Result<VmHandle, VmmError> {
        self.check(spec)?;
        let paths = RunPaths::for_spec(spec);
        std::fs::create_dir_all(&spec.run_dir).map_err(|e| VmmError::io(&spec.run_dir, e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&spec.run_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| VmmError::io(&spec.run_dir, e))?;
        }
        dc_vmm::disk::create_missing_overlays(Some(&self.qemu_img), &spec.disks)?;
        // A fresh serial log per launch (the last one becomes serial.log.1),
        // so a readiness check never finds the previous boot's marker; QEMU
        // appends to it from then on.
        dc_vmm::rotate_log(&paths.serial_log).map_err(|e| VmmError::io(&paths.serial_log, e))?;
        // A socket or pidfile left by an earlier run of this VM would make the
        // wait below connect to nothing, or mislead a reader.
        for stale in [&paths.qmp_socket, &paths.pidfile] {
            match std::fs::remove_file(stale) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(VmmError::io(stale, e)),
            }
        }
        let args = command_line(spec, &paths)?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(&args);
        let spawned = spawn_detached(cmd, &paths.qemu_log)?;
        tracing::info!(vm = %spec.id, pid = spawned.pid, "QEMU started");
        match self.launch_started(spec, &paths, spawned.pid, spawned.start_ticks) {
            Ok(handle) => Ok(handle),
            Err(e) => {
                tracing::warn!(vm = %spec.id, pid = spawned.pid, error = %e, "QEMU launch failed; killing it");
                signal_if_same(spawned.pid, spawned.start_ticks, libc::SIGKILL);
                if wait_for_exit(spawned.pid, spawned.start_ticks, EXIT_TIMEOUT) {
                    Err(e)
                } else {
                    // The caller must not wipe the run directory under it nor
                    // hand its resources to another VM.
                    Err(survived_kill(&spec.id, spawned.pid, &e))
                }
            }
        }
    }

    fn adopt(&self, handle: &VmHandle) -> Result<VmInfo, VmmError> {
        if handle.backend != BackendKind::Qemu {
            return Err(VmmError::InvalidSpec(format!("handle of {} is for {}", handle.id, handle.backend.as_str())));
        }
        self.info(handle)
    }

    fn info(&self, handle: &VmHandle) -> Result<VmInfo, VmmError> {
        let mut client = self.connect(handle)?;
        let status = client.execute("query-status", None)?;
        let cpus = client.execute("query-cpus-fast", None)?;
        let memory = client.execute("query-memory-size-summary", None)?;
        let peripherals = client.execute("qom-list", Some(json!({"path": "/machine/peripheral"})))?;
        let vcpus = cpus.as_array().map_or(0, |a| u32::try_from(a.len()).unwrap_or(u32::MAX));
        let memory_bytes = memory.get("base-memory").and_then(Value::as_u64).unwrap_or(0)
            + memory.get("plugged-memory").and_then(Value::as_u64).unwrap_or(0);
        let mut devices: Vec<String> = peripherals
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
                kind.starts_with("child<") && kind != "child<pcie-root-port>"
            })
            .filter_map(|p| p.get("name").and_then(Value::as_str).map(str::to_string))
            .collect();
        devices.sort();
        Ok(VmInfo { state: vm_state(&status), vcpus, memory_mib: memory_bytes >> 20, devices })
    }

    fn counters(&self, handle: &VmHandle) -> Result<VmCounters, VmmError> {
        Ok(block_counters(&self.execute(handle, "query-blockstats", None)?))
    }

    fn pause(&self, handle: &VmHandle) -> Result<(), VmmError> {
        self.execute(handle, "stop", None).map(drop)
    }

    fn resume(&self, handle: &VmHandle) -> Result<(), VmmError> {
        self.execute(handle, "cont", None).map(drop)
    }

    fn reboot(&self, handle: &VmHandle) -> Result<(), VmmError> {
        self.execute(handle, "system_reset", None).map(drop)
    }

    fn shutdown(&self, handle: &VmHandle) -> Result<(), VmmError> {
        self.execute(handle, "system_powerdown", None).map(drop)
    }

    fn delete(&self, handle: &VmHandle) -> Result<(), VmmError> {
        if !handle.is_alive() {
            return Ok(());
        }
        match QmpClient::connect(&handle.api_socket, qmp::DEFAULT_TIMEOUT).and_then(|mut c| c.quit()) {
            Ok(()) => {
                if wait_for_exit(handle.pid, handle.pid_start_ticks, EXIT_TIMEOUT) {
                    return Ok(());
                }
                tracing::warn!(vm = %handle.id, pid = handle.pid, "QEMU ignored quit; killing it");
            }
            Err(e) => tracing::warn!(vm = %handle.id, pid = handle.pid, error = %e, "QMP quit failed; killing QEMU"),
        }
        signal_if_same(handle.pid, handle.pid_start_ticks, libc::SIGKILL);
        if wait_for_exit(handle.pid, handle.pid_start_ticks, EXIT_TIMEOUT) {
            Ok(())
        } else {
            Err(VmmError::Api {
                backend: BACKEND,
                operation: "delete".into(),
                reason: format!("process {} still alive {} ms after SIGKILL", handle.pid, EXIT_TIMEOUT.as_millis()),
            })
        }
    }

    fn add_device(&self, handle: &VmHandle, device: &Device) -> Result<String, VmmError> {
        let mut client = self.connect(handle)?;
        match device {
            Device::Disk(disk) => add_disk(&mut client, disk),
            Device::Vfio(vfio) => {
                let bdf = vfio_bdf(&vfio.sysfs_path)?;
                let id = format!("vfio-{}", bdf.replace([':', '.'], "-"));
                plug(&mut client, json!({"driver": "vfio-pci", "id": id, "host": bdf}))?;
                Ok(id)
            }
        }
    }

    fn remove_device(&self, handle: &VmHandle, device_id: &str) -> Result<(), VmmError> {
        let mut client = self.connect(handle)?;
        client.execute("device_del", Some(json!({"id": device_id})))?;
        // A hot-plugged disk also has a block node of the same name; it can
        // only go once the guest has released the device.
        if device_id.starts_with("disk") && node_exists(&mut client, device_id)? {
            let deadline = Instant::now() + EXIT_TIMEOUT;
            loop {
                match client.execute("blockdev-del", Some(json!({"node-name": device_id}))) {
                    Ok(_) => break,
                    Err(e) if Instant::now() >= deadline => return Err(e),
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }
        Ok(())
    }
}

fn node_exists(client: &mut QmpClient, node: &str) -> Result<bool, VmmError> {
    let nodes = client.execute("query-named-block-nodes", Some(json!({"flat": true})))?;
    Ok(nodes.as_array().into_iter().flatten().any(|n| n.get("node-name").and_then(Value::as_str) == Some(node)))
}

/// Hot-plugs a disk: a block node, then a virtio-blk device on a free port.
fn add_disk(client: &mut QmpClient, disk: &Disk) -> Result<String, VmmError> {
    if disk.base.is_some() && !disk.path.exists() {
        return Err(VmmError::InvalidSpec(format!(
            "overlay {} does not exist; create it before hot-plugging",
            disk.path.display()
        )));
    }
    let filename = disk
        .path
        .to_str()
        .ok_or_else(|| VmmError::InvalidSpec(format!("path {} is not UTF-8", disk.path.display())))?;
    let mut index = 0;
    let id = loop {
        let candidate = disk_id(index);
        if !node_exists(client, &candidate)? {
            break candidate;
        }
        index += 1;
    };
    client.execute(
        "blockdev-add",
        Some(json!({
            "driver": disk_format(disk),
            "node-name": id,
            "read-only": disk.readonly,
            "file": {"driver": "file", "filename": filename},
        })),
    )?;
    if let Err(e) = plug(client, json!({"driver": "virtio-blk-pci", "id": id, "drive": id})) {
        let _ = client.execute("blockdev-del", Some(json!({"node-name": id})));
        return Err(e);
    }
    Ok(id)
}

/// `device_add` on the first free hot-plug root port.
fn plug(client: &mut QmpClient, mut arguments: Value) -> Result<(), VmmError> {
    let mut last = None;
    for index in 0..HOTPLUG_PORTS {
        arguments["bus"] = json!(hotplug_port_id(index));
        match client.execute("device_add", Some(arguments.clone())) {
            Ok(_) => return Ok(()),
            // An occupied port; try the next one.
            Err(VmmError::Api { reason, operation, backend })
                if reason.contains("in use") || reason.contains("not available") || reason.contains("full") =>
            {
                last = Some(VmmError::Api { reason, operation, backend });
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| VmmError::Api {
        backend: BACKEND,
        operation: "device_add".into(),
        reason: "no hot-plug port configured".into(),
    }))
}

/// The error of a failed launch whose QEMU is still alive after SIGKILL.
fn survived_kill(vm: &str, pid: u32, cause: &VmmError) -> VmmError {
    VmmError::Api {
        backend: BACKEND,
        operation: "launch".into(),
        reason: format!(
            "launch of {vm} failed ({cause}) and QEMU process {pid} is STILL ALIVE {} ms after SIGKILL; \
             it may still use the VM's run directory and resources",
            EXIT_TIMEOUT.as_millis()
        ),
    }
}

/// Polls until the process is gone; true if it went within `timeout`.
fn wait_for_exit(pid: u32, start_ticks: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while is_same_process_alive(pid, start_ticks) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_from_query_status() {
        assert_eq!(vm_state(&json!({"running": true, "status": "running"})), VmState::Running);
        assert_eq!(vm_state(&json!({"running": false, "status": "paused"})), VmState::Paused);
        assert_eq!(vm_state(&json!({"running": false, "status": "shutdown"})), VmState::Shutdown);
        assert_eq!(vm_state(&json!({"running": false, "status": "prelaunch"})), VmState::Created);
        assert_eq!(vm_state(&json!("garbage")), VmState::Paused);
    }

    #[test]
    fn a_launch_whose_qemu_survives_sigkill_says_so() {
        let cause = VmmError::Timeout { backend: BACKEND, socket: "/r/qmp.sock".into(), timeout_ms: 10 };
        let e = survived_kill("c7", 4242, &cause).to_string();
        assert!(e.contains("STILL ALIVE") && e.contains("4242") && e.contains("c7"), "{e}");
        assert!(e.contains("did not open"), "the cause is kept: {e}");
    }

    #[test]
    fn blockstats_become_counters() {
        let stats = json!([
            {"device": "", "node-name": "disk0", "qdev": "/machine/peripheral/disk0/virtio-backend",
             "stats": {"rd_bytes": 512, "wr_bytes": 1024, "rd_operations": 1, "wr_operations": 2, "flush_operations": 3}},
            {"device": "", "stats": {"rd_bytes": 1}},
            "junk"
        ]);
        let c = block_counters(&stats);
        assert_eq!(c.len(), 1);
        assert_eq!(c["disk0"]["read_bytes"], 512);
        assert_eq!(c["disk0"]["flush_ops"], 3);
    }
}
