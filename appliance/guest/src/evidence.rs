//! From a developer's nonce and the VM's TLS key to a `dc-evidence/v1` bundle:
//! the binding, the CPU report through configfs-tsm, GPU evidence given as
//! files, and the checks that catch a bundle which could never verify before
//! it leaves the VM.

use dc_attestation::bundle::{BundleError, Evidence, EvidenceBundle};
use dc_attestation::{nvidia, snp, tdx};
use dc_attestation_common::{gpu_nonce, report_data_from_spki_hash, InputError};
use x509_cert::der::pem::LineEnding;

use crate::certtable::{self, CertKind, CertTableError};
use crate::tls::{self, TlsKeyError};
use crate::tsm::{Interface, Provider, Tsm, TsmError, TsmFs, TsmReport, TsmRequest};

/// Exit codes of `dc-guest`, one per kind of failure a script can act on.
pub mod exit {
    /// Done.
    pub const OK: u8 = 0;
    /// Bad arguments or input files with the wrong content (clap uses 2 too).
    pub const USAGE: u8 = 2;
    /// This machine offers no report provider (not a confidential VM, no
    /// configfs-tsm, or a provider the bundle cannot carry).
    pub const UNAVAILABLE: u8 = 3;
    /// A file could not be read or written.
    pub const LOCAL: u8 = 4;
    /// The report interface failed or returned something unusable.
    pub const REPORT: u8 = 5;
}

/// Everything that can go wrong between the arguments and the bundle.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("nonce: {0}")]
    Nonce(InputError),
    #[error("TLS key: {0}")]
    TlsKey(#[from] TlsKeyError),
    #[error("{0}")]
    Tsm(#[from] TsmError),
    #[error("provider {0:?} makes reports the dc-evidence/v1 bundle cannot carry (it carries sev_guest and tdx_guest)")]
    UnsupportedProvider(String),
    #[error("the {provider} report is malformed: {reason}")]
    MalformedReport { provider: String, reason: String },
    #[error("the {provider} report's {field} is {found}, but {expected} was asked for")]
    ReportMismatch {
        provider: String,
        field: &'static str,
        found: String,
        expected: String,
    },
    #[error("auxblob (the host's certificates): {0}")]
    CertTable(#[from] CertTableError),
    #[error("GPU evidence {index}: {reason}")]
    Gpu { index: usize, reason: String },
    #[error("GPU evidence {index} answers nonce {found}, but this binding's gpu_nonce is {expected}: run NVIDIA's attestation tool with that nonce (`dc-guest binding` prints it)")]
    GpuNonce {
        index: usize,
        found: String,
        expected: String,
    },
    #[error("TDX collateral: {0}")]
    Collateral(String),
    #[error("TDX event log: {0}")]
    EventLog(String),
    #[error("the evidence bundle came out malformed: {0}")]
    Bundle(#[from] BundleError),
}

impl GuestError {
    /// The exit code this failure maps to (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            GuestError::Nonce(_)
            | GuestError::TlsKey(_)
            | GuestError::Gpu { .. }
            | GuestError::GpuNonce { .. }
            | GuestError::Collateral(_)
            | GuestError::EventLog(_) => exit::USAGE,
            GuestError::Tsm(e) if e.is_unavailable() => exit::UNAVAILABLE,
            GuestError::Tsm(TsmError::BadEntryName(_)) => exit::USAGE,
            GuestError::UnsupportedProvider(_) => exit::UNAVAILABLE,
            GuestError::Tsm(_)
            | GuestError::MalformedReport { .. }
            | GuestError::ReportMismatch { .. }
            | GuestError::CertTable(_)
            | GuestError::Bundle(_) => exit::REPORT,
        }
    }
}

/// The values a developer's challenge and the VM's TLS key fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub nonce: Vec<u8>,
    pub tls_spki_sha256: [u8; 32],
    /// What goes into SNP `REPORT_DATA` / TDX `REPORTDATA`:
    /// [`dc_attestation_common::report_data`].
    pub report_data: [u8; 64],
    /// The SPDM nonce a GPU report bound to the same session must carry:
    /// the first 32 bytes of `report_data`.
    pub gpu_nonce: [u8; 32],
}

