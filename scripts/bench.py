#!/usr/bin/env python3
"""Paired, interleaved benchmark of the pmem bdev modules (scripts/bench.sh
builds what it needs and calls this).

Three targets serve the same pool over NVMe/TCP on 127.0.0.1, one at a
time, in an order that rotates every round:
  rust  our nvmf_tgt with its default, the Rust pmem bdev;
  cmod  our nvmf_tgt with --pmem-module c: SPDK 20.07's C pmem module;
  spdk  SPDK 20.07's own C nvmf_tgt from the same build (C module).
Target on core 0 (-m 0x1), SPDK's perf on core 1 (-c 0x2), 4 KiB I/O.

Cases: pool on /dev/shm and in a file on disk (/var/tmp); randread,
randwrite and a 70/30 random mix; QD 1 and 32; each run starts from a copy
of a pool whose every block was written. Then the noisy neighbour: one
target serves a /dev/shm pool and a disk pool on the same core; the
/dev/shm namespace is loaded alone, then while the disk one is loaded the
same way too, and its IOPS under load are reported as a fraction of its
IOPS alone: randwrite, and the 70/30 mix, both at QD 32.

A run with any I/O error (perf "completed with error", an *ERROR* line, no
Total line) fails the benchmark. Output: every run as it happens, then the
medians and per-round ratios (median, min-max) as a table, written with a
chart to the --out directory (results.md, results.json, chart.svg).
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ["rust", "cmod", "spdk"]
WORKLOADS = {"randread": [], "randwrite": [], "mix70": ["-M", "70"]}
PERF_WORKLOAD = {"randread": "randread", "randwrite": "randwrite", "mix70": "randrw"}
NEIGHBOUR_WORKLOADS = ["randwrite", "mix70"]
POOL_BLOCKS = 8192
NQN = "nqn.2016-06.io.spdk:bench"
# What perf runs under: [] as is, or ["chrt", "--idle", "0"] to stand in for
# an initiator on another machine (it runs only on CPU time nothing else
# wants, so it no longer takes CPU from the target or a local Ceph).
PERF_WRAP = []


class BenchError(Exception):
    pass


def spdk_root():
    return os.path.realpath(os.path.join(TOP, "target/spdk/current"))


def binaries():
    spdk = spdk_root()
    return {
        "ours": os.path.join(TOP, "target/release/nvmf_tgt"),
        "theirs": os.path.join(spdk, "build/bin/nvmf_tgt"),
        "perf": os.path.join(spdk, "build/examples/perf"),
        "rpc": os.path.join(spdk, "scripts/rpc.py"),
        "fill": os.path.join(TOP, "target/release/examples/pool_fill"),
    }


class Target:
    """One target process with its RPC socket, stopped with SIGINT."""

    rust_args = []
    # "nap": ours with reactors that sleep after this many idle microseconds.
    nap_us = 50

    def __init__(self, config, work, shm_id, binary=None):
        b = binaries()
        self.rpc_py = b["rpc"]
        self.sock = os.path.join(work, "rpc.sock")
        self.log = os.path.join(work, "target.log")
        binary = binary or (b["theirs"] if config == "spdk" else b["ours"])
        args = [binary, "-m", "0x1", "-r", self.sock, "-i", str(shm_id)]
        if config == "cmod":
            args += ["--pmem-module", "c"]
        if config == "rbdc":
            args += ["--rbd-module", "c"]
        if config == "rust":
            args += Target.rust_args
        if config == "nap":
            args += ["--idle-nap-us", str(Target.nap_us)]
        self.shm_id = shm_id
        self.proc = subprocess.Popen(args, stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            if os.path.exists(self.sock) and self.rpc("spdk_get_version", check=False) is not None:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise BenchError(f"{config} target did not start:\n{open(self.log).read()[-2000:]}")

    def rpc(self, *args, check=True):
        out = subprocess.run(["python3", self.rpc_py, "-s", self.sock, "-t", "30", *args],
                             capture_output=True, text=True)
        if out.returncode != 0:
            if check:
                raise BenchError(f"rpc.py {' '.join(args)}: {out.stdout}{out.stderr}")
            return None
        return out.stdout

    def serve(self, pool, bdev, nqn, port, transport=True):
        self.rpc("bdev_pmem_create", "-n", bdev, pool)
        if transport:
            self.rpc("nvmf_create_transport", "-t", "TCP")
        self.rpc("nvmf_create_subsystem", nqn, "-a", "-s", "BENCH0001")
        self.rpc("nvmf_subsystem_add_ns", nqn, bdev)
        self.rpc("nvmf_subsystem_add_listener", nqn, "-t", "tcp", "-a", "127.0.0.1",
                 "-s", str(port))

    def peak_kib(self):
        """The target's peak resident memory (VmHWM), in KiB."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for leftover in [f"/dev/shm/nvmf_trace.{self.shm_id}"]:
            if os.path.exists(leftover):
                os.unlink(leftover)
        shutil.rmtree(f"/var/run/dpdk/spdk{self.shm_id}", ignore_errors=True)


