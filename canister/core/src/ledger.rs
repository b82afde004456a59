//! The ledger state and its token operations (ICRC-1, ICRC-2, ICRC-3 log).
//!
//! Every operation takes the caller and the time as parameters, validates
//! everything before it mutates anything, and so leaves the state untouched
//! when it returns an error.

use std::collections::{BTreeMap, BTreeSet};

use candid::{Nat, Principal};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::blocks::{block_value, StoredBlock, Tx};
use crate::error::{LedgerError, LedgerResult};
use crate::ingress::DomainIndex;
use crate::market::{Market, SearchIndex};
use crate::rewards::RewardState;
use crate::types::*;

/// Longest memo accepted on ICRC transactions.
pub const MAX_MEMO_BYTES: usize = 32;

/// Initial state: parameters and genesis balances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Genesis {
    pub params: Params,
    pub balances: Vec<(Account, u64)>,
    /// Starting reputation, for demos and tests.
    pub reputations: Vec<(Principal, u64)>,
    /// Time of genesis; the first reward block closes one interval later.
    pub time_ns: u64,
}

/// An allowance granted with `icrc2_approve`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AllowanceEntry {
    pub amount: u64,
    pub expires_at: Option<u64>,
}

/// The whole ledger. Deterministic: ordered maps only, so two ledgers fed the
/// same operations serialize to the same bytes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Ledger {
    pub(crate) params: Params,
    /// Latest time seen; time never runs backwards inside the ledger.
    pub(crate) time_ns: u64,
    pub(crate) balances: BTreeMap<Account, u64>,
    pub(crate) allowances: BTreeMap<(Account, Account), AllowanceEntry>,
    pub(crate) blocks: Vec<StoredBlock>,
    /// ICRC-1 deduplication: transaction hash -> (block, created_at_time).
    pub(crate) recent_txs: BTreeMap<[u8; 32], (u64, u64)>,
    pub(crate) recent_txs_by_time: BTreeSet<(u64, [u8; 32])>,
    pub(crate) total_supply: u64,
    pub(crate) genesis_minted: u64,
    pub(crate) burned: u64,
    pub(crate) escrow_total: u64,
    pub(crate) reputation: BTreeMap<Principal, u64>,
    pub(crate) ratings: Vec<RatingRecord>,
    pub(crate) market: Market,
    pub(crate) rewards: RewardState,
    /// Derived from `market`, rebuilt after deserialization.
    #[serde(skip)]
    pub(crate) index: SearchIndex,
    /// Which non-final contract holds each custom domain; derived from
    /// `market`, rebuilt after deserialization. Compared by `==` like any
    /// field, so a ledger equals its own snapshot only if the index that was
    /// kept up to date equals the one rebuilt.
    #[serde(skip)]
    pub(crate) domain_holders: DomainIndex,
}

/// Which of the ICRC-1 error shapes a failed token movement is reported in.
pub(crate) enum TokenError {
    BadFee(u64),
    InsufficientFunds(u64),
    InsufficientAllowance(u64),
    TooOld,
    CreatedInFuture(u64),
    Duplicate(u64),
    BadBurn(u64),
    Generic(u64, String),
}

impl From<TokenError> for TransferError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::BadFee(f) => TransferError::BadFee {
                expected_fee: f.into(),
            },
            TokenError::InsufficientFunds(b) => {
                TransferError::InsufficientFunds { balance: b.into() }
            }
            TokenError::InsufficientAllowance(_) => TransferError::GenericError {
                error_code: 1u64.into(),
                message: "insufficient allowance".into(),
            },
            TokenError::TooOld => TransferError::TooOld,
            TokenError::CreatedInFuture(t) => TransferError::CreatedInFuture { ledger_time: t },
            TokenError::Duplicate(i) => TransferError::Duplicate {
                duplicate_of: i.into(),
            },
            TokenError::BadBurn(m) => TransferError::BadBurn {
                min_burn_amount: m.into(),
            },
            TokenError::Generic(c, m) => TransferError::GenericError {
                error_code: c.into(),
                message: m,
            },
        }
    }
}

