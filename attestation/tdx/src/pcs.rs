//! Collateral from Intel PCS (or a PCCS speaking the same v4 API), fetched
//! through a caller-supplied [`Fetcher`] so this crate does no I/O itself and
//! a [`CachingFetcher`](dc_attestation_common::fetch::CachingFetcher) can keep
//! the answers for offline re-verification.
//!
//! The four requests, for a TDX quote whose PCK leaf has FMSPC `F` and was
//! issued by the `processor` or `platform` CA:
//!
//! | what | URL | issuer chain header |
//! |---|---|---|
//! | TCB info | `{base}/tdx/certification/v4/tcb?fmspc=F&update=standard` | `TCB-Info-Issuer-Chain` (or `SGX-TCB-Info-Issuer-Chain`) |
//! | QE identity | `{base}/tdx/certification/v4/qe/identity?update=standard` | `SGX-Enclave-Identity-Issuer-Chain` |
//! | PCK CRL | `{base}/sgx/certification/v4/pckcrl?ca=CA&encoding=der` | `SGX-PCK-CRL-Issuer-Chain` |
//! | root CA CRL | `{base}/sgx/certification/v4/rootcacrl` (PCCS), else the root's CRL distribution point | none |
//!
//! Issuer chains arrive URL-encoded (PEM). The PCK chain comes from the
//! quote's certification data (type 5) and is stored in the collateral too.

use dc_attestation_common::fetch::{FetchError, FetchResponse, Fetcher};
use dcap_qvl::configs::RingConfig;
use dcap_qvl::QuoteCollateralV3;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::quote::{parse_quote, TdxError};

/// Intel's Provisioning Certification Service.
pub const INTEL_PCS_URL: &str = "https://api.trustedservices.intel.com";
/// CRL distribution point of the Intel SGX Root CA (what PCS users fetch
/// for the root CA CRL).
pub const INTEL_ROOT_CA_CRL_URL: &str =
    "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der";

/// Why collateral could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum PcsError {
    #[error("quote: {0}")]
    Quote(#[from] TdxError),
    #[error("the quote carries certification data type {0}, not a PCK certificate chain (type 5); fetching a PCK certificate by encrypted PPID is not supported")]
    NoPckChain(u16),
    #[error("PCK certificate: {0}")]
    Pck(String),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{url}: HTTP status {status}, expected 200")]
    Status { url: String, status: u16 },
    #[error("{url}: response has no {header} header")]
    MissingHeader { url: String, header: &'static str },
    #[error("{url}: {reason}")]
    BadResponse { url: String, reason: String },
}

/// The collateral URLs for one platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollateralUrls {
    pub tcb_info: String,
    pub qe_identity: String,
    pub pck_crl: String,
    /// PCCS `rootcacrl` endpoint; `None` for Intel PCS, which has none.
    pub root_ca_crl: Option<String>,
}

impl CollateralUrls {
    /// URLs under `base_url` (Intel PCS or a PCCS; a trailing
    /// `/sgx|tdx/certification/v4` is tolerated) for TDX platform `fmspc_hex`
    /// whose PCK was issued by `ca` ("processor" or "platform").
    pub fn new(base_url: &str, fmspc_hex: &str, ca: &str) -> Self {
        let base = base_url
            .trim_end_matches('/')
            .trim_end_matches("/sgx/certification/v4")
            .trim_end_matches("/tdx/certification/v4")
            .trim_end_matches('/');
        let is_intel_pcs = base.starts_with(INTEL_PCS_URL);
        Self {
            tcb_info: format!(
                "{base}/tdx/certification/v4/tcb?fmspc={}&update=standard",
                fmspc_hex.to_uppercase()
            ),
            qe_identity: format!("{base}/tdx/certification/v4/qe/identity?update=standard"),
            pck_crl: format!("{base}/sgx/certification/v4/pckcrl?ca={ca}&encoding=der"),
            root_ca_crl: (!is_intel_pcs).then(|| format!("{base}/sgx/certification/v4/rootcacrl")),
        }
    }
}

