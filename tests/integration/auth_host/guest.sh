# The guest's side of tests/integration/auth_host/: Debian 13's 6.12 kernel
# host (nvme-cli's --dhchap-secret and --dhchap-ctrl-secret) against our
# nvmf_tgt (portable build) and against Linux's nvmet, over NVMe/TCP on the
# guest's loopback. Prints `== SECTION` headers and `key=value` lines; the
# test reads them. $F holds ours, scripts/ (20.07's rpc.py, for the
# article's pmem RPCs) and py/spdk (spdk-rpc 26, for upstream's
# authentication RPCs).
F=/job/files/auth
NQN=nqn.2016-06.io.spdk:cnode1
ADDR=127.0.0.1
ID1=00000000-0000-4000-8000-000000000001
ID2=00000000-0000-4000-8000-000000000002
H1=nqn.2014-08.org.nvmexpress:uuid:$ID1
H2=nqn.2014-08.org.nvmexpress:uuid:$ID2
K=/tmp/keys
rpc() { python3 "$F/scripts/rpc.py" -s /tmp/tgt.sock "$@"; }
rpc26() {
  PYTHONPATH=$F/py python3 -c 'import sys; from spdk.spdk_rpc import main; sys.argv[0] = "spdk-rpc"; sys.exit(main())' \
    -s /tmp/tgt.sock "$@"
}

modprobe nvme-tcp
mkdir -p $K && chmod 700 $K
# Keys as nvme-cli makes them: host 1's (SHA-256-transformed, 32 bytes),
# its controller key (48, untransformed), host 2's (SHA-512, 64), host 1's
# next key (rotation, SHA-384, 48) and one nobody was given.
gen() { (umask 077; nvme gen-dhchap-key --key-length="$2" --hmac="$3" > "$K/$1"); }
gen k1 32 1; gen c1 48 0; gen k2 64 3; gen k1b 48 2; gen bad 32 1
key() { cat "$K/$1"; }

# The kernel host: connect host $2 (id $3) to port $1 with secret $4 and
# controller secret $5 (either may be empty).
hconnect() {
  timeout 90 nvme connect -t tcp -a $ADDR -s "$1" -n $NQN --hostnqn="$2" --hostid="$3" \
    ${4:+--dhchap-secret="$4"} ${5:+--dhchap-ctrl-secret="$5"} > /tmp/connect.log 2>&1
}
# The controller (nvme0, …) of $NQN, live.
ctrl() {
  local c
  for c in /sys/class/nvme/nvme*; do
    [ "$(cat "$c/subsysnqn" 2>/dev/null)" = $NQN ] || continue
    [ "$(cat "$c/state" 2>/dev/null)" = live ] || continue
    basename "$c"; return
  done
}
# Its namespace's block device (native multipath names the path nvme0c0n1).
dev() {
  local c n
  c=$(ctrl); [ -n "$c" ] || return 0
  n=$(ls -d /sys/class/nvme/"$c"/nvme*n1 2>/dev/null | head -1 | xargs -r basename | sed 's/c[0-9]*n/n/')
  [ -n "$n" ] && [ -b "/dev/$n" ] && echo "/dev/$n"
}
verify_io() {
  timeout 120 fio --name=verify --filename="$(dev)" --direct=1 --ioengine=libaio --rw=randwrite \
    --bs=4k --iodepth=32 --size=8M --verify=crc32c --do_verify=1 --output=/tmp/fio.log > /dev/null 2>&1
  echo "fio=$?"
  echo "fio_err=$(grep -o 'err= *[0-9]*' /tmp/fio.log | head -1 | tr -d ' ')"
}
disconnect_all() { nvme disconnect -n $NQN > /dev/null 2>&1; wait_for "no controller left" 30 test -z "$(ctrl)"; }

# A host that must be admitted: connect, verified I/O, disconnect.
admitted() {
  hconnect "$@"; echo "connect=$?"
  if wait_for "a namespace" 60 test -n "$(dev)"; then verify_io; else
    cat /tmp/connect.log; dmesg | tail -8; [ -f /tmp/tgt.log ] && tail -8 /tmp/tgt.log; fi
  disconnect_all; echo "disconnect=$?"
}
# A host that must be refused: its connect fails and no controller is left.
refused() {
  hconnect "$@"; echo "connect=$?"
  sleep 1
  echo "controller=$(ctrl)"
  disconnect_all
}

