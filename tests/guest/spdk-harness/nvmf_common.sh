# test/nvmf/common.sh for SPDK's test/nvmf/target scripts in the Linux-host
# guest (see run.sh). Its settings and the host-side functions
# (nvmftestinit, nvmfcleanup, nvmftestfini, get_nvme_devs) are SPDK's own,
# read from the tree; nvmfappstart asks the test to start the target on
# the host, and the port is the one the test forwards.
eval "$(sed -n '/^NVMF_PORT=/,/^NVMF_SERIAL=/p' "$SPDK_TREE/test/nvmf/common.sh")"
NVMF_PORT=$NVMF_TEST_PORT
NVMF_APP_SHM_ID=0
spdk_functions test/nvmf/common.sh nvmfcleanup nvmftestinit nvmftestfini get_nvme_devs

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
