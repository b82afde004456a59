//! A throwaway PostgreSQL cluster (Debian's server), the peer of both
//! benchmarks: `initdb` into a temporary directory, `pg_ctl start` on a free
//! loopback port with `synchronous_commit=on` and `fsync=on`, stopped and
//! deleted when dropped, on errors and panics included.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::cleanup;
use crate::server::{children_of, cpu_time, vm_rss};

/// The user every benchmark connects as (`initdb -U bench --auth=trust`).
pub const USER: &str = "bench";

/// Where Debian keeps the server binaries: the newest `/usr/lib/postgresql/*/bin`
/// holding `initdb` and `pg_ctl`.
pub fn find_bin_dir() -> anyhow::Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/usr/lib/postgresql") {
        for e in dir.flatten() {
            let bin = e.path().join("bin");
            let version = e
                .file_name()
                .to_string_lossy()
                .split('.')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if bin.join("initdb").is_file() && bin.join("pg_ctl").is_file() {
                found.push((version, bin));
            }
        }
    }
    found.sort();
    match found.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!("no PostgreSQL server found under /usr/lib/postgresql/*/bin; install it with `apt-get install -y postgresql` (qa/bench/ledger.sh does)"),
    }
}

/// `PostgreSQL 15.14` from `pg_ctl --version`.
pub fn version(bin_dir: &Path) -> String {
    Command::new(bin_dir.join("pg_ctl"))
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| parse_version(&s))
        .unwrap_or_else(|| "PostgreSQL".into())
}

/// `pg_ctl (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` -> `PostgreSQL 15.18`.
fn parse_version(text: &str) -> Option<String> {
    let rest = text.split_once("(PostgreSQL)")?.1;
    rest.split_whitespace()
        .next()
        .map(|v| format!("PostgreSQL {v}"))
}

/// Major version, as the table's column header shows it: `PostgreSQL 15`.
pub fn major(version: &str) -> String {
    match version.split_once('.') {
        Some((major, _)) => major.to_string(),
        None => version.to_string(),
    }
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a server binary, as `postgres` when we are root (PostgreSQL refuses root).
fn run_pg(bin: &Path, args: &[String], as_postgres: bool) -> anyhow::Result<()> {
    let mut cmd = if as_postgres {
        if Path::new("/usr/sbin/runuser").exists() || Path::new("/sbin/runuser").exists() {
            let mut c = Command::new("runuser");
            c.arg("-u").arg("postgres").arg("--").arg(bin).args(args);
            c
        } else {
            let mut line = shell_quote(&bin.to_string_lossy());
            for a in args {
                line.push(' ');
                line.push_str(&shell_quote(a));
            }
            let mut c = Command::new("su");
            c.arg("postgres")
                .arg("-s")
                .arg("/bin/sh")
                .arg("-c")
                .arg(line);
            c
        }
    } else {
        let mut c = Command::new(bin);
        c.args(args);
        c
    };
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}):\n{}{}",
            bin.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// A running cluster in a temporary directory.
pub struct Cluster {
    bin_dir: PathBuf,
    root: PathBuf,
    data: PathBuf,
    pub port: u16,
    as_postgres: bool,
    stopped: bool,
    ticket: u64,
}

