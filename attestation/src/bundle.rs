//! The evidence bundle: one versioned JSON document that carries a VM's
//! attestation evidence (any of SEV-SNP, TDX, NVIDIA H100), what is needed to
//! verify it offline, the developer's nonce and the TLS public key it binds.
//!
//! ```json
//! {
//!   "format": "dc-evidence/v1",
//!   "nonce": "<hex, 16..64 bytes, the developer's challenge>",
//!   "tls_public_key": "<hex DER SubjectPublicKeyInfo of the VM's TLS key>",
//!   "evidence": [
//!     { "kind": "sev-snp", "report": "<hex, 1184 bytes>",
//!       "vcek": "<PEM or hex DER; VCEK or VLEK>", "chain": "<PEM: ASK or ASVK, then ARK>" },
//!     { "kind": "tdx", "quote": "<hex>", "collateral": { ...dcap-qvl QuoteCollateralV3... },
//!       "event_log": "<hex CCEL, optional>" },
//!     { "kind": "nvidia-h100", "report": "<hex SPDM request||response>",
//!       "certs": "<PEM chain, leaf first>", "rims": ["<swidtag XML>", ...] }
//!   ]
//! }
//! ```
//!
//! Binding: the SNP `REPORT_DATA` and TDX `REPORTDATA` must equal
//! [`report_data`](dc_attestation_common::report_data)`(nonce, tls_public_key)`,
//! and the GPU's SPDM nonce must equal its first 32 bytes. `vcek`, `chain`,
//! `event_log` and `rims` are optional; without a VCEK the SNP verifier fails
//! unless an online fetch is configured by the caller.
//!
//! RIMs travel in a bundle only as a hint of which manifests apply: they are
//! checked for well-formedness, never judged against. A RIM the attested VM
//! supplies could list whatever its GPU measures, and its XML signature is not
//! verified here, so comparing the report with it would show a passed check
//! that proves nothing. The GPU's measurements are judged only against the
//! RIMs of the verifier's policy ([`NvidiaPolicy::rims`], `dcctl verify
//! evidence --rim`), which the verifier chose to trust.

use dc_attestation_common::{parse_hex, report_data, Checks};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use dc_attestation_nvidia::{self as nvidia, NvidiaPolicy};
use dc_attestation_snp::{self as snp, SnpEvidence, SnpPolicy};
use dc_attestation_tdx::{self as tdx, TdxPolicy};

/// The `format` value of this version of the bundle.
pub const BUNDLE_FORMAT: &str = "dc-evidence/v1";
/// Largest bundle a verifier reads.
pub const MAX_BUNDLE_BYTES: usize = 4 << 20;
/// Most evidence items in one bundle (a CPU TEE plus up to 8 GPUs, with room).
pub const MAX_EVIDENCE_ITEMS: usize = 16;
/// Largest TLS SubjectPublicKeyInfo accepted (RSA-8192 fits easily).
pub const MAX_SPKI_BYTES: usize = 2048;

/// A bundle as it travels (see the module documentation for the layout).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceBundle {
    pub format: String,
    pub nonce: String,
    pub tls_public_key: String,
    pub evidence: Vec<Evidence>,
}

/// One piece of hardware evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Evidence {
    SevSnp {
        report: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vcek: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chain: Option<String>,
    },
    Tdx {
        quote: String,
        collateral: serde_json::Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_log: Option<String>,
    },
    #[serde(rename = "nvidia-h100")]
    NvidiaH100 {
        report: String,
        certs: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        rims: Vec<String>,
    },
}

impl Evidence {
    /// The `kind` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            Evidence::SevSnp { .. } => "sev-snp",
            Evidence::Tdx { .. } => "tdx",
            Evidence::NvidiaH100 { .. } => "nvidia-h100",
        }
    }
}

/// Why a bundle could not be read at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("bundle is {actual} bytes, at most {limit} are accepted")]
    TooLarge { actual: usize, limit: usize },
    #[error("bundle is not valid JSON of format {BUNDLE_FORMAT}: {0}")]
    Json(String),
    #[error("bundle format is {0:?}, this verifier reads {BUNDLE_FORMAT:?}")]
    Format(String),
    #[error("bundle field {field}: {reason}")]
    Field { field: String, reason: String },
}

impl EvidenceBundle {
    /// Assembles a bundle (the guest side).
    pub fn new(nonce: &[u8], tls_spki_der: &[u8], evidence: Vec<Evidence>) -> Self {
        EvidenceBundle {
            format: BUNDLE_FORMAT.to_string(),
            nonce: hex::encode(nonce),
            tls_public_key: hex::encode(tls_spki_der),
            evidence,
        }
    }

