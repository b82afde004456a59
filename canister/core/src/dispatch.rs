//! The ledger's Candid interface as a method table: decode the argument bytes,
//! call the core, encode the reply. The local service and journal replay use
//! it directly; the canister exports the same methods (a test compares both
//! with `ledger.did`).

use candid::types::Type;
use candid::utils::ArgumentDecoder;
use candid::{CandidType, Nat, Principal};

use crate::error::LedgerResult;
use crate::ledger::Ledger;
use crate::types::*;

/// Largest Candid argument a call may carry.
pub const MAX_ARG_BYTES: usize = 256 * 1024;

/// Query or update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Query,
    Update,
}

/// A method's Candid signature.
#[derive(Clone, Debug)]
pub struct MethodSignature {
    pub name: &'static str,
    pub mode: Mode,
    pub args: Vec<Type>,
    pub rets: Vec<Type>,
}

/// Why a call could not be dispatched (distinct from the ledger refusing it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    #[error("unknown method {0:?}")]
    UnknownMethod(String),
    #[error("method {0:?} is an update; it cannot be called as a query")]
    NotAQuery(String),
    #[error("method {0:?} is a query; call it as a query")]
    NotAnUpdate(String),
    #[error("Candid value for {method} is {len} bytes, more than allowed")]
    ArgumentTooLarge { method: String, len: usize },
    #[error("cannot decode the argument of {method}: {reason}")]
    BadArgument { method: String, reason: String },
}

/// An update's reply and whether it changed the ledger (and so must be
/// journaled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatched {
    pub reply: Vec<u8>,
    pub committed: bool,
}

/// Whether an update's typed result means the ledger changed.
pub trait Committed {
    fn committed(&self) -> bool;
}

impl<T, E> Committed for Result<T, E> {
    fn committed(&self) -> bool {
        self.is_ok()
    }
}

/// Largest Candid reply a client accepts.
pub const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;

/// Decodes Candid arguments with quotas, so hostile bytes cannot make the
/// decoder allocate or loop without bound.
pub fn decode_args<A: for<'a> ArgumentDecoder<'a>>(
    method: &str,
    bytes: &[u8],
) -> Result<A, DispatchError> {
    decode_bounded(method, bytes, MAX_ARG_BYTES)
}

/// Decodes Candid values of at most `max_bytes` with proportional quotas.
pub fn decode_bounded<A: for<'a> ArgumentDecoder<'a>>(
    method: &str,
    bytes: &[u8],
    max_bytes: usize,
) -> Result<A, DispatchError> {
    if bytes.len() > max_bytes {
        return Err(DispatchError::ArgumentTooLarge {
            method: method.into(),
            len: bytes.len(),
        });
    }
    let bad = |e: candid::Error| DispatchError::BadArgument {
        method: method.into(),
        reason: e.to_string(),
    };
    let mut config = candid::de::DecoderConfig::new();
    config.set_decoding_quota(20 * max_bytes);
    config.set_skipping_quota(max_bytes);
    config.set_full_error_message(false);
    let mut de = candid::de::IDLDeserialize::new_with_config(bytes, &config).map_err(bad)?;
    let args = A::decode(&mut de).map_err(bad)?;
    de.done().map_err(bad)?;
    Ok(args)
}

fn encode_reply<T: CandidType>(reply: &T) -> Vec<u8> {
    // Encoding a well-typed value into memory cannot fail.
    candid::encode_one(reply).unwrap_or_default()
}

