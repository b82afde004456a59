//! `dc-appliance`: the provider appliance's node agent.
//!
//! - [`config`]: the one TOML file, typed, defaults in one place, validated;
//! - [`inventory`]: measured CPU, memory, storage, GPUs (with IOMMU groups) and
//!   confidential platform, from a host root given as a parameter;
//! - [`node`]: the node key, the one-time claim token and the claim;
//! - [`journal`]: the append-only, fsynced journal of VM records;
//! - [`resources`]: accounting against the configured limits, never overcommitting;
//! - [`agent`]: the loop that turns ledger contracts into VMs through a
//!   [`dc_vmm::Hypervisor`], one owner of all VM state.

pub mod agent;
pub mod config;
pub mod inventory;
pub mod journal;
pub mod node;
pub mod resources;

pub use agent::{plan, Action, Agent, AgentError, ReadinessProbe, SerialProbe, TcpProbe};
pub use config::{Config, ConfigError};
pub use inventory::{Inventory, InventoryError};
pub use journal::{Journal, JournalError, VmRecord, VmRecordState};
pub use node::{ClaimRecord, NodeError};
pub use resources::{
    EffectiveLimits, Reservation, ResourceError, ResourceManager, ResourceRequest,
};
