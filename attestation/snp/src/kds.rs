//! AMD Key Distribution Service: where a chip's VCEK for one TCB lives.

use dc_attestation_common::fetch::Fetcher;

use crate::{Generation, SnpError, TcbLevels};

/// Base URL of AMD's Key Distribution Service.
pub const KDS_BASE_URL: &str = "https://kdsintf.amd.com";

/// Largest VCEK response accepted (a VCEK is about 1.4 KiB).
const MAX_VCEK_BYTES: usize = 16 * 1024;

/// The KDS URL of the VCEK of `chip_id` at `tcb`:
///
/// - Milan, Genoa: `/vcek/v1/{Milan|Genoa}/{64-byte hwid hex}?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..`
/// - Turin: `/vcek/v1/Turin/{8-byte hwid hex}?fmcSPL=..&blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..`
///
/// SPLs are decimal, zero-padded to two digits as AMD's examples write them.
/// A Turin `tcb` without an fmc level uses 0.
pub fn kds_vcek_url(generation: Generation, chip_id: &[u8; 64], tcb: &TcbLevels) -> String {
    let spls = format!(
        "blSPL={:02}&teeSPL={:02}&snpSPL={:02}&ucodeSPL={:02}",
        tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode
    );
    match generation {
        Generation::Turin => format!(
            "{KDS_BASE_URL}/vcek/v1/Turin/{}?fmcSPL={:02}&{spls}",
            hex::encode(&chip_id[..8]),
            tcb.fmc.unwrap_or(0)
        ),
        g => format!(
            "{KDS_BASE_URL}/vcek/v1/{}/{}?{spls}",
            g.kds_name(),
            hex::encode(chip_id)
        ),
    }
}

/// Fetches the VCEK (DER) of `chip_id` at `tcb` from the KDS through `fetcher`.
pub fn fetch_vcek(
    fetcher: &dyn Fetcher,
    generation: Generation,
    chip_id: &[u8; 64],
    tcb: &TcbLevels,
) -> Result<Vec<u8>, SnpError> {
    let url = kds_vcek_url(generation, chip_id, tcb);
    let response = fetcher
        .get(&url)
        .map_err(|e| SnpError::Fetch(e.to_string()))?;
    if response.status != 200 {
        return Err(SnpError::Fetch(format!(
            "fetching {url}: HTTP status {}",
            response.status
        )));
    }
    if response.body.len() > MAX_VCEK_BYTES {
        return Err(SnpError::Fetch(format!(
            "fetching {url}: {} bytes, a VCEK is at most {MAX_VCEK_BYTES}",
            response.body.len()
        )));
    }
    Ok(response.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milan_and_turin_urls() {
        let mut chip = [0u8; 64];
        chip[0] = 0xd4;
        chip[63] = 0xb6;
        let tcb = TcbLevels {
            bootloader: 3,
            tee: 0,
            snp: 8,
            microcode: 115,
            fmc: None,
        };
        let url = kds_vcek_url(Generation::Milan, &chip, &tcb);
        assert_eq!(
            url,
            format!(
                "https://kdsintf.amd.com/vcek/v1/Milan/d4{}b6?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115",
                "00".repeat(62)
            )
        );
        let turin = TcbLevels {
            fmc: Some(1),
            ..tcb
        };
        assert_eq!(
            kds_vcek_url(Generation::Turin, &chip, &turin),
            "https://kdsintf.amd.com/vcek/v1/Turin/d400000000000000?fmcSPL=01&blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115"
        );
        assert!(kds_vcek_url(Generation::Genoa, &chip, &tcb).contains("/vcek/v1/Genoa/"));
    }
}
