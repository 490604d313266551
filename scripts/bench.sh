#!/usr/bin/env bash
# Paired benchmark: our nvmf_tgt against SPDK's C nvmf_tgt from the same build,
# interleaved in one session, on the same kind of pmem bdev (a fresh pool per
# run on /dev/shm). Target on core 0, SPDK perf on core 1, 4 KiB, QD 32.
# Prints every run, then medians and ratios (ours / C) of IOPS and of the
# target's peak resident memory (VmHWM).
#
# usage: scripts/bench.sh [--rounds N] [--seconds S] [--workloads "randread randwrite"]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
rounds=3
seconds=5
workloads="randread randwrite"
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --workloads) workloads=$2; shift 2 ;;
    *) echo "bench: unknown option $1" >&2; exit 2 ;;
  esac
done

cd "$top"
[ -x target/release/nvmf_tgt ] || bash scripts/setup.sh --release >/dev/null
spdk=$(readlink -f target/spdk/current)
ours="$top/target/release/nvmf_tgt"
theirs="$spdk/build/bin/nvmf_tgt"
work=$(mktemp -d /dev/shm/spdk-pmem-bench.XXXXXX)
tgt_pid=""
cleanup() {
  [ -n "$tgt_pid" ] && kill -KILL "$tgt_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
nqn=nqn.2016-06.io.spdk:bench
port=4460
results="$work/results"
: >"$results"

one_run() { # binary label workload round
  local sock="$work/rpc.sock" pool="$work/pool"
  rm -f "$pool"
  "$1" -m 0x1 -r "$sock" -i 77 >"$work/target.log" 2>&1 &
  tgt_pid=$!
  for _ in $(seq 300); do
    [ -S "$sock" ] && python3 "$spdk/scripts/rpc.py" -s "$sock" -t 2 spdk_get_version >/dev/null 2>&1 && break
    sleep 0.1
  done
  SPDK_RPC_PY="$spdk/scripts/rpc.py" bash scripts/article-rpc.sh -s "$sock" --pool "$pool" \
    --nqn "$nqn" --port "$port" >/dev/null 2>&1
  "$spdk/build/examples/perf" -r "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$port subnqn:$nqn" \
    -q 32 -o 4096 -w "$3" -t "$seconds" -c 0x2 >"$work/perf.txt" 2>&1
  local iops hwm
  iops=$(awk '/^Total/ {print $3}' "$work/perf.txt")
  hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$tgt_pid/status")
  kill -INT "$tgt_pid"; wait "$tgt_pid" || true
  tgt_pid=""
  printf '%-6s %-10s %12s IOPS  VmHWM %8s kB\n' "$2" "$3" "$iops" "$hwm"
  echo "$2 $3 $iops $hwm $4" >>"$results"
}

for w in $workloads; do
  for r in $(seq "$rounds"); do
    # Alternate which binary goes first, so drift does not favour one.
    if [ $((r % 2)) -eq 1 ]; then
      one_run "$ours" ours "$w" "$r"; one_run "$theirs" c "$w" "$r"
    else
      one_run "$theirs" c "$w" "$r"; one_run "$ours" ours "$w" "$r"
    fi
  done
done

python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
print("\nmedians; the ratio is the median of each round's ours/C pair")
for w in sorted({r[1] for r in rows}):
    runs = {(r[0], r[4]): (float(r[2]), float(r[3])) for r in rows if r[1] == w}
    rounds = sorted({k[1] for k in runs})
    iops = {who: statistics.median(runs[(who, n)][0] for n in rounds) for who in ("ours", "c")}
    hwm = {who: statistics.median(runs[(who, n)][1] for n in rounds) for who in ("ours", "c")}
    ratio = statistics.median(runs[("ours", n)][0] / runs[("c", n)][0] for n in rounds)
    mem = statistics.median(runs[("ours", n)][1] / runs[("c", n)][1] for n in rounds)
    print("%-10s %d rounds: IOPS ours %.0f, C %.0f, ratio %.3f | VmHWM ours %.0f kB, C %.0f kB, ratio %.3f"
          % (w, len(rounds), iops["ours"], iops["c"], ratio, hwm["ours"], hwm["c"], mem))
PY
