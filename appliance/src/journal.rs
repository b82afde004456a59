//! The append-only journal of VM records (`data_dir/journal.jsonl`).
//!
//! One JSON object per line, each a full snapshot of one contract's VM record;
//! the last line for a contract wins. Every append is written with one
//! `write` and `fsync`ed before it returns, so a record the agent acted on is
//! on disk. Replay tolerates a torn last line (bytes after the last newline,
//! left by a crash inside a write, or a complete but unparsable LAST line, left
//! by a power loss: ignored with a loud warning and cut off on open) but
//! refuses a bad line followed by another line (corruption in the middle: the
//! journal is not guessed at). Compaction rewrites the latest records to a
//! temporary file, syncs it and renames it over the journal.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use dc_vmm::{VmHandle, VmSpec};
use serde::{Deserialize, Serialize};

use crate::resources::Reservation;

/// Where a contract's VM is in its life on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmRecordState {
    /// Resources held; the VM is being launched or booting.
    Provisioning,
    /// Reported active to the ledger.
    Active,
    /// Being deleted (VM stop, run directory wipe).
    Releasing,
    /// Gone; resources freed.
    Released,
    /// Its launch failed or its VMM died; resources freed.
    Failed,
    /// A provisioning attempt was abandoned for a reason that may pass (a
    /// crash before the launch was journaled, a ledger that could not be
    /// reached); resources freed. The contract's state on the ledger decides
    /// on the next pass whether it is provisioned again.
    Retry,
}

impl VmRecordState {
    /// Whether the record still holds resources.
    pub fn holds_resources(self) -> bool {
        matches!(
            self,
            VmRecordState::Provisioning | VmRecordState::Active | VmRecordState::Releasing
        )
    }
}

/// One contract's VM, as journaled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRecord {
    pub contract_id: u64,
    pub state: VmRecordState,
    pub spec: VmSpec,
    /// Present once the VMM was launched.
    pub handle: Option<VmHandle>,
    pub reservation: Reservation,
    /// `host:port` reported to the ledger.
    pub endpoint: Option<String>,
    /// SHA-256 of the evidence bundle (hex) reported to the ledger.
    pub evidence_hash: Option<String>,
    /// Why it failed, when it did.
    pub note: Option<String>,
    /// When this snapshot was written (ns since the epoch).
    pub at_ns: u64,
    /// Bridge networking: the VM's tap, private address and port forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<VmNet>,
    /// When the VMM was last launched (ns since the epoch): the boot
    /// deadline (`vm_boot_timeout_secs`) counts from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launched_at_ns: Option<u64>,
    /// GPU groups bound to vfio-pci for this VM, with the drivers their
    /// devices had before (given back after the VM is deleted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vfio: Vec<VfioBinding>,
    /// Confidential VMs: the launch manifest (the predicted measurement and
    /// every input of it), published with the contract: its hash is the
    /// evidence hash, its measurement the launch measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<crate::confidential::LaunchManifest>,
}

/// One IOMMU group bound to vfio-pci for a VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VfioBinding {
    pub group: String,
    /// The devices passed to the VMM (bridges excluded) and their previous drivers.
    pub devices: Vec<crate::vfio::BoundDevice>,
}

/// A bridged VM's place on the tenant network, journaled so a restart (or a
/// host reboot, which loses taps and nftables state) puts it back exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmNet {
    /// The persistent tap on the bridge.
    pub tap: String,
    /// The VM's stable private address.
    pub vm_addr: std::net::Ipv4Addr,
    /// The endpoint's port forward (host address and port to the VM's port).
    pub forward: dc_tenant_net::Forward,
}

/// Why the journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{path}: line {line} is corrupt ({reason}); refusing to guess (later lines exist)")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "{path}: line {line} is a whole record this agent cannot read ({reason}), perhaps \
         written by a newer version; refusing to start rather than drop it"
    )]
    Unreadable {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// What a replay found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    /// Every record, in order.
    pub records: Vec<VmRecord>,
    /// Bytes of complete, valid lines (where the next append goes).
    pub valid_len: u64,
    /// Bytes of a torn last line that were ignored.
    pub torn_bytes: u64,
}

