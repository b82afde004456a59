//! `dc-appliance`: thin command line over the library.
//!
//! Exit codes: 0 success; 1 the ledger refused; 2 bad usage or invalid
//! configuration (the message names the field); 3 ledger unreachable; 4 local
//! problem (files, keys, inventory, journal); 5 no usable VMM backend or a VMM failure.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dc_appliance::{
    agent, config::Config, inventory, node, resources::EffectiveLimits, vfio, Agent, AgentError,
    Backends, NodeError, ResourceManager,
};
use dc_identity::Identity;
use dc_ledger_client::{ClientError, LedgerClient};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "dc-appliance",
    version,
    about = "Decent Cloud node agent: claims the node, checks in, and turns rented contracts into VMs",
    long_about = "Decent Cloud node agent.\n\nFirst `run` generates the node key and a one-time claim token in the data directory \
(shown in the log). The provider then runs `claim` with that token and its identity; from then on `run` checks in \
with the ledger, accepts contracts that fit the configured limits, launches their VMs and reports them active once \
the readiness probe passes.\n\n\
Backends: `backend = qemu | cloud-hypervisor | auto` and `accel = kvm | tcg | auto` in the configuration. With \
`auto`, each VM runs on Cloud Hypervisor when its binary is found (`cloud_hypervisor_binary` or PATH), KVM is \
usable and the VM is neither TDX nor on user-mode networking; on QEMU otherwise (TCG when KVM is absent or \
`accel = tcg`). Each VM gets a qcow2 overlay over `guest.base_disk` in `data_dir/vms/c<contract>/` sized to the contract's \
storage, and one host port from `network.port_min..=port_max` forwarded to `network.guest_port`: by the VMM's \
user-mode networking (`network.mode = \"user\"`), or in `bridge` mode by an nftables DNAT forward to the VM's \
stable private address on an isolated tap of `network.bridge` (egress NAT, no other inbound path). \
`network.public_host` (default `host_addr`) and that port are the contract's endpoint. VMMs run detached: stopping or killing `run` leaves VMs running, and the \
next `run` re-adopts them from the journal (a VM whose VMM died meanwhile is reported in the log and journal and relaunched over its own disk, same endpoint; \
so is one whose VMM exits while the agent runs). Install it with the image's systemd unit (KillMode=process).\n\n\
Confidential offerings (SEV-SNP, TDX) run on QEMU with KVM through `guest.firmware` (OVMF with kernel hashes, \
or a TDVF) and direct kernel boot: the contract is bound into the launch (SNP HOST_DATA, TDX MRCONFIGID), debug \
is never allowed, and the measurement predicted from the exact files, command line and vCPU shape is reported \
with the contract (evidence hash: SHA-256 of the journaled launch manifest). A confidential contract the node \
cannot plan (no firmware, no KVM) is rejected, never run as a regular VM. GPUs are bound to vfio-pci a whole \
IOMMU group at a time and given back to their drivers after the VM is deleted.\n\n\
Exit codes: 0 success, 1 the ledger refused, 2 bad usage or invalid configuration, 3 ledger unreachable, \
4 local problem (files, keys, journal), 5 no usable VMM backend or a VMM failure."
)]
struct Cli {
    /// Print one JSON object on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (waits to be claimed first); SIGTERM/SIGINT stop it, VMs keep running.
    Run {
        /// The appliance's TOML configuration.
        #[arg(long, env = "DC_APPLIANCE_CONFIG")]
        config: PathBuf,
    },
    /// Claim this node for a provider with the one-time token.
    Claim {
        #[arg(long, env = "DC_APPLIANCE_CONFIG")]
        config: PathBuf,
        /// The token from `data_dir/claim-token` or the first start's log.
        #[arg(long)]
        token: String,
        /// The provider's identity (PKCS#8 PEM); it signs the node's delegation.
        #[arg(long)]
        provider_identity: PathBuf,
    },
    /// Print the measured host and what the node advertises.
    Inventory {
        #[arg(long, env = "DC_APPLIANCE_CONFIG")]
        config: PathBuf,
    },
    /// Validate the configuration file and exit.
    CheckConfig {
        #[arg(long, env = "DC_APPLIANCE_CONFIG")]
        config: PathBuf,
    },
}

/// An error with the exit code it means.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl std::fmt::Display) -> Self {
        Failure {
            code,
            message: message.to_string(),
        }
    }
}

fn client_failure(e: ClientError) -> Failure {
    let code = match e {
        ClientError::Unreachable { .. } => 3,
        ClientError::BadUrl { .. } => 2,
        _ => 1,
    };
    Failure::new(code, e)
}

impl From<NodeError> for Failure {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Ledger(c) => client_failure(c),
            NodeError::WrongToken | NodeError::AlreadyClaimed { .. } | NodeError::NoToken => {
                Failure::new(1, e)
            }
            other => Failure::new(4, other),
        }
    }
}

fn load_config(path: &std::path::Path) -> Result<Config, Failure> {
    Config::load(path).map_err(|e| Failure::new(2, e))
}

/// What [`measure`] found.
struct Measured {
    inventory: inventory::Inventory,
    limits: EffectiveLimits,
    /// GPU IOMMU groups left out of the limits, with the reason.
    gpu_groups_not_offered: Vec<(String, String)>,
}

