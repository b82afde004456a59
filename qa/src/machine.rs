//! What the benchmark ran on.

use std::path::Path;

/// The machine, as reported in the results.
#[derive(Clone, Debug)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory_gib: f64,
    /// Filesystem type and device of the directory holding the data.
    pub data_fs: String,
    /// `/proc/loadavg` when the run started: other work skews the numbers.
    pub load_at_start: String,
    /// Median time of appending 4 KiB and `fdatasync`ing, in the data directory.
    pub fdatasync: Option<std::time::Duration>,
}

impl Machine {
    /// Reads /proc; `data_dir` is where both systems keep their files.
    pub fn detect(data_dir: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cores = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count()
            .max(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1),
            );
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .map(str::to_string)
            })
            .and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map(|kb| kb / 1024.0 / 1024.0)
            .unwrap_or(0.0);
        let load_at_start = std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".into());
        let fdatasync = fdatasync_latency(data_dir, 200).ok();
        Machine {
            cores,
            cpu_model,
            kernel,
            memory_gib,
            data_fs: filesystem_of(data_dir),
            load_at_start,
            fdatasync,
        }
    }
}

/// Median of `n` appends of 4 KiB each followed by `fdatasync`, in a
/// scratch file under `dir`: the floor of every durable commit here.
pub fn fdatasync_latency(dir: &Path, n: usize) -> std::io::Result<std::time::Duration> {
    use std::io::Write;
    let scratch = tempfile::Builder::new()
        .prefix("fsync-probe-")
        .tempfile_in(dir)?;
    let mut f = scratch.as_file();
    let block = [0xA5u8; 4096];
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = std::time::Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        samples.push(t.elapsed());
    }
    Ok(crate::stats::Latencies::new(samples).p50())
}

/// `ext4 (/dev/vda)` for the mount that holds `path`.
pub fn filesystem_of(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let mount_point = Path::new(f[1]);
        if path.starts_with(mount_point) {
            let depth = mount_point.components().count();
            if best.as_ref().is_none_or(|(d, _)| depth >= *d) {
                best = Some((depth, format!("{} ({})", f[2], f[0])));
            }
        }
    }
    best.map(|(_, s)| s).unwrap_or_else(|| "unknown".into())
}

/// The first line a program prints when run with `args` (on stdout, or on
/// stderr where it prints nothing on stdout, as `haproxy -v` and `nginx -v`
/// differ), or None if it cannot be run or fails: a peer's version for a
/// benchmark's report.
pub fn version_line(bin: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(bin).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = [out.stdout, out.stderr].concat();
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(str::to_string)
}

/// Current UTC time as `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(super::civil_from_days(19_782), (2024, 2, 29));
    }
}
