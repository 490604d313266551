//! The Linux kernel's NVMe/TCP host (nvme-cli, Debian 12's 6.1 kernel in a
//! QEMU guest the test boots, `scripts/linux-host-vm.sh`) against our
//! target, with two controls: SPDK's C target of the same build, and Linux's
//! own nvmet in the guest. Every target gets the same checks (`CHECKS`):
//! - `nvme discover` lists the subsystem with the listener's own address;
//!   `nvme connect`; sysfs shows the serial (and SPDK's model and firmware
//!   revision on SPDK's targets); ours' `nvme id-ctrl` and `id-ns` equal
//!   the C target's field by field, except the fields listed in
//!   `ALLOWED_DIFFERENCES` with their reason;
//! - fio randrw QD 32 with crc32c verify (on ours also with
//!   `--pmem-module c`);
//! - ext4: files written, unmounted, remounted, checksums equal; the target
//!   stopped and started again from `save_config` while the host keeps its
//!   controller: the kernel reconnects by itself and the files read back;
//! - a namespace added while the host is connected to a subsystem created
//!   without `-m` appears without a rescan, grows when it is resized (a
//!   logical volume: SPDK's pmem pools have a fixed size), and goes when
//!   removed;
//! - `nvme reset`; the target stopped with SIGSTOP: the host's keep-alive
//!   timeout fires; SIGCONT: it reconnects;
//! - a host NQN not allowed is refused (the target's log names it), and
//!   admitted after `nvmf_subsystem_add_host`;
//! - a normal connect logs no `*ERROR*` line on the target (vendor patch
//!   0029: Identify CNS 0x06);
//! - in a second boot: 32 namespaces and three subsystems all appear through
//!   `nvme connect-all`, and 50 connect/disconnect rounds leave no
//!   descriptor and no memory behind;
//! - in a third: an RBD namespace and a write-back-cache namespace in front
//!   of RBD (a real one-node Ceph) pass fio's verify from the kernel, and
//!   after a flush the host reads what `rbd export` holds;
//! - in a fourth: the same checks against nvmet.
//!
//! The pmem boots run side by side (a TCG guest takes one CPU); the Ceph
//! one runs alone. The VM's traffic reaches only the named ports of this
//! machine's 127.0.0.1. Plain suite only (a sanitized SPDK does not change
//! what the kernel sees, and the boot is the slow part).

use crate::common;
use common::vm::{self, GuestRun};
use common::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod against_nvmet;
mod ceph_namespaces;
mod many_namespaces;

const NQN: &str = "nqn.2016-06.io.spdk:cnode1";

const GUARDED: &str = "nqn.2016-06.io.spdk:guarded";

const SERIAL: &str = "SPDK00000000000001";

/// id-ctrl fields that differ between our target and the C one, and why.
const ALLOWED_DIFFERENCES: &[(&str, &str)] = &[];

/// What every guest script here starts with: stop at the first failure,
/// saying where; the host's NVMe/TCP driver; and `fio_verify DEV SIZE`,
/// randrw QD 32 with crc32c verify, printing fio's error count (terse
/// field 5).
const GUEST_START: &str = r#"
set -e
trap 'echo "FAILED at line $LINENO"' ERR
modprobe nvme-tcp
fio_verify() {
  fio --name=verify --filename=$1 --rw=randrw --bs=4k --iodepth=32 --ioengine=libaio \
    --direct=1 --size=$2 --verify=crc32c --do_verify=1 --verify_fatal=1 --output-format=terse \
    --terse-version=3 | cut -d';' -f5
}
"#;

/// A pmem namespace `pmem0` in subsystem NQN (created without `-m`) on
/// `port`, and the guarded subsystem (no host allowed) on the same port.
fn configure(t: &Target, pool: &Path, port: u16) {
    let pool_s = pool.to_str().unwrap();
    if !pool.exists() {
        t.rpc_ok(&["bdev_pmem_create_pool", pool_s, "64", "4096"]);
    }
    t.rpc_ok(&["bdev_pmem_create", "-n", "pmem0", pool_s]);
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    t.rpc_ok(&["nvmf_create_subsystem", NQN, "-a", "-s", SERIAL]);
    add_tcp_listener(t, NQN, port);
    t.rpc_ok(&["nvmf_subsystem_add_ns", NQN, "pmem0"]);
    t.rpc_ok(&["nvmf_create_subsystem", GUARDED, "-s", "SPDK-GUARDED"]);
    add_tcp_listener(t, GUARDED, port);
}

