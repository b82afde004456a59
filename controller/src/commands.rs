//! Command implementations.

use std::path::PathBuf;

use dc_identity::Identity;
use dc_ledger_core::Account;
use serde_json::json;

use crate::exit::CliError;
use crate::output::{format_dct, object};
use crate::{parse_principal, Context};

/// `dcctl identity new [--out FILE]`
pub fn identity_new(ctx: &Context, out: Option<PathBuf>) -> Result<(), CliError> {
    let path = out.unwrap_or_else(|| ctx.identity_file());
    let id = Identity::create_file(&path)
        .map_err(|e| CliError::local(format!("{}: {e}", path.display())))?;
    let principal = id.principal().to_text();
    ctx.out.print(
        object([
            ("principal", json!(principal)),
            ("path", json!(path.display().to_string())),
        ]),
        || {
            format!(
                "created {} (mode 0600)\nprincipal: {principal}",
                path.display()
            )
        },
    );
    Ok(())
}

/// `dcctl identity show`
pub fn identity_show(ctx: &Context) -> Result<(), CliError> {
    let id = ctx.load_identity()?;
    let principal = id.principal().to_text();
    let path = ctx.identity_file().display().to_string();
    ctx.out.print(
        object([("principal", json!(principal)), ("path", json!(path))]),
        || principal.clone(),
    );
    Ok(())
}

/// `dcctl balance [PRINCIPAL]`
pub async fn balance(ctx: &Context, who: Option<&str>) -> Result<(), CliError> {
    let principal = ctx.principal_or_self("principal", who)?;
    let client = ctx.client().await?;
    let balance = client.balance_of(principal).await?;
    ctx.out.print(
        object([
            ("principal", json!(principal.to_text())),
            ("balance_e9s", json!(balance)),
        ]),
        || format!("{principal}: {} ({balance} e9s)", format_dct(balance)),
    );
    Ok(())
}

/// `dcctl transfer --to PRINCIPAL --amount-e9s N [--memo TEXT]`
pub async fn transfer(
    ctx: &Context,
    to: &str,
    amount_e9s: u64,
    memo: Option<String>,
) -> Result<(), CliError> {
    let to = parse_principal("--to", to)?;
    if amount_e9s == 0 {
        return Err(CliError::usage("--amount-e9s must be positive"));
    }
    let memo = memo.map(String::into_bytes);
    if memo.as_ref().is_some_and(|m| m.len() > 32) {
        return Err(CliError::usage("--memo is longer than 32 bytes"));
    }
    let client = ctx.signed_client().await?;
    let block = client.transfer(Account::of(to), amount_e9s, memo).await?;
    ctx.out.print(
        object([
            ("block", json!(block)),
            ("to", json!(to.to_text())),
            ("amount_e9s", json!(amount_e9s)),
        ]),
        || format!("sent {} to {to} in block {block}", format_dct(amount_e9s)),
    );
    Ok(())
}
