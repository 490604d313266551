#!/usr/bin/env bash
# Everything a fresh Debian machine needs before the project runs, idempotently:
# Debian packages and hugepages (setup-host.sh), the pinned SPDK source
# (vendor/fetch-spdk.sh), and a build of SPDK and of our crates.
# Usage: scripts/setup.sh [--release]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

bash scripts/setup-host.sh
bash vendor/fetch-spdk.sh
if ! command -v cargo >/dev/null; then
  # rustup's default location, for shells that have not sourced its env.
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }
# Today's SPDK Python client (PyPI `spdk`, command spdk-rpc): a test peer for
# the RPC compatibility tests, kept in a virtual environment, not a dependency.
venv="$top/target/spdk-rpc-venv"
if [ ! -x "$venv/bin/spdk-rpc" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "spdk==26.9"
fi
start=$(date +%s)
cargo build --locked --workspace --all-targets "$@"
echo "setup: cargo build $* took $(( $(date +%s) - start )) s; SPDK tree: $(readlink -f target/spdk/current)"
