//! The marketplace from the command line, as users drive it: dc-ledger runs,
//! dcctl registers providers and nodes, publishes offerings, searches with
//! several filter combinations (exact result sets), rents, extends, cancels,
//! rates; balances and escrow are checked to the e9; every refusal exits
//! non-zero with one line and leaves the ledger unchanged. The node's side
//! (accept, provision, report active) is played by the client library, as the
//! appliance will.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use dc_ledger::launch::LedgerProcess;

use dc_identity::{Envelope, Identity};
use dc_ledger_client::LedgerClient;
use serde_json::Value;

fn bin(name: &str) -> PathBuf {
    // Test binaries live in target/<profile>/deps; the tools one level up.
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    let path = dir.join(name);
    if !path.exists() {
        let (pkg, release) = match name {
            "dcctl" => ("dc-controller", dir.ends_with("release")),
            _ => ("dc-ledger", dir.ends_with("release")),
        };
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", pkg, "--bin", name]);
        if release {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().expect("cargo build").success(),
            "building {name}"
        );
    }
    path
}

struct Env {
    dir: tempfile::TempDir,
    ledger: LedgerProcess,
}

impl Env {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Runs dcctl as `who` (an identity file name) against the ledger.
    fn dcctl(&self, who: &str, args: &[&str]) -> Output {
        dc_qa::server::dcctl_as(&bin("dcctl"), &self.ledger.url, Path::new(&self.path(who)))
            .args(args)
            .output()
            .expect("run dcctl")
    }

