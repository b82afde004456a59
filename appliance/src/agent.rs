//! The node agent: one owner of the VM state, driven by the ledger.
//!
//! [`Agent`] owns the journal, the VM records and the resource accounting; nothing
//! else mutates them. Each [`Agent::tick`] lists the contracts addressed to this
//! node, turns them into typed [`Action`]s with the pure [`plan`] function, and
//! executes those actions one by one (journaling every step before acting on
//! the next). Check-ins happen every `check_in_interval` from [`Agent::run`].
//!
//! Lifecycle of one contract on this node:
//!
//! ```text
//! Requested ──fits──▶ reserve, choose backend (choose_backend), journal Provisioning,
//!                     accept, start_provisioning, (bridge: tap + forward), launch
//!                     (the backend makes the qcow2 overlay, sized to the
//!                     contract's storage), journal Provisioning+handle; then
//!                     one readiness check per pass until ready: report_active,
//!                     journal Active (or, past vm_boot_timeout_secs, tear down)
//!           ──does not fit──▶ reject_contract (never active)
//! Active / Provisioning record, contract final (cancelled, expired, missed)
//!                 ──▶ journal Releasing, delete VM, wipe run dir, release, journal Released
//! ```
//!
//! On start ([`Agent::start`]) the journal is replayed and every VM that holds
//! resources is adopted by its handle, through the backend the handle names
//! (same pid, never relaunched). A VM whose VMM died while the agent was down
//! (a host reboot, a crash), active or provisioning with its handle journaled,
//! is reported (a WARN line "VM died while the agent was down" and a
//! journaled note) and relaunched from its journaled spec over its existing
//! disk, same endpoint port, with its new handle journaled; its run directory
//! (the tenant's disk) is never wiped. (A provisioning one may be active on
//! the ledger already, its `report_active` reply lost: the next pass marks it
//! active, resumes it, or tears it down, as the ledger says.) A VMM that is
//! alive but does not answer is kept. A provisioning record without a handle
//! (killed during launch): any VMM still running for its run directory
//! (found by its command line) is killed first, resources stay reserved
//! until it is dead; then the record becomes `Retry` and the next pass
//! provisions the contract again if the ledger still wants it. What cannot finish now (a VMM that
//! survives SIGKILL, a teardown through a backend not linked) is logged, kept
//! with its resources, and retried at the start of every [`Agent::tick`].
//!
//! While the agent runs, an ACTIVE VM whose VMM exits (guest power-off, VMM
//! crash, a kill) is relaunched over its disk the same way, noted in its
//! record ("VMM exited while the agent was running"). A launch never blocks
//! the loop while the guest boots: each pass probes it once, and passes come
//! every 250 ms while a guest boots.
//!
//! Networking: `user` mode forwards one host port with the VMM's user-mode
//! stack. `bridge` mode ([`dc_tenant_net`]) sets up the bridge and nftables
//! table at start, gives each VM a stable private address (journaled in
//! [`VmNet`], so a restart or a host reboot puts the tap and the DNAT
//! forward back exactly), a persistent isolated tap, a kernel `ip=` argument
//! for its static address, and forwards the endpoint's host port to
//! `network.guest_port`; teardown removes the forward before the address can
//! be given to another VM.
//!
//! Ledger errors: only a refusal (the ledger answered no) fails or tears down;
//! a transport error (unreachable, undecodable reply) is retried on the next
//! pass from the contract's real state, and a `report_active` whose reply was
//! lost is reconciled when the ledger shows the contract active.
//!
//! Confidential offerings (SEV-SNP, TDX) are launched on QEMU through the
//! firmware in `guest.firmware` with direct kernel boot: before the launch
//! [`crate::confidential::plan`] binds the contract into it (SNP HOST_DATA,
//! TDX MRCONFIGID = the contract binding of `dc_attestation_common`), refuses
//! a debug policy and predicts the launch measurement from the very files,
//! command line and vCPU shape the VMM gets; the resulting launch manifest
//! (`dc-launch/v1`) is journaled with the VM. The contract is reported active
//! with the predicted measurement (SNP MEASUREMENT; TDX MRTD, RTMR1 and RTMR2)
//! and, as its
//! evidence hash, SHA-256 of the manifest's canonical JSON, so a developer
//! can check a report from the VM against the ledger before using it.
//! Regular VMs have no evidence: their hash is SHA-256 of the ASCII marker
//! [`NO_EVIDENCE_MARKER`] ([`no_evidence_hash`]), which anyone can recompute.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dc_identity::Principal;
use dc_ledger_client::{ClientError, LedgerClient};
use dc_ledger_core::{Contract, ContractState, LedgerError};
use dc_vmm::{Accel, Boot, Disk, Network, PortForward, VfioDevice, VmSpec, VmmError};
use sha2::{Digest, Sha256};

use crate::backend::{choose_backend, BackendChoice, Backends};
use crate::confidential::{GuestArtifacts, LaunchManifest, LaunchPlan, LaunchRequest, Platform};
use crate::config::{Config, NetworkMode, ProbeKind};
use crate::journal::{Journal, JournalError, VfioBinding, VmNet, VmRecord, VmRecordState};
use crate::resources::{Reservation, ResourceManager, ResourceRequest};
use crate::vfio::Sysfs;
use dc_tenant_net::{AddressTable, Forward, TenantNetwork};

/// What a regular (non-confidential) VM's evidence hash is computed from.
pub const NO_EVIDENCE_MARKER: &[u8] = b"dc-evidence/none";

/// SHA-256 of [`NO_EVIDENCE_MARKER`]: the evidence hash reported for VMs without attestation.
pub fn no_evidence_hash() -> [u8; 32] {
    Sha256::digest(NO_EVIDENCE_MARKER).into()
}

/// Current time in nanoseconds since the epoch (a parameter of the agent).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    })
}

/// Decides that a launched guest is ready to be reported active.
pub trait ReadinessProbe: Send + Sync {
    /// One short check (a connect, a request, a file read). `target` is where
    /// the guest's endpoint port answers from the host: the forwarded host
    /// port in user mode, the VM's private address in bridge mode.
    fn is_ready(&self, target: Option<SocketAddr>, spec: &VmSpec) -> bool;
}

/// Where the host reaches the guest's endpoint port: the VM's private
/// address in bridge mode, else the first user-mode forward.
fn probe_target(spec: &VmSpec, net: Option<&VmNet>) -> Option<SocketAddr> {
    if let Some(n) = net {
        return Some(SocketAddr::new(IpAddr::V4(n.vm_addr), n.forward.guest_port));
    }
    match &spec.network {
        Network::User { forwards } => forwards
            .first()
            .map(|f| SocketAddr::new(f.host_addr, f.host_port)),
        _ => None,
    }
}

/// Ready when a TCP connection to the first forwarded host port succeeds and
/// stays open for 300 ms. QEMU's user networking accepts every connection on
/// a forwarded port and closes it only when the guest refuses, so a bare
/// connect would be ready before the guest is.
pub struct TcpProbe;

impl ReadinessProbe for TcpProbe {
    fn is_ready(&self, target: Option<SocketAddr>, _spec: &VmSpec) -> bool {
        let Some(addr) = target else {
            return false;
        };
        let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            return false;
        };
        if stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .is_err()
        {
            return false;
        }
        let mut byte = [0u8; 1];
        match stream.peek(&mut byte) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }
}

/// Ready when `GET /` on the first forwarded host port is answered with an
/// HTTP status line (any status: the guest's web server is up).
pub struct HttpProbe;

impl ReadinessProbe for HttpProbe {
    fn is_ready(&self, target: Option<SocketAddr>, _spec: &VmSpec) -> bool {
        use std::io::{Read, Write};
        let Some(addr) = target else {
            return false;
        };
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let request = format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut head = [0u8; 5];
        stream.read_exact(&mut head).is_ok() && &head == b"HTTP/"
    }
}

/// Ready when the serial log contains a marker (e.g. `login:`).
pub struct SerialProbe {
    pub marker: String,
}

impl ReadinessProbe for SerialProbe {
    fn is_ready(&self, _target: Option<SocketAddr>, spec: &VmSpec) -> bool {
        // The tail only: a log can be large, and the marker is recent.
        dc_vmm::read_log_tail(&spec.serial_log(), 1 << 20)
            .map(|b| String::from_utf8_lossy(&b).contains(&self.marker))
            .unwrap_or(false)
    }
}

/// The probe the configuration asks for.
pub fn probe_from_config(config: &Config) -> Arc<dyn ReadinessProbe> {
    match config.readiness.probe {
        ProbeKind::Tcp => Arc::new(TcpProbe),
        ProbeKind::Http => Arc::new(HttpProbe),
        ProbeKind::Serial => Arc::new(SerialProbe {
            marker: config.readiness.serial_marker.clone(),
        }),
    }
}

/// Why the agent stopped or an action failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    #[error("ledger: {0}")]
    Ledger(#[from] ClientError),
    #[error("VMM: {0}")]
    Vmm(#[from] VmmError),
    #[error("{0}")]
    Other(String),
}

/// A decision about one contract, made by [`plan`] and carried out by [`Agent::execute`].
// A plan holds a handful of these per tick: boxing the contract would save
// nothing worth an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Take the contract: reserve, accept (if still requested), provision, launch, report.
    Provision { contract: Contract },
    /// Refuse a requested contract this node cannot run.
    Reject { contract_id: u64, reason: String },
    /// The contract ended: delete its VM and free what it held.
    Teardown { contract_id: u64, reason: String },
    /// A VM launched before a restart that was not yet reported active: wait and report.
    Resume { contract_id: u64 },
    /// The ledger already has the contract active (a `report_active` whose reply
    /// was lost): journal the record active.
    MarkActive { contract_id: u64, endpoint: String },
}

