#!/usr/bin/env bash
# The article's workflow over RDMA, its own transport, on a machine without
# an RDMA NIC: in a QEMU guest (scripts/linux-host-vm.sh) Soft-RoCE
# (rdma_rxe) runs on the guest's network device, our nvmf_tgt from the
# portable build (SPDK and DPDK for x86-64-v2, which QEMU's TCG CPU has)
# serves the libpmemblk pool with the article's commands (-t RDMA), and
# SPDK's identify, perf and bdevperf, then the Linux kernel host with
# `nvme connect -t rdma`, connect to the guest's own address and do I/O.
# scripts/article.sh --transport rdma calls this when no RDMA device exists.
# Under TCG the figures are no performance claim: a guest's CPU is emulated.
#
# usage: scripts/article-rdma-vm.sh [--blocks N] [--block-size N] [--nqn NQN]
#                                   [--serial S] [--port P] [--io-seconds N]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
blocks=8192 bsize=4096 nqn=nqn.2016-06.io.spdk:cnode1 serial=SPDK0001 port=4420 io_seconds=5
while [ $# -gt 0 ]; do
  case "$1" in
    --blocks) blocks=$2; shift 2 ;;
    --block-size) bsize=$2; shift 2 ;;
    --nqn) nqn=$2; shift 2 ;;
    --serial) serial=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --io-seconds) io_seconds=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "article-rdma-vm: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