impl From<TokenError> for TransferFromError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::BadFee(f) => TransferFromError::BadFee {
                expected_fee: f.into(),
            },
            TokenError::InsufficientFunds(b) => {
                TransferFromError::InsufficientFunds { balance: b.into() }
            }
            TokenError::InsufficientAllowance(a) => TransferFromError::InsufficientAllowance {
                allowance: a.into(),
            },
            TokenError::TooOld => TransferFromError::TooOld,
            TokenError::CreatedInFuture(t) => TransferFromError::CreatedInFuture { ledger_time: t },
            TokenError::Duplicate(i) => TransferFromError::Duplicate {
                duplicate_of: i.into(),
            },
            TokenError::BadBurn(m) => TransferFromError::BadBurn {
                min_burn_amount: m.into(),
            },
            TokenError::Generic(c, m) => TransferFromError::GenericError {
                error_code: c.into(),
                message: m,
            },
        }
    }
}

impl From<TokenError> for ApproveError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::BadFee(f) => ApproveError::BadFee {
                expected_fee: f.into(),
            },
            TokenError::InsufficientFunds(b) => {
                ApproveError::InsufficientFunds { balance: b.into() }
            }
            TokenError::TooOld => ApproveError::TooOld,
            TokenError::CreatedInFuture(t) => ApproveError::CreatedInFuture { ledger_time: t },
            TokenError::Duplicate(i) => ApproveError::Duplicate {
                duplicate_of: i.into(),
            },
            TokenError::InsufficientAllowance(_) | TokenError::BadBurn(_) => {
                ApproveError::GenericError {
                    error_code: 1u64.into(),
                    message: "not applicable to approve".into(),
                }
            }
            TokenError::Generic(c, m) => ApproveError::GenericError {
                error_code: c.into(),
                message: m,
            },
        }
    }
}

/// Error codes of `GenericError`.
pub mod generic_codes {
    pub const AMOUNT_TOO_LARGE: u64 = 2;
    pub const MEMO_TOO_LONG: u64 = 3;
    pub const ANONYMOUS_CALLER: u64 = 4;
    pub const MINTING_FORBIDDEN: u64 = 5;
    pub const SELF_APPROVAL: u64 = 6;
}

pub(crate) fn nat_to_u64(n: &Nat) -> Result<u64, TokenError> {
    u64::try_from(&n.0).map_err(|_| {
        TokenError::Generic(
            generic_codes::AMOUNT_TOO_LARGE,
            format!("amount {n} exceeds the ledger's 64-bit range"),
        )
    })
}

fn check_memo(memo: &Option<serde_bytes::ByteBuf>) -> Result<Option<Vec<u8>>, TokenError> {
    match memo {
        Some(m) if m.len() > MAX_MEMO_BYTES => Err(TokenError::Generic(
            generic_codes::MEMO_TOO_LONG,
            format!(
                "memo is {} bytes, at most {MAX_MEMO_BYTES} allowed",
                m.len()
            ),
        )),
        Some(m) => Ok(Some(m.to_vec())),
        None => Ok(None),
    }
}