/// Pure decision: what to do about `contracts` (those of `node`) given the
/// journaled VMs and what is free. Contracts are considered oldest first; each
/// provision counts against a scratch copy of the resources, so one plan never
/// overcommits.
pub fn plan(
    node: Principal,
    contracts: &[Contract],
    vms: &BTreeMap<u64, VmRecord>,
    resources: &ResourceManager,
) -> Vec<Action> {
    let mut scratch = resources.clone();
    let mut sorted: Vec<&Contract> = contracts.iter().filter(|c| c.node == node).collect();
    sorted.sort_by_key(|c| c.id);
    let mut actions = Vec::new();
    for c in sorted {
        match vms.get(&c.id) {
            Some(r) if r.state.holds_resources() => {
                if c.state.is_final() {
                    actions.push(Action::Teardown {
                        contract_id: c.id,
                        reason: format!("contract is {}", c.state.as_str()),
                    });
                } else if r.state == VmRecordState::Provisioning
                    && r.handle.is_some()
                    && c.state == ContractState::Provisioning
                {
                    actions.push(Action::Resume { contract_id: c.id });
                } else if r.state == VmRecordState::Provisioning
                    && r.handle.is_some()
                    && c.state == ContractState::Active
                {
                    actions.push(Action::MarkActive {
                        contract_id: c.id,
                        endpoint: c.endpoint.clone().unwrap_or_default(),
                    });
                }
            }
            // Released or failed: never launched again. Retry: as if new.
            Some(r) if r.state != VmRecordState::Retry => {}
            _ => match c.state {
                ContractState::Requested
                | ContractState::Accepted
                | ContractState::Provisioning => {
                    let req = ResourceRequest::of_contract(c);
                    match scratch.reserve(c.id, &req) {
                        Ok(_) => actions.push(Action::Provision {
                            contract: c.clone(),
                        }),
                        Err(e) if c.state == ContractState::Requested => {
                            actions.push(Action::Reject {
                                contract_id: c.id,
                                reason: e.to_string(),
                            })
                        }
                        // Accepted earlier but no longer fits (limits lowered): the
                        // ledger cannot take it back; its deadline will refund it.
                        Err(e) => {
                            tracing::warn!(contract = c.id, reason = %e, "accepted contract no longer fits; leaving it to its deadline")
                        }
                    }
                }
                _ => {}
            },
        }
    }
    actions
}

/// The agent: the one owner of VM state on this node.
pub struct Agent {
    config: Config,
    backends: Backends,
    ledger: LedgerClient,
    probe: Arc<dyn ReadinessProbe>,
    clock: Clock,
    journal: Journal,
    vms: BTreeMap<u64, VmRecord>,
    resources: ResourceManager,
    check_in_interval: Option<Duration>,
    last_check_in: Option<Instant>,
    /// Records whose recovery (adopt, relaunch, kill, teardown) could not
    /// finish; retried at the start of every pass.
    pending: std::collections::BTreeSet<u64>,
    /// Bridge mode: the tenant network (set up by [`Agent::start`]).
    net: Option<TenantNetwork>,
    /// Where GPUs are bound to vfio-pci (the host's sysfs; a fake in tests).
    sysfs: Arc<dyn Sysfs + Send + Sync>,
    /// `[ingress]`: the SNI ingress and its route table (served from [`Agent::run`]).
    ingress: Option<(dc_ingress::Ingress, Arc<dc_ingress::RouteTable>)>,
}

fn is_gone(e: &VmmError) -> bool {
    matches!(e, VmmError::Gone { .. })
}

/// Whether the ledger answered and refused (the contract cannot go that way),
/// as opposed to a transport failure after which the call may or may not
/// have been committed.
fn is_refusal(e: &ClientError) -> bool {
    match e {
        ClientError::Ledger(_) | ClientError::Transfer(_) => true,
        ClientError::Rejected { status, .. } => (400..500).contains(status),
        _ => false,
    }
}

/// Live processes (pid, start ticks) whose command line names a path inside
/// `run_dir`: the VMM of that VM, whichever backend started it (QEMU names
/// its QMP socket and pidfile there, Cloud Hypervisor its API socket). QEMU's
/// pidfile is read first; every candidate is checked against its cmdline.
pub fn vmm_processes_of(run_dir: &Path) -> Vec<(u32, u64)> {
    let needle = format!("{}/", run_dir.display().to_string().trim_end_matches('/'));
    let me = std::process::id();
    let mentions = |pid: u32| {
        pid != me
            && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|&b| b == 0)
                    .any(|arg| String::from_utf8_lossy(arg).contains(&needle))
            })
    };
    let mut pids = Vec::new();
    if let Ok(text) = std::fs::read_to_string(run_dir.join("qemu.pid")) {
        if let Ok(pid) = text.trim().parse::<u32>() {
            pids.push(pid);
        }
    }
    if let Ok(entries) = std::fs::read_dir("/proc") {
        pids.extend(
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok())),
        );
    }
    let mut out: Vec<(u32, u64)> = Vec::new();
    for pid in pids {
        if out.iter().any(|(p, _)| *p == pid) || !mentions(pid) {
            continue;
        }
        if let Some(ticks) = dc_vmm::process::start_ticks(pid) {
            out.push((pid, ticks));
        }
    }
    out
}

impl Agent {
    /// Replays the journal, adopts every VM that holds resources (same process,
    /// never relaunched, through the backend its handle names), marks the dead
    /// ones `Failed`, finishes interrupted teardowns and compacts the journal.
    /// `ledger` must be signed by the node key.
    pub fn start(
        config: Config,
        backends: Backends,
        ledger: LedgerClient,
        probe: Arc<dyn ReadinessProbe>,
        resources: ResourceManager,
        clock: Clock,
    ) -> Result<Agent, AgentError> {
        Self::start_with_sysfs(
            config,
            backends,
            ledger,
            probe,
            resources,
            clock,
            Arc::new(crate::vfio::HostSysfs),
        )
    }

    /// [`Agent::start`] binding GPUs through `sysfs` (tests pass a fake
    /// kernel; recovery at start already uses it).
    pub fn start_with_sysfs(
        config: Config,
        backends: Backends,
        ledger: LedgerClient,
        probe: Arc<dyn ReadinessProbe>,
        resources: ResourceManager,
        clock: Clock,
        sysfs: Arc<dyn Sysfs + Send + Sync>,
    ) -> Result<Agent, AgentError> {
        std::fs::create_dir_all(config.data_dir.join("vms"))
            .map_err(|e| AgentError::Other(format!("{}: {e}", config.data_dir.display())))?;
        let (journal, replay) = Journal::open(&config.journal_path())?;
        let net = match config.network.mode {
            NetworkMode::User => None,
            NetworkMode::Bridge => {
                let net = config
                    .network
                    .tenant_network()
                    .map_err(|e| AgentError::Other(e.to_string()))?;
                // Idempotent; keeps installed forwards (restored below per VM
                // after a host reboot lost them).
                net.setup()
                    .map_err(|e| AgentError::Other(format!("tenant network: {e}")))?;
                Some(net)
            }
        };
        let ingress = match &config.ingress {
            None => None,
            Some(sec) => {
                let routes = Arc::new(dc_ingress::RouteTable::new());
                let ingress = dc_ingress::Ingress::new(sec.proxy.clone(), routes.clone())
                    .map_err(|e| AgentError::Other(format!("ingress: {e}")))?;
                Some((ingress, routes))
            }
        };
        let mut agent = Agent {
            ingress,
            net,
            sysfs,
            check_in_interval: config.check_in_interval_secs.map(Duration::from_secs),
            config,
            backends,
            ledger,
            probe,
            clock,
            journal,
            vms: BTreeMap::new(),
            resources,
            last_check_in: None,
            pending: Default::default(),
        };
        for (id, record) in replay.latest() {
            agent.recover(id, record)?;
        }
        let keep: Vec<VmRecord> = agent.vms.values().cloned().collect();
        agent.journal.compact(&keep)?;
        Ok(agent)
    }

    /// Takes a replayed record in (its resources held while it holds any),
    /// then reconciles it with what runs; what cannot finish now (a VMM that
    /// survives SIGKILL, a backend not linked, a failed relaunch) is logged,
    /// keeps its record and resources, and is retried by every [`Agent::tick`].
    fn recover(&mut self, id: u64, record: VmRecord) -> Result<(), AgentError> {
        let holds = record.state.holds_resources();
        if holds {
            self.resources.restore(record.reservation.clone());
        }
        self.vms.insert(id, record);
        if holds {
            self.retry_reconcile(id)?;
        }
        Ok(())
    }

    /// Puts a bridged VM's tap and port forward back (both idempotent): a
    /// host reboot loses them, a relaunch needs the tap. Not for `Releasing`
    /// records, whose teardown removes them.
    fn restore_net(&self, id: u64) -> Result<(), AgentError> {
        let (Some(tn), Some(record)) = (&self.net, self.vms.get(&id)) else {
            return Ok(());
        };
        let Some(n) = record
            .net
            .as_ref()
            .filter(|_| record.state != VmRecordState::Releasing)
        else {
            return Ok(());
        };
        tn.attach(n.vm_addr)
            .and_then(|_| tn.forward(&n.forward))
            .map_err(|e| AgentError::Other(format!("tenant network: {e}")))
    }

