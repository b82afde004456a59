//! AMD SEV-SNP launch digest for QEMU direct kernel boot with OVMF.
//!
//! The PSP folds every page the VMM adds with `SNP_LAUNCH_UPDATE` into a
//! SHA-384 chain: each step hashes a 0x70-byte PAGE_INFO record (the digest so
//! far, the page's content digest, the record length, the page type, the IMI
//! flag, three VMPL permission bytes and the GPA). The final value is the
//! report's `MEASUREMENT`. The order QEMU uses is: the OVMF image as normal
//! pages (its result is the `ovmf_hash` seed), then each SEV metadata section
//! of OVMF in table order (zero, secrets, CPUID pages, and the page that
//! carries the SEV hashes table of kernel, initrd and command line), then one
//! VMSA page per vCPU.
//!
//! The [`SnpMeasureInput`] document carries only hashes and small numbers, so
//! an auditor can recompute a measurement without the firmware or kernel.
//! Numbers may be JSON integers or "0x…" strings:
//!
//! ```text
//! { "ovmf_hash": "<96 hex digits>",
//!   "ovmf_sections": [ {"gpa": "0x800000", "size": "0x9000", "type": "snp_sec_mem"},
//!                      {"gpa": "0x810000", "size": 4096, "type": "snp_kernel_hashes"}, … ],
//!   "sev_hashes_table_gpa": "0x810c00", "reset_eip": "0x80b004",
//!   "kernel_sha256": "<64 hex digits>", "initrd_sha256": "<64 hex digits>",
//!   "cmdline": "console=ttyS0", "vcpus": 2, "vcpu_type": "EPYC-v4",
//!   "guest_features": "0x1", "vmm": "qemu" }
//! ```
//!
//! Limits: only the QEMU VMM's initial register state is modelled (not EC2 or
//! GCE); only direct kernel boot (a document always has kernel and initrd
//! hashes); no SVSM. The algorithm is checked against a hardware-signed
//! report (dstack's SNP vector) and against virtee/sev-snp-measure's expected
//! values for its OVMF fixtures.

use crate::hexser::{hex_array, num_u32, num_u64};
use crate::ovmf::{self, read_u32};
use crate::MeasureError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha384};

const PAGE: u64 = 4096;
const LD_BYTES: usize = 48;

/// Most vCPUs a document may declare.
pub const MAX_VCPUS: u32 = 512;
/// Most OVMF metadata sections a document or firmware may declare.
pub const MAX_SECTIONS: usize = 64;
/// Longest kernel command line accepted, in bytes.
pub const MAX_CMDLINE_BYTES: usize = 64 * 1024;
/// Largest JSON document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Most 4 KiB pages all metadata sections together may cover (256 MiB).
pub const MAX_SECTION_PAGES: u64 = 65_536;
/// Largest OVMF image accepted by [`SnpMeasureInput::from_files`] (32 MiB).
pub const MAX_OVMF_BYTES: usize = 32 * 1024 * 1024;

/// GPA at which every VMSA page is recorded: `(u64)-1`, page-aligned, with
/// the bits above 51 cleared.
const VMSA_GPA: u64 = 0x0000_FFFF_FFFF_F000;
/// The bootstrap processor starts at the x86 reset vector.
const BSP_EIP: u32 = 0xFFFF_FFF0;

/// The kind of an OVMF SEV metadata section, which decides how its pages are
/// measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SectionType {
    /// Pre-validated zero memory (measured as zero pages).
    SnpSecMem,
    /// The SNP secrets page (measured as a secrets page, content not hashed).
    SnpSecrets,
    /// The CPUID page (measured as a CPUID page, content not hashed).
    Cpuid,
    /// The SVSM calling-area page (measured as zero pages).
    SvsmCaa,
    /// The page carrying QEMU's SEV hashes table (measured as a normal page).
    SnpKernelHashes,
}

impl SectionType {
    /// Maps OVMF's numeric section type (OvmfSevMetadata.asm) to the enum.
    pub fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::SnpSecMem),
            2 => Some(Self::SnpSecrets),
            3 => Some(Self::Cpuid),
            4 => Some(Self::SvsmCaa),
            0x10 => Some(Self::SnpKernelHashes),
            _ => None,
        }
    }
}

