//! A small deterministic world shared by the core's tests.
#![allow(dead_code)]

use candid::{Encode, Principal};
use dc_identity::{Delegation, Domain, Identity, Permission};
use dc_ledger_core::dispatch;
use dc_ledger_core::*;

pub const T0: u64 = 1_700_000_000_000_000_000;
pub const TOKEN: u64 = E9S_PER_TOKEN;

pub fn id(n: u8) -> Identity {
    Identity::from_secret_bytes([n; 32])
}

pub struct World {
    pub ledger: Ledger,
    pub treasury: Principal,
    pub devs: Vec<Identity>,
    pub providers: Vec<Identity>,
    pub nodes: Vec<Identity>,
    pub offerings: Vec<u64>,
    pub now: u64,
}

pub fn params(treasury: Principal) -> Params {
    let mut p = Params::with_treasury(treasury, Principal::management_canister());
    p.block_interval_ns = 60_000_000_000;
    p
}

pub fn caps(vcpus: u32, ram: u32, conf: Confidential, gpus: Vec<GpuSpec>) -> NodeCapabilities {
    NodeCapabilities {
        cpu_model: "AMD EPYC 9654".into(),
        vcpus,
        ram_gib: ram,
        storage_gib: 2_000,
        bandwidth_mbps: 10_000,
        gpus,
        confidential: conf,
        region: "eu-central".into(),
        country: "DE".into(),
        image_hash: "00".repeat(32),
    }
}

pub fn offering(node: Principal, vcpus: u32, ram: u32, price: u64) -> OfferingSpec {
    OfferingSpec {
        node,
        name: format!("{vcpus}c-{ram}g"),
        vcpus,
        ram_gib: ram,
        storage_gib: 100,
        bandwidth_mbps: 1_000,
        gpu: None,
        confidential: Confidential::None,
        region: "eu-central".into(),
        country: "DE".into(),
        price_e9s_per_hour: price,
        min_hours: 1,
        max_hours: 1_000,
    }
}

pub fn delegation(provider: &Identity, node: &Identity, expires: u64) -> Delegation {
    Delegation::sign(
        provider,
        node.public_key_der(),
        &[
            Permission::CheckIn,
            Permission::AcceptContracts,
            Permission::ReportStatus,
        ],
        expires,
    )
}

impl World {
    /// Two developers with 10,000 DCT, two providers with one node and two
    /// offerings each; developer 0 starts with reputation.
    pub fn new() -> World {
        let treasury = id(200).principal();
        let devs = vec![id(1), id(2)];
        let providers = vec![id(11), id(12)];
        let nodes = vec![id(21), id(22)];
        let mut balances: Vec<(Account, u64)> = devs
            .iter()
            .map(|d| (Account::of(d.principal()), 10_000 * TOKEN))
            .collect();
        balances.extend(
            providers
                .iter()
                .map(|p| (Account::of(p.principal()), 100 * TOKEN)),
        );
        let genesis = Genesis {
            params: params(treasury),
            balances,
            reputations: vec![(devs[0].principal(), 1_000 * TOKEN)],
            time_ns: T0,
        };
        let ledger = Ledger::new(genesis).expect("genesis");
        let mut w = World {
            ledger,
            treasury,
            devs,
            providers,
            nodes,
            offerings: vec![],
            now: T0,
        };
        for i in 0..2 {
            let p = w.providers[i].principal();
            w.ledger
                .register_provider(
                    p,
                    w.now,
                    ProviderProfile {
                        legal_name: format!("Provider {i} GmbH"),
                        jurisdiction: "DE".into(),
                        email: format!("ops{i}@example.com"),
                        website: "https://example.com".into(),
                    },
                )
                .expect("register provider");
            let d = delegation(&w.providers[i], &w.nodes[i], T0 + 1_000 * HOUR_NS);
            w.ledger
                .register_node(
                    p,
                    w.now,
                    RegisterNodeArgs {
                        delegation: d,
                        capabilities: caps(16, 64, Confidential::None, vec![]),
                    },
                )
                .expect("register node");
            let node = w.nodes[i].principal();
            for (vcpus, ram, price) in [(4, 16, 100_000_000 + i as u64), (8, 32, 200_000_000)] {
                let oid = w
                    .ledger
                    .add_offering(p, w.now, offering(node, vcpus, ram, price))
                    .expect("offering");
                w.offerings.push(oid);
            }
        }
        w
    }

