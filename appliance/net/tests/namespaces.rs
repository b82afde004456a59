//! Real kernel networking, inside network namespaces this test creates and
//! removes (even on panic). Needs root, `ip netns` and `nft`; otherwise each
//! test prints why it is skipped and passes.
//!
//! Topology: a "host" namespace holds the bridge, the taps and the nftables
//! table; an "inet" namespace is the internet, joined to the host by a veth
//! pair (the uplink); "vma" and "vmb" stand in for VMs, each joined to the
//! bridge by a veth attached exactly as a tap is (a tap without a VMM has no
//! carrier, so taps are tested for creation and attachment only).

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use dc_tenant_net::{Forward, Ipv4Subnet, TenantNetwork, NFT_TABLE};

const HOST_UPLINK: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const INTERNET: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const BRIDGE: &str = "dcbr0";

/// Why these tests cannot run here, if they cannot.
fn skip_reason(tag: &str) -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: network namespaces, bridges and nftables need CAP_NET_ADMIN".into());
    }
    if Command::new("nft").arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
        return Some("`nft` is not installed (Debian package nftables)".into());
    }
    let probe = format!("dc-test-{}-{tag}-probe", std::process::id());
    match Command::new("ip").args(["netns", "add", &probe]).output() {
        Ok(o) if o.status.success() => {
            let _ = Command::new("ip").args(["netns", "del", &probe]).status();
            None
        }
        Ok(o) => Some(format!("`ip netns add` failed: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Some(format!("`ip` cannot run: {e}")),
    }
}

macro_rules! skip_unless_possible {
    ($tag:expr) => {
        if let Some(reason) = skip_reason($tag) {
            // Straight to stderr: libtest would swallow `eprintln!` of a passing test.
            let _ = writeln!(std::io::stderr(), "SKIPPED {}: {reason}", $tag);
            return;
        }
    };
}

/// Runs a command, panicking with its stderr when it fails.
fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a command succeeds.
fn succeeds(args: &[&str]) -> bool {
    Command::new(args[0]).args(&args[1..]).output().map(|o| o.status.success()).unwrap_or(false)
}

/// Network namespaces named `dc-test-<pid>-<tag>-<role>`, deleted on drop
/// (which takes their interfaces, bridge, taps and nftables tables with them).
struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    fn create(tag: &str, roles: &[&str]) -> Self {
        let mut ns = Self { names: Vec::new() };
        for role in roles {
            let name = format!("dc-test-{}-{tag}-{role}", std::process::id());
            sh(&["ip", "netns", "add", &name]);
            ns.names.push(name.clone());
            sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        }
        ns
    }

    fn get(&self, role: &str) -> &str {
        self.names.iter().find(|n| n.ends_with(&format!("-{role}"))).expect("known role")
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Runs `f` on a thread that has entered network namespace `ns`; sockets it
/// creates stay in that namespace whichever thread uses them later.
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: a valid namespace fd; only this thread changes namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in namespace panicked")
    })
}

/// A TCP server that answers every connection with `<name> <peer address>`.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn serve(ns: &str, addr: Ipv4Addr, port: u16, name: &'static str) -> Server {
    let listener = in_ns(ns, || TcpListener::bind(SocketAddrV4::new(addr, port)).expect("bind"));
    listener.set_nonblocking(true).expect("nonblocking");
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::spawn(move || {
        while !stopped.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut conn, peer)) => {
                    let _ = conn.set_nonblocking(false);
                    let _ = writeln!(conn, "{name} {}", peer.ip());
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("accept: {e}"),
            }
        }
    });
    Server { stop, thread: Some(thread) }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from namespace `ns` to `addr:port` and returns the server's answer.
fn probe(ns: &str, addr: Ipv4Addr, port: u16) -> Result<String, String> {
    let target = SocketAddr::V4(SocketAddrV4::new(addr, port));
    in_ns(ns, move || {
        let mut conn = TcpStream::connect_timeout(&target, Duration::from_millis(1500)).map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer).map_err(|e| e.to_string())?;
        Ok(answer.trim().to_string())
    })
}

