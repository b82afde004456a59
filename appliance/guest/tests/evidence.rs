//! `dc-guest` against a fake configfs-tsm directory: the library and the
//! binary, with real SEV-SNP, TDX and NVIDIA evidence from the vectors where
//! they are present, and the failures a guest meets.
//!
//! A plain directory stands in for `/sys/kernel/config/tsm/report`: the test
//! pre-writes an entry's `provider`, `generation`, `outblob` and `auxblob`,
//! and `dc-guest` writes `inblob` into it, as it would on configfs.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dc_attestation::bundle::{
    verify_bundle, BundlePolicy, Evidence, EvidenceBundle, ItemVerification,
};
use dc_attestation::{report_data, vectors_dir};
use dc_guest::evidence::exit;
use dc_guest::{
    collect_evidence, encode_cert_table, Binding, CertKind, CpuExtras, EvidenceRequest, GuestError,
    Interface, OsFs, Tsm, TsmError, TsmFs,
};
use sha2::{Digest, Sha256};

const NONCE: [u8; 32] = [0x42; 32];
const ENTRY: &str = "fixture";
/// An Ed25519 TLS key (RFC 8410's example) as `openssl pkey -pubout` writes it.
const SPKI_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=
-----END PUBLIC KEY-----
";

fn spki_der() -> Vec<u8> {
    x509_cert::der::pem::decode_vec(SPKI_PEM.as_bytes())
        .unwrap()
        .1
}

fn binding() -> [u8; 64] {
    report_data(&NONCE, &spki_der()).unwrap()
}

fn vectors() -> Option<PathBuf> {
    let v = vectors_dir();
    if v.is_none() {
        eprintln!("skipped: no vectors (set DC_VECTORS)");
    }
    v
}

fn snp_vector_report(v: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(v.join("virtee-sev/report_milan.hex")).unwrap();
    hex::decode(text.split_whitespace().collect::<String>()).unwrap()
}

/// DER of each certificate in a PEM file, in order.
fn pem_ders(path: &Path) -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(path).unwrap();
    text.split_inclusive("-----END CERTIFICATE-----")
        .filter(|b| b.contains("-----BEGIN CERTIFICATE-----"))
        .map(|b| {
            x509_cert::der::pem::decode_vec(b.trim().as_bytes())
                .unwrap()
                .1
        })
        .collect()
}

/// The Milan VCEK, ASK and ARK as a host's certificate table.
fn milan_auxblob(v: &Path) -> (Vec<u8>, Vec<u8>, Vec<Vec<u8>>) {
    let vcek = std::fs::read(v.join("virtee-sev/vcek_milan.der")).unwrap();
    let chain = pem_ders(&v.join("virtee-sev/cert_chain_milan"));
    assert_eq!(chain.len(), 2, "ASK then ARK");
    let blob = encode_cert_table(&[
        (CertKind::Vcek, &vcek),
        (CertKind::Ask, &chain[0]),
        (CertKind::Ark, &chain[1]),
    ]);
    (blob, vcek, chain)
}

/// A syntactically valid SNP report (version 2, 1184 bytes) answering
/// `report_data`; unsigned, so it only serves the paths before verification.
fn synthetic_snp_report(report_data: &[u8; 64]) -> Vec<u8> {
    let mut r = vec![0u8; 1184];
    r[0] = 2;
    r[0x50..0x90].copy_from_slice(report_data);
    r
}