/// One SEV metadata section of OVMF: a GPA range and how it is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OvmfSection {
    /// Guest-physical start address; page-aligned.
    #[serde(with = "num_u64")]
    pub gpa: u64,
    /// Length in bytes; a non-zero multiple of 4096.
    #[serde(with = "num_u64")]
    pub size: u64,
    /// How the section's pages are measured.
    #[serde(rename = "type")]
    pub section_type: SectionType,
}

/// Everything the SNP launch digest of a QEMU direct-boot guest depends on,
/// as hashes and numbers. This is the JSON document an auditor checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpMeasureInput {
    /// Launch digest after measuring OVMF's pages: the seed of the chain.
    #[serde(with = "hex_array")]
    pub ovmf_hash: [u8; 48],
    /// OVMF's SEV metadata sections, in the firmware's table order.
    #[serde(deserialize_with = "bounded_sections")]
    pub ovmf_sections: Vec<OvmfSection>,
    /// GPA of the SEV hashes table inside the `snp_kernel_hashes` page.
    #[serde(with = "num_u64")]
    pub sev_hashes_table_gpa: u64,
    /// Start address of application processors (OVMF's SEV-ES reset block).
    #[serde(with = "num_u32")]
    pub reset_eip: u32,
    /// SHA-256 of the kernel image as passed to QEMU `-kernel`.
    #[serde(with = "hex_array")]
    pub kernel_sha256: [u8; 32],
    /// SHA-256 of the initrd as passed to QEMU `-initrd` (of no bytes if none).
    #[serde(with = "hex_array")]
    pub initrd_sha256: [u8; 32],
    /// Kernel command line exactly as passed to QEMU `-append`; QEMU hashes
    /// it with a terminating NUL.
    pub cmdline: String,
    /// Number of vCPUs (one VMSA page each).
    pub vcpus: u32,
    /// QEMU CPU model, e.g. `EPYC-v4`, `EPYC-Milan`, `EPYC-Genoa`; decides the
    /// CPUID signature placed in RDX of each VMSA.
    pub vcpu_type: String,
    /// SEV_FEATURES of the VMSA (bit 0, SNPActive, must be set).
    #[serde(with = "num_u64")]
    pub guest_features: u64,
    /// The VMM whose initial vCPU state is modelled; only `qemu`.
    #[serde(default = "default_vmm")]
    pub vmm: String,
}

fn default_vmm() -> String {
    "qemu".to_string()
}

fn bounded_sections<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<OvmfSection>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<OvmfSection>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {MAX_SECTIONS} sections")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element()? {
                if out.len() == MAX_SECTIONS {
                    return Err(serde::de::Error::custom(format!(
                        "expected at most {MAX_SECTIONS} ovmf_sections, found more"
                    )));
                }
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V)
}

/// What an OVMF image's footer table says about SEV launches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OvmfInfo {
    /// Image length in bytes.
    pub size_bytes: u64,
    /// GPA of the image's first byte: QEMU maps it to end at 4 GiB.
    pub load_gpa: u64,
    /// SEV metadata sections, in table order (empty when the image has none).
    pub sections: Vec<OvmfSection>,
    /// GPA of the SEV hashes table, when the image supports kernel hashes.
    pub sev_hashes_table_gpa: Option<u64>,
    /// SEV-ES AP reset address, when the image has the reset block.
    pub reset_eip: Option<u32>,
    /// Offset from the image end of the TDVF descriptor, for TDX-capable images.
    pub tdx_metadata_offset: Option<u32>,
}

/// Parses the footer GUID table of an OVMF image (the whole image, or any
/// suffix of it that contains the table and the metadata it points to).
pub fn ovmf_info(ovmf: &[u8]) -> Result<OvmfInfo, MeasureError> {
    let entries = ovmf::footer_entries(ovmf)?;
    let sev_hashes_table_gpa = ovmf::entry_u32(
        &entries,
        &ovmf::SEV_HASH_TABLE_RV_GUID,
        "SEV hashes table entry",
    )?
    .map(u64::from);
    let reset_eip = ovmf::entry_u32(
        &entries,
        &ovmf::SEV_ES_RESET_BLOCK_GUID,
        "SEV-ES reset block entry",
    )?;
    let tdx_metadata_offset = ovmf::entry_u32(
        &entries,
        &ovmf::TDX_METADATA_OFFSET_GUID,
        "TDX metadata entry",
    )?;
    let sections = match ovmf::entry_u32(&entries, &ovmf::SEV_METADATA_GUID, "SEV metadata entry")?
    {
        None => Vec::new(),
        Some(offset_from_end) => sev_metadata_sections(ovmf, offset_from_end)?,
    };
    let size_bytes = ovmf.len() as u64;
    let load_gpa = (1u64 << 32)
        .checked_sub(size_bytes)
        .ok_or_else(|| MeasureError::too_large("OVMF image bytes", 1 << 32, size_bytes))?;
    Ok(OvmfInfo {
        size_bytes,
        load_gpa,
        sections,
        sev_hashes_table_gpa,
        reset_eip,
        tdx_metadata_offset,
    })
}

