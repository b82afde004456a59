//! `dcctl verify …` and `dcctl measure …`: attestation for developers and
//! auditors. Verification is offline by default; `--fetch` lets the AMD key
//! server or Intel PCS supply missing collateral, cached on disk.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use dc_attestation::bundle::{verify_bundle, BundlePolicy, BundleVerification, ItemVerification};
use dc_attestation::fetch::{
    CachingFetcher, FetchError, FetchResponse, Fetcher, FileCache, NoFetch,
};
use dc_attestation::{measure, nvidia, snp, tdx, Checks};
use serde::Serialize;
use serde_json::{json, Value};

use dc_ledger_core::Contract;

use crate::exit::CliError;
use crate::market::{fetch_contract, published_measurement, ContractBinding, PublishedMeasurement};
use crate::output::Output;
use crate::Context;

/// Largest evidence or collateral file read (reports are ~1 KiB, quotes ~8 KiB,
/// collateral and RIMs tens of KiB).
const MAX_EVIDENCE_FILE_BYTES: u64 = 4 << 20;
/// Largest image read by `measure` (firmware, kernel, initrd).
const MAX_IMAGE_FILE_BYTES: u64 = 1 << 30;

pub const VERIFY_AFTER_HELP: &str = "\
Every check is printed with its result and reason; `verified` is true only when
all passed. A failed check exits 1 (with --json the object is still printed);
unreadable files exit 4; bad arguments exit 2.

Evidence files may be raw bytes or hex text. Verification is offline: pass the
VCEK/VLEK (SNP) or collateral (TDX) as files, or add --fetch to get them from
AMD's key server or Intel's PCS (cached under --cache-dir).

`verify evidence --contract ID` reads the contract from the ledger (--ledger)
and requires the report's launch measurement (SNP MEASUREMENT; TDX MRTD,
RTMR1 and RTMR2, so the kernel, initrd and command line too) to equal the one
the contract published, and its HOST_DATA (SNP) or MRCONFIGID (TDX) to equal
the contract's binding (both shown by `dcctl contract show ID`). A contract
without a published measurement, or with one of the other platform, fails
the check contract_launch_measurement; an unreachable ledger exits 3.

Examples:
  dcctl verify snp --report report.bin --vcek vcek.der --expect-measurement 7f51…
  dcctl verify tdx --quote quote.bin --collateral collateral.json --now 1751624655
  dcctl verify nvidia --report gpu.hex --certs chain.pem --nonce 4cff…
  dcctl verify evidence bundle.json --nonce 0011…eeff --tls-spki-sha256 9f86…0a08
  dcctl verify evidence bundle.json --nonce 0011…eeff --tls-spki-sha256 9f86…0a08 --contract 7";

/// `dcctl verify …`
#[derive(Subcommand)]
pub enum VerifyCmd {
    /// Verify an AMD SEV-SNP attestation report up to AMD's pinned roots.
    Snp(SnpArgs),
    /// Verify an Intel TDX quote (v4, v5) with its collateral.
    Tdx(TdxArgs),
    /// Verify an NVIDIA H100 SPDM measurement report and its certificate chain.
    Nvidia(NvidiaArgs),
    /// Verify an evidence bundle (dc-evidence/v1 JSON), its binding to a
    /// nonce and a TLS key and, with --contract, to a contract on the ledger.
    #[command(after_help = EVIDENCE_HELP)]
    Evidence(EvidenceArgs),
}

