//! Verification of real TDX evidence from /work/shared/vectors (or $DC_VECTORS).
//! Each test that needs the vectors and finds none says so and returns.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use dc_attestation_common::fetch::{CachingFetcher, FetchError, FetchResponse, Fetcher, FileCache};
use dc_attestation_tdx::eventlog::{self, Event};
use dc_attestation_tdx::pcs::{self, percent_encode, CollateralUrls};
use dc_attestation_tdx::*;
use proptest::prelude::*;

/// 2025-07-04, inside the window of dcap-qvl/tdx_quote_collateral.json.
const NOW_TDX_QUOTE: u64 = 1_751_624_655;
/// 2026-03-01, inside the window of dcap-qvl/tdx_quote_outdated_collateral.json.
const NOW_OUTDATED_COLLATERAL: u64 = 1_772_323_200;
/// 2026-10-20, inside the window of dcap-qvl/tdx_quote_td15ex_collateral.json.
const NOW_TD15EX: u64 = 1_792_454_400;

fn read(rel: &str) -> Option<Vec<u8>> {
    let Some(dir) = dc_attestation_common::vectors_dir() else {
        eprintln!("skipped: no vectors (set DC_VECTORS)");
        return None;
    };
    match std::fs::read(dir.join(rel)) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("skipped: vector {rel} unreadable: {e}");
            None
        }
    }
}

macro_rules! vector {
    ($rel:expr) => {
        match read($rel) {
            Some(b) => b,
            None => return,
        }
    };
}

fn failed(v: &TdxVerification) -> Vec<String> {
    v.checks
        .failed()
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect()
}

fn ok(v: &TdxVerification, name: &str) -> bool {
    v.checks
        .get(name)
        .unwrap_or_else(|| panic!("no check {name}: {:?}", v.checks))
        .ok
}

/// The quote and JSON event log of a dstack fixture (`.quote` hex, `.event_log` JSON text).
fn dstack_fixture(rel: &str) -> Option<(Vec<u8>, String)> {
    let bytes = read(rel)?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("fixture is JSON");
    let quote = hex::decode(v["quote"].as_str()?).expect("quote hex");
    Some((quote, v["event_log"].as_str()?.to_string()))
}

#[test]
fn v4_quote_verifies_up_to_date_inside_the_collateral_window() {
    let quote = vector!("dcap-qvl/tdx_quote");
    let collateral = vector!("dcap-qvl/tdx_quote_collateral.json");
    let v = verify(
        &quote,
        &collateral,
        &TdxPolicy::default(),
        NOW_TDX_QUOTE,
        None,
    );
    assert!(v.verified, "{:?}", failed(&v));
    assert_eq!(v.quote_version, 4);
    assert_eq!(v.tee_type, "TDX");
    assert_eq!(v.tcb_status, "UpToDate");
    assert!(v.advisory_ids.is_empty());
    assert_eq!(v.fmspc.as_deref(), Some("B0C06F000000"));
    assert_eq!(v.rtmr.len(), 4);
    for name in [
        "quote_parse",
        "collateral_parse",
        "quote_signature",
        "tcb_status",
        "advisories",
        "debug",
    ] {
        assert!(ok(&v, name), "{name}");
    }
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["platform"], "tdx");
    assert!(json["checks"].as_array().unwrap().len() >= 6);
}

#[test]
fn now_outside_the_collateral_window_fails() {
    let quote = vector!("dcap-qvl/tdx_quote");
    let collateral = vector!("dcap-qvl/tdx_quote_collateral.json");
    // 2025-06-01 (before TCB info issue) and 2025-08-01 (after next update).
    for now in [1_748_736_000u64, 1_754_006_400] {
        let v = verify(&quote, &collateral, &TdxPolicy::default(), now, None);
        assert!(!v.verified, "now={now}");
        assert!(!ok(&v, "quote_signature"), "now={now}");
        assert!(v.checks.get("tcb_status").is_none());
    }
}

