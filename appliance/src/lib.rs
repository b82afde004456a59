//! `dc-appliance`: the provider appliance's node agent.
//!
//! - [`config`]: the one TOML file, typed, defaults in one place, validated;
//! - [`inventory`]: measured CPU, memory, storage, GPUs (with IOMMU groups) and
//!   confidential platform, from a host root given as a parameter;
//! - [`node`]: the node key, the one-time claim token and the claim;
//! - [`journal`]: the append-only, fsynced journal of VM records;
//! - [`resources`]: accounting against the configured limits, never overcommitting;
//! - [`backend`]: the linked VMM backends (QEMU from `dc-vmm-qemu`, Cloud
//!   Hypervisor from `dc-vmm-ch`) and [`choose_backend`], the pure per-VM
//!   choice of backend and accelerator;
//! - [`agent`]: the loop that turns ledger contracts into VMs through those
//!   [`dc_vmm::Hypervisor`]s, one owner of all VM state.
//!
//! - [`confidential`]: the contract binding, predicted launch measurement and
//!   launch manifest of SEV-SNP and TDX launches;
//! - [`vfio`]: GPUs bound to vfio-pci a whole IOMMU group at a time.
//!
//! Networking is user-mode (one forwarded host port) or bridge
//! (`dc-tenant-net`); the SNI ingress (`dc-ingress`) routes tenants' TLS and
//! HTTP to active VMs when `[ingress]` is configured.

pub mod agent;
pub mod backend;
pub mod config;
pub mod confidential;
pub mod inventory;
pub mod journal;
pub mod node;
pub mod resources;
pub mod vfio;

pub use agent::{
    plan, Action, Agent, AgentError, HttpProbe, ReadinessProbe, SerialProbe, TcpProbe,
};
pub use backend::{choose_backend, BackendChoice, Backends, HostCapabilities, NoBackend};
pub use config::{Config, ConfigError};
pub use inventory::{Inventory, InventoryError};
pub use journal::{Journal, JournalError, VmRecord, VmRecordState};
pub use node::{ClaimRecord, NodeError};
pub use resources::{EffectiveLimits, Reservation, ResourceManager, ResourceRequest};
