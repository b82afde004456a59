//! The command line, as clap definitions (also used to generate shell
//! completions and the man page), and the dispatch to command code.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::exit::CliError;
use crate::{attest, commands, market, Context};

const AFTER_HELP: &str = "\
Amounts are integers in e9s (1 DCT = 1,000,000,000 e9s). Principals are in the
Internet Computer textual form.

Exit codes: 0 success; 1 the ledger refused the operation (nothing changed);
2 bad usage; 3 the ledger could not be reached; 4 a local problem (identity
file, I/O).

Examples:
  dcctl identity new --out ~/.config/dcctl/identity.pem
  dcctl --ledger http://127.0.0.1:8470 balance
  dcctl offers search --min-vcpus 4 --confidential sev-snp --max-price-e9s-per-hour 200000000
  dcctl rent --best --min-vcpus 4 --region eu-central --hours 24 --json
  dcctl contract show 7
  dcctl --ledger 'ic://CANISTER_ID?url=http://127.0.0.1:4943' balance";

/// Decent Cloud command line: identities, tokens and the marketplace.
#[derive(Parser)]
#[command(name = "dcctl", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Cli {
    /// Ledger to talk to: the local service (http://127.0.0.1:PORT) or the
    /// canister (ic://CANISTER_ID?url=REPLICA_URL).
    #[arg(
        long,
        global = true,
        env = "DC_LEDGER",
        default_value = "http://127.0.0.1:8470"
    )]
    pub ledger: String,
    /// Identity key file (PKCS#8 PEM, as `dfx identity export` writes).
    /// Default: $XDG_CONFIG_HOME/dcctl/identity.pem or ~/.config/dcctl/identity.pem.
    #[arg(long, global = true, env = "DC_IDENTITY")]
    pub identity: Option<PathBuf>,
    /// Print one JSON object on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Subcommand)]
