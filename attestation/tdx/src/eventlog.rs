//! TDX event logs: parse, check each event's digest against its payload, and
//! replay them into the four RTMRs.
//!
//! Two encodings are accepted:
//!
//! * the binary CCEL / TCG2 crypto-agile log (a `TCG_PCR_EVENT` header carrying
//!   the "Spec ID Event03" structure, then `TCG_PCR_EVENT2` entries). The MR
//!   index of a TDX entry is the CC measurement register index: 1..=4 are
//!   RTMR0..RTMR3, 0 is MRTD (never replayed here).
//! * dstack's JSON log: an array of `{imr, event_type, digest, event,
//!   event_payload}` objects where `imr` is the zero-based RTMR index, or an
//!   object with such an array (or its JSON text) under `event_log`.
//!
//! Replay is `RTMR = SHA384(RTMR || digest)` from 48 zero bytes. The digest
//! replayed for an event whose digest is defined as a hash of its own payload
//! is the one recomputed here, never the stored one; an event whose digest
//! covers something outside the log (a PE image, ACPI tables, a firmware
//! volume) replays its stored digest and is reported as not recomputable so a
//! caller can compare it with a predicted value.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha384};

/// Largest event log accepted, binary or JSON.
pub const MAX_LOG_BYTES: usize = 16 * 1024 * 1024;
/// Most events accepted in one log.
pub const MAX_EVENTS: usize = 8192;
/// Largest single event payload accepted.
pub const MAX_EVENT_DATA_BYTES: usize = 1024 * 1024;
/// Most digest algorithms a crypto-agile log may declare.
const MAX_ALGORITHMS: u32 = 16;

/// TPM_ALG_SHA384.
pub const TPM_ALG_SHA384: u16 = 0x000C;

/// TCG event types referred to by name.
pub mod event_type {
    pub const EV_POST_CODE: u32 = 0x1;
    pub const EV_NO_ACTION: u32 = 0x3;
    pub const EV_SEPARATOR: u32 = 0x4;
    pub const EV_ACTION: u32 = 0x5;
    pub const EV_EVENT_TAG: u32 = 0x6;
    pub const EV_S_CRTM_CONTENTS: u32 = 0x7;
    pub const EV_S_CRTM_VERSION: u32 = 0x8;
    pub const EV_CPU_MICROCODE: u32 = 0x9;
    pub const EV_PLATFORM_CONFIG_FLAGS: u32 = 0xa;
    pub const EV_TABLE_OF_DEVICES: u32 = 0xb;
    pub const EV_COMPACT_HASH: u32 = 0xc;
    pub const EV_IPL: u32 = 0xd;
    pub const EV_IPL_PARTITION_DATA: u32 = 0xe;
    pub const EV_NONHOST_CODE: u32 = 0xf;
    pub const EV_NONHOST_CONFIG: u32 = 0x10;
    pub const EV_NONHOST_INFO: u32 = 0x11;
    pub const EV_OMIT_BOOT_DEVICE_EVENTS: u32 = 0x12;
    pub const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
    pub const EV_EFI_VARIABLE_BOOT: u32 = 0x8000_0002;
    pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
    pub const EV_EFI_BOOT_SERVICES_DRIVER: u32 = 0x8000_0004;
    pub const EV_EFI_RUNTIME_SERVICES_DRIVER: u32 = 0x8000_0005;
    pub const EV_EFI_GPT_EVENT: u32 = 0x8000_0006;
    pub const EV_EFI_ACTION: u32 = 0x8000_0007;
    pub const EV_EFI_PLATFORM_FIRMWARE_BLOB: u32 = 0x8000_0008;
    pub const EV_EFI_HANDOFF_TABLES: u32 = 0x8000_0009;
    pub const EV_EFI_PLATFORM_FIRMWARE_BLOB2: u32 = 0x8000_000a;
    pub const EV_EFI_HANDOFF_TABLES2: u32 = 0x8000_000b;
    pub const EV_EFI_VARIABLE_BOOT2: u32 = 0x8000_000c;
    pub const EV_EFI_GPT_EVENT2: u32 = 0x8000_000d;
    pub const EV_EFI_HCRTM_EVENT: u32 = 0x8000_0010;
    pub const EV_EFI_VARIABLE_AUTHORITY: u32 = 0x8000_00e0;
    pub const EV_EFI_SPDM_FIRMWARE_BLOB: u32 = 0x8000_00e1;
    pub const EV_EFI_SPDM_FIRMWARE_CONFIG: u32 = 0x8000_00e2;
    /// dstack runtime events (RTMR3); not a TCG type.
    pub const DSTACK_RUNTIME_EVENT: u32 = 0x0800_0001;
}

