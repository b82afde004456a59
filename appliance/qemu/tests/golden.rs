//! Golden command lines: each spec's arguments are compared with a committed
//! file under `tests/golden/` (one argument per line). Confidential and GPU
//! launches are verified only this way. Regenerate with
//! `DC_UPDATE_GOLDEN=1 cargo test -p dc-vmm-qemu --test golden` and review
//! the diff.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use dc_vmm::{Accel, Boot, Confidential, Disk, Network, PortForward, VfioDevice, VmSpec, VmmError};
use dc_vmm_qemu::{command_line, RunPaths};

fn base_spec(id: &str) -> VmSpec {
    VmSpec {
        id: id.into(),
        vcpus: 2,
        memory_mib: 1024,
        boot: Boot::Kernel {
            kernel: "/var/lib/dc/images/vmlinuz".into(),
            initrd: Some("/var/lib/dc/images/initrd.img".into()),
            cmdline: "console=ttyS0 quiet".into(),
            firmware: None,
        },
        disks: vec![Disk {
            path: format!("/var/lib/dc/vms/{id}/root.qcow2").into(),
            base: Some("/var/lib/dc/images/debian-12.raw".into()),
            readonly: false,
            size_gib: Some(20),
        }],
        network: Network::User {
            forwards: vec![PortForward {
                host_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                host_port: 18080,
                guest_port: 80,
            }],
        },
        vsock_cid: None,
        vfio: vec![],
        confidential: Confidential::None,
        accel: Accel::Tcg,
        run_dir: format!("/run/dc/vms/{id}").into(),
    }
}

fn check_golden(name: &str, spec: &VmSpec) {
    let args = command_line(spec, &RunPaths::for_spec(spec)).expect("spec is valid");
    assert!(!args.iter().any(|a| a == "-daemonize"), "QEMU must never daemonize itself");
    let text = args.join("\n") + "\n";
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.args"));
    if std::env::var_os("DC_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with DC_UPDATE_GOLDEN=1 to create it", path.display()));
    assert_eq!(text, expected, "{name}: command line differs from {}", path.display());
}

fn ovmf() -> Option<PathBuf> {
    Some("/usr/share/dc/OVMF.fd".into())
}

fn with_firmware(spec: VmSpec) -> VmSpec {
    let Boot::Kernel { kernel, initrd, cmdline, .. } = spec.boot.clone() else { unreachable!() };
    VmSpec { boot: Boot::Kernel { kernel, initrd, cmdline, firmware: ovmf() }, ..spec }
}

#[test]
fn regular_tcg_vm() {
    check_golden("regular-tcg", &VmSpec { vsock_cid: Some(42), ..base_spec("c1") });
}

#[test]
fn tdx_vm() {
    let spec = VmSpec {
        confidential: Confidential::Tdx { mrconfigid: std::array::from_fn(|i| i as u8) },
        accel: Accel::Kvm,
        network: Network::Tap { tap: "dctap2".into(), mac: "52:54:00:12:34:02".into() },
        ..with_firmware(base_spec("c2"))
    };
    let args = command_line(&spec, &RunPaths::for_spec(&spec)).unwrap();
    assert!(!args.iter().any(|a| a.contains("debug=on")), "never a debuggable TD");
    check_golden("tdx", &spec);
}

#[test]
fn snp_vm_with_kernel_hashes() {
    let spec = VmSpec {
        confidential: Confidential::SevSnp { policy: 0x30000, host_data: [0xab; 32] },
        accel: Accel::Kvm,
        vsock_cid: Some(3),
        ..with_firmware(base_spec("c3"))
    };
    let args = command_line(&spec, &RunPaths::for_spec(&spec)).unwrap();
    // The vCPU model is part of the SNP launch measurement: never the host's.
    let cpu = args.iter().position(|a| a == "-cpu").map(|i| args[i + 1].as_str());
    assert_eq!(cpu, Some(dc_vmm_qemu::SNP_CPU_MODEL));
    assert_eq!(dc_vmm_qemu::cpu_model(&spec), dc_vmm_qemu::SNP_CPU_MODEL);
    check_golden("snp-kernel-hashes", &spec);
}

#[test]
fn gpu_vm_with_two_functions_of_one_iommu_group() {
    let spec = VmSpec {
        accel: Accel::Kvm,
        vcpus: 16,
        memory_mib: 65536,
        vfio: vec![
            VfioDevice { sysfs_path: "/sys/bus/pci/devices/0000:41:00.0".into() },
            VfioDevice { sysfs_path: "/sys/bus/pci/devices/0000:41:00.1".into() },
        ],
        ..base_spec("c4")
    };
    check_golden("gpu-vfio", &spec);
}

#[test]
fn vm_with_a_tap_device() {
    let spec = VmSpec {
        accel: Accel::Kvm,
        network: Network::Tap { tap: "dctap5".into(), mac: "52:54:00:AB:CD:05".into() },
        disks: vec![
            Disk {
                path: "/var/lib/dc/vms/c5/root.qcow2".into(),
                base: Some("/var/lib/dc/images/base.qcow2".into()),
                readonly: false,
                size_gib: None,
            },
            Disk { path: "/var/lib/dc/vms/c5/data,1.img".into(), base: None, readonly: true, size_gib: None },
        ],
        ..base_spec("c5")
    };
    check_golden("tap", &spec);
}

#[test]
fn unsafe_or_impossible_specs_are_refused() {
    let refused = |spec: VmSpec, needle: &str| {
        let err = command_line(&spec, &RunPaths::for_spec(&spec)).unwrap_err();
        assert!(err.to_string().contains(needle), "{err} should mention {needle}");
        err
    };
    refused(
        VmSpec {
            confidential: Confidential::SevSnp { policy: 0x30000 | dc_vmm::SNP_POLICY_DEBUG, host_data: [0; 32] },
            accel: Accel::Kvm,
            ..with_firmware(base_spec("c6"))
        },
        "debug",
    );
    refused(
        VmSpec { confidential: Confidential::Tdx { mrconfigid: [0; 48] }, accel: Accel::Kvm, ..base_spec("c6") },
        "firmware",
    );
    refused(
        VmSpec {
            network: Network::Tap { tap: "tap0,script=/evil".into(), mac: "52:54:00:00:00:01".into() },
            ..base_spec("c6")
        },
        "tap",
    );
    refused(
        VmSpec { network: Network::Tap { tap: "tap0".into(), mac: "52:54:00:00:00".into() }, ..base_spec("c6") },
        "MAC",
    );
    refused(
        VmSpec { vfio: vec![VfioDevice { sysfs_path: "/sys/bus/pci/devices/41:00.0,x=y".into() }], ..base_spec("c6") },
        "PCI address",
    );
    refused(VmSpec { run_dir: PathBuf::from("/run/").join("d".repeat(120)), ..base_spec("c6") }, "socket path");
    let err = refused(
        VmSpec { boot: Boot::Igvm { igvm: "/x.igvm".into(), cmdline: String::new() }, ..base_spec("c6") },
        "IGVM",
    );
    assert!(matches!(err, VmmError::Unsupported { .. }));
}
