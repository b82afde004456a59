//! The ledger in stable memory across upgrades.
//!
//! Between upgrades the ledger lives on the heap. `pre_upgrade` writes its
//! snapshot ([`dc_ledger_core::snapshot::encode`]) to a stable memory as
//! `[len: u64 little-endian][snapshot bytes]`, growing the memory as needed
//! (a virtual memory of the `MemoryManager` holds up to terabytes, so
//! ledgers of hundreds of MB fit); `post_upgrade` reads it back. Both are
//! generic over [`Memory`], so native tests run them on a `VectorMemory`.

use std::fmt;

use dc_ledger_core::snapshot::{self, SnapshotError};
use dc_ledger_core::Ledger;
use ic_stable_structures::memory_manager::MemoryId;
use ic_stable_structures::reader::Reader;
use ic_stable_structures::writer::Writer;
use ic_stable_structures::{GrowFailed, Memory};

/// The `MemoryManager` memory that holds the upgrade snapshot.
pub const UPGRADE_MEMORY_ID: MemoryId = MemoryId::new(0);

/// Size of a stable memory page.
const PAGE_BYTES: u64 = 65_536;
/// Size of the length prefix.
const LEN_BYTES: u64 = 8;

/// Why the ledger could not be saved to or loaded from stable memory.
#[derive(Debug)]
pub enum StateError {
    /// Stable memory could not grow to hold the snapshot.
    Grow(GrowFailed),
    /// The memory is too small to hold a length prefix: nothing was saved.
    Empty,
    /// The length prefix names more bytes than the memory holds.
    Truncated { len: u64, available: u64 },
    /// The snapshot bytes do not decode.
    Snapshot(SnapshotError),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Grow(e) => {
                write!(f, "cannot grow stable memory for the ledger snapshot: {e}")
            }
            StateError::Empty => f.write_str("stable memory holds no ledger snapshot"),
            StateError::Truncated { len, available } => {
                write!(
                    f,
                    "ledger snapshot claims {len} bytes but stable memory holds only {available}"
                )
            }
            StateError::Snapshot(e) => write!(f, "cannot decode the ledger snapshot: {e}"),
        }
    }
}

impl std::error::Error for StateError {}

impl From<GrowFailed> for StateError {
    fn from(e: GrowFailed) -> Self {
        StateError::Grow(e)
    }
}

/// Writes the ledger's snapshot at the start of `memory`, length-prefixed.
/// Returns the number of bytes written.
pub fn save<M: Memory>(memory: &mut M, ledger: &Ledger) -> Result<u64, StateError> {
    let bytes = snapshot::encode(ledger);
    let len = bytes.len() as u64;
    let mut writer = Writer::new(memory, 0);
    writer.write(&len.to_le_bytes())?;
    writer.write(&bytes)?;
    Ok(LEN_BYTES + len)
}

/// Reads back a ledger written by [`save`].
pub fn load<M: Memory>(memory: &M) -> Result<Ledger, StateError> {
    let capacity = memory.size().saturating_mul(PAGE_BYTES);
    if capacity < LEN_BYTES {
        return Err(StateError::Empty);
    }
    let available = capacity - LEN_BYTES;
    let mut reader = Reader::new(memory, 0);
    let mut prefix = [0u8; LEN_BYTES as usize];
    read_exact(&mut reader, &mut prefix, available)?;
    let len = u64::from_le_bytes(prefix);
    let too_long = StateError::Truncated { len, available };
    if len > available {
        return Err(too_long);
    }
    let mut bytes = vec![0u8; usize::try_from(len).map_err(|_| too_long)?];
    read_exact(&mut reader, &mut bytes, available)?;
    snapshot::decode(&bytes).map_err(StateError::Snapshot)
}