    /// Decodes and checks the bundle's shape (sizes, counts, hex fields); the
    /// evidence itself is checked by [`verify_bundle`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge {
                actual: bytes.len(),
                limit: MAX_BUNDLE_BYTES,
            });
        }
        let bundle: EvidenceBundle =
            serde_json::from_slice(bytes).map_err(|e| BundleError::Json(e.to_string()))?;
        if bundle.format != BUNDLE_FORMAT {
            return Err(BundleError::Format(bundle.format));
        }
        let field = |field: &str, reason: String| BundleError::Field {
            field: field.to_string(),
            reason,
        };
        let nonce = parse_hex(&bundle.nonce).map_err(|e| field("nonce", e.to_string()))?;
        if !(dc_attestation_common::MIN_NONCE_LEN..=dc_attestation_common::MAX_NONCE_LEN)
            .contains(&nonce.len())
        {
            return Err(field(
                "nonce",
                format!("must be 16 to 64 bytes, got {}", nonce.len()),
            ));
        }
        let spki = parse_hex(&bundle.tls_public_key)
            .map_err(|e| field("tls_public_key", e.to_string()))?;
        if spki.is_empty() || spki.len() > MAX_SPKI_BYTES {
            return Err(field(
                "tls_public_key",
                format!(
                    "must be 1 to {MAX_SPKI_BYTES} bytes of DER, got {}",
                    spki.len()
                ),
            ));
        }
        if bundle.evidence.is_empty() || bundle.evidence.len() > MAX_EVIDENCE_ITEMS {
            return Err(field(
                "evidence",
                format!(
                    "must hold 1 to {MAX_EVIDENCE_ITEMS} items, got {}",
                    bundle.evidence.len()
                ),
            ));
        }
        Ok(bundle)
    }

    /// The bundle as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// What the developer expects beyond the hardware vendors' rules.
#[derive(Clone, Debug, Default)]
pub struct BundlePolicy {
    /// The nonce the developer sent; `None` only when freshness is explicitly
    /// not required (an auditor re-checking old evidence).
    pub expected_nonce: Option<Vec<u8>>,
    /// SHA-256 of the TLS SubjectPublicKeyInfo the developer saw on the wire.
    pub expected_tls_spki_sha256: Option<[u8; 32]>,
    pub snp: SnpPolicy,
    pub tdx: TdxPolicy,
    pub nvidia: NvidiaPolicy,
}

/// The verification of one evidence item, as its verifier reported it.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ItemVerification {
    Snp(Box<snp::SnpVerification>),
    Tdx(Box<tdx::TdxVerification>),
    Nvidia(Box<nvidia::NvidiaVerification>),
}

impl ItemVerification {
    pub fn verified(&self) -> bool {
        match self {
            ItemVerification::Snp(v) => v.verified,
            ItemVerification::Tdx(v) => v.verified,
            ItemVerification::Nvidia(v) => v.verified,
        }
    }
}

/// The outcome of [`verify_bundle`], printed by `dcctl verify evidence --json`.
#[derive(Debug, Serialize)]
pub struct BundleVerification {
    pub verified: bool,
    pub platform: &'static str,
    pub format: String,
    pub nonce: String,
    pub tls_public_key_sha256: String,
    pub report_data: String,
    pub items: Vec<ItemVerification>,
    pub checks: Checks,
}

/// Verifies a bundle: its shape, freshness, TLS key, and every evidence item
/// under `policy` with the report data the nonce and TLS key imply. Never panics.
pub fn verify_bundle(
    bytes: &[u8],
    policy: &BundlePolicy,
    now_unix_secs: u64,
) -> BundleVerification {
    let mut out = BundleVerification {
        verified: false,
        platform: "bundle",
        format: String::new(),
        nonce: String::new(),
        tls_public_key_sha256: String::new(),
        report_data: String::new(),
        items: Vec::new(),
        checks: Checks::new(),
    };
    let bundle = match EvidenceBundle::from_json(bytes) {
        Ok(b) => b,
        Err(e) => {
            out.checks.fail("bundle_parse", e.to_string());
            return out;
        }
    };
    // from_json validated both hex fields.
    let nonce = parse_hex(&bundle.nonce).unwrap_or_default();
    let spki = parse_hex(&bundle.tls_public_key).unwrap_or_default();
    let spki_sha256: [u8; 32] = Sha256::digest(&spki).into();
    out.format = bundle.format.clone();
    out.nonce = bundle.nonce.clone();
    out.tls_public_key_sha256 = hex::encode(spki_sha256);
    out.checks.pass(
        "bundle_parse",
        format!("{} item(s): {}", bundle.evidence.len(), kinds(&bundle)),
    );

    match &policy.expected_nonce {
        Some(expected) if *expected == nonce => out
            .checks
            .pass("nonce", "equals the challenge that was sent"),
        Some(expected) => out.checks.fail(
            "nonce",
            format!(
                "bundle answers nonce {}, the challenge was {}",
                bundle.nonce,
                hex::encode(expected)
            ),
        ),
        None => {}
    }
    if let Some(expected) = policy.expected_tls_spki_sha256 {
        out.checks
            .expect_eq("tls_public_key", Some(&expected), &spki_sha256);
    }

    let binding = match report_data(&nonce, &spki) {
        Ok(rd) => rd,
        Err(e) => {
            out.checks.fail("report_data_binding", e.to_string());
            return out;
        }
    };
    out.report_data = hex::encode(binding);

    for (i, item) in bundle.evidence.iter().enumerate() {
        let name = format!("evidence[{i}].{}", item.kind());
        let verification = verify_item(item, policy, &binding, now_unix_secs);
        match &verification {
            Ok(v) if v.verified() => out.checks.pass(&name, "every check passed"),
            Ok(v) => out.checks.fail(&name, failed_summary(v)),
            Err(reason) => out.checks.fail(&name, reason.clone()),
        }
        if let Ok(v) = verification {
            out.items.push(v);
        }
    }
    out.verified = out.checks.all_ok();
    out
}

