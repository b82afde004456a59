//! The agent against a real `dc-ledger`, with a fake Hypervisor: claim, an
//! offering rented by a developer becomes an active VM with an endpoint; a
//! contract that does not fit is rejected and never active; a restart
//! re-adopts the VM without launching it again; a cancel deletes the VM,
//! frees its resources and refunds the unreleased part.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{
    claim_node, config, journal_lines, offering, resources, start_agent, start_market, FakeVmm,
    Market,
};
use dc_appliance::agent::{no_evidence_hash, system_clock, SerialProbe};
use dc_appliance::config::Config;
use dc_appliance::inventory::{self, fake};
use dc_appliance::journal::{VmRecord, VmRecordState};
use dc_appliance::node::{self, NodeError};
use dc_appliance::resources::EffectiveLimits;
use dc_appliance::{Action, Agent, Backends};
use dc_ledger::launch::LedgerProcess;
use dc_ledger_client::LedgerClient;
use dc_ledger_core::{Contract, ContractState};
use dc_vmm::BackendKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rented_contract_becomes_a_vm_and_cancel_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand_core::OsRng;
    let Market { ledger, prov, dev } =
        start_market(dir.path(), Some(&dir.path().join("ledger.log"))).await;

    // A fake host: 16 vCPUs, 64 GiB.
    fake::write_host(&dir.path().join("host"), "AMD EPYC 9654", 16, 65536, &[]);
    // Registered with 8 vCPUs; the agent later runs with the limit lowered to 4.
    let claim_cfg = config(dir.path(), &ledger.url, 8);
    let status = node::init(&claim_cfg, &mut rng).unwrap();
    let token = status.claim_token.clone().expect("a token while unclaimed");
    assert!(status.claim.is_none());

    let inv = inventory::measure(&claim_cfg.host_root, &claim_cfg.data_dir).unwrap();
    let caps = inv.capabilities(
        &claim_cfg,
        &EffectiveLimits::resolve(&claim_cfg.limits, &inv),
    );
    assert_eq!(caps.vcpus, 8, "capabilities are capped by the limits");
    let now = (system_clock())();
    let wrong = node::claim(
        &claim_cfg,
        "0123456789abcdef0123456789abcdef",
        &prov,
        caps.clone(),
        now,
    )
    .await;
    assert!(matches!(wrong, Err(NodeError::WrongToken)));
    let claimed = node::claim(&claim_cfg, &token, &prov, caps.clone(), now)
        .await
        .expect("claim");
    assert_eq!(claimed.node, status.identity.principal().to_text());
    assert!(
        !claim_cfg.claim_token_path().exists(),
        "the token is used up"
    );
    let again = node::claim(&claim_cfg, &token, &prov, caps, now).await;
    assert!(matches!(again, Err(NodeError::AlreadyClaimed { .. })));
    let node_principal = status.identity.principal();
    let info = prov
        .node(node_principal)
        .await
        .unwrap()
        .expect("registered");
    assert_eq!(info.provider, prov.principal());
    assert_eq!(info.capabilities.cpu_model, "AMD EPYC 9654");

    // Two offerings on the node; the developer rents both.
    let small = prov
        .add_offering(offering(node_principal, "small", 2))
        .await
        .unwrap();
    let big = prov
        .add_offering(offering(node_principal, "big", 6))
        .await
        .unwrap();
    let c_small = dev.rent(small, 3).await.unwrap();
    let c_big = dev.rent(big, 1).await.unwrap();
    assert_eq!(c_small.state, ContractState::Requested);

    // The agent, with the vCPU limit lowered to 4 since registration.
    let cfg = config(dir.path(), &ledger.url, 4);
    let vmm = Arc::new(FakeVmm::default());
    let mut agent = start_agent(&cfg, vmm.clone()).await;
    agent.check_in().await.expect("check-in");
    let node_info = prov.node(node_principal).await.unwrap().unwrap();
    assert!(
        node_info.last_check_in_block.is_some(),
        "the ledger saw the check-in"
    );
    agent
        .check_in()
        .await
        .expect("a second check-in in the same block is not an error");

    let actions = agent.tick().await.expect("tick");
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Provision { contract } if contract.id == c_small.id)));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Reject { contract_id, .. } if *contract_id == c_big.id)));

    let active = dev.contract(c_small.id).await.unwrap().unwrap();
    assert_eq!(active.state, ContractState::Active);
    let endpoint = active.endpoint.clone().expect("endpoint");
    assert!(endpoint.starts_with("127.0.0.1:31"), "{endpoint}");
    assert_eq!(
        active.evidence_hash.as_deref().map(|b| b.to_vec()),
        Some(no_evidence_hash().to_vec())
    );
    let rejected = dev.contract(c_big.id).await.unwrap().unwrap();
    assert_eq!(rejected.state, ContractState::Rejected);
    assert_eq!(rejected.refunded_e9s, rejected.paid_e9s);
    assert!(!rejected
        .history
        .iter()
        .any(|(_, s)| *s == ContractState::Active));

    {
        let launched = vmm.launched.lock().unwrap();
        assert_eq!(launched.len(), 1);
        let spec = &launched[0];
        assert_eq!(spec.id, format!("c{}", c_small.id));
        assert_eq!((spec.vcpus, spec.memory_mib), (2, 2048));
        assert_eq!(spec.run_dir, cfg.vm_dir(c_small.id));
        assert!(spec.disks[0].path.starts_with(cfg.vm_dir(c_small.id)));
        assert!(
            matches!(&spec.network, dc_vmm::Network::User { forwards } if endpoint.ends_with(&format!(":{}", forwards[0].host_port)))
        );
    }
    assert_eq!(agent.resources().usage().vcpus, 2);
    // Another pass changes nothing.
    assert!(agent.tick().await.unwrap().is_empty());
    drop(agent);

    // Restart with the same data dir: adopted, not launched again.
    let vmm2 = Arc::new(FakeVmm::default());
    let mut agent = start_agent(&cfg, vmm2.clone()).await;
    assert_eq!(
        *vmm2.adopted.lock().unwrap(),
        vec![format!("c{}", c_small.id)]
    );
    assert_eq!(
        agent.resources().usage().vcpus,
        2,
        "resources rebuilt from the journal"
    );
    assert!(agent.tick().await.unwrap().is_empty());
    assert!(vmm2.launched.lock().unwrap().is_empty(), "never relaunched");

    // The developer cancels: the VM goes, resources are freed, the rest is refunded.
    let dev_before = dev.balance_of(dev.principal()).await.unwrap();
    let cancelled = dev.cancel(c_small.id).await.unwrap();
    assert_eq!(cancelled.state, ContractState::Cancelled);
    assert_eq!(
        cancelled.refunded_e9s + cancelled.released_e9s,
        cancelled.paid_e9s
    );
    assert!(
        cancelled.refunded_e9s > cancelled.paid_e9s / 2,
        "most of 3 paid hours comes back"
    );
    let dev_after = dev.balance_of(dev.principal()).await.unwrap();
    assert_eq!(dev_after - dev_before, cancelled.refunded_e9s);

    let actions = agent.tick().await.unwrap();
    assert!(
        matches!(&actions[..], [Action::Teardown { contract_id, .. }] if *contract_id == c_small.id)
    );
    assert_eq!(
        *vmm2.deleted.lock().unwrap(),
        vec![format!("c{}", c_small.id)]
    );
    assert!(!cfg.vm_dir(c_small.id).exists(), "the run dir is wiped");
    assert_eq!(agent.resources().usage().vcpus, 0);
    assert_eq!(agent.vms()[&c_small.id].state, VmRecordState::Released);
    drop(agent);

    // A later restart neither adopts nor relaunches a released VM.
    let vmm3 = Arc::new(FakeVmm::default());
    let mut agent = start_agent(&cfg, vmm3.clone()).await;
    assert!(agent.tick().await.unwrap().is_empty());
    assert!(vmm3.launched.lock().unwrap().is_empty() && vmm3.adopted.lock().unwrap().is_empty());
}

