//! The GPU's device certificate chain: leaf (attestation key, "GSP FMC LF"),
//! BROM, provisioner ICA, GH100 identity, and NVIDIA's device identity root,
//! every link ECDSA P-384 with SHA-384.

use p384::ecdsa::signature::Verifier;
use p384::ecdsa::{Signature, VerifyingKey};
use x509_cert::der::{self, Decode, Encode};
use x509_cert::ext::pkix::BasicConstraints;
use x509_cert::Certificate;

use crate::NvidiaError;

/// NVIDIA's device identity root ("NVIDIA Device Identity CA", O=NVIDIA),
/// the trust anchor of every GPU attestation certificate chain.
///
/// Source: NVIDIA nvtrust,
/// `guest_tools/gpu_verifiers/local_gpu_verifier/src/verifier/certs/verifier_device_root.pem`
/// (the same file ships in confidential-containers/trustee as
/// `deps/verifier/src/nvidia/nvidia_device_root.pem`).
/// SHA-256 of the DER: [`PINNED_ROOT_SHA256_HEX`]. Valid 2021-11-05 to 9999-12-31.
pub const NVIDIA_DEVICE_ROOT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIICCzCCAZCgAwIBAgIQLTZwscoQBBHB/sDoKgZbVDAKBggqhkjOPQQDAzA1MSIw
IAYDVQQDDBlOVklESUEgRGV2aWNlIElkZW50aXR5IENBMQ8wDQYDVQQKDAZOVklE
SUEwIBcNMjExMTA1MDAwMDAwWhgPOTk5OTEyMzEyMzU5NTlaMDUxIjAgBgNVBAMM
GU5WSURJQSBEZXZpY2UgSWRlbnRpdHkgQ0ExDzANBgNVBAoMBk5WSURJQTB2MBAG
ByqGSM49AgEGBSuBBAAiA2IABA5MFKM7+KViZljbQSlgfky/RRnEQScW9NDZF8SX
gAW96r6u/Ve8ZggtcYpPi2BS4VFu6KfEIrhN6FcHG7WP05W+oM+hxj7nyA1r1jkB
2Ry70YfThX3Ba1zOryOP+MJ9vaNjMGEwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8B
Af8EBAMCAQYwHQYDVR0OBBYEFFeF/4PyY8xlfWi3Olv0jUrL+0lfMB8GA1UdIwQY
MBaAFFeF/4PyY8xlfWi3Olv0jUrL+0lfMAoGCCqGSM49BAMDA2kAMGYCMQCPeFM3
TASsKQVaT+8S0sO9u97PVGCpE9d/I42IT7k3UUOLSR/qvJynVOD1vQKVXf0CMQC+
EY55WYoDBvs2wPAH1Gw4LbcwUN8QCff8bFmV4ZxjCRr4WXTLFHBKjbfneGSBWwA=
-----END CERTIFICATE-----
";

/// SHA-256 fingerprint of the pinned root's DER encoding.
pub const PINNED_ROOT_SHA256_HEX: &str =
    "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48";

/// Number of certificates in a Hopper GPU chain (leaf to root), as nvtrust requires.
pub const GPU_CHAIN_LEN: usize = 5;
/// Longest PEM input accepted.
pub const MAX_PEM_LEN: usize = 64 * 1024;
/// Most certificates accepted in one PEM input.
pub const MAX_CERTS: usize = 16;

const OID_EC_PUBLIC_KEY: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_SECP384R1: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_ECDSA_SHA384: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_BASIC_CONSTRAINTS: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.5.29.19");
/// TCG DICE TcbInfo extension, which carries the firmware ID (FWID).
pub const OID_TCG_DICE_TCB_INFO: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.23.133.5.4.1");
const OID_SHA384: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");

