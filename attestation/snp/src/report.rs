//! The SEV-SNP ATTESTATION_REPORT structure (SEV-SNP firmware ABI, table
//! "ATTESTATION_REPORT Structure"), parsed field by field from the raw bytes.
//!
//! The bytes are kept as they came: the signature covers `[0, 0x2A0)` exactly,
//! reserved bytes included, so verifying over a re-encoding (as the `sev`
//! crate does) would both miss flipped reserved bytes and depend on guessing
//! the generation right.

use serde::Serialize;

use crate::{Generation, SnpError};

/// Size of every report version handled here.
pub const REPORT_LEN: usize = 0x4A0;
/// The signature covers the bytes before this offset.
pub const SIGNED_LEN: usize = 0x2A0;
/// Offset of the signature's R component (72 bytes, little endian).
pub const SIG_R_OFFSET: usize = 0x2A0;
/// Offset of the signature's S component (72 bytes, little endian).
pub const SIG_S_OFFSET: usize = 0x2E8;
/// Start of the reserved, unsigned remainder of the signature field.
pub const SIG_RESERVED_OFFSET: usize = 0x330;
/// Offset of the 64-byte REPORT_DATA.
pub const REPORT_DATA_OFFSET: usize = 0x50;
/// Offset of the 48-byte MEASUREMENT.
pub const MEASUREMENT_OFFSET: usize = 0x90;
/// Offset of the 32-byte HOST_DATA.
pub const HOST_DATA_OFFSET: usize = 0xC0;
/// Offset of the 64-byte CHIP_ID.
pub const CHIP_ID_OFFSET: usize = 0x1A0;
/// Offset of the guest POLICY (u64).
pub const POLICY_OFFSET: usize = 0x08;

/// Guest policy bit: association with a migration agent allowed.
pub const POLICY_MIGRATE_MA_BIT: u32 = 18;
/// Guest policy bit: debugging allowed.
pub const POLICY_DEBUG_BIT: u32 = 19;

/// SIGNATURE_ALGO value for ECDSA P-384 with SHA-384, the only one defined.
pub const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;

/// Which key the firmware says signed the report (KEY_INFO bits 4:2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SigningKey {
    /// Versioned Chip Endorsement Key, derived from the chip's secrets and TCB.
    Vcek,
    /// Versioned Loaded Endorsement Key, provisioned by a cloud provider.
    Vlek,
    /// The report is not signed (value 7).
    None,
    /// A reserved encoding (2 to 6).
    Reserved(u8),
}

impl SigningKey {
    /// "vcek" or "vlek"; `None` for unsigned or reserved encodings.
    pub fn name(self) -> Option<&'static str> {
        match self {
            SigningKey::Vcek => Some("vcek"),
            SigningKey::Vlek => Some("vlek"),
            _ => None,
        }
    }
}

/// Security patch levels of the firmware components, as in a TCB_VERSION.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TcbLevels {
    /// Boot loader SPL (VCEK extension blSPL).
    pub bootloader: u8,
    /// PSP OS (TEE) SPL (teeSPL).
    pub tee: u8,
    /// SNP firmware SPL (snpSPL).
    pub snp: u8,
    /// CPU microcode SPL (ucodeSPL).
    pub microcode: u8,
    /// FMC SPL, present from Turin on (fmcSPL).
    pub fmc: Option<u8>,
}

impl TcbLevels {
    /// Decodes a raw 8-byte TCB_VERSION with the layout of `generation`:
    /// Milan and Genoa put `[bl, tee, 0, 0, 0, 0, snp, ucode]`, Turin puts
    /// `[fmc, bl, tee, snp, 0, 0, 0, ucode]`.
    pub fn from_raw(raw: [u8; 8], generation: Generation) -> Self {
        match generation {
            Generation::Milan | Generation::Genoa => TcbLevels {
                bootloader: raw[0],
                tee: raw[1],
                snp: raw[6],
                microcode: raw[7],
                fmc: None,
            },
            Generation::Turin => TcbLevels {
                fmc: Some(raw[0]),
                bootloader: raw[1],
                tee: raw[2],
                snp: raw[3],
                microcode: raw[7],
            },
        }
    }

    /// The components of `self` that are below `min`, as "name reported < minimum".
    /// An `fmc` minimum is only compared when `self` has an fmc level.
    pub fn shortfalls(&self, min: &TcbLevels) -> Vec<String> {
        let mut out = Vec::new();
        let mut cmp = |name: &str, have: u8, need: u8| {
            if have < need {
                out.push(format!("{name} {have} < {need}"));
            }
        };
        cmp("bootloader", self.bootloader, min.bootloader);
        cmp("tee", self.tee, min.tee);
        cmp("snp", self.snp, min.snp);
        cmp("microcode", self.microcode, min.microcode);
        if let (Some(have), Some(need)) = (self.fmc, min.fmc) {
            cmp("fmc", have, need);
        }
        out
    }
}

