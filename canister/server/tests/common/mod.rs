//! Starts `dc-ledger` as a separate process, as operators run it.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use dc_identity::Identity;
use dc_ledger::launch::LedgerProcess;

/// Starts the binary on a free port and waits for its URL.
pub fn start(data: &Path, genesis: Option<&Path>) -> LedgerProcess {
    LedgerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_dc-ledger")),
        data,
        genesis,
        None,
        Duration::from_secs(60),
    )
    .expect("start dc-ledger")
}

pub fn identity(n: u8) -> Identity {
    Identity::from_secret_bytes([n; 32])
}

/// A genesis giving each of `funded` 1,000 DCT; treasury is identity 250.
pub fn write_genesis(
    dir: &Path,
    funded: &[&Identity],
    block_interval_secs: u64,
) -> std::path::PathBuf {
    let mut text = format!(
        "treasury = \"{}\"\n[params]\nblock_interval_secs = {block_interval_secs}\n",
        identity(250).principal()
    );
    for id in funded {
        text.push_str(&format!(
            "[[balances]]\nprincipal = \"{}\"\namount_e9s = 1000000000000\n",
            id.principal()
        ));
    }
    let path = dir.join("genesis.toml");
    std::fs::write(&path, text).expect("write genesis");
    path
}