/// Options every verifier shares.
#[derive(Args, Clone)]
pub struct CommonVerifyArgs {
    /// Verify as of this time (Unix seconds); default now. Certificates and
    /// collateral must be valid at this time.
    #[arg(long)]
    pub now: Option<u64>,
    /// Fetch missing VCEKs (AMD KDS) or TDX collateral (Intel PCS) online.
    #[arg(long)]
    pub fetch: bool,
    /// Where fetched collateral is cached. Default: $XDG_CACHE_HOME/dcctl/attestation.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// `dcctl verify snp`
#[derive(Args)]
pub struct SnpArgs {
    /// The attestation report (1184 bytes, raw or hex).
    #[arg(long)]
    pub report: PathBuf,
    /// VCEK or VLEK certificate (DER or PEM). Without it, --fetch gets the VCEK from AMD.
    #[arg(long)]
    pub vcek: Option<PathBuf>,
    /// Certificate chain (PEM: ASK or ASVK, then ARK). Default: AMD's pinned
    /// Milan, Genoa and Turin roots; a chain's root must be one of them.
    #[arg(long)]
    pub chain: Option<PathBuf>,
    /// Expected launch measurement (48 bytes hex), e.g. from `dcctl measure snp`.
    #[arg(long)]
    pub expect_measurement: Option<String>,
    /// Expected REPORT_DATA (64 bytes hex).
    #[arg(long)]
    pub expect_report_data: Option<String>,
    /// Expected HOST_DATA (32 bytes hex): the contract the provider bound into the launch.
    #[arg(long)]
    pub expect_host_data: Option<String>,
    /// Required VMPL of the report.
    #[arg(long, default_value_t = 0)]
    pub vmpl: u32,
    /// Minimum TCB, e.g. `bootloader=3,tee=0,snp=8,microcode=115` (add `fmc=N` on Turin).
    #[arg(long)]
    pub min_tcb: Option<String>,
    /// Accept guests whose policy allows a migration agent.
    #[arg(long)]
    pub allow_migration_agent: bool,
    #[command(flatten)]
    pub common: CommonVerifyArgs,
}

/// `dcctl verify tdx`
#[derive(Args)]
pub struct TdxArgs {
    /// The TD quote (v4 or v5, raw or hex).
    #[arg(long)]
    pub quote: PathBuf,
    /// Collateral JSON (PCK CRLs, TCB info, QE identity and their chains). Without it, --fetch gets it from Intel PCS.
    #[arg(long)]
    pub collateral: Option<PathBuf>,
    /// Intel PCS or a PCCS base URL for --fetch.
    #[arg(long, default_value = "https://api.trustedservices.intel.com")]
    pub pcs_url: String,
    /// Expected MRTD (48 bytes hex), e.g. from `dcctl measure tdx`.
    #[arg(long)]
    pub expect_mrtd: Option<String>,
    /// Expected RTMR0..3 as INDEX=HEX, repeatable: `--expect-rtmr 1=ab12…`.
    #[arg(long = "expect-rtmr")]
    pub expect_rtmr: Vec<String>,
    /// Expected MRCONFIGID (48 bytes hex): the contract the provider bound into the launch.
    #[arg(long)]
    pub expect_mrconfigid: Option<String>,
    /// Expected REPORTDATA (64 bytes hex).
    #[arg(long)]
    pub expect_report_data: Option<String>,
    /// Accept this TCB status besides UpToDate (repeatable), e.g. SWHardeningNeeded.
    #[arg(long = "accept-tcb-status")]
    pub accept_tcb_status: Vec<String>,
    /// Accept this advisory ID (repeatable), e.g. INTEL-SA-00837.
    #[arg(long = "allow-advisory")]
    pub allow_advisory: Vec<String>,
    /// CCEL event log to replay against the RTMRs.
    #[arg(long)]
    pub event_log: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonVerifyArgs,
}

/// `dcctl verify nvidia`
#[derive(Args)]
pub struct NvidiaArgs {
    /// SPDM GET_MEASUREMENTS request||response (raw or hex).
    #[arg(long)]
    pub report: PathBuf,
    /// The GPU's certificate chain (PEM, leaf first, five certificates).
    #[arg(long)]
    pub certs: PathBuf,
    /// Expected nonce (32 bytes hex).
    #[arg(long)]
    pub nonce: Option<String>,
    /// Reference integrity manifest (swidtag XML) to compare measurements with; repeatable.
    #[arg(long = "rim")]
    pub rims: Vec<PathBuf>,
    #[command(flatten)]
    pub common: CommonVerifyArgs,
}

/// `dcctl verify evidence`
#[derive(Args)]
pub struct EvidenceArgs {
    /// The bundle (dc-evidence/v1 JSON).
    pub file: PathBuf,
    /// The challenge you sent (hex, 16–64 bytes); the bundle must answer it.
    #[arg(long, required_unless_present = "any_nonce")]
    pub nonce: Option<String>,
    /// Skip the freshness check (re-checking old evidence as an auditor).
    #[arg(long, conflicts_with = "nonce")]
    pub any_nonce: bool,
    /// SHA-256 of the TLS SubjectPublicKeyInfo you saw on the connection to
    /// the VM (hex). Required: without it the evidence proves what runs
    /// somewhere, not that the endpoint you talk to is that VM (see below).
    #[arg(long, required_unless_present = "any_tls_key")]
    pub tls_spki_sha256: Option<String>,
    /// Skip the TLS key check (an auditor re-checking evidence with no
    /// connection to compare it with). Never before sending secrets.
    #[arg(long, conflicts_with = "tls_spki_sha256")]
    pub any_tls_key: bool,
    /// Expected SNP launch measurement (hex).
    #[arg(long)]
    pub expect_measurement: Option<String>,
    /// Expected SNP HOST_DATA (hex).
    #[arg(long)]
    pub expect_host_data: Option<String>,
    /// Expected TDX MRTD (hex).
    #[arg(long)]
    pub expect_mrtd: Option<String>,
    /// Expected TDX MRCONFIGID (hex).
    #[arg(long)]
    pub expect_mrconfigid: Option<String>,
    /// Minimum SEV-SNP TCB of the report, e.g.
    /// `bootloader=3,tee=0,snp=8,microcode=115` (add `fmc=N` on Turin): old
    /// firmware and microcode still get a VCEK from AMD, so only this refuses them.
    #[arg(long)]
    pub min_tcb: Option<String>,
    /// Accept this TDX TCB status besides UpToDate (repeatable).
    #[arg(long = "accept-tcb-status")]
    pub accept_tcb_status: Vec<String>,
    /// Accept this TDX advisory ID (repeatable).
    #[arg(long = "allow-advisory")]
    pub allow_advisory: Vec<String>,
    /// Reference integrity manifest (swidtag XML) you trust, to judge the
    /// GPUs' measurements against; repeatable. RIMs inside the bundle come
    /// from the VM being attested and are never judged against.
    #[arg(long = "rim", value_name = "FILE")]
    pub rims: Vec<PathBuf>,
    /// Check the evidence against this contract on the ledger (--ledger): the
    /// launch measurement it published (SNP MEASUREMENT; TDX MRTD, RTMR1 and
    /// RTMR2) and its binding (SNP HOST_DATA, TDX MRCONFIGID). Replaces the
    /// --expect-* flags.
    #[arg(
        long,
        value_name = "ID",
        conflicts_with_all = ["expect_measurement", "expect_host_data", "expect_mrtd", "expect_mrconfigid"]
    )]
    pub contract: Option<u64>,
    /// Verify as of this time (Unix seconds); default now.
    #[arg(long)]
    pub now: Option<u64>,
}