impl Ledger {
    /// A ledger at genesis. Genesis balances are minted in the first blocks.
    pub fn new(genesis: Genesis) -> LedgerResult<Self> {
        if genesis.params.block_interval_ns == 0 {
            return Err(LedgerError::invalid(
                "block_interval_ns",
                "must be positive",
            ));
        }
        if genesis.params.halving_interval_blocks == 0 {
            return Err(LedgerError::invalid(
                "halving_interval_blocks",
                "must be positive",
            ));
        }
        let p = &genesis.params;
        for (name, bps) in [
            ("escrow_release_fee_bps", p.escrow_release_fee_bps),
            ("release_reputation_bps", p.release_reputation_bps),
            ("missed_deadline_penalty_bps", p.missed_deadline_penalty_bps),
        ] {
            if bps > 10_000 {
                return Err(LedgerError::invalid(
                    name,
                    format!("{bps} exceeds 10000 (100%)"),
                ));
            }
        }
        if p.treasury == p.minting_account {
            return Err(LedgerError::invalid(
                "treasury",
                "must differ from the minting account, which can never spend",
            ));
        }
        // Genesis plus every reward the schedule can ever mint must fit in u64.
        let genesis_total = genesis
            .balances
            .iter()
            .try_fold(0u128, |acc, (_, a)| Some(acc + *a as u128))
            .unwrap_or(u128::MAX);
        if genesis_total + crate::rewards::scheduled_supply(p, u64::MAX) > u64::MAX as u128 {
            return Err(LedgerError::invalid(
                "balances",
                "genesis supply plus the reward schedule exceeds the 64-bit range",
            ));
        }
        let mut ledger = Ledger {
            rewards: RewardState::new(genesis.time_ns, &genesis.params),
            params: genesis.params,
            time_ns: genesis.time_ns,
            balances: BTreeMap::new(),
            allowances: BTreeMap::new(),
            blocks: Vec::new(),
            recent_txs: BTreeMap::new(),
            recent_txs_by_time: BTreeSet::new(),
            total_supply: 0,
            genesis_minted: 0,
            burned: 0,
            escrow_total: 0,
            reputation: BTreeMap::new(),
            ratings: Vec::new(),
            market: Market::default(),
            index: SearchIndex::default(),
            domain_holders: DomainIndex::default(),
        };
        for (account, amount) in genesis.balances {
            let account = account.normalized();
            if amount == 0 {
                continue;
            }
            ledger.credit(account, amount)?;
            ledger.total_supply = ledger
                .total_supply
                .checked_add(amount)
                .ok_or_else(|| LedgerError::Overflow("genesis".into()))?;
            ledger.genesis_minted += amount;
            ledger.push_block(Tx::Mint {
                to: account,
                amount,
                memo: Some(b"genesis".to_vec()),
            });
        }
        for (p, r) in genesis.reputations {
            if r > 0 {
                ledger.reputation.insert(p, r);
            }
        }
        Ok(ledger)
    }

    /// Rebuilds derived indexes; call after deserializing a ledger.
    pub fn rebuild_indexes(&mut self) {
        self.index = SearchIndex::build(&self.market);
        self.domain_holders = DomainIndex::build(&self.market);
    }

    /// The contract holding custom domain `name` (exact string), if a
    /// non-final contract registered it.
    pub fn domain_holder(&self, name: &str) -> Option<u64> {
        self.domain_holders.holder(name)
    }

    /// The install-time parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Latest time the ledger has seen.
    pub fn time_ns(&self) -> u64 {
        self.time_ns
    }

    pub(crate) fn advance_clock(&mut self, now: u64) -> u64 {
        self.time_ns = self.time_ns.max(now);
        self.time_ns
    }

    // ------------------------------------------------------------ balances

    /// Balance of an account.
    pub fn balance_of(&self, account: &Account) -> u64 {
        self.balances
            .get(&account.normalized())
            .copied()
            .unwrap_or(0)
    }

    /// Total supply: genesis + rewards − burned.
    pub fn total_supply(&self) -> u64 {
        self.total_supply
    }

    pub(crate) fn credit(&mut self, account: Account, amount: u64) -> LedgerResult<()> {
        if amount == 0 {
            return Ok(());
        }
        let e = self.balances.entry(account.normalized()).or_insert(0);
        *e = e
            .checked_add(amount)
            .ok_or_else(|| LedgerError::Overflow("balance".into()))?;
        Ok(())
    }

