//! Behaviour of the ledger core: token, market, contracts, reputation, rewards.

mod common;

use candid::{Nat, Principal};
use common::*;
use dc_identity::{Delegation, Domain, Permission};
use dc_ledger_core::*;
use serde_bytes::ByteBuf;

fn transfer(to: Principal, amount: u64) -> TransferArg {
    TransferArg {
        from_subaccount: None,
        to: Account::of(to),
        amount: Nat::from(amount),
        fee: None,
        memo: None,
        created_at_time: None,
    }
}

#[test]
fn transfer_moves_amount_and_fee_and_links_blocks() {
    let mut w = World::new();
    let (a, b) = (w.devs[0].principal(), w.devs[1].principal());
    let before = w.ledger.log_length();
    let block = w
        .ledger
        .icrc1_transfer(a, w.now, transfer(b, 5 * TOKEN))
        .expect("transfer");
    assert_eq!(block, Nat::from(before));
    let fee = w.ledger.params().transfer_fee_e9s;
    assert_eq!(
        w.ledger.balance_of(&Account::of(a)),
        10_000 * TOKEN - 5 * TOKEN - fee
    );
    assert_eq!(w.ledger.balance_of(&Account::of(b)), 10_005 * TOKEN);
    // Hash chain: each block's phash is its predecessor's hash.
    for i in 1..w.ledger.log_length() {
        let v = w.ledger.block(i).unwrap();
        let phash = v
            .as_map_get("phash")
            .and_then(|p| p.as_blob())
            .unwrap()
            .to_vec();
        assert_eq!(
            phash,
            w.ledger.block(i - 1).unwrap().hash().to_vec(),
            "block {i}"
        );
    }
    let (tip_index, tip_hash) = w.ledger.tip().unwrap();
    assert_eq!(tip_index, w.ledger.log_length() - 1);
    assert_eq!(tip_hash, w.ledger.block(tip_index).unwrap().hash());
    w.check_invariants();
}

#[test]
fn transfer_errors_cover_every_variant_and_change_nothing() {
    let mut w = World::new();
    let (a, b) = (w.devs[0].principal(), w.devs[1].principal());
    let fee = w.ledger.params().transfer_fee_e9s;
    let digest = w.ledger.state_digest();
    let now = w.now;
    let cases: Vec<(TransferArg, TransferError)> = vec![
        (
            TransferArg {
                fee: Some(Nat::from(1u64)),
                ..transfer(b, 1)
            },
            TransferError::BadFee {
                expected_fee: fee.into(),
            },
        ),
        (
            transfer(b, 20_000 * TOKEN),
            TransferError::InsufficientFunds {
                balance: (10_000 * TOKEN).into(),
            },
        ),
        (
            TransferArg {
                created_at_time: Some(now - 25 * HOUR_NS),
                ..transfer(b, 1)
            },
            TransferError::TooOld,
        ),
        (
            TransferArg {
                created_at_time: Some(now + HOUR_NS),
                ..transfer(b, 1)
            },
            TransferError::CreatedInFuture { ledger_time: now },
        ),
        (
            transfer(Principal::management_canister(), 1),
            TransferError::BadBurn {
                min_burn_amount: fee.into(),
            },
        ),
        (
            TransferArg {
                memo: Some(ByteBuf::from(vec![0u8; 33])),
                ..transfer(b, 1)
            },
            TransferError::GenericError {
                error_code: 3u64.into(),
                message: "memo is 33 bytes, at most 32 allowed".into(),
            },
        ),
    ];
    for (arg, expected) in cases {
        assert_eq!(
            w.ledger.icrc1_transfer(a, now, arg.clone()),
            Err(expected),
            "{arg:?}"
        );
        assert_eq!(
            w.ledger.state_digest(),
            digest,
            "refused transfer changed the state: {arg:?}"
        );
    }
    // Amount beyond 64 bits.
    let huge = TransferArg {
        amount: Nat::from(u128::MAX),
        ..transfer(b, 0)
    };
    assert!(matches!(
        w.ledger.icrc1_transfer(a, now, huge),
        Err(TransferError::GenericError { .. })
    ));
    // Anonymous and minting-account senders.
    assert!(matches!(
        w.ledger
            .icrc1_transfer(Principal::anonymous(), now, transfer(b, 1)),
        Err(TransferError::GenericError { .. })
    ));
    assert!(matches!(
        w.ledger
            .icrc1_transfer(Principal::management_canister(), now, transfer(b, 1)),
        Err(TransferError::GenericError { .. })
    ));
    assert_eq!(w.ledger.state_digest(), digest);
}

#[test]
fn created_at_time_deduplicates_within_the_window() {
    let mut w = World::new();
    let (a, b) = (w.devs[0].principal(), w.devs[1].principal());
    let arg = TransferArg {
        created_at_time: Some(w.now),
        ..transfer(b, 7)
    };
    let first = w.ledger.icrc1_transfer(a, w.now, arg.clone()).unwrap();
    assert_eq!(
        w.ledger.icrc1_transfer(a, w.now + 1_000, arg.clone()),
        Err(TransferError::Duplicate {
            duplicate_of: first
        })
    );
    // A different memo is a different transaction.
    let other = TransferArg {
        memo: Some(ByteBuf::from(vec![1])),
        ..arg.clone()
    };
    assert!(w.ledger.icrc1_transfer(a, w.now, other).is_ok());
    // After the window the same transaction is too old, not a duplicate.
    assert_eq!(
        w.ledger.icrc1_transfer(a, w.now + 25 * HOUR_NS, arg),
        Err(TransferError::TooOld)
    );
}

#[test]
fn burn_reduces_supply() {
    let mut w = World::new();
    let a = w.devs[0].principal();
    let supply = w.ledger.total_supply();
    w.ledger
        .icrc1_transfer(
            a,
            w.now,
            transfer(Principal::management_canister(), 3 * TOKEN),
        )
        .unwrap();
    assert_eq!(w.ledger.total_supply(), supply - 3 * TOKEN);
    assert_eq!(w.ledger.stats().burned_e9s, 3 * TOKEN);
    w.check_invariants();
}