/// Reads the `ASEV` metadata block `offset_from_end` bytes before the image end.
fn sev_metadata_sections(
    fw: &[u8],
    offset_from_end: u32,
) -> Result<Vec<OvmfSection>, MeasureError> {
    let start = fw
        .len()
        .checked_sub(offset_from_end as usize)
        .ok_or_else(|| {
            MeasureError::firmware(
                "SEV metadata offset",
                format!("at most the image size {}", fw.len()),
                offset_from_end,
            )
        })?;
    let header = fw.get(start..start + 16).ok_or_else(|| {
        MeasureError::firmware("SEV metadata header", "16 bytes", fw.len() - start)
    })?;
    if &header[..4] != b"ASEV" {
        return Err(MeasureError::firmware(
            "SEV metadata signature",
            "\"ASEV\"",
            hex::encode(&header[..4]),
        ));
    }
    let version = read_u32(header, 8).unwrap_or(0);
    if version != 1 {
        return Err(MeasureError::firmware("SEV metadata version", "1", version));
    }
    let count = read_u32(header, 12).unwrap_or(0);
    if count as usize > MAX_SECTIONS {
        return Err(MeasureError::too_large(
            "SEV metadata sections",
            MAX_SECTIONS as u64,
            u64::from(count),
        ));
    }
    let declared = read_u32(header, 4).unwrap_or(0) as usize;
    let needed = 16 + 12 * count as usize;
    if declared < needed {
        return Err(MeasureError::firmware(
            "SEV metadata size",
            format!("at least {needed} for {count} sections"),
            declared,
        ));
    }
    let items = fw.get(start + 16..start + needed).ok_or_else(|| {
        MeasureError::firmware(
            "SEV metadata",
            format!("{needed} bytes inside the image"),
            fw.len() - start,
        )
    })?;
    items
        .chunks_exact(12)
        .map(|item| {
            let raw_type = read_u32(item, 8).unwrap_or(0);
            let section_type = SectionType::from_raw(raw_type).ok_or_else(|| {
                MeasureError::firmware(
                    "SEV metadata section type",
                    "1, 2, 3, 4 or 0x10",
                    format!("{raw_type:#x}"),
                )
            })?;
            Ok(OvmfSection {
                gpa: u64::from(read_u32(item, 0).unwrap_or(0)),
                size: u64::from(read_u32(item, 4).unwrap_or(0)),
                section_type,
            })
        })
        .collect()
}

/// Launch digest after measuring `ovmf` as normal pages ending at 4 GiB:
/// the `ovmf_hash` seed of [`SnpMeasureInput`].
pub fn ovmf_hash(ovmf: &[u8]) -> Result<[u8; 48], MeasureError> {
    if ovmf.len() > MAX_OVMF_BYTES {
        return Err(MeasureError::too_large(
            "OVMF image bytes",
            MAX_OVMF_BYTES as u64,
            ovmf.len() as u64,
        ));
    }
    if ovmf.is_empty() || ovmf.len() & (PAGE as usize - 1) != 0 {
        return Err(MeasureError::firmware(
            "size",
            "a non-zero multiple of 4096 bytes",
            ovmf.len(),
        ));
    }
    let mut gctx = Gctx::new([0; LD_BYTES]);
    gctx.normal_pages((1u64 << 32) - ovmf.len() as u64, ovmf);
    Ok(gctx.ld)
}

