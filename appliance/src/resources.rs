//! Accounting of what tenant VMs hold (vCPUs, memory, storage, whole GPU IOMMU
//! groups) against the configured limits. Never overcommits; rebuilt from the
//! journal on restart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{defaults, Limits};
use crate::inventory::Inventory;
use dc_ledger_core::GpuSpec;

/// A GPU's IOMMU group, passed through whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuGroup {
    pub group: String,
    pub model: String,
    /// PCI addresses of every function in the group.
    pub devices: Vec<String>,
}

/// The ceilings tenant VMs share, after defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveLimits {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub storage_gib: u64,
    pub gpu_groups: Vec<GpuGroup>,
}

impl EffectiveLimits {
    /// Configured limits, or the host minus the reserves in [`defaults`] where absent
    /// (a configured limit above the host is capped at the host).
    pub fn resolve(limits: &Limits, inv: &Inventory) -> Self {
        let host_storage_keep = inv.storage_gib * defaults::RESERVE_STORAGE_PERCENT / 100;
        let mut groups: BTreeMap<String, GpuGroup> = BTreeMap::new();
        for g in &inv.gpus {
            if let Some(group) = &g.iommu_group {
                groups.entry(group.clone()).or_insert_with(|| GpuGroup {
                    group: group.clone(),
                    model: g.model.clone(),
                    devices: g.group_devices.clone(),
                });
            }
        }
        EffectiveLimits {
            vcpus: limits
                .max_vcpus
                .unwrap_or_else(|| inv.vcpus.saturating_sub(defaults::RESERVE_VCPUS).max(1))
                .min(inv.vcpus),
            memory_mib: limits
                .max_memory_mib
                .unwrap_or_else(|| inv.memory_mib.saturating_sub(defaults::RESERVE_MEMORY_MIB))
                .min(inv.memory_mib),
            storage_gib: limits
                .max_storage_gib
                .unwrap_or(inv.storage_gib - host_storage_keep),
            gpu_groups: groups.into_values().collect(),
        }
    }

    /// Drops the GPU groups that `plan` says cannot be passed through (a boot
    /// VGA or a host-critical device in the group, nothing to pass, vfio-pci
    /// not loaded, no IOMMU group in sysfs): offering them would sell GPUs
    /// that every launch then fails to bind. Returns the dropped groups with
    /// the reason, for the operator.
    pub fn retain_passable_gpu_groups(
        &mut self,
        plan: impl Fn(&str) -> Result<(), String>,
    ) -> Vec<(String, String)> {
        let mut dropped = Vec::new();
        self.gpu_groups.retain(|g| match plan(&g.group) {
            Ok(()) => true,
            Err(why) => {
                dropped.push((g.group.clone(), why));
                false
            }
        });
        dropped
    }

    /// What can be rented, per GPU model: whole IOMMU groups, the unit a VM
    /// gets (two GPUs that share a group go to one VM together, so they
    /// count once), with the model's memory from `inv`.
    pub fn gpu_specs(&self, inv: &Inventory) -> Vec<GpuSpec> {
        let mut by_model: BTreeMap<&str, u32> = BTreeMap::new();
        for g in &self.gpu_groups {
            *by_model.entry(g.model.as_str()).or_insert(0) += 1;
        }
        by_model
            .into_iter()
            .map(|(model, count)| GpuSpec {
                model: model.to_string(),
                count,
                memory_gib: inv
                    .gpus
                    .iter()
                    .find(|g| g.model == model)
                    .map_or(0, |g| g.memory_gib),
            })
            .collect()
    }
}

/// What one contract's VM needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRequest {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub storage_gib: u64,
    pub gpus: u32,
    /// Compared case-insensitively with the inventory's model names.
    pub gpu_model: Option<String>,
}

impl ResourceRequest {
    /// What a ledger contract asks for.
    pub fn of_contract(c: &dc_ledger_core::Contract) -> Self {
        ResourceRequest {
            vcpus: c.resources.vcpus,
            memory_mib: u64::from(c.resources.ram_gib) * 1024,
            storage_gib: u64::from(c.resources.storage_gib),
            gpus: c.resources.gpus,
            gpu_model: c.gpu_model.clone(),
        }
    }
}

/// Resources held for one contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub contract_id: u64,
    pub request: ResourceRequest,
    /// The whole IOMMU groups given to the VM.
    pub gpu_groups: Vec<GpuGroup>,
}

/// Why a request does not fit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResourceError {
    #[error("not enough {resource}: need {needed}, {free} free of {limit}")]
    Insufficient {
        resource: &'static str,
        needed: u64,
        free: u64,
        limit: u64,
    },
    #[error("not enough {model} GPUs: need {needed}, {free} free")]
    NoGpus {
        model: String,
        needed: u32,
        free: u32,
    },
    #[error("contract {0} already holds resources")]
    AlreadyReserved(u64),
}

