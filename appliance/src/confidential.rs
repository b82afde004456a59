//! Confidential launches: the contract binding, the predicted launch
//! measurement and the launch manifest.
//!
//! SPEC §5: the supervisor computes the expected launch measurement of what
//! it is about to launch and publishes it with the contract, binds the
//! contract into the launch (SEV-SNP HOST_DATA, TDX MRCONFIGID), and never
//! launches a confidential VM with debug enabled. [`plan`] does all three for
//! one contract, from the guest artifacts on disk:
//!
//! - the binding comes from `dc_attestation_common::contract_host_data` /
//!   `contract_mrconfigid`, the functions a verifier uses;
//! - the measurement comes from `dc_measure` with exactly what the QEMU
//!   command line will launch: the same firmware, kernel, initrd and command
//!   line (the plan's [`LaunchPlan::boot`]), the same vCPU count, and for
//!   SEV-SNP the vCPU model and VMSA features the QEMU backend fixes
//!   ([`dc_vmm_qemu::SNP_CPU_MODEL`], [`dc_vmm_qemu::SNP_SEV_FEATURES`]);
//! - a debuggable SEV-SNP policy is refused (TDX launches never set the
//!   DEBUG attribute: the QEMU backend has no way to).
//!
//! The [`LaunchManifest`] (`"dc-launch/v1"`) records every input of the
//! prediction as hashes and numbers, so a developer can recompute it; the
//! agent reports [`LaunchManifest::hash`] as the contract's evidence hash and
//! [`LaunchPlan::measurement`] as the launch measurement, and must launch
//! only a spec that [`LaunchPlan::check_spec`] accepts.
//!
//! Supported: SEV-SNP and TDX on QEMU with direct kernel boot through the
//! firmware. Not supported, with an error saying so: SEV-SNP on Cloud
//! Hypervisor (it launches an IGVM file, whose measurement `dc_measure`
//! cannot predict yet) and TDX on Cloud Hypervisor (its TDX build is
//! disabled since v53). For TDX, RTMR0 (the TD HOB and ACPI tables QEMU
//! generates) is not predicted; the manifest says so in `not_predicted`.
//!
//! Pure apart from reading the artifact files. The files are read once, when
//! planning: if one changes before QEMU reads it, the guest's measurement no
//! longer matches the published one and its attestation fails, which is the
//! safe outcome.

use std::io::Read;
use std::path::{Path, PathBuf};

use dc_measure::{snp, tdx, MeasureError};
use dc_vmm::{Accel, BackendKind, Boot, Confidential, VmSpec, SNP_POLICY_DEBUG};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha384};

/// Format tag of [`LaunchManifest`].
pub const MANIFEST_FORMAT: &str = "dc-launch/v1";

/// The SEV-SNP guest policy used when a request names none: ABI 0.0, SMT
/// allowed (bit 16), the must-be-one bit 17; no migration agent (bit 18),
/// no debugging (bit 19). QEMU's own default, and the golden command line's.
pub const DEFAULT_SNP_POLICY: u64 = 0x30000;

/// SEV-SNP policy bit 17: reserved, must be one (the firmware refuses the
/// launch otherwise).
const SNP_POLICY_RESERVED_ONE: u64 = 1 << 17;

/// Largest firmware image read (OVMF/TDVF images are 2 to 4 MiB).
pub const MAX_FIRMWARE_BYTES: u64 = 64 << 20;
/// Largest kernel image read.
pub const MAX_KERNEL_BYTES: u64 = tdx::MAX_PE_BYTES as u64;
/// Largest initrd accepted: QEMU passes its size to the kernel in 32 bits.
pub const MAX_INITRD_BYTES: u64 = u32::MAX as u64;
/// Longest principal (the Internet Computer's limit).
pub const MAX_PRINCIPAL_BYTES: usize = 29;

/// Most vCPUs of a confidential VM (the bound of `dc_measure` and `VmSpec`).
pub const MAX_VCPUS: u32 = snp::MAX_VCPUS;

/// What the manifest's `not_predicted` says for TDX.
const TDX_NOT_PREDICTED: &[&str] = &[
    "rtmr0: covers the TD HOB and the ACPI tables QEMU generates from the machine's memory map and devices",
    "rtmr3: extended by the guest at run time",
];

/// The confidential-computing platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Platform {
    /// AMD SEV-SNP.
    SevSnp,
    /// Intel TDX.
    Tdx,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::SevSnp => "sev-snp",
            Platform::Tdx => "tdx",
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The guest's boot artifacts: direct kernel boot through a firmware that
/// measures what it loads (OVMF built with SEV kernel hashes for SEV-SNP, a
/// TDVF for TDX).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestArtifacts {
    pub firmware: PathBuf,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// The kernel command line, exactly as given to QEMU `-append`.
    pub cmdline: String,
}

/// Everything a confidential launch of one contract depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchRequest {
    pub platform: Platform,
    pub contract_id: u64,
    /// Raw principal bytes of the contract's developer (1 to 29).
    pub developer: Vec<u8>,
    /// Raw principal bytes of the node (1 to 29).
    pub node: Vec<u8>,
    pub artifacts: GuestArtifacts,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub backend: BackendKind,
    /// SEV-SNP guest policy; `None` is [`DEFAULT_SNP_POLICY`]. Must be
    /// `None` for TDX.
    pub snp_policy: Option<u64>,
}

