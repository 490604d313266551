#!/usr/bin/env python3
"""The pmem write-back cache in front of an RBD image, paired in one run
(scripts/bench.sh --cache builds what it needs and calls this).

One image (256 MiB, written through once) of a one-node Ceph (an 8 GiB
OSD) that the run starts (scripts/ceph-dev.sh, in a directory of its own)
and destroys. Each case on a fresh target of ours (core 0; SPDK's perf on
core 1; 4 KiB random, QD 1 and 32):
  pmem    a plain /dev/shm pmem namespace (the Rust pmem bdev): the latency
          a write acknowledged from the pool cannot beat;
  rbd     the RBD namespace, uncached (the Rust RBD module);
  cached  the RBD image behind the write-back cache, on a /dev/shm pool
          large enough to absorb the run (--slots);
  full    the same on the smallest pool libpmemblk makes (3,587
          slots), filled before the run: writes wait for destaging, so this
          is the rate Ceph sustains behind the cache (writes only);
  local   the cache in front of a /dev/shm pmem bdev instead of Ceph (not
          run unless --configs names it): its own cost, with destaging
          that keeps up and no Ceph threads on the CPUs (writes only);
  rbd bench  Ceph's own client on the same image, no NVMe-oF at all.
For the caches also: the destage rate during the run and in the 3 s after
it, and the dirty blocks left. The cached pools are thrown away after each
case (deleted before a clean stop: the benchmark's data need not reach Ceph).
--nap-us N gives our targets --idle-nap-us N: on 2 CPUs a polling target
and SPDK's polling perf leave the OSD, and so destaging, little CPU.
Output: target/bench/cache.md and cache.json.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import bench_rbd  # noqa: E402

TOP = bench.TOP
CONFIGS = ["pmem", "rbd", "cached", "full", "local"]
CASES = bench_rbd.CASES
NQN = "nqn.2016-06.io.spdk:cachebench"
IMAGE_MIB = 256
AFTER_S = 3


def jsonrpc(sock, method, params):
    """One JSON-RPC call that 20.07's rpc.py does not know; its result."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(120)
        s.connect(sock)
        s.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                              "params": params}).encode())
        buf, dec = b"", json.JSONDecoder()
        while True:
            chunk = s.recv(65536)
            if not chunk:
                raise bench.BenchError(f"{method}: the target closed the socket")
            buf += chunk
            try:
                reply, _ = dec.raw_decode(buf.decode())
                break
            except ValueError:
                continue
    if "error" in reply:
        raise bench.BenchError(f"{method} {params}: {reply['error']['message']}")
    return reply["result"]


def cache_figures(t):
    out = t.rpc("bdev_get_bdevs", "-b", "wb0")
    return json.loads(out)[0]["driver_specific"]["pmem_wb"]


def serve(t, config, cluster, pool, slots, port):
    """Sets up namespace 1 of NQN for `config` on target `t`."""
    if config == "pmem":
        t.rpc("bdev_pmem_create_pool", pool, str(IMAGE_MIB), "4096")
        t.rpc("bdev_pmem_create", "-n", "ns0", pool)
        bdev = "ns0"
    elif config == "local":
        t.rpc("bdev_pmem_create_pool", pool + ".base", str(IMAGE_MIB), "4096")
        t.rpc("bdev_pmem_create", "-n", "base0", pool + ".base")
        jsonrpc(t.sock, "bdev_pmem_cache_create",
                {"name": "wb0", "base_bdev": "base0", "pool": pool, "slots": slots})
        bdev = "wb0"
    else:
        t.rpc("bdev_rbd_create", "-b", "rbd0", "--user", "admin", "--config",
              f"mon_host={cluster.mon}", "--config", f"key={cluster.key}", "rbd", "bench", "4096")
        bdev = "rbd0"
        if config in ("cached", "full"):
            at = time.time()
            jsonrpc(t.sock, "bdev_pmem_cache_create",
                    {"name": "wb0", "base_bdev": "rbd0", "pool": pool,
                     "slots": slots if config == "cached" else 1})
            print(f"  cache pool of {cache_figures(t)['slots']:,} slots made in "
                  f"{time.time() - at:.1f} s", flush=True)
            bdev = "wb0"
    t.rpc("nvmf_create_transport", "-t", "TCP")
    t.rpc("nvmf_create_subsystem", NQN, "-a", "-s", "BENCHWB")
    t.rpc("nvmf_subsystem_add_ns", NQN, bdev)
    t.rpc("nvmf_subsystem_add_listener", NQN, "-t", "tcp", "-a", "127.0.0.1", "-s", str(port))


