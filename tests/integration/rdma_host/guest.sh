# The guest's side of tests/integration/rdma_host/: Soft-RoCE on eth0, then
# each target in turn (ours and SPDK's C one, both from the portable build,
# and Linux's nvmet) configured with the article's commands over RDMA, the
# kernel host and SPDK's initiators against it. Prints `== SECTION` headers
# and `key=value` lines; the test reads them. $F holds the staged programs:
# ours, c_nvmf_tgt, perf, bdevperf, nvme_fuzz, scripts/ (SPDK's rpc.py) and
# article-rpc.sh.
F=/job/files/rdma
ADDR=10.0.2.15
NQN=nqn.2016-06.io.spdk:cnode1
SERIAL=SPDK0001
rpc() { python3 "$F/scripts/rpc.py" -s /tmp/tgt.sock "$@"; }
trid() { echo "trtype:RDMA adrfam:IPv4 traddr:$ADDR trsvcid:$1 subnqn:$NQN"; }

echo "== rdma"
modprobe rdma_rxe && rdma link add rxe0 type rxe netdev eth0
modprobe nvme-rdma
echo "link=$(rdma link show rxe0/1 2>&1 | grep -o 'state [A-Z]*' | cut -d' ' -f2)"
echo "$HUGEPAGES" > /proc/sys/vm/nr_hugepages
mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages
echo "hugepages=$(cat /proc/sys/vm/nr_hugepages)"

# Starts target binary $1 with the rest as flags; waits until it answers.
start_target() {
  local bin=$1; shift
  rm -f /tmp/tgt.sock
  "$bin" -m 0x1 -r /tmp/tgt.sock "$@" > /tmp/tgt.log 2>&1 &
  tgt_pid=$!
  local began=$(date +%s)
  wait_for "the target answering" 240 rpc -t 2 spdk_get_version || { tail -20 /tmp/tgt.log; return 1; }
  echo "started_in=$(( $(date +%s) - began ))"
}

stop_target() {
  kill -INT "$tgt_pid" 2>/dev/null
  local n=0
  while kill -0 "$tgt_pid" 2>/dev/null && [ $n -lt 300 ]; do sleep 0.1; n=$((n + 1)); done
  kill -KILL "$tgt_pid" 2>/dev/null
  wait "$tgt_pid" 2>/dev/null
  echo "stopped=$?"
}

# The kernel host's controller (nvme0, …) connected over RDMA to port $1.
connected_ctrl() {
  local c
  for c in /sys/class/nvme/nvme*; do
    [ "$(cat "$c/transport" 2>/dev/null)" = rdma ] || continue
    grep -q "trsvcid=$1" "$c/address" 2>/dev/null || continue
    basename "$c"
    return
  done
}

# Its namespace's block device (nvme0n1). With native multipath (Debian's
# kernels have it) the controller's directory names the path, nvme0c0n1,
# which is no block device: the head's name drops the "c0".
connected_dev() {
  local c n
  c=$(connected_ctrl "$1")
  [ -n "$c" ] || return 0
  n=$(ls -d /sys/class/nvme/"$c"/nvme*n1 2>/dev/null | head -1 | xargs -r basename)
  [ -n "$n" ] || return 0
  n=$(echo "$n" | sed 's/c[0-9]*n/n/')
  [ -b "/dev/$n" ] && echo "$n"
}