#[test]
fn flipped_signed_bytes_fail_the_signature() {
    let quote = vector!("dcap-qvl/tdx_quote");
    let collateral = vector!("dcap-qvl/tdx_quote_collateral.json");
    // Header QE SVN, MRTD, RTMR3, REPORTDATA: all inside the signed 632 bytes.
    for at in [8usize, 48 + 136, 48 + 472, 48 + 520, 48 + 583] {
        let mut q = quote.clone();
        q[at] ^= 0x01;
        let v = verify(&q, &collateral, &TdxPolicy::default(), NOW_TDX_QUOTE, None);
        assert!(!v.verified, "byte {at}");
        assert!(!ok(&v, "quote_signature"), "byte {at}");
        assert!(ok(&v, "quote_parse"), "byte {at}");
    }
}

#[test]
fn expected_measurements_are_compared_exactly() {
    let quote = vector!("dcap-qvl/tdx_quote");
    let collateral = vector!("dcap-qvl/tdx_quote_collateral.json");
    let s = parse_quote(&quote).unwrap();
    let exact = TdxPolicy {
        expected_mrtd: Some(s.mrtd),
        expected_rtmrs: s.rtmrs.map(Some),
        expected_mrconfigid: Some(s.mrconfigid),
        expected_report_data: Some(s.report_data),
        ..TdxPolicy::default()
    };
    let v = verify(&quote, &collateral, &exact, NOW_TDX_QUOTE, None);
    assert!(v.verified, "{:?}", failed(&v));
    for name in [
        "mrtd",
        "rtmr0",
        "rtmr1",
        "rtmr2",
        "rtmr3",
        "mrconfigid",
        "report_data",
    ] {
        assert!(ok(&v, name), "{name}");
    }

    let mut wrong_mrtd = exact.clone();
    wrong_mrtd.expected_mrtd.as_mut().unwrap()[0] ^= 1;
    let v = verify(&quote, &collateral, &wrong_mrtd, NOW_TDX_QUOTE, None);
    assert!(!v.verified);
    assert_eq!(failed(&v).len(), 1, "{:?}", failed(&v));
    assert!(!ok(&v, "mrtd"));

    let mut wrong_rd = exact.clone();
    wrong_rd.expected_report_data.as_mut().unwrap()[63] ^= 1;
    let v = verify(&quote, &collateral, &wrong_rd, NOW_TDX_QUOTE, None);
    assert!(!v.verified);
    assert!(!ok(&v, "report_data"));

    let mut wrong_rtmr2 = exact.clone();
    wrong_rtmr2.expected_rtmrs[2].as_mut().unwrap()[5] ^= 1;
    let v = verify(&quote, &collateral, &wrong_rtmr2, NOW_TDX_QUOTE, None);
    assert!(!ok(&v, "rtmr2"));
    assert!(ok(&v, "rtmr1"));

    let mut wrong_cfg = exact;
    wrong_cfg.expected_mrconfigid = Some([0xAA; 48]);
    assert!(!verify(&quote, &collateral, &wrong_cfg, NOW_TDX_QUOTE, None).verified);
}

#[test]
fn debug_bit_fails_unless_allowed() {
    let quote = vector!("dcap-qvl/tdx_quote");
    let collateral = vector!("dcap-qvl/tdx_quote_collateral.json");
    let mut q = quote.clone();
    q[48 + 120] |= 0x01; // TD attributes byte 0, bit 0 (DEBUG); breaks the signature too
    assert!(parse_quote(&q).unwrap().is_debug());
    let v = verify(&q, &collateral, &TdxPolicy::default(), NOW_TDX_QUOTE, None);
    assert!(!ok(&v, "debug"));
    let allow = TdxPolicy {
        allow_debug: true,
        ..TdxPolicy::default()
    };
    let v = verify(&q, &collateral, &allow, NOW_TDX_QUOTE, None);
    assert!(ok(&v, "debug"));
    assert!(!v.verified, "the flipped bit is signed");
}

#[test]
fn outdated_fixture_is_never_accepted() {
    let quote = vector!("dcap-qvl/tdx_quote_outdated");
    let collateral = vector!("dcap-qvl/tdx_quote_outdated_collateral.json");
    let v = verify(
        &quote,
        &collateral,
        &TdxPolicy::default(),
        NOW_OUTDATED_COLLATERAL,
        None,
    );
    assert!(!v.verified);
    assert_eq!(v.quote_version, 5);
    // dcap-qvl 0.7.1 finds no TCB level this platform meets in this TCB info
    // (its PCK TCB is below the lowest, OutOfDate, level).
    let detail = &v.checks.get("quote_signature").unwrap().detail;
    assert!(!ok(&v, "quote_signature"));
    assert!(detail.contains("TCB level"), "{detail}");
    // Even a policy that accepts every status cannot accept it.
    let lenient = TdxPolicy {
        accepted_tcb_statuses: [
            "UpToDate",
            "OutOfDate",
            "SWHardeningNeeded",
            "ConfigurationNeeded",
        ]
        .map(String::from)
        .to_vec(),
        ..TdxPolicy::default()
    };
    assert!(!verify(&quote, &collateral, &lenient, NOW_OUTDATED_COLLATERAL, None).verified);
}

