//! What the agent's integration tests share: a real `dc-ledger` with a funded
//! provider and developer, the agent's configuration over a fake host root,
//! and a fake Hypervisor that records what the agent asks of it.

// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dc_appliance::agent::{system_clock, SerialProbe};
use dc_appliance::config::Config;
use dc_appliance::inventory;
use dc_appliance::node;
use dc_appliance::resources::{EffectiveLimits, ResourceManager};
use dc_appliance::{Agent, Backends};
use dc_identity::{Identity, Principal};
use dc_ledger::launch::LedgerProcess;
use dc_ledger_client::LedgerClient;
use dc_ledger_core::{Confidential, OfferingSpec, ProviderProfile};
use dc_vmm::{
    BackendKind, Device, Hypervisor, VmCounters, VmHandle, VmInfo, VmSpec, VmState, VmmError,
};

pub const TOKEN: u64 = 1_000_000_000;

/// dc-ledger next to the test's target dir, built if this test runs alone.
pub fn ledger_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    let path = dir.join("dc-ledger");
    if !path.exists() {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", "dc-ledger", "--bin", "dc-ledger"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().expect("cargo build").success(),
            "building dc-ledger"
        );
    }
    path
}

/// A running ledger with a registered provider (100 tokens) and a developer
/// (1000 tokens), each with a client signed by its key.
pub struct Market {
    pub ledger: LedgerProcess,
    pub prov: LedgerClient,
    pub dev: LedgerClient,
}

/// Starts `dc-ledger` in `dir/ledger` (its log in `log` when given) with a
/// fresh treasury, provider and developer, and registers the provider.
pub async fn start_market(dir: &Path, log: Option<&Path>) -> Market {
    let mut rng = rand_core::OsRng;
    let treasury = Identity::generate(&mut rng);
    let provider = Identity::generate(&mut rng);
    let developer = Identity::generate(&mut rng);
    let genesis = dir.join("genesis.toml");
    std::fs::write(
        &genesis,
        format!(
            "treasury = \"{}\"\n[params]\nblock_interval_secs = 3600\n\
             [[balances]]\nprincipal = \"{}\"\namount_e9s = {}\n\
             [[balances]]\nprincipal = \"{}\"\namount_e9s = {}\n",
            treasury.principal().to_text(),
            provider.principal().to_text(),
            100 * TOKEN,
            developer.principal().to_text(),
            1_000 * TOKEN,
        ),
    )
    .unwrap();
    let ledger = LedgerProcess::start(
        &ledger_bin(),
        &dir.join("ledger"),
        Some(&genesis),
        log,
        Duration::from_secs(60),
    )
    .expect("start dc-ledger");
    let prov = LedgerClient::connect(&ledger.url, Some(provider))
        .await
        .unwrap();
    prov.register_provider(ProviderProfile {
        legal_name: "Alpha Cloud GmbH".into(),
        jurisdiction: "DE".into(),
        email: "ops@alpha.example".into(),
        website: String::new(),
    })
    .await
    .unwrap();
    let dev = LedgerClient::connect(&ledger.url, Some(developer))
        .await
        .unwrap();
    Market { ledger, prov, dev }
}

/// Initialises the node (key, claim token) and claims it for `prov` with the
/// capabilities measured on `cfg.host_root`; returns the node's principal.
pub async fn claim_node(cfg: &Config, prov: &LedgerClient) -> Principal {
    let status = node::init(cfg, &mut rand_core::OsRng).unwrap();
    let inv = inventory::measure(&cfg.host_root, &cfg.data_dir).unwrap();
    let caps = inv.capabilities(cfg, &EffectiveLimits::resolve(&cfg.limits, &inv));
    node::claim(
        cfg,
        status
            .claim_token
            .as_deref()
            .expect("a token while unclaimed"),
        prov,
        caps,
        (system_clock())(),
    )
    .await
    .expect("claim");
    status.identity.principal()
}

/// The driver each watched PCI device (a `sys/bus/pci/devices/<address>`
/// directory) is bound to now, from its `driver` link.
pub fn drivers_of(devices: &[PathBuf]) -> Vec<Option<String>> {
    devices
        .iter()
        .map(|d| {
            std::fs::read_link(d.join("driver"))
                .ok()
                .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
        })
        .collect()
}

