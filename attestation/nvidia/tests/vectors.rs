//! Verification of real Hopper evidence from the shared vectors directory
//! (never copied into the project). Without the vectors, tests say so and skip.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dc_attestation_common::fetch::{
    CachingFetcher, FetchError, FetchResponse, Fetcher, FileCache, NoFetch,
};
use dc_attestation_common::{decode_maybe_hex, vectors_dir};
use dc_attestation_nvidia::*;
use proptest::prelude::*;

/// 2025-07-04: inside every chain certificate's validity (latest notBefore is
/// 2022-03-01, every notAfter is 9999-12-31).
const NOW: u64 = 1_751_624_655;
/// 2021-12-20: before the provisioner ICA (2022-01-12) and GH100 identity (2022-03-01) certificates.
const BEFORE_ICA: u64 = 1_640_000_000;

fn vectors() -> Option<PathBuf> {
    let dir = vectors_dir();
    if dir.is_none() {
        eprintln!("skipped: no vectors (set DC_VECTORS)");
    }
    dir
}

fn read(dir: &Path, rel: &str) -> Vec<u8> {
    std::fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn report(dir: &Path, rel: &str) -> Vec<u8> {
    decode_maybe_hex(&read(dir, rel), 64 * 1024).unwrap()
}

/// (report, chain) pairs from real GPUs.
const PAIRS: [(&str, &str); 3] = [
    (
        "trustee-nvidia/hopperAttestationReport.txt",
        "trustee-nvidia/hopper_cert_chain_case1.txt",
    ),
    (
        "nvtrust/hopperAttestationReport.txt",
        "nvtrust/hopperCertChain.txt",
    ),
    (
        "trustee-nvidia/hopper_coco_report1.txt",
        "trustee-nvidia/hopper_coco_certs1.txt",
    ),
];
const TRUSTEE_REPORT: &str = "trustee-nvidia/hopperAttestationReport.txt";
const TRUSTEE_CHAIN: &str = "trustee-nvidia/hopper_cert_chain_case1.txt";
const DRIVER_RIM: &str = "nvtrust/Driver_RIM_test_no_gpu.swidtag";
const VBIOS_RIM: &str = "nvtrust/1010_0200_882_96005E0001_test_no_gpu.swidtag";

/// The checks of the default policy: no expected nonce and no RIMs means no
/// nonce or RIM check is listed (nothing was asked).
const ALL_CHECKS: [&str; 6] = [
    "spdm_parse",
    "cert_chain",
    "root_pinned",
    "certificate_validity",
    "report_signature",
    "fwid",
];

fn ok(v: &NvidiaVerification, name: &str) -> bool {
    v.checks
        .get(name)
        .unwrap_or_else(|| panic!("no check {name}: {:#?}", v.checks))
        .ok
}

fn failed(v: &NvidiaVerification) -> Vec<String> {
    v.checks.failed().map(|c| c.name.clone()).collect()
}

fn detail<'a>(v: &'a NvidiaVerification, name: &str) -> &'a str {
    &v.checks.get(name).unwrap().detail
}

#[test]
fn real_reports_verify_with_their_chains() {
    let Some(dir) = vectors() else { return };
    for (rep, chain) in PAIRS {
        let bytes = report(&dir, rep);
        let v = verify(&bytes, &read(&dir, chain), &NvidiaPolicy::default(), NOW);
        assert!(v.verified, "{rep}: {:#?}", v.checks);
        for name in ALL_CHECKS {
            assert!(ok(&v, name), "{rep}: {name}");
        }
        assert_eq!(v.checks.0.len(), ALL_CHECKS.len());
        assert_eq!(v.platform, "nvidia-h100");
        assert_eq!(v.measurements.len(), 64);
        assert!(v.checks.get("nonce").is_none() && v.checks.get("rim_measurements").is_none());

        // With the right expected nonce too.
        let p = spdm::parse(&bytes).unwrap();
        let policy = NvidiaPolicy {
            expected_nonce: Some(p.request.nonce),
            ..Default::default()
        };
        let v = verify(&bytes, &read(&dir, chain), &policy, NOW);
        assert!(v.verified, "{rep}: {:#?}", v.checks);
        assert!(ok(&v, "nonce"));
        assert_eq!(v.nonce, hex::encode(p.request.nonce));
        serde_json::to_string(&v).unwrap();
    }
}

