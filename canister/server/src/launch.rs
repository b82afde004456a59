//! Starting `dc-ledger serve` as a separate process, as operators run it:
//! used by the tests, the scenario tests and the benchmarks, so each waits
//! for readiness and reports a failed start the same way.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The line `dc-ledger serve` prints when it is ready, followed by its URL.
pub const READY_PREFIX: &str = "dc-ledger listening on ";

/// A running `dc-ledger serve`; killed (SIGKILL) when dropped.
pub struct LedgerProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// From spawn to the ready line.
    pub startup: Duration,
    log: Option<PathBuf>,
}

/// Why the service did not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{bin}: {source}")]
    Spawn {
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error("dc-ledger exited ({status}) before it was ready{log}")]
    Exited { status: String, log: String },
    #[error("dc-ledger was not ready after {0:?}")]
    Timeout(Duration),
}

impl LedgerProcess {
    /// Runs `bin serve --data DATA --listen 127.0.0.1:0 [--genesis G]` and
    /// waits up to `timeout` for the ready line. Its log (stderr) goes to
    /// `log` when given, and is quoted if the start fails.
    pub fn start(
        bin: &Path,
        data: &Path,
        genesis: Option<&Path>,
        log: Option<&Path>,
        timeout: Duration,
    ) -> Result<LedgerProcess, LaunchError> {
        let spawn_err = |source| LaunchError::Spawn {
            bin: bin.to_path_buf(),
            source,
        };
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--data")
            .arg(data)
            .arg("--listen")
            .arg("127.0.0.1:0");
        if let Some(g) = genesis {
            cmd.arg("--genesis").arg(g);
        }
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).map_err(spawn_err)?),
            None => Stdio::null(),
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| spawn_err(std::io::Error::other("no stdout")))?;
        let (tx, rx) = mpsc::channel();
        // Keep draining stdout after the ready line so the child never blocks on it.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                if let Some(url) = line.trim().strip_prefix(READY_PREFIX) {
                    let _ = tx.send(url.to_string());
                }
                line.clear();
            }
        });
        let mut process = LedgerProcess {
            child,
            url: String::new(),
            startup: Duration::ZERO,
            log: log.map(Path::to_path_buf),
        };
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(url) => {
                    process.url = url;
                    process.startup = started.elapsed();
                    return Ok(process);
                }
                Err(_) => {
                    if let Ok(Some(status)) = process.child.try_wait() {
                        return Err(LaunchError::Exited {
                            status: status.to_string(),
                            log: process.log_tail(),
                        });
                    }
                    if started.elapsed() > timeout {
                        return Err(LaunchError::Timeout(timeout));
                    }
                }
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9` and wait.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (a clean stop with a snapshot) and wait for the exit.
    pub fn terminate(mut self) -> std::io::Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").arg("-TERM").arg(&pid).status()?;
        self.child.wait()
    }

    fn log_tail(&self) -> String {
        let Some(path) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        format!(
            "; log {}:\n{}",
            path.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

impl Drop for LedgerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
