//! The install argument and the genesis it describes.

use std::time::Duration;

use candid::{CandidType, Principal};
use dc_ledger_core::{Account, Genesis, Params};
use serde::Deserialize;

/// Nanoseconds per second.
const NS_PER_SEC: u64 = 1_000_000_000;

/// The longest period between two timer ticks: contracts are released and
/// expired at least this often even when reward blocks are long.
pub const MAX_TICK: Duration = Duration::from_secs(5);
/// The shortest period between two timer ticks.
pub const MIN_TICK: Duration = Duration::from_secs(1);

/// The canister's install argument. Every parameter left out keeps the
/// whitepaper's default ([`Params::with_treasury`]).
#[derive(CandidType, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct InitArgs {
    /// The DAO treasury: receives transfer, registration, escrow and check-in fees.
    pub treasury: Principal,
    /// Genesis allocation, minted in the first blocks of the log.
    pub initial_balances: Vec<(Account, u64)>,
    /// Length of a reward block in seconds (600 when absent).
    pub block_interval_secs: Option<u64>,
    /// Token name (`Decent Cloud Token`).
    pub token_name: Option<String>,
    /// Token symbol (`DCT`).
    pub token_symbol: Option<String>,
    /// ICRC-1 transfer and approve fee in e9s.
    pub transfer_fee_e9s: Option<u64>,
    /// Fee for registering as a provider, in e9s.
    pub provider_registration_fee_e9s: Option<u64>,
    /// Reward of the first reward block, in e9s.
    pub initial_block_reward_e9s: Option<u64>,
    /// The reward halves every this many reward blocks.
    pub halving_interval_blocks: Option<u64>,
    /// Fee taken from every escrow release, in basis points.
    pub escrow_release_fee_bps: Option<u64>,
    /// Reputation each party gains per release, in basis points of the amount.
    pub release_reputation_bps: Option<u64>,
    /// A rating spending X removes X times this from the target.
    pub rating_penalty_multiplier: Option<u64>,
    /// Time from rent to `active` before a contract is refunded, in ns.
    pub provisioning_timeout_ns: Option<u64>,
    /// Reputation lost for a missed provisioning deadline, in basis points of the paid amount.
    pub missed_deadline_penalty_bps: Option<u64>,
    /// ICRC-1 deduplication window, in ns.
    pub tx_window_ns: Option<u64>,
    /// Tolerated clock drift of `created_at_time`, in ns.
    pub permitted_drift_ns: Option<u64>,
}

impl InitArgs {
    /// Defaults everywhere, no genesis balances.
    pub fn new(treasury: Principal) -> Self {
        Self {
            treasury,
            initial_balances: vec![],
            block_interval_secs: None,
            token_name: None,
            token_symbol: None,
            transfer_fee_e9s: None,
            provider_registration_fee_e9s: None,
            initial_block_reward_e9s: None,
            halving_interval_blocks: None,
            escrow_release_fee_bps: None,
            release_reputation_bps: None,
            rating_penalty_multiplier: None,
            provisioning_timeout_ns: None,
            missed_deadline_penalty_bps: None,
            tx_window_ns: None,
            permitted_drift_ns: None,
        }
    }

    /// The ledger parameters: defaults with this argument's overrides, the
    /// canister itself (`minting_account`) as the minting account.
    pub fn params(&self, minting_account: Principal) -> Result<Params, String> {
        let mut p = Params::with_treasury(self.treasury, minting_account);
        if let Some(secs) = self.block_interval_secs {
            if secs == 0 {
                return Err("block_interval_secs must be positive".into());
            }
            p.block_interval_ns = secs
                .checked_mul(NS_PER_SEC)
                .ok_or_else(|| format!("block_interval_secs {secs} is too large"))?;
        }
        let set = |slot: &mut u64, v: Option<u64>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        if let Some(name) = &self.token_name {
            p.token_name = name.clone();
        }
        if let Some(symbol) = &self.token_symbol {
            p.token_symbol = symbol.clone();
        }
        set(&mut p.transfer_fee_e9s, self.transfer_fee_e9s);
        set(
            &mut p.provider_registration_fee_e9s,
            self.provider_registration_fee_e9s,
        );
        set(
            &mut p.initial_block_reward_e9s,
            self.initial_block_reward_e9s,
        );
        set(&mut p.halving_interval_blocks, self.halving_interval_blocks);
        set(&mut p.escrow_release_fee_bps, self.escrow_release_fee_bps);
        set(&mut p.release_reputation_bps, self.release_reputation_bps);
        set(
            &mut p.rating_penalty_multiplier,
            self.rating_penalty_multiplier,
        );
        set(&mut p.provisioning_timeout_ns, self.provisioning_timeout_ns);
        set(
            &mut p.missed_deadline_penalty_bps,
            self.missed_deadline_penalty_bps,
        );
        set(&mut p.tx_window_ns, self.tx_window_ns);
        set(&mut p.permitted_drift_ns, self.permitted_drift_ns);
        Ok(p)
    }

    /// The genesis of a ledger installed at `now` in canister `canister_id`.
    pub fn genesis(&self, canister_id: Principal, now: u64) -> Result<Genesis, String> {
        Ok(Genesis {
            params: self.params(canister_id)?,
            balances: self.initial_balances.clone(),
            reputations: vec![],
            time_ns: now,
        })
    }
}

/// The timer's period for a ledger whose reward blocks last `block_interval_ns`:
/// the block interval, at most [`MAX_TICK`], at least [`MIN_TICK`].
pub fn tick_period(block_interval_ns: u64) -> Duration {
    Duration::from_nanos(block_interval_ns).clamp(MIN_TICK, MAX_TICK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dc_ledger_core::Ledger;

    #[test]
    fn defaults_and_overrides() {
        let me = Principal::from_slice(&[1; 10]);
        let treasury = Principal::from_slice(&[2; 29]);
        let args = InitArgs::new(treasury);
        assert_eq!(args.params(me), Ok(Params::with_treasury(treasury, me)));
        let args = InitArgs {
            block_interval_secs: Some(10),
            token_symbol: Some("tDCT".into()),
            transfer_fee_e9s: Some(1),
            initial_balances: vec![(Account::of(treasury), 42)],
            ..InitArgs::new(treasury)
        };
        let genesis = args.genesis(me, 7).expect("genesis");
        assert_eq!(genesis.params.block_interval_ns, 10 * NS_PER_SEC);
        assert_eq!(genesis.params.token_symbol, "tDCT");
        assert_eq!(genesis.params.transfer_fee_e9s, 1);
        assert_eq!(genesis.params.minting_account, me);
        let ledger = Ledger::new(genesis).expect("ledger");
        assert_eq!(ledger.balance_of(&Account::of(treasury)), 42);
        assert_eq!(ledger.time_ns(), 7);
    }

    #[test]
    fn bad_block_intervals_are_refused() {
        let me = Principal::anonymous();
        for secs in [0, u64::MAX] {
            let args = InitArgs {
                block_interval_secs: Some(secs),
                ..InitArgs::new(me)
            };
            assert!(args.params(me).is_err(), "{secs}");
        }
    }

    #[test]
    fn tick_period_is_clamped() {
        assert_eq!(tick_period(600 * NS_PER_SEC), MAX_TICK);
        assert_eq!(tick_period(2 * NS_PER_SEC), Duration::from_secs(2));
        assert_eq!(tick_period(1), MIN_TICK);
        assert_eq!(tick_period(u64::MAX), MAX_TICK);
    }
}