/// `dcctl verify evidence --help`, after the options.
const EVIDENCE_HELP: &str = "\
Why the TLS key: the bundle's report data binds your nonce to the VM's TLS
key. Genuine evidence relayed by another endpoint (one the provider runs, say)
still verifies; only comparing the key with the one on your connection shows
that the endpoint you are about to send secrets to is the attested VM.

The key's hash, from the connection you will use:
  openssl s_client -connect HOST:443 -servername NAME </dev/null 2>/dev/null \\
    | openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256sum

Examples:
  dcctl verify evidence bundle.json --nonce $NONCE --tls-spki-sha256 $SPKI --contract 7
  dcctl verify evidence bundle.json --any-nonce --any-tls-key --json   # an auditor";

/// `dcctl measure …`
#[derive(Subcommand)]
pub enum MeasureCmd {
    /// Predict the SEV-SNP launch measurement of a direct-boot VM.
    Snp(MeasureSnpArgs),
    /// Predict TDX MRTD (from TDVF) and RTMR1/RTMR2 (direct boot).
    Tdx(MeasureTdxArgs),
}

/// `dcctl measure snp`
#[derive(Args)]
pub struct MeasureSnpArgs {
    /// A JSON document of hashes (see the README): no large binaries needed.
    #[arg(long, conflicts_with_all = ["ovmf", "kernel", "initrd", "dstack_cbor"], required_unless_present_any = ["ovmf", "dstack_cbor"])]
    pub input: Option<PathBuf>,
    /// A dstack VM's SNP measurement document (`measurement.snp.cbor`); give
    /// the VM shape with --vcpus, --vcpu-type and --guest-features.
    #[arg(long, conflicts_with_all = ["ovmf", "kernel", "initrd"])]
    pub dstack_cbor: Option<PathBuf>,
    /// OVMF firmware (AmdSev build with the SEV hashes table).
    #[arg(long, requires_all = ["kernel", "initrd"])]
    pub ovmf: Option<PathBuf>,
    /// Kernel (bzImage).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Initrd.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// vCPUs.
    #[arg(long, default_value_t = 1)]
    pub vcpus: u32,
    /// QEMU CPU model: EPYC-v4, EPYC-Milan, EPYC-Genoa, …
    #[arg(long, default_value = "EPYC-v4")]
    pub vcpu_type: String,
    /// SEV features in the VMSA (guest_features).
    #[arg(long, default_value_t = 1)]
    pub guest_features: u64,
    /// Also print the JSON document of hashes (to publish for auditors).
    #[arg(long)]
    pub print_input: bool,
}

/// `dcctl measure tdx`
#[derive(Args)]
pub struct MeasureTdxArgs {
    /// TDVF (OVMF built for TDX) image.
    #[arg(long)]
    pub tdvf: PathBuf,
    /// Kernel (bzImage) for RTMR1.
    #[arg(long, requires = "initrd")]
    pub kernel: Option<PathBuf>,
    /// Initrd for RTMR2.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line for RTMR2.
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Guest memory in MiB (QEMU writes the initrd address, which depends on
    /// it, into the kernel's setup header before OVMF measures the kernel).
    #[arg(long, default_value_t = 2048)]
    pub memory_mib: u64,
    /// QEMU before 9.0 adds TDVF pages in two passes, which changes MRTD.
    #[arg(long)]
    pub qemu_two_pass: bool,
}

fn read_file(path: &Path, limit: u64) -> Result<Vec<u8>, CliError> {
    let meta =
        std::fs::metadata(path).map_err(|e| CliError::local(format!("{}: {e}", path.display())))?;
    if meta.len() > limit {
        return Err(CliError::local(format!(
            "{}: {} bytes, at most {limit} are read",
            path.display(),
            meta.len()
        )));
    }
    std::fs::read(path).map_err(|e| CliError::local(format!("{}: {e}", path.display())))
}

fn read_evidence(path: &Path) -> Result<Vec<u8>, CliError> {
    let raw = read_file(path, MAX_EVIDENCE_FILE_BYTES)?;
    dc_attestation::decode_maybe_hex(&raw, MAX_EVIDENCE_FILE_BYTES as usize)
        .map_err(|e| CliError::local(format!("{}: {e}", path.display())))
}

fn hex_arg<const N: usize>(
    flag: &str,
    value: &Option<String>,
) -> Result<Option<[u8; N]>, CliError> {
    value
        .as_deref()
        .map(|v| {
            let bytes = dc_attestation::parse_hex_exact(v, N)
                .map_err(|e| CliError::usage(format!("{flag}: {e}")))?;
            let mut out = [0u8; N];
            out.copy_from_slice(&bytes);
            Ok(out)
        })
        .transpose()
}

fn now_or(now: Option<u64>) -> u64 {
    now.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    })
}

/// `$XDG_CACHE_HOME/dcctl/attestation`, else `~/.cache/dcctl/attestation`.
fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("dcctl")
        .join("attestation")
}

/// HTTP GET with a bounded body, for `--fetch`.
struct HttpFetcher {
    client: reqwest::blocking::Client,
}

const MAX_FETCH_BYTES: usize = 4 << 20;

impl HttpFetcher {
    fn new() -> Result<Self, CliError> {
        let client = reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| CliError::local(format!("HTTP client: {e}")))?;
        Ok(HttpFetcher { client })
    }
}

