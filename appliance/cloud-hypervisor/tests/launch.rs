//! `launch` with a fake `cloud-hypervisor` (a shell script that records its
//! arguments and then sleeps; the test serves the API socket it was given),
//! and the refusal, timeout and failure paths: on error nothing keeps running.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use dc_vmm::{
    process, Accel, Confidential, Hypervisor, Network, VmSpec, VmmError, SNP_POLICY_DEBUG,
};
use dc_vmm_ch::CloudHypervisor;
use serde_json::Value;

/// Writes a fake `cloud-hypervisor` into `dir`: it writes its pid and its
/// arguments beside itself, then runs `then` (a shell fragment).
fn fake_binary(dir: &Path, then: &str) -> PathBuf {
    let path = dir.join("cloud-hypervisor");
    let script = format!(
        "#!/bin/sh\nhere=$(dirname \"$0\")\necho $$ > \"$here/pid\"\necho \"$@\" > \"$here/args.tmp\"\nmv \"$here/args.tmp\" \"$here/args\"\n{then}\n"
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Waits for the fake binary's argument file, then serves the socket named
/// in `--api-socket path=...` with `respond`.
fn serve_when_started(
    bin_dir: PathBuf,
    respond: impl Fn(&Recorded) -> Vec<u8> + Send + 'static,
) -> std::sync::mpsc::Receiver<Log> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let args = loop {
            if let Ok(a) = std::fs::read_to_string(bin_dir.join("args")) {
                break a;
            }
            assert!(
                Instant::now() < deadline,
                "fake cloud-hypervisor never started"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let socket = args
            .trim()
            .strip_prefix("--api-socket path=")
            .expect("--api-socket path=...")
            .to_string();
        let listener = UnixListener::bind(&socket).unwrap();
        let _ = tx.send(serve_listener(listener, respond));
    });
    rx
}

fn pid_of_fake(bin_dir: &Path) -> Option<u32> {
    std::fs::read_to_string(bin_dir.join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// True once the fake (if it got as far as writing its pid) has exited.
fn wait_exited(pid: Option<u32>) -> bool {
    let Some(pid) = pid else { return true };
    let deadline = Instant::now() + Duration::from_secs(5);
    while process::start_ticks(pid).is_some() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// `spec` with its run directory made and a file at every disk path, so
/// launch takes them as existing disks and makes no overlay.
fn with_existing_disks(spec: VmSpec) -> VmSpec {
    std::fs::create_dir_all(&spec.run_dir).unwrap();
    for d in &spec.disks {
        std::fs::write(&d.path, b"").unwrap();
    }
    spec
}

fn tap_spec(run_dir: &Path) -> VmSpec {
    with_existing_disks(tap_vsock_spec(run_dir))
}

#[test]
fn launch_creates_and_boots_then_delete_stops_it() {
    let bin = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let run_dir = run.path().join("c42");
    let ch = CloudHypervisor::new(fake_binary(bin.path(), "exec sleep 120"));
    let spec = tap_spec(&run_dir);
    let logs = serve_when_started(bin.path().to_path_buf(), |req| {
        if req.path.ends_with("vmm.shutdown") {
            Vec::new()
        } else {
            no_content()
        }
    });

    let handle = ch
        .launch_with_timeout(&spec, Duration::from_secs(10))
        .unwrap();
    let log = logs.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(Some(handle.pid), pid_of_fake(bin.path()));
    assert!(handle.is_alive());
    assert_eq!(handle.api_socket, run_dir.join("ch.sock"));
    assert_eq!(
        std::fs::read_to_string(bin.path().join("args"))
            .unwrap()
            .trim(),
        format!("--api-socket path={}", run_dir.join("ch.sock").display())
    );
    {
        let requests = log.lock().unwrap();
        let seen: Vec<_> = requests
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert_eq!(seen, ["PUT /api/v1/vm.create", "PUT /api/v1/vm.boot"]);
        let sent: Value = serde_json::from_str(&requests[0].body).unwrap();
        assert_eq!(sent, dc_vmm_ch::vm_config(&spec).unwrap());
        assert!(requests[0]
            .headers
            .iter()
            .any(|(k, v)| k == "Content-Type" && v == "application/json"));
    }
    assert!(run_dir.join("cloud-hypervisor.log").exists());

    // The fake does not exit on vmm.shutdown: delete falls back to SIGKILL.
    ch.delete(&handle).unwrap();
    assert!(!handle.is_alive());
    assert!(!handle.api_socket.exists());
}

/// The open flags (octal `flags:` of /proc/PID/fdinfo/FD).
fn fd_flags(pid: u32, fd: u32) -> u32 {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
    let flags = info.lines().find_map(|l| l.strip_prefix("flags:")).unwrap();
    u32::from_str_radix(flags.trim(), 8).unwrap()
}

#[test]
fn launch_makes_sized_overlays_and_appends_the_serial_console_to_its_own_log() {
    let Some(qemu_img) = dc_vmm::disk::find_on_path("qemu-img") else {
        eprintln!("SKIPPED: qemu-img is not installed");
        return;
    };
    let bin = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let run_dir = run.path().join("c42");
    let base = run.path().join("base.raw");
    std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
    let ch = CloudHypervisor::new(fake_binary(
        bin.path(),
        "echo guest-console-line; echo vmm-message >&2; exec sleep 120",
    ))
    .with_qemu_img(Some(qemu_img.clone()));
    let mut spec = tap_vsock_spec(&run_dir);
    spec.disks[0].base = Some(base);
    spec.disks[0].size_gib = Some(2);
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::write(&spec.disks[1].path, b"").unwrap();
    std::fs::write(spec.serial_log(), "previous boot\n").unwrap();
    let _logs = serve_when_started(bin.path().to_path_buf(), |req| {
        if req.path.ends_with("vmm.shutdown") {
            Vec::new()
        } else {
            no_content()
        }
    });
    let handle = ch
        .launch_with_timeout(&spec, Duration::from_secs(10))
        .unwrap();

    let info = std::process::Command::new(&qemu_img)
        .args(["info", "--output=json", "-f", "qcow2"])
        .arg(&spec.disks[0].path)
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["virtual-size"], 2u64 << 30, "{info}");

    // stdout (the serial console) and stderr (the VMM's messages) apart,
    // both appended; the previous boot's console log moved to serial.log.1.
    assert_eq!(
        fd_flags(handle.pid, 1) & libc::O_APPEND as u32,
        libc::O_APPEND as u32
    );
    assert_eq!(
        fd_flags(handle.pid, 2) & libc::O_APPEND as u32,
        libc::O_APPEND as u32
    );
    assert_eq!(
        std::fs::read_to_string(spec.serial_log()).unwrap(),
        "guest-console-line\n"
    );
    assert_eq!(
        std::fs::read_to_string(dc_vmm::rotated_path(&spec.serial_log())).unwrap(),
        "previous boot\n"
    );
    let vmm_log = std::fs::read_to_string(CloudHypervisor::vmm_log(&spec)).unwrap();
    assert!(
        vmm_log.contains("vmm-message") && !vmm_log.contains("guest-console"),
        "{vmm_log}"
    );
    ch.delete(&handle).unwrap();

    // A missing overlay without qemu-img is refused before anything starts.
    let other = tempfile::tempdir().unwrap();
    let mut spec = tap_vsock_spec(&other.path().join("c43"));
    spec.disks.truncate(1);
    let err = ch
        .clone()
        .with_qemu_img(None)
        .launch_with_timeout(&spec, Duration::from_secs(1))
        .unwrap_err();
    assert!(err.to_string().contains("no qemu-img"), "{err}");
}

#[test]
fn a_vmm_that_never_opens_its_socket_times_out_and_is_killed() {
    let bin = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let ch = CloudHypervisor::new(fake_binary(bin.path(), "exec sleep 120"));
    let err = ch
        .launch_with_timeout(&tap_spec(run.path()), Duration::from_millis(300))
        .unwrap_err();
    assert!(
        matches!(
            err,
            VmmError::Timeout {
                timeout_ms: 300,
                ..
            }
        ),
        "{err}"
    );
    assert!(wait_exited(pid_of_fake(bin.path())), "the VMM was killed");
}

#[test]
fn a_refused_vm_create_quotes_the_error_and_kills_the_vmm() {
    let bin = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let ch = CloudHypervisor::new(fake_binary(bin.path(), "exec sleep 120"));
    let _logs = serve_when_started(bin.path().to_path_buf(), |req| {
        if req.path.ends_with("vm.create") {
            error(
                400,
                "Bad Request",
                "Error from API: The VM could not be created: Invalid disk path",
            )
        } else {
            no_content()
        }
    });
    let err = ch
        .launch_with_timeout(&tap_spec(run.path()), Duration::from_secs(10))
        .unwrap_err();
    match &err {
        VmmError::Api {
            operation, reason, ..
        } => {
            assert_eq!(operation, "vm.create");
            assert!(
                reason.contains("400") && reason.contains("Invalid disk path"),
                "{reason}"
            );
        }
        other => panic!("expected an API error, got {other}"),
    }
    assert!(wait_exited(pid_of_fake(bin.path())));
}

#[test]
fn a_vmm_that_exits_at_once_is_a_spawn_error_with_its_log() {
    let bin = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let ch = CloudHypervisor::new(fake_binary(
        bin.path(),
        "sleep 0.2; echo 'Error: /dev/kvm: Permission denied' >&2; exit 1",
    ));
    let err = ch
        .launch_with_timeout(&tap_spec(run.path()), Duration::from_secs(10))
        .unwrap_err();
    assert!(matches!(err, VmmError::Spawn { .. }), "{err}");
    assert!(
        err.to_string().contains("/dev/kvm: Permission denied"),
        "{err}"
    );
}

#[test]
fn a_missing_binary_is_a_spawn_error() {
    let run = tempfile::tempdir().unwrap();
    let err = CloudHypervisor::new("/nonexistent/cloud-hypervisor")
        .launch(&tap_spec(run.path()))
        .unwrap_err();
    assert!(matches!(err, VmmError::Spawn { .. }), "{err}");
}

#[test]
fn check_refuses_what_cloud_hypervisor_cannot_run_before_spawning() {
    let run = tempfile::tempdir().unwrap();
    let ch = CloudHypervisor::new("/nonexistent/cloud-hypervisor");
    let base = base_spec(run.path());
    assert!(ch.check(&base).is_ok());
    assert!(ch.check(&snp_spec(run.path())).is_ok());
    assert!(ch.check(&gpu_spec(run.path())).is_ok());
    let firmware_and_kernel = VmSpec {
        boot: dc_vmm::Boot::Kernel {
            kernel: "/k".into(),
            initrd: None,
            cmdline: String::new(),
            firmware: Some("/ovmf".into()),
        },
        ..base.clone()
    };
    let snp_without_igvm = VmSpec {
        confidential: Confidential::SevSnp {
            policy: 0x30000,
            host_data: [0; 32],
        },
        ..base.clone()
    };
    for (spec, needle) in [
        (
            VmSpec {
                accel: Accel::Tcg,
                ..base.clone()
            },
            "KVM",
        ),
        (
            VmSpec {
                confidential: Confidential::Tdx {
                    mrconfigid: [0; 48],
                },
                ..base.clone()
            },
            "TDX",
        ),
        (
            VmSpec {
                network: Network::User { forwards: vec![] },
                ..base.clone()
            },
            "user-mode",
        ),
        (firmware_and_kernel, "firmware"),
        (snp_without_igvm, "IGVM"),
    ] {
        let err = ch.check(&spec).unwrap_err();
        assert!(
            matches!(err, VmmError::Unsupported { .. }) && err.to_string().contains(needle),
            "{err} should mention {needle}"
        );
        // launch refuses the same way, before any process is started.
        let err = ch.launch(&spec).unwrap_err();
        assert!(matches!(err, VmmError::Unsupported { .. }), "{err}");
    }
    let debug = VmSpec {
        confidential: Confidential::SevSnp {
            policy: 0x30000 | SNP_POLICY_DEBUG,
            host_data: [0; 32],
        },
        ..snp_spec(run.path())
    };
    let err = ch.check(&debug).unwrap_err();
    assert!(
        matches!(err, VmmError::InvalidSpec(_)) && err.to_string().contains("debug"),
        "{err}"
    );
    assert!(dc_vmm_ch::vm_config(&debug).is_err());
}

/// An IGVM file with one SEV-SNP guest policy header (type 0x101).
fn igvm_file(dir: &Path, policy: u64) -> PathBuf {
    let mut vh = Vec::new();
    vh.extend_from_slice(&0x101u32.to_le_bytes());
    vh.extend_from_slice(&16u32.to_le_bytes());
    vh.extend_from_slice(&policy.to_le_bytes());
    vh.extend_from_slice(&1u32.to_le_bytes());
    vh.extend_from_slice(&0u32.to_le_bytes());
    let mut f = Vec::new();
    for v in [
        0x4D56_4749u32,
        1,
        24,
        vh.len() as u32,
        24 + vh.len() as u32,
        0,
    ] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(&vh);
    let path = dir.join(format!("guest-{policy:x}.igvm"));
    std::fs::write(&path, f).unwrap();
    path
}

#[test]
fn an_snp_launch_checks_the_policy_inside_the_igvm_file_first() {
    let dir = tempfile::tempdir().unwrap();
    let ch = CloudHypervisor::new("/nonexistent/cloud-hypervisor");
    let with_igvm = |igvm: PathBuf| VmSpec {
        boot: dc_vmm::Boot::Igvm {
            igvm,
            cmdline: String::new(),
        },
        ..with_existing_disks(snp_spec(&dir.path().join("run")))
    };
    for (igvm, needle) in [
        (
            igvm_file(dir.path(), 0x30000 | SNP_POLICY_DEBUG),
            "debugging",
        ),
        (igvm_file(dir.path(), 0x70000), "differs"),
    ] {
        let err = ch.launch(&with_igvm(igvm)).unwrap_err();
        assert!(
            matches!(err, VmmError::InvalidSpec(_)) && err.to_string().contains(needle),
            "{err}"
        );
    }
    let err = ch
        .launch(&with_igvm(dir.path().join("missing.igvm")))
        .unwrap_err();
    assert!(matches!(err, VmmError::Io { .. }), "{err}");
    // A matching policy gets as far as starting the (here missing) binary.
    let err = ch
        .launch(&with_igvm(igvm_file(dir.path(), 0x30000)))
        .unwrap_err();
    assert!(matches!(err, VmmError::Spawn { .. }), "{err}");
}

#[test]
fn an_snp_launch_on_a_build_without_sev_snp_is_refused_before_vm_create() {
    let bin = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ch = CloudHypervisor::new(fake_binary(bin.path(), "exec sleep 120"));
    // What a default build (features kvm, io_uring) answers; its vm.create
    // would accept the SEV-SNP config and silently drop igvm, host_data and
    // platform.sev_snp.
    let logs = serve_when_started(bin.path().to_path_buf(), |req| {
        if req.path.ends_with("vmm.ping") {
            json_ok(
                r#"{"build_version":"v54.0","version":"54.0.0","pid":1,"features":["io_uring","kvm"]}"#,
            )
        } else {
            no_content()
        }
    });
    let spec = VmSpec {
        boot: dc_vmm::Boot::Igvm {
            igvm: igvm_file(dir.path(), 0x30000),
            cmdline: String::new(),
        },
        ..with_existing_disks(snp_spec(&dir.path().join("run")))
    };
    let err = ch
        .launch_with_timeout(&spec, Duration::from_secs(10))
        .unwrap_err();
    assert!(
        matches!(&err, VmmError::Unsupported { reason, .. } if reason.contains("igvm, sev_snp")),
        "{err}"
    );
    let log = logs.recv_timeout(Duration::from_secs(5)).unwrap();
    let seen: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(seen, ["GET /api/v1/vmm.ping"]);
    assert!(wait_exited(pid_of_fake(bin.path())), "the VMM was killed");
}
