//! Reports from the Linux configfs-tsm interface (Linux 6.7+,
//! `Documentation/ABI/testing/configfs-tsm`), the one interface through which
//! both the `sev-guest` and `tdx-guest` drivers hand out hardware-signed
//! reports.
//!
//! What the kernel documents, and what this module relies on:
//!
//! - Reports are made in an entry directory the caller creates with `mkdir`
//!   under `/sys/kernel/config/tsm/report/` and removes with `rmdir`; the
//!   kernel fills the entry with its attributes. `mkdir` fails (ENXIO) when no
//!   provider driver is registered, i.e. this is not a confidential VM or the
//!   driver is not loaded.
//! - `inblob` (write-only, binary): up to 64 bytes of caller data, the SNP
//!   `REPORT_DATA` / TDX `REPORTDATA`; both drivers require exactly 64. A
//!   configfs binary attribute is committed when the file is closed, so the
//!   whole value is written in one open–write–close.
//! - `privlevel` (write-only, decimal): the privilege level to report for, the
//!   SNP VMPL; at least `privlevel_floor` (read-only) and at most 3. Only
//!   providers that have the concept show these attributes (TDX does not).
//! - `outblob` (read-only, binary): the report, generated from `inblob` and the
//!   options when read; its format is named by `provider`. At most 32 KiB
//!   (`TSM_OUTBLOB_MAX`). For `sev_guest` it is the 1184-byte SNP
//!   ATTESTATION_REPORT; for `tdx_guest` a TDX quote from the host's quoting
//!   enclave.
//! - `auxblob` (read-only, binary, v6.7+, SNP): supplemental data; for
//!   `sev_guest` the certificate table of the GHCB extended report request
//!   (see [`crate::certtable`]). Absent or empty when there is none.
//! - `provider` (read-only): the format of `outblob`, the driver's module
//!   name: `sev_guest` or `tdx_guest`.
//! - `generation` (read-only, decimal): incremented by every write to `inblob`
//!   or an option. Several processes may share an entry; the documented way to
//!   detect a concurrent writer is to read `generation` before writing and
//!   check, after reading `outblob`, that it advanced by exactly the number of
//!   writes made. On a mismatch the report may answer someone else's
//!   `inblob`: this module throws it away and starts again.
//! - v6.10 adds `service_provider`, `service_guid`, `service_manifest_version`
//!   and `manifestblob` (SVSM service attestation); not used here.
//!
//! The directory is a parameter. When it is not on configfs (a plain directory
//! holding a recorded entry, as the tests use) nothing regenerates the report
//! or bumps `generation`: the entry must already exist, its files are read as
//! they are, and `generation` must simply not change while it is used. All
//! file access goes through [`TsmFs`] so tests can play a concurrent writer.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Where the kernel's report entries live.
pub const DEFAULT_TSM_REPORT_DIR: &str = "/sys/kernel/config/tsm/report";
/// Length of `inblob` both drivers require.
pub const INBLOB_LEN: usize = 64;
/// The kernel's `TSM_OUTBLOB_MAX`: no report is longer.
pub const MAX_OUTBLOB_BYTES: usize = 32 * 1024;
/// The kernel's `TSM_PRIVLEVEL_MAX`.
pub const MAX_PRIVLEVEL: u32 = 3;
/// Attempts before a `generation` conflict is reported as an error.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Largest text attribute read (`provider`, `generation`, `privlevel_floor`).
const MAX_TEXT_ATTR_BYTES: usize = 256;
/// `CONFIGFS_MAGIC` from `include/uapi/linux/magic.h`.
const CONFIGFS_MAGIC: u64 = 0x6265_6570;

/// What the report directory is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interface {
    /// The kernel's configfs: writes bump `generation`, reads make reports.
    Configfs,
    /// A plain directory holding a recorded entry (tests, replays).
    Directory,
}

impl Interface {
    pub fn name(self) -> &'static str {
        match self {
            Interface::Configfs => "configfs",
            Interface::Directory => "directory",
        }
    }
}

