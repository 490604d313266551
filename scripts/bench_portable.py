#!/usr/bin/env python3
"""What the portable build costs (scripts/bench.sh --portable builds both
and calls this).

Our nvmf_tgt built natively (SPDK and DPDK with -march=native, the default)
and built with the `portable` feature (-march=x86-64-v2, for other machines
and QEMU's TCG guests), one at a time on core 0, each serving a /dev/shm
pmem namespace over TCP to SPDK's perf (the native build's) on core 1: 4 KiB
random reads and writes at QD 1 and 32, in paired rounds (the order rotating
each round). Reported: each case's median IOPS and p99 latency for both, and
the median of the per-round ratios (portable / native) with their range.
Output: target/bench/portable.md and portable.json.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

NQN = "nqn.2016-06.io.spdk:portablebench"
BUILDS = {
    "native": os.path.join(bench.TOP, "target/release/nvmf_tgt"),
    "portable": os.path.join(bench.TOP, "target/portable/release/nvmf_tgt"),
}
CASES = [(w, qd) for w in ("randread", "randwrite") for qd in (1, 32)]


def run(build, pool, workload, qd, seconds, port):
    work = tempfile.mkdtemp(prefix="bench-portable.", dir="/dev/shm")
    t = None
    try:
        t = bench.Target("rust", work, 60 + os.getpid() % 9, binary=BUILDS[build])
        t.serve(pool, "ns0", NQN, port)
        r = bench.perf([(NQN, port)], workload, qd, seconds)[NQN]
        r.update(build=build, workload=workload, qd=qd)
        return r
    finally:
        if t:
            t.stop()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(bench.TOP, "target/bench"))
    a = ap.parse_args()
    for build, path in BUILDS.items():
        if not os.access(path, os.X_OK):
            print(f"bench: {path} missing: scripts/bench.sh --portable builds it", file=sys.stderr)
            return 1
    os.makedirs(a.out, exist_ok=True)
    pool = os.path.join("/dev/shm", f"bench-portable.{os.getpid()}.pool")
    port = bench.free_port()
    runs = []
    try:
        # One pool, written through once so that reads read data; each run
        # opens it again.
        work = tempfile.mkdtemp(prefix="bench-portable.", dir="/dev/shm")
        t = bench.Target("rust", work, 59, binary=BUILDS["native"])
        try:
            t.rpc("bdev_pmem_create_pool", pool, "256", "4096")
            t.rpc("bdev_pmem_create", "-n", "ns0", pool)
            t.rpc("nvmf_create_transport", "-t", "TCP")
            t.rpc("nvmf_create_subsystem", NQN, "-a", "-s", "BENCHPORTABLE")
            t.rpc("nvmf_subsystem_add_ns", NQN, "ns0")
            t.rpc("nvmf_subsystem_add_listener", NQN, "-t", "tcp", "-a", "127.0.0.1", "-s", str(port))
            bench.perf([(NQN, port)], "randwrite", 32, 3)
        finally:
            t.stop()
            shutil.rmtree(work, ignore_errors=True)
        for rnd in range(a.rounds):
            for workload, qd in CASES:
                order = ("native", "portable") if rnd % 2 == 0 else ("portable", "native")
                for build in order:
                    r = run(build, pool, workload, qd, a.seconds, port)
                    r["round"] = rnd
                    runs.append(r)
                    print(f"round {rnd + 1} {workload:9} QD {qd:2} {build:8} {r['iops']:>10,.0f} IOPS  "
                          f"p99 {r['p99_us']:.1f} us", flush=True)
    except bench.BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    finally:
        if os.path.exists(pool):
            os.unlink(pool)
    lines = [f"Portable (x86-64-v2) against native SPDK and DPDK, {time.strftime('%Y-%m-%d')}, "
             f"{os.cpu_count()} CPUs, {a.rounds} paired round(s) of {a.seconds} s, 4 KiB, "
             "/dev/shm pmem namespace over TCP, SPDK's perf (native) on core 1.",
             "", "| workload | QD | IOPS native | IOPS portable | ratio (min-max) | p99 native | p99 portable |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for workload, qd in CASES:
        mine = [r for r in runs if (r["workload"], r["qd"]) == (workload, qd)]
        native = sorted((r for r in mine if r["build"] == "native"), key=lambda r: r["round"])
        portable = sorted((r for r in mine if r["build"] == "portable"), key=lambda r: r["round"])
        med = lambda rs, k: statistics.median(r[k] for r in rs)
        lines.append(f"| {workload} | {qd} | {med(native, 'iops'):,.0f} | {med(portable, 'iops'):,.0f} | "
                     f"{bench.paired_ratio(native, portable)} | "
                     f"{med(native, 'p99_us'):.1f} us | {med(portable, 'p99_us'):.1f} us |")
    bench.write_report(a.out, "portable", "\n".join(lines) + "\n", runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
