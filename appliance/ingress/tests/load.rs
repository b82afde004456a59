//! Ten thousand concurrent connections through the ingress, twice: every
//! connection is held open at once, another tenant is served meanwhile, and
//! after the clients leave the ingress is back to the descriptors it had,
//! with no memory growth from one round to the next.
//!
//! The sandbox caps every process at 20,000 descriptors (hard limit), and a
//! routed connection costs the ingress two (client and VM sides). So the
//! clients and tenant A's VM run as child processes (this same binary, with
//! a role in `DC_INGRESS_LOAD_ROLE`), the ingress runs here, and of the 10,000
//! connections as many are routed as the limit allows with room to spare
//! (9,500 under a 20,000 cap); the others stay open in the hello phase. Where
//! the limit is higher, all 10,000 are routed.
//!
//! `harness = false` because of the roles; it prints libtest's summary lines.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use dc_ingress::{IngressConfig, Route, RouteTable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const ROLE: &str = "DC_INGRESS_LOAD_ROLE";
const NAME: &str = "ten_thousand_concurrent_connections";
const CONNECTIONS: usize = 10_000;
const TENANT_A: &str = "load.tenant.example";
const TENANT_B: &str = "b.tenant.example";

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("upstream") => return upstream_role(),
        Ok("clients") => return clients_role(),
        _ => {}
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("{NAME}: test");
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| NAME.contains(f.as_str())) {
        println!("\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out\n");
        return;
    }
    println!("\nrunning 1 test");
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(ten_thousand_concurrent_connections);
    let secs = started.elapsed().as_secs_f64();
    match outcome {
        Ok(()) => {
            println!("test {NAME} ... ok\n\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in {secs:.2}s\n");
        }
        Err(_) => {
            println!("test {NAME} ... FAILED\n\ntest result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in {secs:.2}s\n");
            std::process::exit(101);
        }
    }
}

/// Raises the soft descriptor limit to the hard one; returns it.
fn raise_nofile() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, owned struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_cur as usize
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A child process of this binary playing `role`, talking over its stdin
/// (commands) and stdout (one line per event).
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Peer {
    fn spawn(role: &str, env: &[(&str, String)]) -> Peer {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.env(ROLE, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    /// The next line starting with `prefix`, what follows it.
    fn expect(&self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("waiting for {prefix:?}: {e}"));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_string();
            }
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Closes its stdin (every role exits on that) and waits for it.
    fn finish(mut self, within: Duration) {
        drop(self.stdin.take());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "peer exited with {status}");
                return;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("peer did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn ten_thousand_concurrent_connections() {
    let hard_limit = raise_nofile();
    let routed = CONNECTIONS.min(hard_limit.saturating_sub(1_000) / 2);
    let waiting = CONNECTIONS - routed;
    let rt = runtime();
    let upstream = Peer::spawn("upstream", &[]);
    let upstream_addr: SocketAddr = upstream
        .expect("LISTEN", Duration::from_secs(30))
        .parse()
        .unwrap();

    rt.block_on(async {
        let echo_b = echo_upstream("127.0.0.3").await;
        let routes = Arc::new(RouteTable::new());
        let route = |id, name: &str, to| Route {
            contract_id: id,
            names: vec![name.into()],
            tls_upstream: to,
            http_upstream: None,
            proxy_protocol: false,
            max_connections: 20_000,
        };
        routes
            .replace(vec![route(1, TENANT_A, upstream_addr), route(2, TENANT_B, echo_b)])
            .unwrap();
        let config = IngressConfig {
            max_connections: 20_000,
            max_connections_per_source: 20_000,
            // The waiting connections must stay in the hello phase.
            handshake_timeout_ms: 120_000,
            handshake_min_bytes_per_s: 0,
            max_idle_pipes: 64,
            ..IngressConfig::default()
        };
        let run = start_ingress(config, routes).await;
        let hello_b = rustls_hello(TENANT_B, &HelloSpec::default());
        // Warm up, then take the baseline.
        tenant_b_round_trip(run.tls, &hello_b).await;
        let fds_before = fds_besides_pooled_pipes(&run.ingress);
        let rss_before = rss_kib();
        let mut rss_after = Vec::new();

        for round in 1..=2 {
            let started = Instant::now();
            let mut clients = Peer::spawn(
                "clients",
                &[
                    ("TARGET", run.tls.to_string()),
                    ("ROUTED", routed.to_string()),
                    ("WAITING", waiting.to_string()),
                ],
            );
            let held: usize = tokio::task::block_in_place(|| clients.expect("HELD", Duration::from_secs(240)))
                .parse()
                .unwrap();
            let setup = started.elapsed();
            assert_eq!(held, CONNECTIONS);
            // The last hello-phase connections may still sit in the accept queue.
            let all_held = eventually(Duration::from_secs(30), || {
                run.ingress.metrics().connections_active as usize == CONNECTIONS
            })
            .await;
            let m = run.ingress.metrics();
            assert!(all_held, "all held at once: {} active", m.connections_active);
            let a = m.routes.iter().find(|r| r.contract_id == 1).unwrap();
            assert_eq!(a.connections_active as usize, routed);
            assert_eq!(m.tls.accept_errors, 0, "no descriptor exhaustion");
            let fds_held = open_fds();

            // The other tenant, meanwhile.
            let mut worst = Duration::ZERO;
            for _ in 0..100 {
                worst = worst.max(tenant_b_round_trip(run.tls, &hello_b).await);
            }

            tokio::task::block_in_place(|| {
                clients.send("close");
                clients.expect("CLOSED", Duration::from_secs(60));
                clients.finish(Duration::from_secs(30));
            });
            let drained = eventually(Duration::from_secs(60), || {
                fds_besides_pooled_pipes(&run.ingress) <= fds_before
                    && run.ingress.metrics().connections_active == 0
            })
            .await;
            assert!(
                drained,
                "round {round}: {} descriptors open besides pooled pipes (baseline {fds_before}), {} connections active",
                fds_besides_pooled_pipes(&run.ingress),
                run.ingress.metrics().connections_active
            );
            let m = run.ingress.metrics();
            assert!(m.routes.iter().all(|r| r.connections_active == 0));
            assert!(m.idle_pipes <= 64);
            rss_after.push(rss_kib());
            println!(
                "round {round}: {CONNECTIONS} connections ({routed} routed, {waiting} in hello phase) held after {setup:?}; \
                 ingress process {fds_held} fds while held, {} after besides {} pooled pipes (baseline {fds_before}); \
                 tenant B worst round trip meanwhile {worst:?}; rss {} KiB (baseline {rss_before} KiB)",
                fds_besides_pooled_pipes(&run.ingress),
                m.idle_pipes,
                rss_kib()
            );
        }
        let growth = rss_after[1].saturating_sub(rss_after[0]);
        assert!(
            growth < 16 * 1024,
            "memory grew by {growth} KiB from round 1 to round 2 ({rss_after:?})"
        );
        // The hello-phase connections closed before finishing their hello;
        // nothing else was refused.
        let r = run.ingress.metrics().tls.refusals;
        assert_eq!(r.closed_early as usize, 2 * waiting, "{r:?}");
        assert_eq!(r.total(), r.closed_early, "{r:?}");
    });
    upstream.finish(Duration::from_secs(30));
}

async fn tenant_b_round_trip(ingress: SocketAddr, hello: &[u8]) -> Duration {
    let start = tokio::time::Instant::now();
    let mut c = TcpStream::connect(ingress).await.unwrap();
    c.write_all(hello).await.unwrap();
    let mut back = vec![0u8; hello.len()];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut back))
        .await
        .expect("tenant B served")
        .unwrap();
    assert_eq!(back, hello);
    start.elapsed()
}