/// The checks every target gets, as a shell function: `checks LABEL PORT`
/// prints sections named "LABEL ..." that the test reads (`Checked`);
/// what only the target's side can do (restart it, add a namespace, stop
/// it, allow a host) it asks `act LABEL ...` for: a step the test does on
/// the host for SPDK's targets, configfs in the guest for Linux's nvmet.
const CHECKS: &str = r#"
connect() { nvme connect -t tcp -a 127.0.0.1 -s $1 -n $2 --reconnect-delay=1 $3; }
ctrl_of() { basename $(dirname $(grep -l "^$1\$" /sys/class/nvme/nvme*/subsysnqn | head -1)); }
has_ns() { c=$(ctrl_of $1) && test -b /dev/${c}n1; }
live() { [ "$(cat /sys/class/nvme/$c/state)" = live ]; }
not_live() { ! live; }
act() { local who=$1; shift; if [ $who = nvmet ]; then nvmet_"$@"; else step "$who $*"; fi; }
checks() {
  local label=$1 port=$2
  echo "== $label discover"; nvme discover -t tcp -a 127.0.0.1 -s $port
  act $label mark >/dev/null
  connect $port $NQN "--keep-alive-tmo=5"
  wait_for "the $label namespace" 10 has_ns $NQN
  c=$(ctrl_of $NQN)
  echo "== $label errors at connect"; act $label errors_since_mark
  echo "== $label sysfs"
  for f in serial model firmware_rev transport state; do echo "$f=$(cat /sys/class/nvme/$c/$f | sed 's/ *$//')"; done
  echo "== $label id-ctrl"; nvme id-ctrl /dev/$c -o json
  echo "== $label id-ns"; nvme id-ns /dev/${c}n1 -o json
  echo "== $label fio errors"; fio_verify /dev/${c}n1 16M

  echo "== $label ext4"
  mkfs.ext4 -q -F /dev/${c}n1
  mkdir -p /mnt/t && mount /dev/${c}n1 /mnt/t
  for i in 1 2 3 4; do head -c $((i * 1048576)) /dev/urandom > /mnt/t/f$i; done
  (cd /mnt/t && sha256sum f1 f2 f3 f4) > /tmp/sums
  umount /mnt/t && mount /dev/${c}n1 /mnt/t
  (cd /mnt/t && sha256sum -c /tmp/sums)
  umount /mnt/t
  echo "restart: $(act $label restart)"
  if wait_for "the controller to notice the restart" 30 not_live; then echo "seen down"; fi
  wait_for "the kernel to reconnect after the restart" 60 live
  mount /dev/${c}n1 /mnt/t
  (cd /mnt/t && sha256sum -c /tmp/sums)
  umount /mnt/t

  echo "== $label hot add"
  echo "add_ns: $(act $label add_ns)"
  wait_for "the added namespace to appear" 20 test -b /dev/${c}n2
  echo "sees n2"
  local before; before=$(cat /sys/block/${c}n2/size)
  echo "resize: $(act $label resize_ns)"
  grown() { [ "$(cat /sys/block/${c}n2/size)" -gt "$before" ]; }
  wait_for "the resized namespace's new size" 20 grown
  echo "n2 sectors $before -> $(cat /sys/block/${c}n2/size)"
  act $label remove_ns 2 >/dev/null
  wait_for "the removed namespace to go" 20 test ! -e /dev/${c}n2
  echo "n2 gone"

  echo "== $label reset"
  nvme reset /dev/$c
  wait_for "live after the reset" 30 live
  echo "live"

  echo "== $label keep-alive"
  if [ "$(act $label sigstop)" = n/a ]; then
    echo "n/a"
  else
    wait_for "the keep-alive timeout to fire" 30 not_live
    echo "not live while stopped: $(cat /sys/class/nvme/$c/state)"
    act $label sigcont >/dev/null
    wait_for "the reconnect after SIGCONT" 60 live
    echo "live again"
  fi
  nvme disconnect -n $NQN >/dev/null

  echo "== $label allow-list"
  if connect $port $GUARDED 2>&1; then echo "admitted unexpectedly"; return 1; fi
  echo "refused"
  act $label add_host $(cat /etc/nvme/hostnqn) >/dev/null
  connect $port $GUARDED
  echo "admitted"
  nvme disconnect -n $GUARDED >/dev/null
}
"#;