impl SnpMeasureInput {
    /// Parses and validates a JSON measurement document (at most
    /// [`MAX_DOCUMENT_BYTES`]); unknown fields are rejected.
    pub fn from_json(bytes: &[u8]) -> Result<Self, MeasureError> {
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(MeasureError::too_large(
                "measurement document bytes",
                MAX_DOCUMENT_BYTES as u64,
                bytes.len() as u64,
            ));
        }
        let input: Self =
            serde_json::from_slice(bytes).map_err(|e| MeasureError::Document(e.to_string()))?;
        input.validate()?;
        Ok(input)
    }

    /// Builds the document from the boot artefacts themselves: the OVMF image
    /// (parsed for its sections, hashes-table GPA and reset address, and
    /// measured for `ovmf_hash`), the kernel, the initrd and the command line.
    pub fn from_files(
        ovmf: &[u8],
        kernel: &[u8],
        initrd: &[u8],
        cmdline: &str,
        vcpus: u32,
        vcpu_type: &str,
        guest_features: u64,
    ) -> Result<Self, MeasureError> {
        let info = ovmf_info(ovmf)?;
        if !info
            .sections
            .iter()
            .any(|s| s.section_type == SectionType::SnpKernelHashes)
        {
            return Err(MeasureError::NoKernelHashesSection);
        }
        let sev_hashes_table_gpa =
            info.sev_hashes_table_gpa
                .filter(|&g| g != 0)
                .ok_or_else(|| {
                    MeasureError::firmware(
                        "SEV hashes table entry",
                        "a non-zero GPA (AmdSev OVMF build)",
                        "none",
                    )
                })?;
        let reset_eip = info.reset_eip.filter(|&e| e != 0).ok_or_else(|| {
            MeasureError::firmware("SEV-ES reset block entry", "a non-zero address", "none")
        })?;
        let input = Self {
            ovmf_hash: ovmf_hash(ovmf)?,
            ovmf_sections: info.sections,
            sev_hashes_table_gpa,
            reset_eip,
            kernel_sha256: Sha256::digest(kernel).into(),
            initrd_sha256: Sha256::digest(initrd).into(),
            cmdline: cmdline.to_string(),
            vcpus,
            vcpu_type: vcpu_type.to_string(),
            guest_features,
            vmm: default_vmm(),
        };
        input.validate()?;
        Ok(input)
    }

    /// Serializes the document as JSON (numbers as "0x…", hashes as hex).
    pub fn to_json(&self) -> String {
        // Serializing plain strings, integers and arrays cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks every bound and consistency rule; [`launch_digest`] calls it too.
    pub fn validate(&self) -> Result<(), MeasureError> {
        if self.vmm != "qemu" {
            return Err(MeasureError::UnsupportedVmm(self.vmm.clone()));
        }
        if !(1..=MAX_VCPUS).contains(&self.vcpus) {
            return Err(MeasureError::field(
                "vcpus",
                format!("1..={MAX_VCPUS}"),
                self.vcpus,
            ));
        }
        vcpu_signature(&self.vcpu_type)?;
        if self.cmdline.len() > MAX_CMDLINE_BYTES {
            return Err(MeasureError::too_large(
                "cmdline bytes",
                MAX_CMDLINE_BYTES as u64,
                self.cmdline.len() as u64,
            ));
        }
        if self.cmdline.contains('\0') {
            return Err(MeasureError::field(
                "cmdline",
                "no NUL byte (QEMU appends the only one)",
                "a NUL byte",
            ));
        }
        if self.guest_features & 1 == 0 {
            return Err(MeasureError::field(
                "guest_features",
                "bit 0 (SNPActive) set",
                format!("{:#x}", self.guest_features),
            ));
        }
        if self.reset_eip == 0 {
            return Err(MeasureError::field(
                "reset_eip",
                "a non-zero AP reset address",
                "0",
            ));
        }
        if self.ovmf_sections.len() > MAX_SECTIONS {
            return Err(MeasureError::too_large(
                "ovmf_sections",
                MAX_SECTIONS as u64,
                self.ovmf_sections.len() as u64,
            ));
        }
        let mut pages = 0u64;
        let mut kernel_hashes = 0;
        for s in &self.ovmf_sections {
            if s.gpa & (PAGE - 1) != 0 {
                return Err(MeasureError::field(
                    "ovmf_sections.gpa",
                    "a multiple of 0x1000",
                    format!("{:#x}", s.gpa),
                ));
            }
            if s.size == 0 || s.size & (PAGE - 1) != 0 {
                return Err(MeasureError::field(
                    "ovmf_sections.size",
                    "a non-zero multiple of 0x1000",
                    format!("{:#x}", s.size),
                ));
            }
            if s.gpa.checked_add(s.size).is_none_or(|end| end > 1 << 52) {
                return Err(MeasureError::field(
                    "ovmf_sections",
                    "a range below 2^52",
                    format!("{:#x}+{:#x}", s.gpa, s.size),
                ));
            }
            pages += s.size / PAGE;
            if pages > MAX_SECTION_PAGES {
                return Err(MeasureError::too_large(
                    "pages in ovmf_sections",
                    MAX_SECTION_PAGES,
                    pages,
                ));
            }
            if s.section_type == SectionType::SnpKernelHashes {
                kernel_hashes += 1;
                if s.size != PAGE {
                    return Err(MeasureError::field(
                        "ovmf_sections.size",
                        "0x1000 for snp_kernel_hashes",
                        format!("{:#x}", s.size),
                    ));
                }
                if !(s.gpa..s.gpa + PAGE).contains(&self.sev_hashes_table_gpa) {
                    return Err(MeasureError::field(
                        "sev_hashes_table_gpa",
                        format!(
                            "inside the snp_kernel_hashes page {:#x}..{:#x}",
                            s.gpa,
                            s.gpa + PAGE
                        ),
                        format!("{:#x}", self.sev_hashes_table_gpa),
                    ));
                }
                if (self.sev_hashes_table_gpa % PAGE) as usize + PADDED_TABLE_LEN > PAGE as usize {
                    return Err(MeasureError::field(
                        "sev_hashes_table_gpa",
                        format!("room for the {PADDED_TABLE_LEN}-byte table before the page end"),
                        format!("{:#x}", self.sev_hashes_table_gpa),
                    ));
                }
            }
        }
        match kernel_hashes {
            0 => Err(MeasureError::NoKernelHashesSection),
            1 => Ok(()),
            n => Err(MeasureError::field(
                "ovmf_sections",
                "exactly one snp_kernel_hashes section",
                n,
            )),
        }
    }
}

