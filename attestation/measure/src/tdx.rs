//! Intel TDX: MRTD from TDVF metadata, and RTMR1/RTMR2 of QEMU direct kernel
//! boot through OVMF.
//!
//! * **MRTD** is the SHA-384 over the records the TDX module hashes while the
//!   VMM builds the TD: a 128-byte `TDH.MEM.PAGE.ADD` record (`"MEM.PAGE.ADD"`,
//!   zero padding, the GPA at byte 16) for every page added, and for sections
//!   with the `MR_EXTEND` attribute a 128-byte `TDH.MR.EXTEND` record
//!   (`"MR.EXTEND"`, GPA at byte 16) followed by the 256-byte chunk, for every
//!   256-byte chunk. The section list comes from the TDVF descriptor that the
//!   OVMF footer table points to. QEMU 9 and later add and extend page by
//!   page ([`PageAddOrder::SinglePass`], what [`mrtd`] computes); QEMU 8
//!   with the older KVM interface adds all pages of a section first
//!   ([`PageAddOrder::TwoPass`]).
//! * **RTMR1** folds the Authenticode SHA-384 of the kernel (after QEMU
//!   patches its setup header), then the events OVMF logs around starting it:
//!   "Calling EFI Application from Boot Option", the separator, "Exit Boot
//!   Services Invocation" and "Exit Boot Services Returned with Success".
//! * **RTMR2** folds the kernel's load options (the command line plus OVMF's
//!   ` initrd=initrd`, UTF-16LE with a NUL) and the initrd's SHA-384.
//!
//! An RTMR starts at 48 zero bytes; extending it with a digest `d` sets it to
//! `SHA-384(rtmr || d)`.
//!
//! Limits, stated plainly:
//! * RTMR0 is not predicted: it covers the TD HOB and ACPI tables the VMM
//!   generates from the machine's memory size and devices.
//! * Checked against real hardware data (dstack's TDX quotes and their event
//!   logs): the RTMR folding, the four fixed RTMR1 event digests, and that
//!   RTMR1/RTMR2 follow from the kernel-Authenticode, command-line and initrd
//!   digests in the order given here.
//! * Not checked against a real quote, because no vector carries the
//!   firmware, kernel or command line behind one: MRTD of a real TDVF (tests
//!   use a synthetic TDVF against an independent reimplementation), the
//!   UTF-16 command-line encoding, QEMU's setup-header patching, and the
//!   Authenticode hash as OVMF computes it (checked instead against the
//!   SHA-256 Authenticode digest that a distribution's kernel signature
//!   commits to, see [`authenticode_sha256`]).
//! * Authenticode follows the PE/COFF specification as edk2 implements it:
//!   bytes after the last section (less a certificate table) are hashed, and
//!   no padding is added. dstack-mr additionally hashes zero padding up to a
//!   multiple of 8 bytes, so the two differ for images whose size is not a
//!   multiple of 8; which one OVMF matches there is not verified.
//! * QEMU's setup-header patch is modelled for the q35 machine type with the
//!   default ACPI area (0x28000 bytes) and no setup_data (no DTB, no RNG seed).

use crate::ovmf::{self, read_u16, read_u32, read_u64};
use crate::MeasureError;
use sha2::{Digest, Sha256, Sha384};

const PAGE: u64 = 4096;
const MR_EXTEND_CHUNK: usize = 256;

/// Most sections a TDVF descriptor may list.
pub const MAX_TDVF_SECTIONS: usize = 64;
/// Most pages all sections together may add to the TD (1 GiB).
pub const MAX_TDVF_PAGES: u64 = 262_144;
/// Largest PE image or kernel accepted (256 MiB).
pub const MAX_PE_BYTES: usize = 256 * 1024 * 1024;
/// Most PE sections accepted (the PE/COFF limit).
pub const MAX_PE_SECTIONS: usize = 96;
/// ACPI area QEMU reserves below 4 GiB on q35 (`acpi_data_size`).
pub const QEMU_ACPI_DATA_SIZE: u32 = 0x28000;

