//! `dc-ledger serve --data DIR [--listen 127.0.0.1:PORT] [--genesis FILE.toml] [--block-interval-secs N]`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use dc_ledger::{genesis, http, Clock, Service, SystemClock};

/// The Decent Cloud ledger, served locally.
///
/// Runs the same ledger core as the Internet Computer canister on loopback
/// HTTP, with signed, replay-protected requests and a journal that is synced
/// before any change is acknowledged.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the ledger stored in DIR (created from --genesis on first start).
    ///
    /// Prints `dc-ledger listening on http://ADDR` when ready and writes the
    /// URL to DIR/url. Stops cleanly on SIGINT/SIGTERM with a snapshot.
    Serve {
        /// Data directory: snapshot.bin and journal.log.
        #[arg(long)]
        data: PathBuf,
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:8470")]
        listen: SocketAddr,
        /// Genesis file (TOML) used when DIR holds no ledger yet.
        #[arg(long)]
        genesis: Option<PathBuf>,
        /// Reward-block interval for a new ledger, overriding the genesis file.
        #[arg(long)]
        block_interval_secs: Option<u64>,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DC_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dc-ledger: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Command::Serve {
        data,
        listen,
        genesis: genesis_path,
        block_interval_secs,
    } = cli.command;
    if !listen.ip().is_loopback() {
        anyhow::bail!("--listen {listen}: dc-ledger serves loopback only; put a TLS proxy in front for anything else");
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let genesis = match &genesis_path {
        Some(path) => {
            let mut g = genesis::load(path, clock.now_ns())?;
            if let Some(secs) = block_interval_secs {
                anyhow::ensure!(secs > 0, "--block-interval-secs must be at least 1");
                g.params.block_interval_ns = secs * 1_000_000_000;
            }
            Some(g)
        }
        None => None,
    };
    let opened = Service::open(data.clone(), genesis, clock)?;
    let service = opened.service;
    if let Some(secs) = block_interval_secs {
        let current = service
            .with_ledger(|l| l.params().block_interval_ns)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(
            current == secs * 1_000_000_000,
            "--block-interval-secs {secs}: this ledger was created with {}s; parameters are fixed at genesis",
            current / 1_000_000_000
        );
    }
    if opened.created {
        tracing::info!(dir = %data.display(), "created a new ledger from genesis");
    } else {
        tracing::info!(dir = %data.display(), replayed = opened.replayed, truncated_bytes = opened.truncated_bytes, "recovered ledger");
    }
    let interval_ns = service
        .with_ledger(|l| l.params().block_interval_ns)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        let url = format!("http://{addr}");
        std::fs::write(data.join("url"), format!("{url}\n")).with_context(|| format!("writing {}", data.join("url").display()))?;
        // Tick often enough to close blocks on time and settle contracts promptly.
        let tick_every = Duration::from_nanos((interval_ns / 10).clamp(50_000_000, 1_000_000_000));
        let ticker = service.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick_every);
            loop {
                interval.tick().await;
                ticker.tick();
            }
        });
        println!("dc-ledger listening on {url}");
        use std::io::Write;
        std::io::stdout().flush()?;
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {},
            }
        };
        axum::serve(listener, http::router(service.clone())).with_graceful_shutdown(shutdown).await?;
        service.snapshot().await.map_err(|e| anyhow::anyhow!("final snapshot: {e}"))?;
        tracing::info!("stopped cleanly");
        Ok(())
    })
}