#[test]
fn coco_report_has_one_unsigned_zero_byte_after_the_signature() {
    let Some(dir) = vectors() else { return };
    let bytes = report(&dir, "trustee-nvidia/hopper_coco_report1.txt");
    let p = spdm::parse(&bytes).unwrap();
    assert_eq!(p.padding_len, 1);
    assert_eq!(
        p.signed_message.len(),
        bytes.len() - 1 - spdm::SIGNATURE_LEN
    );
    let v = verify(
        &bytes,
        &read(&dir, "trustee-nvidia/hopper_coco_certs1.txt"),
        &NvidiaPolicy::default(),
        NOW,
    );
    assert!(detail(&v, "spdm_parse").contains("1 zero byte(s) of unsigned padding"));
    // A non-zero byte there is not padding.
    let mut bad = bytes.clone();
    *bad.last_mut().unwrap() = 1;
    let v = verify(
        &bad,
        &read(&dir, "trustee-nvidia/hopper_coco_certs1.txt"),
        &NvidiaPolicy::default(),
        NOW,
    );
    assert!(!ok(&v, "spdm_parse"));
}

#[test]
fn validity_period_is_checked_against_now() {
    let Some(dir) = vectors() else { return };
    let v = verify(
        &report(&dir, TRUSTEE_REPORT),
        &read(&dir, TRUSTEE_CHAIN),
        &NvidiaPolicy::default(),
        BEFORE_ICA,
    );
    assert_eq!(failed(&v), vec!["certificate_validity"]);
    assert!(detail(&v, "certificate_validity").contains("not valid before"));
    // The first second every certificate is valid: the GH100 identity's notBefore 2022-03-01T00:00:00Z.
    let v = verify(
        &report(&dir, TRUSTEE_REPORT),
        &read(&dir, TRUSTEE_CHAIN),
        &NvidiaPolicy::default(),
        1_646_092_800,
    );
    assert!(v.verified, "{:#?}", v.checks);
    let v = verify(
        &report(&dir, TRUSTEE_REPORT),
        &read(&dir, TRUSTEE_CHAIN),
        &NvidiaPolicy::default(),
        1_646_092_799,
    );
    assert!(!v.verified);
}

#[test]
fn broken_chains_fail_the_right_checks() {
    let Some(dir) = vectors() else { return };
    let rep = report(&dir, TRUSTEE_REPORT);
    let policy = NvidiaPolicy::default();

    // Case 2: the root alone.
    let v = verify(
        &rep,
        &read(&dir, "trustee-nvidia/hopper_cert_chain_case2.txt"),
        &policy,
        NOW,
    );
    assert_eq!(
        failed(&v),
        vec!["cert_chain", "report_signature", "fwid"],
        "{:#?}",
        v.checks
    );
    assert!(
        detail(&v, "cert_chain").contains("expected 5 certificates (leaf to root), found 1"),
        "{}",
        detail(&v, "cert_chain")
    );

    // Case 3: the provisioner ICA is missing, so BROM's issuer is not the next certificate.
    let v = verify(
        &rep,
        &read(&dir, "trustee-nvidia/hopper_cert_chain_case3.txt"),
        &policy,
        NOW,
    );
    assert_eq!(failed(&v), vec!["cert_chain"], "{:#?}", v.checks);
    assert!(detail(&v, "cert_chain").contains("is issued by"));

    // Case 4: the leaf is missing; BROM's key did not sign the report.
    let v = verify(
        &rep,
        &read(&dir, "trustee-nvidia/hopper_cert_chain_case4.txt"),
        &policy,
        NOW,
    );
    assert_eq!(
        failed(&v),
        vec!["cert_chain", "report_signature", "fwid"],
        "{:#?}",
        v.checks
    );

    // A chain that stops below the root.
    let certs = parse_certs_pem(&read(&dir, TRUSTEE_CHAIN)).unwrap();
    let pem = |certs: &[Certificate]| -> Vec<u8> {
        use x509_cert::der::EncodePem;
        certs
            .iter()
            .map(|c| c.to_pem(x509_cert::der::pem::LineEnding::LF).unwrap())
            .collect::<String>()
            .into_bytes()
    };
    let v = verify(&rep, &pem(&certs[..4]), &policy, NOW);
    assert!(!ok(&v, "root_pinned"));
    assert!(!ok(&v, "cert_chain"));
    assert!(ok(&v, "report_signature") && ok(&v, "fwid"));

    // A chain ending at another self-signed root (NVIDIA's RIM root).
    let mut foreign = certs[..4].to_vec();
    foreign.extend(parse_certs_pem(&read(&dir, "nvtrust/verifier_RIM_root.pem")).unwrap());
    let v = verify(&rep, &pem(&foreign), &policy, NOW);
    assert!(!ok(&v, "root_pinned"));
    assert!(detail(&v, "root_pinned").contains("is not the pinned"));
    assert!(!ok(&v, "cert_chain"));

    // The other GPU's genuine chain: valid to the root, but its leaf did not sign this report.
    let v = verify(
        &rep,
        &read(&dir, "trustee-nvidia/hopper_coco_certs1.txt"),
        &policy,
        NOW,
    );
    assert_eq!(
        failed(&v),
        vec!["report_signature", "fwid"],
        "{:#?}",
        v.checks
    );

    // That GPU's leaf swapped into this chain: the leaf is not issued by this chain's BROM.
    let other = parse_certs_pem(&read(&dir, "trustee-nvidia/hopper_coco_certs1.txt")).unwrap();
    let mut swapped = certs.clone();
    swapped[0] = other[0].clone();
    let v = verify(&rep, &pem(&swapped), &policy, NOW);
    assert!(failed(&v).contains(&"cert_chain".to_string()));
    assert!(failed(&v).contains(&"report_signature".to_string()));

    // Garbage instead of a chain.
    let v = verify(&rep, b"not a pem", &policy, NOW);
    assert_eq!(
        failed(&v),
        vec![
            "cert_chain",
            "root_pinned",
            "certificate_validity",
            "report_signature",
            "fwid"
        ]
    );
}

