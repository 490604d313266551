#!/usr/bin/env bash
# The project's tests, from a fresh Debian machine: set-up (idempotent), then
# formatting, clippy, and every unit and integration test against real SPDK
# and libpmemblk.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

bash scripts/setup.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked --workspace