#[test]
fn v5_td15ex_quote_verifies_with_and_without_the_collateral_pck_chain() {
    let quote = vector!("dcap-qvl/tdx_quote_td15ex");
    for rel in [
        "dcap-qvl/tdx_quote_td15ex_collateral.json",
        "dcap-qvl/DERIVED_td15ex_collateral_nopckchain.json",
    ] {
        let collateral = vector!(rel);
        let v = verify(&quote, &collateral, &TdxPolicy::default(), NOW_TD15EX, None);
        assert!(v.verified, "{rel}: {:?}", failed(&v));
        assert_eq!(v.quote_version, 5);
        assert_eq!(v.tcb_status, "UpToDate");
    }
    assert_eq!(
        parse_quote(&quote).unwrap().report_kind,
        TdReportKind::Td15Ex
    );
}

#[test]
fn go_tdx_guest_v5_sample_parses_and_verifies() {
    let quote = vector!("go-tdx-guest/quote_v5_sample.dat");
    let s = parse_quote(&quote).unwrap();
    assert_eq!(s.version, 5);
    assert_eq!(s.report_kind, TdReportKind::Td15);
    assert_eq!(s.cert_type, 5);
    assert!(s.mr_service_td.is_some());
    // Same FMSPC (90C06F000000) as the outdated fixture's collateral.
    let collateral = vector!("dcap-qvl/tdx_quote_outdated_collateral.json");
    let v = verify(
        &quote,
        &collateral,
        &TdxPolicy::default(),
        NOW_OUTDATED_COLLATERAL,
        None,
    );
    assert!(v.verified, "{:?}", failed(&v));
    assert_eq!(v.tcb_status, "UpToDate");
}

#[test]
fn sgx_quotes_are_rejected() {
    let quote = vector!("dcap-qvl/sgx_quote");
    let collateral = vector!("dcap-qvl/sgx_quote_collateral.json");
    assert!(matches!(
        parse_quote(&quote),
        Err(TdxError::NotTdx { tee_type: 0, .. })
    ));
    let v = verify(
        &quote,
        &collateral,
        &TdxPolicy::default(),
        NOW_TDX_QUOTE,
        None,
    );
    assert!(!v.verified);
    assert!(v.checks.get("quote_parse").unwrap().detail.contains("SGX"));
}

#[test]
fn truncated_oversized_and_padded_quotes() {
    let quote = vector!("dcap-qvl/tdx_quote");
    let collateral = vector!("dcap-qvl/tdx_quote_collateral.json");
    let len = parse_quote(&quote).unwrap().quote_len;
    for cut in (0..len).step_by(7).chain([len - 1]) {
        let err = parse_quote(&quote[..cut]).unwrap_err();
        assert!(
            matches!(err, TdxError::Truncated { .. }),
            "cut {cut}: {err}"
        );
        let v = verify(
            &quote[..cut],
            &collateral,
            &TdxPolicy::default(),
            NOW_TDX_QUOTE,
            None,
        );
        assert!(!v.verified);
        assert!(v
            .checks
            .get("quote_parse")
            .unwrap()
            .detail
            .contains("truncated"));
    }
    let mut big = quote.clone();
    big.resize(MAX_QUOTE_BYTES + 1, 0);
    assert!(matches!(parse_quote(&big), Err(TdxError::TooLarge { .. })));
    // Zero padding (configfs-tsm's 8000-byte buffer) is fine; other trailing bytes are not.
    let padded = vector!("go-tdx-guest/cos-113-tdx-quote.dat");
    assert_eq!(padded.len(), 8000);
    assert!(parse_quote(&padded).is_ok());
    let extra = vector!("go-tdx-guest/tdx_prod_quote_SPR_E4.dat");
    assert!(matches!(
        parse_quote(&extra),
        Err(TdxError::TrailingData { .. })
    ));
    // A signature-data length pointing past the end.
    let mut lying = quote.clone();
    lying[632..636].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(parse_quote(&lying).is_err());
}

