//! Benchmark 2: matching among a million offerings.
//!
//! The same seeded world and queries are measured three ways: `Ledger::search`
//! in-process; the release `dc-ledger` serving a snapshot of that ledger
//! over HTTP (with its resident memory); and PostgreSQL holding the same
//! offerings, asked the same queries in SQL. Every system's pages are
//! compared with the in-process ones.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use dc_ledger_client::LedgerClient;
use dc_ledger_core::market::DEFAULT_SEARCH_LIMIT;
use dc_ledger_core::{Confidential, SearchQuery};
use postgres::types::ToSql;

use crate::pg::Cluster;
use crate::server::LedgerProcess;
use crate::stats::{thousands, Latencies};
use crate::world::{self, World, WorldConfig};

/// Parameters of benchmark 2.
#[derive(Clone, Debug)]
pub struct MatchingConfig {
    pub offerings: usize,
    pub queries: usize,
    /// Queries run (unmeasured) before the measured pass.
    pub warm: usize,
    pub seed: u64,
    pub work_dir: PathBuf,
    pub ledger_bin: PathBuf,
}

/// Latencies and result counts of one way of asking.
#[derive(Clone, Debug, Default)]
pub struct Side {
    pub latencies: Latencies,
    /// Offers returned over all queries (so no work is optimized away).
    pub matches: u64,
    /// Queries whose page differs from the in-process one.
    pub mismatches: usize,
}

/// The service's side.
#[derive(Clone, Debug)]
pub struct Service {
    pub side: Side,
    pub rss_bytes: u64,
    pub snapshot_bytes: u64,
    pub startup: Duration,
}

/// The peer's side.
#[derive(Clone, Debug)]
pub struct Peer {
    pub side: Side,
    pub rss_bytes: u64,
    pub processes: usize,
    pub load: Duration,
    pub relation_bytes: u64,
}

/// Everything benchmark 2 measured.
#[derive(Clone, Debug)]
pub struct MatchingResults {
    /// Of the slowest 1% of in-process queries (at least 10), how many ask
    /// for GPUs, and how many that is.
    pub slowest_gpu: (usize, usize),
    /// Median in-process latency of queries that ask for GPUs, and of the rest.
    pub median_gpu: Duration,
    pub median_other: Duration,
    pub offerings: usize,
    pub providers: usize,
    pub nodes: usize,
    pub queries: usize,
    pub build: Duration,
    pub in_process: Side,
    pub service: Service,
    pub peer: Option<Peer>,
}

fn step<T>(label: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    eprint!("{label}… ");
    let _ = std::io::stderr().flush();
    let t = Instant::now();
    let r = f();
    eprintln!("{:.1} s", t.elapsed().as_secs_f64());
    r
}

/// Offering ids of a page, for comparisons.
type Page = Vec<u64>;

