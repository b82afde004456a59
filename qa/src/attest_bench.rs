//! `attest-bench`: verifications per second per core of our SEV-SNP and TDX
//! verifiers (warm caches: evidence and certificates in memory, nothing
//! fetched), beside `snpguest verify attestation` (the `snpguest` crate's
//! binary, one whole process per verification) on the same report, measured
//! in the same run. `dcctl verify snp` is timed the same way (a whole process
//! each) so the process-per-verification numbers compare like with like.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use dc_attestation::{nvidia, snp, tdx};

use crate::machine::{utc_now, Machine};
use crate::report::{targets_markdown, targets_text, Row, Table, Target};

/// Command line of `attest-bench`.
#[derive(Parser, Debug)]
#[command(
    name = "attest-bench",
    about = "SEV-SNP and TDX verification rate against snpguest, measured in the same run"
)]
pub struct Args {
    /// Real-hardware vectors (default: $DC_VECTORS or ../shared/vectors).
    #[arg(long)]
    pub vectors: Option<PathBuf>,
    /// Seconds per in-process measurement.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Process-per-verification runs for each CLI.
    #[arg(long, default_value_t = 100)]
    pub runs: u32,
    /// The snpguest binary (cargo install snpguest).
    #[arg(long, default_value = "snpguest")]
    pub snpguest: PathBuf,
    /// The dcctl binary (release build).
    #[arg(long, default_value = "target/release/dcctl")]
    pub dcctl: PathBuf,
    /// Also write the results as markdown to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

const SNP_TARGET_PER_SEC: f64 = 2_000.0;
const TDX_TARGET_PER_SEC: f64 = 500.0;
/// Inside the Milan VCEK's and the TDX collateral's validity windows.
const SNP_NOW: u64 = 1_740_000_000;
const TDX_NOW: u64 = 1_751_624_655;

/// Runs `f` repeatedly on this thread for about `seconds`; verifications per second.
fn rate(seconds: f64, mut f: impl FnMut() -> bool) -> anyhow::Result<f64> {
    for _ in 0..20 {
        if !f() {
            bail!("the verification under test did not pass");
        }
    }
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..10 {
            if !f() {
                bail!("the verification under test did not pass");
            }
        }
        n += 10;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Runs a verification made of one or more commands `runs` times; completed
/// verifications per second (every command must exit 0).
fn process_rate(runs: u32, mut make: impl FnMut() -> Vec<Command>) -> anyhow::Result<f64> {
    for mut c in make() {
        let out = c.output().with_context(|| format!("starting {c:?}"))?;
        if !out.status.success() {
            bail!(
                "{c:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let start = Instant::now();
    for _ in 0..runs {
        for mut c in make() {
            let status = c
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()?;
            if !status.success() {
                bail!("{c:?} failed during the run");
            }
        }
    }
    Ok(runs as f64 / start.elapsed().as_secs_f64())
}

fn read(dir: &Path, rel: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(dir.join(rel)).with_context(|| format!("reading vector {rel}"))
}

fn fmt_rate(r: f64) -> String {
    let n = r.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{out}/s")
}

/// Runs the benchmark and prints (and optionally writes) the table.
pub fn run(args: Args) -> anyhow::Result<()> {
    let vectors = match args.vectors.clone().or_else(dc_attestation::vectors_dir) {
        Some(v) => v,
        None => bail!("no vectors: pass --vectors or set DC_VECTORS"),
    };
    let scratch = tempfile::tempdir()?;
    let machine = Machine::detect(scratch.path());

    // SEV-SNP: the Milan report from virtee/sev with its VCEK, AMD's built-in roots.
    let report =
        dc_attestation::decode_maybe_hex(&read(&vectors, "virtee-sev/report_milan.hex")?, 1 << 20)?;
    let vcek = read(&vectors, "virtee-sev/vcek_milan.der")?;
    let snp_policy = snp::SnpPolicy::default();
    let snp_once = || {
        let ev = snp::SnpEvidence {
            report: &report,
            endorsement_key: Some(&vcek),
            chain: None,
        };
        snp::verify(&ev, &snp_policy, SNP_NOW).verified
    };
    eprintln!("measuring SEV-SNP in process ...");
    let snp_rate = rate(args.seconds, snp_once)?;

    // TDX: dcap-qvl's sample quote with its collateral. Its TCB status decides
    // the policy verdict, not the work done: accept whatever status it has so
    // the loop measures a passing verification.
    let quote = read(&vectors, "dcap-qvl/tdx_quote")?;
    let collateral = read(&vectors, "dcap-qvl/tdx_quote_collateral.json")?;
    let first = tdx::verify(
        &quote,
        &collateral,
        &tdx::TdxPolicy::default(),
        TDX_NOW,
        None,
    );
    let tdx_policy = tdx::TdxPolicy {
        accepted_tcb_statuses: vec![first.tcb_status.clone()],
        allowed_advisories: first.advisory_ids.clone(),
        ..tdx::TdxPolicy::default()
    };
    eprintln!(
        "measuring TDX in process (TCB status {}) ...",
        first.tcb_status
    );
    let tdx_rate = rate(args.seconds, || {
        tdx::verify(&quote, &collateral, &tdx_policy, TDX_NOW, None).verified
    })?;

    // NVIDIA H100 SPDM report, for completeness (no peer run here).
    let gpu_report = dc_attestation::decode_maybe_hex(
        &read(&vectors, "nvtrust/hopperAttestationReport.txt")?,
        1 << 20,
    )?;
    let gpu_certs = read(&vectors, "nvtrust/hopperCertChain.txt")?;
    let gpu_policy = nvidia::NvidiaPolicy::default();
    eprintln!("measuring NVIDIA in process ...");
    let gpu_rate = rate(args.seconds, || {
        nvidia::verify(&gpu_report, &gpu_certs, &gpu_policy, SNP_NOW).verified
    })?;

    // Whole processes: dcctl and snpguest on the same report and certificates.
    let dir = scratch.path();
    std::fs::write(dir.join("report.bin"), &report)?;
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs)?;
    std::fs::write(certs.join("vcek.der"), &vcek)?;
    std::fs::copy(
        vectors.join("virtee-sev/amd_milan_ark.pem"),
        certs.join("ark.pem"),
    )?;
    std::fs::copy(
        vectors.join("virtee-sev/amd_milan_ask.pem"),
        certs.join("ask.pem"),
    )?;
    let report_path = dir.join("report.bin");
    let vcek_path = certs.join("vcek.der");

    eprintln!("measuring dcctl verify snp, {} processes ...", args.runs);
    let dcctl_rate = process_rate(args.runs, || {
        let mut c = Command::new(&args.dcctl);
        c.args([
            "verify",
            "snp",
            "--json",
            "--now",
            &SNP_NOW.to_string(),
            "--report",
        ])
        .arg(&report_path)
        .arg("--vcek")
        .arg(&vcek_path);
        vec![c]
    })?;
    eprintln!(
        "measuring snpguest verify attestation, {} processes ...",
        args.runs
    );
    let snpguest_version = Command::new(&args.snpguest)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .with_context(|| {
            format!(
                "running {} (cargo install snpguest)",
                args.snpguest.display()
            )
        })?;
    // A v2 report does not name its processor: tell snpguest, as a user must.
    let snpguest_rate = process_rate(args.runs, || {
        let mut c = Command::new(&args.snpguest);
        c.args(["verify", "attestation", "-p", "milan"])
            .arg(&certs)
            .arg(&report_path);
        vec![c]
    })?;
    // `verify attestation` checks the report against the VCEK only; the chain
    // to AMD's root is a second command. Time both, as a verifier must run both.
    eprintln!(
        "measuring snpguest verify certs + verify attestation, {} processes each ...",
        args.runs
    );
    let snpguest_full_rate = process_rate(args.runs, || {
        let mut chain = Command::new(&args.snpguest);
        chain.args(["verify", "certs"]).arg(&certs);
        let mut report = Command::new(&args.snpguest);
        report
            .args(["verify", "attestation", "-p", "milan"])
            .arg(&certs)
            .arg(&report_path);
        vec![chain, report]
    })?;

    let table =
        Table {
            peer_header: snpguest_version.clone(),
            rows: vec![
            Row::new("SEV-SNP report, in process, 1 core", fmt_rate(snp_rate), "", ""),
            Row::new(
                "SEV-SNP report, one process each (dcctl verify snp / snpguest verify attestation)",
                fmt_rate(dcctl_rate),
                fmt_rate(snpguest_rate),
                format!("{:.2}x", dcctl_rate / snpguest_rate),
            ),
            Row::new(
                "  with the chain to AMD's root (snpguest: verify certs, then verify attestation)",
                fmt_rate(dcctl_rate),
                fmt_rate(snpguest_full_rate),
                format!("{:.2}x", dcctl_rate / snpguest_full_rate),
            ),
            Row::new("TDX quote, in process, 1 core", fmt_rate(tdx_rate), "", ""),
            Row::new("NVIDIA H100 SPDM report, in process, 1 core", fmt_rate(gpu_rate), "", ""),
        ],
        };
    let targets = vec![
        Target {
            name: format!(
                "SEV-SNP ≥ {} verifications/s per core",
                SNP_TARGET_PER_SEC as u64
            ),
            measured: fmt_rate(snp_rate),
            met: snp_rate >= SNP_TARGET_PER_SEC,
        },
        Target {
            name: format!(
                "TDX ≥ {} verifications/s per core",
                TDX_TARGET_PER_SEC as u64
            ),
            measured: fmt_rate(tdx_rate),
            met: tdx_rate >= TDX_TARGET_PER_SEC,
        },
    ];
    println!("{}\n{}", table.text(), targets_text(&targets));

    if let Some(path) = &args.markdown {
        let md = format!(
            "# Attestation benchmarks\n\nGenerated by `attest-bench` (crate `dc-qa`) on {}. Do not edit by hand: run `qa/bench/attestation.sh` again.\n\n\
             ## Machine\n\n- CPU: {}, {} cores\n- memory: {:.1} GiB\n- kernel: {}\n- load average when the run started (1/5/15 min): {}\n- peer: {} (`cargo install snpguest`), `snpguest verify attestation CERTS_DIR REPORT`, one process per verification\n\n\
             ## What is measured\n\n\
             - **in process**: one thread calls the verifier in a loop with the evidence and certificates in memory (warm caches, nothing fetched). \
             SEV-SNP: the Milan report of virtee/sev with its VCEK and AMD's pinned roots; the RSA-4096 links ARK → ASK → VCEK are verified once and remembered by the DER hashes of the two certificates, \
             while every call parses the report and certificates, checks validity at `now`, the report's ECDSA P-384 signature, the TCB extensions, the chip ID and the default policy. \
             TDX: dcap-qvl's sample v4 quote with its collateral; every call checks the PCK chain, CRLs, TCB info and QE identity signatures, the QE report and the quote signature (nothing cached), and judges the TCB status by policy. \
             NVIDIA: NVIDIA's sample Hopper SPDM report with its 5-certificate chain, all checked every call.\n\
             - **one process each**: `dcctl verify snp` (chain, report, TCB extensions, chip ID, policy) and `snpguest verify attestation -p milan` (report against the VCEK: signature and TCB) started {} times each on the same report, VCEK, ASK and ARK; the second row adds `snpguest verify certs` (ARK, ASK, VCEK), which `dcctl` does in the same process.\n\n\
             ## Results\n\n{}\n## Targets\n\n{}",
            utc_now(),
            machine.cpu_model,
            machine.cores,
            machine.memory_gib,
            machine.kernel,
            machine.load_at_start,
            snpguest_version,
            args.runs,
            table.markdown(),
            targets_markdown(&targets)
        );
        std::fs::write(path, md).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