impl Fetcher for HttpFetcher {
    fn get(&self, url: &str) -> Result<FetchResponse, FetchError> {
        let transport = |e: reqwest::Error| FetchError::Transport {
            url: url.to_string(),
            reason: e.to_string(),
        };
        let response = self.client.get(url).send().map_err(transport)?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().ok()?.to_string(),
                ))
            })
            .collect();
        let body = response.bytes().map_err(transport)?;
        if body.len() > MAX_FETCH_BYTES {
            return Err(FetchError::TooLarge {
                url: url.to_string(),
                limit: MAX_FETCH_BYTES,
            });
        }
        Ok(FetchResponse {
            status,
            headers,
            body: body.to_vec(),
        })
    }
}

/// Runs `work` with the fetcher the flags ask for, on a blocking thread
/// (the HTTP client is blocking and verification is CPU work).
async fn with_fetcher<T: Send + 'static>(
    common: &CommonVerifyArgs,
    work: impl FnOnce(&dyn Fetcher) -> T + Send + 'static,
) -> Result<T, CliError> {
    let fetch = common.fetch;
    let cache = FileCache::new(common.cache_dir.clone().unwrap_or_else(default_cache_dir));
    tokio::task::spawn_blocking(move || -> Result<T, CliError> {
        if fetch {
            let http = HttpFetcher::new()?;
            Ok(work(&CachingFetcher {
                cache: &cache,
                inner: &http,
            }))
        } else {
            Ok(work(&NoFetch))
        }
    })
    .await
    .map_err(|e| CliError::local(format!("verification thread: {e}")))?
}

