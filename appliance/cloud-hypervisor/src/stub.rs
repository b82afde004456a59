//! A 249-byte PVH ELF stub guest for checks against a real Cloud
//! Hypervisor on hosts whose KVM cannot run Linux (nested, software KVM):
//! it writes [`MARKER`] to COM1 and halts. The backend's real-binary tests
//! and the appliance benchmark boot it.

/// Where the stub is loaded (1 MiB).
pub const LOAD_ADDR: u64 = 0x10_0000;
/// The line the stub writes to COM1 once it runs.
pub const MARKER: &str = "DC-STUB-OK";

/// A minimal ELF64 kernel for PVH boot: one PT_LOAD at 1 MiB and a PT_NOTE
/// with XEN_ELFNOTE_PHYS32_ENTRY. The vCPU enters in 32-bit protected mode;
/// the code writes MARKER to port 0x3f8 and halts forever.
pub fn stub_kernel() -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_stub_is_a_small_pvh_elf() {
        let k = super::stub_kernel();
        assert_eq!(&k[..4], b"\x7fELF");
        assert!(k.windows(4).any(|w| w == b"Xen\0"), "the PVH entry note");
        assert!(k.windows(super::MARKER.len()).count() > 0 && k.len() < 512);
    }
}