impl Cluster {
    /// `initdb` and start a cluster in a new directory under `parent`.
    /// `shared_buffers`: PostgreSQL's own cache (`128MB` is its default).
    pub fn start(bin_dir: &Path, parent: &Path, shared_buffers: &str) -> anyhow::Result<Cluster> {
        if shared_buffers.is_empty() || !shared_buffers.chars().all(|c| c.is_ascii_alphanumeric()) {
            bail!("shared_buffers {shared_buffers:?}: expected a size like 128MB or 1GB");
        }
        let root = tempfile::Builder::new()
            .prefix("pg-")
            .tempdir_in(parent)
            .context("creating the cluster directory")?
            .keep();
        let as_postgres = running_as_root();
        let data = root.join("data");
        let sock = root.join("sock");
        std::fs::create_dir_all(&sock)?;
        if as_postgres {
            let status = Command::new("chown")
                .arg("-R")
                .arg("postgres:")
                .arg(&root)
                .status()
                .context("chown")?;
            if !status.success() {
                let _ = std::fs::remove_dir_all(&root);
                bail!("chown -R postgres: {} failed; is the Debian `postgresql` package (and its `postgres` user) installed?", root.display());
            }
        }
        let port = free_port()?;
        let mut cluster = Cluster {
            bin_dir: bin_dir.to_path_buf(),
            root: root.clone(),
            data: data.clone(),
            port,
            as_postgres,
            stopped: true,
            ticket: 0,
        };
        {
            let (bin, data, root) = (bin_dir.join("pg_ctl"), data.clone(), root.clone());
            cluster.ticket = cleanup::register(move || {
                let _ = run_pg(
                    &bin,
                    &[
                        "-D".into(),
                        data.to_string_lossy().into(),
                        "-m".into(),
                        "immediate".into(),
                        "stop".into(),
                    ],
                    as_postgres,
                );
                let _ = std::fs::remove_dir_all(&root);
            });
        }
        run_pg(
            &bin_dir.join("initdb"),
            &[
                "-D".into(),
                data.to_string_lossy().into(),
                "-U".into(),
                USER.into(),
                "--auth=trust".into(),
                "-E".into(),
                "UTF8".into(),
                "--locale=C".into(),
            ],
            as_postgres,
        )?;
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c synchronous_commit=on -c fsync=on -c unix_socket_directories={} -c shared_buffers={shared_buffers}",
            sock.display()
        );
        cluster.stopped = false;
        run_pg(
            &bin_dir.join("pg_ctl"),
            &[
                "-D".into(),
                data.to_string_lossy().into(),
                "-l".into(),
                root.join("server.log").to_string_lossy().into(),
                "-o".into(),
                options,
                "-w".into(),
                "start".into(),
            ],
            as_postgres,
        )?;
        Ok(cluster)
    }

    /// A new connection (TCP loopback, like the ledger's HTTP).
    pub fn connect(&self) -> anyhow::Result<postgres::Client> {
        let url = format!(
            "host=127.0.0.1 port={} user={USER} dbname=postgres",
            self.port
        );
        postgres::Client::connect(&url, postgres::NoTls)
            .with_context(|| format!("connecting to PostgreSQL on port {}", self.port))
    }

    /// The postmaster's pid (first line of `postmaster.pid`).
    pub fn postmaster_pid(&self) -> anyhow::Result<u32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .context("reading postmaster.pid")?;
        text.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .context("postmaster.pid has no pid")
    }

    /// Sum of `VmRSS` of the postmaster and all its children (backends,
    /// checkpointer, WAL writer...). Shared buffers touched by several
    /// processes count once per process: a rough, generous figure.
    pub fn total_rss_bytes(&self) -> anyhow::Result<(u64, usize)> {
        let pm = self.postmaster_pid()?;
        let mut pids = vec![pm];
        pids.extend(children_of(pm));
        let total = pids.iter().filter_map(|&p| vm_rss(p)).sum();
        Ok((total, pids.len()))
    }

    /// CPU time of the whole server: the postmaster, its live children and
    /// the children it has reaped (backends of closed connections).
    pub fn cpu_time(&self) -> std::time::Duration {
        let Ok(pm) = self.postmaster_pid() else {
            return Default::default();
        };
        let mut total = cpu_time(pm, true).unwrap_or_default();
        for c in children_of(pm) {
            total += cpu_time(c, false).unwrap_or_default();
        }
        total
    }

    /// Stops the server and deletes its directory.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let result = run_pg(
            &self.bin_dir.join("pg_ctl"),
            &[
                "-D".into(),
                self.data.to_string_lossy().into(),
                "-m".into(),
                "fast".into(),
                "-w".into(),
                "stop".into(),
            ],
            self.as_postgres,
        );
        if result.is_err() {
            let _ = run_pg(
                &self.bin_dir.join("pg_ctl"),
                &[
                    "-D".into(),
                    self.data.to_string_lossy().into(),
                    "-m".into(),
                    "immediate".into(),
                    "stop".into(),
                ],
                self.as_postgres,
            );
        }
        let _ = std::fs::remove_dir_all(&self.root);
        cleanup::cancel(self.ticket);
        result
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.stop();
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
            cleanup::cancel(self.ticket);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions() {
        assert_eq!(
            super::parse_version("pg_ctl (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n").as_deref(),
            Some("PostgreSQL 15.18")
        );
        assert_eq!(super::major("PostgreSQL 15.18"), "PostgreSQL 15");
    }
}
