//! Versioned binary encoding of the whole ledger, for the local service's
//! snapshots and the canister's upgrades.
//!
//! The encoding (postcard) is not self-describing: a snapshot decodes only
//! into the exact type layout that wrote it. So every layout change bumps the
//! version in the magic, and earlier layouts stay readable through frozen
//! copies of the types that changed (modules `v02`, `v03`). Each frozen layout
//! converts into the next one (02 → 03 → current), so a layout change only
//! adds a frozen copy of the current types and points the newest frozen
//! module's conversion at it. An upgraded canister or `dc-ledger` therefore
//! reads what earlier releases wrote, and writes the current layout from then
//! on.

use crate::ledger::Ledger;

/// Magic and version prefix of a snapshot. The last two digits are the
/// layout version: bump them whenever a serialized type changes, and keep the
/// previous layouts decodable (modules `v02`, `v03`).
/// 02: `NodeInfo.reserved_gpus_by_model`.
/// 03: `Contract.launch_measurement`.
/// 04: `Contract.ingress`.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"DCLEDG04";
/// The layout before the current one, still read.
pub const SNAPSHOT_MAGIC_V03: &[u8; 8] = b"DCLEDG03";
/// The oldest layout still read.
pub const SNAPSHOT_MAGIC_V02: &[u8; 8] = b"DCLEDG02";

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a ledger snapshot (expected magic {expected:?})", expected = String::from_utf8_lossy(SNAPSHOT_MAGIC))]
    BadMagic,
    #[error("snapshot layout {found} is not one of the supported {supported}; it was written by another version of the ledger")]
    UnsupportedVersion { found: String, supported: String },
    #[error("corrupt snapshot: {0}")]
    Corrupt(String),
}

/// Encodes the ledger (derived indexes excluded).
pub fn encode(ledger: &Ledger) -> Vec<u8> {
    let mut out = SNAPSHOT_MAGIC.to_vec();
    // Serializing plain in-memory data into a Vec cannot fail; if it ever did,
    // stopping is right: an empty snapshot would replace the real one.
    out.extend(postcard::to_stdvec(ledger).expect("serializing the ledger into memory"));
    out
}

/// Decodes a snapshot of the current or an earlier layout and rebuilds the
/// derived indexes (search, domain holders).
pub fn decode(bytes: &[u8]) -> Result<Ledger, SnapshotError> {
    let corrupt = |e: postcard::Error| SnapshotError::Corrupt(e.to_string());
    let mut ledger: Ledger = if let Some(body) = bytes.strip_prefix(SNAPSHOT_MAGIC.as_slice()) {
        postcard::from_bytes(body).map_err(corrupt)?
    } else if let Some(body) = bytes.strip_prefix(SNAPSHOT_MAGIC_V03.as_slice()) {
        postcard::from_bytes::<v03::Ledger>(body)
            .map_err(corrupt)?
            .into()
    } else if let Some(body) = bytes.strip_prefix(SNAPSHOT_MAGIC_V02.as_slice()) {
        v03::Ledger::from(postcard::from_bytes::<v02::Ledger>(body).map_err(corrupt)?).into()
    } else {
        return Err(match bytes.get(..8) {
            Some(m) if m.starts_with(b"DCLEDG") => SnapshotError::UnsupportedVersion {
                found: String::from_utf8_lossy(m).into_owned(),
                supported: [SNAPSHOT_MAGIC, SNAPSHOT_MAGIC_V03, SNAPSHOT_MAGIC_V02]
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .join(", "),
            },
            _ => SnapshotError::BadMagic,
        });
    };
    ledger.rebuild_indexes();
    Ok(ledger)
}

/// Layout 03, frozen: the types that changed in 04 (`Contract` gained
/// `ingress`) and those that contain them, field for field in their 03 order.
/// Everything else is shared with the current layout. Do not edit the types;
/// when a later layout changes, add its frozen copy and convert these into it.
mod v03 {
    use std::collections::{BTreeMap, BTreeSet};

    use candid::Principal;
    use serde::Deserialize;
    use serde_bytes::ByteBuf;

    use crate::blocks::StoredBlock;
    use crate::ingress::DomainIndex;
    use crate::ledger::AllowanceEntry;
    use crate::market::{Provider, SearchIndex};
    use crate::rewards::RewardState;
    use crate::types::{
        Account, ContractState, IngressSettings, NodeInfo, Offering, Params, RatingRecord,
        Resources,
    };