    /// Removes a bridged VM's port forward, then its tap. The forward must go
    /// before the address is given to another VM, so a failure is an error
    /// the caller keeps the record for.
    fn release_net(&self, record: &VmRecord) -> Result<(), AgentError> {
        let (Some(tn), Some(n)) = (&self.net, &record.net) else {
            return Ok(());
        };
        tn.unforward(&n.forward)
            .and_then(|_| tn.detach(n.vm_addr))
            .map_err(|e| AgentError::Other(format!("tenant network: {e}")))
    }

    /// [`Agent::reconcile`], queueing the record for the next pass on a non-journal error.
    fn retry_reconcile(&mut self, id: u64) -> Result<(), AgentError> {
        match self.restore_net(id).and_then(|()| self.reconcile(id)) {
            Ok(()) => {
                self.pending.remove(&id);
                Ok(())
            }
            Err(e @ AgentError::Journal(_)) => Err(e),
            Err(e) => {
                tracing::error!(contract = id, error = %e, "recovering the VM could not finish; keeping its record and resources, retrying on the next pass");
                self.pending.insert(id);
                Ok(())
            }
        }
    }

    fn reconcile(&mut self, id: u64) -> Result<(), AgentError> {
        let Some(record) = self.vms.get(&id).cloned() else {
            return Ok(());
        };
        match (record.state, &record.handle) {
            (VmRecordState::Active | VmRecordState::Provisioning, Some(handle)) => {
                let adopted = match self.backends.get(handle.backend) {
                    Some(hv) => hv.adopt(handle),
                    // The VMM may well be running: keep its resources, never wipe it.
                    None if handle.is_alive() => Err(VmmError::Unsupported {
                        backend: handle.backend.as_str(),
                        reason: "this backend is not linked into the agent now".into(),
                    }),
                    None => Err(VmmError::Gone {
                        id: handle.id.clone(),
                        pid: handle.pid,
                    }),
                };
                match adopted {
                    Ok(info) => {
                        tracing::info!(contract = id, vm = %handle.id, pid = handle.pid, backend = handle.backend.as_str(), state = ?info.state, "adopted VM");
                        Ok(())
                    }
                    Err(e) if !is_gone(&e) && handle.is_alive() => {
                        // Alive but not answering (or its backend is missing): never
                        // wipe a running VM's disk. Keep it and its resources.
                        tracing::error!(contract = id, vm = %handle.id, pid = handle.pid, error = %e, "VMM is alive but could not be adopted; keeping it");
                        Ok(())
                    }
                    Err(e) => {
                        // The tenant's disk is in the run directory: keep it and
                        // boot the VM again over it, same spec, same endpoint.
                        // A provisioning one too: its `report_active` may have
                        // reached the ledger with the reply lost, so the
                        // tenant may have it; the next pass resumes it, marks
                        // it active or tears it down, as the ledger says.
                        tracing::warn!(contract = id, vm = %handle.id, pid = handle.pid, error = %e, state = ?record.state, "VM died while the agent was down; relaunching it over its disk");
                        self.relaunch(
                            id,
                            format!("VMM gone on restart ({e}); relaunched over its disk"),
                        )
                    }
                }
            }
            (VmRecordState::Provisioning, None) => {
                // Crashed before the launch was journaled: the VMM may be running.
                tracing::warn!(contract = id, "provisioning was interrupted before the VM's handle was journaled; looking for its VMM");
                self.abandon(id, "interrupted before the launch was journaled".into())
            }
            (VmRecordState::Releasing, _) | (VmRecordState::Active, None) => {
                self.teardown(id, "finishing an interrupted teardown")
            }
            _ => Ok(()),
        }
    }

