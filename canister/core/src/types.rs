//! Candid types of the ledger's interface. The names and shapes here are the
//! ones in `canister/ledger.did`; a native test in the canister crate checks
//! that they stay in step.

use candid::{CandidType, Nat, Principal};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Nanoseconds since the Unix epoch.
pub type TimestampNs = u64;
/// Index of a block in the ICRC-3 log.
pub type BlockIndex = u64;
/// 32-byte ICRC-1 subaccount.
pub type Subaccount = [u8; 32];

/// Nanoseconds in one hour; contracts are priced and released per hour.
pub const HOUR_NS: u64 = 3_600_000_000_000;
/// One DCT in e9s.
pub const E9S_PER_TOKEN: u64 = 1_000_000_000;
/// Bytes of one launch measurement register: SEV-SNP MEASUREMENT and the
/// TDX MRTD and RTMRs are all SHA-384 digests. An SEV-SNP VM's launch
/// measurement is this long.
pub const LAUNCH_MEASUREMENT_LEN: usize = 48;
/// Bytes of a TDX VM's launch measurement: MRTD (the firmware), RTMR1 (the
/// kernel) and RTMR2 (command line and initrd), concatenated. MRTD alone
/// would leave the kernel a direct boot loads to the host's choosing.
pub const TDX_LAUNCH_MEASUREMENT_LEN: usize = 3 * LAUNCH_MEASUREMENT_LEN;

/// An ICRC-1 account.
#[derive(
    CandidType, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub struct Account {
    pub owner: Principal,
    pub subaccount: Option<Subaccount>,
}

impl Account {
    /// The default account (no subaccount) of a principal.
    pub fn of(owner: Principal) -> Self {
        Self {
            owner,
            subaccount: None,
        }
    }

    /// The account with an all-zero subaccount is the default account (ICRC-1).
    pub fn normalized(self) -> Self {
        match self.subaccount {
            Some(s) if s == [0u8; 32] => Self {
                owner: self.owner,
                subaccount: None,
            },
            _ => self,
        }
    }
}

/// Parameters fixed at install (governance comes later).
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Params {
    pub token_name: String,
    pub token_symbol: String,
    pub decimals: u8,
    /// ICRC-1 transfer and approve fee, paid to the treasury.
    pub transfer_fee_e9s: u64,
    /// The DAO treasury: receives transfer, registration, escrow and check-in fees.
    pub treasury: Principal,
    /// ICRC-1 minting account. Transfers to it burn; nothing may be minted from it
    /// by a transfer: tokens are created only by block rewards and genesis.
    pub minting_account: Principal,
    /// Fee for registering as a provider.
    pub provider_registration_fee_e9s: u64,
    /// Wall-clock length of a reward block.
    pub block_interval_ns: u64,
    /// Reward of the first block (50 DCT).
    pub initial_block_reward_e9s: u64,
    /// The reward halves every this many blocks (210,000).
    pub halving_interval_blocks: u64,
    /// Fee taken from every escrow release, in basis points (200 = 2%).
    pub escrow_release_fee_bps: u64,
    /// Reputation each party gains per release, in basis points of the amount (100 = 1%).
    pub release_reputation_bps: u64,
    /// A rating spends X of the sender's reputation and removes X times this from the target.
    pub rating_penalty_multiplier: u64,
    /// How long a provider has from rent to `active` before the contract is refunded.
    pub provisioning_timeout_ns: u64,
    /// Reputation a provider loses when it misses a provisioning deadline, in basis
    /// points of the contract's paid amount.
    pub missed_deadline_penalty_bps: u64,
    /// ICRC-1 deduplication window for transactions with `created_at_time`.
    pub tx_window_ns: u64,
    /// Tolerated clock drift for `created_at_time` in the future.
    pub permitted_drift_ns: u64,
}

