//! The `ledger-bench` program: runs both benchmarks against the peer,
//! prints the table and writes the markdown report.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use crate::machine::{utc_now, Machine};
use crate::matching::{self, MatchingConfig, MatchingResults};
use crate::pg::{self, Cluster};
use crate::report::{self, Row, Table, Target};
use crate::stats::{mib, ms, ratio, thousands};
use crate::transfers::{self, Receivers, TransferConfig, TransferRun};

/// Which benchmarks to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Only {
    Transfers,
    Matching,
}

/// Which receivers the transfer benchmark uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReceiversArg {
    /// Every client pays one sink account (the workload as specified).
    Sink,
    /// Each client pays its own receiver (no hot row for the peer).
    Own,
    /// Both, one after the other.
    Both,
}

/// Benchmarks of dc-ledger against PostgreSQL measured in the same run:
/// durable transfers per second, and matching among a million offerings.
#[derive(Parser, Debug, Clone)]
#[command(version, about, long_about)]
pub struct Args {
    /// The release dc-ledger binary.
    #[arg(long, default_value = "target/release/dc-ledger")]
    pub ledger_bin: PathBuf,
    /// Concurrent clients of the transfer benchmark.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Seconds each transfer run lasts.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Receivers of the transfers.
    #[arg(long, value_enum, default_value_t = ReceiversArg::Both)]
    pub receivers: ReceiversArg,
    /// Offerings of the matching benchmark.
    #[arg(long, default_value_t = 1_000_000)]
    pub offerings: usize,
    /// Measured queries of the matching benchmark.
    #[arg(long, default_value_t = 1_000)]
    pub queries: usize,
    /// Queries run before measuring (the first ones of the set).
    #[arg(long, default_value_t = 100)]
    pub warm: usize,
    /// Seed of the generated offerings and queries.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Also write the results as markdown to FILE.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Where data directories are created (both systems use the same).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Run only one benchmark.
    #[arg(long, value_enum)]
    pub only: Option<Only>,
    /// Skip PostgreSQL (no peer column).
    #[arg(long)]
    pub no_peer: bool,
    /// PostgreSQL's `shared_buffers` (its default is 128MB; 1GB holds the
    /// whole offerings table and its indexes, as dc-ledger holds everything
    /// in memory).
    #[arg(long, default_value = "1GB")]
    pub pg_shared_buffers: String,
}

/// Results of one transfer mode.
struct TransferPair {
    receivers: Receivers,
    ours: TransferRun,
    peer: Option<TransferRun>,
}

fn count_label(n: usize) -> String {
    if n >= 1_000_000 && n % 1_000_000 == 0 {
        format!("{}M", n / 1_000_000)
    } else {
        thousands(n as u64)
    }
}

fn lat_pair(a: Duration, b: Duration) -> String {
    format!("{} / {} ms", ms(a), ms(b))
}

/// CPU per transfer, server and clients: `41 + 35 µs`.
fn cpu_per_transfer(run: &TransferRun) -> String {
    let per = |d: Duration| d.as_secs_f64() * 1e6 / run.transfers.max(1) as f64;
    format!("{:.0} + {:.0} µs", per(run.server_cpu), per(run.client_cpu))
}

fn describe(run: &TransferRun) -> String {
    format!(
        "{} transfers/s (p50 {} ms, p99 {} ms, CPU per transfer server + clients {}, {} errors{})",
        thousands(run.per_sec().round() as u64),
        ms(run.latencies.p50()),
        ms(run.latencies.p99()),
        cpu_per_transfer(run),
        run.errors,
        if run.verified {
            ", balances verified"
        } else {
            ", BALANCES DO NOT MATCH"
        }
    )
}

