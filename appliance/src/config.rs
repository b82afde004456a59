//! The appliance's one configuration file (TOML).
//!
//! Every default lives in [`defaults`]; unknown keys are refused; [`Config::load`]
//! validates and names the offending field in its error.
//!
//! ```toml
//! data_dir = "/var/lib/dc-appliance"      # node key, journal, VM disks
//! ledger_url = "http://127.0.0.1:8470"    # or ic://CANISTER_ID?url=REPLICA_URL
//! region = "eu-central"
//! country = "DE"                          # ISO 3166-1 alpha-2
//! bandwidth_mbps = 1000                   # advertised; not measured
//! image_hash = ""                         # SHA-256 of the appliance image, hex (optional)
//! backend = "auto"                        # cloud-hypervisor | qemu | auto
//! accel = "auto"                          # kvm | tcg | auto
//! # cloud_hypervisor_binary = "/usr/bin/cloud-hypervisor"  # default: `cloud-hypervisor` on PATH
//! # check_in_interval_secs = 300          # default: half the ledger's block interval
//! poll_interval_ms = 5000                 # how often contracts are listed
//! vm_log_max_mib = 16                     # serial/VMM logs are cut to their tail past this
//! vm_boot_timeout_secs = 300
//! delegation_valid_days = 365             # validity of the node's delegation (claim)
//! host_root = "/"                         # where /proc, /sys and /dev are read
//!
//! [limits]                                # default: the host minus a reserve (see `defaults`)
//! max_vcpus = 30
//! max_memory_mib = 126976
//! max_storage_gib = 900
//!
//! [guest]
//! kernel = "/usr/share/dc/guest/vmlinuz"
//! initrd = "/usr/share/dc/guest/initrd.img"
//! cmdline = "console=ttyS0"
//! base_disk = "/usr/share/dc/guest/base.qcow2"
//!
//! [network]
//! mode = "user"                           # user | bridge
//! bridge = "dcbr0"                        # bridge mode only
//! subnet = "10.88.0.0/16"                 # bridge mode only
//! host_addr = "127.0.0.1"                 # where forwarded ports listen
//! public_host = "127.0.0.1"               # host part of the endpoint reported to the ledger
//! port_min = 20000                        # forwarded host ports come from this range
//! port_max = 20999
//! guest_port = 22                         # the guest port the endpoint forwards to
//! uplink = "eth0"                         # bridge mode: VM egress only through it (default: any)
//!
//! [ingress]                               # absent: no ingress
//! domain = "node1.provider.example"       # contracts answer as c<id>.<domain>
//! tls_listen = "[::]:443"
//! http_listen = "[::]:80"
//! guest_tls_port = 443                    # where the VM's TLS server listens
//! guest_http_port = 80
//! max_connections_per_route = 4096
//! [ingress.proxy]                         # dc-ingress limits, timeouts, ech = "refuse"
//!
//! [readiness]
//! probe = "tcp"                           # tcp | http (GET / on the forwarded port) | serial
//! serial_marker = "login:"                # serial probe: text in the serial log
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Every default of the configuration, in one place.
pub mod defaults {
    /// `ledger_url`: the local `dc-ledger`'s default address.
    pub const LEDGER_URL: &str = "http://127.0.0.1:8470";
    /// `bandwidth_mbps`.
    pub const BANDWIDTH_MBPS: u32 = 1000;
    /// `poll_interval_ms`.
    pub const POLL_INTERVAL_MS: u64 = 5_000;
    /// `vm_log_max_mib`.
    pub const VM_LOG_MAX_MIB: u64 = 16;
    /// `ingress.tls_listen`.
    pub const INGRESS_TLS_LISTEN: &str = "[::]:443";
    /// `ingress.http_listen`.
    pub const INGRESS_HTTP_LISTEN: &str = "[::]:80";
    /// `ingress.max_connections_per_route`.
    pub const INGRESS_ROUTE_CONNECTIONS: u32 = 4096;
    /// `vm_boot_timeout_secs`.
    pub const VM_BOOT_TIMEOUT_SECS: u64 = 300;
    /// `delegation_valid_days`.
    pub const DELEGATION_VALID_DAYS: u64 = 365;
    /// `host_root`.
    pub const HOST_ROOT: &str = "/";
    /// vCPUs kept for the host when `limits.max_vcpus` is absent (at least 1 is offered).
    pub const RESERVE_VCPUS: u32 = 2;
    /// Memory kept for the host when `limits.max_memory_mib` is absent.
    pub const RESERVE_MEMORY_MIB: u64 = 4096;
    /// Part of the data partition's free space kept when `limits.max_storage_gib` is absent, in percent.
    pub const RESERVE_STORAGE_PERCENT: u64 = 10;
    /// `network.host_addr`.
    pub const HOST_ADDR: &str = "127.0.0.1";
    /// `network.port_min` / `network.port_max`.
    pub const PORT_MIN: u16 = 20_000;
    pub const PORT_MAX: u16 = 20_999;
    /// `network.guest_port`.
    pub const GUEST_PORT: u16 = 22;
    /// `network.bridge`.
    pub const BRIDGE: &str = "dcbr0";
    /// `network.subnet`.
    pub const SUBNET: &str = "10.88.0.0/16";
    /// `guest.cmdline`.
    pub const CMDLINE: &str = "console=ttyS0";
    /// `readiness.serial_marker`.
    pub const SERIAL_MARKER: &str = "login:";
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Which VMM runs the VMs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BackendPreference {
    CloudHypervisor,
    Qemu,
    /// Cloud Hypervisor where it can run the VM, QEMU otherwise.
    #[default]
    Auto,
}

/// Hardware virtualization or emulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AccelPreference {
    Kvm,
    Tcg,
    /// KVM when `/dev/kvm` exists under `host_root`, TCG otherwise.
    #[default]
    Auto,
}

