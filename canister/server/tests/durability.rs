//! Durability: while clients transfer concurrently, `kill -9` the service at
//! random moments; after each restart every acknowledged transfer is in the
//! log at the index it was acknowledged with, the hash chain is intact, and
//! balances equal genesis minus exactly the transfers in the log (nothing
//! half-applied). A torn journal tail is cut off on restart.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use candid::Principal;
use common::*;
use dc_ledger_client::LedgerClient;
use dc_ledger_core::Account;

const SENDERS: u8 = 6;
const GENESIS_E9S: u64 = 1_000_000_000_000;

type Acked = Arc<Mutex<Vec<(u64, Principal, u64)>>>; // (block, sender, amount)

async fn load(
    url: String,
    sender: u8,
    sink: Principal,
    acked: Acked,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let client = LedgerClient::connect(&url, Some(identity(sender)))
        .await
        .unwrap();
    let mut amount = 1_000 + sender as u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        match client.transfer(Account::of(sink), amount, None).await {
            Ok(block) => acked
                .lock()
                .unwrap()
                .push((block, identity(sender).principal(), amount)),
            Err(_) => return, // the server died under us
        }
        amount += 1;
    }
}

/// Checks the recovered ledger against what was acknowledged.
async fn verify(url: &str, acked: &[(u64, Principal, u64)], sink: Principal) {
    let c = LedgerClient::connect(url, None).await.unwrap();
    let fee = c.fee().await.unwrap();
    let stats = c.stats().await.unwrap();
    let mut blocks = Vec::new();
    while (blocks.len() as u64) < stats.log_length {
        let page = c.blocks(blocks.len() as u64, 2_000).await.unwrap();
        assert!(!page.blocks.is_empty());
        blocks.extend(page.blocks);
    }
    // Hash chain.
    for w in blocks.windows(2) {
        let phash = w[1]
            .block
            .as_map_get("phash")
            .and_then(|v| v.as_blob())
            .expect("phash")
            .to_vec();
        assert_eq!(
            phash,
            w[0].block.hash().to_vec(),
            "chain broken at block {}",
            w[1].id
        );
    }
    // Every acknowledged transfer is at its index.
    for (index, sender, amount) in acked {
        let b = &blocks[*index as usize].block;
        let tx = b.as_map_get("tx").expect("tx");
        let from = tx
            .as_map_get("from")
            .and_then(|v| v.as_array())
            .and_then(|a| a.first())
            .and_then(|v| v.as_blob())
            .expect("from");
        assert_eq!(from, sender.as_slice(), "block {index}");
        assert_eq!(
            tx.as_map_get("amt").and_then(|v| v.as_nat_u64()),
            Some(*amount),
            "block {index}"
        );
    }
    // Balances are genesis minus exactly what the log says was sent.
    let mut sent: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut total_in = 0u64;
    for b in &blocks {
        let tx = b.block.as_map_get("tx").unwrap();
        if tx.as_map_get("op").and_then(|v| v.as_text()) == Some("xfer") {
            let from = tx
                .as_map_get("from")
                .and_then(|v| v.as_array())
                .and_then(|a| a.first())
                .and_then(|v| v.as_blob())
                .unwrap()
                .to_vec();
            let amt = tx.as_map_get("amt").and_then(|v| v.as_nat_u64()).unwrap();
            *sent.entry(from).or_default() += amt + fee;
            total_in += amt;
        }
    }
    for s in 1..=SENDERS {
        let p = identity(s).principal();
        let out = sent.get(p.as_slice()).copied().unwrap_or(0);
        assert_eq!(
            c.balance_of(p).await.unwrap(),
            GENESIS_E9S - out,
            "sender {s}"
        );
    }
    assert_eq!(c.balance_of(sink).await.unwrap(), total_in);
    assert_eq!(stats.total_supply_e9s, SENDERS as u64 * GENESIS_E9S);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_transfers_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ids: Vec<_> = (1..=SENDERS).map(identity).collect();
    let genesis = write_genesis(dir.path(), &ids.iter().collect::<Vec<_>>(), 600);
    let sink = identity(99).principal();
    let acked: Acked = Arc::new(Mutex::new(Vec::new()));
    let mut server = start(&data, Some(&genesis));
    for round in 0..4u64 {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks: Vec<_> = (1..=SENDERS)
            .map(|s| {
                tokio::spawn(load(
                    server.url.clone(),
                    s,
                    sink,
                    acked.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        // Kill at a different moment each round, mid-load.
        tokio::time::sleep(Duration::from_millis(300 + 170 * round)).await;
        server.kill9();
        for t in tasks {
            let _ = t.await;
        }
        if round == 2 {
            // Simulate a write torn by the crash: junk after the last frame.
            use std::io::Write;
            let mut j = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("journal.log"))
                .unwrap();
            j.write_all(&[0x40, 0, 0, 0, 1, 2, 3]).unwrap();
        }
        server = start(&data, None);
        let snapshot: Vec<_> = acked.lock().unwrap().clone();
        assert!(
            !snapshot.is_empty(),
            "round {round}: no transfer was acknowledged"
        );
        verify(&server.url, &snapshot, sink).await;
    }
    // A clean stop snapshots; the next start has nothing to replay and the same state.
    let before = LedgerClient::connect(&server.url, None)
        .await
        .unwrap()
        .stats()
        .await
        .unwrap();
    server.terminate().expect("SIGTERM");
    let server = start(&data, None);
    let after = LedgerClient::connect(&server.url, None)
        .await
        .unwrap()
        .stats()
        .await
        .unwrap();
    assert_eq!(before.log_length, after.log_length);
    assert_eq!(
        std::fs::metadata(data.join("journal.log")).unwrap().len(),
        0,
        "clean stop leaves an empty journal"
    );
    let all: Vec<_> = acked.lock().unwrap().clone();
    verify(&server.url, &all, sink).await;
}