use event_type::*;

/// The name of a TCG (or dstack) event type, or "unknown".
pub fn event_type_name(t: u32) -> &'static str {
    match t {
        0x0 => "EV_PREBOOT_CERT",
        EV_POST_CODE => "EV_POST_CODE",
        0x2 => "EV_UNUSED",
        EV_NO_ACTION => "EV_NO_ACTION",
        EV_SEPARATOR => "EV_SEPARATOR",
        EV_ACTION => "EV_ACTION",
        EV_EVENT_TAG => "EV_EVENT_TAG",
        EV_S_CRTM_CONTENTS => "EV_S_CRTM_CONTENTS",
        EV_S_CRTM_VERSION => "EV_S_CRTM_VERSION",
        EV_CPU_MICROCODE => "EV_CPU_MICROCODE",
        EV_PLATFORM_CONFIG_FLAGS => "EV_PLATFORM_CONFIG_FLAGS",
        EV_TABLE_OF_DEVICES => "EV_TABLE_OF_DEVICES",
        EV_COMPACT_HASH => "EV_COMPACT_HASH",
        EV_IPL => "EV_IPL",
        EV_IPL_PARTITION_DATA => "EV_IPL_PARTITION_DATA",
        EV_NONHOST_CODE => "EV_NONHOST_CODE",
        EV_NONHOST_CONFIG => "EV_NONHOST_CONFIG",
        EV_NONHOST_INFO => "EV_NONHOST_INFO",
        EV_OMIT_BOOT_DEVICE_EVENTS => "EV_OMIT_BOOT_DEVICE_EVENTS",
        EV_EFI_VARIABLE_DRIVER_CONFIG => "EV_EFI_VARIABLE_DRIVER_CONFIG",
        EV_EFI_VARIABLE_BOOT => "EV_EFI_VARIABLE_BOOT",
        EV_EFI_BOOT_SERVICES_APPLICATION => "EV_EFI_BOOT_SERVICES_APPLICATION",
        EV_EFI_BOOT_SERVICES_DRIVER => "EV_EFI_BOOT_SERVICES_DRIVER",
        EV_EFI_RUNTIME_SERVICES_DRIVER => "EV_EFI_RUNTIME_SERVICES_DRIVER",
        EV_EFI_GPT_EVENT => "EV_EFI_GPT_EVENT",
        EV_EFI_ACTION => "EV_EFI_ACTION",
        EV_EFI_PLATFORM_FIRMWARE_BLOB => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        EV_EFI_HANDOFF_TABLES => "EV_EFI_HANDOFF_TABLES",
        EV_EFI_PLATFORM_FIRMWARE_BLOB2 => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
        EV_EFI_HANDOFF_TABLES2 => "EV_EFI_HANDOFF_TABLES2",
        EV_EFI_VARIABLE_BOOT2 => "EV_EFI_VARIABLE_BOOT2",
        EV_EFI_GPT_EVENT2 => "EV_EFI_GPT_EVENT2",
        EV_EFI_HCRTM_EVENT => "EV_EFI_HCRTM_EVENT",
        EV_EFI_VARIABLE_AUTHORITY => "EV_EFI_VARIABLE_AUTHORITY",
        EV_EFI_SPDM_FIRMWARE_BLOB => "EV_EFI_SPDM_FIRMWARE_BLOB",
        EV_EFI_SPDM_FIRMWARE_CONFIG => "EV_EFI_SPDM_FIRMWARE_CONFIG",
        DSTACK_RUNTIME_EVENT => "DSTACK_RUNTIME_EVENT",
        _ => "unknown",
    }
}

