//! The QEMU command line, as a pure function of the spec (golden-tested).
//!
//! Property names were checked against QEMU's own documentation:
//! - `docs/system/i386/tdx.rst` (qemu/qemu): a TD needs `-object tdx-guest`,
//!   `-machine ...,confidential-guest-support=tdx0`, a split kernel irqchip,
//!   no SMM, and its firmware (TDVF/OVMF) loaded with `-bios` because TDX has
//!   no read-only memslots (so no pflash).
//! - `qapi/qom.json` `TdxGuestProperties` (QEMU 10.0+): `mrconfigid` is a
//!   "base64 encoded SHA384 digest", i.e. 48 bytes in base64. The DEBUG TD
//!   attribute (bit 0 of `attributes`) is never set here.
//! - `qapi/qom.json` `SevSnpGuestProperties` (QEMU 9.1+): `policy` (uint64,
//!   default 0x30000), `host-data` ("32-byte, base64-encoded"), and from
//!   `SevCommonProperties` `cbitpos`, `reduced-phys-bits`, `kernel-hashes`;
//!   firmware with `-bios` (as in the SNP examples of the AMD patch series
//!   and `docs/system/i386/amd-memory-encryption.rst`).
//! - SEV-SNP vCPU model: the launch measurement covers one VMSA per vCPU,
//!   and the VMSA's RDX holds the CPUID signature of the vCPU model. `-cpu
//!   host` would make the measurement depend on the host's CPU, so SNP
//!   guests get the fixed model [`SNP_CPU_MODEL`] (`EPYC-v4`, a versioned
//!   QEMU model name listed by `-cpu help` since QEMU 8; SNP needs QEMU 9.1
//!   or later anyway). It is what dstack's SNP guests use (their hardware
//!   report is reproduced by `dc_measure` with it), and its features are a
//!   subset of every SNP-capable EPYC (Milan, Genoa, Turin).
//! - Serial log: `-chardev file,...,append=on` (`ChardevFile.append`,
//!   QEMU 2.6+) opens it `O_APPEND`, which is what lets
//!   [`dc_vmm::cap_log`] truncate it while QEMU runs; without it QEMU would
//!   also truncate the log itself at every start.

use std::path::{Path, PathBuf};

use base64::Engine;
use dc_vmm::{Accel, Boot, Confidential, Disk, Network, VmSpec, VmmError, SNP_POLICY_DEBUG};

/// Longest path a Unix socket address holds (`sun_path` is 108 bytes with
/// its terminating NUL).
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

/// Number of empty PCIe root ports left for hot-plugged devices (q35's root
/// bus itself does not support hot-plug).
pub const HOTPLUG_PORTS: usize = 4;

/// The QEMU CPU model of every SEV-SNP guest. The one place it is set:
/// [`command_line`] passes it to `-cpu` and the launch-measurement
/// prediction (`dc_measure::snp`) takes it as the vCPU type. Changing it
/// changes every SNP measurement.
pub const SNP_CPU_MODEL: &str = "EPYC-v4";

/// SEV_FEATURES of an SNP guest's VMSAs as QEMU launches it: SNPActive
/// (bit 0) only. QEMU 9.1+ creates SNP guests with `KVM_SEV_INIT2`, whose
/// VMSA features are what QEMU asks for, and it asks for none (DebugSwap is
/// not enabled by default), so KVM sets just SNPActive. The measurement
/// prediction needs it.
pub const SNP_SEV_FEATURES: u64 = 0x1;

/// The `-cpu` model for `spec`: [`SNP_CPU_MODEL`] for SEV-SNP (the
/// measurement depends on it), `host` for other KVM guests, `max` under
/// software emulation.
pub fn cpu_model(spec: &VmSpec) -> &'static str {
    match (&spec.confidential, spec.accel) {
        (Confidential::SevSnp { .. }, _) => SNP_CPU_MODEL,
        (_, Accel::Kvm) => "host",
        (_, Accel::Tcg) => "max",
    }
}

/// AMD C-bit position and physical address bits lost to encryption on current
/// EPYC parts (Milan, Genoa, Turin).
const SNP_CBITPOS: u32 = 51;
const SNP_REDUCED_PHYS_BITS: u32 = 1;

/// Where a VM's files live inside its run directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunPaths {
    /// QMP control socket.
    pub qmp_socket: PathBuf,
    /// QEMU writes its pid here.
    pub pidfile: PathBuf,
    /// Serial console output.
    pub serial_log: PathBuf,
    /// QEMU's own stdout and stderr.
    pub qemu_log: PathBuf,
}

impl RunPaths {
    /// The fixed layout under `spec.run_dir`.
    pub fn for_spec(spec: &VmSpec) -> Self {
        RunPaths {
            qmp_socket: spec.run_dir.join("qmp.sock"),
            pidfile: spec.run_dir.join("qemu.pid"),
            serial_log: spec.serial_log(),
            qemu_log: spec.run_dir.join("qemu.log"),
        }
    }
}