    /// Debits an account the caller has already checked holds `amount`.
    pub(crate) fn debit(&mut self, account: Account, amount: u64) {
        if amount == 0 {
            return;
        }
        let account = account.normalized();
        let bal = self.balances.get(&account).copied().unwrap_or(0);
        debug_assert!(bal >= amount, "debit without a balance check");
        let rest = bal.saturating_sub(amount);
        if rest == 0 {
            self.balances.remove(&account);
        } else {
            self.balances.insert(account, rest);
        }
    }

    /// Moves `amount` from `from` to the treasury as a service fee, with a block.
    pub(crate) fn charge_service_fee(
        &mut self,
        from: Principal,
        amount: u64,
        service: &str,
    ) -> LedgerResult<()> {
        if amount == 0 {
            return Ok(());
        }
        let from = Account::of(from);
        let balance = self.balance_of(&from);
        if balance < amount {
            return Err(LedgerError::InsufficientFunds {
                needed_e9s: amount,
                balance_e9s: balance,
            });
        }
        self.debit(from, amount);
        self.credit(Account::of(self.params.treasury), amount)?;
        self.push_block(Tx::ServiceFee {
            from,
            amount,
            service: service.into(),
        });
        Ok(())
    }

    // --------------------------------------------------------------- blocks

    pub(crate) fn push_block(&mut self, tx: Tx) -> u64 {
        let index = self.blocks.len() as u64;
        let phash = self.blocks.last().map(|b| b.hash);
        let hash = block_value(self.time_ns, &tx, phash, self.params.treasury).hash();
        self.blocks.push(StoredBlock {
            ts: self.time_ns,
            tx,
            hash,
        });
        index
    }

    /// Number of blocks in the log.
    pub fn log_length(&self) -> u64 {
        self.blocks.len() as u64
    }

    /// Index and hash of the last block, the ICRC-3 tip.
    pub fn tip(&self) -> Option<(u64, [u8; 32])> {
        self.blocks
            .last()
            .map(|b| (self.blocks.len() as u64 - 1, b.hash))
    }

    /// The ICRC-3 value of block `index`.
    pub fn block(&self, index: u64) -> Option<dc_icrc3::Value> {
        let i = usize::try_from(index).ok()?;
        let b = self.blocks.get(i)?;
        let phash = i.checked_sub(1).map(|p| self.blocks[p].hash);
        Some(block_value(b.ts, &b.tx, phash, self.params.treasury))
    }

    /// Blocks as stored (for audits and tests).
    pub fn stored_blocks(&self) -> &[StoredBlock] {
        &self.blocks
    }

    // ----------------------------------------------------------- ICRC-1/2

    fn prune_dedup(&mut self) {
        let horizon = self
            .time_ns
            .saturating_sub(self.params.tx_window_ns + self.params.permitted_drift_ns);
        while let Some(&(ts, hash)) = self.recent_txs_by_time.first() {
            if ts >= horizon {
                break;
            }
            self.recent_txs_by_time.pop_first();
            self.recent_txs.remove(&hash);
        }
    }

    /// ICRC-1 time checks and deduplication. Returns the dedup key to record.
    fn check_created_at(
        &self,
        now: u64,
        created_at_time: Option<u64>,
        tx: &Tx,
    ) -> Result<Option<([u8; 32], u64)>, TokenError> {
        let Some(t) = created_at_time else {
            return Ok(None);
        };
        if t.saturating_add(self.params.tx_window_ns)
            .saturating_add(self.params.permitted_drift_ns)
            < now
        {
            return Err(TokenError::TooOld);
        }
        if t > now.saturating_add(self.params.permitted_drift_ns) {
            return Err(TokenError::CreatedInFuture(now));
        }
        let (value, _) = tx.to_value();
        let key = value.hash();
        if let Some((block, _)) = self.recent_txs.get(&key) {
            return Err(TokenError::Duplicate(*block));
        }
        Ok(Some((key, t)))
    }

