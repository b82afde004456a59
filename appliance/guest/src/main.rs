//! `dc-guest`: evidence from inside a confidential VM. Parses arguments, calls
//! the library, prints.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use dc_guest::evidence::exit;
use dc_guest::{
    collect_evidence, detect_interface, tls, Binding, CpuExtras, EvidenceRequest, GpuFiles,
    GuestError, Interface, OsFs, Tsm, TsmError, DEFAULT_TSM_REPORT_DIR,
};
use serde_json::json;
use sha2::{Digest, Sha256};

const ABOUT: &str = "Attestation evidence from inside a confidential VM (AMD SEV-SNP, Intel TDX), \
bound to a developer's nonce and this VM's TLS key.";

const AFTER_HELP: &str = "\
How it fits together:
  1. The developer sends a fresh nonce (16 to 64 bytes, hex) to the VM.
  2. The VM runs
       dc-guest evidence --nonce NONCE --tls-cert /etc/tls/fullchain.pem --out evidence.json
     which asks the hardware (through /sys/kernel/config/tsm/report) to sign
       report_data = SHA-512(\"decent-cloud/report-data/v1\\0\" || SHA-256(TLS SPKI) || len(nonce) || nonce)
     and writes a dc-evidence/v1 bundle with the report, the host's certificates,
     the nonce and the TLS key.
  3. The developer checks it against the key seen on the wire:
       dcctl verify evidence evidence.json --nonce NONCE --tls-spki-sha256 HASH

GPUs: NVIDIA's attestation tools need the driver and make the SPDM report
themselves. Run `dc-guest binding` first, give its gpu_nonce to NVIDIA's tool,
then pass the tool's output with --gpu-report FILE --gpu-certs FILE.

Exit codes: 0 done; 2 bad arguments or input files; 3 no report provider here
(not a confidential VM, no configfs-tsm, or an unsupported provider); 4 a file
could not be read or written; 5 the report interface failed or returned
something unusable. On failure the reason is one line on stderr.";

#[derive(Parser)]
#[command(name = "dc-guest", version, about = ABOUT, after_help = AFTER_HELP)]
struct Cli {
    /// Print one JSON object on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ask the hardware for a report bound to the nonce and the TLS key, and
    /// write the evidence bundle.
    #[command(after_help = "\
Example:
  dc-guest evidence --nonce 00112233445566778899aabbccddeeff \\
      --tls-cert /etc/tls/fullchain.pem --out /run/evidence.json --json

Prints the kind (sev-snp or tdx), the report data, the GPU nonce, the bundle's
path and its SHA-256 (the evidence hash a node reports). SNP certificates
(VCEK or VLEK, ASK, ARK) come from the host's certificate table when it has
one. For TDX, give the collateral (dcap-qvl JSON from a PCCS) with
--tdx-collateral, or the bundle carries none and the verifier must supply it.")]
    Evidence(EvidenceArgs),
    /// Print the report data and GPU nonce a nonce and TLS key give (touches
    /// no hardware).
    #[command(after_help = "\
Example:
  dc-guest binding --nonce 00112233445566778899aabbccddeeff --tls-cert /etc/tls/fullchain.pem

The gpu_nonce is what NVIDIA's attestation tool must be given so that its GPU
report belongs to the same session as the CPU report.")]
    Binding(BindingArgs),
    /// Say which report provider this VM offers, without asking for a report.
    #[command(after_help = "\
Exits 0 when a provider the evidence bundle can carry is there (sev_guest or
tdx_guest), 3 when there is none, with the reason (also in --json output).")]
    Platform(TsmArgs),
}

/// The developer's challenge and the TLS key it is bound to.
#[derive(Args)]
struct BindingArgs {
    /// The developer's challenge, hex (16 to 64 bytes).
    #[arg(long, value_name = "HEX")]
    nonce: String,
    #[command(flatten)]
    key: TlsKeyArgs,
}

/// Exactly one way to name the TLS key.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct TlsKeyArgs {
    /// The TLS server's public key: DER SubjectPublicKeyInfo or PEM "PUBLIC KEY".
    #[arg(long, value_name = "FILE")]
    tls_spki_file: Option<PathBuf>,
    /// The TLS server's certificate (PEM; the first certificate of a chain
    /// file is taken) or DER.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// SHA-256 of the key's DER SubjectPublicKeyInfo, hex. Enough for
    /// `binding`; `evidence` needs the key itself, which the bundle carries.
    #[arg(long, value_name = "HEX")]
    tls_spki_sha256: Option<String>,
}

