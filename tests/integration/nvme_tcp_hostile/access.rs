//! Who may connect and who may configure: allowed hosts and the RPC
//! socket's owner.

use super::*;

const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-000000000001";
const HOST_B: &str = "nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-4000-8000-000000000002";

/// Whether `hostnqn` may connect to `subnqn` (an admin Connect succeeds).
fn admitted(port: u16, subnqn: &str, hostnqn: &str) -> bool {
    connect_as(port, subnqn, hostnqn, 0, 0xFFFF).1 == 0
}

/// SPDK's own initiator (bdev_nvme in bdevperf) attaching as `hostnqn` and
/// verifying data: whether it ran.
fn bdev_nvme_as(dir: &Path, port: u16, subnqn: &str, hostnqn: &str) -> bool {
    let config = serde_json::json!({"subsystems": [{"subsystem": "bdev", "config": [{
        "method": "bdev_nvme_attach_controller",
        "params": {"name": "Nvme0", "trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1",
                   "trsvcid": port.to_string(), "subnqn": subnqn, "hostnqn": hostnqn}}]}]});
    let path = dir.join("initiator-host.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let out = crate::common::command(spdk_tool("test/bdev/bdevperf/bdevperf"))
        .args(["--json", path.to_str().unwrap()])
        .args([
            "-q", "8", "-o", "4096", "-w", "verify", "-t", "1", "-m", "0x2",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = output_text(&out);
    if out.status.success() {
        check_bdevperf(out.status, &text);
    }
    out.status.success()
}

/// A subsystem without allow-any-host admits only the host NQNs on its list,
/// for SPDK's own initiator and a raw Connect alike; removing a host, and
/// switching allow-any-host on and off, take effect for new connections; the
/// 2018 construct_nvmf_subsystem's `hosts` list is enforced the same way.
#[test]
fn only_listed_hosts_are_admitted() {
    let _shared = beside_others();
    let dir = shm_dir();
    let port = test_port();
    let mut t = Target::start(&fuzz_target(), &[]);
    let nqn = "nqn.2016-06.io.spdk:private";
    let pool = dir.path().join("private.pool");
    add_pmem_bdev(&t, &pool, "private0");
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    t.rpc_ok(&["nvmf_create_subsystem", nqn, "-s", "SPDK-PRIV"]);
    add_tcp_listener(&t, nqn, port);
    t.rpc_ok(&["nvmf_subsystem_add_ns", nqn, "private0"]);
    t.rpc_ok(&["nvmf_subsystem_add_host", nqn, HOST_A]);

    assert!(admitted(port, nqn, HOST_A), "a listed host was refused");
    assert!(
        !admitted(port, nqn, HOST_B),
        "an unlisted host was admitted"
    );
    assert!(
        bdev_nvme_as(dir.path(), port, nqn, HOST_A),
        "bdev_nvme as a listed host failed"
    );
    // Refused by the target's host check, not failing for another reason.
    let refusals = |t: &Target| t.log_text().matches("does not allow host").count();
    let before = refusals(&t);
    assert!(
        !bdev_nvme_as(dir.path(), port, nqn, HOST_B),
        "bdev_nvme as an unlisted host ran"
    );
    assert!(
        refusals(&t) > before,
        "bdev_nvme failed, but not at the host check:\n{}",
        t.log_text()
    );

    t.rpc_ok(&["nvmf_subsystem_remove_host", nqn, HOST_A]);
    assert!(!admitted(port, nqn, HOST_A), "a removed host was admitted");
    t.rpc_ok(&["nvmf_subsystem_allow_any_host", "-e", nqn]);
    assert!(
        admitted(port, nqn, HOST_B),
        "allow-any-host did not admit a host"
    );
    t.rpc_ok(&["nvmf_subsystem_allow_any_host", "-d", nqn]);
    assert!(
        !admitted(port, nqn, HOST_B),
        "allow-any-host -d still admitted a host"
    );

    // The article's 2018 method, with a hosts list.
    let legacy = "nqn.2016-06.io.spdk:legacy";
    let pool = dir.path().join("legacy.pool");
    add_pmem_bdev(&t, &pool, "legacy0");
    if fuzz_target() == our_nvmf_tgt() {
        t.jsonrpc_ok(
            "construct_nvmf_subsystem",
            Some(serde_json::json!({
                "nqn": legacy,
                "listen_addresses": [{"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": port.to_string(), "adrfam": "IPv4"}],
                "hosts": [HOST_A], "allow_any_host": false, "serial_number": "SPDK0002",
                "namespaces": [{"bdev_name": "legacy0", "nsid": 1}], "max_namespaces": 0
            })),
        );
        assert!(
            admitted(port, legacy, HOST_A),
            "construct_nvmf_subsystem: a listed host was refused"
        );
        assert!(
            !admitted(port, legacy, HOST_B),
            "construct_nvmf_subsystem: an unlisted host was admitted"
        );
    }
    assert!(t.stop().success());
}

/// vendor/patches/0016: the RPC socket, which controls the whole target, is
/// connectable by its owner only, under the default umask and a permissive
/// one; another local user (nobody) is refused.
#[test]
fn the_rpc_socket_is_for_its_owner_only() {
    let _turn = beside_others();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for umask in [0o022, 0o002, 0o000] {
        let mut t = Target::start_with_umask(&fuzz_target(), &[], umask);
        let sock = t.sock.clone();
        // Let everyone enter the socket's directory: only its mode decides.
        std::fs::set_permissions(
            sock.parent().unwrap(),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let meta = std::fs::metadata(&sock).unwrap();
        // connect(2) on a Unix socket needs write permission on it.
        assert_eq!(
            meta.mode() & 0o022,
            0,
            "umask {umask:03o}: group or others may write the socket (mode {:o})",
            meta.mode() & 0o7777
        );
        // SAFETY: geteuid has no preconditions.
        assert_eq!(meta.uid(), unsafe { libc::geteuid() });
        // SAFETY: as above.
        if unsafe { libc::geteuid() } == 0 {
            let other = crate::common::command("python3")
                .args(["-c", "import os, socket, sys\nos.setgid(65534); os.setuid(65534)\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect(sys.argv[1]); print('connected')\nexcept PermissionError:\n    print('refused')"])
                .arg(&sock)
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&other.stdout).trim(),
                "refused",
                "umask {umask:03o}: {}",
                output_text(&other)
            );
        }
        rpc_answers(&t.sock, Duration::from_secs(10)).unwrap();
        assert!(t.stop().success());
    }
}
