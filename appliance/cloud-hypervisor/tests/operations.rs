//! Every operation of the trait, end to end, against a fake Cloud Hypervisor
//! API server that answers like v54 (JSON, chunked, error bodies).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use dc_vmm::{
    process, BackendKind, Device, Disk, Hypervisor, VfioDevice, VmHandle, VmState, VmmError,
};
use dc_vmm_ch::CloudHypervisor;
use serde_json::{json, Value};

/// What the fake VMM remembers.
struct FakeState {
    state: &'static str,
    disks: Vec<String>,
    devices: Vec<String>,
    /// Exit (kill the stand-in process) on vmm.shutdown, like the real one.
    exit_on_shutdown: bool,
    pid: u32,
    start_ticks: u64,
}

fn info_json(s: &FakeState) -> String {
    json!({
        "state": s.state,
        "memory_actual_size": 536870912u64,
        "config": {
            "cpus": { "boot_vcpus": 2, "max_vcpus": 2 },
            "memory": { "size": 536870912u64 },
            "payload": { "kernel": "/k", "cmdline": "console=ttyS0" },
            "disks": s.disks.iter().map(|id| json!({ "path": format!("/d/{id}"), "id": id })).collect::<Vec<_>>(),
            "devices": s.devices.iter().map(|id| json!({ "path": "/sys/x", "id": id })).collect::<Vec<_>>(),
            "vsock": { "cid": 42, "socket": "/run/v.sock", "id": "vsock0" },
            "serial": { "mode": "File", "file": "/run/serial.log" },
            "console": { "mode": "Off" }
        },
        "device_tree": { "__serial": { "id": "__serial", "children": [] } }
    })
    .to_string()
}