def trid(nqn, port):
    return f"trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{port} subnqn:{nqn}"


def perf(targets, workload, qd, seconds):
    """Runs perf against each (nqn, port); returns per-subsystem results."""
    args = [*PERF_WRAP, binaries()["perf"]]
    for nqn, port in targets:
        args += ["-r", trid(nqn, port)]
    args += ["-q", str(qd), "-o", "4096", "-w", PERF_WORKLOAD[workload], *WORKLOADS[workload],
             "-t", str(seconds), "-c", "0x2", "-L"]
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 120)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"perf did not finish a {seconds} s run in {seconds + 120} s: "
                         f"{' '.join(args)}") from e
    text = out.stdout + out.stderr
    for bad in ["completed with error", "*ERROR*", "errors occured"]:
        if bad in text:
            raise BenchError(f"perf reported an I/O error ({bad!r}):\n{text[-3000:]}")
    if out.returncode != 0:
        raise BenchError(f"perf exited {out.returncode}:\n{text[-3000:]}")
    # perf prints one result line and, with -L, one latency summary per
    # namespace, both in the same order (the summary's title is cut short).
    lines = [l for l in text.splitlines() if "NSID" in l and "from core" in l]
    p99s = p99_in_order(text)
    if len(p99s) != len(lines):
        raise BenchError(f"{len(lines)} result lines but {len(p99s)} latency summaries:\n"
                         f"{text[-3000:]}")
    results = {}
    for nqn, _ in targets:
        index = next((i for i, l in enumerate(lines) if f"subnqn:{nqn})" in l), None)
        if index is None:
            raise BenchError(f"no result line for {nqn}:\n{text[-3000:]}")
        cols = [float(c) for c in lines[index].split(":")[-1].split()]
        iops, avg_us = cols[0], cols[2]
        if iops <= 0:
            raise BenchError(f"no I/O completed on {nqn}:\n{text[-3000:]}")
        results[nqn] = {"iops": iops, "avg_us": avg_us, "p99_us": p99s[index]}
    return results


def p99_in_order(text):
    """The 99th percentiles of perf -L's latency summaries, in order."""
    found = []
    for l in text.splitlines():
        m = re.match(r"\s*99\.00000%\s*:\s*([\d.]+)us", l)
        if m:
            found.append(float(m.group(1)))
    return found


def fresh_pool(template, directory, name):
    path = os.path.join(directory, name)
    shutil.copyfile(template, path)
    return path


def run_case(config, pool_dir, template, workload, qd, seconds, shm_id, port):
    work = tempfile.mkdtemp(prefix="bench-run.", dir="/dev/shm")
    pool = fresh_pool(template, pool_dir, f"bench-pool.{os.getpid()}")
    target = None
    try:
        target = Target(config, work, shm_id)
        target.serve(pool, "pmdk0", NQN, port)
        result = perf([(NQN, port)], workload, qd, seconds)[NQN]
        result["vmhwm_kib"] = target.peak_kib()
        return result
    finally:
        if target:
            target.stop()
        os.unlink(pool)
        shutil.rmtree(work, ignore_errors=True)


