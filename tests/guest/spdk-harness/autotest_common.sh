# test/common/autotest_common.sh for SPDK's test/nvmf/target scripts in the
# Linux-host guest (see run.sh). The helpers the scripts call that only
# look at the host side (waitforserial, waitforserial_disconnect,
# make_filesystem, run_test) are SPDK's own, read from the tree; what
# would start, watch or stop a local target asks the test instead.
set -e
# Which command failed, for the test's report (SPDK's harness prints a
# backtrace).
set -o errtrace
trap 'echo "harness: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

# spdk_functions FILE NAME...: defines SPDK's functions NAME... as FILE (in
# SPDK's tree) has them; stops if one is not there.
spdk_functions() {
  local file=$SPDK_TREE/$1 f
  shift
  for f in "$@"; do
    eval "$(sed -n "/^function $f() {/,/^}/p" "$file")"
    declare -F "$f" >/dev/null || { echo "harness: $f not found in $file" >&2; exit 1; }
  done
}
spdk_functions test/common/autotest_common.sh waitforserial waitforserial_disconnect \
  make_filesystem run_test

for i in "$@"; do
  case "$i" in --transport=*) TEST_TRANSPORT="${i#*=}" ;; esac
done
: "${RUN_NIGHTLY:=0}" "${SPDK_RUN_NON_ROOT:=0}"
output_dir=/tmp/spdk-scripts/output
mkdir -p "$output_dir"

xtrace_disable() { :; }
xtrace_restore() { :; }
timing_enter() { :; }
timing_exit() { :; }
process_shm() { :; }

step() { echo "$*" | socat -t 600 - "TCP:127.0.0.1:$STEP_PORT"; }

# The target is a process on the host: `kill -0 $nvmfpid` asks whether it
# still runs, killprocess stops it.
nvmfpid=
kill() {
  if [ "$#" -eq 2 ] && [ "$1" = -0 ] && [ -n "$nvmfpid" ] && [ "$2" = "$nvmfpid" ]; then
    [ "$(step alive)" = yes ]
  else
    builtin kill "$@"
  fi
}
killprocess() {
  [ "$(step stop_target)" = stopped ]
}

# nvme_cli.sh's second half runs SPDK's fork of nvme-cli (built against
# SPDK's user-space driver); the guest has the kernel host's nvme-cli,
# which runs the same discover/connect/disconnect commands.
DEPENDENCY_DIR=/tmp/spdk-scripts/deps
mkdir -p "$DEPENDENCY_DIR/nvme-cli"
ln -sf "$(command -v nvme)" "$DEPENDENCY_DIR/nvme-cli/nvme"
touch "$DEPENDENCY_DIR/nvme-cli/spdk.conf"
nvme_cli_build() { :; }
