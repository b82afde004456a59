//! The ICRC-3 block log: every movement of tokens is a block, hash-linked to the
//! previous one through `phash`, hashed with ICRC-3's representation-independent
//! hash of its generic value.

use candid::Principal;
use dc_icrc3::{MapBuilder, Value};
use serde::{Deserialize, Serialize};

use crate::types::Account;

/// What a block records. Standard ICRC-1/2 operations use the standard
/// `tx.op` names (`xfer`, `mint`, `burn`, `approve`); the marketplace's own
/// money movements use `dc_`-prefixed ops documented in `canister/README.md`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Tx {
    /// Tokens created: genesis allocation or block reward.
    Mint {
        to: Account,
        amount: u64,
        memo: Option<Vec<u8>>,
    },
    Burn {
        from: Account,
        amount: u64,
        spender: Option<Account>,
        memo: Option<Vec<u8>>,
        created_at_time: Option<u64>,
    },
    Transfer {
        from: Account,
        to: Account,
        amount: u64,
        /// The fee the caller named, if any (`tx.fee`); otherwise the block's `fee`.
        explicit_fee: Option<u64>,
        fee: u64,
        spender: Option<Account>,
        memo: Option<Vec<u8>>,
        created_at_time: Option<u64>,
    },
    Approve {
        from: Account,
        spender: Account,
        amount: u64,
        expected_allowance: Option<u64>,
        expires_at: Option<u64>,
        explicit_fee: Option<u64>,
        fee: u64,
        memo: Option<Vec<u8>>,
        created_at_time: Option<u64>,
    },
    /// Paid into a contract's escrow (rent or extension).
    Escrow {
        from: Account,
        amount: u64,
        contract_id: u64,
    },
    /// Released from escrow: `amount - fee` to the provider, `fee` to the treasury.
    Release {
        contract_id: u64,
        to: Account,
        amount: u64,
        fee: u64,
    },
    /// Returned from escrow to the developer.
    Refund {
        contract_id: u64,
        to: Account,
        amount: u64,
    },
    /// A fee paid to the treasury for a ledger service (`registration`, `check_in`).
    ServiceFee {
        from: Account,
        amount: u64,
        service: String,
    },
}

/// A block as the ledger keeps it; the generic value is derived on demand.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StoredBlock {
    pub ts: u64,
    pub tx: Tx,
    pub hash: [u8; 32],
}

/// ICRC-3 encoding of an account: `[owner]` or `[owner, subaccount]`.
pub fn account_value(account: &Account) -> Value {
    let mut parts = vec![Value::blob(account.owner.as_slice().to_vec())];
    if let Some(sub) = account.subaccount {
        parts.push(Value::blob(sub.to_vec()));
    }
    Value::Array(parts)
}

fn with_opt_blob(b: MapBuilder, key: &str, v: &Option<Vec<u8>>) -> MapBuilder {
    match v {
        Some(bytes) => b.blob(key, bytes.clone()),
        None => b,
    }
}

fn with_opt_account(b: MapBuilder, key: &str, v: &Option<Account>) -> MapBuilder {
    match v {
        Some(a) => b.value(key, account_value(a)),
        None => b,
    }
}