/// Resource ceilings for tenant VMs. Absent fields default to the host minus a reserve.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_vcpus: Option<u32>,
    pub max_memory_mib: Option<u64>,
    pub max_storage_gib: Option<u64>,
}

/// The guest image every tenant VM boots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestImage {
    pub kernel: PathBuf,
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    /// Read-only base disk; each VM gets its own overlay in `data_dir/vms/c<id>/`.
    pub base_disk: PathBuf,
    /// Firmware for measured direct boot (OVMF), optional.
    #[serde(default)]
    pub firmware: Option<PathBuf>,
}

fn default_cmdline() -> String {
    defaults::CMDLINE.into()
}

/// How tenant VMs are networked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    /// User-mode networking with host port forwards (unprivileged; tests).
    #[default]
    User,
    /// A tap per VM on a private bridge with NAT egress.
    Bridge,
}

/// `[network]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    pub mode: NetworkMode,
    pub bridge: String,
    pub subnet: String,
    pub host_addr: IpAddr,
    /// Host part of the endpoint reported to the ledger; `host_addr` when absent.
    pub public_host: Option<String>,
    pub port_min: u16,
    pub port_max: u16,
    pub guest_port: u16,
    /// Bridge mode: the only interface VM traffic may leave through (any but
    /// the bridge when absent).
    pub uplink: Option<String>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            mode: NetworkMode::User,
            bridge: defaults::BRIDGE.into(),
            subnet: defaults::SUBNET.into(),
            host_addr: defaults::HOST_ADDR.parse().expect("constant address"),
            public_host: None,
            port_min: defaults::PORT_MIN,
            port_max: defaults::PORT_MAX,
            guest_port: defaults::GUEST_PORT,
            uplink: None,
        }
    }
}

impl NetworkConfig {
    /// The tenant network of bridge mode (checked names and subnet; nothing is created).
    pub fn tenant_network(&self) -> Result<dc_tenant_net::TenantNetwork, ConfigError> {
        let subnet: dc_tenant_net::Ipv4Subnet = self
            .subnet
            .parse()
            .map_err(|e: dc_tenant_net::NetError| invalid("network.subnet", e.to_string()))?;
        dc_tenant_net::TenantNetwork::new(&self.bridge, subnet, self.uplink.as_deref()).map_err(
            |e| {
                let field = match e {
                    dc_tenant_net::NetError::InvalidName { what: "uplink", .. } => "network.uplink",
                    _ => "network.bridge",
                };
                invalid(field, e.to_string())
            },
        )
    }

