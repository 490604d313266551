#!/usr/bin/env bash
# CI: the README's test command on a clean clone, as root; then the same
# tests against an SPDK built with AddressSanitizer and UBSan (about 12 more
# minutes cold on 2 cores). The sanitized run replays fixed fuzz seeds (the
# two that found patches 0018 and 0020), so a CI result can be reproduced;
# `scripts/test.sh --asan` alone draws new seeds, as the plain run does.
set -euo pipefail
cd "$(dirname "$0")/.."
# One build per suite, never rebuilt: incremental state would only take
# disk (about 1 GiB per suite), and CI machines have run short of it.
export CARGO_INCREMENTAL=0
free_space() { echo "== disk: $(df -Ph . | awk 'NR == 2 { print $4 " free of " $2 }') ($1)"; }
free_space "before the plain suite"
bash scripts/test.sh
free_space "before the sanitized suite"
SPDK_PMEM_FUZZ_SEED=266596 SPDK_PMEM_RPC_FUZZ_SEED=502515 bash scripts/test.sh --asan
free_space "after both suites"
