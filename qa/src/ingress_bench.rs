//! `ingress-bench`: the SNI-passthrough ingress (`dc-ingress`) beside HAProxy
//! (`mode tcp`, `req_ssl_sni`) and nginx (`stream`, `ssl_preread`), and beside
//! no proxy at all, on the same workload in the same run (issue 6).
//!
//! Layout, chosen so that the four paths get the same machine:
//! - two TLS backends (rustls, TLS 1.3, ECDSA P-256 leaves of one test CA,
//!   no session tickets) for `a.bench.test` and `b.bench.test`, in a child
//!   process of this binary; a client asks for `n` bytes with an 8-byte
//!   request, the backend sends them (the first byte names the backend, so
//!   every connection checks its routing) and closes;
//! - the proxies, each a separate process so that its CPU time can be read
//!   from `/proc`: `dc-ingress` is this binary again in its ingress role
//!   (`Ingress::spawn_workers`, as in the appliance: `--proxy-threads`
//!   threads, each a current-thread tokio runtime with its own
//!   `SO_REUSEPORT` listener),
//!   HAProxy with `nbthread` and nginx with `worker_processes` set to the same;
//! - the client, in this process: rustls with full certificate verification
//!   and no resumption, so every connection is a full handshake;
//! - for `a.replay.bench.test` and `b.replay.bench.test`, two more backends
//!   in the same child process that replay a [`Transcript`]: the bytes of one
//!   real exchange of the workload, recorded in memory at start, which the
//!   client in this process replays too. The proxies see the same ClientHello
//!   and relay the same bytes in the same writes, but the endpoints do no
//!   cryptography, so their one CPU can drive the proxy near saturation.
//!
//! With two or more CPUs the proxy runs alone on the second and the client and
//! backends share the first (`--no-pin` turns this off): the endpoints then
//! get the same CPU whichever path is measured, and a proxy's cost shows in
//! its own CPU time (read per connection and per GB) instead of in the
//! endpoints' speed. Paths are measured in turn within each run, runs are
//! repeated, and the median of each number is reported, so that background
//! load falls on all paths alike.
//!
//! Four measurements per path and run, in this order:
//! 1. **connection rate**: `--concurrency` connections in flight, each a new
//!    TCP connection, a full TLS handshake and a 256-byte response, names
//!    alternating; connections completed per second, latency from `connect`
//!    to the first response byte, and the proxy's CPU time per connection;
//! 2. **latency**: one connection at a time, the same exchange; p50 and p99,
//!    and what the proxy adds to the direct path's;
//! 3. **throughput**: `--streams` connections in parallel, each receiving
//!    `--transfer-mib` MiB and starting over, for a fixed time; MB/s received.
//!    When pinned, measured twice: pinned as above, where the endpoints' one
//!    CPU is the bottleneck, and then with nothing pinned, where the proxy's
//!    work competes with the endpoints' for both CPUs (as on a host whose
//!    cores also run the VMs);
//! 4. **connection rate, proxy-bound**: `--concurrency` replayed exchanges in
//!    flight; connections completed per second, how busy the proxy was, and
//!    its CPU time per connection near saturation. These runs come after all
//!    runs of the others: the thousands of connections per second they make
//!    fill the TIME_WAIT table for a minute, which would weigh on whatever
//!    ran next.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdTcpListener, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use dc_ingress::{Ingress, IngressConfig, Listen, MetricsSnapshot, Route, RouteTable};
use dc_qa::machine::{utc_now, version_line, Machine};
use dc_qa::report::{targets_markdown, targets_text, Target};
use dc_qa::server::{descendants, stat_fields};
use dc_qa::stats::{ms, thousands, Latencies};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Command line of `ingress-bench`.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "ingress-bench",
    about = "SNI-routed TLS through dc-ingress, HAProxy and nginx, and straight to the backend, side by side in one run"
)]
struct Args {
    /// Seconds of each connection-rate measurement, replayed and full
    /// handshakes alike (after its warm-up).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Seconds of each one-at-a-time latency measurement (its p99 needs a
    /// few thousand exchanges).
    #[arg(long, default_value_t = 3.0)]
    latency_seconds: f64,
    /// Seconds of each throughput measurement (after its warm-up).
    #[arg(long, default_value_t = 2.0)]
    throughput_seconds: f64,
    /// Seconds of warm-up before each measurement, not counted.
    #[arg(long, default_value_t = 0.5)]
    warmup_seconds: f64,
    /// Runs over all paths; each number reported is the median of the runs.
    #[arg(long, default_value_t = 5)]
    runs: u32,
    /// Connections in flight in the connection-rate measurements.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Parallel connections in the throughput measurement.
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// MiB each throughput connection receives before starting over.
    #[arg(long, default_value_t = 64)]
    transfer_mib: u64,
    /// Worker threads of dc-ingress, HAProxy's nbthread, nginx's worker_processes.
    #[arg(long, default_value_t = 1)]
    proxy_threads: usize,
    /// Do not pin the proxy to its own CPU and the client and backends to another.
    #[arg(long)]
    no_pin: bool,
    /// Let HAProxy splice (`option splice-auto`); off is the packaged default.
    #[arg(long)]
    haproxy_splice: bool,
    /// The HAProxy binary.
    #[arg(long, default_value = "haproxy")]
    haproxy: PathBuf,
    /// The nginx binary.
    #[arg(long, default_value = "nginx")]
    nginx: PathBuf,
    /// Print the results as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the results as markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Measure only these paths (repeatable: direct, dc-ingress, haproxy,
    /// nginx), e.g. to profile one of them; targets that need a path left out
    /// are not judged.
    #[arg(long, value_name = "PATH", value_parser = ["direct", "dc-ingress", "haproxy", "nginx"])]
    only: Vec<String>,
    /// One short run of each available path (HAProxy and nginx are skipped,
    /// with a message, when not installed); fails if a path moved nothing or
    /// had errors. For tests.
    #[arg(long)]
    smoke: bool,
}

/// The child processes of this binary read their role from here.
const ROLE_ENV: &str = "DC_INGRESS_BENCH_ROLE";
const DIR_ENV: &str = "DC_INGRESS_BENCH_DIR";
const THREADS_ENV: &str = "DC_INGRESS_BENCH_THREADS";
const UPSTREAMS_ENV: &str = "DC_INGRESS_BENCH_UPSTREAMS";

/// The two names of the TLS backends; connection `k` uses `NAMES[k % 2]`.
const NAMES: [&str; 2] = ["a.bench.test", "b.bench.test"];
/// The two names of the replaying backends (see [`Transcript`]).
const REPLAY_NAMES: [&str; 2] = ["a.replay.bench.test", "b.replay.bench.test"];
/// Every name the proxies route, in the order of the backends' addresses.
const ROUTED: [&str; 4] = [NAMES[0], NAMES[1], REPLAY_NAMES[0], REPLAY_NAMES[1]];
/// First byte of every response from the backend for `NAMES[i]`.
const TAGS: [u8; 2] = [b'a', b'b'];
/// Response size in the connection-rate and latency measurements.
const SMALL_RESPONSE_BYTES: u64 = 256;
/// Most bytes a backend sends for one request.
const MAX_RESPONSE_BYTES: u64 = 1 << 40;
/// One connection of the rate or latency measurement that takes longer than
/// this is counted as an error.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Ready timeout of a proxy or backend process.
const START_TIMEOUT: Duration = Duration::from_secs(15);

fn main() -> ExitCode {
    let role = std::env::var(ROLE_ENV).ok();
    let outcome = match role.as_deref() {
        Some("backend") => backend_role(),
        Some("ingress") => ingress_role(),
        Some(other) => Err(anyhow!("unknown {ROLE_ENV}={other}")),
        None => run(Args::parse()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ingress-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// Certificates and TLS settings

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A test CA and one ECDSA P-256 leaf per name, written as DER into `dir`:
/// `ca.der`, `a.bench.test.der` and `a.bench.test.key`, and so on.
fn write_pki(dir: &Path) -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
    std::fs::write(dir.join("ca.der"), ca.der())?;
    for name in ROUTED {
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec![name.to_string()])?.signed_by(&key, &ca)?;
        std::fs::write(dir.join(format!("{name}.der")), cert.der())?;
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_der())?;
    }
    Ok(())
}

fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The backend's TLS: 1.3 only, no tickets (every client handshake is full).
fn server_config(dir: &Path, name: &str) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let cert = CertificateDer::from(read_file(&dir.join(format!("{name}.der")))?);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(read_file(
        &dir.join(format!("{name}.key")),
    )?));
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The client's TLS: 1.3 only, the test CA as the only root, no resumption.
fn client_config(dir: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(read_file(&dir.join("ca.der"))?))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Bytes of the client's first flight (the ClientHello the proxies parse).
fn client_hello_len(config: &Arc<rustls::ClientConfig>) -> anyhow::Result<usize> {
    let name = ServerName::try_from(NAMES[0])?;
    let mut conn = rustls::ClientConnection::new(config.clone(), name)?;
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out)?;
    }
    Ok(out.len())
}

// ---------------------------------------------------------------------------
// The roles of the child processes

fn env_var(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} not set"))
}

/// Blocks until stdin closes: the parent is done (or gone).
fn wait_for_stdin_eof() {
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin();
    while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
}

fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// The backends, on one thread: the two TLS backends, then the two replaying
/// ones (their transcripts read from the scratch directory); prints
/// `LISTEN <a> <b> <replay a> <replay b>`, serves until stdin closes.
fn backend_role() -> anyhow::Result<()> {
    let dir = PathBuf::from(env_var(DIR_ENV)?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut addrs = Vec::new();
        for (name, tag) in NAMES.iter().zip(TAGS) {
            let acceptor = TlsAcceptor::from(server_config(&dir, name)?);
            let listener = listen("127.0.0.1:0".parse()?)?;
            addrs.push(listener.local_addr()?);
            tokio::spawn(serve_backend(listener, acceptor, tag));
        }
        for name in REPLAY_NAMES {
            let transcript = Transcript::decode(&read_file(&Transcript::path(&dir, name))?)
                .with_context(|| format!("the transcript for {name}"))?;
            let listener = listen("127.0.0.1:0".parse()?)?;
            addrs.push(listener.local_addr()?);
            tokio::spawn(serve_replay(listener, Arc::new(transcript)));
        }
        let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        println!("LISTEN {}", addrs.join(" "));
        std::io::stdout().flush()?;
        tokio::task::spawn_blocking(wait_for_stdin_eof).await?;
        Ok(())
    })
}

/// Accepts connections for ever, each with `TCP_NODELAY`, and spawns
/// `serve` on each.
async fn accept_each<F, Fut>(listener: tokio::net::TcpListener, serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                // Descriptors exhausted: wait for some to close.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve(tcp));
    }
}