/// Blocks until stdin has a line or closes; returns the line (empty at EOF).
fn read_command() -> String {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    line.trim().to_string()
}

/// Tenant A's VM: echoes every connection until its client closes. Exits
/// when stdin closes.
fn upstream_role() {
    raise_nofile();
    runtime().block_on(async {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let listener = socket.listen(4096).unwrap();
        println!("LISTEN {}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 2048];
                    loop {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if tcp.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        tokio::task::spawn_blocking(|| while !read_command().is_empty() {})
            .await
            .unwrap();
    });
}

/// The clients: `ROUTED` connections that send a whole hello for tenant A
/// and get it echoed by the VM, `WAITING` that send the first bytes of one;
/// all held until told to close.
fn clients_role() {
    raise_nofile();
    let env = |k: &str| std::env::var(k).unwrap();
    let target: SocketAddr = env("TARGET").parse().unwrap();
    let routed: usize = env("ROUTED").parse().unwrap();
    let waiting: usize = env("WAITING").parse().unwrap();
    runtime().block_on(async move {
        let hello = Arc::new(rustls_hello(TENANT_A, &HelloSpec::default()));
        // Bounded concurrency while connecting: a burst of 10,000 SYNs would
        // only measure the listen backlog.
        let permits = Arc::new(tokio::sync::Semaphore::new(128));
        let mut tasks = Vec::with_capacity(routed);
        for _ in 0..routed {
            let permit = permits.clone().acquire_owned().await.unwrap();
            let hello = hello.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = TcpStream::connect(target)
                    .await
                    .expect("connect to the ingress");
                c.write_all(&hello).await.unwrap();
                let mut back = vec![0u8; hello.len()];
                tokio::time::timeout(Duration::from_secs(60), c.read_exact(&mut back))
                    .await
                    .expect("echo in time")
                    .expect("echo");
                assert!(back == *hello, "the VM echoed the hello");
                drop(permit);
                c
            }));
        }
        let mut held = Vec::with_capacity(routed + waiting);
        for t in tasks {
            held.push(t.await.unwrap());
        }
        for _ in 0..waiting {
            let mut c = TcpStream::connect(target)
                .await
                .expect("connect to the ingress");
            c.write_all(&hello[..16]).await.unwrap();
            held.push(c);
        }
        println!("HELD {}", held.len());
        // "close", or EOF when the test itself gave up: close either way.
        tokio::task::spawn_blocking(read_command).await.unwrap();
        drop(held);
        println!("CLOSED");
    });
}
