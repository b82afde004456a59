//! The command line: exit codes and JSON output.

use std::process::Command;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dc-appliance"))
        .args(args)
        .env_remove("DC_APPLIANCE_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run dc-appliance")
}

fn write_config(dir: &std::path::Path, extra: &str) -> String {
    let path = dir.join("appliance.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{}\"\nregion = \"eu-central\"\ncountry = \"DE\"\nhost_root = \"{}\"\n{extra}\n[guest]\nkernel = \"/k\"\nbase_disk = \"/d\"\n",
            dir.join("data").display(),
            dir.join("host").display()
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn check_config_and_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path(), "");
    let out = run(&["check-config", "--config", &good]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = write_config(dir.path(), "bandwidth = 3");
    let out = run(&["check-config", "--config", &bad]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bandwidth") && err.trim().lines().count() == 1,
        "{err}"
    );

    let good = write_config(dir.path(), "");
    dc_appliance::inventory::fake::write_host(&dir.path().join("host"), "Test CPU", 6, 8192, &[]);
    let out = run(&["inventory", "--config", &good, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["inventory"]["vcpus"], 6);
    assert_eq!(v["capabilities"]["cpu_model"], "Test CPU");
    assert_eq!(v["limits"]["vcpus"], 4, "6 minus the default reserve of 2");

    let out = run(&[
        "claim",
        "--config",
        &good,
        "--token",
        "x",
        "--provider-identity",
        "/nonexistent.pem",
    ]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