/// Waits (30 s at most) for the client's FIN after the backend's, so that
/// neither side resets the other.
async fn await_fin(tcp: &mut TcpStream) {
    let mut sink = [0u8; 512];
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

async fn serve_backend(listener: tokio::net::TcpListener, acceptor: TlsAcceptor, tag: u8) {
    // Every chunk written is this.
    let body: Arc<[u8]> = body(tag, 256 * 1024).into();
    accept_each(listener, move |tcp| {
        let (acceptor, body) = (acceptor.clone(), body.clone());
        async move {
            let _ = serve_request(acceptor, tcp, &body).await;
        }
    })
    .await
}

/// One connection: handshake, an 8-byte big-endian length, that many bytes,
/// close_notify and FIN; then waits for the client's FIN so that neither side
/// resets the other.
async fn serve_request(acceptor: TlsAcceptor, tcp: TcpStream, body: &[u8]) -> std::io::Result<()> {
    let mut tls = acceptor.accept(tcp).await?;
    let mut request = [0u8; 8];
    tls.read_exact(&mut request).await?;
    let mut left = u64::from_be_bytes(request).min(MAX_RESPONSE_BYTES);
    while left > 0 {
        let n = left.min(body.len() as u64) as usize;
        tls.write_all(&body[..n]).await?;
        left -= n as u64;
    }
    tls.shutdown().await?;
    await_fin(&mut tls.into_inner().0).await;
    Ok(())
}

/// dc-ingress with its default settings and the two routes: prints
/// `LISTEN <addr>`, serves until stdin closes, then prints `METRICS <json>`.
fn ingress_role() -> anyhow::Result<()> {
    let threads: usize = env_var(THREADS_ENV)?.parse()?;
    let upstreams: Vec<SocketAddr> = env_var(UPSTREAMS_ENV)?
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    if upstreams.len() != ROUTED.len() {
        bail!("{UPSTREAMS_ENV}: expected {} addresses", ROUTED.len());
    }
    let routes = Arc::new(RouteTable::new());
    let table = ROUTED
        .iter()
        .zip(&upstreams)
        .enumerate()
        .map(|(i, (name, upstream))| Route {
            contract_id: i as u64 + 1,
            names: vec![name.to_string()],
            tls_upstream: *upstream,
            http_upstream: None,
            proxy_protocol: false,
            max_connections: dc_ingress::routes::DEFAULT_ROUTE_MAX_CONNECTIONS,
        })
        .collect();
    routes.replace(table)?;
    // The appliance's way: worker threads with their own runtimes.
    let ingress = Ingress::new(IngressConfig::default(), routes)?;
    let workers = ingress.spawn_workers(Listen {
        tls: Some("127.0.0.1:0".parse()?),
        http: None,
        threads: threads.max(1),
    })?;
    let addr = workers.tls_addr().context("no TLS listener")?;
    println!("LISTEN {addr}");
    std::io::stdout().flush()?;
    wait_for_stdin_eof();
    println!("METRICS {}", serde_json::to_string(&ingress.metrics())?);
    std::io::stdout().flush()?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Processes: starting, pinning, CPU time, stopping

/// The CPUs each side runs on, when pinned.
#[derive(Clone, Debug)]
struct Pinning {
    endpoints: usize,
    proxy: usize,
}

impl Pinning {
    /// The first two CPUs this process may run on, unless there is only one.
    fn plan(no_pin: bool) -> Option<Pinning> {
        if no_pin {
            return None;
        }
        let cpus = allowed_cpus();
        (cpus.len() >= 2).then(|| Pinning {
            endpoints: cpus[0],
            proxy: cpus[1],
        })
    }
}

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity
    // writes at most size_of::<cpu_set_t>() bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

fn cpu_set(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: as in `allowed_cpus`; CPU_SET stays inside the set for cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

/// Pins the calling thread (and the threads it starts later) to `cpu`.
fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    let set = cpu_set(cpu);
    // SAFETY: a valid set of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the CPUs of every thread of `root` and its descendants.
fn set_tree_affinity(root: u32, cpus: &[usize]) {
    for pid in descendants(root) {
        set_process_affinity(pid, cpus);
    }
}

/// Sets the CPUs of every thread of `pid` (not of its children).
fn set_process_affinity(pid: u32, cpus: &[usize]) {
    // SAFETY: as in `allowed_cpus`; every cpu is below CPU_SETSIZE (it came
    // from sched_getaffinity or the plan).
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        set
    };
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for tid in tasks
            .flatten()
            .filter_map(|t| t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        {
            // SAFETY: a valid set of the size passed; a thread that exited
            // meanwhile just fails with ESRCH.
            unsafe {
                libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
        }
    }
}

/// Where the processes run: pinned apart for most measurements, and free on
/// every CPU for the second throughput measurement.
#[derive(Clone, Debug)]
struct Placement {
    pinning: Pinning,
    /// Every CPU this benchmark may use.
    all: Vec<usize>,
    backend: u32,
}

impl Placement {
    /// Lets the backends, the client (this process) and `proxy` run anywhere.
    fn release(&self, proxy: Option<u32>) {
        set_tree_affinity(self.backend, &self.all);
        // This process's threads only: the proxies are its children.
        set_process_affinity(std::process::id(), &self.all);
        if let Some(p) = proxy {
            set_tree_affinity(p, &self.all);
        }
    }

    /// Back to the endpoints on one CPU and `proxy` on the other.
    fn pin(&self, proxy: Option<u32>) {
        set_tree_affinity(self.backend, &[self.pinning.endpoints]);
        set_process_affinity(std::process::id(), &[self.pinning.endpoints]);
        if let Some(p) = proxy {
            set_tree_affinity(p, &[self.pinning.proxy]);
        }
    }
}

/// Runs the child on `cpu` (if any) and sends it SIGTERM should this process die.
fn prepare(cmd: &mut Command, cpu: Option<usize>) {
    use std::os::unix::process::CommandExt;
    let set = cpu.map(cpu_set);
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(set) = &set {
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// How a child process is told to stop.
enum Stop {
    /// Our own roles exit when their stdin closes.
    CloseStdin,
    /// HAProxy and nginx stop on SIGTERM.
    Terminate,
}

/// A child process, stopped when dropped.
struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<BufReader<ChildStdout>>,
    stop: Stop,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The rest of the first line starting with `prefix`.
    fn expect_line(&mut self, prefix: &str) -> anyhow::Result<String> {
        let stdout = self
            .stdout
            .as_mut()
            .ok_or_else(|| anyhow!("{}: no stdout", self.name))?;
        let mut line = String::new();
        loop {
            line.clear();
            if stdout.read_line(&mut line)? == 0 {
                bail!("{} exited before printing {prefix}", self.name);
            }
            if let Some(rest) = line.trim_end().strip_prefix(prefix) {
                return Ok(rest.trim().to_string());
            }
        }
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status})", self.name);
        }
        Ok(())
    }

    fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn stop(&mut self) {
        match self.stop {
            Stop::CloseStdin => drop(self.stdin.take()),
            Stop::Terminate => {
                // SAFETY: signalling our own child, which has not been reaped
                // (try_wait has not reported it), so the pid is still its.
                if matches!(self.child.try_wait(), Ok(None)) {
                    unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
                }
            }
        }
        if !self.wait_exit(Duration::from_secs(5)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One of this binary's roles as a child process.
fn spawn_role(role: &str, env: &[(&str, String)], cpu: Option<usize>) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(ROLE_ENV, role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    prepare(&mut cmd, cpu);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting the {role}"))?;
    Ok(Proc {
        name: role.to_string(),
        stdin: child.stdin.take(),
        stdout: child.stdout.take().map(BufReader::new),
        child,
        stop: Stop::CloseStdin,
    })
}

/// What a process tree has used so far, all threads together.
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    /// CPU time, kernel included.
    cpu: Duration,
    /// Times a thread blocked and had to be woken again: each is a sleep in
    /// `epoll_wait` and a wake-up that the waking side (here often the other
    /// CPU, by an inter-processor interrupt) pays for too.
    wakeups: u64,
    /// Clock ticks charged to user space and to the kernel (`stat`'s utime
    /// and stime): coarse, so only their ratio is used, to split `cpu`.
    user_ticks: u64,
    kernel_ticks: u64,
}

impl Usage {
    fn since(self, earlier: Usage) -> Usage {
        Usage {
            cpu: self.cpu.saturating_sub(earlier.cpu),
            wakeups: self.wakeups.saturating_sub(earlier.wakeups),
            user_ticks: self.user_ticks.saturating_sub(earlier.user_ticks),
            kernel_ticks: self.kernel_ticks.saturating_sub(earlier.kernel_ticks),
        }
    }

    /// The part of `cpu` spent in the kernel, by the tick ratio; `None`
    /// without ticks to go by.
    fn kernel_cpu(self) -> Option<Duration> {
        let ticks = self.user_ticks + self.kernel_ticks;
        (ticks > 0).then(|| self.cpu.mul_f64(self.kernel_ticks as f64 / ticks as f64))
    }
}

/// utime and stime (clock ticks) from a `/proc/.../stat` line.
fn stat_ticks(stat: &str) -> Option<(u64, u64)> {
    let f = stat_fields(stat)?;
    Some((f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?))
}

/// Usage of `root` and its descendants, from `/proc/PID/task/TID/schedstat`
/// (CPU in nanoseconds, unlike the tick-grained `stat`, which only splits it
/// between user space and the kernel) and `status` (`voluntary_ctxt_switches`).
fn tree_usage(root: u32) -> Usage {
    let mut usage = Usage::default();
    for pid in descendants(root) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) {
                let ns = s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                usage.cpu += Duration::from_nanos(ns);
            }
            if let Some((user, kernel)) = std::fs::read_to_string(task.path().join("stat"))
                .ok()
                .as_deref()
                .and_then(stat_ticks)
            {
                usage.user_ticks += user;
                usage.kernel_ticks += kernel;
            }
            if let Ok(s) = std::fs::read_to_string(task.path().join("status")) {
                usage.wakeups += s
                    .lines()
                    .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    usage
}

/// A free port on 127.0.0.1 for HAProxy or nginx to listen on.
fn free_port() -> anyhow::Result<u16> {
    Ok(StdTcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `addr` accepts a connection (the probe sends nothing).
fn wait_listening(proc: &mut Proc, addr: SocketAddr, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Err(e) = proc.check_running() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            bail!("{e}: {}", log.trim());
        }
        if StdTcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} not listening on {addr} after {START_TIMEOUT:?}",
                proc.name
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_haproxy(
    args: &Args,
    dir: &Path,
    backends: [SocketAddr; 4],
    cpu: Option<usize>,
) -> anyhow::Result<(Proc, SocketAddr)> {
    let port = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let splice = if args.haproxy_splice {
        "    option splice-auto\n"
    } else {
        ""
    };
    let config = format!(
        "global\n\
         \x20   nbthread {threads}\n\
         \x20   maxconn 6000\n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   timeout connect 3s\n\
         \x20   timeout client 300s\n\
         \x20   timeout server 300s\n\
         {splice}\
         frontend sni\n\
         \x20   bind {addr}\n\
         \x20   tcp-request inspect-delay 5s\n\
         \x20   tcp-request content accept if {{ req_ssl_hello_type 1 }}\n\
         {rules}\
         {backends}",
        threads = args.proxy_threads.max(1),
        rules = ROUTED
            .iter()
            .enumerate()
            .map(|(i, name)| format!("    use_backend b{i} if {{ req_ssl_sni -i {name} }}\n"))
            .collect::<String>(),
        backends = backends
            .iter()
            .enumerate()
            .map(|(i, addr)| format!("backend b{i}\n    server b{i} {addr}\n"))
            .collect::<String>(),
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config)?;
    let log = dir.join("haproxy.log");
    let mut cmd = Command::new(&args.haproxy);
    cmd.arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    start_peer("haproxy", cmd, cpu, addr, &log)
}

/// Spawns a peer proxy (pinned like ours), stopped with SIGTERM, and waits
/// until it listens on `addr` (its log in the error otherwise).
fn start_peer(
    name: &str,
    mut cmd: Command,
    cpu: Option<usize>,
    addr: SocketAddr,
    log: &Path,
) -> anyhow::Result<(Proc, SocketAddr)> {
    prepare(&mut cmd, cpu);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", cmd.get_program().to_string_lossy()))?;
    let mut proc = Proc {
        name: name.into(),
        child,
        stdin: None,
        stdout: None,
        stop: Stop::Terminate,
    };
    wait_listening(&mut proc, addr, log)?;
    Ok((proc, addr))
}

/// The `load_module` line nginx needs for `stream`: none when built in, the
/// module's path when it is dynamic (Debian: package `libnginx-mod-stream`).
fn nginx_stream_module(nginx: &Path) -> anyhow::Result<String> {
    let out = Command::new(nginx)
        .arg("-V")
        .output()
        .with_context(|| format!("running {} -V", nginx.display()))?;
    let build = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).to_string();
    let flags: Vec<&str> = build.split_whitespace().collect();
    if flags.contains(&"--with-stream") {
        return Ok(String::new());
    }
    if !flags.contains(&"--with-stream=dynamic") {
        bail!("{} is built without the stream module", nginx.display());
    }
    let modules = flags
        .iter()
        .find_map(|f| f.strip_prefix("--modules-path="))
        .unwrap_or("/usr/lib/nginx/modules");
    let module = Path::new(modules).join("ngx_stream_module.so");
    if !module.exists() {
        bail!(
            "{} is missing: nginx's stream module is a separate package (Debian: libnginx-mod-stream)",
            module.display()
        );
    }
    Ok(format!("load_module {};\n", module.display()))
}

fn start_nginx(
    args: &Args,
    dir: &Path,
    backends: [SocketAddr; 4],
    cpu: Option<usize>,
) -> anyhow::Result<(Proc, SocketAddr)> {
    let load_module = nginx_stream_module(&args.nginx)?;
    let port = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let threads = args.proxy_threads.max(1);
    let reuseport = if threads > 1 { " reuseport" } else { "" };
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(&prefix)?;
    let log = dir.join("nginx-error.log");
    let config = format!(
        "{load_module}\
         daemon off;\n\
         master_process on;\n\
         worker_processes {threads};\n\
         worker_rlimit_nofile 20000;\n\
         pid {pid};\n\
         error_log {log} warn;\n\
         events {{ worker_connections 8000; }}\n\
         stream {{\n\
         \x20   map $ssl_preread_server_name $sni_upstream {{\n\
         {map}\
         \x20   }}\n\
         \x20   server {{\n\
         \x20       listen {addr}{reuseport};\n\
         \x20       ssl_preread on;\n\
         \x20       preread_timeout 5s;\n\
         \x20       proxy_connect_timeout 3s;\n\
         \x20       proxy_timeout 300s;\n\
         \x20       proxy_pass $sni_upstream;\n\
         \x20   }}\n\
         }}\n",
        pid = prefix.join("nginx.pid").display(),
        log = log.display(),
        map = ROUTED
            .iter()
            .zip(backends)
            .map(|(name, addr)| format!("        {name} {addr};\n"))
            .collect::<String>(),
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config)?;
    let mut cmd = Command::new(&args.nginx);
    cmd.arg("-p")
        .arg(&prefix)
        .arg("-e")
        .arg(&log)
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("nginx.stderr"))?);
    start_peer("nginx", cmd, cpu, addr, &log)
}

// ---------------------------------------------------------------------------
// The client

/// Why one connection of the workload failed.
#[derive(Debug)]
enum ConnError {
    Io(std::io::Error),
    Timeout,
    /// The response came from the other backend: misrouted.
    WrongBackend {
        expected: u8,
        got: u8,
    },
    ShortResponse {
        expected: u64,
        got: u64,
    },
    /// A replayed exchange received bytes other than the recording's.
    Garbled,
    /// The throughput window ended mid-transfer (not an error).
    WindowOver,
}

impl From<std::io::Error> for ConnError {
    fn from(e: std::io::Error) -> Self {
        ConnError::Io(e)
    }
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "{e}"),
            ConnError::Timeout => write!(f, "no answer in {CONNECTION_TIMEOUT:?}"),
            ConnError::WrongBackend { expected, got } => write!(
                f,
                "misrouted: expected backend {:?}, answered by {:?}",
                *expected as char, *got as char
            ),
            ConnError::ShortResponse { expected, got } => {
                write!(f, "response of {got} bytes, expected {expected}")
            }
            ConnError::Garbled => write!(f, "received bytes differ from the recording"),
            ConnError::WindowOver => write!(f, "measurement window over"),
        }
    }
}

