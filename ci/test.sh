#!/usr/bin/env bash
# CI's one step: the README's test command, on a clean clone, as root.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/test.sh