impl Params {
    /// Defaults from the whitepaper: 50 DCT halving every 210,000 blocks of 600 s,
    /// 2% escrow fee, +1% reputation, penalty multiplier 2.
    pub fn with_treasury(treasury: Principal, minting_account: Principal) -> Self {
        Self {
            token_name: "Decent Cloud Token".into(),
            token_symbol: "DCT".into(),
            decimals: 9,
            transfer_fee_e9s: 10_000,
            treasury,
            minting_account,
            provider_registration_fee_e9s: 5 * E9S_PER_TOKEN,
            block_interval_ns: 600_000_000_000,
            initial_block_reward_e9s: 50 * E9S_PER_TOKEN,
            halving_interval_blocks: 210_000,
            escrow_release_fee_bps: 200,
            release_reputation_bps: 100,
            rating_penalty_multiplier: 2,
            provisioning_timeout_ns: HOUR_NS,
            missed_deadline_penalty_bps: 1_000,
            tx_window_ns: 24 * HOUR_NS,
            permitted_drift_ns: 120_000_000_000,
        }
    }
}

// ---------------------------------------------------------------- ICRC-1 ---

/// `icrc1_transfer` argument.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TransferArg {
    pub from_subaccount: Option<Subaccount>,
    pub to: Account,
    pub amount: Nat,
    pub fee: Option<Nat>,
    pub memo: Option<ByteBuf>,
    pub created_at_time: Option<u64>,
}

/// `icrc1_transfer` error, every variant of the standard.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum TransferError {
    BadFee { expected_fee: Nat },
    BadBurn { min_burn_amount: Nat },
    InsufficientFunds { balance: Nat },
    TooOld,
    CreatedInFuture { ledger_time: u64 },
    TemporarilyUnavailable,
    Duplicate { duplicate_of: Nat },
    GenericError { error_code: Nat, message: String },
}

/// ICRC-1 metadata value.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum MetadataValue {
    Nat(Nat),
    Int(candid::Int),
    Text(String),
    Blob(ByteBuf),
}

/// Entry of `icrc1_supported_standards` / `icrc10_supported_standards`.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StandardRecord {
    pub name: String,
    pub url: String,
}

// ---------------------------------------------------------------- ICRC-2 ---

/// `icrc2_approve` argument.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ApproveArgs {
    pub from_subaccount: Option<Subaccount>,
    pub spender: Account,
    pub amount: Nat,
    pub expected_allowance: Option<Nat>,
    pub expires_at: Option<u64>,
    pub fee: Option<Nat>,
    pub memo: Option<ByteBuf>,
    pub created_at_time: Option<u64>,
}

/// `icrc2_approve` error.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ApproveError {
    BadFee { expected_fee: Nat },
    InsufficientFunds { balance: Nat },
    AllowanceChanged { current_allowance: Nat },
    Expired { ledger_time: u64 },
    TooOld,
    CreatedInFuture { ledger_time: u64 },
    Duplicate { duplicate_of: Nat },
    TemporarilyUnavailable,
    GenericError { error_code: Nat, message: String },
}

/// `icrc2_transfer_from` argument.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TransferFromArgs {
    pub spender_subaccount: Option<Subaccount>,
    pub from: Account,
    pub to: Account,
    pub amount: Nat,
    pub fee: Option<Nat>,
    pub memo: Option<ByteBuf>,
    pub created_at_time: Option<u64>,
}

/// `icrc2_transfer_from` error.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum TransferFromError {
    BadFee { expected_fee: Nat },
    BadBurn { min_burn_amount: Nat },
    InsufficientFunds { balance: Nat },
    InsufficientAllowance { allowance: Nat },
    TooOld,
    CreatedInFuture { ledger_time: u64 },
    Duplicate { duplicate_of: Nat },
    TemporarilyUnavailable,
    GenericError { error_code: Nat, message: String },
}

/// `icrc2_allowance` argument.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AllowanceArgs {
    pub account: Account,
    pub spender: Account,
}

/// `icrc2_allowance` result.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Allowance {
    pub allowance: Nat,
    pub expires_at: Option<u64>,
}