/// The guest's side: ours and the C target get every check; ours with
/// SPDK's C pmem module gets fio's.
fn guest_script(c_port: u16, cmod_port: u16, port: u16) -> String {
    format!(
        r#"
{GUEST_START}
NQN={NQN} GUARDED={GUARDED}
{CHECKS}
echo "== hostnqn"; cat /etc/nvme/hostnqn
checks c {c_port}

# Ours with SPDK's C pmem module.
connect {cmod_port} $NQN
wait_for "the namespace of ours with the C pmem module" 10 has_ns $NQN
echo "== cmod fio errors"; fio_verify /dev/$(ctrl_of $NQN)n1 16M
nvme disconnect -n $NQN >/dev/null

checks ours {port}
echo "== done"
"#
    )
}

/// A guest's `nvme ... -o json` output as a map of fields.
fn fields(run: &GuestRun, section: &str) -> BTreeMap<String, serde_json::Value> {
    let text = run.section(section);
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{section}: {e}:\n{text}"));
    v.as_object()
        .unwrap_or_else(|| panic!("{section} is not an object"))
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn differences(
    ours: &BTreeMap<String, serde_json::Value>,
    c: &BTreeMap<String, serde_json::Value>,
) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = ours.keys().chain(c.keys()).collect();
    keys.into_iter()
        .filter(|k| ours.get(*k) != c.get(*k))
        .map(|k| format!("{k}: ours {:?}, C {:?}", ours.get(k), c.get(k)))
        .collect()
}

/// A target of SPDK's the guest checks: what `act LABEL ...` asks of it.
struct Checked {
    binary: PathBuf,
    target: Target,
    saved: PathBuf,
    mark: usize,
}

impl Checked {
    fn start(binary: PathBuf, dir: &Path, label: &str, port: u16, extra: &[&str]) -> Checked {
        let target = Target::start(&binary, extra);
        configure(&target, &dir.join(format!("{label}.pool")), port);
        Checked {
            binary,
            target,
            saved: dir.join(format!("{label}-saved.json")),
            mark: 0,
        }
    }

    fn answer(&mut self, step: &str) -> String {
        let (name, arg) = step.split_once(' ').unwrap_or((step, ""));
        match name {
            "mark" => {
                self.mark = self.target.log_text().len();
                "marked".into()
            }
            "errors_since_mark" => {
                let log = self.target.log_text();
                let errors: Vec<&str> = log[self.mark.min(log.len())..]
                    .lines()
                    .filter(|l| l.contains("*ERROR*"))
                    .collect();
                format!("{} {}", errors.len(), errors.join(" | "))
            }
            "restart" => {
                std::fs::write(&self.saved, self.target.rpc_ok(&["save_config"])).unwrap();
                assert!(self.target.stop().success(), "{}", self.target.log_text());
                self.target =
                    Target::start(&self.binary, &["--json", self.saved.to_str().unwrap()]);
                "restarted".into()
            }
            // A logical volume: the module of SPDK's that resizes.
            "add_ns" => {
                let t = &self.target;
                t.rpc_ok(&["bdev_malloc_create", "-b", "base1", "64", "4096"]);
                t.rpc_ok(&["bdev_lvol_create_lvstore", "base1", "lvs1"]);
                t.rpc_ok(&["bdev_lvol_create", "-l", "lvs1", "lv1", "16"]);
                // An error goes back to the guest, whose wait then fails
                // with the rest of what it saw.
                answer_of(&t.rpc(&["nvmf_subsystem_add_ns", NQN, "lvs1/lv1"]), "added")
            }
            "resize_ns" => answer_of(
                &self.target.rpc(&["bdev_lvol_resize", "lvs1/lv1", "32"]),
                "resized",
            ),
            "remove_ns" => {
                self.target.rpc_ok(&["nvmf_subsystem_remove_ns", NQN, arg]);
                "removed".into()
            }
            "sigstop" | "sigcont" => {
                let signal = if name == "sigstop" {
                    libc::SIGSTOP
                } else {
                    libc::SIGCONT
                };
                let pid = self.target.child.as_ref().unwrap().id() as i32;
                // SAFETY: kill(2) on our own child's pid.
                unsafe { libc::kill(pid, signal) };
                name.into()
            }
            "add_host" => {
                self.target
                    .rpc_ok(&["nvmf_subsystem_add_host", GUARDED, arg]);
                "added".into()
            }
            other => panic!("the guest asked for an unknown step {other:?}"),
        }
    }
}

/// `done`, or what failed, for the guest to print.
fn answer_of(out: &std::process::Output, done: &str) -> String {
    if out.status.success() {
        done.into()
    } else {
        format!("FAILED: {}", output_text(out).replace('\n', " "))
    }
}

