#!/usr/bin/env bash
# The 2018 article's configuration as SPDK rpc.py commands, with the article's
# method names where SPDK 20.07 still accepts them (create_pmem_pool,
# construct_pmem_bdev, nvmf_subsystem_create). The article's one-shot
# construct_nvmf_subsystem was removed in SPDK v19.01: its parts are
# nvmf_create_transport, nvmf_subsystem_create, nvmf_subsystem_add_listener and
# nvmf_subsystem_add_ns. Works against our nvmf_tgt and SPDK's C one alike.
#
# usage: scripts/article-rpc.sh -s SOCKET [--pool PATH] [--mib N] [--block-size N]
#        [--nqn NQN] [--serial SN] [--transport TCP|RDMA] [--addr A] [--port P]
# An existing pool is reused (checked with pmem_pool_info), never recreated.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
rpc_py="${SPDK_RPC_PY:-$top/target/spdk/current/scripts/rpc.py}"

sock=/var/tmp/spdk.sock
pool=/dev/shm/pmdk0.pool
mib=32
bsize=4096
nqn=nqn.2016-06.io.spdk:cnode1
serial=SPDK0001
trtype=TCP
addr=127.0.0.1
port=4420
while [ $# -gt 0 ]; do
  case "$1" in
    -s) sock=$2; shift 2 ;;
    --pool) pool=$2; shift 2 ;;
    --mib) mib=$2; shift 2 ;;
    --block-size) bsize=$2; shift 2 ;;
    --nqn) nqn=$2; shift 2 ;;
    --serial) serial=$2; shift 2 ;;
    --transport) trtype=$(echo "$2" | tr '[:lower:]' '[:upper:]'); shift 2 ;;
    --addr) addr=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    *) echo "article-rpc: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -f "$rpc_py" ] || { echo "article-rpc: $rpc_py not found: run scripts/setup.sh" >&2; exit 1; }

rpc() {
  printf '   $ rpc.py %s\n' "$*" >&2
  python3 "$rpc_py" -s "$sock" "$@"
}

if [ -e "$pool" ]; then
  rpc pmem_pool_info "$pool" >/dev/null
else
  mkdir -p "$(dirname "$pool")"
  # The article wrote `create_pmem_pool FILE 8192 4096` meaning 8192 blocks of
  # 4096 bytes; rpc.py's second argument is the size in MiB (32 MiB here).
  rpc create_pmem_pool "$pool" "$mib" "$bsize"
fi
rpc construct_pmem_bdev -n pmdk0 "$pool" >/dev/null
if ! python3 "$rpc_py" -s "$sock" nvmf_get_transports | grep -q "\"trtype\": \"$trtype\""; then
  rpc nvmf_create_transport -t "$trtype"
fi
rpc nvmf_subsystem_create "$nqn" -a -s "$serial"
rpc nvmf_subsystem_add_listener "$nqn" -t "$trtype" -a "$addr" -s "$port"
rpc nvmf_subsystem_add_ns "$nqn" pmdk0 >/dev/null
