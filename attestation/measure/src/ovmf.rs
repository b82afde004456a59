//! The OVMF/TDVF footer GUID table, shared by the SEV and TDX paths.
//!
//! edk2's reset vector ends with a table of `{data, u16 size, GUID}` entries
//! read backwards from 32 bytes before the end of the image; the entry with
//! the table GUID gives the table's total size. SEV entries name the hashes
//! table GPA, the SEV-ES AP reset address and the SEV metadata (page list);
//! the TDX entry names where the TDVF descriptor lies.

use crate::MeasureError;

/// Bytes that follow the footer table at the very end of an OVMF image.
const BYTES_AFTER_TABLE: usize = 32;
/// Size of an entry trailer: `u16` length and a 16-byte GUID.
const ENTRY_TRAILER: usize = 18;
/// Entries at most in one footer table (each takes at least 18 of ≤ 65535 bytes).
pub const MAX_FOOTER_ENTRIES: usize = 64;

/// Encodes a GUID string ("xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx") in the
/// mixed-endian byte order EFI stores GUIDs in.
pub const fn guid_le(s: &str) -> [u8; 16] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => panic!("GUID literal has a non-hex digit"),
        }
    }
    let b = s.as_bytes();
    assert!(b.len() == 36, "GUID literal must be 36 characters");
    // Big-endian bytes of the textual GUID, hyphens skipped.
    let mut be = [0u8; 16];
    let mut i = 0;
    let mut o = 0;
    while i < 36 {
        if b[i] == b'-' {
            i += 1;
            continue;
        }
        be[o] = (nibble(b[i]) << 4) | nibble(b[i + 1]);
        o += 1;
        i += 2;
    }
    // First three fields are stored little-endian.
    [
        be[3], be[2], be[1], be[0], be[5], be[4], be[7], be[6], be[8], be[9], be[10], be[11],
        be[12], be[13], be[14], be[15],
    ]
}

/// GUID of the footer table itself (`OVMF_TABLE_FOOTER_GUID`).
pub const FOOTER_TABLE_GUID: [u8; 16] = guid_le("96b582de-1fb2-45f7-baea-a366c55a082d");
/// Entry holding the GPA of the SEV hashes table (`SEV_HASH_TABLE_RV_GUID`).
pub const SEV_HASH_TABLE_RV_GUID: [u8; 16] = guid_le("7255371f-3a3b-4b04-927b-1da6efa8d454");
/// Entry holding the SEV-ES AP reset address (`SEV_ES_RESET_BLOCK_GUID`).
pub const SEV_ES_RESET_BLOCK_GUID: [u8; 16] = guid_le("00f771de-1a7e-4fcb-890e-68c77e2fb44e");
/// Entry holding the offset from the end of the SEV metadata (`OVMF_SEV_META_DATA_GUID`).
pub const SEV_METADATA_GUID: [u8; 16] = guid_le("dc886566-984a-4798-a75e-5585a7bf67cc");
/// Entry holding the offset from the end of the TDVF descriptor (`TDX_METADATA_OFFSET_GUID`).
pub const TDX_METADATA_OFFSET_GUID: [u8; 16] = guid_le("e47a6535-984a-4798-865e-4685a7bf8ec2");

/// One entry of the footer table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FooterEntry<'a> {
    /// The entry's GUID, in EFI byte order.
    pub guid: [u8; 16],
    /// The entry's data, without the size/GUID trailer.
    pub data: &'a [u8],
}

/// Reads the footer GUID table of an OVMF/TDVF image. Entries come in the
/// order found, last entry of the image first.
pub fn footer_entries(fw: &[u8]) -> Result<Vec<FooterEntry<'_>>, MeasureError> {
    let footer_end = fw
        .len()
        .checked_sub(BYTES_AFTER_TABLE)
        .filter(|&e| e >= ENTRY_TRAILER)
        .ok_or_else(|| {
            MeasureError::firmware(
                "size",
                format!("at least {} bytes", BYTES_AFTER_TABLE + ENTRY_TRAILER),
                fw.len(),
            )
        })?;
    let footer_start = footer_end - ENTRY_TRAILER;
    let guid = &fw[footer_start + 2..footer_end];
    if guid != FOOTER_TABLE_GUID {
        return Err(MeasureError::firmware(
            "footer table",
            "the OVMF table footer GUID 96b582de-1fb2-45f7-baea-a366c55a082d 32 bytes before the end",
            hex::encode(guid),
        ));
    }
    let total = usize::from(u16::from_le_bytes([fw[footer_start], fw[footer_start + 1]]));
    let table_len = total
        .checked_sub(ENTRY_TRAILER)
        .filter(|&l| l <= footer_start)
        .ok_or_else(|| {
            MeasureError::firmware(
                "footer table size",
                format!(
                    "between {ENTRY_TRAILER} and {}",
                    footer_start + ENTRY_TRAILER
                ),
                total,
            )
        })?;
    let mut table = &fw[footer_start - table_len..footer_start];
    let mut entries = Vec::new();
    while !table.is_empty() {
        if entries.len() == MAX_FOOTER_ENTRIES {
            return Err(MeasureError::too_large(
                "OVMF footer table entries",
                MAX_FOOTER_ENTRIES as u64,
                entries.len() as u64 + 1,
            ));
        }
        let end = table.len();
        if end < ENTRY_TRAILER {
            return Err(MeasureError::firmware(
                "footer table",
                format!("entries of at least {ENTRY_TRAILER} bytes"),
                format!("{end} trailing bytes"),
            ));
        }
        let size = usize::from(u16::from_le_bytes([
            table[end - ENTRY_TRAILER],
            table[end - ENTRY_TRAILER + 1],
        ]));
        if size < ENTRY_TRAILER || size > end {
            return Err(MeasureError::firmware(
                "footer table entry size",
                format!("between {ENTRY_TRAILER} and {end}"),
                size,
            ));
        }
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&table[end - 16..]);
        entries.push(FooterEntry {
            guid,
            data: &table[end - size..end - ENTRY_TRAILER],
        });
        table = &table[..end - size];
    }
    Ok(entries)
}