// ------------------------------------------------------------ marketplace ---

/// A provider's public profile.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ProviderProfile {
    pub legal_name: String,
    pub jurisdiction: String,
    pub email: String,
    pub website: String,
}

/// A registered provider as the ledger shows it.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ProviderInfo {
    pub principal: Principal,
    pub profile: ProviderProfile,
    pub registered_at_ns: u64,
    pub reputation: u64,
    pub nodes: Vec<Principal>,
    pub offerings: Vec<u64>,
    pub contracts_served: u64,
}

/// Confidential-computing platform of a node or required by an offering.
#[derive(
    CandidType, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum Confidential {
    #[serde(rename = "none")]
    None,
    #[serde(rename = "sev-snp")]
    SevSnp,
    #[serde(rename = "tdx")]
    Tdx,
}

impl Confidential {
    /// Bytes of the launch measurement a VM of this platform publishes;
    /// `None` for a regular VM, which publishes none.
    pub fn launch_measurement_len(self) -> Option<usize> {
        match self {
            Confidential::None => None,
            Confidential::SevSnp => Some(LAUNCH_MEASUREMENT_LEN),
            Confidential::Tdx => Some(TDX_LAUNCH_MEASUREMENT_LEN),
        }
    }

    /// The textual name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Confidential::None => "none",
            Confidential::SevSnp => "sev-snp",
            Confidential::Tdx => "tdx",
        }
    }
}

impl std::str::FromStr for Confidential {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Confidential::None),
            "sev-snp" | "snp" | "sev_snp" => Ok(Confidential::SevSnp),
            "tdx" => Ok(Confidential::Tdx),
            other => Err(format!("expected none, sev-snp or tdx, found {other:?}")),
        }
    }
}

/// GPUs of one model.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct GpuSpec {
    pub model: String,
    pub count: u32,
    pub memory_gib: u32,
}

/// What a node has, as measured by the appliance.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NodeCapabilities {
    pub cpu_model: String,
    pub vcpus: u32,
    pub ram_gib: u32,
    pub storage_gib: u32,
    pub bandwidth_mbps: u32,
    pub gpus: Vec<GpuSpec>,
    pub confidential: Confidential,
    pub region: String,
    pub country: String,
    /// SHA-256 of the appliance image, hex.
    pub image_hash: String,
}

impl NodeCapabilities {
    /// GPUs of `model` (case-insensitive) the node declares, all entries
    /// of that model together.
    pub fn gpus_of(&self, model: &str) -> u32 {
        self.gpus
            .iter()
            .filter(|g| g.model.eq_ignore_ascii_case(model))
            .fold(0u32, |sum, g| sum.saturating_add(g.count))
    }
}

/// `register_node` argument. The caller is the provider or the node itself; the
/// delegation proves the provider's consent either way.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RegisterNodeArgs {
    pub delegation: dc_identity::Delegation,
    pub capabilities: NodeCapabilities,
}

/// A registered node.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub principal: Principal,
    pub provider: Principal,
    pub capabilities: NodeCapabilities,
    pub delegation: dc_identity::Delegation,
    pub registered_at_ns: u64,
    pub revoked: bool,
    /// Resources taken by contracts that are not finished.
    pub reserved: Resources,
    /// GPUs taken per model (lower-cased), since capacity is per model.
    pub reserved_gpus_by_model: Vec<(String, u32)>,
    pub last_check_in_block: Option<u64>,
}

/// Resources an offering sells, and what a node has reserved.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub vcpus: u32,
    pub ram_gib: u32,
    pub storage_gib: u32,
    pub gpus: u32,
}

/// What a provider publishes (the content of `OFFERING.toml`).
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OfferingSpec {
    pub node: Principal,
    pub name: String,
    pub vcpus: u32,
    pub ram_gib: u32,
    pub storage_gib: u32,
    pub bandwidth_mbps: u32,
    pub gpu: Option<GpuSpec>,
    pub confidential: Confidential,
    pub region: String,
    pub country: String,
    pub price_e9s_per_hour: u64,
    pub min_hours: u32,
    pub max_hours: u32,
}

