#!/usr/bin/env bash
# The workflow of the 2018 article "Accessing Remote Persistent Memory with
# Block Semantics Using SPDK and PMDK", end to end, with our nvmf_tgt:
#   libpmemblk pool -> pmem bdev pmdk0 -> NVMe-oF subsystem (serial SPDK0001,
#   any host) -> listener -> namespace -> real NVMe-oF initiators connect
#   over the fabric and do I/O: SPDK's identify, perf and bdevperf, then the
#   article's own client, the Linux kernel host with nvme-cli (in a QEMU
#   guest; --no-linux-host skips it).
# It checks what it shows (serial, namespace size, no I/O errors, data read
# back equal to what was written) and exits non-zero if any of it is wrong.
# Set-up (packages, hugepages, SPDK source and build) happens first, idempotently.
# With --backend rbd the namespace is a Ceph RBD image of scripts/ceph-dev.sh's
# one-node cluster instead of the pool (started if it is not running, and
# stopped again if this run started it). With --backend pmem-cache-rbd the
# pool is a write-back cache (bdev_pmem_cache_create) in front of that image:
# writes are acknowledged once in the pool and reach Ceph afterwards, in
# order; the run flushes it, stops cleanly and checks with `rbd export` that
# Ceph holds what the host reads.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)

usage() {
  cat <<USAGE
usage: scripts/article.sh [options]
  --backend B         pmem (the article's: a libpmemblk pool), rbd (an RBD image
                      rbd/article on scripts/ceph-dev.sh's cluster) or pmem-cache-rbd
                      (the pool as a write-back cache in front of that image); default pmem
  --pool PATH         libpmemblk pool file (default /dev/shm/pmdk0.pool, with pmem-cache-rbd
                      /dev/shm/article-cache.pool; reused if it exists)
  --blocks N          blocks in a new pool (default 8192)
  --block-size N      block size in bytes (default 4096)
  --nqn NQN           subsystem NQN (default nqn.2016-06.io.spdk:cnode1)
  --serial S          serial number (default SPDK0001)
  --transport T       tcp or rdma (default: rdma when an RDMA device exists, else tcp; rdma
                      without one runs in a QEMU guest over Soft-RoCE, scripts/article-rdma-vm.sh)
  --addr A            listener address (default 127.0.0.1)
  --port P            listener port (default 4420)
  --io-seconds N      length of the perf run (default 5)
  --no-setup          skip scripts/setup.sh (packages, hugepages, build)
  --no-linux-host     skip the article's own client, the Linux kernel host with nvme-cli
                      (in a QEMU guest, scripts/linux-host-vm.sh; it needs TCP on 127.0.0.1)
USAGE
}

backend=pmem
pool=""
blocks=8192
bsize=4096
nqn=nqn.2016-06.io.spdk:cnode1
serial=SPDK0001
transport=""
addr=127.0.0.1
port=4420
io_seconds=5
setup=1
linux_host=1
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) backend=$2; shift 2 ;;
    --pool) pool=$2; shift 2 ;;
    --blocks) blocks=$2; shift 2 ;;
    --block-size) bsize=$2; shift 2 ;;
    --nqn) nqn=$2; shift 2 ;;
    --serial) serial=$2; shift 2 ;;
    --transport) transport=$(echo "$2" | tr '[:upper:]' '[:lower:]'); shift 2 ;;
    --addr) addr=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --io-seconds) io_seconds=$2; shift 2 ;;
    --no-setup) setup=0; shift ;;
    --no-linux-host) linux_host=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "article: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

cd "$top"
if [ "$setup" = 1 ]; then
  bash scripts/setup.sh --release || { echo "article: set-up failed" >&2; exit 1; }
fi
tgt="$top/target/release/nvmf_tgt"
[ -x "$tgt" ] || cargo build --release --locked --bin nvmf_tgt
spdk=$(readlink -f "$top/target/spdk/current")
rpc() { python3 "$spdk/scripts/rpc.py" -s "$sock" "$@"; }
# The write-back cache's methods, which 20.07's rpc.py does not know, come
# from our plugin (scripts/rpc_pmem_cache.py).
rpc_cache() { PYTHONPATH="$top/scripts" rpc --plugin rpc_pmem_cache "$@"; }

