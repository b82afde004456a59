//! Against a real Cloud Hypervisor, only where `CLOUD_HYPERVISOR_BIN` names
//! one (no registry ships it): boots a 249-byte PVH ELF stub guest that writes
//! a marker to COM1 and halts, then drives every operation through the trait;
//! feeds `vm.create` the configs `vm_config` generates (the golden files'
//! shapes) and checks nothing sent is dropped; checks error bodies.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dc_vmm::{
    Accel, Boot, Confidential, Device, Disk, Hypervisor, Network, VmSpec, VmState, VmmError,
};
use dc_vmm_ch::{ApiClient, CloudHypervisor};
use serde_json::Value;

use dc_vmm_ch::stub::{stub_kernel, MARKER};

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serial(run_dir: &Path) -> String {
    std::fs::read_to_string(run_dir.join("serial.log")).unwrap_or_default()
}

#[test]
fn stub_kernel_is_well_formed() {
    let k = stub_kernel();
    assert_eq!(&k[..4], b"\x7fELF");
    assert!(k.windows(4).any(|w| w == b"Xen\0"));
    assert!(k.len() < 512);
}

fn bin() -> Option<PathBuf> {
    let bin = std::env::var_os("CLOUD_HYPERVISOR_BIN")?;
    Some(PathBuf::from(bin))
}

fn skipped() {
    eprintln!("skipped: set CLOUD_HYPERVISOR_BIN to a cloud-hypervisor binary (and give access to /dev/kvm) to run this test");
}

/// A qcow2 overlay of a qcow2 base when `qemu-img` is there (the overlay
/// case is the one auto-detection breaks on reboot), else a raw file.
fn root_disk(dir: &Path) -> Disk {
    let base = dir.join("base.qcow2");
    let overlay = dir.join("root.qcow2");
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&base)
        .arg("16M")
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(&base)
            .arg(&overlay)
            .status()
            .is_ok_and(|s| s.success());
    if made {
        Disk {
            path: overlay,
            base: Some(base),
            readonly: false,
            size_gib: None,
        }
    } else {
        eprintln!("qemu-img not found: the root disk is raw, the qcow2 overlay reboot case is not covered");
        let raw = dir.join("root.raw");
        std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
        Disk {
            path: raw,
            base: None,
            readonly: false,
            size_gib: None,
        }
    }
}

fn stub_spec(dir: &Path, id: &str) -> VmSpec {
    let kernel = dir.join("stub.elf");
    std::fs::write(&kernel, stub_kernel()).unwrap();
    VmSpec {
        id: id.into(),
        vcpus: 1,
        memory_mib: 128,
        boot: Boot::Kernel {
            kernel,
            initrd: None,
            cmdline: "console=ttyS0".into(),
            firmware: None,
        },
        disks: vec![],
        network: Network::None,
        vsock_cid: None,
        vfio: vec![],
        confidential: Confidential::None,
        accel: Accel::Kvm,
        run_dir: dir.join(id),
    }
}

/// A launched VM, deleted on drop so that a failed assertion leaves no VMM
/// running (deleting twice is harmless).
struct Launched<'a>(&'a CloudHypervisor, dc_vmm::VmHandle);

impl std::ops::Deref for Launched<'_> {
    type Target = dc_vmm::VmHandle;
    fn deref(&self) -> &dc_vmm::VmHandle {
        &self.1
    }
}

impl Drop for Launched<'_> {
    fn drop(&mut self) {
        let _ = self.0.delete(&self.1);
    }
}

fn launch<'a>(ch: &'a CloudHypervisor, spec: &VmSpec) -> Launched<'a> {
    let handle = ch.launch(spec).unwrap_or_else(|e| {
        let log =
            std::fs::read_to_string(spec.run_dir.join("cloud-hypervisor.log")).unwrap_or_default();
        panic!("launch: {e}\ncloud-hypervisor.log:\n{log}")
    });
    Launched(ch, handle)
}