/// A published offering.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Offering {
    pub id: u64,
    pub provider: Principal,
    pub spec: OfferingSpec,
    pub created_at_ns: u64,
}

/// A developer's requirements. Every field is optional.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchQuery {
    pub max_price_e9s_per_hour: Option<u64>,
    pub min_vcpus: Option<u32>,
    pub min_ram_gib: Option<u32>,
    pub min_storage_gib: Option<u32>,
    pub min_bandwidth_mbps: Option<u32>,
    /// GPU model, compared case-insensitively.
    pub gpu_model: Option<String>,
    pub min_gpus: Option<u32>,
    pub confidential: Option<Confidential>,
    /// Region or country code, compared case-insensitively.
    pub region: Option<String>,
    pub min_provider_reputation: Option<u64>,
    /// Contract period: offers whose min/max hours exclude it are left out.
    pub hours: Option<u32>,
    pub offset: Option<u64>,
    /// At most 1,000; 20 when absent.
    pub limit: Option<u32>,
}

/// One ranked offer.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OfferMatch {
    pub offering_id: u64,
    pub provider: Principal,
    pub node: Principal,
    pub name: String,
    pub price_e9s_per_hour: u64,
    pub vcpus: u32,
    pub ram_gib: u32,
    pub storage_gib: u32,
    pub bandwidth_mbps: u32,
    pub confidential: Confidential,
    pub gpu: Option<GpuSpec>,
    pub region: String,
    pub country: String,
    pub min_hours: u32,
    pub max_hours: u32,
    pub provider_reputation: u64,
}

impl OfferMatch {
    /// The offer an offering makes, with its provider's current reputation.
    pub fn new(o: &Offering, provider_reputation: u64) -> Self {
        let s = &o.spec;
        OfferMatch {
            offering_id: o.id,
            provider: o.provider,
            node: s.node,
            name: s.name.clone(),
            price_e9s_per_hour: s.price_e9s_per_hour,
            vcpus: s.vcpus,
            ram_gib: s.ram_gib,
            storage_gib: s.storage_gib,
            bandwidth_mbps: s.bandwidth_mbps,
            confidential: s.confidential,
            gpu: s.gpu.clone(),
            region: s.region.clone(),
            country: s.country.clone(),
            min_hours: s.min_hours,
            max_hours: s.max_hours,
            provider_reputation,
        }
    }
}

/// A page of ranked offers.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SearchResult {
    pub offers: Vec<OfferMatch>,
    /// Offset of the next page, when there may be more.
    pub next_offset: Option<u64>,
}

/// `rent` argument.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RentArgs {
    pub offering_id: u64,
    pub hours: u32,
}

/// Where a contract is in its life.
#[derive(
    CandidType, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum ContractState {
    /// Paid into escrow, waiting for the node.
    Requested,
    Accepted,
    Provisioning,
    /// Running; escrow is released pro rata.
    Active,
    /// Ran its full term; all escrow released.
    Expired,
    /// Cancelled by the developer; the unreleased part refunded.
    Cancelled,
    /// Refused by the provider before provisioning; refunded in full.
    Rejected,
    /// Not active before the provisioning deadline; refunded in full, provider penalised.
    DeadlineMissed,
}

impl ContractState {
    /// Whether the contract is over (no more money moves).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ContractState::Expired
                | ContractState::Cancelled
                | ContractState::Rejected
                | ContractState::DeadlineMissed
        )
    }

    /// Lower-case name used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ContractState::Requested => "requested",
            ContractState::Accepted => "accepted",
            ContractState::Provisioning => "provisioning",
            ContractState::Active => "active",
            ContractState::Expired => "expired",
            ContractState::Cancelled => "cancelled",
            ContractState::Rejected => "rejected",
            ContractState::DeadlineMissed => "deadline_missed",
        }
    }
}

