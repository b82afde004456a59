//! The error every non-ICRC operation returns. ICRC methods keep the standard's
//! own error types (see [`crate::types`]).

use candid::{CandidType, Principal};
use serde::{Deserialize, Serialize};

/// Why the ledger refused an operation. A refused operation changes nothing.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("{what} {id} not found")]
    NotFound { what: String, id: String },
    #[error("caller {caller} may not {action}")]
    Unauthorized { caller: Principal, action: String },
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("insufficient funds: need {needed_e9s} e9s, balance is {balance_e9s} e9s")]
    InsufficientFunds { needed_e9s: u64, balance_e9s: u64 },
    #[error("node {node} has no free capacity for offering {offering_id}")]
    CapacityExhausted { node: Principal, offering_id: u64 },
    #[error("contract {contract_id} is {state}; cannot {action}")]
    IllegalTransition {
        contract_id: u64,
        state: String,
        action: String,
    },
    #[error("{0} is already registered")]
    AlreadyRegistered(String),
    #[error("invalid delegation: {0}")]
    Delegation(String),
    #[error("node {node} already checked in for block {block_height}")]
    AlreadyCheckedIn { node: Principal, block_height: u64 },
    #[error("stale check-in: expected block {expected_height}, got {got_height} (or a different previous block hash)")]
    StaleCheckIn {
        expected_height: u64,
        got_height: u64,
    },
    #[error("insufficient reputation: have {have}, need {need}")]
    InsufficientReputation { have: u64, need: u64 },
    #[error("{sender} and {target} share no contract that was active or whose provider missed its provisioning deadline")]
    NoSharedContract {
        sender: Principal,
        target: Principal,
    },
    #[error("arithmetic overflow in {0}")]
    Overflow(String),
}

impl LedgerError {
    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Self {
        LedgerError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn not_found(what: &str, id: impl ToString) -> Self {
        LedgerError::NotFound {
            what: what.into(),
            id: id.to_string(),
        }
    }

    pub(crate) fn unauthorized(caller: Principal, action: &str) -> Self {
        LedgerError::Unauthorized {
            caller,
            action: action.into(),
        }
    }
}

/// Result of every non-ICRC operation.
pub type LedgerResult<T> = Result<T, LedgerError>;
