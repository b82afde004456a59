//! Verification of real SEV-SNP evidence (see /work/shared/vectors/MANIFEST.txt).
//!
//! Report versions in the vectors:
//! - v2: virtee-sev/report_milan.hex, go-sev-guest/attestation.bin,
//!   trustee/snp_test-report.bin, trustee/DERIVED_az-milan_snp-report.bin (all Milan)
//! - v3: trustee/snp_test-vlek-report.bin (Milan, VLEK), trustee/DERIVED_az-genoa_snp-report.bin
//!   (Genoa), dstack/DERIVED_sev_snp_report.bin (Milan)
//! - v5: teekit/sev-gcp*.bin (Milan, Google Cloud)
//!
//! There is no real Turin report among the vectors; the Turin VCEK
//! (virtee-sev/vcek_turin.der) is verified up to the pinned Turin ARK and
//! against a report built to match it (whose signature cannot verify).
//!
//! Each `now` lies inside every certificate's validity: the VCEKs are valid for
//! seven years from issue, the trustee VLEK for one (2024-12-10 to 2025-12-10),
//! and the dstack VCEK only from 2026-06-17.

use std::cell::Cell;
use std::path::PathBuf;

use dc_attestation_common::fetch::{
    CachingFetcher, FetchError, FetchResponse, Fetcher, FileCache, NoFetch,
};
use dc_attestation_snp::layout::*;
use dc_attestation_snp::{
    kds_vcek_url, parse_report, verify, verify_with_fetch, Generation, SnpEvidence, SnpPolicy,
    SnpVerification, TcbLevels,
};

/// 2023-11-14: inside the 2022/2023 Milan VCEKs' validity.
const NOW_2023: u64 = 1_700_000_000;
/// 2025-02-19: inside the trustee VLEK's and the Azure Genoa VCEK's validity.
const NOW_2025: u64 = 1_740_000_000;
/// 2026-02-02: after the Google Cloud VCEKs were issued (2025-12-05).
const NOW_2026_FEB: u64 = 1_770_000_000;
/// 2026-09-21: after the dstack VCEK was issued (2026-06-17).
const NOW_2026_SEP: u64 = 1_790_000_000;

fn vectors() -> Option<PathBuf> {
    let dir = dc_attestation_common::vectors_dir();
    if dir.is_none() {
        println!("skipped: no vectors (set DC_VECTORS)");
    }
    dir
}

fn read(dir: &std::path::Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("vector {name}: {e}"))
}

/// A report with its certificates, read from the vectors.
struct Case {
    report: Vec<u8>,
    vek: Vec<u8>,
    chain: Option<Vec<u8>>,
    now: u64,
}

impl Case {
    fn load(dir: &std::path::Path, report: &str, vek: &str, chain: Option<&str>, now: u64) -> Case {
        Case {
            report: read(dir, report),
            vek: read(dir, vek),
            chain: chain.map(|c| read(dir, c)),
            now,
        }
    }

    fn evidence(&self) -> SnpEvidence<'_> {
        SnpEvidence {
            report: &self.report,
            endorsement_key: Some(&self.vek),
            chain: self.chain.as_deref(),
        }
    }

    fn verify(&self, policy: &SnpPolicy) -> SnpVerification {
        verify(&self.evidence(), policy, self.now)
    }

    /// The raw report (the virtee one is hex text).
    fn raw_report(&self) -> Vec<u8> {
        dc_attestation_common::decode_maybe_hex(&self.report, 8192).expect("report decodes")
    }
}

fn lenient() -> SnpPolicy {
    SnpPolicy {
        allow_debug: true,
        required_vmpl: None,
        ..SnpPolicy::default()
    }
}

fn check_ok(v: &SnpVerification, name: &str) -> bool {
    v.checks
        .get(name)
        .unwrap_or_else(|| panic!("no check {name} in {:#?}", v.checks))
        .ok
}

fn detail(v: &SnpVerification, name: &str) -> String {
    v.checks
        .get(name)
        .map(|c| c.detail.clone())
        .unwrap_or_default()
}

