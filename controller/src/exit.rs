//! Exit codes and the one-line error report.

use std::process::ExitCode;

use dc_ledger_client::ClientError;

/// The ledger refused the operation; nothing changed.
pub const REFUSED: u8 = 1;
/// Bad usage (clap uses 2 too).
pub const USAGE: u8 = 2;
/// The ledger could not be reached or answered garbage.
pub const UNREACHABLE: u8 = 3;
/// A local problem: identity file, I/O.
pub const LOCAL: u8 = 4;

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    /// A local problem.
    pub fn local(message: impl Into<String>) -> Self {
        CliError {
            code: LOCAL,
            message: message.into(),
        }
    }

    /// Bad usage.
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: USAGE,
            message: message.into(),
        }
    }

    /// A refusal.
    pub fn refused(message: impl Into<String>) -> Self {
        CliError {
            code: REFUSED,
            message: message.into(),
        }
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        let code = match &e {
            ClientError::BadUrl { .. } => USAGE,
            ClientError::NoIdentity(_) => LOCAL,
            ClientError::Unreachable { .. }
            | ClientError::Decode { .. }
            | ClientError::Agent(_) => UNREACHABLE,
            ClientError::Rejected { status, .. } if *status >= 500 => UNREACHABLE,
            ClientError::Rejected { .. } | ClientError::Ledger(_) | ClientError::Transfer(_) => {
                REFUSED
            }
        };
        CliError {
            code,
            message: e.to_string(),
        }
    }
}

/// Prints the one-line reason on stderr and returns the exit code.
pub fn report(e: &CliError) -> ExitCode {
    let line = e.message.replace('\n', " ");
    eprintln!("dcctl: {line}");
    ExitCode::from(e.code)
}
