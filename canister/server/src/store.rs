//! Durable state of the local ledger: a snapshot plus an append-only journal.
//!
//! The journal holds one frame per processed request: `len: u32 LE`,
//! `crc32(payload): u32 LE`, `payload` (postcard of `(seq, Entry)`). A batch of
//! frames is written and `fdatasync`ed before any request in it is answered,
//! so every acknowledged operation survives `kill -9` or power loss. On start
//! the snapshot is loaded and the journal replayed through the same core; a
//! torn final frame (a write cut short by the crash, never acknowledged) is
//! cut off, while damage before the end is refused as corruption.
//!
//! Snapshots are written to a temporary file, synced and renamed over the
//! old one; only then is the journal truncated. Frames whose sequence number
//! the snapshot already covers are skipped on replay.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use candid::Principal;
use dc_ledger_core::{dispatch, snapshot, Ledger};
use serde::{Deserialize, Serialize};

use crate::nonces::NonceCache;

const SNAPSHOT_FILE: &str = "snapshot.bin";
const JOURNAL_FILE: &str = "journal.log";
const FRAME_HEADER: usize = 8;
/// Largest frame accepted when reading the journal back.
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// One processed request, as journaled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// An update the ledger applied.
    Call {
        now_ns: u64,
        caller: Principal,
        method: String,
        arg: Vec<u8>,
        nonce: Vec<u8>,
        expires_at_ns: u64,
    },
    /// An update the ledger refused: only its nonce is kept, so it cannot be
    /// replayed later when it might succeed.
    Refused {
        caller: Principal,
        nonce: Vec<u8>,
        expires_at_ns: u64,
    },
    /// Time passed and changed the ledger (contracts settled, block closed).
    Tick { now_ns: u64 },
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    /// Sequence number of the last journal entry the snapshot includes.
    seq: u64,
    ledger: Vec<u8>,
    nonces: Vec<(Vec<u8>, u64)>,
}