    /// The host name or address tenants use to reach forwarded ports (an
    /// IPv6 address in brackets, ready for `HOST:PORT`).
    pub fn endpoint_host(&self) -> String {
        match &self.public_host {
            Some(h) => match h.parse::<IpAddr>() {
                Ok(IpAddr::V6(a)) => format!("[{a}]"),
                _ => h.clone(),
            },
            None => match self.host_addr {
                IpAddr::V6(a) => format!("[{a}]"),
                a => a.to_string(),
            },
        }
    }
}

/// Checks an endpoint host: a DNS name, an IPv4 address or an IPv6 address
/// (bare or in brackets); never an unspecified address (0.0.0.0, ::), which no
/// tenant can connect to.
pub fn validate_endpoint_host(host: &str) -> Result<(), String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        if bare != host && ip.is_ipv4() {
            return Err(format!("{host:?}: only IPv6 addresses go in brackets"));
        }
        if ip.is_unspecified() {
            return Err(format!(
                "{host:?} is the unspecified address; tenants cannot connect to it (set a public name or address)"
            ));
        }
        return Ok(());
    }
    if bare != host {
        return Err(format!("{host:?}: brackets hold an IPv6 address only"));
    }
    let labels_ok = !host.is_empty()
        && host.len() <= 253
        && host.trim_end_matches('.').split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    // All-numeric dotted names are malformed IPv4 addresses, not host names.
    let numeric = host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if !labels_ok || numeric {
        return Err(format!(
            "expected a host name or IP address, found {host:?}"
        ));
    }
    Ok(())
}

impl NetworkConfig {
    /// Validates the endpoint host (`public_host`, else `host_addr`).
    fn validate_endpoint(&self) -> Result<(), ConfigError> {
        match &self.public_host {
            Some(h) => validate_endpoint_host(h).map_err(|r| invalid("network.public_host", r)),
            None if self.host_addr.is_unspecified() => Err(invalid(
                "network.public_host",
                format!(
                    "must be set when host_addr is {} (the endpoint reported to tenants)",
                    self.host_addr
                ),
            )),
            None => Ok(()),
        }
    }
}

/// How the agent decides a guest has booted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeKind {
    /// A TCP connection to the forwarded endpoint port succeeds and the
    /// peer does not close it at once (QEMU user networking accepts every
    /// connection on a forwarded port, then closes it when the guest refuses).
    #[default]
    Tcp,
    /// `GET /` on the forwarded endpoint port is answered with an HTTP status line.
    Http,
    /// The serial log contains `serial_marker`.
    Serial,
}

/// `[ingress]`: the SNI-passthrough ingress (absent: none). Every active
/// contract is reachable as `c<contract id>.<domain>` plus the custom domains
/// its developer registered on the ledger; TLS on `tls_listen` is routed on
/// the ClientHello's server name and never terminated, plain HTTP on
/// `http_listen` on the Host header (ACME HTTP-01 inside the VM).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressSection {
    /// The node's DNS domain (a wildcard record `*.domain` points at the node).
    pub domain: String,
    #[serde(default = "default_tls_listen")]
    pub tls_listen: std::net::SocketAddr,
    /// Plain HTTP; absent: port 80 is not served.
    #[serde(default = "default_http_listen")]
    pub http_listen: Option<std::net::SocketAddr>,
    /// The VM's TLS port the ingress connects to.
    #[serde(default = "default_guest_tls_port")]
    pub guest_tls_port: u16,
    /// The VM's HTTP port.
    #[serde(default = "default_guest_http_port")]
    pub guest_http_port: u16,
    /// Most connections open to one VM at once.
    #[serde(default = "default_route_connections")]
    pub max_connections_per_route: u32,
    /// Limits, timeouts and the ECH policy of `dc-ingress` (its defaults
    /// when absent). Browsers send GREASE ECH: see the README before
    /// choosing `ech = "route_outer_name"`.
    #[serde(default)]
    pub proxy: dc_ingress::IngressConfig,
}