pub enum Command {
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
    /// Allow a spender to transfer from your account (ICRC-2 approve).
    Approve(ApproveArgs),
    /// Register as a provider and show providers.
    #[command(subcommand)]
    Provider(ProviderCmd),
    /// Register or revoke the nodes that serve your offerings.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Publish, list and withdraw your offerings.
    #[command(subcommand)]
    Offering(OfferingCmd),
    /// Find offers that match your requirements.
    #[command(subcommand)]
    Offers(OffersCmd),
    /// Rent an offering: pays price × hours into escrow.
    Rent(RentArgs),
    /// Show and list contracts; set a contract's custom domains.
    #[command(subcommand)]
    Contract(ContractCmd),
    /// Pay for more hours on a contract.
    Extend {
        /// Contract id.
        id: u64,
        /// Hours to add.
        #[arg(long)]
        hours: u32,
    },
    /// End a contract early: time used is released, the rest refunded.
    Cancel {
        /// Contract id.
        id: u64,
    },
    /// A principal's reputation.
    Reputation {
        /// Whose reputation.
        principal: String,
    },
    /// Spend your reputation to lower a contract counterparty's, publicly.
    Rate(RateArgs),
    /// Verify attestation evidence (SEV-SNP, TDX, NVIDIA H100, or a bundle) before trusting a VM.
    #[command(subcommand, after_help = attest::VERIFY_AFTER_HELP)]
    Verify(attest::VerifyCmd),
    /// Predict launch measurements from images or a document of hashes (for auditors).
    #[command(subcommand)]
    Measure(attest::MeasureCmd),
    /// Print shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

/// `dcctl identity …`
#[derive(Subcommand)]
pub enum IdentityCmd {
    /// Generate a new Ed25519 key, written 0600; never overwrites a file.
    New {
        /// Where to write the key; defaults to the --identity path.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the principal of the identity.
    Show,
}

/// `dcctl transfer`
#[derive(Args)]
pub struct TransferArgs {
    /// Recipient principal.
    #[arg(long)]
    pub to: String,
    /// Amount in e9s.
    #[arg(long)]
    pub amount_e9s: u64,
    /// Optional memo (at most 32 bytes).
    #[arg(long)]
    pub memo: Option<String>,
}

/// `dcctl approve`
#[derive(Args)]
pub struct ApproveArgs {
    /// Principal allowed to spend.
    #[arg(long)]
    pub spender: String,
    /// Allowance in e9s (replaces the current one; 0 removes it).
    #[arg(long)]
    pub amount_e9s: u64,
    /// Only approve if the current allowance is exactly this.
    #[arg(long)]
    pub expected_allowance_e9s: Option<u64>,
    /// Expiry, in Unix seconds.
    #[arg(long)]
    pub expires_at_secs: Option<u64>,
}

/// `dcctl provider …`
#[derive(Subcommand)]
pub enum ProviderCmd {
    /// Register the identity as a provider (charges the registration fee).
    Register {
        /// Legal name.
        #[arg(long)]
        name: String,
        /// Jurisdiction (e.g. country of incorporation).
        #[arg(long)]
        jurisdiction: String,
        /// Contact email.
        #[arg(long)]
        email: String,
        /// Website (http or https URL).
        #[arg(long, default_value = "")]
        website: String,
    },
    /// Profile, nodes, offerings, reputation and contracts served.
    Show {
        /// Provider; defaults to the identity's principal.
        principal: Option<String>,
    },
}

/// `dcctl node …`
#[derive(Subcommand)]
pub enum NodeCmd {
    /// Delegate to a node key and register the node with its capabilities.
    Register {
        /// The node's key file (`dcctl identity new --out node.pem`).
        #[arg(long)]
        node_identity: PathBuf,
        /// NODE.toml with the node's capabilities (see the README).
        #[arg(long)]
        file: PathBuf,
        /// How long the delegation is valid, in days.
        #[arg(long, default_value_t = 365)]
        valid_days: u64,
    },
    /// Revoke a node's delegation (permanent).
    Revoke {
        /// Node principal.
        node: String,
    },
    /// Show a node.
    Show {
        /// Node principal.
        node: String,
    },
}

/// `dcctl offering …`
#[derive(Subcommand)]
pub enum OfferingCmd {
    /// Publish an offering described by OFFERING.toml (see the README).
    Add {
        /// The offering file.
        #[arg(long)]
        file: PathBuf,
    },
    /// List a provider's offerings (yours by default).
    List {
        /// Provider principal.
        #[arg(long)]
        provider: Option<String>,
    },
    /// Withdraw an offering. Active contracts are unaffected; contracts not
    /// yet active on it can no longer become active and are refunded at
    /// their provisioning deadline.
    Remove {
        /// Offering id.
        id: u64,
    },
}

/// Requirements shared by `offers search` and `rent --best`.
#[derive(Args, Clone, Default)]
pub struct Filters {
    /// Highest acceptable price, e9s per hour.
    #[arg(long)]
    pub max_price_e9s_per_hour: Option<u64>,
    /// At least this many vCPUs.
    #[arg(long)]
    pub min_vcpus: Option<u32>,
    /// At least this much RAM, GiB.
    #[arg(long)]
    pub min_ram_gib: Option<u32>,
    /// At least this much storage, GiB.
    #[arg(long)]
    pub min_storage_gib: Option<u32>,
    /// At least this much bandwidth, Mbit/s.
    #[arg(long)]
    pub min_bandwidth_mbps: Option<u32>,
    /// GPU model (case-insensitive), e.g. H100.
    #[arg(long)]
    pub gpu: Option<String>,
    /// At least this many GPUs.
    #[arg(long)]
    pub gpus: Option<u32>,
    /// Confidential-computing platform: none, sev-snp or tdx.
    #[arg(long)]
    pub confidential: Option<String>,
    /// Region or two-letter country code.
    #[arg(long)]
    pub region: Option<String>,
    /// Lowest acceptable provider reputation.
    #[arg(long)]
    pub min_reputation: Option<u64>,
}

/// `dcctl offers …`
#[derive(Subcommand)]
pub enum OffersCmd {
    /// Ranked offers: price ascending, then provider reputation descending,
    /// then offering id. Offers whose node is full are left out.
    Search {
        #[command(flatten)]
        filters: Filters,
        /// Contract length the offer must allow, hours.
        #[arg(long)]
        hours: Option<u32>,
        /// Results per page (1..=1000).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Skip this many ranked results.
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
}

/// `dcctl rent`
#[derive(Args)]
pub struct RentArgs {
    /// Offering to rent.
    #[arg(long, conflicts_with = "best", required_unless_present = "best")]
    pub offering: Option<u64>,
    /// Rent the top-ranked offer matching the filters.
    #[arg(long)]
    pub best: bool,
    #[command(flatten)]
    pub filters: Filters,
    /// Contract length, hours.
    #[arg(long)]
    pub hours: u32,
}

/// `dcctl contract …`
#[derive(Subcommand)]
pub enum ContractCmd {
    /// State and money of a contract, the launch measurement a confidential
    /// VM's node published, the binding (SNP HOST_DATA, TDX MRCONFIGID) the
    /// VM's attestation report must carry, and its custom domains.
    Show {
        /// Contract id.
        id: u64,
    },
    /// Set the custom domains your VM answers to through its node's ingress,
    /// and whether it wants a PROXY protocol v2 header.
    #[command(after_help = INGRESS_AFTER_HELP)]
    Ingress {
        /// Contract id (yours, not final).
        id: u64,
        /// A custom domain, lowercase, no trailing dot: `api.example.com`,
        /// or a single-label wildcard `*.apps.example.com`. Public
        /// suffixes (`co.uk`, `*.co.uk`, `*.github.io`) are refused. Repeat
        /// for several (at most 8). The list replaces the contract's; none
        /// clears it.
        #[arg(long = "domain", value_name = "NAME")]
        domains: Vec<String>,
        /// Send a PROXY protocol v2 header (the client's address) to the VM
        /// before the client's bytes. Only if the VM's server expects it.
        #[arg(long)]
        proxy_protocol: bool,
    },
    /// Your contracts, as developer or provider, newest first.
    List {
        /// Whose contracts; defaults to the identity's principal.
        #[arg(long)]
        party: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

const INGRESS_AFTER_HELP: &str = "\
What the names are for: the node's ingress routes each TLS connection to your
VM by the server name in its ClientHello (SNI), and plain HTTP on port 80 by
its Host header. It never terminates TLS: TLS stays end to end, with the
certificate and its key inside your VM, and the provider relays bytes it
cannot read. Your contract always answers to its default name under the
node's domain; these are extra names.

Point each name's DNS at the node (A/AAAA records to its public address).
Traffic arrives only while the contract is active. Get certificates inside
the VM, for example with ACME HTTP-01 (port 80 reaches the VM) or
TLS-ALPN-01.

First come, first served: a name held by another contract that is not
finished is refused, and a name is freed when its contract ends. The ledger
does not check DNS ownership. Register a name before you point DNS at the
node, remove the record when the contract ends, and consider a CAA record
with accounturi (RFC 8657) so that only your ACME account can get
certificates for it. *.example.com does not reserve api.example.com.

Examples:
  dcctl contract ingress 7 --domain api.example.com --domain '*.apps.example.com'
  dcctl contract ingress 7 --domain api.example.com --proxy-protocol --json
  dcctl contract ingress 7            # clears the custom domains";

/// `dcctl rate`
#[derive(Args)]
pub struct RateArgs {
    /// The other party of a contract you share that was active, or (for its
    /// developer) whose provider missed its provisioning deadline; one
    /// cancelled before it was ever active, rejected, or still pending does
    /// not count.
    pub principal: String,
    /// Reputation you spend; the target loses this times the penalty multiplier.
    #[arg(long)]
    pub spend: u64,
    /// Public reason, recorded permanently.
    #[arg(long)]
    pub reason: String,
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let ctx = Context {
        ledger_url: cli.ledger,
        identity_path: cli.identity,
        out: crate::output::Output::new(cli.json),
    };
    match cli.command {
        Command::Identity(IdentityCmd::New { out }) => commands::identity_new(&ctx, out),
        Command::Identity(IdentityCmd::Show) => commands::identity_show(&ctx),
        Command::Balance { principal } => commands::balance(&ctx, principal.as_deref()).await,
        Command::Transfer(t) => commands::transfer(&ctx, &t.to, t.amount_e9s, t.memo).await,
        Command::Approve(a) => market::approve(&ctx, a).await,
        Command::Provider(ProviderCmd::Register {
            name,
            jurisdiction,
            email,
            website,
        }) => market::provider_register(&ctx, name, jurisdiction, email, website).await,
        Command::Provider(ProviderCmd::Show { principal }) => {
            market::provider_show(&ctx, principal.as_deref()).await
        }
        Command::Node(NodeCmd::Register {
            node_identity,
            file,
            valid_days,
        }) => market::node_register(&ctx, &node_identity, &file, valid_days).await,
        Command::Node(NodeCmd::Revoke { node }) => market::node_revoke(&ctx, &node).await,
        Command::Node(NodeCmd::Show { node }) => market::node_show(&ctx, &node).await,
        Command::Offering(OfferingCmd::Add { file }) => market::offering_add(&ctx, &file).await,
        Command::Offering(OfferingCmd::List { provider }) => {
            market::offering_list(&ctx, provider.as_deref()).await
        }
        Command::Offering(OfferingCmd::Remove { id }) => market::offering_remove(&ctx, id).await,
        Command::Offers(OffersCmd::Search {
            filters,
            hours,
            limit,
            offset,
        }) => market::offers_search(&ctx, &filters, hours, limit, offset).await,
        Command::Rent(r) => market::rent(&ctx, r).await,
        Command::Contract(ContractCmd::Show { id }) => market::contract_show(&ctx, id).await,
        Command::Contract(ContractCmd::Ingress {
            id,
            domains,
            proxy_protocol,
        }) => market::contract_ingress(&ctx, id, domains, proxy_protocol).await,
        Command::Contract(ContractCmd::List { party, limit }) => {
            market::contract_list(&ctx, party.as_deref(), limit).await
        }
        Command::Extend { id, hours } => market::extend(&ctx, id, hours).await,
        Command::Cancel { id } => market::cancel(&ctx, id).await,
        Command::Reputation { principal } => market::reputation(&ctx, &principal).await,
        Command::Rate(r) => market::rate(&ctx, r).await,
        Command::Verify(attest::VerifyCmd::Snp(a)) => attest::verify_snp(ctx.out, a).await,
        Command::Verify(attest::VerifyCmd::Tdx(a)) => attest::verify_tdx(ctx.out, a).await,
        Command::Verify(attest::VerifyCmd::Nvidia(a)) => attest::verify_nvidia(ctx.out, a).await,
        Command::Verify(attest::VerifyCmd::Evidence(a)) => attest::verify_evidence(&ctx, a).await,
        Command::Measure(attest::MeasureCmd::Snp(a)) => attest::measure_snp(ctx.out, a),
        Command::Measure(attest::MeasureCmd::Tdx(a)) => attest::measure_tdx(ctx.out, a),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "dcctl", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .map_err(|e| CliError::local(format!("writing the man page: {e}")))
        }
    }
}