/// Id of the n-th disk (device and block node alike).
pub fn disk_id(index: usize) -> String {
    format!("disk{index}")
}

/// Id of the n-th hot-plug root port.
pub fn hotplug_port_id(index: usize) -> String {
    format!("hotplug{index}")
}

/// The image format QEMU is told for `disk`: an overlay (it has a base) or a
/// `.qcow2` file is qcow2, anything else raw. Never left to probing, which
/// would let a guest that writes a qcow2 header into a raw disk make QEMU
/// open host files named in it.
pub fn disk_format(disk: &Disk) -> &'static str {
    if disk.base.is_some() || disk.path.extension().is_some_and(|e| e == "qcow2") {
        "qcow2"
    } else {
        "raw"
    }
}

/// The PCI address (`0000:41:00.0`) of a VFIO function from its sysfs path.
pub fn vfio_bdf(sysfs_path: &Path) -> Result<String, VmmError> {
    let name = sysfs_path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let b = name.as_bytes();
    let hex = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_hexdigit);
    let ok = b.len() == 12
        && hex(0..4)
        && b[4] == b':'
        && hex(5..7)
        && b[7] == b':'
        && hex(8..10)
        && b[10] == b'.'
        && (b'0'..=b'7').contains(&b[11]);
    if ok {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(VmmError::InvalidSpec(format!(
            "VFIO device {} does not end in a PCI address like 0000:41:00.0",
            sysfs_path.display()
        )))
    }
}

/// A path as one QEMU option value: UTF-8, commas doubled (QEMU's escape).
fn opt_path(path: &Path) -> Result<String, VmmError> {
    let text = path.to_str().ok_or_else(|| VmmError::InvalidSpec(format!("path {} is not UTF-8", path.display())))?;
    if text.contains('\n') || text.contains('\0') {
        return Err(VmmError::InvalidSpec(format!("path {text:?} has a newline or NUL")));
    }
    Ok(text.replace(',', ",,"))
}