/// Tells configfs from a plain directory by the file-system type.
pub fn detect_interface(dir: &Path) -> io::Result<Interface> {
    let st = rustix::fs::statfs(dir).map_err(io::Error::from)?;
    #[allow(clippy::unnecessary_cast)] // the field's type differs between targets
    let magic = st.f_type as u64;
    Ok(if magic == CONFIGFS_MAGIC {
        Interface::Configfs
    } else {
        Interface::Directory
    })
}

/// The report format, from `provider`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Provider {
    /// `sev_guest`: AMD SEV-SNP.
    SevSnp,
    /// `tdx_guest`: Intel TDX.
    Tdx,
    /// Any other provider (e.g. Arm CCA); the evidence bundle cannot carry it.
    Other(String),
}

impl Provider {
    /// From the `provider` attribute's text.
    pub fn from_name(name: &str) -> Self {
        match name {
            "sev_guest" => Provider::SevSnp,
            "tdx_guest" => Provider::Tdx,
            other => Provider::Other(other.to_string()),
        }
    }

    /// The `provider` attribute's text.
    pub fn name(&self) -> &str {
        match self {
            Provider::SevSnp => "sev_guest",
            Provider::Tdx => "tdx_guest",
            Provider::Other(n) => n,
        }
    }

    /// The `kind` of the evidence bundle item it produces, if any.
    pub fn evidence_kind(&self) -> Option<&'static str> {
        match self {
            Provider::SevSnp => Some("sev-snp"),
            Provider::Tdx => Some("tdx"),
            Provider::Other(_) => None,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// File access to the report directory.
pub trait TsmFs {
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
    /// Writes the whole value in one open–write–close.
    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Reads at most `limit + 1` bytes, so a caller can tell "too long".
    fn read(&self, path: &Path, limit: usize) -> io::Result<Vec<u8>>;
}

/// The real file system.
#[derive(Clone, Copy, Debug)]
pub struct OsFs {
    /// Configfs attributes exist already and cannot be created; a recorded
    /// entry in a plain directory may lack `inblob` until the first write.
    pub create_files: bool,
}

impl OsFs {
    /// The file access right for `interface`.
    pub fn for_interface(interface: Interface) -> Self {
        OsFs {
            create_files: interface == Interface::Directory,
        }
    }
}

impl TsmFs for OsFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(self.create_files)
            .truncate(self.create_files)
            .open(path)?;
        f.write_all(bytes)?;
        // configfs commits a binary attribute on release: surface its error.
        f.flush()?;
        drop(f);
        Ok(())
    }

    fn read(&self, path: &Path, limit: usize) -> io::Result<Vec<u8>> {
        let f = std::fs::File::open(path)?;
        let mut buf = Vec::new();
        f.take(limit as u64 + 1).read_to_end(&mut buf)?;
        Ok(buf)
    }
}

/// Why no report could be had.
#[derive(Debug, thiserror::Error)]
pub enum TsmError {
    #[error("{dir} does not exist: this kernel has no configfs-tsm (Linux 6.7+ with CONFIG_TSM_REPORTS), configfs is not mounted at /sys/kernel/config, or this is not a confidential VM")]
    NotPresent { dir: PathBuf },
    #[error("no report provider: creating {entry} failed ({detail}); the sev-guest or tdx-guest driver is not loaded, or this is not a confidential VM")]
    NoProvider { entry: PathBuf, detail: String },
    #[error("permission denied on {path}: {detail} (creating reports needs root)")]
    PermissionDenied { path: PathBuf, detail: String },
    #[error("{entry} does not exist; {dir} is a plain directory, not configfs, so the entry must already hold a recorded report")]
    EntryMissing { entry: PathBuf, dir: PathBuf },
    #[error(
        "report entry name {0:?} must be one path component of letters, digits, '-', '_' or '.'"
    )]
    BadEntryName(String),
    #[error("{path} is missing: not a configfs-tsm report entry")]
    MissingAttribute { path: PathBuf },
    #[error("{op} {path}: {detail}")]
    Io {
        op: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("{path} holds more than {limit} bytes")]
    Oversized { path: PathBuf, limit: usize },
    #[error("{path}: {reason}")]
    BadAttribute { path: PathBuf, reason: String },
    #[error("{path} is empty: the provider returned no report")]
    EmptyReport { path: PathBuf },
    #[error("privilege level {requested} is outside {floor}..={MAX_PRIVLEVEL} (privlevel_floor is {floor})")]
    PrivlevelOutOfRange { requested: u32, floor: u32 },
    #[error("provider {provider} takes no privilege level (no privlevel attribute)")]
    PrivlevelUnsupported { provider: String },
    #[error("another writer used {entry} while the report was made: generation was {found}, expected {expected}, in each of {attempts} attempts")]
    GenerationConflict {
        entry: PathBuf,
        attempts: u32,
        expected: u64,
        found: u64,
    },
}

