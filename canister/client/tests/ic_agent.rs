//! The Internet Computer transport against a real replica. Runs only where
//! `DC_IC_URL` is set to `ic://CANISTER_ID?url=REPLICA_URL` for an installed
//! ledger canister; elsewhere it says it was skipped.

use dc_identity::Identity;
use dc_ledger_client::{ClientError, LedgerClient};
use dc_ledger_core::Account;

#[tokio::test]
async fn ic_transport_reads_and_refuses_like_the_local_one() {
    let Ok(url) = std::env::var("DC_IC_URL") else {
        eprintln!("SKIPPED: set DC_IC_URL=ic://CANISTER_ID?url=REPLICA_URL to test the ic-agent transport against a replica");
        return;
    };
    // A fresh, unfunded identity: reads work, a transfer is refused by the ledger.
    let id = Identity::from_secret_bytes([0x5a; 32]);
    let me = id.principal();
    let client = LedgerClient::connect(&url, Some(id))
        .await
        .expect("connect");
    let params = client.params().await.expect("get_params");
    assert_eq!(params.token_symbol, "DCT");
    assert_eq!(client.balance_of(me).await.expect("balance"), 0);
    let stats = client.stats().await.expect("ledger_stats");
    let blocks = client.blocks(0, 10).await.expect("icrc3_get_blocks");
    assert_eq!(
        u64::try_from(&blocks.log_length.0).unwrap(),
        stats.log_length
    );
    match client
        .transfer(Account::of(candid::Principal::anonymous()), 1, None)
        .await
    {
        Err(ClientError::Transfer(msg)) => assert!(msg.contains("insufficient funds"), "{msg}"),
        other => panic!("expected an insufficient-funds refusal, got {other:?}"),
    }
}