/// Why an event log was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventLogError {
    #[error("event log is empty")]
    Empty,
    #[error("event log is {actual} bytes, at most {limit} accepted")]
    TooLarge { actual: usize, limit: usize },
    #[error("event log has more than {limit} events")]
    TooManyEvents { limit: usize },
    #[error("event log truncated at byte {offset}: expected {what}")]
    Truncated { offset: usize, what: &'static str },
    #[error("event log header: {0}")]
    BadHeader(String),
    #[error("event log declares no SHA-384 digests (TDX RTMRs are SHA-384)")]
    NoSha384,
    #[error("event {index}: digest algorithm {alg:#06x} is not declared in the log header")]
    UnknownAlgorithm { index: usize, alg: u16 },
    #[error("event {index}: expected exactly one SHA-384 digest, found {found}")]
    Sha384Count { index: usize, found: usize },
    #[error("event {index}: MR index {mr_index} is not a TDX measurement register (0..=4 in CCEL, 0..=3 in JSON)")]
    InvalidMrIndex { index: usize, mr_index: u64 },
    #[error("event {index}: payload of {size} bytes exceeds the limit of {limit}")]
    EventTooLarge {
        index: usize,
        size: u64,
        limit: usize,
    },
    #[error("JSON event log: {0}")]
    Json(String),
    #[error("event {index}: field {field} is not hex: {reason}")]
    BadHex {
        index: usize,
        field: &'static str,
        reason: String,
    },
    #[error("event {index}: digest is {len} bytes, expected 48 (SHA-384)")]
    BadDigestLength { index: usize, len: usize },
    #[error("event {index}: no digest and no payload to recompute one from")]
    MissingDigest { index: usize },
    #[error("event {index}: dstack event log version {version} is not supported (only version 1)")]
    UnsupportedDstackVersion { index: usize, version: u32 },
}

/// One measured event, in either encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The RTMR (0..=3) the event extends; `None` when it extends no RTMR
    /// (EV_NO_ACTION, or a CCEL entry for MR index 0 = MRTD).
    pub rtmr: Option<u8>,
    /// TCG event type (or dstack's runtime type 0x08000001).
    pub event_type: u32,
    /// SHA-384 digest as stored in the log; `None` for dstack runtime events
    /// logged without one.
    pub stored_digest: Option<[u8; 48]>,
    /// Event name (dstack runtime events; empty otherwise).
    pub name: String,
    /// Event payload as logged (may be stripped in dstack's "lite" logs).
    pub data: Vec<u8>,
    /// True when the payload was omitted by the producer (dstack JSON with an
    /// empty `event_payload` but a digest): the digest cannot be recomputed.
    pub payload_stripped: bool,
    /// Which encoding the event came from.
    pub source: LogFormat,
}

/// The encoding of an event log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum LogFormat {
    /// Binary CCEL / TCG2 crypto-agile log.
    Ccel,
    /// dstack's JSON log.
    DstackJson,
}

/// What checking an event's digest against its payload found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DigestCheck {
    /// The digest is defined as a hash of the payload and was recomputed
    /// (and equals the stored one, when the log stores one).
    Recomputed { digest: [u8; 48] },
    /// The stored digest differs from the one recomputed from the payload.
    Mismatch {
        stored: [u8; 48],
        computed: [u8; 48],
    },
    /// The digest covers content outside the log (PE image, ACPI tables, ...):
    /// the stored digest is replayed and must be compared with a prediction.
    NotRecomputable { digest: [u8; 48] },
    /// The producer stripped the payload; the stored digest is replayed.
    PayloadStripped { digest: [u8; 48] },
    /// The event extends no RTMR.
    NotExtended,
}

impl DigestCheck {
    /// Short label used in reports.
    pub fn label(&self) -> &'static str {
        match self {
            DigestCheck::Recomputed { .. } => "recomputed",
            DigestCheck::Mismatch { .. } => "mismatch",
            DigestCheck::NotRecomputable { .. } => "not_recomputable",
            DigestCheck::PayloadStripped { .. } => "payload_stripped",
            DigestCheck::NotExtended => "not_extended",
        }
    }
}

/// How an event's digest is derived from its payload, when it is.
enum Recipe {
    /// SHA-384 of the whole payload.
    WholePayload,
    /// EV_EFI_VARIABLE_BOOT: edk2 hashes only the VariableData of the
    /// UEFI_VARIABLE_DATA payload; the PC Client profile says the whole
    /// structure. Either is accepted (both are fixed functions of the payload).
    VariableDataOrWhole,
    /// dstack runtime event v1: SHA-384(type_le || ":" || name || ":" || payload).
    DstackRuntimeV1,
    /// Digest of something the log does not carry.
    External,
}

fn recipe(event_type: u32, source: LogFormat) -> Recipe {
    match event_type {
        // Defined as the hash of the event data (TCG PC Client PFP; edk2
        // Tcg2Dxe / TdTcg2Dxe measure these with the event data as the hashed
        // buffer).
        EV_SEPARATOR
        | EV_ACTION
        | EV_S_CRTM_VERSION
        | EV_EFI_ACTION
        | EV_EFI_VARIABLE_DRIVER_CONFIG
        | EV_EFI_VARIABLE_BOOT2
        | EV_EFI_VARIABLE_AUTHORITY
        | EV_EFI_GPT_EVENT => Recipe::WholePayload,
        EV_EFI_VARIABLE_BOOT => Recipe::VariableDataOrWhole,
        // Only JSON carries the event name the digest covers; a binary
        // record of a runtime event does not (its layout is dstack's own).
        DSTACK_RUNTIME_EVENT if source == LogFormat::DstackJson => Recipe::DstackRuntimeV1,
        // EV_EFI_BOOT_SERVICES_APPLICATION/DRIVER: Authenticode hash of a PE
        // image; EV_EFI_PLATFORM_FIRMWARE_BLOB2: a firmware volume;
        // EV_EFI_HANDOFF_TABLES2: the TD HOB / tables; EV_PLATFORM_CONFIG_FLAGS:
        // QEMU's ACPI tables; EV_EVENT_TAG: the Linux EFI stub's initrd or
        // command line; EV_IPL: depends on the boot loader.
        _ => Recipe::External,
    }
}