/// A fake report directory with one recorded entry.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(provider: Option<&str>, outblob: &[u8], auxblob: Option<&[u8]>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let entry = dir.path().join("report").join(ENTRY);
        std::fs::create_dir_all(&entry).unwrap();
        if let Some(p) = provider {
            std::fs::write(entry.join("provider"), format!("{p}\n")).unwrap();
        }
        std::fs::write(entry.join("generation"), "7\n").unwrap();
        std::fs::write(entry.join("outblob"), outblob).unwrap();
        if let Some(a) = auxblob {
            std::fs::write(entry.join("auxblob"), a).unwrap();
        }
        std::fs::write(dir.path().join("tls.pem"), SPKI_PEM).unwrap();
        Fixture { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("report")
    }

    fn entry(&self) -> PathBuf {
        self.root().join(ENTRY)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn tsm(&self) -> Tsm<OsFs> {
        Tsm::new(
            OsFs::for_interface(Interface::Directory),
            self.root(),
            ENTRY,
            Interface::Directory,
        )
        .unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_dc-guest"))
            .args(args)
            .output()
            .unwrap()
    }

    /// `dc-guest evidence --json` on this fixture with the test's nonce and key.
    fn evidence(&self, extra: &[&str]) -> Output {
        let root = self.root();
        let tls = self.file("tls.pem");
        let out = self.file("bundle.json");
        let nonce = hex::encode(NONCE);
        let mut args = vec![
            "evidence",
            "--json",
            "--nonce",
            &nonce,
            "--tls-spki-file",
            tls.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--tsm-root",
            root.to_str().unwrap(),
            "--tsm-entry",
            ENTRY,
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }
}

fn request() -> EvidenceRequest {
    EvidenceRequest {
        nonce: NONCE.to_vec(),
        tls_spki_der: spki_der(),
        privlevel: None,
        gpus: Vec::new(),
        extras: CpuExtras::default(),
    }
}

fn stdout_json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().count(),
        1,
        "one JSON object on one line: {text}"
    );
    serde_json::from_str(&text).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_fails(out: &Output, code: u8, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(i32::from(code)), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{needle:?} not in {err}");
}

#[test]
fn snp_library_path_writes_the_binding_and_carries_the_hosts_certificates() {
    let Some(v) = vectors() else { return };
    let report = snp_vector_report(&v);
    let (auxblob, vcek, chain) = milan_auxblob(&v);
    let fx = Fixture::new(Some("sev_guest"), &report, Some(&auxblob));

    let outcome = collect_evidence(&fx.tsm(), &request()).unwrap();

    assert_eq!(
        std::fs::read(fx.entry().join("inblob")).unwrap(),
        binding().to_vec(),
        "inblob is the documented binding"
    );
    assert_eq!(outcome.binding.report_data, binding());
    assert_eq!(outcome.binding.gpu_nonce[..], binding()[..32]);
    assert_eq!(outcome.certificates, ["vcek", "ask", "ark"]);
    assert_eq!(outcome.attempts, 1);
    // The vector was signed for someone else's challenge: replayed with a warning.
    assert!(
        outcome.warnings.iter().any(|w| w.contains("REPORT_DATA")),
        "{:?}",
        outcome.warnings
    );

    let parsed = EvidenceBundle::from_json(outcome.json.as_bytes()).unwrap();
    assert_eq!(parsed, outcome.bundle);
    assert_eq!(parsed.nonce, hex::encode(NONCE));
    assert_eq!(parsed.tls_public_key, hex::encode(spki_der()));
    let [Evidence::SevSnp {
        report: r,
        vcek: Some(k),
        chain: Some(c),
    }] = parsed.evidence.as_slice()
    else {
        panic!("one SNP item with VCEK and chain: {:?}", parsed.evidence)
    };
    assert_eq!(hex::decode(r).unwrap(), report, "the vector's bytes");
    assert_eq!(hex::decode(k).unwrap(), vcek);
    let pem_chain: Vec<Vec<u8>> = c
        .split_inclusive("-----END CERTIFICATE-----")
        .filter(|b| b.contains("BEGIN"))
        .map(|b| {
            x509_cert::der::pem::decode_vec(b.trim().as_bytes())
                .unwrap()
                .1
        })
        .collect();
    assert_eq!(pem_chain, chain, "ASK then ARK, as PEM");

    // The verifier accepts everything but the foreign binding: the
    // certificates made it from the host's table into the bundle intact.
    let policy = BundlePolicy {
        expected_nonce: Some(NONCE.to_vec()),
        expected_tls_spki_sha256: Some(Sha256::digest(spki_der()).into()),
        ..BundlePolicy::default()
    };
    let out = verify_bundle(outcome.json.as_bytes(), &policy, 1_740_000_000);
    assert_eq!(out.report_data, hex::encode(binding()));
    let ItemVerification::Snp(item) = &out.items[0] else {
        panic!("snp item")
    };
    let failed: Vec<&str> = item.checks.failed().map(|c| c.name.as_str()).collect();
    assert_eq!(failed, ["report_data"]);
    assert!(item.checks.get("report_signature").unwrap().ok);
}