/// TDVF section attribute: the section's content is extended into MRTD.
pub const ATTRIBUTE_MR_EXTEND: u32 = 0x1;
/// TDVF section attribute: pages are accepted later (TDH.MEM.PAGE.AUG), not added.
pub const ATTRIBUTE_PAGE_AUG: u32 = 0x2;

/// One section of the TDVF descriptor (TDVF specification, "TDVF metadata").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdvfSection {
    /// Offset of the section's data in the firmware image.
    pub data_offset: u32,
    /// Bytes of data in the image.
    pub raw_data_size: u32,
    /// Guest-physical start; page-aligned.
    pub memory_address: u64,
    /// Bytes of guest memory; a multiple of 4096, at least `raw_data_size`.
    pub memory_data_size: u64,
    /// Section type: 0 BFV, 1 CFV, 2 TD_HOB, 3 TempMem, 4 PermMem, 5 Payload,
    /// 6 PayloadParam.
    pub section_type: u32,
    /// [`ATTRIBUTE_MR_EXTEND`] and [`ATTRIBUTE_PAGE_AUG`] bits.
    pub attributes: u32,
}

impl TdvfSection {
    /// The section type's name in the TDVF specification.
    pub fn type_name(&self) -> &'static str {
        match self.section_type {
            0 => "BFV",
            1 => "CFV",
            2 => "TD_HOB",
            3 => "TempMem",
            4 => "PermMem",
            5 => "Payload",
            6 => "PayloadParam",
            _ => "unknown",
        }
    }
}

/// Order in which the VMM adds and extends pages; it changes MRTD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageAddOrder {
    /// Each page is added, then its chunks extended (QEMU ≥ 9).
    SinglePass,
    /// All pages of a section are added, then all extended (QEMU 8 patches).
    TwoPass,
}