// ---------- event logs ----------

#[test]
fn dstack_quote_and_event_log_verify_end_to_end() {
    let Some((quote, log)) = dstack_fixture("dstack/quote-report.json") else {
        return;
    };
    // The quote's FMSPC (90C06F000000) matches the outdated fixture's collateral,
    // whose window covers the PCK certificate's validity.
    let collateral = vector!("dcap-qvl/tdx_quote_outdated_collateral.json");
    let v = verify(
        &quote,
        &collateral,
        &TdxPolicy::default(),
        NOW_OUTDATED_COLLATERAL,
        Some(log.as_bytes()),
    );
    assert!(v.verified, "{:?}", failed(&v));
    assert!(ok(&v, "event_log_replay"));
    assert!(ok(&v, "event_digests"));
    let events = v.events.unwrap();
    assert_eq!(events.len(), 28);
    // Authenticode hashes and firmware blobs are reported, not trusted blindly.
    assert!(events
        .iter()
        .any(|e| e.event_type_name == "EV_EFI_BOOT_SERVICES_APPLICATION"
            && e.digest_check == "not_recomputable"));
    assert!(events
        .iter()
        .any(|e| e.event_type_name == "EV_SEPARATOR" && e.digest_check == "recomputed"));
    assert!(events
        .iter()
        .any(|e| e.event_type_name == "EV_EFI_VARIABLE_BOOT" && e.digest_check == "recomputed"));
    assert!(events
        .iter()
        .filter(|e| e.rtmr == Some(3))
        .all(|e| e.digest_check == "recomputed"));
}

#[test]
fn dstack_lite_event_log_replays_against_its_quote() {
    let Some((quote, log)) = dstack_fixture("dstack/tdx-lite-getquote.json") else {
        return;
    };
    let derived = vector!("dstack/DERIVED_tdx-lite-getquote.quote.bin");
    assert_eq!(quote, derived);
    let v = verify(
        &quote,
        b"{}",
        &TdxPolicy::default(),
        NOW_TDX_QUOTE,
        Some(log.as_bytes()),
    );
    assert!(ok(&v, "event_log_replay"), "{:?}", failed(&v));
    assert!(ok(&v, "event_digests"));
    let events = v.events.unwrap();
    // Boot payloads are stripped in the lite format (QEMU's ACPI events keep
    // their "ACPI DATA" text, which their digest does not cover); runtime
    // events recompute.
    assert!(events
        .iter()
        .filter(|e| e.rtmr != Some(3))
        .all(|e| e.digest_check == "payload_stripped" || e.digest_check == "not_recomputable"));
    assert!(events.iter().any(|e| e.digest_check == "payload_stripped"));
    assert!(events
        .iter()
        .filter(|e| e.rtmr == Some(3))
        .all(|e| e.digest_check == "recomputed"));
    // The whole GetQuote response is accepted as the log too.
    let whole = read("dstack/tdx-lite-getquote.json").unwrap();
    let v = verify(
        &quote,
        b"{}",
        &TdxPolicy::default(),
        NOW_TDX_QUOTE,
        Some(&whole),
    );
    assert!(ok(&v, "event_log_replay"));
}

fn replay_ok(quote: &[u8], log: &[u8]) -> (bool, bool) {
    let v = verify(quote, b"{}", &TdxPolicy::default(), 0, Some(log));
    let replay = v
        .checks
        .get("event_log_replay")
        .map(|c| c.ok)
        .unwrap_or(false);
    let digests = v.checks.get("event_digests").map(|c| c.ok).unwrap_or(false);
    (replay, digests)
}

fn edit_json_log(log: &str, edit: impl FnOnce(&mut Vec<serde_json::Value>)) -> Vec<u8> {
    let mut events: Vec<serde_json::Value> = serde_json::from_str(log).unwrap();
    edit(&mut events);
    serde_json::to_vec(&events).unwrap()
}

fn index_of(events: &[serde_json::Value], event_type: u64, nth: usize) -> usize {
    events
        .iter()
        .enumerate()
        .filter(|(_, e)| e["event_type"].as_u64() == Some(event_type))
        .nth(nth)
        .map(|(i, _)| i)
        .expect("event present")
}