#[test]
fn snp_binary_prints_the_evidence_hash_of_the_file_it_wrote() {
    let Some(v) = vectors() else { return };
    let report = snp_vector_report(&v);
    let (auxblob, _, _) = milan_auxblob(&v);
    let fx = Fixture::new(Some("sev_guest"), &report, Some(&auxblob));

    let out = fx.evidence(&[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let j = stdout_json(&out);
    let bundle_path = fx.file("bundle.json");
    let bytes = std::fs::read(&bundle_path).unwrap();
    assert_eq!(j["kind"], "sev-snp");
    assert_eq!(j["provider"], "sev_guest");
    assert_eq!(j["interface"], "directory");
    assert_eq!(j["report_data"], hex::encode(binding()));
    assert_eq!(j["gpu_nonce"], hex::encode(&binding()[..32]));
    assert_eq!(
        j["tls_spki_sha256"],
        hex::encode(Sha256::digest(spki_der()))
    );
    assert_eq!(j["bundle"], bundle_path.to_str().unwrap());
    assert_eq!(j["bundle_sha256"], hex::encode(Sha256::digest(&bytes)));
    assert_eq!(j["items"], serde_json::json!(["sev-snp"]));
    assert_eq!(j["certificates"], serde_json::json!(["vcek", "ask", "ark"]));
    assert_eq!(
        std::fs::read(fx.entry().join("inblob")).unwrap(),
        binding().to_vec()
    );
    let bundle = EvidenceBundle::from_json(&bytes).unwrap();
    let Evidence::SevSnp { report: r, .. } = &bundle.evidence[0] else {
        panic!("snp item")
    };
    assert_eq!(hex::decode(r).unwrap(), report);

    // `platform` reads the same recorded entry without asking for a report.
    let out = fx.run(&[
        "platform",
        "--json",
        "--tsm-root",
        fx.root().to_str().unwrap(),
        "--tsm-entry",
        ENTRY,
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let j = stdout_json(&out);
    assert_eq!(j["available"], true);
    assert_eq!(j["kind"], "sev-snp");
    assert_eq!(j["auxblob"], true);
}

#[test]
fn tdx_quote_travels_with_its_collateral() {
    let Some(v) = vectors() else { return };
    let quote = std::fs::read(v.join("dcap-qvl/tdx_quote")).unwrap();
    let fx = Fixture::new(Some("tdx_guest"), &quote, None);
    let collateral = v.join("dcap-qvl/tdx_quote_collateral.json");
    let out = fx.evidence(&["--tdx-collateral", collateral.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let j = stdout_json(&out);
    assert_eq!(j["kind"], "tdx");
    let bytes = std::fs::read(fx.file("bundle.json")).unwrap();
    let policy = BundlePolicy {
        expected_nonce: Some(NONCE.to_vec()),
        ..BundlePolicy::default()
    };
    let v = verify_bundle(&bytes, &policy, 1_751_624_655);
    let ItemVerification::Tdx(item) = &v.items[0] else {
        panic!("tdx item")
    };
    assert!(item.checks.get("quote_signature").unwrap().ok);
    let failed: Vec<&str> = item.checks.failed().map(|c| c.name.as_str()).collect();
    assert_eq!(failed, ["report_data"], "only the foreign binding fails");

    // Without collateral the bundle still carries the quote, and says so.
    let out = fx.evidence(&[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let warnings = stdout_json(&out)["warnings"].to_string();
    assert!(warnings.contains("no TDX collateral"), "{warnings}");
}

#[test]
fn gpu_evidence_must_answer_the_bindings_gpu_nonce() {
    let Some(v) = vectors() else { return };
    let fx = Fixture::new(Some("sev_guest"), &synthetic_snp_report(&binding()), None);
    let certs = v.join("nvtrust/hopperCertChain.txt");
    let real = v.join("nvtrust/hopperAttestationReport.txt");

    // A real H100 report answers the nonce it was made for, not ours.
    let out = fx.evidence(&[
        "--gpu-report",
        real.to_str().unwrap(),
        "--gpu-certs",
        certs.to_str().unwrap(),
    ]);
    assert_fails(&out, exit::USAGE, "gpu_nonce");
    assert!(
        !fx.entry().join("inblob").exists(),
        "refused before the hardware was asked"
    );

    // The same report with our GPU nonce in its request is carried as a
    // second item (its signature no longer holds, which the verifier sees).
    let text = std::fs::read(&real).unwrap();
    let mut report = dc_attestation::decode_maybe_hex(&text, 1 << 20).unwrap();
    report[4..36].copy_from_slice(&binding()[..32]);
    std::fs::write(fx.file("gpu.bin"), &report).unwrap();
    let gpu = fx.file("gpu.bin");
    let out = fx.evidence(&[
        "--gpu-report",
        gpu.to_str().unwrap(),
        "--gpu-certs",
        certs.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(
        stdout_json(&out)["items"],
        serde_json::json!(["sev-snp", "nvidia-h100"])
    );
    let bundle =
        EvidenceBundle::from_json(&std::fs::read(fx.file("bundle.json")).unwrap()).unwrap();
    let Evidence::NvidiaH100 {
        report: r,
        certs: c,
        ..
    } = &bundle.evidence[1]
    else {
        panic!("gpu item")
    };
    assert_eq!(hex::decode(r).unwrap(), report);
    assert_eq!(c.as_bytes(), std::fs::read(&certs).unwrap());

    // Reports and chains come in pairs.
    let out = fx.evidence(&["--gpu-report", gpu.to_str().unwrap()]);
    assert_fails(&out, exit::USAGE, "--gpu-certs");
}

/// A file system that plays the kernel's configfs over a plain directory:
/// every write bumps `generation`, and `outblob` is made on read from
/// `inblob`. `intruders` more writes land during each of the first
/// `intruded_reads` reads of `outblob`; `answer` fixes the report data the
/// "hardware" signs (default: whatever `inblob` holds).
struct KernelLike {
    intruded_reads: std::cell::Cell<u32>,
    outblob_reads: std::cell::Cell<u32>,
    answer: Option<[u8; 64]>,
}

impl KernelLike {
    fn new() -> Self {
        KernelLike {
            intruded_reads: std::cell::Cell::new(0),
            outblob_reads: std::cell::Cell::new(0),
            answer: None,
        }
    }

    fn bump(path: &Path) -> io::Result<()> {
        let g = path.with_file_name("generation");
        let n: u64 = std::fs::read_to_string(&g)?.trim().parse().unwrap();
        std::fs::write(g, format!("{}\n", n + 1))
    }
}

impl TsmFs for &KernelLike {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        std::fs::write(path, bytes)?;
        KernelLike::bump(path)
    }
    fn read(&self, path: &Path, limit: usize) -> io::Result<Vec<u8>> {
        if path.ends_with("outblob") {
            self.outblob_reads.set(self.outblob_reads.get() + 1);
            if self.intruded_reads.get() > 0 {
                self.intruded_reads.set(self.intruded_reads.get() - 1);
                KernelLike::bump(path)?;
            }
            let inblob: [u8; 64] = std::fs::read(path.with_file_name("inblob"))?
                .try_into()
                .unwrap();
            return Ok(synthetic_snp_report(&self.answer.unwrap_or(inblob)));
        }
        let mut v = std::fs::read(path)?;
        v.truncate(limit + 1);
        Ok(v)
    }
}

fn kernel_tsm<'a>(fx: &Fixture, k: &'a KernelLike) -> Tsm<&'a KernelLike> {
    Tsm::new(k, fx.root(), ENTRY, Interface::Configfs).unwrap()
}

#[test]
fn a_concurrent_writer_is_outwaited_then_reported() {
    let fx = Fixture::new(Some("sev_guest"), b"", None);
    let k = KernelLike::new();
    k.intruded_reads.set(1);
    let outcome = collect_evidence(&kernel_tsm(&fx, &k), &request()).unwrap();
    assert_eq!(outcome.attempts, 2);
    assert_eq!(k.outblob_reads.get(), 2);
    // On configfs the report answers this binding: no replay warning.
    assert!(
        !outcome.warnings.iter().any(|w| w.contains("recorded")),
        "{:?}",
        outcome.warnings
    );

    let k = KernelLike::new();
    k.intruded_reads.set(u32::MAX);
    let e = collect_evidence(&kernel_tsm(&fx, &k), &request()).unwrap_err();
    assert!(
        matches!(
            e,
            GuestError::Tsm(TsmError::GenerationConflict { attempts: 3, .. })
        ),
        "{e}"
    );
    assert_eq!(e.exit_code(), exit::REPORT);
    assert_eq!(k.outblob_reads.get(), 3);

    // In a recorded directory nothing may change the generation either.
    let fx = Fixture::new(Some("sev_guest"), &synthetic_snp_report(&binding()), None);
    struct Meddler;
    impl TsmFs for Meddler {
        fn create_dir(&self, p: &Path) -> io::Result<()> {
            std::fs::create_dir(p)
        }
        fn remove_dir(&self, p: &Path) -> io::Result<()> {
            std::fs::remove_dir(p)
        }
        fn exists(&self, p: &Path) -> bool {
            p.exists()
        }
        fn write(&self, p: &Path, b: &[u8]) -> io::Result<()> {
            std::fs::write(p, b)
        }
        fn read(&self, p: &Path, limit: usize) -> io::Result<Vec<u8>> {
            if p.ends_with("outblob") {
                KernelLike::bump(p)?;
            }
            let mut v = std::fs::read(p)?;
            v.truncate(limit + 1);
            Ok(v)
        }
    }
    let tsm = Tsm::new(Meddler, fx.root(), ENTRY, Interface::Directory).unwrap();
    let e = collect_evidence(&tsm, &request()).unwrap_err();
    assert!(
        matches!(e, GuestError::Tsm(TsmError::GenerationConflict { .. })),
        "{e}"
    );
}

#[test]
fn on_configfs_a_report_for_other_data_is_refused() {
    let fx = Fixture::new(Some("sev_guest"), b"", None);
    let mut k = KernelLike::new();
    k.answer = Some([9; 64]);
    let e = collect_evidence(&kernel_tsm(&fx, &k), &request()).unwrap_err();
    assert!(
        matches!(
            e,
            GuestError::ReportMismatch {
                field: "REPORT_DATA",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.exit_code(), exit::REPORT);
}

#[test]
fn missing_provider_is_not_a_report_entry() {
    let fx = Fixture::new(None, &synthetic_snp_report(&binding()), None);
    assert_fails(&fx.evidence(&[]), exit::REPORT, "provider");
    assert!(!fx.file("bundle.json").exists(), "no bundle on failure");
}

#[test]
fn oversized_outblob_is_refused() {
    let fx = Fixture::new(Some("sev_guest"), &vec![0u8; 32 * 1024 + 1], None);
    assert_fails(&fx.evidence(&[]), exit::REPORT, "more than 32768 bytes");
}

#[test]
fn malformed_reports_are_refused() {
    let fx = Fixture::new(Some("sev_guest"), &[1, 2, 3], None);
    assert_fails(&fx.evidence(&[]), exit::REPORT, "malformed");
    let fx = Fixture::new(Some("tdx_guest"), &[1, 2, 3], None);
    assert_fails(&fx.evidence(&[]), exit::REPORT, "malformed");
    let fx = Fixture::new(Some("arm_cca_guest"), &[1, 2, 3], None);
    assert_fails(&fx.evidence(&[]), exit::UNAVAILABLE, "arm_cca_guest");
    let fx = Fixture::new(Some("sev_guest"), b"", None);
    assert_fails(&fx.evidence(&[]), exit::REPORT, "empty");
}

#[test]
fn malformed_auxblob_is_refused_unless_left_out() {
    let mut table = encode_cert_table(&[(CertKind::Vcek, b"not a certificate")]);
    let fx = Fixture::new(
        Some("sev_guest"),
        &synthetic_snp_report(&binding()),
        Some(&table),
    );
    assert_fails(&fx.evidence(&[]), exit::REPORT, "auxblob");
    table.truncate(30);
    std::fs::write(fx.entry().join("auxblob"), &table).unwrap();
    assert_fails(&fx.evidence(&[]), exit::REPORT, "terminator");

    let out = fx.evidence(&["--ignore-auxblob"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let j = stdout_json(&out);
    assert!(j["warnings"].to_string().contains("--ignore-auxblob"));
    assert_eq!(j["certificates"], serde_json::json!([]));
}

#[test]
fn bad_nonces_and_keys_are_usage_errors() {
    let fx = Fixture::new(Some("sev_guest"), &synthetic_snp_report(&binding()), None);
    let root = fx.root();
    let tls = fx.file("tls.pem");
    let out_path = fx.file("bundle.json");
    let run = |nonce: &str, key: &[&str]| {
        let mut args = vec![
            "evidence",
            "--nonce",
            nonce,
            "--out",
            out_path.to_str().unwrap(),
            "--tsm-root",
            root.to_str().unwrap(),
            "--tsm-entry",
            ENTRY,
        ];
        args.extend_from_slice(key);
        fx.run(&args)
    };
    let key = ["--tls-spki-file", tls.to_str().unwrap()];
    assert_fails(&run("0011", &key), exit::USAGE, "16 to 64 bytes");
    assert_fails(&run(&"00".repeat(65), &key), exit::USAGE, "16 to 64 bytes");
    assert_fails(&run("zz", &key), exit::USAGE, "--nonce");
    let hash = hex::encode(Sha256::digest(spki_der()));
    assert_fails(
        &run(&hex::encode(NONCE), &["--tls-spki-sha256", &hash]),
        exit::USAGE,
        "whole key",
    );
    assert_fails(
        &run(&hex::encode(NONCE), &["--tls-cert", tls.to_str().unwrap()]),
        exit::USAGE,
        "CERTIFICATE",
    );
    assert_fails(
        &run(
            &hex::encode(NONCE),
            &["--tls-spki-file", fx.file("absent.pem").to_str().unwrap()],
        ),
        exit::LOCAL,
        "absent.pem",
    );
    assert!(
        !fx.entry().join("inblob").exists(),
        "nothing reached the interface"
    );
    // Two key sources at once is an argument error (clap).
    let out = run(
        &hex::encode(NONCE),
        &["--tls-spki-file", "a", "--tls-cert", "b"],
    );
    assert_eq!(out.status.code(), Some(2));

    // `binding` takes the hash and agrees with the library.
    let out = fx.run(&[
        "binding",
        "--json",
        "--nonce",
        &hex::encode(NONCE),
        "--tls-spki-sha256",
        &hash,
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let j = stdout_json(&out);
    let b = Binding::for_spki(&NONCE, &spki_der()).unwrap();
    assert_eq!(j["report_data"], hex::encode(b.report_data));
    assert_eq!(j["gpu_nonce"], hex::encode(b.gpu_nonce));
}

#[test]
fn platform_says_why_there_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("tsm/report");
    let out = Command::new(env!("CARGO_BIN_EXE_dc-guest"))
        .args(["platform", "--json", "--tsm-root", absent.to_str().unwrap()])
        .output()
        .unwrap();
    assert_fails(&out, exit::UNAVAILABLE, "does not exist");
    let j = stdout_json(&out);
    assert_eq!(j["available"], false);
    assert!(j["reason"].as_str().unwrap().contains("configfs-tsm"));

    // A plain directory without the named entry holds no recording.
    std::fs::create_dir_all(&absent).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dc-guest"))
        .args(["platform", "--tsm-root", absent.to_str().unwrap()])
        .output()
        .unwrap();
    assert_fails(&out, exit::UNAVAILABLE, "plain directory");
    assert!(
        out.stdout.is_empty(),
        "text mode prints the reason on stderr only"
    );

    // The same shapes through the library.
    let tsm = Tsm::new(
        OsFs::for_interface(Interface::Directory),
        &absent,
        "x",
        Interface::Directory,
    )
    .unwrap();
    let e = GuestError::from(tsm.probe().unwrap_err());
    assert_eq!(e.exit_code(), exit::UNAVAILABLE);
}

#[test]
fn help_teaches_the_workflow() {
    let out = Command::new(env!("CARGO_BIN_EXE_dc-guest"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for needle in [
        "dcctl verify evidence",
        "gpu_nonce",
        "Exit codes",
        "report_data",
    ] {
        assert!(text.contains(needle), "{needle:?} not in --help");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_dc-guest"))
        .args(["evidence", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--tsm-root",
        "--gpu-report",
        "--tdx-collateral",
        "/sys/kernel/config/tsm/report",
    ] {
        assert!(text.contains(needle), "{needle:?} not in evidence --help");
    }
}
