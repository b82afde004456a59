//! Fuzz target bodies, one per parser of outside bytes. Each must never
//! panic, and where a parser feeds the ledger, a refused input must leave the
//! ledger unchanged.

use std::sync::OnceLock;

use candid::Principal;
use dc_identity::{Delegation, Envelope, Identity, Permission};
use dc_ledger_core::dispatch;
use dc_ledger_core::*;

/// Signed request envelope from the network: decode, then verify.
pub fn envelope(data: &[u8]) {
    if let Ok(env) = Envelope::from_bytes(data, 300 * 1024) {
        let _ = env.verify(1_700_000_000_000_000_000, 300_000_000_000);
        // Whatever decoded must re-encode to something that decodes the same.
        let again =
            Envelope::from_bytes(&env.to_bytes(), usize::MAX).expect("re-encoded envelope decodes");
        assert_eq!(again, env);
    }
}

const T0: u64 = 1_700_000_000_000_000_000;

fn world() -> &'static Ledger {
    static LEDGER: OnceLock<Ledger> = OnceLock::new();
    LEDGER.get_or_init(|| {
        let dev = Identity::from_secret_bytes([1; 32]);
        let prov = Identity::from_secret_bytes([2; 32]);
        let node = Identity::from_secret_bytes([3; 32]);
        let params = Params::with_treasury(
            Identity::from_secret_bytes([9; 32]).principal(),
            Principal::management_canister(),
        );
        let mut l = Ledger::new(Genesis {
            params,
            balances: vec![
                (Account::of(dev.principal()), 1_000 * E9S_PER_TOKEN),
                (Account::of(prov.principal()), 100 * E9S_PER_TOKEN),
            ],
            reputations: vec![(dev.principal(), 10)],
            time_ns: T0,
        })
        .expect("genesis");
        let profile = ProviderProfile {
            legal_name: "P".into(),
            jurisdiction: "DE".into(),
            email: "p@x.de".into(),
            website: String::new(),
        };
        l.register_provider(prov.principal(), T0, profile)
            .expect("provider");
        let d = Delegation::sign(
            &prov,
            node.public_key_der(),
            &[
                Permission::CheckIn,
                Permission::AcceptContracts,
                Permission::ReportStatus,
            ],
            T0 + HOUR_NS * 1000,
        );
        let caps = NodeCapabilities {
            cpu_model: "x".into(),
            vcpus: 8,
            ram_gib: 16,
            storage_gib: 100,
            bandwidth_mbps: 100,
            gpus: vec![],
            confidential: Confidential::None,
            region: "eu".into(),
            country: "DE".into(),
            image_hash: String::new(),
        };
        l.register_node(
            prov.principal(),
            T0,
            RegisterNodeArgs {
                delegation: d,
                capabilities: caps,
            },
        )
        .expect("node");
        let spec = OfferingSpec {
            node: node.principal(),
            name: "small".into(),
            vcpus: 2,
            ram_gib: 2,
            storage_gib: 10,
            bandwidth_mbps: 10,
            gpu: None,
            confidential: Confidential::None,
            region: "eu".into(),
            country: "DE".into(),
            price_e9s_per_hour: E9S_PER_TOKEN,
            min_hours: 1,
            max_hours: 100,
        };
        l.add_offering(prov.principal(), T0, spec)
            .expect("offering");
        l.rent(
            dev.principal(),
            T0,
            RentArgs {
                offering_id: 0,
                hours: 2,
            },
        )
        .expect("rent");
        l
    })
}

/// A Candid argument for any ledger method, from any caller: the first byte
/// picks the method, the second the caller, the rest is the argument.
pub fn dispatch_call(data: &[u8]) {
    let [m, c, arg @ ..] = data else { return };
    let sigs = dispatch::signatures();
    let method = sigs[*m as usize % sigs.len()].name;
    let callers = [
        Identity::from_secret_bytes([1; 32]).principal(),
        Identity::from_secret_bytes([2; 32]).principal(),
        Identity::from_secret_bytes([3; 32]).principal(),
        Principal::anonymous(),
    ];
    let caller = callers[*c as usize % callers.len()];
    let mut ledger = world().clone();
    let before = ledger.state_digest();
    match dispatch::mode_of(method) {
        Some(dispatch::Mode::Query) => {
            let _ = dispatch::query(&ledger, caller, method, arg);
        }
        _ => match dispatch::update(&mut ledger, caller, T0 + 1, method, arg) {
            Ok(out) if out.committed => {}
            _ => assert_eq!(
                ledger.state_digest(),
                before,
                "refused {method} changed the ledger"
            ),
        },
    }
}

/// The service's journal, read back after a crash.
pub fn journal(data: &[u8]) {
    if let Ok((frames, valid)) = dc_ledger::store::parse_journal(data) {
        assert!(valid as usize <= data.len());
        // A valid prefix parses to the same frames again.
        let (again, valid_again) =
            dc_ledger::store::parse_journal(&data[..valid as usize]).expect("valid prefix parses");
        assert_eq!(valid_again, valid);
        assert_eq!(again.len(), frames.len());
    }
}

/// An operator's genesis file.
pub fn genesis(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(g) = dc_ledger::genesis::parse("fuzz.toml", &text, T0) {
        let _ = Ledger::new(g);
    }
}

/// A snapshot file (local service) or stable memory image (canister).
pub fn snapshot(data: &[u8]) {
    if let Ok(ledger) = dc_ledger_core::snapshot::decode(data) {
        let _ = ledger.state_digest();
        let _ = ledger.search(&SearchQuery::default());
    }
}

/// SEV-SNP attestation report (and certificates carved from the same bytes)
/// through the parser and verifier.
pub fn snp_report(data: &[u8]) {
    dc_attestation::snp::fuzz_report(data);
}

/// TDX quote through the parser and the dcap-qvl verification path.
pub fn tdx_quote(data: &[u8]) {
    dc_attestation::tdx::fuzz_quote(data);
}

/// CCEL / TCG2 event log through the parser and replay.
pub fn tdx_event_log(data: &[u8]) {
    dc_attestation::tdx::fuzz_event_log(data);
}

/// NVIDIA SPDM GET_MEASUREMENTS request||response.
pub fn spdm(data: &[u8]) {
    dc_attestation::nvidia::fuzz_spdm(data);
}

/// NVIDIA reference integrity manifest (swidtag XML).
pub fn rim(data: &[u8]) {
    dc_attestation::nvidia::fuzz_rim(data);
}

/// Evidence bundle (dc-evidence/v1 JSON) through the decoder and verifier.
pub fn bundle(data: &[u8]) {
    dc_attestation::bundle::fuzz_bundle(data);
}

/// Measurement inputs: the SNP hashes document, OVMF footer and TDVF metadata parsers.
pub fn measure(data: &[u8]) {
    dc_attestation::measure::fuzz_snp_input(data);
    dc_attestation::measure::fuzz_tdvf(data);
}

/// The SNP certificate table a host hands the guest (configfs-tsm `auxblob`), as `dc-guest` parses it.
pub fn auxblob(data: &[u8]) {
    dc_guest::fuzz_cert_table(data);
}

/// A TLS ClientHello as the ingress reads it on port 443 (records, SNI, ALPN, ECH).
pub fn client_hello(data: &[u8]) {
    dc_ingress::fuzz_client_hello(data);
}

/// An HTTP request head as the ingress reads it on port 80 (the Host it routes on).
pub fn http_host(data: &[u8]) {
    dc_ingress::fuzz_http_host(data);
}
