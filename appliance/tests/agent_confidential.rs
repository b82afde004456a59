//! A confidential (SEV-SNP) contract through the agent, against a real
//! `dc-ledger` with a fake VMM on a fake SNP host: the launched spec binds the
//! contract (HOST_DATA = the contract binding), uses the fixed vCPU model and
//! a policy without debug; the ledger gets the measurement predicted from the
//! very firmware, kernel, initrd and command line the spec boots, and the
//! launch manifest's hash as evidence hash. A confidential contract the node
//! cannot plan (no firmware configured) is rejected, never run as a regular VM.
//!
//! Needs the sev-snp-measure OVMF fixture from the vectors (`DC_VECTORS` or
//! ../shared/vectors); skipped with a message without it.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{claim_node, config, resources, start_market, FakeVmm};
use dc_appliance::agent::{system_clock, SerialProbe};
use dc_appliance::config::Config;
use dc_appliance::inventory::fake::write_host;
use dc_appliance::journal::VmRecordState;
use dc_appliance::{node, Agent, Backends};
use dc_ledger_client::LedgerClient;
use dc_ledger_core::{Confidential, ContractState};
use dc_vmm::{Boot, Confidential as VmConfidential, SNP_POLICY_DEBUG};
use sha2::{Digest, Sha256};

const KERNEL: &[u8] = b"MZ a kernel image, as far as kernel hashes care";
const INITRD: &[u8] = b"070701 an initrd";
const CMDLINE: &str = "console=ttyS0 quiet";

/// A fake AMD host with SEV-SNP on (`/dev/sev`, `kvm_amd sev_snp=Y`).
fn snp_host(root: &Path) {
    write_host(root, "AMD EPYC 9654", 16, 65536, &[]);
    std::fs::create_dir_all(root.join("dev")).unwrap();
    std::fs::write(root.join("dev/sev"), "").unwrap();
    std::fs::create_dir_all(root.join("sys/module/kvm_amd/parameters")).unwrap();
    std::fs::write(root.join("sys/module/kvm_amd/parameters/sev_snp"), "Y\n").unwrap();
}

/// The test config with the guest's confidential boot artifacts.
fn snp_config(dir: &Path, ledger_url: &str, firmware: Option<&Path>) -> Config {
    let base = config(dir, ledger_url, 8);
    let guest = dir.join("guest");
    std::fs::create_dir_all(&guest).unwrap();
    std::fs::write(guest.join("vmlinuz"), KERNEL).unwrap();
    std::fs::write(guest.join("initrd.img"), INITRD).unwrap();
    let mut c = base.clone();
    c.guest.kernel = guest.join("vmlinuz");
    c.guest.initrd = Some(guest.join("initrd.img"));
    c.guest.cmdline = CMDLINE.into();
    c.guest.firmware = firmware.map(Path::to_path_buf);
    c
}

