//! The evidence bundle: decoding limits, freshness, TLS-key binding, and each
//! kind of real evidence carried through the bundle verifier.

use dc_attestation::bundle::{verify_bundle, BundleError, BundlePolicy, Evidence, EvidenceBundle, BUNDLE_FORMAT};
use dc_attestation::{report_data, vectors_dir};
use sha2::{Digest, Sha256};

const NONCE: [u8; 32] = [0x42; 32];
const SPKI: &[u8] = b"\x30\x2a\x30\x05\x06\x03\x2b\x65\x70\x03\x21\x00-an-ed25519-tls-key-32-bytes--";

fn vectors() -> Option<std::path::PathBuf> {
    let v = vectors_dir();
    if v.is_none() {
        eprintln!("skipped: no vectors (set DC_VECTORS)");
    }
    v
}

fn policy_with_nonce() -> BundlePolicy {
    BundlePolicy { expected_nonce: Some(NONCE.to_vec()), ..BundlePolicy::default() }
}

fn snp_item(v: &std::path::Path) -> Evidence {
    let hex_text = std::fs::read_to_string(v.join("virtee-sev/report_milan.hex")).unwrap();
    Evidence::SevSnp {
        report: hex_text.split_whitespace().collect(),
        vcek: Some(hex::encode(std::fs::read(v.join("virtee-sev/vcek_milan.der")).unwrap())),
        chain: Some(std::fs::read_to_string(v.join("virtee-sev/cert_chain_milan")).unwrap()),
    }
}

fn names_failed(checks: &dc_attestation::Checks) -> Vec<String> {
    checks.failed().map(|c| c.name.clone()).collect()
}

#[test]
fn shape_is_checked_before_any_evidence() {
    let ok = EvidenceBundle::new(&NONCE, SPKI, vec![Evidence::Tdx { quote: "00".into(), collateral: serde_json::json!({}), event_log: None }]);
    assert!(EvidenceBundle::from_json(ok.to_json().as_bytes()).is_ok());

    let mut wrong_format = ok.clone();
    wrong_format.format = "dc-evidence/v0".into();
    assert!(matches!(EvidenceBundle::from_json(wrong_format.to_json().as_bytes()), Err(BundleError::Format(_))));

    let mut short_nonce = ok.clone();
    short_nonce.nonce = "0011".into();
    assert!(matches!(EvidenceBundle::from_json(short_nonce.to_json().as_bytes()), Err(BundleError::Field { .. })));

    let mut no_items = ok.clone();
    no_items.evidence.clear();
    assert!(matches!(EvidenceBundle::from_json(no_items.to_json().as_bytes()), Err(BundleError::Field { .. })));

    let mut too_many = ok.clone();
    too_many.evidence = vec![too_many.evidence[0].clone(); 17];
    assert!(EvidenceBundle::from_json(too_many.to_json().as_bytes()).is_err());

    let unknown_field = ok.to_json().replacen("{", "{\"extra\": 1,", 1);
    assert!(matches!(EvidenceBundle::from_json(unknown_field.as_bytes()), Err(BundleError::Json(_))));

    let unknown_kind = ok.to_json().replace("\"tdx\"", "\"sgx\"");
    assert!(EvidenceBundle::from_json(unknown_kind.as_bytes()).is_err());

    let huge = vec![b' '; dc_attestation::bundle::MAX_BUNDLE_BYTES + 1];
    assert!(matches!(EvidenceBundle::from_json(&huge), Err(BundleError::TooLarge { .. })));

    let v = verify_bundle(b"not json", &policy_with_nonce(), 0);
    assert!(!v.verified);
    assert_eq!(names_failed(&v.checks), ["bundle_parse"]);
    assert_eq!(ok.format, BUNDLE_FORMAT);
}

#[test]
fn real_snp_evidence_verifies_but_a_foreign_binding_is_refused() {
    let Some(v) = vectors() else { return };
    let bundle = EvidenceBundle::new(&NONCE, SPKI, vec![snp_item(&v)]);
    let out = verify_bundle(bundle.to_json().as_bytes(), &policy_with_nonce(), 1_740_000_000);
    // The report was signed by a real Milan chip for someone else's challenge:
    // everything but the binding verifies.
    assert!(!out.verified);
    assert_eq!(out.report_data, hex::encode(report_data(&NONCE, SPKI).unwrap()));
    assert_eq!(out.tls_public_key_sha256, hex::encode(Sha256::digest(SPKI)));
    assert!(out.checks.get("nonce").unwrap().ok);
    let dc_attestation::bundle::ItemVerification::Snp(item) = &out.items[0] else { panic!("snp item") };
    assert_eq!(names_failed(&item.checks), ["report_data"]);
    assert!(item.checks.get("report_signature").unwrap().ok);
}

#[test]
fn freshness_and_tls_key_are_the_developers_to_demand() {
    let Some(v) = vectors() else { return };
    let json = EvidenceBundle::new(&NONCE, SPKI, vec![snp_item(&v)]).to_json();

    let stale = BundlePolicy { expected_nonce: Some(vec![0; 32]), ..BundlePolicy::default() };
    let out = verify_bundle(json.as_bytes(), &stale, 1_740_000_000);
    assert!(!out.checks.get("nonce").unwrap().ok);

    let other_key = BundlePolicy {
        expected_nonce: Some(NONCE.to_vec()),
        expected_tls_spki_sha256: Some([9; 32]),
        ..BundlePolicy::default()
    };
    let out = verify_bundle(json.as_bytes(), &other_key, 1_740_000_000);
    assert!(!out.checks.get("tls_public_key").unwrap().ok);

    let right_key = BundlePolicy {
        expected_nonce: Some(NONCE.to_vec()),
        expected_tls_spki_sha256: Some(Sha256::digest(SPKI).into()),
        ..BundlePolicy::default()
    };
    let out = verify_bundle(json.as_bytes(), &right_key, 1_740_000_000);
    assert!(out.checks.get("tls_public_key").unwrap().ok);
}