/// Runs benchmark 2. `peer`: the started PostgreSQL cluster, if any.
pub fn run(
    cfg: &MatchingConfig,
    rt: &tokio::runtime::Runtime,
    peer: Option<&Cluster>,
) -> anyhow::Result<MatchingResults> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    let wc = WorldConfig::benchmark(cfg.offerings, cfg.seed, now);
    let t = Instant::now();
    let world = step(
        &format!("loading {} offerings", thousands(cfg.offerings as u64)),
        || {
            world::build(&wc, |_| {
                eprint!(".");
                let _ = std::io::stderr().flush();
            })
        },
    )?;
    let build = t.elapsed();
    let queries = world::queries(&world, cfg.queries, cfg.seed);
    let warm: Vec<&SearchQuery> = queries.iter().take(cfg.warm).collect();

    // In-process.
    let in_process = step(
        &format!("{} queries in-process", thousands(queries.len() as u64)),
        || {
            for q in &warm {
                world.ledger.search(q).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            let mut samples = Vec::with_capacity(queries.len());
            let mut pages: Vec<Page> = Vec::with_capacity(queries.len());
            let mut matches = 0;
            for q in &queries {
                let t = Instant::now();
                let r = world
                    .ledger
                    .search(q)
                    .map_err(|e| anyhow::anyhow!("search: {e}"))?;
                samples.push(t.elapsed());
                matches += r.offers.len() as u64;
                pages.push(r.offers.iter().map(|o| o.offering_id).collect());
            }
            Ok((samples, matches, pages))
        },
    )?;
    let (samples, matches, pages) = in_process;
    let asks_gpu = |q: &SearchQuery| q.gpu_model.is_some() || q.min_gpus.unwrap_or(0) > 0;
    let mut by_time: Vec<(Duration, bool)> = samples
        .iter()
        .zip(&queries)
        .map(|(d, q)| (*d, asks_gpu(q)))
        .collect();
    by_time.sort_by_key(|t| std::cmp::Reverse(t.0));
    let slowest = (queries.len() / 100).max(10).min(queries.len());
    let slowest_gpu = (
        by_time.iter().take(slowest).filter(|(_, g)| *g).count(),
        slowest,
    );
    let median_of = |gpu: bool| {
        Latencies::new(
            by_time
                .iter()
                .filter(|(_, g)| *g == gpu)
                .map(|(d, _)| *d)
                .collect(),
        )
        .p50()
    };
    let (median_gpu, median_other) = (median_of(true), median_of(false));
    let in_process = Side {
        latencies: Latencies::new(samples),
        matches,
        mismatches: 0,
    };

    // The service, from a snapshot of the same ledger.
    let dir = crate::cleanup::ScratchDir::new("ledger-matching-", &cfg.work_dir)?;
    let data = dir.path().join("ledger");
    let snapshot_bytes = step("writing the snapshot", || {
        dc_ledger::store::Store::create(&data, &world.ledger)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(std::fs::metadata(data.join("snapshot.bin"))
            .map(|m| m.len())
            .unwrap_or(0))
    })?;
    let server = step("starting dc-ledger on it", || {
        LedgerProcess::start(&cfg.ledger_bin, &data, None, Duration::from_secs(600))
    })?;
    let service = step(
        &format!("{} queries over HTTP", thousands(queries.len() as u64)),
        || {
            rt.block_on(async {
                let client = LedgerClient::connect(&server.url, None).await?;
                for q in &warm {
                    client.search((*q).clone()).await?;
                }
                let mut samples = Vec::with_capacity(queries.len());
                let (mut matches, mut mismatches) = (0, 0);
                for (q, expected) in queries.iter().zip(&pages) {
                    let t = Instant::now();
                    let r = client.search(q.clone()).await?;
                    samples.push(t.elapsed());
                    matches += r.offers.len() as u64;
                    if r.offers.iter().map(|o| o.offering_id).collect::<Page>() != *expected {
                        mismatches += 1;
                    }
                }
                anyhow::Ok(Side {
                    latencies: Latencies::new(samples),
                    matches,
                    mismatches,
                })
            })
        },
    )?;
    let rss_bytes = server.rss_bytes()?;
    let startup = server.startup;
    drop(server);
    drop(dir);
    let service = Service {
        side: service,
        rss_bytes,
        snapshot_bytes,
        startup,
    };

    let peer = match peer {
        Some(cluster) => Some(run_peer(cluster, &world, &queries, cfg.warm, &pages)?),
        None => None,
    };
    let stats = world.ledger.stats();
    Ok(MatchingResults {
        offerings: stats.offerings as usize,
        providers: stats.providers as usize,
        nodes: stats.nodes as usize,
        queries: queries.len(),
        slowest_gpu,
        median_gpu,
        median_other,
        build,
        in_process,
        service,
        peer,
    })
}

const COLUMNS: &str = "id, provider, node, name, price, vcpus, ram_gib, storage_gib, bandwidth_mbps, gpus, gpu_model, gpu_memory_gib, confidential, region, country, min_hours, max_hours, reputation";

