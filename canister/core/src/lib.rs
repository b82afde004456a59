//! The Decent Cloud ledger as pure logic.
//!
//! Token DCT (ICRC-1, ICRC-2, ICRC-3 block log), providers, nodes, offerings
//! and matching, contracts with escrow and the custom domains of their VMs,
//! reputation, and block rewards with node check-ins. The caller and the time
//! are parameters of every operation; there is no I/O, so the same core runs
//! in the canister, in the local service `dc-ledger`, and in tests. A refused
//! operation changes nothing.

pub mod blocks;
pub mod contracts;
pub mod dispatch;
pub mod error;
pub mod ingress;
pub mod ledger;
pub mod market;
pub mod rewards;
pub mod snapshot;
pub mod types;

pub use error::{LedgerError, LedgerResult};
pub use ingress::{
    is_public_suffix, validate_domain, validate_domains, wildcard_covers_public_suffixes,
    DomainError, MAX_INGRESS_DOMAINS,
};
pub use ledger::{Genesis, Ledger};
pub use rewards::{block_reward, check_in_message, scheduled_supply};
pub use types::*;
