//! Size caps for the logs a VMM writes (serial console, the VMM's own output).
//!
//! A guest can print without end, and a VMM outlives the supervisor, so the
//! supervisor cannot sit in the write path. Instead both backends open their
//! logs with `O_APPEND`, and the supervisor calls [`cap_log`] from time to
//! time: when a log is over its cap, its last part moves to `<name>.1` and the
//! live file is truncated to zero while the VMM keeps it open.
//!
//! Truncating a file under a writer is only clean when the writer appends:
//! with `O_APPEND` every write goes to the current end, so after the
//! truncation the next line lands at offset 0. Who appends:
//!
//! - QEMU: the serial chardev is `file,...,append=on` (QEMU then opens it
//!   `O_APPEND`), and its stdout/stderr log comes from
//!   [`crate::process::spawn_detached`], which opens it `O_APPEND`.
//! - Cloud Hypervisor: it opens a `File`-mode serial path with
//!   `File::create` (no `O_APPEND`, checked in its `console_devices.rs`), so
//!   the backend uses `Tty` mode instead, which writes to the VMM's stdout,
//!   and gives it an `O_APPEND` stdout of its own
//!   ([`crate::process::spawn_detached_split`]).
//!
//! A writer that does not append keeps writing at its old offset after the
//! truncation: the file becomes sparse, with a hole where the old bytes were.
//! Its disk use stays bounded (the hole takes no blocks) but its apparent
//! size keeps growing with everything ever written, and reading it whole
//! reads the hole as zeros. [`cap_log`] and [`read_log_tail`] skip such a
//! hole (by `SEEK_DATA`), so capping still works; readers should use
//! [`read_log_tail`] rather than reading the file whole.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// `<path>.1`: where the previous part of a capped log goes.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// The first offset at or after `from` that holds data (not a hole), or
/// `len` when there is none. File systems without hole tracking report
/// everything as data, which is still correct.
fn data_start(file: &File, from: u64, len: u64) -> io::Result<u64> {
    if from >= len {
        return Ok(len);
    }
    let Ok(offset) = libc::off_t::try_from(from) else { return Ok(from) };
    // SAFETY: lseek on a descriptor we own; no memory is passed.
    let at = unsafe { libc::lseek(file.as_raw_fd(), offset, libc::SEEK_DATA) };
    if at < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            // No data after `from`: the rest is a hole.
            Some(libc::ENXIO) => Ok(len),
            // SEEK_DATA unsupported: treat everything as data.
            Some(libc::EINVAL) => Ok(from),
            _ => Err(err),
        };
    }
    Ok((at as u64).max(from))
}

/// Reads bytes `[from, to)` of `file`, dropping the zero bytes a hole left
/// at the start when `after_hole` (a non-appending writer's old offset is not
/// block-aligned, so the first data block starts with part of the hole).
fn read_range(file: &mut File, from: u64, to: u64, after_hole: bool) -> io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::with_capacity(usize::try_from(to - from).unwrap_or(0));
    file.take(to - from).read_to_end(&mut bytes)?;
    if after_hole {
        let zeros = bytes.iter().take(4096).take_while(|&&b| b == 0).count();
        bytes.drain(..zeros);
    }
    Ok(bytes)
}

/// The last `max_bytes` bytes of data of the log at `path` (fewer if it
/// holds less), skipping a hole left by a non-appending writer. A missing
/// file reads as empty.
pub fn read_log_tail(path: &Path, max_bytes: u64) -> io::Result<Vec<u8>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let wanted = len.saturating_sub(max_bytes);
    let start = data_start(&file, wanted, len)?;
    read_range(&mut file, start, len, start > wanted)
}

/// Caps the log at `path` at `max_bytes` of data: when it holds more, its
/// last `max_bytes` bytes (and whatever the writer adds while they are
/// copied) go to `<path>.1`, replacing an older one, and the live file is
/// truncated to zero. Returns whether it capped; a missing log is `false`.
///
/// Safe only while the writer has the file open with `O_APPEND` (see the
/// module documentation for which backends do, and what happens otherwise).
/// Bytes written in the instant between the last copy and the truncation
/// are lost; for a console log that is accepted. So is the bound: the live
/// file plus `<path>.1` stay below about `2 × max_bytes` plus what the guest
/// writes between two calls.
pub fn cap_log(path: &Path, max_bytes: u64) -> io::Result<bool> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let first_data = data_start(&file, 0, len)?;
    if len - first_data <= max_bytes {
        return Ok(false);
    }
    let wanted = len.saturating_sub(max_bytes);
    let start = data_start(&file, wanted, len)?;

    let rotated = rotated_path(path);
    let mut partial = rotated.as_os_str().to_owned();
    partial.push(".tmp");
    let partial = PathBuf::from(partial);
    let mut out = OpenOptions::new().write(true).create(true).truncate(true).open(&partial)?;
    let mut copied_to = len;
    out.write_all(&read_range(&mut file, start, len, start > wanted)?)?;
    // Catch up with what the writer added meanwhile, a few rounds at most,
    // to keep the unsaved window to the time between two syscalls.
    for _ in 0..4 {
        let now = file.metadata()?.len();
        if now <= copied_to {
            break;
        }
        out.write_all(&read_range(&mut file, copied_to, now, false)?)?;
        copied_to = now;
    }
    drop(out);
    std::fs::rename(&partial, &rotated)?;
    OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(true)
}

