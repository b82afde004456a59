//! The SEV-SNP guest policy inside an IGVM file.
//!
//! Cloud Hypervisor's VmConfig has no policy field: the policy comes from the
//! IGVM file's `IGVM_VHT_GUEST_POLICY` initialization headers. Before a
//! launch we read them and refuse a file whose policy allows debugging or
//! differs from the one in the spec (the one the expected measurement and
//! the published contract use).

use dc_vmm::SNP_POLICY_DEBUG;

const IGVM_MAGIC: u32 = 0x4D56_4749; // "IGVM" little-endian
const IGVM_VHT_GUEST_POLICY: u32 = 0x101;
/// Fixed header: magic, format version, variable header offset and size,
/// total file size, checksum (v2 appends architecture and page size).
const FIXED_HEADER_BYTES: usize = 24;
/// Variable headers are read only up to here (a real file's are a few KiB).
const MAX_VARIABLE_HEADER_BYTES: usize = 16 * 1024 * 1024;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Every guest policy in an IGVM file's variable headers (one per
/// compatibility mask). Errors on anything malformed; never panics.
pub fn guest_policies(file: &[u8]) -> Result<Vec<u64>, String> {
    if file.len() < FIXED_HEADER_BYTES || u32_at(file, 0) != Some(IGVM_MAGIC) {
        return Err("not an IGVM file (bad magic)".into());
    }
    let offset = u32_at(file, 8).unwrap_or_default() as usize;
    let size = u32_at(file, 12).unwrap_or_default() as usize;
    if size > MAX_VARIABLE_HEADER_BYTES {
        return Err(format!(
            "variable headers of {size} bytes exceed {MAX_VARIABLE_HEADER_BYTES}"
        ));
    }
    let headers = offset
        .checked_add(size)
        .and_then(|end| file.get(offset..end))
        .ok_or_else(|| {
            format!(
                "variable headers {offset}+{size} lie outside the {}-byte file",
                file.len()
            )
        })?;
    let mut policies = Vec::new();
    let mut at = 0usize;
    while at < headers.len() {
        let (Some(kind), Some(len)) = (u32_at(headers, at), u32_at(headers, at + 4)) else {
            return Err(format!("truncated variable header at {at}"));
        };
        let data = at + 8;
        let len = len as usize;
        let end = data
            .checked_add(len)
            .filter(|&e| e <= headers.len())
            .ok_or_else(|| format!("variable header at {at} overruns"))?;
        if kind == IGVM_VHT_GUEST_POLICY {
            let policy = u64_at(headers, data)
                .filter(|_| len >= 8)
                .ok_or_else(|| "short guest policy header".to_string())?;
            policies.push(policy);
        }
        // Entries are 8-byte aligned.
        at = end
            .checked_add(7)
            .map(|e| e & !7)
            .ok_or("variable header overflow")?;
    }
    Ok(policies)
}

/// Checks the IGVM file's SEV-SNP policies against the spec's `policy`.
pub fn check_snp_policy(file: &[u8], policy: u64) -> Result<(), String> {
    let policies = guest_policies(file)?;
    if policies.is_empty() {
        return Err(
            "the IGVM file has no SEV-SNP guest policy header; its launch policy cannot be checked"
                .into(),
        );
    }
    for p in policies {
        if p & SNP_POLICY_DEBUG != 0 {
            return Err(format!(
                "the IGVM file's guest policy {p:#x} allows debugging"
            ));
        }
        if p != policy {
            return Err(format!(
                "the IGVM file's guest policy {p:#x} differs from the spec's {policy:#x}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal IGVM image: fixed header plus the given variable headers.
    pub fn igvm_with(headers: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut vh = Vec::new();
        for (kind, data) in headers {
            vh.extend_from_slice(&kind.to_le_bytes());
            vh.extend_from_slice(&(data.len() as u32).to_le_bytes());
            vh.extend_from_slice(data);
            while vh.len() % 8 != 0 {
                vh.push(0);
            }
        }
        let mut f = Vec::new();
        for v in [
            IGVM_MAGIC,
            1,
            FIXED_HEADER_BYTES as u32,
            vh.len() as u32,
            (FIXED_HEADER_BYTES + vh.len()) as u32,
            0,
        ] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(&vh);
        f
    }

    pub fn policy_header(policy: u64) -> (u32, Vec<u8>) {
        let mut d = policy.to_le_bytes().to_vec();
        d.extend_from_slice(&1u32.to_le_bytes()); // compatibility mask
        d.extend_from_slice(&0u32.to_le_bytes());
        (IGVM_VHT_GUEST_POLICY, d)
    }

    #[test]
    fn finds_policies_among_other_headers() {
        let f = igvm_with(&[(0x1, vec![1, 2, 3]), policy_header(0x30000)]);
        assert_eq!(guest_policies(&f).unwrap(), vec![0x30000]);
        assert!(check_snp_policy(&f, 0x30000).is_ok());
    }

    #[test]
    fn refuses_debug_mismatch_absence_and_garbage() {
        let debug = igvm_with(&[policy_header(0x30000 | SNP_POLICY_DEBUG)]);
        assert!(check_snp_policy(&debug, 0x30000)
            .unwrap_err()
            .contains("debugging"));
        let other = igvm_with(&[policy_header(0x70000)]);
        assert!(check_snp_policy(&other, 0x30000)
            .unwrap_err()
            .contains("differs"));
        let none = igvm_with(&[(0x1, vec![0; 8])]);
        assert!(check_snp_policy(&none, 0x30000)
            .unwrap_err()
            .contains("no SEV-SNP"));
        assert!(check_snp_policy(b"\x7fELF not igvm at all....", 0x30000).is_err());
        let mut truncated = igvm_with(&[policy_header(0x30000)]);
        truncated.truncate(truncated.len() - 4);
        assert!(guest_policies(&truncated).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..512), off in 0u32..600, size in 0u32..600) {
            let mut f = Vec::new();
            for v in [IGVM_MAGIC, 1, off, size, 0, 0] {
                f.extend_from_slice(&v.to_le_bytes());
            }
            f.extend_from_slice(&tail);
            let _ = guest_policies(&f);
        }
    }
}