/// What to launch and what to publish for a confidential contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchPlan {
    /// The spec's `confidential` (policy and HOST_DATA, or MRCONFIGID).
    pub confidential: Confidential,
    /// The spec's `boot`: the artifacts that were measured.
    pub boot: Boot,
    /// Predicted SEV-SNP MEASUREMENT or TDX MRTD (TDX publishes RTMR1 and
    /// RTMR2, from the manifest, after it).
    pub measurement: [u8; 48],
    /// The QEMU `-cpu` model the launch uses (for SEV-SNP, part of the
    /// measurement).
    pub cpu_model: String,
    pub manifest: LaunchManifest,
}

/// The published record of a confidential launch: every input of the
/// predicted measurement, as hashes and numbers. Serialized from this struct
/// (fixed field order, never through a map), so its bytes, and
/// [`LaunchManifest::hash`], do not depend on serde_json's features.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchManifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    pub contract_id: u64,
    pub platform: Platform,
    pub backend: BackendKind,
    /// Predicted SEV-SNP MEASUREMENT or TDX MRTD, 96 hex digits.
    pub measurement: String,
    /// SEV-SNP HOST_DATA (64 hex digits): the contract binding.
    pub host_data: Option<String>,
    /// TDX MRCONFIGID (96 hex digits): the contract binding.
    pub mrconfigid: Option<String>,
    /// SEV-SNP guest policy.
    pub snp_policy: Option<u64>,
    /// SEV_FEATURES of the SEV-SNP guest's VMSAs.
    pub snp_sev_features: Option<u64>,
    pub vcpus: u32,
    /// The vCPU model (QEMU `-cpu`).
    pub vcpu_type: String,
    pub memory_mib: u64,
    /// SHA-256 of the firmware image, 64 hex digits.
    pub firmware_sha256: String,
    pub kernel_sha256: String,
    /// `None` when the guest boots without an initrd.
    pub initrd_sha256: Option<String>,
    pub cmdline: String,
    /// Predicted TDX RTMR1 (kernel, as QEMU patches it, and OVMF's boot events).
    pub rtmr1: Option<String>,
    /// Predicted TDX RTMR2 (command line and initrd).
    pub rtmr2: Option<String>,
    /// Registers of the platform that are not predicted, each with why.
    pub not_predicted: Vec<String>,
    /// The SEV-SNP measurement document (`dcctl measure snp --input`): the
    /// firmware's hashes and layout, so the measurement can be recomputed
    /// without the firmware itself.
    pub snp_measure_input: Option<snp::SnpMeasureInput>,
}

impl LaunchManifest {
    /// The canonical bytes: compact JSON of this struct, fields in
    /// declaration order.
    pub fn canonical_json(&self) -> Vec<u8> {
        // A struct of strings, integers, options and vectors always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// SHA-256 of [`Self::canonical_json`]: the contract's evidence hash.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_json()).into()
    }

    /// Parses a published manifest; unknown fields and another format tag are refused.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfidentialError> {
        let manifest: Self = serde_json::from_slice(bytes)
            .map_err(|e| ConfidentialError::Manifest(e.to_string()))?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(ConfidentialError::Manifest(format!(
                "format {:?}, expected {MANIFEST_FORMAT:?}",
                manifest.format
            )));
        }
        Ok(manifest)
    }
}

/// Why a confidential launch cannot be planned or does not match its plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfidentialError {
    /// An artifact could not be read.
    #[error("reading the {what} {path}: {reason}")]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// An artifact is larger than accepted.
    #[error("the {what} {path} is over the {limit}-byte limit")]
    TooLarge {
        what: &'static str,
        path: PathBuf,
        limit: u64,
    },
    /// The requested SEV-SNP policy allows debugging.
    #[error("SEV-SNP guest policy {policy:#x} allows debugging (bit 19); a confidential VM is never launched debuggable")]
    DebugPolicy { policy: u64 },
    /// The requested SEV-SNP policy is otherwise unusable.
    #[error("SEV-SNP guest policy {policy:#x}: {reason}")]
    BadPolicy { policy: u64, reason: String },
    /// This platform cannot be launched (and measured) on this backend.
    #[error("{platform} on {}: {reason}", backend.as_str())]
    Unsupported {
        platform: Platform,
        backend: BackendKind,
        reason: String,
    },
    /// The request itself is inconsistent.
    #[error("invalid confidential launch request: {0}")]
    InvalidRequest(String),
    /// `dc_measure` refused an artifact.
    #[error("predicting the {what} from {path}: {source}")]
    Measure {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: MeasureError,
    },
    /// The VM spec differs from what was measured.
    #[error("the VM spec does not match its confidential launch plan: {0}")]
    SpecMismatch(String),
    /// A manifest does not parse.
    #[error("launch manifest: {0}")]
    Manifest(String),
}

