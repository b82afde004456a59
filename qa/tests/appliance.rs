//! The appliance with real processes: dc-ledger, `dc-appliance run` with the
//! QEMU backend under software emulation (TCG), dcctl as provider and
//! developer, and a real Linux guest (dc-test-guest) answering HTTP through
//! the endpoint the ledger reports.
//!
//! One scenario, in order: claim; publish; rent A, which becomes active and
//! serves HTTP; rent B (active) and C (over the agent's vCPU limit, lowered
//! below what the node registered: rejected, fully refunded, never active); `kill -9` the agent: A's QEMU keeps running
//! and answering; kill B's QEMU while the agent is down; restart: A is
//! re-adopted (same pid, same disk inode, no second QEMU, same endpoint), B's
//! death is reported and B is relaunched (a new pid) over the same disk file
//! (same inode), stays active at the same endpoint and answers HTTP again;
//! cancel A: refund = paid − released,
//! its QEMU exits and its run directory (with the overlay) is deleted.
//!
//! Skips (prints SKIPPED) when QEMU or the test guest is not available. On
//! failure the appliance log and the guests' serial logs are printed; every
//! process started here (including the detached QEMUs) is killed on drop.

use std::fs::OpenOptions;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dc_ledger::launch::LedgerProcess;
use serde_json::Value;

const TOKEN: u64 = 1_000_000_000;
const BOOT_WAIT: Duration = Duration::from_secs(120);

fn target_dir() -> PathBuf {
    // Test binaries live in target/<profile>/deps; the tools one level up.
    let exe = std::env::current_exe().expect("test exe");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf()
}

/// A workspace binary; dc-appliance is always rebuilt (cheap when fresh) so a
/// stale one is never tested, the others only when missing.
fn bin(pkg: &str, name: &str, always_build: bool) -> PathBuf {
    let dir = target_dir();
    let path = dir.join(name);
    if always_build || !path.exists() {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-q", "-p", pkg, "--bin", name]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().expect("cargo build").success(),
            "building {name}"
        );
    }
    path
}