/// Parses a PEM bundle of certificates, in order (leaf first for GPU chains).
pub fn parse_certs_pem(pem: &[u8]) -> Result<Vec<Certificate>, NvidiaError> {
    if pem.len() > MAX_PEM_LEN {
        return Err(NvidiaError::TooLarge {
            what: "certificate chain PEM",
            actual: pem.len(),
            limit: MAX_PEM_LEN,
        });
    }
    let count = pem.windows(11).filter(|w| *w == b"-----BEGIN ").count();
    if count == 0 {
        return Err(NvidiaError::NoCertificates);
    }
    if count > MAX_CERTS {
        return Err(NvidiaError::TooManyCertificates {
            actual: count,
            limit: MAX_CERTS,
        });
    }
    let certs = Certificate::load_pem_chain(pem).map_err(|e| NvidiaError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(NvidiaError::NoCertificates);
    }
    Ok(certs)
}

/// The pinned NVIDIA device identity root, parsed.
pub fn pinned_root() -> Result<Certificate, NvidiaError> {
    use der::DecodePem;
    Certificate::from_pem(NVIDIA_DEVICE_ROOT_PEM.as_bytes())
        .map_err(|e| NvidiaError::Pem(e.to_string()))
}

/// The outcome of the chain checks, one result per check name.
#[derive(Debug, Clone)]
pub struct ChainReport {
    /// "cert_chain": count, issuer/subject linkage, algorithms, signatures, CA flags.
    pub chain: Result<String, String>,
    /// "root_pinned": the top certificate is the pinned NVIDIA root.
    pub root_pinned: Result<String, String>,
    /// "certificate_validity": every certificate's validity period contains `now`.
    pub validity: Result<String, String>,
}

/// Checks a leaf-first chain against the pinned root at `now_unix_secs`.
pub fn verify_chain(certs: &[Certificate], now_unix_secs: u64) -> ChainReport {
    ChainReport {
        chain: check_linkage(certs),
        root_pinned: check_root(certs),
        validity: check_validity(certs, now_unix_secs),
    }
}

fn describe(cert: &Certificate) -> String {
    cert.tbs_certificate.subject.to_string()
}

fn check_linkage(certs: &[Certificate]) -> Result<String, String> {
    let mut problems: Vec<String> = Vec::new();
    if certs.len() != GPU_CHAIN_LEN {
        problems.push(format!(
            "expected {GPU_CHAIN_LEN} certificates (leaf to root), found {}",
            certs.len()
        ));
    }
    for (i, cert) in certs.iter().enumerate() {
        // The top certificate is checked against itself (self-signed root).
        let issuer = certs.get(i + 1).unwrap_or(cert);
        let is_top = i + 1 == certs.len();
        if cert.tbs_certificate.issuer != issuer.tbs_certificate.subject {
            problems.push(if is_top {
                format!(
                    "top certificate {i} ({}) is not self-issued",
                    describe(cert)
                )
            } else {
                format!(
                    "certificate {i} ({}) is issued by {}, but certificate {} is {}",
                    describe(cert),
                    cert.tbs_certificate.issuer,
                    i + 1,
                    describe(issuer)
                )
            });
            continue;
        }
        if let Err(e) = verify_cert_signature(cert, issuer) {
            problems.push(format!("certificate {i} ({}): {e}", describe(cert)));
        }
        if i > 0 && !is_ca(cert) {
            problems.push(format!(
                "certificate {i} ({}) issues certificates but is not a CA",
                describe(cert)
            ));
        }
    }
    if problems.is_empty() {
        Ok(format!(
            "{} certificates, each issued and signed (ECDSA P-384, SHA-384) by the next",
            certs.len()
        ))
    } else {
        Err(problems.join("; "))
    }
}

fn check_root(certs: &[Certificate]) -> Result<String, String> {
    let root = pinned_root().map_err(|e| format!("pinned root does not parse: {e}"))?;
    let top = certs.last().ok_or_else(|| "no certificates".to_string())?;
    let top_der = top.to_der().map_err(|e| e.to_string())?;
    let root_der = root.to_der().map_err(|e| e.to_string())?;
    if top_der == root_der {
        Ok(format!("top certificate is the pinned NVIDIA device identity root (SHA-256 {PINNED_ROOT_SHA256_HEX})"))
    } else {
        use sha2::{Digest, Sha256};
        Err(format!(
            "top certificate ({}, SHA-256 {}) is not the pinned NVIDIA device identity root (SHA-256 {PINNED_ROOT_SHA256_HEX})",
            describe(top),
            hex::encode(Sha256::digest(&top_der))
        ))
    }
}

