//! Certificates of the AMD key hierarchy: ARK (root, self-signed) → ASK or
//! ASVK (intermediate) → VCEK or VLEK (signs reports), with the AMD X.509
//! extensions that bind a VCEK to one chip and one TCB (VCEK specification,
//! AMD document 57230, "VCEK Certificate Extensions").

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};
use sev::certs::snp::Verifiable;
use x509_cert::der::{Decode, DecodePem, Encode};
use x509_cert::Certificate;

use crate::{Generation, SnpError, TcbLevels};

/// Largest certificate input accepted (a chain file is well under 16 KiB).
pub const MAX_CERT_INPUT: usize = 64 * 1024;
/// Most certificates accepted in one input.
pub const MAX_CERTS: usize = 8;

/// AMD VCEK extension OIDs (spec 57230 and what real VCEKs carry).
pub mod oid {
    /// blSPL: boot loader security patch level.
    pub const BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
    /// teeSPL: PSP OS security patch level.
    pub const TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
    /// snpSPL: SNP firmware security patch level.
    pub const SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
    /// ucodeSPL: microcode security patch level.
    pub const UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
    /// fmcSPL: FMC security patch level (Turin on).
    pub const FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
    /// hwID: the chip ID the VCEK belongs to (absent from VLEKs).
    pub const HW_ID: &str = "1.3.6.1.4.1.3704.1.4";
    /// productName, e.g. "Milan-B0".
    pub const PRODUCT_NAME: &str = "1.3.6.1.4.1.3704.1.2";
}

/// What kind of AMD key a certificate certifies, from its subject name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// Subject CN "SEV-VCEK".
    Vcek,
    /// Subject CN "SEV-VLEK".
    Vlek,
    /// Anything else (an ASK, ARK, or a certificate AMD did not make).
    Other,
}

/// Splits a PEM bundle (text between blocks ignored) or a single DER certificate.
pub fn parse_certs(input: &[u8]) -> Result<Vec<Certificate>, SnpError> {
    if input.len() > MAX_CERT_INPUT {
        return Err(SnpError::Certificate(format!(
            "certificate input is {} bytes, at most {MAX_CERT_INPUT}",
            input.len()
        )));
    }
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let mut certs = Vec::new();
    if find(input, BEGIN).is_none() {
        let cert = Certificate::from_der(input).map_err(|e| {
            SnpError::Certificate(format!("not a PEM bundle nor a DER certificate: {e}"))
        })?;
        certs.push(cert);
        return Ok(certs);
    }
    let mut rest = input;
    while let Some(start) = find(rest, BEGIN) {
        let after = &rest[start..];
        let end = find(after, END)
            .ok_or_else(|| SnpError::Certificate("PEM block without an END line".into()))?;
        let block = &after[..end + END.len()];
        let cert = Certificate::from_pem(block).map_err(|e| {
            SnpError::Certificate(format!("PEM certificate {}: {e}", certs.len() + 1))
        })?;
        certs.push(cert);
        if certs.len() > MAX_CERTS {
            return Err(SnpError::Certificate(format!(
                "more than {MAX_CERTS} certificates"
            )));
        }
        rest = &after[end + END.len()..];
    }
    Ok(certs)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The common name of a certificate's subject, if it has one.
pub fn subject_cn(cert: &Certificate) -> Option<String> {
    name_cn(&cert.tbs_certificate.subject)
}

/// The common name of a certificate's issuer, if it has one.
pub fn issuer_cn(cert: &Certificate) -> Option<String> {
    name_cn(&cert.tbs_certificate.issuer)
}

fn name_cn(name: &x509_cert::name::Name) -> Option<String> {
    const CN: &str = "2.5.4.3";
    for rdn in name.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid.to_string() == CN {
                // AMD uses PrintableString or UTF8String; both are text bytes.
                return std::str::from_utf8(atv.value.value())
                    .ok()
                    .map(str::to_string);
            }
        }
    }
    None
}

/// A short label for messages: the subject CN or "certificate without CN".
pub fn label(cert: &Certificate) -> String {
    subject_cn(cert).unwrap_or_else(|| "certificate without CN".to_string())
}

