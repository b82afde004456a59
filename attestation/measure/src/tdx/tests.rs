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

// TDX quote v4: 48-byte header, then the TD report body.
const QUOTE_MRTD: usize = 48 + 136;
const QUOTE_RTMR1: usize = 48 + 376;
const QUOTE_RTMR2: usize = 48 + 424;

fn arr48(b: &[u8]) -> [u8; 48] {
    b.try_into().expect("48 bytes")
}

/// (imr, digest) of each event in a dstack fixture's event log.
fn event_digests(fixture: &serde_json::Value) -> Vec<(u64, [u8; 48])> {
    let log: serde_json::Value =
        serde_json::from_str(fixture["event_log"].as_str().expect("event_log string"))
            .expect("event log JSON");
    log.as_array()
        .expect("event array")
        .iter()
        .filter(|e| e["imr"].as_u64() != Some(3)) // RTMR3 is runtime, out of scope
        .map(|e| {
            (
                e["imr"].as_u64().unwrap(),
                arr48(&hex::decode(e["digest"].as_str().unwrap()).unwrap()),
            )
        })
        .collect()
}

/// Real quotes from dstack CVMs: the RTMR1/RTMR2 values follow from their
/// event logs by this module's folding and fixed RTMR1 events.
#[test]
fn real_event_logs_fold_to_quoted_rtmrs() {
    for (json, quote) in [
        (
            "dstack/quote-report.json",
            "dstack/DERIVED_quote-report.quote.bin",
        ),
        (
            "dstack/tdx-lite-getquote.json",
            "dstack/DERIVED_tdx-lite-getquote.quote.bin",
        ),
    ] {
        let fixture: serde_json::Value =
            serde_json::from_slice(&need_vector!(json)).expect("fixture JSON");
        let quote = need_vector!(quote);
        let events = event_digests(&fixture);
        let rtmr1: Vec<[u8; 48]> = events
            .iter()
            .filter(|(imr, _)| *imr == 1)
            .map(|(_, d)| *d)
            .collect();
        let rtmr2: Vec<[u8; 48]> = events
            .iter()
            .filter(|(imr, _)| *imr == 2)
            .map(|(_, d)| *d)
            .collect();
        assert_eq!(
            rtmr_fold(&rtmr1),
            arr48(&quote[QUOTE_RTMR1..QUOTE_RTMR1 + 48]),
            "{json}: RTMR1"
        );
        assert_eq!(
            rtmr_fold(&rtmr2),
            arr48(&quote[QUOTE_RTMR2..QUOTE_RTMR2 + 48]),
            "{json}: RTMR2"
        );
        assert_eq!(rtmr1.len(), 5, "{json}: kernel + four OVMF events");
        assert_eq!(
            rtmr1_events(&rtmr1[0]),
            rtmr1[..],
            "{json}: fixed RTMR1 events and their order"
        );
        assert_eq!(
            rtmr1_from_kernel_authenticode(&rtmr1[0]),
            arr48(&quote[QUOTE_RTMR1..QUOTE_RTMR1 + 48])
        );
        assert_eq!(rtmr2.len(), 2, "{json}: load options and initrd");
    }
}