#[test]
fn tdx_and_gpu_evidence_travel_in_the_same_bundle() {
    let Some(v) = vectors() else { return };
    let collateral: serde_json::Value =
        serde_json::from_slice(&std::fs::read(v.join("dcap-qvl/tdx_quote_collateral.json")).unwrap()).unwrap();
    let gpu_text = std::fs::read(v.join("nvtrust/hopperAttestationReport.txt")).unwrap();
    let gpu = dc_attestation::decode_maybe_hex(&gpu_text, 1 << 20).unwrap();
    let bundle = EvidenceBundle::new(
        &NONCE,
        SPKI,
        vec![
            Evidence::Tdx { quote: hex::encode(std::fs::read(v.join("dcap-qvl/tdx_quote")).unwrap()), collateral, event_log: None },
            Evidence::NvidiaH100 {
                report: hex::encode(&gpu),
                certs: std::fs::read_to_string(v.join("nvtrust/hopperCertChain.txt")).unwrap(),
                rims: vec![],
            },
        ],
    );
    let json = bundle.to_json();
    assert_eq!(EvidenceBundle::from_json(json.as_bytes()).unwrap(), bundle, "JSON round trip");
    let out = verify_bundle(json.as_bytes(), &policy_with_nonce(), 1_751_624_655);
    assert_eq!(out.items.len(), 2);
    let dc_attestation::bundle::ItemVerification::Tdx(tdx) = &out.items[0] else { panic!("tdx item") };
    assert!(tdx.checks.get("quote_signature").unwrap().ok);
    assert_eq!(names_failed(&tdx.checks), ["report_data"], "only the foreign binding fails");
    let dc_attestation::bundle::ItemVerification::Nvidia(gpu_item) = &out.items[1] else { panic!("gpu item") };
    assert!(gpu_item.checks.get("report_signature").unwrap().ok);
    assert_eq!(names_failed(&gpu_item.checks), ["nonce"], "the GPU nonce must derive from the same binding");
    assert!(!out.verified);

    // A malformed item is reported against that item, not as a panic.
    let broken = json.replace(&hex::encode(&gpu[..8]), "zz");
    let out = verify_bundle(broken.as_bytes(), &policy_with_nonce(), 1_751_624_655);
    assert!(!out.checks.get("evidence[1].nvidia-h100").unwrap().ok);
}

/// RIMs inside a bundle come from the VM being attested: they are checked
/// for form but never judged against, so a RIM that lists whatever the GPU
/// measures cannot show up as a passed check. Only the verifier's own RIMs
/// (its policy, `dcctl verify evidence --rim`) judge the measurements.
#[test]
fn rims_inside_a_bundle_are_never_trusted() {
    let Some(v) = vectors() else { return };
    let gpu_text = std::fs::read(v.join("nvtrust/hopperAttestationReport.txt")).unwrap();
    let gpu = dc_attestation::decode_maybe_hex(&gpu_text, 1 << 20).unwrap();
    let driver_rim = std::fs::read_to_string(v.join("nvtrust/Driver_RIM_test_no_gpu.swidtag")).unwrap();
    let bundle = |rims: Vec<String>| {
        EvidenceBundle::new(
            &NONCE,
            SPKI,
            vec![Evidence::NvidiaH100 {
                report: hex::encode(&gpu),
                certs: std::fs::read_to_string(v.join("nvtrust/hopperCertChain.txt")).unwrap(),
                rims,
            }],
        )
        .to_json()
    };
    let gpu_checks = |json: &str, policy: &BundlePolicy| {
        let out = verify_bundle(json.as_bytes(), policy, 1_751_624_655);
        let dc_attestation::bundle::ItemVerification::Nvidia(item) = &out.items[0] else { panic!("gpu item") };
        item.checks.clone()
    };
    // The bundle's RIM is read, and ignored: no RIM check either way.
    let with_rim = gpu_checks(&bundle(vec![driver_rim.clone()]), &policy_with_nonce());
    assert!(with_rim.get("rim_versions").is_none() && with_rim.get("rim_measurements").is_none());
    assert_eq!(
        names_failed(&with_rim),
        names_failed(&gpu_checks(&bundle(vec![]), &policy_with_nonce())),
        "a RIM in the bundle changes no verdict"
    );
    // A malformed one is still refused, against its item.
    let out = verify_bundle(bundle(vec!["<not a swidtag/>".into()]).as_bytes(), &policy_with_nonce(), 1_751_624_655);
    let item = out.checks.get("evidence[0].nvidia-h100").unwrap();
    assert!(!item.ok && item.detail.contains("rims[0]"), "{}", item.detail);
    // The same RIM from the verifier is judged (this sample does not match
    // the real report, so both checks fail).
    let mut trusted = policy_with_nonce();
    trusted.nvidia.rims = vec![dc_attestation_nvidia::rim::parse(driver_rim.as_bytes()).unwrap()];
    let judged = gpu_checks(&bundle(vec![]), &trusted);
    assert!(!judged.get("rim_versions").unwrap().ok);
    assert!(!judged.get("rim_measurements").unwrap().ok);
}