#[test]
fn approve_and_transfer_from_follow_icrc2() {
    let mut w = World::new();
    let (owner, spender, to) = (
        w.devs[0].principal(),
        w.devs[1].principal(),
        w.providers[0].principal(),
    );
    let fee = w.ledger.params().transfer_fee_e9s;
    let approve = |amount: u64, expected: Option<u64>, expires_at: Option<u64>| ApproveArgs {
        from_subaccount: None,
        spender: Account::of(spender),
        amount: amount.into(),
        expected_allowance: expected.map(Nat::from),
        expires_at,
        fee: None,
        memo: None,
        created_at_time: None,
    };
    w.ledger
        .icrc2_approve(
            owner,
            w.now,
            approve(10 * TOKEN, Some(0), Some(w.now + HOUR_NS)),
        )
        .unwrap();
    let allowance = w.ledger.icrc2_allowance(&AllowanceArgs {
        account: Account::of(owner),
        spender: Account::of(spender),
    });
    assert_eq!(
        allowance,
        Allowance {
            allowance: (10 * TOKEN).into(),
            expires_at: Some(w.now + HOUR_NS)
        }
    );
    // expected_allowance must match.
    assert_eq!(
        w.ledger
            .icrc2_approve(owner, w.now, approve(5, Some(1), None)),
        Err(ApproveError::AllowanceChanged {
            current_allowance: (10 * TOKEN).into()
        })
    );
    assert_eq!(
        w.ledger
            .icrc2_approve(owner, w.now, approve(5, None, Some(w.now - 1))),
        Err(ApproveError::Expired { ledger_time: w.now })
    );
    assert!(matches!(
        w.ledger.icrc2_approve(
            owner,
            w.now,
            ApproveArgs {
                spender: Account::of(owner),
                ..approve(5, None, None)
            }
        ),
        Err(ApproveError::GenericError { .. })
    ));
    let tf = |amount: u64| TransferFromArgs {
        spender_subaccount: None,
        from: Account::of(owner),
        to: Account::of(to),
        amount: amount.into(),
        fee: None,
        memo: None,
        created_at_time: None,
    };
    w.ledger
        .icrc2_transfer_from(spender, w.now, tf(4 * TOKEN))
        .unwrap();
    let left = 10 * TOKEN - 4 * TOKEN - fee;
    assert_eq!(
        w.ledger
            .allowance_of(&Account::of(owner), &Account::of(spender))
            .amount,
        left
    );
    assert_eq!(
        w.ledger.icrc2_transfer_from(spender, w.now, tf(left)),
        Err(TransferFromError::InsufficientAllowance {
            allowance: left.into()
        })
    );
    // After expiry the allowance is gone.
    let later = w.now + 2 * HOUR_NS;
    assert_eq!(
        w.ledger.icrc2_transfer_from(spender, later, tf(1)),
        Err(TransferFromError::InsufficientAllowance {
            allowance: 0u64.into()
        })
    );
    w.check_invariants();
}

#[test]
fn provider_registration_validates_and_charges_fee() {
    let mut w = World::new();
    let dev = w.devs[1].principal();
    let bad = ProviderProfile {
        legal_name: "X".into(),
        jurisdiction: "DE".into(),
        email: "not-an-email".into(),
        website: "".into(),
    };
    let d = w.ledger.state_digest();
    assert!(
        matches!(w.ledger.register_provider(dev, w.now, bad), Err(LedgerError::InvalidArgument { field, .. }) if field == "email")
    );
    assert_eq!(w.ledger.state_digest(), d);
    let p0 = w.providers[0].principal();
    let again = w.ledger.provider_info(&p0).unwrap().profile;
    assert!(matches!(
        w.ledger.register_provider(p0, w.now, again),
        Err(LedgerError::AlreadyRegistered(_))
    ));
    let treasury_before = w.ledger.balance_of(&Account::of(w.treasury));
    let good = ProviderProfile {
        legal_name: "Dev Cloud".into(),
        jurisdiction: "CH".into(),
        email: "a@b.ch".into(),
        website: "https://b.ch".into(),
    };
    w.ledger.register_provider(dev, w.now, good).unwrap();
    assert_eq!(
        w.ledger.balance_of(&Account::of(w.treasury)) - treasury_before,
        w.ledger.params().provider_registration_fee_e9s
    );
    w.check_invariants();
}

#[test]
fn node_registration_requires_a_valid_delegation() {
    let mut w = World::new();
    let p = &w.providers[0];
    let node = id(99);
    let now = w.now;
    let caps = caps(8, 16, Confidential::SevSnp, vec![]);
    // Expired.
    let expired = delegation(p, &node, now - 1);
    assert!(matches!(
        w.ledger.register_node(
            p.principal(),
            now,
            RegisterNodeArgs {
                delegation: expired,
                capabilities: caps.clone()
            }
        ),
        Err(LedgerError::Delegation(_))
    ));
    // Tampered: node key swapped after signing.
    let mut tampered = delegation(p, &node, now + HOUR_NS);
    tampered.node_public_key = id(98).public_key_der();
    assert!(matches!(
        w.ledger.register_node(
            p.principal(),
            now,
            RegisterNodeArgs {
                delegation: tampered,
                capabilities: caps.clone()
            }
        ),
        Err(LedgerError::Delegation(_))
    ));
    // A stranger cannot register someone else's node.
    let ok = delegation(p, &node, now + HOUR_NS);
    assert!(matches!(
        w.ledger.register_node(
            w.devs[0].principal(),
            now,
            RegisterNodeArgs {
                delegation: ok.clone(),
                capabilities: caps.clone()
            }
        ),
        Err(LedgerError::Unauthorized { .. })
    ));
    // The node itself may register with the provider's delegation.
    assert_eq!(
        w.ledger
            .register_node(
                node.principal(),
                now,
                RegisterNodeArgs {
                    delegation: ok,
                    capabilities: caps
                }
            )
            .unwrap(),
        node.principal()
    );
    assert!(w
        .ledger
        .provider_info(&p.principal())
        .unwrap()
        .nodes
        .contains(&node.principal()));
}

#[test]
fn offerings_are_checked_against_the_node() {
    let mut w = World::new();
    let p = w.providers[0].principal();
    let node = w.nodes[0].principal();
    let mut too_big = offering(node, 64, 16, 1);
    let err = w
        .ledger
        .add_offering(p, w.now, too_big.clone())
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::InvalidArgument { ref field, .. } if field == "vcpus"),
        "{err}"
    );
    too_big.vcpus = 2;
    too_big.confidential = Confidential::Tdx;
    assert!(
        matches!(w.ledger.add_offering(p, w.now, too_big), Err(LedgerError::InvalidArgument { field, .. }) if field == "confidential")
    );
    let other_node = w.nodes[1].principal();
    assert!(matches!(
        w.ledger
            .add_offering(p, w.now, offering(other_node, 1, 1, 1)),
        Err(LedgerError::Unauthorized { .. })
    ));
    let oid = w.offerings[0];
    assert!(matches!(
        w.ledger
            .remove_offering(w.providers[1].principal(), w.now, oid),
        Err(LedgerError::Unauthorized { .. })
    ));
    w.ledger.remove_offering(p, w.now, oid).unwrap();
    assert!(w.ledger.offering(oid).is_none());
}

