//! Addresses: the tenant subnet, stable per-VM addresses, MACs and tap names.
//!
//! Layout of a subnet: the network address, then the gateway (the bridge's
//! own address), then the VM addresses, then the broadcast address. A VM's
//! preferred address is `contract id mod capacity`, counted from the first VM
//! address, so distinct contract ids below the capacity never collide. When
//! two live contracts do collide, [`AddressTable`] (persisted by the caller)
//! moves the later one to the next free address and remembers it, so a VM
//! keeps its address for its whole life.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::NetError;

/// Shortest prefix accepted (a /8 holds 16 million VMs; anything wider is a typo).
pub const MIN_PREFIX_LEN: u8 = 8;
/// Longest prefix accepted: a /30 has exactly one VM address.
pub const MAX_PREFIX_LEN: u8 = 30;

/// Prefix of every tap device this crate creates (`dct` + 8 hex digits of the
/// VM's address: 11 characters, within the kernel's 15).
pub const TAP_PREFIX: &str = "dct";

/// An IPv4 subnet such as `10.88.0.0/16`, with the host bits of the network
/// address zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Subnet {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Subnet {
    /// A subnet; the prefix must be 8 to 30 and `network` must have no host bits set.
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> Result<Self, NetError> {
        let input = format!("{network}/{prefix_len}");
        if !(MIN_PREFIX_LEN..=MAX_PREFIX_LEN).contains(&prefix_len) {
            return Err(NetError::InvalidSubnet {
                input,
                reason: format!("prefix length must be {MIN_PREFIX_LEN} to {MAX_PREFIX_LEN}"),
            });
        }
        let mask = mask_of(prefix_len);
        if u32::from(network) & !mask != 0 {
            let expected = Ipv4Addr::from(u32::from(network) & mask);
            return Err(NetError::InvalidSubnet {
                input,
                reason: format!("host bits are set; expected {expected}/{prefix_len}"),
            });
        }
        Ok(Self { network, prefix_len })
    }

    /// The network address (all host bits zero).
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The netmask, `255.255.0.0` for a /16.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask_of(self.prefix_len))
    }

    /// The broadcast address (all host bits one).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask_of(self.prefix_len))
    }

    /// The first address after the network address: the bridge's own address
    /// and the VMs' default gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Whether `addr` lies in the subnet (network and broadcast included).
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask_of(self.prefix_len) == u32::from(self.network)
    }

    /// How many VM addresses the subnet has: all but network, gateway and broadcast.
    pub fn vm_capacity(&self) -> u32 {
        (1u32 << (32 - self.prefix_len)) - 3
    }

    /// The `index`th VM address (0 is the one right after the gateway), or
    /// `None` when `index` is not below [`Self::vm_capacity`].
    pub fn vm_address(&self, index: u32) -> Option<Ipv4Addr> {
        (index < self.vm_capacity()).then(|| Ipv4Addr::from(u32::from(self.network) + 2 + index))
    }

    /// The index of a VM address, `None` for anything that is not one
    /// (outside the subnet, network, gateway or broadcast).
    pub fn vm_index(&self, addr: Ipv4Addr) -> Option<u32> {
        if !self.contains(addr) {
            return None;
        }
        let offset = u32::from(addr) - u32::from(self.network);
        (offset >= 2 && offset - 2 < self.vm_capacity()).then(|| offset - 2)
    }

    /// The preferred address of the VM of a contract: `contract_id mod
    /// capacity`, counted from the first VM address. Deterministic; distinct
    /// ids below [`Self::vm_capacity`] get distinct addresses; never the
    /// network, gateway or broadcast address.
    pub fn address_for(&self, contract_id: u64) -> Ipv4Addr {
        let index = (contract_id % u64::from(self.vm_capacity())) as u32;
        Ipv4Addr::from(u32::from(self.network) + 2 + index)
    }
}

fn mask_of(prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix_len))
    }
}

impl fmt::Display for Ipv4Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Ipv4Subnet {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, NetError> {
        let bad = |reason: &str| NetError::InvalidSubnet { input: s.to_string(), reason: reason.to_string() };
        let (addr, len) = s.split_once('/').ok_or_else(|| bad("expected ADDRESS/PREFIX_LEN"))?;
        let network: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address before the '/'"))?;
        let prefix_len: u8 = len.parse().map_err(|_| bad("not a prefix length after the '/'"))?;
        Self::new(network, prefix_len)
    }
}

