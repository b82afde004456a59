//! `dcctl verify` and `dcctl measure` as developers and auditors run them, on
//! evidence from real AMD, Intel and NVIDIA hardware (../shared/vectors or
//! $DC_VECTORS). JSON fields of INTERFACES.md, exit codes, and the auditor's
//! round trip: predict a measurement, then verify a report against it.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn vectors() -> Option<PathBuf> {
    let dir = dc_attestation::vectors_dir();
    if dir.is_none() {
        eprintln!("skipped: no vectors (set DC_VECTORS to ../shared/vectors)");
    }
    dir
}

fn dcctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dcctl"))
        .args(args)
        .output()
        .expect("run dcctl")
}

fn json_of(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim().lines().count(),
        1,
        "--json prints exactly one line: {text}"
    );
    serde_json::from_str(text.trim()).expect("stdout is one JSON object")
}

fn check<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["checks"]
        .as_array()
        .expect("checks is a list")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {v}"))
}

fn p(dir: &std::path::Path, rel: &str) -> String {
    dir.join(rel).display().to_string()
}

/// Milan VCEK valid 2023-04-03 .. 2030-04-03.
const MILAN_NOW: &str = "1740000000";

#[test]
fn verify_snp_prints_the_interface_fields_and_fails_on_a_wrong_expectation() {
    let Some(v) = vectors() else { return };
    let report = p(&v, "virtee-sev/report_milan.hex");
    let vcek = p(&v, "virtee-sev/vcek_milan.der");
    let out = dcctl(&[
        "verify", "snp", "--report", &report, "--vcek", &vcek, "--now", MILAN_NOW, "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = json_of(&out);
    assert_eq!(j["verified"], true);
    assert_eq!(j["platform"], "sev-snp");
    assert_eq!(j["measurement"].as_str().unwrap().len(), 96);
    assert_eq!(j["report_data"].as_str().unwrap().len(), 128);
    assert_eq!(j["chip_id"].as_str().unwrap().len(), 128);
    assert!(j["reported_tcb"].is_object());
    for c in j["checks"].as_array().unwrap() {
        assert!(
            c["name"].is_string() && c["ok"] == true && c["detail"].is_string(),
            "{c}"
        );
    }

    // The measurement it printed is accepted as the expectation; another is not.
    let m = j["measurement"].as_str().unwrap().to_string();
    let ok = dcctl(&[
        "verify",
        "snp",
        "--report",
        &report,
        "--vcek",
        &vcek,
        "--now",
        MILAN_NOW,
        "--expect-measurement",
        &m,
        "--json",
    ]);
    assert!(ok.status.success());
    let wrong = "00".repeat(48);
    let bad = dcctl(&[
        "verify",
        "snp",
        "--report",
        &report,
        "--vcek",
        &vcek,
        "--now",
        MILAN_NOW,
        "--expect-measurement",
        &wrong,
        "--json",
    ]);
    assert_eq!(bad.status.code(), Some(1), "a failed check exits 1");
    let j = json_of(&bad);
    assert_eq!(j["verified"], false);
    assert_eq!(check(&j, "measurement")["ok"], false);
    assert_eq!(
        check(&j, "report_signature")["ok"],
        true,
        "the signature itself is still good"
    );
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr).trim().lines().count(),
        1,
        "one-line reason"
    );

    // Time outside the VCEK's validity fails.
    let late = dcctl(&[
        "verify",
        "snp",
        "--report",
        &report,
        "--vcek",
        &vcek,
        "--now",
        "2000000000",
        "--json",
    ]);
    assert_eq!(late.status.code(), Some(1));
    assert_eq!(json_of(&late)["verified"], false);

    // Usage and local errors have their own codes.
    let usage = dcctl(&[
        "verify",
        "snp",
        "--report",
        &report,
        "--expect-measurement",
        "abc",
        "--json",
    ]);
    assert_eq!(usage.status.code(), Some(2));
    let missing = dcctl(&[
        "verify",
        "snp",
        "--report",
        "/nonexistent/report.bin",
        "--json",
    ]);
    assert_eq!(missing.status.code(), Some(4));
}

