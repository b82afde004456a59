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

/// The image's systemd unit: its ExecStart is a command this binary takes,
/// and it keeps VMs alive across service stops (KillMode=process).
#[test]
fn the_systemd_unit_runs_a_real_command_and_spares_the_vms() {
    let unit_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../image/systemd/dc-appliance.service");
    let unit = std::fs::read_to_string(&unit_path).expect("image/systemd/dc-appliance.service");
    let directives: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert!(
        directives.contains(&"KillMode=process"),
        "a service stop must not kill tenant VMs"
    );
    assert!(directives.contains(&"Restart=always"));
    let exec = directives
        .iter()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut argv = exec.split_whitespace();
    assert_eq!(argv.next(), Some("@bindir@/dc-appliance"));
    let args: Vec<&str> = argv.collect();
    assert_eq!(args.first(), Some(&"run"));
    // The subcommand and its flags parse (clap rejects unknown ones before --help).
    let mut with_help = args.clone();
    with_help.push("--help");
    let out = run(&with_help);
    assert!(
        out.status.success(),
        "{exec}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