/// True when subject equals issuer (a root candidate).
pub fn is_self_issued(cert: &Certificate) -> bool {
    cert.tbs_certificate.subject == cert.tbs_certificate.issuer
}

/// Which key the certificate certifies, from its subject CN.
pub fn key_kind(cert: &Certificate) -> KeyKind {
    match subject_cn(cert).as_deref() {
        Some("SEV-VCEK") => KeyKind::Vcek,
        Some("SEV-VLEK") => KeyKind::Vlek,
        _ => KeyKind::Other,
    }
}

/// The generation an AMD CA name mentions ("ARK-Milan", "SEV-VLEK-Genoa", ...).
pub fn generation_in_name(cn: &str) -> Option<Generation> {
    Generation::ALL
        .into_iter()
        .find(|g| cn.ends_with(g.kds_name()))
}

/// The pinned ARK of a generation: the root built into the `sev` crate.
pub fn pinned_ark(generation: Generation) -> Result<Certificate, SnpError> {
    static PARSED: [OnceLock<Result<Certificate, String>>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let (slot, pem) = match generation {
        Generation::Milan => (&PARSED[0], sev::certs::snp::builtin::milan::ARK),
        Generation::Genoa => (&PARSED[1], sev::certs::snp::builtin::genoa::ARK),
        Generation::Turin => (&PARSED[2], sev::certs::snp::builtin::turin::ARK),
    };
    slot.get_or_init(|| Certificate::from_pem(pem).map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| SnpError::Certificate(format!("built-in {generation} ARK: {e}")))
}

/// The built-in ASK of a generation (the VCEK intermediate; there is no built-in ASVK).
pub fn builtin_ask(generation: Generation) -> Result<Certificate, SnpError> {
    static PARSED: [OnceLock<Result<Certificate, String>>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let (slot, pem) = match generation {
        Generation::Milan => (&PARSED[0], sev::certs::snp::builtin::milan::ASK),
        Generation::Genoa => (&PARSED[1], sev::certs::snp::builtin::genoa::ASK),
        Generation::Turin => (&PARSED[2], sev::certs::snp::builtin::turin::ASK),
    };
    slot.get_or_init(|| Certificate::from_pem(pem).map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| SnpError::Certificate(format!("built-in {generation} ASK: {e}")))
}

/// The pinned generation whose ARK `root` is: byte-equal, or the same public key.
pub fn pinned_generation_of(root: &Certificate) -> Option<Generation> {
    let der = root.to_der().ok()?;
    let spki = root.tbs_certificate.subject_public_key_info.to_der().ok()?;
    Generation::ALL.into_iter().find(|&g| {
        pinned_ark(g).ok().is_some_and(|ark| {
            ark.to_der().ok().as_deref() == Some(der.as_slice())
                || ark
                    .tbs_certificate
                    .subject_public_key_info
                    .to_der()
                    .ok()
                    .as_deref()
                    == Some(spki.as_slice())
        })
    })
}

/// Checks that `issuer`'s key made the RSASSA-PSS (SHA-384) signature on `subject`,
/// as AMD signs ARK, ASK/ASVK and VCEK/VLEK certificates.
///
/// Results are remembered per (issuer, subject) pair of exact DER encodings:
/// the check is a pure function of those bytes (validity times are checked
/// separately, at every verification), and a verifier sees the same few AMD
/// certificates again and again, so a warm process skips the RSA-4096 work.
pub fn rsa_pss_signed_by(issuer: &Certificate, subject: &Certificate) -> Result<(), String> {
    let (Ok(issuer_der), Ok(subject_der)) = (issuer.to_der(), subject.to_der()) else {
        return Err("certificate does not re-encode as DER".to_string());
    };
    let key: LinkKey = (Sha256::digest(&issuer_der).into(), Sha256::digest(&subject_der).into());
    if let Some(hit) = link_cache().lock().ok().and_then(|c| c.get(&key).cloned()) {
        return hit;
    }
    let issuer = sev::certs::snp::Certificate::from(issuer.clone());
    let subject = sev::certs::snp::Certificate::from(subject.clone());
    let result = (&issuer, &subject).verify().map_err(|e| e.to_string());
    if let Ok(mut cache) = link_cache().lock() {
        if cache.len() >= MAX_CACHED_LINKS {
            cache.clear();
        }
        cache.insert(key, result.clone());
    }
    result
}

/// SHA-256 of the issuer's and the subject's DER.
type LinkKey = ([u8; 32], [u8; 32]);

/// Bound on remembered certificate links (a few hundred bytes each).
const MAX_CACHED_LINKS: usize = 4096;

fn link_cache() -> &'static Mutex<HashMap<LinkKey, Result<(), String>>> {
    static CACHE: OnceLock<Mutex<HashMap<LinkKey, Result<(), String>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Checks `now_unix_secs` against notBefore/notAfter.
pub fn check_validity(cert: &Certificate, now_unix_secs: u64) -> Result<(), String> {
    let validity = &cert.tbs_certificate.validity;
    let not_before = validity.not_before.to_unix_duration().as_secs();
    let not_after = validity.not_after.to_unix_duration().as_secs();
    if now_unix_secs < not_before {
        Err(format!(
            "{} is not valid yet: notBefore {not_before} > now {now_unix_secs}",
            label(cert)
        ))
    } else if now_unix_secs > not_after {
        Err(format!(
            "{} expired: notAfter {not_after} < now {now_unix_secs}",
            label(cert)
        ))
    } else {
        Ok(())
    }
}

fn extension<'a>(cert: &'a Certificate, oid: &str) -> Option<&'a [u8]> {
    cert.tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id.to_string() == oid)
        .map(|e| e.extn_value.as_bytes())
}