impl std::fmt::Display for TcbLevels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(fmc) = self.fmc {
            write!(f, "fmc={fmc} ")?;
        }
        write!(
            f,
            "bl={} tee={} snp={} ucode={}",
            self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

/// A parsed attestation report: every field a verifier uses, plus the raw bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedReport {
    /// The exact bytes parsed (1184).
    pub raw: Vec<u8>,
    /// VERSION: 2, 3, 4 or 5 (4 has the layout of 3).
    pub version: u32,
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// Guest POLICY bits.
    pub policy: u64,
    /// FAMILY_ID from the ID block.
    pub family_id: [u8; 16],
    /// IMAGE_ID from the ID block.
    pub image_id: [u8; 16],
    /// VMPL the report was requested from.
    pub vmpl: u32,
    /// SIGNATURE_ALGO (1 = ECDSA P-384 with SHA-384).
    pub sig_algo: u32,
    /// CURRENT_TCB, raw (its layout depends on the generation).
    pub current_tcb_raw: [u8; 8],
    /// PLATFORM_INFO bits.
    pub platform_info: u64,
    /// KEY_INFO bits (author key enabled, mask chip key, signing key).
    pub key_info: u32,
    /// REPORT_DATA supplied by the guest.
    pub report_data: [u8; 64],
    /// MEASUREMENT of the launched guest.
    pub measurement: [u8; 48],
    /// HOST_DATA supplied by the hypervisor at launch.
    pub host_data: [u8; 32],
    /// ID_KEY_DIGEST.
    pub id_key_digest: [u8; 48],
    /// AUTHOR_KEY_DIGEST.
    pub author_key_digest: [u8; 48],
    /// REPORT_ID.
    pub report_id: [u8; 32],
    /// REPORT_ID_MA (migration agent).
    pub report_id_ma: [u8; 32],
    /// REPORTED_TCB, raw: the TCB the VCEK was derived for.
    pub reported_tcb_raw: [u8; 8],
    /// CPUID family, model and stepping (version 3 on).
    pub cpuid: Option<(u8, u8, u8)>,
    /// CHIP_ID (zero when MASK_CHIP_ID was set; Turin uses the first 8 bytes).
    pub chip_id: [u8; 64],
    /// COMMITTED_TCB, raw.
    pub committed_tcb_raw: [u8; 8],
    /// LAUNCH_TCB, raw.
    pub launch_tcb_raw: [u8; 8],
    /// LAUNCH_MIT_VECTOR (version 5 on).
    pub launch_mit_vector: Option<u64>,
    /// CURRENT_MIT_VECTOR (version 5 on).
    pub current_mit_vector: Option<u64>,
    /// Signature R, 72 bytes little endian (P-384 uses the low 48).
    pub signature_r: [u8; 72],
    /// Signature S, 72 bytes little endian.
    pub signature_s: [u8; 72],
}

fn array<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    let mut out = [0u8; N];
    // Callers only pass offsets inside a REPORT_LEN buffer (checked up front).
    if let Some(src) = bytes.get(offset..offset + N) {
        out.copy_from_slice(src);
    }
    out
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(array(bytes, offset))
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(array(bytes, offset))
}

/// Parses a raw (binary) attestation report of exactly 1184 bytes, version 2 to 5.
pub fn parse_report(bytes: &[u8]) -> Result<ParsedReport, SnpError> {
    if bytes.len() != REPORT_LEN {
        return Err(SnpError::ReportLength {
            expected: REPORT_LEN,
            actual: bytes.len(),
        });
    }
    let version = u32_at(bytes, 0);
    if !(2..=5).contains(&version) {
        return Err(SnpError::UnsupportedVersion(version));
    }
    let cpuid = (version >= 3).then(|| (bytes[0x188], bytes[0x189], bytes[0x18A]));
    let (launch_mit_vector, current_mit_vector) = if version >= 5 {
        (Some(u64_at(bytes, 0x1F8)), Some(u64_at(bytes, 0x200)))
    } else {
        (None, None)
    };
    Ok(ParsedReport {
        raw: bytes.to_vec(),
        version,
        guest_svn: u32_at(bytes, 0x04),
        policy: u64_at(bytes, POLICY_OFFSET),
        family_id: array(bytes, 0x10),
        image_id: array(bytes, 0x20),
        vmpl: u32_at(bytes, 0x30),
        sig_algo: u32_at(bytes, 0x34),
        current_tcb_raw: array(bytes, 0x38),
        platform_info: u64_at(bytes, 0x40),
        key_info: u32_at(bytes, 0x48),
        report_data: array(bytes, REPORT_DATA_OFFSET),
        measurement: array(bytes, MEASUREMENT_OFFSET),
        host_data: array(bytes, HOST_DATA_OFFSET),
        id_key_digest: array(bytes, 0xE0),
        author_key_digest: array(bytes, 0x110),
        report_id: array(bytes, 0x140),
        report_id_ma: array(bytes, 0x160),
        reported_tcb_raw: array(bytes, 0x180),
        cpuid,
        chip_id: array(bytes, CHIP_ID_OFFSET),
        committed_tcb_raw: array(bytes, 0x1E0),
        launch_tcb_raw: array(bytes, 0x1F0),
        launch_mit_vector,
        current_mit_vector,
        signature_r: array(bytes, SIG_R_OFFSET),
        signature_s: array(bytes, SIG_S_OFFSET),
    })
}

