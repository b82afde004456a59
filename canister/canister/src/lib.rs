//! The Decent Cloud ledger as an Internet Computer canister.
//!
//! A thin wrapper: every method of [`dc_ledger_core::dispatch::signatures`] is
//! exported under the same name, Candid types and mode, and calls the same
//! [`Ledger`] method the local service's dispatcher calls, with the IC's
//! caller and time. On top of the core it adds what only a canister has: the
//! certified ICRC-3 tip (`icrc3_get_tip_certificate`), a timer that closes
//! reward blocks and releases escrow, and stable memory across upgrades
//! ([`state`]). The interface is `ledger.did`, generated from this file
//! ([`candid_interface`]) and checked by the crate's tests.

pub mod init;
pub mod state;

use std::cell::RefCell;

use candid::{Nat, Principal};
use dc_icrc3::{
    GetArchivesArgs, GetBlocksRequest, GetBlocksResult, ICRC3ArchiveInfo, ICRC3DataCertificate,
    SupportedBlockType,
};
use dc_ledger_core::*;
use ic_cdk::{init, post_upgrade, pre_upgrade, query, update};
use ic_stable_structures::memory_manager::MemoryManager;
use ic_stable_structures::DefaultMemoryImpl;

pub use init::InitArgs;

thread_local! {
    /// The working ledger; `None` only before `init` / `post_upgrade`.
    static LEDGER: RefCell<Option<Ledger>> = const { RefCell::new(None) };
    /// Stable memory, split into virtual memories ([`state::UPGRADE_MEMORY_ID`]).
    static MEMORY: RefCell<MemoryManager<DefaultMemoryImpl>> =
        RefCell::new(MemoryManager::init(DefaultMemoryImpl::default()));
}

// ------------------------------------------------------------ plumbing ---

fn caller() -> Principal {
    ic_cdk::api::msg_caller()
}

fn now() -> u64 {
    ic_cdk::api::time()
}

/// Runs `f` on the ledger.
fn read<R>(f: impl FnOnce(&Ledger) -> R) -> R {
    LEDGER.with_borrow(|l| match l {
        Some(l) => f(l),
        None => ic_cdk::trap("the ledger is not initialized"),
    })
}

/// Runs `f` on the ledger mutably, then certifies the tip if it moved.
fn write<R>(f: impl FnOnce(&mut Ledger) -> R) -> R {
    LEDGER.with_borrow_mut(|l| match l {
        Some(l) => {
            let before = l.tip();
            let r = f(l);
            if l.tip() != before {
                certify(l);
            }
            r
        }
        None => ic_cdk::trap("the ledger is not initialized"),
    })
}

/// Sets the canister's certified data to the ICRC-3 tip of the log.
fn certify(ledger: &Ledger) {
    if let Some((index, hash)) = ledger.tip() {
        ic_cdk::api::certified_data_set(dc_icrc3::tip_certified_data(index, hash));
    }
}

/// Installs `ledger` as the working state: certifies its tip and starts the
/// timer that closes reward blocks and processes contracts.
fn install(ledger: Ledger) {
    certify(&ledger);
    let period = init::tick_period(ledger.params().block_interval_ns);
    LEDGER.set(Some(ledger));
    ic_cdk_timers::set_timer_interval(period, || async {
        write(|l| l.tick(now()));
    });
}

// ----------------------------------------------------------- lifecycle ---

/// Installs the ledger: genesis balances are minted at the current time; the
/// canister itself is the minting account.
#[init]
fn init(args: InitArgs) {
    let ledger = args
        .genesis(ic_cdk::api::canister_self(), now())
        .and_then(|g| Ledger::new(g).map_err(|e| e.to_string()))
        .unwrap_or_else(|e| ic_cdk::trap(format!("invalid init argument: {e}")));
    install(ledger);
}

