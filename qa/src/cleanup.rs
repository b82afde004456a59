//! Things to undo if the run is interrupted: child processes to kill and
//! PostgreSQL clusters to stop. Normal exits and errors undo them through
//! `Drop`; [`run_all`] is for SIGINT/SIGTERM, where no destructor runs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

type Action = Box<dyn FnOnce() + Send>;

static NEXT: AtomicU64 = AtomicU64::new(1);
static ACTIONS: Mutex<BTreeMap<u64, Action>> = Mutex::new(BTreeMap::new());

/// Registers an action; returns a ticket to cancel it once done normally.
pub fn register(action: impl FnOnce() + Send + 'static) -> u64 {
    let ticket = NEXT.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut a) = ACTIONS.lock() {
        a.insert(ticket, Box::new(action));
    }
    ticket
}

/// Forgets an action (its owner undid it itself).
pub fn cancel(ticket: u64) {
    if let Ok(mut a) = ACTIONS.lock() {
        a.remove(&ticket);
    }
}

/// Runs every registered action, newest first.
pub fn run_all() {
    let actions = match ACTIONS.lock() {
        Ok(mut a) => std::mem::take(&mut *a),
        Err(_) => return,
    };
    for (_, action) in actions.into_iter().rev() {
        action();
    }
}

/// A temporary directory removed when dropped, and also when the run is
/// interrupted.
pub struct ScratchDir {
    dir: Option<tempfile::TempDir>,
    ticket: u64,
}

impl ScratchDir {
    /// A new directory `PARENT/PREFIXrandom`.
    pub fn new(prefix: &str, parent: &std::path::Path) -> std::io::Result<ScratchDir> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(parent)?;
        let path = dir.path().to_path_buf();
        let ticket = register(move || {
            let _ = std::fs::remove_dir_all(&path);
        });
        Ok(ScratchDir {
            dir: Some(dir),
            ticket,
        })
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        self.dir
            .as_ref()
            .map_or(std::path::Path::new(""), |d| d.path())
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        drop(self.dir.take());
        cancel(self.ticket);
    }
}

/// Every QEMU process whose command line mentions `needle` (QEMUs name their
/// run directory), for benchmarks and tests that must find and stop them.
pub fn qemu_pids_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) && text.contains("qemu-system") {
                out.push(pid);
            }
        }
    }
    out
}