# The kernel host against a target on port $1: connect over RDMA, what
# sysfs says, fio randrw with crc32c verify at QD 32, an ext4 roundtrip,
# disconnect.
kernel_host() {
  local port=$1 dev c
  nvme connect -t rdma -a "$ADDR" -s "$port" -n "$NQN" > /tmp/connect.log 2>&1
  echo "connect=$?"
  wait_for "a namespace over RDMA" 30 test -n "$(connected_dev "$port")" || { cat /tmp/connect.log; return; }
  dev=/dev/$(connected_dev "$port")
  c=$(connected_ctrl "$port")
  echo "serial=$(sed 's/ *$//' "/sys/class/nvme/$c/serial")"
  echo "transport=$(cat "/sys/class/nvme/$c/transport")"
  echo "size_bytes=$(( $(cat "/sys/block/${dev#/dev/}/size") * 512 ))"
  timeout 120 fio --name=verify --filename="$dev" --direct=1 --ioengine=libaio --rw=randrw --bs=4k \
    --iodepth=32 --size=16M --verify=crc32c --do_verify=1 --verify_fatal=1 --runtime=10 \
    > /tmp/fio.out 2>&1
  echo "fio=$?"
  echo "fio_err=$(grep -o 'err= *[0-9]*' /tmp/fio.out | head -1 | tr -d ' ')"
  grep -i 'verify\|error' /tmp/fio.out | head -5
  mkfs.ext4 -q -F "$dev" && mkdir -p /mnt/ext4 && mount "$dev" /mnt/ext4 &&
    head -c 8M /dev/urandom > /tmp/ext4.in && cp /tmp/ext4.in /mnt/ext4/f && umount /mnt/ext4 &&
    echo 3 > /proc/sys/vm/drop_caches && mount "$dev" /mnt/ext4 && cmp /tmp/ext4.in /mnt/ext4/f
  echo "ext4=$?"
  umount /mnt/ext4 2>/dev/null
  nvme disconnect -n "$NQN" > /dev/null
  echo "disconnect=$?"
}

# SPDK's initiators against a target on port $1: perf randrw QD 32 and
# bdevperf's verify, on core 1.
spdk_initiators() {
  local port=$1
  timeout 120 "$F/perf" -r "$(trid "$port")" -q 32 -o 4096 -w randrw -M 50 -t 3 -c 0x2 > /tmp/perf.out 2>&1
  echo "perf=$?"
  echo "perf_errors=$(grep -c 'completed with error\|\*ERROR\*' /tmp/perf.out)"
  echo "perf_total=$(grep '^Total' /tmp/perf.out | tr -s ' ')"
  cat > /tmp/bdevperf.json <<JSON
{"subsystems": [{"subsystem": "bdev", "config": [{"method": "bdev_nvme_attach_controller",
  "params": {"name": "Nvme0", "trtype": "rdma", "adrfam": "ipv4", "traddr": "$ADDR",
             "trsvcid": "$port", "subnqn": "$NQN"}}]}]}
JSON
  timeout 120 "$F/bdevperf" --json /tmp/bdevperf.json -q 8 -o 4096 -w verify -t 3 -m 0x2 > /tmp/bdevperf.out 2>&1
  echo "bdevperf=$?"
  echo "bdevperf_bad=$(grep -c 'Buffer mismatch\| fails' /tmp/bdevperf.out)"
  # SPDK's RDMA initiator logs the work requests a queue pair's teardown
  # flushes (Soft-RoCE does flush them): counted, not failed on.
  echo "bdevperf_flushed=$(grep -c 'Work Request Flushed Error' /tmp/bdevperf.out)"
  echo "bdevperf_total=$(grep 'Total' /tmp/bdevperf.out | tail -1 | tr -s ' ')"
}

# The article's commands (scripts/article-rpc.sh) over RDMA on port $1.
article() {
  SPDK_RPC_PY="$F/scripts/rpc.py" bash "$F/article-rpc.sh" -s /tmp/tgt.sock --pool /tmp/pmdk0.pool \
    --transport RDMA --addr "$ADDR" --port "$1" > /tmp/article.log 2>&1
  echo "article=$?"
  [ -s /tmp/article.log ] && sed 's/^/  /' /tmp/article.log | head -20
}

for target in ours c; do
  echo "== $target"
  rm -f /tmp/pmdk0.pool
  bin=$F/ours; [ "$target" = c ] && bin=$F/c_nvmf_tgt
  start_target "$bin" || continue
  article 4420
  kernel_host 4420
  spdk_initiators 4420
  if [ "$target" = ours ]; then
    echo "== ours: reconnects"
    fds0=$(ls /proc/$tgt_pid/fd | wc -l); rss0=$(awk '/VmRSS/ {print $2}' /proc/$tgt_pid/status)
    ok=0
    for i in $(seq "$ROUNDS"); do
      nvme connect -t rdma -a "$ADDR" -s 4420 -n "$NQN" > /dev/null 2>&1 &&
        nvme disconnect -n "$NQN" > /dev/null 2>&1 && ok=$((ok + 1))
    done
    sleep 2
    echo "rounds=$ok"
    echo "fds_before=$fds0"
    echo "fds_after=$(ls /proc/$tgt_pid/fd | wc -l)"
    echo "rss_before_kib=$rss0"
    echo "rss_after_kib=$(awk '/VmRSS/ {print $2}' /proc/$tgt_pid/status)"
    echo "== ours: a listener where no RDMA device is"
    rpc nvmf_subsystem_add_listener "$NQN" -t RDMA -a 127.0.0.1 -s 4421 > /tmp/bad.out 2>&1
    echo "bad_listener=$?"
    echo "bad_listener_message=$(grep -o '"message": .*' /tmp/bad.out)"
    echo "still_serving=$(rpc spdk_get_version > /dev/null 2>&1; echo $?)"
    nvme connect -t rdma -a "$ADDR" -s 4420 -n "$NQN" > /dev/null 2>&1
    wait_for "a namespace after the refused listener" 30 test -n "$(connected_dev 4420)"
    echo "connect_after=$([ -n "$(connected_dev 4420)" ] && echo 0 || echo 1)"
    nvme disconnect -n "$NQN" > /dev/null 2>&1
    echo "== ours: killed and restarted from save_config"
    rpc save_config > /tmp/saved.json
    nvme connect -t rdma -a "$ADDR" -s 4420 -n "$NQN" --reconnect-delay=1 --ctrl-loss-tmo=120 > /dev/null 2>&1
    wait_for "a namespace before the kill" 30 test -n "$(connected_dev 4420)"
    dev=/dev/$(connected_dev 4420)
    c=$(connected_ctrl 4420)
    head -c 1M /dev/urandom > /tmp/before.in
    dd if=/tmp/before.in of="$dev" bs=1M oflag=direct 2> /dev/null
    kill -KILL "$tgt_pid"; wait "$tgt_pid" 2>/dev/null
    start_target "$F/ours" --json /tmp/saved.json
    wait_for "the host reconnected" 120 grep -qx live "/sys/class/nvme/$c/state"
    echo "state_after_restart=$(cat "/sys/class/nvme/$c/state")"
    dd if="$dev" of=/tmp/before.out bs=1M count=1 iflag=direct 2> /dev/null
    echo "data_after_restart=$(cmp -s /tmp/before.in /tmp/before.out; echo $?)"
    nvme disconnect -n "$NQN" > /dev/null 2>&1
    echo "== ours: nvme_fuzz"
    printf '[Nvme]\n  TransportID "%s" Nvme0\n' "$(trid 4420)" > /tmp/fuzz.conf
    log0=$(wc -c < /tmp/tgt.log)
    timeout $((FUZZ_SECONDS + 60)) "$F/nvme_fuzz" -m 0x2 -U -r /tmp/fuzz.sock -t "$FUZZ_SECONDS" \
      -S 123456 -C /tmp/fuzz.conf -N -a > /tmp/fuzz.out 2>&1
    echo "fuzz=$?"
    echo "fuzz_commands=$(grep -o 'Total commands completed: [0-9]*' /tmp/fuzz.out | awk '{s += $4} END {print s + 0}')"
    echo "fuzz_log_bytes=$(( $(wc -c < /tmp/tgt.log) - log0 ))"
    echo "alive_after_fuzz=$(rpc spdk_get_version > /dev/null 2>&1; echo $?)"
  fi
  echo "== $target: stop"
  stop_target
done

echo "== nvmet"
modprobe nvmet-rdma; modprobe loop
truncate -s 64M /tmp/nvmet.img && loop=$(losetup -f --show /tmp/nvmet.img)
cfs=/sys/kernel/config/nvmet
mount -t configfs none /sys/kernel/config 2>/dev/null
mkdir "$cfs/subsystems/$NQN"
echo 1 > "$cfs/subsystems/$NQN/attr_allow_any_host"
echo "$SERIAL" > "$cfs/subsystems/$NQN/attr_serial"
mkdir "$cfs/subsystems/$NQN/namespaces/1"
echo "$loop" > "$cfs/subsystems/$NQN/namespaces/1/device_path"
echo 1 > "$cfs/subsystems/$NQN/namespaces/1/enable"
mkdir "$cfs/ports/1"
echo rdma > "$cfs/ports/1/addr_trtype"; echo ipv4 > "$cfs/ports/1/addr_adrfam"
echo "$ADDR" > "$cfs/ports/1/addr_traddr"; echo 4422 > "$cfs/ports/1/addr_trsvcid"
ln -s "$cfs/subsystems/$NQN" "$cfs/ports/1/subsystems/$NQN"
echo "nvmet_port=$?"
kernel_host 4422
spdk_initiators 4422
echo "== end"
