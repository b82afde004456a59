//! Attestation for Decent Cloud: everything a developer needs to trust a VM
//! before sending it secrets, and everything an auditor needs to derive what
//! that VM should measure.
//!
//! - [`snp`], [`tdx`], [`nvidia`]: verifiers for AMD SEV-SNP reports, Intel TDX
//!   quotes and NVIDIA H100 SPDM measurements. Each takes the evidence, a
//!   policy and `now`, works offline, and returns typed claims with one
//!   [`Check`] per step.
//! - [`bundle`]: the one evidence format (`dc-evidence/v1` JSON) that carries
//!   any of them with their certificates or collateral, the nonce and the TLS
//!   key they bind, and its verifier.
//! - [`measure`]: launch-measurement prediction (SNP launch digest, TDX MRTD and
//!   RTMRs) from images or from a document of hashes.
//! - [`report_data`]: the binding of a nonce and a TLS key into the 64 bytes a
//!   guest asks its hardware to sign.

pub mod bundle;

pub use dc_attestation_common::{
    decode_maybe_hex, fetch, gpu_nonce, parse_hex, parse_hex_exact, report_data,
    report_data_from_spki_hash, vectors_dir, Check, Checks, InputError,
};
pub use dc_attestation_nvidia as nvidia;
pub use dc_attestation_snp as snp;
pub use dc_attestation_tdx as tdx;
pub use dc_measure as measure;
