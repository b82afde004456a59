//! The NVIDIA GPU attestation report: an SPDM 1.1 `GET_MEASUREMENTS` request
//! followed by the device's `MEASUREMENTS` response (DMTF DSP0274 1.1).
//!
//! ```text
//! request  (37 bytes): version | 0xE0 | param1 (bit 0: signature requested)
//!                      | param2 (operation, 0xFF = all) | nonce[32] | slot id
//! response:            version | 0x60 | param1 | param2 | number of blocks
//!                      | record length (u24 LE) | measurement record
//!                      | nonce[32] | opaque length (u16 LE) | opaque data
//!                      | signature[96] (raw r || s, ECDSA P-384)
//! ```
//!
//! Each measurement block is `index | spec (1 = DMTF) | size (u16 LE) |
//! DMTF type | DMTF size (u16 LE) | value`. NVIDIA fills the opaque data with
//! type-length-value fields (`type u16 LE | size u16 LE | value`) that carry
//! the driver and VBIOS versions, the project and chip SKU, the FWID and more.
//!
//! The parser is bounded and total: every length is checked against what is
//! left, nothing is indexed without a check, and any input gives `Ok` or a
//! [`SpdmError`] that says what was expected and what was found.

use serde::Serialize;

/// Size of the SPDM 1.1 `GET_MEASUREMENTS` request that precedes the response.
pub const REQUEST_LEN: usize = 37;
/// SPDM nonce size, request and response.
pub const NONCE_LEN: usize = 32;
/// Raw ECDSA P-384 signature size (r || s).
pub const SIGNATURE_LEN: usize = 96;
/// SPDM version byte of the reports Hopper GPUs produce (1.1).
pub const SPDM_VERSION_1_1: u8 = 0x11;
/// Request code of `GET_MEASUREMENTS`.
pub const GET_MEASUREMENTS: u8 = 0xE0;
/// Response code of `MEASUREMENTS`.
pub const MEASUREMENTS: u8 = 0x60;
/// Response code of an SPDM `ERROR` response.
pub const ERROR: u8 = 0x7F;
/// Measurement specification bit of DMTF-formatted blocks.
pub const DMTF_SPEC: u8 = 0x01;
/// Longest report accepted (real Hopper reports are about 4 KiB).
pub const MAX_REPORT_LEN: usize = 64 * 1024;
/// SPDM 1.1 limits the opaque data to 1024 bytes.
pub const MAX_OPAQUE_LEN: usize = 1024;
/// Zero bytes tolerated after the signature. One capture tool (trustee's
/// `hopper_coco_report1`) appends a single zero byte; such padding is outside
/// the signed message and is reported in [`SpdmMeasurements::padding_len`].
pub const MAX_ZERO_PADDING: usize = 8;
/// Value of the NVDEC0 status field when NVDEC0 is disabled.
pub const NVDEC0_DISABLED: u8 = 0x55;
/// Value of the NVDEC0 status field when NVDEC0 is enabled.
pub const NVDEC0_ENABLED: u8 = 0xAA;

/// Why a report does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpdmError {
    #[error("report is {actual} bytes, at most {limit} are accepted")]
    TooLarge { actual: usize, limit: usize },
    #[error("truncated {field}: needs {needed} bytes at offset {offset}, {available} left")]
    Truncated {
        field: &'static str,
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("{message}: SPDM version {found:#04x}, expected {expected:#04x}")]
    Version {
        message: &'static str,
        expected: u8,
        found: u8,
    },
    #[error("{message}: code {found:#04x}, expected {expected:#04x}")]
    Code {
        message: &'static str,
        expected: u8,
        found: u8,
    },
    #[error("the request did not ask for a signature (param1 {param1:#04x}, bit 0 clear)")]
    SignatureNotRequested { param1: u8 },
    #[error("the response has no measurement blocks")]
    NoMeasurements,
    #[error("measurement record: {0}")]
    Record(String),
    #[error("opaque data: {0}")]
    Opaque(String),
    #[error("{count} bytes after the signature ({nonzero} of them non-zero); at most {MAX_ZERO_PADDING} zero bytes of padding are accepted")]
    TrailingBytes { count: usize, nonzero: usize },
}