impl Binding {
    /// The binding of `nonce` (16 to 64 bytes) and the TLS key's SHA-256.
    pub fn new(nonce: &[u8], tls_spki_sha256: [u8; 32]) -> Result<Self, GuestError> {
        let report_data =
            report_data_from_spki_hash(nonce, &tls_spki_sha256).map_err(GuestError::Nonce)?;
        Ok(Binding {
            nonce: nonce.to_vec(),
            tls_spki_sha256,
            report_data,
            gpu_nonce: gpu_nonce(&report_data),
        })
    }

    /// The binding of `nonce` and a DER SubjectPublicKeyInfo.
    pub fn for_spki(nonce: &[u8], tls_spki_der: &[u8]) -> Result<Self, GuestError> {
        Self::new(nonce, tls::spki_sha256(tls_spki_der))
    }
}

/// GPU evidence as NVIDIA's tools write it: the SPDM GET_MEASUREMENTS
/// request‖response (raw or hex text) and the device's certificate chain
/// (PEM, leaf first).
#[derive(Clone, Debug)]
pub struct GpuFiles {
    pub report: Vec<u8>,
    pub certs: Vec<u8>,
}

/// Checks one GPU's evidence against the binding and makes its bundle item.
/// A report made for another nonce could never verify, so it is refused here.
pub fn gpu_item(index: usize, files: &GpuFiles, binding: &Binding) -> Result<Evidence, GuestError> {
    let gpu_err = |reason: String| GuestError::Gpu { index, reason };
    let report =
        dc_attestation_common::decode_maybe_hex(&files.report, nvidia::spdm::MAX_REPORT_LEN)
            .map_err(|e| gpu_err(format!("report: {e}")))?;
    let parsed = nvidia::spdm::parse(&report).map_err(|e| gpu_err(format!("report: {e}")))?;
    if parsed.request.nonce != binding.gpu_nonce {
        return Err(GuestError::GpuNonce {
            index,
            found: hex::encode(parsed.request.nonce),
            expected: hex::encode(binding.gpu_nonce),
        });
    }
    let certs =
        nvidia::parse_certs_pem(&files.certs).map_err(|e| gpu_err(format!("certificates: {e}")))?;
    if certs.is_empty() {
        return Err(gpu_err("certificates: none in the file".into()));
    }
    let certs = String::from_utf8(files.certs.clone())
        .map_err(|_| gpu_err("certificates: not UTF-8 text".into()))?;
    Ok(Evidence::NvidiaH100 {
        report: hex::encode(&report),
        certs,
        rims: Vec::new(),
    })
}

/// Inputs for the CPU item that do not come from the kernel.
#[derive(Clone, Debug, Default)]
pub struct CpuExtras {
    /// TDX: dcap-qvl `QuoteCollateralV3` JSON (from a PCCS or Intel PCS).
    pub tdx_collateral: Option<Vec<u8>>,
    /// TDX: the CCEL event log (`/sys/firmware/acpi/tables/data/CCEL`) or a
    /// dstack JSON log.
    pub tdx_event_log: Option<Vec<u8>>,
    /// SNP: leave the host's certificate table out (when it is malformed and
    /// the verifier will fetch the VCEK itself).
    pub ignore_auxblob: bool,
}

/// The CPU item and what was learned making it.
#[derive(Clone, Debug)]
pub struct CpuItem {
    pub evidence: Evidence,
    /// The host's certificates put in the bundle or found in the table,
    /// by kind name (`vcek`, `ask`, `ark`, ...).
    pub certificates: Vec<String>,
    pub warnings: Vec<String>,
}

/// The PEM chain the bundle's `chain` field holds: ASK (or ASVK), then ARK,
/// whichever of them the host supplied.
fn chain_pem(table: &certtable::CertTable) -> Result<Option<String>, GuestError> {
    let mut pems = String::new();
    for kind in [CertKind::Ask, CertKind::Ark] {
        let Some((index, entry)) = table
            .entries
            .iter()
            .enumerate()
            .find(|(_, e)| e.kind == kind)
        else {
            continue;
        };
        let pem = x509_cert::der::pem::encode_string("CERTIFICATE", LineEnding::LF, &entry.bytes)
            .map_err(|e| CertTableError::NotACertificate {
            index,
            kind: kind.name(),
            reason: e.to_string(),
        })?;
        pems.push_str(&pem);
    }
    Ok((!pems.is_empty()).then_some(pems))
}

