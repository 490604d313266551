#!/usr/bin/env bash
# Everything a fresh Debian machine needs before the project runs, idempotently:
# Debian packages and hugepages (setup-host.sh), the pinned SPDK source
# (vendor/fetch-spdk.sh), the PyPI SPDK client the RPC tests use, and a build
# of SPDK and of our crates. Each stage with work to do says so when it starts
# and how long it took; a run with nothing to do prints one line. The full
# output goes to target/logs/setup-<time>.log (target/logs/setup.log is the
# latest); a failure prints its tail and its path.
# usage: scripts/setup.sh [cargo build options, e.g. --release]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

mkdir -p target/logs
log="target/logs/setup-$(date +%Y%m%d-%H%M%S)-$$.log"
: > "$log"
ln -sfn "$(basename "$log")" target/logs/setup.log
# Keep the ten latest logs.
ls -1t target/logs/setup-*.log 2>/dev/null | tail -n +11 | xargs -r rm -f

worked=0
began=0
stage() { worked=1; began=$(date +%s); echo "setup: $*"; echo "== $*" >> "$log"; }
took() { echo "setup:   ${1:-done} in $(( $(date +%s) - began )) s"; }
failed() {
  tail -n 30 "$log" >&2
  echo "setup: $1 failed; full log: $top/$log" >&2
  exit 1
}

if ! needed=$(bash scripts/setup-host.sh --needed); then
  stage "Debian packages and hugepages ($needed)"
  bash scripts/setup-host.sh >> "$log" 2>&1 || failed "installing packages and hugepages"
  took
fi

if ! bash vendor/fetch-spdk.sh --check; then
  stage "SPDK 20.07 source (a 141 to 234 MiB tarball from Debian, once)"
  bash vendor/fetch-spdk.sh 2>&1 | tee -a "$log" | sed -n 's/^fetch-spdk: /setup:   /p' ||
    failed "fetching the SPDK source"
  took
fi

if ! command -v cargo >/dev/null; then
  # rustup's default location, for shells that have not sourced its env.
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }

# Today's SPDK Python client (PyPI `spdk`, command spdk-rpc): a test peer for
# the RPC compatibility tests, kept in a virtual environment, not a dependency.
venv="$top/target/spdk-rpc-venv"
if [ ! -x "$venv/bin/spdk-rpc" ]; then
  stage "SPDK's Python client from PyPI (spdk==26.9, for the RPC tests)"
  { rm -rf "$venv" && python3 -m venv "$venv" &&
    "$venv/bin/pip" install -q --disable-pip-version-check "spdk==26.9"; } >> "$log" 2>&1 ||
    failed "installing the PyPI spdk client"
  took
fi

# cargo says what it compiles; SPDK itself is built inside spdk-sys's build
# script when its source, patches or flags changed, and stamps its tree with
# the seconds it took.
build="cargo build${*:+ $*}"
echo "== $build" >> "$log"
crates_began=$(date +%s)
set +e
cargo build --locked --workspace --all-targets "$@" 2>&1 | {
  announced=""
  while IFS= read -r line; do
    printf '%s\n' "$line" >> "$log"
    case "$line" in
      *Compiling*)
        [ -n "$announced" ] || {
          announced=1
          echo "setup: crates ($build; SPDK 20.07 is built inside spdk-sys when its source, patches or flags changed, about 1 min on 2 cores; a first build of everything takes about 3 min)"
        } ;;
    esac
  done
  [ -z "$announced" ] || exit 10
}
status=("${PIPESTATUS[@]}")
set -e
[ "${status[0]}" -eq 0 ] || failed "$build"
if [ "${status[1]}" -eq 10 ]; then
  worked=1
  cache=${SPDK_PMEM_BUILD_DIR:-${CARGO_TARGET_DIR:-target}/spdk}
  built=$cache/current/.spdk-pmem-built
  if [ -f "$built" ] && [ "$(stat -c %Y "$built")" -ge "$crates_began" ]; then
    echo "setup:   SPDK 20.07 built in $(sed -n 's/^seconds //p' "$built") s, in $(readlink -f "$cache/current")"
  fi
  echo "setup:   crates done in $(( $(date +%s) - crates_began )) s"
fi

if [ "$worked" = 0 ]; then
  read -r tree source < vendor/src/spdk/.spdk-pmem-source
  echo "setup: up to date (packages, hugepages, SPDK source ${tree:0:12} from source $source, SPDK build, crates); log: $log"
fi
