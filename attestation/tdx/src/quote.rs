//! TDX quote framing and fields, checked before dcap-qvl sees the bytes so
//! that truncated, oversized or non-TDX input gets a precise error.

use dcap_qvl::quote::{Quote, Report};
use serde::Serialize;

/// Largest quote accepted (real quotes are about 5 KiB; configfs-tsm pads to 8000 bytes).
pub const MAX_QUOTE_BYTES: usize = 64 * 1024;
/// Largest signature-data section accepted.
pub const MAX_SIGNATURE_DATA_BYTES: usize = 48 * 1024;

const HEADER_LEN: usize = 48;
const TEE_TYPE_SGX: u32 = 0x0000_0000;
/// TEE type of a TDX quote header.
pub const TEE_TYPE_TDX: u32 = 0x0000_0081;

/// Why a quote could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TdxError {
    #[error("quote is {actual} bytes, at most {limit} accepted")]
    TooLarge { actual: usize, limit: usize },
    #[error("quote truncated: {what} needs {needed} bytes, the quote has {actual}")]
    Truncated {
        what: &'static str,
        needed: usize,
        actual: usize,
    },
    #[error("not a TDX quote: TEE type {tee_type:#010x} ({kind}), expected 0x00000081 (TDX)")]
    NotTdx { tee_type: u32, kind: &'static str },
    #[error("unsupported TDX quote version {0}, expected 4 or 5")]
    UnsupportedVersion(u16),
    #[error("unsupported quote v5 body type {0}, expected 2 (TD 1.0), 3 (TD 1.5) or 4 (TD 1.5ex)")]
    UnsupportedBodyType(u16),
    #[error("quote v5 body type {body_type} declares {declared} bytes, expected {expected}")]
    BodySize {
        body_type: u16,
        declared: u32,
        expected: usize,
    },
    #[error("signature data of {actual} bytes exceeds the limit of {limit}")]
    SignatureDataTooLarge { actual: usize, limit: usize },
    #[error("{count} non-zero bytes follow the quote's signature data")]
    TrailingData { count: usize },
    #[error("malformed quote: {0}")]
    Malformed(String),
}

/// Which TD report the quote body carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TdReportKind {
    /// TDX 1.0 report (quote v4, or v5 body type 2), 584 bytes.
    Td10,
    /// TDX 1.5 report (quote v5 body type 3), 648 bytes.
    Td15,
    /// TDX 1.5ex report (quote v5 body type 4), 885 bytes.
    Td15Ex,
}

/// The fields of a TDX quote a verifier looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuoteSummary {
    pub version: u16,
    pub attestation_key_type: u16,
    pub tee_type: u32,
    pub report_kind: TdReportKind,
    pub tee_tcb_svn: [u8; 16],
    pub mr_seam: [u8; 48],
    pub mr_signer_seam: [u8; 48],
    pub seam_attributes: [u8; 8],
    pub td_attributes: [u8; 8],
    pub xfam: [u8; 8],
    pub mrtd: [u8; 48],
    pub mrconfigid: [u8; 48],
    pub mrowner: [u8; 48],
    pub mrownerconfig: [u8; 48],
    pub rtmrs: [[u8; 48]; 4],
    pub report_data: [u8; 64],
    /// TD 1.5 only: MRSERVICETD.
    pub mr_service_td: Option<[u8; 48]>,
    /// Certification data type inside the QE certification data (5 = PCK chain).
    pub cert_type: u16,
    /// The PCK certificate chain (PEM) when the quote carries it (type 5).
    pub pck_chain_pem: Option<String>,
    /// Bytes covered by the attestation key's signature (header + body).
    pub signed_len: usize,
    /// Length of the quote proper; anything after it was zero padding.
    pub quote_len: usize,
}