fn assert_verified(v: &SnpVerification, version: u32, generation: &str, key: &str) {
    assert!(v.verified, "expected verified, got {:#?}", v.checks);
    assert_eq!(v.report_version, version);
    assert_eq!(v.generation.as_deref(), Some(generation));
    assert_eq!(v.signing_key.as_deref(), Some(key));
    assert_eq!(v.platform, "sev-snp");
    for name in [
        "report_parse",
        "chain_root_pinned",
        "ask_signed_by_ark",
        "vek_signed_by_ask",
        "report_signature",
        "tcb_extensions",
        "chip_id",
        "certificate_validity",
        "debug",
        "vmpl",
        "migration_agent",
    ] {
        assert!(check_ok(v, name), "{name} missing or failed");
    }
}

// ---------------------------------------------------------------- positive

#[test]
fn virtee_milan_v2_verifies_with_builtin_ask_and_with_its_chain_file() {
    let Some(dir) = vectors() else { return };
    for chain in [None, Some("virtee-sev/cert_chain_milan")] {
        let case = Case::load(
            &dir,
            "virtee-sev/report_milan.hex",
            "virtee-sev/vcek_milan.der",
            chain,
            NOW_2023,
        );
        let v = case.verify(&SnpPolicy::default());
        assert_verified(&v, 2, "milan", "vcek");
        assert_eq!(
            v.reported_tcb,
            TcbLevels {
                bootloader: 3,
                tee: 0,
                snp: 8,
                microcode: 115,
                fmc: None
            }
        );
    }
}

#[test]
fn go_sev_guest_v2_verifies_when_debug_is_allowed() {
    let Some(dir) = vectors() else { return };
    for chain in [None, Some("go-sev-guest/ask_ark_milan.pem")] {
        let case = Case::load(
            &dir,
            "go-sev-guest/attestation.bin",
            "go-sev-guest/vcek.testcer",
            chain,
            NOW_2023,
        );
        let v = case.verify(&SnpPolicy {
            allow_debug: true,
            ..SnpPolicy::default()
        });
        assert_verified(&v, 2, "milan", "vcek");
        // The guest was launched with DEBUG allowed (policy 0xb0000): the default policy refuses it.
        let strict = case.verify(&SnpPolicy::default());
        assert!(!strict.verified);
        assert!(!check_ok(&strict, "debug"));
        assert_eq!(
            strict.checks.failed().count(),
            1,
            "only the debug check fails: {:#?}",
            strict.checks
        );
    }
}

#[test]
fn trustee_vcek_v2_verifies() {
    let Some(dir) = vectors() else { return };
    let case = Case::load(
        &dir,
        "trustee/snp_test-report.bin",
        "trustee/snp_test-vcek.der",
        None,
        NOW_2023,
    );
    assert_verified(&case.verify(&SnpPolicy::default()), 2, "milan", "vcek");
}

#[test]
fn trustee_vlek_v3_verifies_with_the_asvk_chain() {
    let Some(dir) = vectors() else { return };
    for chain in [
        "trustee/snp_milan_ask_ark_asvk.pem",
        "go-sev-guest/ask_ark_milan_vlek.pem",
    ] {
        let case = Case::load(
            &dir,
            "trustee/snp_test-vlek-report.bin",
            "trustee/snp_test-vlek.der",
            Some(chain),
            NOW_2025,
        );
        // The report was requested from VMPL 1.
        let v = case.verify(&SnpPolicy {
            required_vmpl: Some(1),
            ..SnpPolicy::default()
        });
        assert_verified(&v, 3, "milan", "vlek");
        assert!(
            detail(&v, "chip_id").contains("no hwID"),
            "{}",
            detail(&v, "chip_id")
        );
        assert!(
            !check_ok(&case.verify(&SnpPolicy::default()), "vmpl"),
            "VMPL 0 is the default requirement"
        );
    }
}

#[test]
fn vlek_without_an_asvk_does_not_verify() {
    let Some(dir) = vectors() else { return };
    let case = Case::load(
        &dir,
        "trustee/snp_test-vlek-report.bin",
        "trustee/snp_test-vlek.der",
        None,
        NOW_2025,
    );
    let v = case.verify(&lenient());
    assert!(!v.verified);
    assert!(
        detail(&v, "vek_signed_by_ask").contains("ASVK"),
        "{:#?}",
        v.checks
    );
    assert!(
        check_ok(&v, "report_signature"),
        "the signature itself is fine"
    );
}