fn run_peer(
    cluster: &Cluster,
    world: &World,
    queries: &[SearchQuery],
    warm: usize,
    pages: &[Page],
) -> anyhow::Result<Peer> {
    let mut db = cluster.connect()?;
    let t = Instant::now();
    step(
        &format!(
            "PostgreSQL: COPY {} offerings",
            thousands(world.offering_ids.len() as u64)
        ),
        || {
            db.batch_execute(
            "DROP TABLE IF EXISTS offerings;
             CREATE TABLE offerings (
                 id bigint NOT NULL, provider text NOT NULL, node text NOT NULL, name text NOT NULL,
                 price bigint NOT NULL, vcpus int NOT NULL, ram_gib int NOT NULL, storage_gib int NOT NULL,
                 bandwidth_mbps int NOT NULL, gpus int NOT NULL, gpu_model text, gpu_memory_gib int,
                 confidential text NOT NULL, region text NOT NULL, country text NOT NULL,
                 min_hours int NOT NULL, max_hours int NOT NULL,
                 reputation bigint NOT NULL  -- the provider's, denormalized
             );",
        )?;
            let mut w = db.copy_in(&format!("COPY offerings ({COLUMNS}) FROM STDIN"))?;
            let mut buf = String::with_capacity(1 << 20);
            for &id in &world.offering_ids {
                let o = world.ledger.offering(id).context("offering vanished")?;
                let s = &o.spec;
                let rep = world.ledger.reputation_of(&o.provider);
                let (gpus, model, mem) = match &s.gpu {
                    Some(g) => (
                        g.count,
                        g.model.to_ascii_lowercase(),
                        g.memory_gib.to_string(),
                    ),
                    None => (0, "\\N".to_string(), "\\N".to_string()),
                };
                use std::fmt::Write as _;
                let _ = writeln!(
                    buf,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    o.id,
                    o.provider,
                    s.node,
                    s.name,
                    s.price_e9s_per_hour,
                    s.vcpus,
                    s.ram_gib,
                    s.storage_gib,
                    s.bandwidth_mbps,
                    gpus,
                    model,
                    mem,
                    s.confidential.as_str(),
                    s.region.to_ascii_lowercase(),
                    s.country.to_ascii_lowercase(),
                    s.min_hours,
                    s.max_hours,
                    rep
                );
                if buf.len() > (1 << 20) - 4096 {
                    w.write_all(buf.as_bytes())?;
                    buf.clear();
                }
            }
            w.write_all(buf.as_bytes())?;
            w.finish()?;
            Ok(())
        },
    )?;
    step("PostgreSQL: indexes and ANALYZE", || {
        db.batch_execute(
            "ALTER TABLE offerings ADD PRIMARY KEY (id);
             CREATE INDEX offerings_price ON offerings (price, reputation DESC, id);
             CREATE INDEX offerings_kind ON offerings (confidential, gpu_model, region);",
        )?;
        db.batch_execute("VACUUM ANALYZE offerings")?;
        Ok(())
    })?;
    let load = t.elapsed();
    let relation_bytes: i64 = db
        .query_one("SELECT pg_total_relation_size('offerings')", &[])?
        .get(0);
    let side = step(
        &format!("PostgreSQL: {} queries", thousands(queries.len() as u64)),
        || {
            for q in queries.iter().take(warm) {
                pg_search(&mut db, q)?;
            }
            let mut samples = Vec::with_capacity(queries.len());
            let (mut matches, mut mismatches) = (0, 0);
            for (q, expected) in queries.iter().zip(pages) {
                let t = Instant::now();
                let page = pg_search(&mut db, q)?;
                samples.push(t.elapsed());
                matches += page.len() as u64;
                if page != *expected {
                    mismatches += 1;
                }
            }
            Ok(Side {
                latencies: Latencies::new(samples),
                matches,
                mismatches,
            })
        },
    )?;
    let (rss_bytes, processes) = cluster.total_rss_bytes()?;
    // For analysis: `DC_QA_EXPLAIN=N` prints the plans of the N slowest queries.
    if let Some(n) = std::env::var("DC_QA_EXPLAIN")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let mut timed: Vec<(std::time::Duration, usize)> = Vec::new();
        for (i, q) in queries.iter().enumerate() {
            let t = Instant::now();
            pg_search(&mut db, q)?;
            timed.push((t.elapsed(), i));
        }
        timed.sort();
        for &(d, i) in timed.iter().rev().take(n) {
            let (sql, params) = pg_query(&queries[i]);
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref()).collect();
            let plan = db.query(&format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"), &refs)?;
            eprintln!("\n-- query {i}, {d:?}: {:?}", queries[i]);
            for row in plan {
                eprintln!("{}", row.get::<_, String>(0));
            }
        }
    }
    Ok(Peer {
        side,
        rss_bytes,
        processes,
        load,
        relation_bytes: relation_bytes as u64,
    })
}

