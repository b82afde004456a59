//! Benchmark 1: durable transfers per second.
//!
//! Ours: the release `dc-ledger` on a fresh data directory; C client tasks,
//! each with its own ed25519 identity, send `icrc1_transfer` as signed
//! envelopes in a loop for D seconds. A transfer counts once acknowledged,
//! which the service does only after the batch holding it is `fdatasync`ed.
//!
//! Peer: PostgreSQL with `synchronous_commit=on`, `fsync=on`; C connections
//! (threads), each transfer one transaction: debit the sender (fee folded
//! in, refused without funds), credit the receiver, insert the log row,
//! COMMIT.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dc_ledger_client::LedgerClient;
use dc_ledger_core::Account;

use crate::pg::Cluster;
use crate::server::{own_cpu_time, LedgerProcess};
use crate::stats::Latencies;
use crate::world::identity;

/// Amount of every transfer, in e9s.
pub const AMOUNT_E9S: u64 = 1_000;
/// The ledger's default transfer fee, charged the same way in the peer.
pub const FEE_E9S: u64 = 10_000;
/// What each client starts with (1,000 DCT).
pub const FUNDS_E9S: u64 = 1_000 * 1_000_000_000;

/// Who receives the transfers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receivers {
    /// Every client pays one sink account (a hot row for the peer).
    Sink,
    /// Client i pays its own receiver i (no row shared between clients).
    Own,
}

impl Receivers {
    /// Label used in the table.
    pub fn label(self) -> &'static str {
        match self {
            Receivers::Sink => "one sink account",
            Receivers::Own => "own receivers",
        }
    }
}

/// Parameters shared by both systems.
#[derive(Clone, Debug)]
pub struct TransferConfig {
    pub clients: usize,
    pub duration: Duration,
    pub receivers: Receivers,
    /// Where the data directories go.
    pub work_dir: PathBuf,
}

/// Outcome of one run.
#[derive(Clone, Debug)]
pub struct TransferRun {
    /// Acknowledged transfers within the measured window.
    pub transfers: u64,
    /// Refused or failed transfers.
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latencies: Latencies,
    /// The receivers' balances add up to every acknowledged transfer.
    pub verified: bool,
    /// CPU used during the measured window by the server and by the
    /// benchmark's own process (the clients).
    pub server_cpu: Duration,
    pub client_cpu: Duration,
}

impl TransferRun {
    /// Acknowledged transfers per second.
    pub fn per_sec(&self) -> f64 {
        self.transfers as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Default)]
struct Worker {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    samples: Vec<Duration>,
}

fn client_id(i: usize) -> dc_identity::Identity {
    identity(b'c', i as u64)
}

fn receiver_principal(receivers: Receivers, i: usize) -> candid::Principal {
    match receivers {
        Receivers::Sink => identity(b's', 0).principal(),
        Receivers::Own => identity(b'r', i as u64).principal(),
    }
}