fn sha384(parts: &[&[u8]]) -> [u8; 48] {
    let mut h = Sha384::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// VariableData of a UEFI_VARIABLE_DATA structure (GUID, name length in
/// UTF-16 units, data length, name, data), when it parses exactly.
fn uefi_variable_data(payload: &[u8]) -> Option<&[u8]> {
    let name_units = u64::from_le_bytes(payload.get(16..24)?.try_into().ok()?);
    let data_len = u64::from_le_bytes(payload.get(24..32)?.try_into().ok()?);
    let name_bytes = usize::try_from(name_units).ok()?.checked_mul(2)?;
    let data_start = 32usize.checked_add(name_bytes)?;
    let data_end = data_start.checked_add(usize::try_from(data_len).ok()?)?;
    if data_end != payload.len() {
        return None;
    }
    payload.get(data_start..data_end)
}

impl Event {
    /// Checks the digest against the payload (see [`DigestCheck`]).
    pub fn digest_check(&self) -> DigestCheck {
        if self.rtmr.is_none() {
            return DigestCheck::NotExtended;
        }
        let stored = self.stored_digest;
        let candidates: Vec<[u8; 48]> = match recipe(self.event_type, self.source) {
            _ if self.payload_stripped => {
                return match stored {
                    Some(digest) => DigestCheck::PayloadStripped { digest },
                    // Rejected at parse time; reported as stripped with zeros
                    // so the function stays total.
                    None => DigestCheck::PayloadStripped { digest: [0; 48] },
                };
            }
            Recipe::External => {
                return DigestCheck::NotRecomputable {
                    digest: stored.unwrap_or([0; 48]),
                };
            }
            Recipe::WholePayload => vec![sha384(&[&self.data])],
            Recipe::VariableDataOrWhole => {
                let mut c = Vec::with_capacity(2);
                if let Some(var) = uefi_variable_data(&self.data) {
                    c.push(sha384(&[var]));
                }
                c.push(sha384(&[&self.data]));
                c
            }
            Recipe::DstackRuntimeV1 => vec![sha384(&[
                &DSTACK_RUNTIME_EVENT.to_le_bytes(),
                b":",
                self.name.as_bytes(),
                b":",
                &self.data,
            ])],
        };
        let first = candidates.first().copied().unwrap_or([0; 48]);
        match stored {
            None => DigestCheck::Recomputed { digest: first },
            Some(s) if candidates.contains(&s) => DigestCheck::Recomputed { digest: s },
            Some(s) => DigestCheck::Mismatch {
                stored: s,
                computed: first,
            },
        }
    }

    /// The digest replay extends: the recomputed one where the payload
    /// defines it, else the stored one. `None` when the event extends no RTMR.
    pub fn replay_digest(&self) -> Option<[u8; 48]> {
        match self.digest_check() {
            DigestCheck::Recomputed { digest }
            | DigestCheck::NotRecomputable { digest }
            | DigestCheck::PayloadStripped { digest } => Some(digest),
            DigestCheck::Mismatch { computed, .. } => Some(computed),
            DigestCheck::NotExtended => None,
        }
    }
}

/// One event as reported in a verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventSummary {
    /// Position in the log (0-based, header excluded).
    pub index: usize,
    /// RTMR extended, if any.
    pub rtmr: Option<u8>,
    pub event_type: u32,
    pub event_type_name: &'static str,
    /// dstack runtime event name (empty for TCG events).
    pub name: String,
    /// Digest replayed into the RTMR (hex), empty when not extended.
    pub digest: String,
    /// "recomputed", "mismatch", "not_recomputable", "payload_stripped" or "not_extended".
    pub digest_check: &'static str,
    /// For a mismatch: the stored digest (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_digest: Option<String>,
    pub payload_len: usize,
}