    /// `Ledger` of layout 03.
    #[derive(Deserialize)]
    pub(super) struct Ledger {
        pub(super) params: Params,
        pub(super) time_ns: u64,
        pub(super) balances: BTreeMap<Account, u64>,
        pub(super) allowances: BTreeMap<(Account, Account), AllowanceEntry>,
        pub(super) blocks: Vec<StoredBlock>,
        pub(super) recent_txs: BTreeMap<[u8; 32], (u64, u64)>,
        pub(super) recent_txs_by_time: BTreeSet<(u64, [u8; 32])>,
        pub(super) total_supply: u64,
        pub(super) genesis_minted: u64,
        pub(super) burned: u64,
        pub(super) escrow_total: u64,
        pub(super) reputation: BTreeMap<Principal, u64>,
        pub(super) ratings: Vec<RatingRecord>,
        pub(super) market: Market,
        pub(super) rewards: RewardState,
    }

    /// `Market` of layout 03.
    #[derive(Deserialize)]
    pub(super) struct Market {
        pub(super) providers: BTreeMap<Principal, Provider>,
        pub(super) nodes: BTreeMap<Principal, NodeInfo>,
        pub(super) offerings: BTreeMap<u64, Offering>,
        pub(super) next_offering_id: u64,
        pub(super) contracts: BTreeMap<u64, Contract>,
        pub(super) next_contract_id: u64,
        pub(super) contracts_by_party: BTreeMap<Principal, BTreeSet<u64>>,
        pub(super) timeline: BTreeSet<(u64, u64)>,
        pub(super) active: BTreeSet<u64>,
    }

    /// `Contract` of layout 03: no ingress settings.
    #[derive(Deserialize)]
    pub(super) struct Contract {
        pub(super) id: u64,
        pub(super) offering_id: u64,
        pub(super) developer: Principal,
        pub(super) provider: Principal,
        pub(super) node: Principal,
        pub(super) resources: Resources,
        pub(super) gpu_model: Option<String>,
        pub(super) price_e9s_per_hour: u64,
        pub(super) hours: u32,
        pub(super) state: ContractState,
        pub(super) created_at_ns: u64,
        pub(super) provisioning_deadline_ns: u64,
        pub(super) active_since_ns: Option<u64>,
        pub(super) ends_at_ns: Option<u64>,
        pub(super) paid_e9s: u64,
        pub(super) released_e9s: u64,
        pub(super) refunded_e9s: u64,
        pub(super) fees_e9s: u64,
        pub(super) endpoint: Option<String>,
        pub(super) evidence_hash: Option<ByteBuf>,
        pub(super) launch_measurement: Option<ByteBuf>,
        pub(super) history: Vec<(u64, ContractState)>,
    }

    impl From<Contract> for crate::types::Contract {
        fn from(c: Contract) -> Self {
            crate::types::Contract {
                id: c.id,
                offering_id: c.offering_id,
                developer: c.developer,
                provider: c.provider,
                node: c.node,
                resources: c.resources,
                gpu_model: c.gpu_model,
                price_e9s_per_hour: c.price_e9s_per_hour,
                hours: c.hours,
                state: c.state,
                created_at_ns: c.created_at_ns,
                provisioning_deadline_ns: c.provisioning_deadline_ns,
                active_since_ns: c.active_since_ns,
                ends_at_ns: c.ends_at_ns,
                paid_e9s: c.paid_e9s,
                released_e9s: c.released_e9s,
                refunded_e9s: c.refunded_e9s,
                fees_e9s: c.fees_e9s,
                endpoint: c.endpoint,
                evidence_hash: c.evidence_hash,
                launch_measurement: c.launch_measurement,
                // Layout 03 predates custom domains: none registered.
                ingress: IngressSettings::default(),
                history: c.history,
            }
        }
    }

    impl From<Market> for crate::market::Market {
        fn from(m: Market) -> Self {
            crate::market::Market {
                providers: m.providers,
                nodes: m.nodes,
                offerings: m.offerings,
                next_offering_id: m.next_offering_id,
                contracts: m
                    .contracts
                    .into_iter()
                    .map(|(id, c)| (id, c.into()))
                    .collect(),
                next_contract_id: m.next_contract_id,
                contracts_by_party: m.contracts_by_party,
                timeline: m.timeline,
                active: m.active,
            }
        }
    }

    impl From<Ledger> for crate::ledger::Ledger {
        fn from(l: Ledger) -> Self {
            crate::ledger::Ledger {
                params: l.params,
                time_ns: l.time_ns,
                balances: l.balances,
                allowances: l.allowances,
                blocks: l.blocks,
                recent_txs: l.recent_txs,
                recent_txs_by_time: l.recent_txs_by_time,
                total_supply: l.total_supply,
                genesis_minted: l.genesis_minted,
                burned: l.burned,
                escrow_total: l.escrow_total,
                reputation: l.reputation,
                ratings: l.ratings,
                market: l.market.into(),
                rewards: l.rewards,
                // Derived; rebuilt by `decode`.
                index: SearchIndex::default(),
                domain_holders: DomainIndex::default(),
            }
        }
    }
}

