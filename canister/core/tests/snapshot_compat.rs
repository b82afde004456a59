//! Snapshots written by earlier layouts still load.

mod common;

use common::*;
use dc_ledger_core::*;
use serde_bytes::ByteBuf;

/// The ledger `fixtures/ledger-v02.bin` was written from: the common world,
/// one contract active (endpoint and evidence hash set), one requested that
/// then misses its provisioning deadline, and an hour of billing. Keep it as
/// it is: the fixture was produced from it.
fn v02_scenario() -> Ledger {
    let mut w = World::new();
    let dev = w.devs[1].principal();
    let node = w.nodes[0].principal();
    let active = w
        .ledger
        .rent(
            dev,
            w.now,
            RentArgs {
                offering_id: w.offerings[0],
                hours: 10,
            },
        )
        .expect("rent");
    w.ledger
        .accept_contract(node, w.now, active.id)
        .expect("accept");
    w.ledger
        .start_provisioning(node, w.now, active.id)
        .expect("provision");
    w.ledger
        .report_active(
            node,
            w.now,
            ReportActiveArgs {
                contract_id: active.id,
                endpoint: "c0.node0.example".into(),
                evidence_hash: ByteBuf::from(vec![5; 32]),
                launch_measurement: None,
            },
        )
        .expect("active");
    w.ledger
        .rent(
            w.devs[0].principal(),
            w.now,
            RentArgs {
                offering_id: w.offerings[2],
                hours: 3,
            },
        )
        .expect("rent");
    w.ledger.tick(w.now + HOUR_NS);
    w.ledger
}

/// Written by the ledger of layout 02 (before `Contract.launch_measurement`)
/// from [`v02_scenario`]. A canister upgrade or a `dc-ledger` restart after
/// updating the binary reads exactly such bytes.
const V02_FIXTURE: &[u8] = include_bytes!("fixtures/ledger-v02.bin");

#[test]
fn a_layout_02_snapshot_decodes_into_the_same_ledger() {
    assert!(V02_FIXTURE.starts_with(b"DCLEDG02"));
    let old = snapshot::decode(V02_FIXTURE).expect("layout 02 still decodes");
    // Every field, contracts included, equals what today's code builds from
    // the same operations; the new field is empty.
    assert_eq!(old, v02_scenario());
    let active = old.contract_info(0).expect("contract 0");
    assert_eq!(active.state, ContractState::Active);
    assert_eq!(active.endpoint.as_deref(), Some("c0.node0.example"));
    assert_eq!(active.evidence_hash, Some(ByteBuf::from(vec![5; 32])));
    assert_eq!(active.launch_measurement, None);
    assert_eq!(
        old.contract_info(1).expect("contract 1").state,
        ContractState::DeadlineMissed
    );
    // It is written back in the current layout, which round-trips.
    let now = snapshot::encode(&old);
    assert!(now.starts_with(snapshot::SNAPSHOT_MAGIC));
    assert_ne!(snapshot::SNAPSHOT_MAGIC, b"DCLEDG02");
    assert_eq!(snapshot::decode(&now).expect("current layout"), old);
    // A damaged layout-02 body is refused, not misread.
    let mut cut = V02_FIXTURE.to_vec();
    cut.truncate(cut.len() - 10);
    assert!(matches!(
        snapshot::decode(&cut),
        Err(snapshot::SnapshotError::Corrupt(_))
    ));
}

#[test]
fn a_published_measurement_survives_a_snapshot() {
    let mut w = World::new();
    let (node, oid) = w.confidential_offering(Confidential::Tdx);
    let cid = w
        .ledger
        .rent(
            w.devs[0].principal(),
            w.now,
            RentArgs {
                offering_id: oid,
                hours: 2,
            },
        )
        .expect("rent")
        .id;
    w.ledger.accept_contract(node, w.now, cid).expect("accept");
    w.ledger
        .start_provisioning(node, w.now, cid)
        .expect("provision");
    w.ledger
        .report_active(
            node,
            w.now,
            ReportActiveArgs {
                contract_id: cid,
                endpoint: "td.example".into(),
                evidence_hash: ByteBuf::from(vec![1; 32]),
                launch_measurement: Some(ByteBuf::from(vec![0xab; 144])),
            },
        )
        .expect("active");
    let back = snapshot::decode(&snapshot::encode(&w.ledger)).expect("decode");
    assert_eq!(back, w.ledger);
    assert_eq!(
        back.contract_info(cid).unwrap().launch_measurement,
        Some(ByteBuf::from(vec![0xab; 144]))
    );
}