#[test]
fn search_ranks_by_price_then_reputation_and_respects_capacity() {
    let mut w = World::new();
    // Provider 1 gets reputation so it wins ties.
    let (p0, p1) = (w.providers[0].principal(), w.providers[1].principal());
    let (n0, n1) = (w.nodes[0].principal(), w.nodes[1].principal());
    let a = w
        .ledger
        .add_offering(p0, w.now, offering(n0, 2, 4, 50_000_000))
        .unwrap();
    let b = w
        .ledger
        .add_offering(p1, w.now, offering(n1, 2, 4, 50_000_000))
        .unwrap();
    let all = w
        .ledger
        .search(&SearchQuery {
            limit: Some(100),
            ..Default::default()
        })
        .unwrap();
    let first: Vec<u64> = all.offers.iter().map(|o| o.offering_id).collect();
    assert_eq!(first[..2], [a, b], "equal price, equal reputation: by id");
    assert_eq!(first.len(), 6);
    // Give provider 1 reputation through a completed contract.
    let dev = w.devs[0].principal();
    let c = w
        .ledger
        .rent(
            dev,
            w.now,
            RentArgs {
                offering_id: b,
                hours: 1,
            },
        )
        .unwrap();
    for step in ["accept", "provision", "active"] {
        match step {
            "accept" => {
                w.ledger.accept_contract(n1, w.now, c.id).unwrap();
            }
            "provision" => {
                w.ledger.start_provisioning(n1, w.now, c.id).unwrap();
            }
            _ => {
                w.ledger
                    .report_active(
                        n1,
                        w.now,
                        ReportActiveArgs {
                            contract_id: c.id,
                            endpoint: "vm1.node1.example".into(),
                            evidence_hash: ByteBuf::from(vec![7; 32]),
                            launch_measurement: None,
                        },
                    )
                    .unwrap();
            }
        }
    }
    w.ledger.tick(w.now + HOUR_NS);
    assert!(w.ledger.reputation_of(&p1) > 0);
    let ranked = w
        .ledger
        .search(&SearchQuery {
            max_price_e9s_per_hour: Some(50_000_000),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        ranked
            .offers
            .iter()
            .map(|o| o.offering_id)
            .collect::<Vec<_>>(),
        vec![b, a]
    );
    // Filters.
    fn ids(l: &Ledger, f: fn(&mut SearchQuery)) -> Vec<u64> {
        let mut q = SearchQuery {
            limit: Some(100),
            ..Default::default()
        };
        f(&mut q);
        l.search(&q)
            .unwrap()
            .offers
            .into_iter()
            .map(|o| o.offering_id)
            .collect()
    }
    let q = |f: fn(&mut SearchQuery)| ids(&w.ledger, f);
    assert_eq!(q(|q| q.min_vcpus = Some(8)).len(), 2);
    assert_eq!(q(|q| q.min_ram_gib = Some(17)).len(), 2);
    assert_eq!(q(|q| q.region = Some("EU-CENTRAL".into())).len(), 6);
    assert_eq!(q(|q| q.region = Some("de".into())).len(), 6);
    assert!(q(|q| q.region = Some("us-east".into())).is_empty());
    assert!(q(|q| q.confidential = Some(Confidential::SevSnp)).is_empty());
    assert!(q(|q| q.gpu_model = Some("H100".into())).is_empty());
    assert_eq!(
        q(|q| q.min_provider_reputation = Some(1))
            .iter()
            .filter(|&&id| id == a)
            .count(),
        0
    );
    assert!(q(|q| q.hours = Some(5_000)).is_empty());
    // Capacity: node 0 has 16 vCPUs; rent two 8-vCPU offers and its offers vanish.
    let big = w.offerings[1];
    w.ledger
        .rent(
            dev,
            w.now,
            RentArgs {
                offering_id: big,
                hours: 2,
            },
        )
        .unwrap();
    w.ledger
        .rent(
            dev,
            w.now,
            RentArgs {
                offering_id: big,
                hours: 2,
            },
        )
        .unwrap();
    let node0_offers = [w.offerings[0], w.offerings[1], a];
    assert!(
        !ids(&w.ledger, |_| {})
            .iter()
            .any(|id| node0_offers.contains(id)),
        "node 0 is full"
    );
    let err = w
        .ledger
        .rent(
            dev,
            w.now,
            RentArgs {
                offering_id: big,
                hours: 2,
            },
        )
        .unwrap_err();
    assert!(matches!(err, LedgerError::CapacityExhausted { .. }));
    // Pagination: pages are disjoint and in order.
    let page1 = w
        .ledger
        .search(&SearchQuery {
            limit: Some(1),
            ..Default::default()
        })
        .unwrap();
    let page2 = w
        .ledger
        .search(&SearchQuery {
            limit: Some(1),
            offset: page1.next_offset,
            ..Default::default()
        })
        .unwrap();
    assert_ne!(page1.offers[0].offering_id, page2.offers[0].offering_id);
    assert!(w
        .ledger
        .search(&SearchQuery {
            limit: Some(0),
            ..Default::default()
        })
        .is_err());
}

/// Walks a contract to active through its node.
fn activate(w: &mut World, node: usize, cid: u64) {
    let n = w.nodes[node].principal();
    w.ledger.accept_contract(n, w.now, cid).unwrap();
    w.ledger.start_provisioning(n, w.now, cid).unwrap();
    w.ledger
        .report_active(
            n,
            w.now,
            ReportActiveArgs {
                contract_id: cid,
                endpoint: format!("c{cid}.example"),
                evidence_hash: ByteBuf::from(vec![1; 32]),
                launch_measurement: None,
            },
        )
        .unwrap();
}

#[test]
fn contract_lifecycle_releases_escrow_pro_rata_with_fee_and_reputation() {
    let mut w = World::new();
    let dev = w.devs[1].principal();
    let prov = w.providers[0].principal();
    let oid = w.offerings[0];
    let price = w.ledger.offering(oid).unwrap().spec.price_e9s_per_hour;
    let c = w
        .ledger
        .rent(
            dev,
            w.now,
            RentArgs {
                offering_id: oid,
                hours: 10,
            },
        )
        .unwrap();
    assert_eq!(c.paid_e9s, 10 * price);
    assert_eq!(w.ledger.escrow_total(), 10 * price);
    activate(&mut w, 0, c.id);
    let prov_before = w.ledger.balance_of(&Account::of(prov));
    let treasury_before = w.ledger.balance_of(&Account::of(w.treasury));
    // Three hours later a reward block closes and releases three hours.
    w.now += 3 * HOUR_NS;
    assert!(w.ledger.tick(w.now));
    let c1 = w.ledger.contract_info(c.id).unwrap();
    assert_eq!(c1.released_e9s, 3 * price);
    let fee = 3 * price * 2 / 100;
    assert_eq!(c1.fees_e9s, fee);
    assert_eq!(
        w.ledger.balance_of(&Account::of(prov)) - prov_before,
        3 * price - fee
    );
    assert_eq!(
        w.ledger.balance_of(&Account::of(w.treasury)) - treasury_before,
        fee
    );
    assert_eq!(w.ledger.reputation_of(&prov), 3 * price / 100);
    assert_eq!(w.ledger.reputation_of(&dev), 3 * price / 100);
    // Extend by 5 hours, then cancel 2 hours later: 5 released, 10 refunded.
    let e = w
        .ledger
        .extend_contract(
            dev,
            w.now,
            ExtendArgs {
                contract_id: c.id,
                hours: 5,
            },
        )
        .unwrap();
    assert_eq!(e.paid_e9s, 15 * price);
    assert_eq!(e.hours, 15);
    w.now += 2 * HOUR_NS;
    let cancelled = w.ledger.cancel_contract(dev, w.now, c.id).unwrap();
    assert_eq!(cancelled.state, ContractState::Cancelled);
    assert_eq!(cancelled.released_e9s, 5 * price);
    assert_eq!(cancelled.refunded_e9s, 10 * price);
    assert_eq!(w.ledger.escrow_total(), 0);
    assert_eq!(
        w.ledger
            .node_info(&w.nodes[0].principal())
            .unwrap()
            .reserved,
        Resources::default()
    );
    w.check_invariants();
    // Illegal transitions after the end.
    let d = w.ledger.state_digest();
    for r in [
        w.ledger.cancel_contract(dev, w.now, c.id),
        w.ledger.extend_contract(
            dev,
            w.now,
            ExtendArgs {
                contract_id: c.id,
                hours: 1,
            },
        ),
        w.ledger
            .accept_contract(w.nodes[0].principal(), w.now, c.id),
    ] {
        assert!(
            matches!(r, Err(LedgerError::IllegalTransition { .. })),
            "{r:?}"
        );
    }
    assert_eq!(w.ledger.state_digest(), d);
}

#[test]
fn contract_expires_after_its_term() {
    let mut w = World::new();
    let dev = w.devs[1].principal();
    let oid = w.offerings[2];
    let price = w.ledger.offering(oid).unwrap().spec.price_e9s_per_hour;
    let c = w
        .ledger
        .rent(
            dev,
            w.now,
            RentArgs {
                offering_id: oid,
                hours: 2,
            },
        )
        .unwrap();
    activate(&mut w, 1, c.id);
    w.now += 2 * HOUR_NS;
    w.ledger.tick(w.now);
    let c = w.ledger.contract_info(c.id).unwrap();
    assert_eq!(c.state, ContractState::Expired);
    assert_eq!(c.released_e9s, 2 * price);
    assert_eq!(c.refunded_e9s, 0);
    assert_eq!(
        w.ledger
            .provider_info(&w.providers[1].principal())
            .unwrap()
            .contracts_served,
        1
    );
    w.check_invariants();
}

#[test]
fn missed_provisioning_deadline_refunds_in_full_and_penalises_provider() {
    let mut w = World::new();
    let dev = w.devs[0].principal();
    let prov = w.providers[0].principal();
    // Give the provider some reputation to lose.
    let oid = w.offerings[0];
    let c = w
        .ledger
        .rent(
            dev,
            w.now,
            RentArgs {
                offering_id: oid,
                hours: 100,
            },
        )
        .unwrap();
    activate(&mut w, 0, c.id);
    w.now += 50 * HOUR_NS;
    w.ledger.tick(w.now);
    let rep = w.ledger.reputation_of(&prov);
    assert!(rep > 0);
    let balance = w.ledger.balance_of(&Account::of(dev));
    let late = w
        .ledger
        .rent(
            dev,
            w.now,
            RentArgs {
                offering_id: w.offerings[1],
                hours: 10,
            },
        )
        .unwrap();
    w.ledger
        .accept_contract(w.nodes[0].principal(), w.now, late.id)
        .unwrap();
    w.now += 2 * HOUR_NS;
    // Past the deadline the node can no longer move it on.
    assert!(matches!(
        w.ledger
            .start_provisioning(w.nodes[0].principal(), w.now, late.id),
        Err(LedgerError::IllegalTransition { .. })
    ));
    w.ledger.tick(w.now);
    let late = w.ledger.contract_info(late.id).unwrap();
    assert_eq!(late.state, ContractState::DeadlineMissed);
    assert_eq!(late.refunded_e9s, late.paid_e9s);
    assert_eq!(w.ledger.balance_of(&Account::of(dev)), balance);
    // The tick first applies the penalty (10% of the paid amount), then the
    // reward block's release of two more hours of the first contract adds 1%.
    let penalty = late.paid_e9s / 10;
    let gain = 2 * c.price_e9s_per_hour / 100;
    assert_eq!(
        w.ledger.reputation_of(&prov),
        rep.saturating_sub(penalty) + gain
    );
    w.check_invariants();
}

#[test]
fn contract_permissions_are_enforced() {
    let mut w = World::new();
    let dev = w.devs[0].principal();
    let c = w
        .ledger
        .rent(
            dev,
            w.now,
            RentArgs {
                offering_id: w.offerings[0],
                hours: 1,
            },
        )
        .unwrap();
    let d = w.ledger.state_digest();
    // The other provider's node cannot accept.
    assert!(matches!(
        w.ledger
            .accept_contract(w.nodes[1].principal(), w.now, c.id),
        Err(LedgerError::Unauthorized { .. })
    ));
    // The developer cannot accept; another developer cannot cancel.
    assert!(matches!(
        w.ledger.accept_contract(dev, w.now, c.id),
        Err(LedgerError::Unauthorized { .. })
    ));
    assert!(matches!(
        w.ledger.cancel_contract(w.devs[1].principal(), w.now, c.id),
        Err(LedgerError::Unauthorized { .. })
    ));
    // Skipping a state is illegal.
    assert!(matches!(
        w.ledger
            .start_provisioning(w.nodes[0].principal(), w.now, c.id),
        Err(LedgerError::IllegalTransition { .. })
    ));
    assert_eq!(w.ledger.state_digest(), d);
    // A revoked node can no longer act; its provider still can.
    w.ledger
        .revoke_node(w.providers[0].principal(), w.now, w.nodes[0].principal())
        .unwrap();
    assert!(matches!(
        w.ledger
            .accept_contract(w.nodes[0].principal(), w.now, c.id),
        Err(LedgerError::Delegation(_))
    ));
    w.ledger
        .reject_contract(w.providers[0].principal(), w.now, c.id)
        .unwrap();
    assert_eq!(
        w.ledger.contract_info(c.id).unwrap().state,
        ContractState::Rejected
    );
    w.check_invariants();
}

#[test]
fn a_delegation_without_permission_cannot_act() {
    let mut w = World::new();
    let p = &w.providers[0];
    let node = id(77);
    let d = Delegation::sign(
        p,
        node.public_key_der(),
        &[Permission::CheckIn],
        w.now + HOUR_NS,
    );
    w.ledger
        .register_node(
            node.principal(),
            w.now,
            RegisterNodeArgs {
                delegation: d,
                capabilities: caps(4, 8, Confidential::None, vec![]),
            },
        )
        .unwrap();
    let oid = w
        .ledger
        .add_offering(
            p.principal(),
            w.now,
            offering(node.principal(), 1, 1, 1_000),
        )
        .unwrap();
    let c = w
        .ledger
        .rent(
            w.devs[0].principal(),
            w.now,
            RentArgs {
                offering_id: oid,
                hours: 1,
            },
        )
        .unwrap();
    assert!(
        matches!(w.ledger.accept_contract(node.principal(), w.now, c.id), Err(LedgerError::Delegation(m)) if m.contains("AcceptContracts"))
    );
}

#[test]
fn rating_spends_reputation_and_needs_a_shared_contract() {
    let mut w = World::new();
    let dev = w.devs[0].principal(); // starts with 1,000 DCT of reputation
    let prov = w.providers[0].principal();
    let d = w.ledger.state_digest();
    let rate = |spend| RateArgs {
        target: prov,
        spend,
        reason: "VM unreachable for 3 hours".into(),
    };
    assert!(matches!(
        w.ledger.rate(dev, w.now, rate(1)),
        Err(LedgerError::NoSharedContract { .. })
    ));
    assert_eq!(w.ledger.state_digest(), d);
    let c = w
        .ledger
        .rent(
            dev,
            w.now,
            RentArgs {
                offering_id: w.offerings[0],
                hours: 100,
            },
        )
        .unwrap();
    activate(&mut w, 0, c.id);
    w.now += 100 * HOUR_NS;
    w.ledger.tick(w.now);
    let prov_rep = w.ledger.reputation_of(&prov);
    let dev_rep = w.ledger.reputation_of(&dev);
    assert!(matches!(
        w.ledger.rate(dev, w.now, rate(dev_rep + 1)),
        Err(LedgerError::InsufficientReputation { .. })
    ));
    assert!(matches!(
        w.ledger.rate(
            dev,
            w.now,
            RateArgs {
                reason: " ".into(),
                ..rate(1)
            }
        ),
        Err(LedgerError::InvalidArgument { .. })
    ));
    let spend = prov_rep / 4;
    let r = w.ledger.rate(dev, w.now, rate(spend)).unwrap();
    assert_eq!(
        r,
        RateResult {
            sender_reputation: dev_rep - spend,
            target_reputation: prov_rep - 2 * spend
        }
    );
    // The provider may rate back; reputation never goes below zero.
    let r2 = w
        .ledger
        .rate(
            prov,
            w.now,
            RateArgs {
                target: dev,
                spend: prov_rep - 2 * spend,
                reason: "abuse".into(),
            },
        )
        .unwrap();
    assert_eq!(r2.sender_reputation, 0);
    assert_eq!(
        r2.target_reputation,
        (dev_rep - spend).saturating_sub(2 * (prov_rep - 2 * spend))
    );
    assert_eq!(w.ledger.ratings_of(&prov, 10).len(), 2);
}

/// Only a contract the provider served (it was active) or failed (missed
/// its provisioning deadline) gives its parties the right to rate each
/// other: renting and cancelling at once, for a full refund, does not; nor
/// does a contract still pending or one the provider rejected. A refused
/// rating changes nothing.
#[test]
fn only_a_served_or_failed_contract_gives_the_right_to_rate() {
    let mut w = World::new();
    let dev = w.devs[0].principal();
    let prov = w.providers[0].principal();
    let node = w.nodes[0].principal();
    let rate = |spend| RateArgs {
        target: prov,
        spend,
        reason: "never served me".into(),
    };
    let rent = |w: &mut World| {
        w.ledger
            .rent(
                dev,
                w.now,
                RentArgs {
                    offering_id: w.offerings[0],
                    hours: 10,
                },
            )
            .unwrap()
            .id
    };
    let refused = |w: &mut World, who: &str| {
        let d = w.ledger.state_digest();
        let e = w.ledger.rate(dev, w.now, rate(1)).unwrap_err();
        assert!(
            matches!(e, LedgerError::NoSharedContract { .. }),
            "{who}: {e:?}"
        );
        assert!(e.to_string().contains("active"), "{e}");
        assert_eq!(w.ledger.state_digest(), d, "{who}");
        // The provider cannot rate through it either.
        assert!(w
            .ledger
            .rate(
                prov,
                w.now,
                RateArgs {
                    target: dev,
                    ..rate(1)
                }
            )
            .is_err());
    };
    // Still waiting for the provider.
    let pending = rent(&mut w);
    refused(&mut w, "requested");
    // Cancelled at once, refunded in full.
    let cancelled = w.ledger.cancel_contract(dev, w.now, pending).unwrap();
    assert_eq!(cancelled.refunded_e9s, cancelled.paid_e9s);
    refused(&mut w, "cancelled before active");
    // Accepted, then cancelled before it was active.
    let accepted = rent(&mut w);
    w.ledger.accept_contract(node, w.now, accepted).unwrap();
    w.ledger.cancel_contract(dev, w.now, accepted).unwrap();
    refused(&mut w, "accepted then cancelled");
    // Rejected by the provider.
    let rejected = rent(&mut w);
    w.ledger.reject_contract(node, w.now, rejected).unwrap();
    refused(&mut w, "rejected");

    // The provider missed its provisioning deadline: the developer may rate.
    let late = rent(&mut w);
    w.ledger.accept_contract(node, w.now, late).unwrap();
    w.now += 2 * HOUR_NS;
    w.ledger.tick(w.now);
    assert_eq!(
        w.ledger.contract_info(late).unwrap().state,
        ContractState::DeadlineMissed
    );
    // Not the provider, the party at fault.
    let d = w.ledger.state_digest();
    assert!(matches!(
        w.ledger.rate(
            prov,
            w.now,
            RateArgs {
                target: dev,
                ..rate(1)
            }
        ),
        Err(LedgerError::NoSharedContract { .. })
    ));
    assert_eq!(w.ledger.state_digest(), d);
    let before = w.ledger.reputation_of(&dev);
    let r = w.ledger.rate(dev, w.now, rate(1)).unwrap();
    assert_eq!(r.sender_reputation, before - 1);

    // A contract that was active counts even after an early cancel.
    let mut w = World::new();
    let served = rent(&mut w);
    activate(&mut w, 0, served);
    w.ledger.cancel_contract(dev, w.now, served).unwrap();
    assert!(w.ledger.rate(dev, w.now, rate(1)).is_ok());
}

/// A provider narrows its node's delegation; the node cannot undo that by
/// presenting the older, broader delegation (or any broader one) itself,
/// and nothing changes when it tries. It can renew with the same or a
/// narrower one; the provider can widen it again.
#[test]
fn a_node_cannot_widen_its_own_delegation() {
    let mut w = World::new();
    let p0 = w.providers[0].principal();
    let node = id(69);
    let broad = delegation(&w.providers[0], &node, w.now + 365 * 24 * HOUR_NS);
    let narrow = Delegation::sign(
        &w.providers[0],
        node.public_key_der(),
        &[Permission::CheckIn],
        w.now + 30 * 24 * HOUR_NS,
    );
    let args = |d: &Delegation| RegisterNodeArgs {
        delegation: d.clone(),
        capabilities: caps(8, 32, Confidential::None, vec![]),
    };
    w.ledger
        .register_node(node.principal(), w.now, args(&broad))
        .unwrap();
    w.ledger.register_node(p0, w.now, args(&narrow)).unwrap();
    let before = w.ledger.state_digest();
    let refused = w
        .ledger
        .register_node(node.principal(), w.now, args(&broad));
    assert!(
        matches!(refused, Err(LedgerError::Unauthorized { .. })),
        "{refused:?}"
    );
    // Only a later expiry, or only one more permission: refused as well.
    let later = Delegation::sign(
        &w.providers[0],
        node.public_key_der(),
        &[Permission::CheckIn],
        w.now + 31 * 24 * HOUR_NS,
    );
    let more = Delegation::sign(
        &w.providers[0],
        node.public_key_der(),
        &[Permission::CheckIn, Permission::ReportStatus],
        w.now + 30 * 24 * HOUR_NS,
    );
    for d in [&later, &more] {
        assert!(w
            .ledger
            .register_node(node.principal(), w.now, args(d))
            .is_err());
    }
    assert_eq!(w.ledger.state_digest(), before, "refusals change nothing");
    // The same delegation again is fine; the provider may widen it.
    w.ledger
        .register_node(node.principal(), w.now, args(&narrow))
        .unwrap();
    w.ledger.register_node(p0, w.now, args(&broad)).unwrap();
    w.check_invariants();
}

/// The participation fee is per provider and block, like the reward share
/// it buys: a provider's second node checks in for free, and the provider
/// still gets one share.
#[test]
fn a_provider_pays_the_check_in_fee_once_per_block_however_many_nodes() {
    let mut w = World::new();
    let p0 = w.providers[0].principal();
    let second = id(68);
    let args = RegisterNodeArgs {
        delegation: delegation(&w.providers[0], &second, w.now + 24 * HOUR_NS),
        capabilities: caps(8, 32, Confidential::None, vec![]),
    };
    w.ledger.register_node(p0, w.now, args).unwrap();
    let fee = block_reward(w.ledger.params(), 0) / 100;
    let b0 = w.ledger.balance_of(&Account::of(p0));
    let first = w.sign_check_in(&w.nodes[0]);
    w.ledger
        .check_in(w.nodes[0].principal(), w.now, first)
        .unwrap();
    assert_eq!(w.ledger.balance_of(&Account::of(p0)), b0 - fee);
    let other = w.sign_check_in(&second);
    w.ledger.check_in(second.principal(), w.now, other).unwrap();
    assert_eq!(
        w.ledger.balance_of(&Account::of(p0)),
        b0 - fee,
        "the second node checks in for free"
    );
    // One share: provider 0 alone checked in, it gets the whole reward once.
    w.now += w.ledger.params().block_interval_ns;
    assert!(w.ledger.tick(w.now));
    assert_eq!(w.ledger.balance_of(&Account::of(p0)), b0 - fee + 50 * TOKEN);
    // The next block charges again, once.
    let again = w.sign_check_in(&second);
    w.ledger.check_in(second.principal(), w.now, again).unwrap();
    let again = w.sign_check_in(&w.nodes[0]);
    w.ledger
        .check_in(w.nodes[0].principal(), w.now, again)
        .unwrap();
    assert_eq!(
        w.ledger.balance_of(&Account::of(p0)),
        b0 - 2 * fee + 50 * TOKEN
    );
    w.check_invariants();
}

#[test]
fn check_in_rewards_providers_by_sqrt_reputation() {
    let mut w = World::new();
    let (p0, p1) = (w.providers[0].principal(), w.providers[1].principal());
    let fee = block_reward(w.ledger.params(), 0) / 100;
    let b0 = w.ledger.balance_of(&Account::of(p0));
    let args = w.sign_check_in(&w.nodes[0]);
    assert_eq!(
        w.ledger
            .check_in(w.nodes[0].principal(), w.now, args.clone()),
        Ok(0)
    );
    assert_eq!(w.ledger.balance_of(&Account::of(p0)), b0 - fee);
    // Once per block per node.
    assert!(matches!(
        w.ledger
            .check_in(w.nodes[0].principal(), w.now, args.clone()),
        Err(LedgerError::AlreadyCheckedIn { .. })
    ));
    // A signature by another key, or for another node, is refused.
    let d = w.ledger.state_digest();
    let stolen = CheckInArgs { ..args.clone() };
    assert!(w
        .ledger
        .check_in(w.nodes[1].principal(), w.now, stolen)
        .is_err());
    let mut forged = w.sign_check_in(&w.nodes[1]);
    forged.signature = ByteBuf::from(w.nodes[0].sign(Domain::CheckIn, b"something else").to_vec());
    assert!(w
        .ledger
        .check_in(w.nodes[1].principal(), w.now, forged)
        .is_err());
    // Not a node at all.
    assert!(w
        .ledger
        .check_in(w.devs[0].principal(), w.now, w.sign_check_in(&w.devs[0]))
        .is_err());
    assert_eq!(w.ledger.state_digest(), d);
    let args1 = w.sign_check_in(&w.nodes[1]);
    w.ledger
        .check_in(w.nodes[1].principal(), w.now, args1)
        .unwrap();
    // Both at zero reputation: equal shares of 50 DCT.
    let (bal0, bal1) = (
        w.ledger.balance_of(&Account::of(p0)),
        w.ledger.balance_of(&Account::of(p1)),
    );
    w.now += w.ledger.params().block_interval_ns;
    assert!(w.ledger.tick(w.now));
    assert_eq!(w.ledger.balance_of(&Account::of(p0)) - bal0, 25 * TOKEN);
    assert_eq!(w.ledger.balance_of(&Account::of(p1)) - bal1, 25 * TOKEN);
    assert_eq!(w.ledger.stats().minted_rewards_e9s, 50 * TOKEN);
    // Old challenge is stale now.
    assert!(matches!(
        w.ledger.check_in(w.nodes[0].principal(), w.now, args),
        Err(LedgerError::StaleCheckIn { .. })
    ));
    // Nobody checks in: nothing minted.
    w.now += w.ledger.params().block_interval_ns;
    w.ledger.tick(w.now);
    assert_eq!(w.ledger.stats().minted_rewards_e9s, 50 * TOKEN);
    assert_eq!(w.ledger.stats().reward_block_height, 2);
    w.check_invariants();
}

#[test]
fn reward_weights_follow_sqrt_of_reputation() {
    let treasury = id(200).principal();
    let (pa, pb) = (id(11), id(12));
    let genesis = Genesis {
        params: params(treasury),
        balances: vec![
            (Account::of(pa.principal()), 100 * TOKEN),
            (Account::of(pb.principal()), 100 * TOKEN),
        ],
        reputations: vec![(pa.principal(), 100), (pb.principal(), 400)],
        time_ns: T0,
    };
    let mut l = Ledger::new(genesis).unwrap();
    for (i, p) in [&pa, &pb].into_iter().enumerate() {
        let profile = ProviderProfile {
            legal_name: "P".into(),
            jurisdiction: "DE".into(),
            email: "p@x.de".into(),
            website: "".into(),
        };
        l.register_provider(p.principal(), T0, profile).unwrap();
        let node = id(30 + i as u8);
        l.register_node(
            p.principal(),
            T0,
            RegisterNodeArgs {
                delegation: delegation(p, &node, T0 + HOUR_NS),
                capabilities: caps(1, 1, Confidential::None, vec![]),
            },
        )
        .unwrap();
        let ch = l.check_in_challenge();
        let sig = node.sign(
            Domain::CheckIn,
            &check_in_message(ch.block_height, &ch.previous_block_hash, &node.principal()),
        );
        l.check_in(
            node.principal(),
            T0,
            CheckInArgs {
                block_height: 0,
                previous_block_hash: ch.previous_block_hash,
                signature: ByteBuf::from(sig.to_vec()),
            },
        )
        .unwrap();
    }
    let (a0, b0) = (
        l.balance_of(&Account::of(pa.principal())),
        l.balance_of(&Account::of(pb.principal())),
    );
    l.tick(T0 + l.params().block_interval_ns);
    // sqrt(100) = 10, sqrt(400) = 20: one third and two thirds.
    let reward = 50 * TOKEN as u128;
    assert_eq!(
        (l.balance_of(&Account::of(pa.principal())) - a0) as u128,
        reward / 3
    );
    assert_eq!(
        (l.balance_of(&Account::of(pb.principal())) - b0) as u128,
        reward * 2 / 3
    );
    assert!(l.stats().minted_rewards_e9s <= 50 * TOKEN);
}

#[test]
fn dispatcher_refuses_garbage_and_wrong_modes() {
    use dc_ledger_core::dispatch::{self, DispatchError};
    let mut w = World::new();
    let a = w.devs[0].principal();
    let d = w.ledger.state_digest();
    assert!(matches!(
        dispatch::update(&mut w.ledger, a, w.now, "nope", &[]),
        Err(DispatchError::UnknownMethod(_))
    ));
    assert!(matches!(
        dispatch::update(&mut w.ledger, a, w.now, "icrc1_transfer", b"garbage"),
        Err(DispatchError::BadArgument { .. })
    ));
    assert!(matches!(
        dispatch::update(&mut w.ledger, a, w.now, "icrc1_balance_of", &[]),
        Err(DispatchError::NotAnUpdate(_))
    ));
    assert!(matches!(
        dispatch::query(&w.ledger, a, "icrc1_transfer", &[]),
        Err(DispatchError::NotAQuery(_))
    ));
    let wrong_type = candid::encode_one(42u64).unwrap();
    assert!(matches!(
        dispatch::update(&mut w.ledger, a, w.now, "icrc1_transfer", &wrong_type),
        Err(DispatchError::BadArgument { .. })
    ));
    let huge = vec![0u8; dispatch::MAX_ARG_BYTES + 1];
    assert!(matches!(
        dispatch::update(&mut w.ledger, a, w.now, "rent", &huge),
        Err(DispatchError::ArgumentTooLarge { .. })
    ));
    assert_eq!(w.ledger.state_digest(), d);
    // A well-formed call through the dispatcher.
    let (r, committed): (Result<Nat, TransferError>, bool) =
        w.call(a, "icrc1_transfer", &transfer(w.devs[1].principal(), 1));
    assert!(r.is_ok() && committed);
}

#[test]
fn snapshot_round_trips_and_rebuilds_the_index() {
    let mut w = World::new();
    let dev = w.devs[0].principal();
    w.ledger
        .rent(
            dev,
            w.now,
            RentArgs {
                offering_id: w.offerings[0],
                hours: 3,
            },
        )
        .unwrap();
    let bytes = snapshot::encode(&w.ledger);
    let back = snapshot::decode(&bytes).unwrap();
    assert_eq!(back.state_digest(), w.ledger.state_digest());
    let q = SearchQuery::default();
    assert_eq!(back.search(&q).unwrap(), w.ledger.search(&q).unwrap());
    assert!(matches!(
        snapshot::decode(b"DCLEDG02garbage"),
        Err(snapshot::SnapshotError::Corrupt(_))
    ));
    assert!(matches!(
        snapshot::decode(b"DCLEDG01anything"),
        Err(snapshot::SnapshotError::UnsupportedVersion { .. })
    ));
    assert!(snapshot::decode(b"nope").is_err());
}

#[test]
fn cancelling_after_a_missed_deadline_still_penalises_the_provider() {
    let mut w = World::new();
    let dev = w.devs[1].principal();
    let prov = w.providers[0].principal();
    // Give the provider reputation first.
    let c0 = w
        .ledger
        .rent(
            dev,
            w.now,
            RentArgs {
                offering_id: w.offerings[0],
                hours: 10,
            },
        )
        .unwrap();
    activate(&mut w, 0, c0.id);
    w.now += 10 * HOUR_NS;
    w.ledger.tick(w.now);
    let rep = w.ledger.reputation_of(&prov);
    assert!(rep > 0);
    let c = w
        .ledger
        .rent(
            dev,
            w.now,
            RentArgs {
                offering_id: w.offerings[1],
                hours: 5,
            },
        )
        .unwrap();
    w.now += 2 * HOUR_NS; // past the 1 h deadline, before any tick
    let settled = w.ledger.cancel_contract(dev, w.now, c.id).unwrap();
    assert_eq!(settled.state, ContractState::DeadlineMissed);
    assert_eq!(settled.refunded_e9s, settled.paid_e9s);
    assert_eq!(
        w.ledger.reputation_of(&prov),
        rep.saturating_sub(settled.paid_e9s / 10)
    );
    w.check_invariants();
}

/// GPU counts are bounded per node, so no sum of them can overflow: a
/// declaration over the bound is refused and changes nothing.
#[test]
fn a_node_declares_at_most_max_node_gpus() {
    let mut w = World::new();
    let node = id(67);
    let gpu = |model: &str, count| GpuSpec {
        model: model.into(),
        count,
        memory_gib: 80,
    };
    let register = |w: &mut World, gpus| {
        let args = RegisterNodeArgs {
            delegation: delegation(&w.providers[0], &node, w.now + HOUR_NS),
            capabilities: caps(64, 512, Confidential::None, gpus),
        };
        let provider = w.providers[0].principal();
        w.ledger.register_node(provider, w.now, args)
    };
    let before = w.ledger.state_digest();
    for gpus in [
        vec![gpu("H100", u32::MAX), gpu("h100", 1)],
        vec![gpu("H100", u32::MAX), gpu("A100", u32::MAX)],
        vec![gpu("H100", dc_ledger_core::market::MAX_NODE_GPUS + 1)],
        vec![
            gpu("H100", dc_ledger_core::market::MAX_NODE_GPUS),
            gpu("A100", 1),
        ],
    ] {
        match register(&mut w, gpus) {
            Err(LedgerError::InvalidArgument { field, reason }) => {
                assert_eq!(field, "gpus", "{reason}");
                assert!(reason.contains("at most 1024 GPUs"), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(w.ledger.state_digest(), before, "refusals change nothing");
    register(
        &mut w,
        vec![
            gpu("H100", dc_ledger_core::market::MAX_NODE_GPUS - 8),
            gpu("A100", 8),
        ],
    )
    .expect("the bound itself");
    w.check_invariants();
}

#[test]
fn gpu_capacity_is_counted_per_model() {
    let mut w = World::new();
    let p = &w.providers[0];
    let node = id(66);
    let gpus = vec![
        GpuSpec {
            model: "A100".into(),
            count: 4,
            memory_gib: 80,
        },
        GpuSpec {
            model: "H100".into(),
            count: 4,
            memory_gib: 80,
        },
    ];
    w.ledger
        .register_node(
            p.principal(),
            w.now,
            RegisterNodeArgs {
                delegation: delegation(p, &node, w.now + HOUR_NS),
                capabilities: caps(64, 512, Confidential::None, gpus),
            },
        )
        .unwrap();
    let mut a = offering(node.principal(), 8, 64, 1_000);
    a.gpu = Some(GpuSpec {
        model: "A100".into(),
        count: 4,
        memory_gib: 80,
    });
    let mut h = a.clone();
    h.gpu = Some(GpuSpec {
        model: "h100".into(),
        count: 4,
        memory_gib: 80,
    });
    let (ia, ih) = (
        w.ledger.add_offering(p.principal(), w.now, a).unwrap(),
        w.ledger.add_offering(p.principal(), w.now, h).unwrap(),
    );
    let dev = w.devs[0].principal();
    let ca = w
        .ledger
        .rent(
            dev,
            w.now,
            RentArgs {
                offering_id: ia,
                hours: 1,
            },
        )
        .unwrap();
    // All A100s taken; the H100s are still free.
    assert!(matches!(
        w.ledger.rent(
            dev,
            w.now,
            RentArgs {
                offering_id: ia,
                hours: 1
            }
        ),
        Err(LedgerError::CapacityExhausted { .. })
    ));
    let found = w
        .ledger
        .search(&SearchQuery {
            gpu_model: Some("H100".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        found
            .offers
            .iter()
            .map(|o| o.offering_id)
            .collect::<Vec<_>>(),
        vec![ih]
    );
    w.ledger
        .rent(
            dev,
            w.now,
            RentArgs {
                offering_id: ih,
                hours: 1,
            },
        )
        .unwrap();
    assert_eq!(
        w.ledger
            .node_info(&node.principal())
            .unwrap()
            .reserved_gpus("a100"),
        4
    );
    w.ledger.cancel_contract(dev, w.now, ca.id).unwrap();
    assert_eq!(
        w.ledger
            .node_info(&node.principal())
            .unwrap()
            .reserved_gpus("A100"),
        0
    );
    w.ledger
        .rent(
            dev,
            w.now,
            RentArgs {
                offering_id: ia,
                hours: 1,
            },
        )
        .unwrap();
    w.check_invariants();
}

#[test]
fn parameters_are_validated_at_genesis() {
    let t = id(200).principal();
    let mut p = params(t);
    p.release_reputation_bps = 20_000;
    assert!(Ledger::new(Genesis {
        params: p,
        balances: vec![],
        reputations: vec![],
        time_ns: T0
    })
    .is_err());
    let mut p = params(t);
    p.minting_account = t;
    assert!(Ledger::new(Genesis {
        params: p,
        balances: vec![],
        reputations: vec![],
        time_ns: T0
    })
    .is_err());
    let huge = vec![(Account::of(id(1).principal()), u64::MAX - 1)];
    assert!(Ledger::new(Genesis {
        params: params(t),
        balances: huge,
        reputations: vec![],
        time_ns: T0
    })
    .is_err());
}

#[test]
fn extending_beyond_the_time_range_is_refused_not_wrapped() {
    let mut w = World::new();
    let p = w.providers[0].principal();
    let mut spec = offering(w.nodes[0].principal(), 1, 1, 1);
    spec.max_hours = u32::MAX;
    let oid = w.ledger.add_offering(p, w.now, spec).unwrap();
    let dev = w.devs[0].principal();
    let c = w
        .ledger
        .rent(
            dev,
            w.now,
            RentArgs {
                offering_id: oid,
                hours: 1,
            },
        )
        .unwrap();
    activate(&mut w, 0, c.id);
    let d = w.ledger.state_digest();
    let r = w.ledger.extend_contract(
        dev,
        w.now,
        ExtendArgs {
            contract_id: c.id,
            hours: u32::MAX - 1,
        },
    );
    assert!(matches!(r, Err(LedgerError::Overflow(_))), "{r:?}");
    assert_eq!(w.ledger.state_digest(), d);
}

#[test]
fn a_check_in_after_the_block_closed_is_stale() {
    let mut w = World::new();
    let args = w.sign_check_in(&w.nodes[0]);
    let late = w.ledger.params().block_interval_ns + w.now;
    assert!(matches!(
        w.ledger.check_in(w.nodes[0].principal(), late, args),
        Err(LedgerError::StaleCheckIn { .. })
    ));
}

fn report(cid: u64, measurement: Option<Vec<u8>>) -> ReportActiveArgs {
    ReportActiveArgs {
        contract_id: cid,
        endpoint: format!("c{cid}.example"),
        evidence_hash: ByteBuf::from(vec![3; 32]),
        launch_measurement: measurement.map(ByteBuf::from),
    }
}

/// Rents `offering` as developer 0 and brings it to provisioning through `node`.
fn provisioning(w: &mut World, node: Principal, offering: u64) -> u64 {
    let dev = w.devs[0].principal();
    let cid = w
        .ledger
        .rent(
            dev,
            w.now,
            RentArgs {
                offering_id: offering,
                hours: 2,
            },
        )
        .unwrap()
        .id;
    w.ledger.accept_contract(node, w.now, cid).unwrap();
    w.ledger.start_provisioning(node, w.now, cid).unwrap();
    cid
}

fn assert_invalid(r: LedgerResult<Contract>, want_field: &str, reason_has: &str) {
    match r {
        Err(LedgerError::InvalidArgument { field, reason }) => {
            assert_eq!(field, want_field, "{reason}");
            assert!(reason.contains(reason_has), "{reason}");
        }
        other => panic!("expected invalid {want_field}, got {other:?}"),
    }
}

#[test]
fn a_confidential_contract_needs_its_platforms_launch_measurement() {
    let mut w = World::new();
    // SEV-SNP: MEASUREMENT; TDX: MRTD, RTMR1 and RTMR2 (MRTD alone leaves the
    // kernel out).
    for (platform, len) in [(Confidential::SevSnp, 48), (Confidential::Tdx, 144)] {
        let (node, oid) = w.confidential_offering(platform);
        let cid = provisioning(&mut w, node, oid);
        let before = w.ledger.state_digest();
        let now = w.now;
        assert_invalid(
            w.ledger.report_active(node, now, report(cid, None)),
            "launch_measurement",
            platform.as_str(),
        );
        for wrong in [0, 32, 47, 49, 64, 96, 143, 145, 192] {
            if wrong == len {
                continue;
            }
            assert_invalid(
                w.ledger
                    .report_active(node, now, report(cid, Some(vec![1; wrong]))),
                "launch_measurement",
                &format!("expected {len} bytes"),
            );
        }
        assert_eq!(w.ledger.state_digest(), before, "refusals change nothing");
        let c = w.ledger.contract_info(cid).unwrap();
        assert_eq!(c.state, ContractState::Provisioning);
        assert_eq!((c.launch_measurement, c.endpoint), (None, None));

        let measurement: Vec<u8> = (0..len as u8).collect();
        let c = w
            .ledger
            .report_active(node, now, report(cid, Some(measurement.clone())))
            .expect("the platform's length is accepted");
        assert_eq!(c.state, ContractState::Active);
        assert_eq!(c.launch_measurement, Some(ByteBuf::from(measurement)));
        assert_eq!(w.ledger.contract_info(cid).unwrap(), c);
    }
    w.check_invariants();
}

#[test]
fn a_regular_contract_refuses_a_launch_measurement() {
    let mut w = World::new();
    let node = w.nodes[0].principal();
    let oid = w.offerings[0];
    let cid = provisioning(&mut w, node, oid);
    let before = w.ledger.state_digest();
    let now = w.now;
    assert_invalid(
        w.ledger
            .report_active(node, now, report(cid, Some(vec![9; 48]))),
        "launch_measurement",
        "not confidential",
    );
    assert_eq!(w.ledger.state_digest(), before);
    let c = w
        .ledger
        .report_active(node, now, report(cid, None))
        .expect("no measurement for a regular VM");
    assert_eq!(c.state, ContractState::Active);
    assert_eq!(c.launch_measurement, None);
}

#[test]
fn a_withdrawn_offering_fails_closed_at_report_active() {
    let mut w = World::new();
    let prov = w.providers[0].principal();
    let (snp_node, snp_offering) = w.confidential_offering(Confidential::SevSnp);
    let snp = provisioning(&mut w, snp_node, snp_offering);
    let regular_node = w.nodes[0].principal();
    let regular_offering = w.offerings[0];
    let regular = provisioning(&mut w, regular_node, regular_offering);
    let now = w.now;
    w.ledger.remove_offering(prov, now, snp_offering).unwrap();
    w.ledger
        .remove_offering(prov, now, regular_offering)
        .unwrap();
    let before = w.ledger.state_digest();
    for (node, cid) in [(snp_node, snp), (regular_node, regular)] {
        for m in [None, Some(vec![7; 48])] {
            assert_invalid(
                w.ledger.report_active(node, now, report(cid, m)),
                "contract_id",
                "was withdrawn",
            );
        }
    }
    assert_eq!(w.ledger.state_digest(), before);
    // The contract is refunded at its deadline like any other missed one.
    w.ledger
        .tick(now + w.ledger.params().provisioning_timeout_ns);
    assert_eq!(
        w.ledger.contract_info(snp).unwrap().state,
        ContractState::DeadlineMissed
    );
    w.check_invariants();
}

/// Nodes and journals from before the field send `report_active` without it:
/// Candid decodes the missing `opt` as absent.
#[test]
fn report_active_without_the_measurement_field_still_decodes() {
    #[derive(candid::CandidType)]
    struct ReportActiveArgsBefore {
        contract_id: u64,
        endpoint: String,
        evidence_hash: ByteBuf,
    }
    let mut w = World::new();
    let node = w.nodes[0].principal();
    let oid = w.offerings[0];
    let cid = provisioning(&mut w, node, oid);
    let (r, committed): (LedgerResult<Contract>, bool) = w.call(
        node,
        "report_active",
        &ReportActiveArgsBefore {
            contract_id: cid,
            endpoint: "old.example".into(),
            evidence_hash: ByteBuf::from(vec![2; 32]),
        },
    );
    let c = r.expect("an old-shaped report is accepted");
    assert!(committed);
    assert_eq!(c.state, ContractState::Active);
    assert_eq!(c.launch_measurement, None);
}
