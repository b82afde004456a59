//! The crate's one error type.

/// Why a measurement could not be predicted. Each variant names what was
/// expected and what was found, so a caller can report the offending input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeasureError {
    /// The JSON measurement document does not parse (syntax, unknown field,
    /// wrong type or length). The text is serde's, with line and column.
    #[error("measurement document does not parse: {0}")]
    Document(String),

    /// A field parsed but holds a value this crate cannot measure.
    #[error("field `{field}`: expected {expected}, found {found}")]
    InvalidField {
        /// Field name as it appears in the JSON document.
        field: &'static str,
        /// What would have been accepted.
        expected: String,
        /// What the input held.
        found: String,
    },

    /// An input exceeds one of the crate's explicit bounds.
    #[error("{what}: at most {limit} allowed, found {found}")]
    TooLarge {
        /// What was counted or measured.
        what: &'static str,
        /// The bound.
        limit: u64,
        /// The input's value.
        found: u64,
    },

    /// `vcpu_type` is not one of the QEMU CPU models whose CPUID signature is known.
    #[error("unknown vcpu_type {found:?}: expected one of {expected}")]
    UnknownVcpuType {
        /// The names accepted.
        expected: String,
        /// The input's name.
        found: String,
    },

    /// The VMM is not one whose initial vCPU state this crate models.
    #[error("unsupported vmm {0:?}: only \"qemu\" is implemented (ec2 and gce set other initial register values)")]
    UnsupportedVmm(String),

    /// Direct kernel boot needs an OVMF built with a `snp_kernel_hashes`
    /// section (edk2 AmdSevX64); the firmware or document has none.
    #[error("no snp_kernel_hashes section: direct kernel boot needs the AmdSev OVMF build, which has one")]
    NoKernelHashesSection,

    /// Firmware bytes are not laid out as expected (OVMF footer table, SEV
    /// metadata, TDVF descriptor).
    #[error("firmware {what}: expected {expected}, found {found}")]
    Firmware {
        /// The structure being read.
        what: &'static str,
        /// What was expected there.
        expected: String,
        /// What the bytes held.
        found: String,
    },

    /// A PE/COFF image (kernel EFI stub) is truncated or inconsistent.
    #[error("PE image {what}: expected {expected}, found {found}")]
    Pe {
        /// The structure being read.
        what: &'static str,
        /// What was expected there.
        expected: String,
        /// What the bytes held.
        found: String,
    },

    /// The kernel's x86 boot setup header cannot be patched the way QEMU does.
    #[error("kernel setup header {what}: expected {expected}, found {found}")]
    Kernel {
        /// The field or condition.
        what: &'static str,
        /// What QEMU would have required.
        expected: String,
        /// What the kernel held.
        found: String,
    },
}

impl MeasureError {
    pub(crate) fn field(
        field: &'static str,
        expected: impl Into<String>,
        found: impl std::fmt::Display,
    ) -> Self {
        Self::InvalidField {
            field,
            expected: expected.into(),
            found: found.to_string(),
        }
    }
    pub(crate) fn firmware(
        what: &'static str,
        expected: impl Into<String>,
        found: impl std::fmt::Display,
    ) -> Self {
        Self::Firmware {
            what,
            expected: expected.into(),
            found: found.to_string(),
        }
    }
    pub(crate) fn pe(
        what: &'static str,
        expected: impl Into<String>,
        found: impl std::fmt::Display,
    ) -> Self {
        Self::Pe {
            what,
            expected: expected.into(),
            found: found.to_string(),
        }
    }
    pub(crate) fn too_large(what: &'static str, limit: u64, found: u64) -> Self {
        Self::TooLarge { what, limit, found }
    }
}
