//! Tenant networking of the appliance.
//!
//! Every VM sits on one private Linux bridge behind a tap device; the host
//! masquerades the VMs' traffic out through its uplink (egress NAT), refuses
//! every connection into the bridge except explicit port forwards (and the
//! host's own SNI proxy, which connects from the host itself), and keeps VMs
//! apart: bridge ports are isolated, and routing between them through the
//! host is dropped. A [`TenantNetwork`] plans commands with pure functions
//! ([`TenantNetwork::ruleset`], [`TenantNetwork::setup_commands`]…) and runs
//! them with iproute2 and `nft -f -` (one atomic transaction), optionally
//! inside a network namespace, which is how the tests run.

mod addr;
mod command;

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

pub use addr::{
    is_tap_name, tap_name_for, AddressTable, Ipv4Subnet, MacAddr, MAX_PREFIX_LEN, MIN_PREFIX_LEN, TAP_PREFIX,
};
pub use command::Cmd;

/// The nftables table (family `inet`) holding every rule of this crate.
pub const NFT_TABLE: &str = "dc_tenant";

/// Errors of tenant networking.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A subnet that is not `a.b.c.d/len` with len 8 to 30 and no host bits.
    #[error("invalid subnet {input:?}: {reason}")]
    InvalidSubnet { input: String, reason: String },
    /// An interface or namespace name unfit for the kernel or for quoting in a ruleset.
    #[error("invalid {what} name {name:?}: expected 1 to {max} of [A-Za-z0-9_.-]")]
    InvalidName { what: &'static str, name: String, max: usize },
    /// An address that is not a VM address of the subnet.
    #[error("{address} is not a VM address of {subnet} (network, gateway and broadcast are not)")]
    NotAVmAddress { address: Ipv4Addr, subnet: String },
    /// A port forward with port 0.
    #[error("port forward {forward} needs non-zero ports")]
    InvalidForward { forward: String },
    /// Every VM address of the subnet is assigned.
    #[error("no free address in {subnet}: all {capacity} VM addresses are assigned")]
    AddressesExhausted { subnet: String, capacity: u32 },
    /// A command could not be started (missing binary) or fed.
    #[error("could not run `{command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
    /// A command exited with failure.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed { command: String, status: String, stderr: String },
    /// A command's output was not what was expected.
    #[error("unexpected output of `{command}`: {reason}")]
    UnexpectedOutput { command: String, reason: String },
}

/// Tenant network settings, as found in the appliance's TOML configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantNetConfig {
    /// Bridge name; default `dcbr0`.
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// Private subnet of the VMs; default `10.88.0.0/16`.
    #[serde(default = "default_subnet")]
    pub subnet: Ipv4Subnet,
    /// The only interface VM traffic may leave through; default none (any
    /// interface the host routes to, except the bridge).
    #[serde(default)]
    pub uplink: Option<String>,
}

fn default_bridge() -> String {
    "dcbr0".into()
}

fn default_subnet() -> Ipv4Subnet {
    Ipv4Subnet::new(Ipv4Addr::new(10, 88, 0, 0), 16).expect("the default subnet is valid")
}

impl Default for TenantNetConfig {
    fn default() -> Self {
        Self { bridge: default_bridge(), subnet: default_subnet(), uplink: None }
    }
}

/// The tap device of one VM, attached to the bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tap {
    /// Device name, `dct` + the address in hex.
    pub name: String,
    /// The MAC the guest's NIC must use (the VMM is given it).
    pub mac: MacAddr,
    /// The VM's private address.
    pub address: Ipv4Addr,
    /// Its default gateway (the bridge).
    pub gateway: Ipv4Addr,
    /// Prefix length of the subnet.
    pub prefix_len: u8,
}

impl Tap {
    /// What the VM specification carries for this tap.
    pub fn vmm_network(&self) -> dc_vmm::Network {
        dc_vmm::Network::Tap { tap: self.name.clone(), mac: self.mac.to_string() }
    }