#[test]
fn teekit_gcp_v5_reports_verify() {
    let Some(dir) = vectors() else { return };
    let cases = [
        (
            "teekit/sev-gcp.bin",
            "teekit/sev-gcp-vcek.pem",
            Some("teekit/sev-gcp-cert-chain.pem"),
            0,
        ),
        (
            "teekit/sev-gcp-reportdata.bin",
            "teekit/sev-gcp-vcek.pem",
            None,
            1,
        ),
        (
            "teekit/sev-gcp-x25519-bound.bin",
            "teekit/sev-gcp-x25519-vcek.pem",
            Some("teekit/sev-gcp-x25519-cert-chain.pem"),
            1,
        ),
    ];
    for (report, vek, chain, vmpl) in cases {
        let case = Case::load(&dir, report, vek, chain, NOW_2026_FEB);
        let v = case.verify(&SnpPolicy {
            required_vmpl: Some(vmpl),
            ..SnpPolicy::default()
        });
        assert_verified(&v, 5, "milan", "vcek");
    }
}

#[test]
fn azure_milan_v2_and_genoa_v3_verify() {
    let Some(dir) = vectors() else { return };
    // The Milan PEM holds VCEK, ASK and ARK together.
    let milan = Case::load(
        &dir,
        "trustee/DERIVED_az-milan_snp-report.bin",
        "trustee/az-snp-vtpm_vcek.pem",
        None,
        NOW_2023,
    );
    assert_verified(&milan.verify(&SnpPolicy::default()), 2, "milan", "vcek");
    let genoa = Case::load(
        &dir,
        "trustee/DERIVED_az-genoa_snp-report.bin",
        "trustee/DERIVED_az-genoa_vcek.pem",
        None,
        NOW_2025,
    );
    let v = genoa.verify(&SnpPolicy::default());
    assert_verified(&v, 3, "genoa", "vcek");
    let genoa_chain = Case {
        chain: Some(read(&dir, "go-sev-guest/ask_ark_genoa.pem")),
        ..genoa
    };
    assert_verified(
        &genoa_chain.verify(&SnpPolicy::default()),
        3,
        "genoa",
        "vcek",
    );
}

#[test]
fn dstack_v3_verifies() {
    let Some(dir) = vectors() else { return };
    let case = Case::load(
        &dir,
        "dstack/DERIVED_sev_snp_report.bin",
        "dstack/sev_snp_vcek.pem",
        Some("dstack/sev_snp_ask.pem"),
        NOW_2026_SEP,
    );
    assert_verified(&case.verify(&SnpPolicy::default()), 3, "milan", "vcek");
}

#[test]
fn turin_vcek_chains_to_the_pinned_turin_ark_and_binds_an_8_byte_chip_id() {
    let Some(dir) = vectors() else { return };
    let vek = read(&dir, "virtee-sev/vcek_turin.der");
    // No real Turin report exists in the vectors: build a v3 Turin report that
    // matches the VCEK's hwID and TCB (Turin layout: fmc, bl, tee, snp, 0, 0, 0, ucode).
    let mut report = vec![0u8; REPORT_LEN];
    report[..4].copy_from_slice(&3u32.to_le_bytes());
    report[0x08..0x10].copy_from_slice(&0x30000u64.to_le_bytes());
    report[0x34] = 1; // ECDSA P-384 / SHA-384
    report[0x180..0x188].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 9]);
    report[0x188] = 0x1A; // family 1Ah, model 02h: Turin
    report[0x189] = 0x02;
    report[CHIP_ID_OFFSET..CHIP_ID_OFFSET + 8]
        .copy_from_slice(&hex::decode("1e550a8ee5cf9f4d").expect("hex"));
    report[SIG_R_OFFSET] = 1;
    report[SIG_S_OFFSET] = 1;
    for chain in [
        None,
        Some(read(&dir, "virtee-sev/cert_chain_turin")),
        Some(read(&dir, "go-sev-guest/ask_ark_turin_vcek.pem")),
    ] {
        let evidence = SnpEvidence {
            report: &report,
            endorsement_key: Some(&vek),
            chain: chain.as_deref(),
        };
        let v = verify(&evidence, &SnpPolicy::default(), NOW_2025);
        assert_eq!(v.generation.as_deref(), Some("turin"));
        assert_eq!(
            v.reported_tcb,
            TcbLevels {
                fmc: Some(0),
                bootloader: 0,
                tee: 0,
                snp: 0,
                microcode: 9
            }
        );
        for name in [
            "ask_signed_by_ark",
            "vek_signed_by_ask",
            "tcb_extensions",
            "chip_id",
            "certificate_validity",
            "chain_root_pinned",
        ] {
            assert!(check_ok(&v, name), "{name}: {:#?}", v.checks);
        }
        assert!(
            !check_ok(&v, "report_signature"),
            "a made-up report has no valid signature"
        );
        assert!(!v.verified);
    }
    // The same report but a Turin fmc level the VCEK does not certify.
    report[0x180] = 1;
    let v = verify(
        &SnpEvidence {
            report: &report,
            endorsement_key: Some(&vek),
            chain: None,
        },
        &SnpPolicy::default(),
        NOW_2025,
    );
    assert!(!check_ok(&v, "tcb_extensions"));
    assert!(
        detail(&v, "tcb_extensions").contains("fmcSPL"),
        "{}",
        detail(&v, "tcb_extensions")
    );
}