def run_case(config, cluster, work, shm_id, workload, qd, seconds, slots):
    port = bench.free_port()
    pool = os.path.join("/dev/shm", f"bench-cache.{os.getpid()}.pool")
    t = bench.Target("rust", work, shm_id)
    try:
        serve(t, config, cluster, pool, slots, port)
        cached = config in ("cached", "full", "local")
        if config == "full":
            # Fill it: from here on every write waits for one to be destaged.
            bench.perf([(NQN, port)], "randwrite", 32, 2)
        before = cache_figures(t) if cached else None
        at = time.time()
        r = bench.perf([(NQN, port)], workload, qd, seconds)[NQN]
        wall = time.time() - at
        r.update(workload=workload, qd=qd, config=config)
        if cached:
            during = cache_figures(t)
            time.sleep(AFTER_S)
            after = cache_figures(t)
            r.update(destage_during=(during["destaged_writes"] - before["destaged_writes"]) / wall,
                     destage_after=(after["destaged_writes"] - during["destaged_writes"]) / AFTER_S,
                     dirty=during["dirty_blocks"], slots=during["slots"],
                     destage_failures=after["destage_failures"])
    finally:
        # The cache's data need not reach Ceph: deleted first, it is not
        # drained at the stop. The stop is clean (a killed target would
        # hold the image's exclusive lock until Ceph gives up on it).
        if config in ("cached", "full", "local") and t.proc.poll() is None:
            try:
                jsonrpc(t.sock, "bdev_pmem_cache_delete", {"name": "wb0"})
            except (bench.BenchError, OSError) as e:
                print(f"  deleting the cache: {e}", file=sys.stderr)
        t.stop()
        for p in (pool, pool + ".base"):
            if os.path.exists(p):
                os.unlink(p)
    return r