fn check_validity(certs: &[Certificate], now: u64) -> Result<String, String> {
    if certs.is_empty() {
        return Err("no certificates".into());
    }
    let mut problems = Vec::new();
    let mut latest_start = 0u64;
    let mut earliest_end = u64::MAX;
    for (i, cert) in certs.iter().enumerate() {
        let v = &cert.tbs_certificate.validity;
        let start = v.not_before.to_unix_duration().as_secs();
        let end = v.not_after.to_unix_duration().as_secs();
        latest_start = latest_start.max(start);
        earliest_end = earliest_end.min(end);
        if now < start {
            problems.push(format!(
                "certificate {i} ({}) is not valid before {} (unix {start}); now is {now}",
                describe(cert),
                v.not_before
            ));
        } else if now > end {
            problems.push(format!(
                "certificate {i} ({}) expired at {} (unix {end}); now is {now}",
                describe(cert),
                v.not_after
            ));
        }
    }
    if problems.is_empty() {
        Ok(format!(
            "all {} certificates valid at unix {now} (common window {latest_start}..={earliest_end})",
            certs.len()
        ))
    } else {
        Err(problems.join("; "))
    }
}

fn is_ca(cert: &Certificate) -> bool {
    let exts = cert.tbs_certificate.extensions.as_deref().unwrap_or(&[]);
    match exts.iter().find(|e| e.extn_id == OID_BASIC_CONSTRAINTS) {
        Some(ext) => BasicConstraints::from_der(ext.extn_value.as_bytes())
            .map(|bc| bc.ca)
            .unwrap_or(false),
        None => false,
    }
}

/// The P-384 public key of a certificate (id-ecPublicKey on secp384r1 only).
pub fn p384_key(cert: &Certificate) -> Result<VerifyingKey, String> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    if spki.algorithm.oid != OID_EC_PUBLIC_KEY {
        return Err(format!(
            "public key algorithm {} is not id-ecPublicKey",
            spki.algorithm.oid
        ));
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok());
    if curve != Some(OID_SECP384R1) {
        return Err("public key curve is not secp384r1 (P-384)".into());
    }
    let point = spki
        .subject_public_key
        .as_bytes()
        .ok_or("public key bit string has unused bits")?;
    VerifyingKey::from_sec1_bytes(point)
        .map_err(|_| "public key is not a valid P-384 point".to_string())
}

fn verify_cert_signature(cert: &Certificate, issuer: &Certificate) -> Result<(), String> {
    if cert.signature_algorithm.oid != OID_ECDSA_SHA384 {
        return Err(format!(
            "signature algorithm {} is not ecdsa-with-SHA384",
            cert.signature_algorithm.oid
        ));
    }
    if cert.tbs_certificate.signature.oid != cert.signature_algorithm.oid {
        return Err("inner and outer signature algorithms differ".into());
    }
    let key = p384_key(issuer).map_err(|e| format!("issuer key: {e}"))?;
    let sig_der = cert
        .signature
        .as_bytes()
        .ok_or("signature bit string has unused bits")?;
    let sig = Signature::from_der(sig_der)
        .map_err(|_| "signature is not a DER ECDSA signature".to_string())?;
    let tbs = cert.tbs_certificate.to_der().map_err(|e| e.to_string())?;
    key.verify(&tbs, &sig)
        .map_err(|_| "signature does not verify with the issuer's key".to_string())
}