/// Saves the ledger to stable memory.
#[pre_upgrade]
fn pre_upgrade() {
    let mut memory = MEMORY.with_borrow(|m| m.get(state::UPGRADE_MEMORY_ID));
    read(|l| state::save(&mut memory, l)).unwrap_or_else(|e| ic_cdk::trap(e.to_string()));
}

/// Restores the ledger from stable memory and re-arms the timer.
#[post_upgrade]
fn post_upgrade() {
    let memory = MEMORY.with_borrow(|m| m.get(state::UPGRADE_MEMORY_ID));
    let ledger = state::load(&memory).unwrap_or_else(|e| ic_cdk::trap(e.to_string()));
    install(ledger);
}

// ------------------------------------------------------------- queries ---

#[query]
fn icrc1_name() -> String {
    read(|l| l.params().token_name.clone())
}

#[query]
fn icrc1_symbol() -> String {
    read(|l| l.params().token_symbol.clone())
}

#[query]
fn icrc1_decimals() -> u8 {
    read(|l| l.params().decimals)
}

#[query]
fn icrc1_fee() -> Nat {
    read(|l| Nat::from(l.params().transfer_fee_e9s))
}

#[query]
fn icrc1_metadata() -> Vec<(String, MetadataValue)> {
    read(|l| l.icrc1_metadata())
}

#[query]
fn icrc1_total_supply() -> Nat {
    read(|l| Nat::from(l.total_supply()))
}

#[query]
fn icrc1_minting_account() -> Option<Account> {
    read(|l| Some(Account::of(l.params().minting_account)))
}

#[query]
fn icrc1_balance_of(account: Account) -> Nat {
    read(|l| Nat::from(l.balance_of(&account)))
}

#[query]
fn icrc1_supported_standards() -> Vec<StandardRecord> {
    dispatch::supported_standards()
}

#[query]
fn icrc10_supported_standards() -> Vec<StandardRecord> {
    dispatch::supported_standards()
}

#[query]
fn icrc2_allowance(args: AllowanceArgs) -> Allowance {
    read(|l| l.icrc2_allowance(&args))
}

#[query]
fn icrc3_get_blocks(reqs: Vec<GetBlocksRequest>) -> GetBlocksResult {
    read(|l| l.icrc3_get_blocks(&reqs))
}

#[query]
fn icrc3_get_archives(_args: GetArchivesArgs) -> Vec<ICRC3ArchiveInfo> {
    vec![]
}

#[query]
fn icrc3_supported_block_types() -> Vec<SupportedBlockType> {
    blocks::SUPPORTED_BLOCK_TYPES
        .iter()
        .map(|(t, u)| SupportedBlockType {
            block_type: (*t).into(),
            url: (*u).into(),
        })
        .collect()
}

/// ICRC-3 certified tip: the subnet's certificate over the canister's
/// certified data, and the CBOR hash tree (labels `last_block_index`,
/// `last_block_hash`) whose root hash that data is. null when called as an
/// update (there is no certificate then) and while the log is empty.
#[query]
fn icrc3_get_tip_certificate() -> Option<ICRC3DataCertificate> {
    let certificate = ic_cdk::api::data_certificate()?;
    let (index, hash) = read(|l| l.tip())?;
    Some(ICRC3DataCertificate {
        certificate: serde_bytes::ByteBuf::from(certificate),
        hash_tree: serde_bytes::ByteBuf::from(dc_icrc3::tip_tree(index, hash).to_cbor()),
    })
}

#[query]
fn get_provider(p: Principal) -> Option<ProviderInfo> {
    read(|l| l.provider_info(&p))
}

#[query]
fn get_node(p: Principal) -> Option<NodeInfo> {
    read(|l| l.node_info(&p))
}

#[query]
fn get_offering(id: u64) -> Option<Offering> {
    read(|l| l.offering(id))
}

#[query]
fn search_offerings(q: SearchQuery) -> LedgerResult<SearchResult> {
    read(|l| l.search(&q))
}

#[query]
fn get_contract(id: u64) -> Option<Contract> {
    read(|l| l.contract_info(id))
}

