//! Shared vocabulary of the attestation verifiers.
//!
//! Every verifier returns a list of [`Check`]s, each with a name, a result and
//! the reason; the evidence is `verified` only when every check passed. A
//! verifier never stops at the first failure when later checks can still say
//! something useful, so a developer sees every reason at once.

pub mod fetch;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

/// One step of a verification, as printed by `dcctl verify --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// The ordered list of checks one verification made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Checks(pub Vec<Check>);

impl Checks {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn pass(&mut self, name: &str, detail: impl Into<String>) {
        self.push(name, true, detail);
    }

    pub fn fail(&mut self, name: &str, detail: impl Into<String>) {
        self.push(name, false, detail);
    }

    pub fn push(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        self.0.push(Check {
            name: name.to_string(),
            ok,
            detail: detail.into(),
        });
    }

    /// Records `Ok(detail)` as a pass and `Err(reason)` as a failure.
    pub fn record<E: std::fmt::Display>(&mut self, name: &str, result: Result<String, E>) -> bool {
        match result {
            Ok(detail) => {
                self.pass(name, detail);
                true
            }
            Err(e) => {
                self.fail(name, e.to_string());
                false
            }
        }
    }

    /// Compares an observed value with an expected one when an expectation was given.
    pub fn expect_eq(&mut self, name: &str, expected: Option<&[u8]>, actual: &[u8]) {
        if let Some(expected) = expected {
            if expected == actual {
                self.pass(
                    name,
                    format!("equals the expected {}", hex::encode(expected)),
                );
            } else {
                self.fail(
                    name,
                    format!(
                        "is {}, expected {}",
                        hex::encode(actual),
                        hex::encode(expected)
                    ),
                );
            }
        }
    }

    /// True when there is at least one check and none failed.
    pub fn all_ok(&self) -> bool {
        !self.0.is_empty() && self.0.iter().all(|c| c.ok)
    }

    pub fn get(&self, name: &str) -> Option<&Check> {
        self.0.iter().find(|c| c.name == name)
    }

    pub fn failed(&self) -> impl Iterator<Item = &Check> {
        self.0.iter().filter(|c| !c.ok)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Check> {
        self.0.iter()
    }
}

/// Errors shared by the input decoders.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error("expected {expected} bytes of hex, got {actual}")]
    HexLength { expected: usize, actual: usize },
    #[error("not valid hex: {0}")]
    Hex(String),
    #[error("input too large: {actual} bytes, at most {limit}")]
    TooLarge { actual: usize, limit: usize },
    #[error("nonce must be {min} to {max} bytes, got {actual}")]
    NonceLength {
        min: usize,
        max: usize,
        actual: usize,
    },
}

/// Parses hex (optionally `0x`-prefixed, surrounding whitespace allowed) of exactly `len` bytes.
pub fn parse_hex_exact(s: &str, len: usize) -> Result<Vec<u8>, InputError> {
    let bytes = parse_hex(s)?;
    if bytes.len() != len {
        return Err(InputError::HexLength {
            expected: len,
            actual: bytes.len(),
        });
    }
    Ok(bytes)
}

/// Parses hex of any length (optionally `0x`-prefixed; whitespace inside is ignored).
pub fn parse_hex(s: &str) -> Result<Vec<u8>, InputError> {
    let s = s.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    hex::decode(&compact).map_err(|e| InputError::Hex(e.to_string()))
}

/// Decodes evidence read from a file: raw bytes, or the same bytes as hex text
/// (as several vendors' tools write them). Text is taken as hex only when every
/// byte is a hex digit or whitespace and the digit count is even.
pub fn decode_maybe_hex(bytes: &[u8], limit: usize) -> Result<Vec<u8>, InputError> {
    if bytes.len() > limit.saturating_mul(2).saturating_add(1024) {
        return Err(InputError::TooLarge {
            actual: bytes.len(),
            limit,
        });
    }
    let digits = bytes.iter().filter(|b| b.is_ascii_hexdigit()).count();
    let is_text = !bytes.is_empty()
        && digits > 0
        && digits % 2 == 0
        && bytes
            .iter()
            .all(|b| b.is_ascii_hexdigit() || b.is_ascii_whitespace());
    let out = if is_text {
        let text = std::str::from_utf8(bytes).map_err(|e| InputError::Hex(e.to_string()))?;
        parse_hex(text)?
    } else {
        bytes.to_vec()
    };
    if out.len() > limit {
        return Err(InputError::TooLarge {
            actual: out.len(),
            limit,
        });
    }
    Ok(out)
}