/// A rental contract.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Contract {
    pub id: u64,
    pub offering_id: u64,
    pub developer: Principal,
    pub provider: Principal,
    pub node: Principal,
    pub resources: Resources,
    pub gpu_model: Option<String>,
    pub price_e9s_per_hour: u64,
    pub hours: u32,
    pub state: ContractState,
    pub created_at_ns: u64,
    pub provisioning_deadline_ns: u64,
    /// When the contract became active; billing runs from here.
    pub active_since_ns: Option<u64>,
    pub ends_at_ns: Option<u64>,
    pub paid_e9s: u64,
    /// Released to the provider, fees included.
    pub released_e9s: u64,
    pub refunded_e9s: u64,
    /// Part of `released_e9s` that went to the treasury.
    pub fees_e9s: u64,
    pub endpoint: Option<String>,
    pub evidence_hash: Option<ByteBuf>,
    /// The launch measurement of a confidential VM (SEV-SNP: MEASUREMENT, 48
    /// bytes; TDX: MRTD, RTMR1 and RTMR2, 144) that its node computed before launching it
    /// and published with `report_active`. A developer compares it with the
    /// VM's attestation report, an auditor recomputes it from the published
    /// images; with the contract binding (SNP HOST_DATA, TDX MRCONFIGID) it
    /// ties a report to this contract. Absent on a non-confidential contract.
    pub launch_measurement: Option<ByteBuf>,
    /// The custom domains its developer registered for the node's SNI
    /// ingress, and whether the VM wants a PROXY protocol v2 header (see
    /// [`crate::ingress`]). Empty and off until `set_contract_ingress`. On a
    /// final contract this is what it last had; the names are no longer held.
    pub ingress: IngressSettings,
    /// (time, state) for every transition, in order.
    pub history: Vec<(u64, ContractState)>,
}

/// How a node's ingress reaches a contract's VM beyond its default name.
///
/// The ingress routes a TLS connection by the server name in its ClientHello
/// (port 80: the Host header) to the VM of an active contract and passes the
/// bytes through without terminating TLS: the VM holds its own certificate,
/// the provider reads nothing. Every contract answers to a default name under
/// its node's domain; these are the extra names. DNS of each name must point
/// at the node for traffic to arrive. See [`crate::ingress`] for the rules
/// and what registering a name does and does not prove.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct IngressSettings {
    /// Lowercase DNS names (`api.example.com`) or single-label wildcards
    /// (`*.apps.example.com`), at most [`crate::ingress::MAX_INGRESS_DOMAINS`],
    /// each held by this contract alone while it is not final.
    pub domains: Vec<String>,
    /// Write a PROXY protocol v2 header (the client's address) before the
    /// client's bytes on every connection to the VM. The VM's server must
    /// expect it: one that does not reads the header as garbage.
    pub proxy_protocol: bool,
}

impl NodeInfo {
    /// GPUs of `model` (case-insensitive) taken by unfinished contracts.
    pub fn reserved_gpus(&self, model: &str) -> u32 {
        let key = model.to_ascii_lowercase();
        self.reserved_gpus_by_model
            .iter()
            .find(|(m, _)| *m == key)
            .map_or(0, |(_, n)| *n)
    }

    /// Adds (or, negative, removes) reserved GPUs of a model.
    pub(crate) fn adjust_reserved_gpus(&mut self, model: &str, delta: i64) {
        let key = model.to_ascii_lowercase();
        let pos = self
            .reserved_gpus_by_model
            .iter()
            .position(|(m, _)| *m == key);
        let current = pos.map_or(0, |i| self.reserved_gpus_by_model[i].1) as i64;
        let next = (current + delta).max(0) as u32;
        match (pos, next) {
            (Some(i), 0) => {
                self.reserved_gpus_by_model.remove(i);
            }
            (Some(i), n) => self.reserved_gpus_by_model[i].1 = n,
            (None, 0) => {}
            (None, n) => {
                self.reserved_gpus_by_model.push((key, n));
                self.reserved_gpus_by_model.sort();
            }
        }
    }
}

