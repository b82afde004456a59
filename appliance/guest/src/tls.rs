//! The TLS key the evidence binds: the DER SubjectPublicKeyInfo of the key the
//! VM's TLS server presents, which is what the developer sees on the wire
//! through the ingress (the ingress splices TLS without terminating it).

use sha2::{Digest, Sha256};
use x509_cert::der::{Decode, DecodePem, Encode};
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::Certificate;

/// Largest TLS key or certificate file read.
pub const MAX_TLS_FILE_BYTES: usize = 256 * 1024;

/// Why a TLS key input is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TlsKeyError {
    #[error("{what} is {actual} bytes, at most {limit} are read")]
    TooLarge {
        what: &'static str,
        actual: usize,
        limit: usize,
    },
    #[error("PEM block is {found:?}; expected {expected}")]
    WrongPemLabel {
        found: String,
        expected: &'static str,
    },
    #[error("not PEM nor DER: {0}")]
    Encoding(String),
    #[error("not a DER SubjectPublicKeyInfo: {0}")]
    NotSpki(String),
    #[error("not an X.509 certificate: {0}")]
    NotCertificate(String),
    #[error("no CERTIFICATE block in the PEM file")]
    NoCertificate,
    #[error("SubjectPublicKeyInfo is {actual} bytes; the evidence bundle carries at most {limit}")]
    SpkiTooLarge { actual: usize, limit: usize },
}

const PEM_BEGIN: &[u8] = b"-----BEGIN ";

fn is_pem(bytes: &[u8]) -> bool {
    bytes.windows(PEM_BEGIN.len()).any(|w| w == PEM_BEGIN)
}

fn check_size(what: &'static str, bytes: &[u8]) -> Result<(), TlsKeyError> {
    if bytes.len() > MAX_TLS_FILE_BYTES {
        return Err(TlsKeyError::TooLarge {
            what,
            actual: bytes.len(),
            limit: MAX_TLS_FILE_BYTES,
        });
    }
    Ok(())
}

fn check_spki(der: &[u8]) -> Result<Vec<u8>, TlsKeyError> {
    let spki = SubjectPublicKeyInfoOwned::from_der(der)
        .map_err(|e| TlsKeyError::NotSpki(e.to_string()))?;
    // DER is canonical, so the re-encoding is byte for byte what the TLS
    // stack sends; taking it rather than the input makes that explicit.
    let canonical = spki
        .to_der()
        .map_err(|e| TlsKeyError::NotSpki(e.to_string()))?;
    let limit = dc_attestation::bundle::MAX_SPKI_BYTES;
    if canonical.len() > limit {
        return Err(TlsKeyError::SpkiTooLarge {
            actual: canonical.len(),
            limit,
        });
    }
    Ok(canonical)
}

/// A SubjectPublicKeyInfo from a file: DER, or PEM `PUBLIC KEY` (what
/// `openssl pkey -pubout` writes). Returns the DER.
pub fn spki_from_key_file(bytes: &[u8]) -> Result<Vec<u8>, TlsKeyError> {
    check_size("TLS public key file", bytes)?;
    if !is_pem(bytes) {
        return check_spki(bytes);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| TlsKeyError::Encoding(e.to_string()))?;
    let (label, der) = x509_cert::der::pem::decode_vec(text.trim().as_bytes())
        .map_err(|e| TlsKeyError::Encoding(e.to_string()))?;
    if label != "PUBLIC KEY" {
        return Err(TlsKeyError::WrongPemLabel {
            found: label.to_string(),
            expected: "PUBLIC KEY (for a certificate use --tls-cert)",
        });
    }
    check_spki(&der)
}