/// Computes the SNP launch digest (the report's `MEASUREMENT`) of a QEMU
/// direct-boot guest described by `input`.
pub fn launch_digest(input: &SnpMeasureInput) -> Result<[u8; 48], MeasureError> {
    input.validate()?;
    let page = sev_hashes_page(input);
    Ok(fold(input, Some(&page)))
}

/// The launch-update sequence after the OVMF seed. `hashes_page` is `None`
/// only for the no-kernel case, which sev-snp-measure measures as zero pages;
/// it is kept for cross-checking the section walk against that tool.
fn fold(input: &SnpMeasureInput, hashes_page: Option<&[u8; 4096]>) -> [u8; 48] {
    let mut gctx = Gctx::new(input.ovmf_hash);
    for s in &input.ovmf_sections {
        match s.section_type {
            SectionType::SnpSecMem | SectionType::SvsmCaa => gctx.zero_pages(s.gpa, s.size),
            SectionType::SnpSecrets => gctx.update(PageType::Secrets, s.gpa, &[0; LD_BYTES]),
            SectionType::Cpuid => gctx.update(PageType::Cpuid, s.gpa, &[0; LD_BYTES]),
            SectionType::SnpKernelHashes => match hashes_page {
                Some(page) => gctx.normal_pages(s.gpa, page),
                None => gctx.zero_pages(s.gpa, s.size),
            },
        }
    }
    // validate() has accepted the name, so the lookup succeeds.
    let sig = vcpu_signature(&input.vcpu_type).unwrap_or(0);
    let bsp: [u8; LD_BYTES] = Sha384::digest(vmsa_page(BSP_EIP, sig, input.guest_features)).into();
    let ap: [u8; LD_BYTES] =
        Sha384::digest(vmsa_page(input.reset_eip, sig, input.guest_features)).into();
    for i in 0..input.vcpus {
        gctx.update(PageType::Vmsa, VMSA_GPA, if i == 0 { &bsp } else { &ap });
    }
    gctx.ld
}

/// SNP page types of PAGE_INFO (SNP firmware ABI, LAUNCH_UPDATE).
#[derive(Clone, Copy)]
enum PageType {
    Normal = 1,
    Vmsa = 2,
    Zero = 3,
    Secrets = 5,
    Cpuid = 6,
}

/// The guest context's running launch digest.
struct Gctx {
    ld: [u8; LD_BYTES],
}

