//! Import of dstack's SNP measurement document (`measurement.snp.cbor`, the
//! `sev_snp_measurement` of a dstack VM config), so an auditor can check a
//! dstack-launched VM with the same code that checks ours.

use super::{OvmfSection, SectionType, SnpMeasureInput};
use crate::MeasureError;

/// Largest dstack document read; real ones are under 1 KiB.
pub const MAX_DSTACK_CBOR_BYTES: usize = 64 * 1024;

impl SnpMeasureInput {
    /// Builds the input from dstack's CBOR map (`ovmf_hash`, `ovmf_sections`
    /// of `{gpa, size, type}`, `hashes_table_gpa`, `reset_eip`, `kernel_hash`,
    /// `initrd_hash`, `cmdline`) plus the VM shape dstack keeps elsewhere.
    pub fn from_dstack_cbor(
        cbor: &[u8],
        vcpus: u32,
        vcpu_type: &str,
        guest_features: u64,
    ) -> Result<Self, MeasureError> {
        use ciborium::Value;
        if cbor.len() > MAX_DSTACK_CBOR_BYTES {
            return Err(MeasureError::TooLarge {
                what: "dstack measurement document",
                limit: MAX_DSTACK_CBOR_BYTES as u64,
                found: cbor.len() as u64,
            });
        }
        let doc: Value = ciborium::from_reader(cbor)
            .map_err(|e| MeasureError::Document(format!("dstack CBOR: {e}")))?;
        let bad = |what: &str| MeasureError::Document(format!("dstack CBOR: {what}"));
        let map = doc.as_map().ok_or_else(|| bad("top level is not a map"))?;
        let get = |m: &[(Value, Value)], k: &str| -> Result<Value, MeasureError> {
            m.iter()
                .find(|(key, _)| key.as_text() == Some(k))
                .map(|(_, v)| v.clone())
                .ok_or_else(|| bad(&format!("no field {k}")))
        };
        let int = |v: &Value, k: &str| -> Result<u64, MeasureError> {
            v.as_integer()
                .and_then(|i| u64::try_from(i).ok())
                .ok_or_else(|| bad(&format!("{k} is not an unsigned integer")))
        };
        let fixed = |v: &Value, k: &str, n: usize| -> Result<Vec<u8>, MeasureError> {
            let b = v
                .as_bytes()
                .ok_or_else(|| bad(&format!("{k} is not bytes")))?;
            if b.len() != n {
                return Err(bad(&format!("{k} is {} bytes, expected {n}", b.len())));
            }
            Ok(b.clone())
        };
        let sections_value = get(map, "ovmf_sections")?;
        let sections_list = sections_value
            .as_array()
            .ok_or_else(|| bad("ovmf_sections is not a list"))?;
        let mut ovmf_sections = Vec::with_capacity(sections_list.len().min(64));
        for s in sections_list {
            let m = s.as_map().ok_or_else(|| bad("a section is not a map"))?;
            let raw_type = int(&get(m, "type")?, "type")?;
            let section_type = u32::try_from(raw_type)
                .ok()
                .and_then(SectionType::from_raw)
                .ok_or_else(|| bad(&format!("unknown section type {raw_type}")))?;
            ovmf_sections.push(OvmfSection {
                gpa: int(&get(m, "gpa")?, "gpa")?,
                size: int(&get(m, "size")?, "size")?,
                section_type,
            });
        }
        let mut ovmf_hash = [0u8; 48];
        ovmf_hash.copy_from_slice(&fixed(&get(map, "ovmf_hash")?, "ovmf_hash", 48)?);
        let mut kernel_sha256 = [0u8; 32];
        kernel_sha256.copy_from_slice(&fixed(&get(map, "kernel_hash")?, "kernel_hash", 32)?);
        let mut initrd_sha256 = [0u8; 32];
        initrd_sha256.copy_from_slice(&fixed(&get(map, "initrd_hash")?, "initrd_hash", 32)?);
        let reset_eip = int(&get(map, "reset_eip")?, "reset_eip")?;
        let input = SnpMeasureInput {
            ovmf_hash,
            ovmf_sections,
            sev_hashes_table_gpa: int(&get(map, "hashes_table_gpa")?, "hashes_table_gpa")?,
            reset_eip: u32::try_from(reset_eip)
                .map_err(|_| bad("reset_eip does not fit 32 bits"))?,
            kernel_sha256,
            initrd_sha256,
            cmdline: get(map, "cmdline")?
                .as_text()
                .ok_or_else(|| bad("cmdline is not text"))?
                .to_string(),
            vcpus,
            vcpu_type: vcpu_type.to_string(),
            guest_features,
            vmm: "qemu".to_string(),
        };
        input.validate()?;
        Ok(input)
    }
}
