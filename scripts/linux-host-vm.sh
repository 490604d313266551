#!/usr/bin/env bash
# A Linux NVMe-oF host in a QEMU guest, for tests and the article's workflow:
# Debian's kernel (taken from its .deb with dpkg-deb -x; this machine's boot
# set-up is not touched), an initramfs of busybox-static and the few modules
# that reach the root, and this machine's root shared read-only over 9p with
# a tmpfs overlay on top, so the guest runs this machine's nvme-cli, fio and
# e2fsprogs. The guest's network is QEMU's user-mode network with
# restrict=on: it reaches nothing but the TCP ports of this machine's
# 127.0.0.1 that the caller names (--forward), and inside the guest each such
# port is served on the guest's own 127.0.0.1 too, so an address a discovery
# log names (the listener's, 127.0.0.1) is reachable there as well.
#
# usage: scripts/linux-host-vm.sh prepare [--kernel 6.1|6.12]
#        scripts/linux-host-vm.sh run [--kernel 6.1|6.12] [--forward PORT]...
#                                     [--file PATH]... [--timeout SECONDS]
#                                     [--cpus N] [--memory MIB] SCRIPT
#   prepare: installs what it needs (qemu-system-x86, busybox-static, nvme-cli,
#            fio, socat, kmod, cpio; parted, xfsprogs, btrfs-progs, jq for
#            the tests' guests), fetches the kernel and builds the
#            initramfs into target/vm/KERNEL/, and finds out once whether KVM
#            works here (else TCG). Idempotent; `run` calls it.
#   run:     boots the guest, runs SCRIPT there with bash (as root, the host's
#            /lib/modules replaced by the guest kernel's; `modprobe nvme-tcp`
#            works), prints its output and exits with its exit status; 124 if
#            it did not end within the timeout (default 300 s), 125 if the
#            guest did not come up. The VM is always stopped. The guest's
#            kernel log is left in target/vm/last-console.log. Each --file
#            (a file or a directory) is copied for the guest to
#            /job/files/NAME: the guest's /tmp is a tmpfs of its own, so
#            what lies under this machine's /tmp (a clone there, a test's
#            temporary directory) is not seen through the shared root.
#            --memory sets the guest's RAM (default 1024 MiB; a target in
#            the guest needs more, for its hugepages).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
say() { echo "linux-host-vm: $*" >&2; }
die() { say "$*"; exit 125; }

cmd=${1:-}
[ -n "$cmd" ] && shift
kernel=6.1 timeout=300 cpus=1 memory=1024 script= forwards=() files=()
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel) kernel=$2; shift 2 ;;
    --forward) forwards+=("$2"); shift 2 ;;
    --file) files+=("$2"); shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    --memory) memory=$2; shift 2 ;;
    -h|--help) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) script=$1; shift ;;
  esac
done
case "$memory" in ''|*[!0-9]*) die "--memory takes MiB, a whole number, not '$memory'" ;; esac
case "$kernel" in
  6.1) suite=bookworm ;;
  6.12) suite=trixie ;;
  *) die "--kernel takes 6.1 (Debian 12) or 6.12 (Debian 13), not '$kernel'" ;;
esac
vm_root="$top/target/vm"
# The guest is stopped whatever happens to this script.
qemu_pid=
trap '[ -z "$qemu_pid" ] || kill -9 "$qemu_pid" 2>/dev/null || true' EXIT
trap 'exit 143' INT TERM
kdir="$vm_root/$kernel"

need_packages() {
  local missing=() p
  # The tests' guest tools too: SPDK's own scripts (tests/integration/spdk_nvmf_scripts.rs)
  # partition with parted, make ext4, btrfs and xfs, and parse with jq.
  for p in qemu-system-x86 busybox-static nvme-cli fio socat kmod cpio xz-utils e2fsprogs \
    parted xfsprogs btrfs-progs jq util-linux; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  say "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
    { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y \
      --no-install-recommends "${missing[@]}" >&2; } ||
    die "could not install ${missing[*]}"
}