/// Why the store could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt at byte {offset}: {reason}; refusing to start (restore the data directory from a backup)")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{path}: {reason}")]
    BadSnapshot { path: PathBuf, reason: String },
    #[error("journal entry {seq} no longer replays: {reason}")]
    Replay { seq: u64, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `Store::open` recovered.
pub struct Recovered {
    pub ledger: Ledger,
    pub nonces: NonceCache,
    /// Journal entries replayed on top of the snapshot.
    pub replayed: u64,
    /// Bytes of torn tail cut from the journal.
    pub truncated_bytes: u64,
}

/// The journal and snapshot of one data directory.
pub struct Store {
    dir: PathBuf,
    journal: File,
    next_seq: u64,
    entries_since_snapshot: u64,
    journal_bytes: u64,
}

/// Applies a journal entry to the ledger, exactly as the live service did.
pub fn apply_entry(
    ledger: &mut Ledger,
    nonces: &mut NonceCache,
    entry: &Entry,
) -> Result<(), String> {
    match entry {
        Entry::Call {
            now_ns,
            caller,
            method,
            arg,
            nonce,
            expires_at_ns,
        } => {
            nonces.insert(caller, nonce, *expires_at_ns);
            let out = dispatch::update(ledger, *caller, *now_ns, method, arg)
                .map_err(|e| e.to_string())?;
            if !out.committed {
                return Err(format!(
                    "{method} was applied live but is refused on replay"
                ));
            }
            Ok(())
        }
        Entry::Refused {
            caller,
            nonce,
            expires_at_ns,
        } => {
            nonces.insert(caller, nonce, *expires_at_ns);
            Ok(())
        }
        Entry::Tick { now_ns } => {
            ledger.tick(*now_ns);
            Ok(())
        }
    }
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl Store {
    /// Whether `dir` already holds a ledger.
    pub fn exists(dir: &Path) -> bool {
        dir.join(SNAPSHOT_FILE).exists()
    }

    /// Creates a new store holding `ledger` at genesis.
    pub fn create(dir: &Path, ledger: &Ledger) -> Result<Store, StoreError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut store = Store::open_journal(dir, 1)?;
        store.write_snapshot(ledger, &NonceCache::default())?;
        Ok(store)
    }

    fn open_journal(dir: &Path, next_seq: u64) -> Result<Store, StoreError> {
        let path = dir.join(JOURNAL_FILE);
        let journal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let journal_bytes = journal.metadata().map_err(io_err(&path))?.len();
        Ok(Store {
            dir: dir.to_path_buf(),
            journal,
            next_seq,
            entries_since_snapshot: 0,
            journal_bytes,
        })
    }

    /// Loads the snapshot and replays the journal.
    pub fn open(dir: &Path) -> Result<(Store, Recovered), StoreError> {
        let snap_path = dir.join(SNAPSHOT_FILE);
        let bytes = fs::read(&snap_path).map_err(io_err(&snap_path))?;
        let snap: SnapshotFile =
            postcard::from_bytes(&bytes).map_err(|e| StoreError::BadSnapshot {
                path: snap_path.clone(),
                reason: e.to_string(),
            })?;
        let mut ledger = snapshot::decode(&snap.ledger).map_err(|e| StoreError::BadSnapshot {
            path: snap_path.clone(),
            reason: e.to_string(),
        })?;
        let mut nonces = NonceCache::default();
        for (key, exp) in snap.nonces {
            nonces.insert_key(key, exp);
        }
        let journal_path = dir.join(JOURNAL_FILE);
        let mut data = Vec::new();
        if journal_path.exists() {
            File::open(&journal_path)
                .and_then(|mut f| f.read_to_end(&mut data))
                .map_err(io_err(&journal_path))?;
        }
        let (frames, valid_len) =
            parse_frames(&data).map_err(|(offset, reason)| StoreError::Corrupt {
                path: journal_path.clone(),
                offset,
                reason,
            })?;
        let mut last_seq = snap.seq;
        let mut replayed = 0;
        for (seq, entry) in frames {
            if seq <= snap.seq {
                continue;
            }
            if seq != last_seq + 1 {
                return Err(StoreError::Corrupt {
                    path: journal_path,
                    offset: 0,
                    reason: format!("sequence jumps from {last_seq} to {seq}"),
                });
            }
            apply_entry(&mut ledger, &mut nonces, &entry)
                .map_err(|reason| StoreError::Replay { seq, reason })?;
            last_seq = seq;
            replayed += 1;
        }
        let truncated_bytes = data.len() as u64 - valid_len;
        if truncated_bytes > 0 {
            let f = OpenOptions::new()
                .write(true)
                .open(&journal_path)
                .map_err(io_err(&journal_path))?;
            f.set_len(valid_len).map_err(io_err(&journal_path))?;
            f.sync_all().map_err(io_err(&journal_path))?;
        }
        let mut store = Store::open_journal(dir, last_seq + 1)?;
        store.entries_since_snapshot = replayed;
        Ok((
            store,
            Recovered {
                ledger,
                nonces,
                replayed,
                truncated_bytes,
            },
        ))
    }

    /// Appends a batch of entries and makes them durable before returning.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(entries.len() * 256);
        for entry in entries {
            let payload =
                postcard::to_stdvec(&(self.next_seq, entry)).map_err(|e| StoreError::Io {
                    path: self.dir.join(JOURNAL_FILE),
                    source: std::io::Error::other(format!("cannot serialize entry: {e}")),
                })?;
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            buf.extend_from_slice(&payload);
            self.next_seq += 1;
        }
        let path = self.dir.join(JOURNAL_FILE);
        self.journal.write_all(&buf).map_err(io_err(&path))?;
        self.journal.sync_data().map_err(io_err(&path))?;
        self.entries_since_snapshot += entries.len() as u64;
        self.journal_bytes += buf.len() as u64;
        Ok(())
    }

    /// Whether the journal has grown enough that a snapshot should be taken.
    pub fn wants_snapshot(&self, max_entries: u64, max_bytes: u64) -> bool {
        self.entries_since_snapshot >= max_entries || self.journal_bytes >= max_bytes
    }

    /// Writes a snapshot of `ledger` covering every appended entry, then
    /// empties the journal.
    pub fn write_snapshot(
        &mut self,
        ledger: &Ledger,
        nonces: &NonceCache,
    ) -> Result<(), StoreError> {
        let snap = SnapshotFile {
            seq: self.next_seq - 1,
            ledger: snapshot::encode(ledger),
            nonces: nonces.entries(),
        };
        let bytes = postcard::to_stdvec(&snap).map_err(|e| StoreError::BadSnapshot {
            path: self.dir.join(SNAPSHOT_FILE),
            reason: format!("cannot serialize: {e}"),
        })?;
        let tmp = self.dir.join("snapshot.bin.tmp");
        let path = self.dir.join(SNAPSHOT_FILE);
        {
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(&bytes).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        fsync_dir(&self.dir)?;
        let journal_path = self.dir.join(JOURNAL_FILE);
        self.journal.set_len(0).map_err(io_err(&journal_path))?;
        self.journal.sync_all().map_err(io_err(&journal_path))?;
        self.entries_since_snapshot = 0;
        self.journal_bytes = 0;
        Ok(())
    }
}

/// What parsing journal bytes gives: the entries with their sequence
/// numbers and the length of the valid prefix, or the offset and reason of
/// corruption before the end.
pub type JournalParse = Result<(Vec<(u64, Entry)>, u64), (u64, String)>;

/// Parses journal bytes (for tools and fuzzing): the entries with their
/// sequence numbers and the length of the valid prefix, or the offset and
/// reason of corruption before the end.
pub fn parse_journal(data: &[u8]) -> JournalParse {
    parse_frames(data)
}

/// Splits journal bytes into frames. Returns the frames and the length of
/// the valid prefix; a torn or corrupt *final* frame ends the valid prefix,
/// a corrupt frame followed by more data is an error.
fn parse_frames(data: &[u8]) -> JournalParse {
    let mut frames = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.len() < FRAME_HEADER {
            break; // torn header
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        // Space the file system allocated but the crash never filled reads
        // as zeros: whatever starts a run of zeros to the end is a torn tail.
        let zeros_to_end = rest.iter().all(|&b| b == 0);
        if len == 0 || len > MAX_FRAME {
            if zeros_to_end || len > MAX_FRAME && rest.len() < FRAME_HEADER + len {
                break;
            }
            return Err((
                pos as u64,
                format!(
                    "frame of {len} bytes (allowed 1..={MAX_FRAME}) before the end of the journal"
                ),
            ));
        }
        if rest.len() < FRAME_HEADER + len {
            break; // torn payload
        }
        let payload = &rest[FRAME_HEADER..FRAME_HEADER + len];
        let end = pos + FRAME_HEADER + len;
        let torn_here = end == data.len() || data[end..].iter().all(|&b| b == 0);
        if crc32fast::hash(payload) != crc {
            if torn_here {
                break; // torn final frame
            }
            return Err((
                pos as u64,
                "checksum mismatch before the end of the journal".into(),
            ));
        }
        match postcard::from_bytes::<(u64, Entry)>(payload) {
            Ok(f) => frames.push(f),
            Err(_) if torn_here => break,
            Err(e) => return Err((pos as u64, format!("undecodable entry: {e}"))),
        }
        pos = end;
    }
    Ok((frames, pos as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> Entry {
        Entry::Tick { now_ns: n }
    }

    fn encode(entries: &[(u64, Entry)]) -> Vec<u8> {
        let mut buf = Vec::new();
        for e in entries {
            let payload = postcard::to_stdvec(e).unwrap();
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            buf.extend_from_slice(&payload);
        }
        buf
    }

    #[test]
    fn torn_tail_is_cut_and_middle_damage_refused() {
        let frames: Vec<(u64, Entry)> = (1..=3).map(|i| (i, entry(i))).collect();
        let data = encode(&frames);
        let (all, len) = parse_frames(&data).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(len, data.len() as u64);
        // Every truncation point yields a valid prefix, never an error.
        for cut in 0..data.len() {
            let (some, len) = parse_frames(&data[..cut]).unwrap();
            assert!(some.len() < 3 && len <= cut as u64, "cut {cut}");
        }
        // A flipped byte in the last frame: torn tail.
        let mut last = data.clone();
        let n = last.len();
        last[n - 1] ^= 1;
        assert_eq!(parse_frames(&last).unwrap().0.len(), 2);
        // A flipped byte in the first frame: corruption.
        let mut first = data.clone();
        first[FRAME_HEADER] ^= 1;
        assert!(parse_frames(&first).is_err());
        // An absurd length in the middle is refused; at the end it is torn.
        let mut huge = data.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_frames(&huge).is_err() || parse_frames(&huge).unwrap().0.is_empty());
        // Zeros after the last frame (space allocated, never written): torn tail.
        let mut zeros = data.clone();
        zeros.extend(vec![0u8; 4096]);
        let (f, len) = parse_frames(&zeros).unwrap();
        assert_eq!((f.len(), len), (3, data.len() as u64));
        // A zero-length frame followed by real data is corruption.
        let mut hole = vec![0u8; 8];
        hole.extend(&data);
        assert!(parse_frames(&hole).is_err());
    }
}
