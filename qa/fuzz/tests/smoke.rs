//! Runs every fuzz target body on random bytes and on mutations of valid
//! inputs, so the normal suite catches panics even without libFuzzer.

use dc_identity::{Envelope, Identity};
use proptest::prelude::*;

fn valid_envelope() -> Vec<u8> {
    let id = Identity::from_secret_bytes([7; 32]);
    Envelope::sign(
        &id,
        "icrc1_transfer",
        candid::encode_one(42u64).unwrap(),
        vec![1; 16],
        1_700_000_000_100_000_000,
    )
    .to_bytes()
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn envelope_never_panics(data in prop::collection::vec(any::<u8>(), 0..512), flips in prop::collection::vec((any::<usize>(), 1u8..), 0..4), cut in any::<usize>()) {
        dc_fuzz::envelope(&data);
        dc_fuzz::envelope(&mutate(valid_envelope(), &flips, cut));
    }

    #[test]
    fn dispatch_never_panics_and_refusals_change_nothing(m in any::<u8>(), c in any::<u8>(), arg in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut data = vec![m, c, b'D', b'I', b'D', b'L'];
        data.extend(arg.iter().copied());
        dc_fuzz::dispatch_call(&data);
        let mut raw = vec![m, c];
        raw.extend(arg);
        dc_fuzz::dispatch_call(&raw);
    }

    #[test]
    fn journal_never_panics(data in prop::collection::vec(any::<u8>(), 0..512)) {
        dc_fuzz::journal(&data);
    }

    #[test]
    fn genesis_never_panics(data in prop::collection::vec(any::<u8>(), 0..256), text in "[a-z_=\\[\\]\"0-9 \n]{0,200}") {
        dc_fuzz::genesis(&data);
        dc_fuzz::genesis(text.as_bytes());
    }

    #[test]
    fn snapshot_never_panics(data in prop::collection::vec(any::<u8>(), 0..512)) {
        for magic in [&b"DCLEDG02"[..], b"DCLEDG03", b"DCLEDG04"] {
            let mut prefixed = magic.to_vec();
            prefixed.extend(&data);
            dc_fuzz::snapshot(&prefixed);
        }
        dc_fuzz::snapshot(&data);
    }
}

#[test]
fn dispatch_accepts_real_calls_through_the_fuzz_body() {
    // Sanity: the fuzz world is built and a well-formed query goes through.
    let sigs = dc_ledger_core::dispatch::signatures();
    let idx = sigs.iter().position(|s| s.name == "ledger_stats").unwrap() as u8;
    let mut data = vec![idx, 0];
    data.extend(candid::encode_args(()).unwrap());
    dc_fuzz::dispatch_call(&data);
}