/// The PCK chain (PEM), FMSPC (hex) and CA ("processor"/"platform") of a TDX quote.
pub fn pck_identity(quote: &[u8]) -> Result<(String, String, &'static str), PcsError> {
    let summary = parse_quote(quote)?;
    let chain = summary
        .pck_chain_pem
        .ok_or(PcsError::NoPckChain(summary.cert_type))?;
    let certs =
        dcap_qvl::intel::parse_pck_extension_from_pem_with::<RingConfig>(chain.as_bytes())
            .map_err(|e| PcsError::Pck(format!("{e:#}")))?;
    let quote = dcap_qvl::quote::Quote::parse(quote.get(..summary.quote_len).unwrap_or(quote))
        .map_err(|e| PcsError::Pck(format!("{e:#}")))?;
    let der_chain =
        dcap_qvl::intel::extract_cert_chain(&quote).map_err(|e| PcsError::Pck(format!("{e:#}")))?;
    let leaf = der_chain
        .first()
        .ok_or_else(|| PcsError::Pck("no certificate in the chain".into()))?;
    let ca = dcap_qvl::intel::pck_ca_with::<RingConfig>(leaf)
        .map_err(|e| PcsError::Pck(format!("{e:#}")))?
        .as_id_str();
    Ok((chain, hex::encode_upper(certs.fmspc), ca))
}

/// The collateral URLs for a quote, or why they cannot be built.
pub fn collateral_urls_for_quote(
    quote: &[u8],
    pcs_base_url: &str,
) -> Result<CollateralUrls, PcsError> {
    let (_, fmspc, ca) = pck_identity(quote)?;
    Ok(CollateralUrls::new(pcs_base_url, &fmspc, ca))
}

/// Fetches the collateral for a TDX quote and returns it as dcap-qvl
/// `QuoteCollateralV3` JSON, ready for [`crate::verify`]. The PCK chain from
/// the quote is included so the JSON verifies on its own.
pub fn fetch_collateral(
    quote: &[u8],
    pcs_base_url: &str,
    fetcher: &dyn Fetcher,
) -> Result<Vec<u8>, PcsError> {
    let (chain, fmspc, ca) = pck_identity(quote)?;
    let urls = CollateralUrls::new(pcs_base_url, &fmspc, ca);
    let mut collateral = fetch_with_urls(&urls, fetcher)?;
    collateral.pck_certificate_chain = Some(chain);
    serde_json::to_vec(&collateral).map_err(|e| PcsError::BadResponse {
        url: urls.tcb_info,
        reason: e.to_string(),
    })
}

fn get_ok(fetcher: &dyn Fetcher, url: &str) -> Result<FetchResponse, PcsError> {
    let response = fetcher.get(url)?;
    if response.status != 200 {
        return Err(PcsError::Status {
            url: url.to_string(),
            status: response.status,
        });
    }
    Ok(response)
}

fn issuer_chain(
    response: &FetchResponse,
    url: &str,
    names: &[&'static str],
) -> Result<String, PcsError> {
    let value =
        names
            .iter()
            .find_map(|name| response.header(name))
            .ok_or(PcsError::MissingHeader {
                url: url.to_string(),
                header: names[0],
            })?;
    percent_decode(value).ok_or_else(|| PcsError::BadResponse {
        url: url.to_string(),
        reason: format!("{} is not valid URL-encoded UTF-8", names[0]),
    })
}

/// A body that is DER, or hex of DER (PCCS answers the root CA CRL in hex).
fn der_or_hex(body: Vec<u8>) -> Vec<u8> {
    let text = std::str::from_utf8(&body).map(str::trim).unwrap_or("");
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        if let Ok(der) = hex::decode(text) {
            return der;
        }
    }
    body
}

#[derive(Deserialize)]
struct SignedTcbInfo<'a> {
    #[serde(rename = "tcbInfo", borrow)]
    tcb_info: &'a RawValue,
    signature: String,
}

#[derive(Deserialize)]
struct SignedQeIdentity<'a> {
    #[serde(rename = "enclaveIdentity", borrow)]
    enclave_identity: &'a RawValue,
    signature: String,
}

