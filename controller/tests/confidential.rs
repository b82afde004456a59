//! A confidential contract end to end on a real dc-ledger: the node publishes
//! the launch measurement it predicted with `report_active`, `dcctl contract
//! show` prints it with the contract binding (SNP HOST_DATA, TDX MRCONFIGID),
//! and `dcctl verify evidence --contract` checks a real SEV-SNP report from
//! dstack (../shared/vectors or $DC_VECTORS) against both.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use candid::Principal;
use common::{
    add_offering, check, dcctl, json, json_of, ledger_bin, register_provider_and_node, start_ledger,
};
use dc_identity::Identity;
use dc_ledger::launch::LedgerProcess;
use dc_ledger_client::{ClientError, LedgerClient};
use dc_ledger_core::LedgerError;
use serde_json::Value;

const TOKEN: u64 = 1_000_000_000;
/// When dstack's VCEK and report are valid (as in tests/verify.rs).
const DSTACK_NOW: &str = "1790000000";

struct Env {
    dir: tempfile::TempDir,
    ledger: Option<LedgerProcess>,
    url: String,
}

impl Env {
    /// Kills the ledger with SIGKILL and starts it again on its data: what
    /// it acknowledged comes back from its journal.
    fn crash_and_restart(&mut self) {
        if let Some(l) = self.ledger.take() {
            l.kill9();
        }
        let l = LedgerProcess::start(
            &ledger_bin(),
            &self.dir.path().join("data"),
            None,
            None,
            Duration::from_secs(60),
        )
        .expect("restart dc-ledger");
        self.url = l.url.clone();
        self.ledger = Some(l);
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn args<'a>(&'a self, who: &'a str, args: &[&'a str]) -> Vec<String> {
        let mut all = vec![
            "--ledger".to_string(),
            self.url.clone(),
            "--identity".to_string(),
            self.path(&format!("{who}.pem")),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        all
    }

    fn run(&self, who: &str, args: &[&str]) -> std::process::Output {
        let all = self.args(who, args);
        dcctl(&all.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// `dcctl --json …` as `who`, which must succeed.
    fn ok(&self, who: &str, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        json(&self.run(who, &with_json))
    }

    fn identity(&self, who: &str) -> Identity {
        Identity::load(Path::new(&self.path(&format!("{who}.pem")))).expect("load identity")
    }
}

fn new_identity(dir: &Path, who: &str) -> Principal {
    Principal::from_text(common::new_identity(dir, who)).expect("a principal")
}

/// A ledger with a provider whose SEV-SNP node sells a confidential and a
/// regular offering; returns the environment and the two offering ids.
fn marketplace() -> (Env, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let treasury = new_identity(dir.path(), "treasury");
    let prov = new_identity(dir.path(), "prov");
    let dev = new_identity(dir.path(), "dev");
    let node = new_identity(dir.path(), "node");
    let genesis = dir.path().join("genesis.toml");
    std::fs::write(
        &genesis,
        format!(
            "treasury = \"{treasury}\"\n\
             [[balances]]\nprincipal = \"{prov}\"\namount_e9s = {}\n\
             [[balances]]\nprincipal = \"{dev}\"\namount_e9s = {}\n",
            100 * TOKEN,
            100 * TOKEN
        ),
    )
    .unwrap();
    let ledger = start_ledger(dir.path(), &genesis);
    let env = Env {
        dir,
        url: ledger.url.clone(),
        ledger: Some(ledger),
    };
    let ok = |who: &str, args: &[&str]| env.ok(who, args);
    register_provider_and_node(
        env.dir.path(),
        &ok,
        "Confidential Co",
        "confidential.example",
        "sev-snp",
    );
    let offerings: Vec<u64> = ["sev-snp", "none"]
        .into_iter()
        .map(|conf| {
            add_offering(
                env.dir.path(),
                &ok,
                &node.to_text(),
                &format!("{conf}-2c"),
                conf,
            )
        })
        .collect();
    (env, offerings[0], offerings[1])
}

/// The measurement an auditor predicts for dstack's SEV-SNP VM from its
/// published document (the one its real report carries), else a stand-in.
fn dstack_measurement(vectors: Option<&PathBuf>) -> [u8; 48] {
    let Some(v) = vectors else {
        return [0x5c; 48];
    };
    let cbor = v.join("dstack/DERIVED_measurement.snp.cbor");
    let j = json(&dcctl(&[
        "measure",
        "snp",
        "--dstack-cbor",
        &cbor.display().to_string(),
        "--vcpus",
        "2",
        "--vcpu-type",
        "EPYC-v4",
        "--guest-features",
        "1",
        "--json",
    ]));
    let bytes = hex::decode(j["measurement"].as_str().expect("measurement")).unwrap();
    bytes.try_into().expect("48 bytes")
}

#[test]
fn a_published_measurement_is_shown_with_the_binding_and_checked_against_evidence() {
    let vectors = dc_attestation::vectors_dir();
    if vectors.is_none() {
        eprintln!("no vectors (set DC_VECTORS to ../shared/vectors): the evidence part is skipped");
    }
    let measurement = dstack_measurement(vectors.as_ref());
    let other_measurement = [0x11u8; 48];
    let (mut env, snp_offering, plain_offering) = marketplace();
    let rent = |offering: u64| {
        env.ok(
            "dev",
            &["rent", "--offering", &offering.to_string(), "--hours", "2"],
        )["contract_id"]
            .as_u64()
            .expect("contract_id")
    };
    let (snp, other, plain) = (rent(snp_offering), rent(snp_offering), rent(plain_offering));

    // The node brings them up, as the appliance does, publishing what it measured.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let node = LedgerClient::connect(&env.url, Some(env.identity("node")))
            .await
            .unwrap();
        for id in [snp, other, plain] {
            node.accept_contract(id).await.unwrap();
            node.start_provisioning(id).await.unwrap();
        }
        match node.report_active(snp, "snp.example".into(), [1; 32]).await {
            Err(ClientError::Ledger(LedgerError::InvalidArgument { field, reason })) => {
                assert_eq!(field, "launch_measurement", "{reason}");
                assert!(reason.contains("sev-snp"), "{reason}");
            }
            other => panic!("a confidential VM without a measurement must be refused: {other:?}"),
        }
        let c = node
            .report_active_with_measurement(
                snp,
                "snp.example".into(),
                [1; 32],
                Some(measurement.to_vec()),
            )
            .await
            .unwrap();
        assert_eq!(c.launch_measurement.as_deref(), Some(&measurement.to_vec()));
        node.report_active_with_measurement(
            other,
            "other.example".into(),
            [2; 32],
            Some(other_measurement.to_vec()),
        )
        .await
        .unwrap();
        assert!(matches!(
            node.report_active_with_measurement(
                plain,
                "plain.example".into(),
                [3; 32],
                Some(vec![7; 48])
            )
            .await,
            Err(ClientError::Ledger(LedgerError::InvalidArgument { .. }))
        ));
        node.report_active(plain, "plain.example".into(), [3; 32])
            .await
            .unwrap();
    });

    // `contract show`: the INTERFACES.md fields, the measurement and the binding.
    let (dev, node) = (
        env.identity("dev").principal(),
        env.identity("node").principal(),
    );
    let binding = |id: u64| {
        (
            hex::encode(dc_attestation_common::contract_host_data(
                id,
                dev.as_slice(),
                node.as_slice(),
            )),
            hex::encode(dc_attestation_common::contract_mrconfigid(
                id,
                dev.as_slice(),
                node.as_slice(),
            )),
        )
    };
    let shown = env.ok("dev", &["contract", "show", &snp.to_string()]);
    assert_eq!(shown["contract_id"], snp);
    assert_eq!(shown["state"], "active");
    assert_eq!(shown["endpoint"], "snp.example");
    for field in ["paid_e9s", "released_e9s", "refunded_e9s"] {
        assert!(shown[field].is_u64(), "{field} missing: {shown}");
    }
    assert_eq!(shown["launch_measurement"], hex::encode(measurement));
    let (host_data, mrconfigid) = binding(snp);
    assert_eq!(shown["binding"]["snp_host_data"], host_data.as_str());
    assert_eq!(shown["binding"]["tdx_mrconfigid"], mrconfigid.as_str());
    assert_eq!(host_data.len(), 64);
    assert_eq!(mrconfigid.len(), 96);

    let regular = env.ok("dev", &["contract", "show", &plain.to_string()]);
    assert!(regular.get("launch_measurement").is_none(), "{regular}");
    assert_eq!(
        regular["binding"]["snp_host_data"],
        binding(plain).0.as_str()
    );
    assert_ne!(
        regular["binding"], shown["binding"],
        "each contract has its own"
    );

    let text = env.run("dev", &["contract", "show", &snp.to_string()]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("launch measurement {}", hex::encode(measurement))),
        "{text}"
    );
    assert!(
        text.contains(&format!("snp host_data  {host_data}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("tdx mrconfigid {mrconfigid}")),
        "{text}"
    );

    // The published measurement is durable: after kill -9 the journal
    // replays it (through the same validation) and it reads back unchanged.
    env.crash_and_restart();
    let again = env.ok("dev", &["contract", "show", &snp.to_string()]);
    for field in ["state", "endpoint", "launch_measurement", "binding"] {
        assert_eq!(again[field], shown[field], "{field} after a restart");
    }

    // Usage and reachability come before any evidence is read.
    let conflicting = env.run(
        "dev",
        &[
            "verify",
            "evidence",
            "bundle.json",
            "--any-nonce",
            "--any-tls-key",
            "--contract",
            &snp.to_string(),
            "--expect-measurement",
            &"00".repeat(48),
        ],
    );
    assert_eq!(conflicting.status.code(), Some(2));

    let Some(v) = vectors else { return };
    let bundle = dc_attestation::bundle::EvidenceBundle::new(
        &[0x5a; 32],
        b"\x30\x2a\x30\x05\x06\x03\x2b\x65\x70\x03\x21\x00 a TLS key of 32 bytes.........",
        vec![dc_attestation::bundle::Evidence::SevSnp {
            report: hex::encode(
                std::fs::read(v.join("dstack/DERIVED_sev_snp_report.bin")).unwrap(),
            ),
            vcek: Some(std::fs::read_to_string(v.join("dstack/sev_snp_vcek.pem")).unwrap()),
            chain: Some(std::fs::read_to_string(v.join("dstack/sev_snp_ask.pem")).unwrap()),
        }],
    );
    let bundle_path = env.path("bundle.json");
    std::fs::write(&bundle_path, bundle.to_json()).unwrap();
    let verify = |contract: &str| {
        env.run(
            "dev",
            &[
                "verify",
                "evidence",
                &bundle_path,
                "--any-nonce",
                "--any-tls-key",
                "--now",
                DSTACK_NOW,
                "--contract",
                contract,
                "--json",
            ],
        )
    };

    // The contract published exactly what dstack's real report measures: the
    // measurement check passes on real hardware evidence. That VM was not
    // launched for this contract (nor for our nonce and TLS key), so its
    // HOST_DATA is not the binding and the bundle as a whole is refused.
    let out = verify(&snp.to_string());
    assert_eq!(out.status.code(), Some(1));
    let j = json_of(&out);
    assert_eq!(j["verified"], false);
    let item = &j["items"][0];
    assert_eq!(check(item, "report_signature")["ok"], true, "{item}");
    assert_eq!(check(item, "measurement")["ok"], true, "{item}");
    let host = check(item, "host_data");
    assert_eq!(host["ok"], false);
    assert!(
        host["detail"].as_str().unwrap().contains(&host_data),
        "{host}"
    );
    assert_eq!(check(&j, "contract_launch_measurement")["ok"], true);
    assert_eq!(check(&j, "contract_evidence")["ok"], true);
    assert_eq!(j["contract"]["contract_id"], snp);
    assert_eq!(
        j["contract"]["launch_measurement"],
        hex::encode(measurement)
    );
    assert_eq!(j["contract"]["binding"], shown["binding"]);

    // Another published measurement: the report does not match it.
    let out = verify(&other.to_string());
    assert_eq!(out.status.code(), Some(1));
    let j = json_of(&out);
    let m = check(&j["items"][0], "measurement");
    assert_eq!(m["ok"], false);
    assert!(
        m["detail"]
            .as_str()
            .unwrap()
            .contains(&hex::encode(other_measurement)),
        "{m}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // A regular contract published nothing to check the report against.
    let j = json_of(&verify(&plain.to_string()));
    assert_eq!(j["verified"], false);
    let c = check(&j, "contract_launch_measurement");
    assert_eq!(c["ok"], false);
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("no published launch measurement"),
        "{c}"
    );
    assert!(j["contract"]["launch_measurement"].is_null());

    // An unknown contract is a refusal; an unreachable ledger has its own code.
    let missing = verify("999");
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("contract 999 not found"));
    let unreachable = dcctl(&[
        "--ledger",
        "http://127.0.0.1:1",
        "verify",
        "evidence",
        &bundle_path,
        "--any-nonce",
        "--any-tls-key",
        "--contract",
        &snp.to_string(),
    ]);
    assert_eq!(unreachable.status.code(), Some(3));
}
