use super::*;
use dc_attestation_common::vectors_dir;
use proptest::prelude::*;

fn vector(rel: &str) -> Option<Vec<u8>> {
    let dir = vectors_dir()?;
    Some(std::fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("vector {rel} unreadable: {e}")))
}

macro_rules! need_vector {
    ($rel:expr) => {
        match vector($rel) {
            Some(bytes) => bytes,
            None => {
                eprintln!("skipped: no vectors (set DC_VECTORS)");
                return;
            }
        }
    };
}

/// The JSON document of dstack's `measurement.snp.cbor`, built at test time
/// through the importer (the vector's values are not copied into the source).
fn dstack_document(cbor: &[u8]) -> serde_json::Value {
    let input = SnpMeasureInput::from_dstack_cbor(cbor, 2, "EPYC-v4", 0x1)
        .expect("dstack document imports");
    serde_json::from_str(&input.to_json()).expect("document is JSON")
}

#[test]
fn dstack_vector_reproduces_hardware_measurement() {
    let cbor = need_vector!("dstack/DERIVED_measurement.snp.cbor");
    let report = need_vector!("dstack/DERIVED_sev_snp_report.bin");
    let doc = dstack_document(&cbor);
    let input = SnpMeasureInput::from_json(doc.to_string().as_bytes()).expect("document valid");
    let digest = launch_digest(&input).expect("digest");
    assert_eq!(
        hex::encode(digest),
        hex::encode(&report[0x90..0xC0]),
        "MEASUREMENT of the signed report"
    );

    // The document survives a round trip through its own serialization.
    let again = SnpMeasureInput::from_json(input.to_json().as_bytes()).expect("round trip");
    assert_eq!(again, input);
}

#[test]
fn dstack_vector_any_changed_input_changes_digest() {
    let cbor = need_vector!("dstack/DERIVED_measurement.snp.cbor");
    let report = need_vector!("dstack/DERIVED_sev_snp_report.bin");
    let base =
        SnpMeasureInput::from_json(dstack_document(&cbor).to_string().as_bytes()).expect("valid");
    let measured = &report[0x90..0xC0];
    type Mutation = Box<dyn Fn(&mut SnpMeasureInput)>;
    let mutations: Vec<(&str, Mutation)> = vec![
        ("ovmf_hash", Box::new(|i| i.ovmf_hash[0] ^= 1)),
        ("kernel_sha256", Box::new(|i| i.kernel_sha256[31] ^= 1)),
        ("initrd_sha256", Box::new(|i| i.initrd_sha256[0] ^= 0x80)),
        ("cmdline", Box::new(|i| i.cmdline.push_str(" single"))),
        ("cmdline whitespace", Box::new(|i| i.cmdline.push(' '))),
        ("vcpus", Box::new(|i| i.vcpus = 4)),
        ("vcpu_type", Box::new(|i| i.vcpu_type = "EPYC-Milan".into())),
        ("guest_features", Box::new(|i| i.guest_features = 0x21)),
        ("reset_eip", Box::new(|i| i.reset_eip += 0x10)),
        (
            "sev_hashes_table_gpa",
            Box::new(|i| i.sev_hashes_table_gpa += 0x10),
        ),
        (
            "section gpa",
            Box::new(|i| i.ovmf_sections[0].gpa += 0x1000),
        ),
        ("section order", Box::new(|i| i.ovmf_sections.swap(0, 1))),
        (
            "section type",
            Box::new(|i| i.ovmf_sections[2].section_type = SectionType::SnpSecMem),
        ),
    ];
    for (name, mutate) in mutations {
        let mut changed = base.clone();
        mutate(&mut changed);
        let digest = launch_digest(&changed).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_ne!(
            &digest[..],
            measured,
            "changing {name} must change the digest"
        );
    }
}

