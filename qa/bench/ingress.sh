#!/usr/bin/env bash
# Benchmarks the SNI-passthrough ingress (dc-ingress) beside HAProxy and nginx
# (Debian packages, installed here if missing) and the direct path, in one run,
# and writes qa/BENCHMARKS-ingress.md. Extra arguments go to ingress-bench
# (see --help), e.g. --runs 5 --seconds 8 --proxy-threads 2.
set -euo pipefail
cd "$(dirname "$0")/../.."

missing=()
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
# Debian ships nginx's stream module (ssl_preread) as a separate package.
dpkg -s libnginx-mod-stream >/dev/null 2>&1 || missing+=(libnginx-mod-stream)
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    # The packages' services are not started here: the benchmark runs its own
    # instances with generated configurations.
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

cargo build --release -p dc-qa --bin ingress-bench
target/release/ingress-bench --markdown qa/BENCHMARKS-ingress.md "$@"