/// Writes a genesis funding every client with [`FUNDS_E9S`].
pub fn write_genesis(path: &Path, clients: usize) -> anyhow::Result<()> {
    let mut text = format!("treasury = \"{}\"\n", identity(b't', 0).principal());
    for i in 0..clients {
        text.push_str(&format!(
            "[[balances]]\nprincipal = \"{}\"\namount_e9s = {FUNDS_E9S}\n",
            client_id(i).principal()
        ));
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Runs our side: starts `ledger_bin` on a fresh directory and drives it.
pub async fn run_ours(ledger_bin: &Path, cfg: &TransferConfig) -> anyhow::Result<TransferRun> {
    let dir = crate::cleanup::ScratchDir::new("ledger-transfers-", &cfg.work_dir)?;
    let genesis = dir.path().join("genesis.toml");
    write_genesis(&genesis, cfg.clients)?;
    let data = dir.path().join("ledger");
    let mut server =
        LedgerProcess::start(ledger_bin, &data, Some(&genesis), Duration::from_secs(60))?;
    let mut clients = Vec::with_capacity(cfg.clients);
    for i in 0..cfg.clients {
        let c = LedgerClient::connect(&server.url, Some(client_id(i)))
            .await
            .context("connecting a client")?;
        clients.push(c);
    }
    // One acknowledged transfer per client before the clock starts: opens
    // the connections and checks the setup works at all.
    let mut warm = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let c = c.clone();
        let to = Account::of(receiver_principal(cfg.receivers, i));
        warm.push(tokio::spawn(async move {
            c.transfer(to, AMOUNT_E9S, Some(vec![0xFF])).await
        }));
    }
    for w in warm {
        w.await?.map_err(|e| {
            anyhow::anyhow!("warm-up transfer: {e}; ledger log:\n{}", server.log_tail())
        })?;
    }
    let (server_cpu0, client_cpu0) = (server.cpu_time(), own_cpu_time());
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let mut tasks = Vec::with_capacity(cfg.clients);
    for (i, c) in clients.into_iter().enumerate() {
        let to = Account::of(receiver_principal(cfg.receivers, i));
        tasks.push(tokio::spawn(async move {
            let mut w = Worker {
                samples: Vec::with_capacity(4096),
                ..Worker::default()
            };
            let mut n: u64 = 0;
            let mut consecutive_errors = 0;
            while Instant::now() < deadline {
                n += 1;
                let t0 = Instant::now();
                // A distinct memo per transfer keeps ICRC-1 deduplication
                // from ever refusing two transfers created in the same ns.
                match c
                    .transfer(to, AMOUNT_E9S, Some(n.to_le_bytes().to_vec()))
                    .await
                {
                    Ok(_) => {
                        w.samples.push(t0.elapsed());
                        w.ok += 1;
                        consecutive_errors = 0;
                    }
                    Err(e) => {
                        w.errors += 1;
                        w.first_error.get_or_insert_with(|| e.to_string());
                        consecutive_errors += 1;
                        if consecutive_errors > 100 {
                            break;
                        }
                    }
                }
            }
            w
        }));
    }
    let mut workers = Vec::with_capacity(tasks.len());
    for t in tasks {
        workers.push(t.await?);
    }
    let elapsed = start.elapsed();
    let (server_cpu, client_cpu) = (
        server.cpu_time().saturating_sub(server_cpu0),
        own_cpu_time().saturating_sub(client_cpu0),
    );
    if !server.is_running() {
        bail!(
            "dc-ledger stopped during the run; log:\n{}",
            server.log_tail()
        );
    }
    let mut run = merge(workers, elapsed);
    (run.server_cpu, run.client_cpu) = (server_cpu, client_cpu);
    // Every acknowledged transfer (and the warm-up ones) must be in the ledger.
    let reader = LedgerClient::connect(&server.url, None).await?;
    let received: u64 = match cfg.receivers {
        Receivers::Sink => {
            reader
                .balance_of(receiver_principal(Receivers::Sink, 0))
                .await?
        }
        Receivers::Own => {
            let mut sum = 0;
            for i in 0..cfg.clients {
                sum += reader
                    .balance_of(receiver_principal(Receivers::Own, i))
                    .await?;
            }
            sum
        }
    };
    run.verified = received == (run.transfers + cfg.clients as u64) * AMOUNT_E9S;
    drop(server);
    Ok(run)
}

fn merge(workers: Vec<Worker>, elapsed: Duration) -> TransferRun {
    let mut samples = Vec::new();
    let (mut ok, mut errors, mut first_error) = (0, 0, None);
    for w in workers {
        ok += w.ok;
        errors += w.errors;
        if first_error.is_none() {
            first_error = w.first_error;
        }
        samples.extend(w.samples);
    }
    TransferRun {
        transfers: ok,
        errors,
        first_error,
        elapsed,
        latencies: Latencies::new(samples),
        verified: false,
        server_cpu: Duration::ZERO,
        client_cpu: Duration::ZERO,
    }
}

/// Account ids in the peer: clients `1..=C`, own receivers `C+1..=2C`, the
/// sink `2C+1`.
fn pg_receiver(receivers: Receivers, clients: usize, i: usize) -> i64 {
    match receivers {
        Receivers::Sink => 2 * clients as i64 + 1,
        Receivers::Own => (clients + 1 + i) as i64,
    }
}

/// Creates the peer's schema afresh.
pub fn pg_setup(cluster: &Cluster, clients: usize) -> anyhow::Result<()> {
    let mut db = cluster.connect()?;
    db.batch_execute(
        "DROP TABLE IF EXISTS transfers;
         DROP TABLE IF EXISTS accounts;
         CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint NOT NULL);
         CREATE TABLE transfers (id bigserial PRIMARY KEY, from_id bigint, to_id bigint, amount bigint, fee bigint, created_at timestamptz DEFAULT now());",
    )?;
    let funds = FUNDS_E9S as i64;
    let total = 2 * clients as i64 + 1;
    db.execute(
        "INSERT INTO accounts (id, balance) SELECT g, CASE WHEN g <= $1::bigint THEN $2::bigint ELSE 0 END FROM generate_series(1::bigint, $3::bigint) g",
        &[&(clients as i64), &funds, &total],
    )?;
    // Separate calls: VACUUM cannot run inside the implicit transaction of a batch.
    db.batch_execute("VACUUM ANALYZE accounts")?;
    db.batch_execute("CHECKPOINT")?;
    Ok(())
}