#[query]
fn list_contracts(args: ListContractsArgs) -> LedgerResult<Vec<Contract>> {
    read(|l| l.list_contracts(caller(), &args))
}

#[query]
fn get_reputation(p: Principal) -> u64 {
    read(|l| l.reputation_of(&p))
}

#[query]
fn list_ratings(p: Principal) -> Vec<RatingRecord> {
    read(|l| l.ratings_of(&p, 100))
}

#[query]
fn get_check_in_challenge() -> CheckInChallenge {
    read(|l| l.check_in_challenge())
}

#[query]
fn get_params() -> Params {
    read(|l| l.params().clone())
}

#[query]
fn ledger_stats() -> LedgerStats {
    read(|l| l.stats())
}

// ------------------------------------------------------------- updates ---

#[update]
fn icrc1_transfer(arg: TransferArg) -> Result<Nat, TransferError> {
    write(|l| l.icrc1_transfer(caller(), now(), arg))
}

#[update]
fn icrc2_approve(arg: ApproveArgs) -> Result<Nat, ApproveError> {
    write(|l| l.icrc2_approve(caller(), now(), arg))
}

#[update]
fn icrc2_transfer_from(arg: TransferFromArgs) -> Result<Nat, TransferFromError> {
    write(|l| l.icrc2_transfer_from(caller(), now(), arg))
}

#[update]
fn register_provider(profile: ProviderProfile) -> LedgerResult<Principal> {
    write(|l| l.register_provider(caller(), now(), profile))
}

#[update]
fn register_node(args: RegisterNodeArgs) -> LedgerResult<Principal> {
    write(|l| l.register_node(caller(), now(), args))
}

#[update]
fn revoke_node(node: Principal) -> LedgerResult<()> {
    write(|l| l.revoke_node(caller(), now(), node))
}

#[update]
fn add_offering(spec: OfferingSpec) -> LedgerResult<u64> {
    write(|l| l.add_offering(caller(), now(), spec))
}

#[update]
fn remove_offering(id: u64) -> LedgerResult<()> {
    write(|l| l.remove_offering(caller(), now(), id))
}

#[update]
fn rent(args: RentArgs) -> LedgerResult<Contract> {
    write(|l| l.rent(caller(), now(), args))
}

#[update]
fn accept_contract(id: u64) -> LedgerResult<Contract> {
    write(|l| l.accept_contract(caller(), now(), id))
}

#[update]
fn reject_contract(id: u64) -> LedgerResult<Contract> {
    write(|l| l.reject_contract(caller(), now(), id))
}

#[update]
fn start_provisioning(id: u64) -> LedgerResult<Contract> {
    write(|l| l.start_provisioning(caller(), now(), id))
}

#[update]
fn report_active(args: ReportActiveArgs) -> LedgerResult<Contract> {
    write(|l| l.report_active(caller(), now(), args))
}

#[update]
fn extend_contract(args: ExtendArgs) -> LedgerResult<Contract> {
    write(|l| l.extend_contract(caller(), now(), args))
}

#[update]
fn cancel_contract(id: u64) -> LedgerResult<Contract> {
    write(|l| l.cancel_contract(caller(), now(), id))
}

#[update]
fn set_contract_ingress(args: SetIngressArgs) -> LedgerResult<Contract> {
    write(|l| l.set_contract_ingress(caller(), now(), args))
}

#[update]
fn rate(args: RateArgs) -> LedgerResult<RateResult> {
    write(|l| l.rate(caller(), now(), args))
}

#[update]
fn check_in(args: CheckInArgs) -> LedgerResult<u64> {
    write(|l| l.check_in(caller(), now(), args))
}

#[cfg(test)]
mod tests;

// Collects the methods above into `__export_service()`; must stay last.
candid::export_service!();

/// The canister's Candid interface (the content of `ledger.did`).
pub fn candid_interface() -> String {
    __export_service()
}