impl Replay {
    /// The latest record of each contract.
    pub fn latest(&self) -> BTreeMap<u64, VmRecord> {
        latest(&self.records)
    }
}

/// The latest record of each contract.
pub fn latest(records: &[VmRecord]) -> BTreeMap<u64, VmRecord> {
    let mut out = BTreeMap::new();
    for r in records {
        out.insert(r.contract_id, r.clone());
    }
    out
}

/// Parses journal bytes (`path` only names errors).
pub fn replay_bytes(path: &Path, bytes: &[u8]) -> Result<Replay, JournalError> {
    let mut records = Vec::new();
    let mut pos = 0usize;
    let mut line_no = 0usize;
    while pos < bytes.len() {
        line_no += 1;
        let Some(nl) = bytes[pos..].iter().position(|&b| b == b'\n') else {
            // No newline: a write the crash interrupted, never acknowledged.
            let torn = (bytes.len() - pos) as u64;
            tracing::warn!(path = %path.display(), line = line_no, torn_bytes = torn, "journal: ignoring a torn last line");
            return Ok(Replay {
                records,
                valid_len: pos as u64,
                torn_bytes: torn,
            });
        };
        let line = &bytes[pos..pos + nl];
        if !line.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<VmRecord>(line) {
                Ok(record) => records.push(record),
                Err(e) => {
                    let reason = e.to_string();
                    if !bytes[pos + nl + 1..].iter().all(u8::is_ascii_whitespace) {
                        return Err(JournalError::Corrupt {
                            path: path.to_owned(),
                            line: line_no,
                            reason,
                        });
                    }
                    // The last line. A whole JSON object that only this
                    // version cannot read (a newer agent's record, after a
                    // rollback) was acknowledged: refused, never cut.
                    if serde_json::from_slice::<serde_json::Value>(line).is_ok() {
                        return Err(JournalError::Unreadable {
                            path: path.to_owned(),
                            line: line_no,
                            reason,
                        });
                    }
                    // Complete but not JSON: a power loss can leave a
                    // newline-terminated line whose bytes never reached the
                    // disk (zeros, garbage). Treat it like a torn tail: cut
                    // it, loudly.
                    let torn = (bytes.len() - pos) as u64;
                    tracing::error!(path = %path.display(), line = line_no, torn_bytes = torn, error = %reason, "journal: the LAST line is corrupt; cutting it off like a torn write (the record it held is lost)");
                    return Ok(Replay {
                        records,
                        valid_len: pos as u64,
                        torn_bytes: torn,
                    });
                }
            }
        }
        pos += nl + 1;
    }
    Ok(Replay {
        records,
        valid_len: pos as u64,
        torn_bytes: 0,
    })
}

/// The open journal.
pub struct Journal {
    path: PathBuf,
    file: File,
}

