#!/usr/bin/env bash
# Prepares this machine for building and running the project, idempotently:
# the Debian packages SPDK, PMDK and bindgen need, Rust's components for CI,
# and hugepages for SPDK's environment layer. Needs root (or sudo).
# usage: scripts/setup-host.sh [--needed]
#   --needed: change nothing; say what is missing and exit 1, or exit 0 if nothing is
set -euo pipefail
check_only=0
[ "${1:-}" != --needed ] || check_only=1

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup-host: run as root or install sudo" >&2; exit 1; }
  SUDO="sudo"
fi

# Build: SPDK 20.07 + DPDK 20.05 (meson, ninja, nasm), PMDK's pmem bdev, bindgen (libclang).
# Run: SPDK's scripts/rpc.py needs python3; RDMA libraries let the article's transport be built in;
# ibverbs-providers (librxe: Soft-RoCE) and iproute2's `rdma` carry it in the test guest.
# Tests: pmdk-tools' pmempool checks pools after the crash torture; tmux
# holds spdk_top's screen for tests/integration/spdk_tools.rs; prometheus (and its
# promtool) scrapes and checks the metrics endpoint in tests/integration/metrics/.
# Ceph: librbd/librados for SPDK's RBD bdev; a monitor, an OSD and the ceph
# and rbd tools for scripts/ceph-dev.sh's one-node cluster.
PACKAGES=(
  build-essential pkg-config python3 python3-venv meson ninja-build nasm
  libclang-dev clang
  libpmemblk-dev libpmem-dev libaio-dev libnuma-dev uuid-dev libssl-dev libncurses-dev libcunit1-dev
  libibverbs-dev librdmacm-dev ibverbs-providers iproute2
  xz-utils patch ca-certificates debian-archive-keyring procps util-linux
  pmdk-tools tmux prometheus
  librbd-dev librados-dev ceph-mon ceph-osd ceph-common
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
want=${SPDK_PMEM_HUGEPAGES:-1024}
if [ "$check_only" = 1 ]; then
  needed=()
  [ ${#missing[@]} -eq 0 ] || needed+=("packages: ${missing[*]}")
  if command -v rustup >/dev/null; then
    for c in rustfmt clippy; do
      rustup component list --installed 2>/dev/null | grep -q "^$c" || needed+=("rust component $c")
    done
  fi
  [ "$(cat /proc/sys/vm/nr_hugepages)" -ge "$want" ] || needed+=("$want hugepages")
  mountpoint -q /dev/hugepages || needed+=("hugetlbfs at /dev/hugepages")
  [ ${#needed[@]} -eq 0 ] && exit 0
  (IFS=';'; echo "${needed[*]}")
  exit 1
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-host: installing ${missing[*]}"
  $SUDO apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if command -v rustup >/dev/null; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
fi

# Hugepages: SPDK's initiators (perf, identify, bdevperf) and the target by default use them.
have=$(cat /proc/sys/vm/nr_hugepages)
if [ "$have" -lt "$want" ]; then
  echo "$want" | $SUDO tee /proc/sys/vm/nr_hugepages >/dev/null
  have=$(cat /proc/sys/vm/nr_hugepages)
  [ "$have" -ge "$want" ] || echo "setup-host: warning: only $have of $want hugepages could be reserved" >&2
fi
if ! mountpoint -q /dev/hugepages; then
  $SUDO mkdir -p /dev/hugepages
  $SUDO mount -t hugetlbfs nodev /dev/hugepages
fi
echo "setup-host: packages present, $(cat /proc/sys/vm/nr_hugepages) hugepages, hugetlbfs at /dev/hugepages"