// ---------------------------------------------------------------- negative: bytes

#[test]
fn flipping_a_signed_byte_fails_the_signature_and_the_unsigned_tail_does_not_matter() {
    let Some(dir) = vectors() else { return };
    let case = Case::load(
        &dir,
        "trustee/snp_test-report.bin",
        "trustee/snp_test-vcek.der",
        None,
        NOW_2023,
    );
    let raw = case.raw_report();
    let regions = [
        ("header (guest_svn)", 0x04),
        ("report_data", REPORT_DATA_OFFSET + 5),
        ("measurement", MEASUREMENT_OFFSET + 7),
        ("host_data", HOST_DATA_OFFSET),
        ("chip_id", CHIP_ID_OFFSET + 3),
        ("reserved byte before the signature", SIGNED_LEN - 1),
        ("signature r", SIG_R_OFFSET + 1),
        ("signature s", SIG_S_OFFSET + 2),
    ];
    for (what, offset) in regions {
        let mut bad = raw.clone();
        bad[offset] ^= 0x01;
        let v = verify(
            &SnpEvidence {
                report: &bad,
                ..case.evidence()
            },
            &SnpPolicy::default(),
            case.now,
        );
        assert!(!v.verified, "{what}");
        assert!(!check_ok(&v, "report_signature"), "{what}: {:#?}", v.checks);
        // The certificate chain is independent of the report bytes and still checks out.
        assert!(check_ok(&v, "vek_signed_by_ask"), "{what}");
        assert!(check_ok(&v, "debug"), "{what}: policy checks still run");
    }
    for offset in [SIG_RESERVED_OFFSET, 0x400, REPORT_LEN - 1] {
        let mut tail = raw.clone();
        tail[offset] ^= 0xff;
        let v = verify(
            &SnpEvidence {
                report: &tail,
                ..case.evidence()
            },
            &SnpPolicy::default(),
            case.now,
        );
        assert!(
            v.verified,
            "offset {offset:#x} is outside the signed range: {:#?}",
            v.checks
        );
    }
}

#[test]
fn truncated_oversized_and_garbage_reports_are_rejected_with_a_reason() {
    let Some(dir) = vectors() else { return };
    let case = Case::load(
        &dir,
        "trustee/snp_test-report.bin",
        "trustee/snp_test-vcek.der",
        None,
        NOW_2023,
    );
    let raw = case.raw_report();
    let mut oversized = raw.clone();
    oversized.push(0);
    for (what, bytes) in [
        ("truncated", raw[..1000].to_vec()),
        ("oversized", oversized),
        ("empty", Vec::new()),
    ] {
        let v = verify(
            &SnpEvidence {
                report: &bytes,
                ..case.evidence()
            },
            &SnpPolicy::default(),
            case.now,
        );
        assert!(!v.verified, "{what}");
        assert!(!check_ok(&v, "report_parse"), "{what}");
        assert!(
            detail(&v, "report_parse").contains("1184"),
            "{what}: {}",
            detail(&v, "report_parse")
        );
    }
    let mut v1 = raw.clone();
    v1[0] = 1;
    assert!(parse_report(&v1).is_err(), "version 1 has another layout");
}

