//! `dc-guest`: the part of Decent Cloud that runs inside a tenant's
//! confidential VM. It asks the hardware, through the kernel's configfs-tsm
//! interface, for an SEV-SNP report or TDX quote whose report data binds the
//! developer's fresh nonce and the VM's TLS key
//! ([`dc_attestation_common::report_data`]), adds the host's certificates and
//! any GPU evidence, and writes the `dc-evidence/v1` bundle that `dcctl verify
//! evidence` checks.
//!
//! - [`tsm`]: the configfs-tsm protocol (entry, `inblob`, `outblob`,
//!   `auxblob`, `generation` conflict detection), behind a file-access trait.
//! - [`certtable`]: the SNP certificate table the host supplies (`auxblob`).
//! - [`tls`]: the TLS key inputs (SubjectPublicKeyInfo, certificate).
//! - [`evidence`]: binding, checks and bundle assembly; exit codes.

pub mod certtable;
pub mod evidence;
pub mod tls;
pub mod tsm;

pub use certtable::{
    encode_cert_table, fuzz_cert_table, parse_cert_table, CertKind, CertTable, CertTableError,
};
pub use evidence::{
    collect_evidence, cpu_item, gpu_item, Binding, CpuExtras, EvidenceOutcome, EvidenceRequest,
    GpuFiles, GuestError,
};
pub use tsm::{
    detect_interface, Interface, OsFs, PlatformInfo, Provider, Tsm, TsmError, TsmFs, TsmReport,
    TsmRequest, DEFAULT_TSM_REPORT_DIR,
};