/// Where the client connects for each name: the backends themselves, or a proxy.
#[derive(Clone)]
struct Client {
    connector: TlsConnector,
    targets: [SocketAddr; 2],
    names: [ServerName<'static>; 2],
}

impl Client {
    /// One connection for `NAMES[which]`: TCP connect, handshake, request
    /// `len` bytes, read them to the end. Returns the time from connect to
    /// the first response byte. Received bytes are added to `received`;
    /// with `until`, reading stops when that instant is past.
    async fn exchange(
        &self,
        which: usize,
        len: u64,
        buf: &mut [u8],
        received: Option<&AtomicU64>,
        until: Option<Instant>,
    ) -> Result<Duration, ConnError> {
        let start = Instant::now();
        let tcp = TcpStream::connect(self.targets[which]).await?;
        tcp.set_nodelay(true)?;
        let mut tls = self
            .connector
            .connect(self.names[which].clone(), tcp)
            .await?;
        tls.write_all(&len.to_be_bytes()).await?;
        tls.flush().await?;
        let mut first_byte = None;
        let mut got = 0u64;
        loop {
            let n = tls.read(buf).await?;
            if n == 0 {
                break;
            }
            if first_byte.is_none() {
                first_byte = Some(start.elapsed());
                if buf[0] != TAGS[which] {
                    return Err(ConnError::WrongBackend {
                        expected: TAGS[which],
                        got: buf[0],
                    });
                }
            }
            got += n as u64;
            if let Some(received) = received {
                received.fetch_add(n as u64, Ordering::Relaxed);
            }
            if until.is_some_and(|t| Instant::now() >= t) {
                return Err(ConnError::WindowOver);
            }
        }
        match first_byte {
            Some(t) if got == len => Ok(t),
            _ => Err(ConnError::ShortResponse { expected: len, got }),
        }
    }

    /// A small exchange under [`CONNECTION_TIMEOUT`].
    async fn small(&self, which: usize, buf: &mut [u8]) -> Result<Duration, ConnError> {
        within_connection_timeout(self.exchange(which, SMALL_RESPONSE_BYTES, buf, None, None)).await
    }
}

/// `exchange`'s outcome, or [`ConnError::Timeout`] after
/// [`CONNECTION_TIMEOUT`].
async fn within_connection_timeout(
    exchange: impl std::future::Future<Output = Result<Duration, ConnError>>,
) -> Result<Duration, ConnError> {
    tokio::time::timeout(CONNECTION_TIMEOUT, exchange)
        .await
        .unwrap_or(Err(ConnError::Timeout))
}

/// Reads more of what `buf` is to hold, after the `got` bytes already there;
/// the peer's FIN before `buf` is full is a short response.
async fn read_more(tcp: &mut TcpStream, buf: &mut [u8], got: usize) -> Result<usize, ConnError> {
    match tcp.read(&mut buf[got..]).await? {
        0 => Err(ConnError::ShortResponse {
            expected: buf.len() as u64,
            got: got as u64,
        }),
        n => Ok(n),
    }
}

/// One exchange of the connection-rate workload as the bytes each side
/// writes, recorded once from a real handshake between the bench's own client
/// and backend settings (the same TLS 1.3, key share, certificates and
/// sizes), then replayed by endpoints that do no cryptography.
///
/// A passthrough proxy cannot tell a replayed connection from a live one: it
/// reads the same ClientHello, routes on the same name and relays the same
/// bytes in the same writes. The endpoints, though, cost a small fraction of
/// a handshake, so the endpoints' one CPU can drive a proxy on its own CPU to
/// saturation: the connection rate then measured is the proxy's, which a
/// full handshake per connection hides behind the endpoints' cost.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Transcript {
    /// The client's first flight: its ClientHello, which the proxies parse.
    hello: Vec<u8>,
    /// The backend's first flight, ServerHello to Finished (its certificate
    /// differs per name, so these bytes also tell which backend answered).
    server_flight: Vec<u8>,
    /// The client's ChangeCipherSpec and Finished.
    finished: Vec<u8>,
    /// The 8-byte request in one application-data record.
    request: Vec<u8>,
    /// The [`SMALL_RESPONSE_BYTES`]-byte response.
    response: Vec<u8>,
    /// The backend's close_notify alert.
    close_notify: Vec<u8>,
}

/// Writes everything `conn` has to send.
fn drain_tls<D>(conn: &mut rustls::ConnectionCommon<D>) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out)?;
    }
    Ok(out)
}

/// Hands `bytes` to `conn` and processes them.
fn feed_tls<D>(conn: &mut rustls::ConnectionCommon<D>, mut bytes: &[u8]) -> anyhow::Result<()> {
    while !bytes.is_empty() {
        if conn.read_tls(&mut bytes)? == 0 {
            bail!("TLS stopped reading");
        }
        conn.process_new_packets()?;
    }
    Ok(())
}

impl Transcript {
    /// Runs one exchange in memory: `client` asks the backend for `name` (with
    /// `server`'s settings) for `body`, which the backend sends, then
    /// close_notify. Checks that both sides saw what the other sent.
    fn record(
        client: &Arc<rustls::ClientConfig>,
        server: Arc<rustls::ServerConfig>,
        name: &str,
        body: &[u8],
    ) -> anyhow::Result<Transcript> {
        let mut c =
            rustls::ClientConnection::new(client.clone(), ServerName::try_from(name)?.to_owned())?;
        let mut s = rustls::ServerConnection::new(server)?;
        let hello = drain_tls(&mut c)?;
        feed_tls(&mut s, &hello)?;
        let server_flight = drain_tls(&mut s)?;
        feed_tls(&mut c, &server_flight)?;
        let finished = drain_tls(&mut c)?;
        if c.is_handshaking() {
            bail!("recording {name}: the client's handshake did not complete");
        }
        c.writer().write_all(&(body.len() as u64).to_be_bytes())?;
        let request = drain_tls(&mut c)?;
        feed_tls(&mut s, &finished)?;
        feed_tls(&mut s, &request)?;
        let mut asked = [0u8; 8];
        s.reader().read_exact(&mut asked)?;
        if u64::from_be_bytes(asked) != body.len() as u64 {
            bail!("recording {name}: the backend read a different request");
        }
        s.writer().write_all(body)?;
        let response = drain_tls(&mut s)?;
        s.send_close_notify();
        let close_notify = drain_tls(&mut s)?;
        feed_tls(&mut c, &response)?;
        feed_tls(&mut c, &close_notify)?;
        let mut got = Vec::new();
        c.reader().read_to_end(&mut got)?;
        if got != body {
            bail!("recording {name}: the client read a different response");
        }
        Ok(Transcript {
            hello,
            server_flight,
            finished,
            request,
            response,
            close_notify,
        })
    }

    fn parts(&self) -> [&Vec<u8>; 6] {
        [
            &self.hello,
            &self.server_flight,
            &self.finished,
            &self.request,
            &self.response,
            &self.close_notify,
        ]
    }

    /// The parts in order, each after its length as 4 bytes big-endian.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for part in self.parts() {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    fn decode(mut bytes: &[u8]) -> anyhow::Result<Transcript> {
        let mut next = || -> anyhow::Result<Vec<u8>> {
            let (len, rest) = bytes
                .split_first_chunk::<4>()
                .context("transcript: truncated length")?;
            let len = u32::from_be_bytes(*len) as usize;
            if rest.len() < len {
                bail!("transcript: a part of {len} bytes with {} left", rest.len());
            }
            let (part, rest) = rest.split_at(len);
            bytes = rest;
            Ok(part.to_vec())
        };
        let t = Transcript {
            hello: next()?,
            server_flight: next()?,
            finished: next()?,
            request: next()?,
            response: next()?,
            close_notify: next()?,
        };
        if !bytes.is_empty() {
            bail!("transcript: {} bytes after the last part", bytes.len());
        }
        Ok(t)
    }

    fn path(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{name}.transcript"))
    }

    /// What the backend sends after the client's second flight.
    fn answer_len(&self) -> usize {
        self.response.len() + self.close_notify.len()
    }
}

/// The response body of the connection-rate workload from the backend with
/// `tag`: the tag, then a fixed pattern (as the TLS backends send it).
fn body(tag: u8, len: usize) -> Vec<u8> {
    let mut body = vec![0u8; len];
    for (i, b) in body.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0];
    }
    if let Some(first) = body.first_mut() {
        *first = tag;
    }
    body
}

/// Records the transcript for each of [`REPLAY_NAMES`] and writes it into
/// `dir`, where the backend process reads it.
fn record_transcripts(
    dir: &Path,
    client: &Arc<rustls::ClientConfig>,
) -> anyhow::Result<[Arc<Transcript>; 2]> {
    let mut out = Vec::new();
    for (name, tag) in REPLAY_NAMES.iter().zip(TAGS) {
        let t = Transcript::record(
            client,
            server_config(dir, name)?,
            name,
            &body(tag, SMALL_RESPONSE_BYTES as usize),
        )?;
        std::fs::write(Transcript::path(dir, name), t.encode())?;
        out.push(Arc::new(t));
    }
    let [a, b]: [Arc<Transcript>; 2] = out.try_into().expect("two names");
    if a.server_flight == b.server_flight {
        bail!(
            "the two replayed backends' first flights are the same: routing could not be checked"
        );
    }
    Ok([a, b])
}

/// A replaying backend: for each connection, reads the recorded ClientHello,
/// sends the recorded first flight, reads the client's Finished and request,
/// sends the response and close_notify, then FIN, and waits for the client's
/// FIN. Bytes that differ from the recording end the connection.
async fn serve_replay(listener: tokio::net::TcpListener, transcript: Arc<Transcript>) {
    accept_each(listener, move |tcp| {
        let t = transcript.clone();
        async move {
            let _ = replay_backend(tcp, &t).await;
        }
    })
    .await
}

async fn replay_backend(mut tcp: TcpStream, t: &Transcript) -> std::io::Result<()> {
    let expect = |got: &[u8], want: &[u8]| {
        if got == want {
            Ok(())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "bytes differ from the recording",
            ))
        }
    };
    let second = [t.finished.as_slice(), t.request.as_slice()].concat();
    let mut buf = vec![0u8; t.hello.len().max(second.len())];
    tcp.read_exact(&mut buf[..t.hello.len()]).await?;
    expect(&buf[..t.hello.len()], &t.hello)?;
    tcp.write_all(&t.server_flight).await?;
    tcp.read_exact(&mut buf[..second.len()]).await?;
    expect(&buf[..second.len()], &second)?;
    tcp.write_all(&t.response).await?;
    tcp.write_all(&t.close_notify).await?;
    tcp.shutdown().await?;
    await_fin(&mut tcp).await;
    Ok(())
}

/// The client side of replayed exchanges, for each of [`REPLAY_NAMES`].
#[derive(Clone)]
struct Replayer {
    targets: [SocketAddr; 2],
    transcripts: [Arc<Transcript>; 2],
}

impl Replayer {
    /// One replayed exchange for `REPLAY_NAMES[which]`, written as the TLS
    /// client writes it: the ClientHello; after the backend's first flight,
    /// the Finished and then the request; the response and close_notify read,
    /// the connection is closed. Returns the time from connect to the first
    /// response byte.
    async fn exchange(&self, which: usize, buf: &mut Vec<u8>) -> Result<Duration, ConnError> {
        let t = &self.transcripts[which];
        let start = Instant::now();
        let mut tcp = TcpStream::connect(self.targets[which]).await?;
        tcp.set_nodelay(true)?;
        tcp.write_all(&t.hello).await?;
        buf.resize(t.server_flight.len().max(t.answer_len()), 0);
        // Checked as it arrives: the flights differ from their first bytes
        // on (the ServerHello's random), whatever their lengths.
        let flight = &mut buf[..t.server_flight.len()];
        let mut got = 0;
        while got < flight.len() {
            got += read_more(&mut tcp, flight, got).await?;
            if flight[..got] != t.server_flight[..got] {
                let other = 1 - which;
                let theirs = &self.transcripts[other].server_flight;
                let common = got.min(theirs.len());
                return Err(if flight[..common] == theirs[..common] {
                    ConnError::WrongBackend {
                        expected: TAGS[which],
                        got: TAGS[other],
                    }
                } else {
                    ConnError::Garbled
                });
            }
        }
        tcp.write_all(&t.finished).await?;
        tcp.write_all(&t.request).await?;
        let answer = &mut buf[..t.answer_len()];
        let mut got = 0;
        let mut first_byte = None;
        while got < answer.len() {
            got += read_more(&mut tcp, answer, got).await?;
            first_byte.get_or_insert_with(|| start.elapsed());
        }
        let (response, close_notify) = answer.split_at(t.response.len());
        if response != t.response || close_notify != t.close_notify {
            return Err(ConnError::Garbled);
        }
        Ok(first_byte.unwrap_or_default())
    }
}

/// The exchanges of a connection-rate measurement: TLS handshakes, or
/// replayed ones.
#[derive(Clone)]
enum Workload {
    Tls(Client),
    Replay(Replayer),
}

impl Workload {
    /// One small exchange for name `which` under [`CONNECTION_TIMEOUT`].
    async fn small(&self, which: usize, buf: &mut Vec<u8>) -> Result<Duration, ConnError> {
        match self {
            Workload::Tls(client) => client.small(which, buf).await,
            Workload::Replay(replayer) => {
                within_connection_timeout(replayer.exchange(which, buf)).await
            }
        }
    }
}

/// Errors of one measurement: how many, and the first one's message.
#[derive(Debug, Default, Clone)]
struct Errors {
    count: u64,
    first: Option<String>,
}

impl Errors {
    fn add(&mut self, e: &ConnError) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(e.to_string());
        }
    }

    fn merge(&mut self, other: Errors) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }
}

/// What the proxy under test has used so far, if there is one.
fn proxy_usage(proxy: Option<u32>) -> Option<Usage> {
    proxy.map(tree_usage)
}

