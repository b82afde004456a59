//! The attestation fuzz bodies on random bytes and on mutations of real
//! evidence (../shared/vectors), so the suite catches panics without libFuzzer.

use std::path::PathBuf;
use std::sync::OnceLock;

use proptest::prelude::*;

fn vector(rel: &str) -> Vec<u8> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = dc_attestation::vectors_dir();
        if d.is_none() {
            eprintln!("skipped mutations of real evidence: no vectors (set DC_VECTORS)");
        }
        d
    });
    dir.as_ref()
        .and_then(|d| std::fs::read(d.join(rel)).ok())
        .unwrap_or_default()
}

fn mutate(mut base: Vec<u8>, flips: &[(usize, u8)], cut: usize) -> Vec<u8> {
    for (i, x) in flips {
        if !base.is_empty() {
            let n = base.len();
            base[i % n] ^= x;
        }
    }
    base.truncate(cut.min(base.len()));
    base
}

fn flips() -> impl Strategy<Value = Vec<(usize, u8)>> {
    prop::collection::vec((any::<usize>(), 1u8..), 0..4)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn snp_report_never_panics(data in prop::collection::vec(any::<u8>(), 0..2048), f in flips(), cut in any::<usize>()) {
        dc_fuzz::snp_report(&data);
        let mut real = vector("go-sev-guest/attestation.bin");
        real.extend(vector("go-sev-guest/vcek.testcer"));
        dc_fuzz::snp_report(&mutate(real, &f, cut));
    }

    #[test]
    fn tdx_quote_never_panics(data in prop::collection::vec(any::<u8>(), 0..2048), f in flips(), cut in any::<usize>()) {
        dc_fuzz::tdx_quote(&data);
        dc_fuzz::tdx_quote(&mutate(vector("dcap-qvl/tdx_quote"), &f, cut));
    }

    #[test]
    fn event_log_never_panics(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        dc_fuzz::tdx_event_log(&data);
    }

    #[test]
    fn spdm_never_panics(data in prop::collection::vec(any::<u8>(), 0..2048), f in flips(), cut in any::<usize>()) {
        dc_fuzz::spdm(&data);
        let text = vector("nvtrust/hopperAttestationReport.txt");
        let real = dc_attestation::decode_maybe_hex(&text, 1 << 20).unwrap_or_default();
        dc_fuzz::spdm(&mutate(real, &f, cut));
    }

    #[test]
    fn rim_never_panics(data in prop::collection::vec(any::<u8>(), 0..1024), f in flips(), cut in any::<usize>()) {
        dc_fuzz::rim(&data);
        dc_fuzz::rim(&mutate(vector("nvtrust/Driver_RIM_test_no_gpu.swidtag"), &f, cut));
    }

    #[test]
    fn bundle_never_panics(data in prop::collection::vec(any::<u8>(), 0..1024), text in "[{}\\[\\]\":,a-z0-9 -]{0,300}") {
        dc_fuzz::bundle(&data);
        dc_fuzz::bundle(text.as_bytes());
    }

    #[test]
    fn measure_never_panics(data in prop::collection::vec(any::<u8>(), 0..4096), f in flips(), cut in any::<usize>()) {
        dc_fuzz::measure(&data);
        dc_fuzz::measure(&mutate(vector("sev-snp-measure/ovmf_AmdSev_suffix.bin"), &f, cut));
    }

    #[test]
    fn ingress_parsers_never_panic(data in prop::collection::vec(any::<u8>(), 0..2048), f in flips(), cut in any::<usize>()) {
        dc_fuzz::client_hello(&data);
        dc_fuzz::http_host(&data);
        // A TLS handshake record holding a ClientHello with an SNI, mutated.
        let name = b"c1.node.test";
        let mut sni = vec![0, 0];
        let list_len = (name.len() + 3) as u16;
        sni.extend_from_slice(&(list_len + 2).to_be_bytes());
        sni.extend_from_slice(&list_len.to_be_bytes());
        sni.push(0);
        sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni.extend_from_slice(name);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        body.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        body.extend_from_slice(&sni);
        let mut hs = vec![1, 0];
        hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
        hs.extend_from_slice(&body);
        let mut record = vec![22, 3, 1];
        record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        record.extend_from_slice(&hs);
        dc_fuzz::client_hello(&mutate(record, &f, cut));
        dc_fuzz::http_host(&mutate(b"GET / HTTP/1.1\r\nHost: c1.node.test\r\n\r\n".to_vec(), &f, cut));
    }

    #[test]
    fn auxblob_never_panics(data in prop::collection::vec(any::<u8>(), 0..2048), f in flips(), cut in any::<usize>()) {
        dc_fuzz::auxblob(&data);
        // A well-formed table (GUID, offset, length entries, zero-terminated) mutated.
        let mut table = Vec::new();
        for (i, len) in [(0u8, 64u32), (1, 32)] {
            table.extend_from_slice(&[i; 16]);
            table.extend_from_slice(&(72 + u32::from(i) * 64).to_le_bytes());
            table.extend_from_slice(&len.to_le_bytes());
        }
        table.extend_from_slice(&[0; 24]);
        table.resize(256, 0xab);
        dc_fuzz::auxblob(&mutate(table, &f, cut));
    }
}