impl TsmError {
    fn io(op: &'static str, path: &Path, e: &io::Error) -> Self {
        if e.kind() == io::ErrorKind::PermissionDenied {
            return TsmError::PermissionDenied {
                path: path.to_path_buf(),
                detail: e.to_string(),
            };
        }
        TsmError::Io {
            op,
            path: path.to_path_buf(),
            detail: e.to_string(),
        }
    }

    /// True when the machine offers no report provider at all (as opposed to
    /// one that failed).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            TsmError::NotPresent { .. }
                | TsmError::NoProvider { .. }
                | TsmError::EntryMissing { .. }
        )
    }
}

/// What the caller asks the hardware to sign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TsmRequest {
    /// The 64 bytes written to `inblob`.
    pub report_data: [u8; INBLOB_LEN],
    /// The privilege level (SNP VMPL) to write to `privlevel`, if any; the
    /// kernel's current value is used otherwise.
    pub privlevel: Option<u32>,
}

/// A report as the kernel returned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TsmReport {
    pub provider: Provider,
    pub outblob: Vec<u8>,
    /// The `auxblob`, when the provider has one and it is not empty.
    pub auxblob: Option<Vec<u8>>,
    /// How many attempts it took (more than one after a concurrent writer).
    pub attempts: u32,
    /// Problems that did not spoil the report (e.g. the entry not removed).
    pub warnings: Vec<String>,
}

/// What a probe found (`dc-guest platform`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformInfo {
    pub interface: Interface,
    pub provider: Provider,
    /// `privlevel_floor`, when the provider has privilege levels.
    pub privlevel_floor: Option<u32>,
    /// Whether the provider offers `auxblob` (certificates from the host).
    pub has_auxblob: bool,
}

/// The report interface at one directory.
#[derive(Debug)]
pub struct Tsm<F: TsmFs> {
    fs: F,
    dir: PathBuf,
    entry_name: String,
    interface: Interface,
    max_attempts: u32,
}

/// An entry in use, and whether this process made it (and so removes it).
struct Entry {
    path: PathBuf,
    created: bool,
}