/// A path given as a whole argument (`-kernel PATH`): no escaping needed.
fn arg_path(path: &Path) -> Result<String, VmmError> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| VmmError::InvalidSpec(format!("path {} is not UTF-8", path.display())))
}

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn valid_tap(name: &str) -> bool {
    // IFNAMSIZ is 16 with the NUL; no characters QEMU's option parser or the
    // kernel would treat specially.
    !name.is_empty()
        && name.len() <= 15
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The full argument list (without the program name) that launches `spec`.
///
/// Pure: reads no files and no clock, so the same spec always gives the same
/// arguments. `-daemonize` is never used (the supervisor spawns QEMU
/// detached itself and must know its real pid).
pub fn command_line(spec: &VmSpec, paths: &RunPaths) -> Result<Vec<String>, VmmError> {
    spec.validate()?;
    let socket_len = paths.qmp_socket.as_os_str().len();
    if socket_len > MAX_SOCKET_PATH_BYTES {
        return Err(VmmError::InvalidSpec(format!(
            "socket path {} is {socket_len} bytes; a Unix socket path holds at most {MAX_SOCKET_PATH_BYTES}",
            paths.qmp_socket.display()
        )));
    }
    let confidential = spec.confidential != Confidential::None;
    let mut args: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(|s| s.to_string()));

    push(&["-name", &format!("guest={},debug-threads=on", spec.id)]);
    push(&["-nodefaults", "-no-user-config", "-nographic"]);
    // No -no-shutdown: a guest that powers off ends the process, as with
    // Cloud Hypervisor, which the supervisor sees (a dead VMM) and relaunches
    // the VM over its disk; a process kept up around a stopped guest would
    // look alive for ever.

    let mut machine = String::from("q35");
    machine.push_str(match spec.accel {
        Accel::Kvm => ",accel=kvm",
        Accel::Tcg => ",accel=tcg",
    });
    match &spec.confidential {
        Confidential::None => {}
        Confidential::Tdx { .. } => machine.push_str(",confidential-guest-support=tdx0,kernel-irqchip=split,smm=off"),
        Confidential::SevSnp { .. } => machine.push_str(",confidential-guest-support=sev0"),
    }
    push(&["-machine", &machine]);
    push(&["-cpu", cpu_model(spec)]);
    push(&["-smp", &spec.vcpus.to_string()]);
    push(&["-m", &format!("{}M", spec.memory_mib)]);

    match &spec.confidential {
        Confidential::None => {}
        Confidential::Tdx { mrconfigid } => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(mrconfigid);
            push(&["-object", &format!("tdx-guest,id=tdx0,mrconfigid={b64}")]);
        }
        Confidential::SevSnp { policy, host_data } => {
            // Checked by `validate` too; repeated because launching a
            // debuggable confidential VM must be impossible from here.
            if policy & SNP_POLICY_DEBUG != 0 {
                return Err(VmmError::InvalidSpec(format!("SEV-SNP policy {policy:#x} allows debugging")));
            }
            let b64 = base64::engine::general_purpose::STANDARD.encode(host_data);
            let kernel_hashes = matches!(spec.boot, Boot::Kernel { .. });
            push(&[
                "-object",
                &format!(
                    "sev-snp-guest,id=sev0,cbitpos={SNP_CBITPOS},reduced-phys-bits={SNP_REDUCED_PHYS_BITS},policy={policy:#x}{},host-data={b64}",
                    if kernel_hashes { ",kernel-hashes=on" } else { "" }
                ),
            ]);
        }
    }

    match &spec.boot {
        Boot::Kernel { kernel, initrd, cmdline, firmware } => {
            if confidential && firmware.is_none() {
                return Err(VmmError::InvalidSpec(
                    "a confidential direct kernel boot needs firmware (OVMF) that measures kernel, initrd and command line"
                        .into(),
                ));
            }
            if let Some(firmware) = firmware {
                push(&["-bios", &arg_path(firmware)?]);
            }
            push(&["-kernel", &arg_path(kernel)?]);
            if let Some(initrd) = initrd {
                push(&["-initrd", &arg_path(initrd)?]);
            }
            push(&["-append", cmdline]);
        }
        Boot::Firmware { firmware } => push(&["-bios", &arg_path(firmware)?]),
        Boot::Igvm { .. } => {
            return Err(VmmError::Unsupported {
                backend: "qemu",
                reason: "IGVM launches are done with Cloud Hypervisor".into(),
            })
        }
    }

    // Confidential guests cannot let devices DMA into private memory: virtio
    // must go through the platform IOMMU (bounce buffers), modern only.
    let virtio_extra = if confidential { ",disable-legacy=on,iommu_platform=on" } else { "" };

    for (index, disk) in spec.disks.iter().enumerate() {
        let id = disk_id(index);
        push(&[
            "-blockdev",
            &format!(
                "driver={},node-name={id},read-only={},file.driver=file,file.filename={}",
                disk_format(disk),
                if disk.readonly { "on" } else { "off" },
                opt_path(&disk.path)?
            ),
        ]);
        // werror=report: a full host disk is an I/O error the guest sees,
        // not a VM paused until someone resumes it (the default, "enospc").
        push(&["-device", &format!("virtio-blk-pci,id={id},drive={id},werror=report,rerror=report{virtio_extra}")]);
    }

    match &spec.network {
        Network::None => {}
        Network::User { forwards } => {
            let mut netdev = String::from("user,id=net0");
            for f in forwards {
                let addr = match f.host_addr {
                    std::net::IpAddr::V4(a) => a.to_string(),
                    std::net::IpAddr::V6(a) => format!("[{a}]"),
                };
                netdev.push_str(&format!(",hostfwd=tcp:{addr}:{}-:{}", f.host_port, f.guest_port));
            }
            push(&["-netdev", &netdev]);
            // romfile= : no option ROM, we never network-boot.
            push(&["-device", &format!("virtio-net-pci,id=nic0,netdev=net0,romfile={virtio_extra}")]);
        }
        Network::Tap { tap, mac } => {
            if !valid_tap(tap) {
                return Err(VmmError::InvalidSpec(format!("tap device name {tap:?} is not 1 to 15 of [A-Za-z0-9._-]")));
            }
            if !valid_mac(mac) {
                return Err(VmmError::InvalidSpec(format!("MAC address {mac:?} is not six hex pairs")));
            }
            push(&["-netdev", &format!("tap,id=net0,ifname={tap},script=no,downscript=no")]);
            push(&[
                "-device",
                &format!("virtio-net-pci,id=nic0,netdev=net0,mac={},romfile={virtio_extra}", mac.to_ascii_lowercase()),
            ]);
        }
    }

    if let Some(cid) = spec.vsock_cid {
        push(&["-device", &format!("vhost-vsock-pci,id=vsock0,guest-cid={cid}{virtio_extra}")]);
    }

    for (index, device) in spec.vfio.iter().enumerate() {
        let bdf = vfio_bdf(&device.sysfs_path)?;
        push(&["-device", &format!("vfio-pci,id=vfio{index},host={bdf}")]);
    }

    for index in 0..HOTPLUG_PORTS {
        push(&[
            "-device",
            &format!("pcie-root-port,id={},chassis={},slot={}", hotplug_port_id(index), index + 1, index + 1),
        ]);
    }

    // append=on: O_APPEND, so the log can be capped under the running QEMU.
    push(&["-chardev", &format!("file,id=serial0,path={},append=on", opt_path(&paths.serial_log)?)]);
    push(&["-serial", "chardev:serial0"]);
    push(&["-qmp", &format!("unix:{},server=on,wait=off", opt_path(&paths.qmp_socket)?)]);
    push(&["-pidfile", &arg_path(&paths.pidfile)?]);
    Ok(args)
}
