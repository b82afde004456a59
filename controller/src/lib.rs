//! The library behind `dcctl`: command implementations, output formatting
//! and exit codes. The binary only parses arguments.

pub mod attest;
pub mod cli;
pub mod commands;
pub mod exit;
pub mod files;
pub mod market;
pub mod output;

use std::path::PathBuf;

use dc_identity::Identity;
use dc_ledger_client::LedgerClient;

use crate::exit::CliError;
use crate::output::Output;

/// What every command needs: where the ledger is, who we are, how to print.
pub struct Context {
    pub ledger_url: String,
    pub identity_path: Option<PathBuf>,
    pub out: Output,
}

/// `$XDG_CONFIG_HOME/dcctl/identity.pem`, else `~/.config/dcctl/identity.pem`.
pub fn default_identity_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("dcctl").join("identity.pem")
}

/// Parses a principal given on the command line; `what` names the argument.
pub fn parse_principal(what: &str, text: &str) -> Result<candid::Principal, CliError> {
    candid::Principal::from_text(text)
        .map_err(|e| CliError::usage(format!("{what} {text:?} is not a principal: {e}")))
}

impl Context {
    /// The principal given as `what`, or the identity's own when none was given.
    pub fn principal_or_self(
        &self,
        what: &str,
        given: Option<&str>,
    ) -> Result<candid::Principal, CliError> {
        match given {
            Some(text) => parse_principal(what, text),
            None => Ok(self.load_identity()?.principal()),
        }
    }

    /// The identity file in use.
    pub fn identity_file(&self) -> PathBuf {
        self.identity_path
            .clone()
            .unwrap_or_else(default_identity_path)
    }

    /// Loads the identity, with a hint when it does not exist.
    pub fn load_identity(&self) -> Result<Identity, CliError> {
        let path = self.identity_file();
        if !path.exists() {
            return Err(CliError::local(format!(
                "no identity at {}; create one with `dcctl identity new --out {}`",
                path.display(),
                path.display()
            )));
        }
        Identity::load(&path).map_err(|e| CliError::local(format!("{}: {e}", path.display())))
    }

    /// A client acting as the identity.
    pub async fn signed_client(&self) -> Result<LedgerClient, CliError> {
        let id = self.load_identity()?;
        LedgerClient::connect(&self.ledger_url, Some(id))
            .await
            .map_err(CliError::from)
    }

    /// A client without identity, for reads (uses the identity if one exists).
    pub async fn client(&self) -> Result<LedgerClient, CliError> {
        let id = if self.identity_file().exists() {
            Some(self.load_identity()?)
        } else {
            None
        };
        LedgerClient::connect(&self.ledger_url, id)
            .await
            .map_err(CliError::from)
    }
}
