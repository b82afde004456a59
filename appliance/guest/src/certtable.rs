//! The SEV-SNP certificate table the host hands the guest with an extended
//! report request, which the kernel passes through as configfs-tsm `auxblob`.
//!
//! Layout (AMD GHCB specification 56421, v2.03 §4.1.8.1, "MSG_REPORT_REQ"
//! extended request; the same table `SNP_SET_EXT_CONFIG` loads on the host):
//!
//! ```text
//! entry[0..n]   16-byte GUID | offset: u32 LE | length: u32 LE    (24 bytes each)
//! entry[n]      all zero: the terminator
//! data          certificates (DER), each at `offset` bytes from the start of
//!               the table, `length` bytes long
//! ```
//!
//! GUIDs are stored in RFC 4122 byte order (the order of the text form), as
//! AMD's `sev-guest` tools, virtee's `sev` crate and go-sev-guest write them.
//! The host is not trusted: everything here is bounded and checked, and a bad
//! table is an error, never a panic. The certificates themselves are only
//! parsed far enough to know they are X.509; whether they chain to AMD is the
//! verifier's business.

use x509_cert::der::Decode;
use x509_cert::Certificate;

/// Size of one table entry: GUID, offset, length.
pub const ENTRY_LEN: usize = 24;
/// Largest `auxblob` accepted. The kernel hands the host 16 KiB for the table
/// and certificates (`SEV_FW_BLOB_MAX_SIZE`); four times that leaves room for
/// larger hosts' buffers while still bounding what a host can make us hold.
pub const MAX_AUXBLOB_BYTES: usize = 64 * 1024;
/// Most entries (before the terminator) accepted: VCEK or VLEK, ASK or
/// ASVK, ARK, a CRL and a few a future host might add.
pub const MAX_CERT_ENTRIES: usize = 16;

/// The GUIDs AMD assigns in the GHCB specification, in table byte order.
pub mod guid {
    /// ARK: AMD root key, c0b406a4-a803-4952-9743-3fb6014cd0ae.
    pub const ARK: [u8; 16] = [
        0xc0, 0xb4, 0x06, 0xa4, 0xa8, 0x03, 0x49, 0x52, 0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c, 0xd0,
        0xae,
    ];
    /// ASK: AMD SEV signing key, 4ab7b379-bbac-4fe4-a02f-05aef327c782. A host
    /// serving a VLEK puts the ASVK (which signs VLEKs) here.
    pub const ASK: [u8; 16] = [
        0x4a, 0xb7, 0xb3, 0x79, 0xbb, 0xac, 0x4f, 0xe4, 0xa0, 0x2f, 0x05, 0xae, 0xf3, 0x27, 0xc7,
        0x82,
    ];
    /// VCEK: versioned chip endorsement key, 63da758d-e664-4564-adc5-f4b93be8accd.
    pub const VCEK: [u8; 16] = [
        0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac,
        0xcd,
    ];
    /// VLEK: versioned loaded endorsement key, a8074bc2-a25a-483e-aae6-39c045a0b8a1.
    pub const VLEK: [u8; 16] = [
        0xa8, 0x07, 0x4b, 0xc2, 0xa2, 0x5a, 0x48, 0x3e, 0xaa, 0xe6, 0x39, 0xc0, 0x45, 0xa0, 0xb8,
        0xa1,
    ];
    /// CRL: AMD certificate revocation list, 92f81bc3-5811-4d3d-97ff-d19f88dc67ea.
    pub const CRL: [u8; 16] = [
        0x92, 0xf8, 0x1b, 0xc3, 0x58, 0x11, 0x4d, 0x3d, 0x97, 0xff, 0xd1, 0x9f, 0x88, 0xdc, 0x67,
        0xea,
    ];
}

/// What an entry holds, from its GUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertKind {
    Vcek,
    Vlek,
    /// The ASK, or the ASVK when the host serves a VLEK.
    Ask,
    Ark,
    Crl,
    /// A GUID this program does not know; kept, but not put in the bundle.
    Other([u8; 16]),
}

impl CertKind {
    /// The kind a GUID names.
    pub fn from_guid(g: [u8; 16]) -> Self {
        match g {
            guid::VCEK => CertKind::Vcek,
            guid::VLEK => CertKind::Vlek,
            guid::ASK => CertKind::Ask,
            guid::ARK => CertKind::Ark,
            guid::CRL => CertKind::Crl,
            other => CertKind::Other(other),
        }
    }

