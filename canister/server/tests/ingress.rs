//! Custom domains through the client against a real `dc-ledger`: the holder
//! of a name is still its holder after a clean stop (snapshot, layout 04) and
//! after `kill -9` (journal replay), and a name freed by a final contract
//! stays free after both.

mod common;

use std::path::Path;

use common::*;
use dc_identity::{Delegation, Identity, Permission};
use dc_ledger::launch::LedgerProcess;
use dc_ledger_client::{ClientError, LedgerClient};
use dc_ledger_core::*;

/// A provider with one node and offering, and two funded developers.
struct Market {
    dir: tempfile::TempDir,
    provider: Identity,
    devs: [Identity; 2],
    offering: u64,
}

async fn client(url: &str, id: &Identity) -> LedgerClient {
    LedgerClient::connect(url, Some(Identity::from_secret_bytes(*id.secret_bytes())))
        .await
        .expect("connect")
}

async fn market() -> (Market, LedgerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let provider = identity(1);
    let node = identity(2);
    let devs = [identity(3), identity(4)];
    let genesis = write_genesis(dir.path(), &[&provider, &devs[0], &devs[1]], 600);
    let ledger = start(&dir.path().join("data"), Some(&genesis));
    let p = client(&ledger.url, &provider).await;
    p.register_provider(ProviderProfile {
        legal_name: "Ingress Co".into(),
        jurisdiction: "DE".into(),
        email: "ops@ingress.example".into(),
        website: String::new(),
    })
    .await
    .expect("provider");
    let delegation = Delegation::sign(
        &provider,
        node.public_key_der(),
        &[Permission::AcceptContracts, Permission::ReportStatus],
        u64::MAX,
    );
    p.register_node(RegisterNodeArgs {
        delegation,
        capabilities: NodeCapabilities {
            cpu_model: "AMD EPYC 9654".into(),
            vcpus: 16,
            ram_gib: 64,
            storage_gib: 1_000,
            bandwidth_mbps: 1_000,
            gpus: vec![],
            confidential: Confidential::None,
            region: "eu-central".into(),
            country: "DE".into(),
            image_hash: "00".repeat(32),
        },
    })
    .await
    .expect("node");
    let offering = p
        .add_offering(OfferingSpec {
            node: node.principal(),
            name: "2c".into(),
            vcpus: 2,
            ram_gib: 4,
            storage_gib: 20,
            bandwidth_mbps: 100,
            gpu: None,
            confidential: Confidential::None,
            region: "eu-central".into(),
            country: "DE".into(),
            price_e9s_per_hour: E9S_PER_TOKEN / 10,
            min_hours: 1,
            max_hours: 100,
        })
        .await
        .expect("offering");
    let m = Market {
        dir,
        provider,
        devs,
        offering,
    };
    (m, ledger)
}

fn restart(data: &Path) -> LedgerProcess {
    start(data, None)
}

fn is_taken(r: Result<Contract, ClientError>, name: &str) -> bool {
    matches!(r, Err(ClientError::Ledger(LedgerError::AlreadyRegistered(what))) if what.contains(name))
}

#[tokio::test(flavor = "multi_thread")]
async fn domain_holders_survive_snapshots_and_crashes() {
    let (m, ledger) = market().await;
    let data = m.dir.path().join("data");
    let a = client(&ledger.url, &m.devs[0]).await;
    let b = client(&ledger.url, &m.devs[1]).await;
    let first = a.rent(m.offering, 10).await.expect("rent").id;
    let second = b.rent(m.offering, 10).await.expect("rent").id;

    let c = a
        .set_contract_ingress(
            first,
            vec!["app.example.com".into(), "*.app.example.com".into()],
            true,
        )
        .await
        .expect("set ingress");
    assert_eq!(
        c.ingress,
        IngressSettings {
            domains: vec!["app.example.com".into(), "*.app.example.com".into()],
            proxy_protocol: true,
        }
    );
    // Only the developer, and a held name is refused.
    let provider = client(&ledger.url, &m.provider).await;
    assert!(matches!(
        provider
            .set_contract_ingress(first, vec!["x.example.com".into()], false)
            .await,
        Err(ClientError::Ledger(LedgerError::Unauthorized { .. }))
    ));
    assert!(is_taken(
        b.set_contract_ingress(second, vec!["app.example.com".into()], false)
            .await,
        "app.example.com"
    ));

    // Clean stop: the snapshot carries the contract's settings and the index
    // is rebuilt from it.
    ledger.terminate().expect("terminate");
    let ledger = restart(&data);
    let a = client(&ledger.url, &m.devs[0]).await;
    let b = client(&ledger.url, &m.devs[1]).await;
    let shown = a.contract(first).await.unwrap().expect("contract");
    assert_eq!(shown.ingress, c.ingress);
    assert!(is_taken(
        b.set_contract_ingress(second, vec!["*.app.example.com".into()], false)
            .await,
        "*.app.example.com"
    ));

    // The holder ends its contract; after a crash the name is still free,
    // and the second contract takes it.
    a.cancel(first).await.expect("cancel");
    ledger.kill9();
    let ledger = restart(&data);
    let b = client(&ledger.url, &m.devs[1]).await;
    let taken = b
        .set_contract_ingress(second, vec!["app.example.com".into()], false)
        .await
        .expect("the name was freed");
    assert_eq!(taken.ingress.domains, vec!["app.example.com".to_string()]);

    // And that survives a crash too (journal replay).
    ledger.kill9();
    let ledger = restart(&data);
    let a = client(&ledger.url, &m.devs[0]).await;
    let again = a.rent(m.offering, 1).await.expect("rent").id;
    assert!(is_taken(
        a.set_contract_ingress(again, vec!["app.example.com".into()], false)
            .await,
        "app.example.com"
    ));
    let listed = a
        .list_contracts(Some(m.devs[1].principal()), 0, 10)
        .await
        .expect("list");
    assert_eq!(listed[0].id, second);
    assert_eq!(
        listed[0].ingress.domains,
        vec!["app.example.com".to_string()]
    );
    ledger.kill9();
}