/// Reads `path` whole, refusing more than `limit` bytes.
fn read_bounded(what: &'static str, path: &Path, limit: u64) -> Result<Vec<u8>, ConfidentialError> {
    let read_error = |e: std::io::Error| ConfidentialError::Read {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > limit {
        return Err(ConfidentialError::TooLarge {
            what,
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(bytes)
}

/// Length, SHA-256 and SHA-384 of the initrd, read in chunks (an initrd can
/// be hundreds of MiB).
struct InitrdDigests {
    len: u64,
    sha256: [u8; 32],
    sha384: [u8; 48],
}

fn digest_initrd(path: &Path) -> Result<InitrdDigests, ConfidentialError> {
    let what = "initrd";
    let read_error = |e: std::io::Error| ConfidentialError::Read {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    let (mut sha256, mut sha384) = (Sha256::new(), Sha384::new());
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(read_error)?;
        if n == 0 {
            break;
        }
        len += n as u64;
        if len > MAX_INITRD_BYTES {
            return Err(ConfidentialError::TooLarge {
                what,
                path: path.to_path_buf(),
                limit: MAX_INITRD_BYTES,
            });
        }
        sha256.update(&buf[..n]);
        sha384.update(&buf[..n]);
    }
    if len == 0 {
        return Err(ConfidentialError::InvalidRequest(format!(
            "the initrd {} is empty; leave it out instead",
            path.display()
        )));
    }
    Ok(InitrdDigests {
        len,
        sha256: sha256.finalize().into(),
        sha384: sha384.finalize().into(),
    })
}

fn check_request(req: &LaunchRequest) -> Result<(), ConfidentialError> {
    let bad = |m: String| Err(ConfidentialError::InvalidRequest(m));
    for (who, p) in [("developer", &req.developer), ("node", &req.node)] {
        if p.is_empty() || p.len() > MAX_PRINCIPAL_BYTES {
            return bad(format!(
                "the {who} principal is {} bytes; a principal is 1 to {MAX_PRINCIPAL_BYTES}",
                p.len()
            ));
        }
    }
    if !(1..=MAX_VCPUS).contains(&req.vcpus) {
        return bad(format!("vcpus {} must be 1 to {MAX_VCPUS}", req.vcpus));
    }
    if req.memory_mib < 64 || req.memory_mib.checked_mul(1 << 20).is_none() {
        return bad(format!(
            "memory_mib {} must be at least 64 and fit in bytes",
            req.memory_mib
        ));
    }
    if req.artifacts.cmdline.contains('\0') {
        return bad("the kernel command line contains a NUL byte".into());
    }
    if req.artifacts.cmdline.len() > snp::MAX_CMDLINE_BYTES {
        return bad(format!(
            "the kernel command line is over {} bytes",
            snp::MAX_CMDLINE_BYTES
        ));
    }
    match (req.platform, req.backend) {
        (Platform::SevSnp, BackendKind::CloudHypervisor) => Err(ConfidentialError::Unsupported {
            platform: req.platform,
            backend: req.backend,
            reason: "Cloud Hypervisor launches SEV-SNP guests from an IGVM file, whose launch measurement \
                     cannot be predicted yet; launch SEV-SNP guests with QEMU"
                .into(),
        }),
        (Platform::Tdx, BackendKind::CloudHypervisor) => Err(ConfidentialError::Unsupported {
            platform: req.platform,
            backend: req.backend,
            reason: "Cloud Hypervisor's TDX build is disabled since v53; launch TDX guests with QEMU".into(),
        }),
        (Platform::Tdx, _) if req.snp_policy.is_some() => {
            bad("an SEV-SNP policy was given for a TDX launch".into())
        }
        _ => Ok(()),
    }
}

/// Checks an SEV-SNP guest policy: never debuggable, bit 17 set.
pub fn check_snp_policy(policy: u64) -> Result<(), ConfidentialError> {
    if policy & SNP_POLICY_DEBUG != 0 {
        return Err(ConfidentialError::DebugPolicy { policy });
    }
    if policy & SNP_POLICY_RESERVED_ONE == 0 {
        return Err(ConfidentialError::BadPolicy {
            policy,
            reason: "bit 17 is reserved and must be set; the firmware refuses the launch otherwise"
                .into(),
        });
    }
    Ok(())
}

/// Plans a confidential launch: reads and measures the artifacts, binds the
/// contract, and writes the manifest.
pub fn plan(req: &LaunchRequest) -> Result<LaunchPlan, ConfidentialError> {
    check_request(req)?;
    let a = &req.artifacts;
    let firmware = read_bounded("firmware", &a.firmware, MAX_FIRMWARE_BYTES)?;
    let kernel = read_bounded("kernel", &a.kernel, MAX_KERNEL_BYTES)?;
    let initrd = a.initrd.as_deref().map(digest_initrd).transpose()?;
    let boot = Boot::Kernel {
        kernel: a.kernel.clone(),
        initrd: a.initrd.clone(),
        cmdline: a.cmdline.clone(),
        firmware: Some(a.firmware.clone()),
    };
    let mut manifest = LaunchManifest {
        format: MANIFEST_FORMAT.into(),
        contract_id: req.contract_id,
        platform: req.platform,
        backend: req.backend,
        measurement: String::new(),
        host_data: None,
        mrconfigid: None,
        snp_policy: None,
        snp_sev_features: None,
        vcpus: req.vcpus,
        vcpu_type: String::new(),
        memory_mib: req.memory_mib,
        firmware_sha256: hex::encode(Sha256::digest(&firmware)),
        kernel_sha256: hex::encode(Sha256::digest(&kernel)),
        initrd_sha256: initrd.as_ref().map(|i| hex::encode(i.sha256)),
        cmdline: a.cmdline.clone(),
        rtmr1: None,
        rtmr2: None,
        not_predicted: Vec::new(),
        snp_measure_input: None,
    };
    let measure_error = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| ConfidentialError::Measure { what, path, source }
    };

    let (confidential, measurement, cpu_model) = match req.platform {
        Platform::SevSnp => {
            let policy = req.snp_policy.unwrap_or(DEFAULT_SNP_POLICY);
            check_snp_policy(policy)?;
            let cpu_model = dc_vmm_qemu::SNP_CPU_MODEL;
            let features = dc_vmm_qemu::SNP_SEV_FEATURES;
            // The initrd's SHA-256 was taken while streaming it; QEMU hashes
            // no bytes when there is no initrd.
            let mut input = snp::SnpMeasureInput::from_files(
                &firmware, &kernel, b"", &a.cmdline, req.vcpus, cpu_model, features,
            )
            .map_err(measure_error("SEV-SNP launch measurement", &a.firmware))?;
            if let Some(i) = &initrd {
                input.initrd_sha256 = i.sha256;
            }
            let measurement = snp::launch_digest(&input)
                .map_err(measure_error("SEV-SNP launch measurement", &a.firmware))?;
            let host_data = dc_attestation_common::contract_host_data(
                req.contract_id,
                &req.developer,
                &req.node,
            );
            manifest.host_data = Some(hex::encode(host_data));
            manifest.snp_policy = Some(policy);
            manifest.snp_sev_features = Some(features);
            manifest.snp_measure_input = Some(input);
            (
                Confidential::SevSnp { policy, host_data },
                measurement,
                cpu_model,
            )
        }
        Platform::Tdx => {
            let mrtd = tdx::mrtd(&firmware).map_err(measure_error("TDX MRTD", &a.firmware))?;
            let initrd_len = initrd.as_ref().map_or(0, |i| i.len as usize);
            let rtmr1 = tdx::rtmr1_direct_boot(&kernel, initrd_len, req.memory_mib << 20)
                .map_err(measure_error("TDX RTMR1", &a.kernel))?;
            // rtmr2_direct_boot's events, from the streamed initrd digest.
            let mut events = vec![tdx::load_options_sha384(&a.cmdline, initrd.is_some())];
            events.extend(initrd.as_ref().map(|i| i.sha384));
            let rtmr2 = tdx::rtmr_fold(&events);
            let mrconfigid = dc_attestation_common::contract_mrconfigid(
                req.contract_id,
                &req.developer,
                &req.node,
            );
            manifest.mrconfigid = Some(hex::encode(mrconfigid));
            manifest.rtmr1 = Some(hex::encode(rtmr1));
            manifest.rtmr2 = Some(hex::encode(rtmr2));
            manifest.not_predicted = TDX_NOT_PREDICTED.iter().map(|s| s.to_string()).collect();
            // The vCPU model is not part of any TDX measurement register.
            (Confidential::Tdx { mrconfigid }, mrtd, "host")
        }
    };
    manifest.measurement = hex::encode(measurement);
    manifest.vcpu_type = cpu_model.into();
    Ok(LaunchPlan {
        confidential,
        boot,
        measurement,
        cpu_model: cpu_model.into(),
        manifest,
    })
}

impl LaunchPlan {
    /// Checks that `spec` launches what was measured: the same boot
    /// artifacts, vCPU count, memory, binding and policy, on KVM, with the
    /// vCPU model the QEMU backend will pass. The agent calls it right before
    /// `launch`.
    pub fn check_spec(&self, spec: &VmSpec) -> Result<(), ConfidentialError> {
        let differs = |what: &str, spec_value: String, planned: String| {
            Err(ConfidentialError::SpecMismatch(format!(
                "{what}: the spec has {spec_value}, the plan {planned}"
            )))
        };
        if spec.boot != self.boot {
            return differs(
                "boot",
                format!("{:?}", spec.boot),
                format!("{:?}", self.boot),
            );
        }
        if spec.vcpus != self.manifest.vcpus {
            return differs(
                "vcpus",
                spec.vcpus.to_string(),
                self.manifest.vcpus.to_string(),
            );
        }
        if spec.memory_mib != self.manifest.memory_mib {
            return differs(
                "memory_mib",
                spec.memory_mib.to_string(),
                self.manifest.memory_mib.to_string(),
            );
        }
        if spec.confidential != self.confidential {
            return differs(
                "confidential",
                format!("{:?}", spec.confidential),
                format!("{:?}", self.confidential),
            );
        }
        if spec.accel != Accel::Kvm {
            return Err(ConfidentialError::SpecMismatch(
                "a confidential VM runs on KVM".into(),
            ));
        }
        let cpu = dc_vmm_qemu::cpu_model(spec);
        if cpu != self.cpu_model {
            return differs("vCPU model", cpu.into(), self.cpu_model.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic TDVF (64 KiB, mapped below 4 GiB): a footer table pointing
    /// at a TDVF descriptor with an extended BFV, a CFV and a TD_HOB section.
    fn synthetic_tdvf() -> Vec<u8> {
        let mut fw: Vec<u8> = (0..0x10000).map(|i| (i * 7 % 251) as u8).collect();
        let s = |data_offset,
                 raw_data_size,
                 memory_address,
                 memory_data_size,
                 section_type,
                 attributes| {
            tdx::TdvfSection {
                data_offset,
                raw_data_size,
                memory_address,
                memory_data_size,
                section_type,
                attributes,
            }
        };
        let sections = [
            s(
                0x8000,
                0x8000,
                0xffff_8000,
                0x8000,
                0,
                tdx::ATTRIBUTE_MR_EXTEND,
            ), // BFV
            s(0x0000, 0x4000, 0xffff_0000, 0x4000, 1, 0), // CFV
            s(0, 0, 0x80_9000, 0x2000, 2, 0),             // TD_HOB
        ];
        tdx::write_tdvf_metadata(&mut fw, 0x4000, &sections).unwrap();
        fw
    }

    /// A synthetic bzImage-like kernel: a PE32+ image (headers up to 0x400,
    /// two sections) carrying an x86 setup header (boot protocol 2.15,
    /// loaded high) that QEMU patches.
    fn synthetic_kernel() -> Vec<u8> {
        let mut k = vec![0u8; 0x400];
        k[..2].copy_from_slice(b"MZ");
        k[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        k[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        k[coff + 2..coff + 4].copy_from_slice(&2u16.to_le_bytes());
        k[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
        let opt = coff + 20;
        k[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        k[opt + 60..opt + 64].copy_from_slice(&0x400u32.to_le_bytes());
        k[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
        let table = opt + 240;
        for (i, (ptr, size)) in [(0x400u32, 0x800u32), (0xc00, 0x800)].iter().enumerate() {
            let at = table + 40 * i;
            k[at + 16..at + 20].copy_from_slice(&size.to_le_bytes());
            k[at + 20..at + 24].copy_from_slice(&ptr.to_le_bytes());
        }
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        k[0x211] = 0x01; // LOADED_HIGH
        k.extend((0..0x1000).map(|i| (i % 13) as u8));
        k
    }

    struct Files {
        _dir: tempfile::TempDir,
        artifacts: GuestArtifacts,
    }

    fn write_files(firmware: &[u8], kernel: &[u8], initrd: Option<&[u8]>, cmdline: &str) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("firmware.fd"), firmware).unwrap();
        std::fs::write(path("vmlinuz"), kernel).unwrap();
        if let Some(i) = initrd {
            std::fs::write(path("initrd.img"), i).unwrap();
        }
        let artifacts = GuestArtifacts {
            firmware: path("firmware.fd"),
            kernel: path("vmlinuz"),
            initrd: initrd.map(|_| path("initrd.img")),
            cmdline: cmdline.into(),
        };
        Files {
            _dir: dir,
            artifacts,
        }
    }

    const INITRD: &[u8] = b"070701 a tiny initramfs, not a real one";

    fn tdx_files() -> Files {
        write_files(
            &synthetic_tdvf(),
            &synthetic_kernel(),
            Some(INITRD),
            "console=ttyS0 root=/dev/vda1",
        )
    }

    fn request(platform: Platform, artifacts: &GuestArtifacts) -> LaunchRequest {
        LaunchRequest {
            platform,
            contract_id: 42,
            developer: vec![0xd0; 29],
            node: vec![0x0e; 10],
            artifacts: artifacts.clone(),
            vcpus: 2,
            memory_mib: 2048,
            backend: BackendKind::Qemu,
            snp_policy: None,
        }
    }

    /// The sev-snp-measure OVMF fixture (an AmdSev build's last page), when
    /// the vectors are there.
    fn amdsev_ovmf() -> Option<Vec<u8>> {
        let Some(dir) = dc_attestation_common::vectors_dir() else {
            eprintln!("skipped: no vectors (set DC_VECTORS)");
            return None;
        };
        Some(
            std::fs::read(dir.join("sev-snp-measure/ovmf_AmdSev_suffix.bin"))
                .expect("vector readable"),
        )
    }

    #[test]
    fn tdx_plan_matches_dc_measure_and_the_contract_binding() {
        let files = tdx_files();
        let req = request(Platform::Tdx, &files.artifacts);
        let plan = plan(&req).unwrap();
        let (fw, kernel) = (synthetic_tdvf(), synthetic_kernel());
        assert_eq!(plan.measurement, tdx::mrtd(&fw).unwrap());
        let m = &plan.manifest;
        assert_eq!(m.measurement, hex::encode(plan.measurement));
        assert_eq!(
            m.rtmr1,
            Some(hex::encode(
                tdx::rtmr1_direct_boot(&kernel, INITRD.len(), 2048 << 20).unwrap()
            ))
        );
        assert_eq!(
            m.rtmr2,
            Some(hex::encode(tdx::rtmr2_direct_boot(
                &req.artifacts.cmdline,
                INITRD
            )))
        );
        let mrconfigid = dc_attestation_common::contract_mrconfigid(42, &req.developer, &req.node);
        assert_eq!(plan.confidential, Confidential::Tdx { mrconfigid });
        assert_eq!(m.mrconfigid, Some(hex::encode(mrconfigid)));
        assert_eq!(
            (
                m.host_data.as_ref(),
                m.snp_policy,
                m.snp_measure_input.as_ref()
            ),
            (None, None, None)
        );
        assert!(
            m.not_predicted.iter().any(|n| n.starts_with("rtmr0")),
            "{:?}",
            m.not_predicted
        );
        assert_eq!(m.firmware_sha256, hex::encode(Sha256::digest(&fw)));
        assert_eq!(m.kernel_sha256, hex::encode(Sha256::digest(&kernel)));
        assert_eq!(m.initrd_sha256, Some(hex::encode(Sha256::digest(INITRD))));
        assert_eq!(
            (m.vcpus, m.memory_mib, m.vcpu_type.as_str()),
            (2, 2048, "host")
        );
        assert_eq!(m.format, MANIFEST_FORMAT);

        // Without an initrd: RTMR2 is the load options alone.
        let bare = write_files(&fw, &kernel, None, "console=ttyS0");
        let plan = super::plan(&request(Platform::Tdx, &bare.artifacts)).unwrap();
        assert_eq!(
            plan.manifest.rtmr2,
            Some(hex::encode(tdx::rtmr2_direct_boot("console=ttyS0", b"")))
        );
        assert_eq!(plan.manifest.initrd_sha256, None);
    }

    #[test]
    fn snp_plan_reproduces_sev_snp_measure_expected_digests() {
        let Some(ovmf) = amdsev_ovmf() else { return };
        // virtee/sev-snp-measure's own expectations for this fixture with an
        // empty kernel and no initrd, vCPU type EPYC-v4, SEV features 0x1.
        for (cmdline, vcpus, expected) in [
            ("console=ttyS0 loglevel=7", 1, "6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362f390ef83a92046c042e706363b4b08fa"),
            ("", 4, "5061fffb019493a903613d56d54b94912a1a2f9e4502385f5c194616753720a92441310ba6c4933de877c36e23046ad5"),
        ] {
            let files = write_files(&ovmf, b"", None, cmdline);
            let plan = plan(&LaunchRequest { vcpus, ..request(Platform::SevSnp, &files.artifacts) }).unwrap();
            assert_eq!(hex::encode(plan.measurement), expected, "cmdline {cmdline:?} vcpus {vcpus}");
            assert_eq!(plan.manifest.measurement, expected);
        }
    }

    #[test]
    fn snp_plan_matches_dc_measure_and_the_contract_binding() {
        let Some(ovmf) = amdsev_ovmf() else { return };
        let kernel = synthetic_kernel();
        let files = write_files(&ovmf, &kernel, Some(INITRD), "console=ttyS0 quiet");
        let req = request(Platform::SevSnp, &files.artifacts);
        let plan = plan(&req).unwrap();
        let input = snp::SnpMeasureInput::from_files(
            &ovmf,
            &kernel,
            INITRD,
            "console=ttyS0 quiet",
            2,
            "EPYC-v4",
            0x1,
        )
        .unwrap();
        assert_eq!(plan.measurement, snp::launch_digest(&input).unwrap());
        assert_eq!(plan.manifest.snp_measure_input.as_ref(), Some(&input));
        let host_data = dc_attestation_common::contract_host_data(42, &req.developer, &req.node);
        assert_eq!(
            plan.confidential,
            Confidential::SevSnp {
                policy: DEFAULT_SNP_POLICY,
                host_data
            }
        );
        let m = &plan.manifest;
        assert_eq!(m.host_data, Some(hex::encode(host_data)));
        assert_eq!(
            (m.snp_policy, m.snp_sev_features),
            (Some(0x30000), Some(0x1))
        );
        assert_eq!(
            (m.vcpu_type.as_str(), plan.cpu_model.as_str()),
            ("EPYC-v4", "EPYC-v4")
        );
        assert_eq!((m.mrconfigid.as_ref(), m.rtmr1.as_ref()), (None, None));
        assert!(m.not_predicted.is_empty());

        // The recorded document alone recomputes the measurement.
        let doc = m.snp_measure_input.as_ref().unwrap().to_json();
        let again = snp::SnpMeasureInput::from_json(doc.as_bytes()).unwrap();
        assert_eq!(
            hex::encode(snp::launch_digest(&again).unwrap()),
            m.measurement
        );
    }

    /// The QEMU command line of a spec built from the plan says what the
    /// manifest says: vCPU model, vCPU count, policy, HOST_DATA, and the
    /// measured files.
    #[test]
    fn the_snp_command_line_and_the_manifest_agree() {
        let Some(ovmf) = amdsev_ovmf() else { return };
        let files = write_files(&ovmf, &synthetic_kernel(), Some(INITRD), "console=ttyS0");
        let plan = plan(&request(Platform::SevSnp, &files.artifacts)).unwrap();
        let spec = VmSpec {
            id: "c42".into(),
            vcpus: plan.manifest.vcpus,
            memory_mib: plan.manifest.memory_mib,
            boot: plan.boot.clone(),
            disks: vec![],
            network: dc_vmm::Network::None,
            vsock_cid: None,
            vfio: vec![],
            confidential: plan.confidential.clone(),
            accel: Accel::Kvm,
            run_dir: "/run/dc/vms/c42".into(),
        };
        plan.check_spec(&spec).unwrap();
        let args =
            dc_vmm_qemu::command_line(&spec, &dc_vmm_qemu::RunPaths::for_spec(&spec)).unwrap();
        let after = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .map(|i| args[i + 1].clone())
                .unwrap()
        };
        assert_eq!(after("-cpu"), plan.manifest.vcpu_type);
        assert_eq!(after("-smp"), plan.manifest.vcpus.to_string());
        assert_eq!(after("-bios"), files.artifacts.firmware.to_str().unwrap());
        assert_eq!(after("-kernel"), files.artifacts.kernel.to_str().unwrap());
        assert_eq!(after("-append"), plan.manifest.cmdline);
        let object = after("-object");
        assert!(
            object.contains(&format!("policy={:#x}", plan.manifest.snp_policy.unwrap())),
            "{object}"
        );
        assert!(object.contains("kernel-hashes=on"), "{object}");
        // The manifest's binding and policy, put back into a spec, give the
        // very same confidential-guest object.
        let from_manifest = VmSpec {
            confidential: Confidential::SevSnp {
                policy: plan.manifest.snp_policy.unwrap(),
                host_data: hex::decode(plan.manifest.host_data.as_ref().unwrap())
                    .unwrap()
                    .try_into()
                    .unwrap(),
            },
            ..spec.clone()
        };
        let again =
            dc_vmm_qemu::command_line(&from_manifest, &dc_vmm_qemu::RunPaths::for_spec(&spec))
                .unwrap();
        assert_eq!(again, args);

        // The committed SNP golden command line uses the same model and the default policy.
        let golden = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("qemu/tests/golden/snp-kernel-hashes.args"),
        )
        .unwrap();
        assert!(
            golden.contains(&format!("\n-cpu\n{}\n", plan.manifest.vcpu_type)),
            "{golden}"
        );
        assert!(
            golden.contains(&format!("policy={DEFAULT_SNP_POLICY:#x},")),
            "{golden}"
        );
    }

    #[test]
    fn a_debuggable_or_malformed_policy_is_refused() {
        let files = tdx_files();
        let snp = |policy| {
            plan(&LaunchRequest {
                snp_policy: Some(policy),
                ..request(Platform::SevSnp, &files.artifacts)
            })
        };
        assert_eq!(
            snp(DEFAULT_SNP_POLICY | SNP_POLICY_DEBUG).unwrap_err(),
            ConfidentialError::DebugPolicy { policy: 0xb0000 }
        );
        assert!(snp(0x10000).unwrap_err().to_string().contains("bit 17"));
        assert!(
            DEFAULT_SNP_POLICY & SNP_POLICY_DEBUG == 0
                && check_snp_policy(DEFAULT_SNP_POLICY).is_ok()
        );
        let err = plan(&LaunchRequest {
            snp_policy: Some(0x30000),
            ..request(Platform::Tdx, &files.artifacts)
        })
        .unwrap_err();
        assert!(matches!(err, ConfidentialError::InvalidRequest(_)), "{err}");
    }

    #[test]
    fn cloud_hypervisor_and_bad_requests_are_refused_with_reasons() {
        let files = tdx_files();
        let base = request(Platform::Tdx, &files.artifacts);
        for platform in [Platform::SevSnp, Platform::Tdx] {
            let err = plan(&LaunchRequest {
                platform,
                backend: BackendKind::CloudHypervisor,
                ..base.clone()
            })
            .unwrap_err();
            assert!(
                matches!(err, ConfidentialError::Unsupported { .. }),
                "{err}"
            );
            assert!(err.to_string().contains("QEMU"), "{err}");
        }
        let snp_ch = plan(&LaunchRequest {
            platform: Platform::SevSnp,
            backend: BackendKind::CloudHypervisor,
            ..base.clone()
        });
        assert!(snp_ch.unwrap_err().to_string().contains("IGVM"));
        for (req, needle) in [
            (
                LaunchRequest {
                    vcpus: 0,
                    ..base.clone()
                },
                "vcpus",
            ),
            (
                LaunchRequest {
                    memory_mib: 1,
                    ..base.clone()
                },
                "memory_mib",
            ),
            (
                LaunchRequest {
                    developer: vec![],
                    ..base.clone()
                },
                "developer",
            ),
            (
                LaunchRequest {
                    node: vec![1; 30],
                    ..base.clone()
                },
                "node",
            ),
        ] {
            let err = plan(&req).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
        let mut nul = base.clone();
        nul.artifacts.cmdline.push('\0');
        assert!(plan(&nul).unwrap_err().to_string().contains("NUL"));
    }

    #[test]
    fn unreadable_or_unmeasurable_artifacts_name_the_file() {
        let files = tdx_files();
        let base = request(Platform::Tdx, &files.artifacts);
        let mut missing = base.clone();
        missing.artifacts.kernel = "/nonexistent/vmlinuz".into();
        let err = plan(&missing).unwrap_err();
        assert!(
            matches!(err, ConfidentialError::Read { what: "kernel", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("/nonexistent/vmlinuz"), "{err}");

        // A firmware without a TDVF descriptor cannot give an MRTD.
        let not_tdvf = write_files(&vec![0u8; 0x10000], &synthetic_kernel(), None, "");
        let err = plan(&request(Platform::Tdx, &not_tdvf.artifacts)).unwrap_err();
        assert!(
            matches!(
                err,
                ConfidentialError::Measure {
                    what: "TDX MRTD",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("firmware.fd"), "{err}");
        // ... nor an SEV-SNP measurement (no SEV metadata, no kernel hashes).
        let err = plan(&request(Platform::SevSnp, &not_tdvf.artifacts)).unwrap_err();
        assert!(matches!(err, ConfidentialError::Measure { .. }), "{err}");

        // A kernel that is not a PE image: RTMR1 cannot be predicted, so no plan.
        let not_pe = write_files(&synthetic_tdvf(), &[0x90; 0x2000], None, "");
        let err = plan(&request(Platform::Tdx, &not_pe.artifacts)).unwrap_err();
        assert!(
            matches!(
                err,
                ConfidentialError::Measure {
                    what: "TDX RTMR1",
                    ..
                }
            ),
            "{err}"
        );

        let empty_initrd = write_files(&synthetic_tdvf(), &synthetic_kernel(), Some(b""), "");
        let err = plan(&request(Platform::Tdx, &empty_initrd.artifacts)).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn every_input_changes_the_manifest_hash() {
        let files = tdx_files();
        let base = request(Platform::Tdx, &files.artifacts);
        let reference = plan(&base).unwrap().manifest.hash();
        assert_eq!(
            plan(&base).unwrap().manifest.hash(),
            reference,
            "planning is deterministic"
        );
        let other_initrd = write_files(
            &synthetic_tdvf(),
            &synthetic_kernel(),
            Some(b"another initramfs"),
            "console=ttyS0 root=/dev/vda1",
        );
        let mut kernel = synthetic_kernel();
        kernel[0x500] ^= 1;
        let other_kernel = write_files(
            &synthetic_tdvf(),
            &kernel,
            Some(INITRD),
            "console=ttyS0 root=/dev/vda1",
        );
        let mut cmdline = base.clone();
        cmdline.artifacts.cmdline.push_str(" single");
        let changed = [
            ("cmdline", cmdline),
            (
                "vcpus",
                LaunchRequest {
                    vcpus: 3,
                    ..base.clone()
                },
            ),
            (
                "memory",
                LaunchRequest {
                    memory_mib: 4096,
                    ..base.clone()
                },
            ),
            (
                "contract id",
                LaunchRequest {
                    contract_id: 43,
                    ..base.clone()
                },
            ),
            (
                "developer",
                LaunchRequest {
                    developer: vec![0xd1; 29],
                    ..base.clone()
                },
            ),
            (
                "node",
                LaunchRequest {
                    node: vec![0x0f; 10],
                    ..base.clone()
                },
            ),
            (
                "initrd",
                LaunchRequest {
                    artifacts: other_initrd.artifacts.clone(),
                    ..base.clone()
                },
            ),
            (
                "kernel",
                LaunchRequest {
                    artifacts: other_kernel.artifacts.clone(),
                    ..base.clone()
                },
            ),
        ];
        for (name, req) in changed {
            assert_ne!(
                plan(&req).unwrap().manifest.hash(),
                reference,
                "changing the {name} must change the hash"
            );
        }
    }

    #[test]
    fn the_snp_manifest_hash_follows_policy_and_cmdline() {
        let Some(ovmf) = amdsev_ovmf() else { return };
        let files = write_files(&ovmf, &synthetic_kernel(), None, "console=ttyS0");
        let base = request(Platform::SevSnp, &files.artifacts);
        let reference = plan(&base).unwrap();
        let other_policy = plan(&LaunchRequest {
            snp_policy: Some(0x20000),
            ..base.clone()
        })
        .unwrap();
        assert_eq!(
            other_policy.measurement, reference.measurement,
            "the policy is not measured"
        );
        assert_ne!(
            other_policy.manifest.hash(),
            reference.manifest.hash(),
            "but it is published"
        );
        let mut cmdline = base.clone();
        cmdline.artifacts.cmdline = "console=ttyS1".into();
        let other = plan(&cmdline).unwrap();
        assert_ne!(other.measurement, reference.measurement);
        assert_ne!(other.manifest.hash(), reference.manifest.hash());
    }

    /// The manifest's bytes, and so its hash, are pinned for a fixed input:
    /// a change of field names, order or encoding is a new format.
    #[test]
    fn the_manifest_hash_is_stable() {
        let files = tdx_files();
        let manifest = plan(&request(Platform::Tdx, &files.artifacts))
            .unwrap()
            .manifest;
        let json = String::from_utf8(manifest.canonical_json()).unwrap();
        assert!(json.starts_with(r#"{"format":"dc-launch/v1","contract_id":42,"platform":"tdx","backend":"qemu","measurement":""#), "{json}");
        assert_eq!(
            hex::encode(manifest.hash()),
            "841faac51933a79ef9f4b318482c5c4543afbe9b26764b811f56c810b5ffc9da",
            "canonical JSON: {json}"
        );
        assert_eq!(
            LaunchManifest::from_json(json.as_bytes()).unwrap(),
            manifest
        );
        let pretty = serde_json::to_string_pretty(&manifest).unwrap();
        assert_eq!(
            LaunchManifest::from_json(pretty.as_bytes()).unwrap().hash(),
            manifest.hash(),
            "the hash is of the canonical form"
        );
        let other = json.replace("dc-launch/v1", "dc-launch/v2");
        assert!(LaunchManifest::from_json(other.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("format"));
        let extra = json.replacen('{', r#"{"extra":1,"#, 1);
        assert!(LaunchManifest::from_json(extra.as_bytes()).is_err());
    }

    #[test]
    fn a_spec_that_differs_from_the_plan_is_refused() {
        let files = tdx_files();
        let plan = plan(&request(Platform::Tdx, &files.artifacts)).unwrap();
        let spec = VmSpec {
            id: "c42".into(),
            vcpus: 2,
            memory_mib: 2048,
            boot: plan.boot.clone(),
            disks: vec![],
            network: dc_vmm::Network::None,
            vsock_cid: None,
            vfio: vec![],
            confidential: plan.confidential.clone(),
            accel: Accel::Kvm,
            run_dir: "/run/dc/vms/c42".into(),
        };
        plan.check_spec(&spec).unwrap();
        let mut other_cmdline = spec.clone();
        if let Boot::Kernel { cmdline, .. } = &mut other_cmdline.boot {
            cmdline.push_str(" init=/bin/sh");
        }
        for (bad, needle) in [
            (other_cmdline, "boot"),
            (
                VmSpec {
                    vcpus: 4,
                    ..spec.clone()
                },
                "vcpus",
            ),
            (
                VmSpec {
                    memory_mib: 1024,
                    ..spec.clone()
                },
                "memory_mib",
            ),
            (
                VmSpec {
                    confidential: Confidential::Tdx {
                        mrconfigid: [0; 48],
                    },
                    ..spec.clone()
                },
                "confidential",
            ),
            (
                VmSpec {
                    accel: Accel::Tcg,
                    ..spec.clone()
                },
                "KVM",
            ),
        ] {
            let err = plan.check_spec(&bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }
}