#[test]
fn boots_a_stub_guest_and_drives_it() {
    let Some(bin) = bin() else { return skipped() };
    let dir = tempfile::tempdir().unwrap();
    let extra = dir.path().join("extra.raw");
    std::fs::write(&extra, vec![0u8; 1 << 20]).unwrap();
    let spec = VmSpec {
        disks: vec![root_disk(dir.path())],
        vsock_cid: Some(7),
        ..stub_spec(dir.path(), "c1")
    };
    let run_dir = spec.run_dir.clone();
    let ch = CloudHypervisor::new(bin);
    ch.check(&spec).unwrap();
    let handle = launch(&ch, &spec);
    wait_for(
        "the stub's marker on the serial log",
        Duration::from_secs(20),
        || serial(&run_dir).contains(MARKER),
    );

    let info = ch.adopt(&handle).unwrap();
    assert_eq!(info.state, VmState::Running);
    assert_eq!((info.vcpus, info.memory_mib), (1, 128));
    assert_eq!(info.devices, ["disk0", "vsock0"]);
    let counters = ch.counters(&handle).unwrap();
    assert!(counters.contains_key("disk0"), "{counters:?}");
    ch.pause(&handle).unwrap();
    assert_eq!(ch.info(&handle).unwrap().state, VmState::Paused);
    // A second pause is an invalid transition: the error chain is quoted
    // as one readable line, not as Cloud Hypervisor's JSON array.
    match ch.pause(&handle).unwrap_err() {
        VmmError::Api { reason, .. } => {
            assert!(
                reason.starts_with("HTTP 500: Error from API: The VM could not be paused: "),
                "{reason}"
            );
            assert!(!reason.contains("[\""), "{reason}");
        }
        e => panic!("{e}"),
    }
    ch.resume(&handle).unwrap();
    assert_eq!(ch.info(&handle).unwrap().state, VmState::Running);

    let id = ch
        .add_device(
            &handle,
            &Device::Disk(Disk {
                path: extra,
                base: None,
                readonly: true,
                size_gib: None,
            }),
        )
        .unwrap();
    assert_eq!(id, "disk1");
    assert!(ch.info(&handle).unwrap().devices.contains(&id));
    // The stub guest never acknowledges the ejection; only the request is checked.
    ch.remove_device(&handle, &id).unwrap();
    match ch.remove_device(&handle, "nope").unwrap_err() {
        VmmError::Api { reason, .. } => assert!(
            reason.starts_with("HTTP 404: Error from API: ") && reason.contains("nope"),
            "{reason}"
        ),
        e => panic!("{e}"),
    }

    // A reboot re-opens every disk from the stored config: with the image
    // type left to auto-detection, a qcow2 overlay fails to reopen here.
    std::fs::write(run_dir.join("serial.log"), b"").unwrap();
    ch.reboot(&handle).unwrap_or_else(|e| {
        let log = std::fs::read_to_string(run_dir.join("cloud-hypervisor.log")).unwrap_or_default();
        panic!("reboot: {e}\n{log}")
    });
    assert_eq!(ch.info(&handle).unwrap().state, VmState::Running);
    wait_for(
        "the stub's marker after the reboot",
        Duration::from_secs(20),
        || serial(&run_dir).contains(MARKER),
    );
    // The power button is only pressed: the stub has no ACPI to act on it.
    ch.shutdown(&handle).unwrap();

    ch.delete(&handle).unwrap();
    assert!(!handle.is_alive());
    assert!(!handle.api_socket.exists());
    assert!(!run_dir.join("ch.sock.lock").exists());
}

/// A tap (created by Cloud Hypervisor itself, which needs CAP_NET_ADMIN),
/// a vsock and two disks, booted: the generated config of `tap_vsock_spec`.
#[test]
fn boots_the_stub_with_tap_vsock_and_two_disks() {
    let Some(bin) = bin() else { return skipped() };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: creating a tap device needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.raw");
    std::fs::write(&seed, vec![0u8; 1 << 20]).unwrap();
    let tap = format!("dcchtest{}", std::process::id() % 100_000);
    let spec = VmSpec {
        disks: vec![
            root_disk(dir.path()),
            Disk {
                path: seed,
                base: None,
                readonly: true,
                size_gib: None,
            },
        ],
        network: Network::Tap {
            tap: tap.clone(),
            mac: "52:54:00:12:34:56".into(),
        },
        vsock_cid: Some(42),
        ..stub_spec(dir.path(), "c2")
    };
    let ch = CloudHypervisor::new(bin);
    let handle = launch(&ch, &spec);
    wait_for("the stub's marker", Duration::from_secs(20), || {
        serial(&spec.run_dir).contains(MARKER)
    });
    let info = ch.info(&handle).unwrap();
    assert_eq!(info.devices, ["disk0", "disk1", "net0", "vsock0"]);
    assert!(spec.run_dir.join("vsock.sock").exists());
    assert!(Path::new("/sys/class/net").join(&tap).exists());
    ch.delete(&handle).unwrap();
    assert!(!Path::new("/sys/class/net").join(&tap).exists());
}

/// A bare VMM on `dir/api.sock`, killed on drop.
struct Vmm(std::process::Child, ApiClient);