    fn record_dedup(&mut self, key: Option<([u8; 32], u64)>, block: u64) {
        if let Some((hash, t)) = key {
            self.recent_txs.insert(hash, (block, t));
            self.recent_txs_by_time.insert((t, hash));
        }
    }

    /// The shared path of `icrc1_transfer` and `icrc2_transfer_from`.
    #[allow(clippy::too_many_arguments)]
    fn move_tokens(
        &mut self,
        now: u64,
        caller: Principal,
        from: Account,
        spender: Option<Account>,
        to: Account,
        amount: &Nat,
        fee: &Option<Nat>,
        memo: &Option<serde_bytes::ByteBuf>,
        created_at_time: Option<u64>,
    ) -> Result<u64, TokenError> {
        if caller == Principal::anonymous() {
            return Err(TokenError::Generic(
                generic_codes::ANONYMOUS_CALLER,
                "anonymous callers cannot move tokens".into(),
            ));
        }
        let now = self.time_ns.max(now);
        let from = from.normalized();
        let to = to.normalized();
        let amount = nat_to_u64(amount)?;
        let memo = check_memo(memo)?;
        let explicit_fee = fee.as_ref().map(nat_to_u64).transpose()?;
        let minting = self.params.minting_account;
        if from.owner == minting {
            return Err(TokenError::Generic(
                generic_codes::MINTING_FORBIDDEN,
                "tokens are minted only by block rewards; the minting account cannot transfer"
                    .into(),
            ));
        }
        let is_burn = to.owner == minting;
        let fee_e9s = if is_burn {
            0
        } else {
            self.params.transfer_fee_e9s
        };
        if let Some(f) = explicit_fee {
            if f != fee_e9s {
                return Err(TokenError::BadFee(fee_e9s));
            }
        }
        if is_burn && amount < self.params.transfer_fee_e9s.max(1) {
            return Err(TokenError::BadBurn(self.params.transfer_fee_e9s.max(1)));
        }
        let tx = if is_burn {
            Tx::Burn {
                from,
                amount,
                spender,
                memo,
                created_at_time,
            }
        } else {
            Tx::Transfer {
                from,
                to,
                amount,
                explicit_fee,
                fee: fee_e9s,
                spender,
                memo,
                created_at_time,
            }
        };
        let dedup = self.check_created_at(now, created_at_time, &tx)?;
        let needed = amount.checked_add(fee_e9s).ok_or_else(|| {
            TokenError::Generic(
                generic_codes::AMOUNT_TOO_LARGE,
                "amount plus fee overflows".into(),
            )
        })?;
        // ICRC-2: the allowance must cover amount + fee.
        if let Some(spender) = spender {
            let allowance = self.allowance_at(&from, &spender, now);
            if allowance.amount < needed {
                return Err(TokenError::InsufficientAllowance(allowance.amount));
            }
        }
        let balance = self.balance_of(&from);
        if balance < needed {
            return Err(TokenError::InsufficientFunds(balance));
        }
        if !is_burn && self.balance_of(&to).checked_add(amount).is_none() {
            return Err(TokenError::Generic(
                generic_codes::AMOUNT_TOO_LARGE,
                "recipient balance would overflow".into(),
            ));
        }
        // All checks passed: mutate.
        self.time_ns = now;
        self.prune_dedup();
        if let Some(spender) = spender {
            let key = (from, spender.normalized());
            let left = self.allowance_at(&from, &spender, now).amount - needed;
            if left == 0 {
                self.allowances.remove(&key);
            } else if let Some(e) = self.allowances.get_mut(&key) {
                e.amount = left;
            }
        }
        self.debit(from, needed);
        if is_burn {
            self.total_supply -= amount;
            self.burned += amount;
        } else {
            // Cannot overflow: checked above, and the treasury holds part of a
            // supply that fits in u64.
            let _ = self.credit(to, amount);
            let _ = self.credit(Account::of(self.params.treasury), fee_e9s);
        }
        let block = self.push_block(tx);
        self.record_dedup(dedup, block);
        Ok(block)
    }