#[test]
fn hex_text_and_raw_bytes_give_the_same_result() {
    let Some(dir) = vectors() else { return };
    let case = Case::load(
        &dir,
        "virtee-sev/report_milan.hex",
        "virtee-sev/vcek_milan.der",
        None,
        NOW_2023,
    );
    let raw = case.raw_report();
    let from_hex = case.verify(&SnpPolicy::default());
    let from_raw = verify(
        &SnpEvidence {
            report: &raw,
            ..case.evidence()
        },
        &SnpPolicy::default(),
        NOW_2023,
    );
    assert_eq!(from_hex, from_raw);
}

// ---------------------------------------------------------------- negative: certificates

#[test]
fn a_vcek_of_another_chip_fails_signature_and_chip_id() {
    let Some(dir) = vectors() else { return };
    // Both are Milan VCEKs at the same TCB (3/0/8/115), so only the chip differs.
    let case = Case::load(
        &dir,
        "trustee/snp_test-report.bin",
        "virtee-sev/vcek_milan.der",
        None,
        NOW_2023,
    );
    let v = case.verify(&SnpPolicy::default());
    assert!(!v.verified);
    assert!(!check_ok(&v, "report_signature"));
    assert!(!check_ok(&v, "chip_id"));
    assert!(check_ok(&v, "tcb_extensions"));
    assert!(
        check_ok(&v, "vek_signed_by_ask"),
        "the VCEK itself is genuine"
    );
    // And one at another TCB fails the TCB binding too.
    let other = Case::load(
        &dir,
        "trustee/snp_test-report.bin",
        "go-sev-guest/vcek.testcer",
        None,
        NOW_2023,
    );
    assert!(!check_ok(
        &other.verify(&SnpPolicy::default()),
        "tcb_extensions"
    ));
}

#[test]
fn a_milan_vcek_with_a_genoa_chain_fails() {
    let Some(dir) = vectors() else { return };
    // v2 report: the chain's root decides the generation, and Genoa's ASK did not sign a Milan VCEK.
    let v2 = Case::load(
        &dir,
        "trustee/snp_test-report.bin",
        "trustee/snp_test-vcek.der",
        Some("go-sev-guest/ask_ark_genoa.pem"),
        NOW_2023,
    );
    let v = v2.verify(&SnpPolicy::default());
    assert!(!v.verified);
    assert_eq!(v.generation.as_deref(), Some("genoa"));
    assert!(check_ok(&v, "chain_root_pinned"));
    assert!(!check_ok(&v, "vek_signed_by_ask"), "{:#?}", v.checks);
    // v3 report: its CPUID says Milan, which contradicts the chain root.
    let v3 = Case::load(
        &dir,
        "dstack/DERIVED_sev_snp_report.bin",
        "dstack/sev_snp_vcek.pem",
        Some("go-sev-guest/ask_ark_genoa.pem"),
        NOW_2026_SEP,
    );
    let v = v3.verify(&SnpPolicy::default());
    assert!(!v.verified);
    assert!(!check_ok(&v, "generation"), "{:#?}", v.checks);
    // A Genoa VCEK offered for a Milan report.
    let genoa_vcek = Case::load(
        &dir,
        "trustee/snp_test-report.bin",
        "trustee/DERIVED_az-genoa_vcek.pem",
        None,
        NOW_2025,
    );
    let v = genoa_vcek.verify(&SnpPolicy::default());
    assert!(!v.verified);
    assert!(!check_ok(&v, "report_signature"));
}

#[test]
fn a_chain_whose_root_is_not_a_pinned_ark_fails() {
    let Some(dir) = vectors() else { return };
    let mut chain = read(&dir, "virtee-sev/amd_milan_ask.pem");
    chain.extend(read(&dir, "go-tdx-guest/trusted_root.pem"));
    let case = Case {
        chain: Some(chain),
        ..Case::load(
            &dir,
            "trustee/snp_test-report.bin",
            "trustee/snp_test-vcek.der",
            None,
            NOW_2023,
        )
    };
    let v = case.verify(&SnpPolicy::default());
    assert!(!v.verified);
    assert!(!check_ok(&v, "chain_root_pinned"));
    assert!(detail(&v, "chain_root_pinned").contains("chain root is not a pinned AMD ARK"));
    // The remaining checks still run (and pass) against the pinned ARK.
    assert!(check_ok(&v, "report_signature"));
    assert!(check_ok(&v, "vek_signed_by_ask"));
}