fn respond(state: &Arc<Mutex<FakeState>>, req: &Recorded) -> Vec<u8> {
    let mut s = state.lock().unwrap();
    let endpoint = req
        .path
        .strip_prefix("/api/v1/")
        .unwrap_or(&req.path)
        .to_string();
    let body: Value = serde_json::from_str(&req.body).unwrap_or(Value::Null);
    match (req.method.as_str(), endpoint.as_str()) {
        ("GET", "vm.info") => json_ok(&info_json(&s)),
        ("GET", "vm.counters") => {
            chunked_ok(r#"{"disk0":{"read_bytes":4096,"write_ops":3},"net0":{"rx_bytes":10}}"#)
        }
        ("PUT", "vm.pause") if s.state == "Running" => {
            s.state = "Paused";
            no_content()
        }
        ("PUT", "vm.resume") if s.state == "Paused" => {
            s.state = "Running";
            no_content()
        }
        ("PUT", "vm.pause") | ("PUT", "vm.resume") => error(
            405,
            "Method Not Allowed",
            "Error from API: The VM could not be paused/resumed: InvalidStateTransition",
        ),
        ("PUT", "vm.reboot") => no_content(),
        ("PUT", "vm.power-button") => {
            s.state = "Shutdown";
            no_content()
        }
        ("PUT", "vm.add-disk") => {
            let id = body["id"].as_str().unwrap_or("_disk9").to_string();
            s.disks.push(id.clone());
            json_ok(&json!({ "id": id, "bdf": "0000:00:06.0" }).to_string())
        }
        ("PUT", "vm.add-device") => {
            let id = body["id"].as_str().unwrap_or("_vfio9").to_string();
            s.devices.push(id.clone());
            chunked_ok(&json!({ "id": id, "bdf": "0000:00:07.0" }).to_string())
        }
        ("PUT", "vm.remove-device") => {
            let id = body["id"].as_str().unwrap_or_default().to_string();
            let before = s.disks.len() + s.devices.len();
            s.disks.retain(|d| *d != id);
            s.devices.retain(|d| *d != id);
            if s.disks.len() + s.devices.len() < before {
                no_content()
            } else {
                error(
                    404,
                    "Not Found",
                    &format!(
                        "Error from API: The device could not be removed: unknown device {id}"
                    ),
                )
            }
        }
        ("PUT", "vm.delete") => no_content(),
        ("PUT", "vmm.shutdown") => {
            if s.exit_on_shutdown {
                process::signal_if_same(s.pid, s.start_ticks, libc::SIGKILL);
                Vec::new() // the real VMM may exit before answering
            } else {
                no_content()
            }
        }
        _ => error(404, "Not Found", "Error from API: unknown endpoint"),
    }
}

/// A stand-in VMM process (`sleep`) and a fake API on `dir/ch.sock`.
fn fake_vmm(dir: &Path, exit_on_shutdown: bool) -> (VmHandle, Log, Arc<Mutex<FakeState>>) {
    let mut cmd = Command::new("sleep");
    cmd.arg("120");
    let spawned = process::spawn_detached(cmd, &dir.join("cloud-hypervisor.log")).unwrap();
    let socket = dir.join("ch.sock");
    let state = Arc::new(Mutex::new(FakeState {
        state: "Running",
        disks: vec!["disk0".into()],
        devices: vec![],
        exit_on_shutdown,
        pid: spawned.pid,
        start_ticks: spawned.start_ticks,
    }));
    let st = state.clone();
    let log = serve(&socket, move |req| respond(&st, req));
    let handle = VmHandle {
        id: "c42".into(),
        backend: BackendKind::CloudHypervisor,
        pid: spawned.pid,
        pid_start_ticks: spawned.start_ticks,
        api_socket: socket,
        run_dir: dir.to_path_buf(),
    };
    (handle, log, state)
}

fn endpoints(log: &Log) -> Vec<String> {
    log.lock()
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn ch() -> CloudHypervisor {
    CloudHypervisor::new("/nonexistent/cloud-hypervisor")
}

fn wait_dead(handle: &VmHandle) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while handle.is_alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn info_counters_and_power_operations() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, log, _state) = fake_vmm(dir.path(), true);
    let ch = ch();

    let info = ch.info(&handle).unwrap();
    assert_eq!(info.state, VmState::Running);
    assert_eq!((info.vcpus, info.memory_mib), (2, 512));
    assert_eq!(
        info.devices,
        vec!["disk0".to_string(), "vsock0".to_string()]
    );

    let counters = ch.counters(&handle).unwrap();
    assert_eq!(counters["disk0"]["read_bytes"], 4096);
    assert_eq!(counters["net0"]["rx_bytes"], 10);

    ch.pause(&handle).unwrap();
    assert_eq!(ch.info(&handle).unwrap().state, VmState::Paused);
    // Cloud Hypervisor's error body reaches the caller.
    let err = ch.pause(&handle).unwrap_err();
    match &err {
        VmmError::Api {
            operation, reason, ..
        } => {
            assert_eq!(operation, "vm.pause");
            assert!(
                reason.contains("405") && reason.contains("InvalidStateTransition"),
                "{reason}"
            );
        }
        other => panic!("expected an API error, got {other}"),
    }
    ch.resume(&handle).unwrap();
    ch.reboot(&handle).unwrap();
    ch.shutdown(&handle).unwrap();
    assert_eq!(ch.info(&handle).unwrap().state, VmState::Shutdown);

    let seen = endpoints(&log);
    assert!(
        seen.contains(&"PUT /api/v1/vm.power-button".to_string()),
        "shutdown asks the guest: {seen:?}"
    );
    assert!(!seen.contains(&"PUT /api/v1/vm.shutdown".to_string()));
    // Requests carry what CH's micro_http expects.
    let first = log.lock().unwrap()[0].clone();
    assert!(first
        .headers
        .iter()
        .any(|(k, v)| k == "Host" && v == "localhost"));
    ch.delete(&handle).unwrap();
}