impl Tx {
    /// The `tx` map of the block, and the block-level implicit fee if any.
    pub fn to_value(&self) -> (Value, Option<u64>) {
        match self {
            Tx::Mint { to, amount, memo } => {
                let b = MapBuilder::new()
                    .text("op", "mint")
                    .value("to", account_value(to))
                    .nat("amt", *amount);
                (with_opt_blob(b, "memo", memo).build(), None)
            }
            Tx::Burn {
                from,
                amount,
                spender,
                memo,
                created_at_time,
            } => {
                let b = MapBuilder::new()
                    .text("op", "burn")
                    .value("from", account_value(from))
                    .nat("amt", *amount);
                let b = with_opt_account(b, "spender", spender);
                let b = with_opt_blob(b, "memo", memo).opt_nat("ts", *created_at_time);
                (b.build(), None)
            }
            Tx::Transfer {
                from,
                to,
                amount,
                explicit_fee,
                fee,
                spender,
                memo,
                created_at_time,
            } => {
                let b = MapBuilder::new()
                    .text("op", "xfer")
                    .value("from", account_value(from))
                    .value("to", account_value(to))
                    .nat("amt", *amount)
                    .opt_nat("fee", *explicit_fee);
                let b = with_opt_account(b, "spender", spender);
                let b = with_opt_blob(b, "memo", memo).opt_nat("ts", *created_at_time);
                (b.build(), explicit_fee.is_none().then_some(*fee))
            }
            Tx::Approve {
                from,
                spender,
                amount,
                expected_allowance,
                expires_at,
                explicit_fee,
                fee,
                memo,
                created_at_time,
            } => {
                let b = MapBuilder::new()
                    .text("op", "approve")
                    .value("from", account_value(from))
                    .value("spender", account_value(spender))
                    .nat("amt", *amount)
                    .opt_nat("expected_allowance", *expected_allowance)
                    .opt_nat("expires_at", *expires_at)
                    .opt_nat("fee", *explicit_fee);
                let b = with_opt_blob(b, "memo", memo).opt_nat("ts", *created_at_time);
                (b.build(), explicit_fee.is_none().then_some(*fee))
            }
            Tx::Escrow {
                from,
                amount,
                contract_id,
            } => (
                MapBuilder::new()
                    .text("op", "dc_escrow")
                    .value("from", account_value(from))
                    .nat("amt", *amount)
                    .nat("contract", *contract_id)
                    .build(),
                None,
            ),
            Tx::Release {
                contract_id,
                to,
                amount,
                fee,
            } => (
                MapBuilder::new()
                    .text("op", "dc_release")
                    .value("to", account_value(to))
                    .nat("amt", *amount)
                    .nat("fee", *fee)
                    .nat("contract", *contract_id)
                    .build(),
                None,
            ),
            Tx::Refund {
                contract_id,
                to,
                amount,
            } => (
                MapBuilder::new()
                    .text("op", "dc_refund")
                    .value("to", account_value(to))
                    .nat("amt", *amount)
                    .nat("contract", *contract_id)
                    .build(),
                None,
            ),
            Tx::ServiceFee {
                from,
                amount,
                service,
            } => (
                MapBuilder::new()
                    .text("op", "dc_fee")
                    .value("from", account_value(from))
                    .nat("amt", *amount)
                    .text("service", service.clone())
                    .build(),
                None,
            ),
        }
    }
}

/// The full ICRC-3 value of a block given its predecessor's hash.
pub fn block_value(ts: u64, tx: &Tx, phash: Option<[u8; 32]>, treasury: Principal) -> Value {
    let (tx_value, implicit_fee) = tx.to_value();
    let mut b = MapBuilder::new();
    // The marketplace's own block types carry an explicit ICRC-3 `btype`;
    // the standard ICRC-1/2 ones keep the legacy `tx.op` form.
    let btype = match tx {
        Tx::Escrow { .. } => Some("dc_escrow"),
        Tx::Release { .. } => Some("dc_release"),
        Tx::Refund { .. } => Some("dc_refund"),
        Tx::ServiceFee { .. } => Some("dc_fee"),
        _ => None,
    };
    if let Some(t) = btype {
        b = b.text("btype", t);
    }
    if let Some(p) = phash {
        b = b.blob("phash", p.to_vec());
    }
    b = b.nat("ts", ts).value("tx", tx_value);
    if let Some(fee) = implicit_fee {
        b = b.nat("fee", fee);
    }
    if matches!(tx, Tx::Transfer { .. } | Tx::Approve { .. }) {
        b = b.value("fee_col", account_value(&Account::of(treasury)));
    }
    b.build()
}

/// Block types this ledger writes, for `icrc3_supported_block_types`.
pub const SUPPORTED_BLOCK_TYPES: &[(&str, &str)] = &[
    (
        "1burn",
        "https://github.com/dfinity/ICRC-1/blob/main/standards/ICRC-1/README.md",
    ),
    (
        "1mint",
        "https://github.com/dfinity/ICRC-1/blob/main/standards/ICRC-1/README.md",
    ),
    (
        "1xfer",
        "https://github.com/dfinity/ICRC-1/blob/main/standards/ICRC-1/README.md",
    ),
    (
        "2approve",
        "https://github.com/dfinity/ICRC-1/blob/main/standards/ICRC-2/README.md",
    ),
    (
        "2xfer",
        "https://github.com/dfinity/ICRC-1/blob/main/standards/ICRC-2/README.md",
    ),
    ("dc_escrow", "canister/canister/README.md#block-types"),
    ("dc_release", "canister/canister/README.md#block-types"),
    ("dc_refund", "canister/canister/README.md#block-types"),
    ("dc_fee", "canister/canister/README.md#block-types"),
];