impl ParsedReport {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.raw[..SIGNED_LEN.min(self.raw.len())]
    }

    /// The key the firmware says signed the report.
    pub fn signing_key(&self) -> SigningKey {
        match (self.key_info >> 2) & 0b111 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            7 => SigningKey::None,
            n => SigningKey::Reserved(n as u8),
        }
    }

    /// True when the guest policy lets the host debug the guest.
    pub fn debug_allowed(&self) -> bool {
        self.policy & (1 << POLICY_DEBUG_BIT) != 0
    }

    /// True when the guest policy allows association with a migration agent.
    pub fn migration_agent_allowed(&self) -> bool {
        self.policy & (1 << POLICY_MIGRATE_MA_BIT) != 0
    }

    /// The generation named by the CPUID fields (version 3 on); `None` for
    /// version 2 or an unknown family/model.
    pub fn cpuid_generation(&self) -> Option<Generation> {
        let (family, model, _) = self.cpuid?;
        Generation::from_cpuid(family, model)
    }

    /// True when CHIP_ID is all zero (MASK_CHIP_ID set, or a VLEK-signed report).
    pub fn chip_id_masked(&self) -> bool {
        self.chip_id.iter().all(|&b| b == 0)
    }

    /// True when only the first 8 bytes of CHIP_ID are used, as on Turin.
    pub fn chip_id_turin_like(&self) -> bool {
        !self.chip_id_masked() && self.chip_id[8..].iter().all(|&b| b == 0)
    }

    /// REPORTED_TCB decoded with the layout of `generation`.
    pub fn reported_tcb(&self, generation: Generation) -> TcbLevels {
        TcbLevels::from_raw(self.reported_tcb_raw, generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(version: u32) -> Vec<u8> {
        let mut r = vec![0u8; REPORT_LEN];
        r[..4].copy_from_slice(&version.to_le_bytes());
        r
    }

    #[test]
    fn lengths_other_than_1184_are_rejected() {
        for len in [0, 4, REPORT_LEN - 1, REPORT_LEN + 1, 4096] {
            let mut r = report(2);
            r.resize(len, 0);
            assert_eq!(
                parse_report(&r),
                Err(SnpError::ReportLength {
                    expected: REPORT_LEN,
                    actual: len
                })
            );
        }
    }

    #[test]
    fn versions_outside_2_to_5_are_rejected() {
        for v in [0, 1, 6, u32::MAX] {
            assert_eq!(
                parse_report(&report(v)),
                Err(SnpError::UnsupportedVersion(v))
            );
        }
        for v in 2..=5 {
            assert_eq!(parse_report(&report(v)).map(|r| r.version), Ok(v));
        }
    }

    #[test]
    fn version_decides_the_optional_fields() {
        let mut r = report(2);
        r[0x188] = 0x19;
        assert_eq!(
            parse_report(&r).map(|r| r.cpuid),
            Ok(None),
            "v2 has no CPUID fields"
        );
        r[..4].copy_from_slice(&3u32.to_le_bytes());
        let p = parse_report(&r).expect("v3");
        assert_eq!(p.cpuid, Some((0x19, 0, 0)));
        assert_eq!(p.launch_mit_vector, None);
        r[..4].copy_from_slice(&5u32.to_le_bytes());
        r[0x1F8] = 7;
        assert_eq!(parse_report(&r).map(|r| r.launch_mit_vector), Ok(Some(7)));
    }

    #[test]
    fn tcb_layouts_differ_between_genoa_and_turin() {
        let raw = [1, 2, 3, 4, 5, 6, 7, 8];
        let legacy = TcbLevels::from_raw(raw, Generation::Milan);
        assert_eq!(
            legacy,
            TcbLevels {
                bootloader: 1,
                tee: 2,
                snp: 7,
                microcode: 8,
                fmc: None
            }
        );
        let turin = TcbLevels::from_raw(raw, Generation::Turin);
        assert_eq!(
            turin,
            TcbLevels {
                fmc: Some(1),
                bootloader: 2,
                tee: 3,
                snp: 4,
                microcode: 8
            }
        );
    }

    #[test]
    fn key_info_and_policy_bits() {
        let mut r = report(3);
        r[0x48] = 1 << 2;
        r[POLICY_OFFSET + 2] = 0b1100; // bits 18 and 19
        let p = parse_report(&r).expect("parses");
        assert_eq!(p.signing_key(), SigningKey::Vlek);
        assert!(p.debug_allowed());
        assert!(p.migration_agent_allowed());
        r[0x48] = 7 << 2;
        assert_eq!(
            parse_report(&r).map(|p| p.signing_key()),
            Ok(SigningKey::None)
        );
    }
}
