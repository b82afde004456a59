//! `ingress-bench --smoke`: every path the machine has (HAProxy and nginx
//! are skipped, with a message, where they are not installed) moves
//! connections, replayed and full handshakes, and bulk data without a single
//! error, and the JSON carries every measurement.

use std::process::Command;

#[test]
fn the_ingress_benchmark_runs_every_measurement_without_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_ingress-bench"))
        .args(["--smoke", "--no-pin", "--json"])
        .output()
        .expect("ingress-bench runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ingress-bench --smoke failed:\n{stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the JSON report parses");
    let paths = report["paths"].as_object().expect("paths");
    for key in ["direct", "dc-ingress"] {
        let path = &paths[key];
        assert!(
            path["connections_per_s"].as_f64().unwrap() > 0.0,
            "{key}: {path}"
        );
        assert!(
            path["replayed"]["connections_per_s"].as_f64().unwrap() > 0.0,
            "{key}: {path}"
        );
        assert!(
            path["throughput_mb_per_s"].as_f64().unwrap() > 0.0,
            "{key}: {path}"
        );
        assert_eq!(path["errors"], 0, "{key}: {path}");
    }
    // The proxy's CPU is measured in both connection-rate measurements.
    let ours = &paths["dc-ingress"];
    assert!(ours["proxy_cpu_per_connection_us"].as_f64().unwrap() > 0.0);
    assert!(
        ours["replayed"]["proxy_cpu_per_connection_us"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(ours["replayed"]["proxy_busy"].as_f64().unwrap() > 0.0);
    // The ingress routed every connection it accepted.
    let tls = &report["ingress_metrics"]["tls"];
    assert!(tls["accepted"].as_u64().unwrap() > 0);
    assert_eq!(tls["accepted"], tls["routed"], "{tls}");
}