/// Shortest nonce a verifier accepts for report-data binding.
pub const MIN_NONCE_LEN: usize = 16;
/// Longest nonce a verifier accepts for report-data binding.
pub const MAX_NONCE_LEN: usize = 64;

/// Domain separator of the report-data binding, version 1.
pub const REPORT_DATA_DOMAIN: &[u8] = b"decent-cloud/report-data/v1\0";

/// The 64 bytes a guest puts into REPORT_DATA (SNP) or REPORTDATA (TDX):
///
/// `SHA-512( "decent-cloud/report-data/v1\0" || SHA-256(tls_spki_der) || len(nonce) as u8 || nonce )`
///
/// where `tls_spki_der` is the DER SubjectPublicKeyInfo of the TLS server key the
/// developer sees through the ingress and `nonce` is the developer's fresh
/// challenge (16 to 64 bytes). The GPU nonce of an NVIDIA SPDM request bound to
/// the same session is the first 32 bytes of this value ([`gpu_nonce`]).
pub fn report_data(nonce: &[u8], tls_spki_der: &[u8]) -> Result<[u8; 64], InputError> {
    let spki_hash: [u8; 32] = Sha256::digest(tls_spki_der).into();
    report_data_from_spki_hash(nonce, &spki_hash)
}

/// [`report_data`] from an already computed SHA-256 of the SubjectPublicKeyInfo.
pub fn report_data_from_spki_hash(
    nonce: &[u8],
    spki_sha256: &[u8; 32],
) -> Result<[u8; 64], InputError> {
    if !(MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&nonce.len()) {
        return Err(InputError::NonceLength {
            min: MIN_NONCE_LEN,
            max: MAX_NONCE_LEN,
            actual: nonce.len(),
        });
    }
    let mut h = Sha512::new();
    h.update(REPORT_DATA_DOMAIN);
    h.update(spki_sha256);
    h.update([nonce.len() as u8]);
    h.update(nonce);
    Ok(h.finalize().into())
}

/// The 32-byte SPDM nonce for the GPU, derived from the same binding.
pub fn gpu_nonce(report_data: &[u8; 64]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&report_data[..32]);
    out
}

/// Domain separator of the contract binding, version 1.
pub const CONTRACT_BINDING_DOMAIN: &[u8] = b"decent-cloud/contract-binding/v1\0";

/// The bytes both launch bindings hash:
/// `"decent-cloud/contract-binding/v1\0" || contract_id as u64 big-endian ||
/// len(developer) as u8 || developer || len(node) as u8 || node`, where
/// `developer` and `node` are the raw principal bytes (at most 29 each).
fn contract_binding_preimage(contract_id: u64, developer: &[u8], node: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(CONTRACT_BINDING_DOMAIN.len() + 8 + 2 + 58);
    v.extend_from_slice(CONTRACT_BINDING_DOMAIN);
    v.extend_from_slice(&contract_id.to_be_bytes());
    for p in [developer, node] {
        // Principals are at most 29 bytes; the length byte keeps the
        // encoding unambiguous for anything up to 255.
        let p = &p[..p.len().min(255)];
        v.push(p.len() as u8);
        v.extend_from_slice(p);
    }
    v
}

/// SEV-SNP HOST_DATA of a contract's VM: SHA-256 of the contract binding
/// (layout: the domain, the contract id as u64 big-endian, then each of the
/// developer and node principals as a length byte and its bytes). The
/// host sets it at launch; it cannot be changed afterwards and appears in
/// every attestation report, so a report proves which contract it runs.
pub fn contract_host_data(contract_id: u64, developer: &[u8], node: &[u8]) -> [u8; 32] {
    Sha256::digest(contract_binding_preimage(contract_id, developer, node)).into()
}

/// TDX MRCONFIGID of a contract's VM: SHA-384 of the same contract binding
/// as [`contract_host_data`].
pub fn contract_mrconfigid(contract_id: u64, developer: &[u8], node: &[u8]) -> [u8; 48] {
    sha2::Sha384::digest(contract_binding_preimage(contract_id, developer, node)).into()
}