/// A claimed node with a 1-vCPU offering rented once (contract Requested).
struct One {
    _ledger: LedgerProcess,
    cfg: Config,
    prov: LedgerClient,
    dev: LedgerClient,
    offering: u64,
    contract: u64,
}

async fn one_contract(dir: &Path) -> One {
    let Market { ledger, prov, dev } = start_market(dir, None).await;
    fake::write_host(&dir.join("host"), "AMD EPYC 9654", 8, 32768, &[]);
    let cfg = config(dir, &ledger.url, 4);
    let node = claim_node(&cfg, &prov).await;
    let off = prov.add_offering(offering(node, "small", 1)).await.unwrap();
    let c = dev.rent(off, 1).await.unwrap();
    One {
        _ledger: ledger,
        cfg,
        prov,
        dev,
        offering: off,
        contract: c.id,
    }
}
/// Rewrites the state of contract `id`'s last journal line from `was` to
/// `now`: the journal as a crash at another moment would have left it.
fn rewrite_last_state(cfg: &Config, id: u64, was: &str, now: &str) {
    let mut lines = journal_lines(cfg);
    let last = lines.iter().rposition(|l| l["contract_id"] == id).unwrap();
    assert_eq!(lines[last]["state"], was);
    lines[last]["state"] = now.into();
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(cfg.journal_path(), text).unwrap();
}

