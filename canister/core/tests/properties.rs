//! Property tests over random operation sequences (10,000 by default; set
//! PROPTEST_CASES to change). After every operation:
//! - supply = Σ balances + Σ escrow, and supply = genesis + rewards − burned;
//! - minted rewards never exceed the schedule for the blocks closed;
//! - each contract's escrow = paid − released − refunded, final contracts hold none;
//! - balances and reputation never go below zero (u64, checked arithmetic);
//! - no custom domain is held by two non-final contracts, and the holder index
//!   kept up to date equals the one rebuilt from the contracts;
//! - an operation the ledger refuses leaves the serialized state byte-identical.

mod common;

use candid::{CandidType, Nat, Principal};
use common::*;
use dc_ledger_core::dispatch;
use dc_ledger_core::*;
use proptest::prelude::*;
use serde_bytes::ByteBuf;

#[derive(Clone, Debug)]
enum Op {
    Transfer {
        from: usize,
        to: usize,
        amount: u64,
        dedup: bool,
        bad_fee: bool,
    },
    Burn {
        from: usize,
        amount: u64,
    },
    Approve {
        from: usize,
        spender: usize,
        amount: u64,
        expected: Option<u64>,
        expires_in_min: Option<u32>,
    },
    TransferFrom {
        spender: usize,
        from: usize,
        to: usize,
        amount: u64,
    },
    Rent {
        dev: usize,
        offering: usize,
        hours: u32,
    },
    Step {
        actor: usize,
        contract: u64,
        step: u8,
    },
    Extend {
        dev: usize,
        contract: u64,
        hours: u32,
    },
    Cancel {
        dev: usize,
        contract: u64,
    },
    Rate {
        from: usize,
        to: usize,
        spend: u64,
    },
    CheckIn {
        node: usize,
        tamper: bool,
    },
    AddOffering {
        provider: usize,
        node: usize,
        vcpus: u32,
        price: u64,
    },
    RemoveOffering {
        provider: usize,
        offering: usize,
    },
    SetIngress {
        dev: usize,
        contract: u64,
        /// Indexes into [`DOMAIN_POOL`]; repeats and invalid names included.
        names: Vec<usize>,
        proxy_protocol: bool,
    },
    Advance {
        minutes: u32,
    },
}

/// Names the property test registers: few, so that contracts contend for
/// them; one invalid.
const DOMAIN_POOL: [&str; 5] = [
    "a.example",
    "b.example",
    "*.c.example",
    "d.c.example",
    "Invalid.example",
];

/// Actors: 0-1 developers, 2-3 providers, 4-5 nodes, 6 treasury, 7 anonymous.
const ACTORS: usize = 8;

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..1_000,
        0u64..(20 * TOKEN),
        Just(10_000 * TOKEN),
        Just(u64::MAX)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let a = 0..ACTORS;
    prop_oneof![
        3 => (a.clone(), a.clone(), amount(), any::<bool>(), prop::bool::weighted(0.1))
            .prop_map(|(from, to, amount, dedup, bad_fee)| Op::Transfer { from, to, amount, dedup, bad_fee }),
        1 => (a.clone(), amount()).prop_map(|(from, amount)| Op::Burn { from, amount }),
        2 => (a.clone(), a.clone(), amount(), prop::option::of(0u64..(20 * TOKEN)), prop::option::of(0u32..120))
            .prop_map(|(from, spender, amount, expected, expires_in_min)| Op::Approve { from, spender, amount, expected, expires_in_min }),
        2 => (a.clone(), a.clone(), a.clone(), amount()).prop_map(|(spender, from, to, amount)| Op::TransferFrom { spender, from, to, amount }),
        4 => (a.clone(), 0usize..6, prop_oneof![1u32..20, Just(0), Just(2_000)]).prop_map(|(dev, offering, hours)| Op::Rent { dev, offering, hours }),
        6 => (a.clone(), 0u64..8, 0u8..4).prop_map(|(actor, contract, step)| Op::Step { actor, contract, step }),
        2 => (a.clone(), 0u64..8, 0u32..30).prop_map(|(dev, contract, hours)| Op::Extend { dev, contract, hours }),
        2 => (a.clone(), 0u64..8).prop_map(|(dev, contract)| Op::Cancel { dev, contract }),
        2 => (a.clone(), a.clone(), prop_oneof![1u64..1_000, 0u64..(100 * TOKEN)]).prop_map(|(from, to, spend)| Op::Rate { from, to, spend }),
        2 => (a.clone(), prop::bool::weighted(0.2)).prop_map(|(node, tamper)| Op::CheckIn { node, tamper }),
        1 => (a.clone(), 0usize..2, 0u32..20, 0u64..(3 * TOKEN)).prop_map(|(provider, node, vcpus, price)| Op::AddOffering { provider, node, vcpus, price }),
        1 => (a.clone(), 0usize..6).prop_map(|(provider, offering)| Op::RemoveOffering { provider, offering }),
        3 => (a.clone(), 0u64..8, prop::collection::vec(0..DOMAIN_POOL.len(), 0..4), any::<bool>())
            .prop_map(|(dev, contract, names, proxy_protocol)| Op::SetIngress { dev, contract, names, proxy_protocol }),
        4 => prop_oneof![0u32..5, 0u32..120, 0u32..3_000].prop_map(|minutes| Op::Advance { minutes }),
    ]
}

struct Runner {
    w: World,
    actors: Vec<Principal>,
}

impl Runner {
    fn new() -> Runner {
        let w = World::new();
        let mut actors: Vec<Principal> = w.devs.iter().map(|i| i.principal()).collect();
        actors.extend(w.providers.iter().map(|i| i.principal()));
        actors.extend(w.nodes.iter().map(|i| i.principal()));
        actors.push(w.treasury);
        actors.push(Principal::anonymous());
        Runner { w, actors }
    }