/// The SubjectPublicKeyInfo of a certificate: DER, or PEM where the first
/// `CERTIFICATE` block is taken (a full-chain file lists the leaf first; other
/// blocks, such as a private key in a combined file, are skipped unread).
pub fn spki_from_certificate(bytes: &[u8]) -> Result<Vec<u8>, TlsKeyError> {
    check_size("TLS certificate file", bytes)?;
    let cert = if is_pem(bytes) {
        const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
        const END: &[u8] = b"-----END CERTIFICATE-----";
        let start = find(bytes, BEGIN).ok_or(TlsKeyError::NoCertificate)?;
        let len = find(&bytes[start..], END).ok_or(TlsKeyError::NoCertificate)?;
        Certificate::from_pem(&bytes[start..start + len + END.len()])
            .map_err(|e| TlsKeyError::NotCertificate(e.to_string()))?
    } else {
        Certificate::from_der(bytes).map_err(|e| TlsKeyError::NotCertificate(e.to_string()))?
    };
    let der = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| TlsKeyError::NotCertificate(e.to_string()))?;
    check_spki(&der)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// SHA-256 of a SubjectPublicKeyInfo: what `dcctl verify evidence
/// --tls-spki-sha256` compares with the key seen on the wire.
pub fn spki_sha256(spki_der: &[u8]) -> [u8; 32] {
    Sha256::digest(spki_der).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An Ed25519 SubjectPublicKeyInfo (RFC 8410 example key).
    const ED25519_SPKI_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=
-----END PUBLIC KEY-----
";

    fn spki_der() -> Vec<u8> {
        x509_cert::der::pem::decode_vec(ED25519_SPKI_PEM.as_bytes())
            .unwrap()
            .1
    }

    #[test]
    fn key_files_in_pem_and_der_give_the_same_der() {
        let der = spki_der();
        assert_eq!(der.len(), 44);
        assert_eq!(
            spki_from_key_file(ED25519_SPKI_PEM.as_bytes()).unwrap(),
            der
        );
        assert_eq!(spki_from_key_file(&der).unwrap(), der);
    }

    #[test]
    fn wrong_inputs_say_what_they_are() {
        let cert_pem = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            spki_from_key_file(cert_pem.as_bytes()),
            Err(TlsKeyError::WrongPemLabel { .. })
        ));
        let mut trailing = spki_der();
        trailing.push(0);
        assert!(matches!(
            spki_from_key_file(&trailing),
            Err(TlsKeyError::NotSpki(_))
        ));
        assert!(matches!(
            spki_from_certificate(ED25519_SPKI_PEM.as_bytes()),
            Err(TlsKeyError::NoCertificate)
        ));
        assert!(matches!(
            spki_from_certificate(b"\x30\x03\x02\x01\x00"),
            Err(TlsKeyError::NotCertificate(_))
        ));
        assert!(matches!(
            spki_from_key_file(&vec![b'A'; MAX_TLS_FILE_BYTES + 1]),
            Err(TlsKeyError::TooLarge { .. })
        ));
    }

    #[test]
    fn certificate_spki_is_extracted_from_a_real_certificate() {
        // The AMD Milan ARK: any real certificate will do, and its public key
        // is a 4096-bit RSA-PSS key.
        let Some(v) = dc_attestation_common::vectors_dir() else {
            eprintln!("skipped: no vectors (set DC_VECTORS)");
            return;
        };
        let pem = std::fs::read(v.join("virtee-sev/amd_milan_ark.pem")).unwrap();
        let spki = spki_from_certificate(&pem).unwrap();
        let cert = Certificate::from_pem(&pem).unwrap();
        assert_eq!(
            spki,
            cert.tbs_certificate
                .subject_public_key_info
                .to_der()
                .unwrap()
        );
        assert!(spki.len() > 500, "an RSA-4096 key");
        // A chain file: the first certificate is taken.
        let chain = std::fs::read(v.join("virtee-sev/cert_chain_milan")).unwrap();
        let first = spki_from_certificate(&chain).unwrap();
        let ask = std::fs::read(v.join("virtee-sev/amd_milan_ask.pem")).unwrap();
        assert_eq!(first, spki_from_certificate(&ask).unwrap());
        // DER certificate.
        assert_eq!(
            spki_from_certificate(&cert.to_der().unwrap()).unwrap(),
            spki
        );
    }

    proptest! {
        #[test]
        fn key_inputs_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = spki_from_key_file(&bytes);
            let _ = spki_from_certificate(&bytes);
        }
    }
}