fn default_tls_listen() -> std::net::SocketAddr {
    defaults::INGRESS_TLS_LISTEN
        .parse()
        .expect("constant address")
}
fn default_http_listen() -> Option<std::net::SocketAddr> {
    Some(
        defaults::INGRESS_HTTP_LISTEN
            .parse()
            .expect("constant address"),
    )
}
fn default_guest_tls_port() -> u16 {
    443
}
fn default_guest_http_port() -> u16 {
    80
}
fn default_route_connections() -> u32 {
    defaults::INGRESS_ROUTE_CONNECTIONS
}

/// `[readiness]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadinessConfig {
    pub probe: ProbeKind,
    pub serial_marker: String,
}

impl Default for ReadinessConfig {
    fn default() -> Self {
        ReadinessConfig {
            probe: ProbeKind::Tcp,
            serial_marker: defaults::SERIAL_MARKER.into(),
        }
    }
}

/// The whole file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    #[serde(default = "default_ledger_url")]
    pub ledger_url: String,
    pub region: String,
    pub country: String,
    #[serde(default = "default_bandwidth")]
    pub bandwidth_mbps: u32,
    #[serde(default)]
    pub image_hash: String,
    #[serde(default)]
    pub backend: BackendPreference,
    #[serde(default)]
    pub accel: AccelPreference,
    /// The `cloud-hypervisor` executable; absent: looked up on `PATH`.
    #[serde(default)]
    pub cloud_hypervisor_binary: Option<PathBuf>,
    /// Overrides the default check-in interval (half the ledger's block interval).
    #[serde(default)]
    pub check_in_interval_secs: Option<u64>,
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    #[serde(default = "default_boot_timeout")]
    pub vm_boot_timeout_secs: u64,
    #[serde(default = "default_valid_days")]
    pub delegation_valid_days: u64,
    /// Each VM's serial log (and VMM log) is cut to its last part (kept as
    /// `<name>.1`) once it grows past this; checked every pass.
    #[serde(default = "default_log_max_mib")]
    pub vm_log_max_mib: u64,
    #[serde(default = "default_host_root")]
    pub host_root: PathBuf,
    #[serde(default)]
    pub limits: Limits,
    pub guest: GuestImage,
    #[serde(default)]
    pub network: NetworkConfig,
    #[serde(default)]
    pub readiness: ReadinessConfig,
    #[serde(default)]
    pub ingress: Option<IngressSection>,
}