/// Runs what `args` asks and reports it.
pub fn run(args: Args) -> anyhow::Result<()> {
    let work_dir = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;
    let machine = Machine::detect(&work_dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Interrupted: stop the clusters and servers no destructor will.
    rt.spawn(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {},
        }
        eprintln!("\ninterrupted: stopping servers and clusters");
        crate::cleanup::run_all();
        std::process::exit(130);
    });

    let (pg_version, mut cluster) = if args.no_peer {
        ("not run".to_string(), None)
    } else {
        let bin = pg::find_bin_dir()?;
        let version = pg::version(&bin);
        eprintln!("starting a {version} cluster ({})", bin.display());
        (
            version,
            Some(Cluster::start(&bin, &work_dir, &args.pg_shared_buffers)?),
        )
    };

    let mut pairs = Vec::new();
    if args.only != Some(Only::Matching) {
        let modes = match args.receivers {
            ReceiversArg::Sink => vec![Receivers::Sink],
            ReceiversArg::Own => vec![Receivers::Own],
            ReceiversArg::Both => vec![Receivers::Sink, Receivers::Own],
        };
        for receivers in modes {
            let cfg = TransferConfig {
                clients: args.clients,
                duration: Duration::from_secs(args.seconds),
                receivers,
                work_dir: work_dir.clone(),
            };
            eprintln!(
                "transfers, {} clients, {}, {} s:",
                cfg.clients,
                receivers.label(),
                args.seconds
            );
            let ours = rt.block_on(transfers::run_ours(&args.ledger_bin, &cfg))?;
            eprintln!("  dc-ledger:  {}", describe(&ours));
            let peer = match &cluster {
                Some(c) => {
                    let p = transfers::run_peer(c, &cfg)?;
                    eprintln!("  PostgreSQL: {}", describe(&p));
                    Some(p)
                }
                None => None,
            };
            pairs.push(TransferPair {
                receivers,
                ours,
                peer,
            });
        }
    }

    let matching = if args.only != Some(Only::Transfers) {
        let cfg = MatchingConfig {
            offerings: args.offerings,
            queries: args.queries,
            warm: args.warm,
            seed: args.seed,
            work_dir: work_dir.clone(),
            ledger_bin: args.ledger_bin.clone(),
        };
        Some(matching::run(&cfg, &rt, cluster.as_ref())?)
    } else {
        None
    };
    if let Some(c) = cluster.as_mut() {
        c.stop()?;
    }

    let (table, targets, notes) = tabulate(&args, &pg_version, &machine, &pairs, matching.as_ref());
    println!();
    print!("{}", table.text());
    println!();
    for n in &notes {
        println!("note: {n}");
    }
    println!();
    print!("{}", report::targets_text(&targets));
    if let Some(path) = &args.markdown {
        let md = markdown(
            &machine,
            &pg_version,
            &args.pg_shared_buffers,
            &table,
            &targets,
            &notes,
        );
        std::fs::write(path, md).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

fn tabulate(
    args: &Args,
    pg_version: &str,
    machine: &Machine,
    pairs: &[TransferPair],
    matching: Option<&MatchingResults>,
) -> (Table, Vec<Target>, Vec<String>) {
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    let mut notes = vec!["ratio: ours ÷ peer for throughput, peer ÷ ours for latency and memory; above 1 means ours is better.".to_string()];
    let none = "-".to_string();
    for p in pairs {
        let peer_rate = p.peer.as_ref().map(|r| r.per_sec());
        rows.push(Row::new(
            format!(
                "durable transfers/s ({} clients, {})",
                args.clients,
                p.receivers.label()
            ),
            thousands(p.ours.per_sec().round() as u64),
            peer_rate.map_or(none.clone(), |r| thousands(r.round() as u64)),
            peer_rate.map_or(String::new(), |r| ratio(p.ours.per_sec() / r)),
        ));
        rows.push(Row::new(
            "  p50 / p99 latency",
            lat_pair(p.ours.latencies.p50(), p.ours.latencies.p99()),
            p.peer.as_ref().map_or(none.clone(), |r| {
                lat_pair(r.latencies.p50(), r.latencies.p99())
            }),
            "",
        ));
        if let Some(r) = peer_rate {
            targets.push(Target {
                name: format!(
                    "durable transfers/s ≥ PostgreSQL ({} clients, {})",
                    args.clients,
                    p.receivers.label()
                ),
                measured: format!(
                    "{} vs {}",
                    thousands(p.ours.per_sec().round() as u64),
                    thousands(r.round() as u64)
                ),
                met: p.ours.per_sec() >= r,
            });
        }
        let mut check = format!(
            "transfers, {}: ours acknowledged {} in {:.1} s ({} errors; CPU per transfer, server + clients: {}), balances {}",
            p.receivers.label(),
            thousands(p.ours.transfers),
            p.ours.elapsed.as_secs_f64(),
            p.ours.errors,
            cpu_per_transfer(&p.ours),
            if p.ours.verified { "verified" } else { "DO NOT MATCH" }
        );
        if let Some(r) = &p.peer {
            check.push_str(&format!(
                "; PostgreSQL committed {} in {:.1} s ({} errors; CPU per transfer, server + clients: {}), balances and log {}",
                thousands(r.transfers),
                r.elapsed.as_secs_f64(),
                r.errors,
                cpu_per_transfer(r),
                if r.verified { "verified" } else { "DO NOT MATCH" }
            ));
        }
        for e in [
            p.ours.first_error.as_ref(),
            p.peer.as_ref().and_then(|r| r.first_error.as_ref()),
        ]
        .into_iter()
        .flatten()
        {
            check.push_str(&format!("; first error: {e}"));
        }
        notes.push(check);
    }
    if let (false, Some(d)) = (pairs.is_empty(), machine.fdatasync) {
        if d < Duration::from_millis(1) {
            notes.push(format!(
                "an append + `fdatasync` takes {} ms on this machine's disk, which suggests its virtual disk acknowledges flushes from a cache; \
                 on a disk with slower flushes both systems commit fewer, larger groups and lose throughput.",
                ms(d)
            ));
        }
    }
    if !pairs.is_empty() {
        notes.push(format!(
            "transfers: each run lasts {} s after one unmeasured transfer per client; a transfer counts once acknowledged. \
             Ours: ICRC-1 `icrc1_transfer` through `LedgerClient` over HTTP/1.1 on loopback, every request an ed25519-signed envelope, \
             answered after its group-commit batch is `fdatasync`ed. PostgreSQL: one connection and thread per client, prepared statements over TCP loopback, \
             each transfer one transaction (debit with the fee folded in and a funds check, credit, INSERT into the log, COMMIT), \
             `synchronous_commit=on`, `fsync=on`, shared_buffers={}. Clients and servers share the machine's {} cores.",
            args.seconds, args.pg_shared_buffers, machine.cores
        ));
    }
    if let Some(m) = matching {
        let n = count_label(m.offerings);
        let ours = &m.in_process.latencies;
        let peer = m.peer.as_ref();
        rows.push(Row::new(
            format!("matching median ({n} offerings)"),
            format!("{} ms", ms(ours.p50())),
            peer.map_or(none.clone(), |p| {
                format!("{} ms", ms(p.side.latencies.p50()))
            }),
            peer.map_or(String::new(), |p| {
                ratio(p.side.latencies.p50().as_secs_f64() / ours.p50().as_secs_f64())
            }),
        ));
        rows.push(Row::new(
            "  p99 / max",
            lat_pair(ours.p99(), ours.max()),
            peer.map_or(none.clone(), |p| {
                lat_pair(p.side.latencies.p99(), p.side.latencies.max())
            }),
            "",
        ));
        let http = &m.service.side.latencies;
        rows.push(Row::new(
            "  service over HTTP: median / p99",
            lat_pair(http.p50(), http.p99()),
            peer.map_or(none.clone(), |p| {
                lat_pair(p.side.latencies.p50(), p.side.latencies.p99())
            }),
            peer.map_or(String::new(), |p| {
                ratio(p.side.latencies.p50().as_secs_f64() / http.p50().as_secs_f64())
            }),
        ));
        rows.push(Row::new(
            format!(
                "  offers returned ({} queries)",
                thousands(m.queries as u64)
            ),
            thousands(m.in_process.matches),
            peer.map_or(none.clone(), |p| thousands(p.side.matches)),
            peer.map_or(String::new(), |p| {
                if p.side.mismatches == 0 {
                    "same pages".into()
                } else {
                    format!("{} differ", p.side.mismatches)
                }
            }),
        ));
        rows.push(Row::new(
            format!("service memory, VmRSS ({n} offerings)"),
            mib(m.service.rss_bytes),
            peer.map_or(none.clone(), |p| {
                format!("{} ({} proc.)", mib(p.rss_bytes), p.processes)
            }),
            peer.map_or(String::new(), |p| {
                ratio(p.rss_bytes as f64 / m.service.rss_bytes as f64)
            }),
        ));
        targets.push(Target {
            name: format!("matching median < 20 ms ({n} offerings, `Ledger::search`)"),
            measured: format!("{} ms (over HTTP {} ms)", ms(ours.p50()), ms(http.p50())),
            met: ours.p50() < Duration::from_millis(20),
        });
        targets.push(Target {
            name: format!("dc-ledger memory < 1 GiB ({n} offerings)"),
            measured: mib(m.service.rss_bytes),
            met: m.service.rss_bytes < 1 << 30,
        });
        notes.push(format!(
            "matching: {} offerings from {} providers on {} nodes, generated with seed {} in {:.1} s; {} seeded mixed queries \
             (price cap, vCPU/RAM/storage/bandwidth minimums, GPU model and count, confidential platform, region or country, \
             minimum reputation, contract hours, pages of 20 or 100, some offsets); the first {} run once unmeasured as warm-up. \
             `ours` is `Ledger::search` in-process; `service over HTTP` is the release dc-ledger answering `LedgerClient::search` \
             (Candid over HTTP on loopback), one client, one query at a time.",
            thousands(m.offerings as u64),
            thousands(m.providers as u64),
            thousands(m.nodes as u64),
            args.seed,
            m.build.as_secs_f64(),
            thousands(m.queries as u64),
            args.warm.min(m.queries),
        ));
        notes.push(format!(
            "the tail is GPU queries: {} of the {} slowest in-process queries ask for GPUs (median {} ms, against {} ms for the others). \
             GPU offers are the most expensive, so a walk in price order, ours or PostgreSQL's index scan, passes most of the table before it reaches them.",
            m.slowest_gpu.0,
            m.slowest_gpu.1,
            ms(m.median_gpu),
            ms(m.median_other)
        ));
        notes.push(format!(
            "the service's pages over HTTP equal the in-process ones for {} of {} queries.",
            thousands((m.queries - m.service.side.mismatches) as u64),
            thousands(m.queries as u64)
        ));
        if let Some(p) = peer {
            notes.push(format!(
                "PostgreSQL holds the same offerings in one table with the provider's reputation denormalized into each row, \
                 indexes on (price, reputation DESC, id) and on (confidential, gpu_model, region), loaded with COPY plus indexing and ANALYZE \
                 in {:.1} s ({} on disk); each query is one SQL statement with the same filters and `ORDER BY price, reputation DESC, id LIMIT n OFFSET k`, \
                 sent by one client over TCP loopback. Its times therefore include a round trip, like the HTTP row, unlike the in-process one. \
                 Capacity is not expressed identically: ours also checks each node's free capacity; no contract holds any here and every offering fits its node, \
                 so the filters are equivalent on this data, and {} of {} pages are identical to ours.",
                p.load.as_secs_f64(),
                mib(p.relation_bytes),
                thousands((m.queries - p.side.mismatches) as u64),
                thousands(m.queries as u64)
            ));
        }
        let mut mem = format!(
            "memory: dc-ledger's VmRSS after the queries, started from a {} snapshot, ready in {:.1} s.",
            mib(m.service.snapshot_bytes),
            m.service.startup.as_secs_f64()
        );
        if let Some(p) = peer {
            mem.push_str(&format!(
                " PostgreSQL: VmRSS summed over the postmaster and its {} children, with shared_buffers={} (shared pages count once per process \
                 that touched them, while table pages in the OS page cache do not count at all): a rough figure.",
                p.processes - 1,
                args.pg_shared_buffers
            ));
        }
        notes.push(mem);
    }
    notes.push(format!(
        "data directories of both systems on {} ({}).",
        machine.data_fs,
        args.work_dir.as_ref().map_or_else(
            || std::env::temp_dir().display().to_string(),
            |d| d.display().to_string()
        )
    ));
    let peer_header = if pg_version == "not run" {
        "not run".to_string()
    } else {
        pg::major(pg_version)
    };
    (Table { peer_header, rows }, targets, notes)
}

fn markdown(
    machine: &Machine,
    pg_version: &str,
    shared_buffers: &str,
    table: &Table,
    targets: &[Target],
    notes: &[String],
) -> String {
    let argv: Vec<String> = std::env::args().collect();
    let mut md = String::new();
    md.push_str("# Ledger benchmarks\n\n");
    md.push_str(&format!(
        "Generated by `ledger-bench` (crate `dc-qa`) on {}. Do not edit by hand: run `qa/bench/ledger.sh` again.\n\n",
        utc_now()
    ));
    md.push_str("## Machine\n\n");
    md.push_str(&format!(
        "- CPU: {}, {} cores\n",
        machine.cpu_model, machine.cores
    ));
    md.push_str(&format!("- memory: {:.1} GiB\n", machine.memory_gib));
    md.push_str(&format!("- kernel: {}\n", machine.kernel));
    md.push_str(&format!("- data directories on: {}\n", machine.data_fs));
    if let Some(d) = machine.fdatasync {
        md.push_str(&format!(
            "- append 4 KiB + `fdatasync` there: {} ms (median of 200)\n",
            ms(d)
        ));
    }
    md.push_str(&format!(
        "- load average when the run started (1/5/15 min): {}\n",
        machine.load_at_start
    ));
    if pg_version == "not run" {
        md.push_str("- peer: not run (`--no-peer`)\n\n");
    } else {
        md.push_str(&format!(
        "- peer: {pg_version} (Debian package), started by the benchmark in a temporary cluster with \
         `synchronous_commit=on`, `fsync=on`, `shared_buffers={shared_buffers}`\n\n"
        ));
    }
    md.push_str("## Commands\n\n```sh\n");
    md.push_str(
        "qa/bench/ledger.sh   # installs PostgreSQL if missing, builds in release, then runs:\n",
    );
    md.push_str(&argv.join(" "));
    md.push_str("\n```\n\n## Results\n\n");
    md.push_str(&table.markdown());
    md.push('\n');
    for n in notes {
        md.push_str(&format!("- {n}\n"));
    }
    md.push_str("\n## Targets\n\n");
    md.push_str(&report::targets_markdown(targets));
    md
}