/// A report that does not answer the request: an error from the kernel, a
/// warning when replaying a recording.
fn tolerate_in_replay(
    interface: Interface,
    warnings: &mut Vec<String>,
    e: GuestError,
) -> Result<(), GuestError> {
    match interface {
        Interface::Configfs => Err(e),
        Interface::Directory => {
            warnings.push(format!(
                "recorded report: {e}; the bundle will not verify for this binding"
            ));
            Ok(())
        }
    }
}

/// Makes the bundle item for the kernel's report, checking that it answers
/// `request` (on configfs a mismatch is an error; a recorded report in a plain
/// directory is replayed with a warning, since it answers whatever it was
/// recorded for).
pub fn cpu_item(
    report: &TsmReport,
    request: &TsmRequest,
    interface: Interface,
    extras: &CpuExtras,
) -> Result<CpuItem, GuestError> {
    let provider = report.provider.to_string();
    let mut warnings = Vec::new();
    let mismatch =
        |field: &'static str, found: String, expected: String| GuestError::ReportMismatch {
            provider: provider.clone(),
            field,
            found,
            expected,
        };
    let malformed = |reason: String| GuestError::MalformedReport {
        provider: provider.clone(),
        reason,
    };
    match &report.provider {
        Provider::SevSnp => {
            let parsed =
                snp::parse_report(&report.outblob).map_err(|e| malformed(e.to_string()))?;
            if parsed.report_data != request.report_data {
                tolerate_in_replay(
                    interface,
                    &mut warnings,
                    mismatch(
                        "REPORT_DATA",
                        hex::encode(parsed.report_data),
                        hex::encode(request.report_data),
                    ),
                )?;
            }
            if let Some(level) = request.privlevel {
                if parsed.vmpl != level {
                    tolerate_in_replay(
                        interface,
                        &mut warnings,
                        mismatch("VMPL", parsed.vmpl.to_string(), level.to_string()),
                    )?;
                }
            }
            let mut certificates = Vec::new();
            let (mut vcek, mut chain) = (None, None);
            match (&report.auxblob, extras.ignore_auxblob) {
                (Some(_), true) => warnings.push(
                    "the host's certificate table was left out (--ignore-auxblob)".into(),
                ),
                (None, _) => warnings.push(
                    "the host supplied no certificates (no auxblob): the verifier needs the VCEK or VLEK from elsewhere".into(),
                ),
                (Some(blob), false) => {
                    let table = certtable::parse_cert_table(blob)?;
                    certificates = table.entries.iter().map(|e| e.kind.name()).collect();
                    let wanted = match parsed.signing_key() {
                        snp::SigningKey::Vcek => Some(CertKind::Vcek),
                        snp::SigningKey::Vlek => Some(CertKind::Vlek),
                        other => {
                            warnings.push(format!("the report's signing key is {other:?}: no endorsement key put in the bundle"));
                            None
                        }
                    };
                    if let Some(kind) = wanted {
                        match table.get(kind) {
                            Some(der) => vcek = Some(hex::encode(der)),
                            None => warnings.push(format!(
                                "the report is signed by the {}, which the host's certificate table lacks",
                                kind.name().to_uppercase()
                            )),
                        }
                    }
                    chain = chain_pem(&table)?;
                }
            }
            Ok(CpuItem {
                evidence: Evidence::SevSnp {
                    report: hex::encode(&report.outblob),
                    vcek,
                    chain,
                },
                certificates,
                warnings,
            })
        }
        Provider::Tdx => {
            let parsed = tdx::parse_quote(&report.outblob).map_err(|e| malformed(e.to_string()))?;
            if parsed.report_data != request.report_data {
                tolerate_in_replay(
                    interface,
                    &mut warnings,
                    mismatch(
                        "REPORTDATA",
                        hex::encode(parsed.report_data),
                        hex::encode(request.report_data),
                    ),
                )?;
            }
            let collateral = match &extras.tdx_collateral {
                Some(bytes) => {
                    if bytes.len() > tdx::MAX_COLLATERAL_BYTES {
                        return Err(GuestError::Collateral(format!(
                            "{} bytes, at most {}",
                            bytes.len(),
                            tdx::MAX_COLLATERAL_BYTES
                        )));
                    }
                    serde_json::from_slice::<serde_json::Value>(bytes)
                        .map_err(|e| GuestError::Collateral(format!("not JSON: {e}")))?
                }
                None => {
                    warnings.push("no TDX collateral given (--tdx-collateral): the bundle's collateral is null and the verifier must supply it".into());
                    serde_json::Value::Null
                }
            };
            let event_log = match &extras.tdx_event_log {
                Some(bytes) => {
                    tdx::eventlog::parse(bytes).map_err(|e| GuestError::EventLog(e.to_string()))?;
                    Some(hex::encode(bytes))
                }
                None => None,
            };
            Ok(CpuItem {
                evidence: Evidence::Tdx {
                    quote: hex::encode(&report.outblob),
                    collateral,
                    event_log,
                },
                certificates: Vec::new(),
                warnings,
            })
        }
        Provider::Other(name) => Err(GuestError::UnsupportedProvider(name.clone())),
    }
}

