#!/usr/bin/env python3
"""RBD namespaces, paired in one run (scripts/bench.sh --rbd builds what it
needs and calls this).

One image (256 MiB, written through once) of a one-node Ceph (an 8 GiB
OSD) that the run starts (scripts/ceph-dev.sh, in a directory of its own)
and destroys:
  rust  our nvmf_tgt with its Rust RBD module (the default);
  nap   the same with --idle-nap-us (--nap-us, 200): reactors that sleep
        while idle, so the OSD on the same CPUs gets them;
  rbdc  our nvmf_tgt with --rbd-module c: SPDK 20.07's C RBD module;
  spdk  SPDK 20.07's own C nvmf_tgt (C module);
  rbd   Ceph's own `rbd bench` on the same image, no NVMe-oF at all.
Targets on core 0 (-m 0x1), SPDK's perf on core 1 (-c 0x2), 4 KiB random
writes and reads at QD 1 and 32 (rbd bench: as many threads). Reported:
IOPS, p99 latency (perf -L), and the CPU seconds per second of wall time
that the target (or rbd bench) and the OSD used during each run, which is
what the busy-polling target and initiator take from Ceph on 2 CPUs. Then
the noisy neighbour: a /dev/shm pmem namespace on the same reactor, written
alone, while hosts connect to the RBD namespace and while it is written
too, each beside a control (see run_neighbour).
Output: target/bench/rbd.md and rbd.json.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

TOP = bench.TOP
CONFIGS = ["rust", "nap", "rbdc", "spdk"]
CASES = [(w, q) for w in ("randwrite", "randread") for q in (1, 32)]
NQN = "nqn.2016-06.io.spdk:rbdbench"
IMAGE_MIB = 256


def cpu_seconds(pid):
    """User and system CPU time of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Cluster:
    def __init__(self, work):
        self.dir = os.path.join(work, "ceph")
        self.script = os.path.join(TOP, "scripts/ceph-dev.sh")
        # 8 GiB (sparse): the runs' small writes grow BlueStore's RocksDB
        # past what a 2 GiB OSD can allocate, and the OSD aborts.
        self.run("start", "--port", str(bench.free_port()), "--osd-gib", "8")
        env = dict(l.split("=", 1) for l in self.run("env").splitlines() if "=" in l)
        self.conf, self.mon, self.key = env["CEPH_DEV_CONF"], env["CEPH_DEV_MON"], env["CEPH_DEV_KEY"]
        with open(os.path.join(self.dir, "run/ceph-osd.0.pid")) as f:
            self.osd_pid = int(f.read())

    def run(self, *args):
        out = subprocess.run(["bash", self.script, args[0], "--dir", self.dir, *args[1:]],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise bench.BenchError(f"ceph-dev.sh {' '.join(args)}: {out.stdout}{out.stderr}")
        return out.stdout

    def rbd(self, *args):
        out = subprocess.run(["rbd", "-c", self.conf, *args], capture_output=True, text=True,
                             timeout=600)
        if out.returncode != 0:
            raise bench.BenchError(f"rbd {' '.join(args)}: {out.stdout}{out.stderr}")
        return out.stdout

    def destroy(self):
        subprocess.run(["bash", self.script, "destroy", "--dir", self.dir], capture_output=True)


def run_target(config, cluster, work, shm_id, port, seconds):
    t = bench.Target(config, work, shm_id)
    results = []
    try:
        t.rpc("bdev_rbd_create", "-b", "rbd0", "--user", "admin", "--config",
              f"mon_host={cluster.mon}", "--config", f"key={cluster.key}", "rbd", "bench", "4096")
        t.rpc("nvmf_create_transport", "-t", "TCP")
        t.rpc("nvmf_create_subsystem", NQN, "-a", "-s", "BENCHRBD")
        t.rpc("nvmf_subsystem_add_ns", NQN, "rbd0")
        t.rpc("nvmf_subsystem_add_listener", NQN, "-t", "tcp", "-a", "127.0.0.1", "-s", str(port))
        for workload, qd in CASES:
            cpu0, osd0, at = cpu_seconds(t.proc.pid), cpu_seconds(cluster.osd_pid), time.time()
            r = bench.perf([(NQN, port)], workload, qd, seconds)[NQN]
            wall = time.time() - at
            r.update(workload=workload, qd=qd, config=config,
                     cpu=(cpu_seconds(t.proc.pid) - cpu0) / wall,
                     osd_cpu=(cpu_seconds(cluster.osd_pid) - osd0) / wall)
            results.append(r)
    finally:
        t.stop()
    return results


def connect_loop(nqn, port, stop):
    """SPDK's identify connecting to a subsystem again and again until
    `stop` is set: hosts connecting. Returns how many connected."""
    identify = os.path.join(bench.spdk_root(), "build/examples/identify")
    done = 0
    while not stop.is_set():
        out = subprocess.run([identify, "-r", bench.trid(nqn, port)], capture_output=True,
                             text=True, timeout=60)
        if out.returncode != 0:
            raise bench.BenchError(f"identify failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
        done += 1
    return done


def perf_beside(pmem, seconds, job):
    """The pmem namespace's randwrite QD 32 IOPS while `job(stop)` runs in
    a thread (started first, told to stop after perf); with its result."""
    stop = threading.Event()
    result = {}

    def run():
        try:
            result["job"] = job(stop)
        except Exception as e:  # noqa: BLE001 - reported after perf
            result["error"] = e
    worker = threading.Thread(target=run)
    worker.start()
    try:
        time.sleep(1)
        iops = bench.perf([pmem], "randwrite", 32, seconds)[pmem[0]]["iops"]
    finally:
        stop.set()
        worker.join()
    if "error" in result:
        raise bench.BenchError(f"beside the neighbour: {result['error']}")
    return iops, result.get("job")


def run_neighbour(config, cluster, work, shm_id, seconds):
    """A /dev/shm pmem namespace and the RBD namespace on one target (one
    reactor): the pmem one loaded alone (randwrite QD 32), then
      (b) while hosts connect to the RBD namespace (SPDK's identify in a
          loop), and, as the control, while they connect to a third
          subsystem (a /dev/shm namespace: the same work without RBD);
      (c) while the RBD namespace is written at QD 32 too (one perf for
          both), and, as the control, while `rbd bench` writes another image
          at QD 32 from outside the target (Ceph as busy, the namespace
          idle).
    On 2 CPUs the OSD's and the initiators' CPU comes out of the
    neighbour's; the controls measure that part."""
    pools = [os.path.join("/dev/shm", f"bench-rbd-neighbour.{os.getpid()}.{i}.pool")
             for i in range(2)]
    t = bench.Target(config, work, shm_id)
    ports = (bench.free_port(), bench.free_port(), bench.free_port())
    nqns = (NQN + "-shm", NQN, NQN + "-ctl")
    try:
        t.rpc("bdev_pmem_create_pool", pools[0], "64", "4096")
        t.rpc("bdev_pmem_create", "-n", "shm0", pools[0])
        t.rpc("bdev_pmem_create_pool", pools[1], "32", "4096")
        t.rpc("bdev_pmem_create", "-n", "ctl0", pools[1])
        t.rpc("bdev_rbd_create", "-b", "rbd0", "--user", "admin", "--config",
              f"mon_host={cluster.mon}", "--config", f"key={cluster.key}", "rbd", "bench", "4096")
        t.rpc("nvmf_create_transport", "-t", "TCP")
        for nqn, bdev, port in zip(nqns, ("shm0", "rbd0", "ctl0"), ports):
            t.rpc("nvmf_create_subsystem", nqn, "-a", "-s", "BENCHNB")
            t.rpc("nvmf_subsystem_add_ns", nqn, bdev)
            t.rpc("nvmf_subsystem_add_listener", nqn, "-t", "tcp", "-a", "127.0.0.1",
                  "-s", str(port))
        pmem = (nqns[0], ports[0])
        alone = bench.perf([pmem], "randwrite", 32, seconds)[nqns[0]]["iops"]
        connecting, connects = perf_beside(
            pmem, seconds, lambda stop: connect_loop(nqns[1], ports[1], stop))
        connecting_ctl, _ = perf_beside(
            pmem, seconds, lambda stop: connect_loop(nqns[2], ports[2], stop))
        both = bench.perf([pmem, (nqns[1], ports[1])], "randwrite", 32, seconds)
        beside_bench, _ = perf_beside(pmem, seconds,
                                      lambda stop: rbd_bench_until(cluster, stop))
    finally:
        t.stop()
        for pool in pools:
            if os.path.exists(pool):
                os.unlink(pool)
    loaded, rbd = both[nqns[0]]["iops"], both[nqns[1]]["iops"]
    return {"config": config, "alone": alone, "loaded": loaded, "fraction": loaded / alone,
            "rbd": rbd, "beside_rbd_bench": beside_bench / alone,
            "connecting": connecting / alone, "connecting_ctl": connecting_ctl / alone,
            "connects": connects}


def rbd_bench_until(cluster, stop):
    """rbd bench writing the image at QD 32 in short runs until `stop`."""
    while not stop.is_set():
        cluster.rbd("--rbd-cache=false", "bench", "--io-type", "write", "--io-size", "4K",
                    "--io-threads", "32", "--io-pattern", "rand", "--io-total", str(2000 * 4096),
                    "rbd/bench-ctl")


def run_rbd_bench(cluster, seconds):
    """rbd bench on the image: 4 KiB random, 1 and 32 threads, for about
    `seconds` each (sized from a short first run; rates from wall time, as
    rbd bench's own ops/sec is over whole seconds)."""
    results = []
    for workload, qd in CASES:
        io_type = "write" if workload == "randwrite" else "read"
        ops = 200
        for attempt in range(2):
            before = os.times()
            osd0, at = cpu_seconds(cluster.osd_pid), time.time()
            # librbd's cache off, as the targets have it: on (its default),
            # rbd bench's writes are acknowledged from memory.
            cluster.rbd("--rbd-cache=false", "bench", "--io-type", io_type, "--io-size", "4K",
                        "--io-threads",
                        str(qd), "--io-pattern", "rand", "--io-total", str(ops * 4096),
                        "rbd/bench")
            wall = time.time() - at
            after = os.times()
            rate = ops / wall
            if attempt == 0:
                ops = max(200, min(int(rate * seconds), 500_000))
        cpu = (after.children_user + after.children_system
               - before.children_user - before.children_system)
        results.append({"workload": workload, "qd": qd, "config": "rbd", "iops": rate,
                        "p99_us": None, "cpu": cpu / wall,
                        "osd_cpu": (cpu_seconds(cluster.osd_pid) - osd0) / wall})
    return results


def neighbour_table(nb):
    lines = ["", "A /dev/shm pmem namespace on the RBD namespace's reactor, written at QD 32: "
             "IOPS alone, then the fraction of that it kept (medians). (b) hosts connecting "
             "(identify in a loop) to the RBD subsystem, and to a /dev/shm one as the control; "
             "(c) the RBD namespace written at QD 32 by the same perf, and `rbd bench` writing "
             "another image at QD 32 from outside as the control (the OSD's CPU on 2 CPUs):", "",
             "| config | pmem alone | (b) RBD connects | (b) control | (c) RBD QD 32 "
             "| (c) control | RBD IOPS in (c) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for c in CONFIGS:
        rs = [n for n in nb if n["config"] == c]
        if rs:
            m = lambda k: statistics.median(n[k] for n in rs)
            lines.append(f"| {c} | {m('alone'):,.0f} | {m('connecting'):.2f} | "
                         f"{m('connecting_ctl'):.2f} | {m('fraction'):.2f} | "
                         f"{m('beside_rbd_bench'):.2f} | {m('rbd'):,.0f} |")
    return "\n".join(lines) + "\n"


def table(runs, meta):
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    lines = [f"RBD namespaces on a one-node Ceph, {meta['date']}, {meta['cpus']} CPUs, "
             f"{meta['rounds']} round(s) of {meta['seconds']} s; 4 KiB random; medians; "
             + ("SPDK's perf at normal priority on core 1." if meta["initiator"] == "local"
                else "SPDK's perf at idle priority (chrt --idle 0) on core 1, standing in "
                     "for an initiator on another machine."),
             "",
             "| case | config | IOPS | p99 us | target CPU/s | OSD CPU/s | vs rbd bench | vs spdk |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for workload, qd in CASES:
        case = [r for r in runs if r["workload"] == workload and r["qd"] == qd]
        base = {c: med([r for r in case if r["config"] == c], "iops")
                for c in CONFIGS + ["rbd"] if any(r["config"] == c for r in case)}
        for c in CONFIGS + ["rbd"]:
            rs = [r for r in case if r["config"] == c]
            if not rs:
                continue
            p99 = "" if rs[0]["p99_us"] is None else f"{med(rs, 'p99_us'):,.0f}"
            lines.append(f"| {workload} QD{qd} | {c} | {med(rs, 'iops'):,.0f} | {p99} | "
                         f"{med(rs, 'cpu'):.2f} | {med(rs, 'osd_cpu'):.2f} | "
                         f"{med(rs, 'iops') / base['rbd']:.2f} | "
                         + (f"{med(rs, 'iops') / base['spdk']:.2f} |" if "spdk" in base
                            else " |"))
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--out", default=os.path.join(TOP, "target/bench"))
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help="which of them to run (rbd bench always runs)")
    ap.add_argument("--nap-us", type=int, default=bench.Target.nap_us,
                    help="the nap config's --idle-nap-us")
    ap.add_argument("--initiator", choices=("local", "remote"), default="local",
                    help="remote: SPDK's perf runs at idle priority (chrt --idle), taking\n"
                         "only CPU time nothing else wants, as an initiator on another\n"
                         "machine would take none of this one's")
    ap.add_argument("--skip-neighbour", action="store_true",
                    help="only the throughput cases and rbd bench")
    a = ap.parse_args()
    bench.Target.nap_us = a.nap_us
    if a.initiator == "remote":
        bench.PERF_WRAP[:] = ["chrt", "--idle", "0"]
    CONFIGS[:] = [c for c in CONFIGS if c in a.configs.split(",")]
    os.makedirs(a.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="spdk-pmem-bench-rbd.", dir="/var/tmp")
    cluster = None
    runs, neighbours = [], []
    shm_id = 90 + os.getpid() % 9
    try:
        cluster = Cluster(work)
        cluster.rbd("create", "rbd/bench", "--size", f"{IMAGE_MIB}M")
        # The neighbour's control writes its own image: on the namespace's
        # one, rbd bench and the target would pass its exclusive lock back
        # and forth.
        cluster.rbd("create", "rbd/bench-ctl", "--size", f"{IMAGE_MIB}M")
        # Written through once, so reads read data, not holes.
        cluster.rbd("bench", "--io-type", "write", "--io-pattern", "seq", "--io-size", "4M",
                    "--io-threads", "4", "--io-total", f"{IMAGE_MIB}M", "rbd/bench")
        for rnd in range(a.rounds):
            order = CONFIGS[rnd % len(CONFIGS):] + CONFIGS[:rnd % len(CONFIGS)]
            for config in order:
                for r in run_target(config, cluster, work, shm_id, bench.free_port(), a.seconds):
                    r["round"] = rnd
                    runs.append(r)
                    print(f"round {rnd + 1} {r['workload']:9} QD{r['qd']:<2} {config:4} "
                          f"{r['iops']:>10,.0f} IOPS  p99 {r['p99_us']:>9.0f} us  "
                          f"target {r['cpu']:.2f} CPU/s  OSD {r['osd_cpu']:.2f} CPU/s", flush=True)
            for config in ([] if a.skip_neighbour else order):
                n = run_neighbour(config, cluster, work, shm_id, a.seconds)
                n["round"] = rnd
                neighbours.append(n)
                print(f"round {rnd + 1} neighbour {config:4} alone {n['alone']:>10,.0f}  "
                      f"(b) {n['connecting']:.2f} ctl {n['connecting_ctl']:.2f} "
                      f"({n['connects']} connects)  (c) {n['fraction']:.2f} "
                      f"ctl {n['beside_rbd_bench']:.2f} (RBD {n['rbd']:,.0f})", flush=True)
            for r in run_rbd_bench(cluster, a.seconds):
                r["round"] = rnd
                runs.append(r)
                print(f"round {rnd + 1} {r['workload']:9} QD{r['qd']:<2} rbd  "
                      f"{r['iops']:>10,.0f} IOPS  rbd bench {r['cpu']:.2f} CPU/s  "
                      f"OSD {r['osd_cpu']:.2f} CPU/s", flush=True)
    except bench.BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        if cluster:
            health = subprocess.run(["ceph", "-c", cluster.conf, "--connect-timeout", "10",
                                     "health", "detail"], capture_output=True, text=True)
            print(f"ceph health detail: {health.stdout}{health.stderr}", file=sys.stderr)
        return 1
    finally:
        if cluster:
            cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)
    meta = {"rounds": a.rounds, "seconds": a.seconds, "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d"), "initiator": a.initiator}
    text = table(runs, meta) + (neighbour_table(neighbours) if neighbours else "")
    print("\n" + text)
    with open(os.path.join(a.out, "rbd.md"), "w") as f:
        f.write(text)
    with open(os.path.join(a.out, "rbd.json"), "w") as f:
        json.dump({"meta": meta, "runs": runs, "neighbours": neighbours}, f, indent=1)
    print(f"written: {a.out}/rbd.md, rbd.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