#[test]
fn flipped_bytes_fail_the_signature() {
    let Some(dir) = vectors() else { return };
    let rep = report(&dir, TRUSTEE_REPORT);
    let chain = read(&dir, TRUSTEE_CHAIN);
    let p = spdm::parse(&rep).unwrap();
    let opaque_start = p.signed_message.len() - 422;
    let positions = [
        ("request nonce", 10),
        ("request slot", 36),
        ("response param2", spdm::REQUEST_LEN + 3),
        ("measurement value", spdm::REQUEST_LEN + 8 + 4 + 3 + 5),
        ("response nonce", spdm::REQUEST_LEN + 8 + 3520 + 1),
        ("opaque driver version", opaque_start + 72),
        ("opaque measurement counts", opaque_start + 100),
        ("signature r", rep.len() - 90),
        ("signature s", rep.len() - 1),
    ];
    for (what, at) in positions {
        let mut bad = rep.clone();
        bad[at] ^= 0x01;
        let v = verify(&bad, &chain, &NvidiaPolicy::default(), NOW);
        assert!(!v.verified, "{what}");
        assert!(ok(&v, "spdm_parse"), "{what}: {}", detail(&v, "spdm_parse"));
        assert!(!ok(&v, "report_signature"), "{what}");
    }
}

#[test]
fn wrong_nonce_fails() {
    let Some(dir) = vectors() else { return };
    let policy = NvidiaPolicy {
        expected_nonce: Some([0x11; 32]),
        ..Default::default()
    };
    let v = verify(
        &report(&dir, TRUSTEE_REPORT),
        &read(&dir, TRUSTEE_CHAIN),
        &policy,
        NOW,
    );
    assert_eq!(failed(&v), vec!["nonce"]);
    assert!(detail(&v, "nonce")
        .contains("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"));
}

#[test]
fn truncated_and_oversized_reports_fail_to_parse() {
    let Some(dir) = vectors() else { return };
    let rep = report(&dir, TRUSTEE_REPORT);
    let chain = read(&dir, TRUSTEE_CHAIN);
    for len in [0, 1, 36, 37, 45, 100, 3000, rep.len() - 97, rep.len() - 1] {
        let v = verify(&rep[..len], &chain, &NvidiaPolicy::default(), NOW);
        assert!(!ok(&v, "spdm_parse"), "{len}");
        assert!(!v.verified);
        assert!(ok(&v, "cert_chain"), "chain checks still run");
        assert!(detail(&v, "report_signature").contains("does not parse"));
    }
    assert!(matches!(
        spdm::parse(&rep[..rep.len() - 1]),
        Err(SpdmError::Truncated {
            field: "signature",
            ..
        })
    ));
    let mut long = rep.clone();
    long.extend([0xFF; 10]);
    assert!(matches!(
        spdm::parse(&long),
        Err(SpdmError::TrailingBytes {
            count: 10,
            nonzero: 10
        })
    ));
    let huge = vec![0u8; spdm::MAX_REPORT_LEN + 1];
    assert!(matches!(
        spdm::parse(&huge),
        Err(SpdmError::TooLarge { .. })
    ));
    // The hex text itself is not a report.
    assert!(spdm::parse(&read(&dir, TRUSTEE_REPORT)).is_err());
}