impl QuoteSummary {
    /// TD attributes bit 0: the TD runs in debug mode (host can read its memory).
    pub fn is_debug(&self) -> bool {
        self.td_attributes[0] & 0x01 != 0
    }
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn need(bytes: &[u8], what: &'static str, needed: usize) -> Result<(), TdxError> {
    if bytes.len() < needed {
        return Err(TdxError::Truncated {
            what,
            needed,
            actual: bytes.len(),
        });
    }
    Ok(())
}

/// Checks the framing of a TDX quote (v4 or v5) and returns its fields.
///
/// Trailing zero bytes (padding from configfs-tsm buffers) are accepted;
/// anything else after the signature data is an error.
pub fn parse_quote(bytes: &[u8]) -> Result<QuoteSummary, TdxError> {
    if bytes.len() > MAX_QUOTE_BYTES {
        return Err(TdxError::TooLarge {
            actual: bytes.len(),
            limit: MAX_QUOTE_BYTES,
        });
    }
    need(bytes, "the header", HEADER_LEN)?;
    let truncated_header = || TdxError::Truncated {
        what: "the header",
        needed: HEADER_LEN,
        actual: bytes.len(),
    };
    let version = le_u16(bytes, 0).ok_or_else(truncated_header)?;
    let attestation_key_type = le_u16(bytes, 2).ok_or_else(truncated_header)?;
    let tee_type = le_u32(bytes, 4).ok_or_else(truncated_header)?;
    match tee_type {
        TEE_TYPE_TDX => {}
        TEE_TYPE_SGX => {
            return Err(TdxError::NotTdx {
                tee_type,
                kind: "SGX",
            })
        }
        _ => {
            return Err(TdxError::NotTdx {
                tee_type,
                kind: "unknown",
            })
        }
    }
    let (body_start, body_len, report_kind) = match version {
        4 => (HEADER_LEN, 584, TdReportKind::Td10),
        5 => {
            need(bytes, "the v5 body descriptor", HEADER_LEN + 6)?;
            let body_type = le_u16(bytes, HEADER_LEN).ok_or_else(truncated_header)?;
            let declared = le_u32(bytes, HEADER_LEN + 2).ok_or_else(truncated_header)?;
            let (expected, kind) = match body_type {
                2 => (584, TdReportKind::Td10),
                3 => (648, TdReportKind::Td15),
                4 => (885, TdReportKind::Td15Ex),
                other => return Err(TdxError::UnsupportedBodyType(other)),
            };
            if declared as usize != expected {
                return Err(TdxError::BodySize {
                    body_type,
                    declared,
                    expected,
                });
            }
            (HEADER_LEN + 6, expected, kind)
        }
        other => return Err(TdxError::UnsupportedVersion(other)),
    };
    let signed_len = body_start + body_len;
    need(bytes, "the TD report body", signed_len)?;
    need(bytes, "the signature data length", signed_len + 4)?;
    let sig_len = le_u32(bytes, signed_len).unwrap_or(0) as usize;
    if sig_len > MAX_SIGNATURE_DATA_BYTES {
        return Err(TdxError::SignatureDataTooLarge {
            actual: sig_len,
            limit: MAX_SIGNATURE_DATA_BYTES,
        });
    }
    let quote_len = signed_len + 4 + sig_len;
    need(bytes, "the signature data", quote_len)?;
    let tail = bytes.get(quote_len..).unwrap_or(&[]);
    let nonzero = tail.iter().filter(|&&b| b != 0).count();
    if nonzero > 0 {
        return Err(TdxError::TrailingData { count: nonzero });
    }
    let quote = Quote::parse(bytes.get(..quote_len).unwrap_or(bytes))
        .map_err(|e| TdxError::Malformed(format!("{e:#}")))?;

    let (td, mr_service_td) = match &quote.report {
        Report::TD10(r) => (r, None),
        Report::TD15(r) => (&r.base, Some(r.mr_service_td)),
        Report::TD15Ex(r) => (&r.base.base, Some(r.base.mr_service_td)),
        Report::SgxEnclave(_) => {
            return Err(TdxError::Malformed(
                "TDX header with an SGX enclave report body".into(),
            ))
        }
    };
    let cert_type = quote.inner_cert_type();
    let pck_chain_pem = (cert_type == 5).then(|| {
        String::from_utf8_lossy(quote.inner_cert_data())
            .trim_end_matches('\0')
            .to_string()
    });
    Ok(QuoteSummary {
        version,
        attestation_key_type,
        tee_type,
        report_kind,
        tee_tcb_svn: td.tee_tcb_svn,
        mr_seam: td.mr_seam,
        mr_signer_seam: td.mr_signer_seam,
        seam_attributes: td.seam_attributes,
        td_attributes: td.td_attributes,
        xfam: td.xfam,
        mrtd: td.mr_td,
        mrconfigid: td.mr_config_id,
        mrowner: td.mr_owner,
        mrownerconfig: td.mr_owner_config,
        rtmrs: [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3],
        report_data: td.report_data,
        mr_service_td,
        cert_type,
        pck_chain_pem,
        signed_len,
        quote_len,
    })
}