    /// Static guest configuration as a kernel `ip=` argument (there is no
    /// DHCP server on the bridge): `ip=10.88.0.2::10.88.0.1:255.255.0.0::eth0:off`.
    pub fn kernel_ip_arg(&self, guest_interface: &str) -> String {
        let mask = Ipv4Subnet::new(Ipv4Addr::new(0, 0, 0, 0), self.prefix_len)
            .map(|s| s.netmask())
            .unwrap_or(Ipv4Addr::new(255, 255, 255, 255));
        format!("ip={}::{}:{}::{}:off", self.address, self.gateway, mask, guest_interface)
    }
}

/// A TCP port of the host forwarded to a port of a VM (DNAT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    /// The host address the connection arrives at (its public address).
    pub host_addr: Ipv4Addr,
    pub host_port: u16,
    /// The VM's private address.
    pub vm_addr: Ipv4Addr,
    pub guest_port: u16,
}

impl std::fmt::Display for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} -> {}:{}", self.host_addr, self.host_port, self.vm_addr, self.guest_port)
    }
}

/// The tenant network of one host: a bridge, its subnet, the optional uplink
/// VM traffic must leave through, and the optional network namespace every
/// command runs in (tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantNetwork {
    bridge: String,
    subnet: Ipv4Subnet,
    gateway: Ipv4Addr,
    uplink: Option<String>,
    netns: Option<String>,
}

/// Longest interface name the kernel takes (IFNAMSIZ - 1).
const MAX_IFNAME_LEN: usize = 15;
const MAX_NETNS_LEN: usize = 64;

fn check_name(what: &'static str, name: &str, max: usize) -> Result<(), NetError> {
    // Names are quoted into the nftables script and passed as arguments:
    // this alphabet can break neither.
    let ok = !name.is_empty()
        && name.len() <= max
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(NetError::InvalidName { what, name: name.to_string(), max })
    }
}

impl TenantNetwork {
    /// A tenant network on `bridge` over `subnet`; the bridge gets the
    /// subnet's first address. With `uplink`, VM traffic may leave only
    /// through that interface; without, through any interface but the bridge.
    pub fn new(bridge: &str, subnet: Ipv4Subnet, uplink: Option<&str>) -> Result<Self, NetError> {
        check_name("bridge", bridge, MAX_IFNAME_LEN)?;
        if let Some(u) = uplink {
            check_name("uplink", u, MAX_IFNAME_LEN)?;
        }
        Ok(Self {
            bridge: bridge.to_string(),
            subnet,
            gateway: subnet.gateway(),
            uplink: uplink.map(str::to_string),
            netns: None,
        })
    }

    /// The tenant network described by `config`.
    pub fn from_config(config: &TenantNetConfig) -> Result<Self, NetError> {
        Self::new(&config.bridge, config.subnet, config.uplink.as_deref())
    }

    /// The same network, with every command run inside network namespace
    /// `netns` (`ip netns exec`): tests use it to leave the host alone.
    pub fn in_netns(mut self, netns: &str) -> Result<Self, NetError> {
        check_name("network namespace", netns, MAX_NETNS_LEN)?;
        self.netns = Some(netns.to_string());
        Ok(self)
    }

    /// The bridge's name.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The VMs' subnet.
    pub fn subnet(&self) -> Ipv4Subnet {
        self.subnet
    }

    /// The bridge's address, the VMs' default gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The interface VM traffic must leave through, if restricted.
    pub fn uplink(&self) -> Option<&str> {
        self.uplink.as_deref()
    }

    /// The network namespace commands run in, if any.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// The preferred private address of a contract's VM (see
    /// [`Ipv4Subnet::address_for`]; use an [`AddressTable`] to resolve collisions).
    pub fn address_for(&self, contract_id: u64) -> Ipv4Addr {
        self.subnet.address_for(contract_id)
    }

    /// The tap a VM with private address `vm_addr` gets (pure: nothing is created).
    pub fn tap_for(&self, vm_addr: Ipv4Addr) -> Result<Tap, NetError> {
        self.check_vm_addr(vm_addr)?;
        Ok(Tap {
            name: tap_name_for(vm_addr),
            mac: MacAddr::for_address(vm_addr),
            address: vm_addr,
            gateway: self.gateway,
            prefix_len: self.subnet.prefix_len(),
        })
    }

