//! `vm-bench`: how long a rent takes to become a guest that answers, split
//! into ledger, supervisor and VMM/guest-boot parts, and what the supervisor's
//! VMM layer costs per VM operation beside talking to the VMM directly.
//!
//! 1. **Rent to answer.** Real processes, as in `qa/tests/appliance.rs`: the
//!    release `dc-ledger`, `dcctl` as provider and developer, `dc-appliance run`
//!    with the QEMU backend under software emulation (TCG) and the test guest
//!    of `dc-test-guest`. Each rent is cut into phases by timestamps the
//!    processes already write, all from the same host clock: the ledger's
//!    `created_at_ns` / `active_since_ns`, the agent's journal records
//!    (`at_ns`) and its log lines, plus what this program observes itself
//!    (the serial log's ready line, the first HTTP answer through the endpoint).
//! 2. **Supervisor overhead per operation.** On one running VM: pause, resume,
//!    info and counters through the `dc_vmm::Hypervisor` trait object of
//!    `dc-vmm-qemu` (the supervisor's code path: a fresh QMP connection,
//!    greeting and `qmp_capabilities` per operation) beside a raw QMP client
//!    written here (one persistent socket, capabilities negotiated once, the
//!    same commands). The difference is our overhead per operation.
//! 3. **The same on Cloud Hypervisor**, only where `CLOUD_HYPERVISOR_BIN`
//!    names a binary: a stub guest launched through `dc-vmm-ch`; each
//!    operation through its trait object (pid check, a new connection and
//!    one HTTP request per operation) beside a raw HTTP/1.1 client on one
//!    keep-alive connection to the API socket, and beside the raw client
//!    opening a connection per request, which prices the connection alone.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use dc_vmm::{Hypervisor, VmHandle, VmSpec};
use serde_json::Value;

use crate::cleanup;
use crate::machine::{utc_now, version_line, Machine};
use crate::report::{targets_markdown, targets_text, Row, Table, Target};
use crate::server::{dcctl_as, LedgerProcess};
use crate::stats::{ms, Latencies};

