//! `dcctl contract ingress` against a real dc-ledger: the developer sets a
//! contract's custom domains and PROXY protocol, `contract show` prints them
//! beside the INTERFACES.md fields, a name another contract holds is refused
//! (exit 1) until it is released, bad names are usage errors (exit 2) and an
//! unreachable ledger exits 3.

mod common;

use std::path::Path;

use common::{add_offering, dcctl, json, new_identity, register_provider_and_node, start_ledger};
use dc_identity::Identity;
use dc_ledger_client::LedgerClient;
use serde_json::Value;

const TOKEN: u64 = 1_000_000_000;

struct Env {
    dir: tempfile::TempDir,
    url: String,
}

impl Env {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn run(&self, who: &str, args: &[&str]) -> std::process::Output {
        let identity = self.path(&format!("{who}.pem"));
        let mut all = vec![
            "--ledger",
            self.url.as_str(),
            "--identity",
            identity.as_str(),
        ];
        all.extend_from_slice(args);
        dcctl(&all)
    }

    /// `dcctl --json …` as `who`, which must succeed.
    fn ok(&self, who: &str, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        json(&self.run(who, &with_json))
    }

    /// `dcctl --json …` as `who`, which must fail with `code`, one line on
    /// stderr and nothing on stdout; returns the line.
    fn fails(&self, who: &str, code: i32, args: &[&str]) -> String {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let out = self.run(who, &with_json);
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    }
}