macro_rules! ledger_methods {
    (
        queries($ql:ident, $qc:ident) { $( fn $qname:ident ( $( $qarg:ident : $qty:ty ),* ) -> $qret:ty $qbody:block )* }
        updates($ul:ident, $uc:ident, $un:ident) { $( fn $uname:ident ( $( $uarg:ident : $uty:ty ),* ) -> $uret:ty $ubody:block )* }
    ) => {
        /// Answers a query.
        pub fn query(ledger: &Ledger, caller: Principal, method: &str, arg: &[u8]) -> Result<Vec<u8>, DispatchError> {
            #[allow(unused_variables)]
            let ($ql, $qc) = (ledger, caller);
            match method {
                $( stringify!($qname) => {
                    let ($($qarg,)*): ($($qty,)*) = decode_args(method, arg)?;
                    let reply: $qret = $qbody;
                    Ok(encode_reply(&reply))
                } )*
                $( stringify!($uname) )|* => Err(DispatchError::NotAQuery(method.into())),
                _ => Err(DispatchError::UnknownMethod(method.into())),
            }
        }

        /// Applies an update at time `now` on behalf of `caller`.
        pub fn update(ledger: &mut Ledger, caller: Principal, now: u64, method: &str, arg: &[u8]) -> Result<Dispatched, DispatchError> {
            #[allow(unused_variables)]
            let ($ul, $uc, $un) = (ledger, caller, now);
            match method {
                $( stringify!($uname) => {
                    let ($($uarg,)*): ($($uty,)*) = decode_args(method, arg)?;
                    let reply: $uret = $ubody;
                    Ok(Dispatched { committed: Committed::committed(&reply), reply: encode_reply(&reply) })
                } )*
                $( stringify!($qname) )|* => Err(DispatchError::NotAnUpdate(method.into())),
                _ => Err(DispatchError::UnknownMethod(method.into())),
            }
        }

        /// Signatures of every method, for interface checks against `ledger.did`.
        pub fn signatures() -> Vec<MethodSignature> {
            vec![
                $( MethodSignature { name: stringify!($qname), mode: Mode::Query, args: vec![$(<$qty as CandidType>::ty()),*], rets: vec![<$qret as CandidType>::ty()] }, )*
                $( MethodSignature { name: stringify!($uname), mode: Mode::Update, args: vec![$(<$uty as CandidType>::ty()),*], rets: vec![<$uret as CandidType>::ty()] }, )*
            ]
        }

        /// The mode of a method, if it exists.
        pub fn mode_of(method: &str) -> Option<Mode> {
            match method {
                $( stringify!($qname) )|* => Some(Mode::Query),
                $( stringify!($uname) )|* => Some(Mode::Update),
                _ => None,
            }
        }
    };
}

/// `icrc1_supported_standards` / `icrc10_supported_standards`.
pub fn supported_standards() -> Vec<StandardRecord> {
    [
        (
            "ICRC-1",
            "https://github.com/dfinity/ICRC-1/tree/main/standards/ICRC-1",
        ),
        (
            "ICRC-2",
            "https://github.com/dfinity/ICRC-1/tree/main/standards/ICRC-2",
        ),
        (
            "ICRC-3",
            "https://github.com/dfinity/ICRC-1/tree/main/standards/ICRC-3",
        ),
        (
            "ICRC-10",
            "https://github.com/dfinity/ICRC/tree/main/ICRCs/ICRC-10",
        ),
    ]
    .into_iter()
    .map(|(name, url)| StandardRecord {
        name: name.into(),
        url: url.into(),
    })
    .collect()
}

/// Most blocks one `icrc3_get_blocks` call returns.
pub const MAX_BLOCKS_PER_REQUEST: u64 = 2_000;

impl Ledger {
    /// `icrc1_metadata`.
    pub fn icrc1_metadata(&self) -> Vec<(String, MetadataValue)> {
        vec![
            (
                "icrc1:name".into(),
                MetadataValue::Text(self.params.token_name.clone()),
            ),
            (
                "icrc1:symbol".into(),
                MetadataValue::Text(self.params.token_symbol.clone()),
            ),
            (
                "icrc1:decimals".into(),
                MetadataValue::Nat(self.params.decimals.into()),
            ),
            (
                "icrc1:fee".into(),
                MetadataValue::Nat(self.params.transfer_fee_e9s.into()),
            ),
            (
                "icrc1:max_memo_length".into(),
                MetadataValue::Nat(crate::ledger::MAX_MEMO_BYTES.into()),
            ),
        ]
    }

    /// `icrc3_get_blocks`: blocks of each requested range, bounded in total.
    pub fn icrc3_get_blocks(
        &self,
        reqs: &[dc_icrc3::GetBlocksRequest],
    ) -> dc_icrc3::GetBlocksResult {
        let mut blocks = Vec::new();
        let mut budget = MAX_BLOCKS_PER_REQUEST;
        for r in reqs {
            let start = u64::try_from(&r.start.0).unwrap_or(u64::MAX);
            let length = u64::try_from(&r.length.0).unwrap_or(u64::MAX).min(budget);
            let end = start.saturating_add(length).min(self.log_length());
            for i in start..end {
                if let Some(b) = self.block(i) {
                    blocks.push(dc_icrc3::BlockWithId {
                        id: Nat::from(i),
                        block: b,
                    });
                }
            }
            budget -= end.saturating_sub(start).min(budget);
        }
        dc_icrc3::GetBlocksResult {
            log_length: Nat::from(self.log_length()),
            blocks,
            archived_blocks: vec![],
        }
    }
}