    /// The GUID of this kind.
    pub fn guid(self) -> [u8; 16] {
        match self {
            CertKind::Vcek => guid::VCEK,
            CertKind::Vlek => guid::VLEK,
            CertKind::Ask => guid::ASK,
            CertKind::Ark => guid::ARK,
            CertKind::Crl => guid::CRL,
            CertKind::Other(g) => g,
        }
    }

    /// A short lower-case name, as printed by `dc-guest --json`.
    pub fn name(self) -> String {
        match self {
            CertKind::Vcek => "vcek".into(),
            CertKind::Vlek => "vlek".into(),
            CertKind::Ask => "ask".into(),
            CertKind::Ark => "ark".into(),
            CertKind::Crl => "crl".into(),
            CertKind::Other(g) => format!("guid:{}", guid_text(&g)),
        }
    }

    /// Whether the entry must hold one DER X.509 certificate.
    fn is_certificate(self) -> bool {
        matches!(
            self,
            CertKind::Vcek | CertKind::Vlek | CertKind::Ask | CertKind::Ark
        )
    }
}

/// A GUID in its usual text form.
pub fn guid_text(g: &[u8; 16]) -> String {
    let h = hex::encode(g);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// One entry of the table with the bytes it points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertEntry {
    pub kind: CertKind,
    pub bytes: Vec<u8>,
}

/// A parsed certificate table, entries in table order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertTable {
    pub entries: Vec<CertEntry>,
}

impl CertTable {
    /// The bytes of the entry of `kind`, if the host supplied one.
    pub fn get(&self, kind: CertKind) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|e| e.kind == kind)
            .map(|e| e.bytes.as_slice())
    }
}

/// Why an `auxblob` is not a usable certificate table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertTableError {
    #[error("certificate table is {actual} bytes, at most {MAX_AUXBLOB_BYTES} are accepted")]
    TooLarge { actual: usize },
    #[error(
        "certificate table ends after {entries} entries without the all-zero terminator entry"
    )]
    NoTerminator { entries: usize },
    #[error("certificate table has more than {MAX_CERT_ENTRIES} entries")]
    TooManyEntries,
    #[error("certificate table entry {index} ({kind}) has a zero GUID but a non-zero offset or length; the terminator must be all zero")]
    BadTerminator { index: usize, kind: String },
    #[error("certificate table entry {index} ({kind}) points at bytes {offset}..{end}, but the table is {len} bytes")]
    OutOfBounds {
        index: usize,
        kind: String,
        offset: u64,
        end: u64,
        len: usize,
    },
    #[error("certificate table entry {index} ({kind}) points at offset {offset}, inside the table itself (which ends at {table_end})")]
    InsideTable {
        index: usize,
        kind: String,
        offset: u32,
        table_end: usize,
    },
    #[error("certificate table entry {index} ({kind}) is empty")]
    Empty { index: usize, kind: String },
    #[error("certificate table has two {kind} entries")]
    Duplicate { kind: String },
    #[error("certificate table entry {index} ({kind}) is not one DER X.509 certificate: {reason}")]
    NotACertificate {
        index: usize,
        kind: String,
        reason: String,
    },
}

