//! Offline verifier of NVIDIA Hopper (H100) confidential-computing attestation.
//!
//! [`verify`] takes the GPU's report (SPDM `GET_MEASUREMENTS` request ||
//! response, see [`spdm`]), its PEM certificate chain and a [`NvidiaPolicy`],
//! and returns every check it made: the chain up to the NVIDIA device identity
//! root pinned in this crate ([`certs`]), the ECDSA P-384 report signature, the
//! nonce, the firmware ID, and the measurements against reference integrity
//! manifests ([`rim`]). Time is a parameter; nothing here does I/O except
//! through a caller's [`dc_attestation_common::fetch::Fetcher`].

pub mod certs;
pub mod rim;
pub mod spdm;

use dc_attestation_common::Checks;
use serde::Serialize;

pub use certs::{parse_certs_pem, NVIDIA_DEVICE_ROOT_PEM, PINNED_ROOT_SHA256_HEX};
pub use rim::{Rim, RimError, RimKind};
pub use spdm::{SpdmError, SpdmMeasurements};
pub use x509_cert::Certificate;

/// Name of the platform in verification results.
pub const PLATFORM: &str = "nvidia-h100";

/// Errors of the input decoders of this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NvidiaError {
    #[error("{what} is {actual} bytes, at most {limit} are accepted")]
    TooLarge {
        what: &'static str,
        actual: usize,
        limit: usize,
    },
    #[error("no PEM certificate found")]
    NoCertificates,
    #[error("{actual} certificates, at most {limit} are accepted")]
    TooManyCertificates { actual: usize, limit: usize },
    #[error("certificate PEM/DER does not parse: {0}")]
    Pem(String),
    #[error("report: {0}")]
    Spdm(#[from] SpdmError),
    #[error("reference manifest: {0}")]
    Rim(#[from] RimError),
}

/// What the verifier expects besides a genuine, signed report.
#[derive(Debug, Clone, Default)]
pub struct NvidiaPolicy {
    /// The SPDM request nonce must equal this (the verifier's fresh challenge,
    /// e.g. [`dc_attestation_common::gpu_nonce`]). `None`: freshness not checked.
    pub expected_nonce: Option<[u8; 32]>,
    /// Reference manifests (driver and VBIOS) whose active measurements the
    /// report must match. Their XML signatures are not verified: supply trusted ones.
    pub rims: Vec<Rim>,
    /// Fail when no RIM is supplied (default: measurements are reported, not judged).
    pub require_rims: bool,
}

/// One measurement block of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeasurementSummary {
    /// SPDM index (1-based).
    pub index: u8,
    /// Value, lower-case hex.
    pub value: String,
}

/// The outcome of [`verify`]: every check, and the claims read from the report.
#[derive(Debug, Clone, Serialize)]
pub struct NvidiaVerification {
    /// True when every check passed.
    pub verified: bool,
    pub platform: &'static str,
    /// The SPDM request nonce, hex (empty when the report does not parse).
    pub nonce: String,
    /// The report's firmware ID, hex.
    pub fwid: Option<String>,
    pub driver_version: Option<String>,
    pub vbios_version: Option<String>,
    pub measurements: Vec<MeasurementSummary>,
    pub checks: Checks,
}