/// Records launches and deletions; "boots" by writing the readiness marker to the serial log.
#[derive(Default)]
pub struct FakeVmm {
    pub launched: Mutex<Vec<VmSpec>>,
    pub adopted: Mutex<Vec<String>>,
    pub deleted: Mutex<Vec<String>>,
    pub dead: Mutex<HashSet<String>>,
    /// Poses as the Cloud Hypervisor backend.
    pub cloud_hypervisor: bool,
    /// The next launch starts a stray "VMM" process naming the run dir, then fails.
    pub leave_stray: Mutex<bool>,
    pub strays: Mutex<Vec<std::process::Child>>,
    /// PCI device directories whose drivers are noted at every launch and
    /// deletion: a real VMM opens its VFIO devices at launch and closes them
    /// when deleted, so they must be on vfio-pci for that whole time.
    pub watch: Vec<PathBuf>,
    /// The watched devices' drivers at each launch, in order.
    pub drivers_at_launch: Mutex<Vec<Vec<Option<String>>>>,
    /// The watched devices' drivers at each deletion, in order.
    pub drivers_at_delete: Mutex<Vec<Vec<Option<String>>>>,
}

impl FakeVmm {
    /// A fake that notes the drivers of `devices` at each launch and deletion.
    pub fn watching(devices: Vec<PathBuf>) -> Self {
        let mut vmm = FakeVmm::default();
        vmm.watch = devices;
        vmm
    }