/// The SQL equivalent of a search: the same filters (GPU model, region and
/// country compared in lower case), `ORDER BY price, reputation DESC, id`,
/// `LIMIT`/`OFFSET`. The ledger also checks each node's free capacity; in
/// this benchmark no contract holds any, and every offering fits its node.
pub fn pg_query(q: &SearchQuery) -> (String, Vec<Box<dyn ToSql + Sync>>) {
    let mut conds: Vec<String> = Vec::new();
    let mut params: Vec<Box<dyn ToSql + Sync>> = Vec::new();
    let mut push = |cond: &str, v: Box<dyn ToSql + Sync>, conds: &mut Vec<String>| {
        params.push(v);
        conds.push(cond.replace('$', &format!("${}", params.len())));
    };
    if let Some(m) = q.max_price_e9s_per_hour {
        push(
            "price <= $",
            Box::new(m.min(i64::MAX as u64) as i64),
            &mut conds,
        );
    }
    let int = |v: u32| Box::new(v.min(i32::MAX as u32) as i32);
    if let Some(v) = q.min_vcpus {
        push("vcpus >= $", int(v), &mut conds);
    }
    if let Some(v) = q.min_ram_gib {
        push("ram_gib >= $", int(v), &mut conds);
    }
    if let Some(v) = q.min_storage_gib {
        push("storage_gib >= $", int(v), &mut conds);
    }
    if let Some(v) = q.min_bandwidth_mbps {
        push("bandwidth_mbps >= $", int(v), &mut conds);
    }
    let min_gpus = q
        .min_gpus
        .unwrap_or(if q.gpu_model.is_some() { 1 } else { 0 });
    if min_gpus > 0 {
        push("gpus >= $", int(min_gpus), &mut conds);
    }
    if let Some(m) = &q.gpu_model {
        push(
            "gpu_model = $",
            Box::new(m.to_ascii_lowercase()),
            &mut conds,
        );
    }
    if let Some(c) = q.confidential {
        let c: Confidential = c;
        push(
            "confidential = $",
            Box::new(c.as_str().to_string()),
            &mut conds,
        );
    }
    if let Some(r) = &q.region {
        let r = r.to_ascii_lowercase();
        push("(region = $ OR country = $)", Box::new(r), &mut conds);
    }
    if let Some(h) = q.hours {
        push("min_hours <= $ AND max_hours >= $", int(h), &mut conds);
    }
    if let Some(m) = q.min_provider_reputation {
        push(
            "reputation >= $",
            Box::new(m.min(i64::MAX as u64) as i64),
            &mut conds,
        );
    }
    let limit = q.limit.unwrap_or(DEFAULT_SEARCH_LIMIT) as i64;
    let offset = q.offset.unwrap_or(0).min(i64::MAX as u64) as i64;
    let mut sql = format!("SELECT {COLUMNS} FROM offerings");
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    params.push(Box::new(limit));
    params.push(Box::new(offset));
    sql.push_str(&format!(
        " ORDER BY price, reputation DESC, id LIMIT ${} OFFSET ${}",
        params.len() - 1,
        params.len()
    ));
    (sql, params)
}

fn pg_search(db: &mut postgres::Client, q: &SearchQuery) -> anyhow::Result<Page> {
    let (sql, params) = pg_query(q);
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref()).collect();
    let rows = db
        .query(&sql, &refs)
        .with_context(|| format!("query {sql}"))?;
    Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_numbers_parameters_in_order() {
        let q = SearchQuery {
            max_price_e9s_per_hour: Some(5),
            gpu_model: Some("H100".into()),
            region: Some("DE".into()),
            hours: Some(24),
            offset: Some(20),
            limit: Some(100),
            ..SearchQuery::default()
        };
        let (sql, params) = pg_query(&q);
        assert!(sql.contains("price <= $1 AND gpus >= $2 AND gpu_model = $3 AND (region = $4 OR country = $4) AND min_hours <= $5 AND max_hours >= $5"), "{sql}");
        assert!(
            sql.ends_with("ORDER BY price, reputation DESC, id LIMIT $6 OFFSET $7"),
            "{sql}"
        );
        assert_eq!(params.len(), 7);
    }
}
