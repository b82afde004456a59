//! The agent renting a GPU VM, against a real `dc-ledger`, a fake Hypervisor
//! and a fake kernel behind sysfs: the GPU's whole IOMMU group (GPU and audio
//! function; the PCI bridge in the group stays with the host) is bound to
//! vfio-pci before the launch, the VMM is given exactly the bound functions,
//! the bindings are journaled with the drivers to give back, and after the VM
//! is deleted the devices go back to those drivers and the group can be
//! rented again. A contract for a GPU no group is free for is rejected and
//! refunded. A restart adopts the VM without touching sysfs; after a host
//! reboot the VM is relaunched with its group bound again, the journaled
//! drivers kept. A group vfio-pci refuses fails the contract without leaving
//! anything bound or reserved.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{
    claim_node, config, drivers_of, journal_lines, offering, start_agent_with_sysfs, start_market,
    FakeVmm, Market,
};
use dc_appliance::inventory::fake::{write_host, FakeGpu};
use dc_appliance::journal::{VfioBinding, VmRecordState};
use dc_appliance::vfio::fake::{load_driver, prepare_device, FakeKernel};
use dc_appliance::vfio::{BoundDevice, Sysfs, VFIO_PCI};
use dc_appliance::Action;
use dc_ledger_client::ClientError;
use dc_ledger_core::{ContractState, GpuSpec, LedgerError, OfferingSpec};
use dc_vmm::VfioDevice;

const GPU: &str = "0000:41:00.0";
const AUDIO: &str = "0000:41:00.1";
/// The root port above the GPU, in its IOMMU group (no ACS below it).
const BRIDGE: &str = "0000:40:01.1";
/// A second H100, alone in group 40: present when the node is claimed, gone
/// (fallen off the bus) by the time the agent runs.
const SPARE: &str = "0000:c1:00.0";
const GROUP: &str = "17";

fn pci(
    address: &'static str,
    vendor: u16,
    device: u16,
    class: u32,
    group: &'static str,
    peers: &'static [&'static str],
) -> FakeGpu<'static> {
    FakeGpu {
        address,
        vendor,
        device,
        class,
        group: Some(group),
        group_peers: peers,
    }
}

/// A host with an H100 (10de:2330, 3D controller) and its audio function on
/// nvidia and snd_hda_intel, and a PCI bridge on pcieport, all in IOMMU
/// group 17; with `spare`, a second H100 alone in group 40. vfio-pci is
/// loaded. Returns the fake kernel that reacts to sysfs writes on that tree.
fn gpu_host(root: &Path, spare: bool) -> FakeKernel {
    let mut devices = vec![
        pci(GPU, 0x10de, 0x2330, 0x030200, GROUP, &[AUDIO, BRIDGE]),
        pci(AUDIO, 0x10de, 0x22a3, 0x040300, GROUP, &[GPU, BRIDGE]),
        pci(BRIDGE, 0x1022, 0x14ab, 0x060400, GROUP, &[GPU, AUDIO]),
    ];
    if spare {
        devices.push(pci(SPARE, 0x10de, 0x2330, 0x030200, "40", &[]));
    }
    write_host(root, "AMD EPYC 9654", 16, 65536, &devices);
    for d in ["nvidia", "snd_hda_intel", "pcieport", VFIO_PCI] {
        load_driver(root, d).unwrap();
    }
    prepare_device(root, GPU, Some("nvidia")).unwrap();
    prepare_device(root, AUDIO, Some("snd_hda_intel")).unwrap();
    prepare_device(root, BRIDGE, Some("pcieport")).unwrap();
    let mut kernel = FakeKernel::new(root)
        .native(GPU, "nvidia")
        .native(AUDIO, "snd_hda_intel")
        .native(BRIDGE, "pcieport");
    if spare {
        prepare_device(root, SPARE, Some("nvidia")).unwrap();
        kernel = kernel.native(SPARE, "nvidia");
    }
    kernel
}

fn device_dir(root: &Path, address: &str) -> PathBuf {
    root.join("sys/bus/pci/devices").join(address)
}

/// The sysfs directories of the group's GPU, audio function and bridge, in that order.
fn group_dirs(root: &Path) -> Vec<PathBuf> {
    [GPU, AUDIO, BRIDGE]
        .iter()
        .map(|a| device_dir(root, a))
        .collect()
}

fn drivers(names: [&str; 3]) -> Vec<Option<String>> {
    names.iter().map(|n| Some(n.to_string())).collect()
}