/// The parsed `GET_MEASUREMENTS` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpdmRequest {
    pub version: u8,
    pub code: u8,
    /// Request attributes; bit 0 asks for a signed response.
    pub param1: u8,
    /// Measurement operation; 0xFF asks for all blocks.
    pub param2: u8,
    /// The verifier's nonce, which the signature covers.
    pub nonce: [u8; NONCE_LEN],
    /// Certificate slot (low 4 bits) whose key signs the response.
    pub slot_id: u8,
}

/// One DMTF measurement block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeasurementBlock {
    /// SPDM measurement index, starting at 1 (RIM indexes start at 0).
    pub index: u8,
    /// Measurement specification (always [`DMTF_SPEC`] here).
    pub spec: u8,
    /// DMTF measurement value type (bit 7: raw bit stream, else digest).
    pub value_type: u8,
    pub value: Vec<u8>,
}

/// One type-length-value field of NVIDIA's opaque data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpaqueField {
    pub field_type: u16,
    pub value: Vec<u8>,
}

/// Opaque data field types used by NVIDIA (names as in nvtrust).
pub mod field {
    pub const CERT_ISSUER_NAME: u16 = 1;
    pub const CERT_AUTHORITY_KEY_IDENTIFIER: u16 = 2;
    pub const DRIVER_VERSION: u16 = 3;
    pub const GPU_INFO: u16 = 4;
    pub const SKU: u16 = 5;
    pub const VBIOS_VERSION: u16 = 6;
    pub const MANUFACTURER_ID: u16 = 7;
    pub const TAMPER_DETECTION: u16 = 8;
    pub const SMC: u16 = 9;
    pub const VPR: u16 = 10;
    pub const NVDEC0_STATUS: u16 = 11;
    pub const MSRSCNT: u16 = 12;
    pub const CPRINFO: u16 = 13;
    pub const BOARD_ID: u16 = 14;
    pub const CHIP_SKU: u16 = 15;
    pub const CHIP_SKU_MOD: u16 = 16;
    pub const PROJECT: u16 = 17;
    pub const PROJECT_SKU: u16 = 18;
    pub const PROJECT_SKU_MOD: u16 = 19;
    pub const FWID: u16 = 20;
    pub const PROTECTED_PCIE_STATUS: u16 = 21;
    pub const SWITCH_PDI: u16 = 22;
    pub const FLOORSWEPT_PORTS: u16 = 23;
    pub const POSITION_ID: u16 = 24;
    pub const LOCK_SWITCH_STATUS: u16 = 25;
    pub const GPU_LINK_CONN: u16 = 32;
    pub const SYS_ENABLE_STATUS: u16 = 33;
    pub const OPAQUE_DATA_VERSION: u16 = 34;
    pub const CHIP_INFO: u16 = 35;
    pub const FEATURE_FLAG: u16 = 36;
}

/// NVIDIA's opaque data, field by field in report order. Unknown field types
/// are kept (newer firmware adds fields); a type may appear only once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OpaqueData {
    pub fields: Vec<OpaqueField>,
}

impl OpaqueData {
    /// Parses the TLV sequence.
    pub fn parse(bytes: &[u8]) -> Result<Self, SpdmError> {
        let mut fields: Vec<OpaqueField> = Vec::new();
        let mut r = Reader::new(bytes);
        while r.remaining() > 0 {
            let at = r.offset();
            let field_type = r.u16("opaque field type").map_err(opaque_err)?;
            let size = r.u16("opaque field size").map_err(opaque_err)? as usize;
            let value = r.take(size, "opaque field value").map_err(|e| {
                SpdmError::Opaque(format!("field type {field_type} at offset {at}: {e}"))
            })?;
            if fields.iter().any(|f| f.field_type == field_type) {
                return Err(SpdmError::Opaque(format!(
                    "field type {field_type} appears twice"
                )));
            }
            fields.push(OpaqueField {
                field_type,
                value: value.to_vec(),
            });
        }
        let opaque = Self { fields };
        if let Some(counts) = opaque.get(field::MSRSCNT) {
            if counts.len() % 4 != 0 {
                return Err(SpdmError::Opaque(format!(
                    "measurement count field is {} bytes, expected a multiple of 4",
                    counts.len()
                )));
            }
        }
        if let Some(status) = opaque.get(field::NVDEC0_STATUS) {
            if !matches!(status, [NVDEC0_ENABLED] | [NVDEC0_DISABLED]) {
                return Err(SpdmError::Opaque(format!(
                    "NVDEC0 status is {}, expected aa (enabled) or 55 (disabled)",
                    hex::encode(status)
                )));
            }
        }
        Ok(opaque)
    }