def table(runs, meta):
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    lines = [f"The pmem write-back cache in front of an RBD image of a one-node Ceph, "
             f"{meta['date']}, {meta['cpus']} CPUs, {meta['rounds']} round(s) of "
             f"{meta['seconds']} s; our targets {meta['target']}; 4 KiB random; medians. "
             f"`cached`: a pool of "
             f"{meta['slots']:,} slots; `full`: the smallest pool, full before the run.",
             "",
             "| case | config | IOPS | avg us | p99 us | vs rbd | vs rbd bench "
             "| destaged/s during | destaged/s after | dirty at the end |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for workload, qd in CASES:
        case = [r for r in runs if r["workload"] == workload and r["qd"] == qd]
        base = {c: med([r for r in case if r["config"] == c], "iops")
                for c in CONFIGS + ["rbd bench"] if any(r["config"] == c for r in case)}
        for c in CONFIGS + ["rbd bench"]:
            rs = [r for r in case if r["config"] == c]
            if not rs:
                continue
            cells = [f"{workload} QD{qd}", c, f"{med(rs, 'iops'):,.0f}"]
            cells += (["", ""] if rs[0].get("avg_us") is None
                      else [f"{med(rs, 'avg_us'):,.0f}", f"{med(rs, 'p99_us'):,.0f}"])
            cells += [f"{med(rs, 'iops') / base[b]:.2f}" if b in base else ""
                      for b in ("rbd", "rbd bench")]
            cells += ([f"{med(rs, k):,.0f}" for k in ("destage_during", "destage_after", "dirty")]
                      if "destage_during" in rs[0] else ["", "", ""])
            lines.append("| " + " | ".join(cells) + " |")
    ratio = lambda c, w, q, k: statistics.median(
        r[k] for r in runs if r["config"] == c and r["workload"] == w and r["qd"] == q)
    have = {r["config"] for r in runs}
    lines.append("")
    if {"cached", "rbd"} <= have:
        lines.append(f"- cached randwrite QD 32 / uncached: "
                     f"{ratio('cached', 'randwrite', 32, 'iops') / ratio('rbd', 'randwrite', 32, 'iops'):.1f}x "
                     f"(target: 5x)")
    if {"cached", "pmem"} <= have:
        avg = ratio('cached', 'randwrite', 1, 'avg_us') / ratio('pmem', 'randwrite', 1, 'avg_us')
        p99 = ratio('cached', 'randwrite', 1, 'p99_us') / ratio('pmem', 'randwrite', 1, 'p99_us')
        lines.append(f"- cached QD 1 write latency / plain pmem namespace's: avg {avg:.2f}x, "
                     f"p99 {p99:.2f}x (target: within 2x)")
    if {"local", "pmem"} <= have:
        avg = ratio('local', 'randwrite', 1, 'avg_us') / ratio('pmem', 'randwrite', 1, 'avg_us')
        p99 = ratio('local', 'randwrite', 1, 'p99_us') / ratio('pmem', 'randwrite', 1, 'p99_us')
        lines.append(f"- the cache in front of a pmem bdev (no Ceph on the CPUs), QD 1 write "
                     f"latency / plain pmem namespace's: avg {avg:.2f}x, p99 {p99:.2f}x")
    if "full" in have:
        lines.append(f"- what Ceph sustains behind a full cache (randwrite QD 32): "
                     f"{ratio('full', 'randwrite', 32, 'iops'):,.0f} writes/s")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--slots", type=int, default=1 << 20,
                    help="the cached config's pool (slots of 4 KiB; 2^20 = 4 GiB)")
    ap.add_argument("--configs", default=",".join(c for c in CONFIGS if c != "local"),
                    help="which of them to run (rbd bench always runs)")
    ap.add_argument("--nap-us", type=int, default=0,
                    help="our targets' --idle-nap-us (0: they poll, as SPDK does)")
    ap.add_argument("--out", default=os.path.join(TOP, "target/bench"))
    a = ap.parse_args()
    CONFIGS[:] = [c for c in CONFIGS if c in a.configs.split(",")]
    bench.Target.rust_args = ["--idle-nap-us", str(a.nap_us)] if a.nap_us else []
    os.makedirs(a.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="spdk-pmem-bench-cache.", dir="/var/tmp")
    cluster = None
    runs = []
    shm_id = 80 + os.getpid() % 9
    try:
        cluster = bench_rbd.Cluster(work)
        cluster.rbd("create", "rbd/bench", "--size", f"{IMAGE_MIB}M")
        # Written through once, so reads read data, not holes.
        cluster.rbd("bench", "--io-type", "write", "--io-pattern", "seq", "--io-size", "4M",
                    "--io-threads", "4", "--io-total", f"{IMAGE_MIB}M", "rbd/bench")
        for rnd in range(a.rounds):
            order = CONFIGS[rnd % len(CONFIGS):] + CONFIGS[:rnd % len(CONFIGS)]
            for config in order:
                for workload, qd in CASES:
                    if config in ("full", "local") and workload != "randwrite":
                        continue
                    r = run_case(config, cluster, work, shm_id, workload, qd, a.seconds,
                                 a.slots)
                    r["round"] = rnd
                    runs.append(r)
                    extra = (f"  destaged {r['destage_during']:,.0f}/s, after "
                             f"{r['destage_after']:,.0f}/s, dirty {r['dirty']:,}"
                             if "destage_during" in r else "")
                    print(f"round {rnd + 1} {workload:9} QD{qd:<2} {config:6} "
                          f"{r['iops']:>10,.0f} IOPS  avg {r['avg_us']:>8.0f} us  "
                          f"p99 {r['p99_us']:>8.0f} us{extra}", flush=True)
            for r in bench_rbd.run_rbd_bench(cluster, a.seconds):
                r.update(round=rnd, config="rbd bench", avg_us=None)
                runs.append(r)
                print(f"round {rnd + 1} {r['workload']:9} QD{r['qd']:<2} rbd bench "
                      f"{r['iops']:>10,.0f} IOPS", flush=True)
    except bench.BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    finally:
        if cluster:
            cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)
    meta = {"rounds": a.rounds, "seconds": a.seconds, "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d"), "slots": a.slots,
            "target": f"napping {a.nap_us} us" if a.nap_us else "polling"}
    text = table(runs, meta)
    print("\n" + text)
    with open(os.path.join(a.out, "cache.md"), "w") as f:
        f.write(text)
    with open(os.path.join(a.out, "cache.json"), "w") as f:
        json.dump({"meta": meta, "runs": runs}, f, indent=1)
    print(f"written: {a.out}/cache.md, cache.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