#[test]
fn tampered_json_event_logs_fail() {
    let Some((quote, log)) = dstack_fixture("dstack/quote-report.json") else {
        return;
    };
    assert_eq!(replay_ok(&quote, log.as_bytes()), (true, true));

    // Changed payload of a recomputable event (EV_EFI_ACTION, RTMR1).
    let t = edit_json_log(&log, |ev| {
        let i = index_of(ev, 0x8000_0007, 0);
        let p = ev[i]["event_payload"].as_str().unwrap().to_string();
        ev[i]["event_payload"] = format!("{}{}", "44", &p[2..]).into();
    });
    assert_eq!(replay_ok(&quote, &t), (false, false));

    // Changed payload of a dstack runtime event (RTMR3).
    let t = edit_json_log(&log, |ev| {
        let i = index_of(ev, 0x0800_0001, 2);
        ev[i]["event_payload"] = "00".into();
    });
    assert!(!replay_ok(&quote, &t).0);

    // Changed stored digest of an event that cannot be recomputed (PE image).
    let t = edit_json_log(&log, |ev| {
        let i = index_of(ev, 0x8000_0003, 0);
        ev[i]["digest"] = "00".repeat(48).into();
    });
    assert_eq!(replay_ok(&quote, &t), (false, true));

    // Changed stored digest of a recomputable event: the mismatch is reported.
    let t = edit_json_log(&log, |ev| {
        let i = index_of(ev, 4, 0);
        ev[i]["digest"] = "11".repeat(48).into();
    });
    assert!(!replay_ok(&quote, &t).1);

    // Dropped event.
    let t = edit_json_log(&log, |ev| {
        let i = index_of(ev, 0x8000_0001, 1);
        ev.remove(i);
    });
    assert!(!replay_ok(&quote, &t).0);

    // Two events of the same RTMR swapped.
    let t = edit_json_log(&log, |ev| {
        let a = index_of(ev, 0x8000_0001, 0);
        let b = index_of(ev, 0x8000_0001, 1);
        ev.swap(a, b);
    });
    assert!(!replay_ok(&quote, &t).0);

    // An event moved to another RTMR.
    let t = edit_json_log(&log, |ev| {
        let i = index_of(ev, 0x0800_0001, 0);
        ev[i]["imr"] = 2.into();
    });
    assert!(!replay_ok(&quote, &t).0);
}

#[test]
fn binary_ccel_encoding_of_a_real_log_replays_and_detects_tampering() {
    let Some((quote, log)) = dstack_fixture("dstack/quote-report.json") else {
        return;
    };
    let events = eventlog::parse(log.as_bytes()).unwrap();
    let bin = eventlog::encode_binary(&events);
    let mut ccel = bin.clone();
    ccel.extend_from_slice(&[0xFF; 256]); // unused CCEL space
    assert_eq!(replay_ok(&quote, &ccel), (true, true));
    let reparsed = eventlog::parse(&ccel).unwrap();
    assert_eq!(
        eventlog::replay(&reparsed),
        parse_quote(&quote).unwrap().rtmrs
    );

    // Flip a byte of the EV_SEPARATOR payload in the binary.
    let sep = events
        .iter()
        .position(|e: &Event| e.event_type == 4)
        .unwrap();
    let mut tampered = events.clone();
    tampered[sep].data[0] ^= 0x01;
    let t = eventlog::encode_binary(&tampered);
    assert_eq!(replay_ok(&quote, &t), (false, false));
    // Truncated mid-entry.
    assert!(eventlog::parse(&bin[..bin.len() - 3]).is_err());
}

// ---------- PCS fetch ----------

/// Serves the pieces of a collateral JSON as Intel PCS would, recording URLs.
struct FakePcs {
    routes: HashMap<String, FetchResponse>,
    requested: RefCell<Vec<String>>,
    calls: Cell<u32>,
}

impl Fetcher for FakePcs {
    fn get(&self, url: &str) -> Result<FetchResponse, FetchError> {
        self.calls.set(self.calls.get() + 1);
        self.requested.borrow_mut().push(url.to_string());
        self.routes
            .get(url)
            .cloned()
            .ok_or_else(|| FetchError::Status {
                url: url.to_string(),
                status: 404,
            })
    }
}