# apt-get with a state of its own for $suite, so that this machine's sources
# and lists stay as they are; the mirror is this machine's own.
private_apt() {
  local tool=apt-get
  if [ "$1" = cache ]; then tool=apt-cache; shift; fi
  local state="$vm_root/apt-$suite" mirror
  mirror=$(grep -hoE '^(URIs: |deb )[^ ]*' /etc/apt/sources.list.d/*.sources \
    /etc/apt/sources.list 2>/dev/null | grep -v security | head -1 | sed -E 's/^(URIs: |deb )//')
  mirror=${mirror:-http://deb.debian.org/debian}
  mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" \
    > "$state/sources.list"
  "$tool" -q -o Dir::Etc::SourceList="$state/sources.list" -o Dir::Etc::SourceParts=/dev/null \
    -o Dir::State::Lists="$state/lists" -o Dir::Cache="$state/cache" \
    -o Debug::NoLocking=1 "$@"
}

fetch_kernel() {
  [ -f "$kdir/kver" ] && [ -f "$kdir/vmlinuz" ] && return
  say "fetching Debian $suite's kernel"
  rm -rf "$kdir.partial" && mkdir -p "$kdir.partial/deb"
  private_apt update >&2 || die "apt-get update for $suite failed"
  local pkg
  pkg=$(private_apt cache depends linux-image-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ {print $2; exit}') || true
  [ -n "$pkg" ] || die "no kernel package behind $suite's linux-image-amd64"
  (cd "$kdir.partial/deb" && private_apt download "$pkg" >&2) || die "apt-get download $pkg failed"
  dpkg-deb -x "$kdir.partial"/deb/*.deb "$kdir.partial/root"
  # Debian 13's package keeps its modules under /usr (merged /usr).
  local base=root kver
  [ -d "$kdir.partial/root/usr/lib/modules" ] && base=root/usr
  kver=$(ls "$kdir.partial/$base/lib/modules" | head -1)
  depmod -b "$kdir.partial/$base" "$kver"
  cp "$kdir.partial/root/boot/vmlinuz-$kver" "$kdir.partial/vmlinuz"
  echo "$kdir/$base/lib/modules" > "$kdir.partial/modules"
  rm -rf "$kdir.partial/deb"
  echo "$kver" > "$kdir.partial/kver"
  rm -rf "$kdir" && mv "$kdir.partial" "$kdir"
}

# The modules the initramfs loads, each after what it depends on.
initramfs_modules() {
  local moddir=$1 kver=$2 want m
  want=(virtio_pci virtio_net 9pnet_virtio 9p overlay)
  local -A seen=()
  add() {
    local name=$1 file deps d
    [ -n "${seen[$name]:-}" ] && return
    seen[$name]=1
    file=$(modinfo -b "${moddir%/lib/modules}" -k "$kver" -F filename "$name" 2>/dev/null) || return 0
    # A built-in module: "builtin" or "(builtin)", as kmod versions say it.
    case "$file" in (builtin*|"(builtin)"|"") return 0 ;; esac
    deps=$(modinfo -b "${moddir%/lib/modules}" -k "$kver" -F depends "$name" 2>/dev/null | tr ',' ' ')
    for d in $deps; do add "$d"; done
    echo "$file"
  }
  for m in "${want[@]}"; do add "$m"; done
}

build_initramfs() {
  [ -f "$kdir/initramfs.cpio.gz" ] && [ "$kdir/initramfs.cpio.gz" -nt "$0" ] && return
  say "building the initramfs for $(cat "$kdir/kver")"
  local work="$kdir/initramfs.d" moddir kver f i=0
  moddir=$(cat "$kdir/modules") kver=$(cat "$kdir/kver")
  rm -rf "$work" && mkdir -p "$work"/{bin,mods,proc,sys,dev,mnt/root,mnt/rw,newroot}
  cp /bin/busybox "$work/bin/busybox"
  for f in $(initramfs_modules "$moddir" "$kver"); do
    i=$((i + 1))
    case "$f" in
      *.xz) xz -dc "$f" > "$work/mods/$(printf %02d "$i")-$(basename "${f%.xz}")" ;;
      *.zst) zstd -dqc "$f" > "$work/mods/$(printf %02d "$i")-$(basename "${f%.zst}")" ;;
      *) cp "$f" "$work/mods/$(printf %02d "$i")-$(basename "$f")" ;;
    esac
  done
  cat > "$work/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in /mods/*.ko; do insmod "$m" 2>/dev/null; done
fail() { echo "vm-init: $*"; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose hostroot /mnt/root || fail "no 9p root"
mount -t tmpfs -o size=512m tmpfs /mnt/rw && mkdir -p /mnt/rw/upper /mnt/rw/work
mount -t overlay overlay -o lowerdir=/mnt/root,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work /newroot ||
  fail "no overlay"
mkdir -p /newroot/job && mount -t 9p -o trans=virtio,version=9p2000.L job /newroot/job || fail "no job dir"
mount --move /proc /newroot/proc; mount --move /sys /newroot/sys; mount --move /dev /newroot/dev
exec switch_root /newroot /bin/sh /job/guest.sh
INIT
  chmod +x "$work/init"
  (cd "$work" && find . | cpio -o -H newc --quiet | gzip -9) > "$kdir/initramfs.cpio.gz.partial"
  mv "$kdir/initramfs.cpio.gz.partial" "$kdir/initramfs.cpio.gz"
  rm -rf "$work"
}

# QEMU's command for a job directory; $accel is kvm or tcg.
qemu_args() {
  local job=$1 accel=$2 net="user,id=n0,restrict=on,net=10.0.2.0/24" p
  for p in "${forwards[@]}"; do
    net+=",guestfwd=tcp:10.0.2.100:$p-cmd:socat -t 3600 STDIO TCP:127.0.0.1:$p"
  done
  local cpu=max
  [ "$accel" = kvm ] && cpu=host
  local accel_opt="tcg,thread=multi"
  [ "$accel" = kvm ] && accel_opt=kvm
  printf '%s\0' qemu-system-x86_64 -accel "$accel_opt" -cpu "$cpu" -m "$memory" -smp "$cpus" \
    -kernel "$kdir/vmlinuz" -initrd "$kdir/initramfs.cpio.gz" \
    -append "console=ttyS0 panic=-1 quiet" \
    -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
    -virtfs "local,path=$job,mount_tag=job,security_model=none" \
    -netdev "$net" -device virtio-net-pci,netdev=n0 \
    -display none -serial "file:$job/console.log" -monitor none -no-reboot
}

# Boots the guest on job directory $1 with $2 (kvm or tcg), at most $3 s; the
# exit status of the job's script, 124 on timeout, 125 if it never ran.
boot() {
  local job=$1 accel=$2 limit=$3 waited=0 args=()
  while IFS= read -r -d '' a; do args+=("$a"); done < <(qemu_args "$job" "$accel")
  "${args[@]}" </dev/null >"$job/qemu.log" 2>&1 &
  qemu_pid=$!
  while kill -0 "$qemu_pid" 2>/dev/null; do
    if [ "$waited" -ge $((limit * 10)) ]; then
      kill -9 "$qemu_pid" 2>/dev/null || true
      wait "$qemu_pid" 2>/dev/null || true
      return 124
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  wait "$qemu_pid" 2>/dev/null || true
  qemu_pid=
  [ -f "$job/rc" ] || return 125
  return "$(cat "$job/rc")"
}

write_guest_side() {
  local job=$1 p
  {
    echo '#!/bin/sh'
    echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root'
    echo "mkdir -p /lib/modules; mount --bind '$(cat "$kdir/modules")' /lib/modules"
    echo 'mount -t tmpfs tmpfs /tmp; mount -t tmpfs tmpfs /run'
    # SPDK apps in the guest keep their trace buffer and DPDK its runtime
    # files in /dev/shm, which devtmpfs does not make.
    echo 'mkdir -p /dev/shm; mount -t tmpfs tmpfs /dev/shm'
    # What udev or systemd makes on a real host: bash's process
    # substitution (`< <(nvme list)` in SPDK's scripts) needs /dev/fd.
    echo 'ln -s /proc/self/fd /dev/fd; ln -s /proc/self/fd/0 /dev/stdin'
    echo 'ln -s /proc/self/fd/1 /dev/stdout; ln -s /proc/self/fd/2 /dev/stderr'
    echo 'ip link set lo up; ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0'
    for p in "${forwards[@]}"; do
      echo "socat -t 3600 TCP-LISTEN:$p,bind=127.0.0.1,reuseaddr,fork TCP:10.0.2.100:$p &"
    done
    echo 'mkdir -p /etc/nvme; [ -s /etc/nvme/hostnqn ] || nvme gen-hostnqn > /etc/nvme/hostnqn'
    echo 'cat /proc/sys/kernel/random/uuid > /etc/nvme/hostid'
    echo 'sleep 0.2'
    echo 'bash /job/script > /job/out 2>&1; echo $? > /job/rc.partial'
    echo 'sync; mv /job/rc.partial /job/rc; sync'
    echo 'poweroff -f'
  } > "$job/guest.sh"
}

accel_here() {
  if [ -f "$vm_root/accel" ]; then cat "$vm_root/accel"; return; fi
  local accel=tcg job
  if [ -w /dev/kvm ]; then
    job=$(mktemp -d "$vm_root/probe.XXXXXX")
    echo 'true' > "$job/script"
    write_guest_side "$job"
    if boot "$job" kvm 20; then accel=kvm; fi
    rm -rf "$job"
  fi
  echo "$accel" > "$vm_root/accel"
  echo "$accel"
}

prepare() {
  need_packages
  mkdir -p "$vm_root"
  fetch_kernel
  build_initramfs
  local accel
  accel=$(accel_here)
  if [ "$accel" = kvm ]; then
    say "KVM works here"
  else
    say "KVM does not work here: the guest runs under TCG (slow)"
  fi
}

case "$cmd" in
  prepare) prepare ;;
  run)
    [ -n "$script" ] && [ -f "$script" ] || die "run needs a script file (see --help)"
    prepare >/dev/null 2>&1 || prepare
    accel=$(accel_here)
    job=$(mktemp -d "$vm_root/job.XXXXXX")
    cp "$script" "$job/script"
    mkdir -p "$job/files"
    for f in "${files[@]}"; do
      [ -e "$f" ] || die "--file $f: no such file or directory"
      cp -rL "$f" "$job/files/"
    done
    write_guest_side "$job"
    status=0
    boot "$job" "$accel" "$timeout" || status=$?
    cp "$job/console.log" "$vm_root/last-console.log" 2>/dev/null || true
    [ -f "$job/out" ] && cat "$job/out"
    case $status in
      124) say "the guest's script did not end within ${timeout} s (stopped)" ;;
      125) say "the guest did not run the script; its console:"; tail -20 "$job/console.log" >&2 || true
           cat "$job/qemu.log" >&2 || true ;;
    esac
    rm -rf "$job"
    exit "$status"
    ;;
  *) die "usage: linux-host-vm.sh prepare|run ... (see --help)" ;;
esac