/// Layout 02, frozen: the types that changed in 03 (`Contract` gained
/// `launch_measurement`) and those that contain them, field for field in
/// their 02 order. Everything else is shared with later layouts. Converts
/// into layout 03 ([`super::v03`]). Do not edit the types.
mod v02 {
    use std::collections::{BTreeMap, BTreeSet};

    use candid::Principal;
    use serde::Deserialize;
    use serde_bytes::ByteBuf;

    use crate::blocks::StoredBlock;
    use crate::ledger::AllowanceEntry;
    use crate::market::Provider;
    use crate::rewards::RewardState;
    use crate::types::{
        Account, ContractState, NodeInfo, Offering, Params, RatingRecord, Resources,
    };

    /// `Ledger` of layout 02.
    #[derive(Deserialize)]
    pub(super) struct Ledger {
        params: Params,
        time_ns: u64,
        balances: BTreeMap<Account, u64>,
        allowances: BTreeMap<(Account, Account), AllowanceEntry>,
        blocks: Vec<StoredBlock>,
        recent_txs: BTreeMap<[u8; 32], (u64, u64)>,
        recent_txs_by_time: BTreeSet<(u64, [u8; 32])>,
        total_supply: u64,
        genesis_minted: u64,
        burned: u64,
        escrow_total: u64,
        reputation: BTreeMap<Principal, u64>,
        ratings: Vec<RatingRecord>,
        market: Market,
        rewards: RewardState,
    }

    /// `Market` of layout 02.
    #[derive(Deserialize)]
    struct Market {
        providers: BTreeMap<Principal, Provider>,
        nodes: BTreeMap<Principal, NodeInfo>,
        offerings: BTreeMap<u64, Offering>,
        next_offering_id: u64,
        contracts: BTreeMap<u64, Contract>,
        next_contract_id: u64,
        contracts_by_party: BTreeMap<Principal, BTreeSet<u64>>,
        timeline: BTreeSet<(u64, u64)>,
        active: BTreeSet<u64>,
    }

    /// `Contract` of layout 02: no launch measurement.
    #[derive(Deserialize)]
    struct Contract {
        id: u64,
        offering_id: u64,
        developer: Principal,
        provider: Principal,
        node: Principal,
        resources: Resources,
        gpu_model: Option<String>,
        price_e9s_per_hour: u64,
        hours: u32,
        state: ContractState,
        created_at_ns: u64,
        provisioning_deadline_ns: u64,
        active_since_ns: Option<u64>,
        ends_at_ns: Option<u64>,
        paid_e9s: u64,
        released_e9s: u64,
        refunded_e9s: u64,
        fees_e9s: u64,
        endpoint: Option<String>,
        evidence_hash: Option<ByteBuf>,
        history: Vec<(u64, ContractState)>,
    }

    impl From<Contract> for super::v03::Contract {
        fn from(c: Contract) -> Self {
            super::v03::Contract {
                id: c.id,
                offering_id: c.offering_id,
                developer: c.developer,
                provider: c.provider,
                node: c.node,
                resources: c.resources,
                gpu_model: c.gpu_model,
                price_e9s_per_hour: c.price_e9s_per_hour,
                hours: c.hours,
                state: c.state,
                created_at_ns: c.created_at_ns,
                provisioning_deadline_ns: c.provisioning_deadline_ns,
                active_since_ns: c.active_since_ns,
                ends_at_ns: c.ends_at_ns,
                paid_e9s: c.paid_e9s,
                released_e9s: c.released_e9s,
                refunded_e9s: c.refunded_e9s,
                fees_e9s: c.fees_e9s,
                endpoint: c.endpoint,
                evidence_hash: c.evidence_hash,
                // Layout 02 predates published launch measurements.
                launch_measurement: None,
                history: c.history,
            }
        }
    }

    impl From<Market> for super::v03::Market {
        fn from(m: Market) -> Self {
            super::v03::Market {
                providers: m.providers,
                nodes: m.nodes,
                offerings: m.offerings,
                next_offering_id: m.next_offering_id,
                contracts: m
                    .contracts
                    .into_iter()
                    .map(|(id, c)| (id, c.into()))
                    .collect(),
                next_contract_id: m.next_contract_id,
                contracts_by_party: m.contracts_by_party,
                timeline: m.timeline,
                active: m.active,
            }
        }
    }

    impl From<Ledger> for super::v03::Ledger {
        fn from(l: Ledger) -> Self {
            super::v03::Ledger {
                params: l.params,
                time_ns: l.time_ns,
                balances: l.balances,
                allowances: l.allowances,
                blocks: l.blocks,
                recent_txs: l.recent_txs,
                recent_txs_by_time: l.recent_txs_by_time,
                total_supply: l.total_supply,
                genesis_minted: l.genesis_minted,
                burned: l.burned,
                escrow_total: l.escrow_total,
                reputation: l.reputation,
                ratings: l.ratings,
                market: l.market.into(),
                rewards: l.rewards,
            }
        }
    }
}