fn print_checks(checks: &Checks) -> String {
    checks
        .iter()
        .map(|c| {
            format!(
                "  [{}] {:<22} {}",
                if c.ok { " ok " } else { "FAIL" },
                c.name,
                c.detail
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Prints a verification and turns `verified == false` into exit code 1.
fn finish<V: Serialize>(
    out: &Output,
    what: &str,
    verified: bool,
    value: &V,
    checks: &Checks,
    summary: String,
) -> Result<(), CliError> {
    let object = serde_json::to_value(value).unwrap_or(Value::Null);
    out.print(object, || {
        let verdict = if verified { "VERIFIED" } else { "NOT VERIFIED" };
        format!("{what}: {verdict}\n{summary}\n{}", print_checks(checks))
    });
    if verified {
        Ok(())
    } else {
        let failed: Vec<&str> = checks.failed().map(|c| c.name.as_str()).collect();
        Err(CliError::refused(format!(
            "{what} not verified: failed {}",
            failed.join(", ")
        )))
    }
}

fn parse_min_tcb(text: &str) -> Result<snp::TcbLevels, CliError> {
    let mut tcb = snp::TcbLevels {
        bootloader: 0,
        tee: 0,
        snp: 0,
        microcode: 0,
        fmc: None,
    };
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("--min-tcb: {part:?} is not NAME=VALUE")))?;
        let v: u8 = v
            .parse()
            .map_err(|_| CliError::usage(format!("--min-tcb: {v:?} is not a number 0..255")))?;
        match k {
            "bootloader" => tcb.bootloader = v,
            "tee" => tcb.tee = v,
            "snp" => tcb.snp = v,
            "microcode" => tcb.microcode = v,
            "fmc" => tcb.fmc = Some(v),
            other => {
                return Err(CliError::usage(format!(
                    "--min-tcb: unknown field {other:?} (bootloader, tee, snp, microcode, fmc)"
                )))
            }
        }
    }
    Ok(tcb)
}

/// `dcctl verify snp`
pub async fn verify_snp(out: Output, a: SnpArgs) -> Result<(), CliError> {
    let report = read_evidence(&a.report)?;
    let vcek = a
        .vcek
        .as_deref()
        .map(|p| read_file(p, MAX_EVIDENCE_FILE_BYTES))
        .transpose()?;
    let chain = a
        .chain
        .as_deref()
        .map(|p| read_file(p, MAX_EVIDENCE_FILE_BYTES))
        .transpose()?;
    let policy = snp::SnpPolicy {
        required_vmpl: Some(a.vmpl),
        min_tcb: a.min_tcb.as_deref().map(parse_min_tcb).transpose()?,
        allow_migration_agent: a.allow_migration_agent,
        expected_measurement: hex_arg::<48>("--expect-measurement", &a.expect_measurement)?,
        expected_report_data: hex_arg::<64>("--expect-report-data", &a.expect_report_data)?,
        expected_host_data: hex_arg::<32>("--expect-host-data", &a.expect_host_data)?,
        ..snp::SnpPolicy::default()
    };
    let now = now_or(a.common.now);
    let v = with_fetcher(&a.common, move |fetcher| {
        let evidence = snp::SnpEvidence {
            report: &report,
            endorsement_key: vcek.as_deref(),
            chain: chain.as_deref(),
        };
        snp::verify_with_fetch(&evidence, &policy, now, fetcher)
    })
    .await?;
    let summary = format!(
        "  generation {}, signed by {}, measurement {}\n  report_data {}\n  chip_id {}",
        v.generation.as_deref().unwrap_or("unknown"),
        v.signing_key.as_deref().unwrap_or("unknown"),
        v.measurement,
        v.report_data,
        v.chip_id
    );
    finish(&out, "SEV-SNP report", v.verified, &v, &v.checks, summary)
}

/// `dcctl verify tdx`
pub async fn verify_tdx(out: Output, a: TdxArgs) -> Result<(), CliError> {
    let quote = read_evidence(&a.quote)?;
    let collateral = a
        .collateral
        .as_deref()
        .map(|p| read_file(p, MAX_EVIDENCE_FILE_BYTES))
        .transpose()?;
    if collateral.is_none() && !a.common.fetch {
        return Err(CliError::usage(
            "--collateral FILE is required unless --fetch is given",
        ));
    }
    let event_log = a
        .event_log
        .as_deref()
        .map(|p| read_file(p, MAX_EVIDENCE_FILE_BYTES))
        .transpose()?;
    let mut expected_rtmrs: [Option<[u8; 48]>; 4] = [None; 4];
    for spec in &a.expect_rtmr {
        let (i, h) = spec.split_once('=').ok_or_else(|| {
            CliError::usage(format!("--expect-rtmr {spec:?}: expected INDEX=HEX"))
        })?;
        let i: usize =
            i.parse().ok().filter(|i| *i < 4).ok_or_else(|| {
                CliError::usage(format!("--expect-rtmr: index {i:?} is not 0..3"))
            })?;
        expected_rtmrs[i] = hex_arg::<48>("--expect-rtmr", &Some(h.to_string()))?;
    }
    let mut accepted = vec!["UpToDate".to_string()];
    accepted.extend(a.accept_tcb_status.iter().cloned());
    let policy = tdx::TdxPolicy {
        accepted_tcb_statuses: accepted,
        allowed_advisories: a.allow_advisory.clone(),
        expected_mrtd: hex_arg::<48>("--expect-mrtd", &a.expect_mrtd)?,
        expected_rtmrs,
        expected_mrconfigid: hex_arg::<48>("--expect-mrconfigid", &a.expect_mrconfigid)?,
        expected_report_data: hex_arg::<64>("--expect-report-data", &a.expect_report_data)?,
        ..tdx::TdxPolicy::default()
    };
    let now = now_or(a.common.now);
    let pcs_url = a.pcs_url.clone();
    let v = with_fetcher(
        &a.common,
        move |fetcher| -> Result<tdx::TdxVerification, CliError> {
            let collateral = match collateral {
                Some(c) => c,
                None => {
                    tdx::pcs::fetch_collateral(&quote, &pcs_url, fetcher).map_err(|e| CliError {
                        code: crate::exit::UNREACHABLE,
                        message: format!("fetching TDX collateral: {e}"),
                    })?
                }
            };
            Ok(tdx::verify(
                &quote,
                &collateral,
                &policy,
                now,
                event_log.as_deref(),
            ))
        },
    )
    .await??;
    let summary = format!(
        "  quote v{}, TCB status {}, advisories [{}]\n  mrtd {}\n  report_data {}",
        v.quote_version,
        v.tcb_status,
        v.advisory_ids.join(", "),
        v.mrtd,
        v.report_data
    );
    finish(&out, "TDX quote", v.verified, &v, &v.checks, summary)
}

/// The RIMs given with `--rim`, parsed.
fn read_rims(paths: &[PathBuf]) -> Result<Vec<nvidia::rim::Rim>, CliError> {
    paths
        .iter()
        .map(|path| {
            let xml = read_file(path, MAX_EVIDENCE_FILE_BYTES)?;
            nvidia::rim::parse(&xml)
                .map_err(|e| CliError::local(format!("{}: {e}", path.display())))
        })
        .collect()
}

/// `dcctl verify nvidia`
pub async fn verify_nvidia(out: Output, a: NvidiaArgs) -> Result<(), CliError> {
    let report = read_evidence(&a.report)?;
    let certs = read_file(&a.certs, MAX_EVIDENCE_FILE_BYTES)?;
    let policy = nvidia::NvidiaPolicy {
        expected_nonce: hex_arg::<32>("--nonce", &a.nonce)?,
        rims: read_rims(&a.rims)?,
        ..nvidia::NvidiaPolicy::default()
    };
    let now = now_or(a.common.now);
    let v = with_fetcher(&a.common, move |_| {
        nvidia::verify(&report, &certs, &policy, now)
    })
    .await?;
    let summary = format!(
        "  nonce {}\n  driver {}, VBIOS {}",
        v.nonce,
        v.driver_version.as_deref().unwrap_or("?"),
        v.vbios_version.as_deref().unwrap_or("?")
    );
    finish(
        &out,
        "NVIDIA H100 report",
        v.verified,
        &v,
        &v.checks,
        summary,
    )
}

/// What `--contract` asks of a bundle, beyond the policy it sets: the
/// contract published a launch measurement, and the bundle has CPU evidence
/// (SEV-SNP or TDX) that the measurement and binding were checked on.
/// Appended to the bundle's checks; `verified` falls with any of them.
fn add_contract_checks(
    v: &mut BundleVerification,
    c: &Contract,
    measurement: &Result<Option<PublishedMeasurement>, String>,
) {
    let count = |tdx: bool| {
        v.items
            .iter()
            .filter(|i| match i {
                ItemVerification::Snp(_) => !tdx,
                ItemVerification::Tdx(_) => tdx,
                ItemVerification::Nvidia(_) => false,
            })
            .count()
    };
    let (snp_items, tdx_items) = (count(false), count(true));
    let cpu_items = snp_items + tdx_items;
    let mut ok = true;
    let mut check = |name: &str, passed: bool, detail: String| {
        ok &= passed;
        v.checks.push(name, passed, detail);
    };
    match measurement {
        // A report of the other platform would be checked against nothing.
        Ok(Some(PublishedMeasurement::Snp(m))) if tdx_items > 0 => check(
            "contract_launch_measurement",
            false,
            format!(
                "contract {} published 48 bytes ({}): an SEV-SNP MEASUREMENT, or a TDX MRTD \
                 alone, which leaves the kernel unmeasured; the bundle has TDX evidence, which \
                 needs MRTD, RTMR1 and RTMR2",
                c.id,
                hex::encode(m)
            ),
        ),
        Ok(Some(PublishedMeasurement::Tdx { .. })) if snp_items > 0 => check(
            "contract_launch_measurement",
            false,
            format!(
                "contract {} published a TDX measurement; the bundle has SEV-SNP evidence",
                c.id
            ),
        ),
        Ok(Some(PublishedMeasurement::Snp(m))) => check(
            "contract_launch_measurement",
            true,
            format!(
                "contract {} published {}; the SNP MEASUREMENT must equal it",
                c.id,
                hex::encode(m)
            ),
        ),
        Ok(Some(PublishedMeasurement::Tdx { mrtd, rtmr1, rtmr2 })) => check(
            "contract_launch_measurement",
            true,
            format!(
                "contract {} published MRTD {}, RTMR1 {}, RTMR2 {}; the TDX report's must equal them",
                c.id,
                hex::encode(mrtd),
                hex::encode(rtmr1),
                hex::encode(rtmr2)
            ),
        ),
        Ok(None) => check(
            "contract_launch_measurement",
            false,
            format!(
                "contract {} ({}) has no published launch measurement: its offering is not \
                 confidential, or its node has not reported the VM active",
                c.id,
                c.state.as_str()
            ),
        ),
        Err(reason) => check("contract_launch_measurement", false, reason.clone()),
    }
    check(
        "contract_evidence",
        cpu_items > 0,
        if cpu_items > 0 {
            format!(
                "{cpu_items} SEV-SNP/TDX item(s) checked against contract {}'s measurement and binding",
                c.id
            )
        } else {
            format!(
                "the bundle has no SEV-SNP or TDX evidence, so nothing in it is bound to contract {}",
                c.id
            )
        },
    );
    v.verified &= ok;
}

/// `dcctl verify evidence`
pub async fn verify_evidence(ctx: &Context, a: EvidenceArgs) -> Result<(), CliError> {
    let out = ctx.out;
    let bytes = read_file(&a.file, dc_attestation::bundle::MAX_BUNDLE_BYTES as u64)?;
    let expected_nonce = a
        .nonce
        .as_deref()
        .map(|n| dc_attestation::parse_hex(n).map_err(|e| CliError::usage(format!("--nonce: {e}"))))
        .transpose()?;
    let mut accepted = vec!["UpToDate".to_string()];
    accepted.extend(a.accept_tcb_status.iter().cloned());
    let mut policy = BundlePolicy {
        expected_nonce,
        expected_tls_spki_sha256: hex_arg::<32>("--tls-spki-sha256", &a.tls_spki_sha256)?,
        snp: snp::SnpPolicy {
            expected_measurement: hex_arg::<48>("--expect-measurement", &a.expect_measurement)?,
            expected_host_data: hex_arg::<32>("--expect-host-data", &a.expect_host_data)?,
            min_tcb: a.min_tcb.as_deref().map(parse_min_tcb).transpose()?,
            ..snp::SnpPolicy::default()
        },
        tdx: tdx::TdxPolicy {
            accepted_tcb_statuses: accepted,
            allowed_advisories: a.allow_advisory.clone(),
            expected_mrtd: hex_arg::<48>("--expect-mrtd", &a.expect_mrtd)?,
            expected_mrconfigid: hex_arg::<48>("--expect-mrconfigid", &a.expect_mrconfigid)?,
            ..tdx::TdxPolicy::default()
        },
        nvidia: nvidia::NvidiaPolicy {
            rims: read_rims(&a.rims)?,
            ..nvidia::NvidiaPolicy::default()
        },
    };
    // The contract's expectations go through the verifiers' own policy
    // fields (clap keeps the --expect-* flags out), so the checks are the
    // usual `measurement`, `host_data`, `mrtd`, `rtmr1`, `rtmr2` and
    // `mrconfigid` of each item.
    let contract = match a.contract {
        Some(id) => {
            let c = fetch_contract(ctx, id).await?;
            let measurement = published_measurement(&c);
            let binding = ContractBinding::of(&c);
            match measurement {
                Ok(Some(PublishedMeasurement::Snp(m))) => policy.snp.expected_measurement = Some(m),
                Ok(Some(PublishedMeasurement::Tdx { mrtd, rtmr1, rtmr2 })) => {
                    policy.tdx.expected_mrtd = Some(mrtd);
                    policy.tdx.expected_rtmrs[1] = Some(rtmr1);
                    policy.tdx.expected_rtmrs[2] = Some(rtmr2);
                }
                // contract_launch_measurement fails.
                Ok(None) | Err(_) => {}
            }
            policy.snp.expected_host_data = Some(binding.snp_host_data);
            policy.tdx.expected_mrconfigid = Some(binding.tdx_mrconfigid);
            Some((c, measurement, binding))
        }
        None => None,
    };
    let now = now_or(a.now);
    let mut v = tokio::task::spawn_blocking(move || verify_bundle(&bytes, &policy, now))
        .await
        .map_err(|e| CliError::local(format!("verification thread: {e}")))?;
    let mut summary = format!(
        "  nonce {}\n  TLS key sha256 {}",
        v.nonce, v.tls_public_key_sha256
    );
    let mut object = None;
    if let Some((c, measurement, binding)) = &contract {
        add_contract_checks(&mut v, c, measurement);
        let published = c.launch_measurement.as_ref().map(hex::encode);
        summary.push_str(&format!(
            "\n  contract {} ({}): launch measurement {}\n    snp host_data  {}\n    tdx mrconfigid {}",
            c.id,
            c.state.as_str(),
            published.as_deref().unwrap_or("none published"),
            hex::encode(binding.snp_host_data),
            hex::encode(binding.tdx_mrconfigid)
        ));
        let mut o = serde_json::to_value(&v).unwrap_or(Value::Null);
        o["contract"] = json!({
            "contract_id": c.id,
            "state": c.state.as_str(),
            "launch_measurement": published,
            "binding": binding.to_json(),
        });
        object = Some(o);
    }
    for item in &v.items {
        let (kind, checks) = match item {
            dc_attestation::bundle::ItemVerification::Snp(i) => ("sev-snp", &i.checks),
            dc_attestation::bundle::ItemVerification::Tdx(i) => ("tdx", &i.checks),
            dc_attestation::bundle::ItemVerification::Nvidia(i) => ("nvidia-h100", &i.checks),
        };
        summary.push_str(&format!("\n {kind}:\n{}", print_checks(checks)));
    }
    match &object {
        Some(o) => finish(&out, "evidence bundle", v.verified, o, &v.checks, summary),
        None => finish(&out, "evidence bundle", v.verified, &v, &v.checks, summary),
    }
}

/// `dcctl measure snp`
pub fn measure_snp(out: Output, a: MeasureSnpArgs) -> Result<(), CliError> {
    let input = match (&a.input, &a.ovmf, &a.kernel, &a.initrd) {
        _ if a.dstack_cbor.is_some() => {
            let path = a.dstack_cbor.as_deref().unwrap_or(Path::new(""));
            let bytes = read_file(path, measure::snp::MAX_DSTACK_CBOR_BYTES as u64)?;
            measure::snp::SnpMeasureInput::from_dstack_cbor(
                &bytes,
                a.vcpus,
                &a.vcpu_type,
                a.guest_features,
            )
            .map_err(|e| CliError::local(format!("{}: {e}", path.display())))?
        }
        (Some(path), ..) => {
            let bytes = read_file(path, MAX_EVIDENCE_FILE_BYTES)?;
            measure::snp::SnpMeasureInput::from_json(&bytes)
                .map_err(|e| CliError::local(format!("{}: {e}", path.display())))?
        }
        (None, Some(ovmf), Some(kernel), Some(initrd)) => {
            let ovmf = read_file(ovmf, MAX_IMAGE_FILE_BYTES)?;
            let kernel = read_file(kernel, MAX_IMAGE_FILE_BYTES)?;
            let initrd = read_file(initrd, MAX_IMAGE_FILE_BYTES)?;
            measure::snp::SnpMeasureInput::from_files(
                &ovmf,
                &kernel,
                &initrd,
                &a.cmdline,
                a.vcpus,
                &a.vcpu_type,
                a.guest_features,
            )
            .map_err(|e| CliError::local(e.to_string()))?
        }
        _ => {
            return Err(CliError::usage(
                "give --input FILE.json, --dstack-cbor FILE, or --ovmf, --kernel and --initrd",
            ))
        }
    };
    let digest = measure::snp::launch_digest(&input).map_err(|e| CliError::local(e.to_string()))?;
    let measurement = hex::encode(digest);
    let mut object = json!({ "measurement": measurement, "platform": "sev-snp" });
    if a.print_input {
        object["input"] = serde_json::to_value(&input).unwrap_or(Value::Null);
    }
    out.print(object, || {
        if a.print_input {
            format!(
                "{measurement}\n{}",
                serde_json::to_string_pretty(&input).unwrap_or_default()
            )
        } else {
            measurement.clone()
        }
    });
    Ok(())
}

/// `dcctl measure tdx`
pub fn measure_tdx(out: Output, a: MeasureTdxArgs) -> Result<(), CliError> {
    let tdvf = read_file(&a.tdvf, MAX_IMAGE_FILE_BYTES)?;
    let order = if a.qemu_two_pass {
        measure::tdx::PageAddOrder::TwoPass
    } else {
        measure::tdx::PageAddOrder::SinglePass
    };
    let mrtd = hex::encode(
        measure::tdx::mrtd_with_order(&tdvf, order)
            .map_err(|e| CliError::local(format!("{}: {e}", a.tdvf.display())))?,
    );
    let mut object = json!({ "platform": "tdx", "mrtd": mrtd });
    let mut text = format!("mrtd  {mrtd}");
    if let (Some(kernel), Some(initrd)) = (&a.kernel, &a.initrd) {
        let kernel = read_file(kernel, MAX_IMAGE_FILE_BYTES)?;
        let initrd = read_file(initrd, MAX_IMAGE_FILE_BYTES)?;
        let memory_bytes = a
            .memory_mib
            .checked_mul(1 << 20)
            .ok_or_else(|| CliError::usage("--memory-mib is too large"))?;
        let rtmr1 = hex::encode(
            measure::tdx::rtmr1_direct_boot(&kernel, initrd.len(), memory_bytes)
                .map_err(|e| CliError::local(e.to_string()))?,
        );
        let rtmr2 = hex::encode(measure::tdx::rtmr2_direct_boot(&a.cmdline, &initrd));
        text.push_str(&format!("\nrtmr1 {rtmr1}\nrtmr2 {rtmr2}\n(RTMR0 depends on the VMM's ACPI tables and is not predicted)"));
        object["rtmr1"] = json!(rtmr1);
        object["rtmr2"] = json!(rtmr2);
    }
    out.print(object, || text);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candid::Principal;
    use dc_ledger_core::{ContractState, Resources};
    use serde_bytes::ByteBuf;

    fn contract(measurement: Option<Vec<u8>>) -> Contract {
        Contract {
            id: 7,
            offering_id: 1,
            developer: Principal::from_slice(&[1; 29]),
            provider: Principal::from_slice(&[2; 29]),
            node: Principal::from_slice(&[3; 29]),
            resources: Resources::default(),
            gpu_model: None,
            price_e9s_per_hour: 1,
            hours: 1,
            state: ContractState::Active,
            created_at_ns: 0,
            provisioning_deadline_ns: 0,
            active_since_ns: Some(0),
            ends_at_ns: Some(1),
            paid_e9s: 1,
            released_e9s: 0,
            refunded_e9s: 0,
            fees_e9s: 0,
            endpoint: Some("vm.example".into()),
            evidence_hash: Some(ByteBuf::from(vec![0; 32])),
            launch_measurement: measurement.map(ByteBuf::from),
            ingress: Default::default(),
            history: vec![],
        }
    }

    /// A bundle verification that passed and holds no hardware evidence.
    fn verified_without_items() -> BundleVerification {
        let mut checks = Checks::new();
        checks.pass("bundle_parse", "0 item(s)");
        BundleVerification {
            verified: true,
            platform: "bundle",
            format: "dc-evidence/v1".into(),
            nonce: String::new(),
            tls_public_key_sha256: String::new(),
            report_data: String::new(),
            items: vec![],
            checks,
        }
    }

    #[test]
    fn a_bundle_without_cpu_evidence_is_not_bound_to_the_contract() {
        let c = contract(Some(vec![9; 48]));
        let mut v = verified_without_items();
        add_contract_checks(&mut v, &c, &published_measurement(&c));
        assert!(!v.verified);
        assert!(v.checks.get("contract_launch_measurement").unwrap().ok);
        let e = v.checks.get("contract_evidence").unwrap();
        assert!(
            !e.ok && e.detail.contains("no SEV-SNP or TDX evidence"),
            "{e:?}"
        );
    }

    /// A bundle item of each platform, failed (no real evidence): only the
    /// contract checks matter here.
    fn with_item(tdx: bool) -> BundleVerification {
        let mut v = verified_without_items();
        v.items.push(if tdx {
            ItemVerification::Tdx(Box::new(tdx::verify(
                b"",
                b"",
                &tdx::TdxPolicy::default(),
                0,
                None,
            )))
        } else {
            let evidence = snp::SnpEvidence {
                report: b"",
                endorsement_key: None,
                chain: None,
            };
            ItemVerification::Snp(Box::new(snp::verify(
                &evidence,
                &snp::SnpPolicy::default(),
                0,
            )))
        });
        v
    }

    /// TDX evidence is checked against MRTD, RTMR1 and RTMR2 (144 bytes
    /// published); a 48-byte publication (SEV-SNP, or an MRTD alone, which
    /// would leave the kernel to the host) fails it, and a TDX publication
    /// fails SEV-SNP evidence.
    #[test]
    fn the_published_measurement_must_be_the_evidences_platform() {
        let tdx_published: Vec<u8> = [[1u8; 48], [2; 48], [3; 48]].concat();
        let c = contract(Some(tdx_published));
        let m = published_measurement(&c).unwrap();
        assert_eq!(
            m,
            Some(PublishedMeasurement::Tdx {
                mrtd: [1; 48],
                rtmr1: [2; 48],
                rtmr2: [3; 48]
            })
        );
        let mut v = with_item(true);
        add_contract_checks(&mut v, &c, &Ok(m));
        let check = v.checks.get("contract_launch_measurement").unwrap();
        assert!(check.ok && check.detail.contains("RTMR2"), "{check:?}");
        let mut v = with_item(false);
        add_contract_checks(&mut v, &c, &Ok(m));
        let check = v.checks.get("contract_launch_measurement").unwrap();
        assert!(
            !check.ok && check.detail.contains("SEV-SNP evidence"),
            "{check:?}"
        );
        assert!(!v.verified);

        let c = contract(Some(vec![9; 48]));
        let m = published_measurement(&c).unwrap();
        assert_eq!(m, Some(PublishedMeasurement::Snp([9; 48])));
        let mut v = with_item(true);
        add_contract_checks(&mut v, &c, &Ok(m));
        let check = v.checks.get("contract_launch_measurement").unwrap();
        assert!(!check.ok && check.detail.contains("MRTD"), "{check:?}");
        let mut v = with_item(false);
        add_contract_checks(&mut v, &c, &Ok(m));
        assert!(v.checks.get("contract_launch_measurement").unwrap().ok);
    }

    #[test]
    fn a_malformed_published_measurement_fails_the_contract_check() {
        let c = contract(Some(vec![9; 47]));
        let measurement = published_measurement(&c);
        assert!(measurement.is_err());
        let mut v = verified_without_items();
        add_contract_checks(&mut v, &c, &measurement);
        assert!(!v.verified);
        let m = v.checks.get("contract_launch_measurement").unwrap();
        assert!(!m.ok && m.detail.contains("47 bytes"), "{m:?}");
        assert_eq!(published_measurement(&contract(None)), Ok(None));
    }

    #[test]
    fn the_binding_is_the_attestation_crates_for_the_contracts_parties() {
        let c = contract(None);
        let b = ContractBinding::of(&c);
        assert_eq!(
            b.snp_host_data,
            dc_attestation_common::contract_host_data(7, &[1; 29], &[3; 29])
        );
        assert_eq!(
            b.tdx_mrconfigid,
            dc_attestation_common::contract_mrconfigid(7, &[1; 29], &[3; 29])
        );
        let other = ContractBinding::of(&Contract { id: 8, ..c });
        assert_ne!(other, b, "the contract id is bound");
    }
}
