#!/usr/bin/env bash
# CI: the README's test command on a clean clone, as root; then the same
# tests against an SPDK built with AddressSanitizer and UBSan (about 12 more
# minutes cold on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test.sh
bash scripts/test.sh --asan