/// Fetches the four pieces from `urls` and assembles them (without the PCK chain).
pub fn fetch_with_urls(
    urls: &CollateralUrls,
    fetcher: &dyn Fetcher,
) -> Result<QuoteCollateralV3, PcsError> {
    let bad = |url: &str, reason: String| PcsError::BadResponse {
        url: url.to_string(),
        reason,
    };

    let tcb = get_ok(fetcher, &urls.tcb_info)?;
    let tcb_info_issuer_chain = issuer_chain(
        &tcb,
        &urls.tcb_info,
        &["TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"],
    )?;
    // The signature covers the exact bytes of the tcbInfo object: keep them raw.
    let signed: SignedTcbInfo = serde_json::from_slice(&tcb.body).map_err(|e| {
        bad(
            &urls.tcb_info,
            format!("expected {{tcbInfo, signature}}: {e}"),
        )
    })?;
    let tcb_info = signed.tcb_info.get().to_string();
    let tcb_info_signature = hex::decode(signed.signature.trim())
        .map_err(|e| bad(&urls.tcb_info, format!("signature is not hex: {e}")))?;

    let qe = get_ok(fetcher, &urls.qe_identity)?;
    let qe_identity_issuer_chain = issuer_chain(
        &qe,
        &urls.qe_identity,
        &[
            "SGX-Enclave-Identity-Issuer-Chain",
            "Enclave-Identity-Issuer-Chain",
        ],
    )?;
    let signed: SignedQeIdentity = serde_json::from_slice(&qe.body).map_err(|e| {
        bad(
            &urls.qe_identity,
            format!("expected {{enclaveIdentity, signature}}: {e}"),
        )
    })?;
    let qe_identity = signed.enclave_identity.get().to_string();
    let qe_identity_signature = hex::decode(signed.signature.trim())
        .map_err(|e| bad(&urls.qe_identity, format!("signature is not hex: {e}")))?;

    let crl = get_ok(fetcher, &urls.pck_crl)?;
    let pck_crl_issuer_chain = issuer_chain(&crl, &urls.pck_crl, &["SGX-PCK-CRL-Issuer-Chain"])?;
    let pck_crl = der_or_hex(crl.body);

    let root_ca_crl = match &urls.root_ca_crl {
        Some(url) => match get_ok(fetcher, url) {
            Ok(r) => der_or_hex(r.body),
            // Not every PCCS has the endpoint: fall back to the root's CRL
            // distribution point.
            Err(_) => get_ok(fetcher, INTEL_ROOT_CA_CRL_URL)?.body,
        },
        None => get_ok(fetcher, INTEL_ROOT_CA_CRL_URL)?.body,
    };

    Ok(QuoteCollateralV3 {
        pck_crl_issuer_chain,
        root_ca_crl,
        pck_crl,
        tcb_info_issuer_chain,
        tcb_info,
        tcb_info_signature,
        qe_identity_issuer_chain,
        qe_identity,
        qe_identity_signature,
        pck_certificate_chain: None,
    })
}

/// Decodes `%XX` escapes; `None` on a bad escape or non-UTF-8 result. A `+`
/// stays a `+` (it is a base64 digit in PEM), as in dcap-qvl.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let text = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(text, 16).ok()?);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes everything but unreserved characters, as PCS does for
/// issuer-chain headers. Used by tests and fake fetchers.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_for_pcs_and_pccs() {
        let u = CollateralUrls::new(
            "https://api.trustedservices.intel.com/",
            "b0c06f000000",
            "processor",
        );
        assert_eq!(
            u.tcb_info,
            "https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=B0C06F000000&update=standard"
        );
        assert_eq!(u.qe_identity, "https://api.trustedservices.intel.com/tdx/certification/v4/qe/identity?update=standard");
        assert_eq!(
            u.pck_crl,
            "https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=processor&encoding=der"
        );
        assert_eq!(u.root_ca_crl, None);
        let p = CollateralUrls::new(
            "https://pccs.example/sgx/certification/v4",
            "B0C06F000000",
            "platform",
        );
        assert_eq!(
            p.root_ca_crl.as_deref(),
            Some("https://pccs.example/sgx/certification/v4/rootcacrl")
        );
        assert!(p.pck_crl.contains("ca=platform"));
    }

    #[test]
    fn percent_coding_round_trips() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIC+/=\n-----END CERTIFICATE-----\n";
        assert_eq!(percent_decode(&percent_encode(pem)).as_deref(), Some(pem));
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%zz"), None);
    }
}
