//! Running dcctl and a real dc-ledger from the controller's tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use dc_ledger::launch::LedgerProcess;
use serde_json::Value;

/// The dc-ledger binary next to dcctl, brought up to date first: cargo
/// builds a dev-dependency's library for these tests, not its binary, and a
/// binary left from before a ledger change would test the old ledger.
pub fn ledger_bin() -> PathBuf {
    let dcctl = PathBuf::from(env!("CARGO_BIN_EXE_dcctl"));
    let bin = dcctl.with_file_name("dc-ledger");
    {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let profile_dir = dcctl
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("debug")
            .to_string();
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "dc-ledger", "--bin", "dc-ledger"]);
        if profile_dir == "release" {
            cmd.arg("--release");
        }
        assert!(cmd.status().expect("cargo build dc-ledger").success());
    }
    bin
}

/// Starts dc-ledger on a free port with its data under `dir/data`.
pub fn start_ledger(dir: &Path, genesis: &Path) -> LedgerProcess {
    LedgerProcess::start(
        &ledger_bin(),
        &dir.join("data"),
        Some(genesis),
        None,
        Duration::from_secs(60),
    )
    .expect("start dc-ledger")
}

/// Runs dcctl with `args`, ignoring DC_LEDGER and DC_IDENTITY of the caller.
pub fn dcctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dcctl"))
        .args(args)
        .env_remove("DC_LEDGER")
        .env_remove("DC_IDENTITY")
        .output()
        .expect("run dcctl")
}

/// The one JSON object a `--json` run printed, whatever its exit code.
pub fn json_of(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim().lines().count(),
        1,
        "--json prints exactly one line: {text}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(text.trim()).expect("stdout is one JSON object")
}

/// The JSON object of a run that must have succeeded.
pub fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "dcctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_of(out)
}

/// The check called `name` in a verification's `checks`.
pub fn check<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["checks"]
        .as_array()
        .expect("checks is a list")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {v}"))
}

/// A new identity `who.pem` in `dir`; returns its principal's text.
pub fn new_identity(dir: &Path, who: &str) -> String {
    let out = dir.join(format!("{who}.pem")).display().to_string();
    json(&dcctl(&["identity", "new", "--out", &out, "--json"]))["principal"]
        .as_str()
        .expect("principal")
        .to_string()
}

/// `dcctl --json …` as someone (the name of an identity file in the test's
/// folder), which must succeed.
pub type DcctlOk<'a> = &'a dyn Fn(&str, &[&str]) -> Value;

/// Registers `prov` as the provider `company` (contact `ops@<domain>`) and
/// the node whose identity is `node.pem` in `dir`: 16 vCPUs in eu-central,
/// with `confidential` ("none", "sev-snp", "tdx").
pub fn register_provider_and_node(
    dir: &Path,
    ok: DcctlOk,
    company: &str,
    domain: &str,
    confidential: &str,
) {
    let email = format!("ops@{domain}");
    ok(
        "prov",
        &[
            "provider",
            "register",
            "--name",
            company,
            "--jurisdiction",
            "DE",
            "--email",
            &email,
        ],
    );
    let node_toml = dir.join("node.toml");
    std::fs::write(
        &node_toml,
        format!(
            "cpu_model = \"AMD EPYC 9654\"\nvcpus = 16\nram_gib = 64\nstorage_gib = 1000\n\
             bandwidth_mbps = 10000\nconfidential = \"{confidential}\"\nregion = \"eu-central\"\n\
             country = \"DE\"\n"
        ),
    )
    .unwrap();
    ok(
        "prov",
        &[
            "node",
            "register",
            "--node-identity",
            &dir.join("node.pem").display().to_string(),
            "--file",
            &node_toml.display().to_string(),
        ],
    );
}

/// `prov` adds the offering `name` on `node` (2 vCPUs, 1 to 100 hours at
/// 0.1 token an hour) with `confidential`; returns its id.
pub fn add_offering(dir: &Path, ok: DcctlOk, node: &str, name: &str, confidential: &str) -> u64 {
    let file = dir.join(format!("offering-{name}.toml"));
    std::fs::write(
        &file,
        format!(
            "name = \"{name}\"\nnode = \"{node}\"\nprice_e9s_per_hour = 100000000\n\
             min_hours = 1\nmax_hours = 100\nconfidential = \"{confidential}\"\nregion = \"eu-central\"\n\
             country = \"DE\"\n\n[resources]\nvcpus = 2\nram_gib = 4\nstorage_gib = 50\n\
             bandwidth_mbps = 1000\n"
        ),
    )
    .unwrap();
    ok(
        "prov",
        &["offering", "add", "--file", &file.display().to_string()],
    )["offering_id"]
        .as_u64()
        .expect("offering_id")
}