#[test]
fn parsed_fields_equal_trustees_claims() {
    let Some(dir) = vectors() else { return };
    let claims: serde_json::Value = serde_json::from_slice(&read(
        &dir,
        "trustee-nvidia/hopperAttestationReport-claims.txt",
    ))
    .unwrap();
    let config = &claims["config"];
    let p = spdm::parse(&report(&dir, TRUSTEE_REPORT)).unwrap();
    let o = &p.response.opaque;
    let s = |k: &str| config[k].as_str().unwrap().to_string();
    assert_eq!(o.driver_version(), Some(s("driver_version")));
    assert_eq!(o.vbios_version(), Some(s("vbios_version")));
    assert_eq!(o.fwid().map(hex::encode), Some(s("fwid")));
    assert_eq!(o.project(), Some(s("project")));
    assert_eq!(o.project_sku(), Some(s("project_sku")));
    assert_eq!(o.project_sku_mod(), Some(s("project_sku_mod")));
    assert_eq!(o.chip_sku(), Some(s("chip_sku")));
    assert_eq!(o.chip_sku_mod(), Some(s("chip_sku_mod")));
    assert_eq!(
        o.get(spdm::field::BOARD_ID).map(hex::encode),
        Some(s("board_id"))
    );
    assert_eq!(
        o.get(spdm::field::GPU_INFO).map(hex::encode),
        Some(s("gpu_info"))
    );
    assert_eq!(
        o.get(spdm::field::CPRINFO).map(hex::encode),
        Some(s("cpr_info"))
    );
    // trustee prints these one-byte statuses as characters: 'U' is 0x55.
    assert_eq!(
        o.get(spdm::field::NVDEC0_STATUS),
        Some(s("nvdec0_status").as_bytes())
    );
    assert_eq!(
        o.get(spdm::field::PROTECTED_PCIE_STATUS),
        Some(s("protected_pcie_status").as_bytes())
    );
    assert_eq!(o.nvdec0_enabled(), Some(false));
    let counts = o.measurement_counts().unwrap();
    assert_eq!(counts.len(), 64);
    for (i, c) in counts.iter().enumerate() {
        assert_eq!(
            config["measurement_count"][(i + 1).to_string()].as_u64(),
            Some(*c as u64),
            "count {}",
            i + 1
        );
    }
    let measurements = claims["measurements"].as_object().unwrap();
    assert_eq!(measurements.len(), p.response.blocks.len());
    for b in &p.response.blocks {
        assert_eq!(
            measurements[&b.index.to_string()].as_str(),
            Some(hex::encode(&b.value).as_str()),
            "block {}",
            b.index
        );
        assert_eq!(b.value_type, 1);
    }
    assert_eq!(p.request.param2, 0xFF, "all measurements requested");
    assert_eq!(p.request.slot_id, 0);
    assert_eq!(
        rim::driver_rim_id(&p).as_deref(),
        Some("NV_GPU_DRIVER_GH100_550.90.07")
    );
    assert_eq!(
        rim::vbios_rim_id(&p).as_deref(),
        Some("NV_GPU_VBIOS_1010_0200_882_96009F0001")
    );

    let coco = spdm::parse(&report(&dir, "trustee-nvidia/hopper_coco_report1.txt")).unwrap();
    assert_eq!(
        coco.response.opaque.driver_version().as_deref(),
        Some("580.95.05")
    );
    assert_eq!(
        coco.response.opaque.vbios_version().as_deref(),
        Some("96.00.74.00.1a")
    );
    assert_eq!(
        coco.response.opaque.get(spdm::field::OPAQUE_DATA_VERSION),
        Some(&[1u8, 0][..])
    );
}