fn default_ledger_url() -> String {
    defaults::LEDGER_URL.into()
}
fn default_bandwidth() -> u32 {
    defaults::BANDWIDTH_MBPS
}
fn default_poll_ms() -> u64 {
    defaults::POLL_INTERVAL_MS
}
fn default_boot_timeout() -> u64 {
    defaults::VM_BOOT_TIMEOUT_SECS
}
fn default_log_max_mib() -> u64 {
    defaults::VM_LOG_MAX_MIB
}
fn default_valid_days() -> u64 {
    defaults::DELEGATION_VALID_DAYS
}
fn default_host_root() -> PathBuf {
    defaults::HOST_ROOT.into()
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates TOML text (`origin` names it in errors).
    pub fn parse(origin: &Path, text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() || !self.data_dir.is_absolute() {
            return Err(invalid(
                "data_dir",
                format!("expected an absolute path, found {:?}", self.data_dir),
            ));
        }
        if !(self.ledger_url.starts_with("http://")
            || self.ledger_url.starts_with("https://")
            || self.ledger_url.starts_with("ic://"))
        {
            return Err(invalid(
                "ledger_url",
                format!(
                    "expected http://HOST:PORT or ic://CANISTER_ID?url=REPLICA_URL, found {:?}",
                    self.ledger_url
                ),
            ));
        }
        if self.region.trim().is_empty() || self.region.len() > 64 {
            return Err(invalid("region", "expected 1 to 64 characters"));
        }
        if self.country.len() != 2 || !self.country.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(invalid(
                "country",
                format!(
                    "expected an ISO 3166-1 alpha-2 code like \"DE\", found {:?}",
                    self.country
                ),
            ));
        }
        if self.bandwidth_mbps == 0 {
            return Err(invalid("bandwidth_mbps", "must be at least 1"));
        }
        if !self.image_hash.is_empty()
            && (self.image_hash.len() != 64 || hex::decode(&self.image_hash).is_err())
        {
            return Err(invalid(
                "image_hash",
                "expected 64 hex characters (SHA-256) or empty",
            ));
        }
        if self.check_in_interval_secs == Some(0) {
            return Err(invalid("check_in_interval_secs", "must be at least 1"));
        }
        if self.vm_log_max_mib == 0 || self.vm_log_max_mib > 1 << 20 {
            return Err(invalid("vm_log_max_mib", "must be 1 to 1048576"));
        }
        if self.poll_interval_ms < 10 {
            return Err(invalid("poll_interval_ms", "must be at least 10"));
        }
        if self.vm_boot_timeout_secs == 0 {
            return Err(invalid("vm_boot_timeout_secs", "must be at least 1"));
        }
        if self.delegation_valid_days == 0 || self.delegation_valid_days > 3650 {
            return Err(invalid("delegation_valid_days", "must be 1 to 3650"));
        }
        if self.limits.max_vcpus == Some(0) {
            return Err(invalid("limits.max_vcpus", "must be at least 1"));
        }
        if matches!(self.limits.max_memory_mib, Some(m) if m < 64) {
            return Err(invalid("limits.max_memory_mib", "must be at least 64"));
        }
        if self.guest.kernel.as_os_str().is_empty() {
            return Err(invalid("guest.kernel", "must not be empty"));
        }
        if self.guest.base_disk.as_os_str().is_empty() {
            return Err(invalid("guest.base_disk", "must not be empty"));
        }
        let n = &self.network;
        if n.port_min == 0 || n.port_min > n.port_max {
            return Err(invalid(
                "network.port_min",
                format!(
                    "expected 1 <= port_min <= port_max, found {}..{}",
                    n.port_min, n.port_max
                ),
            ));
        }
        if n.guest_port == 0 {
            return Err(invalid("network.guest_port", "must be 1 to 65535"));
        }
        n.validate_endpoint()?;
        if n.mode == NetworkMode::Bridge {
            if n.bridge.is_empty()
                || n.bridge.len() > 15
                || !n
                    .bridge
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(
                    "network.bridge",
                    format!("expected a Linux interface name, found {:?}", n.bridge),
                ));
            }
            n.tenant_network()?;
            match n.host_addr {
                IpAddr::V4(a) if !a.is_unspecified() && !a.is_loopback() => {}
                a => {
                    return Err(invalid(
                        "network.host_addr",
                        format!(
                            "bridge mode forwards with DNAT on the address tenants connect to: \
                             expected the host's own IPv4 address, found {a}"
                        ),
                    ))
                }
            }
        }
        if let Some(i) = &self.ingress {
            dc_ingress::HostName::parse(&format!("c0.{}", i.domain)).map_err(|e| {
                invalid(
                    "ingress.domain",
                    format!("expected a DNS name, found {:?}: {e}", i.domain),
                )
            })?;
            if i.guest_tls_port == 0 || i.guest_http_port == 0 {
                return Err(invalid(
                    "ingress.guest_tls_port",
                    "ports must be 1 to 65535",
                ));
            }
            if i.max_connections_per_route == 0 {
                return Err(invalid(
                    "ingress.max_connections_per_route",
                    "must be at least 1",
                ));
            }
            i.proxy
                .validate()
                .map_err(|e| invalid("ingress.proxy", e.to_string()))?;
        }
        if self.readiness.probe == ProbeKind::Serial && self.readiness.serial_marker.is_empty() {
            return Err(invalid("readiness.serial_marker", "must not be empty"));
        }
        Ok(())
    }

    /// `data_dir/node.pem`: the node key.
    pub fn node_key_path(&self) -> PathBuf {
        self.data_dir.join("node.pem")
    }
    /// `data_dir/claim-token`.
    pub fn claim_token_path(&self) -> PathBuf {
        self.data_dir.join("claim-token")
    }
    /// `data_dir/claimed.json`.
    pub fn claimed_path(&self) -> PathBuf {
        self.data_dir.join("claimed.json")
    }
    /// `data_dir/journal.jsonl`.
    pub fn journal_path(&self) -> PathBuf {
        self.data_dir.join("journal.jsonl")
    }
    /// `data_dir/vms/c<id>`.
    pub fn vm_dir(&self, contract_id: u64) -> PathBuf {
        self.data_dir.join("vms").join(format!("c{contract_id}"))
    }
    /// The VM boot timeout.
    pub fn vm_boot_timeout(&self) -> Duration {
        Duration::from_secs(self.vm_boot_timeout_secs)
    }
    /// The contract polling interval.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