fn alive(pid: u32) -> bool {
    // A zombie is dead for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Owns everything started here; on drop kills it and, when panicking,
/// prints the logs a reader needs.
struct Scenario {
    dir: tempfile::TempDir,
    ledger: Option<LedgerProcess>,
    appliance: Option<Child>,
    /// The network namespace the appliance runs in (bridge scenario), deleted on drop.
    netns: Option<String>,
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- appliance log ----\n{}", self.appliance_log());
            for entry in std::fs::read_dir(self.data().join("vms"))
                .into_iter()
                .flatten()
                .flatten()
            {
                for name in ["serial.log", "qemu.log"] {
                    let p = entry.path().join(name);
                    if let Ok(t) = std::fs::read_to_string(&p) {
                        eprintln!("---- {} ----\n{t}", p.display());
                    }
                }
            }
            eprintln!(
                "---- journal ----\n{}",
                std::fs::read_to_string(self.data().join("journal.jsonl")).unwrap_or_default()
            );
        }
        self.stop_appliance();
        for pid in dc_qa::cleanup::qemu_pids_mentioning(&self.dir.path().display().to_string()) {
            // SAFETY: plain kill(2) on a pid we found by our own temp dir.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        drop(self.ledger.take());
        if let Some(ns) = self.netns.take() {
            // Deleting the namespace removes its veth end, bridge and taps.
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

impl Scenario {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn data(&self) -> PathBuf {
        self.path("data")
    }
    fn config(&self) -> PathBuf {
        self.path("appliance.toml")
    }
    fn appliance_log(&self) -> String {
        std::fs::read_to_string(self.path("appliance.log")).unwrap_or_default()
    }
    fn url(&self) -> &str {
        &self.ledger.as_ref().expect("ledger").url
    }

    fn start_appliance(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("appliance.log"))
            .unwrap();
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]);
                c.arg(bin("dc-appliance", "dc-appliance", false));
                c
            }
            None => Command::new(bin("dc-appliance", "dc-appliance", false)),
        };
        let child = cmd
            .arg("run")
            .arg("--config")
            .arg(self.config())
            .env("RUST_LOG", "info")
            .env_remove("DC_APPLIANCE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start dc-appliance");
        self.appliance = Some(child);
    }

    /// SIGKILL, as a crash.
    fn stop_appliance(&mut self) {
        if let Some(mut c) = self.appliance.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn appliance_still_running(&mut self) {
        if let Some(c) = self.appliance.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("dc-appliance exited: {status}");
            }
        }
    }

    fn dcctl(&self, who: &str, args: &[&str]) -> Output {
        dc_qa::server::dcctl_as(
            &bin("dc-controller", "dcctl", false),
            self.url(),
            &self.path(who),
        )
        .args(args)
        .arg("--json")
        .output()
        .expect("run dcctl")
    }

    fn ok(&self, who: &str, args: &[&str]) -> Value {
        let out = self.dcctl(who, args);
        assert!(
            out.status.success(),
            "dcctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("one JSON object")
    }

    fn contract(&self, id: u64) -> Value {
        self.ok("dev.pem", &["contract", "show", &id.to_string()])
    }

    fn wait_state(&mut self, id: u64, state: &str) -> Value {
        let start = Instant::now();
        loop {
            self.appliance_still_running();
            let c = self.contract(id);
            if c["state"] == state {
                return c;
            }
            assert!(
                start.elapsed() < BOOT_WAIT,
                "contract {id} not {state} after {BOOT_WAIT:?}: {c}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The latest journal record of a contract.
    fn journal(&self, id: u64) -> Value {
        let text = std::fs::read_to_string(self.data().join("journal.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .rfind(|r| r["contract_id"] == id)
            .unwrap_or(Value::Null)
    }

    fn balance(&self, who: &str, principal: &str) -> u64 {
        self.ok(who, &["balance", principal])["balance_e9s"]
            .as_u64()
            .unwrap()
    }
}

/// Whether QEMU and the test guest are here (prints SKIPPED and returns None otherwise).
fn qemu_and_guest() -> Option<dc_test_guest::TestGuest> {
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
        || Command::new("qemu-img").arg("--version").output().is_err()
    {
        eprintln!("SKIPPED: qemu-system-x86_64 / qemu-img not installed");
        return None;
    }
    match dc_test_guest::TestGuest::prepare() {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("SKIPPED: test guest unavailable: {e}");
            None
        }
    }
}

/// A new identity file in the scenario's directory; its principal.
fn identity(s: &Scenario, who: &str) -> String {
    let out = Command::new(bin("dc-controller", "dcctl", false))
        .args(["identity", "new", "--out"])
        .arg(s.path(who))
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["principal"].as_str().unwrap().to_string()
}

/// A scenario with a running ledger whose genesis funds a developer and a
/// provider (identities `dev.pem`, `prov.pem`); returns their principals.
fn start_market(netns: Option<String>) -> (Scenario, String, String) {
    // Built before anything runs, so no timeout below includes a compile.
    bin("dc-appliance", "dc-appliance", true);
    let ledger_bin = bin("dc-ledger", "dc-ledger", false);
    let mut s = Scenario {
        dir: tempfile::tempdir().unwrap(),
        ledger: None,
        appliance: None,
        netns,
    };
    let (dev, prov, treasury) = (
        identity(&s, "dev.pem"),
        identity(&s, "prov.pem"),
        identity(&s, "treasury.pem"),
    );
    std::fs::write(
        s.path("genesis.toml"),
        format!(
            "treasury = \"{treasury}\"\n[params]\nblock_interval_secs = 3600\n\
             [[balances]]\nprincipal = \"{dev}\"\namount_e9s = {}\n\
             [[balances]]\nprincipal = \"{prov}\"\namount_e9s = {}\n",
            1_000 * TOKEN,
            100 * TOKEN
        ),
    )
    .unwrap();
    s.ledger = Some(
        LedgerProcess::start(
            &ledger_bin,
            &s.path("ledger"),
            Some(&s.path("genesis.toml")),
            Some(&s.path("ledger.log")),
            Duration::from_secs(60),
        )
        .expect("start dc-ledger"),
    );
    (s, dev, prov)
}

/// An empty 64 MiB qcow2 base disk.
fn make_base_disk(s: &Scenario) -> PathBuf {
    let base = s.path("base.qcow2");
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&base)
        .arg("64M")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qemu-img: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    base
}

/// Waits for the running agent's claim token, registers the provider and
/// claims the node with `claim_config`; returns the node's principal.
fn claim_node(s: &Scenario, prov: &str, claim_config: &std::path::Path) -> String {
    let token_path = s.data().join("claim-token");
    wait_until("the claim token", Duration::from_secs(30), || {
        token_path.exists()
    });
    let token = std::fs::read_to_string(&token_path).unwrap();
    s.ok(
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
        ],
    );
    let out = Command::new(bin("dc-appliance", "dc-appliance", false))
        .args(["claim", "--json", "--config"])
        .arg(claim_config)
        .args(["--token", token.trim(), "--provider-identity"])
        .arg(s.path("prov.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "claim: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claimed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(claimed["provider"], prov);
    claimed["node"].as_str().unwrap().to_string()
}

/// Publishes a 1-vCPU offering of `ram_gib` on `node`; its id.
fn add_offering(s: &Scenario, node: &str, name: &str, ram_gib: u32) -> String {
    let file = s.path(&format!("{name}.toml"));
    std::fs::write(
        &file,
        format!(
            "name = \"{name}\"\nnode = \"{node}\"\nprice_e9s_per_hour = {TOKEN}\nmin_hours = 1\nmax_hours = 10\n\
             confidential = \"none\"\nregion = \"eu-central\"\ncountry = \"DE\"\n\n\
             [resources]\nvcpus = 1\nram_gib = {ram_gib}\nstorage_gib = 1\nbandwidth_mbps = 100\n"
        ),
    )
    .unwrap();
    s.ok(
        "prov.pem",
        &["offering", "add", "--file", &file.display().to_string()],
    )["offering_id"]
        .as_u64()
        .unwrap()
        .to_string()
}

/// `GET /` to `addr` with `Host: host`, the whole response (status line included).
fn http_get_host(addr: &str, host: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

fn http_get(endpoint: &str) -> Result<String, String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    client
        .get(format!("http://{endpoint}/"))
        .send()
        .and_then(|r| r.text())
        .map_err(|e| e.to_string())
}

fn pid_of(record: &Value) -> u32 {
    record["handle"]["pid"].as_u64().expect("a journaled pid") as u32
}

#[test]
fn rented_vm_serves_survives_an_agent_crash_and_is_wiped_on_cancel() {
    let test_start = Instant::now();
    let Some(guest) = qemu_and_guest() else {
        return;
    };
    let (mut s, dev, prov) = start_market(None);
    // The appliance: QEMU, TCG, 2 vCPUs for tenants, the test guest.
    let base = make_base_disk(&s);
    let port_min = 40_000 + (std::process::id() % 200) as u16 * 100;
    // The SNI/Host ingress: below Linux's ephemeral port range (32768 and
    // up), which outgoing connections (the ingress's own, to the VMs) use.
    let ingress_tls = 30_000 + (std::process::id() % 1000) as u16 * 2;
    let ingress_http = ingress_tls + 1;
    let config_text = |max_memory_mib: u64| {
        format!(
            "data_dir = \"{data}\"\nledger_url = \"{url}\"\nregion = \"eu-central\"\ncountry = \"DE\"\n\
             backend = \"qemu\"\naccel = \"tcg\"\ncheck_in_interval_secs = 60\npoll_interval_ms = 200\n\
             vm_boot_timeout_secs = 100\n\
             [limits]\nmax_vcpus = 2\nmax_memory_mib = {max_memory_mib}\nmax_storage_gib = 10\n\
             [guest]\nkernel = \"{kernel}\"\ninitrd = \"{initrd}\"\ncmdline = \"{cmdline}\"\nbase_disk = \"{base}\"\n\
             [network]\nport_min = {port_min}\nport_max = {port_max}\nguest_port = 80\n\
             [readiness]\nprobe = \"http\"\n\
             [ingress]\ndomain = \"node.test\"\ntls_listen = \"127.0.0.1:{ingress_tls}\"\n\
             http_listen = \"127.0.0.1:{ingress_http}\"\n",
            data = s.data().display(),
            url = s.url(),
            kernel = guest.kernel.display(),
            initrd = guest.initrd.display(),
            cmdline = guest.cmdline,
            base = base.display(),
            port_max = port_min + 99,
        )
    };
    // The node is claimed (registered) with 4 GiB for tenants; the agent runs
    // with 2.5 GiB, as when a provider lowers the limit later. The ledger then
    // still sells a 1 GiB VM plus a 2 GiB one, and the agent must refuse the second.
    std::fs::write(s.config(), config_text(2560)).unwrap();
    std::fs::write(s.path("claim.toml"), config_text(4096)).unwrap();
    s.start_appliance();
    let node = claim_node(&s, &prov, &s.path("claim.toml"));
    let offering = add_offering(&s, &node, "tcg-small", 1);
    let big = add_offering(&s, &node, "tcg-big", 2);

    // A: rented, launched, reported active with an endpoint that a real guest answers.
    let rent_a = Instant::now();
    let a = s.ok(
        "dev.pem",
        &["rent", "--offering", &offering, "--hours", "3"],
    )["contract_id"]
        .as_u64()
        .unwrap();
    let active = s.wait_state(a, "active");
    let endpoint = active["endpoint"]
        .as_str()
        .expect("an endpoint")
        .to_string();
    eprintln!(
        "contract {a} active at {endpoint} after {:?}",
        rent_a.elapsed()
    );
    assert!(endpoint.starts_with("127.0.0.1:"), "{endpoint}");
    let body = http_get(&endpoint).expect("GET the guest");
    assert!(
        body.contains(dc_test_guest::HTTP_BODY),
        "guest said {body:?}"
    );
    // Through the ingress: port 80 routed on the Host header to A's VM; an
    // unknown name is refused, never routed by guess.
    let ingress = format!("127.0.0.1:{ingress_http}");
    let name_a = format!("c{a}.node.test");
    wait_until("A's ingress route", Duration::from_secs(30), || {
        http_get_host(&ingress, &name_a).is_ok_and(|r| r.contains(dc_test_guest::HTTP_BODY))
    });
    let unknown = http_get_host(&ingress, "c999.node.test").unwrap_or_default();
    assert!(
        unknown.starts_with("HTTP/1.1 421") && !unknown.contains(dc_test_guest::HTTP_BODY),
        "{unknown:?}"
    );
    assert!(
        body.contains(dc_test_guest::HTTP_BODY),
        "guest said {body:?}"
    );
    let rec_a = s.journal(a);
    assert_eq!(rec_a["state"], "active");
    assert_eq!(rec_a["handle"]["backend"], "qemu");
    assert_eq!(rec_a["spec"]["accel"], "tcg");
    let pid_a = pid_of(&rec_a);
    let run_a = PathBuf::from(rec_a["spec"]["run_dir"].as_str().unwrap());
    let disk_a = PathBuf::from(rec_a["spec"]["disks"][0]["path"].as_str().unwrap());
    assert!(disk_a.starts_with(&run_a));
    let inode_a = std::fs::metadata(&disk_a)
        .expect("the overlay exists")
        .ino();
    let qemu_img_info = Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(&disk_a)
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&qemu_img_info.stdout).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(
        info["backing-filename"],
        base.display().to_string(),
        "the overlay is over the base disk"
    );

    // C (2 GiB more) does not fit the agent's 2.5 GiB: rejected, never active,
    // fully refunded. B (1 GiB more) fits.
    let c = s.ok("dev.pem", &["rent", "--offering", &big, "--hours", "1"])["contract_id"]
        .as_u64()
        .unwrap();
    let rejected = s.wait_state(c, "rejected");
    assert_eq!(rejected["refunded_e9s"], rejected["paid_e9s"], "{rejected}");
    assert!(rejected.get("endpoint").is_none());
    assert!(
        s.journal(c).is_null(),
        "a rejected contract never gets a VM"
    );
    assert!(s.appliance_log().contains("rejecting contract"));
    let b = s.ok(
        "dev.pem",
        &["rent", "--offering", &offering, "--hours", "1"],
    )["contract_id"]
        .as_u64()
        .unwrap();
    let active_b = s.wait_state(b, "active");
    let endpoint_b = active_b["endpoint"].as_str().unwrap().to_string();
    assert_ne!(endpoint_b, endpoint);
    let rec_b = s.journal(b);
    let pid_b = pid_of(&rec_b);
    let run_b = PathBuf::from(rec_b["spec"]["run_dir"].as_str().unwrap());
    let disk_b = PathBuf::from(rec_b["spec"]["disks"][0]["path"].as_str().unwrap());
    let inode_b = std::fs::metadata(&disk_b)
        .expect("B's overlay exists")
        .ino();

    // Crash: kill -9 the agent. The VMs are not its children in any way that matters.
    s.stop_appliance();
    assert!(alive(pid_a), "QEMU of A died with the agent");
    let body = http_get(&endpoint).expect("the guest answers while the agent is down");
    assert!(body.contains(dc_test_guest::HTTP_BODY));
    // B's VMM dies while the agent is down.
    // SAFETY: plain kill(2) of the QEMU this test's agent started.
    unsafe {
        libc::kill(pid_b as i32, libc::SIGKILL);
    }
    wait_until("B's QEMU to exit", Duration::from_secs(10), || {
        !alive(pid_b)
    });

    let adopted_before = s.appliance_log().matches("adopted VM").count();
    let running_before = s.appliance_log().matches("agent running").count();
    s.start_appliance();
    wait_until(
        "the restarted agent to run",
        Duration::from_secs(30),
        || s.appliance_log().matches("agent running").count() > running_before,
    );
    let log = s.appliance_log();
    assert_eq!(
        log.matches("adopted VM").count(),
        adopted_before + 1,
        "A re-adopted once"
    );
    assert!(
        log.contains("VM died while the agent was down"),
        "B's death reported"
    );
    let rec_a2 = s.journal(a);
    assert_eq!(rec_a2["state"], "active");
    assert_eq!(pid_of(&rec_a2), pid_a, "same VMM process");
    assert!(alive(pid_a));
    assert_eq!(
        std::fs::metadata(&disk_a).unwrap().ino(),
        inode_a,
        "same disk file"
    );
    // B: relaunched over its own disk, a new QEMU, the contract still active.
    let rec_b2 = s.journal(b);
    assert_eq!(rec_b2["state"], "active", "{rec_b2}");
    let pid_b2 = pid_of(&rec_b2);
    assert_ne!(pid_b2, pid_b, "B runs in a new QEMU");
    assert!(alive(pid_b2));
    assert_eq!(
        std::fs::metadata(&disk_b).expect("B's disk is kept").ino(),
        inode_b,
        "B relaunched over the same disk file"
    );
    assert!(
        rec_b2["note"]
            .as_str()
            .is_some_and(|n| n.contains("VMM gone on restart")),
        "B's death journaled: {rec_b2}"
    );
    // A few passes of the loop later: nothing else launched, A still served.
    std::thread::sleep(Duration::from_secs(2));
    s.appliance_still_running();
    assert_eq!(
        dc_qa::cleanup::qemu_pids_mentioning(&run_a.display().to_string()),
        vec![pid_a],
        "no second QEMU for A"
    );
    assert_eq!(
        dc_qa::cleanup::qemu_pids_mentioning(&run_b.display().to_string()),
        vec![pid_b2],
        "exactly one QEMU for B"
    );
    assert_eq!(s.journal(b)["state"], "active");
    assert_eq!(pid_of(&s.journal(b)), pid_b2);
    let still_b = s.contract(b);
    assert_eq!(still_b["state"], "active");
    assert_eq!(still_b["endpoint"], endpoint_b.as_str());
    wait_until("B's relaunched guest to answer HTTP", BOOT_WAIT, || {
        http_get(&endpoint_b).is_ok_and(|body| body.contains(dc_test_guest::HTTP_BODY))
    });
    let still = s.contract(a);
    assert_eq!(still["state"], "active");
    assert_eq!(still["endpoint"], endpoint.as_str());
    assert!(http_get(&endpoint)
        .unwrap()
        .contains(dc_test_guest::HTTP_BODY));

    // Cancel A: refund = paid − released; the VM and its disk go.
    let dev_before = s.balance("dev.pem", &dev);
    let cancelled = s.ok("dev.pem", &["cancel", &a.to_string()]);
    let shown = s.contract(a);
    assert_eq!(shown["state"], "cancelled");
    let (paid, released, refunded) = (
        shown["paid_e9s"].as_u64().unwrap(),
        shown["released_e9s"].as_u64().unwrap(),
        shown["refunded_e9s"].as_u64().unwrap(),
    );
    assert_eq!(cancelled["refunded_e9s"].as_u64(), Some(refunded));
    assert_eq!(refunded, paid - released, "{shown}");
    assert_eq!(paid, 3 * TOKEN);
    assert!(
        refunded > 2 * TOKEN,
        "most of 3 paid hours comes back: {shown}"
    );
    assert_eq!(s.balance("dev.pem", &dev) - dev_before, refunded);
    wait_until("A's QEMU to exit", Duration::from_secs(30), || {
        !alive(pid_a)
    });
    wait_until(
        "A's run directory to be deleted",
        Duration::from_secs(30),
        || !run_a.exists(),
    );
    assert!(!disk_a.exists());
    wait_until("A journaled released", Duration::from_secs(10), || {
        s.journal(a)["state"] == "released"
    });
    // A's route went with its contract; B is still served through the ingress.
    wait_until("A's ingress route to go", Duration::from_secs(30), || {
        http_get_host(&ingress, &name_a).is_ok_and(|r| r.starts_with("HTTP/1.1 421"))
    });
    let via_ingress = http_get_host(&ingress, &format!("c{b}.node.test")).unwrap();
    assert!(
        via_ingress.contains(dc_test_guest::HTTP_BODY),
        "{via_ingress:?}"
    );
    // Counted since the agent's restart, written after every pass.
    let metrics = || -> Value {
        std::fs::read(s.data().join("ingress-metrics.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    };
    wait_until(
        "the ingress metrics to count",
        Duration::from_secs(30),
        || {
            let m = metrics();
            m["http"]["refusals"]["unknown_name"].as_u64() >= Some(1)
                && m["http"]["routed"].as_u64() >= Some(1)
                && m["routes"][0]["bytes_upstream_to_client"].as_u64() > Some(0)
        },
    );
    s.appliance_still_running();
    eprintln!("scenario took {:?}", test_start.elapsed());
}

/// Forwards every TCP connection to `listen` (an address of the root
/// namespace the appliance's namespace can reach) to `target` (the ledger on
/// the root namespace's loopback), in threads that live as long as the test.
fn tcp_relay(listen: &str, target: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind(listen).expect("bind the ledger relay");
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(upstream) = TcpStream::connect(target) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                (upstream, client),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(Shutdown::Write);
                });
            }
        }
    });
    addr
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn in_ns(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("ip netns exec");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Bridge networking with real kernel networking, in a namespace this test
/// makes (the host's own network is untouched): the appliance runs inside it
/// with `network.mode = "bridge"`; the developer and the HTTP client stay in
/// the root namespace and reach the VM only through the DNAT forward of the
/// reported endpoint. Then the VM's QEMU is killed while the agent runs: it is
/// relaunched over its disk, same address and endpoint. On cancel the forward
/// and the tap are gone.
#[test]
fn bridged_vm_is_reached_only_through_its_forward_and_relaunched_when_it_dies() {
    let Some(guest) = qemu_and_guest() else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0
        || Command::new("nft").arg("--version").output().is_err()
        || Command::new("ip").arg("-V").output().is_err()
    {
        eprintln!("SKIPPED: bridge networking needs root, nft and ip");
        return;
    }
    let n = std::process::id() % 250;
    let ns = format!("dcq{n}");
    let (veth_root, veth_ns) = (format!("dcq{n}r"), format!("dcq{n}n"));
    let (root_addr, ns_addr) = (format!("10.77.{n}.1"), format!("10.77.{n}.2"));
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    let _ = Command::new("ip")
        .args(["link", "del", &veth_root])
        .status();
    ip(&["netns", "add", &ns]);
    let (mut s, _dev, prov) = start_market(Some(ns.clone()));
    ip(&[
        "link", "add", &veth_root, "type", "veth", "peer", "name", &veth_ns,
    ]);
    ip(&["link", "set", &veth_ns, "netns", &ns]);
    ip(&["addr", "add", &format!("{root_addr}/30"), "dev", &veth_root]);
    ip(&["link", "set", &veth_root, "up"]);
    for args in [
        vec!["addr", "add", &format!("{ns_addr}/30"), "dev", &veth_ns][..].to_vec(),
        vec!["link", "set", &veth_ns, "up"],
        vec!["link", "set", "lo", "up"],
    ] {
        let mut full = vec!["-n", ns.as_str()];
        full.extend(args.iter().copied());
        ip(&full);
    }
    let ledger_port: u16 = s.url().rsplit(':').next().unwrap().parse().unwrap();
    let relay = tcp_relay(
        &format!("{root_addr}:0"),
        std::net::SocketAddr::from(([127, 0, 0, 1], ledger_port)),
    );

    let base = make_base_disk(&s);
    let config = format!(
        "data_dir = \"{data}\"\nledger_url = \"http://{relay}\"\nregion = \"eu-central\"\ncountry = \"DE\"\n\
         backend = \"qemu\"\naccel = \"tcg\"\ncheck_in_interval_secs = 60\npoll_interval_ms = 200\n\
         vm_boot_timeout_secs = 100\n\
         [limits]\nmax_vcpus = 2\nmax_memory_mib = 2048\nmax_storage_gib = 10\n\
         [guest]\nkernel = \"{kernel}\"\ninitrd = \"{initrd}\"\ncmdline = \"{cmdline}\"\nbase_disk = \"{base}\"\n\
         [network]\nmode = \"bridge\"\nbridge = \"dcqbr\"\nsubnet = \"10.78.{n}.0/24\"\n\
         host_addr = \"{ns_addr}\"\nport_min = 30000\nport_max = 30099\nguest_port = 80\n\
         [readiness]\nprobe = \"http\"\n",
        data = s.data().display(),
        kernel = guest.kernel.display(),
        initrd = guest.initrd.display(),
        cmdline = guest.cmdline,
        base = base.display(),
    );
    std::fs::write(s.config(), &config).unwrap();
    s.start_appliance();
    let node = claim_node(&s, &prov, &s.config());
    let offering = add_offering(&s, &node, "bridged", 1);

    let a = s.ok(
        "dev.pem",
        &["rent", "--offering", &offering, "--hours", "2"],
    )["contract_id"]
        .as_u64()
        .unwrap();
    let active = s.wait_state(a, "active");
    let endpoint = active["endpoint"].as_str().unwrap().to_string();
    assert_eq!(endpoint, format!("{ns_addr}:30000"), "{active}");
    let rec = s.journal(a);
    let vm_addr = rec["net"]["vm_addr"]
        .as_str()
        .expect("a private address")
        .to_string();
    let tap = rec["net"]["tap"].as_str().unwrap().to_string();
    assert!(vm_addr.starts_with(&format!("10.78.{n}.")), "{rec}");
    assert_eq!(rec["spec"]["network"]["tap"]["tap"], tap.as_str(), "{rec}");
    assert!(
        rec["spec"]["boot"]["kernel"]["cmdline"]
            .as_str()
            .is_some_and(|c| c.contains(&format!(
                "ip={vm_addr}::10.78.{n}.1:255.255.255.0::eth0:off"
            ))),
        "the guest's static address is on its kernel command line: {rec}"
    );
    // From outside the namespace: the endpoint answers (DNAT to the VM) ...
    let body = http_get(&endpoint).expect("GET through the forward");
    assert!(body.contains(dc_test_guest::HTTP_BODY), "{body:?}");
    // ... and a port that is not forwarded does not reach it.
    assert!(
        std::net::TcpStream::connect_timeout(
            &format!("{ns_addr}:30001").parse().unwrap(),
            Duration::from_secs(2)
        )
        .is_err(),
        "only the forwarded port is open"
    );
    assert!(in_ns(&ns, &["ip", "-o", "link", "show", "master", "dcqbr"]).contains(&tap));

    // The VM's QEMU dies while the agent runs: relaunched, same address and endpoint.
    let pid = pid_of(&rec);
    // SAFETY: plain kill(2) of the QEMU this test's agent started.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    wait_until(
        "the dead VM to be relaunched",
        Duration::from_secs(30),
        || {
            let r = s.journal(a);
            r["handle"]["pid"].as_u64().is_some_and(|p| p as u32 != pid)
        },
    );
    let rec2 = s.journal(a);
    assert_eq!(rec2["state"], "active");
    assert_eq!(rec2["net"], rec["net"], "same address, tap and forward");
    assert!(
        rec2["note"]
            .as_str()
            .is_some_and(|t| t.contains("while the agent was running")),
        "{rec2}"
    );
    wait_until("the relaunched guest to answer", BOOT_WAIT, || {
        http_get(&endpoint).is_ok_and(|b| b.contains(dc_test_guest::HTTP_BODY))
    });
    assert_eq!(s.contract(a)["endpoint"], endpoint.as_str());

    // Cancel: VM, forward and tap gone.
    s.ok("dev.pem", &["cancel", &a.to_string()]);
    wait_until("A journaled released", Duration::from_secs(30), || {
        s.journal(a)["state"] == "released"
    });
    let forwards = in_ns(
        &ns,
        &["nft", "list", "map", "inet", "dc_tenant", "port_forwards"],
    );
    assert!(!forwards.contains("30000"), "{forwards}");
    assert!(!in_ns(&ns, &["ip", "-o", "link", "show"]).contains(&tap));
    assert!(http_get(&endpoint).is_err(), "nothing answers after cancel");
    s.appliance_still_running();
}
