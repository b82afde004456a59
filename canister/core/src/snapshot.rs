//! Versioned binary encoding of the whole ledger, for the local service's
//! snapshots and the canister's upgrades.

use crate::ledger::Ledger;

/// Magic and version prefix of a snapshot. The last two digits are the
/// layout version: bump them whenever a serialized type changes.
/// 02: `NodeInfo.reserved_gpus_by_model`.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"DCLEDG02";

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a ledger snapshot (expected magic {expected:?})", expected = String::from_utf8_lossy(SNAPSHOT_MAGIC))]
    BadMagic,
    #[error("snapshot layout {found} is not the supported {supported}; it was written by another version of the ledger")]
    UnsupportedVersion { found: String, supported: String },
    #[error("corrupt snapshot: {0}")]
    Corrupt(String),
}

/// Encodes the ledger (derived indexes excluded).
pub fn encode(ledger: &Ledger) -> Vec<u8> {
    let mut out = SNAPSHOT_MAGIC.to_vec();
    // Serializing plain in-memory data into a Vec cannot fail; if it ever did,
    // stopping is right: an empty snapshot would replace the real one.
    out.extend(postcard::to_stdvec(ledger).expect("serializing the ledger into memory"));
    out
}

/// Decodes a snapshot and rebuilds the derived indexes.
pub fn decode(bytes: &[u8]) -> Result<Ledger, SnapshotError> {
    let Some(body) = bytes.strip_prefix(SNAPSHOT_MAGIC.as_slice()) else {
        return Err(match bytes.get(..8) {
            Some(m) if m.starts_with(b"DCLEDG") => SnapshotError::UnsupportedVersion {
                found: String::from_utf8_lossy(m).into_owned(),
                supported: String::from_utf8_lossy(SNAPSHOT_MAGIC).into_owned(),
            },
            _ => SnapshotError::BadMagic,
        });
    };
    let mut ledger: Ledger =
        postcard::from_bytes(body).map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
    ledger.rebuild_indexes();
    Ok(ledger)
}