    /// Runs dcctl with --json and parses the object; panics on failure.
    fn ok(&self, who: &str, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.dcctl(who, &a);
        assert!(
            out.status.success(),
            "dcctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("one JSON object")
    }

    /// Runs a command that must be refused: exit code 1, one line on stderr,
    /// nothing on stdout, and the ledger unchanged.
    fn refused(&self, who: &str, args: &[&str], expect: &str) {
        let before = self.fingerprint();
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.dcctl(who, &a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "dcctl {args:?} should be refused: {err}"
        );
        assert!(out.stdout.is_empty(), "refusal printed to stdout");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(
            err.to_lowercase().contains(expect),
            "expected {expect:?} in {err}"
        );
        assert_eq!(
            self.fingerprint(),
            before,
            "refused {args:?} changed the ledger"
        );
    }

    /// Ledger totals plus every actor's balance.
    fn fingerprint(&self) -> String {
        let status = reqwest::blocking::get(format!("{}/api/v1/status", self.ledger.url))
            .unwrap()
            .text()
            .unwrap();
        let mut s = status;
        for who in [
            "dev.pem",
            "poor.pem",
            "prov.pem",
            "prov2.pem",
            "treasury.pem",
        ] {
            s.push_str(&self.balance(who).to_string());
            s.push(',');
        }
        s
    }

    fn principal(&self, who: &str) -> String {
        self.ok(who, &["identity", "show"])["principal"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn balance(&self, who: &str) -> u64 {
        let p = self.principal(who);
        self.ok(who, &["balance", &p])["balance_e9s"]
            .as_u64()
            .unwrap()
    }
}

fn start_ledger(dir: &Path, genesis: &Path) -> LedgerProcess {
    LedgerProcess::start(
        &bin("dc-ledger"),
        &dir.join("data"),
        Some(genesis),
        None,
        Duration::from_secs(60),
    )
    .expect("start dc-ledger")
}

const TOKEN: u64 = 1_000_000_000;

/// An offering file's fields, by name.
#[derive(Clone, Copy)]
struct Offer<'a> {
    node: &'a str,
    name: &'a str,
    price: u64,
    vcpus: u32,
    ram: u32,
    conf: &'a str,
    region: &'a str,
    country: &'a str,
    gpu: Option<(&'a str, u32)>,
}

impl Offer<'_> {
    /// The offering file `dcctl offering add --file` reads.
    fn toml(&self) -> String {
        let Offer {
            node,
            name,
            price,
            vcpus,
            ram,
            conf,
            region,
            country,
            gpu,
        } = self;
        let mut s = format!(
            "name = \"{name}\"\nnode = \"{node}\"\nprice_e9s_per_hour = {price}\nmin_hours = 1\nmax_hours = 100\nconfidential = \"{conf}\"\nregion = \"{region}\"\ncountry = \"{country}\"\n\n[resources]\nvcpus = {vcpus}\nram_gib = {ram}\nstorage_gib = 100\nbandwidth_mbps = 1000\n"
        );
        if let Some((model, count)) = gpu {
            s.push_str(&format!(
                "\n[gpu]\nmodel = \"{model}\"\ncount = {count}\nmemory_gib = 80\n"
            ));
        }
        s
    }
}

fn ids(v: &Value) -> Vec<u64> {
    v["offers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["offering_id"].as_u64().unwrap())
        .collect()
}

#[test]
fn marketplace_round_through_dcctl() {
    let dir = tempfile::tempdir().unwrap();
    // Identities, made with dcctl itself.
    for who in ["dev", "poor", "prov", "prov2", "node1", "node2", "treasury"] {
        let out = Command::new(bin("dcctl"))
            .args(["identity", "new", "--out"])
            .arg(dir.path().join(format!("{who}.pem")))
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let keys = dir.path().to_path_buf();
    let p = move |who: &str| {
        Identity::load(&keys.join(format!("{who}.pem")))
            .unwrap()
            .principal()
            .to_text()
    };
    let genesis = dir.path().join("genesis.toml");
    std::fs::write(
        &genesis,
        format!(
            "treasury = \"{}\"\n[params]\nblock_interval_secs = 3600\n\
             [[balances]]\nprincipal = \"{}\"\namount_e9s = {}\n\
             [[balances]]\nprincipal = \"{}\"\namount_e9s = {}\n\
             [[balances]]\nprincipal = \"{}\"\namount_e9s = {}\n\
             [[balances]]\nprincipal = \"{}\"\namount_e9s = {}\n",
            p("treasury"),
            p("dev"),
            10_000 * TOKEN,
            p("poor"),
            TOKEN,
            p("prov"),
            100 * TOKEN,
            p("prov2"),
            100 * TOKEN,
        ),
    )
    .unwrap();
    let ledger = start_ledger(dir.path(), &genesis);
    let env = Env { dir, ledger };
    let fee_reg = 5 * TOKEN;

    // Providers and nodes.
    assert_eq!(
        env.ok(
            "prov.pem",
            &[
                "provider",
                "register",
                "--name",
                "Alpha Cloud GmbH",
                "--jurisdiction",
                "DE",
                "--email",
                "ops@alpha.example",
                "--website",
                "https://alpha.example"
            ]
        )["principal"],
        p("prov")
    );
    env.ok(
        "prov2.pem",
        &[
            "provider",
            "register",
            "--name",
            "Beta Hosting SA",
            "--jurisdiction",
            "CH",
            "--email",
            "noc@beta.example",
        ],
    );
    assert_eq!(env.balance("prov.pem"), 100 * TOKEN - fee_reg);
    std::fs::write(env.path("node1.toml"), "cpu_model = \"AMD EPYC 9654\"\nvcpus = 16\nram_gib = 64\nstorage_gib = 1000\nbandwidth_mbps = 10000\nconfidential = \"sev-snp\"\nregion = \"eu-central\"\ncountry = \"DE\"\n[[gpus]]\nmodel = \"H100\"\ncount = 2\nmemory_gib = 80\n").unwrap();
    std::fs::write(env.path("node2.toml"), "cpu_model = \"Intel Xeon 8480+\"\nvcpus = 8\nram_gib = 32\nstorage_gib = 500\nbandwidth_mbps = 1000\nconfidential = \"tdx\"\nregion = \"us-east\"\ncountry = \"US\"\n").unwrap();
    env.ok(
        "prov.pem",
        &[
            "node",
            "register",
            "--node-identity",
            &env.path("node1.pem"),
            "--file",
            &env.path("node1.toml"),
        ],
    );
    env.ok(
        "prov2.pem",
        &[
            "node",
            "register",
            "--node-identity",
            &env.path("node2.pem"),
            "--file",
            &env.path("node2.toml"),
        ],
    );

    // Offerings: (file, expected id).
    let (n1, n2) = (p("node1"), p("node2"));
    let eu_small = Offer {
        node: &n1,
        name: "eu-small",
        price: 100_000_000,
        vcpus: 2,
        ram: 4,
        conf: "none",
        region: "eu-central",
        country: "DE",
        gpu: None,
    };
    let us_small = Offer {
        node: &n2,
        name: "us-small",
        region: "us-east",
        country: "US",
        ..eu_small
    };
    let specs = [
        eu_small.toml(),
        Offer {
            name: "eu-snp",
            price: 300_000_000,
            vcpus: 8,
            ram: 32,
            conf: "sev-snp",
            ..eu_small
        }
        .toml(),
        Offer {
            name: "eu-gpu",
            price: 2_000_000_000,
            vcpus: 8,
            ram: 32,
            conf: "sev-snp",
            gpu: Some(("H100", 1)),
            ..eu_small
        }
        .toml(),
        us_small.toml(),
        Offer {
            name: "us-tdx",
            price: 250_000_000,
            vcpus: 4,
            ram: 16,
            conf: "tdx",
            ..us_small
        }
        .toml(),
    ];
    let mut offering = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let file = env.path(&format!("offering{i}.toml"));
        std::fs::write(&file, spec).unwrap();
        let owner = if i < 3 { "prov.pem" } else { "prov2.pem" };
        offering.push(
            env.ok(owner, &["offering", "add", "--file", &file])["offering_id"]
                .as_u64()
                .unwrap(),
        );
    }
    let listed = env.ok("prov.pem", &["offering", "list"]);
    assert_eq!(listed["offerings"].as_array().unwrap().len(), 3);
    // A bad offering file names the field and changes nothing.
    std::fs::write(
        env.path("bad.toml"),
        specs[0].replace("vcpus = 2", "vcpus = 0"),
    )
    .unwrap();
    let bad = env.dcctl(
        "prov.pem",
        &["offering", "add", "--file", &env.path("bad.toml")],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("resources.vcpus"));
    // An offering on someone else's node is refused by the ledger.
    std::fs::write(
        env.path("foreign.toml"),
        Offer {
            node: &n2,
            name: "x",
            price: 1,
            vcpus: 1,
            ram: 1,
            conf: "none",
            region: "eu",
            country: "DE",
            gpu: None,
        }
        .toml(),
    )
    .unwrap();
    env.refused(
        "prov.pem",
        &["offering", "add", "--file", &env.path("foreign.toml")],
        "may not",
    );

    // Search: exact result sets in rank order (price, then reputation, then id).
    let search = |args: &[&str]| {
        let mut a = vec!["offers", "search"];
        a.extend_from_slice(args);
        ids(&env.ok("dev.pem", &a))
    };
    assert_eq!(
        search(&[]),
        vec![
            offering[0],
            offering[3],
            offering[4],
            offering[1],
            offering[2]
        ]
    );
    assert_eq!(
        search(&["--max-price-e9s-per-hour", "250000000"]),
        vec![offering[0], offering[3], offering[4]]
    );
    assert_eq!(
        search(&["--min-vcpus", "4", "--min-ram-gib", "16"]),
        vec![offering[4], offering[1], offering[2]]
    );
    assert_eq!(
        search(&["--confidential", "sev-snp"]),
        vec![offering[1], offering[2]]
    );
    assert_eq!(
        search(&["--confidential", "tdx", "--region", "US"]),
        vec![offering[4]]
    );
    assert_eq!(search(&["--gpu", "h100"]), vec![offering[2]]);
    assert_eq!(search(&["--gpu", "H100", "--gpus", "2"]), Vec::<u64>::new());
    assert_eq!(
        search(&[
            "--region",
            "eu-central",
            "--max-price-e9s-per-hour",
            "100000000"
        ]),
        vec![offering[0]]
    );
    assert_eq!(search(&["--hours", "500"]), Vec::<u64>::new());
    assert_eq!(search(&["--min-reputation", "1"]), Vec::<u64>::new());
    assert_eq!(
        search(&["--limit", "2", "--offset", "1"]),
        vec![offering[3], offering[4]]
    );
    let first = env.ok("dev.pem", &["offers", "search", "--limit", "1"]);
    let o = &first["offers"][0];
    for field in [
        "offering_id",
        "provider",
        "node",
        "price_e9s_per_hour",
        "vcpus",
        "ram_gib",
        "storage_gib",
        "confidential",
        "gpus",
        "provider_reputation",
    ] {
        assert!(!o[field].is_null(), "offers[].{field} missing");
    }

    // Rent: by id and the best match; paid = price × hours to the e9.
    let dev0 = env.balance("dev.pem");
    let r1 = env.ok(
        "dev.pem",
        &[
            "rent",
            "--offering",
            &offering[1].to_string(),
            "--hours",
            "10",
        ],
    );
    assert_eq!(r1["paid_e9s"], 10 * 300_000_000u64);
    let c1 = r1["contract_id"].as_u64().unwrap();
    let r2 = env.ok(
        "dev.pem",
        &[
            "rent",
            "--best",
            "--confidential",
            "tdx",
            "--min-vcpus",
            "4",
            "--hours",
            "5",
        ],
    );
    assert_eq!(r2["offering_id"], offering[4]);
    assert_eq!(r2["paid_e9s"], 5 * 250_000_000u64);
    let c2 = r2["contract_id"].as_u64().unwrap();
    assert_eq!(env.balance("dev.pem"), dev0 - 3_000_000_000 - 1_250_000_000);
    let shown = env.ok("dev.pem", &["contract", "show", &c1.to_string()]);
    assert_eq!(shown["state"], "requested");
    assert_eq!(
        (
            shown["paid_e9s"].as_u64(),
            shown["released_e9s"].as_u64(),
            shown["refunded_e9s"].as_u64()
        ),
        (Some(3_000_000_000), Some(0), Some(0))
    );
    assert!(shown.get("endpoint").is_none());

    // The node takes contract 1 to active (what the appliance does).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let node1 = Identity::load(&env.dir.path().join("node1.pem")).unwrap();
    rt.block_on(async {
        let node = LedgerClient::connect(&env.ledger.url, Some(node1))
            .await
            .unwrap();
        node.accept_contract(c1).await.unwrap();
        node.start_provisioning(c1).await.unwrap();
        // c1 is on the SEV-SNP offering: the ledger wants the predicted measurement.
        let refused = node
            .report_active(c1, "c1.node1.example".into(), [7; 32])
            .await;
        assert!(
            refused.is_err(),
            "a confidential contract needs its launch measurement"
        );
        node.report_active_with_measurement(
            c1,
            "c1.node1.example".into(),
            [7; 32],
            Some(vec![0x4d; 48]),
        )
        .await
        .unwrap();
    });
    let active = env.ok("dev.pem", &["contract", "show", &c1.to_string()]);
    assert_eq!(active["state"], "active");
    assert_eq!(active["launch_measurement"], "4d".repeat(48));
    assert_eq!(active["endpoint"], "c1.node1.example");

    // Extend both; the wrong-state refusals.
    let dev1 = env.balance("dev.pem");
    let e = env.ok("dev.pem", &["extend", &c1.to_string(), "--hours", "2"]);
    assert_eq!(e["paid_e9s"], 12 * 300_000_000u64);
    assert_eq!(env.balance("dev.pem"), dev1 - 600_000_000);

    // Cancel contract 2 before it started: full refund.
    let dev2 = env.balance("dev.pem");
    let cancelled = env.ok("dev.pem", &["cancel", &c2.to_string()]);
    assert_eq!(cancelled["refunded_e9s"], 1_250_000_000u64);
    assert_eq!(env.balance("dev.pem"), dev2 + 1_250_000_000);
    env.refused("dev.pem", &["cancel", &c2.to_string()], "cancelled");
    env.refused(
        "dev.pem",
        &["extend", &c2.to_string(), "--hours", "1"],
        "cancelled",
    );

    // Cancel contract 1 while active: time used is released (2% to the
    // treasury, the rest to the provider), the remainder refunded; every e9
    // is accounted for.
    let (dev3, prov3, treas3) = (
        env.balance("dev.pem"),
        env.balance("prov.pem"),
        env.balance("treasury.pem"),
    );
    let done = env.ok("dev.pem", &["cancel", &c1.to_string()]);
    let c = env.ok("dev.pem", &["contract", "show", &c1.to_string()]);
    let (paid, released, refunded, fees) = (
        c["paid_e9s"].as_u64().unwrap(),
        c["released_e9s"].as_u64().unwrap(),
        c["refunded_e9s"].as_u64().unwrap(),
        c["fees_e9s"].as_u64().unwrap(),
    );
    assert_eq!(done["refunded_e9s"].as_u64(), Some(refunded));
    assert_eq!(paid, released + refunded, "escrow fully settled");
    assert_eq!(fees, released * 2 / 100);
    assert_eq!(env.balance("dev.pem"), dev3 + refunded);
    assert_eq!(env.balance("prov.pem"), prov3 + released - fees);
    assert_eq!(env.balance("treasury.pem"), treas3 + fees);
    assert_eq!(c["state"], "cancelled");

    // Reputation: both parties gained 1% of what was released.
    let dev_rep = env.ok("dev.pem", &["reputation", &p("dev")])["reputation"]
        .as_u64()
        .unwrap();
    let prov_rep = env.ok("dev.pem", &["reputation", &p("prov")])["reputation"]
        .as_u64()
        .unwrap();
    assert_eq!(dev_rep, released / 100);
    assert_eq!(prov_rep, released / 100);
    env.refused(
        "dev.pem",
        &["rate", &p("poor"), "--spend", "1", "--reason", "never met"],
        "share no contract",
    );
    env.refused(
        "poor.pem",
        &["rate", &p("prov"), "--spend", "1", "--reason", "stranger"],
        "share no contract",
    );
    env.refused(
        "dev.pem",
        &[
            "rate",
            &p("prov"),
            "--spend",
            &(dev_rep + 1).to_string(),
            "--reason",
            "too much",
        ],
        "insufficient reputation",
    );
    // Several dcctl runs separate activation from cancel, so some escrow was released.
    assert!(
        dev_rep > 0 && prov_rep > 0,
        "no reputation earned: released {released}"
    );
    let rated = env.ok(
        "dev.pem",
        &[
            "rate",
            &p("prov"),
            "--spend",
            &dev_rep.to_string(),
            "--reason",
            "VM was slow",
        ],
    );
    assert_eq!(rated["sender_reputation"], 0u64);
    assert_eq!(
        rated["target_reputation"],
        prov_rep.saturating_sub(2 * dev_rep)
    );
    assert_eq!(
        env.ok("dev.pem", &["reputation", &p("prov")])["reputation"],
        prov_rep.saturating_sub(2 * dev_rep)
    );

    // Refusals: insufficient funds, unknown offering, capacity exhausted.
    env.refused(
        "poor.pem",
        &[
            "rent",
            "--offering",
            &offering[2].to_string(),
            "--hours",
            "1",
        ],
        "insufficient funds",
    );
    env.refused(
        "dev.pem",
        &["rent", "--offering", "999", "--hours", "1"],
        "not found",
    );
    env.refused(
        "dev.pem",
        &[
            "rent",
            "--offering",
            &offering[0].to_string(),
            "--hours",
            "1000",
        ],
        "hours",
    );
    // Node 2 has 8 vCPUs: two 4-vCPU rentals fill it.
    env.ok(
        "dev.pem",
        &[
            "rent",
            "--offering",
            &offering[4].to_string(),
            "--hours",
            "1",
        ],
    );
    env.ok(
        "dev.pem",
        &[
            "rent",
            "--offering",
            &offering[4].to_string(),
            "--hours",
            "1",
        ],
    );
    env.refused(
        "dev.pem",
        &[
            "rent",
            "--offering",
            &offering[4].to_string(),
            "--hours",
            "1",
        ],
        "no free capacity",
    );
    env.refused(
        "dev.pem",
        &[
            "rent",
            "--offering",
            &offering[3].to_string(),
            "--hours",
            "1",
        ],
        "no free capacity",
    );
    assert!(
        !search(&[]).contains(&offering[4]),
        "a full node's offers are not listed"
    );
    let best_none = env.dcctl(
        "dev.pem",
        &["rent", "--best", "--confidential", "tdx", "--hours", "1"],
    );
    assert_eq!(best_none.status.code(), Some(1));

    // Expired and replayed requests, as raw signed envelopes.
    let dev = Identity::load(&env.dir.path().join("dev.pem")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let arg = candid::encode_one(dc_ledger_core::RentArgs {
        offering_id: offering[0],
        hours: 1,
    })
    .unwrap();
    let post = |e: &Envelope| {
        reqwest::blocking::Client::new()
            .post(format!("{}/api/v1/update", env.ledger.url))
            .body(e.to_bytes())
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let before = env.fingerprint();
    assert_eq!(
        post(&Envelope::sign(
            &dev,
            "rent",
            arg.clone(),
            vec![1; 16],
            now - 1
        )),
        401
    );
    assert_eq!(env.fingerprint(), before, "expired request changed nothing");
    let fresh = Envelope::sign(&dev, "rent", arg, vec![2; 16], now + 60_000_000_000);
    assert_eq!(post(&fresh), 200);
    let after_one = env.fingerprint();
    assert_eq!(post(&fresh), 409);
    assert_eq!(
        env.fingerprint(),
        after_one,
        "replayed request changed nothing"
    );

    // Contract list shows the developer's contracts, newest first.
    let list = env.ok("dev.pem", &["contract", "list"]);
    let listed: Vec<u64> = list["contracts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["contract_id"].as_u64().unwrap())
        .collect();
    assert_eq!(listed.len(), 5);
    assert!(listed.windows(2).all(|w| w[0] > w[1]));
    // Provider view.
    let shown = env.ok("dev.pem", &["provider", "show", &p("prov")]);
    assert_eq!(shown["contracts_served"], 1u64);
    assert_eq!(shown["offerings"].as_array().unwrap().len(), 3);
}

#[test]
fn completions_and_man_page_are_generated() {
    let out = Command::new(bin("dcctl"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("offers"));
    let man = Command::new(bin("dcctl")).arg("man").output().unwrap();
    assert!(man.status.success());
    assert!(String::from_utf8_lossy(&man.stdout).contains(".TH dcctl"));
}