#[test]
fn verify_snp_without_a_vcek_offline_fails_with_a_reason() {
    let Some(v) = vectors() else { return };
    let out = dcctl(&[
        "verify",
        "snp",
        "--report",
        &p(&v, "virtee-sev/report_milan.hex"),
        "--now",
        MILAN_NOW,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let j = json_of(&out);
    assert_eq!(j["verified"], false);
    assert!(
        j["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["ok"] == false),
        "{j}"
    );
}

#[test]
fn verify_tdx_reports_tcb_status_and_applies_policy() {
    let Some(v) = vectors() else { return };
    let quote = p(&v, "dcap-qvl/tdx_quote");
    let collateral = p(&v, "dcap-qvl/tdx_quote_collateral.json");
    let out = dcctl(&[
        "verify",
        "tdx",
        "--quote",
        &quote,
        "--collateral",
        &collateral,
        "--now",
        "1751624655",
        "--json",
    ]);
    let j = json_of(&out);
    assert_eq!(j["platform"], "tdx");
    assert_eq!(j["mrtd"].as_str().unwrap().len(), 96);
    assert_eq!(j["rtmr"].as_array().unwrap().len(), 4);
    assert_eq!(j["report_data"].as_str().unwrap().len(), 128);
    assert!(j["advisory_ids"].is_array());
    assert_eq!(check(&j, "quote_signature")["ok"], true, "{j}");
    let status = j["tcb_status"].as_str().unwrap().to_string();
    assert_eq!(out.status.success(), j["verified"] == true);
    if status != "UpToDate" {
        assert_eq!(j["verified"], false, "{status} is not accepted by default");
    }

    // Outside the collateral's validity window the quote does not verify.
    let late = dcctl(&[
        "verify",
        "tdx",
        "--quote",
        &quote,
        "--collateral",
        &collateral,
        "--now",
        "4000000000",
        "--json",
    ]);
    assert_eq!(late.status.code(), Some(1));

    // dcap-qvl's "outdated" sample platform matches no TCB level of its
    // collateral at all: it must not verify (the OutOfDate policy itself is
    // tested in dc-attestation-tdx; no vector here yields that status).
    let outdated = dcctl(&[
        "verify",
        "tdx",
        "--quote",
        &p(&v, "dcap-qvl/tdx_quote_outdated"),
        "--collateral",
        &p(&v, "dcap-qvl/tdx_quote_outdated_collateral.json"),
        "--now",
        "1772323200",
        "--json",
    ]);
    assert_eq!(outdated.status.code(), Some(1));
    assert_eq!(json_of(&outdated)["verified"], false);

    let no_collateral = dcctl(&["verify", "tdx", "--quote", &quote, "--json"]);
    assert_eq!(no_collateral.status.code(), Some(2));
}

#[test]
fn verify_nvidia_checks_the_chain_and_the_nonce() {
    let Some(v) = vectors() else { return };
    let report = p(&v, "nvtrust/hopperAttestationReport.txt");
    let certs = p(&v, "nvtrust/hopperCertChain.txt");
    let out = dcctl(&[
        "verify", "nvidia", "--report", &report, "--certs", &certs, "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let j = json_of(&out);
    assert_eq!(j["verified"], true);
    assert!(j["platform"].as_str().unwrap().starts_with("nvidia"));
    let nonce = j["nonce"].as_str().unwrap().to_string();
    let same = dcctl(&[
        "verify", "nvidia", "--report", &report, "--certs", &certs, "--nonce", &nonce, "--json",
    ]);
    assert!(same.status.success());
    let other = dcctl(&[
        "verify",
        "nvidia",
        "--report",
        &report,
        "--certs",
        &certs,
        "--nonce",
        &"11".repeat(32),
        "--json",
    ]);
    assert_eq!(other.status.code(), Some(1));
    assert_eq!(check(&json_of(&other), "nonce")["ok"], false);
}

#[test]
fn bundle_binds_nonce_and_tls_key() {
    let Some(v) = vectors() else { return };
    let report = std::fs::read_to_string(v.join("virtee-sev/report_milan.hex")).unwrap();
    let vcek = hex::encode(std::fs::read(v.join("virtee-sev/vcek_milan.der")).unwrap());
    let nonce = [0x5au8; 32];
    let spki = b"\x30\x2a\x30\x05\x06\x03\x2b\x65\x70\x03\x21\x00 a TLS key of 32 bytes.........";
    let bundle = dc_attestation::bundle::EvidenceBundle::new(
        &nonce,
        spki,
        vec![dc_attestation::bundle::Evidence::SevSnp {
            report: report.split_whitespace().collect(),
            vcek: Some(vcek),
            chain: None,
        }],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bundle.json");
    std::fs::write(&path, bundle.to_json()).unwrap();
    let path = path.display().to_string();
    let key = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(spki));

    let out = dcctl(&[
        "verify",
        "evidence",
        &path,
        "--nonce",
        &hex::encode(nonce),
        "--tls-spki-sha256",
        &key,
        "--now",
        MILAN_NOW,
        "--json",
    ]);
    // This real report was not produced for our nonce and key: the hardware
    // evidence verifies, the binding does not, so the bundle is refused.
    assert_eq!(out.status.code(), Some(1));
    let j = json_of(&out);
    assert_eq!(j["verified"], false);
    assert_eq!(check(&j, "nonce")["ok"], true);
    assert_eq!(check(&j, "tls_public_key")["ok"], true);
    let item = &j["items"][0];
    assert_eq!(check(item, "report_signature")["ok"], true);
    assert_eq!(check(item, "report_data")["ok"], false);
    let expected = dc_attestation::report_data(&nonce, spki).unwrap();
    assert_eq!(j["report_data"], hex::encode(expected));

    let stale = dcctl(&[
        "verify",
        "evidence",
        &path,
        "--nonce",
        &"00".repeat(32),
        "--tls-spki-sha256",
        &key,
        "--now",
        MILAN_NOW,
        "--json",
    ]);
    assert_eq!(check(&json_of(&stale), "nonce")["ok"], false);

    // Another endpoint's key: the evidence was relayed, refused (this report
    // fails its foreign report_data too, so the key's own check is the test).
    let relayed = dcctl(&[
        "verify",
        "evidence",
        &path,
        "--nonce",
        &hex::encode(nonce),
        "--tls-spki-sha256",
        &"ab".repeat(32),
        "--now",
        MILAN_NOW,
        "--json",
    ]);
    assert_eq!(relayed.status.code(), Some(1));
    assert_eq!(check(&json_of(&relayed), "tls_public_key")["ok"], false);

    // A minimum TCB above the report's is a failed check of its own.
    let old_tcb = dcctl(&[
        "verify",
        "evidence",
        &path,
        "--nonce",
        &hex::encode(nonce),
        "--any-tls-key",
        "--now",
        MILAN_NOW,
        "--min-tcb",
        "snp=255",
        "--json",
    ]);
    assert_eq!(old_tcb.status.code(), Some(1));
    let tcb = check(&json_of(&old_tcb)["items"][0], "min_tcb").clone();
    assert_eq!(tcb["ok"], false, "{tcb}");
    let bad = dcctl(&[
        "verify",
        "evidence",
        &path,
        "--any-nonce",
        "--any-tls-key",
        "--min-tcb",
        "snp",
    ]);
    assert_eq!(
        bad.status.code(),
        Some(2),
        "a malformed --min-tcb is a usage error"
    );
}

/// Freshness and the TLS key are each checked unless explicitly waived:
/// leaving either out is a usage error before any file is read.
#[test]
fn bundle_nonce_and_tls_key_are_required_or_waived() {
    let path = "/nonexistent/bundle.json";
    let needs_nonce = dcctl(&["verify", "evidence", path, "--any-tls-key", "--json"]);
    assert_eq!(
        needs_nonce.status.code(),
        Some(2),
        "freshness must be asked for or explicitly waived"
    );
    let needs_key = dcctl(&["verify", "evidence", path, "--any-nonce", "--json"]);
    assert_eq!(
        needs_key.status.code(),
        Some(2),
        "the TLS key must be compared or explicitly waived"
    );
    assert!(String::from_utf8_lossy(&needs_key.stderr).contains("--tls-spki-sha256"));
    let both = dcctl(&[
        "verify",
        "evidence",
        path,
        "--any-nonce",
        "--any-tls-key",
        "--tls-spki-sha256",
        &"00".repeat(32),
    ]);
    assert_eq!(both.status.code(), Some(2), "a key and its waiver conflict");
    let waived = dcctl(&["verify", "evidence", path, "--any-nonce", "--any-tls-key"]);
    assert_eq!(
        waived.status.code(),
        Some(4),
        "past the flags: the file is missing"
    );
}

/// The auditor's round trip on dstack's real SNP VM: predict the launch
/// measurement from its published inputs (no large binaries), then verify the
/// hardware report against that prediction.
#[test]
fn measure_snp_predicts_what_the_dstack_report_attests() {
    let Some(v) = vectors() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dcctl(&[
        "measure",
        "snp",
        "--dstack-cbor",
        &p(&v, "dstack/DERIVED_measurement.snp.cbor"),
        "--vcpus",
        "2",
        "--vcpu-type",
        "EPYC-v4",
        "--guest-features",
        "1",
        "--print-input",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = json_of(&out);
    let measurement = j["measurement"].as_str().unwrap().to_string();
    assert_eq!(measurement.len(), 96);

    // The printed document of hashes is what gets published; it gives the same answer.
    let doc = dir.path().join("snp-measure.json");
    std::fs::write(&doc, j["input"].to_string()).unwrap();
    let again = json_of(&dcctl(&[
        "measure",
        "snp",
        "--input",
        &doc.display().to_string(),
        "--json",
    ]));
    assert_eq!(again["measurement"], measurement.as_str());

    // A different shape predicts something else.
    let other = json_of(&dcctl(&[
        "measure",
        "snp",
        "--dstack-cbor",
        &p(&v, "dstack/DERIVED_measurement.snp.cbor"),
        "--vcpus",
        "4",
        "--vcpu-type",
        "EPYC-v4",
        "--guest-features",
        "1",
        "--json",
    ]));
    assert_ne!(other["measurement"], measurement.as_str());

    // The real report carries exactly the predicted measurement.
    let verify = dcctl(&[
        "verify",
        "snp",
        "--report",
        &p(&v, "dstack/DERIVED_sev_snp_report.bin"),
        "--vcek",
        &p(&v, "dstack/sev_snp_vcek.pem"),
        "--chain",
        &p(&v, "dstack/sev_snp_ask.pem"),
        "--now",
        "1790000000",
        "--expect-measurement",
        &measurement,
        "--json",
    ]);
    let j = json_of(&verify);
    assert_eq!(check(&j, "measurement")["ok"], true, "{j}");
    assert!(verify.status.success(), "{j}");

    let bad_doc = dir.path().join("bad.json");
    std::fs::write(&bad_doc, r#"{"ovmf_hash": "00", "surprise": 1}"#).unwrap();
    let bad = dcctl(&[
        "measure",
        "snp",
        "--input",
        &bad_doc.display().to_string(),
        "--json",
    ]);
    assert_eq!(bad.status.code(), Some(4));
}
