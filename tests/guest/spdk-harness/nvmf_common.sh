# test/nvmf/common.sh for SPDK's test/nvmf/target scripts in the Linux-host
# guest (see run.sh). Its settings and the host-side functions
# (nvmftestinit, nvmfcleanup, nvmftestfini, get_nvme_devs) are SPDK's own,
# read from the tree; nvmfappstart asks the test to start the target on
# the host, and the port is the one the test forwards.
spdk_nvmf_function() {
  local f
  for f in "$@"; do
    sed -n "/^function $f() {/,/^}/p" "$SPDK_TREE/test/nvmf/common.sh"
  done
}
eval "$(sed -n '/^NVMF_PORT=/,/^NVMF_SERIAL=/p' "$SPDK_TREE/test/nvmf/common.sh")"
NVMF_PORT=$NVMF_TEST_PORT
NVMF_APP_SHM_ID=0
eval "$(spdk_nvmf_function nvmfcleanup nvmftestinit nvmftestfini get_nvme_devs)"
for f in nvmfcleanup nvmftestinit nvmftestfini get_nvme_devs; do
  declare -F "$f" >/dev/null || { echo "harness: $f not found in $SPDK_TREE" >&2; exit 1; }
done

# SPDK's: start the app with the script's flags, trap its exit, wait for
# its RPC socket. Here the test starts it on the host (with a core mask of
# this machine's, whatever -m the script asks for: the host has 2 CPUs).
nvmfappstart() {
  local answer
  answer=$(step start_target "$@")
  if [ "$answer" != started ]; then
    echo "nvmfappstart: $answer" >&2
    return 1
  fi
  nvmfpid=host-target
  trap 'nvmftestfini; exit 1' SIGINT SIGTERM EXIT
}
