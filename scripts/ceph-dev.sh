#!/usr/bin/env bash
# A one-node Ceph for development, the tests and trying RBD namespaces: one
# monitor and one BlueStore OSD (on a 2 GiB file) from Debian's packages,
# everything under one directory, on 127.0.0.1, cephx on, no systemd, no
# device. Idempotent: start starts what is not running (creating the cluster
# the first time), stop stops both daemons and waits for them, and the data
# stays for the next start until `destroy`.
#
# usage: scripts/ceph-dev.sh start|stop|status|env|destroy [--dir DIR] [--port PORT] [--osd-gib N]
#   --dir DIR    where the cluster lives (default /var/tmp/spdk-pmem-ceph,
#                or $CEPH_DEV_DIR)
#   --port PORT  the monitor's port on 127.0.0.1 (default 6789, or
#                $CEPH_DEV_PORT); a cluster keeps the port it was created with
#   --osd-gib N  the OSD's file, in GiB (default 2, or $CEPH_DEV_OSD_GIB;
#                sparse): sustained small writes grow BlueStore's RocksDB,
#                and an OSD that cannot allocate for it aborts; a cluster
#                keeps the size it was created with
#   start:   start it; prints the monitor, the pool, the key and the
#            bdev_rbd_create arguments
#   stop:    stop its daemons (bounded: SIGKILL after 20 s)
#   status:  exit 0 and print as start does if it answers, 3 if stopped
#   env:     CEPH_DEV_CONF=, CEPH_DEV_MON=, CEPH_DEV_KEY=, CEPH_DEV_POOL= lines
#   destroy: stop it and remove the directory
set -euo pipefail

cmd=${1:-}
[ $# -gt 0 ] && shift
dir=${CEPH_DEV_DIR:-/var/tmp/spdk-pmem-ceph}
port=${CEPH_DEV_PORT:-6789}
osd_gib=${CEPH_DEV_OSD_GIB:-2}
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=${2:?--dir needs a directory}; shift 2 ;;
    --port) port=${2:?--port needs a number}; shift 2 ;;
    --osd-gib) osd_gib=${2:?--osd-gib needs a number}; shift 2 ;;
    *) echo "ceph-dev: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$port" in ''|*[!0-9]*) echo "ceph-dev: --port must be a number, not $port" >&2; exit 2 ;; esac
case "$osd_gib" in ''|*[!0-9]*|0) echo "ceph-dev: --osd-gib must be a whole number of GiB, not $osd_gib" >&2; exit 2 ;; esac

conf=$dir/ceph.conf
pool=rbd
usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }

need_packages() {
  local missing=()
  for tool in ceph-mon ceph-osd ceph ceph-authtool monmaptool rbd; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "ceph-dev: ${missing[*]} not found: run scripts/setup-host.sh (installs ceph-mon ceph-osd ceph-common)" >&2
    exit 1
  fi
}

# The ceph CLI, bounded: an unreachable monitor would otherwise be retried
# for client_mount_timeout (300 s).
ceph_cli() { timeout 30 ceph -c "$conf" --connect-timeout 20 "$@"; }

daemon_pid() {
  local f=$dir/run/ceph-$1.pid
  [ -s "$f" ] || return 1
  local pid
  pid=$(cat "$f")
  kill -0 "$pid" 2>/dev/null || return 1
  # A reused pid is not our daemon.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$conf" || return 1
  echo "$pid"
}

running() { daemon_pid mon.a >/dev/null && daemon_pid osd.0 >/dev/null; }

admin_key() { ceph-authtool -p -n client.admin "$dir/ceph.client.admin.keyring"; }

mon_port() { sed -n 's/^mon host = v1:127.0.0.1:\([0-9]*\)$/\1/p' "$conf"; }