/// The host and the limits tenant VMs share; GPU groups that could never be
/// passed through (see `vfio::plan_group_with`) are left out, each with a
/// warning.
fn measure(config: &Config) -> Result<Measured, Failure> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| Failure::new(4, format!("{}: {e}", config.data_dir.display())))?;
    let inv =
        inventory::measure(&config.host_root, &config.data_dir).map_err(|e| Failure::new(4, e))?;
    let mut limits = EffectiveLimits::resolve(&config.limits, &inv);
    let dropped = limits.retain_passable_gpu_groups(|group| {
        vfio::plan_group_with(&vfio::HostSysfs, &config.host_root, group)
            .map(drop)
            .map_err(|e| e.to_string())
    });
    for (group, why) in &dropped {
        tracing::warn!(group, reason = %why, "GPU IOMMU group not offered: it cannot be passed through");
    }
    Ok(Measured {
        inventory: inv,
        limits,
        gpu_groups_not_offered: dropped,
    })
}

fn now_ns() -> u64 {
    (agent::system_clock())()
}

async fn main_inner(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::CheckConfig { config } => {
            let c = load_config(&config)?;
            if cli.json {
                println!("{}", json!({ "ok": true, "config": c }));
            } else {
                println!("{}: ok", config.display());
            }
            Ok(())
        }
        Command::Inventory { config } => {
            let c = load_config(&config)?;
            let Measured {
                inventory: inv,
                limits,
                gpu_groups_not_offered: not_offered,
            } = measure(&c)?;
            let caps = inv.capabilities(&c, &limits);
            if cli.json {
                let not_offered: Vec<_> = not_offered
                    .iter()
                    .map(|(group, reason)| json!({ "group": group, "reason": reason }))
                    .collect();
                println!(
                    "{}",
                    json!({
                        "inventory": inv,
                        "limits": limits,
                        "capabilities": caps,
                        "gpu_groups_not_offered": not_offered,
                    })
                );
            } else {
                println!("cpu: {} ({} vCPUs)", inv.cpu_model, inv.vcpus);
                println!("memory: {} MiB", inv.memory_mib);
                println!(
                    "storage: {} GiB free in {}",
                    inv.storage_gib,
                    c.data_dir.display()
                );
                println!("confidential: {}", inv.confidential.as_str());
                for g in &inv.gpus {
                    println!(
                        "gpu: {} {} iommu group {} ({})",
                        g.pci_address,
                        g.model,
                        g.iommu_group.as_deref().unwrap_or("none"),
                        g.group_devices.join(", ")
                    );
                }
                for (group, reason) in &not_offered {
                    println!("gpu group {group} not offered: {reason}");
                }
                println!(
                    "limits: {} vCPUs, {} MiB, {} GiB, {} GPU groups",
                    limits.vcpus,
                    limits.memory_mib,
                    limits.storage_gib,
                    limits.gpu_groups.len()
                );
            }
            Ok(())
        }
        Command::Claim {
            config,
            token,
            provider_identity,
        } => {
            let c = load_config(&config)?;
            let provider = Identity::load(&provider_identity)
                .map_err(|e| Failure::new(4, format!("{}: {e}", provider_identity.display())))?;
            let Measured {
                inventory: inv,
                limits,
                ..
            } = measure(&c)?;
            let client = LedgerClient::connect(&c.ledger_url, Some(provider))
                .await
                .map_err(client_failure)?;
            let record =
                node::claim(&c, &token, &client, inv.capabilities(&c, &limits), now_ns()).await?;
            if cli.json {
                println!(
                    "{}",
                    json!({
                        "node": record.node,
                        "provider": record.provider,
                        "expires_at_ns": record.delegation_expires_at_ns,
                    })
                );
            } else {
                println!(
                    "claimed node {} for provider {}",
                    record.node, record.provider
                );
            }
            Ok(())
        }
        Command::Run { config } => {
            let c = load_config(&config)?;
            let status = node::init(&c, &mut rand_core::OsRng)?;
            if status.claim.is_none() {
                // Wait on the claim, which another process writes.
                eprintln!(
                    "dc-appliance: node {} is not claimed; claim token: {}",
                    status.identity.principal(),
                    status.claim_token.as_deref().unwrap_or("")
                );
                loop {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => return Ok(()),
                        _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                    }
                    if node::read_claim(&c)?.is_some() {
                        break;
                    }
                }
            }
            let backends = Backends::detect(&c).map_err(|e| Failure::new(5, e))?;
            tracing::info!(
                qemu = backends.qemu.is_some(),
                cloud_hypervisor = backends.cloud_hypervisor.is_some(),
                kvm = backends.kvm,
                backend = ?c.backend,
                accel = ?c.accel,
                "VMM backends"
            );
            let limits = measure(&c)?.limits;
            let client = LedgerClient::connect(&c.ledger_url, Some(status.identity))
                .await
                .map_err(client_failure)?;
            let probe = agent::probe_from_config(&c);
            let mut agent = Agent::start(
                c,
                backends,
                client,
                probe,
                ResourceManager::new(limits),
                agent::system_clock(),
            )
            .map_err(agent_failure)?;
            agent.run(shutdown_signal()).await.map_err(agent_failure)
        }
    }
}

fn agent_failure(e: AgentError) -> Failure {
    match e {
        AgentError::Ledger(c) => client_failure(c),
        AgentError::Vmm(v) => Failure::new(5, v),
        other => Failure::new(4, other),
    }
}

/// SIGINT or SIGTERM: the agent stops, its VMs keep running.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dc-appliance: starting the runtime: {e}");
            return ExitCode::from(4);
        }
    };
    match runtime.block_on(main_inner(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("dc-appliance: {}", f.message.replace('\n', " "));
            ExitCode::from(f.code)
        }
    }
}