# Ours, configured over RPC (spdk-rpc 26 for upstream's methods) with
# nvmf_set_config's digests $1 and groups $2; its save_config is kept.
start_ours() {
  rm -f /tmp/tgt.sock
  "$F/ours" -m 0x1 --no-huge -s 1024 -r /tmp/tgt.sock --wait-for-rpc > /tmp/tgt.log 2>&1 &
  tgt_pid=$!
  wait_for "the target answering" 240 rpc -t 2 spdk_get_version || { tail -20 /tmp/tgt.log; return 1; }
  rpc26 nvmf_set_config --dhchap-digests "$1" --dhchap-dhgroups "$2" > /tmp/rpc.log 2>&1 || { cat /tmp/rpc.log; return 1; }
  rpc framework_start_init && rpc nvmf_create_transport -t TCP &&
    rpc bdev_pmem_create_pool /tmp/auth.pool 64 4096 && rpc bdev_pmem_create /tmp/auth.pool -n pmem0 &&
    rpc nvmf_create_subsystem $NQN -s SPDK0001 && rpc nvmf_subsystem_add_ns $NQN pmem0 || return 1
  for k in k1 c1 k2 k1b; do rpc26 keyring_file_add_key $k $K/$k || return 1; done
  rpc26 nvmf_subsystem_add_host $NQN "$H1" --dhchap-key k1 --dhchap-ctrlr-key c1 &&
    rpc26 nvmf_subsystem_add_host $NQN "$H2" --dhchap-key k2 &&
    rpc nvmf_subsystem_add_listener $NQN -t tcp -a $ADDR -s 4420 &&
    rpc save_config > /tmp/config.json && echo "configured=0"
}
# Ours again from that save_config, with digests $1 and groups $2 (a
# restart is the only way: nvmf_set_config runs before the subsystems
# start, upstream's too).
restart_ours() {
  python3 - "$1" "$2" <<'PY' || return 1
import json, sys
c = json.load(open("/tmp/config.json"))
for s in c["subsystems"]:
    for e in s["config"] or []:
        if e["method"] == "nvmf_set_config":
            e["params"]["dhchap_digests"] = sys.argv[1].split(",")
            e["params"]["dhchap_dhgroups"] = sys.argv[2].split(",")
json.dump(c, open("/tmp/config.json", "w"))
PY
  rm -f /tmp/tgt.sock
  "$F/ours" -m 0x1 --no-huge -s 1024 -r /tmp/tgt.sock --json /tmp/config.json > /tmp/tgt.log 2>&1 &
  tgt_pid=$!
  wait_for "the target listening" 240 grep -q "Listening on $ADDR port 4420" /tmp/tgt.log ||
    { tail -20 /tmp/tgt.log; return 1; }
  echo "configured=0"
}
# Stops ours: it must still run, and exit cleanly on SIGINT.
stop_ours() {
  kill -0 "$tgt_pid" 2>/dev/null; echo "alive=$?"
  kill -INT "$tgt_pid" 2>/dev/null
  local n=0
  while kill -0 "$tgt_pid" 2>/dev/null && [ $n -lt 300 ]; do sleep 0.1; n=$((n + 1)); done
  kill -KILL "$tgt_pid" 2>/dev/null; wait "$tgt_pid" 2>/dev/null
  echo "exit=$?"
}