fn nft_table_text(ns: &str) -> Option<String> {
    let out =
        Command::new("ip").args(["netns", "exec", ns, "nft", "list", "table", "inet", NFT_TABLE]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Number of rules per chain of the table, from `nft -j`.
fn nft_rule_count(ns: &str, chain: &str) -> usize {
    let json = sh(&["ip", "netns", "exec", ns, "nft", "-j", "list", "table", "inet", NFT_TABLE]);
    let value: serde_json::Value = serde_json::from_str(&json).expect("nft -j gives JSON");
    value["nftables"].as_array().expect("nftables array").iter().filter(|item| item["rule"]["chain"] == chain).count()
}

/// A veth pair: `host_end` in the host namespace, `eth0` in the VM namespace
/// with `addr` and a default route via the gateway.
fn add_vm(ns: &Namespaces, net: &TenantNetwork, role: &str, host_end: &str, addr: Ipv4Addr) {
    let (host, vm) = (ns.get("host"), ns.get(role));
    sh(&["ip", "-n", host, "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", vm]);
    let cidr = format!("{addr}/{}", net.subnet().prefix_len());
    sh(&["ip", "-n", vm, "addr", "add", &cidr, "dev", "eth0"]);
    sh(&["ip", "-n", vm, "link", "set", "eth0", "up"]);
    sh(&["ip", "-n", vm, "route", "add", "default", "via", &net.gateway().to_string()]);
    net.attach_interface(host_end).expect("attach veth");
}

#[test]
fn nat_egress_forwards_isolation_idempotence_teardown() {
    skip_unless_possible!("scn");
    let ns = Namespaces::create("scn", &["host", "inet", "vma", "vmb"]);
    let (host, inet, vma) = (ns.get("host"), ns.get("inet"), ns.get("vma"));

    // The uplink and the internet, which routes the tenant subnet to the host
    // so that "no inbound path" is the firewall's doing, not a missing route.
    sh(&["ip", "-n", host, "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", inet]);
    sh(&["ip", "-n", host, "addr", "add", &format!("{HOST_UPLINK}/24"), "dev", "up0"]);
    sh(&["ip", "-n", host, "link", "set", "up0", "up"]);
    sh(&["ip", "-n", inet, "addr", "add", &format!("{INTERNET}/24"), "dev", "up1"]);
    sh(&["ip", "-n", inet, "link", "set", "up1", "up"]);
    sh(&["ip", "-n", inet, "route", "add", "10.88.0.0/16", "via", &HOST_UPLINK.to_string()]);

    // With br_netfilter, frames between bridge ports also cross the inet
    // forward hook, where the ruleset drops bridge-to-bridge traffic: turn
    // that off here so the isolation check below tests port isolation itself
    // (which also covers ARP, which no inet rule sees).
    let _ = Command::new("ip")
        .args(["netns", "exec", host, "sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=0"])
        .status();

    let subnet: Ipv4Subnet = "10.88.0.0/16".parse().unwrap();
    let net = TenantNetwork::new(BRIDGE, subnet, Some("up0")).unwrap().in_netns(host).unwrap();
    net.setup().expect("setup");
    let (addr_a, addr_b) = (net.address_for(1), net.address_for(2));
    add_vm(&ns, &net, "vma", "va0", addr_a);
    add_vm(&ns, &net, "vmb", "vb0", addr_b);

    let _internet = serve(inet, INTERNET, 8080, "internet");
    let _vm_a = serve(vma, addr_a, 80, "vm-a");
    let _vm_b = serve(ns.get("vmb"), addr_b, 80, "vm-b");
    let _host_service = serve(host, Ipv4Addr::UNSPECIFIED, 9999, "host");

    // Controls: the host itself (where the SNI proxy runs) reaches both VMs
    // and its own service, so the refusals below are the rules' doing.
    assert_eq!(probe(host, addr_a, 80).as_deref(), Ok("vm-a 10.88.0.1"));
    assert_eq!(probe(host, addr_b, 80).as_deref(), Ok("vm-b 10.88.0.1"));
    let own = probe(host, net.gateway(), 9999);
    assert!(own.as_deref().is_ok_and(|a| a.starts_with("host ")), "{own:?}");

    // (1) Egress with NAT: the internet sees the host's uplink address.
    assert_eq!(probe(vma, INTERNET, 8080), Ok(format!("internet {HOST_UPLINK}")));

    // (2) No inbound path to a VM's private address.
    assert!(probe(inet, addr_a, 80).is_err(), "the internet reached a VM directly");

    // (3) An explicit forward works, and shows the real client; then stops.
    let forward = Forward { host_addr: HOST_UPLINK, host_port: 8081, vm_addr: addr_a, guest_port: 80 };
    net.forward(&forward).expect("forward");
    net.forward(&forward).expect("forwarding twice is a no-op");
    assert_eq!(probe(inet, HOST_UPLINK, 8081), Ok(format!("vm-a {INTERNET}")));
    assert!(probe(inet, addr_a, 80).is_err(), "a forward opens only the forwarded host port");
    // A VM cannot use the host's forward to reach another VM.
    assert!(probe(ns.get("vmb"), HOST_UPLINK, 8081).is_err(), "VM B reached VM A through the forward");

    // (5) setup again: same ruleset, the forward survives, one bridge address.
    let before = nft_table_text(host).expect("table present");
    let forward_rules = nft_rule_count(host, "forward");
    net.setup().expect("second setup");
    assert_eq!(nft_table_text(host).as_deref(), Some(before.as_str()));
    assert_eq!(nft_rule_count(host, "forward"), forward_rules);
    assert!(before.contains("masquerade") && before.contains(&format!("{HOST_UPLINK} . 8081")), "{before}");
    let addrs = sh(&["ip", "-n", host, "-4", "-o", "addr", "show", "dev", BRIDGE]);
    assert_eq!(addrs.lines().count(), 1, "{addrs}");
    assert_eq!(probe(inet, HOST_UPLINK, 8081), Ok(format!("vm-a {INTERNET}")));

    net.unforward(&forward).expect("unforward");
    net.unforward(&forward).expect("unforwarding twice is a no-op");
    assert!(probe(inet, HOST_UPLINK, 8081).is_err(), "the forward outlived unforward");
    // Conflicting forward of a host port already taken is refused.
    net.forward(&forward).unwrap();
    let other = Forward { vm_addr: addr_b, ..forward };
    let err = net.forward(&other).expect_err("host port already forwarded");
    assert!(err.to_string().contains("nft -f -") && err.to_string().contains("File exists"), "{err}");
    net.unforward(&forward).unwrap();

    // (4) Isolation: VM A reaches neither VM B on the bridge (isolated ports)
    // nor through the host (routed), nor the host's own services.
    assert!(probe(vma, addr_b, 80).is_err(), "VM A reached VM B over the bridge");
    sh(&["ip", "-n", vma, "route", "add", &format!("{addr_b}/32"), "via", &net.gateway().to_string()]);
    assert!(probe(vma, addr_b, 80).is_err(), "VM A reached VM B through the host");
    assert!(probe(vma, net.gateway(), 9999).is_err(), "VM A reached a host service");
    assert!(probe(vma, HOST_UPLINK, 9999).is_err(), "VM A reached a host service on the uplink address");
    // …and still reaches the internet.
    assert_eq!(probe(vma, INTERNET, 8080), Ok(format!("internet {HOST_UPLINK}")));

    // (6) Teardown leaves nothing: no table, no bridge, no taps.
    let tap = net.attach(net.address_for(3)).expect("tap");
    assert_eq!(net.list_taps().unwrap(), vec![tap.name.clone()]);
    net.teardown().expect("teardown");
    assert!(nft_table_text(host).is_none(), "table left behind");
    assert!(!succeeds(&["ip", "-n", host, "link", "show", "dev", BRIDGE]), "bridge left behind");
    assert!(!succeeds(&["ip", "-n", host, "link", "show", "dev", &tap.name]), "tap left behind");
    assert!(net.list_taps().unwrap().is_empty());
    net.teardown().expect("teardown twice is a no-op");
    assert!(probe(vma, INTERNET, 8080).is_err(), "egress after teardown");
}

#[test]
fn tap_is_created_attached_isolated_and_removed() {
    skip_unless_possible!("tap");
    let ns = Namespaces::create("tap", &["host"]);
    let host = ns.get("host");
    let net = TenantNetwork::new(BRIDGE, "10.88.0.0/16".parse().unwrap(), None).unwrap().in_netns(host).unwrap();
    net.setup().expect("setup");

    let addr = net.address_for(42);
    let tap = net.attach(addr).expect("attach");
    assert_eq!(tap, net.attach(addr).expect("attach twice is a no-op"));
    assert_eq!(tap.name, "dct0a58002c");

    let json = sh(&["ip", "netns", "exec", host, "bridge", "-j", "-d", "link", "show", "dev", &tap.name]);
    let ports: serde_json::Value = serde_json::from_str(&json).expect("bridge -j gives JSON");
    let port = &ports[0];
    assert_eq!(port["ifname"], tap.name.as_str(), "{json}");
    assert_eq!(port["master"], BRIDGE, "{json}");
    assert_eq!(port["isolated"], true, "{json}");

    // A tap: `ip -d` reports it as a tun device in tap mode.
    let details = sh(&["ip", "-n", host, "-d", "link", "show", "dev", &tap.name]);
    assert!(details.contains("tun type tap"), "{details}");

    net.detach(addr).expect("detach");
    assert!(!succeeds(&["ip", "-n", host, "link", "show", "dev", &tap.name]));
    net.detach(addr).expect("detach twice is a no-op");
    net.teardown().expect("teardown");
}