    pub fn stray_alive(&self) -> bool {
        self.strays
            .lock()
            .unwrap()
            .iter_mut()
            .any(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for FakeVmm {
    fn drop(&mut self) {
        for c in self.strays.lock().unwrap().iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Hypervisor for FakeVmm {
    fn kind(&self) -> BackendKind {
        if self.cloud_hypervisor {
            BackendKind::CloudHypervisor
        } else {
            BackendKind::Qemu
        }
    }
    fn check(&self, spec: &VmSpec) -> Result<(), VmmError> {
        spec.validate()
    }
    fn launch(&self, spec: &VmSpec) -> Result<VmHandle, VmmError> {
        if std::mem::take(&mut *self.leave_stray.lock().unwrap()) {
            // A VMM that outlives its failed launch (or a launch the agent was
            // killed in): its command line names the run dir, like QEMU's.
            std::fs::create_dir_all(&spec.run_dir).unwrap();
            let child = Command::new("sh")
                .args(["-c", "sleep 30; true"])
                .arg(spec.run_dir.join("qmp.sock"))
                .spawn()
                .unwrap();
            std::fs::write(spec.run_dir.join("qemu.pid"), child.id().to_string()).unwrap();
            // Like a real VMM after a launch timeout: running with its own command line.
            let needle = spec.run_dir.display().to_string();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !std::fs::read(format!("/proc/{}/cmdline", child.id()))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            self.strays.lock().unwrap().push(child);
            return Err(VmmError::Timeout {
                backend: "fake",
                socket: spec.run_dir.join("qmp.sock"),
                timeout_ms: 1,
            });
        }
        std::fs::write(spec.serial_log(), "Booting...\nfake login: ")
            .map_err(|e| VmmError::io(&spec.serial_log(), e))?;
        self.drivers_at_launch
            .lock()
            .unwrap()
            .push(drivers_of(&self.watch));
        self.launched.lock().unwrap().push(spec.clone());
        let pid = std::process::id();
        Ok(VmHandle {
            id: spec.id.clone(),
            backend: BackendKind::Qemu,
            pid,
            pid_start_ticks: dc_vmm::process::start_ticks(pid).unwrap_or(0),
            api_socket: spec.run_dir.join("qmp.sock"),
            run_dir: spec.run_dir.clone(),
        })
    }
    fn adopt(&self, handle: &VmHandle) -> Result<VmInfo, VmmError> {
        if self.dead.lock().unwrap().contains(&handle.id) {
            return Err(VmmError::Gone {
                id: handle.id.clone(),
                pid: handle.pid,
            });
        }
        self.adopted.lock().unwrap().push(handle.id.clone());
        self.info(handle)
    }
    fn info(&self, _: &VmHandle) -> Result<VmInfo, VmmError> {
        Ok(VmInfo {
            state: VmState::Running,
            vcpus: 1,
            memory_mib: 1024,
            devices: vec![],
        })
    }
    fn counters(&self, _: &VmHandle) -> Result<VmCounters, VmmError> {
        Ok(VmCounters::new())
    }
    fn pause(&self, _: &VmHandle) -> Result<(), VmmError> {
        Ok(())
    }
    fn resume(&self, _: &VmHandle) -> Result<(), VmmError> {
        Ok(())
    }
    fn reboot(&self, _: &VmHandle) -> Result<(), VmmError> {
        Ok(())
    }
    fn shutdown(&self, _: &VmHandle) -> Result<(), VmmError> {
        Ok(())
    }
    fn delete(&self, handle: &VmHandle) -> Result<(), VmmError> {
        self.drivers_at_delete
            .lock()
            .unwrap()
            .push(drivers_of(&self.watch));
        self.deleted.lock().unwrap().push(handle.id.clone());
        Ok(())
    }
    fn add_device(&self, _: &VmHandle, _: &Device) -> Result<String, VmmError> {
        Err(VmmError::Unsupported {
            backend: "fake",
            reason: "no hotplug".into(),
        })
    }
    fn remove_device(&self, _: &VmHandle, _: &str) -> Result<(), VmmError> {
        Ok(())
    }
}

/// The agent's configuration: data in `dir/data`, the host tree in
/// `dir/host`, user-mode networking, readiness by the serial marker the
/// fake VMM writes.
pub fn config(dir: &Path, ledger_url: &str, max_vcpus: u32) -> Config {
    let text = format!(
        "data_dir = \"{data}\"\nledger_url = \"{ledger_url}\"\nregion = \"eu-central\"\ncountry = \"DE\"\n\
         host_root = \"{root}\"\ncheck_in_interval_secs = 1\npoll_interval_ms = 50\nvm_boot_timeout_secs = 10\n\
         [limits]\nmax_vcpus = {max_vcpus}\nmax_memory_mib = 16384\nmax_storage_gib = 20\n\
         [guest]\nkernel = \"/nonexistent/vmlinuz\"\nbase_disk = \"/nonexistent/base.qcow2\"\n\
         [network]\nport_min = 31000\nport_max = 31999\nguest_port = 22\n\
         [readiness]\nprobe = \"serial\"\nserial_marker = \"login:\"\n",
        data = dir.join("data").display(),
        root = dir.join("host").display(),
    );
    Config::parse(Path::new("test.toml"), &text).expect("test config")
}

/// The resource accounting of the host as measured now.
pub fn resources(c: &Config) -> ResourceManager {
    let inv = inventory::measure(&c.host_root, &c.data_dir).unwrap();
    ResourceManager::new(EffectiveLimits::resolve(&c.limits, &inv))
}

pub async fn start_agent(c: &Config, vmm: Arc<FakeVmm>) -> Agent {
    start_agent_with_sysfs(c, vmm, Arc::new(dc_appliance::vfio::HostSysfs)).await
}

/// [`start_agent`] with GPUs bound through `sysfs` (recovery at start included).
#[allow(dead_code)]
pub async fn start_agent_with_sysfs(
    c: &Config,
    vmm: Arc<FakeVmm>,
    sysfs: Arc<dyn dc_appliance::vfio::Sysfs + Send + Sync>,
) -> Agent {
    let node_id = node::load_identity(c).unwrap();
    let client = LedgerClient::connect(&c.ledger_url, Some(node_id))
        .await
        .unwrap();
    Agent::start_with_sysfs(
        c.clone(),
        Backends::single(vmm, false),
        client,
        Arc::new(SerialProbe {
            marker: "login:".into(),
        }),
        resources(c),
        system_clock(),
        sysfs,
    )
    .expect("agent starts")
}

/// A plain offering in eu-central/DE: `vcpus`, 2 GiB, 1 GiB of disk, 1 token an hour.
pub fn offering(node: Principal, name: &str, vcpus: u32) -> OfferingSpec {
    OfferingSpec {
        node,
        name: name.into(),
        vcpus,
        ram_gib: 2,
        storage_gib: 1,
        bandwidth_mbps: 100,
        gpu: None,
        confidential: Confidential::None,
        region: "eu-central".into(),
        country: "DE".into(),
        price_e9s_per_hour: TOKEN,
        min_hours: 1,
        max_hours: 10,
    }
}

/// Every line of the agent's journal, parsed.
pub fn journal_lines(cfg: &Config) -> Vec<serde_json::Value> {
    std::fs::read_to_string(cfg.journal_path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
