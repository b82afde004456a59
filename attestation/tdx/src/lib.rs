//! Offline verification of Intel TDX quotes.
//!
//! [`verify`] checks a v4/v5 quote with dcap-qvl against Intel's root and the
//! collateral given as JSON (dcap-qvl's `QuoteCollateralV3`), at a time the
//! caller passes in; then applies a [`TdxPolicy`] on top (TCB status,
//! advisories, debug, expected measurements) and, when given, replays an event
//! log ([`eventlog`]) against the quote's RTMRs. Every step is a named
//! [`Check`](dc_attestation_common::Check); the quote is `verified` only when
//! all pass. Collateral can be fetched from Intel PCS / a PCCS with [`pcs`].

pub mod eventlog;
pub mod pcs;
mod quote;

pub use eventlog::{EventLogError, EventSummary};
pub use quote::{parse_quote, QuoteSummary, TdReportKind, TdxError, MAX_QUOTE_BYTES, TEE_TYPE_TDX};

use dc_attestation_common::Checks;
use dcap_qvl::configs::RingConfig;
use dcap_qvl::verify::{QuoteVerifier, VerifiedReport};
use dcap_qvl::QuoteCollateralV3;
use serde::Serialize;

/// Largest collateral JSON accepted.
pub const MAX_COLLATERAL_BYTES: usize = 1024 * 1024;

/// What a verifier accepts beyond the cryptographic chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdxPolicy {
    /// TCB statuses accepted (dcap-qvl's names). Default `["UpToDate"]`.
    pub accepted_tcb_statuses: Vec<String>,
    /// Intel security advisory IDs (e.g. "INTEL-SA-00837") tolerated; any
    /// other advisory reported for the platform fails the `advisories` check.
    pub allowed_advisories: Vec<String>,
    /// Accept a TD in debug mode (its memory is readable by the host).
    pub allow_debug: bool,
    /// MRTD (the TD's initial image, e.g. TDVF) the quote must carry.
    pub expected_mrtd: Option<[u8; 48]>,
    /// RTMR0..RTMR3 the quote must carry, each compared when given.
    pub expected_rtmrs: [Option<[u8; 48]>; 4],
    /// MRCONFIGID (host-provided configuration ID) the quote must carry.
    pub expected_mrconfigid: Option<[u8; 48]>,
    /// REPORTDATA the quote must carry (e.g. `dc_attestation_common::report_data`).
    pub expected_report_data: Option<[u8; 64]>,
}

impl Default for TdxPolicy {
    fn default() -> Self {
        Self {
            accepted_tcb_statuses: vec!["UpToDate".to_string()],
            allowed_advisories: Vec::new(),
            allow_debug: false,
            expected_mrtd: None,
            expected_rtmrs: [None; 4],
            expected_mrconfigid: None,
            expected_report_data: None,
        }
    }
}

/// The outcome of [`verify`], as printed by `dcctl verify --json`.
#[derive(Clone, Debug, Serialize)]
pub struct TdxVerification {
    /// True when every check passed.
    pub verified: bool,
    pub platform: &'static str,
    pub quote_version: u16,
    /// "TDX" (or the reason the quote is not one).
    pub tee_type: String,
    /// TCB status from dcap-qvl ("UpToDate", "OutOfDate", ...), "Unknown" when
    /// the quote did not verify.
    pub tcb_status: String,
    pub advisory_ids: Vec<String>,
    pub mrtd: String,
    /// RTMR0..RTMR3, hex.
    pub rtmr: Vec<String>,
    pub mrconfigid: String,
    pub report_data: String,
    pub td_attributes: String,
    /// FMSPC of the PCK certificate (hex, upper case) when it could be read.
    pub fmspc: Option<String>,
    /// The event log, when one was given and parsed.
    pub events: Option<Vec<EventSummary>>,
    pub checks: Checks,
}

impl TdxVerification {
    fn empty() -> Self {
        Self {
            verified: false,
            platform: "tdx",
            quote_version: 0,
            tee_type: String::new(),
            tcb_status: "Unknown".to_string(),
            advisory_ids: Vec::new(),
            mrtd: String::new(),
            rtmr: Vec::new(),
            mrconfigid: String::new(),
            report_data: String::new(),
            td_attributes: String::new(),
            fmspc: None,
            events: None,
            checks: Checks::new(),
        }
    }
}