#[test]
fn nvtrust_sample_rims_parse() {
    let Some(dir) = vectors() else { return };
    let driver = rim::parse(&read(&dir, DRIVER_RIM)).unwrap();
    assert_eq!(driver.kind, RimKind::Driver);
    assert_eq!(driver.version, "545.00");
    assert_eq!(driver.name, "GH100");
    assert_eq!(driver.platform_manufacturer_id.as_deref(), Some("5703"));
    assert_eq!(driver.measurements.len(), 64);
    assert_eq!(driver.active().count(), 21);
    assert!(driver.has_signature);
    let m35 = driver.measurements.iter().find(|m| m.index == 35).unwrap();
    assert_eq!(m35.alternatives.len(), 2);
    assert_eq!(m35.size, 48);

    let vbios = rim::parse(&read(&dir, VBIOS_RIM)).unwrap();
    assert_eq!(vbios.kind, RimKind::Vbios);
    assert_eq!(vbios.version, "96.00.5E.00.01");
    assert_eq!(vbios.measurements.len(), 64);
    assert_eq!(vbios.active().count(), 12);
    assert_eq!(
        vbios
            .measurements
            .iter()
            .find(|m| m.index == 12)
            .unwrap()
            .alternatives
            .len(),
        4
    );
    assert_eq!(
        hex::encode(&vbios.measurements.iter().find(|m| m.index == 4).unwrap().alternatives[0]),
        "568b89291a34cece03b12aaa352d9afe273610307525b8443e90faa78d82ecfa9c7827d8f7915c35b2fab972e1086686"
    );
}

#[test]
fn sample_rims_do_not_match_the_real_reports() {
    let Some(dir) = vectors() else { return };
    let rims = vec![
        rim::parse(&read(&dir, DRIVER_RIM)).unwrap(),
        rim::parse(&read(&dir, VBIOS_RIM)).unwrap(),
    ];
    let rep = report(&dir, TRUSTEE_REPORT);
    let p = spdm::parse(&rep).unwrap();
    let c = rim::compare(&rims, &p);
    assert!(c.conflicts.is_empty());
    assert!(!c.mismatches.is_empty());
    // The test VBIOS RIM shares some early measurements with this GPU (RIM 4, 5, 6 = SPDM 5, 6, 7).
    for same in [4, 5, 6] {
        assert!(!c.mismatches.iter().any(|m| m.rim_index == same), "{same}");
    }
    assert!(c.mismatches.iter().any(|m| m.rim_index == 1));
    let policy = NvidiaPolicy {
        rims,
        ..Default::default()
    };
    let v = verify(&rep, &read(&dir, TRUSTEE_CHAIN), &policy, NOW);
    assert_eq!(failed(&v), vec!["rim_versions", "rim_measurements"]);
    assert!(detail(&v, "rim_versions").contains("545.00"));
    assert!(detail(&v, "rim_versions").contains("550.90.07"));
    assert!(detail(&v, "rim_measurements").contains("RIM XML signatures not verified"));
}

/// A RIM in the nvtrust layout built from the report's own blocks: `indexes` are RIM (0-based) indexes.
fn rim_from_report(
    p: &SpdmMeasurements,
    version: &str,
    tag: &str,
    indexes: &[u32],
    tamper: Option<u32>,
) -> String {
    let mut resources = String::new();
    for b in &p.response.blocks {
        let idx = b.index as u32 - 1;
        let active = if indexes.contains(&idx) {
            "True"
        } else {
            "False"
        };
        let mut value = b.value.clone();
        if tamper == Some(idx) {
            value[0] ^= 0xFF;
        }
        resources.push_str(&format!(
            "<ns0:Resource type=\"Measurement\" index=\"{idx}\" active=\"{active}\" alternatives=\"2\" ns2:Hash0=\"{}\" ns2:Hash1=\"{}\" name=\"Measurement_{idx}\" size=\"{}\"/>\n",
            "00".repeat(value.len()),
            hex::encode(&value),
            value.len()
        ));
    }
    format!(
        r#"<SoftwareIdentity xmlns="http://standards.iso.org/iso/19770/-2/2015/schema.xsd" xmlns:ns0="http://standards.iso.org/iso/19770/-2/2015/schema.xsd" xmlns:ns2="http://www.w3.org/2001/04/xmlenc#sha384" corpus="false" name="GH100" tagId="{tag}" version="1.0">
<ns0:Meta colloquialVersion="{version}" edition="GPU" product="GH100"/>
<ns0:Payload>{resources}</ns0:Payload></SoftwareIdentity>"#
    )
}