struct ConnRateRun {
    per_s: f64,
    /// The proxy's CPU time over the window's length: near 1 (per thread),
    /// the proxy was the bottleneck.
    proxy_busy: Option<f64>,
    latency: Latencies,
    proxy_cpu_per_conn: Option<Duration>,
    proxy_kernel_cpu_per_conn: Option<Duration>,
    proxy_wakeups_per_conn: Option<f64>,
    errors: Errors,
}

/// `plan.concurrency` loops of small exchanges; counts those completed inside
/// the measurement window (after the warm-up).
async fn conn_rate(client: &Workload, plan: &Plan, proxy: Option<u32>) -> ConnRateRun {
    let (concurrency, warmup, window) = (plan.concurrency, plan.warmup, plan.conn_window);
    let begin = Instant::now();
    let end = begin + warmup + window;
    let mut tasks = Vec::with_capacity(concurrency);
    for t in 0..concurrency {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            let mut errors = Errors::default();
            let mut buf = vec![0u8; 4096];
            let mut k = t;
            while Instant::now() < end {
                match client.small(k % 2, &mut buf).await {
                    Ok(first_byte) => done.push((Instant::now(), first_byte)),
                    Err(e) => errors.add(&e),
                }
                k += 1;
            }
            (done, errors)
        }));
    }
    tokio::time::sleep_until((begin + warmup).into()).await;
    let (t0, usage0) = (Instant::now(), proxy_usage(proxy));
    tokio::time::sleep_until(end.into()).await;
    let (t1, usage1) = (Instant::now(), proxy_usage(proxy));
    let mut samples = Vec::new();
    let mut errors = Errors::default();
    for task in tasks {
        match task.await {
            Ok((done, e)) => {
                samples.extend(
                    done.into_iter()
                        .filter(|(at, _)| *at >= t0 && *at <= t1)
                        .map(|(_, latency)| latency),
                );
                errors.merge(e);
            }
            Err(e) => errors.add(&ConnError::Io(std::io::Error::other(e))),
        }
    }
    let completed = samples.len() as u64;
    let used = match (usage0, usage1) {
        (Some(a), Some(b)) if completed > 0 => Some(b.since(a)),
        _ => None,
    };
    ConnRateRun {
        per_s: completed as f64 / (t1 - t0).as_secs_f64(),
        proxy_busy: used.map(|u| u.cpu.as_secs_f64() / (t1 - t0).as_secs_f64()),
        latency: Latencies::new(samples),
        proxy_cpu_per_conn: used.map(|u| u.cpu / completed as u32),
        proxy_kernel_cpu_per_conn: used
            .and_then(Usage::kernel_cpu)
            .map(|k| k / completed as u32),
        proxy_wakeups_per_conn: used.map(|u| u.wakeups as f64 / completed as f64),
        errors,
    }
}

/// One exchange at a time: warm-up, then latencies for `window`.
async fn serial_latency(
    client: &Client,
    warmup: Duration,
    window: Duration,
) -> (Latencies, Errors) {
    let mut buf = vec![0u8; 4096];
    let mut errors = Errors::default();
    let warm_end = Instant::now() + warmup;
    let mut k = 0;
    while Instant::now() < warm_end {
        if let Err(e) = client.small(k % 2, &mut buf).await {
            errors.add(&e);
        }
        k += 1;
    }
    let end = Instant::now() + window;
    let mut samples = Vec::new();
    while Instant::now() < end {
        match client.small(k % 2, &mut buf).await {
            Ok(t) => samples.push(t),
            Err(e) => errors.add(&e),
        }
        k += 1;
    }
    (Latencies::new(samples), errors)
}

struct ThroughputRun {
    mb_per_s: f64,
    proxy_cpu_per_gb: Option<Duration>,
    errors: Errors,
}

/// `streams` connections, each receiving `transfer` bytes and starting over,
/// until the window ends; bytes received inside the window.
async fn throughput(
    client: &Client,
    streams: usize,
    transfer: u64,
    warmup: Duration,
    window: Duration,
    proxy: Option<u32>,
) -> ThroughputRun {
    let begin = Instant::now();
    let end = begin + warmup + window;
    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(streams);
    for s in 0..streams {
        let client = client.clone();
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            let mut errors = Errors::default();
            let mut buf = vec![0u8; 256 * 1024];
            while Instant::now() < end {
                // Generous: a whole transfer at 10 MB/s.
                let limit = Duration::from_secs(10 + transfer / 10_000_000);
                let exchange =
                    client.exchange(s % 2, transfer, &mut buf, Some(&received), Some(end));
                match tokio::time::timeout(limit, exchange).await {
                    Ok(Ok(_)) | Ok(Err(ConnError::WindowOver)) => {}
                    Ok(Err(e)) => errors.add(&e),
                    Err(_) => errors.add(&ConnError::Timeout),
                }
            }
            errors
        }));
    }
    tokio::time::sleep_until((begin + warmup).into()).await;
    let (t0, b0, cpu0) = (
        Instant::now(),
        received.load(Ordering::Relaxed),
        proxy_usage(proxy),
    );
    tokio::time::sleep_until(end.into()).await;
    let (t1, b1, cpu1) = (
        Instant::now(),
        received.load(Ordering::Relaxed),
        proxy_usage(proxy),
    );
    let mut errors = Errors::default();
    for task in tasks {
        match task.await {
            Ok(e) => errors.merge(e),
            Err(e) => errors.add(&ConnError::Io(std::io::Error::other(e))),
        }
    }
    let bytes = b1.saturating_sub(b0);
    let proxy_cpu_per_gb = match (cpu0, cpu1) {
        (Some(a), Some(b)) if bytes > 0 => Some(Duration::from_secs_f64(
            b.since(a).cpu.as_secs_f64() / (bytes as f64 / 1e9),
        )),
        _ => None,
    };
    ThroughputRun {
        mb_per_s: bytes as f64 / 1e6 / (t1 - t0).as_secs_f64(),
        proxy_cpu_per_gb,
        errors,
    }
}

// ---------------------------------------------------------------------------
// The benchmark

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Direct,
    Ingress,
    Haproxy,
    Nginx,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Ingress => "dc-ingress",
            Kind::Haproxy => "haproxy",
            Kind::Nginx => "nginx",
        }
    }
}

/// A path under test.
struct PathUnderTest {
    kind: Kind,
    /// Column header, with the version for the peers.
    label: String,
    client: Client,
    replayer: Replayer,
    proxy_pid: Option<u32>,
}

/// The connection rate with replayed handshakes, in one run of one path (or
/// the medians over the runs).
#[derive(Clone, Debug)]
struct ReplayRun {
    conn_per_s: f64,
    load_p50: Duration,
    load_p99: Duration,
    proxy_busy: Option<f64>,
    proxy_cpu_per_conn: Option<Duration>,
    proxy_wakeups_per_conn: Option<f64>,
    errors: Errors,
}

impl ReplayRun {
    /// The medians of `runs`, their errors summed.
    fn median(runs: &[ReplayRun]) -> ReplayRun {
        let opt_f64 = |f: fn(&ReplayRun) -> Option<f64>| median_some(runs, f);
        let opt = |f: fn(&ReplayRun) -> Option<Duration>| median_some_duration(runs, f);
        let mut errors = Errors::default();
        for r in runs {
            errors.merge(r.errors.clone());
        }
        ReplayRun {
            conn_per_s: median_f64(runs.iter().map(|r| r.conn_per_s).collect()),
            load_p50: median_duration(runs.iter().map(|r| r.load_p50).collect()),
            load_p99: median_duration(runs.iter().map(|r| r.load_p99).collect()),
            proxy_busy: opt_f64(|r| r.proxy_busy),
            proxy_cpu_per_conn: opt(|r| r.proxy_cpu_per_conn),
            proxy_wakeups_per_conn: opt_f64(|r| r.proxy_wakeups_per_conn),
            errors,
        }
    }
}

/// One run of one path: everything but the replayed handshakes, which are
/// measured after all runs (see [`ReplayRun`]).
#[derive(Clone, Debug)]
struct RunResult {
    conn_per_s: f64,
    load_p50: Duration,
    load_p99: Duration,
    proxy_cpu_per_conn: Option<Duration>,
    /// Of which in the kernel.
    proxy_kernel_cpu_per_conn: Option<Duration>,
    proxy_wakeups_per_conn: Option<f64>,
    serial_p50: Duration,
    serial_p99: Duration,
    serial_samples: usize,
    mb_per_s: f64,
    proxy_cpu_per_gb: Option<Duration>,
    /// Throughput with nothing pinned (when the rest was pinned).
    shared_mb_per_s: Option<f64>,
    shared_proxy_cpu_per_gb: Option<Duration>,
    errors: Errors,
}

/// The medians over the runs of one path.
#[derive(Clone, Debug)]
struct Summary {
    replay: ReplayRun,
    conn_per_s: f64,
    load_p50: Duration,
    load_p99: Duration,
    proxy_cpu_per_conn: Option<Duration>,
    /// Of which in the kernel.
    proxy_kernel_cpu_per_conn: Option<Duration>,
    proxy_wakeups_per_conn: Option<f64>,
    serial_p50: Duration,
    serial_p99: Duration,
    mb_per_s: f64,
    proxy_cpu_per_gb: Option<Duration>,
    shared_mb_per_s: Option<f64>,
    shared_proxy_cpu_per_gb: Option<Duration>,
    errors: u64,
    first_error: Option<String>,
}

/// Connections one proxy CPU-second handles, from the CPU per connection.
fn per_cpu_s(cpu_per_conn: Option<Duration>) -> Option<f64> {
    cpu_per_conn
        .filter(|d| !d.is_zero())
        .map(|d| 1.0 / d.as_secs_f64())
}

impl Summary {
    fn conn_per_proxy_cpu_s(&self) -> Option<f64> {
        per_cpu_s(self.proxy_cpu_per_conn)
    }
}