/// Minimal standard base64 decoder, for the fixture's CBOR field only.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(val).collect();
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// dstack's image measurement document for the tdx-lite quote carries the
/// kernel-Authenticode, command-line and initrd digests; RTMR1 and RTMR2
/// follow from them as this module folds them, and MRTD is the two-pass
/// value for that VM's QEMU 8.2.2.
#[test]
fn dstack_image_digests_give_quoted_rtmrs() {
    let fixture: serde_json::Value =
        serde_json::from_slice(&need_vector!("dstack/tdx-lite-getquote.json")).unwrap();
    let quote = need_vector!("dstack/DERIVED_tdx-lite-getquote.quote.bin");
    let vm_config: serde_json::Value =
        serde_json::from_str(fixture["vm_config"].as_str().unwrap()).unwrap();
    let cbor = base64_decode(
        vm_config["tdx_measurement"]["measurement"]
            .as_str()
            .unwrap(),
    );
    let doc: ciborium::Value = ciborium::from_reader(&cbor[..]).expect("CBOR");
    let field = |v: &ciborium::Value, k: &str| -> ciborium::Value {
        v.as_map()
            .unwrap()
            .iter()
            .find(|(key, _)| key.as_text() == Some(k))
            .unwrap_or_else(|| panic!("no {k}"))
            .1
            .clone()
    };
    let bytes48 = |v: ciborium::Value| arr48(v.as_bytes().unwrap());
    let image = field(&doc, "image");
    let kernel = bytes48(field(&image, "kernel_authenticode"));
    let cmdline = bytes48(field(&image, "cmdline_sha384"));
    let initrd = bytes48(field(&image, "initrd_sha384"));
    assert_eq!(
        rtmr1_from_kernel_authenticode(&kernel),
        arr48(&quote[QUOTE_RTMR1..QUOTE_RTMR1 + 48])
    );
    assert_eq!(
        rtmr_fold(&[cmdline, initrd]),
        arr48(&quote[QUOTE_RTMR2..QUOTE_RTMR2 + 48])
    );
    let mrtd = field(&field(&doc, "tdvf"), "mrtd");
    assert_eq!(
        bytes48(field(&mrtd, "two_pass")),
        arr48(&quote[QUOTE_MRTD..QUOTE_MRTD + 48])
    );
    assert_ne!(
        bytes48(field(&mrtd, "single_pass")),
        arr48(&quote[QUOTE_MRTD..QUOTE_MRTD + 48])
    );
}

/// A synthetic TDVF: 64 KiB image mapped below 4 GiB, with a footer table
/// pointing at a descriptor (at 0x4000, in the gap between CFV and BFV) of
/// BFV (extended), CFV (added only), TD_HOB and TempMem (zero pages) and a
/// PAGE_AUG PermMem section.
fn synthetic_tdvf() -> Vec<u8> {
    let mut fw: Vec<u8> = (0..0x10000).map(|i| (i * 7 % 251) as u8).collect();
    write_tdvf_metadata(&mut fw, 0x4000, &synthetic_sections()).unwrap();
    fw
}

fn synthetic_sections() -> [TdvfSection; 5] {
    let s =
        |data_offset, raw_data_size, memory_address, memory_data_size, section_type, attributes| {
            TdvfSection {
                data_offset,
                raw_data_size,
                memory_address,
                memory_data_size,
                section_type,
                attributes,
            }
        };
    [
        s(0x8000, 0x8000, 0xffff_8000, 0x8000, 0, ATTRIBUTE_MR_EXTEND), // BFV
        s(0x0000, 0x4000, 0xffff_0000, 0x4000, 1, 0),                   // CFV
        s(0, 0, 0x80_9000, 0x2000, 2, 0),                               // TD_HOB
        s(0, 0, 0x80_0000, 0x6000, 3, 0),                               // TempMem
        s(0, 0, 0x1_0000_0000, 0x10_0000, 4, ATTRIBUTE_PAGE_AUG),       // PermMem
    ]
}