impl Gctx {
    fn new(seed: [u8; LD_BYTES]) -> Self {
        Self { ld: seed }
    }

    /// One LAUNCH_UPDATE step: hash the PAGE_INFO record. IMI and the VMPL1–3
    /// permission bytes are zero for every page QEMU adds.
    fn update(&mut self, page_type: PageType, gpa: u64, contents: &[u8; LD_BYTES]) {
        let mut info = [0u8; 0x70];
        info[..48].copy_from_slice(&self.ld);
        info[48..96].copy_from_slice(contents);
        info[96..98].copy_from_slice(&0x70u16.to_le_bytes());
        info[98] = page_type as u8;
        // info[99] is_imi, info[100..103] vmpl3/2/1 permissions, info[103] reserved.
        info[104..112].copy_from_slice(&gpa.to_le_bytes());
        self.ld = Sha384::digest(info).into();
    }

    fn normal_pages(&mut self, gpa: u64, data: &[u8]) {
        for (i, page) in data.chunks(PAGE as usize).enumerate() {
            self.update(
                PageType::Normal,
                gpa + i as u64 * PAGE,
                &Sha384::digest(page).into(),
            );
        }
    }

    fn zero_pages(&mut self, gpa: u64, size: u64) {
        for i in 0..size / PAGE {
            self.update(PageType::Zero, gpa + i * PAGE, &[0; LD_BYTES]);
        }
    }
}

/// QEMU's SEV hashes table: header GUID and length, then cmdline, initrd and
/// kernel entries (GUID, u16 length 50, SHA-256), padded to 16 bytes.
const TABLE_LEN: usize = 16 + 2 + 3 * 50;
const PADDED_TABLE_LEN: usize = (TABLE_LEN + 15) & !15;
const HASH_TABLE_HEADER_GUID: [u8; 16] = ovmf::guid_le("9438d606-4f22-4cc9-b479-a793d411fd21");
const CMDLINE_ENTRY_GUID: [u8; 16] = ovmf::guid_le("97d02dd8-bd20-4c94-aa78-e7714d36ab2a");
const INITRD_ENTRY_GUID: [u8; 16] = ovmf::guid_le("44baf731-3a2f-4bd7-9af1-41e29169781d");
const KERNEL_ENTRY_GUID: [u8; 16] = ovmf::guid_le("4de79437-abd2-427f-b835-d5b172d2045b");

fn sev_hashes_page(input: &SnpMeasureInput) -> [u8; 4096] {
    let mut cmdline = Vec::with_capacity(input.cmdline.len() + 1);
    cmdline.extend_from_slice(input.cmdline.as_bytes());
    cmdline.push(0);
    let cmdline_sha256: [u8; 32] = Sha256::digest(&cmdline).into();

    let mut table = [0u8; TABLE_LEN];
    table[..16].copy_from_slice(&HASH_TABLE_HEADER_GUID);
    table[16..18].copy_from_slice(&(TABLE_LEN as u16).to_le_bytes());
    let entries = [
        (CMDLINE_ENTRY_GUID, cmdline_sha256),
        (INITRD_ENTRY_GUID, input.initrd_sha256),
        (KERNEL_ENTRY_GUID, input.kernel_sha256),
    ];
    for (i, (guid, hash)) in entries.iter().enumerate() {
        let at = 18 + 50 * i;
        table[at..at + 16].copy_from_slice(guid);
        table[at + 16..at + 18].copy_from_slice(&50u16.to_le_bytes());
        table[at + 18..at + 50].copy_from_slice(hash);
    }
    let mut page = [0u8; 4096];
    // validate() keeps the padded table inside the page.
    let offset = (input.sev_hashes_table_gpa % PAGE) as usize;
    page[offset..offset + TABLE_LEN].copy_from_slice(&table);
    page
}

/// CPUID Fn0000_0001_EAX signature from family, model and stepping.
const fn cpu_sig(family: u32, model: u32, stepping: u32) -> u32 {
    let (family_low, family_high) = if family > 0xf {
        (0xf, (family - 0xf) & 0xff)
    } else {
        (family, 0)
    };
    (family_high << 20)
        | (((model >> 4) & 0xf) << 16)
        | (family_low << 8)
        | ((model & 0xf) << 4)
        | (stepping & 0xf)
}