/// Summaries of all events, in log order.
pub fn summarize(events: &[Event]) -> Vec<EventSummary> {
    events
        .iter()
        .enumerate()
        .map(|(index, e)| {
            let check = e.digest_check();
            let stored_digest = match &check {
                DigestCheck::Mismatch { stored, .. } => Some(hex::encode(stored)),
                _ => None,
            };
            EventSummary {
                index,
                rtmr: e.rtmr,
                event_type: e.event_type,
                event_type_name: event_type_name(e.event_type),
                name: e.name.clone(),
                digest: e.replay_digest().map(hex::encode).unwrap_or_default(),
                digest_check: check.label(),
                stored_digest,
                payload_len: e.data.len(),
            }
        })
        .collect()
}

/// Replays the events into RTMR0..RTMR3, starting from zeros.
pub fn replay(events: &[Event]) -> [[u8; 48]; 4] {
    let mut rtmrs = [[0u8; 48]; 4];
    for event in events {
        let (Some(index), Some(digest)) = (event.rtmr, event.replay_digest()) else {
            continue;
        };
        if let Some(rtmr) = rtmrs.get_mut(usize::from(index)) {
            *rtmr = sha384(&[rtmr.as_slice(), &digest]);
        }
    }
    rtmrs
}

/// Parses a binary CCEL/TCG2 log or a dstack JSON log (detected by its first
/// non-blank byte being `[` or `{`).
pub fn parse(bytes: &[u8]) -> Result<Vec<Event>, EventLogError> {
    if bytes.len() > MAX_LOG_BYTES {
        return Err(EventLogError::TooLarge {
            actual: bytes.len(),
            limit: MAX_LOG_BYTES,
        });
    }
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Err(EventLogError::Empty),
        Some(b'[') | Some(b'{') => parse_json(bytes),
        Some(_) => parse_binary(bytes),
    }
}

/// A bounds-checked little-endian reader.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], EventLogError> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| self.bytes.get(self.pos..end)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(EventLogError::Truncated {
                offset: self.pos,
                what,
            }),
        }
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, EventLogError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, EventLogError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, EventLogError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or(&[])
    }
}

const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";

fn parse_binary(bytes: &[u8]) -> Result<Vec<Event>, EventLogError> {
    let mut r = Reader { bytes, pos: 0 };
    // TCG_PCR_EVENT (SHA-1 format) carrying TCG_EfiSpecIDEvent.
    let header_index = r.u32("header MR index")?;
    let header_type = r.u32("header event type")?;
    r.take(20, "header SHA-1 digest")?;
    let header_size = r.u32("header event size")? as usize;
    let spec = r.take(header_size, "header Spec ID event")?;
    if header_index != 0 || header_type != EV_NO_ACTION {
        return Err(EventLogError::BadHeader(format!(
            "expected MR index 0 and EV_NO_ACTION, found index {header_index} type {header_type:#x}"
        )));
    }
    let mut s = Reader {
        bytes: spec,
        pos: 0,
    };
    let signature = s.take(16, "Spec ID signature")?;
    if signature != SPEC_ID_SIGNATURE {
        return Err(EventLogError::BadHeader(format!(
            "expected signature \"Spec ID Event03\", found {}",
            String::from_utf8_lossy(signature).trim_end_matches('\0')
        )));
    }
    s.take(4 + 4, "Spec ID platform class and version")?;
    let algorithm_count = s.u32("Spec ID algorithm count")?;
    if algorithm_count == 0 || algorithm_count > MAX_ALGORITHMS {
        return Err(EventLogError::BadHeader(format!(
            "expected 1 to {MAX_ALGORITHMS} digest algorithms, found {algorithm_count}"
        )));
    }
    let mut algorithms: Vec<(u16, usize)> = Vec::new();
    for _ in 0..algorithm_count {
        let alg = s.u16("Spec ID algorithm id")?;
        let size = s.u16("Spec ID digest size")?;
        algorithms.push((alg, usize::from(size)));
    }
    match algorithms.iter().find(|(alg, _)| *alg == TPM_ALG_SHA384) {
        Some((_, 48)) => {}
        Some((_, size)) => {
            return Err(EventLogError::BadHeader(format!(
                "SHA-384 declared with size {size}, expected 48"
            )))
        }
        None => return Err(EventLogError::NoSha384),
    }
    let vendor_size = s.u8("Spec ID vendor info size")?;
    s.take(usize::from(vendor_size), "Spec ID vendor info")?;

    let mut events = Vec::new();
    loop {
        let rest = r.rest();
        // End of log: no room for another entry, the CCEL terminator
        // 0xFFFFFFFF (unused CCEL space is 0xFF), or zero padding.
        if rest.len() < 4 || rest[..4] == [0xFF; 4] || rest.iter().all(|&b| b == 0) {
            break;
        }
        let index = events.len();
        if index >= MAX_EVENTS {
            return Err(EventLogError::TooManyEvents { limit: MAX_EVENTS });
        }
        let mr_index = r.u32("event MR index")?;
        let event_type = r.u32("event type")?;
        let digest_count = r.u32("digest count")?;
        if digest_count > algorithm_count {
            return Err(EventLogError::BadHeader(format!(
                "event {index} has {digest_count} digests, the header declares {algorithm_count} algorithms"
            )));
        }
        let mut sha384_digests = Vec::new();
        for _ in 0..digest_count {
            let alg = r.u16("digest algorithm")?;
            let size = algorithms
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, size)| *size)
                .ok_or(EventLogError::UnknownAlgorithm { index, alg })?;
            let digest = r.take(size, "digest")?;
            if alg == TPM_ALG_SHA384 {
                let mut d = [0u8; 48];
                d.copy_from_slice(digest);
                sha384_digests.push(d);
            }
        }
        let size = r.u32("event size")?;
        if size as usize > MAX_EVENT_DATA_BYTES {
            return Err(EventLogError::EventTooLarge {
                index,
                size: u64::from(size),
                limit: MAX_EVENT_DATA_BYTES,
            });
        }
        let data = r.take(size as usize, "event data")?.to_vec();
        let rtmr = match (event_type, mr_index) {
            (EV_NO_ACTION, _) => None,
            (_, 0) => None,
            (_, 1..=4) => Some((mr_index - 1) as u8),
            _ => {
                return Err(EventLogError::InvalidMrIndex {
                    index,
                    mr_index: u64::from(mr_index),
                })
            }
        };
        let stored_digest = match (sha384_digests.as_slice(), rtmr) {
            ([d], _) => Some(*d),
            ([], None) => None,
            (found, _) => {
                return Err(EventLogError::Sha384Count {
                    index,
                    found: found.len(),
                })
            }
        };
        events.push(Event {
            rtmr,
            event_type,
            stored_digest,
            name: String::new(),
            data,
            payload_stripped: false,
            source: LogFormat::Ccel,
        });
    }
    Ok(events)
}

