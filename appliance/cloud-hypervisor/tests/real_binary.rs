//! Against a real Cloud Hypervisor, only where `CLOUD_HYPERVISOR_BIN` names
//! one (no registry ships it): boots a 300-byte PVH ELF stub guest that writes
//! a marker to COM1 and halts, then drives every operation through the trait.

use std::path::Path;
use std::time::{Duration, Instant};

use dc_vmm::{Accel, Boot, Confidential, Device, Disk, Hypervisor, Network, VmSpec, VmState};
use dc_vmm_ch::CloudHypervisor;

const LOAD_ADDR: u64 = 0x10_0000;
const MARKER: &str = "DC-STUB-OK";

/// A minimal ELF64 kernel for PVH boot: one PT_LOAD at 1 MiB and a PT_NOTE
/// with XEN_ELFNOTE_PHYS32_ENTRY. The vCPU enters in 32-bit protected mode;
/// the code writes MARKER to port 0x3f8 and halts forever.
fn stub_kernel() -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let note_off = EHDR + 2 * PHDR; // 176
    let note_len = 12 + 4 + 4;
    let code_off = (note_off + note_len + 15) & !15;
    let mut code = vec![0x66, 0xBA, 0xF8, 0x03]; // mov dx, 0x3f8
    for b in MARKER.bytes().chain(std::iter::once(b'\n')) {
        code.extend_from_slice(&[0xB0, b, 0xEE]); // mov al, b; out dx, al
    }
    code.extend_from_slice(&[0xFA, 0xF4, 0xEB, 0xFD]); // cli; hlt; jmp hlt
    let total = code_off + code.len();
    let entry = LOAD_ADDR + code_off as u64;

    let mut f = Vec::with_capacity(total);
    f.extend_from_slice(&[0x7F, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&0x3Eu16.to_le_bytes()); // EM_X86_64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&entry.to_le_bytes());
    f.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&(EHDR as u16).to_le_bytes());
    f.extend_from_slice(&(PHDR as u16).to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes()); // e_phnum
    f.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    let phdr = |f: &mut Vec<u8>, ty: u32, flags: u32, off: u64, len: u64, align: u64| {
        f.extend_from_slice(&ty.to_le_bytes());
        f.extend_from_slice(&flags.to_le_bytes());
        f.extend_from_slice(&off.to_le_bytes());
        f.extend_from_slice(&(LOAD_ADDR + off).to_le_bytes()); // vaddr
        f.extend_from_slice(&(LOAD_ADDR + off).to_le_bytes()); // paddr
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(&align.to_le_bytes());
    };
    phdr(&mut f, 1, 5, 0, total as u64, 0x1000); // PT_LOAD, R+X
    phdr(&mut f, 4, 4, note_off as u64, note_len as u64, 4); // PT_NOTE
    assert_eq!(f.len(), note_off);
    f.extend_from_slice(&4u32.to_le_bytes()); // namesz
    f.extend_from_slice(&4u32.to_le_bytes()); // descsz
    f.extend_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
    f.extend_from_slice(b"Xen\0");
    f.extend_from_slice(&(entry as u32).to_le_bytes());
    f.resize(code_off, 0);
    f.extend_from_slice(&code);
    f
}

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

#[test]
fn boots_a_stub_guest_and_drives_it() {
    let Some(bin) = std::env::var_os("CLOUD_HYPERVISOR_BIN") else {
        eprintln!("skipped: set CLOUD_HYPERVISOR_BIN to a cloud-hypervisor binary (and give access to /dev/kvm) to run this test");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("stub.elf");
    std::fs::write(&kernel, stub_kernel()).unwrap();
    let extra = dir.path().join("extra.raw");
    std::fs::write(&extra, vec![0u8; 1 << 20]).unwrap();
    let run_dir = dir.path().join("c1");
    let spec = VmSpec {
        id: "c1".into(),
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
        vsock_cid: Some(7),
        vfio: vec![],
        confidential: Confidential::None,
        accel: Accel::Kvm,
        run_dir: run_dir.clone(),
    };
    let ch = CloudHypervisor::new(bin);
    ch.check(&spec).unwrap();
    let handle = ch.launch(&spec).unwrap_or_else(|e| {
        let log =
            std::fs::read_to_string(spec.run_dir.join("cloud-hypervisor.log")).unwrap_or_default();
        panic!("launch: {e}\ncloud-hypervisor.log:\n{log}")
    });
    wait_for(
        "the stub's marker on the serial log",
        Duration::from_secs(20),
        || serial(&run_dir).contains(MARKER),
    );

    let info = ch.adopt(&handle).unwrap();
    assert_eq!(info.state, VmState::Running);
    assert_eq!((info.vcpus, info.memory_mib), (1, 128));
    assert!(
        info.devices.iter().any(|d| d == "vsock0"),
        "{:?}",
        info.devices
    );
    ch.counters(&handle).unwrap();
    ch.pause(&handle).unwrap();
    assert_eq!(ch.info(&handle).unwrap().state, VmState::Paused);
    ch.resume(&handle).unwrap();
    assert_eq!(ch.info(&handle).unwrap().state, VmState::Running);

    let id = ch
        .add_device(
            &handle,
            &Device::Disk(Disk {
                path: extra,
                base: None,
                readonly: true,
            }),
        )
        .unwrap();
    assert!(ch.info(&handle).unwrap().devices.contains(&id));
    // The stub guest never acknowledges the ejection; only the request is checked.
    let _ = ch.remove_device(&handle, &id);

    ch.delete(&handle).unwrap();
    assert!(!handle.is_alive());
}