fn override_of(root: &Path, address: &str) -> String {
    std::fs::read_to_string(device_dir(root, address).join("driver_override")).unwrap()
}

fn gpu_offering(node: dc_identity::Principal) -> OfferingSpec {
    OfferingSpec {
        gpu: Some(GpuSpec {
            model: "H100".into(),
            count: 1,
            memory_gib: 80,
        }),
        ..offering(node, "h100", 2)
    }
}

/// The agent with GPUs bound through `kernel`, recovery at start included.
async fn start_gpu_agent(
    cfg: &dc_appliance::Config,
    vmm: Arc<FakeVmm>,
    kernel: &Arc<FakeKernel>,
) -> dc_appliance::Agent {
    let sysfs: Arc<dyn Sysfs + Send + Sync> = kernel.clone();
    start_agent_with_sysfs(cfg, vmm, sysfs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_vm_gets_its_whole_iommu_group_and_gives_it_back_after_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let Market { ledger, prov, dev } = start_market(dir.path(), None).await;
    let host = dir.path().join("host");
    let kernel = Arc::new(gpu_host(&host, true));
    let cfg = config(dir.path(), &ledger.url, 8);
    let node = claim_node(&cfg, &prov).await;
    let info = prov.node(node).await.unwrap().expect("registered");
    assert_eq!(
        info.capabilities.gpus,
        vec![GpuSpec {
            model: "H100".into(),
            count: 2,
            memory_gib: 80
        }],
        "the measured GPUs (not the audio function, not the bridge) are registered"
    );

    // The spare GPU is gone before the agent starts: the ledger still sells two.
    std::fs::remove_dir_all(device_dir(&host, SPARE)).unwrap();
    std::fs::remove_dir_all(host.join("sys/kernel/iommu_groups/40")).unwrap();

    let off = prov.add_offering(gpu_offering(node)).await.unwrap();
    let c1 = dev.rent(off, 3).await.unwrap();
    let c2 = dev.rent(off, 1).await.unwrap();
    assert_eq!(c1.gpu_model.as_deref(), Some("H100"));
    let third = dev.rent(off, 1).await;
    assert!(
        matches!(
            third,
            Err(ClientError::Ledger(LedgerError::CapacityExhausted { .. }))
        ),
        "the ledger sells no more GPUs than registered: {third:?}"
    );

    let vmm = Arc::new(FakeVmm::watching(group_dirs(&host)));
    let mut agent = start_gpu_agent(&cfg, vmm.clone(), &kernel).await;
    assert_eq!(
        agent
            .resources()
            .limits()
            .gpu_groups
            .iter()
            .map(|g| g.group.as_str())
            .collect::<Vec<_>>(),
        vec![GROUP],
        "only group 17 is left to rent"
    );
    let actions = agent.tick().await.expect("tick");
    assert!(
        matches!(&actions[..], [Action::Provision { contract }, Action::Reject { contract_id, reason }]
            if contract.id == c1.id && *contract_id == c2.id && reason.contains("GPU")),
        "{actions:?}"
    );

    // The first contract runs with the whole group.
    let active = dev.contract(c1.id).await.unwrap().unwrap();
    assert_eq!(active.state, ContractState::Active);
    assert!(active.endpoint.is_some());
    let passed = vec![
        VfioDevice {
            sysfs_path: device_dir(&host, GPU),
        },
        VfioDevice {
            sysfs_path: device_dir(&host, AUDIO),
        },
    ];
    {
        let launched = vmm.launched.lock().unwrap();
        assert_eq!(launched.len(), 1);
        assert_eq!(
            launched[0].vfio, passed,
            "exactly the bound functions; the bridge stays with the host"
        );
    }
    assert_eq!(
        *vmm.drivers_at_launch.lock().unwrap(),
        vec![drivers([VFIO_PCI, VFIO_PCI, "pcieport"])],
        "bound before the VMM was launched"
    );
    assert_eq!(
        drivers_of(&group_dirs(&host)),
        drivers([VFIO_PCI, VFIO_PCI, "pcieport"])
    );
    assert!(host.join("dev/vfio").join(GROUP).exists());
    assert!(
        !kernel
            .writes()
            .iter()
            .any(|(p, v)| p.contains(BRIDGE) || v.contains(BRIDGE)),
        "nothing is written about the bridge"
    );
    let binding = VfioBinding {
        group: GROUP.into(),
        devices: vec![
            BoundDevice {
                pci_address: GPU.into(),
                previous_driver: Some("nvidia".into()),
            },
            BoundDevice {
                pci_address: AUDIO.into(),
                previous_driver: Some("snd_hda_intel".into()),
            },
        ],
    };
    let rec = agent.vms()[&c1.id].clone();
    assert_eq!(rec.state, VmRecordState::Active);
    assert_eq!(rec.vfio, vec![binding.clone()]);
    assert_eq!(
        rec.spec.vfio, passed,
        "the journaled spec is the launched one"
    );
    let last = journal_lines(&cfg)
        .into_iter()
        .rev()
        .find(|l| l["contract_id"] == c1.id)
        .unwrap();
    assert_eq!(last["state"], "active");
    assert_eq!(
        last["vfio"],
        serde_json::to_value(vec![binding.clone()]).unwrap(),
        "the drivers to give back are on disk"
    );
    assert_eq!(agent.resources().usage().gpu_groups, 1);
    assert_eq!(
        agent.resources().get(c1.id).unwrap().gpu_groups[0].group,
        GROUP
    );

    // The second contract found no free group: rejected, fully refunded, never active.
    let rejected = dev.contract(c2.id).await.unwrap().unwrap();
    assert_eq!(rejected.state, ContractState::Rejected);
    assert_eq!(rejected.refunded_e9s, rejected.paid_e9s);
    assert!(!rejected
        .history
        .iter()
        .any(|(_, s)| *s == ContractState::Active));
    assert!(!agent.vms().contains_key(&c2.id));

    // Another pass binds nothing again.
    let writes = kernel.writes().len();
    assert!(agent.tick().await.unwrap().is_empty());
    assert_eq!(kernel.writes().len(), writes);
    drop(agent);

    // A restart adopts the VM; the devices stay bound and the journal still
    // knows their host drivers (binding again would only find vfio-pci).
    let vmm2 = Arc::new(FakeVmm::watching(group_dirs(&host)));
    let mut agent = start_gpu_agent(&cfg, vmm2.clone(), &kernel).await;
    assert_eq!(*vmm2.adopted.lock().unwrap(), vec![format!("c{}", c1.id)]);
    assert!(vmm2.launched.lock().unwrap().is_empty());
    assert_eq!(agent.vms()[&c1.id].vfio, vec![binding.clone()]);
    assert_eq!(agent.resources().usage().gpu_groups, 1);
    assert_eq!(kernel.writes().len(), writes);
    assert_eq!(
        drivers_of(&group_dirs(&host)),
        drivers([VFIO_PCI, VFIO_PCI, "pcieport"])
    );

    // Cancelled: the VM is deleted while its devices are still on vfio-pci,
    // then they go back to their host drivers and the group is free.
    dev.cancel(c1.id).await.unwrap();
    let actions = agent.tick().await.unwrap();
    assert!(
        matches!(&actions[..], [Action::Teardown { contract_id, .. }] if *contract_id == c1.id),
        "{actions:?}"
    );
    assert_eq!(*vmm2.deleted.lock().unwrap(), vec![format!("c{}", c1.id)]);
    assert_eq!(
        *vmm2.drivers_at_delete.lock().unwrap(),
        vec![drivers([VFIO_PCI, VFIO_PCI, "pcieport"])],
        "released only after the VM was deleted"
    );
    assert_eq!(
        drivers_of(&group_dirs(&host)),
        drivers(["nvidia", "snd_hda_intel", "pcieport"])
    );
    assert_eq!(override_of(&host, GPU), "(null)\n");
    assert_eq!(override_of(&host, AUDIO), "(null)\n");
    assert_eq!(agent.vms()[&c1.id].state, VmRecordState::Released);
    assert_eq!(
        journal_lines(&cfg)
            .iter()
            .rev()
            .find(|l| l["contract_id"] == c1.id)
            .unwrap()["state"],
        "released"
    );
    assert_eq!(agent.resources().usage().gpu_groups, 0);
    assert!(agent.resources().get(c1.id).is_none());
    assert!(!cfg.vm_dir(c1.id).exists());

    // The group is rented again: bound again from the host drivers.
    let c3 = dev.rent(off, 1).await.unwrap();
    let actions = agent.tick().await.unwrap();
    assert!(
        matches!(&actions[..], [Action::Provision { contract }] if contract.id == c3.id),
        "{actions:?}"
    );
    assert_eq!(
        dev.contract(c3.id).await.unwrap().unwrap().state,
        ContractState::Active
    );
    assert_eq!(vmm2.launched.lock().unwrap()[0].vfio, passed);
    assert_eq!(agent.vms()[&c3.id].vfio, vec![binding]);
    assert_eq!(
        drivers_of(&group_dirs(&host)),
        drivers([VFIO_PCI, VFIO_PCI, "pcieport"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_vfio_pci_refuses_is_given_back_and_the_contract_never_becomes_active() {
    let dir = tempfile::tempdir().unwrap();
    let Market { ledger, prov, dev } = start_market(dir.path(), None).await;
    let host = dir.path().join("host");
    // vfio-pci's probe fails for the audio function (after the GPU was bound).
    let kernel = Arc::new(gpu_host(&host, false).vfio_refuses(AUDIO));
    let cfg = config(dir.path(), &ledger.url, 8);
    let node = claim_node(&cfg, &prov).await;
    let off = prov.add_offering(gpu_offering(node)).await.unwrap();
    let c = dev.rent(off, 1).await.unwrap();

    let vmm = Arc::new(FakeVmm::watching(group_dirs(&host)));
    let mut agent = start_gpu_agent(&cfg, vmm.clone(), &kernel).await;
    agent
        .tick()
        .await
        .expect("a failed action does not stop the pass");

    assert!(vmm.launched.lock().unwrap().is_empty(), "never launched");
    let contract = dev.contract(c.id).await.unwrap().unwrap();
    assert_ne!(contract.state, ContractState::Active);
    assert!(!contract
        .history
        .iter()
        .any(|(_, s)| *s == ContractState::Active));
    // The GPU had been bound before the audio function failed: rolled back.
    assert!(kernel
        .writes()
        .iter()
        .any(|(p, v)| p.ends_with("drivers_probe") && v == GPU));
    assert_eq!(
        drivers_of(&group_dirs(&host)),
        drivers(["nvidia", "snd_hda_intel", "pcieport"])
    );
    assert_eq!(override_of(&host, GPU), "(null)\n");
    assert_eq!(override_of(&host, AUDIO), "(null)\n");
    assert_eq!(agent.resources().usage().gpu_groups, 0);
    assert_eq!(agent.resources().usage().vcpus, 0);
    assert!(agent.resources().get(c.id).is_none());
    assert!(!cfg.vm_dir(c.id).exists(), "nothing of the attempt is left");

    let rec = agent.vms()[&c.id].clone();
    assert_eq!(rec.state, VmRecordState::Failed);
    let note = rec.note.clone().unwrap_or_default();
    assert!(
        note.contains(&format!("GPU group {GROUP}"))
            && note.contains(AUDIO)
            && note.contains("expected vfio-pci"),
        "{note}"
    );
    let last = journal_lines(&cfg)
        .into_iter()
        .rev()
        .find(|l| l["contract_id"] == c.id)
        .unwrap();
    assert_eq!(last["state"], "failed");
    assert_eq!(last["note"], note.as_str());

    // A failed record is never tried again: no launch, no more sysfs writes.
    let writes = kernel.writes().len();
    assert!(agent.tick().await.unwrap().is_empty());
    assert!(vmm.launched.lock().unwrap().is_empty());
    assert_eq!(kernel.writes().len(), writes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_host_reboot_a_gpu_vm_is_relaunched_with_its_group_bound_again() {
    let dir = tempfile::tempdir().unwrap();
    let Market { ledger, prov, dev } = start_market(dir.path(), None).await;
    let host = dir.path().join("host");
    let kernel = Arc::new(gpu_host(&host, false));
    let cfg = config(dir.path(), &ledger.url, 8);
    let node = claim_node(&cfg, &prov).await;
    let off = prov.add_offering(gpu_offering(node)).await.unwrap();
    let c = dev.rent(off, 2).await.unwrap();
    let vmm = Arc::new(FakeVmm::watching(group_dirs(&host)));
    let mut agent = start_gpu_agent(&cfg, vmm.clone(), &kernel).await;
    agent.tick().await.unwrap();
    let before = agent.vms()[&c.id].clone();
    assert_eq!(before.state, VmRecordState::Active);
    drop(agent);

    // The host rebooted: the VMM is gone and the host drivers took the devices back.
    dc_appliance::vfio::release_group_with(kernel.as_ref(), &host, GROUP, &before.vfio[0].devices)
        .unwrap();
    assert_eq!(
        drivers_of(&group_dirs(&host)),
        drivers(["nvidia", "snd_hda_intel", "pcieport"])
    );
    let vmm2 = Arc::new(FakeVmm::watching(group_dirs(&host)));
    vmm2.dead.lock().unwrap().insert(format!("c{}", c.id));
    let mut agent = start_gpu_agent(&cfg, vmm2.clone(), &kernel).await;
    // Relaunched during the start or, at the latest, by the first pass.
    agent.tick().await.unwrap();
    assert_eq!(
        *vmm2.launched.lock().unwrap(),
        vec![before.spec.clone()],
        "relaunched once, from the journaled spec and its VFIO devices"
    );
    assert_eq!(
        *vmm2.drivers_at_launch.lock().unwrap(),
        vec![drivers([VFIO_PCI, VFIO_PCI, "pcieport"])],
        "the group was bound again before the VMM started"
    );
    let rec = agent.vms()[&c.id].clone();
    assert_eq!(rec.state, VmRecordState::Active);
    assert!(
        rec.note
            .as_deref()
            .unwrap_or_default()
            .contains("VMM gone on restart"),
        "{rec:?}"
    );
    assert_eq!(
        rec.vfio, before.vfio,
        "the journaled host drivers are kept, not the vfio-pci binding found now"
    );
    assert_eq!(
        dev.contract(c.id).await.unwrap().unwrap().state,
        ContractState::Active
    );

    // And they are what the devices go back to after the VM is deleted.
    dev.cancel(c.id).await.unwrap();
    agent.tick().await.unwrap();
    assert_eq!(*vmm2.deleted.lock().unwrap(), vec![format!("c{}", c.id)]);
    assert_eq!(
        drivers_of(&group_dirs(&host)),
        drivers(["nvidia", "snd_hda_intel", "pcieport"])
    );
    assert_eq!(agent.resources().usage().gpu_groups, 0);
}

/// The fake kernel, noting the agent's journal as it was at the first sysfs write.
struct JournalWitness {
    kernel: Arc<FakeKernel>,
    journal: PathBuf,
    at_first_write: std::sync::Mutex<Option<String>>,
}

impl Sysfs for JournalWitness {
    fn read_to_string(&self, p: &Path) -> std::io::Result<String> {
        self.kernel.read_to_string(p)
    }
    fn write(&self, p: &Path, v: &str) -> std::io::Result<()> {
        self.at_first_write
            .lock()
            .unwrap()
            .get_or_insert_with(|| std::fs::read_to_string(&self.journal).unwrap_or_default());
        self.kernel.write(p, v)
    }
    fn read_link(&self, p: &Path) -> std::io::Result<PathBuf> {
        self.kernel.read_link(p)
    }
    fn list_dir(&self, p: &Path) -> std::io::Result<Vec<String>> {
        self.kernel.list_dir(p)
    }
    fn exists(&self, p: &Path) -> bool {
        self.kernel.exists(p)
    }
}

/// An agent killed in the middle of binding must still know, from its
/// journal, which drivers to give the devices back to: the bindings (with
/// the drivers found) are journaled before the first sysfs write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drivers_to_give_back_are_journaled_before_the_first_sysfs_write() {
    let dir = tempfile::tempdir().unwrap();
    let Market { ledger, prov, dev } = start_market(dir.path(), None).await;
    let host = dir.path().join("host");
    let kernel = Arc::new(gpu_host(&host, false));
    let cfg = config(dir.path(), &ledger.url, 8);
    let node = claim_node(&cfg, &prov).await;
    let off = prov.add_offering(gpu_offering(node)).await.unwrap();
    let c = dev.rent(off, 1).await.unwrap();
    let witness = Arc::new(JournalWitness {
        kernel: kernel.clone(),
        journal: cfg.journal_path(),
        at_first_write: Default::default(),
    });
    let vmm = Arc::new(FakeVmm::watching(group_dirs(&host)));
    let mut agent = start_agent_with_sysfs(&cfg, vmm.clone(), witness.clone()).await;
    agent.tick().await.unwrap();
    assert_eq!(agent.vms()[&c.id].state, VmRecordState::Active);
    let journal = witness
        .at_first_write
        .lock()
        .unwrap()
        .clone()
        .expect("sysfs was written");
    let last: serde_json::Value = journal
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .rfind(|l| l["contract_id"] == c.id)
        .expect("the contract is journaled before binding");
    assert_eq!(
        last["vfio"],
        serde_json::to_value(&agent.vms()[&c.id].vfio).unwrap(),
        "journaled at the first write: {last}"
    );
}
