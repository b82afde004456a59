//! `dcctl`: thin command-line front of the ledger client. Parses arguments,
//! calls the library, prints a table or (with `--json`) one JSON object.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use dc_controller::{exit, output::Output, Context};

const AFTER_HELP: &str = "\
Amounts are integers in e9s (1 DCT = 1,000,000,000 e9s). Principals are in the
Internet Computer textual form.

Exit codes: 0 success; 1 the ledger refused the operation (nothing changed);
2 bad usage; 3 the ledger could not be reached; 4 a local problem (identity
file, I/O).

Examples:
  dcctl identity new --out ~/.config/dcctl/identity.pem
  dcctl --ledger http://127.0.0.1:8470 balance
  dcctl transfer --to 2vxsx-fae --amount-e9s 1000000000 --json
  dcctl --ledger 'ic://CANISTER_ID?url=http://127.0.0.1:4943' balance";

/// Decent Cloud command line: identities, tokens and the marketplace.
#[derive(Parser)]
#[command(name = "dcctl", version, about, long_about = None, after_help = AFTER_HELP)]
struct Cli {
    /// Ledger to talk to: the local service (http://127.0.0.1:PORT) or the
    /// canister (ic://CANISTER_ID?url=REPLICA_URL).
    #[arg(long, global = true, env = "DC_LEDGER", default_value = "http://127.0.0.1:8470")]
    ledger: String,
    /// Identity key file (PKCS#8 PEM, as `dfx identity export` writes).
    /// Default: $XDG_CONFIG_HOME/dcctl/identity.pem or ~/.config/dcctl/identity.pem.
    #[arg(long, global = true, env = "DC_IDENTITY")]
    identity: Option<PathBuf>,
    /// Print one JSON object on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create or show the identity this tool signs with.
    #[command(subcommand)]
    Identity(IdentityCmd),
    /// Balance of a principal (yours by default).
    Balance {
        /// Whose balance; defaults to the identity's principal.
        principal: Option<String>,
    },
    /// Send tokens (ICRC-1 transfer; the ledger's fee is added).
    Transfer(TransferArgs),
}

#[derive(Subcommand)]
enum IdentityCmd {
    /// Generate a new Ed25519 key, written 0600; never overwrites a file.
    New {
        /// Where to write the key; defaults to the --identity path.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the principal of the identity.
    Show,
}

#[derive(Args)]
struct TransferArgs {
    /// Recipient principal.
    #[arg(long)]
    to: String,
    /// Amount in e9s.
    #[arg(long)]
    amount_e9s: u64,
    /// Optional memo (at most 32 bytes).
    #[arg(long)]
    memo: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Output::new(cli.json);
    let ctx = Context { ledger_url: cli.ledger, identity_path: cli.identity, out };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return exit::report(&exit::CliError::local(format!("cannot start the runtime: {e}"))),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Identity(IdentityCmd::New { out }) => dc_controller::commands::identity_new(&ctx, out),
            Command::Identity(IdentityCmd::Show) => dc_controller::commands::identity_show(&ctx),
            Command::Balance { principal } => dc_controller::commands::balance(&ctx, principal.as_deref()).await,
            Command::Transfer(t) => dc_controller::commands::transfer(&ctx, &t.to, t.amount_e9s, t.memo).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit::report(&e),
    }
}