print_info() {
  local key mon
  key=$(admin_key)
  mon=127.0.0.1:$(mon_port)
  cat <<EOF
ceph-dev: one-node Ceph running in $dir
  monitor  $mon
  pool     $pool
  user     admin
  key      $key
  conf     $conf   (rbd -c $conf ls $pool)
  rpc.py bdev_rbd_create -b rbd0 --user admin --config mon_host=$mon --config key=$key $pool IMAGE 4096
EOF
}

write_conf() {
  local fsid
  fsid=$(cat /proc/sys/kernel/random/uuid)
  cat >"$conf" <<EOF
[global]
fsid = $fsid
mon initial members = a
mon host = v1:127.0.0.1:$port
public network = 127.0.0.0/8
ms bind msgr2 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 0
mon data avail crit = 0
osd crush chooseleaf type = 0
run dir = $dir/run
pid file = $dir/run/\$cluster-\$name.pid
log file = $dir/log/\$cluster-\$name.log
mon data = $dir/mon/\$cluster-\$id
osd data = $dir/osd/\$cluster-\$id
osd objectstore = bluestore
bluestore block create = true
bluestore block size = $((osd_gib * 1073741824))
osd memory target = 1073741824
osd max object name len = 256
osd max object namespace len = 64

[mon]
keyring = $dir/mon.keyring
admin socket = $dir/run/\$cluster-\$name.asok

[osd]
keyring = $dir/osd/\$cluster-\$id/keyring
admin socket = $dir/run/\$cluster-\$name.asok

[client]
keyring = $dir/ceph.client.admin.keyring
log file = $dir/log/client.log
EOF
}

create() {
  echo "ceph-dev: creating a cluster in $dir (monitor on 127.0.0.1:$port)"
  rm -rf "$dir"
  mkdir -p "$dir"/{run,log,mon/ceph-a,osd/ceph-0}
  write_conf
  ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$dir/ceph.client.admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
  ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/ceph.client.admin.keyring" >/dev/null
  monmaptool --create --addv a "[v1:127.0.0.1:$port]" \
    --fsid "$(sed -n 's/^fsid = //p' "$conf")" "$dir/monmap" >/dev/null
  ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring"
  start_daemon ceph-mon -c "$conf" -i a
  [ "$(ceph_cli osd create)" = 0 ] || { echo "ceph-dev: osd create did not give osd.0" >&2; exit 1; }
  ceph-osd -c "$conf" -i 0 --mkfs --mkkey --no-mon-config >"$dir/log/osd-mkfs.log" 2>&1 \
    || { echo "ceph-dev: ceph-osd --mkfs failed:" >&2; tail -20 "$dir/log/osd-mkfs.log" >&2; exit 1; }
  ceph_cli auth add osd.0 osd 'allow *' mon 'allow profile osd' -i "$dir/osd/ceph-0/keyring" >/dev/null 2>&1
  ceph_cli osd crush add-bucket localhost host >/dev/null 2>&1
  ceph_cli osd crush move localhost root=default >/dev/null 2>&1
  ceph_cli osd crush add osd.0 1.0 host=localhost >/dev/null 2>&1
  start_daemon ceph-osd -c "$conf" -i 0
  ceph_cli osd pool create "$pool" 8 8 >/dev/null 2>&1
  wait_active osd-only
  timeout 60 rbd -c "$conf" pool init "$pool" || fail_start "rbd pool init $pool failed"
  touch "$dir/created"
}

# Until the OSD is up and the pool serves I/O (bounded). There is no
# manager daemon (it is not needed to serve RBD), so no placement-group
# statistics: a read of the pool's image directory waits for its PGs.
wait_active() {
  local i
  for i in $(seq 120); do
    ceph_cli osd stat 2>/dev/null | grep -q '1 up' && break
    [ "$i" -lt 120 ] || { fail_start "the OSD did not come up within 60 s"; }
    sleep 0.5
  done
  [ "${1:-}" = osd-only ] && return 0
  timeout 60 rbd -c "$conf" ls "$pool" >/dev/null \
    || fail_start "pool $pool did not serve I/O within 60 s"
}