if [ -z "$transport" ]; then
  if ls /sys/class/infiniband/* >/dev/null 2>&1; then transport=rdma; else transport=tcp; fi
fi
case "$backend" in
  pmem) bdev=pmdk0; pool=${pool:-/dev/shm/pmdk0.pool} ;;
  rbd) bdev=rbd0 ;;
  pmem-cache-rbd) bdev=wb0; pool=${pool:-/dev/shm/article-cache.pool} ;;
  *) echo "article: --backend must be pmem, rbd or pmem-cache-rbd" >&2; exit 2 ;;
esac
trtype=$(echo "$transport" | tr '[:lower:]' '[:upper:]')
case "$trtype" in TCP|RDMA) ;; *) echo "article: transport must be tcp or rdma" >&2; exit 2 ;; esac
if [ $(( blocks * bsize % 1048576 )) -ne 0 ]; then
  echo "article: blocks x block size must be a whole number of MiB (rpc.py takes the pool size in MiB)" >&2
  exit 2
fi

if [ "$transport" = rdma ] && ! ls /sys/class/infiniband/* >/dev/null 2>&1; then
  # No RDMA device here: the article's transport over Soft-RoCE in a guest.
  if [ "$backend" != pmem ]; then
    echo "article: --transport rdma on a machine without an RDMA device runs in a QEMU guest," >&2
    echo "article: with the article's own backend only (--backend pmem)" >&2
    exit 2
  fi
  echo "article: no RDMA device on this machine: the workflow runs in a QEMU guest over Soft-RoCE"
  exec bash "$top/scripts/article-rdma-vm.sh" --blocks "$blocks" --block-size "$bsize" --nqn "$nqn" \
    --serial "$serial" --port "$port" --io-seconds "$io_seconds"
fi

work=$(mktemp -d /tmp/spdk-pmem-article.XXXXXX)
sock="$work/rpc.sock"
tgt_pid=""
ceph_started=0
cleanup() {
  if [ -n "$tgt_pid" ] && kill -0 "$tgt_pid" 2>/dev/null; then
    kill -INT "$tgt_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$tgt_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$tgt_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
  if [ "$ceph_started" = 1 ]; then
    bash "$top/scripts/ceph-dev.sh" stop >/dev/null || true
  fi
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
show() { printf '   $ %s\n' "$*"; }

step "Starting nvmf_tgt on core 0 (RPC socket $sock)"
"$tgt" -m 0x1 -r "$sock" >"$work/target.log" 2>&1 &
tgt_pid=$!
for _ in $(seq 300); do
  [ -S "$sock" ] && rpc -t 2 spdk_get_version >/dev/null 2>&1 && break
  kill -0 "$tgt_pid" 2>/dev/null || { cat "$work/target.log" >&2; echo "article: nvmf_tgt exited" >&2; exit 1; }
  sleep 0.2
done
rpc spdk_get_version | python3 -c 'import json,sys; print("   " + json.load(sys.stdin)["version"])'

if [ "$backend" = pmem ]; then
  step "Pool $pool, pmem bdev pmdk0, subsystem $nqn (the article's rpc.py sequence)"
  if [ -e "$pool" ]; then
    echo "   reusing the existing pool"
    if ! info=$(rpc bdev_pmem_get_pool_info "$pool" 2>&1); then
      echo "article: $pool exists but is not a usable libpmemblk pool:" >&2
      echo "$info" >&2
      echo "article: move it away or pass --pool with another path; it was left untouched." >&2
      exit 1
    fi
  fi
  SPDK_RPC_PY="$spdk/scripts/rpc.py" bash "$top/scripts/article-rpc.sh" -s "$sock" --pool "$pool" \
    --mib $(( blocks * bsize / 1048576 )) --block-size "$bsize" --nqn "$nqn" --serial "$serial" \
    --transport "$trtype" --addr "$addr" --port "$port"
  rpc bdev_get_bdevs -b pmdk0 | python3 -c 'import json,sys; b=json.load(sys.stdin)[0]; print("   bdev pmdk0: %d blocks of %d bytes (the BTT metadata takes the rest of the pool)" % (b["num_blocks"], b["block_size"]))'
else
  step "Ceph: RBD image rbd/article on scripts/ceph-dev.sh's one-node cluster"
  bash "$top/scripts/ceph-dev.sh" status >/dev/null 2>&1 || ceph_started=1
  bash "$top/scripts/ceph-dev.sh" start | sed 's/^/   /'
  eval "$(bash "$top/scripts/ceph-dev.sh" env)"
  if ! rbd -c "$CEPH_DEV_CONF" info "$CEPH_DEV_POOL/article" >/dev/null 2>&1; then
    rbd -c "$CEPH_DEV_CONF" create "$CEPH_DEV_POOL/article" --size "$(( blocks * bsize / 1048576 ))M"
  else
    echo "   reusing the existing image"
  fi
  if [ "$backend" = rbd ]; then
    step "RBD bdev rbd0, subsystem $nqn (SPDK's rpc.py)"
  else
    step "RBD bdev rbd0, write-back cache wb0 on $pool in front of it, subsystem $nqn"
  fi
  for cmd in \
    "bdev_rbd_create -b rbd0 --user admin --config mon_host=$CEPH_DEV_MON --config key=$CEPH_DEV_KEY $CEPH_DEV_POOL article $bsize" \
    "nvmf_create_transport -t $trtype" \
    "nvmf_create_subsystem $nqn -a -s $serial" \
    "nvmf_subsystem_add_listener $nqn -t $trtype -a $addr -s $port" \
    "nvmf_subsystem_add_ns $nqn $bdev"; do
    show "rpc.py ${cmd/key=$CEPH_DEV_KEY/key=...}"
    # shellcheck disable=SC2086
    rpc $cmd >/dev/null
    if [ "$backend" = pmem-cache-rbd ] && [ "${cmd%% *}" = bdev_rbd_create ]; then
      [ -e "$pool" ] && echo "   reusing the existing cache pool $pool (what it holds is replayed)"
      show "rpc.py --plugin rpc_pmem_cache bdev_pmem_cache_create -b wb0 --slots $blocks rbd0 $pool"
      rpc_cache bdev_pmem_cache_create -b wb0 --slots "$blocks" rbd0 "$pool" >/dev/null
    fi
  done
  rpc bdev_get_bdevs -b rbd0 | python3 -c 'import json,sys; b=json.load(sys.stdin)[0]; r=b["driver_specific"]["rbd"]; print("   bdev rbd0: %d blocks of %d bytes, image %s/%s" % (b["num_blocks"], b["block_size"], r["pool_name"], r["rbd_name"]))'
  if [ "$backend" = pmem-cache-rbd ]; then
    rpc bdev_get_bdevs -b wb0 | python3 -c 'import json,sys; c=json.load(sys.stdin)[0]["driver_specific"]["pmem_wb"]; print("   bdev wb0: write-back cache on %s (%d slots, %d dirty) in front of %s" % (c["pool"], c["slots"], c["dirty_blocks"], c["base_bdev"]))'
  fi
fi

trid="trtype:$trtype adrfam:IPv4 traddr:$addr trsvcid:$port subnqn:$nqn"
step "SPDK identify over the fabric ($trid)"
"$spdk/build/examples/identify" -r "$trid" -p 1 >"$work/identify.txt" 2>&1 ||
  { cat "$work/identify.txt" >&2; echo "article: identify failed" >&2; exit 1; }
num_blocks=$(rpc bdev_get_bdevs -b "$bdev" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["num_blocks"])')
python3 - "$work/identify.txt" "$serial" "$num_blocks" "$bsize" <<'PY' || exit 1
import re, sys
text, serial, blocks, bsize = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3], sys.argv[4]
def grab(pattern):
    m = re.search(pattern, text, re.M)
    return m.group(1).strip() if m else "?"
lbas = grab(r"^Size \(in LBAs\):\s+(\d+)")
fmt = grab(r"^Current LBA Format:\s+LBA Format #(\d+)")
size = grab(r"^LBA Format #%s: Data Size:\s+(\d+)" % fmt) if fmt != "?" else "?"
print("   serial number:  " + grab(r"^Serial Number:\s+(.*)$"))
print("   model number:   " + grab(r"^Model Number:\s+(.*)$"))
print("   namespace 1:    %s blocks of %s bytes = %.1f MiB" % (lbas, size, int(lbas) * int(size) / 1048576 if lbas.isdigit() and size.isdigit() else 0))
wrong = []
if grab(r"^Serial Number:\s+(.*)$") != serial:
    wrong.append("serial number is not %s" % serial)
if lbas != blocks or size != bsize:
    wrong.append("namespace 1 is not the bdev's %s blocks of %s bytes" % (blocks, bsize))
for w in wrong:
    print("article: identify over the fabric: " + w, file=sys.stderr)
sys.exit(1 if wrong else 0)
PY

step "SPDK perf over the fabric: 4 KiB random 50/50 read/write, QD 32, ${io_seconds} s, core 1"
"$spdk/build/examples/perf" -r "$trid" -q 32 -o 4096 -w randrw -M 50 -t "$io_seconds" -c 0x2 >"$work/perf.txt" 2>&1 ||
  { cat "$work/perf.txt" >&2; echo "article: perf failed" >&2; exit 1; }
# SPDK 20.07's perf counts I/Os that completed with an error and still exits 0.
if grep -q "completed with error" "$work/perf.txt" || ! awk '/^Total/ && $3 > 0 { ok = 1 } END { exit !ok }' "$work/perf.txt"; then
  grep -m 5 "completed with error" "$work/perf.txt" >&2 || tail -n 20 "$work/perf.txt" >&2
  echo "article: perf saw I/O errors or did no I/O" >&2
  exit 1
fi
awk '/^Total/ { printf "   IOPS %s, %s MiB/s, latency avg %s us (min %s, max %s), no I/O errors\n", $3, $4, $5, $6, $7 }' "$work/perf.txt"

step "Data written over the fabric and read back: bdevperf verify, 4 KiB and 64 KiB, 2 s each, core 1"
cat >"$work/initiator.json" <<JSON
{"subsystems": [{"subsystem": "bdev", "config": [{"method": "bdev_nvme_attach_controller",
  "params": {"name": "Nvme0", "trtype": "$transport", "adrfam": "ipv4", "traddr": "$addr",
             "trsvcid": "$port", "subnqn": "$nqn"}}]}]}
JSON
for io in 4096 65536; do
  "$spdk/test/bdev/bdevperf/bdevperf" --json "$work/initiator.json" -q 8 -o "$io" -w verify -t 2 -m 0x2 \
    >"$work/bdevperf.txt" 2>&1 </dev/null ||
    { tail -n 20 "$work/bdevperf.txt" >&2; echo "article: bdevperf verify ($io-byte I/Os) failed" >&2; exit 1; }
  if grep -q "Buffer mismatch\| fails" "$work/bdevperf.txt"; then
    grep -m 5 "Buffer mismatch\| fails" "$work/bdevperf.txt" >&2
    echo "article: data read back over the fabric differs from what was written" >&2
    exit 1
  fi
  awk -v io="$io" '{ sub(/^\r/, "") } $1 == "Total" && $2 == ":" { printf "   %s-byte I/Os: %s IOPS, every block read back equal to what was written\n", io, $3 }' "$work/bdevperf.txt"
done

if [ "$linux_host" = 1 ] && { [ "$transport" != tcp ] || [ "${addr%%.*}" != 127 ]; }; then
  step "The Linux host: skipped (its VM reaches TCP on this machine's 127.0.0.0/8 only)"
  linux_host=0
fi
if [ "$linux_host" = 1 ]; then
  step "The article's client: the Linux kernel host with nvme-cli (Debian 12's kernel in a QEMU guest)"
  cat >"$work/guest.sh" <<GUEST
set -e
modprobe nvme-tcp
nvme connect -t tcp -n $nqn -a $addr -s $port >/dev/null
for _ in \$(seq 50); do [ -b /dev/nvme0n1 ] && break; sleep 0.2; done
echo "   \$ nvme list"
nvme list | sed 's/^/   /'
head -c 4194304 /dev/urandom > /tmp/data
dd if=/tmp/data of=/dev/nvme0n1 bs=1M count=4 oflag=direct status=none
dd if=/dev/nvme0n1 of=/tmp/back bs=1M count=4 iflag=direct status=none
if cmp -s /tmp/data /tmp/back; then
  echo "   4 MiB written through /dev/nvme0n1 and read back equal"
else
  echo "   what /dev/nvme0n1 read back differs from what was written"; exit 1
fi
nvme disconnect -n $nqn >/dev/null
GUEST
  show "nvme connect -t tcp -n $nqn -a $addr -s $port   (in the guest)"
  if ! bash "$top/scripts/linux-host-vm.sh" run --forward "$port" --timeout 300 "$work/guest.sh" \
      >"$work/guest.out" 2>"$work/guest.err"; then
    cat "$work/guest.out" "$work/guest.err" >&2
    echo "article: the Linux host in the VM failed (see above; --no-linux-host skips it)" >&2
    exit 1
  fi
  cat "$work/guest.out"
  grep -q " $serial " "$work/guest.out" ||
    { echo "article: nvme list in the guest does not show serial $serial" >&2; exit 1; }
  [ "$(cat "$top/target/vm/accel" 2>/dev/null)" = tcg ] && echo "   (the guest ran under TCG: KVM does not work on this machine)"
fi

if [ "$backend" = pmem-cache-rbd ]; then
  step "The cache: acknowledged from the pool, destaged to Ceph in order"
  show_cache() {
    rpc bdev_get_bdevs -b wb0 | python3 -c 'import json,sys; c=json.load(sys.stdin)[0]["driver_specific"]["pmem_wb"]; print("   %s: %d blocks dirty, %d writes destaged (%.0f/s over the last second), Ceph reachable: %s" % (sys.argv[1], c["dirty_blocks"], c["destaged_writes"], c["destage_rate"], c["base_reachable"]))' "$1"
  }
  show_cache "after the I/O"
  show "rpc.py --plugin rpc_pmem_cache bdev_pmem_cache_flush wb0"
  rpc_cache bdev_pmem_cache_flush wb0
  show_cache "after the flush"
fi
if [ "$backend" != pmem ]; then
  step "What the host reads, kept to compare with Ceph's own copy after the stop (spdk_dd, core 1)"
  "$spdk/build/bin/spdk_dd" --json "$work/initiator.json" -m 0x2 --bs 1048576 --ib Nvme0n1 --of "$work/host.img" \
    >"$work/spdk_dd.txt" 2>&1 </dev/null ||
    { tail -n 20 "$work/spdk_dd.txt" >&2; echo "article: spdk_dd could not read the namespace" >&2; exit 1; }
  echo "   $(( $(stat -c %s "$work/host.img") / 1048576 )) MiB read over the fabric"
fi

step "Shutting down"
kill -INT "$tgt_pid"
wait "$tgt_pid" && echo "   nvmf_tgt exited cleanly" || { echo "article: nvmf_tgt exited with $?" >&2; exit 1; }
tgt_pid=""
if [ "$backend" = pmem ]; then
  echo "   the pool stays at $pool ($(du -h "$pool" | cut -f1)); the next run reuses it"
else
  rbd -c "$CEPH_DEV_CONF" export --no-progress "$CEPH_DEV_POOL/article" "$work/ceph.img" >/dev/null
  if ! cmp -s "$work/host.img" "$work/ceph.img"; then
    cmp "$work/host.img" "$work/ceph.img" | head -n 1 >&2 || true
    echo "article: rbd export of $CEPH_DEV_POOL/article differs from what the host read" >&2
    exit 1
  fi
  echo "   rbd export of $CEPH_DEV_POOL/article equals what the host read, byte for byte"
  [ "$backend" = rbd ] || echo "   the cache pool stays at $pool (clean); the next run reuses it"
  echo "   the data lives in RBD image $CEPH_DEV_POOL/article of the cluster in ${CEPH_DEV_CONF%/ceph.conf}; see it with"
  echo "     scripts/ceph-dev.sh start && rbd -c $CEPH_DEV_CONF info $CEPH_DEV_POOL/article"
  echo "     rbd -c $CEPH_DEV_CONF export $CEPH_DEV_POOL/article FILE"
  [ "$ceph_started" = 0 ] || echo "   (this run started the cluster and stops it now: scripts/ceph-dev.sh stop)"
fi

if [ "$linux_host" = 0 ]; then
  step "A Linux host with nvme-cli would connect with:"
  echo "   nvme connect -t $transport -n $nqn -a $addr -s $port"
fi