/// Command line of `vm-bench`.
#[derive(Parser, Debug)]
#[command(
    name = "vm-bench",
    about = "Rent-to-answer time of the appliance (QEMU TCG, test guest), split by phase, and the supervisor's overhead per VM operation beside raw QMP; with CLOUD_HYPERVISOR_BIN set, also beside raw HTTP on Cloud Hypervisor's API socket (stub guest, KVM)"
)]
pub struct Args {
    /// Sequential rents measured end to end (each cancelled before the next).
    #[arg(long, default_value_t = 5)]
    pub rents: u32,
    /// Repetitions of each VM operation per client (QEMU, and Cloud
    /// Hypervisor when `CLOUD_HYPERVISOR_BIN` is set).
    #[arg(long, default_value_t = 200)]
    pub ops: u32,
    /// The agent's `poll_interval_ms`: how often it lists its contracts.
    #[arg(long, default_value_t = 200)]
    pub poll_interval_ms: u64,
    /// The dc-ledger binary (release build).
    #[arg(long, default_value = "target/release/dc-ledger")]
    pub ledger_bin: PathBuf,
    /// The dcctl binary (release build).
    #[arg(long, default_value = "target/release/dcctl")]
    pub dcctl: PathBuf,
    /// The dc-appliance binary (release build).
    #[arg(long, default_value = "target/release/dc-appliance")]
    pub appliance_bin: PathBuf,
    /// Where the scratch directory goes (default: the system temp dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Also write the results as markdown to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

const TOKEN: u64 = 1_000_000_000;
const BOOT_WAIT: Duration = Duration::from_secs(180);
const OVERHEAD_TARGET: Duration = Duration::from_millis(20);

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn kill_qemus_in(dir: &str) {
    for pid in crate::cleanup::qemu_pids_mentioning(dir) {
        // SAFETY: kill(2) of a QEMU whose command line names our scratch dir.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

/// Everything started here; dropping it (or an interrupt) kills the agent,
/// the detached QEMUs it launched and the ledger, and removes the directory.
struct World {
    appliance: Option<Child>,
    ledger: Option<LedgerProcess>,
    ticket: u64,
    dcctl: PathBuf,
    appliance_bin: PathBuf,
    dir: cleanup::ScratchDir,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(mut c) = self.appliance.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        kill_qemus_in(&self.dir.path().display().to_string());
        drop(self.ledger.take());
        cleanup::cancel(self.ticket);
    }
}

impl World {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn data(&self) -> PathBuf {
        self.path("data")
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.path("appliance.log")).unwrap_or_default()
    }
    fn url(&self) -> &str {
        self.ledger.as_ref().map_or("", |l| l.url.as_str())
    }

    fn dcctl(&self, who: &str, args: &[&str]) -> anyhow::Result<Value> {
        let out = dcctl_as(&self.dcctl, self.url(), &self.path(who))
            .args(args)
            .arg("--json")
            .output()
            .with_context(|| format!("running {}", self.dcctl.display()))?;
        if !out.status.success() {
            bail!(
                "dcctl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("dcctl {args:?}: expected one JSON object"))
    }

    fn identity(&self, who: &str) -> anyhow::Result<String> {
        let out = Command::new(&self.dcctl)
            .args(["identity", "new", "--json", "--out"])
            .arg(self.path(who))
            .output()?;
        if !out.status.success() {
            bail!(
                "dcctl identity new: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: Value = serde_json::from_slice(&out.stdout)?;
        v["principal"]
            .as_str()
            .map(str::to_string)
            .context("dcctl identity new printed no principal")
    }

    fn journal(&self) -> Vec<Value> {
        std::fs::read_to_string(self.data().join("journal.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    fn records(&self, id: u64) -> Vec<Value> {
        self.journal()
            .into_iter()
            .filter(|r| r["contract_id"] == id)
            .collect()
    }

    fn check_appliance(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.appliance.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                bail!("dc-appliance exited ({status}); log:\n{}", self.log());
            }
        }
        Ok(())
    }

    fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        every: Duration,
        mut f: impl FnMut(&Self) -> Option<T>,
    ) -> anyhow::Result<T> {
        let start = Instant::now();
        loop {
            if let Some(v) = f(self) {
                return Ok(v);
            }
            self.check_appliance()?;
            if start.elapsed() > timeout {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            std::thread::sleep(every);
        }
    }
}

/// `2025-01-02T03:04:05.123456Z` (tracing-subscriber's default timer) to ns since the epoch.
pub fn parse_rfc3339_ns(s: &str) -> Option<i128> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let frac_ns: i128 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(secs as i128 * 1_000_000_000 + frac_ns)
}

/// The time of the first log line with `message` and the field token `field`.
fn log_time(log: &str, message: &str, field: &str) -> Option<i128> {
    log.lines()
        .find(|l| l.contains(message) && l.split_whitespace().any(|t| t == field))
        .and_then(|l| l.split_whitespace().next())
        .and_then(parse_rfc3339_ns)
}

/// `GET /` answered with the test guest's body.
fn http_answers(addr: &str) -> bool {
    let Ok(sock) = addr.parse() else { return false };
    let Ok(mut s) = TcpStream::connect_timeout(&sock, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut body = Vec::new();
    let _ = s.take(64 * 1024).read_to_end(&mut body);
    String::from_utf8_lossy(&body).contains(dc_test_guest::HTTP_BODY)
}

/// Timestamps of one rent, ns since the epoch on this host's clock.
#[derive(Clone, Debug)]
struct RentTimes {
    contract: u64,
    /// `dcctl rent` started.
    cmd: i128,
    /// The ledger's `created_at_ns`.
    created: i128,
    /// `dcctl rent` returned (acknowledged).
    ack: i128,
    /// Journal: first `provisioning` record (contract listed, offering read, resources reserved).
    noticed: i128,
    /// Log: `launching VM` (after accept + start_provisioning on the ledger).
    launching: i128,
    /// Log: `QEMU started` (overlay created, process spawned).
    spawned: i128,
    /// Journal: `provisioning` record with a handle (QMP answered `running`).
    qmp_up: i128,
    /// Observed: the serial log holds the guest's ready line.
    serial_ready: i128,
    /// Observed: first `GET /` answered through the endpoint.
    http: i128,
    /// The ledger's `active_since_ns`.
    active: i128,
}

impl RentTimes {
    fn phases(&self) -> Vec<(&'static str, i128)> {
        vec![
            (
                "dcctl rent (process, sign, ledger commit)",
                self.ack - self.cmd,
            ),
            ("ledger part: ack → agent noticed", self.noticed - self.ack),
            (
                "supervisor part: noticed → QEMU spawned",
                self.spawned - self.noticed,
            ),
            (
                "  accept + start_provisioning txs",
                self.launching - self.noticed,
            ),
            (
                "  check, qcow2 overlay, spawn",
                self.spawned - self.launching,
            ),
            (
                "VMM + guest boot: spawned → guest answers",
                self.http - self.spawned,
            ),
            ("  QMP up, journaled", self.qmp_up - self.spawned),
            (
                "  kernel + init to ready line",
                self.serial_ready - self.qmp_up,
            ),
            ("  ready line → HTTP answer", self.http - self.serial_ready),
            (
                "reporting: answers → active on ledger",
                self.active - self.http,
            ),
            ("total: ack → guest answers", self.http - self.ack),
            ("total: ack → active on ledger", self.active - self.ack),
        ]
    }
}

fn dur(ns: i128) -> Duration {
    Duration::from_nanos(ns.max(0) as u64)
}

/// A phase that may come out negative (two observers of the same event).
fn signed_span(ns: i128) -> String {
    if ns < 0 {
        format!("−{}", secs_or_ms(dur(-ns)))
    } else {
        secs_or_ms(dur(ns))
    }
}

fn secs_or_ms(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{} ms", ms(d))
    }
}

/// Sets up ledger, provider, node and offering; returns the world and the offering id.
fn build_world(
    args: &Args,
    guest: &dc_test_guest::TestGuest,
    work_dir: &Path,
) -> anyhow::Result<(World, String)> {
    let dir = cleanup::ScratchDir::new("vm-bench-", work_dir)?;
    let dir_text = dir.path().display().to_string();
    // On SIGINT/SIGTERM no destructor runs: kill the detached QEMUs too.
    let ticket = cleanup::register(move || kill_qemus_in(&dir_text));
    let mut w = World {
        appliance: None,
        ledger: None,
        ticket,
        dcctl: args.dcctl.clone(),
        appliance_bin: args.appliance_bin.clone(),
        dir,
    };
    for bin in [&args.dcctl, &args.appliance_bin, &args.ledger_bin] {
        if !bin.is_file() {
            bail!(
                "{}: no such file; run qa/bench/appliance.sh (it builds the release binaries)",
                bin.display()
            );
        }
    }
    let dev = w.identity("dev.pem")?;
    let prov = w.identity("prov.pem")?;
    let treasury = w.identity("treasury.pem")?;
    std::fs::write(
        w.path("genesis.toml"),
        format!(
            "treasury = \"{treasury}\"\n[params]\nblock_interval_secs = 3600\n\
             [[balances]]\nprincipal = \"{dev}\"\namount_e9s = {}\n\
             [[balances]]\nprincipal = \"{prov}\"\namount_e9s = {}\n",
            100_000 * TOKEN,
            100 * TOKEN
        ),
    )?;
    w.ledger = Some(LedgerProcess::start(
        &args.ledger_bin,
        &w.path("ledger"),
        Some(&w.path("genesis.toml")),
        Duration::from_secs(60),
    )?);

    let base = w.path("base.qcow2");
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&base)
        .arg("64M")
        .output()?;
    if !out.status.success() {
        bail!("qemu-img create: {}", String::from_utf8_lossy(&out.stderr));
    }
    let port_min = 30_000 + (std::process::id() % 90) as u16 * 100;
    std::fs::write(
        w.path("appliance.toml"),
        format!(
            "data_dir = \"{data}\"\nledger_url = \"{url}\"\nregion = \"eu-central\"\ncountry = \"DE\"\n\
             backend = \"qemu\"\naccel = \"tcg\"\ncheck_in_interval_secs = 60\npoll_interval_ms = {poll}\n\
             vm_boot_timeout_secs = 150\n\
             [limits]\nmax_vcpus = 2\nmax_memory_mib = 2560\nmax_storage_gib = 10\n\
             [guest]\nkernel = \"{kernel}\"\ninitrd = \"{initrd}\"\ncmdline = \"{cmdline}\"\nbase_disk = \"{base}\"\n\
             [network]\nport_min = {port_min}\nport_max = {port_max}\nguest_port = 80\n\
             [readiness]\nprobe = \"http\"\n",
            data = w.data().display(),
            url = w.url(),
            poll = args.poll_interval_ms,
            kernel = guest.kernel.display(),
            initrd = guest.initrd.display(),
            cmdline = guest.cmdline,
            base = base.display(),
            port_max = port_min + 99,
        ),
    )?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(w.path("appliance.log"))?;
    let child = Command::new(&w.appliance_bin)
        .arg("run")
        .arg("--config")
        .arg(w.path("appliance.toml"))
        .env("RUST_LOG", "info")
        .env_remove("DC_APPLIANCE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .context("starting dc-appliance")?;
    w.appliance = Some(child);
    let token_path = w.data().join("claim-token");
    let token = w.wait_for(
        "the claim token",
        Duration::from_secs(30),
        Duration::from_millis(100),
        |_| std::fs::read_to_string(&token_path).ok(),
    )?;
    w.dcctl(
        "prov.pem",
        &[
            "provider",
            "register",
            "--name",
            "Bench Cloud",
            "--jurisdiction",
            "DE",
            "--email",
            "ops@bench.example",
        ],
    )?;
    let out = Command::new(&w.appliance_bin)
        .args(["claim", "--json", "--config"])
        .arg(w.path("appliance.toml"))
        .args(["--token", token.trim(), "--provider-identity"])
        .arg(w.path("prov.pem"))
        .output()?;
    if !out.status.success() {
        bail!(
            "dc-appliance claim: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let claimed: Value = serde_json::from_slice(&out.stdout)?;
    let node = claimed["node"]
        .as_str()
        .context("claim printed no node")?
        .to_string();
    let file = w.path("offering.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"tcg-small\"\nnode = \"{node}\"\nprice_e9s_per_hour = {TOKEN}\nmin_hours = 1\nmax_hours = 10\n\
             confidential = \"none\"\nregion = \"eu-central\"\ncountry = \"DE\"\n\n\
             [resources]\nvcpus = 1\nram_gib = 1\nstorage_gib = 1\nbandwidth_mbps = 100\n"
        ),
    )?;
    let offering = w.dcctl(
        "prov.pem",
        &["offering", "add", "--file", &file.display().to_string()],
    )?["offering_id"]
        .as_u64()
        .context("offering add printed no offering_id")?
        .to_string();
    // The agent must be in its loop before the first rent is timed.
    w.wait_for(
        "the agent to run",
        Duration::from_secs(30),
        Duration::from_millis(100),
        |w| w.log().contains("agent running").then_some(()),
    )?;
    Ok((w, offering))
}

/// One rent, observed until the ledger says active.
fn measure_rent(w: &mut World, offering: &str) -> anyhow::Result<RentTimes> {
    let cmd = now_ns();
    let rented = w.dcctl("dev.pem", &["rent", "--offering", offering, "--hours", "1"])?;
    let ack = now_ns();
    let id = rented["contract_id"]
        .as_u64()
        .context("rent printed no contract_id")?;
    // The run dir and endpoint, from the agent's first journal record.
    let spec: VmSpec = w.wait_for(
        "the agent's first record",
        BOOT_WAIT,
        Duration::from_millis(2),
        |w| {
            w.records(id)
                .first()
                .and_then(|r| serde_json::from_value(r["spec"].clone()).ok())
        },
    )?;
    let endpoint = match &spec.network {
        dc_vmm::Network::User { forwards } if !forwards.is_empty() => {
            format!("{}:{}", forwards[0].host_addr, forwards[0].host_port)
        }
        other => bail!("unexpected network in the journal: {other:?}"),
    };
    let serial = spec.serial_log();
    let stop = AtomicBool::new(false);
    let (serial_ready, http) = std::thread::scope(|s| {
        let serial_watch = s.spawn(|| {
            let deadline = Instant::now() + BOOT_WAIT;
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                if std::fs::read(&serial)
                    .is_ok_and(|b| String::from_utf8_lossy(&b).contains(dc_test_guest::READY_LINE))
                {
                    return Some(now_ns());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            None
        });
        // A probe sent before the guest's network is up hangs until its read
        // timeout (QEMU's user network holds the connection while it retries
        // the guest), so a new probe starts every 20 ms whatever the earlier
        // ones are doing; the first complete answer wins.
        let http_watch = s.spawn(|| {
            let first: std::sync::Mutex<Option<i128>> = std::sync::Mutex::new(None);
            let in_flight = std::sync::atomic::AtomicUsize::new(0);
            let deadline = Instant::now() + BOOT_WAIT;
            std::thread::scope(|probes| {
                while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                    if first.lock().map(|f| f.is_some()).unwrap_or(true) {
                        break;
                    }
                    if in_flight.load(Ordering::Relaxed) < 16 {
                        in_flight.fetch_add(1, Ordering::Relaxed);
                        probes.spawn(|| {
                            if http_answers(&endpoint) {
                                let t = now_ns();
                                if let Ok(mut f) = first.lock() {
                                    *f = Some(f.map_or(t, |old| old.min(t)));
                                }
                            }
                            in_flight.fetch_sub(1, Ordering::Relaxed);
                        });
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            first.into_inner().ok().flatten()
        });
        let http = http_watch.join().ok().flatten();
        stop.store(true, Ordering::Relaxed);
        (serial_watch.join().ok().flatten(), http)
    });
    let http = http.with_context(|| {
        format!(
            "contract {id}: the guest never answered at {endpoint}; log:\n{}",
            w.log()
        )
    })?;
    let serial_ready = serial_ready
        .with_context(|| format!("contract {id}: no ready line in {}", serial.display()))?;
    let active_rec = w.wait_for(
        "the active record",
        BOOT_WAIT,
        Duration::from_millis(20),
        |w| w.records(id).into_iter().find(|r| r["state"] == "active"),
    )?;
    let _ = active_rec;
    let shown = w.dcctl("dev.pem", &["contract", "show", &id.to_string()])?;
    if shown["state"] != "active" {
        bail!("contract {id} journaled active but the ledger says {shown}");
    }
    let records = w.records(id);
    let at = |pred: &dyn Fn(&Value) -> bool, what: &str| -> anyhow::Result<i128> {
        records
            .iter()
            .find(|r| pred(r))
            .and_then(|r| r["at_ns"].as_u64())
            .map(i128::from)
            .with_context(|| format!("contract {id}: no journal record {what}"))
    };
    let noticed = at(
        &|r| r["state"] == "provisioning" && r["handle"].is_null(),
        "provisioning",
    )?;
    let qmp_up = at(
        &|r| r["state"] == "provisioning" && !r["handle"].is_null(),
        "with a handle",
    )?;
    let log = w.log();
    let launching = log_time(&log, "launching VM", &format!("contract={id}"))
        .with_context(|| format!("contract {id}: no `launching VM` log line"))?;
    let spawned = log_time(&log, "QEMU started", &format!("vm=c{id}"))
        .with_context(|| format!("contract {id}: no `QEMU started` log line"))?;
    let ns = |k: &str| {
        shown[k]
            .as_u64()
            .map(i128::from)
            .with_context(|| format!("contract show: no {k}"))
    };
    Ok(RentTimes {
        contract: id,
        cmd,
        created: ns("created_at_ns")?,
        ack,
        noticed,
        launching,
        spawned,
        qmp_up,
        serial_ready,
        http,
        active: ns("active_since_ns")?,
    })
}

/// A minimal QMP client: one persistent socket, capabilities negotiated once.
struct RawQmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl RawQmp {
    fn connect(socket: &Path) -> anyhow::Result<RawQmp> {
        let stream = UnixStream::connect(socket)
            .with_context(|| format!("connecting {}", socket.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let writer = stream.try_clone()?;
        let mut q = RawQmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            bail!("expected the QMP greeting, got {greeting}");
        }
        q.command("{\"execute\":\"qmp_capabilities\"}\n")?;
        Ok(q)
    }

    fn read(&mut self) -> anyhow::Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("QEMU closed the QMP socket");
        }
        Ok(serde_json::from_str(&line)?)
    }

    /// Sends one request line; returns its `return`, skipping events.
    fn command(&mut self, request: &str) -> anyhow::Result<Value> {
        self.writer.write_all(request.as_bytes())?;
        loop {
            let mut v = self.read()?;
            if let Some(r) = v.get_mut("return") {
                return Ok(r.take());
            }
            if let Some(e) = v.get("error") {
                bail!("QMP error for {}: {e}", request.trim());
            }
        }
    }
}

const OPS: [&str; 4] = ["pause", "resume", "info", "counters"];

fn raw_op(q: &mut RawQmp, op: &str) -> anyhow::Result<()> {
    match op {
        "pause" => q.command("{\"execute\":\"stop\"}\n").map(drop),
        "resume" => q.command("{\"execute\":\"cont\"}\n").map(drop),
        // What `Hypervisor::info` asks QEMU, command for command.
        "info" => {
            q.command("{\"execute\":\"query-status\"}\n")?;
            q.command("{\"execute\":\"query-cpus-fast\"}\n")?;
            q.command("{\"execute\":\"query-memory-size-summary\"}\n")?;
            q.command(
                "{\"execute\":\"qom-list\",\"arguments\":{\"path\":\"/machine/peripheral\"}}\n",
            )
            .map(drop)
        }
        _ => q.command("{\"execute\":\"query-blockstats\"}\n").map(drop),
    }
}

fn trait_op(hv: &dyn Hypervisor, handle: &VmHandle, op: &str) -> anyhow::Result<()> {
    match op {
        "pause" => hv.pause(handle)?,
        "resume" => hv.resume(handle)?,
        "info" => drop(hv.info(handle)?),
        _ => drop(hv.counters(handle)?),
    }
    Ok(())
}

/// Per operation: (through the trait, raw QMP); plus raw connect + capabilities.
fn measure_ops(
    handle: &VmHandle,
    ops: u32,
) -> anyhow::Result<(Vec<(Latencies, Latencies)>, Latencies)> {
    let qemu = dc_vmm_qemu::Qemu::detect()?;
    let hv: &dyn Hypervisor = &qemu;
    let batch = 20u32.min(ops.max(1));
    let rounds = ops.div_ceil(batch);
    let mut ours = vec![Vec::new(); OPS.len()];
    let mut raw = vec![Vec::new(); OPS.len()];
    let mut connects = Vec::new();
    // Warm up both paths.
    for op in OPS {
        trait_op(hv, handle, op)?;
    }
    // Alternate blocks so drift (the guest, the host) hits both alike. The QMP
    // socket serves one client at a time, so the raw session is closed
    // before the trait's calls connect.
    for _ in 0..rounds {
        let t = Instant::now();
        let mut q = RawQmp::connect(&handle.api_socket)?;
        connects.push(t.elapsed());
        for _ in 0..batch {
            for (i, op) in OPS.iter().enumerate() {
                let t = Instant::now();
                raw_op(&mut q, op)?;
                raw[i].push(t.elapsed());
            }
        }
        drop(q);
        for _ in 0..batch {
            for (i, op) in OPS.iter().enumerate() {
                let t = Instant::now();
                trait_op(hv, handle, op)?;
                ours[i].push(t.elapsed());
            }
        }
    }
    Ok((
        ours.into_iter()
            .zip(raw)
            .map(|(o, r)| (Latencies::new(o), Latencies::new(r)))
            .collect(),
        Latencies::new(connects),
    ))
}

/// Part 3: the per-operation comparison of part 2 on Cloud Hypervisor, the
/// main backend, through `dc-vmm-ch` beside raw HTTP on its API socket.
///
/// Only where `CLOUD_HYPERVISOR_BIN` names a binary (no package registry
/// ships one) and `/dev/kvm` works. The guest is a stub, not the Linux test
/// guest: Linux guests crash under the software-nested KVM of the machines
/// these benchmarks run on, and the operations timed here do not depend on
/// what the guest runs.
mod cloud_hypervisor {
    use super::*;
    use dc_vmm_ch::CloudHypervisor;

    /// The variable naming the binary, as for `dc-vmm-ch`'s own tests.
    pub const BIN_ENV: &str = "CLOUD_HYPERVISOR_BIN";
    /// What the stub guest writes to COM1 once running.
    use dc_vmm_ch::stub::MARKER;
    /// Largest answer body the raw client reads (`vm.info` is a few KiB).
    const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
    const MARKER_WAIT: Duration = Duration::from_secs(20);

    /// Each operation timed: its label, and the request `dc-vmm-ch` sends
    /// for it (so the raw client sends the same one). All can repeat
    /// forever on a running stub: it has no ACPI, so the power button is
    /// only pressed.
    pub const OPS: [(&str, &str, &str); 5] = [
        ("pause", "PUT", "vm.pause"),
        ("resume", "PUT", "vm.resume"),
        ("info", "GET", "vm.info"),
        ("counters", "GET", "vm.counters"),
        ("shutdown (power button)", "PUT", "vm.power-button"),
    ];

    pub use dc_vmm_ch::stub::stub_kernel;

    /// A minimal HTTP/1.1 client for the API socket: the request line and
    /// headers `dc_vmm_ch::ApiClient` sends, the answer framed by
    /// `Content-Length` (all Cloud Hypervisor sends), no other checks.
    pub struct RawApi {
        reader: BufReader<UnixStream>,
    }

    impl RawApi {
        pub fn connect(socket: &Path) -> anyhow::Result<RawApi> {
            let stream = UnixStream::connect(socket)
                .with_context(|| format!("connecting {}", socket.display()))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.set_write_timeout(Some(Duration::from_secs(5)))?;
            Ok(RawApi {
                reader: BufReader::new(stream),
            })
        }

        /// One request; returns the body of a 2xx answer. With `close` it
        /// says `Connection: close` as `ApiClient` does (one request per
        /// connection); without, HTTP/1.1 keeps the connection open and
        /// Cloud Hypervisor answers `Connection: keep-alive`.
        pub fn request(
            &mut self,
            method: &str,
            endpoint: &str,
            close: bool,
        ) -> anyhow::Result<Vec<u8>> {
            let mut head = format!(
                "{method} /api/v1/{endpoint} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
            );
            if close {
                head.push_str("Connection: close\r\n");
            }
            if method != "GET" {
                head.push_str("Content-Length: 0\r\n");
            }
            head.push_str("\r\n");
            self.reader.get_mut().write_all(head.as_bytes())?;
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            let status: u16 = line
                .split(' ')
                .nth(1)
                .and_then(|code| code.parse().ok())
                .with_context(|| {
                    format!("{method} {endpoint}: expected an HTTP status line, got {line:?}")
                })?;
            let mut len = 0usize;
            loop {
                line.clear();
                if self.reader.read_line(&mut line)? == 0 {
                    bail!("{method} {endpoint}: connection closed in the headers");
                }
                let header = line.trim_end();
                if header.is_empty() {
                    break;
                }
                let (name, value) = header.split_once(':').unwrap_or((header, ""));
                if name.eq_ignore_ascii_case("content-length") {
                    len = value.trim().parse().with_context(|| {
                        format!("{method} {endpoint}: bad Content-Length {value:?}")
                    })?;
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    bail!("{method} {endpoint}: unexpected Transfer-Encoding {value:?}");
                }
            }
            if len > MAX_BODY_BYTES {
                bail!(
                    "{method} {endpoint}: body of {len} bytes, at most {MAX_BODY_BYTES} expected"
                );
            }
            let mut body = vec![0; len];
            self.reader.read_exact(&mut body)?;
            if !(200..300).contains(&status) {
                bail!(
                    "{method} {endpoint}: HTTP {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            Ok(body)
        }
    }

    fn raw_op(api: &mut RawApi, method: &str, endpoint: &str, close: bool) -> anyhow::Result<()> {
        let body = api.request(method, endpoint, close)?;
        // The backend decodes what it reads; so does the peer.
        if method == "GET" {
            serde_json::from_slice::<Value>(&body)
                .with_context(|| format!("{endpoint} answered with invalid JSON"))?;
        }
        Ok(())
    }

    fn trait_op(hv: &dyn Hypervisor, handle: &VmHandle, label: &str) -> anyhow::Result<()> {
        match label {
            "pause" => hv.pause(handle)?,
            "resume" => hv.resume(handle)?,
            "info" => drop(hv.info(handle)?),
            "counters" => drop(hv.counters(handle)?),
            _ => hv.shutdown(handle)?,
        }
        Ok(())
    }

    /// Cloud Hypervisor's `pause` and `resume` wait for the vCPU threads
    /// in a loop that sleeps 1 ms between checks (`CpuManager::pause` and
    /// `resume` in its `vmm/src/cpu.rs`): an answer slower than this slept
    /// at least once, a faster one found the vCPUs ready at the first check.
    pub const VCPU_WAIT_SLEEP: Duration = Duration::from_millis(1);

    /// One operation's latencies on each path.
    pub struct OpTimes {
        /// Through `&dyn Hypervisor` of `dc-vmm-ch`.
        pub ours: Latencies,
        /// Raw, one keep-alive connection for the whole run.
        pub keep_alive: Latencies,
        /// Raw, a new connection per request (`Connection: close`).
        pub fresh: Latencies,
        /// Share of samples of (ours, keep-alive, fresh) at or above
        /// [`VCPU_WAIT_SLEEP`]: two modes, whose mix moves the median.
        pub slept: (f64, f64, f64),
    }

    fn share_at_least(samples: &[Duration], limit: Duration) -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        samples.iter().filter(|d| **d >= limit).count() as f64 / samples.len() as f64
    }

    /// Everything part 3 measured.
    pub struct Measured {
        /// `cloud-hypervisor --version`, first line.
        pub version: String,
        /// In the order of [`OPS`].
        pub ops: Vec<OpTimes>,
        /// `connect(2)` on the API socket and close, nothing sent.
        pub connect: Latencies,
        /// `VmHandle::is_alive` (a read of `/proc/PID/stat`), which the
        /// backend does before every operation.
        pub liveness: Latencies,
        /// `launch` (spawn, API socket up, `vm.create`, `vm.boot`), one sample.
        pub launch: Duration,
        /// From `launch` returning to the stub's marker on the serial log.
        pub marker: Duration,
    }

    /// The binary named by [`BIN_ENV`]: `Ok(None)` when the variable is
    /// unset, an error when it names no file (found before the long part 1).
    pub fn binary_from_env() -> anyhow::Result<Option<PathBuf>> {
        let Some(bin) = std::env::var_os(BIN_ENV).map(PathBuf::from) else {
            return Ok(None);
        };
        if !bin.is_file() {
            bail!("{BIN_ENV}={}: no such file", bin.display());
        }
        Ok(Some(bin))
    }

    /// `cloud-hypervisor --version`, first line.
    pub fn version(bin: &Path) -> String {
        version_line(bin, &["--version"]).unwrap_or_else(|| "unknown".into())
    }

    /// Whether KVM here is itself inside a VM (the `hypervisor` CPU flag).
    pub fn nested() -> bool {
        std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
            c.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "hypervisor"))
        })
    }

    /// Every cloud-hypervisor process whose command line mentions `dir`
    /// (its `--api-socket` is inside the run directory).
    fn pids_mentioning(dir: &str) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let text = String::from_utf8_lossy(&c).replace('\0', " ");
                    text.contains(dir) && text.contains("--api-socket")
                })
            })
            .collect()
    }