/// Verifies an NVIDIA Hopper attestation report (raw bytes, not hex) with its
/// PEM certificate chain (leaf first) at `now_unix_secs`. Never panics; every
/// failure is a failed check with its reason.
///
/// Checks, in order: `spdm_parse`, `cert_chain`, `root_pinned`,
/// `certificate_validity`, `report_signature`, `nonce`, `fwid`,
/// `rim_versions`, `rim_measurements`.
pub fn verify(
    report: &[u8],
    cert_chain_pem: &[u8],
    policy: &NvidiaPolicy,
    now_unix_secs: u64,
) -> NvidiaVerification {
    let mut checks = Checks::new();
    let mut out = NvidiaVerification {
        verified: false,
        platform: PLATFORM,
        nonce: String::new(),
        fwid: None,
        driver_version: None,
        vbios_version: None,
        measurements: Vec::new(),
        checks: Checks::new(),
    };

    // The report.
    let parsed = match spdm::parse(report) {
        Ok(p) => {
            let padding = if p.padding_len > 0 {
                format!(
                    "; {} zero byte(s) of unsigned padding after the signature",
                    p.padding_len
                )
            } else {
                String::new()
            };
            checks.pass(
                "spdm_parse",
                format!(
                    "SPDM 1.1 GET_MEASUREMENTS: {} measurement blocks, {} opaque fields{padding}",
                    p.response.blocks.len(),
                    p.response.opaque.fields.len()
                ),
            );
            out.nonce = hex::encode(p.request.nonce);
            out.fwid = p.response.opaque.fwid().map(hex::encode);
            out.driver_version = p.response.opaque.driver_version();
            out.vbios_version = p.response.opaque.vbios_version();
            out.measurements = p
                .response
                .blocks
                .iter()
                .map(|b| MeasurementSummary {
                    index: b.index,
                    value: hex::encode(&b.value),
                })
                .collect();
            Some(p)
        }
        Err(e) => {
            checks.fail("spdm_parse", e.to_string());
            None
        }
    };

    // The certificate chain.
    let certs = match parse_certs_pem(cert_chain_pem) {
        Ok(certs) => {
            let r = certs::verify_chain(&certs, now_unix_secs);
            checks.record("cert_chain", r.chain);
            checks.record("root_pinned", r.root_pinned);
            checks.record("certificate_validity", r.validity);
            certs
        }
        Err(e) => {
            for name in ["cert_chain", "root_pinned", "certificate_validity"] {
                checks.fail(name, format!("certificate chain does not parse: {e}"));
            }
            Vec::new()
        }
    };
    let leaf = certs.first();

    // The signature over request || response-without-signature.
    checks.record(
        "report_signature",
        match (&parsed, leaf) {
            (None, _) => Err("not checked: the report does not parse".to_string()),
            (_, None) => Err("not checked: no leaf certificate".to_string()),
            (Some(p), Some(leaf)) => verify_report_signature(p, leaf),
        },
    );

    // Freshness.
    match (&parsed, policy.expected_nonce) {
        (None, _) => checks.fail("nonce", "not checked: the report does not parse"),
        (Some(p), Some(expected)) => {
            if p.request.nonce == expected {
                checks.pass(
                    "nonce",
                    format!(
                        "request nonce equals the expected {}",
                        hex::encode(expected)
                    ),
                );
            } else {
                checks.fail(
                    "nonce",
                    format!(
                        "request nonce is {}, expected {}",
                        hex::encode(p.request.nonce),
                        hex::encode(expected)
                    ),
                );
            }
        }
        // Nothing was asked: no check is listed (the nonce is in the output).
        (Some(_), None) => {}
    }

    // Firmware ID: the leaf certificate's against the report's.
    checks.record(
        "fwid",
        match (&parsed, leaf) {
            (None, _) => Err("not checked: the report does not parse".to_string()),
            (_, None) => Err("not checked: no leaf certificate".to_string()),
            (Some(p), Some(leaf)) => check_fwid(p, leaf),
        },
    );

    // Reference manifests.
    match &parsed {
        None => {
            checks.fail("rim_versions", "not checked: the report does not parse");
            checks.fail("rim_measurements", "not checked: the report does not parse");
        }
        Some(_) if policy.rims.is_empty() => {
            // Without RIMs the measurements are reported, not judged; a policy
            // that requires RIMs fails here.
            if policy.require_rims {
                let detail = "RIMs are required and none was supplied";
                checks.fail("rim_versions", detail);
                checks.fail("rim_measurements", detail);
            }
        }
        Some(p) => {
            let versions: Vec<Result<String, String>> = policy
                .rims
                .iter()
                .map(|r| rim::check_version(r, p))
                .collect();
            let failed: Vec<String> = versions.iter().filter_map(|r| r.clone().err()).collect();
            if failed.is_empty() {
                let ok: Vec<String> = versions.into_iter().filter_map(Result::ok).collect();
                checks.pass("rim_versions", ok.join("; "));
            } else {
                checks.fail("rim_versions", failed.join("; "));
            }
            checks.record("rim_measurements", rim_measurements_detail(&policy.rims, p));
        }
    }

    out.verified = checks.all_ok();
    out.checks = checks;
    out
}