/// QEMU CPU models with an SNP-capable CPUID signature (QEMU's builtin_x86_defs).
const VCPU_TYPES: &[(&str, u32)] = &[
    ("EPYC", cpu_sig(23, 1, 2)),
    ("EPYC-v1", cpu_sig(23, 1, 2)),
    ("EPYC-v2", cpu_sig(23, 1, 2)),
    ("EPYC-IBPB", cpu_sig(23, 1, 2)),
    ("EPYC-v3", cpu_sig(23, 1, 2)),
    ("EPYC-v4", cpu_sig(23, 1, 2)),
    ("EPYC-Rome", cpu_sig(23, 49, 0)),
    ("EPYC-Rome-v1", cpu_sig(23, 49, 0)),
    ("EPYC-Rome-v2", cpu_sig(23, 49, 0)),
    ("EPYC-Rome-v3", cpu_sig(23, 49, 0)),
    ("EPYC-Milan", cpu_sig(25, 1, 1)),
    ("EPYC-Milan-v1", cpu_sig(25, 1, 1)),
    ("EPYC-Milan-v2", cpu_sig(25, 1, 1)),
    ("EPYC-Genoa", cpu_sig(25, 17, 0)),
    ("EPYC-Genoa-v1", cpu_sig(25, 17, 0)),
    ("EPYC-Turin", cpu_sig(26, 0, 0)),
];

/// CPUID signature QEMU puts in RDX for CPU model `name` (case-insensitive).
pub fn vcpu_signature(name: &str) -> Result<u32, MeasureError> {
    VCPU_TYPES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, sig)| sig)
        .ok_or_else(|| MeasureError::UnknownVcpuType {
            expected: VCPU_TYPES
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", "),
            found: name.chars().take(64).collect(),
        })
}

/// The VMSA (SEV-ES save area) QEMU/KVM creates for a vCPU starting at `eip`.
/// Offsets follow AMD APM vol. 2 table B-4.
fn vmsa_page(eip: u32, vcpu_sig: u32, sev_features: u64) -> [u8; 4096] {
    let mut p = [0u8; 4096];
    let mut put = |at: usize, bytes: &[u8]| p[at..at + bytes.len()].copy_from_slice(bytes);
    // Segment registers: selector u16, attrib u16, limit u32, base u64.
    let segs: [(usize, u16, u16, u64); 10] = [
        (0x00, 0, 0x93, 0),                                 // es
        (0x10, 0xf000, 0x9b, u64::from(eip & 0xffff_0000)), // cs
        (0x20, 0, 0x93, 0),                                 // ss
        (0x30, 0, 0x93, 0),                                 // ds
        (0x40, 0, 0x93, 0),                                 // fs
        (0x50, 0, 0x93, 0),                                 // gs
        (0x60, 0, 0, 0),                                    // gdtr
        (0x70, 0, 0x82, 0),                                 // ldtr
        (0x80, 0, 0, 0),                                    // idtr
        (0x90, 0, 0x8b, 0),                                 // tr
    ];
    for (at, selector, attrib, base) in segs {
        put(at, &selector.to_le_bytes());
        put(at + 2, &attrib.to_le_bytes());
        put(at + 4, &0xffffu32.to_le_bytes());
        put(at + 8, &base.to_le_bytes());
    }
    put(0xd0, &0x1000u64.to_le_bytes()); // efer: SVME, set by KVM
    put(0x148, &0x40u64.to_le_bytes()); // cr4: MCE
    put(0x158, &0x10u64.to_le_bytes()); // cr0: ET
    put(0x160, &0x400u64.to_le_bytes()); // dr7
    put(0x168, &0xffff_0ff0u64.to_le_bytes()); // dr6
    put(0x170, &0x2u64.to_le_bytes()); // rflags
    put(0x178, &u64::from(eip & 0xffff).to_le_bytes()); // rip
    put(0x268, &0x0007_0406_0007_0406u64.to_le_bytes()); // g_pat
    put(0x310, &u64::from(vcpu_sig).to_le_bytes()); // rdx
    put(0x3b0, &sev_features.to_le_bytes()); // sev_features
    put(0x3e8, &0x1u64.to_le_bytes()); // xcr0
    put(0x408, &0x1f80u32.to_le_bytes()); // mxcsr
    put(0x410, &0x037fu16.to_le_bytes()); // x87 fcw
    p
}

mod dstack;
pub use dstack::MAX_DSTACK_CBOR_BYTES;

#[cfg(test)]
mod tests;