    /// The raw value of a field.
    pub fn get(&self, field_type: u16) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| f.field_type == field_type)
            .map(|f| f.value.as_slice())
    }

    fn text(&self, field_type: u16) -> Option<String> {
        self.get(field_type).map(|v| {
            let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
            String::from_utf8_lossy(&v[..end]).trim().to_string()
        })
    }

    /// Driver version, e.g. `550.90.07`.
    pub fn driver_version(&self) -> Option<String> {
        self.text(field::DRIVER_VERSION)
    }

    /// VBIOS version as nvtrust formats it, e.g. `96.00.9f.00.01`: the first
    /// half of the little-endian field reversed, then the first byte of the
    /// second half, lower-case hex joined by dots.
    pub fn vbios_version(&self) -> Option<String> {
        let raw = self.get(field::VBIOS_VERSION)?;
        let half = raw.len() / 2;
        let last = raw.get(half)?;
        let mut parts: Vec<String> = raw[..half]
            .iter()
            .rev()
            .map(|b| format!("{b:02x}"))
            .collect();
        parts.push(format!("{last:02x}"));
        Some(parts.join("."))
    }

    /// Project number, e.g. `1010`.
    pub fn project(&self) -> Option<String> {
        self.text(field::PROJECT)
    }
    /// Project SKU, e.g. `0200`.
    pub fn project_sku(&self) -> Option<String> {
        self.text(field::PROJECT_SKU)
    }
    /// Chip SKU, e.g. `882`.
    pub fn chip_sku(&self) -> Option<String> {
        self.text(field::CHIP_SKU)
    }
    /// Chip SKU modifier, e.g. `0`.
    pub fn chip_sku_mod(&self) -> Option<String> {
        self.text(field::CHIP_SKU_MOD)
    }
    /// Project SKU modifier (hex of the raw field, as in trustee's claims).
    pub fn project_sku_mod(&self) -> Option<String> {
        self.get(field::PROJECT_SKU_MOD).map(hex::encode)
    }
    /// Chip info text, where the firmware reports it.
    pub fn chip_info(&self) -> Option<String> {
        self.text(field::CHIP_INFO)
    }
    /// The firmware ID (48 bytes on Hopper), compared with the leaf certificate's.
    pub fn fwid(&self) -> Option<&[u8]> {
        self.get(field::FWID)
    }
    /// Whether NVDEC0 is enabled (`Some(false)`: disabled, 0x55).
    pub fn nvdec0_enabled(&self) -> Option<bool> {
        self.get(field::NVDEC0_STATUS)
            .map(|v| v == [NVDEC0_ENABLED])
    }
    /// Per-index measurement counts (first entry is SPDM index 1).
    pub fn measurement_counts(&self) -> Option<Vec<u32>> {
        let raw = self.get(field::MSRSCNT)?;
        Some(
            raw.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    }
}

fn opaque_err(e: SpdmError) -> SpdmError {
    SpdmError::Opaque(e.to_string())
}

/// The parsed `MEASUREMENTS` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpdmResponse {
    pub version: u8,
    pub code: u8,
    pub param1: u8,
    pub param2: u8,
    /// Measurement blocks in report order; indexes are unique.
    pub blocks: Vec<MeasurementBlock>,
    /// The responder's nonce.
    pub nonce: [u8; NONCE_LEN],
    pub opaque: OpaqueData,
    /// Raw r || s of the ECDSA P-384 signature.
    #[serde(with = "hex_bytes")]
    pub signature: [u8; SIGNATURE_LEN],
}

/// A parsed report: request, response, and the bytes the signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpdmMeasurements {
    pub request: SpdmRequest,
    pub response: SpdmResponse,
    /// request || response without signature: the message the device signed.
    pub signed_message: Vec<u8>,
    /// Zero bytes found after the signature (unsigned, tolerated up to [`MAX_ZERO_PADDING`]).
    pub padding_len: usize,
}

impl SpdmMeasurements {
    /// The block with this SPDM index (1-based).
    pub fn block(&self, index: u8) -> Option<&MeasurementBlock> {
        self.response.blocks.iter().find(|b| b.index == index)
    }
}

