#!/usr/bin/env bash
# CI: the README's test command on a clean clone, as root; then the same
# tests against an SPDK built with AddressSanitizer and UBSan (about 12 more
# minutes cold on 2 cores). The sanitized run replays fixed fuzz seeds (the
# two that found patches 0018 and 0020), so a CI result can be reproduced;
# `scripts/test.sh --asan` alone draws new seeds, as the plain run does.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test.sh
SPDK_PMEM_FUZZ_SEED=266596 SPDK_PMEM_RPC_FUZZ_SEED=502515 bash scripts/test.sh --asan
