#!/usr/bin/env bash
# Builds the ledger canister's wasm: target/wasm/dc_ledger_canister.wasm.
set -euo pipefail
cd "$(dirname "$0")/../.."

target=wasm32-unknown-unknown
out_dir=target/wasm
wasm="$out_dir/dc_ledger_canister.wasm"

if ! rustup target list --installed | grep -qx "$target"; then
    echo "==> adding rust target $target"
    rustup target add "$target"
else
    echo "==> rust target $target present"
fi

echo "==> cargo build -p dc-ledger-canister --target $target --profile wasm"
cargo build -p dc-ledger-canister --target "$target" --profile wasm --locked

mkdir -p "$out_dir"
cp "target/$target/wasm/dc_ledger_canister.wasm" "$wasm"
echo "==> wrote $wasm ($(wc -c <"$wasm") bytes)"