fn header(name: &str, pem: &str) -> (String, String) {
    (name.to_lowercase(), percent_encode(pem))
}

fn fake_pcs(
    urls: &CollateralUrls,
    collateral: &serde_json::Value,
    tcb_body: Option<Vec<u8>>,
) -> FakePcs {
    let s = |k: &str| collateral[k].as_str().unwrap().to_string();
    let bytes = |k: &str| hex::decode(s(k)).unwrap();
    let tcb_body = tcb_body.unwrap_or_else(|| {
        format!(
            "{{\"tcbInfo\":{},\"signature\":\"{}\"}}",
            s("tcb_info"),
            s("tcb_info_signature")
        )
        .into_bytes()
    });
    let mut routes = HashMap::new();
    routes.insert(
        urls.tcb_info.clone(),
        FetchResponse {
            status: 200,
            headers: vec![header("TCB-Info-Issuer-Chain", &s("tcb_info_issuer_chain"))],
            body: tcb_body,
        },
    );
    routes.insert(
        urls.qe_identity.clone(),
        FetchResponse {
            status: 200,
            headers: vec![header(
                "SGX-Enclave-Identity-Issuer-Chain",
                &s("qe_identity_issuer_chain"),
            )],
            body: format!(
                "{{\"enclaveIdentity\":{},\"signature\":\"{}\"}}",
                s("qe_identity"),
                s("qe_identity_signature")
            )
            .into_bytes(),
        },
    );
    routes.insert(
        urls.pck_crl.clone(),
        FetchResponse {
            status: 200,
            headers: vec![header(
                "SGX-PCK-CRL-Issuer-Chain",
                &s("pck_crl_issuer_chain"),
            )],
            body: bytes("pck_crl"),
        },
    );
    routes.insert(
        pcs::INTEL_ROOT_CA_CRL_URL.to_string(),
        FetchResponse {
            status: 200,
            headers: vec![],
            body: bytes("root_ca_crl"),
        },
    );
    FakePcs {
        routes,
        requested: RefCell::new(vec![]),
        calls: Cell::new(0),
    }
}

#[test]
fn pcs_fetch_assembles_collateral_that_verifies() {
    let quote = vector!("dcap-qvl/tdx_quote");
    let collateral_json = vector!("dcap-qvl/tdx_quote_collateral.json");
    let collateral: serde_json::Value = serde_json::from_slice(&collateral_json).unwrap();
    let urls = pcs::collateral_urls_for_quote(&quote, pcs::INTEL_PCS_URL).unwrap();
    assert_eq!(
        urls.tcb_info,
        "https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=B0C06F000000&update=standard"
    );
    let fake = fake_pcs(&urls, &collateral, None);
    let fetched = pcs::fetch_collateral(&quote, pcs::INTEL_PCS_URL, &fake).unwrap();
    assert_eq!(fake.requested.borrow().len(), 4);
    let v = verify(&quote, &fetched, &TdxPolicy::default(), NOW_TDX_QUOTE, None);
    assert!(v.verified, "{:?}", failed(&v));
    let fetched: serde_json::Value = serde_json::from_slice(&fetched).unwrap();
    for k in [
        "tcb_info",
        "qe_identity",
        "pck_crl",
        "root_ca_crl",
        "tcb_info_issuer_chain",
        "pck_crl_issuer_chain",
    ] {
        assert_eq!(fetched[k], collateral[k], "{k}");
    }
    assert!(fetched["pck_certificate_chain"]
        .as_str()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));

    // Through the file cache: the second fetch does not reach the network.
    let dir = std::env::temp_dir().join(format!("dc-tdx-pcs-cache-{}", std::process::id()));
    let cache = FileCache::new(&dir);
    let caching = CachingFetcher {
        cache: &cache,
        inner: &fake,
    };
    let before = fake.calls.get();
    let a = pcs::fetch_collateral(&quote, pcs::INTEL_PCS_URL, &caching).unwrap();
    let b = pcs::fetch_collateral(&quote, pcs::INTEL_PCS_URL, &caching).unwrap();
    assert_eq!(a, b);
    assert_eq!(
        fake.calls.get() - before,
        4,
        "second fetch served from the cache"
    );
    std::fs::remove_dir_all(dir).ok();

    // A missing issuer-chain header is a clear error.
    let mut broken = fake_pcs(&urls, &collateral, None);
    broken
        .routes
        .get_mut(&urls.pck_crl)
        .unwrap()
        .headers
        .clear();
    let err = pcs::fetch_collateral(&quote, pcs::INTEL_PCS_URL, &broken).unwrap_err();
    assert!(
        err.to_string().contains("SGX-PCK-CRL-Issuer-Chain"),
        "{err}"
    );
    // Offline by default.
    assert!(pcs::fetch_collateral(
        &quote,
        pcs::INTEL_PCS_URL,
        &dc_attestation_common::fetch::NoFetch
    )
    .is_err());
}