#[test]
fn rims_built_from_the_report_match_and_tampered_ones_do_not() {
    let Some(dir) = vectors() else { return };
    let rep = report(&dir, TRUSTEE_REPORT);
    let chain = read(&dir, TRUSTEE_CHAIN);
    let p = spdm::parse(&rep).unwrap();
    let vbios_idx: Vec<u32> = (0..20).collect();
    let driver_idx: Vec<u32> = (20..64).collect();
    let vbios_v = p.response.opaque.vbios_version().unwrap().to_uppercase();
    let driver_v = p.response.opaque.driver_version().unwrap();
    let build = |v: &str, tag: &str, idx: &[u32], tamper| {
        rim::parse(rim_from_report(&p, v, tag, idx, tamper).as_bytes()).unwrap()
    };

    let good = vec![
        build(&driver_v, "drv", &driver_idx, None),
        build(&vbios_v, "vb", &vbios_idx, None),
    ];
    assert_eq!(good[1].kind, RimKind::Vbios);
    let policy = NvidiaPolicy {
        rims: good.clone(),
        require_rims: true,
        ..Default::default()
    };
    let v = verify(&rep, &chain, &policy, NOW);
    assert!(v.verified, "{:#?}", v.checks);
    assert!(detail(&v, "rim_measurements").contains("63 active measurements match"));
    assert!(detail(&v, "rim_measurements").contains("skipped RIM index 35"));

    // One tampered golden value fails, naming its index.
    let bad = vec![
        build(&driver_v, "drv", &driver_idx, Some(40)),
        good[1].clone(),
    ];
    let v = verify(
        &rep,
        &chain,
        &NvidiaPolicy {
            rims: bad,
            ..Default::default()
        },
        NOW,
    );
    assert_eq!(failed(&v), vec!["rim_measurements"]);
    assert!(detail(&v, "rim_measurements").contains(
        "1 of 63 active measurements differ, at RIM indexes (0-based; SPDM index is one more) 40"
    ));

    // RIM index 35 is not compared while NVDEC0 is disabled, as in nvtrust.
    let nvdec = vec![
        build(&driver_v, "drv", &driver_idx, Some(35)),
        good[1].clone(),
    ];
    assert!(
        verify(
            &rep,
            &chain,
            &NvidiaPolicy {
                rims: nvdec,
                ..Default::default()
            },
            NOW
        )
        .verified
    );

    // A wrong version fails rim_versions only.
    let old = vec![build("545.00", "drv", &driver_idx, None), good[1].clone()];
    let v = verify(
        &rep,
        &chain,
        &NvidiaPolicy {
            rims: old,
            ..Default::default()
        },
        NOW,
    );
    assert_eq!(failed(&v), vec!["rim_versions"]);

    // Two RIMs claiming the same index conflict.
    let overlap = vec![good[0].clone(), build(&vbios_v, "vb", &[0, 20], None)];
    let v = verify(
        &rep,
        &chain,
        &NvidiaPolicy {
            rims: overlap,
            ..Default::default()
        },
        NOW,
    );
    assert!(detail(&v, "rim_measurements").contains("more than one RIM: [20]"));

    // Required but missing.
    let v = verify(
        &rep,
        &chain,
        &NvidiaPolicy {
            require_rims: true,
            ..Default::default()
        },
        NOW,
    );
    assert_eq!(failed(&v), vec!["rim_versions", "rim_measurements"]);
}

/// Answers like NVIDIA's RIM service from a fixed swidtag and counts calls.
struct FakeRimService {
    swidtag: Vec<u8>,
    calls: Cell<u32>,
    urls: RefCell<Vec<String>>,
}

impl Fetcher for FakeRimService {
    fn get(&self, url: &str) -> Result<FetchResponse, FetchError> {
        use base64::Engine;
        self.calls.set(self.calls.get() + 1);
        self.urls.borrow_mut().push(url.to_string());
        if !url.ends_with("NV_GPU_DRIVER_GH100_550.90.07") {
            return Ok(FetchResponse {
                status: 404,
                headers: vec![],
                body: b"{}".to_vec(),
            });
        }
        let rim = base64::engine::general_purpose::STANDARD.encode(&self.swidtag);
        let body = serde_json::json!({ "id": "NV_GPU_DRIVER_GH100_550.90.07", "rim": rim, "sha256": "unused" });
        Ok(FetchResponse {
            status: 200,
            headers: vec![],
            body: body.to_string().into_bytes(),
        })
    }
}