/// One contract brought up active by an agent that then goes down, with
/// the tenant's data (which must survive) written to the VM's disk: the
/// contract as the ledger has it, the VM's last record, and the disk.
async fn an_active_vm_left_with_data(dir: &Path) -> (One, Contract, VmRecord, std::path::PathBuf) {
    let one = one_contract(dir).await;
    let mut agent = start_agent(&one.cfg, Arc::new(FakeVmm::default())).await;
    agent.tick().await.unwrap();
    let contract = one.dev.contract(one.contract).await.unwrap().unwrap();
    assert_eq!(contract.state, ContractState::Active);
    let old = agent.vms()[&one.contract].clone();
    assert_eq!(old.state, VmRecordState::Active);
    drop(agent);
    let disk = old.spec.disks[0].path.clone();
    std::fs::write(&disk, b"tenant data").unwrap();
    (one, contract, old, disk)
}

/// The ledger took `report_active` but its reply was lost, so the journal
/// still says provisioning; the host then went down with the VM. On restart
/// the VM is relaunched over its disk (not wiped as a provisioning attempt
/// that never reached the tenant), and the first pass finds the contract
/// active on the ledger and journals it so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_reported_active_with_the_reply_lost_keeps_its_disk_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (
        One {
            _ledger: _keep,
            cfg,
            dev,
            contract: id,
            ..
        },
        _,
        old,
        disk,
    ) = an_active_vm_left_with_data(dir.path()).await;
    // The journal as it stood when the reply was lost: the record's last
    // line says provisioning (with the VM's handle).
    rewrite_last_state(&cfg, id, "active", "provisioning");

    let vmm2 = Arc::new(FakeVmm::default());
    vmm2.dead.lock().unwrap().insert(format!("c{id}"));
    let mut agent = start_agent(&cfg, vmm2.clone()).await;
    assert_eq!(
        std::fs::read(&disk).unwrap(),
        b"tenant data",
        "the disk is kept"
    );
    assert_eq!(
        *vmm2.launched.lock().unwrap(),
        vec![old.spec.clone()],
        "relaunched once, from the journaled spec"
    );
    agent.tick().await.unwrap();
    let rec = agent.vms()[&id].clone();
    assert_eq!(rec.state, VmRecordState::Active, "{rec:?}");
    assert_eq!(rec.endpoint, old.endpoint);
    assert_eq!(vmm2.launched.lock().unwrap().len(), 1, "launched once only");
    assert_eq!(agent.resources().usage().vcpus, 1, "its resources are kept");
    assert_eq!(std::fs::read(&disk).unwrap(), b"tenant data");
    assert_eq!(
        dev.contract(id).await.unwrap().unwrap().state,
        ContractState::Active
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_that_died_while_the_agent_was_down_is_relaunched_over_its_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (
        One {
            _ledger: _keep,
            cfg,
            dev,
            contract: id,
            ..
        },
        before,
        old,
        disk,
    ) = an_active_vm_left_with_data(dir.path()).await;

    let vmm2 = Arc::new(FakeVmm::default());
    vmm2.dead.lock().unwrap().insert(format!("c{id}"));
    let mut agent = start_agent(&cfg, vmm2.clone()).await;
    let rec = agent.vms()[&id].clone();
    assert_eq!(
        rec.state,
        VmRecordState::Active,
        "the contract stays active"
    );
    assert!(
        rec.note.as_deref().unwrap().contains("VMM gone on restart"),
        "{rec:?}"
    );
    assert_eq!(
        *vmm2.launched.lock().unwrap(),
        vec![old.spec.clone()],
        "relaunched once, from the journaled spec (same disk, same port)"
    );
    // (The fake's handles all name this test process, so old and new compare equal.)
    assert!(rec.handle.is_some(), "a handle is journaled");
    assert_eq!(rec.endpoint, old.endpoint);
    assert_eq!(
        std::fs::read(&disk).unwrap(),
        b"tenant data",
        "the disk is kept"
    );
    assert_eq!(agent.resources().usage().vcpus, 1, "its resources are kept");
    // The event is in the journal, and the new handle after it.
    let lines = journal_lines(&cfg);
    assert!(lines.iter().any(|l| l["note"]
        .as_str()
        .is_some_and(|n| n.contains("VMM gone on restart"))));
    let last = lines.iter().rev().find(|l| l["contract_id"] == id).unwrap();
    assert_eq!(last["handle"], serde_json::to_value(&rec.handle).unwrap());
    assert!(agent.tick().await.unwrap().is_empty());
    assert_eq!(vmm2.launched.lock().unwrap().len(), 1, "launched once only");
    let after = dev.contract(id).await.unwrap().unwrap();
    assert_eq!(after.state, ContractState::Active);
    assert_eq!(after.endpoint, before.endpoint);
    drop(agent);
    // A later restart adopts the relaunched VM.
    let vmm3 = Arc::new(FakeVmm::default());
    let agent = start_agent(&cfg, vmm3.clone()).await;
    assert_eq!(*vmm3.adopted.lock().unwrap(), vec![format!("c{id}")]);
    assert!(vmm3.launched.lock().unwrap().is_empty());
    assert_eq!(agent.vms()[&id].handle, rec.handle);
}