/// One entry of dstack's JSON event log.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEvent {
    imr: u64,
    event_type: u32,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    event: String,
    #[serde(default)]
    event_payload: String,
    #[serde(default)]
    version: Option<u32>,
    /// Optional digest pre-image some dstack versions add; derivable, ignored.
    #[serde(default)]
    #[allow(dead_code)]
    hash_input: Option<String>,
}

fn decode_hex_field(index: usize, field: &'static str, s: &str) -> Result<Vec<u8>, EventLogError> {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    hex::decode(s).map_err(|e| EventLogError::BadHex {
        index,
        field,
        reason: e.to_string(),
    })
}

/// dstack's log is a JSON array of events, or an object (e.g. a whole
/// GetQuote response) whose `event_log` is that array or its JSON text.
fn parse_json(bytes: &[u8]) -> Result<Vec<Event>, EventLogError> {
    let json_err = |e: serde_json::Error| EventLogError::Json(e.to_string());
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(json_err)?;
    let list = match value {
        serde_json::Value::Array(_) => value,
        serde_json::Value::Object(mut map) => match map.remove("event_log") {
            Some(serde_json::Value::String(text)) => {
                serde_json::from_str(&text).map_err(json_err)?
            }
            Some(list) => list,
            None => {
                return Err(EventLogError::Json(
                    "expected an array or an object with event_log".into(),
                ))
            }
        },
        _ => {
            return Err(EventLogError::Json(
                "expected an array or an object with event_log".into(),
            ))
        }
    };
    if list.as_array().is_some_and(|a| a.len() > MAX_EVENTS) {
        return Err(EventLogError::TooManyEvents { limit: MAX_EVENTS });
    }
    parse_json_events(serde_json::from_value(list).map_err(json_err)?)
}

