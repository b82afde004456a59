#!/usr/bin/env bash
# All tests: installs what they need, then runs the Rust test suite (unit,
# property, durability and scenario tests, real Linux guests under QEMU's
# software emulation), builds the canister's wasm and
# checks it against ledger.did with ic-wasm, and parses flake.nix.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Installing what the tests need"
missing=()
command -v nix-instantiate >/dev/null || missing+=(nix-bin)
command -v npm >/dev/null || missing+=(npm)
command -v curl >/dev/null || missing+=(curl)
# Real Linux guests under software emulation (dc-test-guest downloads its
# pinned kernel and busybox packages itself, without installing them).
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v qemu-img >/dev/null || missing+=(qemu-utils)
command -v dpkg-deb >/dev/null || missing+=(dpkg)
# Tenant networking tests build bridges, taps and nftables rules inside
# network namespaces they create.
command -v nft >/dev/null || missing+=(nftables)
command -v ip >/dev/null || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

say "Rust tests"
cargo test --workspace --no-fail-fast

say "Canister wasm: build and check against ledger.did"
bash canister/scripts/build-wasm.sh
bash canister/scripts/check-wasm.sh

say "flake.nix parses"
nix-instantiate --parse flake.nix > /dev/null
echo "ok"

say "All tests passed"
