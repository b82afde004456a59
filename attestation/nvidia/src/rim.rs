//! NVIDIA reference integrity manifests (RIMs): ISO/IEC 19770-2 SWID tags
//! (TCG RIM information model) listing the golden measurements of one driver
//! or one VBIOS, each `Resource type="Measurement"` with an `index` (0-based:
//! RIM index `i` is SPDM measurement block `i + 1`), `active`, `size` and
//! `alternatives` hashes `Hash0..HashN`.
//!
//! The RIM's XML signature (XML-DSig with C14N 1.1, chained to NVIDIA's RIM
//! root) is **not** verified here: RIMs must come from a source the caller
//! trusts (files shipped with the verifier, or NVIDIA's RIM service over TLS).
//! [`Rim::has_signature`] only says whether a signature element is present.

use base64::Engine;
use dc_attestation_common::fetch::{FetchError, Fetcher};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use serde::Serialize;

use crate::spdm::SpdmMeasurements;

/// NVIDIA's RIM service; a RIM is at `RIM_SERVICE_URL + rim_id`.
pub const RIM_SERVICE_URL: &str = "https://rim.attestation.nvidia.com/v1/rim/";
/// Longest RIM accepted (the samples are about 20 KiB).
pub const MAX_RIM_LEN: usize = 1024 * 1024;
/// Most measurement entries accepted in one RIM.
pub const MAX_MEASUREMENTS: usize = 1024;
/// Most alternative hashes accepted for one measurement.
pub const MAX_ALTERNATIVES: usize = 64;
/// Largest measurement (bytes) accepted.
pub const MAX_MEASUREMENT_SIZE: usize = 1024;
/// RIM index that nvtrust skips when NVDEC0 is disabled in the report.
pub const NVDEC0_RIM_INDEX: u32 = 35;

/// Why a RIM does not parse or cannot be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RimError {
    #[error("RIM is {actual} bytes, at most {limit} are accepted")]
    TooLarge { actual: usize, limit: usize },
    #[error("RIM is not well-formed XML: {0}")]
    Xml(String),
    #[error("RIM root element is {0:?}, expected SoftwareIdentity")]
    NotSoftwareIdentity(String),
    #[error("RIM measurement {index:?}: {reason}")]
    Measurement { index: Option<u32>, reason: String },
    #[error("RIM has no measurement entries")]
    NoMeasurements,
    #[error("RIM has more than {MAX_MEASUREMENTS} measurement entries")]
    TooManyMeasurements,
    #[error("fetching RIM {rim_id}: {reason}")]
    Fetch { rim_id: String, reason: String },
}

/// Whether a RIM describes the driver or the VBIOS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RimKind {
    Driver,
    Vbios,
}

/// One golden measurement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RimMeasurement {
    /// 0-based; compared with SPDM block `index + 1`.
    pub index: u32,
    pub name: String,
    /// Only active measurements are compared.
    pub active: bool,
    /// Size in bytes of each alternative.
    pub size: usize,
    /// Accepted values (`Hash0..HashN`); the report must equal one of them.
    pub alternatives: Vec<Vec<u8>>,
}

/// A parsed reference integrity manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rim {
    pub tag_id: String,
    /// Product name of the SWID tag, e.g. `GH100`.
    pub name: String,
    /// `Meta/@colloquialVersion`: the driver (`545.00`) or VBIOS (`96.00.5E.00.01`) version.
    pub version: String,
    pub product: Option<String>,
    pub platform_manufacturer_id: Option<String>,
    /// Driver or VBIOS, inferred from the version's shape (five dot-separated
    /// hex pairs is a VBIOS version); override with [`Rim::with_kind`].
    pub kind: RimKind,
    pub measurements: Vec<RimMeasurement>,
    /// Whether an XML signature element is present (it is not verified).
    pub has_signature: bool,
}

impl Rim {
    /// The same RIM with its kind set by the caller.
    pub fn with_kind(mut self, kind: RimKind) -> Self {
        self.kind = kind;
        self
    }

