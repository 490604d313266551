//! Many namespaces and subsystems, and rounds of connects and disconnects:
//! the target's descriptors come back.

use super::*;

/// 32 namespaces in one subsystem and two more subsystems: `nvme
/// connect-all` through the discovery service (whose log names the
/// listener's own address) finds all three and all 34 namespaces; then 50
/// connect/disconnect rounds leave the target with the descriptors it had
/// (each queue pair holds a socket; SPDK 20.07 has no RPC that lists
/// controllers or queue pairs) and no more than 16 MiB more resident memory.
#[test]
fn many_namespaces_subsystems_and_connect_rounds() {
    let _turn = beside_others();
    if !vm::plain_suite() {
        return;
    }
    let port = test_port();
    let t = Target::start(&our_nvmf_tgt(), &[]);
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    for (nqn, namespaces) in [
        (NQN, 32),
        ("nqn.2016-06.io.spdk:two", 1),
        ("nqn.2016-06.io.spdk:three", 1),
    ] {
        t.rpc_ok(&["nvmf_create_subsystem", nqn, "-a", "-s", SERIAL]);
        add_tcp_listener(&t, nqn, port);
        for i in 0..namespaces {
            let name = format!("{}m{i}", nqn.rsplit(':').next().unwrap());
            // 1 MiB each: 34 of them beside the other tests' targets.
            t.rpc_ok(&["bdev_malloc_create", "-b", &name, "1", "4096"]);
            t.rpc_ok(&["nvmf_subsystem_add_ns", nqn, &name]);
        }
    }
    let pid = t.child.as_ref().unwrap().id();
    let mut before = None;
    let mut after = None;
    let script = format!(
        r#"
{GUEST_START}
echo "== connect-all"
nvme connect-all -t tcp -a 127.0.0.1 -s {port}
count() {{ ls /dev | grep -cE '^nvme[0-9]+n[0-9]+$'; }}
all() {{ [ "$(count)" -eq 34 ]; }}
wait_for "34 namespaces" 60 all || true
echo "namespaces $(count)"
echo "subsystems $(cat /sys/class/nvme/nvme*/subsysnqn | sort -u | tr '\n' ' ')"
nvme disconnect-all
none() {{ [ "$(count)" -eq 0 ]; }}
wait_for "no namespace left" 30 none
echo "== rounds"
step before
i=0
while [ $i -lt 50 ]; do
  nvme connect -t tcp -a 127.0.0.1 -s {port} -n {NQN} >/dev/null
  nvme disconnect -n {NQN} >/dev/null
  i=$((i + 1))
done
echo "rounds $i"
step after
"#
    );
    let run = vm::run(&script, &[port], Duration::from_secs(600), |step| {
        match step {
            "before" => {
                // The disconnect-all's sockets may still be closing.
                std::thread::sleep(Duration::from_secs(2));
                before = Some(footprint(pid));
            }
            "after" => {
                let want = before.as_ref().map(|b| b.fds).unwrap_or(0);
                after = Some(fds_settled(
                    pid,
                    want,
                    Duration::from_secs(20),
                    Duration::from_millis(200),
                ));
            }
            other => panic!("unknown step {other:?}"),
        }
        "measured".into()
    });
    assert_eq!(
        run.status,
        0,
        "the guest's script failed:\n{}\n{}",
        run.output,
        t.log_text()
    );
    let all = run.section("connect-all");
    assert!(all.contains("namespaces 34"), "{all}");
    for nqn in [NQN, "nqn.2016-06.io.spdk:two", "nqn.2016-06.io.spdk:three"] {
        assert!(all.contains(nqn), "connect-all did not reach {nqn}:\n{all}");
    }
    assert!(run.section("rounds").contains("rounds 50"));
    let (before, after) = (before.unwrap(), after.unwrap());
    assert_eq!(after.fds, before.fds, "descriptors after 50 rounds");
    assert!(
        after.rss_kib < before.rss_kib + 16 * 1024,
        "resident memory grew from {} to {} KiB in 50 rounds",
        before.rss_kib,
        after.rss_kib
    );
    eprintln!(
        "50 rounds: descriptors {} -> {}, resident {} -> {} KiB",
        before.fds, after.fds, before.rss_kib, after.rss_kib
    );
}