#[test]
fn trustee_invalid_vceks_are_rejected() {
    let Some(dir) = vectors() else { return };
    for vek in [
        "trustee/snp_test-vcek-invalid-legacy.der",
        "trustee/snp_test-vcek-invalid-new.der",
    ] {
        let case = Case::load(&dir, "trustee/snp_test-report.bin", vek, None, NOW_2025);
        let v = case.verify(&SnpPolicy::default());
        assert!(!v.verified, "{vek}");
        assert!(
            !check_ok(&v, "chip_id"),
            "{vek}: hwID 00..3f is not this chip"
        );
        assert!(
            !check_ok(&v, "tcb_extensions"),
            "{vek}: TCB differs from the report"
        );
        assert!(!check_ok(&v, "report_signature"), "{vek}");
    }
}

#[test]
fn certificates_outside_their_validity_fail() {
    let Some(dir) = vectors() else { return };
    // trustee VLEK: notBefore 1733868861 (2024-12-10T22:14:21Z), notAfter 1765404861 (2025-12-10T22:14:21Z).
    let case = Case::load(
        &dir,
        "trustee/snp_test-vlek-report.bin",
        "trustee/snp_test-vlek.der",
        Some("trustee/snp_milan_ask_ark_asvk.pem"),
        0,
    );
    let policy = SnpPolicy {
        required_vmpl: Some(1),
        ..SnpPolicy::default()
    };
    for (now, ok) in [
        (1_733_868_860, false),
        (1_733_868_861, true),
        (1_765_404_861, true),
        (1_765_404_862, false),
    ] {
        let v = verify(&case.evidence(), &policy, now);
        assert_eq!(
            check_ok(&v, "certificate_validity"),
            ok,
            "now {now}: {}",
            detail(&v, "certificate_validity")
        );
        assert_eq!(v.verified, ok);
        assert!(
            check_ok(&v, "report_signature"),
            "time does not affect the signature"
        );
    }
}

#[test]
fn a_vlek_report_with_a_vcek_is_a_key_type_mismatch() {
    let Some(dir) = vectors() else { return };
    let case = Case::load(
        &dir,
        "trustee/snp_test-vlek-report.bin",
        "trustee/snp_test-vcek.der",
        None,
        NOW_2025,
    );
    let v = case.verify(&lenient());
    assert!(!v.verified);
    assert!(!check_ok(&v, "vek_type"), "{:#?}", v.checks);
}

// ---------------------------------------------------------------- policy

#[test]
fn expected_values_are_compared() {
    let Some(dir) = vectors() else { return };
    let case = Case::load(
        &dir,
        "trustee/snp_test-report.bin",
        "trustee/snp_test-vcek.der",
        None,
        NOW_2023,
    );
    let raw = case.raw_report();
    let report = parse_report(&raw).expect("parses");
    let right = SnpPolicy {
        expected_measurement: Some(report.measurement),
        expected_report_data: Some(report.report_data),
        expected_host_data: Some(report.host_data),
        ..SnpPolicy::default()
    };
    let v = case.verify(&right);
    assert!(v.verified, "{:#?}", v.checks);
    assert_eq!(v.measurement, hex::encode(report.measurement));
    for name in ["measurement", "report_data", "host_data"] {
        assert!(check_ok(&v, name));
    }
    let mut m = report.measurement;
    m[0] ^= 1;
    let mut rd = report.report_data;
    rd[63] ^= 1;
    let mut hd = report.host_data;
    hd[5] ^= 1;
    let wrong = SnpPolicy {
        expected_measurement: Some(m),
        expected_report_data: Some(rd),
        expected_host_data: Some(hd),
        ..SnpPolicy::default()
    };
    let v = case.verify(&wrong);
    assert!(!v.verified);
    for name in ["measurement", "report_data", "host_data"] {
        assert!(!check_ok(&v, name), "{name}");
    }
    assert!(
        check_ok(&v, "report_signature"),
        "the evidence itself is fine"
    );
}