/// Reads the TDVF descriptor that the OVMF footer table points to.
pub fn tdvf_sections(fw: &[u8]) -> Result<Vec<TdvfSection>, MeasureError> {
    let entries = ovmf::footer_entries(fw)?;
    let offset = ovmf::entry_u32(
        &entries,
        &ovmf::TDX_METADATA_OFFSET_GUID,
        "TDX metadata entry",
    )?
    .ok_or_else(|| {
        MeasureError::firmware(
            "TDX metadata entry",
            "the TDX metadata offset GUID in the footer table",
            "none",
        )
    })?;
    let start = fw.len().checked_sub(offset as usize).ok_or_else(|| {
        MeasureError::firmware(
            "TDVF descriptor offset",
            format!("at most the image size {}", fw.len()),
            offset,
        )
    })?;
    let header = fw.get(start..start + 16).ok_or_else(|| {
        MeasureError::firmware("TDVF descriptor", "16 header bytes", fw.len() - start)
    })?;
    if &header[..4] != b"TDVF" {
        return Err(MeasureError::firmware(
            "TDVF descriptor signature",
            "\"TDVF\"",
            hex::encode(&header[..4]),
        ));
    }
    let length = read_u32(header, 4).unwrap_or(0) as usize;
    let version = read_u32(header, 8).unwrap_or(0);
    if version != 1 {
        return Err(MeasureError::firmware(
            "TDVF descriptor version",
            "1",
            version,
        ));
    }
    let count = read_u32(header, 12).unwrap_or(0) as usize;
    if count > MAX_TDVF_SECTIONS {
        return Err(MeasureError::too_large(
            "TDVF sections",
            MAX_TDVF_SECTIONS as u64,
            count as u64,
        ));
    }
    let needed = 16 + 32 * count;
    if length < needed {
        return Err(MeasureError::firmware(
            "TDVF descriptor length",
            format!("at least {needed} for {count} sections"),
            length,
        ));
    }
    let table = fw.get(start + 16..start + needed).ok_or_else(|| {
        MeasureError::firmware(
            "TDVF descriptor",
            format!("{needed} bytes inside the image"),
            fw.len() - start,
        )
    })?;
    let mut pages_added = 0u64;
    let mut sections = Vec::with_capacity(count);
    for raw in table.chunks_exact(32) {
        let s = TdvfSection {
            data_offset: read_u32(raw, 0).unwrap_or(0),
            raw_data_size: read_u32(raw, 4).unwrap_or(0),
            memory_address: read_u64(raw, 8).unwrap_or(0),
            memory_data_size: read_u64(raw, 16).unwrap_or(0),
            section_type: read_u32(raw, 24).unwrap_or(0),
            attributes: read_u32(raw, 28).unwrap_or(0),
        };
        if s.memory_address & (PAGE - 1) != 0 {
            return Err(MeasureError::firmware(
                "TDVF section address",
                "a multiple of 0x1000",
                format!("{:#x}", s.memory_address),
            ));
        }
        if s.memory_data_size & (PAGE - 1) != 0 || s.memory_data_size < u64::from(s.raw_data_size) {
            return Err(MeasureError::firmware(
                "TDVF section memory size",
                format!(
                    "a multiple of 0x1000 and at least the raw size {:#x}",
                    s.raw_data_size
                ),
                format!("{:#x}", s.memory_data_size),
            ));
        }
        if s.memory_address
            .checked_add(s.memory_data_size)
            .is_none_or(|end| end > 1 << 52)
        {
            return Err(MeasureError::firmware(
                "TDVF section range",
                "below 2^52",
                format!("{:#x}+{:#x}", s.memory_address, s.memory_data_size),
            ));
        }
        if s.attributes & ATTRIBUTE_PAGE_AUG == 0 {
            pages_added += s.memory_data_size / PAGE;
            if pages_added > MAX_TDVF_PAGES {
                return Err(MeasureError::too_large(
                    "pages added by TDVF sections",
                    MAX_TDVF_PAGES,
                    pages_added,
                ));
            }
        }
        if s.attributes & ATTRIBUTE_MR_EXTEND != 0 {
            // QEMU extends the whole memory size from the image's bytes.
            let end = u64::from(s.data_offset) + s.memory_data_size;
            if end > fw.len() as u64 {
                return Err(MeasureError::firmware(
                    "TDVF MR_EXTEND section",
                    format!("data inside the {}-byte image", fw.len()),
                    format!("data up to byte {end:#x}"),
                ));
            }
        }
        sections.push(s);
    }
    Ok(sections)
}

