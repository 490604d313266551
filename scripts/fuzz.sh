#!/usr/bin/env bash
# Long fuzzing runs of the hostile-input tests (scripts/test.sh runs them
# bounded): the NVMe/TCP protocol fuzzer (with bdevperf verifying data on the
# same target), the JSON-RPC fuzzer, SPDK's nvme_fuzz and the DH-HMAC-CHAP
# message fuzzer (tests/integration/dhchap/fuzz.rs). All traffic goes to
# 127.0.0.1; each part stops by itself after --seconds.
#
# usage: scripts/fuzz.sh [--seconds N] [--seed S] [--target ours|c|PATH]
#                        [--only tcp|rpc|nvme|auth]
#   --seconds  length of each part (default 300)
#   --seed     seed of the NVMe/TCP and JSON-RPC fuzzers (default: random,
#              printed; the same seed replays the same sessions and calls)
#   --target   our nvmf_tgt (default), SPDK's C one of the same build, or a path
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
seconds=300
seed=$(( (RANDOM << 15 | RANDOM) % 1000000 ))
target=ours
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --target) target=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "fuzz: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$seconds" in ''|*[!0-9]*) echo "fuzz: --seconds takes a whole number, not '$seconds'" >&2; exit 2 ;; esac
case "$seed" in ''|*[!0-9]*) echo "fuzz: --seed takes a whole number, not '$seed'" >&2; exit 2 ;; esac

cd "$top"
bash scripts/setup.sh >/dev/null
export SPDK_PMEM_FUZZ_TARGET=$target
echo "fuzz: target $target, seed $seed, $seconds s per part"

run() { # label, test path in the integration binary, then env assignments
  local label=$1 filter=$2 log rc
  shift 2
  [ -n "$only" ] && [ "$only" != "$label" ] && return 0
  echo "== $label"
  log=$(mktemp)
  set +e
  env "$@" cargo test --locked --test integration "$filter" -- --nocapture --test-threads 1 >"$log" 2>&1
  rc=$?
  set -e
  grep -aE '^(NVMe/TCP|JSON-RPC|nvme_fuzz|fuzzed|test |methods that)|panicked' "$log" || true
  if [ $rc -ne 0 ]; then
    tail -n 60 "$log" | cut -c1-300 >&2
    echo "fuzz: $label FAILED; rerun with --seed $seed --only $label (the NVMe/TCP report is in target/tmp/)" >&2
  fi
  rm -f "$log"
  return $rc
}

status=0
run tcp nvme_tcp_hostile::fuzzing::fuzzed \
  SPDK_PMEM_FUZZ_SEED="$seed" SPDK_PMEM_FUZZ_SECONDS="$seconds" SPDK_PMEM_FUZZ_SESSIONS=1000000000 || status=1
run rpc rpc_fuzz::invalid_rpc \
  SPDK_PMEM_RPC_FUZZ_SEED="$seed" SPDK_PMEM_RPC_FUZZ_ROUNDS=$(( seconds / 2 > 8 ? seconds / 2 : 8 )) || status=1
run nvme nvme_fuzz:: \
  SPDK_PMEM_NVME_FUZZ_SECONDS="$seconds" || status=1
run auth dhchap::fuzz \
  SPDK_PMEM_AUTH_FUZZ_SEED="$seed" SPDK_PMEM_AUTH_FUZZ_SECONDS="$seconds" SPDK_PMEM_AUTH_FUZZ_SESSIONS=1000000000 || status=1
exit $status