impl<F: TsmFs> Tsm<F> {
    /// `dir` is the report directory (normally [`DEFAULT_TSM_REPORT_DIR`]);
    /// `entry_name` the entry to use in it. An existing entry of that name is
    /// used as it is: the `generation` check makes sharing safe.
    pub fn new(
        fs: F,
        dir: impl Into<PathBuf>,
        entry_name: &str,
        interface: Interface,
    ) -> Result<Self, TsmError> {
        let ok = !entry_name.is_empty()
            && entry_name.len() <= 128
            && entry_name != "."
            && entry_name != ".."
            && entry_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(TsmError::BadEntryName(entry_name.to_string()));
        }
        Ok(Tsm {
            fs,
            dir: dir.into(),
            entry_name: entry_name.to_string(),
            interface,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        })
    }

    /// Sets how many attempts a `generation` conflict gets (at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// What the directory is.
    pub fn interface(&self) -> Interface {
        self.interface
    }

    /// The entry's path.
    pub fn entry_path(&self) -> PathBuf {
        self.dir.join(&self.entry_name)
    }

    fn open_entry(&self) -> Result<Entry, TsmError> {
        if !self.fs.exists(&self.dir) {
            return Err(TsmError::NotPresent {
                dir: self.dir.clone(),
            });
        }
        let path = self.entry_path();
        if self.interface == Interface::Directory {
            if !self.fs.exists(&path) {
                return Err(TsmError::EntryMissing {
                    entry: path,
                    dir: self.dir.clone(),
                });
            }
            return Ok(Entry {
                path,
                created: false,
            });
        }
        match self.fs.create_dir(&path) {
            Ok(()) => Ok(Entry {
                path,
                created: true,
            }),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Entry {
                path,
                created: false,
            }),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                Err(TsmError::io("create", &path, &e))
            }
            // ENXIO ("no such device or address") is what tsm.c returns
            // without a provider; any other failure here means the same to a
            // caller: no reports from this machine.
            Err(e) => Err(TsmError::NoProvider {
                entry: path,
                detail: e.to_string(),
            }),
        }
    }

    fn close_entry(&self, entry: Entry, warnings: &mut Vec<String>) {
        if entry.created {
            if let Err(e) = self.fs.remove_dir(&entry.path) {
                warnings.push(format!(
                    "report entry {} was not removed: {e}",
                    entry.path.display()
                ));
            }
        }
    }

    fn read_bounded(&self, path: &Path, limit: usize) -> Result<Option<Vec<u8>>, TsmError> {
        match self.fs.read(path, limit) {
            Ok(bytes) if bytes.len() > limit => Err(TsmError::Oversized {
                path: path.to_path_buf(),
                limit,
            }),
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(TsmError::io("read", path, &e)),
        }
    }

    fn read_text(&self, path: &Path) -> Result<Option<String>, TsmError> {
        let Some(bytes) = self.read_bounded(path, MAX_TEXT_ATTR_BYTES)? else {
            return Ok(None);
        };
        let text = String::from_utf8(bytes).map_err(|_| TsmError::BadAttribute {
            path: path.to_path_buf(),
            reason: "not UTF-8 text".into(),
        })?;
        Ok(Some(text.trim().to_string()))
    }

    fn read_number(&self, path: &Path) -> Result<Option<u64>, TsmError> {
        let Some(text) = self.read_text(path)? else {
            return Ok(None);
        };
        text.parse::<u64>()
            .map(Some)
            .map_err(|_| TsmError::BadAttribute {
                path: path.to_path_buf(),
                reason: format!("{text:?} is not a decimal number"),
            })
    }

    fn required<T>(path: &Path, v: Option<T>) -> Result<T, TsmError> {
        v.ok_or_else(|| TsmError::MissingAttribute {
            path: path.to_path_buf(),
        })
    }

    fn read_provider(&self, entry: &Path) -> Result<Provider, TsmError> {
        let path = entry.join("provider");
        let name = Self::required(&path, self.read_text(&path)?)?;
        if name.is_empty() {
            return Err(TsmError::BadAttribute {
                path,
                reason: "empty provider name".into(),
            });
        }
        Ok(Provider::from_name(&name))
    }

    fn read_floor(&self, entry: &Path) -> Result<Option<u32>, TsmError> {
        let path = entry.join("privlevel_floor");
        match self.read_number(&path)? {
            None => Ok(None),
            Some(n) => u32::try_from(n)
                .map(Some)
                .map_err(|_| TsmError::BadAttribute {
                    path,
                    reason: format!("{n} is not a privilege level"),
                }),
        }
    }

    /// Finds out which provider is there, without asking for a report (only
    /// `mkdir`, reads of text attributes, and `rmdir`).
    pub fn probe(&self) -> Result<PlatformInfo, TsmError> {
        let entry = self.open_entry()?;
        let result = (|| {
            Ok(PlatformInfo {
                interface: self.interface,
                provider: self.read_provider(&entry.path)?,
                privlevel_floor: self.read_floor(&entry.path)?,
                has_auxblob: self.fs.exists(&entry.path.join("auxblob")),
            })
        })();
        let mut ignored = Vec::new();
        self.close_entry(entry, &mut ignored);
        result
    }

    /// Asks for a report over `request.report_data`, retrying while another
    /// writer changes the entry underneath.
    pub fn collect(&self, request: &TsmRequest) -> Result<TsmReport, TsmError> {
        let entry = self.open_entry()?;
        let result = self.collect_in(&entry.path, request);
        match result {
            Ok(mut report) => {
                self.close_entry(entry, &mut report.warnings);
                Ok(report)
            }
            Err(e) => {
                let mut ignored = Vec::new();
                self.close_entry(entry, &mut ignored);
                Err(e)
            }
        }
    }

    fn collect_in(&self, entry: &Path, request: &TsmRequest) -> Result<TsmReport, TsmError> {
        let provider = self.read_provider(entry)?;
        if let Some(level) = request.privlevel {
            if !self.fs.exists(&entry.join("privlevel")) {
                return Err(TsmError::PrivlevelUnsupported {
                    provider: provider.to_string(),
                });
            }
            let floor = self.read_floor(entry)?.unwrap_or(0);
            if level < floor || level > MAX_PRIVLEVEL {
                return Err(TsmError::PrivlevelOutOfRange {
                    requested: level,
                    floor,
                });
            }
        }
        let generation_path = entry.join("generation");
        let inblob_path = entry.join("inblob");
        let outblob_path = entry.join("outblob");
        let auxblob_path = entry.join("auxblob");
        let privlevel_path = entry.join("privlevel");

        let mut last = (0u64, 0u64);
        for attempt in 1..=self.max_attempts {
            let before = Self::required(&generation_path, self.read_number(&generation_path)?)?;
            let mut writes = 0u64;
            if let Some(level) = request.privlevel {
                self.fs
                    .write(&privlevel_path, format!("{level}\n").as_bytes())
                    .map_err(|e| TsmError::io("write", &privlevel_path, &e))?;
                writes += 1;
            }
            self.fs
                .write(&inblob_path, &request.report_data)
                .map_err(|e| TsmError::io("write", &inblob_path, &e))?;
            writes += 1;

            // Reading outblob is what makes the kernel ask the hardware.
            let outblob = Self::required(
                &outblob_path,
                self.read_bounded(&outblob_path, MAX_OUTBLOB_BYTES)?,
            )?;
            if outblob.is_empty() {
                return Err(TsmError::EmptyReport { path: outblob_path });
            }
            let auxblob = self
                .read_bounded(&auxblob_path, crate::certtable::MAX_AUXBLOB_BYTES)?
                .filter(|b| !b.is_empty());
            let after = Self::required(&generation_path, self.read_number(&generation_path)?)?;

            let expected = match self.interface {
                Interface::Configfs => before.saturating_add(writes),
                Interface::Directory => before,
            };
            if after == expected {
                return Ok(TsmReport {
                    provider,
                    outblob,
                    auxblob,
                    attempts: attempt,
                    warnings: Vec::new(),
                });
            }
            last = (expected, after);
        }
        Err(TsmError::GenerationConflict {
            entry: entry.to_path_buf(),
            attempts: self.max_attempts,
            expected: last.0,
            found: last.1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};

    /// A file system that behaves like the kernel's configfs for one entry:
    /// `mkdir` makes the attributes, writes to `inblob`/`privlevel` bump
    /// `generation`, reading `outblob` makes a "report" that echoes `inblob`.
    /// `intruder_writes` plays a concurrent writer: that many extra bumps on
    /// each of the first `intruder_rounds` reads of `outblob`.
    struct FakeKernel {
        root: tempfile::TempDir,
        provider: &'static str,
        generation: Cell<u64>,
        intruder_rounds: Cell<u32>,
        outblob_reads: Cell<u32>,
        log: RefCell<Vec<String>>,
        mkdir_error: Option<io::ErrorKind>,
    }

    impl FakeKernel {
        fn new(provider: &'static str) -> Self {
            let root = tempfile::tempdir().unwrap();
            std::fs::create_dir(root.path().join("report")).unwrap();
            FakeKernel {
                root,
                provider,
                generation: Cell::new(0),
                intruder_rounds: Cell::new(0),
                outblob_reads: Cell::new(0),
                log: RefCell::new(Vec::new()),
                mkdir_error: None,
            }
        }

        fn dir(&self) -> PathBuf {
            self.root.path().join("report")
        }

        fn name(path: &Path) -> String {
            path.file_name().unwrap().to_string_lossy().into_owned()
        }
    }

    impl TsmFs for &FakeKernel {
        fn create_dir(&self, path: &Path) -> io::Result<()> {
            self.log.borrow_mut().push("mkdir".into());
            if let Some(kind) = self.mkdir_error {
                return Err(io::Error::from(kind));
            }
            std::fs::create_dir(path)?;
            std::fs::write(path.join("provider"), format!("{}\n", self.provider))?;
            if self.provider == "sev_guest" {
                std::fs::write(path.join("privlevel_floor"), "0\n")?;
                std::fs::write(path.join("privlevel"), "")?;
            }
            Ok(())
        }
        fn remove_dir(&self, path: &Path) -> io::Result<()> {
            self.log.borrow_mut().push("rmdir".into());
            std::fs::remove_dir_all(path)
        }
        fn exists(&self, path: &Path) -> bool {
            path.exists()
        }
        fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
            self.log
                .borrow_mut()
                .push(format!("write {}", FakeKernel::name(path)));
            std::fs::write(path, bytes)?;
            self.generation.set(self.generation.get() + 1);
            Ok(())
        }
        fn read(&self, path: &Path, limit: usize) -> io::Result<Vec<u8>> {
            let name = FakeKernel::name(path);
            if name != "generation" {
                self.log.borrow_mut().push(format!("read {name}"));
            }
            match name.as_str() {
                "generation" => Ok(format!("{}\n", self.generation.get()).into_bytes()),
                "outblob" => {
                    self.outblob_reads.set(self.outblob_reads.get() + 1);
                    if self.intruder_rounds.get() > 0 {
                        self.intruder_rounds.set(self.intruder_rounds.get() - 1);
                        self.generation.set(self.generation.get() + 1);
                    }
                    let mut report = b"REPORT:".to_vec();
                    report.extend(std::fs::read(path.with_file_name("inblob"))?);
                    Ok(report)
                }
                "auxblob" => Err(io::Error::from(io::ErrorKind::NotFound)),
                _ => {
                    let mut v = std::fs::read(path)?;
                    v.truncate(limit + 1);
                    Ok(v)
                }
            }
        }
    }

    fn request() -> TsmRequest {
        TsmRequest {
            report_data: [0xab; 64],
            privlevel: None,
        }
    }

    #[test]
    fn configfs_protocol_writes_then_reads_then_removes_the_entry() {
        let k = FakeKernel::new("sev_guest");
        let tsm = Tsm::new(&k, k.dir(), "e1", Interface::Configfs).unwrap();
        let req = TsmRequest {
            privlevel: Some(0),
            ..request()
        };
        let report = tsm.collect(&req).unwrap();
        assert_eq!(report.provider, Provider::SevSnp);
        assert_eq!(&report.outblob[7..], &[0xab; 64]);
        assert_eq!(report.attempts, 1);
        assert_eq!(report.auxblob, None);
        assert!(report.warnings.is_empty());
        assert_eq!(
            *k.log.borrow(),
            [
                "mkdir",
                "read provider",
                "read privlevel_floor",
                "write privlevel",
                "write inblob",
                "read outblob",
                "read auxblob",
                "rmdir"
            ]
        );
        assert!(!k.dir().join("e1").exists(), "entry removed");
    }

    #[test]
    fn a_concurrent_writer_costs_a_retry() {
        let k = FakeKernel::new("tdx_guest");
        k.intruder_rounds.set(1);
        let tsm = Tsm::new(&k, k.dir(), "e", Interface::Configfs).unwrap();
        let report = tsm.collect(&request()).unwrap();
        assert_eq!(report.attempts, 2);
        assert_eq!(k.outblob_reads.get(), 2);
    }

    #[test]
    fn a_writer_that_never_stops_is_an_error_after_the_attempts() {
        let k = FakeKernel::new("tdx_guest");
        k.intruder_rounds.set(100);
        let tsm = Tsm::new(&k, k.dir(), "e", Interface::Configfs)
            .unwrap()
            .with_max_attempts(4);
        let e = tsm.collect(&request()).unwrap_err();
        assert!(
            matches!(e, TsmError::GenerationConflict { attempts: 4, .. }),
            "{e}"
        );
        assert_eq!(k.outblob_reads.get(), 4);
        assert!(!k.dir().join("e").exists(), "entry removed after failure");
    }

    #[test]
    fn an_existing_entry_is_shared_and_left_in_place() {
        let k = FakeKernel::new("sev_guest");
        (&k).create_dir(&k.dir().join("shared")).unwrap();
        k.log.borrow_mut().clear();
        let tsm = Tsm::new(&k, k.dir(), "shared", Interface::Configfs).unwrap();
        tsm.collect(&request()).unwrap();
        assert!(k.dir().join("shared").exists());
        assert!(!k.log.borrow().iter().any(|l| l == "rmdir"));
    }

    #[test]
    fn no_provider_and_no_interface_are_told_apart_from_failures() {
        let mut k = FakeKernel::new("sev_guest");
        k.mkdir_error = Some(io::ErrorKind::Other);
        let tsm = Tsm::new(&k, k.dir(), "e", Interface::Configfs).unwrap();
        let e = tsm.probe().unwrap_err();
        assert!(matches!(e, TsmError::NoProvider { .. }), "{e}");
        assert!(e.is_unavailable());

        k.mkdir_error = Some(io::ErrorKind::PermissionDenied);
        let tsm = Tsm::new(&k, k.dir(), "e", Interface::Configfs).unwrap();
        let e = tsm.collect(&request()).unwrap_err();
        assert!(matches!(e, TsmError::PermissionDenied { .. }), "{e}");
        assert!(!e.is_unavailable());

        let tsm = Tsm::new(&k, k.root.path().join("absent"), "e", Interface::Configfs).unwrap();
        assert!(matches!(
            tsm.probe().unwrap_err(),
            TsmError::NotPresent { .. }
        ));
    }

    #[test]
    fn privilege_levels_are_checked_before_anything_is_written() {
        let k = FakeKernel::new("sev_guest");
        std::fs::create_dir(k.dir().join("e")).unwrap();
        std::fs::write(k.dir().join("e/provider"), "sev_guest").unwrap();
        std::fs::write(k.dir().join("e/privlevel"), "").unwrap();
        std::fs::write(k.dir().join("e/privlevel_floor"), "2\n").unwrap();
        let tsm = Tsm::new(&k, k.dir(), "e", Interface::Configfs).unwrap();
        for level in [1, 4] {
            let e = tsm
                .collect(&TsmRequest {
                    privlevel: Some(level),
                    ..request()
                })
                .unwrap_err();
            assert!(matches!(e, TsmError::PrivlevelOutOfRange { .. }), "{e}");
        }
        assert!(!k.log.borrow().iter().any(|l| l.starts_with("write")));

        let k = FakeKernel::new("tdx_guest");
        let tsm = Tsm::new(&k, k.dir(), "e", Interface::Configfs).unwrap();
        let e = tsm
            .collect(&TsmRequest {
                privlevel: Some(0),
                ..request()
            })
            .unwrap_err();
        assert!(matches!(e, TsmError::PrivlevelUnsupported { .. }), "{e}");
    }

    #[test]
    fn probe_reads_no_report() {
        let k = FakeKernel::new("sev_guest");
        let tsm = Tsm::new(&k, k.dir(), "p", Interface::Configfs).unwrap();
        let info = tsm.probe().unwrap();
        assert_eq!(info.provider, Provider::SevSnp);
        assert_eq!(info.privlevel_floor, Some(0));
        assert!(!info.has_auxblob);
        assert_eq!(k.outblob_reads.get(), 0);
        assert!(!k.dir().join("p").exists());
    }

    #[test]
    fn entry_names_are_one_plain_component() {
        for bad in ["", ".", "..", "a/b", "a b", "../x", &"x".repeat(129)] {
            assert!(matches!(
                Tsm::new(
                    OsFs::for_interface(Interface::Directory),
                    "/tmp",
                    bad,
                    Interface::Directory
                ),
                Err(TsmError::BadEntryName(_))
            ));
        }
        assert!(Tsm::new(
            OsFs {
                create_files: false
            },
            "/tmp",
            "dc-guest-12.a_b",
            Interface::Configfs
        )
        .is_ok());
    }

    #[test]
    fn providers_by_name() {
        assert_eq!(Provider::from_name("sev_guest"), Provider::SevSnp);
        assert_eq!(
            Provider::from_name("tdx_guest").evidence_kind(),
            Some("tdx")
        );
        let cca = Provider::from_name("arm_cca_guest");
        assert_eq!(cca.evidence_kind(), None);
        assert_eq!(cca.to_string(), "arm_cca_guest");
    }

    #[test]
    fn a_plain_directory_is_not_configfs() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(detect_interface(d.path()).unwrap(), Interface::Directory);
        assert!(detect_interface(&d.path().join("absent")).is_err());
    }
}