impl ReplayRun {
    fn conn_per_proxy_cpu_s(&self) -> Option<f64> {
        per_cpu_s(self.proxy_cpu_per_conn)
    }
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn median_duration(v: Vec<Duration>) -> Duration {
    Duration::from_secs_f64(median_f64(v.iter().map(Duration::as_secs_f64).collect()))
}

/// The median of what `f` reads from the runs that have it; `None` if none
/// has.
fn median_some<T>(runs: &[T], f: impl Fn(&T) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = runs.iter().filter_map(f).collect();
    (!v.is_empty()).then(|| median_f64(v))
}

fn median_some_duration<T>(runs: &[T], f: impl Fn(&T) -> Option<Duration>) -> Option<Duration> {
    median_some(runs, |r| f(r).map(|d| d.as_secs_f64())).map(Duration::from_secs_f64)
}

fn summarize(runs: &[RunResult], replays: &[ReplayRun]) -> Summary {
    let dur = |f: fn(&RunResult) -> Duration| median_duration(runs.iter().map(f).collect());
    let opt = |f: fn(&RunResult) -> Option<Duration>| median_some_duration(runs, f);
    let opt_f64 = |f: fn(&RunResult) -> Option<f64>| median_some(runs, f);
    let replay = ReplayRun::median(replays);
    Summary {
        conn_per_s: median_f64(runs.iter().map(|r| r.conn_per_s).collect()),
        load_p50: dur(|r| r.load_p50),
        load_p99: dur(|r| r.load_p99),
        proxy_cpu_per_conn: opt(|r| r.proxy_cpu_per_conn),
        proxy_kernel_cpu_per_conn: opt(|r| r.proxy_kernel_cpu_per_conn),
        proxy_wakeups_per_conn: opt_f64(|r| r.proxy_wakeups_per_conn),
        serial_p50: dur(|r| r.serial_p50),
        serial_p99: dur(|r| r.serial_p99),
        mb_per_s: median_f64(runs.iter().map(|r| r.mb_per_s).collect()),
        proxy_cpu_per_gb: opt(|r| r.proxy_cpu_per_gb),
        shared_mb_per_s: opt_f64(|r| r.shared_mb_per_s),
        shared_proxy_cpu_per_gb: opt(|r| r.shared_proxy_cpu_per_gb),
        errors: runs.iter().map(|r| r.errors.count).sum::<u64>() + replay.errors.count,
        first_error: runs
            .iter()
            .find_map(|r| r.errors.first.clone())
            .or_else(|| replay.errors.first.clone()),
        replay,
    }
}

/// Settings of one invocation, after `--smoke` is applied.
#[derive(Clone, Debug)]
struct Plan {
    runs: u32,
    warmup: Duration,
    conn_window: Duration,
    latency_window: Duration,
    throughput_window: Duration,
    concurrency: usize,
    streams: usize,
    transfer_bytes: u64,
}

impl Plan {
    fn from_args(args: &Args) -> anyhow::Result<Plan> {
        let secs = |name: &str, v: f64| -> anyhow::Result<Duration> {
            if !(0.0..=3600.0).contains(&v) {
                bail!("--{name} {v}: expected 0 to 3600 seconds");
            }
            Ok(Duration::from_secs_f64(v))
        };
        if args.smoke {
            return Ok(Plan {
                runs: 1,
                warmup: Duration::from_millis(200),
                conn_window: Duration::from_secs(1),
                latency_window: Duration::from_millis(500),
                throughput_window: Duration::from_secs(1),
                concurrency: args.concurrency.clamp(1, 16),
                streams: args.streams.clamp(1, 2),
                transfer_bytes: 8 << 20,
            });
        }
        if args.runs == 0 || args.concurrency == 0 || args.streams == 0 || args.transfer_mib == 0 {
            bail!("--runs, --concurrency, --streams and --transfer-mib must be at least 1");
        }
        if args.concurrency > 4000 {
            bail!("--concurrency {}: at most 4000 (each connection costs descriptors in every process)", args.concurrency);
        }
        Ok(Plan {
            runs: args.runs,
            warmup: secs("warmup-seconds", args.warmup_seconds)?,
            conn_window: secs("seconds", args.seconds)?.max(Duration::from_millis(100)),
            latency_window: secs("latency-seconds", args.latency_seconds)?
                .max(Duration::from_millis(100)),
            throughput_window: secs("throughput-seconds", args.throughput_seconds)?
                .max(Duration::from_millis(100)),
            concurrency: args.concurrency,
            streams: args.streams,
            transfer_bytes: args
                .transfer_mib
                .saturating_mul(1 << 20)
                .min(MAX_RESPONSE_BYTES),
        })
    }
}

async fn measure_path(
    path: &PathUnderTest,
    plan: &Plan,
    placement: Option<&Placement>,
) -> RunResult {
    let rate = conn_rate(&Workload::Tls(path.client.clone()), plan, path.proxy_pid).await;
    let (serial, serial_errors) = serial_latency(
        &path.client,
        plan.warmup.min(Duration::from_millis(200)),
        plan.latency_window,
    )
    .await;
    let transfers = || {
        throughput(
            &path.client,
            plan.streams,
            plan.transfer_bytes,
            plan.warmup,
            plan.throughput_window,
            path.proxy_pid,
        )
    };
    let tput = transfers().await;
    // The same transfers with nothing pinned: the proxy's work then competes
    // with the endpoints' for both CPUs, as on a host whose cores also run
    // the VMs, instead of the endpoints' one CPU being the bottleneck.
    let shared = match placement {
        Some(placement) => {
            placement.release(path.proxy_pid);
            let run = transfers().await;
            placement.pin(path.proxy_pid);
            Some(run)
        }
        None => None,
    };
    let mut errors = rate.errors;
    errors.merge(serial_errors);
    errors.merge(tput.errors);
    let (shared_mb_per_s, shared_proxy_cpu_per_gb) = match shared {
        Some(run) => {
            errors.merge(run.errors);
            (Some(run.mb_per_s), run.proxy_cpu_per_gb)
        }
        None => (None, None),
    };
    RunResult {
        conn_per_s: rate.per_s,
        load_p50: rate.latency.p50(),
        load_p99: rate.latency.p99(),
        proxy_cpu_per_conn: rate.proxy_cpu_per_conn,
        proxy_kernel_cpu_per_conn: rate.proxy_kernel_cpu_per_conn,
        proxy_wakeups_per_conn: rate.proxy_wakeups_per_conn,
        serial_p50: serial.p50(),
        serial_p99: serial.p99(),
        serial_samples: serial.len(),
        mb_per_s: tput.mb_per_s,
        proxy_cpu_per_gb: tput.proxy_cpu_per_gb,
        shared_mb_per_s,
        shared_proxy_cpu_per_gb,
        errors,
    }
}

/// The proxy-bound connection rate of one path: replayed handshakes.
async fn measure_replayed(path: &PathUnderTest, plan: &Plan) -> ReplayRun {
    let r = conn_rate(
        &Workload::Replay(path.replayer.clone()),
        plan,
        path.proxy_pid,
    )
    .await;
    ReplayRun {
        conn_per_s: r.per_s,
        load_p50: r.latency.p50(),
        load_p99: r.latency.p99(),
        proxy_busy: r.proxy_busy,
        proxy_cpu_per_conn: r.proxy_cpu_per_conn,
        proxy_wakeups_per_conn: r.proxy_wakeups_per_conn,
        errors: r.errors,
    }
}

/// Everything a run found, for the table, JSON and markdown.
struct Report {
    machine: Machine,
    pinning: Option<Pinning>,
    plan: Plan,
    proxy_threads: usize,
    haproxy_splice: bool,
    hello_bytes: usize,
    /// The group of the client's key share.
    key_share: String,
    labels: Vec<(Kind, String)>,
    /// Full versions of the peers, packaging included.
    peer_versions: Vec<String>,
    skipped: Vec<String>,
    runs: Vec<Vec<RunResult>>,
    /// The replayed handshakes' runs, per path.
    replays: Vec<Vec<ReplayRun>>,
    summaries: Vec<Summary>,
    ingress_metrics: Option<MetricsSnapshot>,
    started: String,
}

fn run(args: Args) -> anyhow::Result<()> {
    let plan = Plan::from_args(&args)?;
    let started = utc_now();
    let scratch = tempfile::Builder::new()
        .prefix("ingress-bench-")
        .tempdir()?;
    let dir = scratch.path();
    let machine = Machine::detect(dir);
    let pinning = Pinning::plan(args.no_pin);
    let (endpoint_cpu, proxy_cpu_id) = match &pinning {
        Some(p) => (Some(p.endpoints), Some(p.proxy)),
        None => (None, None),
    };
    write_pki(dir)?;
    let tls = client_config(dir)?;
    let hello_bytes = client_hello_len(&tls)?;
    let transcripts = record_transcripts(dir, &tls)?;
    let key_share = tls
        .crypto_provider()
        .kx_groups
        .first()
        .map(|g| format!("{:?}", g.name()))
        .unwrap_or_else(|| "?".into());

    // The backends, then the proxies in front of them.
    let dir_env = dir.display().to_string();
    let mut backend = spawn_role("backend", &[(DIR_ENV, dir_env)], endpoint_cpu)?;
    let listen = backend.expect_line("LISTEN")?;
    let backends: Vec<SocketAddr> = listen
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("backend printed {listen:?}"))?;
    let backends: [SocketAddr; 4] = backends
        .try_into()
        .map_err(|_| anyhow!("backend printed {listen:?}"))?;

    let threads = args.proxy_threads.max(1);
    let mut ingress = spawn_role(
        "ingress",
        &[
            (THREADS_ENV, threads.to_string()),
            (UPSTREAMS_ENV, backends.map(|b| b.to_string()).join(",")),
        ],
        proxy_cpu_id,
    )?;
    let ingress_addr: SocketAddr = ingress.expect_line("LISTEN")?.parse()?;

    let mut skipped = Vec::new();
    let mut peer_versions = Vec::new();
    let haproxy_version = version_line(&args.haproxy, &["-v"]);
    let nginx_version = version_line(&args.nginx, &["-v"]);
    let mut peers: Vec<(Kind, String, Proc, SocketAddr)> = Vec::new();
    match haproxy_version {
        Some(v) => {
            let (proc, addr) = start_haproxy(&args, dir, backends, proxy_cpu_id)?;
            // "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/"
            let version = v.split_whitespace().nth(2).unwrap_or("?");
            let upstream_version = version.split('-').next().unwrap_or(version);
            peer_versions.push(format!("HAProxy {version}"));
            peers.push((
                Kind::Haproxy,
                format!("HAProxy {upstream_version}"),
                proc,
                addr,
            ));
        }
        None if args.smoke => {
            let msg = format!("HAProxy skipped: {} not installed", args.haproxy.display());
            eprintln!("{msg}");
            skipped.push(msg);
        }
        None => bail!(
            "{} not found: install HAProxy (qa/bench/ingress.sh installs the Debian package) or pass --haproxy",
            args.haproxy.display()
        ),
    }
    match nginx_version {
        Some(v) => {
            let (proc, addr) = start_nginx(&args, dir, backends, proxy_cpu_id)?;
            let version = v.rsplit('/').next().unwrap_or("?").trim().to_string();
            peer_versions.push(format!("nginx {version}"));
            peers.push((Kind::Nginx, format!("nginx {version}"), proc, addr));
        }
        None if args.smoke => {
            let msg = format!("nginx skipped: {} not installed", args.nginx.display());
            eprintln!("{msg}");
            skipped.push(msg);
        }
        None => bail!(
            "{} not found: install nginx and libnginx-mod-stream (qa/bench/ingress.sh does) or pass --nginx",
            args.nginx.display()
        ),
    }

    let names = NAMES.map(|n| ServerName::try_from(n).expect("a valid DNS name"));
    let connector = TlsConnector::from(tls);
    let client = |targets: [SocketAddr; 2]| Client {
        connector: connector.clone(),
        targets,
        names: names.clone(),
    };
    let replayer = |targets: [SocketAddr; 2]| Replayer {
        targets,
        transcripts: transcripts.clone(),
    };
    let mut paths = vec![
        PathUnderTest {
            kind: Kind::Direct,
            label: "direct".into(),
            client: client([backends[0], backends[1]]),
            replayer: replayer([backends[2], backends[3]]),
            proxy_pid: None,
        },
        PathUnderTest {
            kind: Kind::Ingress,
            label: "dc-ingress".into(),
            client: client([ingress_addr; 2]),
            replayer: replayer([ingress_addr; 2]),
            proxy_pid: Some(ingress.pid()),
        },
    ];
    for (kind, label, proc, addr) in &peers {
        paths.push(PathUnderTest {
            kind: *kind,
            label: label.clone(),
            client: client([*addr; 2]),
            replayer: replayer([*addr; 2]),
            proxy_pid: Some(proc.pid()),
        });
    }

