//! Verification of AMD SEV-SNP attestation reports, in pure Rust and offline.
//!
//! [`verify`] checks a report (versions 2, 3 and 5) against the VCEK or VLEK
//! that signed it and that key's chain up to the AMD root keys of Milan, Genoa
//! and Turin pinned in the `sev` crate, binds the VCEK to the report's chip ID
//! and reported TCB through its X.509 extensions, then applies an
//! [`SnpPolicy`] as separate checks. The time is a parameter; nothing here
//! reads the clock or the network. [`verify_with_fetch`] can fetch a missing
//! VCEK from AMD's KDS through a caller-supplied
//! [`Fetcher`](dc_attestation_common::fetch::Fetcher).

pub mod certs;
mod kds;
mod report;
mod verify;

pub use kds::{fetch_vcek, kds_vcek_url, KDS_BASE_URL};
pub use report::{parse_report, ParsedReport, SigningKey, TcbLevels, REPORT_LEN};
pub use verify::{fuzz_report, verify, verify_with_fetch, SnpEvidence, SnpPolicy, SnpVerification};

/// Offsets inside the report, for tools and tests that edit or point at fields.
pub mod layout {
    pub use crate::report::{
        CHIP_ID_OFFSET, HOST_DATA_OFFSET, MEASUREMENT_OFFSET, POLICY_DEBUG_BIT,
        POLICY_MIGRATE_MA_BIT, POLICY_OFFSET, REPORT_DATA_OFFSET, REPORT_LEN, SIGNED_LEN,
        SIG_RESERVED_OFFSET, SIG_R_OFFSET, SIG_S_OFFSET,
    };
}

use serde::Serialize;

/// An EPYC generation with SEV-SNP and its own AMD root key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Generation {
    /// EPYC 7003 (family 19h, models 00h-0Fh).
    Milan,
    /// EPYC 9004/8004 (family 19h, models 10h-1Fh and A0h-AFh).
    Genoa,
    /// EPYC 9005 (family 1Ah, models 00h-11h).
    Turin,
}

impl Generation {
    /// Every generation with a pinned root, in the order they are tried.
    pub const ALL: [Generation; 3] = [Generation::Milan, Generation::Genoa, Generation::Turin];

    /// Lower-case name used in verification output: "milan", "genoa", "turin".
    pub fn as_str(self) -> &'static str {
        match self {
            Generation::Milan => "milan",
            Generation::Genoa => "genoa",
            Generation::Turin => "turin",
        }
    }

    /// The product name in KDS URLs and AMD certificate names: "Milan", ...
    pub fn kds_name(self) -> &'static str {
        match self {
            Generation::Milan => "Milan",
            Generation::Genoa => "Genoa",
            Generation::Turin => "Turin",
        }
    }

    /// The generation of a CPUID family/model as written in reports v3 on.
    pub fn from_cpuid(family: u8, model: u8) -> Option<Generation> {
        match (family, model) {
            (0x19, 0x00..=0x0F) => Some(Generation::Milan),
            (0x19, 0x10..=0x1F | 0xA0..=0xAF) => Some(Generation::Genoa),
            (0x1A, 0x00..=0x11) => Some(Generation::Turin),
            _ => None,
        }
    }

    /// Parses "milan", "Genoa", "TURIN", ...
    pub fn from_name(name: &str) -> Option<Generation> {
        Generation::ALL
            .into_iter()
            .find(|g| g.as_str().eq_ignore_ascii_case(name))
    }
}