/// What `dc-guest evidence` asks for.
#[derive(Clone, Debug)]
pub struct EvidenceRequest {
    pub nonce: Vec<u8>,
    /// DER SubjectPublicKeyInfo of the TLS key; the bundle carries it whole.
    pub tls_spki_der: Vec<u8>,
    pub privlevel: Option<u32>,
    pub gpus: Vec<GpuFiles>,
    pub extras: CpuExtras,
}

/// A finished bundle and what the node and the operator need to know about it.
#[derive(Clone, Debug)]
pub struct EvidenceOutcome {
    pub bundle: EvidenceBundle,
    /// The bundle's bytes as they are to be written.
    pub json: String,
    pub binding: Binding,
    pub provider: Provider,
    pub interface: Interface,
    /// The kernel's attempts (more than one after a concurrent writer).
    pub attempts: u32,
    pub certificates: Vec<String>,
    pub warnings: Vec<String>,
}

/// Checks the inputs, asks `tsm` for the report, and assembles the bundle.
/// GPU evidence is checked first, so a wrong file costs no hardware request.
pub fn collect_evidence<F: TsmFs>(
    tsm: &Tsm<F>,
    request: &EvidenceRequest,
) -> Result<EvidenceOutcome, GuestError> {
    let binding = Binding::for_spki(&request.nonce, &request.tls_spki_der)?;
    let gpu_items = request
        .gpus
        .iter()
        .enumerate()
        .map(|(i, files)| gpu_item(i, files, &binding))
        .collect::<Result<Vec<_>, _>>()?;
    let tsm_request = TsmRequest {
        report_data: binding.report_data,
        privlevel: request.privlevel,
    };
    let report = tsm.collect(&tsm_request)?;
    let cpu = cpu_item(&report, &tsm_request, tsm.interface(), &request.extras)?;
    let mut items = vec![cpu.evidence];
    items.extend(gpu_items);
    let bundle = EvidenceBundle::new(&binding.nonce, &request.tls_spki_der, items);
    let json = bundle.to_json();
    // The verifier's own decoder is the judge of the shape (sizes, counts).
    let decoded = EvidenceBundle::from_json(json.as_bytes())?;
    if decoded != bundle {
        return Err(GuestError::Bundle(BundleError::Json(
            "the bundle does not survive its own JSON round trip".into(),
        )));
    }
    let mut warnings = report.warnings.clone();
    warnings.extend(cpu.warnings);
    Ok(EvidenceOutcome {
        bundle,
        json,
        binding,
        provider: report.provider,
        interface: tsm.interface(),
        attempts: report.attempts,
        certificates: cpu.certificates,
        warnings,
    })
}
