//! Signed-envelope checks of the local service: a missing, wrong, expired or
//! replayed signature is refused with a clear error and changes nothing;
//! oversized and malformed requests too.

mod common;

use candid::Nat;
use common::*;
use dc_identity::Envelope;
use dc_ledger_client::LedgerClient;
use dc_ledger_core::{Account, TransferArg};

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn transfer_arg(to: candid::Principal, amount: u64) -> Vec<u8> {
    candid::encode_one(TransferArg {
        from_subaccount: None,
        to: Account::of(to),
        amount: Nat::from(amount),
        fee: None,
        memo: None,
        created_at_time: None,
    })
    .unwrap()
}

async fn post(url: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let r = reqwest::Client::new()
        .post(format!("{url}/api/v1/update"))
        .body(body)
        .send()
        .await
        .expect("post");
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_replays_and_garbage_are_refused_without_effect() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, mallory) = (identity(1), identity(2), identity(3));
    let genesis = write_genesis(dir.path(), &[&alice], 600);
    let server = start(&dir.path().join("data"), Some(&genesis));
    let reader = LedgerClient::connect(&server.url, None).await.unwrap();
    let balance = |p| {
        let reader = reader.clone();
        async move { reader.balance_of(p).await.unwrap() }
    };
    let start = balance(alice.principal()).await;
    let stats = reader.stats().await.unwrap();

    // A valid envelope goes through once.
    let env = Envelope::sign(
        &alice,
        "icrc1_transfer",
        transfer_arg(bob.principal(), 7),
        vec![1; 16],
        now_ns() + 60_000_000_000,
    );
    let (status, _) = post(&server.url, env.to_bytes()).await;
    assert_eq!(status, 200);
    assert_eq!(balance(bob.principal()).await, 7);

    // Replaying the same bytes is refused.
    let (status, body) = post(&server.url, env.to_bytes()).await;
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("replayed"));

    // Wrong signature: signed by mallory but claiming alice's key.
    let mut forged = Envelope::sign(
        &mallory,
        "icrc1_transfer",
        transfer_arg(mallory.principal(), 1_000),
        vec![2; 16],
        now_ns() + 60_000_000_000,
    );
    forged.sender_public_key = alice.public_key_der();
    let (status, body) = post(&server.url, forged.to_bytes()).await;
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));

    // Tampered argument after signing.
    let mut tampered = Envelope::sign(
        &alice,
        "icrc1_transfer",
        transfer_arg(bob.principal(), 1),
        vec![3; 16],
        now_ns() + 60_000_000_000,
    );
    tampered.arg = transfer_arg(mallory.principal(), 500);
    assert_eq!(post(&server.url, tampered.to_bytes()).await.0, 401);

    // Missing signature.
    let mut unsigned = Envelope::sign(
        &alice,
        "icrc1_transfer",
        transfer_arg(bob.principal(), 1),
        vec![4; 16],
        now_ns() + 60_000_000_000,
    );
    unsigned.signature.clear();
    assert_eq!(post(&server.url, unsigned.to_bytes()).await.0, 401);

    // Expired, and valid too far into the future.
    let expired = Envelope::sign(
        &alice,
        "icrc1_transfer",
        transfer_arg(bob.principal(), 1),
        vec![5; 16],
        now_ns() - 1,
    );
    assert_eq!(post(&server.url, expired.to_bytes()).await.0, 401);
    let far = Envelope::sign(
        &alice,
        "icrc1_transfer",
        transfer_arg(bob.principal(), 1),
        vec![6; 16],
        now_ns() + 3_600_000_000_000,
    );
    assert_eq!(post(&server.url, far.to_bytes()).await.0, 401);

    // Garbage, oversized, unknown method, query called as update.
    assert_eq!(post(&server.url, b"not candid".to_vec()).await.0, 400);
    assert_eq!(post(&server.url, vec![0u8; 2 * 1024 * 1024]).await.0, 413);
    let unknown = Envelope::sign(
        &alice,
        "mint_for_free",
        vec![],
        vec![7; 16],
        now_ns() + 60_000_000_000,
    );
    assert_eq!(post(&server.url, unknown.to_bytes()).await.0, 404);
    let query_as_update = Envelope::sign(
        &alice,
        "icrc1_balance_of",
        vec![],
        vec![8; 16],
        now_ns() + 60_000_000_000,
    );
    assert_eq!(post(&server.url, query_as_update.to_bytes()).await.0, 400);
    let bad_arg = Envelope::sign(
        &alice,
        "icrc1_transfer",
        b"DIDL\x00\x01\x7d".to_vec(),
        vec![9; 16],
        now_ns() + 60_000_000_000,
    );
    assert_eq!(post(&server.url, bad_arg.to_bytes()).await.0, 400);

    // Nothing but the one transfer happened.
    assert_eq!(
        balance(alice.principal()).await,
        start - 7 - reader.fee().await.unwrap()
    );
    assert_eq!(balance(mallory.principal()).await, 0);
    assert_eq!(
        reader.stats().await.unwrap().log_length,
        stats.log_length + 1
    );

    // A refused operation's nonce cannot be replayed later either: alice signs a
    // transfer she cannot afford, then receives funds; the replay is refused.
    let big = Envelope::sign(
        &bob,
        "icrc1_transfer",
        transfer_arg(alice.principal(), 100),
        vec![10; 16],
        now_ns() + 60_000_000_000,
    );
    assert_eq!(post(&server.url, big.to_bytes()).await.0, 200); // answered: InsufficientFunds inside the reply
    let alice_client = LedgerClient::connect(&server.url, Some(identity(1)))
        .await
        .unwrap();
    alice_client
        .transfer(Account::of(bob.principal()), 1_000_000, None)
        .await
        .unwrap();
    assert_eq!(post(&server.url, big.to_bytes()).await.0, 409);
    assert_eq!(balance(bob.principal()).await, 1_000_007);
}