/// Writes a TDVF descriptor of `sections` at byte `descriptor_at` of `fw`,
/// and an OVMF footer table whose TDX entry points at it: the layout
/// [`tdvf_sections`] reads back. For tools and tests that build firmware
/// images. The descriptor must end before the footer table starts.
pub fn write_tdvf_metadata(
    fw: &mut [u8],
    descriptor_at: usize,
    sections: &[TdvfSection],
) -> Result<(), MeasureError> {
    if sections.len() > MAX_TDVF_SECTIONS {
        return Err(MeasureError::too_large(
            "TDVF sections",
            MAX_TDVF_SECTIONS as u64,
            sections.len() as u64,
        ));
    }
    let offset = fw
        .len()
        .checked_sub(descriptor_at)
        .and_then(|o| u32::try_from(o).ok())
        .ok_or_else(|| {
            MeasureError::firmware(
                "TDVF descriptor offset",
                format!("inside the {}-byte image", fw.len()),
                descriptor_at,
            )
        })?;
    let offset = offset.to_le_bytes();
    let entries: [([u8; 16], &[u8]); 1] = [(ovmf::TDX_METADATA_OFFSET_GUID, &offset)];
    let len = 16 + 32 * sections.len();
    let table_start = fw.len().checked_sub(32 + ovmf::footer_table_len(&entries));
    if table_start.is_none_or(|t| descriptor_at + len > t) {
        return Err(MeasureError::firmware(
            "TDVF descriptor",
            format!("{len} bytes ending before the footer table"),
            format!("at {descriptor_at:#x} in a {}-byte image", fw.len()),
        ));
    }
    ovmf::write_footer_table(fw, &entries)?;
    let d = &mut fw[descriptor_at..descriptor_at + len];
    d[..4].copy_from_slice(b"TDVF");
    d[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    d[8..12].copy_from_slice(&1u32.to_le_bytes());
    d[12..16].copy_from_slice(&(sections.len() as u32).to_le_bytes());
    for (s, raw) in sections.iter().zip(d[16..].chunks_exact_mut(32)) {
        raw[..4].copy_from_slice(&s.data_offset.to_le_bytes());
        raw[4..8].copy_from_slice(&s.raw_data_size.to_le_bytes());
        raw[8..16].copy_from_slice(&s.memory_address.to_le_bytes());
        raw[16..24].copy_from_slice(&s.memory_data_size.to_le_bytes());
        raw[24..28].copy_from_slice(&s.section_type.to_le_bytes());
        raw[28..32].copy_from_slice(&s.attributes.to_le_bytes());
    }
    Ok(())
}

/// MRTD of a TD built by QEMU ≥ 9 from the TDVF image `tdvf`.
pub fn mrtd(tdvf: &[u8]) -> Result<[u8; 48], MeasureError> {
    mrtd_with_order(tdvf, PageAddOrder::SinglePass)
}

/// MRTD of a TD built from `tdvf` with the given page-add order.
pub fn mrtd_with_order(tdvf: &[u8], order: PageAddOrder) -> Result<[u8; 48], MeasureError> {
    let sections = tdvf_sections(tdvf)?;
    let mut h = Sha384::new();
    for s in &sections {
        let pages = s.memory_data_size / PAGE;
        let adds = s.attributes & ATTRIBUTE_PAGE_AUG == 0;
        let extends = s.attributes & ATTRIBUTE_MR_EXTEND != 0;
        if !adds && !extends {
            continue;
        }
        match order {
            PageAddOrder::SinglePass => {
                for p in 0..pages {
                    if adds {
                        page_add(&mut h, s, p);
                    }
                    if extends {
                        mr_extend(&mut h, tdvf, s, p);
                    }
                }
            }
            PageAddOrder::TwoPass => {
                if adds {
                    (0..pages).for_each(|p| page_add(&mut h, s, p));
                }
                if extends {
                    (0..pages).for_each(|p| mr_extend(&mut h, tdvf, s, p));
                }
            }
        }
    }
    Ok(h.finalize().into())
}

fn record(tag: &[u8], gpa: u64) -> [u8; 128] {
    let mut r = [0u8; 128];
    r[..tag.len()].copy_from_slice(tag);
    r[16..24].copy_from_slice(&gpa.to_le_bytes());
    r
}

fn page_add(h: &mut Sha384, s: &TdvfSection, page: u64) {
    h.update(record(b"MEM.PAGE.ADD", s.memory_address + page * PAGE));
}

fn mr_extend(h: &mut Sha384, fw: &[u8], s: &TdvfSection, page: u64) {
    for chunk in 0..(PAGE as usize / MR_EXTEND_CHUNK) {
        let within = page as usize * PAGE as usize + chunk * MR_EXTEND_CHUNK;
        h.update(record(b"MR.EXTEND", s.memory_address + within as u64));
        // tdvf_sections() checked that the section's bytes lie in the image.
        let at = s.data_offset as usize + within;
        h.update(&fw[at..at + MR_EXTEND_CHUNK]);
    }
}

/// Authenticode SHA-384 of a PE/COFF image: the digest OVMF logs for an EFI
/// application it starts (the kernel's EFI stub).
pub fn authenticode_sha384(pe: &[u8]) -> Result<[u8; 48], MeasureError> {
    Ok(authenticode::<Sha384>(pe)?.into())
}

/// Authenticode SHA-256 of a PE/COFF image: the digest a signed kernel's
/// Authenticode signature commits to, for checking [`authenticode_sha384`]'s
/// byte selection against a signed image.
pub fn authenticode_sha256(pe: &[u8]) -> Result<[u8; 32], MeasureError> {
    Ok(authenticode::<Sha256>(pe)?.into())
}

fn pe_u16(pe: &[u8], at: usize, what: &'static str) -> Result<u16, MeasureError> {
    read_u16(pe, at).ok_or_else(|| {
        MeasureError::pe(
            what,
            format!("2 bytes at {at:#x}"),
            format!("an image of {} bytes", pe.len()),
        )
    })
}

fn pe_u32(pe: &[u8], at: usize, what: &'static str) -> Result<u32, MeasureError> {
    read_u32(pe, at).ok_or_else(|| {
        MeasureError::pe(
            what,
            format!("4 bytes at {at:#x}"),
            format!("an image of {} bytes", pe.len()),
        )
    })
}

fn authenticode<D: Digest>(pe: &[u8]) -> Result<sha2::digest::Output<D>, MeasureError> {
    if pe.len() > MAX_PE_BYTES {
        return Err(MeasureError::too_large(
            "PE image bytes",
            MAX_PE_BYTES as u64,
            pe.len() as u64,
        ));
    }
    if pe.get(..2) != Some(b"MZ") {
        return Err(MeasureError::pe(
            "DOS header",
            "\"MZ\"",
            hex::encode(pe.get(..2).unwrap_or(pe)),
        ));
    }
    let nt = pe_u32(pe, 0x3c, "e_lfanew")? as usize;
    if pe.get(nt..nt.saturating_add(4)) != Some(b"PE\0\0") {
        return Err(MeasureError::pe(
            "signature",
            "\"PE\\0\\0\" at e_lfanew",
            format!("offset {nt:#x}"),
        ));
    }
    let coff = nt + 4;
    let section_count = usize::from(pe_u16(pe, coff + 2, "NumberOfSections")?);
    let optional_size = usize::from(pe_u16(pe, coff + 16, "SizeOfOptionalHeader")?);
    let opt = coff + 20;
    let (dirs_count_at, dirs_at) = match pe_u16(pe, opt, "optional header magic")? {
        0x10b => (opt + 92, opt + 96),
        0x20b => (opt + 108, opt + 112),
        m => {
            return Err(MeasureError::pe(
                "optional header magic",
                "0x10b or 0x20b",
                format!("{m:#x}"),
            ))
        }
    };
    let headers_len = pe_u32(pe, opt + 60, "SizeOfHeaders")? as usize;
    let dir_count = pe_u32(pe, dirs_count_at, "NumberOfRvaAndSizes")?;
    let checksum = opt + 64;
    // The certificate-table directory entry is the fifth (index 4).
    let cert_dir = (dir_count > 4).then_some(dirs_at + 4 * 8);
    let hashed_header_end = cert_dir.map_or(checksum + 4, |d| d + 8);
    if headers_len > pe.len() || headers_len < hashed_header_end {
        return Err(MeasureError::pe(
            "SizeOfHeaders",
            format!(
                "between {hashed_header_end:#x} and the image size {:#x}",
                pe.len()
            ),
            format!("{headers_len:#x}"),
        ));
    }
    let mut h = D::new();
    h.update(&pe[..checksum]);
    match cert_dir {
        Some(d) => {
            h.update(&pe[checksum + 4..d]);
            h.update(&pe[d + 8..headers_len]);
        }
        None => h.update(&pe[checksum + 4..headers_len]),
    }

    if section_count > MAX_PE_SECTIONS {
        return Err(MeasureError::too_large(
            "PE sections",
            MAX_PE_SECTIONS as u64,
            section_count as u64,
        ));
    }
    let table = opt + optional_size;
    let mut sections = Vec::with_capacity(section_count);
    for i in 0..section_count {
        let at = table + 40 * i;
        let size = pe_u32(pe, at + 16, "SizeOfRawData")? as usize;
        let ptr = pe_u32(pe, at + 20, "PointerToRawData")? as usize;
        if size > 0 {
            sections.push((ptr, size));
        }
    }
    sections.sort_unstable();
    let mut hashed = headers_len;
    for (ptr, size) in sections {
        let data = pe.get(ptr..ptr + size).ok_or_else(|| {
            MeasureError::pe(
                "section data",
                format!("{ptr:#x}..{:#x} inside the image", ptr + size),
                format!("an image of {:#x} bytes", pe.len()),
            )
        })?;
        h.update(data);
        hashed += size;
    }
    if pe.len() > hashed {
        let cert_len = match cert_dir {
            Some(d) => pe_u32(pe, d + 4, "certificate table size")? as usize,
            None => 0,
        };
        let end = pe
            .len()
            .checked_sub(cert_len)
            .filter(|&end| end >= hashed)
            .ok_or_else(|| {
                MeasureError::pe(
                    "certificate table size",
                    format!("at most the {} bytes after the sections", pe.len() - hashed),
                    cert_len,
                )
            })?;
        h.update(&pe[hashed..end]);
    }
    Ok(h.finalize())
}

/// The kernel image as QEMU hands it to OVMF for direct boot: the x86 setup
/// header patched as QEMU's `x86_load_linux` does on a q35 machine with
/// `memory_size_bytes` of RAM and an initrd of `initrd_len` bytes.
pub fn qemu_patch_kernel(
    kernel: &[u8],
    initrd_len: usize,
    memory_size_bytes: u64,
) -> Result<Vec<u8>, MeasureError> {
    let bad = |what: &'static str, expected: &str, found: String| MeasureError::Kernel {
        what,
        expected: expected.into(),
        found,
    };
    if kernel.len() > MAX_PE_BYTES {
        return Err(MeasureError::too_large(
            "kernel bytes",
            MAX_PE_BYTES as u64,
            kernel.len() as u64,
        ));
    }
    if kernel.len() < 0x1000 {
        return Err(bad(
            "length",
            "at least 4096 bytes",
            kernel.len().to_string(),
        ));
    }
    let initrd_len = u32::try_from(initrd_len).map_err(|_| {
        MeasureError::too_large("initrd bytes", u64::from(u32::MAX), initrd_len as u64)
    })?;
    let mut k = kernel.to_vec();
    let protocol = if &k[0x202..0x206] == b"HdrS" {
        u16::from_le_bytes([k[0x206], k[0x207]])
    } else {
        0
    };
    let (real_addr, cmdline_addr): (u32, u32) = if protocol < 0x200 || k[0x211] & 0x01 == 0 {
        (0x90000, 0x9a000)
    } else {
        (0x10000, 0x20000)
    };
    if protocol >= 0x200 {
        k[0x210] = 0xb0; // type_of_loader: QEMU
    }
    if protocol >= 0x201 {
        k[0x211] |= 0x80; // loadflags: CAN_USE_HEAP
        k[0x224..0x228].copy_from_slice(&(cmdline_addr - real_addr - 0x200).to_le_bytes());
    }
    if protocol >= 0x202 {
        k[0x228..0x22c].copy_from_slice(&cmdline_addr.to_le_bytes());
    } else {
        k[0x20..0x22].copy_from_slice(&0xa33fu16.to_le_bytes());
        k[0x22..0x24].copy_from_slice(&((cmdline_addr - real_addr) as u16).to_le_bytes());
    }
    if initrd_len > 0 {
        if protocol < 0x200 {
            return Err(bad(
                "boot protocol",
                "0x200 or later to take an initrd",
                format!("{protocol:#x}"),
            ));
        }
        let mut initrd_max: u32 =
            if protocol >= 0x20c && u16::from_le_bytes([k[0x236], k[0x237]]) & 0x40 != 0 {
                u32::MAX // XLF_CAN_BE_LOADED_ABOVE_4G
            } else if protocol >= 0x203 {
                match u32::from_le_bytes([k[0x22c], k[0x22d], k[0x22e], k[0x22f]]) {
                    0 => 0x37ff_ffff,
                    max => max,
                }
            } else {
                0x37ff_ffff
            };
        // q35 keeps RAM below 0xb0000000 in low memory, larger RAM splits at 2 GiB.
        let lowmem: u64 = if memory_size_bytes >= 0xb000_0000 {
            0x8000_0000
        } else {
            0xb000_0000
        };
        let below_4g = memory_size_bytes.min(lowmem) as u32;
        let available = below_4g.checked_sub(QEMU_ACPI_DATA_SIZE).ok_or_else(|| {
            bad(
                "memory size",
                "more than the ACPI area",
                format!("{memory_size_bytes:#x}"),
            )
        })?;
        if initrd_max >= available {
            initrd_max = available - 1;
        }
        if initrd_len >= initrd_max {
            return Err(bad(
                "initrd size",
                "below the highest initrd address",
                format!("{initrd_len:#x} >= {initrd_max:#x}"),
            ));
        }
        let initrd_addr = (initrd_max - initrd_len) & !4095;
        k[0x218..0x21c].copy_from_slice(&initrd_addr.to_le_bytes());
        k[0x21c..0x220].copy_from_slice(&initrd_len.to_le_bytes());
    }
    Ok(k)
}