def run_neighbours(config, templates, workload, seconds, shm_id, port):
    """IOPS of the /dev/shm namespace alone, then while the disk one is loaded."""
    work = tempfile.mkdtemp(prefix="bench-run.", dir="/dev/shm")
    shm_pool = fresh_pool(templates["shm"], work, "shm.pool")
    disk_pool = fresh_pool(templates["disk"], os.path.dirname(templates["disk"]),
                           f"bench-neighbour.{os.getpid()}")
    target = None
    quiet, busy = NQN + "-shm", NQN + "-disk"
    try:
        target = Target(config, work, shm_id)
        target.serve(shm_pool, "shm0", quiet, port)
        target.serve(disk_pool, "disk0", busy, port + 1, transport=False)
        alone = perf([(quiet, port)], workload, 32, seconds)[quiet]
        both = perf([(quiet, port), (busy, port + 1)], workload, 32, seconds)
        return {"alone": alone["iops"], "loaded": both[quiet]["iops"],
                "disk": both[busy]["iops"], "fraction": both[quiet]["iops"] / alone["iops"]}
    finally:
        if target:
            target.stop()
        os.unlink(disk_pool)
        shutil.rmtree(work, ignore_errors=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spread(values):
    return f"{min(values):.2f}-{max(values):.2f}"


def paired_ratio(base, other, key="iops"):
    """The per-round ratios other/base of paired runs, as a table cell:
    their median in bold and their range."""
    ratios = [o[key] / b[key] for b, o in zip(base, other)]
    return f"**{statistics.median(ratios):.3f}** ({min(ratios):.3f}-{max(ratios):.3f})"


def write_report(out, name, text, runs):
    """Prints the report and keeps it as out/NAME.md, the runs as out/NAME.json."""
    print("\n" + text)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(runs, f, indent=1)


def summarise(runs, neighbours):
    """Medians per case and config, and per-round ratios."""
    rows = []
    cases = sorted({(r["pool"], r["workload"], r["qd"]) for r in runs},
                   key=lambda c: (c[0] != "shm", list(WORKLOADS).index(c[1]), c[2]))
    for pool, workload, qd in cases:
        mine = [r for r in runs if (r["pool"], r["workload"], r["qd"]) == (pool, workload, qd)]
        row = {"pool": pool, "workload": workload, "qd": qd}
        for c in CONFIGS:
            got = [r for r in mine if r["config"] == c]
            for k in ("iops", "avg_us", "p99_us"):
                row[f"{c}_{k}"] = statistics.median(r[k] for r in got)
        for other in ("cmod", "spdk"):
            ratios = []
            for rnd in sorted({r["round"] for r in mine}):
                a = [r["iops"] for r in mine if r["round"] == rnd and r["config"] == "rust"]
                b = [r["iops"] for r in mine if r["round"] == rnd and r["config"] == other]
                if a and b:
                    ratios.append(a[0] / b[0])
            row[f"rust/{other}"] = statistics.median(ratios)
            row[f"rust/{other}_spread"] = spread(ratios)
        rows.append(row)
    memory = {c: statistics.median(r["vmhwm_kib"] for r in runs if r["config"] == c)
              for c in CONFIGS if any(r["config"] == c for r in runs)}
    nb = {}
    for w in NEIGHBOUR_WORKLOADS:
        for c in CONFIGS:
            got = [n for n in neighbours if n["config"] == c and n["workload"] == w]
            if got:
                nb[(w, c)] = {k: statistics.median(n[k] for n in got)
                              for k in ("alone", "loaded", "disk", "fraction")}
                nb[(w, c)]["fraction_spread"] = spread([n["fraction"] for n in got])
    return rows, nb, memory


def table(rows, nb, memory, meta):
    out = [f"Paired runs, {meta['rounds']} rounds of {meta['seconds']} s, {meta['date']}, "
           f"{meta['cpus']}-CPU machine; medians; ratio = median of each round's pair "
           "(min-max over rounds).", "",
           "| pool | workload | QD | Rust IOPS | C module (ours) IOPS | SPDK nvmf_tgt IOPS "
           "| Rust avg / p99 µs | C module avg / p99 µs | SPDK avg / p99 µs "
           "| Rust / C module | Rust / SPDK |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lat = [f"{r[c + '_avg_us']:.0f} / {r[c + '_p99_us']:.0f}" for c in CONFIGS]
        out.append(
            f"| {r['pool']} | {r['workload']} | {r['qd']} | {r['rust_iops']:,.0f} | "
            f"{r['cmod_iops']:,.0f} | {r['spdk_iops']:,.0f} | {lat[0]} | {lat[1]} | {lat[2]} | "
            f"**{r['rust/cmod']:.2f}** ({r['rust/cmod_spread']}) | "
            f"{r['rust/spdk']:.2f} ({r['rust/spdk_spread']}) |")
    out += ["", "Noisy neighbour: a /dev/shm namespace loaded (QD 32) alone, then while a "
            "disk-backed namespace on the same target core is loaded the same way too.", "",
            "| workload | target | /dev/shm alone IOPS | with the disk namespace busy "
            "| fraction kept | disk namespace IOPS |", "|---|---|---|---|---|---|"]
    names = {"rust": "Rust pmem bdev", "cmod": "C module (ours)", "spdk": "SPDK nvmf_tgt"}
    for (w, c), n in nb.items():
        out.append(f"| {w} | {names[c]} | {n['alone']:,.0f} | {n['loaded']:,.0f} | "
                   f"**{n['fraction']:.3f}** ({n['fraction_spread']}) | {n['disk']:,.0f} |")
    if memory:
        out += ["", "Peak resident memory of the target (VmHWM, median over its runs): " +
                ", ".join(f"{names[c]} {memory[c] / 1024:,.0f} MiB" for c in memory) +
                (f"; Rust / SPDK {memory['rust'] / memory['spdk']:.2f}"
                 if "rust" in memory and "spdk" in memory else "") + "."]
    return "\n".join(out) + "\n"


def chart(rows, nb):
    """A bar chart of IOPS relative to the C module (log scale), per case."""
    colors = {"rust": "#d95f02", "cmod": "#7570b3", "spdk": "#1b9e77"}
    names = {"rust": "Rust pmem bdev", "cmod": "C module, our nvmf_tgt",
             "spdk": "C module, SPDK nvmf_tgt"}
    groups = [(f"{r['pool']} {r['workload']} QD{r['qd']}",
               {c: r[f"{c}_iops"] for c in CONFIGS}) for r in rows]
    groups += [(f"neighbour {w} kept (x1000)",
                {c: n["fraction"] * 1000 for (w2, c), n in nb.items() if w2 == w})
               for w in NEIGHBOUR_WORKLOADS if any(w2 == w for w2, _ in nb)]
    width, left, top, bar, gap = 980, 210, 50, 7, 8
    height = top + len(groups) * (3 * bar + gap) + 60
    vmax = max(v for _, g in groups for v in g.values())
    import math
    lmax = math.log10(vmax) + 0.2
    scale = lambda v: (width - left - 90) * max(math.log10(max(v, 1)), 0) / lmax
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="20" font-size="14">IOPS per case, 4 KiB, log scale '
           '(medians of paired runs; last row: fraction of solo IOPS kept x1000)</text>']
    for i, c in enumerate(CONFIGS):
        svg.append(f'<rect x="{left + i * 230}" y="30" width="10" height="10" fill="{colors[c]}"/>'
                   f'<text x="{left + i * 230 + 14}" y="39">{names[c]}</text>')
    y = top
    for label, g in groups:
        svg.append(f'<text x="{left - 6}" y="{y + 2 * bar}" text-anchor="end">{label}</text>')
        for i, c in enumerate(CONFIGS):
            if c not in g:
                continue
            w = scale(g[c])
            svg.append(f'<rect x="{left}" y="{y + i * bar}" width="{w:.1f}" height="{bar - 1}" '
                       f'fill="{colors[c]}"/><text x="{left + w + 3:.1f}" y="{y + i * bar + 6}" '
                       f'font-size="8">{g[c]:,.0f}</text>')
        y += 3 * bar + gap
    for p in range(0, int(lmax) + 1):
        x = left + scale(10 ** p)
        svg.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{y}" stroke="#ccc"/>'
                   f'<text x="{x:.1f}" y="{y + 14}" text-anchor="middle">1e{p}</text>')
    svg.append("</svg>")
    return "\n".join(svg) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--disk-dir", default="/var/tmp")
    ap.add_argument("--out", default=os.path.join(TOP, "target/bench"))
    ap.add_argument("--rust-args", default="", help="extra flags for our target with the "
                    "Rust module, e.g. '--pmem-io-threads 2'")
    ap.add_argument("--only", default="", help="comma-separated filters on case labels, "
                    "e.g. 'disk randwrite 32,neighbour'")
    a = ap.parse_args()
    Target.rust_args = a.rust_args.split()
    os.makedirs(a.out, exist_ok=True)
    b = binaries()
    work = tempfile.mkdtemp(prefix="bench.", dir="/dev/shm")
    disk_dir = tempfile.mkdtemp(prefix="spdk-pmem-bench.", dir=a.disk_dir)
    templates = {"shm": os.path.join(work, "template.pool"),
                 "disk": os.path.join(disk_dir, "template.pool")}
    runs, neighbours = [], []
    shm_id = 70 + os.getpid() % 20
    wanted = [f.strip() for f in a.only.split(",") if f.strip()]
    pick = lambda label: not wanted or any(all(w in label.split() for w in f.split())
                                           for f in wanted)
    try:
        for where, path in templates.items():
            subprocess.run([b["fill"], path, str(POOL_BLOCKS)], check=True, capture_output=True)
        cases = [(p, w, q) for p in ("shm", "disk") for w in WORKLOADS for q in (1, 32)
                 if pick(f"{p} {w} {q}")]
        for rnd in range(a.rounds):
            order = CONFIGS[rnd % 3:] + CONFIGS[:rnd % 3]
            for pool, workload, qd in cases:
                for config in order:
                    pool_dir = work if pool == "shm" else disk_dir
                    r = run_case(config, pool_dir, templates[pool], workload, qd, a.seconds,
                                 shm_id, free_port())
                    r.update(config=config, pool=pool, workload=workload, qd=qd, round=rnd)
                    runs.append(r)
                    print(f"round {rnd + 1} {pool:4} {workload:9} QD{qd:<2} {config:4} "
                          f"{r['iops']:>12,.0f} IOPS  avg {r['avg_us']:>9.1f} us  "
                          f"p99 {r['p99_us']:>9.1f} us", flush=True)
            for workload in NEIGHBOUR_WORKLOADS:
                if not pick(f"neighbour {workload}"):
                    continue
                for config in order:
                    n = run_neighbours(config, templates, workload, a.seconds, shm_id,
                                       free_port())
                    n.update(config=config, round=rnd, workload=workload)
                    neighbours.append(n)
                    print(f"round {rnd + 1} neighbour {workload:9} {config:4} "
                          f"alone {n['alone']:>10,.0f}  "
                          f"loaded {n['loaded']:>10,.0f}  fraction {n['fraction']:.3f}  "
                          f"(disk {n['disk']:,.0f})", flush=True)
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(disk_dir, ignore_errors=True)
    rows, nb, memory = summarise(runs, neighbours)
    meta = {"rounds": a.rounds, "seconds": a.seconds, "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d")}
    text = table(rows, nb, memory, meta)
    print("\n" + text)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"meta": meta, "runs": runs, "neighbours": neighbours}, f, indent=1)
    if rows and nb:
        with open(os.path.join(a.out, "chart.svg"), "w") as f:
            f.write(chart(rows, nb))
    print(f"written: {a.out}/results.md, results.json" + (", chart.svg" if rows and nb else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