fn io(path: &Path, e: impl std::fmt::Display) -> JournalError {
    JournalError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

impl Journal {
    /// Opens (creating) the journal, replays it and cuts a torn tail off.
    pub fn open(path: &Path) -> Result<(Journal, Replay), JournalError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(path, e)),
        };
        let replay = replay_bytes(path, &bytes)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| io(path, e))?;
        if replay.torn_bytes > 0 {
            file.set_len(replay.valid_len).map_err(|e| io(path, e))?;
            file.sync_all().map_err(|e| io(path, e))?;
        }
        Ok((
            Journal {
                path: path.to_owned(),
                file,
            },
            replay,
        ))
    }

    /// Appends one record and syncs it before returning.
    pub fn append(&mut self, record: &VmRecord) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(record).map_err(|e| io(&self.path, e))?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(|e| io(&self.path, e))?;
        self.file.sync_data().map_err(|e| io(&self.path, e))
    }

    /// Rewrites the journal with only `records` (the latest of each contract that
    /// still matters), atomically: temporary file, fsync, rename, fsync of the directory.
    pub fn compact<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a VmRecord>,
    ) -> Result<(), JournalError> {
        let tmp = self.path.with_extension("jsonl.tmp");
        let mut out = File::create(&tmp).map_err(|e| io(&tmp, e))?;
        for r in records {
            let mut line = serde_json::to_vec(r).map_err(|e| io(&tmp, e))?;
            line.push(b'\n');
            out.write_all(&line).map_err(|e| io(&tmp, e))?;
        }
        out.sync_all().map_err(|e| io(&tmp, e))?;
        drop(out);
        std::fs::rename(&tmp, &self.path).map_err(|e| io(&self.path, e))?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| io(&self.path, e))?;
        Ok(())
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::resources::ResourceRequest;
    use dc_vmm::{Accel, Boot, Confidential, Network};
    use proptest::prelude::*;

    pub(crate) fn record(id: u64, state: VmRecordState) -> VmRecord {
        VmRecord {
            contract_id: id,
            state,
            spec: VmSpec {
                id: format!("c{id}"),
                vcpus: 1,
                memory_mib: 1024,
                boot: Boot::Kernel {
                    kernel: "/k".into(),
                    initrd: None,
                    cmdline: "console=ttyS0".into(),
                    firmware: None,
                },
                disks: vec![],
                network: Network::User { forwards: vec![] },
                vsock_cid: None,
                vfio: vec![],
                confidential: Confidential::None,
                accel: Accel::Tcg,
                run_dir: format!("/d/vms/c{id}").into(),
            },
            handle: None,
            reservation: Reservation {
                contract_id: id,
                request: ResourceRequest::default(),
                gpu_groups: vec![],
            },
            endpoint: (state == VmRecordState::Active).then(|| "127.0.0.1:20000".into()),
            evidence_hash: None,
            note: None,
            at_ns: id,
            net: None,
            launched_at_ns: None,
            vfio: vec![],
            launch: None,
        }
    }

    #[test]
    fn appends_survive_reopen_and_the_latest_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let (mut j, r) = Journal::open(&path).unwrap();
        assert!(r.records.is_empty());
        j.append(&record(1, VmRecordState::Provisioning)).unwrap();
        j.append(&record(2, VmRecordState::Provisioning)).unwrap();
        j.append(&record(1, VmRecordState::Active)).unwrap();
        drop(j);
        let (_, r) = Journal::open(&path).unwrap();
        assert_eq!(r.records.len(), 3);
        let latest = r.latest();
        assert_eq!(latest[&1].state, VmRecordState::Active);
        assert_eq!(latest[&2].state, VmRecordState::Provisioning);
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_cut_but_middle_corruption_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let (mut j, _) = Journal::open(&path).unwrap();
        j.append(&record(1, VmRecordState::Active)).unwrap();
        drop(j);
        let good = std::fs::read(&path).unwrap();
        let mut torn = good.clone();
        torn.extend_from_slice(b"{\"contract_id\":2,\"sta");
        std::fs::write(&path, &torn).unwrap();
        let (mut j, r) = Journal::open(&path).unwrap();
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.torn_bytes, 21);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            good,
            "the torn tail is cut off"
        );
        j.append(&record(3, VmRecordState::Active)).unwrap();
        drop(j);
        assert_eq!(Journal::open(&path).unwrap().1.records.len(), 2);

        let mut bad = b"{\"contract_id\":2,\"sta\n".to_vec();
        bad.extend_from_slice(&good);
        std::fs::write(&path, &bad).unwrap();
        let e = Journal::open(&path)
            .err()
            .expect("corruption is refused")
            .to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn a_corrupt_complete_last_line_is_cut_like_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let (mut j, _) = Journal::open(&path).unwrap();
        j.append(&record(1, VmRecordState::Active)).unwrap();
        drop(j);
        let good = std::fs::read(&path).unwrap();
        // A power loss: the line's newline made it, its bytes did not.
        let mut bad = good.clone();
        bad.extend_from_slice(b"\0\0\0\0{\"contract_id\":2,\"sta\n");
        std::fs::write(&path, &bad).unwrap();
        let (mut j, r) = Journal::open(&path).expect("a bad last line does not stop the agent");
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.torn_bytes as usize, bad.len() - good.len());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            good,
            "the bad line is cut off"
        );
        j.append(&record(3, VmRecordState::Active)).unwrap();
        drop(j);
        assert_eq!(Journal::open(&path).unwrap().1.records.len(), 2);
        // A whole record this version cannot read (a newer agent's field,
        // after a rollback) was acknowledged: refused, and left as it is.
        let mut newer = good.clone();
        newer.extend_from_slice(
            String::from_utf8(good.clone())
                .unwrap()
                .trim_end()
                .replacen('{', "{\"from_a_newer_agent\":1,", 1)
                .as_bytes(),
        );
        newer.push(b'\n');
        std::fs::write(&path, &newer).unwrap();
        let e = Journal::open(&path).err().expect("refused").to_string();
        assert!(
            e.contains("line 2") && e.contains("from_a_newer_agent") && e.contains("newer version"),
            "{e}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), newer, "nothing cut");
        // The same bad line with a good one after it is corruption: refused.
        let mut middle = good.clone();
        middle.extend_from_slice(b"{\"contract_id\":2,\"sta\n");
        middle.extend_from_slice(&good);
        std::fs::write(&path, &middle).unwrap();
        let e = Journal::open(&path).err().expect("refused").to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn compaction_keeps_exactly_the_given_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let (mut j, _) = Journal::open(&path).unwrap();
        for i in 0..10 {
            j.append(&record(i % 3, VmRecordState::Provisioning))
                .unwrap();
        }
        j.append(&record(1, VmRecordState::Released)).unwrap();
        let (_, r) = Journal::open(&path).unwrap();
        let keep: Vec<VmRecord> = r
            .latest()
            .into_values()
            .filter(|r| r.state != VmRecordState::Released)
            .collect();
        j.compact(&keep).unwrap();
        j.append(&record(7, VmRecordState::Active)).unwrap();
        drop(j);
        let (_, r) = Journal::open(&path).unwrap();
        assert_eq!(
            r.records.iter().map(|r| r.contract_id).collect::<Vec<_>>(),
            vec![0, 2, 7]
        );
    }

    proptest! {
        /// Any prefix of a valid journal replays to the records whose lines are
        /// complete, never an error.
        #[test]
        fn every_prefix_replays_to_its_complete_lines(picks in proptest::collection::vec(0usize..5, 1..12), cut_frac in 0.0f64..=1.0) {
            let states = [VmRecordState::Provisioning, VmRecordState::Active, VmRecordState::Releasing, VmRecordState::Released, VmRecordState::Failed];
            let recs: Vec<VmRecord> = (0..).zip(&picks).map(|(i, s)| record(i, states[*s])).collect();
            let mut bytes = Vec::new();
            let mut ends = Vec::new();
            for r in &recs {
                bytes.extend(serde_json::to_vec(r).unwrap());
                bytes.push(b'\n');
                ends.push(bytes.len());
            }
            let cut = ((bytes.len() as f64) * cut_frac) as usize;
            let replay = replay_bytes(Path::new("j"), &bytes[..cut]).unwrap();
            let complete = ends.iter().filter(|&&e| e <= cut).count();
            prop_assert_eq!(replay.records.len(), complete);
            prop_assert_eq!(&replay.records[..], &recs[..complete]);
            prop_assert_eq!(replay.valid_len as usize + replay.torn_bytes as usize, cut);
        }

        /// Flipping a byte inside a line that is followed by another line is
        /// either harmless (still valid JSON of the same shape) or refused, never
        /// silently dropped.
        #[test]
        fn damage_before_the_end_is_never_silently_skipped(n in 2usize..6, pos_frac in 0.0f64..1.0) {
            let recs: Vec<VmRecord> = (0..n as u64).map(|i| record(i, VmRecordState::Active)).collect();
            let mut bytes = Vec::new();
            for r in &recs {
                bytes.extend(serde_json::to_vec(r).unwrap());
                bytes.push(b'\n');
            }
            let first_end = bytes.iter().position(|&b| b == b'\n').unwrap();
            let pos = ((first_end as f64) * pos_frac) as usize;
            bytes[pos] = b'#';
            match replay_bytes(Path::new("j"), &bytes) {
                Err(JournalError::Corrupt { line, .. }) => prop_assert_eq!(line, 1),
                Ok(r) => prop_assert_eq!(r.records.len(), n),
                Err(e) => prop_assert!(false, "unexpected {}", e),
            }
        }
    }
}