#[test]
fn debug_and_migration_agent_bits_fail_unless_allowed() {
    let Some(dir) = vectors() else { return };
    let case = Case::load(
        &dir,
        "trustee/snp_test-report.bin",
        "trustee/snp_test-vcek.der",
        None,
        NOW_2023,
    );
    let mut edited = case.raw_report();
    edited[POLICY_OFFSET + 2] |= 1 << (POLICY_DEBUG_BIT - 16);
    edited[POLICY_OFFSET + 2] |= 1 << (POLICY_MIGRATE_MA_BIT - 16);
    let evidence = SnpEvidence {
        report: &edited,
        ..case.evidence()
    };
    let v = verify(&evidence, &SnpPolicy::default(), case.now);
    assert!(!v.verified);
    assert!(!check_ok(&v, "debug"));
    assert!(!check_ok(&v, "migration_agent"));
    assert!(
        !check_ok(&v, "report_signature"),
        "editing the policy breaks the signature"
    );
    let allowing = SnpPolicy {
        allow_debug: true,
        allow_migration_agent: true,
        ..SnpPolicy::default()
    };
    let v = verify(&evidence, &allowing, case.now);
    assert!(check_ok(&v, "debug") && check_ok(&v, "migration_agent"));
}

#[test]
fn minimum_tcb_is_enforced_per_component() {
    let Some(dir) = vectors() else { return };
    let case = Case::load(
        &dir,
        "trustee/snp_test-report.bin",
        "trustee/snp_test-vcek.der",
        None,
        NOW_2023,
    );
    let reported = TcbLevels {
        bootloader: 3,
        tee: 0,
        snp: 8,
        microcode: 115,
        fmc: None,
    };
    let v = case.verify(&SnpPolicy {
        min_tcb: Some(reported),
        ..SnpPolicy::default()
    });
    assert!(
        v.verified,
        "equal to the minimum is enough: {:#?}",
        v.checks
    );
    let above = TcbLevels { snp: 9, ..reported };
    let v = case.verify(&SnpPolicy {
        min_tcb: Some(above),
        ..SnpPolicy::default()
    });
    assert!(!v.verified);
    assert!(!check_ok(&v, "min_tcb"));
    assert!(
        detail(&v, "min_tcb").contains("snp 8 < 9"),
        "{}",
        detail(&v, "min_tcb")
    );
}

#[test]
fn the_verification_serializes_with_its_checks() {
    let Some(dir) = vectors() else { return };
    let case = Case::load(
        &dir,
        "trustee/snp_test-report.bin",
        "trustee/snp_test-vcek.der",
        None,
        NOW_2023,
    );
    let json = serde_json::to_value(case.verify(&SnpPolicy::default())).expect("serializes");
    assert_eq!(json["platform"], "sev-snp");
    assert_eq!(json["generation"], "milan");
    assert_eq!(json["signing_key"], "vcek");
    assert_eq!(json["reported_tcb"]["microcode"], 115);
    assert!(json["checks"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["name"] == "report_signature")));
}

// ---------------------------------------------------------------- fetching

/// Answers one URL with a body, everything else with 404; counts calls.
struct FakeKds {
    url: String,
    body: Vec<u8>,
    calls: Cell<u32>,
}

impl Fetcher for FakeKds {
    fn get(&self, url: &str) -> Result<FetchResponse, FetchError> {
        self.calls.set(self.calls.get() + 1);
        let status = if url == self.url { 200 } else { 404 };
        let body = if status == 200 {
            self.body.clone()
        } else {
            Vec::new()
        };
        Ok(FetchResponse {
            status,
            headers: Vec::new(),
            body,
        })
    }
}

