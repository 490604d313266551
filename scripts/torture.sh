#!/usr/bin/env bash
# Long crash-torture runs (scripts/test.sh runs 30 cycles per pool): SPDK's
# NVMe-oF initiator (examples/stamped_writer.rs) writes stamped 4 KiB units
# over NVMe/TCP, the target is killed with SIGKILL
# at a random moment, pmempool checks the pool and every unit is read back:
# no torn unit and no lost acknowledged write on pools of 4 KiB blocks (in
# /dev/shm and on disk), and torn units found by the control (512-byte blocks).
#
# usage: scripts/torture.sh [--cycles N]   (cycles per pool, default 500)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cycles=500
while [ $# -gt 0 ]; do
  case "$1" in
    --cycles) cycles=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "torture: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$cycles" in ''|*[!0-9]*|0) echo "torture: --cycles takes a positive whole number, not '$cycles'" >&2; exit 2 ;; esac
cd "$top"
bash scripts/setup.sh >/dev/null
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
SPDK_PMEM_TORTURE_CYCLES=$cycles cargo test --locked --test integration crash_torture:: -- --nocapture --test-threads 1 >"$log" 2>&1
rc=$?
set -e
grep -aE '^(crash torture|  e\.g\.|test )|panicked|torn:|lost:' "$log" || true
[ $rc -eq 0 ] || { tail -n 40 "$log" >&2; echo "torture: FAILED" >&2; }
exit $rc