/// What every target's `checks` must show; `spdk`: one of SPDK's targets
/// (SPDK's sysfs strings, keep-alive under SIGSTOP, and its log names the
/// refused host).
fn assert_checked(run: &GuestRun, label: &str, port: u16, spdk: Option<&Target>) {
    let section = |name: &str| run.section(&format!("{label} {name}"));
    let discover = section("discover");
    for want in [
        format!("subnqn:  {NQN}"),
        "traddr:  127.0.0.1".to_string(),
        format!("trsvcid: {port}"),
        "trtype:  tcp".to_string(),
    ] {
        assert!(
            discover.contains(&want),
            "{label}: discovery lacks {want:?}:\n{discover}"
        );
    }
    let sysfs = section("sysfs");
    let mut wanted = vec![
        format!("serial={SERIAL}"),
        "transport=tcp".to_string(),
        "state=live".to_string(),
    ];
    if spdk.is_some() {
        wanted.push("model=SPDK bdev Controller".to_string());
        wanted.push("firmware_rev=20.07".to_string());
    }
    for want in wanted {
        assert!(
            sysfs.lines().any(|l| l == want),
            "{label}: sysfs lacks {want:?}:\n{sysfs}"
        );
    }
    let errors = section("errors at connect");
    assert!(
        errors.starts_with("0 "),
        "{label}: a normal Linux connect logged errors: {errors}"
    );
    assert_eq!(
        section("fio errors").trim(),
        "0",
        "{label}:\n{}",
        run.output
    );
    let ext4 = section("ext4");
    assert_eq!(
        ext4.matches(": OK").count(),
        8,
        "{label}: checksums:\n{ext4}"
    );
    assert!(
        ext4.contains("restart: restarted") && ext4.contains("seen down"),
        "{label}: {ext4}"
    );
    let hot = section("hot add");
    assert!(
        hot.contains("sees n2") && hot.contains("resize: resized") && hot.contains("n2 gone"),
        "{label}: {hot}"
    );
    assert!(section("reset").contains("live"), "{label}");
    let ka = section("keep-alive");
    let want = if spdk.is_some() { "live again" } else { "n/a" };
    assert!(ka.contains(want), "{label}: keep-alive:\n{ka}");
    let allow = section("allow-list");
    assert!(
        allow.contains("refused") && allow.contains("admitted"),
        "{label}: {allow}"
    );
    if let Some(target) = spdk {
        let hostnqn = run.section("hostnqn").trim().to_string();
        let log = target.log_text();
        assert!(
            log.contains(&hostnqn),
            "{label}: the target's log does not name the refused host {hostnqn}:\n{log}"
        );
    }
}

#[test]
fn the_linux_kernel_host_connects_and_does_io() {
    let _turn = beside_others();
    if !vm::plain_suite() {
        return;
    }
    let dir = shm_dir();
    let (c_port, cmod_port, port) = (test_port(), test_port(), test_port());
    let mut c = Checked::start(c_nvmf_tgt(), dir.path(), "c", c_port, &[]);
    let cmod = Target::start(&our_nvmf_tgt(), &["--pmem-module", "c"]);
    configure(&cmod, &dir.path().join("cmod.pool"), cmod_port);
    let mut ours = Checked::start(our_nvmf_tgt(), dir.path(), "ours", port, &[]);
    let run = vm::run(
        &guest_script(c_port, cmod_port, port),
        &[c_port, cmod_port, port],
        Duration::from_secs(900),
        |step| {
            let (who, what) = step.split_once(' ').unwrap_or((step, ""));
            match who {
                "c" => c.answer(what),
                "ours" => ours.answer(what),
                other => panic!("the guest asked a step of an unknown target {other:?}"),
            }
        },
    );
    assert_eq!(
        run.status,
        0,
        "the guest's script failed:\n{}\nour target's log:\n{}\nthe C target's log:\n{}",
        run.output,
        ours.target.log_text(),
        c.target.log_text()
    );
    assert_checked(&run, "c", c_port, Some(&c.target));
    assert_checked(&run, "ours", port, Some(&ours.target));

    // Identify, field by field against the C target.
    let mut unexplained = Vec::new();
    for (ours, c) in [("ours id-ctrl", "c id-ctrl"), ("ours id-ns", "c id-ns")] {
        for d in differences(&fields(&run, ours), &fields(&run, c)) {
            let field = d.split(':').next().unwrap().to_string();
            if !ALLOWED_DIFFERENCES.iter().any(|(f, _)| *f == field) {
                unexplained.push(format!("{ours}: {d}"));
            }
        }
    }
    assert!(
        unexplained.is_empty(),
        "Identify differs from the C target's:\n{}",
        unexplained.join("\n")
    );
    assert_eq!(run.section("cmod fio errors").trim(), "0", "{}", run.output);
    eprintln!("{}", run.output);
}