#[test]
fn a_missing_vcek_is_fetched_from_the_kds_and_cached() {
    let Some(dir) = vectors() else { return };
    let case = Case::load(
        &dir,
        "trustee/snp_test-report.bin",
        "trustee/snp_test-vcek.der",
        None,
        NOW_2023,
    );
    let report = parse_report(&case.raw_report()).expect("parses");
    let url = kds_vcek_url(
        Generation::Milan,
        &report.chip_id,
        &report.reported_tcb(Generation::Milan),
    );
    assert!(url.starts_with("https://kdsintf.amd.com/vcek/v1/Milan/c38427a30d4c7af9"));
    assert!(
        url.ends_with("?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115"),
        "{url}"
    );
    let kds = FakeKds {
        url,
        body: case.vek.clone(),
        calls: Cell::new(0),
    };
    let cache_dir = std::env::temp_dir().join(format!("dc-snp-kds-cache-{}", std::process::id()));
    let cache = FileCache::new(&cache_dir);
    let fetcher = CachingFetcher {
        cache: &cache,
        inner: &kds,
    };
    let evidence = SnpEvidence {
        report: &case.report,
        endorsement_key: None,
        chain: None,
    };
    for _ in 0..2 {
        let v = verify_with_fetch(&evidence, &SnpPolicy::default(), NOW_2023, &fetcher);
        assert!(v.verified, "{:#?}", v.checks);
        assert!(check_ok(&v, "vek_fetch"));
    }
    assert_eq!(
        kds.calls.get(),
        1,
        "the second verification is served from the cache"
    );
    std::fs::remove_dir_all(cache_dir).ok();

    let offline = verify_with_fetch(&evidence, &SnpPolicy::default(), NOW_2023, &NoFetch);
    assert!(!offline.verified);
    assert!(!check_ok(&offline, "vek_fetch"));
    assert!(!check_ok(&offline, "report_signature"));
    assert!(
        check_ok(&offline, "debug"),
        "policy checks still run without a key"
    );
    let no_key = verify(&evidence, &SnpPolicy::default(), NOW_2023);
    assert!(!check_ok(&no_key, "endorsement_key"));
}

#[test]
fn a_v3_genoa_report_fetches_from_the_genoa_path_and_vleks_are_not_fetched() {
    let Some(dir) = vectors() else { return };
    let genoa = Case::load(
        &dir,
        "trustee/DERIVED_az-genoa_snp-report.bin",
        "trustee/DERIVED_az-genoa_vcek.pem",
        None,
        NOW_2025,
    );
    let report = parse_report(&genoa.raw_report()).expect("parses");
    let url = kds_vcek_url(
        Generation::Genoa,
        &report.chip_id,
        &report.reported_tcb(Generation::Genoa),
    );
    assert!(url.contains("/vcek/v1/Genoa/"));
    let kds = FakeKds {
        url,
        body: genoa.vek.clone(),
        calls: Cell::new(0),
    };
    let evidence = SnpEvidence {
        report: &genoa.report,
        endorsement_key: None,
        chain: None,
    };
    let v = verify_with_fetch(&evidence, &SnpPolicy::default(), NOW_2025, &kds);
    assert!(v.verified, "{:#?}", v.checks);
    assert_eq!(
        kds.calls.get(),
        1,
        "the CPUID fields name the generation: one request"
    );

    let vlek = read(&dir, "trustee/snp_test-vlek-report.bin");
    let v = verify_with_fetch(
        &SnpEvidence {
            report: &vlek,
            endorsement_key: None,
            chain: None,
        },
        &lenient(),
        NOW_2025,
        &kds,
    );
    assert!(!check_ok(&v, "vek_fetch"));
    assert!(detail(&v, "vek_fetch").contains("VCEK"));
}

// ---------------------------------------------------------------- never panic

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn real_case() -> Option<Case> {
        let dir = dc_attestation_common::vectors_dir()?;
        Some(Case::load(
            &dir,
            "trustee/snp_test-report.bin",
            "trustee/snp_test-vcek.der",
            None,
            NOW_2023,
        ))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            dc_attestation_snp::fuzz_report(&data);
        }

        #[test]
        fn single_byte_mutations_verify_only_outside_the_signed_range(offset in 0..REPORT_LEN, xor in 1u8..=255) {
            let Some(case) = real_case() else { return Ok(()) };
            let mut report = case.raw_report();
            report[offset] ^= xor;
            let v = verify(&SnpEvidence { report: &report, ..case.evidence() }, &SnpPolicy::default(), case.now);
            // Bytes before 0x330 are signed or are the signature itself.
            prop_assert_eq!(v.verified, offset >= SIG_RESERVED_OFFSET, "offset {:#x}", offset);
        }

        #[test]
        fn mutated_vceks_never_panic_and_never_verify(offset in 0usize..1360, xor in 1u8..=255) {
            let Some(case) = real_case() else { return Ok(()) };
            let mut vek = case.vek.clone();
            vek[offset] ^= xor;
            let v = verify(&SnpEvidence { endorsement_key: Some(&vek), ..case.evidence() }, &SnpPolicy::default(), case.now);
            // trustee/snp_test-vcek.der: the ASK-signed TBSCertificate spans bytes 4..771.
            if (4..771).contains(&offset) {
                prop_assert!(!v.verified, "offset {}", offset);
            }
        }
    }
}
