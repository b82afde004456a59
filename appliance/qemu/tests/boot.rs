//! A real boot with software emulation (TCG): the `dc-test-guest` kernel and
//! initramfs, an HTTP answer through a user-mode port forward, the QMP
//! operations, re-adoption after the supervisor's state is dropped, and
//! deletion. Skipped, loudly, when QEMU or the test guest is unavailable.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use dc_vmm::{
    Accel, Boot, Confidential, Device, Disk, Hypervisor, Network, PortForward, VmHandle, VmSpec, VmState, VmmError,
};
use dc_vmm_qemu::Qemu;

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http_get(port: u16) -> Option<String> {
    http_get_path(port, "/")
}

fn http_get_path(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes()).ok()?;
    let mut answer = Vec::new();
    let _ = stream.take(64 * 1024).read_to_end(&mut answer);
    Some(String::from_utf8_lossy(&answer).into_owned())
}

/// Kills the VM if the test fails half-way, so no QEMU outlives it.
struct KillOnDrop(Option<VmHandle>);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            dc_vmm::process::signal_if_same(h.pid, h.pid_start_ticks, libc::SIGKILL);
        }
    }
}

#[test]
fn boots_serves_http_survives_adoption_and_is_deleted() {
    let qemu = match Qemu::detect() {
        Ok(q) => q,
        Err(e) => {
            eprintln!("SKIPPED real QEMU boot test: {e} (apt-get install -y qemu-system-x86 qemu-utils)");
            return;
        }
    };
    let guest = match dc_test_guest::TestGuest::prepare() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("SKIPPED real QEMU boot test: the test guest is unavailable: {e}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let spec = test_guest_spec("qemu-boot-test", dir.path(), &guest, port);
    std::fs::create_dir_all(&spec.run_dir).unwrap();
    // A serial log left by an earlier boot of this VM.
    std::fs::write(spec.serial_log(), "stale boot\n").unwrap();

    let handle = qemu.launch(&spec).expect("launch");
    let mut guard = KillOnDrop(Some(handle.clone()));
    assert!(handle.is_alive());
    assert!(spec.disks[0].path.exists(), "launch made the overlay");
    let info = std::process::Command::new(&qemu.qemu_img)
        .args(["info", "--output=json", "-U", "-f", "qcow2"])
        .arg(&spec.disks[0].path)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["virtual-size"], 1u64 << 30, "the overlay has the disk's size_gib: {info}");
    assert_eq!(std::fs::read_to_string(dc_vmm::rotated_path(&spec.serial_log())).unwrap(), "stale boot\n");
    assert_eq!(
        serial_fd_flags(handle.pid, &spec.serial_log()) & libc::O_APPEND as u32,
        libc::O_APPEND as u32,
        "QEMU appends to the serial log"
    );

    // Boot: the ready line on the serial console, then HTTP through the forward.
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let serial = std::fs::read_to_string(spec.serial_log()).unwrap_or_default();
        if serial.contains("dc-test-guest ready") {
            assert!(!serial.contains("stale boot"), "the previous boot's log was rotated away");
            break;
        }
        assert!(Instant::now() < deadline, "no ready line within {BOOT_TIMEOUT:?}; serial tail: {}", tail(&serial));
        std::thread::sleep(Duration::from_millis(250));
    }
    let answer = loop {
        match http_get(port) {
            Some(a) if a.contains("dc-test-guest ok") => break a,
            other => {
                assert!(Instant::now() < deadline, "no HTTP answer through 127.0.0.1:{port}; last: {other:?}");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    };
    assert!(answer.contains("dc-test-guest ok"));

    let info = qemu.info(&handle).unwrap();
    assert_eq!(info.state, VmState::Running);
    assert_eq!(info.vcpus, 1);
    assert_eq!(info.memory_mib, 256);
    assert!(info.devices.contains(&"disk0".to_string()), "{:?}", info.devices);
    assert!(info.devices.contains(&"nic0".to_string()), "{:?}", info.devices);

    qemu.pause(&handle).unwrap();
    assert_eq!(qemu.info(&handle).unwrap().state, VmState::Paused);
    qemu.resume(&handle).unwrap();
    assert_eq!(qemu.info(&handle).unwrap().state, VmState::Running);

    let counters = qemu.counters(&handle).unwrap();
    assert!(counters.get("disk0").is_some_and(|c| c.contains_key("read_bytes")), "{counters:?}");

    // Hot-plug a second disk onto a free root port.
    let extra = dir.path().join("extra.raw");
    std::fs::write(&extra, vec![0u8; 1 << 20]).unwrap();
    let id = qemu
        .add_device(&handle, &Device::Disk(Disk { path: extra, base: None, readonly: true, size_gib: None }))
        .unwrap();
    assert_eq!(id, "disk1");
    assert!(qemu.info(&handle).unwrap().devices.contains(&id));
    // Unplug needs the guest's PCIe hot-plug driver to release the device.
    qemu.remove_device(&handle, &id).unwrap();
    let gone_by = Instant::now() + Duration::from_secs(15);
    while qemu.info(&handle).unwrap().devices.contains(&id) {
        assert!(Instant::now() < gone_by, "{id} still present after device_del");
        std::thread::sleep(Duration::from_millis(200));
    }
    let err = qemu.remove_device(&handle, "no-such-device").unwrap_err();
    assert!(matches!(err, VmmError::Api { .. }), "{err}");

    // Supervisor loss: everything but the journaled handle is dropped.
    let journal = serde_json::to_string(&handle).unwrap();
    drop(qemu);
    let handle: VmHandle = serde_json::from_str(&journal).unwrap();
    let qemu = Qemu::detect().unwrap();
    let adopted = qemu.adopt(&handle).unwrap();
    assert_eq!(adopted.state, VmState::Running);
    assert!(http_get(port).is_some_and(|a| a.contains("dc-test-guest ok")), "guest still serves after adoption");

    qemu.delete(&handle).unwrap();
    guard.0 = None;
    assert!(!handle.is_alive());
    assert!(matches!(qemu.adopt(&handle), Err(VmmError::Gone { .. })));
    assert!(qemu.delete(&handle).is_ok(), "deleting twice is harmless");
}

/// The test guest on one vCPU and 256 MiB, a 1 GiB overlay over a small
/// raw base disk, and its port 80 forwarded from 127.0.0.1:`port`.
fn test_guest_spec(
    id: &str,
    dir: &std::path::Path,
    guest: &dc_test_guest::TestGuest,
    port: u16,
) -> VmSpec {
    let base = dir.join("base.raw");
    std::fs::write(&base, vec![0u8; 4 << 20]).unwrap();
    VmSpec {
        id: id.into(),
        vcpus: 1,
        memory_mib: 256,
        boot: Boot::Kernel {
            kernel: guest.kernel.clone(),
            initrd: Some(guest.initrd.clone()),
            cmdline: guest.cmdline.clone(),
            firmware: None,
        },
        disks: vec![Disk {
            path: dir.join("vm/root.qcow2"),
            base: Some(base),
            readonly: false,
            size_gib: Some(1),
        }],
        network: Network::User {
            forwards: vec![PortForward {
                host_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                host_port: port,
                guest_port: 80,
            }],
        },
        vsock_cid: None,
        vfio: vec![],
        confidential: Confidential::None,
        accel: Accel::Tcg,
        run_dir: dir.join("vm"),
    }
}

/// A guest that powers itself off ends its QEMU (no `-no-shutdown`), as
/// with Cloud Hypervisor: the supervisor sees a dead VMM and relaunches the
/// VM, where a process kept up around a stopped guest would look alive for
/// ever.
#[test]
fn a_guest_that_powers_off_ends_its_qemu() {
    let (Ok(qemu), Ok(guest)) = (Qemu::detect(), dc_test_guest::TestGuest::prepare()) else {
        eprintln!(
            "SKIPPED a_guest_that_powers_off_ends_its_qemu: QEMU or the test guest is unavailable"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let spec = test_guest_spec("qemu-poweroff-test", dir.path(), &guest, port);
    std::fs::create_dir_all(&spec.run_dir).unwrap();
    let handle = qemu.launch(&spec).expect("launch");
    let guard = KillOnDrop(Some(handle.clone()));
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        match http_get_path(port, dc_test_guest::POWEROFF_PATH) {
            Some(a) if a.contains(dc_test_guest::POWEROFF_ANSWER) => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "no answer from the guest's power-off page; last: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    let gone_by = Instant::now() + Duration::from_secs(30);
    while handle.is_alive() {
        assert!(
            Instant::now() < gone_by,
            "QEMU still runs 30 s after its guest powered off"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(guard);
    assert!(matches!(qemu.adopt(&handle), Err(VmmError::Gone { .. })));
    assert!(
        qemu.delete(&handle).is_ok(),
        "a powered-off VM is deleted like any other"
    );
}

#[test]
fn a_failing_launch_leaves_nothing_running() {
    let Ok(qemu) = Qemu::detect() else {
        eprintln!("SKIPPED a_failing_launch_leaves_nothing_running: QEMU is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = VmSpec {
        id: "qemu-bad".into(),
        vcpus: 1,
        memory_mib: 128,
        boot: Boot::Kernel {
            kernel: dir.path().join("no-such-kernel"),
            initrd: None,
            cmdline: String::new(),
            firmware: None,
        },
        disks: vec![],
        network: Network::None,
        vsock_cid: None,
        vfio: vec![],
        confidential: Confidential::None,
        accel: Accel::Tcg,
        run_dir: dir.path().join("vm"),
    };
    let err = qemu.launch(&spec).unwrap_err();
    assert!(matches!(err, VmmError::Spawn { .. }), "{err}");
    assert!(err.to_string().contains("no-such-kernel"), "QEMU's own complaint is in the error: {err}");
}

/// The open flags (octal `flags:` of /proc/PID/fdinfo) of `pid`'s descriptor for `path`.
fn serial_fd_flags(pid: u32, path: &std::path::Path) -> u32 {
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let entry = entry.unwrap();
        if std::fs::read_link(entry.path()).is_ok_and(|target| target == path) {
            let info =
                std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy())).unwrap();
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:")).unwrap().trim();
            return u32::from_str_radix(flags, 8).unwrap();
        }
    }
    panic!("QEMU {pid} has no descriptor for {}", path.display());
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