    /// `icrc1_transfer`.
    pub fn icrc1_transfer(
        &mut self,
        caller: Principal,
        now: u64,
        arg: TransferArg,
    ) -> Result<Nat, TransferError> {
        let from = Account {
            owner: caller,
            subaccount: arg.from_subaccount,
        };
        self.move_tokens(
            now,
            caller,
            from,
            None,
            arg.to,
            &arg.amount,
            &arg.fee,
            &arg.memo,
            arg.created_at_time,
        )
        .map(Nat::from)
        .map_err(TransferError::from)
    }

    /// `icrc2_transfer_from`.
    pub fn icrc2_transfer_from(
        &mut self,
        caller: Principal,
        now: u64,
        arg: TransferFromArgs,
    ) -> Result<Nat, TransferFromError> {
        let spender = Account {
            owner: caller,
            subaccount: arg.spender_subaccount,
        };
        if spender.normalized() == arg.from.normalized() {
            // Spending your own tokens is a plain transfer.
            return self
                .move_tokens(
                    now,
                    caller,
                    arg.from,
                    None,
                    arg.to,
                    &arg.amount,
                    &arg.fee,
                    &arg.memo,
                    arg.created_at_time,
                )
                .map(Nat::from)
                .map_err(TransferFromError::from);
        }
        self.move_tokens(
            now,
            caller,
            arg.from,
            Some(spender),
            arg.to,
            &arg.amount,
            &arg.fee,
            &arg.memo,
            arg.created_at_time,
        )
        .map(Nat::from)
        .map_err(TransferFromError::from)
    }

    /// Current allowance (expired allowances read as zero).
    pub fn allowance_of(&self, account: &Account, spender: &Account) -> AllowanceEntry {
        self.allowance_at(account, spender, self.time_ns)
    }

    fn allowance_at(&self, account: &Account, spender: &Account, now: u64) -> AllowanceEntry {
        match self
            .allowances
            .get(&(account.normalized(), spender.normalized()))
        {
            Some(e) if e.expires_at.is_none_or(|t| t > now) => e.clone(),
            _ => AllowanceEntry {
                amount: 0,
                expires_at: None,
            },
        }
    }

    /// `icrc2_allowance`.
    pub fn icrc2_allowance(&self, arg: &AllowanceArgs) -> Allowance {
        let e = self.allowance_of(&arg.account, &arg.spender);
        Allowance {
            allowance: e.amount.into(),
            expires_at: e.expires_at,
        }
    }

    /// `icrc2_approve`.
    pub fn icrc2_approve(
        &mut self,
        caller: Principal,
        now: u64,
        arg: ApproveArgs,
    ) -> Result<Nat, ApproveError> {
        self.approve_inner(caller, now, arg).map(Nat::from)
    }