    /// Calls through the Candid dispatcher; returns whether the ledger committed.
    fn call<A: CandidType>(&mut self, caller: usize, method: &str, arg: A) -> bool {
        let bytes = candid::encode_one(arg).expect("encode");
        let out = dispatch::update(
            &mut self.w.ledger,
            self.actors[caller],
            self.w.now,
            method,
            &bytes,
        )
        .expect("dispatch");
        out.committed
    }

    fn apply(&mut self, op: &Op) -> bool {
        let acct = |r: &Runner, i: usize| Account::of(r.actors[i]);
        match op.clone() {
            Op::Transfer {
                from,
                to,
                amount,
                dedup,
                bad_fee,
            } => {
                let arg = TransferArg {
                    from_subaccount: None,
                    to: acct(self, to),
                    amount: Nat::from(amount),
                    fee: bad_fee.then(|| Nat::from(1u64)),
                    memo: None,
                    created_at_time: dedup.then_some(self.w.now),
                };
                self.call(from, "icrc1_transfer", arg)
            }
            Op::Burn { from, amount } => {
                let arg = TransferArg {
                    from_subaccount: None,
                    to: Account::of(Principal::management_canister()),
                    amount: Nat::from(amount),
                    fee: None,
                    memo: None,
                    created_at_time: None,
                };
                self.call(from, "icrc1_transfer", arg)
            }
            Op::Approve {
                from,
                spender,
                amount,
                expected,
                expires_in_min,
            } => {
                let arg = ApproveArgs {
                    from_subaccount: None,
                    spender: acct(self, spender),
                    amount: Nat::from(amount),
                    expected_allowance: expected.map(Nat::from),
                    expires_at: expires_in_min.map(|m| self.w.now + m as u64 * 60_000_000_000),
                    fee: None,
                    memo: None,
                    created_at_time: None,
                };
                self.call(from, "icrc2_approve", arg)
            }
            Op::TransferFrom {
                spender,
                from,
                to,
                amount,
            } => {
                let arg = TransferFromArgs {
                    spender_subaccount: None,
                    from: acct(self, from),
                    to: acct(self, to),
                    amount: Nat::from(amount),
                    fee: None,
                    memo: None,
                    created_at_time: None,
                };
                self.call(spender, "icrc2_transfer_from", arg)
            }
            Op::Rent {
                dev,
                offering,
                hours,
            } => {
                let id = self.w.offerings.get(offering).copied().unwrap_or(999);
                self.call(
                    dev,
                    "rent",
                    RentArgs {
                        offering_id: id,
                        hours,
                    },
                )
            }
            Op::Step {
                actor,
                contract,
                step,
            } => match step {
                0 => self.call(actor, "accept_contract", contract),
                1 => self.call(actor, "start_provisioning", contract),
                2 => self.call(
                    actor,
                    "report_active",
                    ReportActiveArgs {
                        contract_id: contract,
                        endpoint: "vm.example".into(),
                        evidence_hash: ByteBuf::from(vec![9; 32]),
                        launch_measurement: None,
                    },
                ),
                _ => self.call(actor, "reject_contract", contract),
            },
            Op::Extend {
                dev,
                contract,
                hours,
            } => self.call(
                dev,
                "extend_contract",
                ExtendArgs {
                    contract_id: contract,
                    hours,
                },
            ),
            Op::Cancel { dev, contract } => self.call(dev, "cancel_contract", contract),
            Op::Rate { from, to, spend } => {
                let target = self.actors[to];
                self.call(
                    from,
                    "rate",
                    RateArgs {
                        target,
                        spend,
                        reason: "property test".into(),
                    },
                )
            }
            Op::CheckIn { node, tamper } => {
                // Actors 4 and 5 are the real nodes; others sign with some key.
                let signer = match node {
                    4 => common::id(21),
                    5 => common::id(22),
                    n => common::id(n as u8 + 1),
                };
                let mut args = self.w.sign_check_in(&signer);
                if tamper {
                    args.block_height += 1;
                }
                self.call(node, "check_in", args)
            }
            Op::AddOffering {
                provider,
                node,
                vcpus,
                price,
            } => {
                let spec = offering(self.actors[4 + node], vcpus, vcpus.max(1), price);
                let before = self.w.ledger.stats().offerings;
                let ok = self.call(provider, "add_offering", spec);
                if ok {
                    assert_eq!(self.w.ledger.stats().offerings, before + 1);
                }
                ok
            }
            Op::RemoveOffering { provider, offering } => {
                let id = self.w.offerings.get(offering).copied().unwrap_or(999);
                self.call(provider, "remove_offering", id)
            }
            Op::SetIngress {
                dev,
                contract,
                names,
                proxy_protocol,
            } => self.call(
                dev,
                "set_contract_ingress",
                SetIngressArgs {
                    contract_id: contract,
                    domains: names.iter().map(|&i| DOMAIN_POOL[i].to_string()).collect(),
                    proxy_protocol,
                },
            ),
            Op::Advance { minutes } => {
                self.w.now += minutes as u64 * 60_000_000_000;
                self.w.ledger.tick(self.w.now)
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(10_000),
        max_shrink_iters: 2_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn ledger_invariants_hold_for_random_operation_sequences(ops in prop::collection::vec(op(), 1..40)) {
        let mut r = Runner::new();
        r.w.check_invariants();
        for op in &ops {
            let before = r.w.ledger.state_digest();
            let committed = r.apply(op);
            if !committed {
                prop_assert_eq!(r.w.ledger.state_digest(), before, "refused {:?} changed the state", op);
            }
            r.w.check_invariants();
        }
    }
}