    /// Kills every VMM process of the record's run directory (the journaled
    /// handle is dead or was never written); errors while one survives.
    fn kill_strays(&self, id: u64, run_dir: &Path) -> Result<(), AgentError> {
        for (pid, ticks) in vmm_processes_of(run_dir) {
            tracing::warn!(contract = id, pid, dir = %run_dir.display(), "killing a VMM of this VM that has no journaled handle");
            dc_vmm::process::signal_if_same(pid, ticks, libc::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(5);
            while dc_vmm::process::is_same_process_alive(pid, ticks) {
                if Instant::now() >= deadline {
                    return Err(AgentError::Other(format!(
                        "VMM process {pid} of contract {id} survived SIGKILL; its directory and resources are kept"
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// A provisioning attempt that never reached the tenant: kill any VMM it
    /// left (keeping everything while one survives), then wipe, release and
    /// journal `Retry`, so the next pass provisions again if the ledger still wants it.
    fn abandon(&mut self, id: u64, note: String) -> Result<(), AgentError> {
        let record = self.vms[&id].clone();
        self.kill_strays(id, &record.spec.run_dir)?;
        self.release_vfio(&record.vfio);
        self.release_net(&record)?;
        self.wipe_run_dir(&record.spec);
        self.resources.release(id);
        self.record(VmRecord {
            state: VmRecordState::Retry,
            handle: None,
            note: Some(note),
            ..record
        })
    }

    /// Boots an active VM whose VMM died again, from its journaled spec over
    /// its existing disk (the backend creates an overlay only when missing),
    /// and journals the new handle. The contract stays active; its endpoint
    /// (the forwarded host port) is unchanged.
    fn relaunch(&mut self, id: u64, note: String) -> Result<(), AgentError> {
        let record = self.vms[&id].clone();
        let backend = record
            .handle
            .as_ref()
            .map(|h| h.backend)
            .ok_or_else(|| AgentError::Other(format!("contract {id} has no handle")))?;
        if record.note.as_deref() != Some(note.as_str()) {
            // The event, journaled once.
            self.record(VmRecord {
                note: Some(note.clone()),
                ..record.clone()
            })?;
        }
        let Some(hv) = self.backends.get(backend).cloned() else {
            return Err(AgentError::Other(format!(
                "cannot relaunch contract {id}: backend {} is not linked",
                backend.as_str()
            )));
        };
        // A VMM left over for this directory would hold the disk.
        self.kill_strays(id, &record.spec.run_dir)?;
        // A host reboot gave the GPUs back to their drivers: bind them again
        // (a no-op when still bound), keeping the journaled drivers to restore.
        for b in &record.vfio {
            crate::vfio::bind_group_with(self.sysfs.as_ref(), &self.config.host_root, &b.group)
                .map_err(|e| AgentError::Other(format!("GPU group {}: {e}", b.group)))?;
        }
        hv.check(&record.spec)?;
        let handle = hv.launch(&record.spec)?;
        tracing::warn!(contract = id, vm = %handle.id, pid = handle.pid, "relaunched VM over its existing disk");
        let record = self.vms[&id].clone();
        self.record(VmRecord {
            handle: Some(handle),
            ..record
        })
    }

    /// Active VMs whose VMM exited while the agent runs (a guest power-off,
    /// a VMM crash, an operator's kill) are relaunched over their disks, as
    /// on a restart; the event is journaled in the record's note. A VMM that
    /// cannot be relaunched now is retried on every pass.
    fn relaunch_dead(&mut self) -> Result<(), AgentError> {
        let dead: Vec<u64> = self
            .vms
            .values()
            .filter(|r| r.state == VmRecordState::Active && !self.pending.contains(&r.contract_id))
            .filter(|r| r.handle.as_ref().is_some_and(|h| !h.is_alive()))
            .map(|r| r.contract_id)
            .collect();
        for id in dead {
            tracing::warn!(
                contract = id,
                "VM died while the agent was running; relaunching it over its disk"
            );
            if let Err(e) = self.relaunch(
                id,
                "VMM exited while the agent was running; relaunched over its disk".into(),
            ) {
                if let AgentError::Journal(_) = e {
                    return Err(e);
                }
                tracing::error!(contract = id, error = %e, "relaunch failed; retrying on the next pass");
                self.pending.insert(id);
            }
        }
        Ok(())
    }

    /// Binds every GPU group of the reservation to vfio-pci, journals the
    /// bindings (with the drivers to give back) and points the spec's VFIO
    /// devices at exactly the bound functions (bridges stay with the host).
    /// A failed group undoes itself; groups bound before it are released.
    fn bind_gpus(&mut self, id: u64) -> Result<(), AgentError> {
        let record = self.vms[&id].clone();
        if record.reservation.gpu_groups.is_empty() {
            return Ok(());
        }
        let root = self.config.host_root.clone();
        let gpu_err =
            |g: &str, e: crate::vfio::VfioError| AgentError::Other(format!("GPU group {g}: {e}"));
        // Journal the drivers to give back before the first sysfs write: a
        // crash mid-bind must not make vfio-pci look like their own driver.
        let mut bindings = Vec::new();
        for g in &record.reservation.gpu_groups {
            let devices = crate::vfio::plan_group_with(self.sysfs.as_ref(), &root, &g.group)
                .map_err(|e| gpu_err(&g.group, e))?;
            bindings.push(VfioBinding {
                group: g.group.clone(),
                devices,
            });
        }
        self.record(VmRecord {
            vfio: bindings.clone(),
            ..record.clone()
        })?;
        for b in &bindings {
            // A failed group undoes itself; the caller's fail() releases the
            // groups bound before it (releasing an unbound one writes nothing).
            crate::vfio::bind_group_with(self.sysfs.as_ref(), &root, &b.group)
                .map_err(|e| gpu_err(&b.group, e))?;
        }
        let mut spec = record.spec.clone();
        spec.vfio = bindings
            .iter()
            .flat_map(|b| b.devices.iter())
            .map(|d| VfioDevice {
                sysfs_path: d.sysfs_path(&root),
            })
            .collect();
        let record = self.vms[&id].clone();
        self.record(VmRecord { spec, ..record })
    }

    /// Gives GPUs back to their previous drivers; only after the VM is gone
    /// (the kernel's unbind waits for the VMM to close the device). Errors
    /// are logged: the device is off vfio-pci either way.
    fn release_vfio(&self, bindings: &[VfioBinding]) {
        for b in bindings {
            if let Err(e) = crate::vfio::release_group_with(
                self.sysfs.as_ref(),
                &self.config.host_root,
                &b.group,
                &b.devices,
            ) {
                tracing::error!(group = %b.group, error = %e, "giving the GPU group back to its host drivers failed");
            }
        }
    }

    /// Keeps every live VM's logs bounded: the serial log and the VMM's own
    /// log past `vm_log_max_mib` keep their last part as `<name>.1` and start
    /// empty (the VMMs write them in append mode).
    fn cap_logs(&self) {
        let max = self.config.vm_log_max_mib << 20;
        for r in self.vms.values().filter(|r| r.state.holds_resources()) {
            let dir = &r.spec.run_dir;
            for log in [
                r.spec.serial_log(),
                dir.join("qemu.log"),
                dir.join("cloud-hypervisor.log"),
            ] {
                match dc_vmm::cap_log(&log, max) {
                    Ok(true) => {
                        tracing::info!(contract = r.contract_id, log = %log.display(), "log cut to its last part")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(contract = r.contract_id, log = %log.display(), error = %e, "capping the log failed")
                    }
                }
            }
        }
    }

    /// Installs the ingress routes of the active VMs (see [`ingress_routes`])
    /// as one atomic swap: other tenants' connections are never touched; an
    /// ended contract's live connections are closed. Writes the metrics
    /// snapshot to `data_dir/ingress-metrics.json` for the remote API.
    fn sync_routes(&self, contracts: &[Contract]) {
        let (Some(sec), Some((ingress, table))) = (&self.config.ingress, &self.ingress) else {
            return;
        };
        let routes = ingress_routes(sec, &self.vms, contracts);
        match table.replace(routes) {
            Ok(u) => {
                for id in &u.added {
                    tracing::info!(contract = id, "ingress route added");
                }
                for id in &u.removed {
                    tracing::info!(
                        contract = id,
                        "ingress route removed; its connections closed"
                    );
                }
                for r in &u.rejected_names {
                    tracing::warn!(rejected = ?r, "ingress name not routed");
                }
            }
            Err(e) => tracing::error!(error = %e, "ingress routes not updated"),
        }
        let path = self.config.data_dir.join("ingress-metrics.json");
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec_pretty(&ingress.metrics())
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "writing ingress metrics failed");
        }
    }

    /// The ingress's counters (per port and per route), when it is configured.
    pub fn ingress_metrics(&self) -> Option<dc_ingress::MetricsSnapshot> {
        self.ingress.as_ref().map(|(i, _)| i.metrics())
    }

    /// Binds the ingress's listeners and serves them on threads of their
    /// own, one per core, each with its own `SO_REUSEPORT` listener per port
    /// ([`dc_ingress::Ingress::spawn_workers`]). They serve until the returned
    /// workers are dropped; `None` without an `[ingress]` section.
    pub fn serve_ingress(&self) -> Result<Option<dc_ingress::Workers>, AgentError> {
        let (Some(sec), Some((ingress, _))) = (&self.config.ingress, &self.ingress) else {
            return Ok(None);
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = ingress
            .spawn_workers(dc_ingress::Listen {
                tls: Some(sec.tls_listen),
                http: sec.http_listen,
                threads,
            })
            .map_err(|e| {
                AgentError::Other(format!(
                    "ingress: cannot listen on {}{}: {e}",
                    sec.tls_listen,
                    sec.http_listen
                        .map(|a| format!(" and {a}"))
                        .unwrap_or_default()
                ))
            })?;
        tracing::info!(
            tls = ?workers.tls_addr(),
            http = ?workers.http_addr(),
            threads,
            domain = %sec.domain,
            "ingress serving"
        );
        Ok(Some(workers))
    }

    /// The node's principal.
    pub fn node(&self) -> Principal {
        self.ledger.principal()
    }

    /// The latest record of every contract this node has handled.
    pub fn vms(&self) -> &BTreeMap<u64, VmRecord> {
        &self.vms
    }

    /// The resource accounting.
    pub fn resources(&self) -> &ResourceManager {
        &self.resources
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    /// Journals `record` (fsynced), then makes it the current one.
    fn record(&mut self, mut record: VmRecord) -> Result<(), AgentError> {
        record.at_ns = self.now();
        self.journal.append(&record)?;
        self.vms.insert(record.contract_id, record);
        Ok(())
    }

    /// Checks in for the open reward block. Already checked in for it is not an error.
    pub async fn check_in(&mut self) -> Result<(), AgentError> {
        self.last_check_in = Some(Instant::now());
        match self.ledger.check_in().await {
            Ok(height) => {
                tracing::info!(block = height, "checked in");
                Ok(())
            }
            Err(ClientError::Ledger(LedgerError::AlreadyCheckedIn { block_height, .. })) => {
                tracing::debug!(block = block_height, "already checked in for this block");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every contract naming this node (all pages).
    pub async fn contracts(&self) -> Result<Vec<Contract>, AgentError> {
        const PAGE: u32 = 100;
        let mut out = Vec::new();
        let mut offset = 0u64;
        loop {
            let page = self
                .ledger
                .list_contracts(Some(self.node()), offset, PAGE)
                .await?;
            let n = page.len();
            out.extend(page);
            if n < PAGE as usize {
                return Ok(out);
            }
            offset += n as u64;
        }
    }

    /// One pass: list contracts, plan, execute. Errors of single actions are
    /// logged and do not stop the pass; a journal error does.
    pub async fn tick(&mut self) -> Result<Vec<Action>, AgentError> {
        let pending: Vec<u64> = self.pending.iter().copied().collect();
        for id in pending {
            self.retry_reconcile(id)?;
        }
        self.relaunch_dead()?;
        self.cap_logs();
        let contracts = self.contracts().await?;
        let actions = plan(self.node(), &contracts, &self.vms, &self.resources);
        for action in &actions {
            match self.execute(action.clone()).await {
                Ok(()) => {}
                Err(e @ AgentError::Journal(_)) => return Err(e),
                Err(e) => tracing::error!(?action, error = %e, "action failed"),
            }
        }
        self.sync_routes(&contracts);
        Ok(actions)
    }

    /// Checks in every interval and ticks every poll interval until `shutdown` resolves.
    pub async fn run(
        &mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), AgentError> {
        let interval = match self.check_in_interval {
            Some(i) => i,
            None => {
                let params = self.ledger.params().await?;
                Duration::from_nanos((params.block_interval_ns / 2).max(1_000_000_000))
            }
        };
        // Serves until this function returns.
        let _ingress = self.serve_ingress()?;
        tracing::info!(node = %self.node(), check_in_interval_s = interval.as_secs(), "agent running");
        tokio::pin!(shutdown);
        loop {
            if self.last_check_in.is_none_or(|t| t.elapsed() >= interval) {
                if let Err(e) = self.check_in().await {
                    tracing::warn!(error = %e, "check-in failed");
                }
            }
            match self.tick().await {
                Ok(_) => {}
                Err(e @ AgentError::Journal(_)) => return Err(e),
                Err(e) => tracing::warn!(error = %e, "pass failed; retrying"),
            }
            tokio::select! {
                _ = &mut shutdown => {
                    tracing::info!("agent stopping; VMs keep running");
                    return Ok(());
                }
                _ = tokio::time::sleep(self.next_pass_in()) => {}
            }
        }
    }

    /// How long to wait before the next pass: `poll_interval_ms`, or at most
    /// 250 ms while a guest is booting, so it is reported soon after it is
    /// ready without a pass blocking on it.
    fn next_pass_in(&self) -> Duration {
        let booting = self
            .vms
            .values()
            .any(|r| r.state == VmRecordState::Provisioning && r.handle.is_some());
        let poll = self.config.poll_interval();
        if booting {
            poll.min(Duration::from_millis(250))
        } else {
            poll
        }
    }

    /// Carries out one action.
    pub async fn execute(&mut self, action: Action) -> Result<(), AgentError> {
        match action {
            Action::Reject {
                contract_id,
                reason,
            } => self.reject(contract_id, reason).await,
            Action::Teardown {
                contract_id,
                reason,
            } => self.teardown(contract_id, &reason),
            Action::Provision { contract } => self.provision(contract).await,
            Action::Resume { contract_id } => self.boot_and_report(contract_id).await,
            Action::MarkActive {
                contract_id,
                endpoint,
            } => {
                let record = self.vms[&contract_id].clone();
                tracing::info!(contract = contract_id, %endpoint, "the ledger already has the contract active; journaling it");
                let (evidence, _) = launch_publication(record.launch.as_ref())?;
                self.record(VmRecord {
                    state: VmRecordState::Active,
                    endpoint: Some(endpoint),
                    evidence_hash: Some(hex::encode(evidence)),
                    ..record
                })
            }
        }
    }

    async fn reject(&mut self, contract_id: u64, reason: String) -> Result<(), AgentError> {
        tracing::info!(contract = contract_id, %reason, "rejecting contract");
        self.ledger.reject_contract(contract_id).await?;
        Ok(())
    }

    /// `n` distinct host ports of `network.port_min..=port_max` that no live
    /// VM holds and that can be bound now.
    fn free_ports(&self, n: usize) -> Option<Vec<u16>> {
        let net = &self.config.network;
        let used: Vec<u16> = self
            .vms
            .values()
            .filter(|r| r.state.holds_resources())
            .flat_map(|r| {
                let user: Vec<u16> = match &r.spec.network {
                    Network::User { forwards } => forwards.iter().map(|f| f.host_port).collect(),
                    _ => vec![],
                };
                user.into_iter()
                    .chain(r.net.as_ref().map(|n| n.forward.host_port))
            })
            .collect();
        let ports: Vec<u16> = (net.port_min..=net.port_max)
            .filter(|p| !used.contains(p))
            .filter(|p| TcpListener::bind((net.host_addr, *p)).is_ok())
            .take(n)
            .collect();
        (ports.len() == n).then_some(ports)
    }

    /// Bridge mode: the place of contract `contract_id`'s VM on the tenant
    /// network: a stable private address (the contract's preferred one, or
    /// the next free one when another live VM holds it), its tap, and the
    /// forward of `host_port` to `network.guest_port`. Nothing is created.
    pub fn plan_net(&self, contract_id: u64, host_port: u16) -> Result<Option<VmNet>, AgentError> {
        let Some(tn) = &self.net else {
            return Ok(None);
        };
        let net_err =
            |e: dc_tenant_net::NetError| AgentError::Other(format!("tenant network: {e}"));
        let subnet = tn.subnet();
        let mut table = AddressTable::new();
        for r in self.vms.values().filter(|r| r.state.holds_resources()) {
            if let Some(n) = &r.net {
                table.insert(&r.spec.id, n.vm_addr);
            }
        }
        let vm_addr = table
            .assign(&subnet, &format!("c{contract_id}"), contract_id)
            .map_err(net_err)?;
        let tap = tn.tap_for(vm_addr).map_err(net_err)?;
        let IpAddr::V4(host_addr) = self.config.network.host_addr else {
            return Err(AgentError::Other(
                "bridge mode needs an IPv4 network.host_addr".into(),
            ));
        };
        Ok(Some(VmNet {
            tap: tap.name,
            vm_addr,
            forward: Forward {
                host_addr,
                host_port,
                vm_addr,
                guest_port: self.config.network.guest_port,
            },
        }))
    }

    /// The VM spec for a contract (id `c<contract id>`, a qcow2 overlay over
    /// `guest.base_disk` in its run dir, which the backend creates at launch),
    /// and the backend that runs it ([`choose_backend`], which also sets `accel`).
    /// With `net` (bridge mode) the VM gets its tap and, for a direct kernel
    /// boot, its static address as a kernel `ip=` argument (no DHCP on the bridge).
    ///
    /// For a confidential `platform` the launch is planned too
    /// ([`crate::confidential::plan`]): the contract bound into it (SNP
    /// HOST_DATA, TDX MRCONFIGID), the measurement predicted from the very
    /// files and command line the spec boots, a policy without debug; the
    /// spec must then pass [`LaunchPlan::check_spec`].
    pub fn build_spec(
        &self,
        contract: &Contract,
        platform: Option<Platform>,
        reservation: &Reservation,
        host_ports: &[u16],
        net: Option<&VmNet>,
    ) -> Result<(VmSpec, BackendChoice, Option<LaunchPlan>), AgentError> {
        let contract_id = contract.id;
        let run_dir = self.config.vm_dir(contract_id);
        let g = &self.config.guest;
        let mut cmdline = g.cmdline.clone();
        let network = match (self.config.network.mode, net, &self.net) {
            (NetworkMode::User, _, _) => {
                // The endpoint first, then the ingress's upstreams (TLS, HTTP).
                let mut guest_ports = vec![self.config.network.guest_port];
                if let Some(i) = &self.config.ingress {
                    guest_ports.extend([i.guest_tls_port, i.guest_http_port]);
                }
                if host_ports.len() < guest_ports.len() {
                    return Err(AgentError::Other(format!(
                        "{} host ports needed, {} given",
                        guest_ports.len(),
                        host_ports.len()
                    )));
                }
                Network::User {
                    forwards: guest_ports
                        .iter()
                        .zip(host_ports)
                        .map(|(&guest_port, &host_port)| PortForward {
                            host_addr: self.config.network.host_addr,
                            host_port,
                            guest_port,
                        })
                        .collect(),
                }
            }
            (NetworkMode::Bridge, Some(n), Some(tn)) => {
                let tap = tn
                    .tap_for(n.vm_addr)
                    .map_err(|e| AgentError::Other(format!("tenant network: {e}")))?;
                cmdline = format!("{} {}", cmdline.trim_end(), tap.kernel_ip_arg("eth0"));
                tap.vmm_network()
            }
            (NetworkMode::Bridge, _, _) => {
                return Err(AgentError::Other(
                    "bridge mode: the VM has no place on the tenant network".into(),
                ))
            }
        };
        // Filled by bind_gpus with exactly the functions bound to vfio-pci
        // (a group's bridges stay with the host).
        let vfio = Vec::new();
        let mut spec = VmSpec {
            id: format!("c{contract_id}"),
            vcpus: reservation.request.vcpus.max(1),
            memory_mib: reservation.request.memory_mib.max(64),
            boot: Boot::Kernel {
                kernel: g.kernel.clone(),
                initrd: g.initrd.clone(),
                cmdline,
                firmware: g.firmware.clone(),
            },
            disks: vec![Disk {
                path: run_dir.join("disk.qcow2"),
                base: Some(g.base_disk.clone()),
                readonly: false,
                // The tenant's storage: the overlay's virtual size (never below the base's).
                size_gib: Some(reservation.request.storage_gib.max(1)),
            }],
            network,
            vsock_cid: None,
            vfio,
            // For choose_backend; the real binding comes from the plan below.
            confidential: match platform {
                None => dc_vmm::Confidential::None,
                Some(Platform::SevSnp) => dc_vmm::Confidential::SevSnp {
                    policy: crate::confidential::DEFAULT_SNP_POLICY,
                    host_data: [0; 32],
                },
                Some(Platform::Tdx) => dc_vmm::Confidential::Tdx {
                    mrconfigid: [0; 48],
                },
            },
            // Decided by choose_backend just below.
            accel: Accel::Tcg,
            run_dir,
        };
        let choice = choose_backend(
            &spec,
            self.config.backend,
            self.config.accel,
            &self.backends.host(),
        )
        .map_err(|e| AgentError::Other(e.to_string()))?;
        spec.accel = choice.accel;
        let launch = match platform {
            None => None,
            Some(platform) => {
                let Boot::Kernel {
                    kernel,
                    initrd,
                    cmdline,
                    firmware,
                } = &spec.boot
                else {
                    return Err(AgentError::Other(
                        "confidential launches boot a kernel directly".into(),
                    ));
                };
                let Some(firmware) = firmware.clone() else {
                    return Err(AgentError::Other(format!(
                        "{} launches need guest.firmware (OVMF with kernel hashes for SEV-SNP, a TDVF for TDX)",
                        platform.as_str()
                    )));
                };
                let plan = crate::confidential::plan(&LaunchRequest {
                    platform,
                    contract_id,
                    developer: contract.developer.as_slice().to_vec(),
                    node: contract.node.as_slice().to_vec(),
                    artifacts: GuestArtifacts {
                        firmware,
                        kernel: kernel.clone(),
                        initrd: initrd.clone(),
                        cmdline: cmdline.clone(),
                    },
                    vcpus: spec.vcpus,
                    memory_mib: spec.memory_mib,
                    backend: choice.backend,
                    snp_policy: None,
                })
                .map_err(|e| AgentError::Other(format!("confidential launch: {e}")))?;
                spec.confidential = plan.confidential.clone();
                spec.boot = plan.boot.clone();
                plan.check_spec(&spec)
                    .map_err(|e| AgentError::Other(format!("confidential launch: {e}")))?;
                Some(plan)
            }
        };
        spec.validate()?;
        Ok((spec, choice, launch))
    }

    async fn provision(&mut self, contract: Contract) -> Result<(), AgentError> {
        let id = contract.id;
        // Confidential launches are not implemented: refuse rather than run a
        // regular VM for an offering that promises one.
        let offering = self.ledger.offering(contract.offering_id).await?;
        let Some(o) = &offering else {
            // Fail closed: without the offering we cannot know whether it
            // promises a confidential VM.
            let reason = format!(
                "offering {} cannot be read; cannot verify its confidentiality requirement",
                contract.offering_id
            );
            if contract.state == ContractState::Requested {
                return self.reject(id, reason).await;
            }
            return Err(AgentError::Other(format!("contract {id}: {reason}")));
        };
        let platform = match o.spec.confidential {
            dc_ledger_core::Confidential::None => None,
            dc_ledger_core::Confidential::SevSnp => Some(Platform::SevSnp),
            dc_ledger_core::Confidential::Tdx => Some(Platform::Tdx),
        };
        if contract.state != ContractState::Requested
            && contract.provisioning_deadline_ns != 0
            && contract.provisioning_deadline_ns <= self.now()
        {
            return Err(AgentError::Other(format!(
                "contract {id}: its provisioning deadline has passed; not launching"
            )));
        }
        let req = ResourceRequest::of_contract(&contract);
        let reservation = match self.resources.reserve(id, &req) {
            Ok(r) => r,
            Err(e) => {
                if contract.state == ContractState::Requested {
                    return self.reject(id, e.to_string()).await;
                }
                return Err(AgentError::Other(e.to_string()));
            }
        };
        // The endpoint's port; in user mode with an ingress, also the host
        // ports the VM's TLS and HTTP ports are forwarded to for it.
        let ingress_ports = usize::from(
            self.config.ingress.is_some() && self.config.network.mode == NetworkMode::User,
        ) * 2;
        let ports = match self.free_ports(1 + ingress_ports) {
            Some(p) => p,
            None => {
                self.resources.release(id);
                let reason = "no free host port in network.port_min..=port_max".to_string();
                if contract.state == ContractState::Requested {
                    return self.reject(id, reason).await;
                }
                return Err(AgentError::Other(reason));
            }
        };
        let port = ports[0];
        let net = match self.plan_net(id, port) {
            Ok(n) => n,
            Err(e) => {
                self.resources.release(id);
                if contract.state == ContractState::Requested {
                    return self.reject(id, e.to_string()).await;
                }
                return Err(e);
            }
        };
        let (spec, choice, launch) =
            match self.build_spec(&contract, platform, &reservation, &ports, net.as_ref()) {
                Ok(s) => s,
                Err(e) => {
                    self.resources.release(id);
                    if contract.state == ContractState::Requested {
                        return self.reject(id, e.to_string()).await;
                    }
                    return Err(e);
                }
            };
        self.record(VmRecord {
            contract_id: id,
            state: VmRecordState::Provisioning,
            spec: spec.clone(),
            handle: None,
            reservation,
            endpoint: None,
            evidence_hash: None,
            note: None,
            at_ns: 0,
            net: net.clone(),
            launched_at_ns: None,
            vfio: vec![],
            launch: launch.map(|p| p.manifest),
        })?;
        // Ledger steps first: a contract cancelled meanwhile is never launched.
        let ledger_steps = async {
            if contract.state == ContractState::Requested {
                self.ledger.accept_contract(id).await?;
            }
            if contract.state != ContractState::Provisioning {
                self.ledger.start_provisioning(id).await?;
            }
            Ok::<(), ClientError>(())
        };
        if let Err(e) = ledger_steps.await {
            if is_refusal(&e) {
                self.fail(id, format!("ledger refused to start provisioning: {e}"))?;
            } else {
                // The ledger could not be reached (or its answer read): nothing was
                // launched. Free everything; the next pass re-reads the contract
                // and continues from its real state.
                tracing::warn!(contract = id, error = %e, "ledger unreachable while starting provisioning; retrying on the next pass");
                self.abandon(id, format!("ledger unreachable: {e}"))?;
            }
            return Err(e.into());
        }
        if let Err(e) = std::fs::create_dir_all(&spec.run_dir) {
            self.fail(id, format!("{}: {e}", spec.run_dir.display()))?;
            return Err(AgentError::Other(e.to_string()));
        }
        // The tap must exist before the VMM opens it; the forward is in place
        // when the endpoint is reported.
        if let Err(e) = self.restore_net(id) {
            self.fail(id, e.to_string())?;
            return Err(e);
        }
        if let Err(e) = self.bind_gpus(id) {
            self.fail(id, e.to_string())?;
            return Err(e);
        }
        let spec = self.vms[&id].spec.clone();
        let Some(hv) = self.backends.get(choice.backend).cloned() else {
            let note = format!("backend {} is not linked", choice.backend.as_str());
            self.fail(id, note.clone())?;
            return Err(AgentError::Other(note));
        };
        tracing::info!(contract = id, backend = choice.backend.as_str(), accel = ?choice.accel, reason = %choice.reason, "launching VM");
        let launch_spec = spec.clone();
        let launched = tokio::task::spawn_blocking(move || {
            hv.check(&launch_spec)?;
            hv.launch(&launch_spec)
        })
        .await
        .map_err(|e| AgentError::Other(format!("launch task: {e}")))?;
        let handle = match launched {
            Ok(h) => h,
            Err(e) => {
                if !vmm_processes_of(&spec.run_dir).is_empty() {
                    // Its VMM survived the launch's cleanup: never wipe a directory
                    // under a running VMM nor give its resources away. Retried
                    // (killed, then provisioned again) on the next pass.
                    tracing::error!(contract = id, error = %e, "launch failed and a VMM of this VM is still running; keeping its directory and resources");
                    self.pending.insert(id);
                    return Err(e.into());
                }
                self.fail(id, format!("launch failed: {e}"))?;
                return Err(e.into());
            }
        };
        tracing::info!(contract = id, vm = %handle.id, pid = handle.pid, backend = handle.backend.as_str(), "VM launched");
        let mut record = self.vms[&id].clone();
        record.handle = Some(handle);
        record.launched_at_ns = Some(self.now());
        self.record(record)?;
        // Ready already (a fast guest, a serial marker)? Report in this pass;
        // otherwise later passes check again without blocking this one.
        self.boot_and_report(id).await
    }

    /// One readiness check of a launched guest (never waits for the boot:
    /// other contracts and check-ins go on meanwhile). Ready: report it
    /// active. VMM gone: abandon the attempt (provisioned again while the
    /// ledger wants it). Past `vm_boot_timeout_secs` since launch: tear down.
    async fn boot_and_report(&mut self, id: u64) -> Result<(), AgentError> {
        let record = self.vms[&id].clone();
        let Some(handle) = record.handle.clone() else {
            return Err(AgentError::Other(format!(
                "contract {id} has no launched VM"
            )));
        };
        if !handle.is_alive() {
            tracing::warn!(contract = id, vm = %handle.id, pid = handle.pid, "VMM exited while the guest was booting; provisioning again if the contract allows");
            self.abandon(id, "VMM exited before the guest was ready".into())?;
            return Err(AgentError::Other(format!(
                "contract {id}: VMM exited while booting"
            )));
        }
        let probe = self.probe.clone();
        let spec = record.spec.clone();
        let target = probe_target(&spec, record.net.as_ref());
        let ready = tokio::task::spawn_blocking(move || probe.is_ready(target, &spec))
            .await
            .map_err(|e| AgentError::Other(format!("readiness task: {e}")))?;
        if !ready {
            let timeout = self.config.vm_boot_timeout();
            let since = record.launched_at_ns.unwrap_or(record.at_ns);
            if self.now().saturating_sub(since) < timeout.as_nanos() as u64 {
                return Ok(());
            }
            self.teardown(id, "guest not ready within vm_boot_timeout_secs")?;
            let mut r = self.vms[&id].clone();
            r.state = VmRecordState::Failed;
            r.note = Some("boot timeout".into());
            self.record(r)?;
            return Err(AgentError::Other(format!(
                "contract {id}: guest not ready in {timeout:?}"
            )));
        }
        let host_port = match (&record.net, &record.spec.network) {
            (Some(n), _) => Some(n.forward.host_port),
            (None, Network::User { forwards }) => forwards.first().map(|f| f.host_port),
            _ => None,
        };
        let endpoint = match host_port {
            Some(port) => format!("{}:{port}", self.config.network.endpoint_host()),
            None => {
                return Err(AgentError::Other(
                    "no endpoint for this network mode".into(),
                ))
            }
        };
        let (evidence, measurement) = launch_publication(record.launch.as_ref())?;
        match self
            .ledger
            .report_active_with_measurement(id, endpoint.clone(), evidence, measurement)
            .await
        {
            Ok(c) => {
                tracing::info!(contract = id, %endpoint, state = c.state.as_str(), "reported active");
                self.record(VmRecord {
                    state: VmRecordState::Active,
                    endpoint: Some(endpoint),
                    evidence_hash: Some(hex::encode(evidence)),
                    ..record
                })
            }
            Err(e) if is_refusal(&e) => {
                // E.g. cancelled while booting, or the deadline passed: the VM must go.
                tracing::warn!(contract = id, error = %e, "report_active refused; tearing the VM down");
                self.teardown(id, "report_active refused")?;
                Err(e.into())
            }
            Err(e) => {
                // The ledger may have committed it: keep the VM (Provisioning with
                // its handle); the next pass reports again, or journals it active
                // if the ledger has it active already.
                tracing::warn!(contract = id, error = %e, "report_active did not get through; keeping the VM and retrying");
                Err(e.into())
            }
        }
    }

    /// Marks a provisioning attempt failed: wipes what it made and frees its resources.
    fn fail(&mut self, id: u64, note: String) -> Result<(), AgentError> {
        tracing::error!(contract = id, %note, "provisioning failed");
        let record = self.vms[&id].clone();
        self.release_vfio(&record.vfio);
        if let Err(e) = self.release_net(&record) {
            // Its forward must not outlive it: finish as a teardown, retried.
            tracing::error!(contract = id, error = %e, "removing the failed VM's network failed; retrying as a teardown");
            self.pending.insert(id);
            self.record(VmRecord {
                state: VmRecordState::Releasing,
                note: Some(note),
                ..record
            })?;
            return Err(e);
        }
        self.wipe_run_dir(&record.spec);
        self.resources.release(id);
        self.record(VmRecord {
            state: VmRecordState::Failed,
            note: Some(note),
            ..record
        })
    }

    fn wipe_run_dir(&self, spec: &VmSpec) {
        // The overlay is deleted, not overwritten: on SSDs and copy-on-write file
        // systems overwriting in place does not reach the old blocks anyway; the
        // data partition is expected to be encrypted at rest.
        if let Err(e) = remove_dir_if_inside(&spec.run_dir, &self.config.data_dir.join("vms")) {
            tracing::warn!(dir = %spec.run_dir.display(), error = %e, "could not wipe the run directory");
        }
    }

    /// Deletes the VM, wipes its run directory, frees its resources; journaled
    /// `Releasing` before and `Released` after, so a crash in between finishes on restart.
    fn teardown(&mut self, id: u64, reason: &str) -> Result<(), AgentError> {
        let Some(record) = self.vms.get(&id).cloned() else {
            return Ok(());
        };
        tracing::info!(contract = id, %reason, "releasing VM");
        self.record(VmRecord {
            state: VmRecordState::Releasing,
            ..record.clone()
        })?;
        if let Some(handle) = &record.handle {
            let deleted = match self.backends.get(handle.backend) {
                Some(hv) => hv.delete(handle),
                None if !handle.is_alive() => Ok(()),
                None => Err(VmmError::Unsupported {
                    backend: handle.backend.as_str(),
                    reason: "this backend is not linked into the agent now; cannot delete the VM"
                        .into(),
                }),
            };
            match deleted {
                Ok(()) => {}
                Err(e) if is_gone(&e) => {}
                Err(e) => {
                    // Keep it Releasing: the next start retries.
                    tracing::error!(contract = id, error = %e, "deleting the VM failed");
                    return Err(e.into());
                }
            }
        }
        // A VMM with no journaled handle (a launch that failed or was
        // interrupted after starting it) would still hold the disk, the
        // address and the GPUs: dead first, or everything is kept.
        self.kill_strays(id, &record.spec.run_dir)?;
        self.release_vfio(&record.vfio);
        self.release_net(&record)?;
        self.wipe_run_dir(&record.spec);
        self.resources.release(id);
        self.record(VmRecord {
            state: VmRecordState::Released,
            note: Some(reason.to_string()),
            ..record
        })
    }
}

/// The ingress routes of this node: every VM journaled active whose contract
/// is not over answers as `c<contract id>.<ingress.domain>` and the custom
/// domains its developer registered on the ledger (none at or under the
/// node's domain), with PROXY protocol v2 when it asked for it. Upstreams are
/// the VM's private address in bridge mode, or the user-mode forwards of its
/// TLS and HTTP ports; a VM with neither (launched before the ingress was
/// configured) gets no route.
pub fn ingress_routes(
    sec: &crate::config::IngressSection,
    vms: &BTreeMap<u64, VmRecord>,
    contracts: &[Contract],
) -> Vec<dc_ingress::Route> {
    let mut routes = Vec::new();
    for c in contracts {
        let Some(r) = vms.get(&c.id) else { continue };
        if r.state != VmRecordState::Active || c.state.is_final() {
            continue;
        }
        let forwarded = |guest_port: u16| match &r.spec.network {
            Network::User { forwards } => forwards
                .iter()
                .find(|f| f.guest_port == guest_port)
                .map(|f| SocketAddr::new(f.host_addr, f.host_port)),
            _ => None,
        };
        let upstream = |guest_port: u16| match &r.net {
            Some(n) => Some(SocketAddr::new(IpAddr::V4(n.vm_addr), guest_port)),
            None => forwarded(guest_port),
        };
        let Some(tls_upstream) = upstream(sec.guest_tls_port) else {
            tracing::debug!(
                contract = c.id,
                "no TLS upstream for the ingress (launched before it was configured?)"
            );
            continue;
        };
        let mut names = vec![format!("c{}.{}", c.id, sec.domain)];
        // Custom domains from the ledger, except names at or under the
        // node's own domain: those are the contracts' default names, and a
        // tenant registering one early (c9.<domain> before contract 9 exists)
        // would otherwise keep it and could pass HTTP-01 for it.
        let own = format!(".{}", sec.domain);
        for d in &c.ingress.domains {
            let bare = d.trim_start_matches("*.");
            if bare == sec.domain || bare.ends_with(&own) {
                tracing::warn!(contract = c.id, domain = %d, "custom domain under the node's own domain not routed");
                continue;
            }
            names.push(d.clone());
        }
        routes.push(dc_ingress::Route {
            contract_id: c.id,
            names,
            tls_upstream,
            http_upstream: upstream(sec.guest_http_port),
            proxy_protocol: c.ingress.proxy_protocol,
            max_connections: sec.max_connections_per_route,
        });
    }
    routes
}

/// What is published with an active contract: the evidence hash (SHA-256
/// of the launch manifest's canonical JSON for a confidential VM,
/// [`no_evidence_hash`] otherwise) and the predicted launch measurement:
/// SEV-SNP MEASUREMENT, or TDX MRTD, RTMR1 and RTMR2 (MRTD alone covers the
/// firmware, not the kernel, initrd and command line a direct boot loads).
fn launch_publication(
    launch: Option<&LaunchManifest>,
) -> Result<([u8; 32], Option<Vec<u8>>), AgentError> {
    let Some(m) = launch else {
        return Ok((no_evidence_hash(), None));
    };
    let register = |what: &str, hex_digest: Option<&String>| -> Result<[u8; 48], AgentError> {
        hex_digest
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                AgentError::Other(format!(
                    "journaled launch manifest of contract {}: {what} {hex_digest:?} is not 48 bytes",
                    m.contract_id
                ))
            })
    };
    let mut measurement = register("measurement", Some(&m.measurement))?.to_vec();
    if m.platform == Platform::Tdx {
        measurement.extend_from_slice(&register("rtmr1", m.rtmr1.as_ref())?);
        measurement.extend_from_slice(&register("rtmr2", m.rtmr2.as_ref())?);
    }
    Ok((m.hash(), Some(measurement)))
}

/// Removes `dir` only if it lies inside `parent` (never follows a bad journal record elsewhere).
fn remove_dir_if_inside(dir: &Path, parent: &Path) -> std::io::Result<()> {
    if !dir.starts_with(parent)
        || dir == parent
        || dir
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(std::io::Error::other(format!(
            "{} is not inside {}",
            dir.display(),
            parent.display()
        )));
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::tests::record;

    fn manifest(platform: Platform) -> LaunchManifest {
        LaunchManifest {
            format: crate::confidential::MANIFEST_FORMAT.into(),
            contract_id: 7,
            platform,
            backend: dc_vmm::BackendKind::Qemu,
            measurement: hex::encode([1u8; 48]),
            host_data: None,
            mrconfigid: None,
            snp_policy: None,
            snp_sev_features: None,
            vcpus: 2,
            vcpu_type: "host".into(),
            memory_mib: 2048,
            firmware_sha256: hex::encode([0u8; 32]),
            kernel_sha256: hex::encode([0u8; 32]),
            initrd_sha256: None,
            cmdline: "console=ttyS0".into(),
            rtmr1: None,
            rtmr2: None,
            not_predicted: Vec::new(),
            snp_measure_input: None,
        }
    }

    /// SEV-SNP publishes MEASUREMENT; TDX publishes MRTD, RTMR1 and RTMR2,
    /// in that order, so that the kernel, initrd and command line a direct
    /// boot loads are covered too; a TDX manifest without its RTMRs
    /// publishes nothing.
    #[test]
    fn the_published_measurement_covers_what_the_platform_measures() {
        let snp = manifest(Platform::SevSnp);
        let (hash, published) = launch_publication(Some(&snp)).unwrap();
        assert_eq!(hash, snp.hash());
        assert_eq!(published, Some(vec![1u8; 48]));

        let mut tdx = manifest(Platform::Tdx);
        tdx.rtmr1 = Some(hex::encode([2u8; 48]));
        tdx.rtmr2 = Some(hex::encode([3u8; 48]));
        let (_, published) = launch_publication(Some(&tdx)).unwrap();
        let want: Vec<u8> = [[1u8; 48], [2; 48], [3; 48]].concat();
        assert_eq!(published, Some(want));

        tdx.rtmr2 = None;
        let err = launch_publication(Some(&tdx)).unwrap_err().to_string();
        assert!(err.contains("rtmr2"), "{err}");
        tdx.rtmr2 = Some("abcd".into());
        assert!(launch_publication(Some(&tdx)).is_err());

        let (hash, published) = launch_publication(None).unwrap();
        assert_eq!((hash, published), (no_evidence_hash(), None));
    }
    use crate::resources::{EffectiveLimits, GpuGroup};
    use dc_ledger_core::Resources;

    fn node() -> Principal {
        dc_identity::Identity::from_secret_bytes([1; 32]).principal()
    }

    fn contract(id: u64, state: ContractState, vcpus: u32) -> Contract {
        Contract {
            id,
            offering_id: 0,
            developer: Principal::anonymous(),
            provider: Principal::anonymous(),
            node: node(),
            resources: Resources {
                vcpus,
                ram_gib: 1,
                storage_gib: 1,
                gpus: 0,
            },
            gpu_model: None,
            price_e9s_per_hour: 1,
            hours: 1,
            state,
            created_at_ns: 0,
            provisioning_deadline_ns: 0,
            active_since_ns: None,
            ends_at_ns: None,
            paid_e9s: 1,
            released_e9s: 0,
            refunded_e9s: 0,
            fees_e9s: 0,
            endpoint: None,
            evidence_hash: None,
            launch_measurement: None,
            ingress: Default::default(),
            history: vec![],
        }
    }

    fn resources() -> ResourceManager {
        ResourceManager::new(EffectiveLimits {
            vcpus: 4,
            memory_mib: 8192,
            storage_gib: 100,
            gpu_groups: vec![GpuGroup {
                group: "1".into(),
                model: "H100".into(),
                devices: vec![],
            }],
        })
    }

    #[test]
    fn requested_contracts_are_taken_until_full_then_rejected() {
        let cs = vec![
            contract(3, ContractState::Requested, 2),
            contract(1, ContractState::Requested, 2),
            contract(2, ContractState::Requested, 1),
        ];
        let actions = plan(node(), &cs, &BTreeMap::new(), &resources());
        assert!(matches!(&actions[0], Action::Provision { contract } if contract.id == 1));
        assert!(matches!(&actions[1], Action::Provision { contract } if contract.id == 2));
        assert!(
            matches!(&actions[2], Action::Reject { contract_id: 3, reason } if reason.contains("vcpus"))
        );
    }

    #[test]
    fn other_nodes_contracts_and_handled_ones_are_left_alone() {
        let mut foreign = contract(1, ContractState::Requested, 1);
        foreign.node = Principal::anonymous();
        let mut vms = BTreeMap::new();
        vms.insert(2, record(2, VmRecordState::Released));
        vms.insert(3, record(3, VmRecordState::Failed));
        let cs = vec![
            foreign,
            contract(2, ContractState::Provisioning, 1),
            contract(3, ContractState::Provisioning, 1),
        ];
        assert_eq!(
            plan(node(), &cs, &vms, &resources()),
            vec![],
            "released or failed VMs are never relaunched"
        );
    }

    #[test]
    fn finished_contracts_tear_their_vm_down() {
        let mut vms = BTreeMap::new();
        vms.insert(5, record(5, VmRecordState::Active));
        let active = plan(
            node(),
            &[contract(5, ContractState::Active, 1)],
            &vms,
            &resources(),
        );
        assert_eq!(active, vec![]);
        for s in [
            ContractState::Cancelled,
            ContractState::Expired,
            ContractState::DeadlineMissed,
        ] {
            let a = plan(node(), &[contract(5, s, 1)], &vms, &resources());
            assert!(
                matches!(&a[..], [Action::Teardown { contract_id: 5, .. }]),
                "{s:?}: {a:?}"
            );
        }
    }

    #[test]
    fn a_report_whose_reply_was_lost_is_reconciled_and_retry_records_are_provisioned_again() {
        let mut vms = BTreeMap::new();
        let mut launched = record(5, VmRecordState::Provisioning);
        launched.handle = Some(dc_vmm::VmHandle {
            id: "c5".into(),
            backend: dc_vmm::BackendKind::Qemu,
            pid: 1,
            pid_start_ticks: 1,
            api_socket: "/d/vms/c5/qmp.sock".into(),
            run_dir: "/d/vms/c5".into(),
        });
        vms.insert(5, launched);
        vms.insert(6, record(6, VmRecordState::Retry));
        let mut active = contract(5, ContractState::Active, 1);
        active.endpoint = Some("127.0.0.1:20000".into());
        let a = plan(
            node(),
            &[active, contract(6, ContractState::Accepted, 1)],
            &vms,
            &resources(),
        );
        assert_eq!(
            a[0],
            Action::MarkActive {
                contract_id: 5,
                endpoint: "127.0.0.1:20000".into()
            }
        );
        assert!(matches!(&a[1], Action::Provision { contract } if contract.id == 6));
        assert_eq!(a.len(), 2);
        // Still provisioning on the ledger: report again.
        let a = plan(
            node(),
            &[contract(5, ContractState::Provisioning, 1)],
            &vms,
            &resources(),
        );
        assert_eq!(a, vec![Action::Resume { contract_id: 5 }]);
        // A retry record of a contract that ended is left alone.
        let a = plan(
            node(),
            &[contract(6, ContractState::Cancelled, 1)],
            &vms,
            &resources(),
        );
        assert_eq!(a, vec![]);
    }

    #[test]
    fn only_ledger_refusals_count_as_refusals() {
        assert!(is_refusal(&ClientError::Ledger(LedgerError::NotFound {
            what: "contract".into(),
            id: "1".into()
        })));
        assert!(is_refusal(&ClientError::Rejected {
            status: 403,
            message: "no".into()
        }));
        for transport in [
            ClientError::Unreachable {
                url: "u".into(),
                reason: "r".into(),
            },
            ClientError::Decode {
                method: "m".into(),
                reason: "r".into(),
            },
            ClientError::Agent("a".into()),
            ClientError::Rejected {
                status: 503,
                message: "busy".into(),
            },
        ] {
            assert!(!is_refusal(&transport), "{transport}");
        }
    }

    #[test]
    fn vmm_processes_are_found_by_their_run_dir_only() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("vms/c1");
        std::fs::create_dir_all(&run).unwrap();
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30; true"])
            .arg(run.join("qmp.sock"))
            .spawn()
            .unwrap();
        // Until it has exec'd, the child still shows this test's command line.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut found = vmm_processes_of(&run);
        while found.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            found = vmm_processes_of(&run);
        }
        // (The shell may show a second, forked copy of itself for a moment.)
        assert!(
            found.iter().any(|p| p.0 == child.id()),
            "{found:?} lacks {}",
            child.id()
        );
        assert!(
            vmm_processes_of(&d.path().join("vms/c")).is_empty(),
            "c is not a prefix of c1"
        );
        assert!(vmm_processes_of(&d.path().join("vms/c10")).is_empty());
        // A pidfile naming a process that does not mention the dir is ignored.
        std::fs::write(run.join("qemu.pid"), "1").unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(vmm_processes_of(&run).is_empty());
    }

    #[test]
    fn ingress_routes_follow_active_vms_of_live_contracts() {
        let sec: crate::config::IngressSection = toml::from_str(
            "domain = \"node1.example\"\nguest_tls_port = 443\nguest_http_port = 80\n",
        )
        .unwrap();
        let fwd = |host_port, guest_port| PortForward {
            host_addr: "127.0.0.1".parse().unwrap(),
            host_port,
            guest_port,
        };
        let mut vms = BTreeMap::new();
        // 1: user mode with the ingress's forwards.
        let mut user = record(1, VmRecordState::Active);
        user.spec.network = Network::User {
            forwards: vec![fwd(20000, 22), fwd(20001, 443), fwd(20002, 80)],
        };
        vms.insert(1, user);
        // 2: bridged.
        let mut bridged = record(2, VmRecordState::Active);
        let vm_addr: std::net::Ipv4Addr = "10.88.0.7".parse().unwrap();
        bridged.net = Some(VmNet {
            tap: "dct0a580007".into(),
            vm_addr,
            forward: Forward {
                host_addr: "192.0.2.1".parse().unwrap(),
                host_port: 20003,
                vm_addr,
                guest_port: 22,
            },
        });
        vms.insert(2, bridged);
        // 3: still booting; 4: launched before the ingress (no forwards); 5: cancelled.
        vms.insert(3, record(3, VmRecordState::Provisioning));
        vms.insert(4, record(4, VmRecordState::Active));
        vms.insert(5, record(5, VmRecordState::Active));
        let mut with_domains = contract(2, ContractState::Active, 1);
        with_domains.ingress.domains = vec![
            "api.example.com".into(),
            "*.apps.example.com".into(),
            "c7.node1.example".into(),
            "x.c7.node1.example".into(),
        ];
        with_domains.ingress.proxy_protocol = true;
        let contracts = vec![
            contract(1, ContractState::Active, 1),
            with_domains,
            contract(3, ContractState::Provisioning, 1),
            contract(4, ContractState::Active, 1),
            contract(5, ContractState::Cancelled, 1),
        ];
        let routes = ingress_routes(&sec, &vms, &contracts);
        assert_eq!(routes.len(), 2, "{routes:?}");
        assert_eq!(routes[0].contract_id, 1);
        assert_eq!(routes[0].names, vec!["c1.node1.example".to_string()]);
        assert_eq!(routes[0].tls_upstream, "127.0.0.1:20001".parse().unwrap());
        assert_eq!(
            routes[0].http_upstream,
            Some("127.0.0.1:20002".parse().unwrap())
        );
        assert_eq!(
            routes[1].names,
            vec!["c2.node1.example", "api.example.com", "*.apps.example.com"],
            "custom domains routed, none under the node's own domain"
        );
        assert!(routes[1].proxy_protocol && !routes[0].proxy_protocol);
        assert_eq!(routes[1].tls_upstream, "10.88.0.7:443".parse().unwrap());
        assert_eq!(
            routes[1].http_upstream,
            Some("10.88.0.7:80".parse().unwrap())
        );
        assert_eq!(routes[1].max_connections, sec.max_connections_per_route);
        // The table takes them as one update.
        let table = dc_ingress::RouteTable::new();
        let u = table.replace(routes).unwrap();
        assert_eq!(u.added, vec![1, 2]);
    }

    #[test]
    fn the_no_evidence_hash_is_the_documented_marker() {
        assert_eq!(
            hex::encode(no_evidence_hash()),
            hex::encode(Sha256::digest(b"dc-evidence/none"))
        );
    }

    #[test]
    fn run_dirs_outside_the_vm_folder_are_never_removed() {
        let d = tempfile::tempdir().unwrap();
        let vms = d.path().join("vms");
        std::fs::create_dir_all(vms.join("c1")).unwrap();
        assert!(remove_dir_if_inside(d.path(), &vms).is_err());
        assert!(remove_dir_if_inside(&vms.join("../x"), &vms).is_err());
        remove_dir_if_inside(&vms.join("c1"), &vms).unwrap();
        assert!(!vms.join("c1").exists());
        remove_dir_if_inside(&vms.join("c1"), &vms).unwrap();
    }
}