/// Parses request || response as the NVIDIA driver hands it out (raw bytes, not hex).
pub fn parse(bytes: &[u8]) -> Result<SpdmMeasurements, SpdmError> {
    if bytes.len() > MAX_REPORT_LEN {
        return Err(SpdmError::TooLarge {
            actual: bytes.len(),
            limit: MAX_REPORT_LEN,
        });
    }
    let mut r = Reader::new(bytes);

    // Request.
    let version = r.u8("request SPDM version")?;
    if version != SPDM_VERSION_1_1 {
        return Err(SpdmError::Version {
            message: "request",
            expected: SPDM_VERSION_1_1,
            found: version,
        });
    }
    let code = r.u8("request code")?;
    if code != GET_MEASUREMENTS {
        return Err(SpdmError::Code {
            message: "request is not GET_MEASUREMENTS",
            expected: GET_MEASUREMENTS,
            found: code,
        });
    }
    let param1 = r.u8("request param1")?;
    let param2 = r.u8("request param2")?;
    let nonce = r.array::<NONCE_LEN>("request nonce")?;
    let slot_id = r.u8("request slot id")?;
    if param1 & 1 == 0 {
        return Err(SpdmError::SignatureNotRequested { param1 });
    }
    let request = SpdmRequest {
        version,
        code,
        param1,
        param2,
        nonce,
        slot_id,
    };

    // Response header.
    let rversion = r.u8("response SPDM version")?;
    if rversion != version {
        return Err(SpdmError::Version {
            message: "response differs from request",
            expected: version,
            found: rversion,
        });
    }
    let rcode = r.u8("response code")?;
    if rcode != MEASUREMENTS {
        let message = if rcode == ERROR {
            "the device answered with an SPDM ERROR"
        } else {
            "response is not MEASUREMENTS"
        };
        return Err(SpdmError::Code {
            message,
            expected: MEASUREMENTS,
            found: rcode,
        });
    }
    let rparam1 = r.u8("response param1")?;
    let rparam2 = r.u8("response param2")?;
    let number_of_blocks = r.u8("number of blocks")?;
    let record_len = r.u24("measurement record length")?;
    if number_of_blocks == 0 {
        return Err(SpdmError::NoMeasurements);
    }
    let record = r.take(record_len, "measurement record")?;
    let blocks = parse_record(record, number_of_blocks)?;

    let rnonce = r.array::<NONCE_LEN>("response nonce")?;
    let opaque_len = r.u16("opaque data length")? as usize;
    if opaque_len > MAX_OPAQUE_LEN {
        return Err(SpdmError::Opaque(format!(
            "length {opaque_len}, SPDM 1.1 allows at most {MAX_OPAQUE_LEN}"
        )));
    }
    let opaque = OpaqueData::parse(r.take(opaque_len, "opaque data")?)?;

    let signed_len = r.offset();
    let signature = r.array::<SIGNATURE_LEN>("signature")?;
    let trailing = r.rest();
    let nonzero = trailing.iter().filter(|&&b| b != 0).count();
    if nonzero > 0 || trailing.len() > MAX_ZERO_PADDING {
        return Err(SpdmError::TrailingBytes {
            count: trailing.len(),
            nonzero,
        });
    }

    Ok(SpdmMeasurements {
        request,
        response: SpdmResponse {
            version: rversion,
            code: rcode,
            param1: rparam1,
            param2: rparam2,
            blocks,
            nonce: rnonce,
            opaque,
            signature,
        },
        signed_message: bytes[..signed_len].to_vec(),
        padding_len: trailing.len(),
    })
}

fn parse_record(record: &[u8], number_of_blocks: u8) -> Result<Vec<MeasurementBlock>, SpdmError> {
    let mut r = Reader::new(record);
    let mut blocks: Vec<MeasurementBlock> = Vec::with_capacity(number_of_blocks as usize);
    let rec = |e: SpdmError| SpdmError::Record(e.to_string());
    for n in 0..number_of_blocks {
        let at = r.offset();
        let index = r.u8("block index").map_err(rec)?;
        let spec = r.u8("block measurement specification").map_err(rec)?;
        let size = r.u16("block measurement size").map_err(rec)? as usize;
        if spec != DMTF_SPEC {
            return Err(SpdmError::Record(format!(
                "block {n} (index {index}) has measurement specification {spec:#04x}, expected 0x01 (DMTF)"
            )));
        }
        let measurement = r.take(size, "block measurement").map_err(rec)?;
        let mut m = Reader::new(measurement);
        let value_type = m.u8("DMTF value type").map_err(rec)?;
        let value_size = m.u16("DMTF value size").map_err(rec)? as usize;
        if value_size + 3 != size {
            return Err(SpdmError::Record(format!(
                "block {n} (index {index}) at offset {at}: DMTF value size {value_size} + 3 does not equal measurement size {size}"
            )));
        }
        let value = m.rest().to_vec();
        if blocks.iter().any(|b| b.index == index) {
            return Err(SpdmError::Record(format!("index {index} appears twice")));
        }
        blocks.push(MeasurementBlock {
            index,
            spec,
            value_type,
            value,
        });
    }
    if r.remaining() != 0 {
        return Err(SpdmError::Record(format!(
            "{} bytes left after {number_of_blocks} blocks; the record length says otherwise",
            r.remaining()
        )));
    }
    Ok(blocks)
}

