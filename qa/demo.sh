#!/usr/bin/env bash
# The main job on the embedded default: start the local ledger `dc-ledger`
# with a demo genesis and drive a short, readable round through `dcctl`.
# Everything lives in a temporary directory and is removed at the end
# (set KEEP=1 to keep it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "Building dc-ledger and dcctl (release)"
cargo build --release -q -p dc-ledger --bin dc-ledger -p dc-controller --bin dcctl
bin="$root/target/release"
export PATH="$bin:$PATH"

work=$(mktemp -d -t dc-demo.XXXXXX)
ledger_pid=""
cleanup() {
  if [ -n "$ledger_pid" ]; then kill "$ledger_pid" 2>/dev/null || true; wait "$ledger_pid" 2>/dev/null || true; fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
cd "$work"

step "Identities: a developer, a provider, the provider's node and the DAO treasury"
run dcctl identity new --out developer.pem
run dcctl identity new --out provider.pem
run dcctl identity new --out node.pem
run dcctl identity new --out treasury.pem
dev=$(dcctl --identity developer.pem identity show)
prov=$(dcctl --identity provider.pem identity show)
treasury=$(dcctl --identity treasury.pem identity show)

step "A demo genesis: 1,000 DCT for the developer, 10 s reward blocks"
cat > genesis.toml <<TOML
treasury = "$treasury"

[params]
block_interval_secs = 10

[[balances]]
principal = "$dev"
amount_e9s = 1000000000000
TOML
cat genesis.toml

step "Starting dc-ledger on loopback"
dc-ledger serve --data ./ledger --listen 127.0.0.1:0 --genesis genesis.toml > ledger.out 2> ledger.log &
ledger_pid=$!
for _ in $(seq 100); do [ -s ledger/url ] && break; sleep 0.1; done
[ -s ledger/url ] || { echo "dc-ledger did not start:"; cat ledger.log; exit 1; }
cat ledger.out
export DC_LEDGER=$(cat ledger/url)

step "Balances before"
run dcctl --identity developer.pem balance
run dcctl balance "$prov"

step "The developer pays the provider 25 DCT (fee goes to the treasury)"
run dcctl --identity developer.pem transfer --to "$prov" --amount-e9s 25000000000 --memo "demo payment"

step "Balances after"
run dcctl --identity developer.pem balance
run dcctl balance "$prov"
run dcctl balance "$treasury" --json

step "A transfer the developer cannot afford is refused and changes nothing"
set +e
dcctl --identity developer.pem transfer --to "$prov" --amount-e9s 999999999999999
code=$?
set -e
echo "exit code $code (1 = refused by the ledger)"
run dcctl balance "$prov" --json

step "The provider registers (5 DCT fee) and delegates to its node"
run dcctl --identity provider.pem provider register --name "Demo Cloud GmbH" --jurisdiction DE --email ops@demo.example --website https://demo.example
cat > node.toml <<TOML
cpu_model = "AMD EPYC 9654"
vcpus = 32
ram_gib = 128
storage_gib = 2000
bandwidth_mbps = 10000
confidential = "sev-snp"
region = "eu-central"
country = "DE"
TOML
run dcctl --identity provider.pem node register --node-identity node.pem --file node.toml
node=$(dcctl --identity node.pem identity show)

step "Two offerings on that node"
for spec in "small 2 4 none 100000000" "confidential 8 32 sev-snp 400000000"; do
  set -- $spec
  cat > "offering-$1.toml" <<TOML
name = "$1"
node = "$node"
price_e9s_per_hour = $5
min_hours = 1
max_hours = 720
confidential = "$4"
region = "eu-central"
country = "DE"

[resources]
vcpus = $2
ram_gib = $3
storage_gib = 100
bandwidth_mbps = 1000
TOML
  run dcctl --identity provider.pem offering add --file "offering-$1.toml"
done

step "The developer searches and rents the best confidential offer for 24 hours"
run dcctl offers search
run dcctl offers search --confidential sev-snp --min-vcpus 4
run dcctl --identity developer.pem rent --best --confidential sev-snp --min-vcpus 4 --hours 24
run dcctl contract show 0

step "The developer cancels before the node provisioned it: a full refund"
run dcctl --identity developer.pem cancel 0
run dcctl --identity developer.pem balance
run dcctl reputation "$prov"

vectors="${DC_VECTORS:-$root/../shared/vectors}"
if [ -d "$vectors" ]; then
  step "An auditor predicts a confidential VM's launch measurement; a developer verifies its real SEV-SNP report against it"
  m=$(dcctl measure snp --dstack-cbor "$vectors/dstack/DERIVED_measurement.snp.cbor" --vcpus 2 --vcpu-type EPYC-v4 --guest-features 1)
  echo "predicted measurement: $m"
  run dcctl verify snp --report "$vectors/dstack/DERIVED_sev_snp_report.bin" --vcek "$vectors/dstack/sev_snp_vcek.pem" \
    --chain "$vectors/dstack/sev_snp_ask.pem" --now 1790000000 --expect-measurement "$m"
  step "A TDX quote from real hardware, with Intel's collateral"
  run dcctl verify tdx --quote "$vectors/dcap-qvl/tdx_quote" --collateral "$vectors/dcap-qvl/tdx_quote_collateral.json" --now 1751624655
else
  step "Attestation demo skipped: no real-hardware vectors at $vectors (set DC_VECTORS)"
fi

step "Ledger totals"
run curl -s "$DC_LEDGER/api/v1/status"
echo
step "Done: every acknowledged change was journaled and fsynced before its reply (KEEP=1 keeps $work)"
