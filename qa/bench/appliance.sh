#!/usr/bin/env bash
# Times rents on the appliance until the guest answers (dc-ledger, dcctl,
# dc-appliance with QEMU under TCG, the dc-test-guest guest), phase by phase,
# and the supervisor's overhead per VM operation beside raw QMP; writes
# qa/BENCHMARKS-appliance.md. Installs QEMU if missing. Extra arguments go to
# vm-bench (see --help), e.g. --rents 10 --ops 500 --poll-interval-ms 100.
#
# With CLOUD_HYPERVISOR_BIN naming a cloud-hypervisor binary (no package
# registry ships one; /dev/kvm needed), vm-bench also times the same
# operations on Cloud Hypervisor (a stub guest launched through dc-vmm-ch)
# beside raw HTTP on its API socket; the variable reaches vm-bench through
# the environment:
#   CLOUD_HYPERVISOR_BIN=/path/to/cloud-hypervisor bash qa/bench/appliance.sh
# Without it that part is skipped, and the output says so.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v qemu-system-x86_64 >/dev/null 2>&1 || ! command -v qemu-img >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y qemu-system-x86 qemu-utils
fi

cargo build --release -p dc-ledger --bin dc-ledger -p dc-controller --bin dcctl \
    -p dc-appliance --bin dc-appliance -p dc-qa --bin vm-bench
target/release/vm-bench --ledger-bin target/release/dc-ledger --dcctl target/release/dcctl \
    --appliance-bin target/release/dc-appliance --markdown qa/BENCHMARKS-appliance.md "$@"