/// Runs the peer's side on a started cluster (schema from [`pg_setup`]).
pub fn run_peer(cluster: &Cluster, cfg: &TransferConfig) -> anyhow::Result<TransferRun> {
    pg_setup(cluster, cfg.clients)?;
    // `ready`: every thread connected, prepared and warmed up; then the
    // clock starts and `go` releases them.
    let ready = Arc::new(Barrier::new(cfg.clients + 1));
    let go = Arc::new(Barrier::new(cfg.clients + 1));
    let start_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let mut connections = Vec::with_capacity(cfg.clients);
    for _ in 0..cfg.clients {
        connections.push(cluster.connect()?);
    }
    let mut threads = Vec::with_capacity(cfg.clients);
    for (i, mut db) in connections.into_iter().enumerate() {
        let (ready, go) = (ready.clone(), go.clone());
        let start_at = start_at.clone();
        let duration = cfg.duration;
        let from = (i + 1) as i64;
        let to = pg_receiver(cfg.receivers, cfg.clients, i);
        threads.push(std::thread::spawn(move || -> anyhow::Result<Worker> {
            // Prepare and warm up (one transfer, like ours) before the
            // clock starts; always reach the barrier, even on failure.
            let setup = (|| -> anyhow::Result<PgStatements> {
                let st = PgStatements::prepare(&mut db)?;
                if !st.transfer(&mut db, from, to)? {
                    bail!("warm-up transfer refused");
                }
                Ok(st)
            })();
            ready.wait();
            go.wait();
            let st = setup?;
            let deadline = start_at
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .context("start time")?
                + duration;
            let mut w = Worker {
                samples: Vec::with_capacity(4096),
                ..Worker::default()
            };
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match st.transfer(&mut db, from, to) {
                    Ok(true) => {
                        w.samples.push(t0.elapsed());
                        w.ok += 1;
                    }
                    Ok(false) => {
                        w.errors += 1;
                        w.first_error
                            .get_or_insert_with(|| "insufficient funds".into());
                    }
                    Err(e) => {
                        w.errors += 1;
                        w.first_error.get_or_insert_with(|| e.to_string());
                        if w.errors > 100 {
                            break;
                        }
                    }
                }
            }
            Ok(w)
        }));
    }
    ready.wait();
    let (server_cpu0, client_cpu0) = (cluster.cpu_time(), own_cpu_time());
    let start = Instant::now();
    *start_at.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = Some(start);
    go.wait();
    let mut workers = Vec::with_capacity(threads.len());
    for t in threads {
        workers.push(
            t.join()
                .map_err(|_| anyhow::anyhow!("a PostgreSQL client thread panicked"))??,
        );
    }
    let elapsed = start.elapsed();
    let client_cpu = own_cpu_time().saturating_sub(client_cpu0);
    // Backends of the closed connections exit and are reaped: let that happen.
    std::thread::sleep(Duration::from_millis(300));
    let server_cpu = cluster.cpu_time().saturating_sub(server_cpu0);
    let mut run = merge(workers, elapsed);
    (run.server_cpu, run.client_cpu) = (server_cpu, client_cpu);
    let mut db = cluster.connect()?;
    let first_receiver = cfg.clients as i64 + 1;
    let row = db.query_one(
        "SELECT COALESCE(SUM(balance), 0)::bigint FROM accounts WHERE id >= $1",
        &[&first_receiver],
    )?;
    let received: i64 = row.get(0);
    let logged: i64 = db.query_one("SELECT count(*) FROM transfers", &[])?.get(0);
    let expected = run.transfers + cfg.clients as u64;
    run.verified = received as u64 == expected * AMOUNT_E9S && logged as u64 == expected;
    Ok(run)
}

/// The peer's three prepared statements.
struct PgStatements {
    debit: postgres::Statement,
    credit: postgres::Statement,
    log: postgres::Statement,
}

impl PgStatements {
    fn prepare(db: &mut postgres::Client) -> anyhow::Result<Self> {
        Ok(PgStatements {
            debit: db.prepare("UPDATE accounts SET balance = balance - $1::bigint - $2::bigint WHERE id = $3 AND balance >= $1::bigint + $2::bigint")?,
            credit: db.prepare("UPDATE accounts SET balance = balance + $1 WHERE id = $2")?,
            log: db.prepare("INSERT INTO transfers (from_id, to_id, amount, fee) VALUES ($1, $2, $3, $4)")?,
        })
    }

    /// One transfer, one transaction: two balance updates and a log insert.
    /// `false` when the sender lacks funds (rolled back).
    fn transfer(&self, db: &mut postgres::Client, from: i64, to: i64) -> anyhow::Result<bool> {
        let (amount, fee) = (AMOUNT_E9S as i64, FEE_E9S as i64);
        let mut tx = db.transaction()?;
        if tx.execute(&self.debit, &[&amount, &fee, &from])? != 1 {
            tx.rollback()?;
            return Ok(false);
        }
        tx.execute(&self.credit, &[&amount, &to])?;
        tx.execute(&self.log, &[&from, &to, &amount, &fee])?;
        tx.commit()?;
        Ok(true)
    }
}