/// Extends a zero RTMR with each digest in turn.
pub fn rtmr_fold(events: &[[u8; 48]]) -> [u8; 48] {
    events.iter().fold([0u8; 48], |rtmr, event| {
        let mut h = Sha384::new();
        h.update(rtmr);
        h.update(event);
        h.finalize().into()
    })
}

/// The RTMR1 event digests OVMF logs when it starts a direct-boot kernel
/// whose (patched) Authenticode SHA-384 is `kernel_authenticode`.
pub fn rtmr1_events(kernel_authenticode: &[u8; 48]) -> [[u8; 48]; 5] {
    [
        *kernel_authenticode,
        Sha384::digest(b"Calling EFI Application from Boot Option").into(),
        Sha384::digest([0u8; 4]).into(), // EV_SEPARATOR
        Sha384::digest(b"Exit Boot Services Invocation").into(),
        Sha384::digest(b"Exit Boot Services Returned with Success").into(),
    ]
}

/// RTMR1 given the patched kernel's Authenticode SHA-384.
pub fn rtmr1_from_kernel_authenticode(kernel_authenticode: &[u8; 48]) -> [u8; 48] {
    rtmr_fold(&rtmr1_events(kernel_authenticode))
}

/// RTMR1 for QEMU direct boot of `kernel` with an initrd of `initrd_len`
/// bytes on a q35 machine with `memory_size_bytes` of RAM.
pub fn rtmr1_direct_boot(
    kernel: &[u8],
    initrd_len: usize,
    memory_size_bytes: u64,
) -> Result<[u8; 48], MeasureError> {
    let patched = qemu_patch_kernel(kernel, initrd_len, memory_size_bytes)?;
    Ok(rtmr1_from_kernel_authenticode(&authenticode_sha384(
        &patched,
    )?))
}

