#!/usr/bin/env bash
# Benchmarks dc-ledger against PostgreSQL measured in the same run and writes
# qa/BENCHMARKS.md. Extra arguments go to ledger-bench (see --help), e.g.
#   qa/bench/ledger.sh --seconds 5 --offerings 200000
set -euo pipefail
cd "$(dirname "$0")/../.."

# The peer: Debian's PostgreSQL server (the benchmark starts its own cluster).
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y postgresql
    # The package may start a system cluster; the benchmark does not use it.
    service postgresql stop || true
fi

cargo build --release -p dc-ledger -p dc-qa
target/release/ledger-bench --markdown qa/BENCHMARKS.md "$@"