data_dir = "/var/lib/dc"
region = "eu-central"
country = "DE"
[guest]
kernel = "/k"
base_disk = "/d.qcow2"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.toml"), text)
    }

    #[test]
    fn a_minimal_file_gets_the_documented_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.ledger_url, defaults::LEDGER_URL);
        assert_eq!(c.backend, BackendPreference::Auto);
        assert_eq!(c.accel, AccelPreference::Auto);
        assert_eq!(c.network.mode, NetworkMode::User);
        assert_eq!(c.network.port_min, defaults::PORT_MIN);
        assert_eq!(c.guest.cmdline, defaults::CMDLINE);
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.check_in_interval_secs, None);
        assert_eq!(c.vm_dir(7), Path::new("/var/lib/dc/vms/c7"));
        assert_eq!(c.network.endpoint_host(), "127.0.0.1");
    }

    #[test]
    fn a_full_file_parses() {
        let text = format!(
            "{MINIMAL}\n[limits]\nmax_vcpus = 4\nmax_memory_mib = 8192\nmax_storage_gib = 50\n\
             [network]\nmode = \"bridge\"\nbridge = \"br-t\"\nsubnet = \"10.1.0.0/24\"\n\
             host_addr = \"192.0.2.10\"\nuplink = \"eth0\"\n\
             [readiness]\nprobe = \"serial\"\nserial_marker = \"ready\"\n"
        )
        .replace(
            "country = \"DE\"",
            "country = \"DE\"\nbackend = \"qemu\"\naccel = \"tcg\"\ncheck_in_interval_secs = 30",
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.backend, BackendPreference::Qemu);
        assert_eq!(c.accel, AccelPreference::Tcg);
        assert_eq!(c.limits.max_vcpus, Some(4));
        assert_eq!(c.network.mode, NetworkMode::Bridge);
        assert_eq!(c.network.uplink.as_deref(), Some("eth0"));
        assert_eq!(c.network.tenant_network().unwrap().bridge(), "br-t");
        assert_eq!(c.readiness.probe, ProbeKind::Serial);
        assert_eq!(c.check_in_interval_secs, Some(30));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (MINIMAL.replace("[guest]", "colour = 1\n[guest]"), "colour"),
            (MINIMAL.replace("/var/lib/dc", "relative"), "data_dir"),
            (MINIMAL.replace("\"DE\"", "\"Germany\""), "country"),
            (MINIMAL.replace("kernel = \"/k\"\n", ""), "kernel"),
            (
                format!("{MINIMAL}[limits]\nmax_vcpus = 0\n"),
                "limits.max_vcpus",
            ),
            (format!("{MINIMAL}[limits]\nmax_cpus = 3\n"), "max_cpus"),
            (
                format!("{MINIMAL}[network]\nport_min = 30000\nport_max = 20000\n"),
                "network.port_min",
            ),
            (
                format!("{MINIMAL}[network]\nmode = \"bridge\"\nsubnet = \"10.0.0.0\"\n"),
                "network.subnet",
            ),
            (format!("{MINIMAL}[network]\nmode = \"tap\"\n"), "mode"),
            (
                format!("{MINIMAL}[network]\nmode = \"bridge\"\nhost_addr = \"127.0.0.1\"\n"),
                "network.host_addr",
            ),
            (
                format!("{MINIMAL}[network]\nmode = \"bridge\"\nhost_addr = \"192.0.2.1\"\nuplink = \"a b\"\n"),
                "network.uplink",
            ),
            (
                MINIMAL.replace("country = \"DE\"", "country = \"DE\"\nbackend = \"xen\""),
                "backend",
            ),
            (
                MINIMAL.replace("country = \"DE\"", "country = \"DE\"\nimage_hash = \"zz\""),
                "image_hash",
            ),
            (
                MINIMAL.replace(
                    "country = \"DE\"",
                    "country = \"DE\"\nledger_url = \"ftp://x\"",
                ),
                "ledger_url",
            ),
        ];
        for (text, field) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(field), "{e:?} should name {field}");
        }
    }

    #[test]
    fn the_ingress_section_has_defaults_and_is_validated() {
        let c = parse(&format!("{MINIMAL}[ingress]\ndomain = \"node1.example\"\n")).unwrap();
        let i = c.ingress.expect("an ingress");
        assert_eq!(i.tls_listen, "[::]:443".parse().unwrap());
        assert_eq!(i.http_listen, Some("[::]:80".parse().unwrap()));
        assert_eq!((i.guest_tls_port, i.guest_http_port), (443, 80));
        assert_eq!(i.proxy, dc_ingress::IngressConfig::default());
        assert!(
            parse(MINIMAL).unwrap().ingress.is_none(),
            "absent: no ingress"
        );
        let c = parse(&format!(
            "{MINIMAL}[ingress]\ndomain = \"n.example\"\n[ingress.proxy]\nech = \"route_outer_name\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.ingress.unwrap().proxy.ech,
            dc_ingress::EchPolicy::RouteOuterName
        );
        for (extra, field) in [
            ("domain = \"not a name\"\n", "ingress.domain"),
            ("domain = \"10.0.0.1\"\n", "ingress.domain"),
            (
                "domain = \"n.example\"\nguest_tls_port = 0\n",
                "ingress.guest_tls_port",
            ),
            (
                "domain = \"n.example\"\nmax_connections_per_route = 0\n",
                "ingress.max_connections_per_route",
            ),
            ("domain = \"n.example\"\ncolour = 1\n", "colour"),
        ] {
            let e = parse(&format!("{MINIMAL}[ingress]\n{extra}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{e:?} should name {field}");
        }
    }

    #[test]
    fn the_endpoint_host_is_validated_and_ipv6_bracketed() {
        let with = |extra: &str| parse(&format!("{MINIMAL}[network]\n{extra}\n"));
        for bad in [
            "public_host = \"0.0.0.0\"",
            "public_host = \"::\"",
            "public_host = \"[::]\"",
            "public_host = \"\"",
            "public_host = \"host name\"",
            "public_host = \"a/b\"",
            "public_host = \"[1.2.3.4]\"",
            "public_host = \"1.2.3\"",
            "host_addr = \"0.0.0.0\"",
        ] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains("network.public_host"), "{bad}: {e}");
        }
        for (good, host) in [
            ("public_host = \"vm.example.com\"", "vm.example.com"),
            ("public_host = \"203.0.113.7\"", "203.0.113.7"),
            ("public_host = \"2001:db8::1\"", "[2001:db8::1]"),
            ("public_host = \"[2001:db8::1]\"", "[2001:db8::1]"),
            ("host_addr = \"0.0.0.0\"\npublic_host = \"node1\"", "node1"),
            ("host_addr = \"::1\"", "[::1]"),
        ] {
            let c = with(good).unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(c.network.endpoint_host(), host, "{good}");
        }
    }
}
