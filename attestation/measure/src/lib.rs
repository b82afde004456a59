//! Launch-measurement prediction for confidential VMs.
//!
//! Given what a provider says it booted (firmware metadata or its hashes,
//! kernel, initrd, command line, vCPU shape), this crate computes the value
//! the hardware should report: the AMD SEV-SNP launch digest ([`snp`]) and the
//! Intel TDX MRTD, RTMR1 and RTMR2 ([`tdx`]). A verifier compares these with
//! the signed report. The code is pure: every function takes bytes or a parsed
//! document and never touches files, the network or the clock, and every
//! count and size taken from outside is bounded.

mod error;
mod hexser;
pub mod ovmf;
pub mod snp;
pub mod tdx;

pub use error::MeasureError;

/// Fuzz body for the SNP input parsers: feeds `data` to
/// [`snp::SnpMeasureInput::from_json`], [`snp::ovmf_info`] and, when the JSON
/// parses, to [`snp::launch_digest`]. Never panics; errors are expected.
pub fn fuzz_snp_input(data: &[u8]) {
    if let Ok(input) = snp::SnpMeasureInput::from_json(data) {
        let _ = snp::launch_digest(&input);
    }
    let _ = snp::ovmf_info(data);
}

/// Fuzz body for the TDVF and PE parsers: feeds `data` to [`tdx::mrtd`],
/// [`tdx::tdvf_sections`] and [`tdx::authenticode_sha384`]. Never panics.
pub fn fuzz_tdvf(data: &[u8]) {
    // Arbitrary bytes rarely form a TDVF; keep the work bounded anyway by the
    // crate's own limits on section counts and page totals.
    let _ = tdx::tdvf_sections(data);
    let _ = tdx::mrtd(data);
    let _ = tdx::authenticode_sha384(data);
    let _ = tdx::rtmr1_direct_boot(data, 0, 2 << 30);
}