#[test]
fn rims_fetched_by_id_through_a_cache() {
    let Some(dir) = vectors() else { return };
    let p = spdm::parse(&report(&dir, TRUSTEE_REPORT)).unwrap();
    let service = FakeRimService {
        swidtag: read(&dir, DRIVER_RIM),
        calls: Cell::new(0),
        urls: RefCell::new(vec![]),
    };
    let cache_dir =
        std::env::temp_dir().join(format!("dc-nvidia-rim-cache-{}", std::process::id()));
    let cache = FileCache::new(&cache_dir);
    let fetcher = CachingFetcher {
        cache: &cache,
        inner: &service,
    };
    let id = rim::driver_rim_id(&p).unwrap();
    let first = rim::fetch(&fetcher, &id).unwrap();
    let second = rim::fetch(&fetcher, &id).unwrap();
    assert_eq!(first, second);
    assert_eq!(first.version, "545.00");
    assert_eq!(service.calls.get(), 1, "second fetch comes from the cache");
    assert_eq!(
        service.urls.borrow()[0],
        "https://rim.attestation.nvidia.com/v1/rim/NV_GPU_DRIVER_GH100_550.90.07"
    );

    let vbios = rim::vbios_rim_id(&p).unwrap();
    assert!(
        matches!(rim::fetch(&fetcher, &vbios), Err(RimError::Fetch { .. })),
        "404"
    );
    assert!(
        matches!(rim::fetch(&NoFetch, &id), Err(RimError::Fetch { .. })),
        "offline"
    );
    assert!(matches!(
        rim::fetch(&service, "../etc/passwd"),
        Err(RimError::Fetch { .. })
    ));
    std::fs::remove_dir_all(cache_dir).ok();
}

struct Evidence {
    report: Vec<u8>,
    chain: Vec<u8>,
    swidtag: Vec<u8>,
}

fn evidence() -> Option<&'static Evidence> {
    static E: OnceLock<Option<Evidence>> = OnceLock::new();
    E.get_or_init(|| {
        let dir = vectors()?;
        Some(Evidence {
            report: report(&dir, TRUSTEE_REPORT),
            chain: read(&dir, TRUSTEE_CHAIN),
            swidtag: read(&dir, VBIOS_RIM),
        })
    })
    .as_ref()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        fuzz_spdm(&bytes);
        fuzz_rim(&bytes);
        let _ = parse_certs_pem(&bytes);
    }

    #[test]
    fn mutated_report_never_verifies(at in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let Some(e) = evidence() else { return Ok(()) };
        let mut bad = e.report.clone();
        let i = at.index(bad.len());
        bad[i] ^= xor;
        fuzz_spdm(&bad);
        let v = verify(&bad, &e.chain, &NvidiaPolicy::default(), NOW);
        prop_assert!(!v.verified, "flipping byte {} verified", i);
    }

    #[test]
    fn mutated_swidtag_never_panics(at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let Some(e) = evidence() else { return Ok(()) };
        let mut bad = e.swidtag.clone();
        let i = at.index(bad.len());
        bad[i] = byte;
        fuzz_rim(&bad);
        fuzz_rim(&bad[..cut.index(bad.len())]);
    }
}

#[test]
fn leaf_fwid_is_the_digest_nvtrust_reads() {
    let Some(dir) = vectors() else { return };
    for (rep, chain) in PAIRS {
        let certs = parse_certs_pem(&read(&dir, chain)).unwrap();
        let leaf = &certs[0];
        let ext = leaf
            .tbs_certificate
            .extensions
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.extn_id == certs::OID_TCG_DICE_TCB_INFO)
            .unwrap();
        // nvtrust: "the FWID data is the last 48 bytes" of the extension value.
        let raw = ext.extn_value.as_bytes();
        let fwids = certs::fwids(leaf);
        assert_eq!(fwids, vec![raw[raw.len() - 48..].to_vec()], "{chain}");
        let p = spdm::parse(&report(&dir, rep)).unwrap();
        assert_eq!(p.response.opaque.fwid(), Some(fwids[0].as_slice()), "{rep}");
        // The BROM certificate has its own, different FWID.
        assert!(certs::fwids(&certs[1]).iter().all(|f| *f != fwids[0]));
    }
}
