//! The genesis file: initial balances, the treasury and parameters.
//!
//! ```toml
//! treasury = "2vxsx-fae"             # principal of the DAO treasury (required)
//!
//! [params]                           # every key optional; defaults from the whitepaper
//! transfer_fee_e9s = 10000
//! provider_registration_fee_e9s = 5000000000
//! block_interval_secs = 600
//! initial_block_reward_e9s = 50000000000
//! halving_interval_blocks = 210000
//! escrow_release_fee_bps = 200
//! release_reputation_bps = 100
//! rating_penalty_multiplier = 2
//! provisioning_timeout_secs = 3600
//! missed_deadline_penalty_bps = 1000
//!
//! [[balances]]
//! principal = "..."
//! amount_e9s = 1000000000000
//!
//! [[reputations]]                    # optional starting reputation
//! principal = "..."
//! reputation = 1000
//! ```

use std::path::Path;

use candid::Principal;
use dc_ledger_core::{Account, Genesis, Params};
use serde::Deserialize;

/// Why a genesis file was refused.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {field}: {reason}")]
    Invalid {
        path: String,
        field: String,
        reason: String,
    },
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct GenesisFile {
    treasury: String,
    #[serde(default)]
    params: ParamsFile,
    #[serde(default)]
    balances: Vec<BalanceEntry>,
    #[serde(default)]
    reputations: Vec<ReputationEntry>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct ParamsFile {
    transfer_fee_e9s: Option<u64>,
    provider_registration_fee_e9s: Option<u64>,
    block_interval_secs: Option<u64>,
    initial_block_reward_e9s: Option<u64>,
    halving_interval_blocks: Option<u64>,
    escrow_release_fee_bps: Option<u64>,
    release_reputation_bps: Option<u64>,
    rating_penalty_multiplier: Option<u64>,
    provisioning_timeout_secs: Option<u64>,
    missed_deadline_penalty_bps: Option<u64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct BalanceEntry {
    principal: String,
    amount_e9s: u64,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ReputationEntry {
    principal: String,
    reputation: u64,
}

/// The minting account of the local ledger. Nobody holds its key: tokens are
/// created only by genesis and block rewards.
pub fn local_minting_account() -> Principal {
    Principal::management_canister()
}

/// Parses a genesis file's text. `path` only labels errors.
pub fn parse(path: &str, text: &str, genesis_time_ns: u64) -> Result<Genesis, GenesisError> {
    let file: GenesisFile = toml::from_str(text).map_err(|e| GenesisError::Parse {
        path: path.into(),
        message: e.to_string(),
    })?;
    let invalid = |field: &str, reason: String| GenesisError::Invalid {
        path: path.into(),
        field: field.into(),
        reason,
    };
    let principal = |field: &str, text: &str| {
        Principal::from_text(text)
            .map_err(|e| invalid(field, format!("{text:?} is not a principal: {e}")))
    };
    let treasury = principal("treasury", &file.treasury)?;
    let mut params = Params::with_treasury(treasury, local_minting_account());
    let p = file.params;
    let secs = |field: &str, s: u64| {
        s.checked_mul(1_000_000_000)
            .ok_or_else(|| invalid(field, "too large".into()))
    };
    if let Some(v) = p.transfer_fee_e9s {
        params.transfer_fee_e9s = v;
    }
    if let Some(v) = p.provider_registration_fee_e9s {
        params.provider_registration_fee_e9s = v;
    }
    if let Some(v) = p.block_interval_secs {
        if v == 0 {
            return Err(invalid(
                "params.block_interval_secs",
                "must be at least 1".into(),
            ));
        }
        params.block_interval_ns = secs("params.block_interval_secs", v)?;
    }
    if let Some(v) = p.initial_block_reward_e9s {
        params.initial_block_reward_e9s = v;
    }
    if let Some(v) = p.halving_interval_blocks {
        if v == 0 {
            return Err(invalid(
                "params.halving_interval_blocks",
                "must be at least 1".into(),
            ));
        }
        params.halving_interval_blocks = v;
    }
    if let Some(v) = p.escrow_release_fee_bps {
        if v > 10_000 {
            return Err(invalid(
                "params.escrow_release_fee_bps",
                format!("{v} exceeds 10000 (100%)"),
            ));
        }
        params.escrow_release_fee_bps = v;
    }
    if let Some(v) = p.release_reputation_bps {
        params.release_reputation_bps = v;
    }
    if let Some(v) = p.rating_penalty_multiplier {
        params.rating_penalty_multiplier = v;
    }
    if let Some(v) = p.provisioning_timeout_secs {
        params.provisioning_timeout_ns = secs("params.provisioning_timeout_secs", v)?;
    }
    if let Some(v) = p.missed_deadline_penalty_bps {
        params.missed_deadline_penalty_bps = v;
    }
    let mut balances = Vec::new();
    let mut total: u64 = 0;
    for (i, b) in file.balances.iter().enumerate() {
        let field = format!("balances[{i}]");
        let owner = principal(&field, &b.principal)?;
        total = total
            .checked_add(b.amount_e9s)
            .ok_or_else(|| invalid(&field, "total genesis supply overflows".into()))?;
        balances.push((Account::of(owner), b.amount_e9s));
    }
    let mut reputations = Vec::new();
    for (i, r) in file.reputations.iter().enumerate() {
        reputations.push((
            principal(&format!("reputations[{i}]"), &r.principal)?,
            r.reputation,
        ));
    }
    Ok(Genesis {
        params,
        balances,
        reputations,
        time_ns: genesis_time_ns,
    })
}

/// Reads and parses a genesis file.
pub fn load(path: &Path, genesis_time_ns: u64) -> Result<Genesis, GenesisError> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| GenesisError::Read {
        path: label.clone(),
        source,
    })?;
    parse(&label, &text, genesis_time_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_bad_fields() {
        let ok = r#"
treasury = "2vxsx-fae"
[params]
block_interval_secs = 5
[[balances]]
principal = "aaaaa-aa"
amount_e9s = 42
"#;
        let g = parse("g.toml", ok, 7).unwrap();
        assert_eq!(g.params.block_interval_ns, 5_000_000_000);
        assert_eq!(g.balances.len(), 1);
        assert_eq!(g.time_ns, 7);
        let bad = ok.replace("aaaaa-aa", "not a principal");
        assert!(parse("g.toml", &bad, 0)
            .unwrap_err()
            .to_string()
            .contains("balances[0]"));
        let unknown = format!("{ok}\nsurprise = 1\n");
        assert!(parse("g.toml", &unknown, 0).is_err());
        let zero = ok.replace("block_interval_secs = 5", "block_interval_secs = 0");
        assert!(parse("g.toml", &zero, 0)
            .unwrap_err()
            .to_string()
            .contains("block_interval_secs"));
    }
}