impl Contract {
    /// What is still held in escrow for this contract.
    pub fn escrow_e9s(&self) -> u64 {
        self.paid_e9s - self.released_e9s - self.refunded_e9s
    }

    /// Whether `rater`, one of its parties, may rate the other through it:
    /// either party once it was served (it was active, whatever came after);
    /// only the developer when the provider missed its provisioning deadline
    /// (the provider is the party at fault, and could force that by never
    /// accepting). A contract still waiting for the provider, rejected by it,
    /// or cancelled before it was ever active proves no service or
    /// collaboration to be dissatisfied with, and renting then cancelling at
    /// once (for a full refund) would otherwise buy the right to rate any
    /// provider for only the fees.
    pub fn rateable_by(&self, rater: Principal) -> bool {
        self.active_since_ns.is_some()
            || (self.state == ContractState::DeadlineMissed && rater == self.developer)
    }
}

/// `report_active` argument.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ReportActiveArgs {
    pub contract_id: u64,
    /// How the tenant reaches the VM (host name or address).
    pub endpoint: String,
    /// SHA-256 of the VM's attestation evidence bundle.
    pub evidence_hash: ByteBuf,
    /// The launch measurement the node computed for the VM it launched:
    /// required when the contract's offering is confidential (SEV-SNP:
    /// MEASUREMENT, 48 bytes; TDX: MRTD, RTMR1 and RTMR2 concatenated, 144
    /// bytes), refused otherwise.
    pub launch_measurement: Option<ByteBuf>,
}

/// `set_contract_ingress` argument: the contract's whole ingress settings,
/// replacing what it had (no domains clears them).
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SetIngressArgs {
    pub contract_id: u64,
    /// See [`IngressSettings::domains`].
    pub domains: Vec<String>,
    /// See [`IngressSettings::proxy_protocol`].
    pub proxy_protocol: bool,
}

/// `extend_contract` argument.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ExtendArgs {
    pub contract_id: u64,
    pub hours: u32,
}

/// `list_contracts` argument.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ListContractsArgs {
    /// Whose contracts (as developer, provider or node); the caller when absent.
    pub party: Option<Principal>,
    pub offset: Option<u64>,
    pub limit: Option<u32>,
}

/// `rate` argument.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RateArgs {
    pub target: Principal,
    pub spend: u64,
    pub reason: String,
}

/// A public, permanent reputation reduction.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RatingRecord {
    pub sender: Principal,
    pub target: Principal,
    pub spent: u64,
    pub target_loss: u64,
    pub reason: String,
    pub at_ns: u64,
}

/// `rate` result.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RateResult {
    pub sender_reputation: u64,
    pub target_reputation: u64,
}

/// What a node signs to check in: the current reward block and the hash of the
/// previous one.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CheckInChallenge {
    pub block_height: u64,
    pub previous_block_hash: ByteBuf,
    pub closes_at_ns: u64,
    pub reward_e9s: u64,
    pub fee_e9s: u64,
}

/// `check_in` argument: the node's signature (domain `CheckIn`) over
/// [`check_in_message`](crate::rewards::check_in_message).
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CheckInArgs {
    pub block_height: u64,
    pub previous_block_hash: ByteBuf,
    pub signature: ByteBuf,
}

/// Totals anyone can audit.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LedgerStats {
    pub total_supply_e9s: u64,
    pub genesis_e9s: u64,
    pub minted_rewards_e9s: u64,
    pub burned_e9s: u64,
    pub escrow_e9s: u64,
    pub reward_block_height: u64,
    pub next_block_at_ns: u64,
    pub log_length: u64,
    pub providers: u64,
    pub nodes: u64,
    pub offerings: u64,
    pub contracts: u64,
}
