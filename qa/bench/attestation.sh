#!/usr/bin/env bash
# Benchmarks our SEV-SNP and TDX verifiers beside snpguest (installed with
# `cargo install snpguest` if missing) and writes qa/BENCHMARKS-attestation.md.
# Extra arguments go to attest-bench (see --help), e.g. --seconds 5 --runs 200.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v snpguest >/dev/null 2>&1; then
    # snpguest links OpenSSL.
    if ! dpkg -s libssl-dev pkg-config >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y libssl-dev pkg-config
    fi
    cargo install --locked snpguest
fi

cargo build --release -p dc-controller --bin dcctl -p dc-qa --bin attest-bench
target/release/attest-bench --dcctl target/release/dcctl --snpguest "$(command -v snpguest)" --markdown qa/BENCHMARKS-attestation.md "$@"