ledger_methods! {
    queries(l, caller) {
        fn icrc1_name() -> String { l.params().token_name.clone() }
        fn icrc1_symbol() -> String { l.params().token_symbol.clone() }
        fn icrc1_decimals() -> u8 { l.params().decimals }
        fn icrc1_fee() -> Nat { Nat::from(l.params().transfer_fee_e9s) }
        fn icrc1_metadata() -> Vec<(String, MetadataValue)> { l.icrc1_metadata() }
        fn icrc1_total_supply() -> Nat { Nat::from(l.total_supply()) }
        fn icrc1_minting_account() -> Option<Account> { Some(Account::of(l.params().minting_account)) }
        fn icrc1_balance_of(account: Account) -> Nat { Nat::from(l.balance_of(&account)) }
        fn icrc1_supported_standards() -> Vec<StandardRecord> { supported_standards() }
        fn icrc10_supported_standards() -> Vec<StandardRecord> { supported_standards() }
        fn icrc2_allowance(args: AllowanceArgs) -> Allowance { l.icrc2_allowance(&args) }
        fn icrc3_get_blocks(reqs: Vec<dc_icrc3::GetBlocksRequest>) -> dc_icrc3::GetBlocksResult { l.icrc3_get_blocks(&reqs) }
        fn icrc3_get_archives(_args: dc_icrc3::GetArchivesArgs) -> Vec<dc_icrc3::ICRC3ArchiveInfo> { vec![] }
        fn icrc3_supported_block_types() -> Vec<dc_icrc3::SupportedBlockType> {
            crate::blocks::SUPPORTED_BLOCK_TYPES.iter().map(|(t, u)| dc_icrc3::SupportedBlockType { block_type: (*t).into(), url: (*u).into() }).collect()
        }
        fn get_provider(p: Principal) -> Option<ProviderInfo> { l.provider_info(&p) }
        fn get_node(p: Principal) -> Option<NodeInfo> { l.node_info(&p) }
        fn get_offering(id: u64) -> Option<Offering> { l.offering(id) }
        fn search_offerings(q: SearchQuery) -> LedgerResult<SearchResult> { l.search(&q) }
        fn get_contract(id: u64) -> Option<Contract> { l.contract_info(id) }
        fn list_contracts(args: ListContractsArgs) -> LedgerResult<Vec<Contract>> { l.list_contracts(caller, &args) }
        fn get_reputation(p: Principal) -> u64 { l.reputation_of(&p) }
        fn list_ratings(p: Principal) -> Vec<RatingRecord> { l.ratings_of(&p, 100) }
        fn get_check_in_challenge() -> CheckInChallenge { l.check_in_challenge() }
        fn get_params() -> Params { l.params().clone() }
        fn ledger_stats() -> LedgerStats { l.stats() }
    }
    updates(l, caller, now) {
        fn icrc1_transfer(arg: TransferArg) -> Result<Nat, TransferError> { l.icrc1_transfer(caller, now, arg) }
        fn icrc2_approve(arg: ApproveArgs) -> Result<Nat, ApproveError> { l.icrc2_approve(caller, now, arg) }
        fn icrc2_transfer_from(arg: TransferFromArgs) -> Result<Nat, TransferFromError> { l.icrc2_transfer_from(caller, now, arg) }
        fn register_provider(profile: ProviderProfile) -> LedgerResult<Principal> { l.register_provider(caller, now, profile) }
        fn register_node(args: RegisterNodeArgs) -> LedgerResult<Principal> { l.register_node(caller, now, args) }
        fn revoke_node(node: Principal) -> LedgerResult<()> { l.revoke_node(caller, now, node) }
        fn add_offering(spec: OfferingSpec) -> LedgerResult<u64> { l.add_offering(caller, now, spec) }
        fn remove_offering(id: u64) -> LedgerResult<()> { l.remove_offering(caller, now, id) }
        fn rent(args: RentArgs) -> LedgerResult<Contract> { l.rent(caller, now, args) }
        fn accept_contract(id: u64) -> LedgerResult<Contract> { l.accept_contract(caller, now, id) }
        fn reject_contract(id: u64) -> LedgerResult<Contract> { l.reject_contract(caller, now, id) }
        fn start_provisioning(id: u64) -> LedgerResult<Contract> { l.start_provisioning(caller, now, id) }
        fn report_active(args: ReportActiveArgs) -> LedgerResult<Contract> { l.report_active(caller, now, args) }
        fn extend_contract(args: ExtendArgs) -> LedgerResult<Contract> { l.extend_contract(caller, now, args) }
        fn cancel_contract(id: u64) -> LedgerResult<Contract> { l.cancel_contract(caller, now, id) }
        fn set_contract_ingress(args: SetIngressArgs) -> LedgerResult<Contract> { l.set_contract_ingress(caller, now, args) }
        fn rate(args: RateArgs) -> LedgerResult<RateResult> { l.rate(caller, now, args) }
        fn check_in(args: CheckInArgs) -> LedgerResult<u64> { l.check_in(caller, now, args) }
    }
}