fn u32_le(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// Parses the certificate table. An empty blob is an empty table (the host
/// supplied no certificates). Never panics.
pub fn parse_cert_table(blob: &[u8]) -> Result<CertTable, CertTableError> {
    if blob.len() > MAX_AUXBLOB_BYTES {
        return Err(CertTableError::TooLarge { actual: blob.len() });
    }
    if blob.is_empty() {
        return Ok(CertTable::default());
    }
    // First pass: the entries up to the terminator.
    let mut raw: Vec<([u8; 16], u32, u32)> = Vec::new();
    let mut at = 0usize;
    loop {
        let Some(entry) = blob.get(at..at + ENTRY_LEN) else {
            return Err(CertTableError::NoTerminator { entries: raw.len() });
        };
        let mut g = [0u8; 16];
        g.copy_from_slice(&entry[..16]);
        let offset = u32_le(&entry[16..20]);
        let length = u32_le(&entry[20..24]);
        at += ENTRY_LEN;
        if g == [0u8; 16] {
            if offset != 0 || length != 0 {
                return Err(CertTableError::BadTerminator {
                    index: raw.len(),
                    kind: "zero GUID".into(),
                });
            }
            break;
        }
        if raw.len() == MAX_CERT_ENTRIES {
            return Err(CertTableError::TooManyEntries);
        }
        raw.push((g, offset, length));
    }
    let table_end = at;

    // Second pass: the bytes each entry points at.
    let mut table = CertTable::default();
    for (index, (g, offset, length)) in raw.into_iter().enumerate() {
        let kind = CertKind::from_guid(g);
        let name = kind.name();
        if length == 0 {
            return Err(CertTableError::Empty { index, kind: name });
        }
        if (offset as usize) < table_end {
            return Err(CertTableError::InsideTable {
                index,
                kind: name,
                offset,
                table_end,
            });
        }
        let end = u64::from(offset) + u64::from(length);
        if end > blob.len() as u64 {
            return Err(CertTableError::OutOfBounds {
                index,
                kind: name,
                offset: u64::from(offset),
                end,
                len: blob.len(),
            });
        }
        if table.entries.iter().any(|e| e.kind == kind) {
            return Err(CertTableError::Duplicate { kind: name });
        }
        // Both bounds were checked against the blob length above.
        let bytes = blob[offset as usize..end as usize].to_vec();
        if kind.is_certificate() {
            Certificate::from_der(&bytes).map_err(|e| CertTableError::NotACertificate {
                index,
                kind: name.clone(),
                reason: e.to_string(),
            })?;
        }
        table.entries.push(CertEntry { kind, bytes });
    }
    Ok(table)
}

/// Builds a certificate table the way a host does (entries, terminator, then
/// the data in entry order). Used by the tests and by anyone preparing a host's
/// `SNP_SET_EXT_CONFIG` blob.
pub fn encode_cert_table(entries: &[(CertKind, &[u8])]) -> Vec<u8> {
    let table_len = ENTRY_LEN * (entries.len() + 1);
    let mut out = Vec::with_capacity(table_len + entries.iter().map(|e| e.1.len()).sum::<usize>());
    let mut offset = table_len;
    for (kind, bytes) in entries {
        out.extend_from_slice(&kind.guid());
        out.extend_from_slice(&(offset as u32).to_le_bytes());
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        offset += bytes.len();
    }
    out.extend_from_slice(&[0u8; ENTRY_LEN]);
    for (_, bytes) in entries {
        out.extend_from_slice(bytes);
    }
    out
}

/// Fuzz entry: any bytes through the certificate-table parser. Never panics;
/// a table that parses re-encodes to one that parses to the same entries.
pub fn fuzz_cert_table(data: &[u8]) {
    if let Ok(table) = parse_cert_table(data) {
        let pairs: Vec<(CertKind, &[u8])> = table
            .entries
            .iter()
            .map(|e| (e.kind, e.bytes.as_slice()))
            .collect();
        let again = parse_cert_table(&encode_cert_table(&pairs));
        assert_eq!(again.as_ref(), Ok(&table), "re-encoded table differs");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn other(n: u8) -> CertKind {
        CertKind::Other([n; 16])
    }

    #[test]
    fn guids_match_their_text_form() {
        assert_eq!(
            guid_text(&guid::VCEK),
            "63da758d-e664-4564-adc5-f4b93be8accd"
        );
        assert_eq!(
            guid_text(&guid::VLEK),
            "a8074bc2-a25a-483e-aae6-39c045a0b8a1"
        );
        assert_eq!(
            guid_text(&guid::ASK),
            "4ab7b379-bbac-4fe4-a02f-05aef327c782"
        );
        assert_eq!(
            guid_text(&guid::ARK),
            "c0b406a4-a803-4952-9743-3fb6014cd0ae"
        );
        assert_eq!(
            guid_text(&guid::CRL),
            "92f81bc3-5811-4d3d-97ff-d19f88dc67ea"
        );
        for k in [
            CertKind::Vcek,
            CertKind::Vlek,
            CertKind::Ask,
            CertKind::Ark,
            CertKind::Crl,
            other(7),
        ] {
            assert_eq!(CertKind::from_guid(k.guid()), k);
        }
    }

    #[test]
    fn empty_blob_is_an_empty_table_and_a_lone_terminator_too() {
        assert_eq!(parse_cert_table(&[]).unwrap(), CertTable::default());
        assert_eq!(parse_cert_table(&[0; 24]).unwrap(), CertTable::default());
        // Padding after the terminator is ignored (hosts hand out whole pages).
        assert_eq!(parse_cert_table(&[0; 4096]).unwrap(), CertTable::default());
    }

    #[test]
    fn unknown_entries_round_trip_in_table_order() {
        let blob = encode_cert_table(&[(other(1), b"first"), (other(2), b"second!")]);
        let t = parse_cert_table(&blob).unwrap();
        assert_eq!(t.entries.len(), 2);
        assert_eq!(t.get(other(1)), Some(&b"first"[..]));
        assert_eq!(t.get(other(2)), Some(&b"second!"[..]));
        assert_eq!(t.get(CertKind::Vcek), None);
        // Data laid out right after the 3-entry table.
        assert_eq!(&blob[72..77], b"first");
    }

    #[test]
    fn malformed_tables_are_refused_with_the_reason() {
        // No terminator.
        let mut blob = encode_cert_table(&[(other(1), b"x")]);
        blob.truncate(24);
        assert!(matches!(
            parse_cert_table(&blob),
            Err(CertTableError::NoTerminator { entries: 1 })
        ));
        // A short tail that cannot hold an entry.
        assert!(matches!(
            parse_cert_table(&[1; 23]),
            Err(CertTableError::NoTerminator { entries: 0 })
        ));

        // Length runs past the end.
        let mut blob = encode_cert_table(&[(other(1), b"abc")]);
        blob[20..24].copy_from_slice(&100u32.to_le_bytes());
        assert!(matches!(
            parse_cert_table(&blob),
            Err(CertTableError::OutOfBounds { end: 148, .. })
        ));
        // offset + length overflowing u32 is still caught.
        blob[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        blob[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            parse_cert_table(&blob),
            Err(CertTableError::OutOfBounds { .. })
        ));

        // Pointing into the table itself.
        let mut blob = encode_cert_table(&[(other(1), b"abc")]);
        blob[16..20].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            parse_cert_table(&blob),
            Err(CertTableError::InsideTable { .. })
        ));

        // Empty entry.
        let blob = encode_cert_table(&[(other(1), b"")]);
        assert!(matches!(
            parse_cert_table(&blob),
            Err(CertTableError::Empty { .. })
        ));

        // Two VCEKs: which one signed is ambiguous.
        let blob = encode_cert_table(&[(other(3), b"a"), (other(3), b"b")]);
        assert!(matches!(
            parse_cert_table(&blob),
            Err(CertTableError::Duplicate { .. })
        ));

        // A VCEK entry that is not a certificate.
        let blob = encode_cert_table(&[(CertKind::Vcek, b"not der")]);
        let e = parse_cert_table(&blob).unwrap_err();
        assert!(matches!(e, CertTableError::NotACertificate { .. }));
        assert!(e.to_string().contains("vcek"), "{e}");

        // Terminator GUID with a stray length.
        let mut blob = encode_cert_table(&[]);
        blob[20] = 1;
        assert!(matches!(
            parse_cert_table(&blob),
            Err(CertTableError::BadTerminator { .. })
        ));

        // Too many entries.
        let many: Vec<(CertKind, &[u8])> = (1..=17u8).map(|i| (other(i), &b"x"[..])).collect();
        assert_eq!(
            parse_cert_table(&encode_cert_table(&many)),
            Err(CertTableError::TooManyEntries)
        );
        // Too large.
        assert!(matches!(
            parse_cert_table(&vec![0; MAX_AUXBLOB_BYTES + 1]),
            Err(CertTableError::TooLarge { .. })
        ));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            fuzz_cert_table(&bytes);
        }

        #[test]
        fn mutated_tables_never_panic(
            entries in proptest::collection::vec((1u8..=255, proptest::collection::vec(any::<u8>(), 1..64)), 0..6),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
            cut in any::<usize>(),
        ) {
            let pairs: Vec<(CertKind, &[u8])> =
                entries.iter().map(|(g, b)| (other(*g), b.as_slice())).collect();
            let mut blob = encode_cert_table(&pairs);
            // Unmutated: every distinct entry comes back.
            let distinct = {
                let mut gs: Vec<u8> = entries.iter().map(|e| e.0).collect();
                gs.sort_unstable();
                gs.dedup();
                gs.len() == entries.len()
            };
            if distinct {
                let t = parse_cert_table(&blob).unwrap();
                prop_assert_eq!(t.entries.len(), entries.len());
                for (g, b) in &entries {
                    prop_assert_eq!(t.get(other(*g)), Some(b.as_slice()));
                }
            }
            for (at, x) in flips {
                if !blob.is_empty() {
                    let i = at % blob.len();
                    blob[i] ^= x;
                }
            }
            let keep = if blob.is_empty() { 0 } else { cut % (blob.len() + 1) };
            fuzz_cert_table(&blob[..keep]);
            fuzz_cert_table(&blob);
        }
    }
}