fn parse_json_events(raw: Vec<JsonEvent>) -> Result<Vec<Event>, EventLogError> {
    if raw.len() > MAX_EVENTS {
        return Err(EventLogError::TooManyEvents { limit: MAX_EVENTS });
    }
    let mut events = Vec::with_capacity(raw.len());
    for (index, e) in raw.into_iter().enumerate() {
        if let Some(version) = e.version {
            if version != 1 {
                return Err(EventLogError::UnsupportedDstackVersion { index, version });
            }
        }
        let rtmr = match (e.event_type, e.imr) {
            (EV_NO_ACTION, _) => None,
            (_, 0..=3) => Some(e.imr as u8),
            _ => {
                return Err(EventLogError::InvalidMrIndex {
                    index,
                    mr_index: e.imr,
                })
            }
        };
        let digest = decode_hex_field(index, "digest", &e.digest)?;
        let stored_digest = match digest.len() {
            0 => None,
            48 => {
                let mut d = [0u8; 48];
                d.copy_from_slice(&digest);
                Some(d)
            }
            len => return Err(EventLogError::BadDigestLength { index, len }),
        };
        let data = decode_hex_field(index, "event_payload", &e.event_payload)?;
        if data.len() > MAX_EVENT_DATA_BYTES {
            return Err(EventLogError::EventTooLarge {
                index,
                size: data.len() as u64,
                limit: MAX_EVENT_DATA_BYTES,
            });
        }
        let is_runtime = e.event_type == DSTACK_RUNTIME_EVENT;
        // dstack's "lite" logs drop the payload of boot events and keep the
        // digest; runtime events keep the payload and may drop the digest.
        let payload_stripped =
            !is_runtime && data.is_empty() && stored_digest.is_some_and(|d| d != sha384(&[b""]));
        if rtmr.is_some() && stored_digest.is_none() && !is_runtime {
            return Err(EventLogError::MissingDigest { index });
        }
        events.push(Event {
            rtmr,
            event_type: e.event_type,
            stored_digest,
            name: e.event,
            data,
            payload_stripped,
            source: LogFormat::DstackJson,
        });
    }
    Ok(events)
}

/// Parses `bytes`, checks digests and replays; the result of comparing with a
/// quote's RTMRs is left to the caller ([`crate::verify`] does it).
pub fn parse_and_replay(bytes: &[u8]) -> Result<(Vec<Event>, [[u8; 48]; 4]), EventLogError> {
    let events = parse(bytes)?;
    let rtmrs = replay(&events);
    Ok((events, rtmrs))
}

