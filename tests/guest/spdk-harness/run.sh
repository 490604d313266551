#!/usr/bin/env bash
# Runs one of SPDK's test/nvmf/target scripts in the Linux-host guest, its
# body exactly as SPDK 20.07 wrote it, with this harness in place of
# SPDK's autotest harness: the target runs on the host (the test starts,
# stops and configures it when the guest asks, `step` in
# tests/common/vm.rs), and the script's `nvme` commands are the guest
# kernel's host.
#
# usage: run.sh SPDK_TREE NAME PORT
#   SPDK_TREE: the SPDK source the target was built from (its scripts and
#              harness functions are read from there, never copied into
#              this project); NAME: the script, e.g. nvme_cli; PORT: the
#              NVMe/TCP port the test forwards into the guest.
set -u
tree=$1 name=$2 port=$3
here=$(cd "$(dirname "$0")" && pwd)
root=/tmp/spdk-scripts/$name
rm -rf "$root"
mkdir -p "$root/test/nvmf/target" "$root/test/common" "$root/scripts"
cp "$tree/test/nvmf/target/$name.sh" "$root/test/nvmf/target/"
cp "$tree/scripts/fio.py" "$root/scripts/"
cp "$here/rpc.py" "$root/scripts/rpc.py"
cp "$here/autotest_common.sh" "$root/test/common/"
cp "$here/nvmf_common.sh" "$root/test/nvmf/common.sh"
cd "$root/test/nvmf/target"
SPDK_TREE=$tree NVMF_TEST_PORT=$port timeout 600 bash "./$name.sh" --transport=tcp