impl Vmm {
    fn start(bin: &Path, dir: &Path) -> Vmm {
        let socket = dir.join("api.sock");
        let log = std::fs::File::create(dir.join("vmm.log")).unwrap();
        let child = Command::new(bin)
            .arg("--api-socket")
            .arg(format!("path={}", socket.display()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_for("the API socket", Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        Vmm(child, ApiClient::new(socket))
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.1.put("vmm.shutdown", None);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every value in `sent` is in `echoed` (objects by key, arrays by index).
fn missing_from(sent: &Value, echoed: &Value, at: &str, out: &mut Vec<String>) {
    match (sent, echoed) {
        (Value::Object(s), Value::Object(e)) => {
            for (k, v) in s {
                match e.get(k) {
                    Some(ev) => missing_from(v, ev, &format!("{at}.{k}"), out),
                    None => out.push(format!("{at}.{k} dropped")),
                }
            }
        }
        (Value::Array(s), Value::Array(e)) if s.len() == e.len() => {
            for (i, (v, ev)) in s.iter().zip(e).enumerate() {
                missing_from(v, ev, &format!("{at}[{i}]"), out);
            }
        }
        _ if sent == echoed => {}
        _ => out.push(format!("{at}: sent {sent}, stored {echoed}")),
    }
}

/// `snp_spec` with a minimal IGVM file (only a guest policy header, 0x30000,
/// the spec's policy) that `launch` can check.
fn snp_spec_with_igvm(run_dir: &Path, dir: &Path) -> VmSpec {
    let mut vh = Vec::new();
    for v in [0x101u32, 16] {
        vh.extend_from_slice(&v.to_le_bytes());
    }
    vh.extend_from_slice(&0x30000u64.to_le_bytes());
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
    let igvm = dir.join("guest.igvm");
    std::fs::write(&igvm, f).unwrap();
    let spec = common::snp_spec(run_dir);
    let Boot::Igvm { cmdline, .. } = spec.boot.clone() else {
        unreachable!()
    };
    VmSpec {
        boot: Boot::Igvm { igvm, cmdline },
        ..spec
    }
}

/// `vm.create` with the config `vm_config` makes for each golden spec (paths
/// under a temporary run directory; kernel, disks and VFIO devices need not
/// exist before `vm.boot`), then `vm.info`: every field sent must come back.
/// The SEV-SNP config is only accepted by a build with `sev_snp`; a default
/// build must be refused by `launch` before `vm.create`.
#[test]
fn vm_create_accepts_the_generated_configs() {
    let Some(bin) = bin() else { return skipped() };
    let dir = tempfile::tempdir().unwrap();
    let vmm = Vmm::start(&bin, dir.path());
    let ping = vmm.1.get_json("vmm.ping").unwrap();
    eprintln!("vmm.ping: {ping}");
    let features: Vec<&str> = ping["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let run_dir = dir.path().join("c42");
    std::fs::create_dir_all(&run_dir).unwrap();
    let specs = [
        ("direct-boot", common::base_spec(&run_dir)),
        ("firmware-boot", common::firmware_spec(&run_dir)),
        ("gpu-vfio", common::gpu_spec(&run_dir)),
        ("tap-vsock", common::tap_vsock_spec(&run_dir)),
        ("snp-igvm", snp_spec_with_igvm(&run_dir, dir.path())),
    ];
    for (name, spec) in specs {
        let needed = dc_vmm_ch::required_features(&spec);
        if !needed.iter().all(|f| features.contains(f)) {
            eprintln!("{name}: this build lacks {needed:?}; only the refusal is checked");
            let ch = CloudHypervisor::new(&bin);
            let err = ch.launch(&VmSpec {
                run_dir: dir.path().join("refused"),
                ..spec
            });
            assert!(
                matches!(err, Err(VmmError::Unsupported { .. })),
                "{name}: {err:?}"
            );
            continue;
        }
        let config = dc_vmm_ch::vm_config(&spec).unwrap();
        vmm.1
            .put("vm.create", Some(&config))
            .unwrap_or_else(|e| panic!("{name}: vm.create: {e}"));
        let info = vmm.1.get_json("vm.info").unwrap();
        assert_eq!(info["state"], "Created", "{name}");
        let mut missing = Vec::new();
        missing_from(&config, &info["config"], "config", &mut missing);
        assert!(missing.is_empty(), "{name}: {missing:?}");
        vmm.1.put("vm.delete", None).unwrap();
    }
}

/// What an error answer looks like once the client has read it.
#[test]
fn error_answers_are_quoted_readably() {
    let Some(bin) = bin() else { return skipped() };
    let dir = tempfile::tempdir().unwrap();
    let vmm = Vmm::start(&bin, dir.path());
    let err = vmm.1.put("vm.boot", None).unwrap_err();
    match &err {
        VmmError::Api {
            operation, reason, ..
        } => {
            assert_eq!(operation, "vm.boot");
            assert_eq!(
                reason,
                "HTTP 404: Error from API: The VM could not boot: VM config is missing"
            );
        }
        e => panic!("{e}"),
    }
    let err = vmm
        .1
        .put(
            "vm.create",
            Some(&serde_json::json!({ "cpus": { "boot_vcpus": 1 } })),
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("HTTP 400: Failed to deserialize JSON: missing field `max_vcpus`"),
        "{err}"
    );
    // A missing kernel is found at boot; launch quotes it and kills the VMM.
    let ch = CloudHypervisor::new(&bin);
    let spec = VmSpec {
        boot: Boot::Kernel {
            kernel: dir.path().join("no-such-kernel"),
            initrd: None,
            cmdline: String::new(),
            firmware: None,
        },
        ..stub_spec(dir.path(), "c3")
    };
    let err = ch.launch(&spec).unwrap_err();
    assert!(
        matches!(&err, VmmError::Api { operation, reason, .. }
            if operation == "vm.boot" && reason.starts_with("HTTP 500: Error from API: The VM could not boot")),
        "{err}"
    );
}