impl std::fmt::Display for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a report or a certificate could not be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnpError {
    /// The report is not exactly 1184 bytes.
    #[error("attestation report must be {expected} bytes, got {actual}")]
    ReportLength { expected: usize, actual: usize },
    /// The report's VERSION is not one this crate knows the layout of.
    #[error("attestation report version {0} is not supported (expected 2 to 5)")]
    UnsupportedVersion(u32),
    /// The report input could not be decoded (hex or size).
    #[error("attestation report input: {0}")]
    Input(#[from] dc_attestation_common::InputError),
    /// A certificate or bundle could not be parsed.
    #[error("{0}")]
    Certificate(String),
    /// Fetching collateral failed.
    #[error("{0}")]
    Fetch(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_names_the_generation() {
        assert_eq!(Generation::from_cpuid(0x19, 0x01), Some(Generation::Milan));
        assert_eq!(Generation::from_cpuid(0x19, 0x11), Some(Generation::Genoa));
        assert_eq!(Generation::from_cpuid(0x19, 0xA0), Some(Generation::Genoa));
        assert_eq!(Generation::from_cpuid(0x1A, 0x02), Some(Generation::Turin));
        assert_eq!(
            Generation::from_cpuid(0x17, 0x31),
            None,
            "Rome has no SEV-SNP"
        );
        assert_eq!(Generation::from_name("Genoa"), Some(Generation::Genoa));
    }

    #[test]
    fn default_policy_is_strict() {
        let p = SnpPolicy::default();
        assert!(!p.allow_debug);
        assert!(!p.allow_migration_agent);
        assert_eq!(p.required_vmpl, Some(0));
    }

    #[test]
    fn remembered_certificate_links_keep_their_verdict() {
        let milan = certs::pinned_ark(Generation::Milan).unwrap();
        let milan_ask = certs::builtin_ask(Generation::Milan).unwrap();
        let genoa_ask = certs::builtin_ask(Generation::Genoa).unwrap();
        for _ in 0..3 {
            assert!(certs::rsa_pss_signed_by(&milan, &milan_ask).is_ok());
            assert!(certs::rsa_pss_signed_by(&milan, &genoa_ask).is_err(), "a cached refusal stays a refusal");
        }
    }

    #[test]
    fn pinned_roots_are_self_signed_and_sign_their_asks() {
        for g in Generation::ALL {
            let ark = certs::pinned_ark(g).expect("built-in ARK parses");
            let ask = certs::builtin_ask(g).expect("built-in ASK parses");
            assert_eq!(certs::pinned_generation_of(&ark), Some(g));
            assert_eq!(certs::pinned_generation_of(&ask), None, "an ASK is no root");
            certs::rsa_pss_signed_by(&ark, &ark).expect("self-signed");
            certs::rsa_pss_signed_by(&ark, &ask).expect("ARK signs ASK");
            assert_eq!(
                certs::subject_cn(&ark).as_deref(),
                Some(format!("ARK-{}", g.kds_name()).as_str())
            );
        }
    }

    #[test]
    fn an_unsigned_report_without_certificates_fails_every_crypto_check_but_reports_policy() {
        let mut report = vec![0u8; REPORT_LEN];
        report[0] = 2;
        report[0x48] = 7 << 2; // SIGNING_KEY = none
        report[layout::POLICY_OFFSET + 2] = 1 << (layout::POLICY_DEBUG_BIT - 16);
        let v = verify(
            &SnpEvidence {
                report: &report,
                endorsement_key: None,
                chain: None,
            },
            &SnpPolicy::default(),
            0,
        );
        assert!(!v.verified);
        let failed: Vec<_> = v.checks.failed().map(|c| c.name.as_str()).collect();
        for name in [
            "signing_key",
            "endorsement_key",
            "report_signature",
            "debug",
        ] {
            assert!(failed.contains(&name), "{name} should fail: {failed:?}");
        }
        assert!(v.checks.get("vmpl").is_some_and(|c| c.ok));
    }

    #[test]
    fn garbage_certificates_are_reported_not_panicked_on() {
        let mut report = vec![0u8; REPORT_LEN];
        report[0] = 5;
        for cert in [
            &b""[..],
            b"-----BEGIN CERTIFICATE-----\nAAAA",
            b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----",
            &[0x30, 0x82, 0xff, 0xff],
        ] {
            let v = verify(
                &SnpEvidence {
                    report: &report,
                    endorsement_key: Some(cert),
                    chain: Some(cert),
                },
                &SnpPolicy::default(),
                0,
            );
            assert!(!v.verified);
            assert!(v.checks.get("endorsement_key").is_some_and(|c| !c.ok));
            assert!(v.checks.get("chain_parse").is_some_and(|c| !c.ok));
        }
    }
}