/// Moves a non-empty log at `path` to `<path>.1` (replacing an older one) so
/// that a VMM launched next starts an empty one: a readiness check looking
/// for a boot marker must not find the previous boot's. Returns whether it
/// moved anything.
pub fn rotate_log(path: &Path) -> io::Result<bool> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > 0 => {
            std::fs::rename(path, rotated_path(path))?;
            Ok(true)
        }
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn appender(path: &Path) -> File {
        OpenOptions::new().create(true).append(true).open(path).unwrap()
    }

    fn line(i: usize) -> String {
        format!("line {i:06} of the guest's console output\n")
    }

    #[test]
    fn an_appending_writer_keeps_writing_at_the_start_after_a_cap() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        let mut w = appender(&log);
        let mut written = String::new();
        for i in 0..100 {
            w.write_all(line(i).as_bytes()).unwrap();
            written.push_str(&line(i));
        }
        assert!(!cap_log(&log, 1 << 20).unwrap(), "under the cap nothing happens");
        assert!(cap_log(&log, 1000).unwrap());
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        let rotated = std::fs::read_to_string(rotated_path(&log)).unwrap();
        assert_eq!(rotated, written[written.len() - 1000..], "the last part moved to .1");

        // The same open descriptor writes on, from offset 0: no hole, no zeros.
        w.write_all(b"after the cap\n").unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"after the cap\n");
        assert_eq!(read_log_tail(&log, 4).unwrap(), b"cap\n");
    }

    #[test]
    fn sizes_stay_bounded_while_a_writer_runs() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        let cap = 4096u64;
        let mut w = appender(&log);
        let writer = {
            let mut w = w.try_clone().unwrap();
            std::thread::spawn(move || {
                for i in 0..20_000 {
                    w.write_all(line(i).as_bytes()).unwrap();
                }
            })
        };
        let mut caps = 0;
        while !writer.is_finished() {
            if cap_log(&log, cap).unwrap() {
                caps += 1;
            }
            let rotated = std::fs::metadata(rotated_path(&log)).map(|m| m.len()).unwrap_or(0);
            // The .1 file holds the cap plus what was written during one copy.
            assert!(rotated < cap + 256 * 1024, "rotated log of {rotated} bytes");
        }
        writer.join().unwrap();
        if cap_log(&log, cap).unwrap() {
            caps += 1;
        }
        assert!(caps > 0);
        let live = std::fs::read(&log).unwrap();
        assert!(live.len() as u64 <= cap);
        assert!(!live.contains(&0), "an appending writer never leaves a hole");
        let total = 20_000 * line(0).len() as u64;
        let kept = live.len() as u64 + std::fs::metadata(rotated_path(&log)).unwrap().len();
        assert!(kept < total / 10, "kept {kept} of {total} bytes");
        // The writer's descriptor still appends to the live file.
        w.write_all(b"still here\n").unwrap();
        let live = std::fs::read(&log).unwrap();
        assert!(live.ends_with(b"still here\n") && !live.contains(&0));
    }

    #[test]
    fn a_non_appending_writer_leaves_a_hole_that_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        let mut w = OpenOptions::new().create(true).write(true).truncate(true).open(&log).unwrap();
        let old = vec![b'x'; 1 << 20];
        w.write_all(&old).unwrap();
        assert!(cap_log(&log, 64 * 1024).unwrap());
        assert_eq!(std::fs::metadata(rotated_path(&log)).unwrap().len(), 64 * 1024);
        w.write_all(b"new output\n").unwrap();
        // The writer's offset did not move: the file is sparse.
        let meta = std::fs::metadata(&log).unwrap();
        assert_eq!(meta.len(), (1 << 20) + 11);
        {
            use std::os::unix::fs::MetadataExt;
            assert!(meta.blocks() * 512 < 64 * 1024, "the hole takes no disk blocks: {} blocks", meta.blocks());
        }
        assert_eq!(read_log_tail(&log, 1 << 30).unwrap(), b"new output\n");
        assert!(!cap_log(&log, 64 * 1024).unwrap(), "the cap counts data, not the hole");
        w.write_all(&vec![b'y'; 100_000]).unwrap();
        assert!(cap_log(&log, 64 * 1024).unwrap());
        let rotated = std::fs::read(rotated_path(&log)).unwrap();
        assert_eq!(rotated.len(), 64 * 1024);
        assert!(rotated.iter().all(|&b| b == b'y'));
    }

    #[test]
    fn rotation_at_launch_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        assert!(!cap_log(&log, 10).unwrap());
        assert!(!rotate_log(&log).unwrap());
        assert!(read_log_tail(&log, 10).unwrap().is_empty());
        std::fs::write(&log, b"").unwrap();
        assert!(!rotate_log(&log).unwrap(), "an empty log stays");
        std::fs::write(&log, b"login: ").unwrap();
        std::fs::write(rotated_path(&log), b"older").unwrap();
        assert!(rotate_log(&log).unwrap());
        assert!(!log.exists());
        assert_eq!(std::fs::read(rotated_path(&log)).unwrap(), b"login: ");
    }
}
