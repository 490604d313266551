#!/usr/bin/env python3
"""What scraping the metrics endpoint costs (scripts/bench.sh --metrics
builds what it needs and calls this).

Our nvmf_tgt (core 0) with --metrics, a /dev/shm pmem namespace, SPDK's perf
on core 1: 4 KiB random reads and writes at QD 32, alternately with no
scraper and with one that GETs /metrics every second (as a Prometheus
would), in paired rounds (the order rotating). Reported: each pair's IOPS
ratio (scraped / not), and the reactor's busy share during each run, from
the endpoint's own reactor_seconds_total read before and after it.
Output: target/bench/metrics.md and metrics.json.
"""

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

NQN = "nqn.2016-06.io.spdk:metricsbench"


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def reactor_seconds(port):
    busy = idle = 0.0
    for line in scrape(port).splitlines():
        if line.startswith("spdk_pmem_reactor_seconds_total{"):
            value = float(line.rsplit(" ", 1)[1])
            if 'mode="busy"' in line:
                busy += value
            else:
                idle += value
    return busy, idle


def run(port, metrics_port, workload, seconds, scraped):
    stop = threading.Event()
    scrapes = []

    def scraper():
        while not stop.wait(1.0):
            at = time.time()
            scrape(metrics_port)
            scrapes.append(time.time() - at)
    b0, i0 = reactor_seconds(metrics_port)
    worker = threading.Thread(target=scraper) if scraped else None
    if worker:
        worker.start()
    try:
        r = bench.perf([(NQN, port)], workload, 32, seconds)[NQN]
    finally:
        stop.set()
        if worker:
            worker.join()
    b1, i1 = reactor_seconds(metrics_port)
    r.update(workload=workload, scraped=scraped, busy_share=(b1 - b0) / max((b1 - b0) + (i1 - i0), 1e-9),
             scrapes=len(scrapes), scrape_s=max(scrapes, default=0.0))
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(bench.TOP, "target/bench"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="spdk-pmem-bench-metrics.", dir="/var/tmp")
    pool = os.path.join("/dev/shm", f"bench-metrics.{os.getpid()}.pool")
    port, metrics_port = bench.free_port(), bench.free_port()
    bench.Target.rust_args = ["--metrics", f"127.0.0.1:{metrics_port}"]
    runs = []
    t = bench.Target("rust", work, 70 + os.getpid() % 9)
    try:
        t.rpc("bdev_pmem_create_pool", pool, "256", "4096")
        t.rpc("bdev_pmem_create", "-n", "ns0", pool)
        t.rpc("nvmf_create_transport", "-t", "TCP")
        t.rpc("nvmf_create_subsystem", NQN, "-a", "-s", "BENCHMETRICS")
        t.rpc("nvmf_subsystem_add_ns", NQN, "ns0")
        t.rpc("nvmf_subsystem_add_listener", NQN, "-t", "tcp", "-a", "127.0.0.1", "-s", str(port))
        # Written through once, so reads read data.
        bench.perf([(NQN, port)], "randwrite", 32, 2)
        for rnd in range(a.rounds):
            for workload in ("randread", "randwrite"):
                order = (False, True) if rnd % 2 == 0 else (True, False)
                for scraped in order:
                    r = run(port, metrics_port, workload, a.seconds, scraped)
                    r["round"] = rnd
                    runs.append(r)
                    print(f"round {rnd + 1} {workload:9} {'scraped' if scraped else 'quiet':7} "
                          f"{r['iops']:>10,.0f} IOPS  reactor busy {r['busy_share']:.3f}  "
                          f"{r['scrapes']} scrapes (slowest {r['scrape_s'] * 1000:.1f} ms)",
                          flush=True)
    except bench.BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    finally:
        t.stop()
        if os.path.exists(pool):
            os.unlink(pool)
    lines = [f"Scraping /metrics every second, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, "
             f"{a.rounds} paired round(s) of {a.seconds} s, QD 32, 4 KiB, /dev/shm pmem namespace.",
             "", "| workload | IOPS quiet | IOPS scraped | ratio (min-max) | reactor busy quiet | "
             "reactor busy scraped | slowest scrape |", "|---|---:|---:|---:|---:|---:|---:|"]
    for workload in ("randread", "randwrite"):
        quiet = [r for r in runs if r["workload"] == workload and not r["scraped"]]
        loud = [r for r in runs if r["workload"] == workload and r["scraped"]]
        med = lambda rs, k: statistics.median(r[k] for r in rs)
        lines.append(f"| {workload} | {med(quiet, 'iops'):,.0f} | {med(loud, 'iops'):,.0f} | "
                     f"{bench.paired_ratio(quiet, loud)} | "
                     f"{med(quiet, 'busy_share'):.3f} | {med(loud, 'busy_share'):.3f} | "
                     f"{max(r['scrape_s'] for r in loud) * 1000:.1f} ms |")
    bench.write_report(a.out, "metrics", "\n".join(lines) + "\n", runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
