//! Reward blocks: minting by block height and check-ins.
//!
//! A reward block closes every `block_interval_ns`. Its reward
//! (`initial_block_reward_e9s >> (height / halving_interval_blocks)`) is shared
//! among the providers whose nodes checked in during the block, weighted by
//! the integer square root of each provider's reputation (equal shares when all
//! weights are zero). Rounding dust and rewards of blocks nobody checked in for
//! are never minted, so minted rewards never exceed the schedule.
//!
//! A check-in is the node's signature over the current height and the previous
//! block's hash, under a delegation with the `CheckIn` permission; it costs the
//! provider `reward / 100`, paid to the treasury.

use std::collections::BTreeSet;

use candid::Principal;
use dc_identity::{Domain, Permission};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::blocks::Tx;
use crate::error::{LedgerError, LedgerResult};
use crate::ledger::Ledger;
use crate::types::*;

/// Reward-block bookkeeping.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RewardState {
    /// Number of reward blocks closed; the open block has this height.
    pub height: u64,
    pub next_block_at_ns: u64,
    pub previous_block_hash: [u8; 32],
    pub checked_in_nodes: BTreeSet<Principal>,
    pub checked_in_providers: BTreeSet<Principal>,
    /// Total minted by rewards so far.
    pub minted_e9s: u64,
}

impl RewardState {
    pub(crate) fn new(genesis_time_ns: u64, params: &Params) -> Self {
        RewardState {
            height: 0,
            next_block_at_ns: genesis_time_ns.saturating_add(params.block_interval_ns),
            previous_block_hash: Sha256::digest(b"dc-reward-genesis").into(),
            checked_in_nodes: BTreeSet::new(),
            checked_in_providers: BTreeSet::new(),
            minted_e9s: 0,
        }
    }
}

/// The reward of the block at `height`.
pub fn block_reward(params: &Params, height: u64) -> u64 {
    let halvings = height / params.halving_interval_blocks;
    if halvings >= 64 {
        0
    } else {
        params.initial_block_reward_e9s >> halvings
    }
}

/// The most the schedule allows to have been minted once `height` blocks closed.
pub fn scheduled_supply(params: &Params, height: u64) -> u128 {
    let interval = params.halving_interval_blocks as u128;
    let mut total = 0u128;
    let mut done = 0u128;
    let height = height as u128;
    let mut era = 0u32;
    while done < height && era < 64 {
        let n = (height - done).min(interval);
        total += n * (params.initial_block_reward_e9s >> era) as u128;
        done += n;
        era += 1;
    }
    total
}

/// The message a node signs (domain `CheckIn`) to check in.
pub fn check_in_message(
    block_height: u64,
    previous_block_hash: &[u8],
    node: &Principal,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + 32 + 30);
    m.extend_from_slice(&block_height.to_be_bytes());
    m.extend_from_slice(previous_block_hash);
    m.extend_from_slice(node.as_slice());
    m
}

fn isqrt(n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    let n = n as u128;
    let mut x = (n as f64).sqrt() as u128;
    while x * x > n {
        x -= 1;
    }
    while (x + 1) * (x + 1) <= n {
        x += 1;
    }
    x as u64
}

impl Ledger {
    /// What a node must sign to check in now.
    pub fn check_in_challenge(&self) -> CheckInChallenge {
        let reward = block_reward(&self.params, self.rewards.height);
        CheckInChallenge {
            block_height: self.rewards.height,
            previous_block_hash: serde_bytes::ByteBuf::from(
                self.rewards.previous_block_hash.to_vec(),
            ),
            closes_at_ns: self.rewards.next_block_at_ns,
            reward_e9s: reward,
            fee_e9s: reward / 100,
        }
    }

    /// A node checks in for the open block on behalf of its provider.
    pub fn check_in(
        &mut self,
        caller: Principal,
        now: u64,
        args: CheckInArgs,
    ) -> LedgerResult<u64> {
        let now = self.time_ns.max(now);
        let provider = self.node_acting_for(caller, Permission::CheckIn, now)?;
        // Past the block's closing time it only waits for the tick to close:
        // a check-in then is too late for it.
        if now >= self.rewards.next_block_at_ns
            || args.block_height != self.rewards.height
            || args.previous_block_hash.as_slice() != self.rewards.previous_block_hash
        {
            return Err(LedgerError::StaleCheckIn {
                expected_height: self.rewards.height,
                got_height: args.block_height,
            });
        }
        if self.rewards.checked_in_nodes.contains(&caller) {
            return Err(LedgerError::AlreadyCheckedIn {
                node: caller,
                block_height: args.block_height,
            });
        }
        let node_key = self
            .market
            .nodes
            .get(&caller)
            .map(|n| n.delegation.node_public_key.clone())
            .unwrap_or_default();
        let message = check_in_message(args.block_height, &args.previous_block_hash, &caller);
        dc_identity::verify(&node_key, Domain::CheckIn, &message, &args.signature)
            .map_err(|e| LedgerError::invalid("signature", e.to_string()))?;
        // The fee buys the provider's participation in this block's reward,
        // which is shared per provider: its first node to check in pays it,
        // its other nodes check in for free.
        let fee = if self.rewards.checked_in_providers.contains(&provider) {
            0
        } else {
            block_reward(&self.params, self.rewards.height) / 100
        };
        let balance = self.balance_of(&Account::of(provider));
        if balance < fee {
            return Err(LedgerError::InsufficientFunds {
                needed_e9s: fee,
                balance_e9s: balance,
            });
        }
        self.time_ns = now;
        self.charge_service_fee(provider, fee, "check_in")?;
        self.rewards.checked_in_nodes.insert(caller);
        self.rewards.checked_in_providers.insert(provider);
        let height = self.rewards.height;
        if let Some(n) = self.market.nodes.get_mut(&caller) {
            n.last_check_in_block = Some(height);
        }
        Ok(height)
    }