    if !args.only.is_empty() {
        paths.retain(|p| args.only.iter().any(|k| k == p.kind.key()));
    }
    let placement = pinning.clone().map(|pinning| Placement {
        pinning,
        all: allowed_cpus(),
        backend: backend.pid(),
    });
    // The client runs here, beside the backends.
    if let Some(cpu) = endpoint_cpu {
        pin_current_thread(cpu).context("pinning the client")?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut runs: Vec<Vec<RunResult>> = vec![Vec::new(); paths.len()];
    let mut replays: Vec<Vec<ReplayRun>> = vec![Vec::new(); paths.len()];
    rt.block_on(async {
        // Every path must route every name before anything is timed.
        let mut buf = vec![0u8; 4096];
        for path in &paths {
            let workloads = [
                (Workload::Tls(path.client.clone()), NAMES),
                (Workload::Replay(path.replayer.clone()), REPLAY_NAMES),
            ];
            for (workload, names) in &workloads {
                for (which, name) in names.iter().enumerate() {
                    workload
                        .small(which, &mut buf)
                        .await
                        .map_err(|e| anyhow!("{} does not serve {name}: {e}", path.label))?;
                }
            }
        }
        for run in 1..=plan.runs {
            for (i, path) in paths.iter().enumerate() {
                eprintln!("run {run}/{}: {} ...", plan.runs, path.label);
                let result = measure_path(path, &plan, placement.as_ref()).await;
                eprintln!(
                    "  {:.0} conn/s, {} MB/s, latency p50 {} ms, {} errors",
                    result.conn_per_s,
                    result.mb_per_s.round(),
                    ms(result.serial_p50),
                    result.errors.count
                );
                runs[i].push(result);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        // The replayed handshakes come last: at several times the rate of
        // full ones they leave tens of thousands of connections in TIME_WAIT
        // for a minute, which would weigh on every measurement after them.
        for run in 1..=plan.runs {
            for (i, path) in paths.iter().enumerate() {
                eprintln!(
                    "replayed handshakes, run {run}/{}: {} ...",
                    plan.runs, path.label
                );
                let r = measure_replayed(path, &plan).await;
                eprintln!(
                    "  {:.0} conn/s, proxy {}, {} errors",
                    r.conn_per_s,
                    match (r.proxy_busy, r.proxy_cpu_per_conn) {
                        (Some(b), Some(c)) =>
                            format!("{:.0}% busy, {} µs per connection", b * 100.0, us(c)),
                        _ => "none".into(),
                    },
                    r.errors.count
                );
                replays[i].push(r);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok::<(), anyhow::Error>(())
    })?;

    for (_, _, proc, _) in &mut peers {
        proc.check_running()?;
    }
    drop(peers);
    drop(ingress.stdin.take());
    let ingress_metrics = ingress
        .expect_line("METRICS")
        .ok()
        .and_then(|json| serde_json::from_str::<MetricsSnapshot>(&json).ok());
    drop(ingress);
    drop(backend);

    let summaries: Vec<Summary> = runs
        .iter()
        .zip(&replays)
        .map(|(r, replayed)| summarize(r, replayed))
        .collect();
    let report = Report {
        machine,
        pinning,
        plan,
        proxy_threads: threads,
        haproxy_splice: args.haproxy_splice,
        hello_bytes,
        key_share,
        labels: paths.iter().map(|p| (p.kind, p.label.clone())).collect(),
        peer_versions,
        skipped,
        runs,
        replays,
        summaries,
        ingress_metrics,
        started,
    };
    let targets = report.targets();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json(&targets))?);
    } else {
        println!("{}\n{}", report.table().text(), targets_text(&targets));
        if let Some(note) = report.ingress_note() {
            println!("{note}");
        }
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, report.markdown(&targets))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.smoke {
        for (s, (_, label)) in report.summaries.iter().zip(&report.labels) {
            if s.conn_per_s <= 0.0
                || s.replay.conn_per_s <= 0.0
                || s.mb_per_s <= 0.0
                || s.errors > 0
            {
                bail!(
                    "smoke: {label} completed {:.0} connections/s ({:.0} replayed) and {:.1} MB/s with {} errors{}",
                    s.conn_per_s,
                    s.replay.conn_per_s,
                    s.mb_per_s,
                    s.errors,
                    s.first_error
                        .as_deref()
                        .map(|e| format!(" (first: {e})"))
                        .unwrap_or_default()
                );
            }
        }
        eprintln!("smoke: every path moved data without errors");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Presentation

/// A table with one column per path.
struct Grid {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Grid {
    fn text(&self) -> String {
        let all: Vec<&Vec<String>> = std::iter::once(&self.header).chain(&self.rows).collect();
        let cols = self.header.len();
        let mut widths = vec![0usize; cols];
        for row in &all {
            for (w, c) in widths.iter_mut().zip(row.iter()) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        for row in all {
            let mut line = String::new();
            for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
                let pad = " ".repeat(w - c.chars().count());
                if i == 0 {
                    line.push_str(c);
                    line.push_str(&pad);
                } else {
                    line.push_str("   ");
                    line.push_str(&pad);
                    line.push_str(c);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    fn markdown(&self) -> String {
        let esc = |s: &str| s.replace('|', "\\|");
        let label = |s: &str| match s.strip_prefix("  ") {
            Some(rest) => format!("&nbsp;&nbsp;{}", esc(rest)),
            None => esc(s),
        };
        let mut out = format!(
            "| {} |\n|---|{}\n",
            self.header
                .iter()
                .map(|h| esc(h))
                .collect::<Vec<_>>()
                .join(" | "),
            "---:|".repeat(self.header.len() - 1)
        );
        for row in &self.rows {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, c)| if i == 0 { label(c) } else { esc(c) })
                .collect();
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        out
    }
}

/// Smallest, median and largest of some numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Spread {
    min: f64,
    median: f64,
    max: f64,
}

impl Spread {
    /// `None` for no numbers.
    fn of(v: Vec<f64>) -> Option<Spread> {
        let min = v.iter().copied().reduce(f64::min)?;
        let max = v.iter().copied().reduce(f64::max)?;
        Some(Spread {
            min,
            max,
            median: median_f64(v),
        })
    }
}

/// `theirs[i] / ours[i]` for each run where both costs were measured and
/// ours is not zero.
fn cost_ratios(ours: &[Option<Duration>], theirs: &[Option<Duration>]) -> Option<Spread> {
    let ratios = ours
        .iter()
        .zip(theirs)
        .filter_map(|(o, t)| Some(t.as_ref()?.as_secs_f64() / o.as_ref()?.as_secs_f64()))
        .filter(|r| r.is_finite())
        .collect();
    Spread::of(ratios)
}

/// A target met when ours is at least `at_least` times theirs.
fn ratio_target(name: &str, (ours, theirs): (f64, f64), unit: &str, at_least: f64) -> Target {
    let ratio = if theirs > 0.0 { ours / theirs } else { 0.0 };
    Target {
        name: name.into(),
        measured: format!(
            "{} vs {}{unit} = {ratio:.2}×",
            thousands(ours.round() as u64),
            thousands(theirs.round() as u64),
        ),
        met: ratio >= at_least,
    }
}

fn spread_json(s: Spread) -> serde_json::Value {
    serde_json::json!({ "min": s.min, "median": s.median, "max": s.max })
}

/// The replayed connection rate of a run or summary, as JSON.
fn replay_json(r: &ReplayRun) -> serde_json::Value {
    let d_us = |d: Duration| d.as_secs_f64() * 1e6;
    serde_json::json!({
        "connections_per_s": r.conn_per_s,
        "load_latency_p50_us": d_us(r.load_p50),
        "load_latency_p99_us": d_us(r.load_p99),
        "proxy_busy": r.proxy_busy,
        "proxy_cpu_per_connection_us": r.proxy_cpu_per_conn.map(d_us),
        "proxy_wakeups_per_connection": r.proxy_wakeups_per_conn,
        "connections_per_proxy_cpu_s": r.conn_per_proxy_cpu_s(),
    })
}

fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

/// A signed difference in microseconds: `+41`, `-3`.
fn signed_us(a: Duration, b: Duration) -> String {
    format!("{:+.0}", (a.as_secs_f64() - b.as_secs_f64()) * 1e6)
}

fn added_s(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() - b.as_secs_f64()
}

impl Report {
    fn index(&self, kind: Kind) -> Option<usize> {
        self.labels.iter().position(|(k, _)| *k == kind)
    }

    fn summary(&self, kind: Kind) -> Option<&Summary> {
        self.index(kind).map(|i| &self.summaries[i])
    }

    /// The label and summary of each path through a proxy.
    fn proxies(&self) -> impl Iterator<Item = (&str, &Summary)> {
        self.labels
            .iter()
            .zip(&self.summaries)
            .filter(|((kind, _), _)| *kind != Kind::Direct)
            .map(|((_, label), s)| (label.as_str(), s))
    }

    fn table(&self) -> Grid {
        let direct = self.summary(Kind::Direct).cloned();
        let mut header = vec!["median of runs".to_string()];
        header.extend(self.labels.iter().map(|(_, l)| l.clone()));
        let row = |label: String, f: &dyn Fn(&Summary) -> String| {
            let mut r = vec![label];
            r.extend(self.summaries.iter().map(f));
            r
        };
        let proxy_only = |s: &Summary, f: &dyn Fn(&Summary) -> Option<String>| {
            f(s).unwrap_or_else(|| "-".into())
        };
        let p = &self.plan;
        let rows = vec![
            row(
                format!("new TLS connections/s, {} in flight", p.concurrency),
                &|s| thousands(s.conn_per_s.round() as u64),
            ),
            row("  latency under load p50 / p99 (ms)".into(), &|s| {
                format!("{} / {}", ms(s.load_p50), ms(s.load_p99))
            }),
            row("  proxy CPU per connection (µs)".into(), &|s| {
                proxy_only(s, &|s| s.proxy_cpu_per_conn.map(us))
            }),
            row("  of which in the kernel (µs)".into(), &|s| {
                proxy_only(s, &|s| s.proxy_kernel_cpu_per_conn.map(us))
            }),
            row("  proxy wake-ups per connection".into(), &|s| {
                proxy_only(s, &|s| s.proxy_wakeups_per_conn.map(|w| format!("{w:.2}")))
            }),
            row("  connections per proxy CPU-second".into(), &|s| {
                proxy_only(s, &|s| {
                    s.conn_per_proxy_cpu_s()
                        .map(|r| thousands(r.round() as u64))
                })
            }),
            row(
                format!(
                    "replayed handshakes/s, proxy-bound, {} in flight",
                    p.concurrency
                ),
                &|s| thousands(s.replay.conn_per_s.round() as u64),
            ),
            row("  latency under load p50 / p99 (ms)".into(), &|s| {
                format!("{} / {}", ms(s.replay.load_p50), ms(s.replay.load_p99))
            }),
            row("  proxy busy (% of its CPU)".into(), &|s| {
                proxy_only(s, &|s| {
                    s.replay.proxy_busy.map(|b| format!("{:.0}", b * 100.0))
                })
            }),
            row("  proxy CPU per connection (µs)".into(), &|s| {
                proxy_only(s, &|s| s.replay.proxy_cpu_per_conn.map(us))
            }),
            row("  proxy wake-ups per connection".into(), &|s| {
                proxy_only(s, &|s| {
                    s.replay.proxy_wakeups_per_conn.map(|w| format!("{w:.2}"))
                })
            }),
            row("  connections per proxy CPU-second".into(), &|s| {
                proxy_only(s, &|s| {
                    s.replay
                        .conn_per_proxy_cpu_s()
                        .map(|r| thousands(r.round() as u64))
                })
            }),
            row("latency, 1 in flight, p50 / p99 (ms)".into(), &|s| {
                format!("{} / {}", ms(s.serial_p50), ms(s.serial_p99))
            }),
            row(
                "  added over direct, p50 / p99 (µs)".into(),
                &|s| match &direct {
                    Some(d) => format!(
                        "{} / {}",
                        signed_us(s.serial_p50, d.serial_p50),
                        signed_us(s.serial_p99, d.serial_p99)
                    ),
                    None => "-".into(),
                },
            ),
            row(
                format!(
                    "throughput, {} streams of {} MiB (MB/s)",
                    p.streams,
                    p.transfer_bytes >> 20
                ),
                &|s| thousands(s.mb_per_s.round() as u64),
            ),
            row("  proxy CPU per GB (ms)".into(), &|s| {
                proxy_only(s, &|s| {
                    s.proxy_cpu_per_gb
                        .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
                })
            }),
            row("throughput, the same, nothing pinned (MB/s)".into(), &|s| {
                s.shared_mb_per_s
                    .map(|m| thousands(m.round() as u64))
                    .unwrap_or_else(|| "-".into())
            }),
            row("  proxy CPU per GB (ms)".into(), &|s| {
                proxy_only(s, &|s| {
                    s.shared_proxy_cpu_per_gb
                        .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
                })
            }),
            row("failed connections, all runs".into(), &|s| {
                s.errors.to_string()
            }),
        ];
        Grid { header, rows }
    }

    /// The issue's targets against HAProxy; empty when HAProxy was not run.
    fn targets(&self) -> Vec<Target> {
        let (Some(ours), Some(ha), Some(direct)) = (
            self.summary(Kind::Ingress),
            self.summary(Kind::Haproxy),
            self.summary(Kind::Direct),
        ) else {
            return Vec::new();
        };
        let mut targets = vec![ratio_target(
            "new TLS connections/s ≥ 1.2× HAProxy's (end to end, full handshakes)",
            (ours.conn_per_s, ha.conn_per_s),
            "/s",
            1.2,
        )];
        let mut replayed = ratio_target(
            "new connections/s ≥ 1.2× HAProxy's, proxy-bound (replayed handshakes)",
            (ours.replay.conn_per_s, ha.replay.conn_per_s),
            "/s",
            1.2,
        );
        if let (Some(o), Some(h)) = (ours.replay.proxy_busy, ha.replay.proxy_busy) {
            replayed.measured +=
                &format!(" (proxies {:.0}% and {:.0}% busy)", o * 100.0, h * 100.0);
        }
        targets.push(replayed);
        let per_cpu = [
            (
                "connections per proxy CPU-second ≥ 1.2× HAProxy's (full handshakes)",
                ours.conn_per_proxy_cpu_s().zip(ha.conn_per_proxy_cpu_s()),
                self.paired_cpu_ratios(false),
            ),
            (
                "connections per proxy CPU-second ≥ 1.2× HAProxy's (replayed, near saturation)",
                ours.replay
                    .conn_per_proxy_cpu_s()
                    .zip(ha.replay.conn_per_proxy_cpu_s()),
                self.paired_cpu_ratios(true),
            ),
        ];
        for (name, medians, paired) in per_cpu {
            let Some(medians) = medians else { continue };
            let mut target = ratio_target(name, medians, "", 1.2);
            // The medians of separate runs can pair a good run of one proxy
            // with a bad one of the other; within a run both see the same
            // background, so the ratio run by run is judged as well.
            if let Some(paired) = paired {
                target.measured += &format!(
                    "; run by run {:.2}–{:.2}×, median {:.2}×",
                    paired.min, paired.max, paired.median
                );
                target.met &= paired.median >= 1.2;
            }
            targets.push(target);
        }
        targets.push(ratio_target(
            if self.pinning.is_some() {
                "throughput ≥ HAProxy's (pinned apart)"
            } else {
                "throughput ≥ HAProxy's"
            },
            (ours.mb_per_s, ha.mb_per_s),
            " MB/s",
            1.0,
        ));
        if let (Some(a), Some(b)) = (ours.shared_mb_per_s, ha.shared_mb_per_s) {
            targets.push(ratio_target(
                "throughput ≥ HAProxy's (nothing pinned)",
                (a, b),
                " MB/s",
                1.0,
            ));
        }
        let (ours_p99, ha_p99) = (
            added_s(ours.serial_p99, direct.serial_p99),
            added_s(ha.serial_p99, direct.serial_p99),
        );
        targets.push(Target {
            name: "added p99 latency ≤ HAProxy's (1 in flight)".into(),
            measured: format!("{:+.0} vs {:+.0} µs", ours_p99 * 1e6, ha_p99 * 1e6),
            met: ours_p99 <= ha_p99,
        });
        targets
    }

    /// HAProxy's proxy CPU per connection (with full or `replayed`
    /// handshakes) over ours, run by run (each run measures both under the
    /// same background); `None` without both.
    fn paired_cpu_ratios(&self, replayed: bool) -> Option<Spread> {
        let (ours, ha) = (self.index(Kind::Ingress)?, self.index(Kind::Haproxy)?);
        let cpu = |i: usize| -> Vec<Option<Duration>> {
            if replayed {
                self.replays[i]
                    .iter()
                    .map(|r| r.proxy_cpu_per_conn)
                    .collect()
            } else {
                self.runs[i].iter().map(|r| r.proxy_cpu_per_conn).collect()
            }
        };
        cost_ratios(&cpu(ours), &cpu(ha))
    }

    /// What the ingress itself counted: every connection routed, none refused.
    fn ingress_note(&self) -> Option<String> {
        let m = self.ingress_metrics.as_ref()?;
        Some(format!(
            "dc-ingress counted {} accepted, {} routed, {} refused ({} closed before a whole hello), {} accept errors",
            thousands(m.tls.accepted),
            thousands(m.tls.routed),
            m.tls.refusals.total(),
            m.tls.refusals.closed_early,
            m.tls.accept_errors
        ))
    }

    fn json(&self, targets: &[Target]) -> serde_json::Value {
        let direct = self.summary(Kind::Direct).cloned();
        let d_us = |d: Duration| d.as_secs_f64() * 1e6;
        let paths: serde_json::Map<String, serde_json::Value> = self
            .labels
            .iter()
            .zip(&self.summaries)
            .zip(self.runs.iter().zip(&self.replays))
            .map(|(((kind, label), s), (runs, replays))| {
                let added = direct.as_ref().map(|d| {
                    serde_json::json!({
                        "p50_us": added_s(s.serial_p50, d.serial_p50) * 1e6,
                        "p99_us": added_s(s.serial_p99, d.serial_p99) * 1e6,
                    })
                });
                let runs: Vec<serde_json::Value> = runs
                    .iter()
                    .zip(replays)
                    .map(|(r, replayed)| {
                        serde_json::json!({
                            "replayed": replay_json(replayed),
                            "connections_per_s": r.conn_per_s,
                            "load_latency_p50_us": d_us(r.load_p50),
                            "load_latency_p99_us": d_us(r.load_p99),
                            "proxy_cpu_per_connection_us": r.proxy_cpu_per_conn.map(d_us),
                            "proxy_kernel_cpu_per_connection_us": r.proxy_kernel_cpu_per_conn.map(d_us),
                            "proxy_wakeups_per_connection": r.proxy_wakeups_per_conn,
                            "latency_p50_us": d_us(r.serial_p50),
                            "latency_p99_us": d_us(r.serial_p99),
                            "latency_samples": r.serial_samples,
                            "throughput_mb_per_s": r.mb_per_s,
                            "proxy_cpu_per_gb_ms": r.proxy_cpu_per_gb.map(|d| d.as_secs_f64() * 1e3),
                            "unpinned_throughput_mb_per_s": r.shared_mb_per_s,
                            "unpinned_proxy_cpu_per_gb_ms": r.shared_proxy_cpu_per_gb.map(|d| d.as_secs_f64() * 1e3),
                            "errors": r.errors.count,
                        })
                    })
                    .collect();
                let value = serde_json::json!({
                    "label": label,
                    "replayed": replay_json(&s.replay),
                    "connections_per_s": s.conn_per_s,
                    "load_latency_p50_us": d_us(s.load_p50),
                    "load_latency_p99_us": d_us(s.load_p99),
                    "proxy_cpu_per_connection_us": s.proxy_cpu_per_conn.map(d_us),
                    "proxy_kernel_cpu_per_connection_us": s.proxy_kernel_cpu_per_conn.map(d_us),
                    "proxy_wakeups_per_connection": s.proxy_wakeups_per_conn,
                    "connections_per_proxy_cpu_s": s.conn_per_proxy_cpu_s(),
                    "latency_p50_us": d_us(s.serial_p50),
                    "latency_p99_us": d_us(s.serial_p99),
                    "added_latency": added,
                    "throughput_mb_per_s": s.mb_per_s,
                    "proxy_cpu_per_gb_ms": s.proxy_cpu_per_gb.map(|d| d.as_secs_f64() * 1e3),
                    "unpinned_throughput_mb_per_s": s.shared_mb_per_s,
                    "unpinned_proxy_cpu_per_gb_ms": s.shared_proxy_cpu_per_gb.map(|d| d.as_secs_f64() * 1e3),
                    "errors": s.errors,
                    "first_error": s.first_error,
                    "runs": runs,
                });
                (kind.key().to_string(), value)
            })
            .collect();
        serde_json::json!({
            "started": self.started,
            "machine": {
                "cpu": self.machine.cpu_model,
                "cores": self.machine.cores,
                "memory_gib": self.machine.memory_gib,
                "kernel": self.machine.kernel,
                "load_at_start": self.machine.load_at_start,
            },
            "settings": {
                "runs": self.plan.runs,
                "warmup_s": self.plan.warmup.as_secs_f64(),
                "connection_window_s": self.plan.conn_window.as_secs_f64(),
                "latency_window_s": self.plan.latency_window.as_secs_f64(),
                "throughput_window_s": self.plan.throughput_window.as_secs_f64(),
                "concurrency": self.plan.concurrency,
                "streams": self.plan.streams,
                "transfer_bytes": self.plan.transfer_bytes,
                "proxy_threads": self.proxy_threads,
                "haproxy_splice": self.haproxy_splice,
                "pinned": self.pinning.as_ref().map(|p| serde_json::json!({
                    "client_and_backends_cpu": p.endpoints,
                    "proxy_cpu": p.proxy,
                })),
                "client_hello_bytes": self.hello_bytes,
                "client_key_share": self.key_share,
            },
            "skipped": self.skipped,
            "paths": paths,
            // HAProxy's proxy CPU per connection over ours, run by run.
            "proxy_cpu_ratio_vs_haproxy_by_run": self.paired_cpu_ratios(false).map(spread_json),
            "replayed_proxy_cpu_ratio_vs_haproxy_by_run": self.paired_cpu_ratios(true).map(spread_json),
            "targets": targets.iter().map(|t| serde_json::json!({
                "name": t.name,
                "measured": t.measured,
                "met": t.met,
            })).collect::<Vec<_>>(),
            "ingress_metrics": self.ingress_metrics,
        })
    }

    fn per_run_markdown(&self) -> String {
        let mut out = String::from(
            "| path | run | connections/s | under load p50 / p99 (ms) | proxy µs per connection | replayed/s | proxy busy, replayed | proxy µs per replayed | 1 in flight p50 / p99 (ms) | MB/s | MB/s, nothing pinned | errors |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for ((_, label), (runs, replays)) in
            self.labels.iter().zip(self.runs.iter().zip(&self.replays))
        {
            for (i, (r, replayed)) in runs.iter().zip(replays).enumerate() {
                out.push_str(&format!(
                    "| {label} | {} | {} | {} / {} | {} | {} | {} | {} | {} / {} | {} | {} | {} |\n",
                    i + 1,
                    thousands(r.conn_per_s.round() as u64),
                    ms(r.load_p50),
                    ms(r.load_p99),
                    r.proxy_cpu_per_conn.map(us).unwrap_or_else(|| "-".into()),
                    thousands(replayed.conn_per_s.round() as u64),
                    replayed
                        .proxy_busy
                        .map(|b| format!("{:.0}%", b * 100.0))
                        .unwrap_or_else(|| "-".into()),
                    replayed.proxy_cpu_per_conn.map(us).unwrap_or_else(|| "-".into()),
                    ms(r.serial_p50),
                    ms(r.serial_p99),
                    thousands(r.mb_per_s.round() as u64),
                    r.shared_mb_per_s
                        .map(|m| thousands(m.round() as u64))
                        .unwrap_or_else(|| "-".into()),
                    r.errors.count + replayed.errors.count
                ));
            }
        }
        out
    }

    fn markdown(&self, targets: &[Target]) -> String {
        let p = &self.plan;
        let m = &self.machine;
        let pinning = match &self.pinning {
            Some(pin) => format!(
                "the proxy under test alone on CPU {}, the client and both backends on CPU {} (each on one thread)",
                pin.proxy, pin.endpoints
            ),
            None => "not pinned (all processes share all CPUs)".into(),
        };
        let peers: Vec<&str> = self.peer_versions.iter().map(String::as_str).collect();
        let skipped = if self.skipped.is_empty() {
            String::new()
        } else {
            format!("- skipped: {}\n", self.skipped.join("; "))
        };
        let ingress = self
            .ingress_note()
            .map(|n| format!("\n{n}.\n"))
            .unwrap_or_default();
        format!(
            "# Ingress benchmarks\n\n\
             Generated by `ingress-bench` (crate `dc-qa`) on {started}. Do not edit by hand: run `bash qa/bench/ingress.sh` again \
             (it installs HAProxy and nginx from Debian's packages if missing, builds in release and writes this file).\n\n\
             ## Machine\n\n\
             - CPU: {cpu}, {cores} cores\n\
             - memory: {mem:.1} GiB\n\
             - kernel: {kernel}\n\
             - load average when the run started (1/5/15 min): {load}\n\
             - peers: {peers} (Debian packages), same machine, same run\n\
             {skipped}\n\
             ## What is measured\n\n\
             Four paths for the same SNI-routed workload: straight to the backends (`direct`), through `dc-ingress`, through HAProxy \
             (`mode tcp`, `tcp-request inspect-delay`, `req_ssl_sni` → `use_backend`{splice}) and through nginx (`stream`, `ssl_preread on`, \
             `map $ssl_preread_server_name`). Each proxy is its own process with {threads} worker thread(s) (`dc-ingress`: threads each with a current-thread \
             tokio runtime and its own `SO_REUSEPORT` listener, as the appliance runs it; HAProxy: `nbthread`; nginx: `worker_processes`), default settings otherwise; `dc-ingress` is \
             `ingress-bench` itself in its ingress role, with `IngressConfig::default()`.\n\n\
             - **backends**: two rustls servers for `a.bench.test` and `b.bench.test`, TLS 1.3 only, ECDSA P-256 leaves of one test CA, \
             no session tickets. A client sends an 8-byte length and the backend answers that many bytes (the first byte says which backend \
             answered, so every connection checks its routing), then closes.\n\
             - **client**: rustls with full certificate verification and no resumption: every connection is a new TCP connection and a full \
             handshake. Its ClientHello is {hello} bytes with one {key_share} key share. Names alternate between \
             the two backends.\n\
             - **CPU**: {pinning}. The endpoints thus get the same CPU whichever path is measured; a proxy's cost shows in its own CPU time, \
             read from `/proc/PID/task/*/schedstat` (nginx: master and workers) over each measurement window, and split between user \
             space and the kernel by the tick counts of `/proc/PID/task/*/stat` (coarse: 10 ms ticks).\n\
             - **connection rate**: {conc} connections in flight for {conn_s} s after {warm} s of warm-up, each connect → handshake → \
             {small}-byte response → close; connections completed per second, latency from `connect` to the first response byte, and the \
             proxy's CPU time per connection (its inverse: connections per proxy CPU-second, what one proxy core would sustain once the \
             proxy is the bottleneck) and its wake-ups per connection (voluntary context switches: each is a sleep in the event loop and \
             a wake-up that the waking side pays for as well, across CPUs an inter-processor interrupt).\n\
             - **connection rate, proxy-bound (replayed handshakes)**: the same, except that the endpoints replay a transcript: \
             the bytes each side wrote in one real exchange of this workload (TLS 1.3, the same key share, certificates and sizes, \
             recorded in memory at start, for two more names, `{replay_a}` and `{replay_b}`), written in the same order and the same \
             writes, and compared with what arrives (a wrong backend's first flight or any other byte is an error). A passthrough \
             proxy cannot tell these connections from live ones, but the endpoints do no cryptography, so their one CPU can push \
             the proxy near saturation (its busy share is shown): this is the connection rate the proxy itself sustains, which a \
             full handshake per connection hides behind the endpoints' cost. Measured after all runs of everything else, \
             because at several times the rate of full handshakes these connections leave tens of thousands of sockets in \
             TIME_WAIT for a minute, which would weigh on the measurements after them.\n\
             - **latency, 1 in flight**: the same exchange one connection at a time for {lat_s} s; \"added\" is the path's percentile \
             minus the direct path's.\n\
             - **throughput**: {streams} connections in parallel for {tput_s} s after warm-up, each receiving {mib} MiB and starting \
             over; MB/s (10^6 bytes) of TLS payload received, and the proxy's CPU time per GB. When the rest is pinned, measured \
             twice: pinned (the endpoints' one CPU is then the bottleneck, and what a proxy costs the endpoints' CPU counts, not its \
             own), and then with nothing pinned, where the proxy's own work competes with the endpoints' for both CPUs, as on a host \
             whose cores also run the VMs.\n\
             - **repetition**: {runs} runs; within a run the paths are measured one after another, so background load falls on all of \
             them; every number below is the median of the runs. The connections per proxy CPU-second are also \
             compared run by run (HAProxy's CPU per connection over ours within each run, where both met the same \
             background), and those targets count as met only if the medians and the median of those ratios both reach it.\n\n\
             ## Results\n\n{table}{ingress}\n## Targets (issue 6, against HAProxy)\n\n{targets}{missed}\n\
             ## Reading the results\n\n{reading}\n\
             ## Per run\n\n{per_run}\n\
             ## Reproduce\n\n\
             ```sh\nbash qa/bench/ingress.sh              # default run, writes this file\n\
             target/release/ingress-bench --help   # durations, concurrency, streams, --proxy-threads, --no-pin, --haproxy-splice, --only, --json\n\
             target/release/ingress-bench --smoke  # one short run of each available path\n```\n",
            started = self.started,
            cpu = m.cpu_model,
            cores = m.cores,
            mem = m.memory_gib,
            kernel = m.kernel,
            load = m.load_at_start,
            peers = if peers.is_empty() { "none".into() } else { peers.join(", ") },
            splice = if self.haproxy_splice { ", `option splice-auto`" } else { "" },
            threads = self.proxy_threads,
            hello = self.hello_bytes,
            key_share = self.key_share,
            conc = p.concurrency,
            conn_s = p.conn_window.as_secs_f64(),
            warm = p.warmup.as_secs_f64(),
            small = SMALL_RESPONSE_BYTES,
            replay_a = REPLAY_NAMES[0],
            replay_b = REPLAY_NAMES[1],
            lat_s = p.latency_window.as_secs_f64(),
            streams = p.streams,
            tput_s = p.throughput_window.as_secs_f64(),
            mib = p.transfer_bytes >> 20,
            runs = p.runs,
            table = self.table().markdown(),
            targets = if targets.is_empty() {
                "HAProxy was not run: no verdict.\n".to_string()
            } else {
                targets_markdown(targets)
            },
            per_run = self.per_run_markdown(),
            missed = {
                let missed: Vec<&str> = targets
                    .iter()
                    .filter(|t| !t.met)
                    .map(|t| t.name.as_str())
                    .collect();
                if missed.is_empty() {
                    String::new()
                } else {
                    format!("\n**Missed in this run:** {}.\n", missed.join("; "))
                }
            },
            reading = self.reading(),
        )
    }

    /// What the numbers say, in sentences computed from them.
    fn reading(&self) -> String {
        let mut out = Vec::new();
        let direct = self.summary(Kind::Direct);
        let ours = self.summary(Kind::Ingress);
        let ha = self.summary(Kind::Haproxy);
        if let Some(d) = direct {
            let rates: Vec<String> = self
                .proxies()
                .map(|(label, s)| {
                    format!(
                        "{label} {:.0}%",
                        100.0 * s.conn_per_s / d.conn_per_s.max(f64::MIN_POSITIVE)
                    )
                })
                .collect();
            let mut line = format!(
                "- A full TLS 1.3 handshake costs the client and the backend far more CPU than a passthrough proxy spends on the \
                 connection, so the end-to-end connection rate is bound by the endpoints ({} connections/s direct) and by whatever \
                 else runs on the shared cores; through the proxies it reached {} of the direct rate.",
                thousands(d.conn_per_s.round() as u64),
                rates.join(", ")
            );
            if let Some(h) = ha.filter(|h| h.conn_per_s > 0.0) {
                let ceiling = d.conn_per_s / h.conn_per_s;
                if ceiling < 1.2 {
                    line.push_str(&format!(
                        " A proxy costing nothing would reach the direct rate, {ceiling:.2}× HAProxy's: the end-to-end \
                         1.2× target cannot be met on this setup whatever the proxy does, which is why the replayed \
                         handshakes and the proxy's own CPU per connection are compared as well."
                    ));
                }
            }
            out.push(line);
        }
        if let Some(d) = direct {
            let rates: Vec<String> = self
                .proxies()
                .map(|(label, s)| {
                    let r = &s.replay;
                    format!(
                        "{label} {}/s ({} busy, {} µs and {} wake-ups per connection)",
                        thousands(r.conn_per_s.round() as u64),
                        r.proxy_busy
                            .map(|b| format!("{:.0}%", b * 100.0))
                            .unwrap_or_else(|| "?".into()),
                        r.proxy_cpu_per_conn.map(us).unwrap_or_else(|| "?".into()),
                        r.proxy_wakeups_per_conn
                            .map(|w| format!("{w:.2}"))
                            .unwrap_or_else(|| "?".into()),
                    )
                })
                .collect();
            let mut line = format!(
                "- Replayed handshakes cost the endpoints a fraction of full ones: straight to the backends they reached {}/s, and \
                 through the proxies {}.",
                thousands(d.replay.conn_per_s.round() as u64),
                rates.join("; ")
            );
            if let Some(h) = ha.filter(|h| h.replay.conn_per_s > 0.0) {
                let ceiling = d.replay.conn_per_s / h.replay.conn_per_s;
                if ceiling < 1.2 {
                    line.push_str(&format!(
                        " Even so the endpoints' one CPU caps the rate: the direct path is only {ceiling:.2}× HAProxy's, \
                         so on this machine the proxy's CPU per connection near saturation is what tells the proxies apart."
                    ));
                }
            }
            if let (Some(o), Some(h)) = (ours, ha) {
                if let (Some(oc), Some(hc), Some(ol), Some(hl)) = (
                    o.replay.proxy_cpu_per_conn,
                    h.replay.proxy_cpu_per_conn,
                    o.proxy_cpu_per_conn,
                    h.proxy_cpu_per_conn,
                ) {
                    line.push_str(&format!(
                        " Near saturation dc-ingress spends {:.2}× HAProxy's CPU per connection; under the lighter load of full \
                         handshakes it spends {:.2}×. A busy proxy finds several events at each wake-up, so the sleeping and \
                         waking that weigh on a lightly loaded one are shared, and what is left is mostly the kernel's TCP work.",
                        oc.as_secs_f64() / hc.as_secs_f64(),
                        ol.as_secs_f64() / hl.as_secs_f64(),
                    ));
                }
            }
            out.push(line);
        }
        let cpu: Vec<String> = self
            .labels
            .iter()
            .zip(&self.summaries)
            .filter_map(|((_, label), s)| {
                Some(format!(
                    "{label} {} µs ({} in the kernel) and {:.2} wake-ups per connection, {:.0} ms per GB",
                    us(s.proxy_cpu_per_conn?),
                    s.proxy_kernel_cpu_per_conn.map(us).unwrap_or_else(|| "?".into()),
                    s.proxy_wakeups_per_conn?,
                    s.proxy_cpu_per_gb?.as_secs_f64() * 1e3
                ))
            })
            .collect();
        if !cpu.is_empty() {
            out.push(format!(
                "- Proxy CPU time, kernel included (accept, connect, the loopback TCP work of its own sends, sleeping and waking): \
                 {}. Per GB, `dc-ingress` moves bulk transfers with `splice(2)` and never copies them into user space; HAProxy and \
                 nginx (as packaged, no splicing) copy them through their buffers. Pinned apart, throughput is bound by the endpoints' one \
                 CPU, so it shows what a path costs that CPU rather than the proxy's own work; with nothing pinned, the proxy's own \
                 work counts too.",
                cpu.join("; ")
            ));
        }
        let kernel_floor = ours.zip(ha).and_then(|(o, h)| {
            Some((
                o.proxy_kernel_cpu_per_conn?,
                o.proxy_cpu_per_conn?,
                h.proxy_kernel_cpu_per_conn?,
                h.proxy_cpu_per_conn?,
            ))
        });
        if let Some((ok, ot, hk, ht)) = kernel_floor.filter(|f| !f.0.is_zero()) {
            out.push(format!(
                "- Most of a passthrough proxy's cost per connection is the kernel's (system calls, the loopback TCP work of its \
                 sends, sleeping and waking): dc-ingress {} of {} µs, HAProxy {} of {} µs (split by the tick counts of \
                 `/proc/PID/task/*/stat`, so roughly). With no user-space time at all, dc-ingress's own kernel time would \
                 allow at most {:.2}× HAProxy's connections per proxy CPU-second: beyond that only fewer system calls, \
                 packets and wake-ups per connection gain anything, not faster code.",
                us(ok),
                us(ot),
                us(hk),
                us(ht),
                ht.as_secs_f64() / ok.as_secs_f64()
            ));
        }
        if let (Some(d), Some(o), Some(h)) = (direct, ours, ha) {
            let (oi, hi) = (self.index(Kind::Ingress), self.index(Kind::Haproxy));
            let range = |i: Option<usize>| {
                let v: Vec<Duration> = i
                    .map(|i| self.runs[i].iter().map(|r| r.serial_p99).collect())
                    .unwrap_or_default();
                (
                    v.iter().min().copied().unwrap_or_default(),
                    v.iter().max().copied().unwrap_or_default(),
                )
            };
            let ((o_lo, o_hi), (h_lo, h_hi)) = (range(oi), range(hi));
            let diff = added_s(o.serial_p99, h.serial_p99).abs();
            let spread = (o_hi - o_lo).max(h_hi - h_lo).as_secs_f64();
            let verdict = if diff < spread {
                "smaller than the run-to-run spread, so this run cannot tell them apart at p99"
            } else {
                "larger than the run-to-run spread"
            };
            out.push(format!(
                "- One connection in flight: the proxies add {} (dc-ingress) and {} µs (HAProxy) at p50, {} and {} µs at p99, \
                 against a direct p99 of {} ms. The p99 difference between dc-ingress and HAProxy, {:.0} µs, is {verdict} \
                 (p99 per run: dc-ingress {}–{} ms, HAProxy {}–{} ms).{tail}",
                signed_us(o.serial_p50, d.serial_p50),
                signed_us(h.serial_p50, d.serial_p50),
                signed_us(o.serial_p99, d.serial_p99),
                signed_us(h.serial_p99, d.serial_p99),
                ms(d.serial_p99),
                diff * 1e6,
                ms(o_lo),
                ms(o_hi),
                ms(h_lo),
                ms(h_hi),
                tail = if o.serial_p99 >= Duration::from_millis(2) && h.serial_p99 >= Duration::from_millis(2) {
                    " A tail of milliseconds over a p50 of a fraction of one, alike for every proxy, belongs to the setup \
                     rather than to one proxy: each exchange wakes the proxy on the other CPU of a 2-core machine that \
                     other work shares."
                } else {
                    ""
                },
            ));
        }
        out.join("\n") + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_count_fields_after_the_command_name() {
        // A command name with a space and a parenthesis, as comm may have.
        let line = "4242 (ingress (0) x) S 1 4242 4242 0 -1 4194368 812 0 0 0 \
                    37 112 0 0 20 0 2 0 1234 0 0";
        assert_eq!(stat_ticks(line), Some((37, 112)));
        assert_eq!(stat_ticks("4242 (short) S 1 2"), None);
        assert_eq!(stat_ticks("no parenthesis"), None);
    }

    #[test]
    fn kernel_cpu_splits_by_the_tick_ratio() {
        let used = Usage {
            cpu: Duration::from_millis(400),
            wakeups: 0,
            user_ticks: 1,
            kernel_ticks: 3,
        };
        assert_eq!(used.kernel_cpu(), Some(Duration::from_millis(300)));
        assert_eq!(Usage::default().kernel_cpu(), None);
    }

    #[test]
    fn costs_are_compared_run_by_run() {
        let us = |n: u64| Some(Duration::from_micros(n));
        // Run 2's HAProxy was cheap: over the three runs both measured,
        // the medians (150 vs 120) say 1.25×, the runs 1.5×, 1.0× and 1.2×;
        // run 4 has no cost of ours and is no pair.
        let ours = [us(100), us(120), us(150), None];
        let theirs = [us(150), us(120), us(180), us(400)];
        let s = cost_ratios(&ours, &theirs).unwrap();
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(
            near(s.min, 1.0) && near(s.median, 1.2) && near(s.max, 1.5),
            "{s:?}"
        );
        // A zero cost of ours is no ratio; no pairs at all, no spread.
        assert_eq!(cost_ratios(&[us(0)], &[us(10)]), None);
        assert_eq!(cost_ratios(&[], &[]), None);
        assert_eq!(Spread::of(vec![2.0, 1.0]).unwrap().median, 1.5);
    }

    /// The test PKI and the client's settings in a scratch directory, as
    /// `run` makes them.
    fn pki() -> (tempfile::TempDir, Arc<rustls::ClientConfig>) {
        let dir = tempfile::tempdir().unwrap();
        write_pki(dir.path()).unwrap();
        let client = client_config(dir.path()).unwrap();
        (dir, client)
    }

    #[test]
    fn transcripts_are_recorded_from_a_real_exchange_and_read_back() {
        let (dir, client) = pki();
        let [a, b] = record_transcripts(dir.path(), &client).unwrap();
        // A TLS handshake record whose ClientHello names the replayed backend.
        assert_eq!(a.hello[0], 0x16);
        assert!(a.hello.len() > 200);
        let names =
            |t: &Transcript, name: &str| t.hello.windows(name.len()).any(|w| w == name.as_bytes());
        assert!(names(&a, REPLAY_NAMES[0]) && !names(&a, REPLAY_NAMES[1]));
        assert!(names(&b, REPLAY_NAMES[1]));
        // The first flights carry different certificates; the response is one
        // application-data record of the body and its overhead.
        assert_ne!(a.server_flight, b.server_flight);
        assert_eq!(a.response[0], 0x17);
        assert!(a.response.len() > SMALL_RESPONSE_BYTES as usize);
        // Each handshake is fresh.
        let again = record_transcripts(dir.path(), &client).unwrap();
        assert_ne!(again[0].hello, a.hello);
        // What the backend process reads is what the client replays.
        for (name, t) in REPLAY_NAMES.iter().zip(&again) {
            let file = std::fs::read(Transcript::path(dir.path(), name)).unwrap();
            assert_eq!(Transcript::decode(&file).unwrap(), **t);
        }
    }

    #[test]
    fn damaged_transcript_files_are_refused() {
        let t = Transcript {
            hello: vec![1, 2, 3],
            server_flight: vec![4; 300],
            finished: vec![],
            request: vec![5; 10],
            response: vec![6],
            close_notify: vec![7, 8],
        };
        let bytes = t.encode();
        assert_eq!(Transcript::decode(&bytes).unwrap(), t);
        for cut in 0..bytes.len() {
            assert!(Transcript::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Transcript::decode(&longer).is_err());
        let mut huge = bytes;
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Transcript::decode(&huge).is_err());
    }

    #[tokio::test]
    async fn replayed_exchanges_check_which_backend_answered_and_every_byte() {
        let (dir, client) = pki();
        let transcripts = record_transcripts(dir.path(), &client).unwrap();
        let mut addrs = Vec::new();
        for t in &transcripts {
            let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
            addrs.push(listener.local_addr().unwrap());
            tokio::spawn(serve_replay(listener, t.clone()));
        }
        let replayer = |targets: [SocketAddr; 2]| {
            Workload::Replay(Replayer {
                targets,
                transcripts: transcripts.clone(),
            })
        };
        let mut buf = Vec::new();
        let right = replayer([addrs[0], addrs[1]]);
        for which in 0..2 {
            right.small(which, &mut buf).await.unwrap();
        }
        // Crossed routes: each backend sees a hello that is not its own and
        // hangs up, which the client reports as a short read.
        let crossed = replayer([addrs[1], addrs[0]]);
        assert!(crossed.small(0, &mut buf).await.is_err());
        // A backend that answers with another name's first flight is caught
        // as misrouted; one that answers with anything else, as garbled.
        let impostor = |flight: Vec<u8>| async move {
            let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let mut sink = [0u8; 4096];
                let _ = tcp.read(&mut sink).await;
                tcp.write_all(&flight).await.unwrap();
                let _ = tcp.read(&mut sink).await;
            });
            addr
        };
        let wrong = impostor(transcripts[1].server_flight.clone()).await;
        match replayer([wrong, addrs[1]]).small(0, &mut buf).await {
            Err(ConnError::WrongBackend { expected, got }) => {
                assert_eq!((expected, got), (TAGS[0], TAGS[1]))
            }
            other => panic!("expected a misrouted exchange, got {other:?}"),
        }
        let mut flight = transcripts[0].server_flight.clone();
        *flight.last_mut().unwrap() ^= 1;
        let garbled = impostor(flight).await;
        assert!(matches!(
            replayer([garbled, addrs[1]]).small(0, &mut buf).await,
            Err(ConnError::Garbled)
        ));
    }
}