    /// The launched VM: deleted through the backend on drop, killed by the
    /// interrupt handler if no destructor gets to run.
    struct Vm<'a> {
        hv: &'a CloudHypervisor,
        handle: VmHandle,
    }

    impl Drop for Vm<'_> {
        fn drop(&mut self) {
            if let Err(e) = self.hv.delete(&self.handle) {
                eprintln!("deleting the Cloud Hypervisor VM: {e}");
            }
        }
    }

    /// Launches a stub VM with `bin` under `work_dir` and times every
    /// operation of [`OPS`] `ops` times on each path.
    pub fn measure(bin: &Path, work_dir: &Path, ops: u32) -> anyhow::Result<Measured> {
        let dir = cleanup::ScratchDir::new("vm-bench-ch-", work_dir)?;
        let dir_text = dir.path().display().to_string();
        // Registered after the directory, so it runs before its removal.
        let ticket = cleanup::register(move || {
            for pid in pids_mentioning(&dir_text) {
                // SAFETY: kill(2) of a cloud-hypervisor whose command line names our scratch dir.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
        });
        let result = measure_in(bin, dir.path(), ops);
        cleanup::cancel(ticket);
        result
    }

    fn measure_in(bin: &Path, dir: &Path, ops: u32) -> anyhow::Result<Measured> {
        let kernel = dir.join("stub.elf");
        std::fs::write(&kernel, stub_kernel())?;
        // One raw disk, so that `info` lists a device and `counters` has
        // something to count, as on a real VM.
        let disk = dir.join("root.raw");
        std::fs::write(&disk, vec![0u8; 1 << 20])?;
        let spec = VmSpec {
            id: "ch-bench".into(),
            vcpus: 1,
            memory_mib: 128,
            boot: dc_vmm::Boot::Kernel {
                kernel,
                initrd: None,
                cmdline: "console=ttyS0".into(),
                firmware: None,
            },
            disks: vec![dc_vmm::Disk {
                path: disk,
                base: None,
                readonly: false,
                size_gib: None,
            }],
            network: dc_vmm::Network::None,
            vsock_cid: None,
            vfio: vec![],
            confidential: dc_vmm::Confidential::None,
            accel: dc_vmm::Accel::Kvm,
            run_dir: dir.join("vm"),
        };
        let ch = CloudHypervisor::new(bin);
        let hv: &dyn Hypervisor = &ch;
        hv.check(&spec)?;
        let t = Instant::now();
        let launched = hv.launch(&spec).map_err(|e| {
            let log = dc_vmm::read_log_tail(&CloudHypervisor::vmm_log(&spec), 2048)
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                .unwrap_or_default();
            anyhow::anyhow!("launching the stub VM: {e}; cloud-hypervisor log: {log}")
        })?;
        let launch = t.elapsed();
        let vm = Vm {
            hv: &ch,
            handle: launched,
        };
        let handle = &vm.handle;
        let t = Instant::now();
        let serial = spec.serial_log();
        while !std::fs::read(&serial).is_ok_and(|b| String::from_utf8_lossy(&b).contains(MARKER)) {
            if t.elapsed() > MARKER_WAIT {
                bail!(
                    "the stub guest wrote no {MARKER} to {} within {MARKER_WAIT:?} (does KVM work here?)",
                    serial.display()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let marker = t.elapsed();
        let state = hv.info(handle)?.state;
        if state != dc_vmm::VmState::Running {
            bail!("the stub VM is {state:?}, expected running");
        }

        let batch = 20u32.min(ops.max(1));
        let rounds = ops.div_ceil(batch);
        let mut ours = vec![Vec::new(); OPS.len()];
        let mut keep_alive = vec![Vec::new(); OPS.len()];
        let mut fresh = vec![Vec::new(); OPS.len()];
        let mut connects = Vec::new();
        let mut liveness = Vec::new();
        let mut kept = RawApi::connect(&handle.api_socket)?;
        // Warm up every path, each through a whole cycle (a pause must be
        // followed by its resume).
        for (label, _, _) in OPS {
            trait_op(hv, handle, label)?;
        }
        for (_, method, endpoint) in OPS {
            raw_op(&mut kept, method, endpoint, false)?;
        }
        for (_, method, endpoint) in OPS {
            raw_op(
                &mut RawApi::connect(&handle.api_socket)?,
                method,
                endpoint,
                true,
            )?;
        }
        // Alternate blocks so drift (the host, other tenants) hits all paths
        // alike. The API server takes many connections, so the keep-alive
        // one stays open throughout.
        for _ in 0..rounds {
            for _ in 0..batch {
                for (i, (_, method, endpoint)) in OPS.iter().enumerate() {
                    let t = Instant::now();
                    raw_op(&mut kept, method, endpoint, false)?;
                    keep_alive[i].push(t.elapsed());
                }
            }
            for _ in 0..batch {
                for (i, (_, method, endpoint)) in OPS.iter().enumerate() {
                    let t = Instant::now();
                    let mut api = RawApi::connect(&handle.api_socket)?;
                    raw_op(&mut api, method, endpoint, true)?;
                    fresh[i].push(t.elapsed());
                }
            }
            for _ in 0..batch {
                for (i, (label, _, _)) in OPS.iter().enumerate() {
                    let t = Instant::now();
                    trait_op(hv, handle, label)?;
                    ours[i].push(t.elapsed());
                }
            }
            for _ in 0..batch {
                let t = Instant::now();
                let stream = UnixStream::connect(&handle.api_socket)?;
                connects.push(t.elapsed());
                drop(stream);
                let t = Instant::now();
                let alive = handle.is_alive();
                liveness.push(t.elapsed());
                if !alive {
                    bail!(
                        "cloud-hypervisor (pid {}) exited during the run",
                        handle.pid
                    );
                }
            }
        }
        drop(kept);
        drop(vm);
        Ok(Measured {
            version: version(bin),
            ops: ours
                .into_iter()
                .zip(keep_alive)
                .zip(fresh)
                .map(|((o, k), f)| OpTimes {
                    slept: (
                        share_at_least(&o, VCPU_WAIT_SLEEP),
                        share_at_least(&k, VCPU_WAIT_SLEEP),
                        share_at_least(&f, VCPU_WAIT_SLEEP),
                    ),
                    ours: Latencies::new(o),
                    keep_alive: Latencies::new(k),
                    fresh: Latencies::new(f),
                })
                .collect(),
            connect: Latencies::new(connects),
            liveness: Latencies::new(liveness),
            launch,
            marker,
        })
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn stub_kernel_is_a_pvh_elf() {
            let k = super::stub_kernel();
            assert_eq!(&k[..4], b"\x7fELF");
            // e_entry lies inside the loaded image, where the code starts.
            let entry = u64::from_le_bytes(k[24..32].try_into().unwrap());
            let offset = (entry - dc_vmm_ch::stub::LOAD_ADDR) as usize;
            assert!(offset < k.len());
            assert_eq!(&k[offset..offset + 4], &[0x66, 0xBA, 0xF8, 0x03]);
            let note = k.windows(4).position(|w| w == b"Xen\0").unwrap();
            let phys32 = u32::from_le_bytes(k[note + 4..note + 8].try_into().unwrap());
            assert_eq!(u64::from(phys32), entry);
        }

        /// The raw client sends what `ApiClient` sends, reads several
        /// answers on one keep-alive connection, and refuses a non-2xx one.
        #[test]
        fn raw_client_speaks_keep_alive_http() {
            use std::io::{BufRead, BufReader, Write};
            let dir = tempfile::tempdir().unwrap();
            let socket = dir.path().join("api.sock");
            let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
            let server = std::thread::spawn(move || {
                let (conn, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut writer = conn;
                let answers: [&[u8]; 3] = [
                    b"HTTP/1.1 204 \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n\r\n",
                    b"HTTP/1.1 200 \r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: 19\r\n\r\n{\"state\":\"Running\"}",
                    b"HTTP/1.1 500 \r\nContent-Length: 22\r\n\r\n[\"Error from API\",\"x\"]",
                ];
                let mut requests = Vec::new();
                for answer in answers {
                    let mut request = String::new();
                    loop {
                        let mut line = String::new();
                        reader.read_line(&mut line).unwrap();
                        request.push_str(&line);
                        if line == "\r\n" {
                            break;
                        }
                    }
                    requests.push(request);
                    writer.write_all(answer).unwrap();
                }
                requests
            });
            let mut api = super::RawApi::connect(&socket).unwrap();
            assert!(api.request("PUT", "vm.pause", false).unwrap().is_empty());
            assert_eq!(
                api.request("GET", "vm.info", true).unwrap(),
                b"{\"state\":\"Running\"}"
            );
            let err = api.request("PUT", "vm.resume", false).unwrap_err();
            assert!(err.to_string().contains("HTTP 500"), "{err}");
            let requests = server.join().unwrap();
            assert_eq!(
                requests[0],
                "PUT /api/v1/vm.pause HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nContent-Length: 0\r\n\r\n"
            );
            assert_eq!(
                requests[1],
                "GET /api/v1/vm.info HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
            );
        }
    }
}

fn qemu_version() -> String {
    version_line(Path::new("qemu-system-x86_64"), &["--version"])
        .unwrap_or_else(|| "unknown".into())
}

fn signed_ms(ns: i128) -> String {
    let d = dur(ns.abs());
    if ns < 0 {
        format!("−{} ms", ms(d))
    } else {
        format!("+{} ms", ms(d))
    }
}

/// What became of part 3.
enum ChOutcome {
    Measured(cloud_hypervisor::Measured),
    /// Not asked for (`CLOUD_HYPERVISOR_BIN` unset); the reason.
    NotMeasured(String),
    /// Asked for, and failed; the error.
    Failed(String),
}

/// Which KVM part 3 ran under, in words.
fn ch_kvm_words() -> &'static str {
    if cloud_hypervisor::nested() {
        "KVM nested inside this machine's own VM"
    } else {
        "KVM"
    }
}

/// Part 3's table: per operation ours vs raw keep-alive, the raw
/// new-connection variant under it, then the pieces of the difference.
fn ch_overhead_table(m: &cloud_hypervisor::Measured) -> Table {
    let p = |l: &Latencies| format!("{} / {}", ms(l.p50()), ms(l.p99()));
    let diff = |a: &Latencies, b: &Latencies| {
        format!(
            "{} / {}",
            signed_ms(a.p50().as_nanos() as i128 - b.p50().as_nanos() as i128),
            signed_ms(a.p99().as_nanos() as i128 - b.p99().as_nanos() as i128)
        )
    };
    let mut rows = Vec::new();
    for ((label, _, _), t) in cloud_hypervisor::OPS.iter().zip(&m.ops) {
        rows.push(Row::new(
            format!("{label} p50 / p99 (ms)"),
            p(&t.ours),
            p(&t.keep_alive),
            diff(&t.ours, &t.keep_alive),
        ));
        rows.push(Row::new(
            "  raw, new connection per request",
            "",
            p(&t.fresh),
            diff(&t.fresh, &t.keep_alive),
        ));
        if matches!(*label, "pause" | "resume") {
            let pct = |x: f64| format!("{:.0} %", x * 100.0);
            let (ours, kept, fresh) = t.slept;
            rows.push(Row::new(
                format!(
                    "  answers ≥ {} ms (the VMM slept waiting for the vCPU): ours; keep-alive / new connection",
                    cloud_hypervisor::VCPU_WAIT_SLEEP.as_millis()
                ),
                pct(ours),
                format!("{} / {}", pct(kept), pct(fresh)),
                "",
            ));
        }
    }
    rows.push(Row::new(
        "connect() + close on the API socket, nothing sent, p50 / p99 (ms)",
        "",
        p(&m.connect),
        "",
    ));
    rows.push(Row::new(
        "pid liveness check before each operation (/proc/PID/stat) p50 / p99 (ms)",
        p(&m.liveness),
        "",
        "",
    ));
    rows.push(Row::new(
        "launch: spawn, API socket up, vm.create, vm.boot (1 VM)",
        secs_or_ms(m.launch),
        "",
        "",
    ));
    rows.push(Row::new(
        "  vm.boot answered → stub's marker on the serial log",
        secs_or_ms(m.marker),
        "",
        "",
    ));
    Table {
        peer_header: "raw HTTP/1.1, one keep-alive connection".into(),
        rows,
    }
}

/// Part 3 against the target: the worst operation at p50 and at p99.
fn ch_target(m: &cloud_hypervisor::Measured) -> Target {
    let worst = |pick: fn(&Latencies) -> Duration| {
        cloud_hypervisor::OPS
            .iter()
            .zip(&m.ops)
            .map(|((label, _, _), t)| {
                (
                    pick(&t.ours).as_nanos() as i128 - pick(&t.keep_alive).as_nanos() as i128,
                    *label,
                )
            })
            .max()
            .unwrap_or((0, ""))
    };
    let (p50, p50_op) = worst(Latencies::p50);
    let (p99, p99_op) = worst(Latencies::p99);
    let limit = OVERHEAD_TARGET.as_nanos() as i128;
    Target {
        name: format!(
            "Cloud Hypervisor: supervisor overhead < {} ms per VM operation (p50 and p99, worst operation)",
            OVERHEAD_TARGET.as_millis()
        ),
        measured: format!(
            "p50 {} ({p50_op}), p99 {} ({p99_op})",
            signed_ms(p50),
            signed_ms(p99)
        ),
        met: p50 < limit && p99 < limit,
    }
}

/// Runs the benchmark and prints (and optionally writes) the tables.
pub fn run(args: Args) -> anyhow::Result<()> {
    let qemu = qemu_version();
    if qemu == "unknown" || Command::new("qemu-img").arg("--version").output().is_err() {
        bail!("qemu-system-x86_64 and qemu-img are needed (apt-get install qemu-system-x86 qemu-utils)");
    }
    // Checked before the long part 1, so a wrong path fails at once.
    let ch_bin = cloud_hypervisor::binary_from_env()?;
    let guest = dc_test_guest::TestGuest::prepare()
        .map_err(|e| anyhow::anyhow!("preparing the test guest: {e}"))?;
    let work_dir = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&work_dir)?;
    let machine = Machine::detect(&work_dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _signals = std::thread::spawn(move || {
        rt.block_on(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {},
            }
            eprintln!("\ninterrupted: stopping the agent, its VMs and the ledger");
            cleanup::run_all();
            std::process::exit(130);
        })
    });

    eprintln!("starting dc-ledger, dc-appliance (QEMU TCG), claiming the node ...");
    let (mut w, offering) = build_world(&args, &guest, &work_dir)?;
    let mut rents = Vec::new();
    for n in 0..args.rents.max(1) {
        let t = measure_rent(&mut w, &offering)?;
        eprintln!(
            "rent {}/{}: contract {} answered {} after the ack, active on the ledger after {}",
            n + 1,
            args.rents.max(1),
            t.contract,
            secs_or_ms(dur(t.http - t.ack)),
            secs_or_ms(dur(t.active - t.ack)),
        );
        let last = n + 1 == args.rents.max(1);
        if !last {
            // One TCG guest at a time: cancel and wait until it is gone.
            let id = t.contract;
            w.dcctl("dev.pem", &["cancel", &id.to_string()])?;
            w.wait_for(
                "the VM to be released",
                Duration::from_secs(60),
                Duration::from_millis(50),
                |w| {
                    w.records(id)
                        .iter()
                        .any(|r| r["state"] == "released")
                        .then_some(())
                },
            )?;
        }
        rents.push(t);
    }
    let last = rents.last().context("no rent measured")?.contract;
    let handle: VmHandle = w
        .records(last)
        .into_iter()
        .rev()
        .find_map(|r| serde_json::from_value(r["handle"].clone()).ok())
        .context("the last VM has no journaled handle")?;
    eprintln!(
        "timing {} × {OPS:?} on contract {last}'s QEMU (pid {}) ...",
        args.ops, handle.pid
    );
    let (ops, connects) = measure_ops(&handle, args.ops)?;
    let ledger_rent_ns: Vec<i128> = rents.iter().map(|t| t.created - t.cmd).collect();
    drop(w);

    // Part 3 once the TCG guest is gone, so it does not compete for the CPUs.
    let ch = match &ch_bin {
        None => {
            let reason = format!(
                "skipped: {} is not set (no package registry ships cloud-hypervisor; run `{}=/path/to/cloud-hypervisor bash qa/bench/appliance.sh`)",
                cloud_hypervisor::BIN_ENV,
                cloud_hypervisor::BIN_ENV
            );
            eprintln!("Cloud Hypervisor part {reason}");
            ChOutcome::NotMeasured(reason)
        }
        Some(bin) => {
            eprintln!(
                "timing {} × {:?} on a Cloud Hypervisor stub VM ({}) ...",
                args.ops,
                cloud_hypervisor::OPS.map(|(label, _, _)| label),
                bin.display()
            );
            match cloud_hypervisor::measure(bin, &work_dir, args.ops) {
                Ok(m) => ChOutcome::Measured(m),
                Err(e) => {
                    eprintln!("Cloud Hypervisor part failed: {e:#}");
                    ChOutcome::Failed(format!("failed: {e:#}"))
                }
            }
        }
    };

    // Table 1: phases of a rent.
    let phase_names: Vec<&str> = rents[0].phases().iter().map(|(n, _)| *n).collect();
    let mut rows = Vec::new();
    for (i, name) in phase_names.iter().enumerate() {
        let mut v: Vec<i128> = rents.iter().map(|t| t.phases()[i].1).collect();
        v.sort_unstable();
        // Nearest-rank median, as `Latencies::p50`.
        let median = v[(v.len().div_ceil(2)).max(1) - 1];
        rows.push(Row::new(
            *name,
            signed_span(median),
            format!("{} – {}", signed_span(v[0]), signed_span(v[v.len() - 1])),
            "",
        ));
    }
    let phases = Table {
        peer_header: "min – max".into(),
        rows,
    };

    // Table 2: per-operation overhead.
    let mut rows = Vec::new();
    let mut worst_p50 = i128::MIN;
    let mut worst_name = "";
    for (op, (ours, raw)) in OPS.iter().zip(&ops) {
        let d50 = ours.p50().as_nanos() as i128 - raw.p50().as_nanos() as i128;
        let d99 = ours.p99().as_nanos() as i128 - raw.p99().as_nanos() as i128;
        if d50 > worst_p50 {
            worst_p50 = d50;
            worst_name = op;
        }
        rows.push(Row::new(
            format!("{op} p50 / p99 (ms)"),
            format!("{} / {}", ms(ours.p50()), ms(ours.p99())),
            format!("{} / {}", ms(raw.p50()), ms(raw.p99())),
            format!("{} / {}", signed_ms(d50), signed_ms(d99)),
        ));
    }
    rows.push(Row::new(
        "raw connect + greeting + qmp_capabilities p50 / p99 (ms)",
        "",
        format!("{} / {}", ms(connects.p50()), ms(connects.p99())),
        "",
    ));
    let overhead = Table {
        peer_header: "raw QMP, one persistent socket".into(),
        rows,
    };
    let mut targets = vec![Target {
        name: format!(
            "supervisor overhead < {} ms per VM operation (p50, worst operation)",
            OVERHEAD_TARGET.as_millis()
        ),
        measured: format!("{} ({worst_name})", signed_ms(worst_p50)),
        met: worst_p50 < OVERHEAD_TARGET.as_nanos() as i128,
    }];
    // Table 3: the same on Cloud Hypervisor.
    let (ch_text, ch_markdown) = match &ch {
        ChOutcome::Measured(m) => {
            targets.push(ch_target(m));
            let table = ch_overhead_table(m);
            (
            format!(
                "per VM operation, {} each, through dc-vmm-ch (ours) vs raw HTTP on the API socket ({}, stub guest); ratio column = ours − raw keep-alive\n{}",
                args.ops,
                m.version,
                table.text()
            ),
            format!(
                "On one stub VM ({kvm}; 1 vCPU, 128 MiB, one 1 MiB raw disk, no network) launched through `dc-vmm-ch`: \
                 {ops_n} repetitions of each operation, in alternating blocks of 20 per path. \
                 **ours** = through `&dyn dc_vmm::Hypervisor` of `dc-vmm-ch`, the code path the supervisor uses: check the pid is the same process \
                 (a read of `/proc/PID/stat`), connect to the API socket, one HTTP/1.1 request with `Connection: close`, read the answer, \
                 decode it (`info` into `VmInfo`, `counters` into `VmCounters`). \
                 **peer** = a raw HTTP/1.1 client in `vm-bench`: the same request line and headers on one keep-alive connection \
                 (Cloud Hypervisor answers `Connection: keep-alive`), answers framed by `Content-Length`, JSON bodies parsed into `serde_json::Value`. \
                 The sub-row `raw, new connection per request` is the raw client opening a new connection per request as the backend does; \
                 its last column is what the connection alone costs. \
                 `pause` = `PUT vm.pause`, `resume` = `PUT vm.resume`, `info` = `GET vm.info`, `counters` = `GET vm.counters`, \
                 `shutdown` = `PUT vm.power-button` (the stub has no ACPI, so the button is only pressed and the operation repeats). \
                 Left out: `reboot` (re-creates the VM: not an API cost), `add_device` / `remove_device` (the stub never acknowledges an ejection, so they do not repeat), \
                 `delete` and `launch` (once per VM; one launch is timed below). \
                 Cloud Hypervisor's `pause` and `resume` wait for the vCPU threads in a loop that sleeps 1 ms between checks \
                 (`CpuManager::pause` / `resume`, `vmm/src/cpu.rs`), so their answers come in two modes: about 0.1 ms when the vCPU has acknowledged \
                 before the first check, over 1 ms when the VMM slept. Which one a request meets depends on where the vCPU thread is \
                 (still awake in KVM's halt polling, or asleep), that is on timing, not on the client; the `≥ 1 ms` rows say how each path's samples split, \
                 and where the two paths' medians fall in different modes the difference column shows about 1 ms that no code of ours spends.\n\n{table}",
                kvm = ch_kvm_words(),
                ops_n = args.ops,
                table = table.markdown(),
            ),
            )
        }
        ChOutcome::NotMeasured(reason) | ChOutcome::Failed(reason) => (
            format!("Cloud Hypervisor: {reason}\n"),
            format!("Not measured in this run: {reason}.\n"),
        ),
    };
    let rent_ledger = Latencies::new(ledger_rent_ns.iter().map(|n| dur(*n)).collect());
    println!(
        "rent → guest answers, {} rents, agent poll_interval_ms = {} (QEMU TCG, {})\n{}\n\
         per VM operation, {} each, through dc-vmm-qemu (ours) vs raw QMP; ratio column = ours − raw\n{}\n{}\n{}",
        rents.len(),
        args.poll_interval_ms,
        qemu,
        phases.text(),
        args.ops,
        overhead.text(),
        ch_text,
        targets_text(&targets)
    );

    if let Some(path) = &args.markdown {
        let md = format!(
            "# Appliance benchmarks: rent to answer, supervisor overhead\n\n\
             Generated by `vm-bench` (crate `dc-qa`) on {now}. Do not edit by hand: run `qa/bench/appliance.sh` again.\n\n\
             ## Machine\n\n- CPU: {cpu}, {cores} cores\n- memory: {mem:.1} GiB\n- kernel: {kernel}\n- load average when the run started (1/5/15 min): {load}\n\
             - VMM: {qemu}, software emulation (TCG; no KVM used), test guest of `dc-test-guest` (Debian cloud kernel + busybox initramfs), 1 vCPU, 1 GiB\n\
             - Cloud Hypervisor: {ch_machine}\n\
             - data directory: {fs}\n\n\
             ## Command\n\n```\nqa/bench/appliance.sh            # = target/release/vm-bench --rents {rents_n} --ops {ops_n} --markdown qa/BENCHMARKS-appliance.md\n\
             {ch_env}=/path/to/cloud-hypervisor bash qa/bench/appliance.sh   # also part 3, Cloud Hypervisor\n```\n\n\
             ## 1. From `rent` acknowledged to the guest answering\n\n\
             Real processes: release `dc-ledger`, `dcctl` (developer and provider), `dc-appliance run` with `backend = \"qemu\"`, `accel = \"tcg\"`, \
             readiness probe `http`. {rents_n} rents one after the other, each cancelled (and its VM gone) before the next. \
             **The agent polls the ledger every `poll_interval_ms` = {poll} ms**, so the ledger part is mostly that wait; \
             its readiness probe (`GET /`, fixed in the agent) runs one at a time every 200 ms with a 2 s read timeout, and a probe sent before the guest's network is up hangs until that timeout (QEMU's user network holds the connection), which is why the reporting part reaches up to about 2 s in some runs.\n\n\
             Timestamps, all from this host's clock: the ledger's `created_at_ns` and `active_since_ns` (`dcctl contract show`), \
             the agent's journal records (`at_ns`, written and fsynced by the agent) and its log lines (tracing timestamps, µs), \
             and what `vm-bench` observes itself (polling the serial log every 5 ms, `GET /` on the endpoint every 20 ms).\n\n\
             - **dcctl rent**: from starting `dcctl rent` until it returns (process start, signing, the ledger's durable commit). \
               The ledger stamped the contract (`created_at_ns`) {rent_ledger} (p50) after the start.\n\
             - **ledger part**: from the rent acknowledged to the agent's first journal record for it (it listed its contracts, read the offering and reserved resources).\n\
             - **supervisor part**: from that record to the log line `QEMU started` (the process spawned); split into the ledger transactions the agent sends first \
               (`accept_contract`, `start_provisioning`: until the log line `launching VM`) and the launch itself (spec check, `qemu-img` overlay, spawn).\n\
             - **VMM + guest boot**: from `QEMU started` to the first answer of `GET /` through the endpoint; split at the journal record with the VM's handle \
               (QMP socket up, `query-status` running, fsynced) and at the guest's ready line on its serial console.\n\
             - **reporting**: from the first answer to the ledger's `active_since_ns` (the agent's probe sees it, `report_active`). \
               The agent's own probe can beat `vm-bench`'s, so this can come out negative: the two observe the same event at their own polling times.\n\n\
             {phases}\n\
             ## 2. Supervisor overhead per VM operation\n\n\
             On the last rented VM (running, agent idle): {ops_n} repetitions of each operation, in alternating blocks of 20, \
             **ours** = through `&dyn dc_vmm::Hypervisor` of `dc-vmm-qemu`, the code path the supervisor uses: check the pid is the same process, \
             connect to the QMP socket, read the greeting, `qmp_capabilities`, the command(s), parse the answer. \
             **peer** = a raw QMP client in `vm-bench`: one persistent Unix socket, capabilities negotiated once, the same command lines, answers parsed as JSON. \
             `pause` = `stop`, `resume` = `cont`, `info` = `query-status`, `query-cpus-fast`, `query-memory-size-summary`, `qom-list`, `counters` = `query-blockstats`. \
             The last column is ours − raw: what the supervisor's layer adds, nearly all of it the new connection per operation \
             (the raw connect + greeting + capabilities row).\n\n{overhead}\n\
             ## 3. Supervisor overhead per VM operation, Cloud Hypervisor\n\n{ch_markdown}\n\
             ## Targets\n\n{targets}\n\
             ## Limits\n\n\
             - TCG, not KVM: guest boot here is seconds of emulation; with KVM it would be far shorter, while the ledger and supervisor parts would not change much.\n\
             - The log timestamps are µs, the journal's ns; `QEMU started` is logged just after `spawn` returns. The observer's polling adds up to 5 ms (serial) and about 20 ms (HTTP: a new `GET /` every 20 ms, up to 16 at once, since one sent before the guest's network is up hangs until its 2 s timeout).\n\
             - Each HTTP probe before the guest listens costs the emulated guest a little (QEMU's user network forwards every connection attempt).\n\
             - {rents_n} rents on a shared machine: the medians move between runs; read min – max beside them.\n\
             - Cloud Hypervisor: {ch_limits}\n",
            now = utc_now(),
            cpu = machine.cpu_model,
            cores = machine.cores,
            mem = machine.memory_gib,
            kernel = machine.kernel,
            load = machine.load_at_start,
            fs = machine.data_fs,
            rents_n = rents.len(),
            ops_n = args.ops,
            poll = args.poll_interval_ms,
            rent_ledger = secs_or_ms(rent_ledger.p50()),
            phases = phases.markdown(),
            overhead = overhead.markdown(),
            targets = targets_markdown(&targets),
            ch_env = cloud_hypervisor::BIN_ENV,
            ch_machine = match &ch {
                ChOutcome::Measured(m) => format!("{}, {}", m.version, ch_kvm_words()),
                ChOutcome::NotMeasured(_) | ChOutcome::Failed(_) => "not measured in this run".into(),
            },
            ch_limits = match &ch {
                ChOutcome::Measured(_) => format!(
                    "a stub guest, not the Linux test guest (Linux guests crashed under the software-nested KVM this benchmark was written on; \
                     the operations timed do not depend on what the guest runs), and no rent through the agent: part 1 is QEMU only. \
                     Under {}, a VM exit costs more than on bare metal; `pause` and `resume` (the VMM stops and restarts its vCPU threads) feel it most, on both paths alike.",
                    ch_kvm_words()
                ),
                ChOutcome::NotMeasured(reason) | ChOutcome::Failed(reason) => format!("{reason}."),
            },
        );
        std::fs::write(path, md).with_context(|| format!("writing {}", path.display()))?;
    }
    // The other parts are printed and written; a requested part 3 that
    // failed still fails the run.
    if let ChOutcome::Failed(reason) = ch {
        bail!("Cloud Hypervisor part {reason}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tracing_timestamps_parse() {
        assert_eq!(
            super::parse_rfc3339_ns("1970-01-01T00:00:01.5Z"),
            Some(1_500_000_000)
        );
        assert_eq!(
            super::parse_rfc3339_ns("2024-02-29T12:00:00.000123Z"),
            Some(1_709_208_000_000_123_000)
        );
        assert_eq!(super::parse_rfc3339_ns("junk"), None);
    }
}