fail_start() {
  echo "ceph-dev: $1; logs in $dir/log" >&2
  ceph_cli -s >&2 || true
  exit 1
}

# A step of start that fails says which, and what the daemons logged: the
# monitor refuses a nearly full disk with only an exit code (28) otherwise.
report_failed_step() {
  local rc=$1 line=$2 f
  echo "ceph-dev: start failed (exit $rc, scripts/ceph-dev.sh line $line); logs in $dir/log" >&2
  for f in "$dir/log/daemons.out" "$dir/log/ceph-mon.a.log" "$dir/log/ceph-osd.0.log"; do
    [ -s "$f" ] || continue
    echo "--- $f (errors, last 6):" >&2
    grep -i -E 'error|fail|abort|unable|cannot|space' "$f" | tail -6 >&2 || true
  done
}

# A cluster needs about 300 MiB for its monitor, RocksDB and a few test
# images; with less the OSD aborts mid-test instead of refusing here.
need_space() {
  local parent=$dir avail_kib
  while [ ! -d "$parent" ]; do parent=$(dirname "$parent"); done
  avail_kib=$(df -Pk "$parent" | awk 'NR == 2 { print $4 }')
  if [ "${avail_kib:-0}" -lt 1048576 ]; then
    echo "ceph-dev: only $((avail_kib / 1024)) MiB free on the filesystem of $parent; a one-node cluster needs 1 GiB: free some space or pass --dir on another filesystem" >&2
    exit 1
  fi
}

# Daemons keep no descriptor of the caller's: a test reading this script's
# output would otherwise wait for them to exit.
start_daemon() { "$@" </dev/null >>"$dir/log/daemons.out" 2>&1; }

start() {
  need_packages
  need_space
  set -E
  trap 'report_failed_step $? $LINENO' ERR
  if [ -f "$dir/created" ]; then
    if [ "$(mon_port)" != "$port" ] && [ "$port" != "${CEPH_DEV_PORT:-6789}" ]; then
      echo "ceph-dev: the cluster in $dir has its monitor on port $(mon_port), not $port" >&2
      exit 2
    fi
    daemon_pid mon.a >/dev/null || start_daemon ceph-mon -c "$conf" -i a
    daemon_pid osd.0 >/dev/null || start_daemon ceph-osd -c "$conf" -i 0
    wait_active
  else
    create
  fi
  print_info
}

stop_daemon() {
  local pid i
  pid=$(daemon_pid "$1") || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 200); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "ceph-dev: $1 (pid $pid) did not stop in 20 s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

case "$cmd" in
  start) start ;;
  stop)
    [ -f "$conf" ] || { echo "ceph-dev: no cluster in $dir"; exit 0; }
    stop_daemon osd.0
    stop_daemon mon.a
    echo "ceph-dev: stopped the cluster in $dir"
    ;;
  status)
    if [ -f "$dir/created" ] && running && ceph_cli -s >/dev/null 2>&1; then
      print_info
    else
      echo "ceph-dev: no cluster running in $dir"
      exit 3
    fi
    ;;
  env)
    [ -f "$dir/created" ] || { echo "ceph-dev: no cluster in $dir (start it first)" >&2; exit 3; }
    echo "CEPH_DEV_CONF=$conf"
    echo "CEPH_DEV_MON=127.0.0.1:$(mon_port)"
    echo "CEPH_DEV_KEY=$(admin_key)"
    echo "CEPH_DEV_POOL=$pool"
    ;;
  destroy)
    if [ -f "$conf" ]; then
      stop_daemon osd.0
      stop_daemon mon.a
    fi
    rm -rf "$dir"
    echo "ceph-dev: removed $dir"
    ;;
  -h|--help|'') usage; [ -n "$cmd" ] || exit 2 ;;
  *) echo "ceph-dev: unknown command $cmd (see --help)" >&2; exit 2 ;;
esac