    /// Registers a `platform` node for provider 0 and publishes a 4-vCPU
    /// offering on it that promises that platform; returns (node, offering).
    pub fn confidential_offering(&mut self, platform: Confidential) -> (Principal, u64) {
        let provider = &self.providers[0];
        let node = id(match platform {
            Confidential::SevSnp => 31,
            Confidential::Tdx => 32,
            Confidential::None => 33,
        });
        let p = provider.principal();
        self.ledger
            .register_node(
                p,
                self.now,
                RegisterNodeArgs {
                    delegation: delegation(provider, &node, T0 + 1_000 * HOUR_NS),
                    capabilities: caps(16, 64, platform, vec![]),
                },
            )
            .expect("register confidential node");
        let spec = OfferingSpec {
            confidential: platform,
            ..offering(node.principal(), 4, 16, 300_000_000)
        };
        let oid = self
            .ledger
            .add_offering(p, self.now, spec)
            .expect("confidential offering");
        (node.principal(), oid)
    }

    /// Runs an update through the Candid dispatcher, as the services do.
    pub fn call<A: candid::CandidType, R: candid::CandidType + for<'de> serde::Deserialize<'de>>(
        &mut self,
        caller: Principal,
        method: &str,
        arg: &A,
    ) -> (R, bool) {
        let bytes = Encode!(arg).expect("encode");
        let out =
            dispatch::update(&mut self.ledger, caller, self.now, method, &bytes).expect("dispatch");
        let r = candid::decode_one::<R>(&out.reply).expect("decode reply");
        (r, out.committed)
    }

    /// The supply invariant: every token is in a balance or in escrow.
    pub fn check_invariants(&self) {
        let l = &self.ledger;
        let stats = l.stats();
        assert_eq!(
            l.sum_of_balances() + l.escrow_total() as u128,
            l.total_supply() as u128,
            "supply = balances + escrow"
        );
        assert_eq!(
            stats.total_supply_e9s,
            stats.genesis_e9s + stats.minted_rewards_e9s - stats.burned_e9s,
            "supply = genesis + rewards - burned"
        );
        assert!(
            stats.minted_rewards_e9s as u128
                <= scheduled_supply(l.params(), stats.reward_block_height),
            "minted within schedule"
        );
        let mut escrow = 0u64;
        for cid in 0..stats.contracts {
            let c = l.contract_info(cid).expect("contract");
            assert_eq!(
                c.escrow_e9s() as u128 + c.released_e9s as u128 + c.refunded_e9s as u128,
                c.paid_e9s as u128
            );
            assert!(c.fees_e9s <= c.released_e9s);
            if c.state.is_final() {
                assert_eq!(c.escrow_e9s(), 0, "final contract holds no escrow");
            }
            escrow += c.escrow_e9s();
        }
        assert_eq!(
            escrow,
            l.escrow_total(),
            "escrow = sum of contracts' escrow"
        );
        // Custom domains: one non-final holder per name, and the index kept
        // up to date is the one a snapshot would rebuild (`==` compares it).
        let mut held = std::collections::BTreeMap::new();
        for cid in 0..stats.contracts {
            let c = l.contract_info(cid).expect("contract");
            if c.state.is_final() {
                continue;
            }
            for name in &c.ingress.domains {
                if let Some(other) = held.insert(name.clone(), cid) {
                    panic!("{name} held by contracts {other} and {cid}");
                }
                assert_eq!(l.domain_holder(name), Some(cid), "holder of {name}");
            }
        }
        let mut rebuilt = l.clone();
        rebuilt.rebuild_indexes();
        assert!(rebuilt == *l, "the domain holder index is out of step");
    }

    pub fn sign_check_in(&self, node: &Identity) -> CheckInArgs {
        let ch = self.ledger.check_in_challenge();
        let msg = check_in_message(ch.block_height, &ch.previous_block_hash, &node.principal());
        CheckInArgs {
            block_height: ch.block_height,
            previous_block_hash: ch.previous_block_hash,
            signature: serde_bytes::ByteBuf::from(node.sign(Domain::CheckIn, &msg).to_vec()),
        }
    }
}