#[test]
fn pcs_fetch_keeps_a_real_pcs_tcb_info_body_byte_exact() {
    // go-tdx-guest's sample_tcbinfo_response_v5 is a real PCS TCB info answer
    // for FMSPC 90C06F000000 (2026-02-01..2026-03-03); the other pieces come
    // from the outdated fixture's collateral (2026-02-18..2026-03-20).
    let Some((quote, _)) = dstack_fixture("dstack/quote-report.json") else {
        return;
    };
    let tcb_body = vector!("go-tdx-guest/sample_tcbinfo_response_v5");
    let collateral: serde_json::Value =
        serde_json::from_slice(&vector!("dcap-qvl/tdx_quote_outdated_collateral.json")).unwrap();
    let pccs = "https://pccs.example";
    let urls = pcs::collateral_urls_for_quote(&quote, pccs).unwrap();
    // PCCS: root CA CRL endpoint answers hex.
    let mut fake = fake_pcs(&urls, &collateral, Some(tcb_body));
    let root_hex = collateral["root_ca_crl"]
        .as_str()
        .unwrap()
        .as_bytes()
        .to_vec();
    fake.routes.insert(
        urls.root_ca_crl.clone().unwrap(),
        FetchResponse {
            status: 200,
            headers: vec![],
            body: root_hex,
        },
    );
    let fetched = pcs::fetch_collateral(&quote, pccs, &fake).unwrap();
    assert!(!fake
        .requested
        .borrow()
        .iter()
        .any(|u| u == pcs::INTEL_ROOT_CA_CRL_URL));
    let now = 1_772_000_000; // 2026-02-25
    let v = verify(&quote, &fetched, &TdxPolicy::default(), now, None);
    assert!(v.verified, "{:?}", failed(&v));
    assert_eq!(v.tcb_status, "UpToDate");
    // After the TCB info's nextUpdate (2026-03-03) the same collateral fails.
    let v = verify(
        &quote,
        &fetched,
        &TdxPolicy::default(),
        NOW_OUTDATED_COLLATERAL + 5 * 86_400,
        None,
    );
    assert!(!ok(&v, "quote_signature"));
}

// ---------- no panics ----------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn mutated_real_quote_never_panics(edits in proptest::collection::vec((0usize..5006, any::<u8>()), 1..4), cut in 1usize..5100) {
        let (Some(quote), Some(collateral)) = (read("dcap-qvl/tdx_quote"), read("dcap-qvl/tdx_quote_collateral.json")) else {
            return Ok(());
        };
        let mut q = quote.clone();
        for (at, val) in edits {
            if let Some(b) = q.get_mut(at) { *b = val; }
        }
        let signed_changed = q[..632] != quote[..632];
        let v = verify(&q, &collateral, &TdxPolicy::default(), NOW_TDX_QUOTE, None);
        if signed_changed {
            prop_assert!(!v.verified, "a changed signed byte never verifies");
        }
        q.truncate(cut);
        fuzz_quote(&q);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..6000)) {
        fuzz_quote(&bytes);
        fuzz_event_log(&bytes);
    }

    #[test]
    fn mutated_real_event_logs_never_panic(at in 0usize..20000, val in any::<u8>(), cut in 0usize..20000) {
        let Some((_, log)) = dstack_fixture("dstack/quote-report.json") else { return Ok(()) };
        let mut bin = eventlog::encode_binary(&eventlog::parse(log.as_bytes()).unwrap());
        let mut json = log.into_bytes();
        let n = json.len();
        json[at % n] = val;
        json.truncate(cut % (n + 1));
        fuzz_event_log(&json);
        let n = bin.len();
        bin[at % n] = val;
        bin.truncate(cut % (n + 1));
        fuzz_event_log(&bin);
    }
}