/// Writes a footer table of `entries` (GUID and data) ending 32 bytes before
/// the end of `fw`, in the layout [`footer_entries`] reads back, in the same
/// order. For tools and tests that build firmware images; the bytes before
/// the table are left as they are.
pub fn write_footer_table(
    fw: &mut [u8],
    entries: &[([u8; 16], &[u8])],
) -> Result<(), MeasureError> {
    if entries.len() > MAX_FOOTER_ENTRIES {
        return Err(MeasureError::too_large(
            "OVMF footer table entries",
            MAX_FOOTER_ENTRIES as u64,
            entries.len() as u64,
        ));
    }
    let mut table = Vec::new();
    // Read backwards: the first entry sits right before the table's own trailer.
    for (guid, data) in entries.iter().rev() {
        let size = u16::try_from(data.len() + ENTRY_TRAILER).map_err(|_| {
            MeasureError::firmware("footer table entry size", "at most 65535", data.len())
        })?;
        table.extend_from_slice(data);
        table.extend_from_slice(&size.to_le_bytes());
        table.extend_from_slice(guid);
    }
    let total = u16::try_from(table.len() + ENTRY_TRAILER)
        .map_err(|_| MeasureError::firmware("footer table size", "at most 65535", table.len()))?;
    table.extend_from_slice(&total.to_le_bytes());
    table.extend_from_slice(&FOOTER_TABLE_GUID);
    let end = fw
        .len()
        .checked_sub(BYTES_AFTER_TABLE)
        .filter(|&e| e >= table.len())
        .ok_or_else(|| {
            MeasureError::firmware(
                "size",
                format!("at least {} bytes", BYTES_AFTER_TABLE + table.len()),
                fw.len(),
            )
        })?;
    fw[end - table.len()..end].copy_from_slice(&table);
    Ok(())
}

/// Bytes a footer table of `entries` takes, trailers included.
pub fn footer_table_len(entries: &[([u8; 16], &[u8])]) -> usize {
    entries
        .iter()
        .map(|(_, d)| d.len() + ENTRY_TRAILER)
        .sum::<usize>()
        + ENTRY_TRAILER
}

/// First four bytes of the entry with `guid`, little-endian; `None` when the
/// table has no such entry. An entry shorter than four bytes is an error.
pub(crate) fn entry_u32(
    entries: &[FooterEntry<'_>],
    guid: &[u8; 16],
    what: &'static str,
) -> Result<Option<u32>, MeasureError> {
    match entries.iter().find(|e| &e.guid == guid) {
        None => Ok(None),
        Some(e) => read_u32(e.data, 0).map(Some).ok_or_else(|| {
            MeasureError::firmware(what, "at least 4 bytes of entry data", e.data.len())
        }),
    }
}

pub(crate) fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

pub(crate) fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

pub(crate) fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_encoding_matches_efi_byte_order() {
        assert_eq!(
            FOOTER_TABLE_GUID,
            [
                0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a,
                0x08, 0x2d
            ]
        );
        assert_eq!(
            TDX_METADATA_OFFSET_GUID,
            [
                0x35, 0x65, 0x7a, 0xe4, 0x4a, 0x98, 0x98, 0x47, 0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf,
                0x8e, 0xc2
            ]
        );
    }

    #[test]
    fn written_tables_read_back_in_order() {
        let a = guid_le("00000000-0000-0000-0000-000000000001");
        let b = guid_le("00000000-0000-0000-0000-000000000002");
        let entries: [([u8; 16], &[u8]); 2] = [(a, b"first"), (b, &[])];
        let mut fw = vec![0x5a; 256];
        write_footer_table(&mut fw, &entries).unwrap();
        let back = footer_entries(&fw).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!((back[0].guid, back[0].data), (a, &b"first"[..]));
        assert_eq!((back[1].guid, back[1].data), (b, &[][..]));
        let len = footer_table_len(&entries);
        assert!(fw[..256 - 32 - len].iter().all(|&x| x == 0x5a));
        assert!(fw[256 - 32..].iter().all(|&x| x == 0x5a));
        // Too small an image for the table: refused, nothing written.
        let mut small = vec![0u8; 32 + len - 1];
        assert!(write_footer_table(&mut small, &entries).is_err());
        assert!(small.iter().all(|&x| x == 0));
    }

    #[test]
    fn truncated_or_foreign_images_are_rejected() {
        assert!(matches!(
            footer_entries(&[]),
            Err(MeasureError::Firmware { .. })
        ));
        assert!(matches!(
            footer_entries(&[0u8; 4096]),
            Err(MeasureError::Firmware {
                what: "footer table",
                ..
            })
        ));
    }
}
