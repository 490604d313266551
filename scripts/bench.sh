#!/usr/bin/env bash
# Paired benchmark of the pmem bdev modules, interleaved in one run: our
# nvmf_tgt with the Rust pmem bdev (the default), our nvmf_tgt with SPDK's C
# pmem module (--pmem-module c), and SPDK's own C nvmf_tgt from the same
# build. Pools on /dev/shm and in a file on disk; randread, randwrite and a
# 70/30 mix at QD 1 and 32; IOPS, average and p99 latency (perf -L); the
# noisy-neighbour case; the targets' peak memory. Any I/O error fails it.
# Writes target/bench/{results.md,results.json,chart.svg}.
#
# usage: scripts/bench.sh [--rounds N] [--seconds S] [--only FILTERS] [--disk-dir DIR]
#   e.g. --only 'disk randwrite 32,neighbour' runs those cases alone.
#        scripts/bench.sh --rbd [--rounds N] [--seconds S]
#   RBD namespaces instead: our target with the Rust and with the C RBD module,
#   SPDK's C nvmf_tgt and `rbd bench` on one image of a one-node Ceph
#   (scripts/bench_rbd.py; target/bench/rbd.md).
#        scripts/bench.sh --cache [--rounds N] [--seconds S] [--slots N]
#   The pmem write-back cache in front of an RBD image against the uncached
#   namespace, a plain pmem namespace and `rbd bench`, with destage rates
#   (scripts/bench_cache.py; target/bench/cache.md).
#        scripts/bench.sh --metrics [--rounds N] [--seconds S]
#   What scraping --metrics every second costs, in paired runs
#   (scripts/bench_metrics.py; target/bench/metrics.md).
#        scripts/bench.sh --portable [--rounds N] [--seconds S]
#   The portable build (cargo feature `portable`: SPDK and DPDK for x86-64-v2,
#   in target/portable) against the native one, paired, QD 1 and 32
#   (scripts/bench_portable.py; target/bench/portable.md).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
case "${1:-}" in -h|--help) exec python3 scripts/bench.py --help ;; esac
bash scripts/setup.sh --release
if [ "${1:-}" = --rbd ]; then
  shift
  exec python3 scripts/bench_rbd.py "$@"
fi
if [ "${1:-}" = --metrics ]; then
  shift
  exec python3 scripts/bench_metrics.py "$@"
fi
if [ "${1:-}" = --portable ]; then
  shift
  CARGO_TARGET_DIR="$top/target/portable" cargo build --release --locked --features portable \
    --bin nvmf_tgt 2>&1 | tail -n 1
  exec python3 scripts/bench_portable.py "$@"
fi
if [ "${1:-}" = --cache ]; then
  shift
  exec python3 scripts/bench_cache.py "$@"
fi
cargo build --release --locked --example pool_fill 2>&1 | tail -n 1
exec python3 scripts/bench.py "$@"