    fn check_vm_addr(&self, addr: Ipv4Addr) -> Result<(), NetError> {
        match self.subnet.vm_index(addr) {
            Some(_) => Ok(()),
            None => Err(NetError::NotAVmAddress { address: addr, subnet: self.subnet.to_string() }),
        }
    }

    fn cmd<I, S>(&self, argv: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cmd::new(argv).in_netns(self.netns.as_deref())
    }

    /// The complete nftables script of [`Self::setup`]. Applying it is
    /// idempotent and keeps the port forwards already installed: it declares
    /// the table, sets and base chains (a no-op when present), flushes the
    /// chains' rules and adds them again, all in one transaction.
    ///
    /// Base chains use policy accept so the host's other rules keep working;
    /// what must not pass is dropped explicitly, and a drop in any table is final.
    pub fn ruleset(&self) -> String {
        let br = &self.bridge;
        let net = self.subnet;
        let t = NFT_TABLE;
        let egress = match &self.uplink {
            Some(up) => format!("iifname \"{br}\" oifname \"{up}\" ip saddr {net} accept"),
            None => format!("iifname \"{br}\" ip saddr {net} accept"),
        };
        format!(
            "# dc-tenant-net: bridge {br}, subnet {net}, uplink {uplink}.
table inet {t} {{
	map port_forwards {{
		type ipv4_addr . inet_service : ipv4_addr . inet_service
	}}
	set forwarded {{
		type ipv4_addr . inet_service
	}}
	chain prerouting {{
		type nat hook prerouting priority dstnat; policy accept;
	}}
	chain postrouting {{
		type nat hook postrouting priority srcnat; policy accept;
	}}
	chain forward {{
		type filter hook forward priority filter; policy accept;
	}}
	chain input {{
		type filter hook input priority filter; policy accept;
	}}
}}
flush chain inet {t} prerouting
flush chain inet {t} postrouting
flush chain inet {t} forward
flush chain inet {t} input
table inet {t} {{
	chain prerouting {{
		# Explicit port forwards, never from a tenant (no path between VMs).
		iifname != \"{br}\" meta l4proto tcp dnat ip to ip daddr . tcp dport map @port_forwards
	}}
	chain postrouting {{
		# Egress NAT: tenant traffic leaving by any interface but the bridge.
		ip saddr {net} oifname != \"{br}\" masquerade
	}}
	chain forward {{
		# Tenants never reach each other through the host.
		iifname \"{br}\" oifname \"{br}\" drop
		# Into the bridge: replies, and connections to forwarded ports only.
		oifname \"{br}\" ct state established,related accept
		oifname \"{br}\" ct status dnat ip daddr . tcp dport @forwarded accept
		oifname \"{br}\" drop
		# Out of the bridge: replies to what was let in, and new IPv4
		# connections from the tenant subnet out the uplink.
		iifname \"{br}\" ct state established,related accept
		{egress}
		iifname \"{br}\" drop
	}}
	chain input {{
		# The host's own services are not for tenants: replies and ping only.
		iifname \"{br}\" ct state established,related accept
		iifname \"{br}\" icmp type echo-request accept
		iifname \"{br}\" drop
	}}
}}
",
            uplink = self.uplink.as_deref().unwrap_or("any"),
        )
    }