# nvmet: the same subsystem on port 4421, a file as its namespace.
N=/sys/kernel/config/nvmet
start_nvmet() {
  modprobe nvmet-tcp || return 1
  mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
  truncate -s 64M /tmp/nvmet.img
  mkdir $N/subsystems/$NQN && echo 0 > $N/subsystems/$NQN/attr_allow_any_host &&
    echo SPDK0001 > $N/subsystems/$NQN/attr_serial &&
    mkdir $N/subsystems/$NQN/namespaces/1 && echo /tmp/nvmet.img > $N/subsystems/$NQN/namespaces/1/device_path &&
    echo 1 > $N/subsystems/$NQN/namespaces/1/enable || return 1
  local h
  for h in "$H1" "$H2"; do mkdir "$N/hosts/$h" && ln -s "$N/hosts/$h" "$N/subsystems/$NQN/allowed_hosts/" || return 1; done
  key k1 > "$N/hosts/$H1/dhchap_key" && key c1 > "$N/hosts/$H1/dhchap_ctrl_key" && key k2 > "$N/hosts/$H2/dhchap_key" || return 1
  mkdir $N/ports/1 && echo tcp > $N/ports/1/addr_trtype && echo ipv4 > $N/ports/1/addr_adrfam &&
    echo $ADDR > $N/ports/1/addr_traddr && echo 4421 > $N/ports/1/addr_trsvcid &&
    ln -s $N/subsystems/$NQN $N/ports/1/subsystems/
}
nvmet_policy() { echo "hmac($1)" > "$N/hosts/$H1/dhchap_hash" && echo "$2" > "$N/hosts/$H1/dhchap_dhgroup"; }

# The matrix: each hash, null and two ffdhe groups, uni- (host key only)
# and bidirectional (the host also checks the controller's key).
MATRIX="sha256:null:0 sha256:ffdhe2048:1 sha384:null:1 sha384:ffdhe3072:0 sha512:ffdhe2048:0 sha512:ffdhe3072:1"
for m in $MATRIX; do
  IFS=: read -r hash group bi <<< "$m"
  echo "== ours: $m"
  if [ "$m" = "${MATRIX%% *}" ]; then start_ours "$hash" "$group"; else restart_ours "$hash" "$group"; fi ||
    { echo "started=1"; stop_ours; continue; }
  admitted 4420 "$H1" $ID1 "$(key k1)" "$([ "$bi" = 1 ] && key c1)"
  echo "negotiated=$(grep -o "authenticated to $NQN ([a-z0-9]*, [a-z0-9]*)" /tmp/tgt.log | head -1 | sed 's/.*(\(.*\))/\1/; s/, /:/')"
  [ "$m" = "${MATRIX##* }" ] || stop_ours
done

T=ours
lines_before=$(wc -l < /tmp/tgt.log)
echo "== $T: no key"; refused 4420 "$H1" $ID1 "" ""
echo "== $T: wrong key"; refused 4420 "$H1" $ID1 "$(key bad)" ""
echo "== $T: another host with host 1's key"; refused 4420 "$H2" $ID2 "$(key k1)" ""
echo "== $T: a wrong controller key"; refused 4420 "$H1" $ID1 "$(key k1)" "$(key k2)"
sleep 1
echo "== ours: refusals logged"
tail -n +$((lines_before + 1)) /tmp/tgt.log | grep 'DH-HMAC-CHAP' | sed 's/^/log: /'
# No secret in the log: none of the keys' base64.
leaked=0
for k in k1 c1 k2 k1b bad; do grep -qF "$(cut -d: -f3 "$K/$k")" /tmp/tgt.log && leaked=1; done
echo "leaked=$leaked"
echo "== $T: host 1 after the refusals"
admitted 4420 "$H1" $ID1 "$(key k1)" ""

echo "== ours: rotation"
hconnect 4420 "$H1" $ID1 "$(key k1)" ""; echo "connect=$?"
wait_for "a namespace" 60 test -n "$(dev)"
c=$(ctrl)
rpc26 nvmf_subsystem_set_keys $NQN "$H1" --dhchap-key k1b --dhchap-ctrlr-key c1; echo "set_keys=$?"
echo "== $T: the connected host, after set_keys"; verify_io
echo "== $T: after re-authenticating"
echo "$(key k1b)" > "/sys/class/nvme/$c/dhchap_secret"; echo "reauth_write=$?"
wait_for "re-authentication" 60 grep -q "re-authenticated to $NQN" /tmp/tgt.log; echo "reauthenticated=$?"
echo "state=$(cat /sys/class/nvme/$c/state)"; verify_io
disconnect_all
echo "== $T: the old key, after the rotation"; refused 4420 "$H1" $ID1 "$(key k1)" ""
echo "== $T: the new key"; admitted 4420 "$H1" $ID1 "$(key k1b)" ""
echo "== ours: namespace masking"
# Namespace 2 for host 2 only; host 1 sees it once nvmf_ns_add_host says so.
rpc bdev_pmem_create_pool /tmp/mask.pool 32 4096 > /dev/null && rpc bdev_pmem_create /tmp/mask.pool -n pmem1 > /dev/null &&
  rpc26 nvmf_subsystem_add_ns $NQN pmem1 -n 2 --no-auto-visible > /dev/null && rpc26 nvmf_ns_add_host $NQN 2 "$H2"