cd "$top"
portable="$top/target/portable"
echo "== The portable build (SPDK, DPDK and nvmf_tgt for x86-64-v2; target/portable)"
CARGO_TARGET_DIR="$portable" cargo build --locked --features portable --bin nvmf_tgt 2>&1 | tail -n 1
spdk=$(readlink -f "$portable/spdk/current")
work=$(mktemp -d /var/tmp/spdk-pmem-article-rdma.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The guest sees this machine's root, but not /tmp (where a clone may be).
mkdir -p "$work/rdma"
cp "$portable/debug/nvmf_tgt" "$work/rdma/nvmf_tgt"
cp "$spdk/build/examples/identify" "$spdk/build/examples/perf" "$spdk/test/bdev/bdevperf/bdevperf" \
  "$top/scripts/article-rpc.sh" "$work/rdma/"
cp -a "$spdk/scripts" "$work/rdma/scripts"
mib=$(( blocks * bsize / 1048576 ))
cat > "$work/guest.sh" <<GUEST
set -e
F=/job/files/rdma ADDR=10.0.2.15
step() { printf '\n== %s\n' "\$*"; }
step "Soft-RoCE in the guest: rdma_rxe on eth0 (\$ADDR)"
modprobe rdma_rxe; rdma link add rxe0 type rxe netdev eth0
echo "   \$ rdma link"; rdma link | sed 's/^/   /'
echo 1024 > /proc/sys/vm/nr_hugepages; mkdir -p /dev/hugepages; mount -t hugetlbfs nodev /dev/hugepages
step "nvmf_tgt (portable build) on core 0"
\$F/nvmf_tgt -m 0x1 -r /tmp/rpc.sock > /tmp/tgt.log 2>&1 &
tgt=\$!
for _ in \$(seq 1200); do
  [ -S /tmp/rpc.sock ] && python3 \$F/scripts/rpc.py -s /tmp/rpc.sock -t 2 spdk_get_version >/dev/null 2>&1 && break
  kill -0 \$tgt || { cat /tmp/tgt.log; exit 1; }; sleep 0.2
done
step "Pool /tmp/pmdk0.pool, pmem bdev pmdk0, subsystem $nqn over RDMA (the article's rpc.py sequence)"
SPDK_RPC_PY=\$F/scripts/rpc.py bash \$F/article-rpc.sh -s /tmp/rpc.sock --pool /tmp/pmdk0.pool --mib $mib \\
  --block-size $bsize --nqn $nqn --serial $serial --transport RDMA --addr \$ADDR --port $port 2>&1
trid="trtype:RDMA adrfam:IPv4 traddr:\$ADDR trsvcid:$port subnqn:$nqn"
step "SPDK identify over RDMA (\$trid)"
\$F/identify -r "\$trid" -p 1 > /tmp/identify.txt 2>&1 || { cat /tmp/identify.txt; exit 1; }
grep -E '^(Serial Number|Model Number|Size \(in LBAs\)):' /tmp/identify.txt | sed 's/^/   /'
grep -q "^Serial Number: *$serial" /tmp/identify.txt || { echo "article: the serial is not $serial"; exit 1; }
step "SPDK perf over RDMA: 4 KiB random 50/50 read/write, QD 32, $io_seconds s, core 1"
\$F/perf -r "\$trid" -q 32 -o 4096 -w randrw -M 50 -t $io_seconds -c 0x2 > /tmp/perf.txt 2>&1 || { cat /tmp/perf.txt; exit 1; }
if grep -q 'completed with error' /tmp/perf.txt || ! awk '/^Total/ && \$3 > 0 { ok = 1 } END { exit !ok }' /tmp/perf.txt; then
  tail -20 /tmp/perf.txt; echo "article: perf saw I/O errors or did no I/O"; exit 1
fi
awk '/^Total/ { printf "   IOPS %s, latency avg %s us, no I/O errors\n", \$3, \$5 }' /tmp/perf.txt
step "Data written over RDMA and read back: bdevperf verify, 4 KiB, 2 s, core 1"
printf '{"subsystems": [{"subsystem": "bdev", "config": [{"method": "bdev_nvme_attach_controller", "params": {"name": "Nvme0", "trtype": "rdma", "adrfam": "ipv4", "traddr": "%s", "trsvcid": "%s", "subnqn": "%s"}}]}]}' \$ADDR $port $nqn > /tmp/initiator.json
\$F/bdevperf --json /tmp/initiator.json -q 8 -o 4096 -w verify -t 2 -m 0x2 > /tmp/bdevperf.txt 2>&1 < /dev/null || { tail -20 /tmp/bdevperf.txt; exit 1; }
if grep -q 'Buffer mismatch\| fails' /tmp/bdevperf.txt; then grep -m 5 'Buffer mismatch\| fails' /tmp/bdevperf.txt; exit 1; fi
echo "   every block read back equal to what was written"
step "The article's client: the Linux kernel host, nvme connect -t rdma"
modprobe nvme-rdma
echo "   \\\$ nvme connect -t rdma -n $nqn -a \$ADDR -s $port"
nvme connect -t rdma -n $nqn -a \$ADDR -s $port > /dev/null
for _ in \$(seq 100); do [ -b /dev/nvme0n1 ] && break; sleep 0.2; done
echo "   \\\$ nvme list"; nvme list | sed 's/^/   /'
nvme list | grep -q " $serial " || { echo "article: nvme list does not show serial $serial"; exit 1; }
head -c 4194304 /dev/urandom > /tmp/data
dd if=/tmp/data of=/dev/nvme0n1 bs=1M count=4 oflag=direct status=none
dd if=/dev/nvme0n1 of=/tmp/back bs=1M count=4 iflag=direct status=none
cmp -s /tmp/data /tmp/back || { echo "   what /dev/nvme0n1 read back differs"; exit 1; }
echo "   4 MiB written through /dev/nvme0n1 over RDMA and read back equal"
nvme disconnect -n $nqn > /dev/null
step "Shutting down"
kill -INT \$tgt; wait \$tgt && echo "   nvmf_tgt exited cleanly"
GUEST
echo "== Booting the guest (QEMU; under TCG where KVM does not work, which takes minutes)"
if ! bash "$top/scripts/linux-host-vm.sh" run --cpus 2 --memory 3072 --timeout 900 \
    --file "$work/rdma" "$work/guest.sh" > "$work/guest.out" 2> "$work/guest.err"; then
  cat "$work/guest.out" "$work/guest.err" >&2
  echo "article-rdma-vm: the workflow in the guest failed (see above)" >&2
  exit 1
fi
cat "$work/guest.out"
[ "$(cat "$top/target/vm/accel" 2>/dev/null)" = tcg ] &&
  echo "   (the guest ran under TCG: its figures are an emulated CPU's, no performance claim)"
exit 0