fn read_exact<M: Memory>(
    reader: &mut Reader<'_, M>,
    buf: &mut [u8],
    available: u64,
) -> Result<(), StateError> {
    match reader.read(buf) {
        Ok(n) if n == buf.len() => Ok(()),
        _ => Err(StateError::Truncated {
            len: buf.len() as u64,
            available,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candid::{Nat, Principal};
    use dc_identity::{Delegation, Identity, Permission};
    use dc_ledger_core::*;
    use ic_stable_structures::memory_manager::MemoryManager;
    use ic_stable_structures::{DefaultMemoryImpl, VectorMemory};
    use serde_bytes::ByteBuf;

    const T0: u64 = 1_700_000_000_000_000_000;

    fn id(n: u8) -> Identity {
        Identity::from_secret_bytes([n; 32])
    }

    /// A ledger with genesis balances, transfers, an approval, a provider, a
    /// node, an offering, an active contract and a closed reward block.
    fn busy_ledger() -> Ledger {
        let (treasury, dev, dev2, provider, node) = (id(200), id(1), id(2), id(11), id(21));
        let mut params =
            Params::with_treasury(treasury.principal(), Principal::management_canister());
        params.block_interval_ns = 60_000_000_000;
        let mut l = Ledger::new(Genesis {
            params,
            balances: vec![
                (Account::of(dev.principal()), 10_000 * E9S_PER_TOKEN),
                (Account::of(provider.principal()), 100 * E9S_PER_TOKEN),
            ],
            reputations: vec![],
            time_ns: T0,
        })
        .expect("genesis");
        let mut now = T0;
        for i in 0..5u64 {
            now += 1_000_000_000;
            let arg = TransferArg {
                from_subaccount: None,
                to: Account {
                    owner: dev2.principal(),
                    subaccount: (i % 2 == 1).then_some([i as u8; 32]),
                },
                amount: Nat::from(E9S_PER_TOKEN + i),
                fee: None,
                memo: Some(ByteBuf::from(vec![i as u8; 4])),
                created_at_time: Some(now),
            };
            l.icrc1_transfer(dev.principal(), now, arg)
                .expect("transfer");
        }
        let approve = ApproveArgs {
            from_subaccount: None,
            spender: Account::of(dev2.principal()),
            amount: Nat::from(5 * E9S_PER_TOKEN),
            expected_allowance: None,
            expires_at: None,
            fee: None,
            memo: None,
            created_at_time: None,
        };
        l.icrc2_approve(dev.principal(), now, approve)
            .expect("approve");
        let profile = ProviderProfile {
            legal_name: "Provider GmbH".into(),
            jurisdiction: "DE".into(),
            email: "ops@example.com".into(),
            website: "https://example.com".into(),
        };
        l.register_provider(provider.principal(), now, profile)
            .expect("provider");
        let delegation = Delegation::sign(
            &provider,
            node.public_key_der(),
            &[
                Permission::CheckIn,
                Permission::AcceptContracts,
                Permission::ReportStatus,
            ],
            T0 + 1_000 * HOUR_NS,
        );
        let capabilities = NodeCapabilities {
            cpu_model: "AMD EPYC 9654".into(),
            vcpus: 16,
            ram_gib: 64,
            storage_gib: 2_000,
            bandwidth_mbps: 10_000,
            gpus: vec![],
            confidential: Confidential::SevSnp,
            region: "eu-central".into(),
            country: "DE".into(),
            image_hash: "00".repeat(32),
        };
        l.register_node(
            provider.principal(),
            now,
            RegisterNodeArgs {
                delegation,
                capabilities,
            },
        )
        .expect("node");
        let spec = OfferingSpec {
            node: node.principal(),
            name: "4c-16g".into(),
            vcpus: 4,
            ram_gib: 16,
            storage_gib: 100,
            bandwidth_mbps: 1_000,
            gpu: None,
            confidential: Confidential::SevSnp,
            region: "eu-central".into(),
            country: "DE".into(),
            price_e9s_per_hour: 100_000_000,
            min_hours: 1,
            max_hours: 1_000,
        };
        let offering_id = l
            .add_offering(provider.principal(), now, spec)
            .expect("offering");
        let contract = l
            .rent(
                dev.principal(),
                now,
                RentArgs {
                    offering_id,
                    hours: 10,
                },
            )
            .expect("rent");
        l.accept_contract(node.principal(), now, contract.id)
            .expect("accept");
        l.start_provisioning(node.principal(), now, contract.id)
            .expect("provision");
        let report = ReportActiveArgs {
            contract_id: contract.id,
            endpoint: "vm.example".into(),
            evidence_hash: ByteBuf::from(vec![7; 32]),
            launch_measurement: Some(ByteBuf::from(vec![0x48; 48])),
        };
        l.report_active(node.principal(), now, report)
            .expect("active");
        now += 2 * HOUR_NS;
        assert!(l.tick(now), "a reward block closes and escrow is released");
        let c = l.contract_info(contract.id).expect("contract");
        assert!(c.released_e9s > 0);
        assert_eq!(c.launch_measurement, Some(ByteBuf::from(vec![0x48; 48])));
        l
    }

    #[test]
    fn ledger_round_trips_through_a_vector_memory() {
        let ledger = busy_ledger();
        let mut memory = VectorMemory::default();
        let written = save(&mut memory, &ledger).expect("save");
        assert_eq!(written, LEN_BYTES + snapshot::encode(&ledger).len() as u64);
        let back = load(&memory).expect("load");
        assert_eq!(back.state_digest(), ledger.state_digest());
        assert_eq!(snapshot::encode(&back), snapshot::encode(&ledger));
        assert_eq!(back.tip(), ledger.tip());
        // Derived indexes are rebuilt: search answers the same.
        let q = SearchQuery::default();
        assert_eq!(
            back.search(&q).expect("search"),
            ledger.search(&q).expect("search")
        );
    }

    #[test]
    fn ledger_round_trips_through_a_memory_manager_memory() {
        let ledger = busy_ledger();
        let manager = MemoryManager::init(DefaultMemoryImpl::default());
        let mut memory = manager.get(UPGRADE_MEMORY_ID);
        save(&mut memory, &ledger).expect("save");
        // A shorter snapshot over a longer one: the length prefix wins.
        let small = Ledger::new(Genesis {
            params: ledger.params().clone(),
            balances: vec![],
            reputations: vec![],
            time_ns: T0,
        })
        .expect("genesis");
        save(&mut memory, &small).expect("save small");
        assert_eq!(
            load(&manager.get(UPGRADE_MEMORY_ID))
                .expect("load")
                .state_digest(),
            small.state_digest()
        );
        save(&mut memory, &ledger).expect("save again");
        assert_eq!(
            load(&manager.get(UPGRADE_MEMORY_ID))
                .expect("load")
                .state_digest(),
            ledger.state_digest()
        );
    }

    #[test]
    fn empty_or_corrupt_memory_is_an_error_not_a_panic() {
        let memory = VectorMemory::default();
        assert!(matches!(load(&memory), Err(StateError::Empty)));
        memory.grow(1);
        assert!(
            matches!(load(&memory), Err(StateError::Snapshot(_))),
            "zero length: no magic"
        );
        memory.write(0, &u64::MAX.to_le_bytes());
        assert!(matches!(load(&memory), Err(StateError::Truncated { .. })));
        memory.write(0, &16u64.to_le_bytes());
        memory.write(8, b"DCLEDG01garbage!");
        assert!(matches!(load(&memory), Err(StateError::Snapshot(_))));
    }
}