#[test]
fn hot_plug_and_unplug() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, log, _state) = fake_vmm(dir.path(), true);
    let ch = ch();

    let disk = Disk {
        path: dir.path().join("extra.qcow2"),
        base: Some("/base.qcow2".into()),
        readonly: true,
        size_gib: None,
    };
    assert_eq!(
        ch.add_device(&handle, &Device::Disk(disk)).unwrap(),
        "disk1",
        "disk0 is taken"
    );
    let body: Value = serde_json::from_str(&log.lock().unwrap().last().unwrap().body).unwrap();
    assert_eq!(body["id"], "disk1");
    assert_eq!(body["readonly"], true);
    assert_eq!(body["backing_files"], true);
    // Explicit, or a reboot of the real VMM drops backing_files.
    assert_eq!(body["image_type"], "Qcow2");

    // The PciDeviceInfo of add-device comes back chunked.
    let gpu = VfioDevice {
        sysfs_path: "/sys/bus/pci/devices/0000:41:00.0".into(),
    };
    assert_eq!(ch.add_device(&handle, &Device::Vfio(gpu)).unwrap(), "vfio0");
    let last = log.lock().unwrap().last().unwrap().clone();
    assert_eq!(last.path, "/api/v1/vm.add-device");
    assert_eq!(
        serde_json::from_str::<Value>(&last.body).unwrap()["path"],
        "/sys/bus/pci/devices/0000:41:00.0"
    );

    assert_eq!(
        ch.info(&handle).unwrap().devices,
        vec!["disk0", "disk1", "vfio0", "vsock0"]
    );
    ch.remove_device(&handle, "vfio0").unwrap();
    let err = ch.remove_device(&handle, "vfio0").unwrap_err().to_string();
    assert!(
        err.contains("404") && err.contains("unknown device vfio0"),
        "{err}"
    );
    ch.delete(&handle).unwrap();
}

#[test]
fn adopt_finds_a_live_vmm_and_reports_a_dead_one_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, _log, _state) = fake_vmm(dir.path(), true);
    let ch = ch();
    assert_eq!(ch.adopt(&handle).unwrap().state, VmState::Running);

    let qemu_handle = VmHandle {
        backend: BackendKind::Qemu,
        ..handle.clone()
    };
    assert!(ch.adopt(&qemu_handle).is_err());

    assert!(process::signal_if_same(
        handle.pid,
        handle.pid_start_ticks,
        libc::SIGKILL
    ));
    wait_dead(&handle);
    assert!(matches!(ch.adopt(&handle), Err(VmmError::Gone { pid, .. }) if pid == handle.pid));
    assert!(matches!(ch.info(&handle), Err(VmmError::Gone { .. })));
    assert!(matches!(ch.pause(&handle), Err(VmmError::Gone { .. })));
    // Deleting a VM whose VMM is already gone only cleans up.
    ch.delete(&handle).unwrap();
    assert!(!handle.api_socket.exists());
}

#[test]
fn delete_asks_politely_then_the_vmm_exits() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, log, _state) = fake_vmm(dir.path(), true);
    let started = Instant::now();
    ch().delete(&handle).unwrap();
    assert!(!handle.is_alive());
    assert!(!handle.api_socket.exists());
    assert!(
        started.elapsed() < Duration::from_millis(dc_vmm_ch::SHUTDOWN_GRACE_MS),
        "no SIGKILL wait was needed"
    );
    assert_eq!(
        endpoints(&log),
        vec!["PUT /api/v1/vm.delete", "PUT /api/v1/vmm.shutdown"]
    );
}

#[test]
fn delete_kills_a_vmm_that_lingers() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, log, _state) = fake_vmm(dir.path(), false);
    ch().delete(&handle).unwrap();
    assert!(!handle.is_alive(), "SIGKILL after the grace period");
    assert_eq!(
        endpoints(&log),
        vec!["PUT /api/v1/vm.delete", "PUT /api/v1/vmm.shutdown"]
    );
}

#[test]
fn garbage_answers_are_transport_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("sleep");
    cmd.arg("120");
    let spawned = process::spawn_detached(cmd, &dir.path().join("log")).unwrap();
    let socket = dir.path().join("ch.sock");
    serve(&socket, |req| {
        if req.path.ends_with("vm.info") {
            json_ok("{not json")
        } else {
            b"SSH-2.0-OpenSSH\r\n".to_vec()
        }
    });
    let handle = VmHandle {
        id: "c42".into(),
        backend: BackendKind::CloudHypervisor,
        pid: spawned.pid,
        pid_start_ticks: spawned.start_ticks,
        api_socket: socket,
        run_dir: dir.path().to_path_buf(),
    };
    assert!(matches!(
        ch().info(&handle),
        Err(VmmError::Transport { .. })
    ));
    assert!(matches!(
        ch().pause(&handle),
        Err(VmmError::Transport { .. })
    ));
    process::signal_if_same(spawned.pid, spawned.start_ticks, libc::SIGKILL);
}