/// Where the kernel's report interface is.
#[derive(Args)]
struct TsmArgs {
    /// The configfs-tsm report directory. A plain directory (not configfs) is
    /// read as a recorded entry, as tests do.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_TSM_REPORT_DIR)]
    tsm_root: PathBuf,
    /// Name of the report entry under DIR [default: dc-guest-PID]. An existing
    /// entry is shared safely (its generation counter catches other writers).
    #[arg(long, value_name = "NAME")]
    tsm_entry: Option<String>,
}

#[derive(Args)]
struct EvidenceArgs {
    #[command(flatten)]
    binding: BindingArgs,
    /// Where to write the bundle (dc-evidence/v1 JSON); replaced atomically.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    tsm: TsmArgs,
    /// Privilege level to report for (SNP VMPL, 0 to 3); default: the
    /// kernel's current setting.
    #[arg(long, value_name = "N")]
    privlevel: Option<u32>,
    /// A GPU's SPDM report from NVIDIA's tool (raw or hex), made with this
    /// binding's gpu_nonce. Repeat for several GPUs, each with --gpu-certs.
    #[arg(long, value_name = "FILE")]
    gpu_report: Vec<PathBuf>,
    /// The GPU's certificate chain (PEM, leaf first), in --gpu-report order.
    #[arg(long, value_name = "FILE")]
    gpu_certs: Vec<PathBuf>,
    /// TDX: collateral as dcap-qvl QuoteCollateralV3 JSON.
    #[arg(long, value_name = "FILE")]
    tdx_collateral: Option<PathBuf>,
    /// TDX: the event log (e.g. /sys/firmware/acpi/tables/data/CCEL).
    #[arg(long, value_name = "FILE")]
    tdx_event_log: Option<PathBuf>,
    /// SNP: leave out the host's certificate table (when it is malformed and
    /// the verifier will get the VCEK elsewhere).
    #[arg(long)]
    ignore_auxblob: bool,
}

/// An error with its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl From<GuestError> for Failure {
    fn from(e: GuestError) -> Self {
        Failure {
            code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: exit::USAGE,
            message: message.into(),
        }
    }
}

/// Largest GPU report, collateral or event-log file read.
const MAX_INPUT_FILE_BYTES: usize = 16 << 20;

fn read_file(path: &Path, limit: usize) -> Result<Vec<u8>, Failure> {
    let local = |e: std::io::Error| Failure {
        code: exit::LOCAL,
        message: format!("{}: {e}", path.display()),
    };
    let f = std::fs::File::open(path).map_err(local)?;
    let mut buf = Vec::new();
    f.take(limit as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(local)?;
    if buf.len() > limit {
        return Err(Failure::usage(format!(
            "{}: more than {limit} bytes",
            path.display()
        )));
    }
    Ok(buf)
}

/// The TLS key as given: the whole SubjectPublicKeyInfo, or only its hash.
enum TlsKey {
    Spki(Vec<u8>),
    Sha256([u8; 32]),
}

fn tls_key(args: &TlsKeyArgs) -> Result<TlsKey, Failure> {
    let limit = tls::MAX_TLS_FILE_BYTES;
    let with_path = |path: &Path, e: tls::TlsKeyError| Failure {
        code: exit::USAGE,
        message: format!("{}: {e}", path.display()),
    };
    if let Some(path) = &args.tls_spki_file {
        let bytes = read_file(path, limit)?;
        return tls::spki_from_key_file(&bytes)
            .map(TlsKey::Spki)
            .map_err(|e| with_path(path, e));
    }
    if let Some(path) = &args.tls_cert {
        let bytes = read_file(path, limit)?;
        return tls::spki_from_certificate(&bytes)
            .map(TlsKey::Spki)
            .map_err(|e| with_path(path, e));
    }
    let hex = args.tls_spki_sha256.as_deref().unwrap_or_default();
    let bytes = dc_attestation_common::parse_hex_exact(hex, 32)
        .map_err(|e| Failure::usage(format!("--tls-spki-sha256: {e}")))?;
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&bytes);
    Ok(TlsKey::Sha256(hash))
}

