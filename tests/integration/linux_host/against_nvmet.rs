//! The same checks against Linux's own nvmet, the control: a check that
//! fails on ours and passes there is ours to fix.

use super::*;

/// Linux's own target as the second control: the same checks against the
/// guest kernel's nvmet (configfs, a file-backed namespace on the guest's
/// tmpfs, buffered: 6.1's tmpfs has no O_DIRECT, on the guest's own
/// 127.0.0.1), so that a check failing only
/// against ours is ours to fix. Its "restart" takes the port down (its
/// connections go) and makes it again 3 s later;
/// keep-alive under SIGSTOP does not apply to a target in the kernel.
const NVMET: &str = r#"
cfs=/sys/kernel/config/nvmet
nvmet_setup() {
  modprobe nvmet; modprobe nvmet-tcp
  mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
  truncate -s 64M /tmp/nvmet-1.img
  mkdir $cfs/subsystems/$NQN
  echo 1 > $cfs/subsystems/$NQN/attr_allow_any_host
  echo $SERIAL > $cfs/subsystems/$NQN/attr_serial
  mkdir $cfs/subsystems/$NQN/namespaces/1
  echo /tmp/nvmet-1.img > $cfs/subsystems/$NQN/namespaces/1/device_path
  echo 1 > $cfs/subsystems/$NQN/namespaces/1/buffered_io
  echo 1 > $cfs/subsystems/$NQN/namespaces/1/enable
  mkdir $cfs/subsystems/$GUARDED
  nvmet_port_up $1
}
nvmet_port_up() {
  mkdir $cfs/ports/1
  echo tcp > $cfs/ports/1/addr_trtype; echo ipv4 > $cfs/ports/1/addr_adrfam
  echo 127.0.0.1 > $cfs/ports/1/addr_traddr; echo $1 > $cfs/ports/1/addr_trsvcid
  ln -s $cfs/subsystems/$NQN $cfs/ports/1/subsystems/$NQN
  ln -s $cfs/subsystems/$GUARDED $cfs/ports/1/subsystems/$GUARDED
}
nvmet_mark() { dmesg -c >/dev/null; echo marked; }
nvmet_errors_since_mark() {
  local e; e=$(dmesg | grep -i -e error -e fail || true)
  echo "$(printf '%s' "$e" | grep -c . || true) $(printf '%s' "$e" | tr '\n' '|')"
}
nvmet_restart() {
  local port; port=$(cat $cfs/ports/1/addr_trsvcid)
  rm $cfs/ports/1/subsystems/*; rmdir $cfs/ports/1; sleep 3
  nvmet_port_up $port; echo restarted
}
nvmet_add_ns() {
  truncate -s 32M /tmp/nvmet-2.img
  mkdir $cfs/subsystems/$NQN/namespaces/2
  echo /tmp/nvmet-2.img > $cfs/subsystems/$NQN/namespaces/2/device_path
  echo 1 > $cfs/subsystems/$NQN/namespaces/2/buffered_io
  echo 1 > $cfs/subsystems/$NQN/namespaces/2/enable && echo added
}
nvmet_resize_ns() {
  truncate -s 64M /tmp/nvmet-2.img
  echo 1 > $cfs/subsystems/$NQN/namespaces/2/revalidate_size && echo resized
}
nvmet_remove_ns() {
  echo 0 > $cfs/subsystems/$NQN/namespaces/$1/enable; rmdir $cfs/subsystems/$NQN/namespaces/$1
}
nvmet_sigstop() { echo n/a; }
nvmet_add_host() {
  mkdir $cfs/hosts/$1; ln -s $cfs/hosts/$1 $cfs/subsystems/$GUARDED/allowed_hosts/$1
}
"#;

#[test]
fn the_same_checks_pass_against_linux_nvmet() {
    let _turn = beside_others();
    if !vm::plain_suite() {
        return;
    }
    // The guest's own port: nothing of this machine's is reached.
    let port = 4420;
    let script = format!(
        r#"
{GUEST_START}
NQN={NQN} GUARDED={GUARDED} SERIAL={SERIAL}
{CHECKS}
{NVMET}
nvmet_setup {port}
checks nvmet {port}
echo "== done"
"#
    );
    let run = vm::run(&script, &[], Duration::from_secs(600), |step| {
        panic!("the nvmet guest asked the host for {step:?}")
    });
    assert_eq!(run.status, 0, "the guest's script failed:\n{}", run.output);
    assert_checked(&run, "nvmet", port, None);
    eprintln!("{}", run.output);
}