echo "masked_ns=$?"
# The controller of host $1, and the NSIDs it lists.
ctrl_of() {
  local c
  for c in /sys/class/nvme/nvme*; do
    [ "$(cat "$c/hostnqn" 2>/dev/null)" = "$1" ] && [ "$(cat "$c/state" 2>/dev/null)" = live ] && { basename "$c"; return; }
  done
}
listed() { nvme list-ns "/dev/$(ctrl_of "$1")" 2>/dev/null | sed 's/.*://' | tr '\n' ' ' | sed 's/ $//'; }
hconnect 4420 "$H1" $ID1 "$(key k1b)" ""; echo "connect1=$?"
# nvme-cli 2.3 refuses a second controller of one subsystem at one
# address ("already connected") whatever the host NQN (--duplicate-connect
# too): host 2 comes through a second listener.
rpc nvmf_subsystem_add_listener $NQN -t tcp -a $ADDR -s 4422 > /dev/null
hconnect 4422 "$H2" $ID2 "$(key k2)" ""; echo "connect2=$?"
[ -s /tmp/connect.log ] && sed 's/^/connect2: /' /tmp/connect.log
wait_for "both controllers" 60 test -n "$(ctrl_of "$H1")" -a -n "$(ctrl_of "$H2")"
echo "host1=$(listed "$H1")"
echo "host2=$(listed "$H2")"
rpc26 nvmf_ns_add_host $NQN 2 "$H1"; echo "added=$?"
wait_for "host 1 seeing namespace 2" 30 sh -c "nvme list-ns /dev/$(ctrl_of "$H1") | grep -q 0x2"
echo "host1_after=$(listed "$H1")"
echo "host1_block_devices=$(ls /sys/class/nvme/$(ctrl_of "$H1")/ | grep -c 'nvme[0-9]*c[0-9]*n')"
disconnect_all

echo "== ours: stop"
stop_ours

echo "== nvmet: start"
start_nvmet; echo "started=$?"
for m in $MATRIX; do
  IFS=: read -r hash group bi <<< "$m"
  echo "== nvmet: $m"
  nvmet_policy "$hash" "$group"
  admitted 4421 "$H1" $ID1 "$(key k1)" "$([ "$bi" = 1 ] && key c1)"
done
T=nvmet
nvmet_policy sha256 ffdhe2048
echo "== $T: no key"; refused 4421 "$H1" $ID1 "" ""
echo "== $T: wrong key"; refused 4421 "$H1" $ID1 "$(key bad)" ""
echo "== $T: another host with host 1's key"; refused 4421 "$H2" $ID2 "$(key k1)" ""
echo "== $T: a wrong controller key"; refused 4421 "$H1" $ID1 "$(key k1)" "$(key k2)"
echo "== $T: host 1 after the refusals"; admitted 4421 "$H1" $ID1 "$(key k1)" ""
echo "== nvmet: rotation"
hconnect 4421 "$H1" $ID1 "$(key k1)" ""; echo "connect=$?"
wait_for "a namespace" 60 test -n "$(dev)"
c=$(ctrl)
key k1b > "$N/hosts/$H1/dhchap_key"; echo "set_keys=$?"
echo "== $T: the connected host, after set_keys"; verify_io
echo "== $T: after re-authenticating"
echo "$(key k1b)" > "/sys/class/nvme/$c/dhchap_secret"; echo "reauth_write=$?"
sleep 3
echo "state=$(cat /sys/class/nvme/$c/state)"; verify_io
disconnect_all
echo "== $T: the old key, after the rotation"; refused 4421 "$H1" $ID1 "$(key k1)" ""
echo "== $T: the new key"; admitted 4421 "$H1" $ID1 "$(key k1b)" ""
echo "== done"
