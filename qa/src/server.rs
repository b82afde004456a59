//! The release `dc-ledger` binary, started as operators run it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::cleanup;

/// A running `dc-ledger serve`, killed when dropped.
pub struct LedgerProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// How long it took from spawn to the `listening` line.
    pub startup: Duration,
    log: PathBuf,
    ticket: u64,
}

impl LedgerProcess {
    /// Starts `bin serve --data DATA --listen 127.0.0.1:0 [--genesis G]` and
    /// waits (up to `timeout`) for its `dc-ledger listening on URL` line.
    /// Its log goes to `DATA/../NAME.log`.
    pub fn start(
        bin: &Path,
        data: &Path,
        genesis: Option<&Path>,
        timeout: Duration,
    ) -> anyhow::Result<LedgerProcess> {
        if !bin.is_file() {
            bail!("{}: no such file; build it with `cargo build --release -p dc-ledger` or pass --ledger-bin", bin.display());
        }
        let log = data.with_extension("log");
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--data")
            .arg(data)
            .arg("--listen")
            .arg("127.0.0.1:0");
        if let Some(g) = genesis {
            cmd.arg("--genesis").arg(g);
        }
        cmd.env("DC_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file));
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id() as libc::pid_t;
        let ticket = cleanup::register(move || unsafe {
            libc::kill(pid, libc::SIGKILL);
        });
        let stdout = child.stdout.take().context("dc-ledger stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let mut sent = false;
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if !sent {
                            if let Some(url) = line.trim().strip_prefix("dc-ledger listening on ") {
                                let _ = tx.send(url.to_string());
                                sent = true;
                            }
                        }
                    }
                }
            }
        });
        let mut process = LedgerProcess {
            child,
            url: String::new(),
            startup: Duration::ZERO,
            log,
            ticket,
        };
        let deadline = started + timeout;
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(url) => {
                    process.url = url;
                    process.startup = started.elapsed();
                    return Ok(process);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = process.child.try_wait() {
                        bail!(
                            "dc-ledger exited ({status}) before it was ready; log:\n{}",
                            process.log_tail()
                        );
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "dc-ledger not ready after {timeout:?}; log:\n{}",
                            process.log_tail()
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = process.child.wait();
                    bail!(
                        "dc-ledger closed its output before it was ready; log:\n{}",
                        process.log_tail()
                    );
                }
            }
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory (`VmRSS`) in bytes.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        vm_rss(self.child.id()).with_context(|| format!("reading /proc/{}/status", self.child.id()))
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Its CPU time so far.
    pub fn cpu_time(&self) -> Duration {
        cpu_time(self.child.id(), false).unwrap_or_default()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for LedgerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        cleanup::cancel(self.ticket);
    }
}

/// A `dcctl` command acting as `identity` against the ledger at `url`,
/// with `DC_LEDGER` and `DC_IDENTITY` removed from its environment so that
/// only these arguments choose them; the caller adds the subcommand.
pub fn dcctl_as(dcctl: &Path, url: &str, identity: &Path) -> Command {
    let mut command = Command::new(dcctl);
    command
        .arg("--ledger")
        .arg(url)
        .arg("--identity")
        .arg(identity)
        .env_remove("DC_LEDGER")
        .env_remove("DC_IDENTITY");
    command
}

/// `VmRSS` of a process, in bytes.
pub fn vm_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Parent pid of a process.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_fields(&stat)?.get(1)?.parse().ok()
}

/// Every live process with its parent: one pass over `/proc`.
fn processes_and_parents() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, parent_of(pid)?)))
        .collect()
}

/// Every live process whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    processes_and_parents()
        .into_iter()
        .filter(|&(_, parent)| parent == pid)
        .map(|(child, _)| child)
        .collect()
}

/// `root` and every live process below it, in pid order.
pub fn descendants(root: u32) -> Vec<u32> {
    let all = processes_and_parents();
    let mut tree = std::collections::BTreeSet::from([root]);
    loop {
        let before = tree.len();
        for &(pid, parent) in &all {
            if tree.contains(&parent) {
                tree.insert(pid);
            }
        }
        if tree.len() == before {
            return tree.into_iter().collect();
        }
    }
}

/// The fields of a `/proc/PID/stat` (or `/proc/PID/task/TID/stat`) line
/// after the command name, which is in parentheses and may hold spaces and
/// parentheses itself: index 0 is field 3 of the line (state), index 1 the
/// parent pid, 11 and 12 utime and stime, 13 and 14 cutime and cstime.
pub fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat.rsplit_once(')')?.1.split_whitespace().collect())
}

/// CPU time of a process from `/proc/PID/stat`: user + system, plus the
/// time of its children it has already reaped when `reaped_children`.
pub fn cpu_time(pid: u32, reaped_children: bool) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f = stat_fields(&stat)?;
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    let mut ticks = field(11)? + field(12)?;
    if reaped_children {
        ticks += field(13)? + field(14)?;
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// CPU time of this process (all threads).
pub fn own_cpu_time() -> Duration {
    cpu_time(std::process::id(), false).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_found_below_its_parent() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let (me, id) = (std::process::id(), child.id());
        assert_eq!(parent_of(id), Some(me));
        assert!(children_of(me).contains(&id));
        let tree = descendants(me);
        assert!(tree.contains(&me) && tree.contains(&id), "{tree:?}");
        assert_eq!(descendants(id), vec![id]);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(parent_of(id), None, "reaped");
    }
}
