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

/// `inventory` offers GPUs by IOMMU group, and only groups that can be
/// passed through: with vfio-pci not loaded the group is listed under
/// `gpu_groups_not_offered` with the reason and the ledger is offered no
/// GPU; once it is loaded, the group is offered.
#[test]
fn gpu_groups_that_cannot_be_passed_through_are_not_offered() {
    use dc_appliance::inventory::fake::{write_host, FakeGpu};
    use dc_appliance::vfio::fake::{load_driver, prepare_device};
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let host = dir.path().join("host");
    let gpu = "0000:41:00.0";
    write_host(
        &host,
        "Test CPU",
        6,
        8192,
        &[FakeGpu {
            address: gpu,
            vendor: 0x10de,
            device: 0x2330,
            class: 0x030200,
            group: Some("17"),
            group_peers: &[],
        }],
    );
    load_driver(&host, "nvidia").unwrap();
    prepare_device(&host, gpu, Some("nvidia")).unwrap();
    let inventory = || {
        let out = run(&["inventory", "--config", &config, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("one JSON object")
    };

    let v = inventory();
    let not_offered = v["gpu_groups_not_offered"].as_array().unwrap();
    assert_eq!(not_offered.len(), 1, "{v}");
    assert_eq!(not_offered[0]["group"], "17");
    assert!(
        not_offered[0]["reason"]
            .as_str()
            .unwrap()
            .contains("vfio-pci"),
        "{v}"
    );
    assert_eq!(v["capabilities"]["gpus"], serde_json::json!([]));
    assert_eq!(v["limits"]["gpu_groups"], serde_json::json!([]));

    load_driver(&host, "vfio-pci").unwrap();
    let v = inventory();
    assert_eq!(v["gpu_groups_not_offered"], serde_json::json!([]), "{v}");
    assert_eq!(v["capabilities"]["gpus"][0]["model"], "H100");
    assert_eq!(v["capabilities"]["gpus"][0]["count"], 1);
}