/// FMSPC from a PEM PCK chain (leaf first).
fn fmspc_of(pem_chain: &str) -> Option<String> {
    dcap_qvl::intel::parse_pck_extension_from_pem_with::<RingConfig>(pem_chain.as_bytes())
        .ok()
        .map(|ext| hex::encode_upper(ext.fmspc))
}

/// dcap-qvl's cryptographic verification. Debug is judged by our own check,
/// so dcap-qvl is told to allow it; its other TD-attribute rules (no
/// migration, SEPT_VE_DISABLE set, no service TD) stay in force.
fn dcap_verify(
    quote: &[u8],
    collateral: &QuoteCollateralV3,
    now_unix_secs: u64,
) -> Result<VerifiedReport, String> {
    let run = || {
        QuoteVerifier::new_prod()
            .with_config::<RingConfig>()
            .allow_debug(true)
            .verify(quote, collateral, now_unix_secs)
    };
    // dcap-qvl is written without panics; this keeps the promise of `verify`
    // even if a future version slips.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err("dcap-qvl panicked while verifying the quote".to_string()),
    }
}

/// Verifies a TDX quote offline at `now_unix_secs` and applies `policy`.
///
/// `collateral_json` is dcap-qvl's `QuoteCollateralV3` as JSON (as written by
/// [`pcs::fetch_collateral`]). `event_log` is a binary CCEL/TCG2 log or
/// dstack's JSON log. Never panics; every problem is a failed check.
pub fn verify(
    quote: &[u8],
    collateral_json: &[u8],
    policy: &TdxPolicy,
    now_unix_secs: u64,
    event_log: Option<&[u8]>,
) -> TdxVerification {
    let mut out = TdxVerification::empty();
    let checks = &mut out.checks;

    let summary = match parse_quote(quote) {
        Ok(s) => {
            checks.pass(
                "quote_parse",
                format!(
                    "TDX quote v{} with a {:?} report, {} bytes",
                    s.version, s.report_kind, s.quote_len
                ),
            );
            s
        }
        Err(e) => {
            if let TdxError::NotTdx { kind, .. } = &e {
                out.tee_type = (*kind).to_string();
            }
            checks.fail("quote_parse", e.to_string());
            return out;
        }
    };
    out.quote_version = summary.version;
    out.tee_type = "TDX".to_string();
    out.mrtd = hex::encode(summary.mrtd);
    out.rtmr = summary.rtmrs.iter().map(hex::encode).collect();
    out.mrconfigid = hex::encode(summary.mrconfigid);
    out.report_data = hex::encode(summary.report_data);
    out.td_attributes = hex::encode(summary.td_attributes);
    out.fmspc = summary.pck_chain_pem.as_deref().and_then(fmspc_of);

    // Cryptographic chain: collateral, PCK chain, QE report, quote signature.
    let collateral = if collateral_json.len() > MAX_COLLATERAL_BYTES {
        checks.fail(
            "collateral_parse",
            format!(
                "collateral is {} bytes, at most {MAX_COLLATERAL_BYTES} accepted",
                collateral_json.len()
            ),
        );
        None
    } else {
        match serde_json::from_slice::<QuoteCollateralV3>(collateral_json) {
            Ok(c) => {
                checks.pass("collateral_parse", "QuoteCollateralV3 JSON");
                Some(c)
            }
            Err(e) => {
                checks.fail(
                    "collateral_parse",
                    format!("expected dcap-qvl QuoteCollateralV3 JSON: {e}"),
                );
                None
            }
        }
    };
    if let Some(collateral) = &collateral {
        if out.fmspc.is_none() {
            out.fmspc = collateral
                .pck_certificate_chain
                .as_deref()
                .and_then(fmspc_of);
        }
        let signed = quote.get(..summary.quote_len).unwrap_or(quote);
        match dcap_verify(signed, collateral, now_unix_secs) {
            Ok(report) => {
                checks.pass(
                    "quote_signature",
                    format!(
                        "PCK chain, QE report, quote signature and collateral valid at {now_unix_secs} (Intel SGX Root CA)"
                    ),
                );
                out.tcb_status = report.status.clone();
                out.advisory_ids = report.advisory_ids.clone();
                judge_tcb(checks, policy, &report.status, &report.advisory_ids);
            }
            Err(e) => checks.fail(
                "quote_signature",
                format!("dcap-qvl rejected the quote at {now_unix_secs}: {e}"),
            ),
        }
    }

    // Policy on the TD's own fields (meaningful even when the chain failed:
    // a developer sees every reason at once).
    judge_debug(checks, policy, &summary);
    checks.expect_eq(
        "mrtd",
        policy.expected_mrtd.as_ref().map(|m| &m[..]),
        &summary.mrtd,
    );
    for (i, expected) in policy.expected_rtmrs.iter().enumerate() {
        let name = ["rtmr0", "rtmr1", "rtmr2", "rtmr3"][i];
        checks.expect_eq(name, expected.as_ref().map(|m| &m[..]), &summary.rtmrs[i]);
    }
    checks.expect_eq(
        "mrconfigid",
        policy.expected_mrconfigid.as_ref().map(|m| &m[..]),
        &summary.mrconfigid,
    );
    checks.expect_eq(
        "report_data",
        policy.expected_report_data.as_ref().map(|m| &m[..]),
        &summary.report_data,
    );

    if let Some(log) = event_log {
        out.events = check_event_log(checks, &summary.rtmrs, log);
    }

    out.verified = out.checks.all_ok();
    out
}