/// Independent, deliberately naive MRTD: writes every record the TDX module
/// would hash into one buffer, then hashes it once. It takes the section list
/// as literals (not from the parser) so a parsing slip shows as a mismatch.
fn naive_mrtd(fw: &[u8], two_pass: bool) -> [u8; 48] {
    let mut stream = Vec::new();
    let add = |stream: &mut Vec<u8>, gpa: u64| {
        let mut r = b"MEM.PAGE.ADD".to_vec();
        r.resize(16, 0);
        r.extend_from_slice(&gpa.to_le_bytes());
        r.resize(128, 0);
        stream.extend_from_slice(&r);
    };
    let extend = |stream: &mut Vec<u8>, gpa: u64, offset: usize| {
        for c in 0..16u64 {
            let mut r = b"MR.EXTEND".to_vec();
            r.resize(16, 0);
            r.extend_from_slice(&(gpa + c * 256).to_le_bytes());
            r.resize(128, 0);
            stream.extend_from_slice(&r);
            let o = offset + c as usize * 256;
            stream.extend_from_slice(&fw[o..o + 256]);
        }
    };
    // BFV: 8 pages at 0xffff8000 from offset 0x8000, extended.
    if two_pass {
        (0..8u64).for_each(|p| add(&mut stream, 0xffff_8000 + p * 4096));
        (0..8u64).for_each(|p| {
            extend(
                &mut stream,
                0xffff_8000 + p * 4096,
                0x8000 + p as usize * 4096,
            )
        });
    } else {
        for p in 0..8u64 {
            add(&mut stream, 0xffff_8000 + p * 4096);
            extend(
                &mut stream,
                0xffff_8000 + p * 4096,
                0x8000 + p as usize * 4096,
            );
        }
    }
    (0..4u64).for_each(|p| add(&mut stream, 0xffff_0000 + p * 4096)); // CFV
    (0..2u64).for_each(|p| add(&mut stream, 0x80_9000 + p * 4096)); // TD_HOB
    (0..6u64).for_each(|p| add(&mut stream, 0x80_0000 + p * 4096)); // TempMem
    Sha384::digest(&stream).into()
}

#[test]
fn synthetic_tdvf_mrtd_matches_naive_reimplementation() {
    let fw = synthetic_tdvf();
    let sections = tdvf_sections(&fw).expect("descriptor parses");
    assert_eq!(
        sections
            .iter()
            .map(TdvfSection::type_name)
            .collect::<Vec<_>>(),
        ["BFV", "CFV", "TD_HOB", "TempMem", "PermMem"]
    );
    assert_eq!(mrtd(&fw).unwrap(), naive_mrtd(&fw, false));
    assert_eq!(
        mrtd_with_order(&fw, PageAddOrder::TwoPass).unwrap(),
        naive_mrtd(&fw, true)
    );
    assert_ne!(naive_mrtd(&fw, false), naive_mrtd(&fw, true));
}

#[test]
fn written_metadata_reads_back() {
    let fw = synthetic_tdvf();
    assert_eq!(tdvf_sections(&fw).unwrap(), synthetic_sections());
    // Bytes outside the descriptor and the footer table are untouched.
    assert_eq!(fw[0x3fff], (0x3fff * 7 % 251) as u8);
    assert_eq!(
        fw[0x4000 + 16 + 32 * 5],
        ((0x4000 + 16 + 32 * 5) * 7 % 251) as u8
    );
    // A descriptor that would run into the footer table is refused.
    let mut f = vec![0u8; 0x10000];
    let err = write_tdvf_metadata(&mut f, 0x10000 - 100, &synthetic_sections()).unwrap_err();
    assert!(matches!(
        err,
        MeasureError::Firmware {
            what: "TDVF descriptor",
            ..
        }
    ));
    assert!(f.iter().all(|&b| b == 0), "nothing written on refusal");
    assert!(write_tdvf_metadata(&mut f, 0x10001, &[]).is_err());
}

#[test]
fn mrtd_covers_extended_bytes_only() {
    let fw = synthetic_tdvf();
    let base = mrtd(&fw).unwrap();
    let mut bfv = fw.clone();
    bfv[0x9000] ^= 1;
    assert_ne!(
        mrtd(&bfv).unwrap(),
        base,
        "BFV content is extended into MRTD"
    );
    let mut cfv = fw.clone();
    cfv[0x100] ^= 1;
    assert_eq!(
        mrtd(&cfv).unwrap(),
        base,
        "CFV pages are added, not extended"
    );
}