impl Serialize for Ipv4Subnet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Subnet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The stable MAC of the VM with this private address: `02:dc:` followed
    /// by the four address bytes. Locally administered (bit 1 of the first
    /// byte) and unicast (bit 0 clear), and unique exactly when the addresses
    /// are, which the [`AddressTable`] guarantees.
    pub fn for_address(addr: Ipv4Addr) -> Self {
        let [a, b, c, d] = addr.octets();
        Self([0x02, 0xdc, a, b, c, d])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

/// The name of the tap device of the VM with this private address:
/// `dct` + the address as 8 hex digits (`dct0a580002` for 10.88.0.2).
pub fn tap_name_for(addr: Ipv4Addr) -> String {
    format!("{TAP_PREFIX}{:08x}", u32::from(addr))
}

/// Whether `name` is one this crate gives tap devices (see [`tap_name_for`]).
pub fn is_tap_name(name: &str) -> bool {
    name.strip_prefix(TAP_PREFIX)
        .is_some_and(|hex| hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// Which VM holds which private address. The caller persists it (it is
/// `serde`) and passes it back after a restart, so addresses survive
/// collisions and supervisor restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressTable {
    assigned: BTreeMap<String, Ipv4Addr>,
}

impl AddressTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The address of `vm_id`: the one it already holds when that is still a
    /// VM address of `subnet`; otherwise [`Ipv4Subnet::address_for`] of the
    /// contract, or, when another VM holds that, the next free address after
    /// it (wrapping around). Fails only when every address is taken.
    pub fn assign(&mut self, subnet: &Ipv4Subnet, vm_id: &str, contract_id: u64) -> Result<Ipv4Addr, NetError> {
        if let Some(&addr) = self.assigned.get(vm_id) {
            if subnet.vm_index(addr).is_some() {
                return Ok(addr);
            }
        }
        let taken: BTreeSet<Ipv4Addr> =
            self.assigned.iter().filter(|(id, _)| id.as_str() != vm_id).map(|(_, a)| *a).collect();
        let capacity = subnet.vm_capacity();
        let start = (contract_id % u64::from(capacity)) as u32;
        for step in 0..capacity {
            let index = (start + step) % capacity;
            let Some(addr) = subnet.vm_address(index) else { break };
            if !taken.contains(&addr) {
                self.assigned.insert(vm_id.to_string(), addr);
                return Ok(addr);
            }
        }
        Err(NetError::AddressesExhausted { subnet: subnet.to_string(), capacity })
    }

    /// Records that `vm_id` holds `addr` (an address journaled earlier), so
    /// [`Self::assign`] gives it to no other VM.
    pub fn insert(&mut self, vm_id: &str, addr: Ipv4Addr) {
        self.assigned.insert(vm_id.to_string(), addr);
    }

    /// The address `vm_id` holds, if any.
    pub fn get(&self, vm_id: &str) -> Option<Ipv4Addr> {
        self.assigned.get(vm_id).copied()
    }

    /// Frees the address of `vm_id` (when its contract ends) and returns it.
    pub fn release(&mut self, vm_id: &str) -> Option<Ipv4Addr> {
        self.assigned.remove(vm_id)
    }

    /// Number of VMs holding an address.
    pub fn len(&self) -> usize {
        self.assigned.len()
    }

    /// Whether no VM holds an address.
    pub fn is_empty(&self) -> bool {
        self.assigned.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(s: &str) -> Ipv4Subnet {
        s.parse().expect("valid subnet")
    }

    #[test]
    fn subnet_parses_and_rejects() {
        let s = subnet("10.88.0.0/16");
        assert_eq!(s.to_string(), "10.88.0.0/16");
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 88, 255, 255));
        assert_eq!(s.netmask(), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(s.vm_capacity(), 65536 - 3);
        for bad in ["10.88.0.1/16", "10.88.0.0", "10.88.0.0/31", "10.0.0.0/7", "x/16", "10.88.0.0/x"] {
            let err = bad.parse::<Ipv4Subnet>().expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn address_is_stable_and_never_special() {
        for s in ["10.88.0.0/16", "192.168.7.0/24", "172.16.0.0/30", "10.0.0.0/29"] {
            let s = subnet(s);
            for id in [0u64, 1, 2, 3, 4, 5, 253, 254, 255, 256, 65533, 65535, u64::MAX] {
                let a = s.address_for(id);
                assert_eq!(a, s.address_for(id), "deterministic");
                assert!(s.contains(a));
                assert_ne!(a, s.network());
                assert_ne!(a, s.gateway());
                assert_ne!(a, s.broadcast());
                assert!(s.vm_index(a).is_some());
            }
        }
        assert_eq!(subnet("10.88.0.0/16").address_for(0), Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(subnet("10.88.0.0/16").address_for(300), Ipv4Addr::new(10, 88, 1, 46));
        // A /30 has one VM address.
        assert_eq!(subnet("10.0.0.0/30").address_for(7), Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn distinct_ids_within_capacity_get_distinct_addresses() {
        let s = subnet("10.9.0.0/22");
        let all: BTreeSet<Ipv4Addr> = (0..u64::from(s.vm_capacity())).map(|id| s.address_for(id)).collect();
        assert_eq!(all.len() as u32, s.vm_capacity());
        // The MACs and tap names of distinct addresses are distinct too.
        let macs: BTreeSet<String> = all.iter().map(|a| MacAddr::for_address(*a).to_string()).collect();
        let taps: BTreeSet<String> = all.iter().map(|a| tap_name_for(*a)).collect();
        assert_eq!(macs.len(), all.len());
        assert_eq!(taps.len(), all.len());
    }

    #[test]
    fn mac_is_local_unicast_and_stable() {
        let mac = MacAddr::for_address(Ipv4Addr::new(10, 88, 1, 46));
        assert_eq!(mac.to_string(), "02:dc:0a:58:01:2e");
        assert_eq!(mac.0[0] & 0b10, 0b10, "locally administered");
        assert_eq!(mac.0[0] & 0b01, 0, "unicast");
    }

    #[test]
    fn tap_names_fit_the_kernel_limit() {
        let name = tap_name_for(Ipv4Addr::new(255, 255, 255, 254));
        assert_eq!(name, "dctfffffffe");
        assert!(name.len() <= 15);
        assert!(is_tap_name(&name));
        assert!(!is_tap_name("dct0a58"));
        assert!(!is_tap_name("dctZZZZZZZZ"));
        assert!(!is_tap_name("eth0"));
    }

    #[test]
    fn table_resolves_collisions_and_keeps_addresses() {
        let s = subnet("10.0.0.0/29"); // 5 VM addresses: .2 to .6
        let mut t = AddressTable::new();
        assert_eq!(t.assign(&s, "c1", 1).unwrap(), Ipv4Addr::new(10, 0, 0, 3));
        // 6 mod 5 = 1: collides with c1, moves on.
        assert_eq!(t.assign(&s, "c6", 6).unwrap(), Ipv4Addr::new(10, 0, 0, 4));
        // Asking again gives the same address, whatever the contract id says.
        assert_eq!(t.assign(&s, "c6", 6).unwrap(), Ipv4Addr::new(10, 0, 0, 4));
        // Wraps around past the end.
        assert_eq!(t.assign(&s, "c4", 4).unwrap(), Ipv4Addr::new(10, 0, 0, 6));
        assert_eq!(t.assign(&s, "c9", 9).unwrap(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(t.assign(&s, "c2", 2).unwrap(), Ipv4Addr::new(10, 0, 0, 5));
        let full = t.assign(&s, "c3", 3).unwrap_err();
        assert!(matches!(full, NetError::AddressesExhausted { capacity: 5, .. }), "{full}");
        assert_eq!(t.release("c1"), Some(Ipv4Addr::new(10, 0, 0, 3)));
        assert_eq!(t.assign(&s, "c3", 3).unwrap(), Ipv4Addr::new(10, 0, 0, 3));
        // Survives a round trip through its persisted form.
        let json = serde_json::to_string(&t).unwrap();
        let back: AddressTable = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.get("c6"), Some(Ipv4Addr::new(10, 0, 0, 4)));
        assert_eq!(back.len(), 5);
    }
}