/// SHA-384 firmware IDs in the certificate's TCG DICE TcbInfo extension
/// (OID 2.23.133.5.4.1). NVIDIA's extension holds a version, a public key and
/// one FWID `SEQUENCE { hashAlg OID, digest OCTET STRING }`; the standard
/// TcbInfo holds them in `fwids [6]`. Both are found by walking the DER for
/// FWID-shaped sequences. nvtrust takes the extension's last 48 bytes, which is
/// the same digest for these certificates.
pub fn fwids(cert: &Certificate) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let exts = cert.tbs_certificate.extensions.as_deref().unwrap_or(&[]);
    for ext in exts.iter().filter(|e| e.extn_id == OID_TCG_DICE_TCB_INFO) {
        collect_fwids(ext.extn_value.as_bytes(), 0, &mut out);
    }
    out
}

/// Walks DER TLVs (depth-bounded) and collects SHA-384 FWID digests.
fn collect_fwids(mut bytes: &[u8], depth: usize, out: &mut Vec<Vec<u8>>) {
    if depth > 8 || out.len() > 8 {
        return;
    }
    while let Some((tag, content, rest)) = split_tlv(bytes) {
        bytes = rest;
        let constructed = tag & 0x20 != 0;
        if tag == 0x30 {
            if let Some((0x06, oid, after)) = split_tlv(content) {
                if let Some((0x04, digest, [])) = split_tlv(after) {
                    if der::asn1::ObjectIdentifier::from_bytes(oid).ok() == Some(OID_SHA384)
                        && digest.len() == 48
                    {
                        out.push(digest.to_vec());
                        continue;
                    }
                }
            }
        }
        if constructed {
            collect_fwids(content, depth + 1, out);
        }
    }
}

/// Splits one DER TLV (single-byte tags, definite lengths up to 4 bytes).
fn split_tlv(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *bytes.first()?;
    let first = *bytes.get(1)?;
    let (len, header) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *bytes.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((tag, bytes.get(header..end)?, bytes.get(end..)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn pinned_root_matches_its_fingerprint_and_is_self_signed() {
        let root = pinned_root().unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(root.to_der().unwrap())),
            PINNED_ROOT_SHA256_HEX
        );
        verify_cert_signature(&root, &root).unwrap();
        assert!(is_ca(&root));
        assert_eq!(
            root.tbs_certificate.subject.to_string(),
            "O=NVIDIA,CN=NVIDIA Device Identity CA",
            "RFC 4514 order"
        );
    }

    #[test]
    fn root_alone_is_not_a_gpu_chain() {
        let root = pinned_root().unwrap();
        let r = verify_chain(&[root], 1_700_000_000);
        assert!(r.root_pinned.is_ok());
        assert!(r.validity.is_ok());
        assert!(r.chain.unwrap_err().contains("expected 5 certificates"));
    }

    #[test]
    fn validity_uses_now() {
        let root = pinned_root().unwrap();
        // 2021-11-05T00:00:00Z is 1636070400.
        assert!(check_validity(std::slice::from_ref(&root), 1_636_070_399)
            .unwrap_err()
            .contains("not valid before"));
        assert!(check_validity(std::slice::from_ref(&root), 1_636_070_400).is_ok());
        assert!(check_validity(&[root], u64::MAX)
            .unwrap_err()
            .contains("expired"));
    }

    #[test]
    fn pem_input_errors() {
        assert!(matches!(
            parse_certs_pem(b""),
            Err(NvidiaError::NoCertificates)
        ));
        assert!(matches!(
            parse_certs_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            Err(NvidiaError::Pem(_))
        ));
        assert!(matches!(
            parse_certs_pem(&vec![b'a'; MAX_PEM_LEN + 1]),
            Err(NvidiaError::TooLarge { .. })
        ));
        let many = NVIDIA_DEVICE_ROOT_PEM.repeat(MAX_CERTS + 1);
        assert!(matches!(
            parse_certs_pem(many.as_bytes()),
            Err(NvidiaError::TooManyCertificates { .. })
        ));
        assert_eq!(
            parse_certs_pem(NVIDIA_DEVICE_ROOT_PEM.as_bytes())
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn tlv_walker_is_bounded() {
        assert!(split_tlv(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
        assert!(split_tlv(&[0x30, 0x05, 1]).is_none());
        let mut out = Vec::new();
        collect_fwids(&[0x30; 64], 0, &mut out);
        assert!(out.is_empty());
    }
}