/// An SPL extension: a DER INTEGER from 0 to 255.
fn spl(cert: &Certificate, oid: &str, name: &str) -> Result<Option<u8>, String> {
    let Some(value) = extension(cert, oid) else {
        return Ok(None);
    };
    u8::from_der(value)
        .map(Some)
        .map_err(|e| format!("{name} extension ({oid}) is not an INTEGER 0..=255: {e}"))
}

/// The TCB a VCEK/VLEK certifies, from its blSPL/teeSPL/snpSPL/ucodeSPL(/fmcSPL)
/// extensions. Missing mandatory extensions are an error.
pub fn tcb_from_extensions(cert: &Certificate) -> Result<TcbLevels, String> {
    let need = |oid: &str, name: &str| -> Result<u8, String> {
        spl(cert, oid, name)?.ok_or_else(|| format!("certificate has no {name} extension ({oid})"))
    };
    Ok(TcbLevels {
        bootloader: need(oid::BL_SPL, "blSPL")?,
        tee: need(oid::TEE_SPL, "teeSPL")?,
        snp: need(oid::SNP_SPL, "snpSPL")?,
        microcode: need(oid::UCODE_SPL, "ucodeSPL")?,
        fmc: spl(cert, oid::FMC_SPL, "fmcSPL")?,
    })
}

/// The hwID extension: 64 bytes (8 on Turin), raw as AMD's KDS writes it, or
/// wrapped in a DER OCTET STRING as some newer certificates do.
pub fn hw_id(cert: &Certificate) -> Result<Option<Vec<u8>>, String> {
    let Some(value) = extension(cert, oid::HW_ID) else {
        return Ok(None);
    };
    if value.len() == 64 || value.len() == 8 {
        return Ok(Some(value.to_vec()));
    }
    let inner = x509_cert::der::asn1::OctetString::from_der(value).map_err(|e| {
        format!(
            "hwID extension is {} bytes and not an OCTET STRING: {e}",
            value.len()
        )
    })?;
    let inner = inner.as_bytes();
    if inner.len() == 64 || inner.len() == 8 {
        Ok(Some(inner.to_vec()))
    } else {
        Err(format!(
            "hwID extension holds {} bytes, expected 64 or 8",
            inner.len()
        ))
    }
}

/// The productName extension ("Milan-B0", "Genoa", "Turin"), if present and text.
pub fn product_name(cert: &Certificate) -> Option<String> {
    let value = extension(cert, oid::PRODUCT_NAME)?;
    x509_cert::der::asn1::Ia5StringRef::from_der(value)
        .ok()
        .map(|s| s.as_str().to_string())
}

/// The SEC1 public key of a certificate (for the VCEK/VLEK: a P-384 point).
pub fn public_key_sec1(cert: &Certificate) -> &[u8] {
    cert.tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
}