/// Where the vectors from real hardware live: `$DC_VECTORS`, else `../shared/vectors`
/// relative to the workspace root. Tests that need them and find none skip with a message.
pub fn vectors_dir() -> Option<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os("DC_VECTORS") {
        let dir = std::path::PathBuf::from(dir);
        return dir.is_dir().then_some(dir);
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors");
    root.is_dir().then_some(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn contract_bindings_follow_the_documented_layout() {
        let mut pre = b"decent-cloud/contract-binding/v1\0".to_vec();
        pre.extend_from_slice(&7u64.to_be_bytes());
        pre.extend_from_slice(&[2, 0xaa, 0xbb, 1, 0xcc]);
        let want256: [u8; 32] = Sha256::digest(&pre).into();
        let want384: [u8; 48] = sha2::Sha384::digest(&pre).into();
        assert_eq!(contract_host_data(7, &[0xaa, 0xbb], &[0xcc]), want256);
        assert_eq!(contract_mrconfigid(7, &[0xaa, 0xbb], &[0xcc]), want384);
        // Every input changes it; moving a byte across the boundary too.
        assert_ne!(contract_host_data(8, &[0xaa, 0xbb], &[0xcc]), want256);
        assert_ne!(contract_host_data(7, &[0xaa], &[0xbb, 0xcc]), want256);
        assert_ne!(contract_host_data(7, &[0xcc], &[0xaa, 0xbb]), want256);
    }

    #[test]
    fn checks_need_at_least_one_pass_and_no_failure() {
        let mut c = Checks::new();
        assert!(!c.all_ok(), "an empty verification proves nothing");
        c.pass("a", "fine");
        assert!(c.all_ok());
        c.fail("b", "broken");
        assert!(!c.all_ok());
        assert_eq!(c.failed().count(), 1);
    }

    #[test]
    fn expectations_compare_bytes() {
        let mut c = Checks::new();
        c.expect_eq("m", Some(&[1, 2]), &[1, 2]);
        c.expect_eq("n", Some(&[1, 2]), &[1, 3]);
        c.expect_eq("absent", None, &[9]);
        assert!(c.get("m").unwrap().ok);
        assert!(!c.get("n").unwrap().ok);
        assert!(c.get("absent").is_none());
    }

    #[test]
    fn hex_inputs() {
        assert_eq!(parse_hex_exact("0xABcd", 2).unwrap(), vec![0xab, 0xcd]);
        assert!(matches!(
            parse_hex_exact("abcd", 3),
            Err(InputError::HexLength { .. })
        ));
        assert!(parse_hex("zz").is_err());
        assert_eq!(
            decode_maybe_hex(b"0a0b\n0c\n", 10).unwrap(),
            vec![10, 11, 12]
        );
        assert_eq!(decode_maybe_hex(&[0, 1, 2], 10).unwrap(), vec![0, 1, 2]);
        assert!(decode_maybe_hex(&[0; 11], 10).is_err());
        assert!(
            decode_maybe_hex(b"abc", 10).unwrap() == b"abc".to_vec(),
            "odd digit count is raw bytes"
        );
    }

    #[test]
    fn report_data_binding_is_documented_function() {
        let nonce = [7u8; 32];
        let spki = b"spki";
        let rd = report_data(&nonce, spki).unwrap();
        let mut h = Sha512::new();
        h.update(b"decent-cloud/report-data/v1\0");
        h.update(Sha256::digest(spki));
        h.update([32u8]);
        h.update(nonce);
        assert_eq!(rd.to_vec(), h.finalize().to_vec());
        assert_ne!(rd, report_data(&[8u8; 32], spki).unwrap());
        assert_ne!(rd, report_data(&nonce, b"other").unwrap());
        assert!(report_data(&[0; 15], spki).is_err());
        assert!(report_data(&[0; 65], spki).is_err());
        assert_eq!(gpu_nonce(&rd), rd[..32]);
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_maybe_hex(&bytes, 64);
            if let Ok(s) = std::str::from_utf8(&bytes) {
                let _ = parse_hex(s);
                let _ = parse_hex_exact(s, 4);
            }
        }
    }
}
