//! Benchmarks of the Decent Cloud ledger against a real peer measured in the
//! same run (PostgreSQL), behind the `ledger-bench` program:
//!
//! 1. [`transfers`]: durable transfers per second, the release `dc-ledger`
//!    (signed envelopes, group-commit journal synced before acknowledging)
//!    against PostgreSQL transactions with `synchronous_commit=on`;
//! 2. [`matching`]: search among a million offerings, in-process, over HTTP
//!    and in SQL, plus the service's memory.
//!
//! [`world`] builds the deterministic marketplace and queries, and holds the
//! brute-force reference of the ranking the tests compare against.
//!
//! [`attest_bench`] (program `attest-bench`) measures the attestation
//! verifiers against `snpguest`.
//!
//! [`vm_bench`] (program `vm-bench`) times a rent until the guest answers,
//! phase by phase, and the supervisor's overhead per VM operation beside raw QMP.

pub mod attest_bench;
pub mod bench;
pub mod cleanup;
pub mod machine;
pub mod matching;
pub mod pg;
pub mod report;
pub mod rng;
pub mod server;
pub mod stats;
pub mod transfers;
pub mod vm_bench;
pub mod world;