fn nonce(args: &BindingArgs) -> Result<Vec<u8>, Failure> {
    dc_attestation_common::parse_hex(&args.nonce)
        .map_err(|e| Failure::usage(format!("--nonce: {e}")))
}

fn binding_for(args: &BindingArgs) -> Result<(Binding, Option<Vec<u8>>), Failure> {
    let nonce = nonce(args)?;
    match tls_key(&args.key)? {
        TlsKey::Spki(spki) => Ok((Binding::for_spki(&nonce, &spki)?, Some(spki))),
        TlsKey::Sha256(hash) => Ok((Binding::new(&nonce, hash)?, None)),
    }
}

fn open_tsm(args: &TsmArgs) -> Result<Tsm<OsFs>, Failure> {
    let interface = match detect_interface(&args.tsm_root) {
        Ok(i) => i,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(GuestError::Tsm(TsmError::NotPresent {
                dir: args.tsm_root.clone(),
            })
            .into())
        }
        Err(e) => {
            return Err(Failure {
                code: exit::REPORT,
                message: format!("{}: {e}", args.tsm_root.display()),
            })
        }
    };
    let entry = args
        .tsm_entry
        .clone()
        .unwrap_or_else(|| format!("dc-guest-{}", std::process::id()));
    Tsm::new(
        OsFs::for_interface(interface),
        &args.tsm_root,
        &entry,
        interface,
    )
    .map_err(|e| GuestError::from(e).into())
}

/// Writes via a temporary file in the same directory and a rename, so a
/// reader never sees half a bundle.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let local = |e: std::io::Error| Failure {
        code: exit::LOCAL,
        message: format!("{}: {e}", path.display()),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Failure::usage(format!("--out {}: not a file name", path.display())))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).map_err(local)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        local(e)
    })
}

fn print(json_mode: bool, value: serde_json::Value, text: String) {
    if json_mode {
        println!("{value}");
    } else {
        print!("{text}");
    }
}

fn cmd_binding(json_mode: bool, args: &BindingArgs) -> Result<(), Failure> {
    let (b, _) = binding_for(args)?;
    let value = json!({
        "nonce": hex::encode(&b.nonce),
        "tls_spki_sha256": hex::encode(b.tls_spki_sha256),
        "report_data": hex::encode(b.report_data),
        "gpu_nonce": hex::encode(b.gpu_nonce),
    });
    let text = format!(
        "report_data      {}\ngpu_nonce        {}\ntls_spki_sha256  {}\n",
        hex::encode(b.report_data),
        hex::encode(b.gpu_nonce),
        hex::encode(b.tls_spki_sha256)
    );
    print(json_mode, value, text);
    Ok(())
}

fn cmd_platform(json_mode: bool, args: &TsmArgs) -> Result<(), Failure> {
    let probed = open_tsm(args).and_then(|tsm| {
        tsm.probe()
            .map(|info| (tsm.interface(), info))
            .map_err(|e| GuestError::from(e).into())
    });
    let root = args.tsm_root.display().to_string();
    match probed {
        Ok((interface, info)) => {
            let kind = info.provider.evidence_kind();
            let reason = match (kind, interface) {
                (Some(_), Interface::Configfs) => {
                    format!("{} reports through configfs-tsm at {root}", info.provider)
                }
                (Some(_), Interface::Directory) => format!(
                    "{} report recorded in {root}, a plain directory (not configfs): replayed as it is",
                    info.provider
                ),
                (None, _) => {
                    GuestError::UnsupportedProvider(info.provider.to_string()).to_string()
                }
            };
            let value = json!({
                "available": kind.is_some(),
                "provider": info.provider.name(),
                "kind": kind,
                "interface": interface.name(),
                "tsm_root": root,
                "privlevel_floor": info.privlevel_floor,
                "auxblob": info.has_auxblob,
                "reason": reason,
            });
            let text = format!(
                "provider   {}\nkind       {}\ninterface  {}\nauxblob    {}\n{reason}\n",
                info.provider,
                kind.unwrap_or("none (unsupported)"),
                interface.name(),
                if info.has_auxblob { "yes" } else { "no" },
            );
            print(json_mode, value, text);
            match kind {
                Some(_) => Ok(()),
                None => Err(Failure {
                    code: exit::UNAVAILABLE,
                    message: reason,
                }),
            }
        }
        Err(f) => {
            let value = json!({
                "available": false,
                "provider": null,
                "kind": null,
                "interface": null,
                "tsm_root": root,
                "reason": f.message,
            });
            if json_mode {
                println!("{value}");
            }
            Err(f)
        }
    }
}