#[test]
fn malformed_tdvf_is_rejected_with_reason() {
    let fw = synthetic_tdvf();
    let with = |at: usize, bytes: &[u8]| {
        let mut f = fw.clone();
        f[at..at + bytes.len()].copy_from_slice(bytes);
        tdvf_sections(&f)
    };
    assert!(matches!(
        with(0x4000, b"XDVF"),
        Err(MeasureError::Firmware {
            what: "TDVF descriptor signature",
            ..
        })
    ));
    assert!(matches!(
        with(0x4008, &2u32.to_le_bytes()),
        Err(MeasureError::Firmware {
            what: "TDVF descriptor version",
            ..
        })
    ));
    assert!(matches!(
        with(0x400c, &1000u32.to_le_bytes()),
        Err(MeasureError::TooLarge { .. })
    ));
    // BFV address not page-aligned.
    assert!(matches!(
        with(0x4010 + 8, &0xffff_8010u64.to_le_bytes()),
        Err(MeasureError::Firmware {
            what: "TDVF section address",
            ..
        })
    ));
    // BFV extended beyond the image.
    assert!(matches!(
        with(0x4010 + 16, &0x10000u64.to_le_bytes()),
        Err(MeasureError::Firmware {
            what: "TDVF MR_EXTEND section",
            ..
        })
    ));
    // A huge PermMem that is added (not AUG) exceeds the page bound.
    let perm = 0x4010 + 32 * 4;
    let mut f = fw.clone();
    f[perm + 16..perm + 24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    f[perm + 28..perm + 32].copy_from_slice(&0u32.to_le_bytes());
    assert!(matches!(
        tdvf_sections(&f),
        Err(MeasureError::TooLarge { .. })
    ));
    assert!(matches!(
        tdvf_sections(&[0u8; 8192]),
        Err(MeasureError::Firmware {
            what: "footer table",
            ..
        })
    ));
}

/// A small PE32+ image: headers (0x400), two sections, optional trailing data.
fn synthetic_pe(trailing: &[u8]) -> Vec<u8> {
    let mut pe = vec![0u8; 0x400];
    pe[..2].copy_from_slice(b"MZ");
    pe[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    pe[0x80..0x84].copy_from_slice(b"PE\0\0");
    let coff = 0x84;
    pe[coff + 2..coff + 4].copy_from_slice(&2u16.to_le_bytes());
    pe[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
    let opt = coff + 20;
    pe[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
    pe[opt + 60..opt + 64].copy_from_slice(&0x400u32.to_le_bytes());
    pe[opt + 64..opt + 68].copy_from_slice(&0xdeadu32.to_le_bytes()); // checksum
    pe[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
    let table = opt + 240;
    for (i, (ptr, size)) in [(0x600u32, 0x200u32), (0x400, 0x200)].iter().enumerate() {
        let at = table + 40 * i;
        pe[at + 16..at + 20].copy_from_slice(&size.to_le_bytes());
        pe[at + 20..at + 24].copy_from_slice(&ptr.to_le_bytes());
    }
    pe.extend((0..0x400).map(|i| (i % 13) as u8));
    pe.extend_from_slice(trailing);
    pe
}

#[test]
fn authenticode_skips_checksum_and_certificate_table() {
    let pe = synthetic_pe(b"");
    let base = authenticode_sha384(&pe).unwrap();
    // Independent expectation: headers less checksum and cert directory, then
    // the sections in file order.
    let opt = 0x84 + 20;
    let cert_dir = opt + 112 + 32;
    let mut expected = Sha384::new();
    expected.update(&pe[..opt + 64]);
    expected.update(&pe[opt + 68..cert_dir]);
    expected.update(&pe[cert_dir + 8..0x400]);
    expected.update(&pe[0x400..0x800]);
    assert_eq!(base, <[u8; 48]>::from(expected.finalize()));

    let mut other_checksum = pe.clone();
    other_checksum[opt + 64] ^= 0xff;
    assert_eq!(authenticode_sha384(&other_checksum).unwrap(), base);

    // Appending a certificate table and pointing the directory at it: same hash.
    let mut signed = pe.clone();
    signed[cert_dir..cert_dir + 4].copy_from_slice(&0x800u32.to_le_bytes());
    signed[cert_dir + 4..cert_dir + 8].copy_from_slice(&0x10u32.to_le_bytes());
    signed.extend_from_slice(&[0xaa; 0x10]);
    assert_eq!(authenticode_sha384(&signed).unwrap(), base);

    // Section bytes and unsigned trailing bytes are covered.
    let mut changed = pe.clone();
    changed[0x700] ^= 1;
    assert_ne!(authenticode_sha384(&changed).unwrap(), base);
    assert_ne!(authenticode_sha384(&synthetic_pe(b"tail")).unwrap(), base);

    assert!(matches!(
        authenticode_sha384(&pe[..0x500]),
        Err(MeasureError::Pe {
            what: "section data",
            ..
        })
    ));
    assert!(matches!(
        authenticode_sha384(b"not a PE"),
        Err(MeasureError::Pe { .. })
    ));
}

/// Checks the Authenticode byte selection against a real signed image when
/// `DC_SIGNED_PE` names one (e.g. Debian's /boot/vmlinuz-*): the SHA-256 must
/// equal the digest inside the image's own Authenticode signature.
#[test]
fn authenticode_matches_a_real_signature_when_given() {
    let Some(path) = std::env::var_os("DC_SIGNED_PE") else {
        eprintln!("skipped: set DC_SIGNED_PE to a signed PE image to run");
        return;
    };
    let pe = std::fs::read(path).expect("DC_SIGNED_PE readable");
    // SpcIndirectDataContent: OID 1.3.6.1.4.1.311.2.1.4, then the DigestInfo
    // with SHA-256 (2.16.840.1.101.3.4.2.1) and a 32-byte OCTET STRING.
    let spc = [
        0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x01, 0x04,
    ];
    let sha256 = [
        0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20,
    ];
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    // The first SPC OID is the content type of the signed content, which
    // follows it; a later one sits in the signed attributes.
    let spc_at = find(&pe, &spc).expect("Authenticode signature present");
    let at = spc_at + find(&pe[spc_at..], &sha256).expect("SHA-256 DigestInfo") + sha256.len();
    assert_eq!(
        hex::encode(authenticode_sha256(&pe).unwrap()),
        hex::encode(&pe[at..at + 32])
    );
    let kernel_rtmr1 = rtmr1_direct_boot(&pe, 0x100_0000, 4 << 30);
    eprintln!(
        "authenticode sha256 matches the signature; rtmr1 (16 MiB initrd, 4 GiB) = {:?}",
        kernel_rtmr1.map(hex::encode)
    );
}

/// Prints the TDVF sections and MRTDs of a real firmware named by `DC_TDVF`.
#[test]
fn real_tdvf_parses_when_given() {
    let Some(path) = std::env::var_os("DC_TDVF") else {
        eprintln!("skipped: set DC_TDVF to a TDX-capable OVMF image to run");
        return;
    };
    let fw = std::fs::read(path).expect("DC_TDVF readable");
    for s in tdvf_sections(&fw).expect("TDVF descriptor") {
        eprintln!("{:<8} {s:x?}", s.type_name());
    }
    eprintln!("mrtd single-pass {}", hex::encode(mrtd(&fw).unwrap()));
    eprintln!(
        "mrtd two-pass    {}",
        hex::encode(mrtd_with_order(&fw, PageAddOrder::TwoPass).unwrap())
    );
}

#[test]
fn qemu_patch_writes_loader_fields_and_initrd_placement() {
    let mut kernel = vec![0u8; 0x1000];
    kernel[0x202..0x206].copy_from_slice(b"HdrS");
    kernel[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    kernel[0x211] = 0x01; // LOADED_HIGH
    kernel[0x236..0x238].copy_from_slice(&0x0040u16.to_le_bytes()); // can load above 4G
    let patched = qemu_patch_kernel(&kernel, 0x10_0000, 4 << 30).unwrap();
    assert_eq!(patched[0x210], 0xb0);
    assert_eq!(patched[0x211], 0x81);
    assert_eq!(
        u32::from_le_bytes(patched[0x228..0x22c].try_into().unwrap()),
        0x20000
    );
    assert_eq!(
        u32::from_le_bytes(patched[0x21c..0x220].try_into().unwrap()),
        0x10_0000
    );
    // 2 GiB low memory less the ACPI area, less the initrd, page-aligned down.
    let expected_addr = (0x8000_0000u32 - QEMU_ACPI_DATA_SIZE - 1 - 0x10_0000) & !4095;
    assert_eq!(
        u32::from_le_bytes(patched[0x218..0x21c].try_into().unwrap()),
        expected_addr
    );
    // q35 places the initrd identically with exactly 2 GiB and with ≥ 2.75 GiB.
    assert_eq!(
        qemu_patch_kernel(&kernel, 0x10_0000, 2 << 30).unwrap(),
        patched
    );
    assert_ne!(
        qemu_patch_kernel(&kernel, 0x10_0000, 1 << 30).unwrap(),
        patched
    );
    assert!(matches!(
        qemu_patch_kernel(&kernel[..0x800], 0, 1 << 30),
        Err(MeasureError::Kernel { .. })
    ));
    assert!(matches!(
        qemu_patch_kernel(&kernel, 0x7000_0000, 1 << 30),
        Err(MeasureError::Kernel {
            what: "initrd size",
            ..
        })
    ));
}

#[test]
fn load_options_are_utf16_with_initrd_suffix_and_nul() {
    let mut utf16 = Vec::new();
    for c in "console=ttyS0 initrd=initrd\0".encode_utf16() {
        utf16.extend_from_slice(&c.to_le_bytes());
    }
    assert_eq!(
        load_options_sha384("console=ttyS0", true),
        <[u8; 48]>::from(Sha384::digest(&utf16))
    );
    assert_ne!(
        load_options_sha384("console=ttyS0", false),
        load_options_sha384("console=ttyS0", true)
    );
    let initrd = b"initrd bytes";
    assert_eq!(
        rtmr2_direct_boot("console=ttyS0", initrd),
        rtmr_fold(&[
            load_options_sha384("console=ttyS0", true),
            Sha384::digest(initrd).into()
        ])
    );
    assert_ne!(
        rtmr2_direct_boot("console=ttyS0 ", initrd),
        rtmr2_direct_boot("console=ttyS0", initrd)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..8192)) {
        let _ = mrtd(&data);
        let _ = tdvf_sections(&data);
        let _ = authenticode_sha384(&data);
        let _ = qemu_patch_kernel(&data, data.len(), 1 << 30);
        crate::fuzz_tdvf(&data);
    }

    #[test]
    fn any_valid_descriptor_reads_back_as_written(
        raw in proptest::collection::vec(
            (0u32..0x8000, 0u64..0x10_0000, 0u64..16, 0u32..7, any::<bool>(), any::<bool>()),
            0..12,
        ),
    ) {
        // Page-aligned sections; extended ones take their data from the
        // first 32 KiB of a 64 KiB image and are at most 8 pages long.
        let sections: Vec<TdvfSection> = raw
            .iter()
            .map(|&(off, page, pages, ty, extend, aug)| {
                let size = if extend { pages.min(8) * 4096 } else { pages * 4096 };
                TdvfSection {
                    data_offset: if extend { off } else { 0 },
                    raw_data_size: if extend { size as u32 } else { 0 },
                    memory_address: page * 4096,
                    memory_data_size: size,
                    section_type: ty,
                    attributes: (u32::from(extend) * ATTRIBUTE_MR_EXTEND)
                        | (u32::from(aug) * ATTRIBUTE_PAGE_AUG),
                }
            })
            .collect();
        let mut fw = vec![0u8; 0x10000];
        write_tdvf_metadata(&mut fw, 0x8000, &sections).unwrap();
        prop_assert_eq!(tdvf_sections(&fw).unwrap(), sections);
    }

    #[test]
    fn corrupted_synthetic_images_never_panic(pos in 0usize..0x10000, byte in any::<u8>(), cut in 0usize..0x10000) {
        let mut fw = synthetic_tdvf();
        fw[pos] = byte;
        let _ = mrtd(&fw);
        let _ = mrtd(&fw[cut..]);
        let mut pe = synthetic_pe(b"tail");
        let p = pos % pe.len();
        pe[p] = byte;
        let _ = authenticode_sha384(&pe);
        let _ = authenticode_sha384(&pe[..cut.min(pe.len())]);
    }
}