    /// The commands of [`Self::setup`], in order.
    pub fn setup_commands(&self) -> Vec<Cmd> {
        let br = self.bridge.as_str();
        let addr = format!("{}/{}", self.gateway, self.subnet.prefix_len());
        vec![
            self.cmd(["ip", "link", "add", "name", br, "type", "bridge"]).ok_if("File exists"),
            self.cmd(["ip", "addr", "replace", addr.as_str(), "dev", br]),
            self.cmd(["ip", "link", "set", "dev", br, "up"]),
            self.cmd(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]),
            self.cmd(["nft", "-f", "-"]).with_stdin(self.ruleset()),
        ]
    }

    /// Creates the bridge with the gateway address, brings it up, enables
    /// IPv4 forwarding (host-wide, or namespace-wide in tests) and installs
    /// the nftables table. Idempotent; port forwards survive it.
    pub fn setup(&self) -> Result<(), NetError> {
        for cmd in self.setup_commands() {
            cmd.run()?;
        }
        tracing::info!(bridge = %self.bridge, subnet = %self.subnet, "tenant network set up");
        Ok(())
    }

    /// The commands of [`Self::attach_interface`].
    pub fn attach_commands(&self, interface: &str) -> Result<Vec<Cmd>, NetError> {
        check_name("interface", interface, MAX_IFNAME_LEN)?;
        Ok(vec![
            self.cmd(["ip", "link", "set", "dev", interface, "master", self.bridge.as_str()]),
            // Isolated ports reach only non-isolated ones (the bridge itself,
            // i.e. the gateway), never each other: every frame, ARP included,
            // enforced by the bridge without a rule per VM.
            self.cmd(["bridge", "link", "set", "dev", interface, "isolated", "on"]),
            self.cmd(["ip", "link", "set", "dev", interface, "up"]),
        ])
    }

    /// Attaches an existing interface to the bridge as an isolated port and
    /// brings it up. [`Self::attach`] does this to taps; tests do it to veths.
    pub fn attach_interface(&self, interface: &str) -> Result<(), NetError> {
        for cmd in self.attach_commands(interface)? {
            cmd.run()?;
        }
        Ok(())
    }

    /// Creates the persistent, single-queue tap of the VM with private
    /// address `vm_addr` (unless it exists), attaches it and returns it.
    /// Idempotent.
    pub fn attach(&self, vm_addr: Ipv4Addr) -> Result<Tap, NetError> {
        let tap = self.tap_for(vm_addr)?;
        let exists = self.cmd(["ip", "link", "show", "dev", tap.name.as_str()]).run().is_ok();
        if !exists {
            self.cmd(["ip", "tuntap", "add", "dev", tap.name.as_str(), "mode", "tap"]).run()?;
        }
        self.attach_interface(&tap.name)?;
        tracing::info!(tap = %tap.name, address = %tap.address, "tap attached");
        Ok(tap)
    }

    /// Removes the tap of the VM with private address `vm_addr`. Idempotent.
    pub fn detach(&self, vm_addr: Ipv4Addr) -> Result<(), NetError> {
        let tap = self.tap_for(vm_addr)?;
        self.cmd(["ip", "link", "del", "dev", tap.name.as_str()]).ok_if("Cannot find device").run()?;
        tracing::info!(tap = %tap.name, "tap removed");
        Ok(())
    }

    fn check_forward(&self, forward: &Forward) -> Result<(), NetError> {
        self.check_vm_addr(forward.vm_addr)?;
        if forward.host_port == 0 || forward.guest_port == 0 {
            return Err(NetError::InvalidForward { forward: forward.to_string() });
        }
        Ok(())
    }

    /// The nftables script of [`Self::forward`].
    pub fn forward_script(&self, f: &Forward) -> Result<String, NetError> {
        self.check_forward(f)?;
        let t = NFT_TABLE;
        Ok(format!(
            "add element inet {t} port_forwards {{ {} . {} : {} . {} }}\nadd element inet {t} forwarded {{ {} . {} }}\n",
            f.host_addr, f.host_port, f.vm_addr, f.guest_port, f.vm_addr, f.guest_port
        ))
    }

    /// The nftables script of [`Self::unforward`]: adding then deleting in
    /// one transaction makes it idempotent.
    pub fn unforward_script(&self, f: &Forward) -> Result<String, NetError> {
        let add = self.forward_script(f)?;
        let t = NFT_TABLE;
        Ok(format!(
            "{add}delete element inet {t} port_forwards {{ {} . {} }}\ndelete element inet {t} forwarded {{ {} . {} }}\n",
            f.host_addr, f.host_port, f.vm_addr, f.guest_port
        ))
    }

    /// Forwards TCP `host_addr:host_port` to `vm_addr:guest_port` (DNAT, and
    /// the matching accept in the forward chain). Idempotent; fails when the
    /// host port is already forwarded elsewhere. Needs [`Self::setup`] first.
    ///
    /// Two forwards to the same VM port share the accept entry: unforwarding
    /// one closes the other too, so give each VM port a single host port.
    pub fn forward(&self, forward: &Forward) -> Result<(), NetError> {
        self.cmd(["nft", "-f", "-"]).with_stdin(self.forward_script(forward)?).run()?;
        tracing::info!(%forward, "port forwarded");
        Ok(())
    }

    /// Removes a forward made by [`Self::forward`]. Idempotent.
    pub fn unforward(&self, forward: &Forward) -> Result<(), NetError> {
        self.cmd(["nft", "-f", "-"]).with_stdin(self.unforward_script(forward)?).run()?;
        tracing::info!(%forward, "port forward removed");
        Ok(())
    }

    /// Names of the tap devices this crate created that exist now.
    pub fn list_taps(&self) -> Result<Vec<String>, NetError> {
        let cmd = self.cmd(["ip", "-j", "link", "show"]);
        let out = cmd.run()?;
        let links: Vec<serde_json::Value> = serde_json::from_str(&out)
            .map_err(|e| NetError::UnexpectedOutput { command: cmd.to_string(), reason: e.to_string() })?;
        Ok(links
            .iter()
            .filter_map(|l| l.get("ifname").and_then(|n| n.as_str()))
            .filter(|n| is_tap_name(n))
            .map(str::to_string)
            .collect())
    }

    /// Removes everything this crate created: the nftables table (forwards
    /// included), every `dct…` tap and the bridge. Idempotent. IPv4
    /// forwarding is left on: other services of the host may rely on it.
    pub fn teardown(&self) -> Result<(), NetError> {
        let t = NFT_TABLE;
        // Declaring the table first makes deleting it succeed when absent.
        self.cmd(["nft", "-f", "-"]).with_stdin(format!("table inet {t}\ndelete table inet {t}\n")).run()?;
        for tap in self.list_taps()? {
            self.cmd(["ip", "link", "del", "dev", tap.as_str()]).ok_if("Cannot find device").run()?;
        }
        self.cmd(["ip", "link", "del", "dev", self.bridge.as_str()]).ok_if("Cannot find device").run()?;
        tracing::info!(bridge = %self.bridge, "tenant network torn down");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> TenantNetwork {
        TenantNetwork::new("dcbr0", "10.88.0.0/16".parse().unwrap(), Some("eth0")).unwrap()
    }

    #[test]
    fn ruleset_matches_golden() {
        let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/ruleset-uplink.nft");
        if std::env::var_os("DC_UPDATE_GOLDEN").is_some() {
            std::fs::write(golden, net().ruleset()).unwrap();
        }
        let expected = std::fs::read_to_string(golden).expect("golden file (DC_UPDATE_GOLDEN=1 writes it)");
        assert_eq!(net().ruleset(), expected);
    }

    #[test]
    fn ruleset_without_uplink_lets_egress_out_anywhere_but_the_bridge() {
        let n = TenantNetwork::new("dcbr0", "10.88.0.0/16".parse().unwrap(), None).unwrap();
        let r = n.ruleset();
        assert!(r.contains("\t\tiifname \"dcbr0\" ip saddr 10.88.0.0/16 accept\n"), "{r}");
        assert!(!r.contains("oifname \"eth0\""));
        assert!(r.contains("uplink any."));
    }

    #[test]
    fn names_that_could_escape_a_ruleset_are_refused() {
        let s: Ipv4Subnet = "10.88.0.0/16".parse().unwrap();
        for bad in ["", "a\"b", "a b", "br;x", "averyveryverylongname", "..", "br/0"] {
            let e = TenantNetwork::new(bad, s, None).unwrap_err();
            assert!(matches!(e, NetError::InvalidName { .. }), "{bad:?}: {e}");
            assert!(TenantNetwork::new("dcbr0", s, Some(bad)).is_err());
        }
        assert!(net().in_netns("dc-test-1-host").is_ok());
        assert!(net().in_netns("x y").is_err());
        assert!(net().attach_commands("eth0\"").is_err());
    }

    #[test]
    fn commands_run_inside_the_namespace() {
        let n = net().in_netns("ns1").unwrap();
        let cmds = n.setup_commands();
        assert_eq!(cmds.len(), 5);
        for c in &cmds {
            assert_eq!(&c.argv[..4], ["ip", "netns", "exec", "ns1"]);
        }
        assert_eq!(cmds[1].to_string(), "ip netns exec ns1 ip addr replace 10.88.0.1/16 dev dcbr0");
        assert_eq!(cmds[4].stdin.as_deref(), Some(n.ruleset().as_str()));
        let attach: Vec<String> = n.attach_commands("veth1").unwrap().iter().map(|c| c.to_string()).collect();
        assert_eq!(
            attach,
            [
                "ip netns exec ns1 ip link set dev veth1 master dcbr0",
                "ip netns exec ns1 bridge link set dev veth1 isolated on",
                "ip netns exec ns1 ip link set dev veth1 up",
            ]
        );
        assert_eq!(net().setup_commands()[2].to_string(), "ip link set dev dcbr0 up");
    }

    #[test]
    fn forward_scripts() {
        let f = Forward {
            host_addr: Ipv4Addr::new(203, 0, 113, 1),
            host_port: 8081,
            vm_addr: Ipv4Addr::new(10, 88, 0, 2),
            guest_port: 80,
        };
        assert_eq!(
            net().forward_script(&f).unwrap(),
            "add element inet dc_tenant port_forwards { 203.0.113.1 . 8081 : 10.88.0.2 . 80 }\n\
             add element inet dc_tenant forwarded { 10.88.0.2 . 80 }\n"
        );
        assert!(net().unforward_script(&f).unwrap().ends_with(
            "delete element inet dc_tenant port_forwards { 203.0.113.1 . 8081 }\n\
             delete element inet dc_tenant forwarded { 10.88.0.2 . 80 }\n"
        ));
        let outside = Forward { vm_addr: Ipv4Addr::new(10, 89, 0, 2), ..f };
        assert!(matches!(net().forward_script(&outside), Err(NetError::NotAVmAddress { .. })));
        let gateway = Forward { vm_addr: Ipv4Addr::new(10, 88, 0, 1), ..f };
        assert!(matches!(net().forward_script(&gateway), Err(NetError::NotAVmAddress { .. })));
        let zero = Forward { host_port: 0, ..f };
        assert!(matches!(net().forward_script(&zero), Err(NetError::InvalidForward { .. })));
    }

    #[test]
    fn tap_describes_the_guest() {
        let tap = net().tap_for(net().address_for(300)).unwrap();
        assert_eq!(tap.name, "dct0a58012e");
        assert_eq!(tap.kernel_ip_arg("eth0"), "ip=10.88.1.46::10.88.0.1:255.255.0.0::eth0:off");
        assert_eq!(
            tap.vmm_network(),
            dc_vmm::Network::Tap { tap: "dct0a58012e".into(), mac: "02:dc:0a:58:01:2e".into() }
        );
        assert!(net().tap_for(Ipv4Addr::new(10, 88, 255, 255)).is_err());
    }

    #[test]
    fn config_defaults_and_validation() {
        let c: TenantNetConfig = toml::from_str("").unwrap();
        assert_eq!(c, TenantNetConfig::default());
        assert_eq!(TenantNetwork::from_config(&c).unwrap().gateway(), Ipv4Addr::new(10, 88, 0, 1));
        let c: TenantNetConfig = toml::from_str("subnet = \"192.168.50.0/24\"\nuplink = \"enp1s0\"").unwrap();
        assert_eq!(TenantNetwork::from_config(&c).unwrap().uplink(), Some("enp1s0"));
        let e = toml::from_str::<TenantNetConfig>("subnet = \"192.168.50.1/24\"").unwrap_err();
        assert!(e.to_string().contains("host bits"), "{e}");
        assert!(toml::from_str::<TenantNetConfig>("bridges = \"x\"").is_err());
    }

    #[test]
    fn command_errors_carry_command_and_stderr() {
        let e = Cmd::new(["sh", "-c", "echo boom >&2; exit 3"]).run().unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("sh -c echo boom >&2; exit 3") && msg.contains("boom"), "{msg}");
        assert!(Cmd::new(["sh", "-c", "echo File exists >&2; exit 2"]).ok_if("File exists").run().is_ok());
        let e = Cmd::new(["/nonexistent/dc-binary"]).run().unwrap_err();
        assert!(matches!(e, NetError::Spawn { .. }), "{e}");
        assert_eq!(Cmd::new(["cat"]).with_stdin("hi".into()).run().unwrap(), "hi");
    }
}