fn verify_report_signature(p: &SpdmMeasurements, leaf: &Certificate) -> Result<String, String> {
    use p384::ecdsa::signature::Verifier;
    let key = certs::p384_key(leaf).map_err(|e| format!("leaf certificate: {e}"))?;
    let sig = p384::ecdsa::Signature::from_slice(&p.response.signature)
        .map_err(|_| "signature r or s is zero or not below the P-384 order".to_string())?;
    key.verify(&p.signed_message, &sig)
        .map(|()| {
            format!(
                "ECDSA P-384/SHA-384 over {} bytes of request || response verifies with the leaf key ({})",
                p.signed_message.len(),
                leaf.tbs_certificate.subject
            )
        })
        .map_err(|_| format!("signature does not verify with the leaf key ({})", leaf.tbs_certificate.subject))
}

fn check_fwid(p: &SpdmMeasurements, leaf: &Certificate) -> Result<String, String> {
    let reported = p
        .response
        .opaque
        .fwid()
        .ok_or("the report's opaque data has no FWID")?;
    let in_cert = certs::fwids(leaf);
    if in_cert.is_empty() {
        return Err(
            "the leaf certificate has no SHA-384 FWID (TCG DICE extension 2.23.133.5.4.1)".into(),
        );
    }
    if in_cert.iter().any(|f| f.as_slice() == reported) {
        Ok(format!(
            "report FWID {} equals the leaf certificate's",
            hex::encode(reported)
        ))
    } else {
        Err(format!(
            "report FWID {} differs from the leaf certificate's {}",
            hex::encode(reported),
            in_cert
                .iter()
                .map(hex::encode)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

fn rim_measurements_detail(rims: &[Rim], p: &SpdmMeasurements) -> Result<String, String> {
    let c = rim::compare(rims, p);
    let unsigned = "RIM XML signatures not verified";
    let skipped = if c.skipped.is_empty() {
        String::new()
    } else {
        let s: Vec<String> = c
            .skipped
            .iter()
            .map(|(i, why)| format!("{i} ({why})"))
            .collect();
        format!("; skipped RIM index {}", s.join(", "))
    };
    if c.ok() {
        return Ok(format!(
            "{} active measurements match{skipped}; {unsigned}",
            c.compared
        ));
    }
    let mut problems = Vec::new();
    if c.compared == 0 {
        problems.push("the RIMs have no active measurement to compare".to_string());
    }
    if !c.conflicts.is_empty() {
        problems.push(format!(
            "RIM indexes active in more than one RIM: {:?}",
            c.conflicts
        ));
    }
    if !c.mismatches.is_empty() {
        let idx: Vec<String> = c
            .mismatches
            .iter()
            .map(|m| m.rim_index.to_string())
            .collect();
        problems.push(format!(
            "{} of {} active measurements differ, at RIM indexes (0-based; SPDM index is one more) {}",
            c.mismatches.len(),
            c.compared,
            idx.join(", ")
        ));
    }
    Err(format!("{}{skipped}; {unsigned}", problems.join("; ")))
}

/// Fuzz entry for the report parser and the whole verifier: never panics.
pub fn fuzz_spdm(data: &[u8]) {
    if let Ok(p) = spdm::parse(data) {
        let _ = rim::driver_rim_id(&p);
        let _ = rim::vbios_rim_id(&p);
        let _ = p.response.opaque.measurement_counts();
    }
    let _ = verify(
        data,
        NVIDIA_DEVICE_ROOT_PEM.as_bytes(),
        &NvidiaPolicy::default(),
        0,
    );
}

/// Fuzz entry for the RIM parser: never panics.
pub fn fuzz_rim(data: &[u8]) {
    let _ = rim::parse(data);
}