#[test]
fn document_rejects_bad_shapes_with_clear_errors() {
    let cbor = need_vector!("dstack/DERIVED_measurement.snp.cbor");
    let good = dstack_document(&cbor);
    let with = |k: &str, v: serde_json::Value| {
        let mut d = good.clone();
        d[k] = v;
        SnpMeasureInput::from_json(d.to_string().as_bytes())
    };
    assert!(
        matches!(with("surprise", 1.into()), Err(MeasureError::Document(m)) if m.contains("unknown field"))
    );
    assert!(matches!(
        with("vcpus", 0.into()),
        Err(MeasureError::InvalidField { field: "vcpus", .. })
    ));
    assert!(matches!(
        with("vcpus", 513.into()),
        Err(MeasureError::InvalidField { field: "vcpus", .. })
    ));
    assert!(matches!(
        with("vcpu_type", "Skylake".into()),
        Err(MeasureError::UnknownVcpuType { .. })
    ));
    assert!(
        matches!(with("vmm", "ec2".into()), Err(MeasureError::UnsupportedVmm(v)) if v == "ec2")
    );
    assert!(matches!(
        with("guest_features", 0x20.into()),
        Err(MeasureError::InvalidField {
            field: "guest_features",
            ..
        })
    ));
    assert!(
        matches!(with("ovmf_hash", "00".into()), Err(MeasureError::Document(m)) if m.contains("96 hex digits"))
    );
    assert!(matches!(
        with("cmdline", "x".repeat(MAX_CMDLINE_BYTES + 1).into()),
        Err(MeasureError::TooLarge { .. })
    ));
    assert!(matches!(
        with("sev_hashes_table_gpa", "0x0".into()),
        Err(MeasureError::InvalidField {
            field: "sev_hashes_table_gpa",
            ..
        })
    ));
    assert!(matches!(
        with("reset_eip", "0x100000000".into()),
        Err(MeasureError::Document(_))
    ));
    let many: Vec<_> = (0..MAX_SECTIONS + 1)
        .map(|_| good["ovmf_sections"][0].clone())
        .collect();
    assert!(
        matches!(with("ovmf_sections", many.into()), Err(MeasureError::Document(m)) if m.contains("at most 64"))
    );
    let no_hashes: Vec<_> = good["ovmf_sections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["type"] != "snp_kernel_hashes")
        .cloned()
        .collect();
    assert_eq!(
        with("ovmf_sections", no_hashes.into()),
        Err(MeasureError::NoKernelHashesSection)
    );
}

// Expected values below are virtee/sev-snp-measure's own test expectations
// (tests/test_guest.py) for its OVMF fixtures, which the vectors carry. Its
// "/dev/null" kernel and initrd are empty files.
const AMDSEV_OVMF_HASH: &str =
    "086e2e9149ebf45abdc3445fba5b2da8270bdbb04094d7a2c37faaa4b24af3aa16aff8c374c2a55c467a50da6d466b74";

#[test]
fn amdsev_fixture_matches_sev_snp_measure() {
    let ovmf = need_vector!("sev-snp-measure/ovmf_AmdSev_suffix.bin");
    assert_eq!(hex::encode(ovmf_hash(&ovmf).unwrap()), AMDSEV_OVMF_HASH);
    let cases = [
        ("", 1, 0x21, "329c8ce0972ae52343b64d34a434a86f245dfd74f5ed7aae15d22efc78fb9683632b9b50e4e1d7fa41179ef98a7ef198"),
        ("", 1, 0x1, "ddc5224521617a536ee7ce9dd6224d1b58a8d4fda1c741f3ac99fc4bfa04ba6e9fc98646d4a07a9079397fa3852819b5"),
        ("console=ttyS0 loglevel=7", 1, 0x21, "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977"),
        ("console=ttyS0 loglevel=7", 1, 0x1, "6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362f390ef83a92046c042e706363b4b08fa"),
        ("", 4, 0x21, "4953b1fb416fa874980e8442b3706d345926d5f38879134e00813c5d7abcbe78eafe7b422907be0b4698e2414a631942"),
        ("", 4, 0x1, "5061fffb019493a903613d56d54b94912a1a2f9e4502385f5c194616753720a92441310ba6c4933de877c36e23046ad5"),
    ];
    for (cmdline, vcpus, features, expected) in cases {
        let input =
            SnpMeasureInput::from_files(&ovmf, b"", b"", cmdline, vcpus, "EPYC-v4", features)
                .expect("from_files");
        assert_eq!(
            hex::encode(launch_digest(&input).unwrap()),
            expected,
            "cmdline {cmdline:?} vcpus {vcpus} features {features:#x}"
        );
    }
    // Without a kernel the hashes page is measured as zero pages.
    let input = SnpMeasureInput::from_files(&ovmf, b"", b"", "", 1, "EPYC-v4", 0x21).unwrap();
    assert_eq!(
        hex::encode(fold(&input, None)),
        "e1e1ca029dd7973ab9513295be68198472dcd4fc834bd9af9b63f6e8a1674dbf281a9278a4a2ebe0eed9f22adbcd0e2b"
    );
}

#[test]
fn amdsev_fixture_footer_fields() {
    let ovmf = need_vector!("sev-snp-measure/ovmf_AmdSev_suffix.bin");
    let info = ovmf_info(&ovmf).expect("footer parses");
    assert_eq!(info.load_gpa, 0xffff_f000);
    assert!(info.sev_hashes_table_gpa.is_some_and(|g| g != 0));
    assert!(info.reset_eip.is_some_and(|e| e != 0));
    let kernel_pages = info
        .sections
        .iter()
        .filter(|s| s.section_type == SectionType::SnpKernelHashes)
        .count();
    assert_eq!(
        kernel_pages, 1,
        "AmdSev build carries the kernel hashes page: {info:?}"
    );
    eprintln!("AmdSev suffix: {info:?}");
}

#[test]
fn ovmfx64_fixture_has_no_kernel_hashes_and_matches_sev_snp_measure() {
    let ovmf = need_vector!("sev-snp-measure/ovmf_OvmfX64_suffix.bin");
    let info = ovmf_info(&ovmf).expect("footer parses");
    eprintln!("OvmfX64 suffix: {info:?}");
    assert!(info
        .sections
        .iter()
        .all(|s| s.section_type != SectionType::SnpKernelHashes));
    let err = SnpMeasureInput::from_files(&ovmf, b"", b"", "", 1, "EPYC-v4", 0x21).unwrap_err();
    assert_eq!(err, MeasureError::NoKernelHashesSection);
    // No-kernel digests of sev-snp-measure check the section walk of this image.
    for (features, expected) in [
        (0x21, "28797ae0afaba4005a81e629acebfb59e6687949d6be44007cd5506823b0dd66f146aaae26ff291eed7b493d8a64c385"),
        (0x1, "da0296de8193586a5512078dcd719eccecbd87e2b825ad4148c44f665dc87df21e5b49e21523a9ad993afdb6a30b4005"),
    ] {
        let input = SnpMeasureInput {
            ovmf_hash: ovmf_hash(&ovmf).unwrap(),
            ovmf_sections: info.sections.clone(),
            sev_hashes_table_gpa: 0,
            reset_eip: info.reset_eip.expect("reset block"),
            kernel_sha256: [0; 32],
            initrd_sha256: [0; 32],
            cmdline: String::new(),
            vcpus: 1,
            vcpu_type: "EPYC-v4".into(),
            guest_features: features,
            vmm: "qemu".into(),
        };
        assert_eq!(hex::encode(fold(&input, None)), expected);
    }
}

#[test]
fn vcpu_signatures_match_amd_cpuid_encoding() {
    assert_eq!(vcpu_signature("EPYC-v4").unwrap(), 0x0080_0f12);
    assert_eq!(vcpu_signature("epyc-milan").unwrap(), 0x00a0_0f11);
    assert_eq!(vcpu_signature("EPYC-Genoa").unwrap(), 0x00a1_0f10);
    assert!(vcpu_signature("host").is_err());
}

#[test]
fn numbers_accept_integers_and_hex_strings() {
    let s: OvmfSection =
        serde_json::from_str(r#"{"gpa":"0x800000","size":4096,"type":"cpuid"}"#).unwrap();
    assert_eq!(
        (s.gpa, s.size, s.section_type),
        (0x80_0000, 0x1000, SectionType::Cpuid)
    );
    assert!(
        serde_json::from_str::<OvmfSection>(r#"{"gpa":"0x","size":1,"type":"cpuid"}"#).is_err()
    );
    assert!(serde_json::from_str::<OvmfSection>(r#"{"gpa":-1,"size":1,"type":"cpuid"}"#).is_err());
    assert!(serde_json::from_str::<OvmfSection>(r#"{"gpa":1,"size":1,"type":"bogus"}"#).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..8192)) {
        let _ = SnpMeasureInput::from_json(&data);
        let _ = ovmf_info(&data);
        crate::fuzz_snp_input(&data);
    }

    #[test]
    fn corrupted_fixture_tails_never_panic(pos in 0usize..4096, byte in any::<u8>(), cut in 0usize..4096) {
        if let Some(dir) = vectors_dir() {
            let mut ovmf = std::fs::read(dir.join("sev-snp-measure/ovmf_AmdSev_suffix.bin")).unwrap();
            ovmf[pos] = byte;
            let _ = ovmf_info(&ovmf);
            let _ = ovmf_info(&ovmf[cut..]);
        }
    }
}
