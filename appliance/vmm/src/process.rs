//! VMM processes that outlive the supervisor.
//!
//! A VMM is started in its own session (`setsid`), with stdin from
//! `/dev/null` and output to a log file, so a `kill -9` of the supervisor, or
//! of its process group, leaves it running; the supervisor finds it again by
//! pid and start time.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::VmmError;

/// A started VMM process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spawned {
    pub pid: u32,
    pub start_ticks: u64,
}

/// Starts `cmd` detached: new session, no controlling terminal, stdin from
/// /dev/null, stdout and stderr appended to `log`. The child is not waited
/// for; when the supervisor exits it is re-parented to init (or the nearest
/// subreaper), which reaps it.
pub fn spawn_detached(cmd: Command, log: &Path) -> Result<Spawned, VmmError> {
    spawn_detached_split(cmd, log, log)
}

/// [`spawn_detached`] with stdout and stderr going to two files, each
/// opened with `O_APPEND` (so [`crate::cap_log`] can truncate them under
/// the running process). Cloud Hypervisor's serial console goes to its
/// stdout this way, apart from its own messages on stderr.
pub fn spawn_detached_split(mut cmd: Command, stdout_log: &Path, stderr_log: &Path) -> Result<Spawned, VmmError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let open = |path: &Path| {
        std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| VmmError::io(path, e))
    };
    let out = open(stdout_log)?;
    let err = if stderr_log == stdout_log {
        out.try_clone().map_err(|e| VmmError::io(stderr_log, e))?
    } else {
        open(stderr_log)?
    };
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| VmmError::Spawn { program: program.clone(), reason: e.to_string() })?;
    let pid = child.id();
    // Dropping `Child` neither kills nor waits; a reaper thread collects the
    // exit status while we live, so no zombie lingers.
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    let start_ticks = start_ticks(pid)
        .ok_or_else(|| VmmError::Spawn { program, reason: format!("process {pid} exited immediately") })?;
    Ok(Spawned { pid, start_ticks })
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks
/// since boot. `None` if there is no such process.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip to
    // the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // `rest` starts at field 3 (state); starttime is field 22.
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(22 - 4)?.parse().ok()
}

/// True while the process `pid` exists, is not a zombie, and is the one that
/// started at `start_ticks` (not a later process that reused the pid).
pub fn is_same_process_alive(pid: u32, start_ticks_expected: u64) -> bool {
    start_ticks(pid) == Some(start_ticks_expected)
}

/// Sends `signal` to `pid` if it is still the process that started at `start_ticks`.
pub fn signal_if_same(pid: u32, start_ticks_expected: u64, signal: i32) -> bool {
    if !is_same_process_alive(pid, start_ticks_expected) {
        return false;
    }
    let Ok(pid) = i32::try_from(pid) else { return false };
    // SAFETY: plain syscall on a pid we just checked.
    unsafe { libc::kill(pid, signal) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_process_is_found_by_pid_and_start_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let s = spawn_detached(cmd, &dir.path().join("log")).unwrap();
        assert!(is_same_process_alive(s.pid, s.start_ticks));
        assert!(!is_same_process_alive(s.pid, s.start_ticks + 1), "another start time is another process");
        // Its own session: not in our process group.
        let pgid = unsafe { libc::getpgid(s.pid as i32) };
        assert_eq!(pgid, s.pid as i32);
        assert!(signal_if_same(s.pid, s.start_ticks, libc::SIGKILL));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while is_same_process_alive(s.pid, s.start_ticks) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!is_same_process_alive(s.pid, s.start_ticks));
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = spawn_detached(Command::new("/nonexistent/vmm"), &dir.path().join("log")).unwrap_err();
        assert!(matches!(err, VmmError::Spawn { .. }));
    }

    #[test]
    fn split_output_goes_to_two_appended_files() {
        let dir = tempfile::tempdir().unwrap();
        let (out, err) = (dir.path().join("out"), dir.path().join("err"));
        std::fs::write(&out, "before\n").unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo to-stdout; echo to-stderr >&2"]);
        let s = spawn_detached_split(cmd, &out, &err);
        // The child may be gone before its start time is read; wait for output either way.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::read_to_string(&err).unwrap_or_default().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(s.is_ok() || matches!(s, Err(VmmError::Spawn { .. })));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "before\nto-stdout\n", "appended, not truncated");
        assert_eq!(std::fs::read_to_string(&err).unwrap(), "to-stderr\n");
    }

    #[test]
    fn our_own_start_time_is_readable() {
        assert!(start_ticks(std::process::id()).is_some());
        assert!(start_ticks(u32::MAX).is_none());
    }
}