    /// The active measurements.
    pub fn active(&self) -> impl Iterator<Item = &RimMeasurement> {
        self.measurements.iter().filter(|m| m.active)
    }
}

fn is_vbios_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() == 5
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Parses a RIM (SWID tag XML).
pub fn parse(xml: &[u8]) -> Result<Rim, RimError> {
    if xml.len() > MAX_RIM_LEN {
        return Err(RimError::TooLarge {
            actual: xml.len(),
            limit: MAX_RIM_LEN,
        });
    }
    let mut reader = Reader::from_reader(xml);
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    let mut root_seen = false;
    let mut rim = Rim {
        tag_id: String::new(),
        name: String::new(),
        version: String::new(),
        product: None,
        platform_manufacturer_id: None,
        kind: RimKind::Driver,
        measurements: Vec::new(),
        has_signature: false,
    };
    let mut meta_seen = false;
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| RimError::Xml(format!("at byte {}: {e}", reader.buffer_position())))?;
        match event {
            Event::Start(e) | Event::Empty(e) => {
                let local = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if !root_seen {
                    if local != "SoftwareIdentity" {
                        return Err(RimError::NotSoftwareIdentity(local));
                    }
                    root_seen = true;
                    rim.tag_id = attr(&reader, &e, "tagId")?.unwrap_or_default();
                    rim.name = attr(&reader, &e, "name")?.unwrap_or_default();
                    continue;
                }
                match local.as_str() {
                    "Meta" if !meta_seen => {
                        meta_seen = true;
                        rim.version = attr(&reader, &e, "colloquialVersion")?.unwrap_or_default();
                        rim.product = attr(&reader, &e, "product")?;
                        rim.platform_manufacturer_id = attr(&reader, &e, "PlatformManufacturerId")?;
                    }
                    "Resource" => {
                        if let Some(m) = parse_resource(&reader, &e)? {
                            if rim.measurements.len() >= MAX_MEASUREMENTS {
                                return Err(RimError::TooManyMeasurements);
                            }
                            if rim.measurements.iter().any(|x| x.index == m.index) {
                                return Err(RimError::Measurement {
                                    index: Some(m.index),
                                    reason: "index appears twice".into(),
                                });
                            }
                            rim.measurements.push(m);
                        }
                    }
                    "Signature" => rim.has_signature = true,
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !root_seen {
        return Err(RimError::NotSoftwareIdentity(String::new()));
    }
    if rim.measurements.is_empty() {
        return Err(RimError::NoMeasurements);
    }
    rim.kind = if is_vbios_version(&rim.version) {
        RimKind::Vbios
    } else {
        RimKind::Driver
    };
    Ok(rim)
}

/// The value of an attribute by local name (namespace prefix ignored).
fn attr(reader: &Reader<&[u8]>, e: &BytesStart, name: &str) -> Result<Option<String>, RimError> {
    for a in e.attributes() {
        let a = a.map_err(|err| RimError::Xml(err.to_string()))?;
        if a.key.local_name().as_ref() == name.as_bytes() {
            let v = a
                .decode_and_unescape_value(reader.decoder())
                .map_err(|err| RimError::Xml(err.to_string()))?;
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

fn parse_resource(
    reader: &Reader<&[u8]>,
    e: &BytesStart,
) -> Result<Option<RimMeasurement>, RimError> {
    let mut kind = None;
    let mut index = None;
    let mut active = None;
    let mut alternatives_count = None;
    let mut size = None;
    let mut name = String::new();
    let mut hashes: Vec<(usize, String)> = Vec::new();
    let bad = |index: Option<u32>, reason: String| RimError::Measurement { index, reason };
    for a in e.attributes() {
        let a = a.map_err(|err| RimError::Xml(err.to_string()))?;
        let key = String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned();
        let value = a
            .decode_and_unescape_value(reader.decoder())
            .map_err(|err| RimError::Xml(err.to_string()))?
            .into_owned();
        match key.as_str() {
            "type" => kind = Some(value),
            "index" => index = Some(value),
            "active" => active = Some(value),
            "alternatives" => alternatives_count = Some(value),
            "size" => size = Some(value),
            "name" => name = value,
            k => {
                if let Some(n) = k.strip_prefix("Hash") {
                    let n: usize = n
                        .parse()
                        .map_err(|_| bad(None, format!("attribute {k} is not HashN")))?;
                    if hashes.len() >= MAX_ALTERNATIVES || n >= MAX_ALTERNATIVES {
                        return Err(bad(
                            None,
                            format!("more than {MAX_ALTERNATIVES} alternatives"),
                        ));
                    }
                    hashes.push((n, value));
                }
            }
        }
    }
    if kind.as_deref() != Some("Measurement") {
        return Ok(None);
    }
    let index: u32 = index
        .ok_or_else(|| bad(None, "no index attribute".into()))?
        .trim()
        .parse()
        .map_err(|_| bad(None, "index is not a number".into()))?;
    if index > 254 {
        return Err(bad(Some(index), "index above 254 has no SPDM block".into()));
    }
    let idx = Some(index);
    let active = match active.as_deref().map(|s| s.trim().to_ascii_lowercase()) {
        Some(s) if s == "true" => true,
        Some(s) if s == "false" => false,
        other => {
            return Err(bad(
                idx,
                format!("active is {other:?}, expected True or False"),
            ))
        }
    };
    let size: usize = size
        .ok_or_else(|| bad(idx, "no size attribute".into()))?
        .trim()
        .parse()
        .map_err(|_| bad(idx, "size is not a number".into()))?;
    if size == 0 || size > MAX_MEASUREMENT_SIZE {
        return Err(bad(
            idx,
            format!("size {size} outside 1..={MAX_MEASUREMENT_SIZE}"),
        ));
    }
    let count: usize = alternatives_count
        .ok_or_else(|| bad(idx, "no alternatives attribute".into()))?
        .trim()
        .parse()
        .map_err(|_| bad(idx, "alternatives is not a number".into()))?;
    hashes.sort_by_key(|(n, _)| *n);
    if count == 0 || hashes.len() != count || hashes.iter().enumerate().any(|(i, (n, _))| i != *n) {
        return Err(bad(
            idx,
            format!(
                "alternatives says {count}, found hashes {:?}",
                hashes.iter().map(|(n, _)| *n).collect::<Vec<_>>()
            ),
        ));
    }
    let mut alternatives = Vec::with_capacity(count);
    for (n, h) in hashes {
        let bytes =
            hex::decode(h.trim()).map_err(|e| bad(idx, format!("Hash{n} is not hex: {e}")))?;
        if bytes.len() != size {
            return Err(bad(
                idx,
                format!("Hash{n} is {} bytes, size says {size}", bytes.len()),
            ));
        }
        alternatives.push(bytes);
    }
    Ok(Some(RimMeasurement {
        index,
        name,
        active,
        size,
        alternatives,
    }))
}

/// One active golden measurement the report does not match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RimMismatch {
    /// RIM index (0-based); the SPDM block is `rim_index + 1`.
    pub rim_index: u32,
    /// Tag id of the RIM that holds the golden value.
    pub rim_tag_id: String,
    /// The report's value, hex; `None` when the report has no such block.
    pub reported: Option<String>,
    /// The accepted values, hex.
    pub expected: Vec<String>,
}

/// Result of comparing the report's measurements with the RIMs' active ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RimComparison {
    /// Active golden measurements compared.
    pub compared: usize,
    /// Indexes skipped, with the reason (NVDEC0 disabled, as nvtrust does).
    pub skipped: Vec<(u32, String)>,
    pub mismatches: Vec<RimMismatch>,
    /// RIM indexes active in more than one RIM (nvtrust rejects this).
    pub conflicts: Vec<u32>,
}

impl RimComparison {
    pub fn ok(&self) -> bool {
        self.mismatches.is_empty() && self.conflicts.is_empty() && self.compared > 0
    }
}

/// Compares every active measurement of every RIM with the report's block at
/// `index + 1`: it matches when one alternative equals the block value and has
/// the block's length. As in nvtrust, RIM index 35 is skipped when the report
/// says NVDEC0 is disabled.
pub fn compare(rims: &[Rim], report: &SpdmMeasurements) -> RimComparison {
    let mut out = RimComparison::default();
    let nvdec0_disabled = report.response.opaque.nvdec0_enabled() == Some(false);
    let mut seen: Vec<u32> = Vec::new();
    for rim in rims {
        for m in rim.active() {
            if seen.contains(&m.index) {
                if !out.conflicts.contains(&m.index) {
                    out.conflicts.push(m.index);
                }
                continue;
            }
            seen.push(m.index);
            if m.index == NVDEC0_RIM_INDEX && nvdec0_disabled {
                out.skipped
                    .push((m.index, "NVDEC0 disabled in the report".into()));
                continue;
            }
            out.compared += 1;
            let block = u8::try_from(m.index + 1).ok().and_then(|i| report.block(i));
            let matches = block.is_some_and(|b| m.alternatives.contains(&b.value));
            if !matches {
                out.mismatches.push(RimMismatch {
                    rim_index: m.index,
                    rim_tag_id: rim.tag_id.clone(),
                    reported: block.map(|b| hex::encode(&b.value)),
                    expected: m.alternatives.iter().map(hex::encode).collect(),
                });
            }
        }
    }
    out.mismatches.sort_by_key(|m| m.rim_index);
    out.conflicts.sort_unstable();
    out
}

/// Compares a RIM's version with the report's (case-insensitive, as nvtrust):
/// the driver version for a driver RIM, the VBIOS version for a VBIOS RIM.
pub fn check_version(rim: &Rim, report: &SpdmMeasurements) -> Result<String, String> {
    let (what, reported) = match rim.kind {
        RimKind::Driver => ("driver", report.response.opaque.driver_version()),
        RimKind::Vbios => ("VBIOS", report.response.opaque.vbios_version()),
    };
    let reported = reported.ok_or_else(|| format!("the report carries no {what} version"))?;
    if rim.version.eq_ignore_ascii_case(&reported) {
        Ok(format!(
            "{what} RIM {} version {} equals the report's",
            rim.tag_id, rim.version
        ))
    } else {
        Err(format!(
            "{what} RIM {} is for version {}, the report's {what} version is {reported}",
            rim.tag_id, rim.version
        ))
    }
}

/// RIM id of the driver RIM for this report, e.g. `NV_GPU_DRIVER_GH100_550.90.07`.
pub fn driver_rim_id(report: &SpdmMeasurements) -> Option<String> {
    Some(format!(
        "NV_GPU_DRIVER_GH100_{}",
        report.response.opaque.driver_version()?
    ))
}

/// RIM id of the VBIOS RIM, e.g. `NV_GPU_VBIOS_1010_0200_882_96009F0001`.
pub fn vbios_rim_id(report: &SpdmMeasurements) -> Option<String> {
    let o = &report.response.opaque;
    let vbios = o.vbios_version()?.replace('.', "").to_ascii_uppercase();
    Some(format!(
        "NV_GPU_VBIOS_{}_{}_{}_{}",
        o.project()?,
        o.project_sku()?,
        o.chip_sku()?,
        vbios
    ))
}

/// Fetches a RIM by id from NVIDIA's RIM service (JSON with the SWID tag in
/// base64 under `"rim"`) through `fetcher` (wrap it in a
/// [`dc_attestation_common::fetch::CachingFetcher`] to keep what was fetched),
/// and parses it. The fetched RIM's XML signature is not verified.
pub fn fetch(fetcher: &dyn Fetcher, rim_id: &str) -> Result<Rim, RimError> {
    let fail = |reason: String| RimError::Fetch {
        rim_id: rim_id.to_string(),
        reason,
    };
    if rim_id.is_empty()
        || !rim_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(fail(
            "RIM id must be letters, digits, '.', '_' or '-'".into(),
        ));
    }
    let url = format!("{RIM_SERVICE_URL}{rim_id}");
    let response = fetcher
        .get(&url)
        .map_err(|e: FetchError| fail(e.to_string()))?;
    if response.status != 200 {
        return Err(fail(format!("HTTP status {}", response.status)));
    }
    if response.body.len() > MAX_RIM_LEN * 2 {
        return Err(fail(format!("response is {} bytes", response.body.len())));
    }
    #[derive(serde::Deserialize)]
    struct RimServiceResponse {
        rim: String,
    }
    let parsed: RimServiceResponse = serde_json::from_slice(&response.body)
        .map_err(|e| fail(format!("response is not RIM service JSON: {e}")))?;
    let xml = base64::engine::general_purpose::STANDARD
        .decode(parsed.rim.trim())
        .map_err(|e| fail(format!("rim is not base64: {e}")))?;
    parse(&xml)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn rim_xml(version: &str, resources: &str) -> String {
        format!(
            r#"<SoftwareIdentity xmlns="http://standards.iso.org/iso/19770/-2/2015/schema.xsd" xmlns:ns0="http://standards.iso.org/iso/19770/-2/2015/schema.xsd" xmlns:ns2="http://www.w3.org/2001/04/xmlenc#sha384" name="GH100" tagId="t1" version="1.0">
<ns0:Meta colloquialVersion="{version}" product="GH100"/>
<ns0:Payload>{resources}</ns0:Payload></SoftwareIdentity>"#
        )
    }

    fn res(index: u32, active: &str, hashes: &[&str]) -> String {
        let mut h = String::new();
        for (i, x) in hashes.iter().enumerate() {
            h.push_str(&format!(r#" ns2:Hash{i}="{x}""#));
        }
        format!(
            r#"<ns0:Resource type="Measurement" index="{index}" active="{active}" alternatives="{}"{h} name="M{index}" size="2"/>"#,
            hashes.len()
        )
    }

    #[test]
    fn parses_a_small_rim() {
        let xml = rim_xml(
            "96.00.5E.00.01",
            &(res(0, "True", &["0102"]) + &res(1, "False", &["0000", "ffff"])),
        );
        let rim = parse(xml.as_bytes()).unwrap();
        assert_eq!(rim.kind, RimKind::Vbios);
        assert_eq!(rim.tag_id, "t1");
        assert_eq!(rim.measurements.len(), 2);
        assert_eq!(
            rim.measurements[1].alternatives,
            vec![vec![0, 0], vec![0xff, 0xff]]
        );
        assert_eq!(rim.active().count(), 1);
        assert!(!rim.has_signature);
        assert_eq!(
            parse(rim_xml("550.90.07", &res(0, "True", &["0102"])).as_bytes())
                .unwrap()
                .kind,
            RimKind::Driver
        );
    }

    #[test]
    fn rejects_bad_rims() {
        let cases = [
            rim_xml("1", &res(0, "Maybe", &["0102"])),
            rim_xml("1", &res(0, "True", &["01"])),
            rim_xml("1", &res(0, "True", &["zz02"])),
            rim_xml(
                "1",
                &(res(0, "True", &["0102"]) + &res(0, "True", &["0102"])),
            ),
            rim_xml(
                "1",
                r#"<ns0:Resource type="Measurement" index="0" active="True" alternatives="2" ns2:Hash0="0102" size="2"/>"#,
            ),
            rim_xml("1", ""),
            "<Other/>".to_string(),
            "<SoftwareIdentity><unclosed></SoftwareIdentity>".to_string(),
            String::new(),
        ];
        for xml in cases {
            assert!(parse(xml.as_bytes()).is_err(), "accepted {xml}");
        }
        assert!(matches!(
            parse(&vec![b' '; MAX_RIM_LEN + 1]),
            Err(RimError::TooLarge { .. })
        ));
    }
}