#[test]
fn contract_ingress_sets_shows_refuses_and_releases_names() {
    let dir = tempfile::tempdir().unwrap();
    let treasury = new_identity(dir.path(), "treasury");
    let prov = new_identity(dir.path(), "prov");
    let dev = new_identity(dir.path(), "dev");
    let dev2 = new_identity(dir.path(), "dev2");
    let node = new_identity(dir.path(), "node");
    let genesis = dir.path().join("genesis.toml");
    let mut text = format!("treasury = \"{treasury}\"\n");
    for p in [&prov, &dev, &dev2] {
        text.push_str(&format!(
            "[[balances]]\nprincipal = \"{p}\"\namount_e9s = {}\n",
            100 * TOKEN
        ));
    }
    std::fs::write(&genesis, text).unwrap();
    let ledger = start_ledger(dir.path(), &genesis);
    let env = Env {
        dir,
        url: ledger.url.clone(),
    };
    let ok = |who: &str, args: &[&str]| env.ok(who, args);
    register_provider_and_node(env.dir.path(), &ok, "Ingress Co", "ingress.example", "none");
    let offering = add_offering(env.dir.path(), &ok, &node, "2c", "none").to_string();
    let rent = |who: &str| {
        env.ok(who, &["rent", "--offering", &offering, "--hours", "10"])["contract_id"]
            .as_u64()
            .expect("contract_id")
    };
    let (mine, theirs) = (rent("dev"), rent("dev2"));
    let (mine_s, theirs_s) = (mine.to_string(), theirs.to_string());

    // The node brings the developer's contract to active.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let key = Identity::load(Path::new(&env.path("node.pem"))).unwrap();
        let n = LedgerClient::connect(&env.url, Some(key)).await.unwrap();
        n.accept_contract(mine).await.expect("accept");
        n.start_provisioning(mine).await.expect("provision");
        n.report_active(mine, "c0.node.example".into(), [7; 32])
            .await
            .expect("active");
    });

    // Set: prints exactly the three documented fields.
    let set = env.ok(
        "dev",
        &[
            "contract",
            "ingress",
            &mine_s,
            "--domain",
            "api.example.com",
            "--domain",
            "*.apps.example.com",
            "--proxy-protocol",
        ],
    );
    assert_eq!(
        set,
        serde_json::json!({
            "contract_id": mine,
            "domains": ["api.example.com", "*.apps.example.com"],
            "proxy_protocol": true,
        })
    );

    // `contract show` keeps every INTERFACES.md field and adds `ingress`.
    let shown = env.ok("dev", &["contract", "show", &mine_s]);
    assert_eq!(shown["contract_id"], mine);
    assert_eq!(shown["state"], "active");
    for field in ["paid_e9s", "released_e9s", "refunded_e9s"] {
        assert!(shown[field].is_u64(), "{field} in {shown}");
    }
    assert_eq!(shown["endpoint"], "c0.node.example");
    assert_eq!(
        shown["ingress"],
        serde_json::json!({"domains": ["api.example.com", "*.apps.example.com"], "proxy_protocol": true})
    );
    let text = env.run("dev", &["contract", "show", &mine_s]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(
            "ingress: custom domains: api.example.com, *.apps.example.com; PROXY protocol v2: on"
        ),
        "{text}"
    );
    let untouched = env.ok("dev2", &["contract", "show", &theirs_s]);
    assert_eq!(
        untouched["ingress"],
        serde_json::json!({"domains": [], "proxy_protocol": false})
    );

    // A held name is refused, and nothing changes.
    let err = env.fails(
        "dev2",
        1,
        &[
            "contract",
            "ingress",
            &theirs_s,
            "--domain",
            "www.example.com",
            "--domain",
            "api.example.com",
        ],
    );
    assert!(
        err.contains("api.example.com") && err.contains("already registered"),
        "{err}"
    );
    assert_eq!(
        env.ok("dev2", &["contract", "show", &theirs_s])["ingress"]["domains"],
        serde_json::json!([])
    );
    // Someone else's contract is refused.
    let err = env.fails(
        "dev2",
        1,
        &["contract", "ingress", &mine_s, "--domain", "x.example.com"],
    );
    assert!(err.contains("may not"), "{err}");

    // Bad names are usage errors, caught before the ledger is asked.
    let err = env.fails(
        "dev",
        2,
        &[
            "contract",
            "ingress",
            &mine_s,
            "--domain",
            "API.example.com",
        ],
    );
    assert!(err.contains("uppercase"), "{err}");
    for bad in [
        "example.com.",
        "10.0.0.1",
        "localhost",
        "*.com",
        "a_b.example",
    ] {
        env.fails("dev", 2, &["contract", "ingress", &mine_s, "--domain", bad]);
    }
    let mut nine = vec!["contract", "ingress", &mine_s];
    let names: Vec<String> = (0..9).map(|i| format!("n{i}.example.com")).collect();
    for n in &names {
        nine.extend(["--domain", n.as_str()]);
    }
    assert!(env.fails("dev", 2, &nine).contains("at most 8"));
    env.fails(
        "dev",
        2,
        &[
            "contract",
            "ingress",
            &mine_s,
            "--domain",
            "a.example.com",
            "--domain",
            "a.example.com",
        ],
    );
    assert_eq!(
        env.ok("dev", &["contract", "show", &mine_s])["ingress"]["domains"],
        serde_json::json!(["api.example.com", "*.apps.example.com"])
    );

    // No --domain clears the list; the name is then free for the other contract.
    let cleared = env.ok("dev", &["contract", "ingress", &mine_s]);
    assert_eq!(cleared["domains"], serde_json::json!([]));
    assert_eq!(cleared["proxy_protocol"], false);
    let taken = env.ok(
        "dev2",
        &[
            "contract",
            "ingress",
            &theirs_s,
            "--domain",
            "api.example.com",
        ],
    );
    assert_eq!(taken["domains"], serde_json::json!(["api.example.com"]));

    // An unreachable ledger.
    let out = dcctl(&[
        "--ledger",
        "http://127.0.0.1:1",
        "--identity",
        &env.path("dev.pem"),
        "contract",
        "ingress",
        &mine_s,
        "--domain",
        "api.example.com",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(out.stdout.is_empty());
    drop(ledger);
}

#[test]
fn contract_ingress_help_explains_what_the_names_are_for() {
    let out = dcctl(&["contract", "ingress", "--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--domain",
        "--proxy-protocol",
        "(SNI)",
        "never terminates TLS",
        "TLS stays end to end",
        "DNS at the node",
        "First come, first served",
        "does not check DNS ownership",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    // Bad usage of the command itself is exit 2, as everywhere.
    assert_eq!(
        dcctl(&["contract", "ingress", "not-a-number"])
            .status
            .code(),
        Some(2)
    );
}