async fn start_kvm_agent(c: &Config, vmm: Arc<FakeVmm>) -> Agent {
    let client = LedgerClient::connect(&c.ledger_url, Some(node::load_identity(c).unwrap()))
        .await
        .unwrap();
    Agent::start(
        c.clone(),
        // Confidential VMs never run emulated: the fake host has KVM.
        Backends::single(vmm, true),
        client,
        Arc::new(SerialProbe {
            marker: "login:".into(),
        }),
        resources(c),
        system_clock(),
    )
    .expect("agent starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_snp_contract_is_bound_predicted_and_published() {
    let Some(vectors) = dc_attestation_common::vectors_dir() else {
        eprintln!("SKIPPED: no attestation vectors (set DC_VECTORS)");
        return;
    };
    let ovmf_path = vectors.join("sev-snp-measure/ovmf_AmdSev_suffix.bin");
    let dir = tempfile::tempdir().unwrap();
    snp_host(&dir.path().join("host"));
    let m = start_market(dir.path(), Some(&dir.path().join("ledger.log"))).await;
    let cfg = snp_config(dir.path(), &m.ledger.url, Some(&ovmf_path));
    let node = claim_node(&cfg, &m.prov).await;
    let mut spec = common::offering(node, "snp", 2);
    spec.confidential = Confidential::SevSnp;
    let off = m.prov.add_offering(spec).await.expect("an SNP offering");
    let c = m.dev.rent(off, 2).await.unwrap();

    let vmm = Arc::new(FakeVmm::default());
    let mut agent = start_kvm_agent(&cfg, vmm.clone()).await;
    agent.tick().await.unwrap();
    let contract = m.dev.contract(c.id).await.unwrap().expect("contract");
    assert_eq!(contract.state, ContractState::Active, "{contract:?}");

    // The launched spec: the contract bound into HOST_DATA, no debug.
    let launched = vmm.launched.lock().unwrap().clone();
    assert_eq!(launched.len(), 1);
    let spec = &launched[0];
    let want_host_data = dc_attestation_common::contract_host_data(
        c.id,
        m.dev.principal().as_slice(),
        node.as_slice(),
    );
    match &spec.confidential {
        VmConfidential::SevSnp { policy, host_data } => {
            assert_eq!(*host_data, want_host_data, "HOST_DATA is the contract binding");
            assert_eq!(policy & SNP_POLICY_DEBUG, 0, "never debuggable");
        }
        other => panic!("not an SNP launch: {other:?}"),
    }
    assert_eq!(spec.accel, dc_vmm::Accel::Kvm);
    let Boot::Kernel {
        firmware, cmdline, ..
    } = &spec.boot
    else {
        panic!("direct kernel boot expected: {:?}", spec.boot);
    };
    assert_eq!(firmware.as_deref(), Some(ovmf_path.as_path()));
    assert_eq!(cmdline, CMDLINE);

    // The published measurement is dc-measure's for exactly those inputs.
    let ovmf = std::fs::read(&ovmf_path).unwrap();
    let input = dc_measure::snp::SnpMeasureInput::from_files(
        &ovmf,
        KERNEL,
        INITRD,
        CMDLINE,
        spec.vcpus,
        dc_vmm_qemu::SNP_CPU_MODEL,
        dc_vmm_qemu::SNP_SEV_FEATURES,
    )
    .unwrap();
    let want = dc_measure::snp::launch_digest(&input).unwrap();
    assert_eq!(
        contract.launch_measurement.as_ref().map(|b| b.to_vec()),
        Some(want.to_vec()),
        "the ledger has the predicted measurement"
    );

    // The evidence hash is the launch manifest's, journaled with the VM.
    let record = agent.vms()[&c.id].clone();
    assert_eq!(record.state, VmRecordState::Active);
    let manifest = record.launch.expect("the launch manifest is journaled");
    assert_eq!(manifest.measurement, hex::encode(want));
    assert_eq!(manifest.host_data.as_deref(), Some(hex::encode(want_host_data).as_str()));
    assert_eq!(manifest.kernel_sha256, hex::encode(Sha256::digest(KERNEL)));
    assert_eq!(
        contract.evidence_hash.as_ref().map(|b| b.to_vec()),
        Some(Sha256::digest(manifest.canonical_json()).to_vec()),
        "evidence hash = SHA-256 of the manifest's canonical JSON"
    );

    // A restart re-adopts it without launching again; the journaled manifest stays.
    drop(agent);
    let mut agent = start_kvm_agent(&cfg, vmm.clone()).await;
    agent.tick().await.unwrap();
    assert_eq!(vmm.launched.lock().unwrap().len(), 1);
    assert!(agent.vms()[&c.id].launch.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confidential_contract_the_node_cannot_plan_is_rejected_not_run_plain() {
    let dir = tempfile::tempdir().unwrap();
    snp_host(&dir.path().join("host"));
    let m = start_market(dir.path(), None).await;
    // No guest.firmware: the measurement cannot be predicted.
    let cfg = snp_config(dir.path(), &m.ledger.url, None);
    let node = claim_node(&cfg, &m.prov).await;
    let mut spec = common::offering(node, "snp", 2);
    spec.confidential = Confidential::SevSnp;
    let off = m.prov.add_offering(spec).await.unwrap();
    let c = m.dev.rent(off, 1).await.unwrap();
    let vmm = Arc::new(FakeVmm::default());
    let mut agent = start_kvm_agent(&cfg, vmm.clone()).await;
    agent.tick().await.unwrap();
    let contract = m.dev.contract(c.id).await.unwrap().unwrap();
    assert_eq!(contract.state, ContractState::Rejected, "{contract:?}");
    assert_eq!(contract.refunded_e9s, contract.paid_e9s);
    assert!(vmm.launched.lock().unwrap().is_empty(), "nothing launched");
    assert!(agent.resources().get(c.id).is_none(), "nothing stays reserved");
}