fn kinds(bundle: &EvidenceBundle) -> String {
    bundle
        .evidence
        .iter()
        .map(Evidence::kind)
        .collect::<Vec<_>>()
        .join(", ")
}

fn failed_summary(v: &ItemVerification) -> String {
    let checks = match v {
        ItemVerification::Snp(v) => &v.checks,
        ItemVerification::Tdx(v) => &v.checks,
        ItemVerification::Nvidia(v) => &v.checks,
    };
    let failed: Vec<String> = checks
        .failed()
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    format!("failed {}", failed.join("; "))
}

fn hex_field(what: &str, text: &str) -> Result<Vec<u8>, String> {
    parse_hex(text).map_err(|e| format!("{what}: {e}"))
}

/// A certificate field holds PEM text or hex DER.
fn cert_field(what: &str, text: &str) -> Result<Vec<u8>, String> {
    if text.contains("-----BEGIN") {
        Ok(text.as_bytes().to_vec())
    } else {
        hex_field(what, text)
    }
}

fn verify_item(
    item: &Evidence,
    policy: &BundlePolicy,
    binding: &[u8; 64],
    now_unix_secs: u64,
) -> Result<ItemVerification, String> {
    match item {
        Evidence::SevSnp {
            report,
            vcek,
            chain,
        } => {
            let report = hex_field("report", report)?;
            let vcek = vcek.as_deref().map(|v| cert_field("vcek", v)).transpose()?;
            let chain = chain.as_deref().map(|c| c.as_bytes().to_vec());
            let mut p = policy.snp.clone();
            p.expected_report_data = Some(*binding);
            let evidence = SnpEvidence {
                report: &report,
                endorsement_key: vcek.as_deref(),
                chain: chain.as_deref(),
            };
            Ok(ItemVerification::Snp(Box::new(snp::verify(
                &evidence,
                &p,
                now_unix_secs,
            ))))
        }
        Evidence::Tdx {
            quote,
            collateral,
            event_log,
        } => {
            let quote = hex_field("quote", quote)?;
            let collateral =
                serde_json::to_vec(collateral).map_err(|e| format!("collateral: {e}"))?;
            let event_log = event_log
                .as_deref()
                .map(|l| hex_field("event_log", l))
                .transpose()?;
            let mut p = policy.tdx.clone();
            p.expected_report_data = Some(*binding);
            Ok(ItemVerification::Tdx(Box::new(tdx::verify(
                &quote,
                &collateral,
                &p,
                now_unix_secs,
                event_log.as_deref(),
            ))))
        }
        Evidence::NvidiaH100 {
            report,
            certs,
            rims,
        } => {
            let report = hex_field("report", report)?;
            let mut p = policy.nvidia.clone();
            p.expected_nonce = Some(dc_attestation_common::gpu_nonce(binding));
            // Well-formed or refused, but never trusted (see the module docs).
            for (i, xml) in rims.iter().enumerate() {
                nvidia::rim::parse(xml.as_bytes()).map_err(|e| format!("rims[{i}]: {e}"))?;
            }
            Ok(ItemVerification::Nvidia(Box::new(nvidia::verify(
                &report,
                certs.as_bytes(),
                &p,
                now_unix_secs,
            ))))
        }
    }
}

/// Fuzz entry: any bytes through the bundle decoder and verifier. Never panics.
pub fn fuzz_bundle(data: &[u8]) {
    let _ = EvidenceBundle::from_json(data);
    let _ = verify_bundle(data, &BundlePolicy::default(), 1_700_000_000);
}