/// The ledger `fixtures/ledger-v03.bin` was written from: the common world,
/// an active contract, a confidential (TDX) contract active with its launch
/// measurement, a contract that misses its provisioning deadline, and an hour
/// of billing. Keep it as it is: the fixture was produced from it. One step
/// differs: the ledger of layout 03 took a TDX VM's MRTD alone (48 bytes)
/// as its launch measurement, today's wants MRTD, RTMR1 and RTMR2 (144), so
/// the TDX contract reports [`V03_TDX_MEASUREMENT`] and the test compares
/// the fixture with that one blob rewritten (see
/// [`a_layout_03_snapshot_decodes_into_the_same_ledger`]).
fn v03_scenario() -> Ledger {
    let mut w = World::new();
    let dev = w.devs[1].principal();
    let node = w.nodes[0].principal();
    let active = w
        .ledger
        .rent(
            dev,
            w.now,
            RentArgs {
                offering_id: w.offerings[0],
                hours: 10,
            },
        )
        .expect("rent");
    w.ledger
        .accept_contract(node, w.now, active.id)
        .expect("accept");
    w.ledger
        .start_provisioning(node, w.now, active.id)
        .expect("provision");
    w.ledger
        .report_active(
            node,
            w.now,
            ReportActiveArgs {
                contract_id: active.id,
                endpoint: "c0.node0.example".into(),
                evidence_hash: ByteBuf::from(vec![5; 32]),
                launch_measurement: None,
            },
        )
        .expect("active");
    let (td_node, td_offering) = w.confidential_offering(Confidential::Tdx);
    let td = w
        .ledger
        .rent(
            w.devs[0].principal(),
            w.now,
            RentArgs {
                offering_id: td_offering,
                hours: 4,
            },
        )
        .expect("rent tdx");
    w.ledger
        .accept_contract(td_node, w.now, td.id)
        .expect("accept tdx");
    w.ledger
        .start_provisioning(td_node, w.now, td.id)
        .expect("provision tdx");
    w.ledger
        .report_active(
            td_node,
            w.now,
            ReportActiveArgs {
                contract_id: td.id,
                endpoint: "c1.td.example".into(),
                evidence_hash: ByteBuf::from(vec![6; 32]),
                launch_measurement: Some(ByteBuf::from(V03_TDX_MEASUREMENT.to_vec())),
            },
        )
        .expect("active tdx");
    w.ledger
        .rent(
            w.devs[0].principal(),
            w.now,
            RentArgs {
                offering_id: w.offerings[2],
                hours: 3,
            },
        )
        .expect("rent");
    w.ledger.tick(w.now + HOUR_NS);
    w.ledger
}

/// Written by the ledger of layout 03 (before `Contract.ingress`) from
/// [`v03_scenario`]: what a canister upgrade or a `dc-ledger` restart after
/// updating the binary reads.
const V03_FIXTURE: &[u8] = include_bytes!("fixtures/ledger-v03.bin");

/// The TDX launch measurement [`v03_scenario`] reports today: the fixture's
/// MRTD-only one, `[0xcd; 48]`, followed by RTMR1 and RTMR2.
const V03_TDX_MEASUREMENT: [u8; 144] = {
    let mut m = [0u8; 144];
    let mut i = 0;
    while i < 48 {
        m[i] = 0xcd;
        i += 1;
    }
    m
};

