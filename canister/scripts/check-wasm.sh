#!/usr/bin/env bash
# Checks the ledger canister's wasm against canister/canister/ledger.did and
# embeds the interface as public `candid:service` metadata.
#   in:  target/wasm/dc_ledger_canister.wasm            (canister/scripts/build-wasm.sh)
#   out: target/wasm/dc_ledger_canister.candid.wasm     (the one to install)
# ic-wasm comes from npm into ~/.cache/dc-tools (no global install); set
# IC_WASM to use another binary.
set -euo pipefail
cd "$(dirname "$0")/../.."

IC_WASM_VERSION=0.11.1
tools="$HOME/.cache/dc-tools"
wasm=target/wasm/dc_ledger_canister.wasm
out=target/wasm/dc_ledger_canister.candid.wasm
did=canister/canister/ledger.did
hidden=target/wasm/hidden-endpoints.txt

ic_wasm="${IC_WASM:-$tools/node_modules/@icp-sdk/ic-wasm-linux-x64/bin/ic-wasm}"
if [[ ! -x "$ic_wasm" ]]; then
    echo "==> installing ic-wasm $IC_WASM_VERSION from npm into $tools"
    npm install --silent --no-audit --no-fund --prefix "$tools" "@icp-sdk/ic-wasm-linux-x64@$IC_WASM_VERSION"
fi
echo "==> using $("$ic_wasm" --version) ($ic_wasm)"

if [[ ! -f "$wasm" ]]; then
    echo "error: $wasm is missing; run canister/scripts/build-wasm.sh first" >&2
    exit 1
fi

# Exports that are not Candid methods: lifecycle hooks, and the global timer
# with ic-cdk-timers' internal update.
printf '%s\n' \
    canister_init \
    canister_pre_upgrade \
    canister_post_upgrade \
    canister_global_timer \
    'canister_update:<ic-cdk internal> timer_executor' >"$hidden"

echo "==> ic-wasm $wasm check-endpoints --candid $did --hidden $hidden"
"$ic_wasm" "$wasm" check-endpoints --candid "$did" --hidden "$hidden"

echo "==> ic-wasm $wasm -o $out metadata candid:service -f $did -v public"
"$ic_wasm" "$wasm" -o "$out" metadata candid:service -f "$did" -v public

if [[ "$("$ic_wasm" "$out" metadata candid:service)" != "$(cat "$did")" ]]; then
    echo "error: the candid:service metadata of $out is not $did" >&2
    exit 1
fi
echo "==> ok: $wasm ($(wc -c <"$wasm") bytes) matches $did; $out ($(wc -c <"$out") bytes) carries it as public candid:service"