/// Digest of the kernel's load options as OVMF measures them: `cmdline` (as
/// given to QEMU `-append`), plus ` initrd=initrd` when there is an initrd,
/// in UTF-16LE with a terminating NUL.
pub fn load_options_sha384(cmdline: &str, has_initrd: bool) -> [u8; 48] {
    let suffix = if has_initrd { " initrd=initrd" } else { "" };
    let mut h = Sha384::new();
    for unit in cmdline
        .encode_utf16()
        .chain(suffix.encode_utf16())
        .chain([0])
    {
        h.update(unit.to_le_bytes());
    }
    h.finalize().into()
}

/// The RTMR2 event digests: load options, then the initrd when there is one.
pub fn rtmr2_events(cmdline: &str, initrd: &[u8]) -> Vec<[u8; 48]> {
    let mut events = vec![load_options_sha384(cmdline, !initrd.is_empty())];
    if !initrd.is_empty() {
        events.push(Sha384::digest(initrd).into());
    }
    events
}

/// RTMR2 for QEMU direct boot with kernel command line `cmdline` and `initrd`.
/// With no initrd only the load-options event is folded (not checked against
/// real data).
pub fn rtmr2_direct_boot(cmdline: &str, initrd: &[u8]) -> [u8; 48] {
    rtmr_fold(&rtmr2_events(cmdline, initrd))
}

#[cfg(test)]
mod tests;