/// Who holds what.
#[derive(Clone, Debug)]
pub struct ResourceManager {
    limits: EffectiveLimits,
    held: BTreeMap<u64, Reservation>,
}

/// Totals in use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub vcpus: u64,
    pub memory_mib: u64,
    pub storage_gib: u64,
    pub gpu_groups: usize,
}

impl ResourceManager {
    /// Nothing held.
    pub fn new(limits: EffectiveLimits) -> Self {
        ResourceManager {
            limits,
            held: BTreeMap::new(),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &EffectiveLimits {
        &self.limits
    }

    /// What is held now.
    pub fn usage(&self) -> Usage {
        let mut u = Usage::default();
        for r in self.held.values() {
            u.vcpus += u64::from(r.request.vcpus);
            u.memory_mib += r.request.memory_mib;
            u.storage_gib += r.request.storage_gib;
            u.gpu_groups += r.gpu_groups.len();
        }
        u
    }

    /// The reservation of a contract, if any.
    pub fn get(&self, contract_id: u64) -> Option<&Reservation> {
        self.held.get(&contract_id)
    }

    fn free_groups(&self, model: &str) -> Vec<&GpuGroup> {
        let taken: Vec<&str> = self
            .held
            .values()
            .flat_map(|r| r.gpu_groups.iter().map(|g| g.group.as_str()))
            .collect();
        self.limits
            .gpu_groups
            .iter()
            .filter(|g| g.model.eq_ignore_ascii_case(model) && !taken.contains(&g.group.as_str()))
            .collect()
    }

    /// Holds `req` for `contract_id` if it fits entirely; otherwise changes nothing.
    pub fn reserve(
        &mut self,
        contract_id: u64,
        req: &ResourceRequest,
    ) -> Result<Reservation, ResourceError> {
        if self.held.contains_key(&contract_id) {
            return Err(ResourceError::AlreadyReserved(contract_id));
        }
        let u = self.usage();
        let check = |resource, used: u64, needed: u64, limit: u64| {
            let free = limit.saturating_sub(used);
            if needed > free {
                Err(ResourceError::Insufficient {
                    resource,
                    needed,
                    free,
                    limit,
                })
            } else {
                Ok(())
            }
        };
        check(
            "vcpus",
            u.vcpus,
            u64::from(req.vcpus),
            u64::from(self.limits.vcpus),
        )?;
        check(
            "memory_mib",
            u.memory_mib,
            req.memory_mib,
            self.limits.memory_mib,
        )?;
        check(
            "storage_gib",
            u.storage_gib,
            req.storage_gib,
            self.limits.storage_gib,
        )?;
        let mut gpu_groups = Vec::new();
        if req.gpus > 0 {
            let model = req.gpu_model.clone().unwrap_or_default();
            let free = self.free_groups(&model);
            if (free.len() as u64) < u64::from(req.gpus) {
                return Err(ResourceError::NoGpus {
                    model,
                    needed: req.gpus,
                    free: free.len() as u32,
                });
            }
            gpu_groups = free.into_iter().take(req.gpus as usize).cloned().collect();
        }
        let r = Reservation {
            contract_id,
            request: req.clone(),
            gpu_groups,
        };
        self.held.insert(contract_id, r.clone());
        Ok(r)
    }

    /// Takes back a reservation made before a restart (from the journal), even
    /// when the limits have since been lowered: the VM exists and holds them.
    pub fn restore(&mut self, r: Reservation) {
        self.held.insert(r.contract_id, r);
    }

    /// Frees a contract's resources; returns what it held.
    pub fn release(&mut self, contract_id: u64) -> Option<Reservation> {
        self.held.remove(&contract_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> EffectiveLimits {
        EffectiveLimits {
            vcpus: 8,
            memory_mib: 16384,
            storage_gib: 100,
            gpu_groups: vec![
                GpuGroup {
                    group: "17".into(),
                    model: "H100".into(),
                    devices: vec!["0000:41:00.0".into()],
                },
                GpuGroup {
                    group: "40".into(),
                    model: "H100".into(),
                    devices: vec!["0000:c1:00.0".into()],
                },
            ],
        }
    }

    fn req(vcpus: u32, gib: u64, gpus: u32) -> ResourceRequest {
        ResourceRequest {
            vcpus,
            memory_mib: gib * 1024,
            storage_gib: 10,
            gpus,
            gpu_model: (gpus > 0).then(|| "h100".into()),
        }
    }

    #[test]
    fn reservations_fit_or_change_nothing() {
        let mut m = ResourceManager::new(limits());
        let a = m.reserve(1, &req(4, 8, 1)).unwrap();
        assert_eq!(a.gpu_groups[0].group, "17");
        assert_eq!(
            m.reserve(1, &req(1, 1, 0)),
            Err(ResourceError::AlreadyReserved(1))
        );
        let before = m.usage();
        let e = m.reserve(2, &req(5, 1, 0)).unwrap_err();
        assert!(e.to_string().contains("vcpus"), "{e}");
        assert_eq!(m.usage(), before);
        let b = m.reserve(3, &req(4, 8, 1)).unwrap();
        assert_eq!(b.gpu_groups[0].group, "40");
        assert!(matches!(
            m.reserve(4, &req(0, 0, 1)),
            Err(ResourceError::NoGpus { .. })
        ));
        m.release(1);
        assert_eq!(
            m.reserve(4, &req(4, 8, 1)).unwrap().gpu_groups[0].group,
            "17"
        );
    }

    /// The ledger is told what the agent can hand out: whole IOMMU groups.
    /// Two GPUs sharing a group go to one VM together and count once; a
    /// GPU without a group is not offered; a group that could never be
    /// bound is dropped, with its reason, and never reserved.
    #[test]
    fn gpus_are_offered_by_passable_iommu_group() {
        let gpu = |address: &str, group: Option<&str>, peers: &[&str]| crate::inventory::Gpu {
            pci_address: address.into(),
            vendor_id: 0x10de,
            device_id: 0x2330,
            model: "H100".into(),
            memory_gib: 80,
            iommu_group: group.map(Into::into),
            group_devices: peers.iter().map(|p| p.to_string()).collect(),
        };
        let shared = ["0000:41:00.0", "0000:42:00.0"];
        let inv = Inventory {
            cpu_model: "x".into(),
            vcpus: 16,
            memory_mib: 65536,
            storage_gib: 1000,
            gpus: vec![
                gpu("0000:41:00.0", Some("17"), &shared),
                gpu("0000:42:00.0", Some("17"), &shared),
                gpu("0000:c1:00.0", Some("40"), &["0000:c1:00.0"]),
                gpu("0000:e1:00.0", None, &["0000:e1:00.0"]),
            ],
            confidential: dc_ledger_core::Confidential::None,
        };
        let mut l = EffectiveLimits::resolve(&Limits::default(), &inv);
        let spec = |l: &EffectiveLimits| {
            let s = l.gpu_specs(&inv);
            assert_eq!(s.len(), 1);
            assert_eq!((s[0].model.as_str(), s[0].memory_gib), ("H100", 80));
            s[0].count
        };
        assert_eq!(spec(&l), 2, "four H100s, two rentable units");
        let dropped = l.retain_passable_gpu_groups(|g| {
            if g == "40" {
                Err("0000:c0:00.0 in IOMMU group 40 is a storage controller".into())
            } else {
                Ok(())
            }
        });
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].0, "40");
        assert!(dropped[0].1.contains("storage controller"));
        assert_eq!(spec(&l), 1);
        let mut m = ResourceManager::new(l);
        let r = m.reserve(1, &req(1, 1, 1)).unwrap();
        assert_eq!(r.gpu_groups[0].devices, shared);
        assert!(matches!(
            m.reserve(2, &req(1, 1, 1)),
            Err(ResourceError::NoGpus { free: 0, .. })
        ));
    }

    #[test]
    fn defaults_leave_a_reserve_for_the_host() {
        let inv = Inventory {
            cpu_model: "x".into(),
            vcpus: 16,
            memory_mib: 65536,
            storage_gib: 1000,
            gpus: vec![],
            confidential: dc_ledger_core::Confidential::None,
        };
        let l = EffectiveLimits::resolve(&Limits::default(), &inv);
        assert_eq!(l.vcpus, 16 - defaults::RESERVE_VCPUS);
        assert_eq!(l.memory_mib, 65536 - defaults::RESERVE_MEMORY_MIB);
        assert_eq!(l.storage_gib, 900);
        let l = EffectiveLimits::resolve(
            &Limits {
                max_vcpus: Some(64),
                max_memory_mib: Some(1024),
                max_storage_gib: Some(5),
            },
            &inv,
        );
        assert_eq!((l.vcpus, l.memory_mib, l.storage_gib), (16, 1024, 5));
    }

    proptest! {
        #[test]
        fn never_overcommits(ops in proptest::collection::vec((0u64..6, 0u32..6, 0u64..9, 0u32..3, any::<bool>()), 1..60)) {
            let mut m = ResourceManager::new(limits());
            for (id, vcpus, gib, gpus, release) in ops {
                if release {
                    m.release(id);
                } else {
                    let _ = m.reserve(id, &req(vcpus, gib, gpus));
                }
                let u = m.usage();
                prop_assert!(u.vcpus <= 8 && u.memory_mib <= 16384 && u.storage_gib <= 100 && u.gpu_groups <= 2);
                let mut groups: Vec<_> = (0..6).filter_map(|i| m.get(i)).flat_map(|r| r.gpu_groups.iter().map(|g| g.group.clone())).collect();
                let n = groups.len();
                groups.sort();
                groups.dedup();
                prop_assert_eq!(groups.len(), n, "a group is given twice");
            }
        }
    }
}