fn cmd_evidence(json_mode: bool, args: &EvidenceArgs) -> Result<(), Failure> {
    let nonce = nonce(&args.binding)?;
    let spki = match tls_key(&args.binding.key)? {
        TlsKey::Spki(spki) => spki,
        TlsKey::Sha256(_) => {
            return Err(Failure::usage(
                "--tls-spki-sha256 gives only the key's hash, but the dc-evidence/v1 bundle \
                 carries the whole key (the verifier derives the binding from it): give \
                 --tls-spki-file or --tls-cert (`dc-guest binding` accepts the hash)",
            ))
        }
    };
    // The nonce is checked before any file or hardware is touched.
    Binding::for_spki(&nonce, &spki)?;
    if args.gpu_report.len() != args.gpu_certs.len() {
        return Err(Failure::usage(format!(
            "{} --gpu-report but {} --gpu-certs: give one chain per report",
            args.gpu_report.len(),
            args.gpu_certs.len()
        )));
    }
    let mut gpus = Vec::new();
    for (report, certs) in args.gpu_report.iter().zip(&args.gpu_certs) {
        gpus.push(GpuFiles {
            report: read_file(report, MAX_INPUT_FILE_BYTES)?,
            certs: read_file(certs, MAX_INPUT_FILE_BYTES)?,
        });
    }
    let extras = CpuExtras {
        tdx_collateral: args
            .tdx_collateral
            .as_deref()
            .map(|p| read_file(p, MAX_INPUT_FILE_BYTES))
            .transpose()?,
        tdx_event_log: args
            .tdx_event_log
            .as_deref()
            .map(|p| read_file(p, MAX_INPUT_FILE_BYTES))
            .transpose()?,
        ignore_auxblob: args.ignore_auxblob,
    };
    let tsm = open_tsm(&args.tsm)?;
    let request = EvidenceRequest {
        nonce,
        tls_spki_der: spki,
        privlevel: args.privlevel,
        gpus,
        extras,
    };
    let outcome = collect_evidence(&tsm, &request)?;
    write_atomically(&args.out, outcome.json.as_bytes())?;
    let bundle_sha256 = hex::encode(Sha256::digest(outcome.json.as_bytes()));
    let items: Vec<&str> = outcome.bundle.evidence.iter().map(|e| e.kind()).collect();
    let kind = items.first().copied().unwrap_or_default();
    let b = &outcome.binding;
    let value = json!({
        "kind": kind,
        "provider": outcome.provider.name(),
        "interface": outcome.interface.name(),
        "nonce": hex::encode(&b.nonce),
        "tls_spki_sha256": hex::encode(b.tls_spki_sha256),
        "report_data": hex::encode(b.report_data),
        "gpu_nonce": hex::encode(b.gpu_nonce),
        "bundle": args.out.display().to_string(),
        "bundle_sha256": bundle_sha256,
        "items": items,
        "certificates": outcome.certificates,
        "attempts": outcome.attempts,
        "warnings": outcome.warnings,
    });
    let mut text = format!(
        "evidence bundle written: {}\n  kind           {kind} (provider {}, {})\n  report_data    {}\n  gpu_nonce      {}\n  bundle sha256  {bundle_sha256}\n  items          {}\n  certificates   {}\n",
        args.out.display(),
        outcome.provider,
        outcome.interface.name(),
        hex::encode(b.report_data),
        hex::encode(b.gpu_nonce),
        items.join(", "),
        if outcome.certificates.is_empty() {
            "none".to_string()
        } else {
            outcome.certificates.join(", ")
        },
    );
    for w in &outcome.warnings {
        text.push_str(&format!("warning: {w}\n"));
    }
    print(json_mode, value, text);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Evidence(a) => cmd_evidence(cli.json, a),
        Command::Binding(a) => cmd_binding(cli.json, a),
        Command::Platform(a) => cmd_platform(cli.json, a),
    };
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(f) => {
            eprintln!("dc-guest: {}", f.message.replace('\n', " "));
            ExitCode::from(f.code)
        }
    }
}