/// Records `tcb_status` and `advisories` for a status dcap-qvl reported.
/// OutOfDate (or anything else) passes only when the policy lists it.
pub fn judge_tcb(checks: &mut Checks, policy: &TdxPolicy, status: &str, advisory_ids: &[String]) {
    if policy.accepted_tcb_statuses.iter().any(|s| s == status) {
        let note = if status == "UpToDate" {
            ""
        } else {
            " (accepted explicitly by policy)"
        };
        checks.pass("tcb_status", format!("{status}{note}"));
    } else {
        checks.fail(
            "tcb_status",
            format!(
                "{status} is not accepted; policy accepts {:?}",
                policy.accepted_tcb_statuses
            ),
        );
    }
    let unexpected: Vec<&String> = advisory_ids
        .iter()
        .filter(|id| !policy.allowed_advisories.contains(id))
        .collect();
    if unexpected.is_empty() {
        let detail = if advisory_ids.is_empty() {
            "none reported".to_string()
        } else {
            format!("all allowed: {}", advisory_ids.join(", "))
        };
        checks.pass("advisories", detail);
    } else {
        checks.fail(
            "advisories",
            format!(
                "not allowed by policy: {}",
                unexpected
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
}

fn judge_debug(checks: &mut Checks, policy: &TdxPolicy, summary: &QuoteSummary) {
    // TUD bits (byte 0): bit 0 DEBUG; any set TUD bit makes the TD untrusted.
    let tud = summary.td_attributes[0];
    if tud == 0 {
        checks.pass(
            "debug",
            "TD is not in debug mode (TD attributes TUD bits clear)",
        );
    } else if policy.allow_debug {
        checks.pass(
            "debug",
            format!("TD under debug (TUD bits {tud:#04x}), allowed by policy"),
        );
    } else {
        checks.fail(
            "debug",
            format!("TD under debug (TUD bits {tud:#04x}): the host can read its memory; policy does not allow debug"),
        );
    }
}

/// Parses and replays `log`, recording `event_digests` and `event_log_replay`.
fn check_event_log(
    checks: &mut Checks,
    quote_rtmrs: &[[u8; 48]; 4],
    log: &[u8],
) -> Option<Vec<EventSummary>> {
    let events = match eventlog::parse(log) {
        Ok(events) => events,
        Err(e) => {
            checks.fail("event_log_replay", format!("event log did not parse: {e}"));
            return None;
        }
    };
    let summaries = eventlog::summarize(&events);
    let mismatched: Vec<String> = summaries
        .iter()
        .filter(|s| s.digest_check == "mismatch")
        .map(|s| format!("#{} {}", s.index, s.event_type_name))
        .collect();
    let count = |label: &str| summaries.iter().filter(|s| s.digest_check == label).count();
    if mismatched.is_empty() {
        checks.pass(
            "event_digests",
            format!(
                "{} recomputed from their payloads; {} not recomputable from the log and {} with stripped payloads replayed as logged (see events)",
                count("recomputed"),
                count("not_recomputable"),
                count("payload_stripped")
            ),
        );
    } else {
        checks.fail(
            "event_digests",
            format!(
                "stored digest differs from the payload's digest: {}",
                mismatched.join(", ")
            ),
        );
    }
    let replayed = eventlog::replay(&events);
    let differing: Vec<String> = (0..4)
        .filter(|&i| replayed[i] != quote_rtmrs[i])
        .map(|i| {
            format!(
                "RTMR{i} replays to {} but the quote has {}",
                hex::encode(replayed[i]),
                hex::encode(quote_rtmrs[i])
            )
        })
        .collect();
    if differing.is_empty() {
        checks.pass(
            "event_log_replay",
            format!("{} events replay to the quote's RTMR0..RTMR3", events.len()),
        );
    } else {
        checks.fail("event_log_replay", differing.join("; "));
    }
    Some(summaries)
}

/// Fuzz entry: parse and verify arbitrary bytes as a quote (and as collateral
/// and event log). Must never panic.
pub fn fuzz_quote(data: &[u8]) {
    let _ = parse_quote(data);
    let policy = TdxPolicy::default();
    let _ = verify(data, b"{}", &policy, 1_751_624_655, Some(data));
    let _ = verify(data, data, &policy, 0, None);
    let _ = pcs::collateral_urls_for_quote(data, pcs::INTEL_PCS_URL);
}

/// Fuzz entry: parse, summarize and replay arbitrary bytes as an event log.
/// Must never panic.
pub fn fuzz_event_log(data: &[u8]) {
    if let Ok(events) = eventlog::parse(data) {
        let _ = eventlog::replay(&events);
        let _ = eventlog::summarize(&events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(policy: &TdxPolicy, status: &str, advisories: &[&str]) -> Checks {
        let mut c = Checks::new();
        let adv: Vec<String> = advisories.iter().map(|s| s.to_string()).collect();
        judge_tcb(&mut c, policy, status, &adv);
        c
    }

    #[test]
    fn default_policy_accepts_only_up_to_date_without_advisories() {
        let p = TdxPolicy::default();
        assert!(judged(&p, "UpToDate", &[]).all_ok());
        for status in [
            "OutOfDate",
            "SWHardeningNeeded",
            "ConfigurationNeeded",
            "TDRelaunchAdvised",
            "Revoked",
        ] {
            let c = judged(&p, status, &[]);
            assert!(
                !c.get("tcb_status").unwrap().ok,
                "{status} must fail by default"
            );
        }
        let c = judged(&p, "UpToDate", &["INTEL-SA-00615"]);
        assert!(!c.get("advisories").unwrap().ok);
        assert!(c
            .get("advisories")
            .unwrap()
            .detail
            .contains("INTEL-SA-00615"));
    }

    #[test]
    fn policy_can_accept_statuses_and_specific_advisories() {
        let p = TdxPolicy {
            accepted_tcb_statuses: vec!["UpToDate".into(), "SWHardeningNeeded".into()],
            allowed_advisories: vec!["INTEL-SA-00615".into()],
            ..TdxPolicy::default()
        };
        assert!(judged(&p, "SWHardeningNeeded", &["INTEL-SA-00615"]).all_ok());
        let c = judged(
            &p,
            "SWHardeningNeeded",
            &["INTEL-SA-00615", "INTEL-SA-00657"],
        );
        assert!(c.get("tcb_status").unwrap().ok);
        assert!(
            !c.get("advisories").unwrap().ok,
            "an advisory not listed fails"
        );
        assert!(
            !judged(&p, "OutOfDate", &[]).all_ok(),
            "OutOfDate needs explicit acceptance"
        );
        let explicit = TdxPolicy {
            accepted_tcb_statuses: vec!["OutOfDate".into()],
            ..TdxPolicy::default()
        };
        let c = judged(&explicit, "OutOfDate", &[]);
        assert!(c.all_ok());
        assert!(c.get("tcb_status").unwrap().detail.contains("explicitly"));
    }

    #[test]
    fn garbage_never_verifies() {
        let v = verify(b"", b"", &TdxPolicy::default(), 0, None);
        assert!(!v.verified);
        assert!(!v.checks.get("quote_parse").unwrap().ok);
        fuzz_quote(&[0x04, 0x00, 0x02, 0x00, 0x81, 0, 0, 0]);
        fuzz_event_log(b"[");
    }
}