/// One contract whose launch fails with its VMM left running (no handle
/// journaled), after the agent's first pass.
async fn a_launch_leaving_its_vmm(dir: &Path) -> (One, Arc<FakeVmm>, Agent) {
    let one = one_contract(dir).await;
    let vmm = Arc::new(FakeVmm::default());
    *vmm.leave_stray.lock().unwrap() = true;
    let mut agent = start_agent(&one.cfg, vmm.clone()).await;
    agent.tick().await.unwrap();
    assert!(vmm.stray_alive());
    (one, vmm, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vmm_left_by_a_failed_or_interrupted_launch_is_killed_before_its_dir_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (
        One {
            _ledger: _keep,
            cfg,
            dev,
            contract: id,
            ..
        },
        vmm,
        agent,
    ) = a_launch_leaving_its_vmm(dir.path()).await;
    // The launch failed but its VMM lives: nothing is wiped or freed.
    let rec = agent.vms()[&id].clone();
    assert_eq!(rec.state, VmRecordState::Provisioning);
    assert!(rec.handle.is_none());
    assert!(
        cfg.vm_dir(id).join("qemu.pid").exists(),
        "the run dir is kept"
    );
    assert_eq!(
        agent.resources().usage().vcpus,
        1,
        "the reservation is kept"
    );
    // The agent is killed here: the journal says (Provisioning, no handle).
    drop(agent);

    let vmm2 = Arc::new(FakeVmm::default());
    let mut agent = start_agent(&cfg, vmm2.clone()).await;
    assert!(
        !vmm.stray_alive(),
        "the VMM without a handle was killed on recovery"
    );
    assert_eq!(agent.vms()[&id].state, VmRecordState::Retry);
    assert_eq!(agent.resources().usage().vcpus, 0);
    assert!(!cfg.vm_dir(id).exists(), "wiped only once the VMM was dead");
    // The contract is still provisioning with time left: provisioned again.
    let actions = agent.tick().await.unwrap();
    assert!(
        matches!(&actions[..], [Action::Provision { contract }] if contract.id == id),
        "{actions:?}"
    );
    assert_eq!(vmm2.launched.lock().unwrap().len(), 1);
    assert_eq!(agent.vms()[&id].state, VmRecordState::Active);
    assert_eq!(
        dev.contract(id).await.unwrap().unwrap().state,
        ContractState::Active
    );
}

/// A launch failed with its VMM left running (no handle journaled), and the
/// agent went down in the middle of tearing that VM down: on restart the
/// teardown finishes, and kills that VMM before it frees the disk, the
/// address and the reservation for another contract.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teardown_kills_a_vmm_the_journal_has_no_handle_for() {
    let dir = tempfile::tempdir().unwrap();
    let (
        One {
            _ledger: _keep,
            cfg,
            contract: id,
            ..
        },
        vmm,
        agent,
    ) = a_launch_leaving_its_vmm(dir.path()).await;
    assert!(agent.vms()[&id].handle.is_none());
    drop(agent);
    // The journal as a crash mid-teardown leaves it: releasing, no handle.
    rewrite_last_state(&cfg, id, "provisioning", "releasing");

    let agent = start_agent(&cfg, Arc::new(FakeVmm::default())).await;
    assert!(!vmm.stray_alive(), "the VMM without a handle was killed");
    assert_eq!(agent.vms()[&id].state, VmRecordState::Released);
    assert_eq!(agent.resources().usage().vcpus, 0);
    assert!(!cfg.vm_dir(id).exists(), "wiped once the VMM was dead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinishable_teardown_does_not_stop_the_agent_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let One {
        _ledger: _keep,
        cfg,
        dev,
        contract: id,
        ..
    } = one_contract(dir.path()).await;
    let vmm = Arc::new(FakeVmm::default());
    let mut agent = start_agent(&cfg, vmm.clone()).await;
    agent.tick().await.unwrap();
    let mut rec = agent.vms()[&id].clone();
    drop(agent);
    // Crashed mid-teardown of a VM run by Cloud Hypervisor, which is not linked now.
    rec.state = VmRecordState::Releasing;
    rec.handle.as_mut().unwrap().backend = BackendKind::CloudHypervisor;
    let mut line = serde_json::to_vec(&rec).unwrap();
    line.push(b'\n');
    let mut journal = std::fs::read(cfg.journal_path()).unwrap();
    journal.extend(line);
    std::fs::write(cfg.journal_path(), journal).unwrap();
    dev.cancel(id).await.unwrap();

    let qemu_only = Arc::new(FakeVmm::default());
    let mut agent = start_agent(&cfg, qemu_only).await;
    assert_eq!(agent.vms()[&id].state, VmRecordState::Releasing, "kept");
    assert_eq!(agent.resources().usage().vcpus, 1, "its resources are kept");
    assert!(
        cfg.vm_dir(id).exists(),
        "never wiped under a VMM that may run"
    );
    agent.tick().await.unwrap();
    assert_eq!(agent.vms()[&id].state, VmRecordState::Releasing);
    drop(agent);

    // Both backends linked (as Backends::detect now does): the teardown finishes.
    let mut ch = FakeVmm::default();
    ch.cloud_hypervisor = true;
    let ch = Arc::new(ch);
    let node_id = node::load_identity(&cfg).unwrap();
    let client = LedgerClient::connect(&cfg.ledger_url, Some(node_id))
        .await
        .unwrap();
    let mut backends = Backends::single(Arc::new(FakeVmm::default()), false);
    backends.cloud_hypervisor = Some(ch.clone());
    let mut agent = Agent::start(
        cfg.clone(),
        backends,
        client,
        Arc::new(SerialProbe {
            marker: "login:".into(),
        }),
        resources(&cfg),
        system_clock(),
    )
    .unwrap();
    assert_eq!(*ch.deleted.lock().unwrap(), vec![format!("c{id}")]);
    assert_eq!(agent.vms()[&id].state, VmRecordState::Released);
    assert_eq!(agent.resources().usage().vcpus, 0);
    assert!(!cfg.vm_dir(id).exists());
    assert!(agent.tick().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_whose_offering_is_gone_is_rejected_not_launched_plain() {
    let dir = tempfile::tempdir().unwrap();
    let One {
        cfg,
        prov,
        dev,
        offering: off,
        contract: id,
        _ledger: _keep,
    } = one_contract(dir.path()).await;
    prov.remove_offering(off).await.unwrap();
    assert!(prov.offering(off).await.unwrap().is_none());
    let vmm = Arc::new(FakeVmm::default());
    let mut agent = start_agent(&cfg, vmm.clone()).await;
    agent.tick().await.unwrap();
    assert!(vmm.launched.lock().unwrap().is_empty(), "never launched");
    assert_eq!(
        dev.contract(id).await.unwrap().unwrap().state,
        ContractState::Rejected
    );
}