/// The fixture with its one TDX launch measurement (postcard: length 48,
/// then the bytes) rewritten to [`V03_TDX_MEASUREMENT`] (length 144 as a
/// two-byte varint), so that it can be compared with [`v03_scenario`].
fn v03_fixture_with_todays_tdx_measurement() -> Vec<u8> {
    let mut old = vec![48u8];
    old.extend_from_slice(&[0xcd; 48]);
    let hits: Vec<usize> = V03_FIXTURE
        .windows(old.len())
        .enumerate()
        .filter(|(_, w)| *w == old.as_slice())
        .map(|(at, _)| at)
        .collect();
    assert_eq!(hits.len(), 1, "one TDX measurement in the fixture");
    let at = hits[0];
    let mut patched = V03_FIXTURE[..at].to_vec();
    patched.extend_from_slice(&[0x90, 0x01]);
    patched.extend_from_slice(&V03_TDX_MEASUREMENT);
    patched.extend_from_slice(&V03_FIXTURE[at + old.len()..]);
    patched
}

#[test]
fn a_layout_03_snapshot_decodes_into_the_same_ledger() {
    assert!(V03_FIXTURE.starts_with(b"DCLEDG03"));
    let old = snapshot::decode(V03_FIXTURE).expect("layout 03 still decodes");
    // Every field equals what today's code builds from the same operations
    // (the TDX measurement aside, see `v03_scenario`); the new field is
    // empty and no name is held.
    let comparable = snapshot::decode(&v03_fixture_with_todays_tdx_measurement())
        .expect("rewritten layout 03 decodes");
    assert_eq!(comparable, v03_scenario());
    let active = old.contract_info(0).expect("contract 0");
    assert_eq!(active.state, ContractState::Active);
    assert_eq!(active.endpoint.as_deref(), Some("c0.node0.example"));
    assert_eq!(active.ingress, IngressSettings::default());
    let td = old.contract_info(1).expect("contract 1");
    assert_eq!(td.state, ContractState::Active);
    assert_eq!(td.launch_measurement, Some(ByteBuf::from(vec![0xcd; 48])));
    assert_eq!(td.ingress, IngressSettings::default());
    assert_eq!(
        old.contract_info(2).expect("contract 2").state,
        ContractState::DeadlineMissed
    );
    // Written back in the current layout, which round-trips.
    let now = snapshot::encode(&old);
    assert!(now.starts_with(snapshot::SNAPSHOT_MAGIC));
    assert_ne!(snapshot::SNAPSHOT_MAGIC, b"DCLEDG03");
    assert_eq!(snapshot::decode(&now).expect("current layout"), old);
    // A damaged layout-03 body is refused, not misread.
    let mut cut = V03_FIXTURE.to_vec();
    cut.truncate(cut.len() - 10);
    assert!(matches!(
        snapshot::decode(&cut),
        Err(snapshot::SnapshotError::Corrupt(_))
    ));
}

#[test]
fn an_upgraded_ledger_takes_custom_domains_and_keeps_them_across_snapshots() {
    for fixture in [V02_FIXTURE, V03_FIXTURE] {
        let mut ledger = snapshot::decode(fixture).expect("decode");
        let c = ledger.contract_info(0).expect("contract 0");
        let now = ledger.time_ns();
        ledger
            .set_contract_ingress(
                c.developer,
                now,
                SetIngressArgs {
                    contract_id: c.id,
                    domains: vec!["app.example.com".into(), "*.app.example.com".into()],
                    proxy_protocol: true,
                },
            )
            .expect("set ingress after the upgrade");
        let back = snapshot::decode(&snapshot::encode(&ledger)).expect("current layout");
        // `==` compares the holder index too: the rebuilt one equals the live one.
        assert_eq!(back, ledger);
        assert_eq!(back.domain_holder("app.example.com"), Some(c.id));
        assert_eq!(back.domain_holder("*.app.example.com"), Some(c.id));
        let shown = back.contract_info(c.id).unwrap().ingress;
        assert_eq!(shown.domains.len(), 2);
        assert!(shown.proxy_protocol);
    }
}