    /// Lets time pass: settles contracts whose deadline or term passed and
    /// closes the reward block when it is due. Returns whether anything changed;
    /// when nothing did, the state is untouched (not even the clock).
    pub fn tick(&mut self, now: u64) -> bool {
        let now = self.time_ns.max(now);
        let contracts_due = self.market.timeline.first().is_some_and(|&(t, _)| t <= now);
        let block_due = now >= self.rewards.next_block_at_ns;
        if !contracts_due && !block_due {
            return false;
        }
        self.time_ns = now;
        self.process_timeline();
        if block_due {
            self.close_reward_block();
        }
        true
    }

    fn close_reward_block(&mut self) {
        let now = self.time_ns;
        let height = self.rewards.height;
        let reward = block_reward(&self.params, height);
        let providers: Vec<Principal> = self.rewards.checked_in_providers.iter().copied().collect();
        if reward > 0 && !providers.is_empty() {
            let mut weights: Vec<u64> = providers
                .iter()
                .map(|p| isqrt(self.reputation_of(p)))
                .collect();
            if weights.iter().all(|&w| w == 0) {
                weights.iter_mut().for_each(|w| *w = 1);
            }
            let total: u128 = weights.iter().map(|&w| w as u128).sum();
            for (p, w) in providers.iter().zip(weights) {
                let share = ((reward as u128 * w as u128) / total) as u64;
                if share == 0 {
                    continue;
                }
                // Cannot overflow: bounded by the schedule's cap.
                let _ = self.credit(Account::of(*p), share);
                self.total_supply += share;
                self.rewards.minted_e9s += share;
                self.push_block(Tx::Mint {
                    to: Account::of(*p),
                    amount: share,
                    memo: Some(b"reward".to_vec()),
                });
            }
        }
        let mut h = Sha256::new();
        h.update(b"dc-reward-block");
        h.update(height.to_be_bytes());
        h.update(self.rewards.previous_block_hash);
        h.update(self.tip().map(|(_, hash)| hash).unwrap_or([0; 32]));
        for p in &providers {
            h.update(p.as_slice());
        }
        self.rewards.previous_block_hash = h.finalize().into();
        self.rewards.height += 1;
        self.rewards.checked_in_nodes.clear();
        self.rewards.checked_in_providers.clear();
        let next = self
            .rewards
            .next_block_at_ns
            .saturating_add(self.params.block_interval_ns);
        // After downtime, resume from now instead of closing a burst of empty blocks.
        self.rewards.next_block_at_ns = if next <= now {
            now.saturating_add(self.params.block_interval_ns)
        } else {
            next
        };
        self.release_all_active();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_halves_and_caps_near_21m() {
        let p = Params::with_treasury(Principal::anonymous(), Principal::management_canister());
        assert_eq!(block_reward(&p, 0), 50 * E9S_PER_TOKEN);
        assert_eq!(block_reward(&p, 209_999), 50 * E9S_PER_TOKEN);
        assert_eq!(block_reward(&p, 210_000), 25 * E9S_PER_TOKEN);
        assert_eq!(block_reward(&p, 420_000), 12_500_000_000);
        assert_eq!(scheduled_supply(&p, 1), 50 * E9S_PER_TOKEN as u128);
        assert_eq!(
            scheduled_supply(&p, 210_001),
            (210_000 * 50 + 25) as u128 * E9S_PER_TOKEN as u128
        );
        let cap = scheduled_supply(&p, u64::MAX);
        // ~21 M DCT, never more.
        assert!(
            cap < 21_000_000 * E9S_PER_TOKEN as u128 && cap > 20_999_000 * E9S_PER_TOKEN as u128,
            "cap {cap}"
        );
        assert_eq!(block_reward(&p, 64 * 210_000), 0);
    }

    #[test]
    fn isqrt_is_exact() {
        for n in [0u64, 1, 2, 3, 4, 15, 16, 17, 99, 100, 1 << 40, u64::MAX] {
            let r = isqrt(n);
            assert!(
                r as u128 * r as u128 <= n as u128 && (r as u128 + 1) * (r as u128 + 1) > n as u128,
                "{n}"
            );
        }
    }
}