    fn approve_inner(
        &mut self,
        caller: Principal,
        now: u64,
        arg: ApproveArgs,
    ) -> Result<u64, ApproveError> {
        if caller == Principal::anonymous() {
            return Err(TokenError::Generic(
                generic_codes::ANONYMOUS_CALLER,
                "anonymous callers cannot approve".into(),
            )
            .into());
        }
        let now = self.time_ns.max(now);
        let from = Account {
            owner: caller,
            subaccount: arg.from_subaccount,
        }
        .normalized();
        let spender = arg.spender.normalized();
        if from.owner == spender.owner {
            return Err(TokenError::Generic(
                generic_codes::SELF_APPROVAL,
                "cannot approve your own principal as spender".into(),
            )
            .into());
        }
        if from.owner == self.params.minting_account {
            return Err(TokenError::Generic(
                generic_codes::MINTING_FORBIDDEN,
                "the minting account cannot approve".into(),
            )
            .into());
        }
        let amount = nat_to_u64(&arg.amount)?;
        let memo = check_memo(&arg.memo)?;
        let explicit_fee = arg.fee.as_ref().map(nat_to_u64).transpose()?;
        let expected = arg
            .expected_allowance
            .as_ref()
            .map(nat_to_u64)
            .transpose()?;
        let fee = self.params.transfer_fee_e9s;
        if explicit_fee.is_some_and(|f| f != fee) {
            return Err(ApproveError::BadFee {
                expected_fee: fee.into(),
            });
        }
        if let Some(exp) = arg.expires_at {
            if exp <= now {
                return Err(ApproveError::Expired { ledger_time: now });
            }
        }
        let tx = Tx::Approve {
            from,
            spender,
            amount,
            expected_allowance: expected,
            expires_at: arg.expires_at,
            explicit_fee,
            fee,
            memo,
            created_at_time: arg.created_at_time,
        };
        let dedup = self.check_created_at(now, arg.created_at_time, &tx)?;
        let current = self.allowance_at(&from, &spender, now);
        if let Some(exp) = expected {
            if exp != current.amount {
                return Err(ApproveError::AllowanceChanged {
                    current_allowance: current.amount.into(),
                });
            }
        }
        let balance = self.balance_of(&from);
        if balance < fee {
            return Err(ApproveError::InsufficientFunds {
                balance: balance.into(),
            });
        }
        self.time_ns = now;
        self.prune_dedup();
        self.debit(from, fee);
        let _ = self.credit(Account::of(self.params.treasury), fee);
        if amount == 0 {
            self.allowances.remove(&(from, spender));
        } else {
            self.allowances.insert(
                (from, spender),
                AllowanceEntry {
                    amount,
                    expires_at: arg.expires_at,
                },
            );
        }
        let block = self.push_block(tx);
        self.record_dedup(dedup, block);
        Ok(block)
    }

    // ------------------------------------------------------------- stats

    /// Totals for audits: supply, escrow, counts.
    pub fn stats(&self) -> LedgerStats {
        LedgerStats {
            total_supply_e9s: self.total_supply,
            genesis_e9s: self.genesis_minted,
            minted_rewards_e9s: self.rewards.minted_e9s,
            burned_e9s: self.burned,
            escrow_e9s: self.escrow_total,
            reward_block_height: self.rewards.height,
            next_block_at_ns: self.rewards.next_block_at_ns,
            log_length: self.log_length(),
            providers: self.market.providers.len() as u64,
            nodes: self.market.nodes.len() as u64,
            offerings: self.market.offerings.len() as u64,
            contracts: self.market.contracts.len() as u64,
        }
    }

    /// Sum of all balances (for invariant checks; O(accounts)).
    pub fn sum_of_balances(&self) -> u128 {
        self.balances.values().map(|&b| b as u128).sum()
    }

    /// Escrow held across all contracts.
    pub fn escrow_total(&self) -> u64 {
        self.escrow_total
    }

    /// Reputation of a principal (0 when never earned).
    pub fn reputation_of(&self, p: &Principal) -> u64 {
        self.reputation.get(p).copied().unwrap_or(0)
    }

    pub(crate) fn add_reputation(&mut self, p: Principal, delta: u64) {
        if delta == 0 {
            return;
        }
        let e = self.reputation.entry(p).or_insert(0);
        *e = e.saturating_add(delta);
    }

    pub(crate) fn sub_reputation(&mut self, p: Principal, delta: u64) -> u64 {
        let cur = self.reputation_of(&p);
        let lost = cur.min(delta);
        let rest = cur - lost;
        if rest == 0 {
            self.reputation.remove(&p);
        } else {
            self.reputation.insert(p, rest);
        }
        lost
    }

    /// A digest of the full serialized state, for tests that check a refused
    /// operation changed nothing.
    pub fn state_digest(&self) -> [u8; 32] {
        Sha256::digest(crate::snapshot::encode(self)).into()
    }
}