/// Encodes events as a binary crypto-agile log with SHA-384 digests only
/// (the replay digest of each event). Used by tests and tools that convert
/// a JSON log; MR index = RTMR + 1.
pub fn encode_binary(events: &[Event]) -> Vec<u8> {
    let mut spec = Vec::new();
    spec.extend_from_slice(SPEC_ID_SIGNATURE);
    spec.extend_from_slice(&0u32.to_le_bytes()); // platform class
    spec.extend_from_slice(&[0, 2, 0, 2]); // version 2.0, errata 0, UINTN size 2 (64-bit)
    spec.extend_from_slice(&1u32.to_le_bytes());
    spec.extend_from_slice(&TPM_ALG_SHA384.to_le_bytes());
    spec.extend_from_slice(&48u16.to_le_bytes());
    spec.push(0); // no vendor info
    let mut out = Vec::new();
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
    out.extend_from_slice(&[0u8; 20]);
    out.extend_from_slice(&(spec.len() as u32).to_le_bytes());
    out.extend_from_slice(&spec);
    for e in events {
        let mr_index = e.rtmr.map(|r| u32::from(r) + 1).unwrap_or(0);
        out.extend_from_slice(&mr_index.to_le_bytes());
        out.extend_from_slice(&e.event_type.to_le_bytes());
        match e.stored_digest.or_else(|| e.replay_digest()) {
            Some(d) => {
                out.extend_from_slice(&1u32.to_le_bytes());
                out.extend_from_slice(&TPM_ALG_SHA384.to_le_bytes());
                out.extend_from_slice(&d);
            }
            None => out.extend_from_slice(&0u32.to_le_bytes()),
        }
        out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&e.data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ev(rtmr: u8, event_type: u32, data: &[u8]) -> Event {
        Event {
            rtmr: Some(rtmr),
            event_type,
            stored_digest: Some(sha384(&[data])),
            name: String::new(),
            data: data.to_vec(),
            payload_stripped: false,
            source: LogFormat::Ccel,
        }
    }

    #[test]
    fn replay_is_sha384_chain_from_zeros() {
        let events = vec![ev(0, EV_SEPARATOR, &[0; 4]), ev(2, EV_EFI_ACTION, b"x")];
        let r = replay(&events);
        assert_eq!(r[0], sha384(&[&[0u8; 48], &sha384(&[&[0u8; 4]])]));
        assert_eq!(r[1], [0; 48]);
        assert_eq!(r[2], sha384(&[&[0u8; 48], &sha384(&[b"x"])]));
    }

    #[test]
    fn binary_round_trip_and_tamper() {
        let events = vec![
            ev(0, EV_SEPARATOR, &[0; 4]),
            ev(
                1,
                EV_EFI_ACTION,
                b"Calling EFI Application from Boot Option",
            ),
            ev(1, EV_EFI_BOOT_SERVICES_APPLICATION, b"opaque"),
        ];
        let bin = encode_binary(&events);
        let parsed = parse(&bin).unwrap();
        assert_eq!(parsed, events);
        assert_eq!(parsed[2].digest_check().label(), "not_recomputable");
        // Terminator and padding end the log.
        let mut padded = bin.clone();
        padded.extend_from_slice(&[0xFF; 64]);
        assert_eq!(parse(&padded).unwrap(), events);
        // A changed payload of a recomputable event is a mismatch.
        let mut tampered = events.clone();
        tampered[1].data[0] ^= 1;
        let parsed = parse(&encode_binary(&tampered)).unwrap();
        assert_eq!(parsed[1].digest_check().label(), "mismatch");
        assert_ne!(replay(&parsed), replay(&events));
    }

    #[test]
    fn truncated_binary_is_an_error() {
        let bin = encode_binary(&[ev(0, EV_SEPARATOR, &[0; 4])]);
        for cut in 1..bin.len() {
            let r = parse(&bin[..cut]);
            // A cut inside the header or an entry is an error; a cut that
            // leaves fewer than 4 bytes of the next entry ends the log.
            if let Ok(events) = r {
                assert!(events.is_empty(), "cut {cut}");
            }
        }
    }

    #[test]
    fn huge_length_fields_do_not_allocate() {
        let mut bin = encode_binary(&[]);
        bin.extend_from_slice(&1u32.to_le_bytes());
        bin.extend_from_slice(&EV_SEPARATOR.to_le_bytes());
        bin.extend_from_slice(&1u32.to_le_bytes());
        bin.extend_from_slice(&TPM_ALG_SHA384.to_le_bytes());
        bin.extend_from_slice(&[0; 48]);
        bin.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            parse(&bin),
            Err(EventLogError::EventTooLarge { .. })
        ));
    }

    #[test]
    fn variable_boot_accepts_variable_data_hash() {
        let mut payload = vec![0u8; 16];
        payload.extend_from_slice(&4u64.to_le_bytes());
        payload.extend_from_slice(&2u64.to_le_bytes());
        payload.extend_from_slice(&[b'B', 0, b'o', 0, b'o', 0, b't', 0]);
        payload.extend_from_slice(&[1, 0]);
        let mut e = ev(0, EV_EFI_VARIABLE_BOOT, &payload);
        e.stored_digest = Some(sha384(&[&[1u8, 0]]));
        assert_eq!(e.digest_check().label(), "recomputed");
        e.stored_digest = Some(sha384(&[&payload]));
        assert_eq!(e.digest_check().label(), "recomputed");
        e.stored_digest = Some([7; 48]);
        assert_eq!(e.digest_check().label(), "mismatch");
    }

    #[test]
    fn json_runtime_events_recompute() {
        let json = br#"[{"imr":3,"event_type":134217729,"digest":"","event":"app-id","event_payload":"deadbeef"}]"#;
        let events = parse(json).unwrap();
        let expected = sha384(&[
            &0x0800_0001u32.to_le_bytes(),
            b":",
            b"app-id",
            b":",
            &[0xde, 0xad, 0xbe, 0xef],
        ]);
        assert_eq!(
            events[0].digest_check(),
            DigestCheck::Recomputed { digest: expected }
        );
        let bad = br#"[{"imr":7,"event_type":4,"digest":"","event":"","event_payload":"00"}]"#;
        assert!(matches!(
            parse(bad),
            Err(EventLogError::InvalidMrIndex { .. })
        ));
        let v2 =
            br#"[{"imr":3,"event_type":134217729,"event":"a","event_payload":"","version":2}]"#;
        assert!(matches!(
            parse(v2),
            Err(EventLogError::UnsupportedDstackVersion { .. })
        ));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(events) = parse(&bytes) {
                let _ = replay(&events);
                let _ = summarize(&events);
            }
        }

        #[test]
        fn mutated_binary_never_panics(pos in 0usize..400, val in any::<u8>()) {
            let mut bin = encode_binary(&[
                ev(0, EV_SEPARATOR, &[0; 4]),
                ev(3, EV_EFI_ACTION, b"hello"),
            ]);
            if let Some(b) = bin.get_mut(pos) { *b = val; }
            if let Ok(events) = parse(&bin) {
                let _ = replay(&events);
                let _ = summarize(&events);
            }
        }
    }
}