/// Cursor over a byte slice that never reads past its end.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }
    fn offset(&self) -> usize {
        self.pos
    }
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }
    fn rest(&mut self) -> &'a [u8] {
        let rest = self.bytes.get(self.pos..).unwrap_or(&[]);
        self.pos = self.bytes.len();
        rest
    }
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], SpdmError> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| self.bytes.get(self.pos..end)) {
            Some(slice) => {
                self.pos += n;
                Ok(slice)
            }
            None => Err(SpdmError::Truncated {
                field,
                offset: self.pos,
                needed: n,
                available: self.remaining(),
            }),
        }
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], SpdmError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, SpdmError> {
        Ok(self.array::<1>(field)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, SpdmError> {
        Ok(u16::from_le_bytes(self.array::<2>(field)?))
    }
    fn u24(&mut self, field: &'static str) -> Result<usize, SpdmError> {
        let b = self.array::<3>(field)?;
        Ok(b[0] as usize | (b[1] as usize) << 8 | (b[2] as usize) << 16)
    }
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(
        bytes: &[u8; super::SIGNATURE_LEN],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal well-formed report with the given blocks and opaque fields
    /// (signature bytes are zeros: structure only).
    pub(crate) fn synthetic(blocks: &[(u8, Vec<u8>)], opaque: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut out = vec![SPDM_VERSION_1_1, GET_MEASUREMENTS, 0x01, 0xFF];
        out.extend([0xAB; 32]);
        out.push(0);
        let mut record = Vec::new();
        for (index, value) in blocks {
            record.push(*index);
            record.push(DMTF_SPEC);
            record.extend(((value.len() + 3) as u16).to_le_bytes());
            record.push(0x01);
            record.extend((value.len() as u16).to_le_bytes());
            record.extend(value);
        }
        out.extend([SPDM_VERSION_1_1, MEASUREMENTS, 0, 0, blocks.len() as u8]);
        out.extend(&(record.len() as u32).to_le_bytes()[..3]);
        out.extend(record);
        out.extend([0xCD; 32]);
        let mut od = Vec::new();
        for (t, v) in opaque {
            od.extend(t.to_le_bytes());
            od.extend((v.len() as u16).to_le_bytes());
            od.extend(v);
        }
        out.extend((od.len() as u16).to_le_bytes());
        out.extend(od);
        out.extend([0u8; SIGNATURE_LEN]);
        out
    }

    fn sample() -> Vec<u8> {
        synthetic(
            &[(1, vec![1; 48]), (2, vec![2; 48])],
            &[
                (field::DRIVER_VERSION, b"550.90.07\0".to_vec()),
                (
                    field::VBIOS_VERSION,
                    vec![0x00, 0x9f, 0x00, 0x96, 0x01, 0, 0, 0],
                ),
                (field::MSRSCNT, vec![1, 0, 0, 0, 2, 0, 0, 0]),
                (field::NVDEC0_STATUS, vec![0x55]),
            ],
        )
    }

    #[test]
    fn synthetic_report_parses() {
        let bytes = sample();
        let p = parse(&bytes).unwrap();
        assert_eq!(p.request.nonce, [0xAB; 32]);
        assert_eq!(p.response.nonce, [0xCD; 32]);
        assert_eq!(p.response.blocks.len(), 2);
        assert_eq!(p.block(2).unwrap().value, vec![2; 48]);
        assert_eq!(
            p.response.opaque.driver_version().as_deref(),
            Some("550.90.07")
        );
        assert_eq!(
            p.response.opaque.vbios_version().as_deref(),
            Some("96.00.9f.00.01")
        );
        assert_eq!(p.response.opaque.measurement_counts(), Some(vec![1, 2]));
        assert_eq!(p.response.opaque.nvdec0_enabled(), Some(false));
        assert_eq!(p.signed_message.len(), bytes.len() - SIGNATURE_LEN);
        assert_eq!(p.padding_len, 0);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample();
        for len in 0..bytes.len() {
            assert!(
                parse(&bytes[..len]).is_err(),
                "prefix of {len} bytes parsed"
            );
        }
        assert!(matches!(
            parse(&bytes[..10]),
            Err(SpdmError::Truncated {
                field: "request nonce",
                ..
            })
        ));
        assert!(matches!(
            parse(&bytes[..bytes.len() - 1]),
            Err(SpdmError::Truncated {
                field: "signature",
                ..
            })
        ));
    }

    #[test]
    fn trailing_bytes() {
        let mut bytes = sample();
        bytes.push(0);
        assert_eq!(
            parse(&bytes).unwrap().padding_len,
            1,
            "one zero byte of padding is tolerated"
        );
        bytes.push(7);
        assert!(matches!(
            parse(&bytes),
            Err(SpdmError::TrailingBytes {
                count: 2,
                nonzero: 1
            })
        ));
        let mut long = sample();
        long.extend([0u8; MAX_ZERO_PADDING + 1]);
        assert!(matches!(parse(&long), Err(SpdmError::TrailingBytes { .. })));
        let big = vec![0u8; MAX_REPORT_LEN + 1];
        assert!(matches!(parse(&big), Err(SpdmError::TooLarge { .. })));
    }

    #[test]
    fn bad_headers_and_lengths() {
        let good = sample();
        let mut b = good.clone();
        b[0] = 0x12;
        assert!(matches!(parse(&b), Err(SpdmError::Version { .. })));
        let mut b = good.clone();
        b[1] = 0xE1;
        assert!(matches!(parse(&b), Err(SpdmError::Code { .. })));
        let mut b = good.clone();
        b[2] = 0;
        assert!(matches!(
            parse(&b),
            Err(SpdmError::SignatureNotRequested { .. })
        ));
        let mut b = good.clone();
        b[REQUEST_LEN + 1] = ERROR;
        assert!(parse(&b).unwrap_err().to_string().contains("ERROR"));
        // Claim three blocks where two are present.
        let mut b = good.clone();
        b[REQUEST_LEN + 4] = 3;
        assert!(matches!(parse(&b), Err(SpdmError::Record(_))));
        // Claim one block: the record has bytes left over.
        let mut b = good.clone();
        b[REQUEST_LEN + 4] = 1;
        assert!(matches!(parse(&b), Err(SpdmError::Record(_))));
        // Zero blocks.
        let mut b = good.clone();
        b[REQUEST_LEN + 4] = 0;
        assert!(matches!(parse(&b), Err(SpdmError::NoMeasurements)));
        // Non-DMTF spec.
        let mut b = good.clone();
        b[REQUEST_LEN + 9] = 2;
        assert!(matches!(parse(&b), Err(SpdmError::Record(_))));
        // DMTF size disagreeing with the block size.
        let mut b = good;
        b[REQUEST_LEN + 13] = 47;
        assert!(matches!(parse(&b), Err(SpdmError::Record(_))));
    }

    #[test]
    fn opaque_data_errors() {
        assert!(
            OpaqueData::parse(&[3, 0, 5, 0, b'a']).is_err(),
            "value runs past the end"
        );
        assert!(OpaqueData::parse(&[3, 0, 1]).is_err(), "truncated header");
        assert!(
            OpaqueData::parse(&[3, 0, 1, 0, b'a', 3, 0, 1, 0, b'b']).is_err(),
            "duplicate"
        );
        assert!(
            OpaqueData::parse(&[12, 0, 3, 0, 1, 2, 3]).is_err(),
            "count not a multiple of 4"
        );
        assert!(
            OpaqueData::parse(&[11, 0, 1, 0, 0x12]).is_err(),
            "bad NVDEC0 status"
        );
        let unknown = OpaqueData::parse(&[0x99, 0, 1, 0, 7]).unwrap();
        assert_eq!(
            unknown.get(0x99),
            Some(&[7u8][..]),
            "unknown types are kept"
        );
        let dup = synthetic(&[(1, vec![0; 48]), (1, vec![0; 48])], &[]);
        assert!(matches!(parse(&dup), Err(SpdmError::Record(_))));
    }
}
