//! Conflicts are refused with a clear message and harm nothing: a second
//! libpmemblk user of a pool file, a second target on the same shared-memory
//! id or listener address; and a bdev deleted, or a namespace or listener
//! removed, while a host does I/O: the host sees errors or a disconnect, the
//! target keeps serving and gives back its descriptors.

use crate::common;
use crate::nvme_tcp;

use common::*;
use nvme_tcp::{host, wire};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2016-06.io.spdk:conflicts";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:c0ff1c75-0000-4000-8000-000000000001";

/// A target serving a new pool at `pool` as `bdev` in `NQN`.
fn serving(pool: &Path, bdev: &str) -> (Target, u16) {
    let port = test_port();
    let t = Target::start(&our_nvmf_tgt(), &[]);
    add_pmem_bdev(&t, pool, bdev);
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    t.rpc_ok(&["nvmf_create_subsystem", NQN, "-a", "-s", "SPDK-CONFLICT"]);
    add_tcp_listener(&t, NQN, port);
    t.rpc_ok(&["nvmf_subsystem_add_ns", NQN, bdev]);
    (t, port)
}

/// Writes `fill` to block `lba` over the fabric and reads it back.
fn write_and_read_back(port: u16, lba: u64, fill: u8) {
    let (_admin, mut io) = host::io_queue(port, NQN, HOSTNQN);
    let sqe = wire::rw(wire::OPC_WRITE, 1, 1, lba, 1, 4096, wire::SGL_IN_CAPSULE);
    let (status, _) = host::command(&mut io, sqe, vec![fill; 4096]);
    assert_eq!(status, 0, "write of block {lba}");
    let (status, data) = host::read_blocks(&mut io, 2, lba, 1, 4096);
    assert_eq!(status, 0, "read of block {lba}");
    assert!(
        data.iter().all(|&b| b == fill),
        "block {lba} does not hold what was written"
    );
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A pool file another target serves is refused (libpmemblk's lock, named
/// in the error), by a second target and by the first one again; the first
/// keeps serving and the data stays.
#[test]
fn a_pool_file_in_use_is_refused_and_its_data_kept() {
    let _turn = beside_others();
    let dir = shm_dir();
    let pool = dir.path().join("shared.pool");
    let (mut first, port) = serving(&pool, "pmdk0");
    write_and_read_back(port, 3, 0xa1);

    let second = Target::start(&our_nvmf_tgt(), &[]);
    let out = second.rpc(&["bdev_pmem_create", "-n", "pmdk1", pool.to_str().unwrap()]);
    let text = output_text(&out);
    assert!(
        !out.status.success(),
        "a second target opened a pool in use:\n{text}"
    );
    assert!(
        text.contains("shared.pool") && text.contains("flock"),
        "the error does not say the pool is in use:\n{text}"
    );
    let out = first.rpc(&["bdev_pmem_create", "-n", "pmdk2", pool.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "the same target opened its pool twice:\n{}",
        output_text(&out)
    );
    drop(second);

    write_and_read_back(port, 4, 0xb2);
    assert!(first.stop().success());
    let p = spdk_pmem::pmem::Pool::open(&pool, Some(4096)).unwrap();
    let mut block = vec![0u8; 4096];
    p.read(3, &mut block).unwrap();
    assert!(block.iter().all(|&b| b == 0xa1), "block 3 lost its data");
}

/// A second target on the same shared-memory id, or asking for the same
/// listener address, is refused; the first keeps serving.
#[test]
fn a_second_target_on_the_same_shm_id_or_address_is_refused() {
    let _turn = beside_others();
    let dir = shm_dir();
    let (first, port) = serving(&dir.path().join("a.pool"), "pmdk0");

    let shm = first.shm_id.to_string();
    let mut same_shm = Target::spawn(&our_nvmf_tgt(), &["-i", &shm]);
    let status = same_shm.wait_exit(Duration::from_secs(60));
    assert!(
        !status.success(),
        "a second target started on shm id {shm}:\n{}",
        same_shm.log_text()
    );
    write_and_read_back(port, 1, 0x11);

    let second = Target::start(&our_nvmf_tgt(), &[]);
    second.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    second.rpc_ok(&["nvmf_create_subsystem", NQN, "-a"]);
    let out = tcp_listener_rpc(&second, "nvmf_subsystem_add_listener", NQN, port);
    let text = output_text(&out);
    assert!(
        !out.status.success(),
        "a second target listened on port {port}:\n{text}"
    );
    assert!(text.contains("address in use"), "{text}");
    write_and_read_back(port, 2, 0x22);
}

/// While a host keeps writing: delete the bdev, remove the namespace or
/// remove the listener: the host's commands fail or its connection ends
/// (for the listener, vendor/patches/0017: 20.07 only refused new
/// connections), and no new connection is accepted through a removed
/// listener. The target keeps serving RPC and its descriptors come back once
/// the host is gone.
#[test]
fn removing_what_a_host_is_using_fails_its_io_not_the_target() {
    let _turn = beside_others();
    for removal in [
        "bdev_pmem_delete",
        "nvmf_subsystem_remove_ns",
        "nvmf_subsystem_remove_listener",
    ] {
        let dir = shm_dir();
        let (mut t, port) = serving(&dir.path().join("busy.pool"), "pmdk0");
        let pid = t.child.as_ref().unwrap().id();
        let fds_before = open_fds(pid);
        let (admin, mut io) = host::io_queue(port, NQN, HOSTNQN);
        io.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let remove = |t: &Target| match removal {
            "bdev_pmem_delete" => t.rpc(&["bdev_pmem_delete", "pmdk0"]),
            "nvmf_subsystem_remove_ns" => t.rpc(&["nvmf_subsystem_remove_ns", NQN, "1"]),
            _ => tcp_listener_rpc(t, "nvmf_subsystem_remove_listener", NQN, port),
        };
        // Writes in a loop; the removal happens after the first ones.
        let mut failed = false;
        let mut removed = false;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut cid = 0u16;
        while Instant::now() < deadline {
            cid = cid.wrapping_add(1);
            let sqe = wire::rw(
                wire::OPC_WRITE,
                cid,
                1,
                (cid % 64) as u64,
                1,
                4096,
                wire::SGL_IN_CAPSULE,
            );
            if io
                .write_all(&wire::capsule(&sqe.0, vec![0x5a; 4096], Default::default(), 0).encode())
                .is_err()
            {
                failed = true;
                break;
            }
            let mut rsp = [0u8; 24];
            match io.read_exact(&mut rsp) {
                Err(_) => {
                    failed = true;
                    break;
                }
                Ok(())
                    if rsp[0] == wire::CAPSULE_RESP
                        && u16::from_le_bytes([rsp[22], rsp[23]]) >> 1 != 0 =>
                {
                    failed = true;
                    break;
                }
                Ok(()) => {}
            }
            if cid == 20 && !removed {
                let out = remove(&t);
                assert!(
                    out.status.success(),
                    "{removal}: {}\ntarget log:\n{}",
                    output_text(&out),
                    t.log_text()
                );
                removed = true;
            }
        }
        assert!(
            removed && failed,
            "{removal}: the host's writes went on succeeding for 20 s"
        );
        if removal == "nvmf_subsystem_remove_listener" {
            assert!(
                std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
                "{removal}: a new connection was accepted"
            );
        }
        drop(io);
        drop(admin);
        rpc_answers(&t.sock, Duration::from_secs(10)).unwrap();
        let status = t.child.as_mut().unwrap().try_wait().unwrap();
        assert!(status.is_none(), "{removal}: the target died: {status:?}");
        let deadline = Instant::now() + Duration::from_secs(15);
        while open_fds(pid) > fds_before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            open_fds(pid) <= fds_before,
            "{removal}: {} descriptors open, {fds_before} before",
            open_fds(pid)
        );
        assert!(t.stop().success(), "{removal}: {}", t.log_text());
    }
}

/// A listener removal that fails (the subsystem has no such listener) leaves
/// the address alone: 20.07 dropped the transport listener's reference
/// anyway, closing the port another subsystem listens on
/// (vendor/patches/0017).
#[test]
fn a_failed_listener_removal_leaves_another_subsystems_port_open() {
    let _turn = beside_others();
    let dir = shm_dir();
    let (t, port) = serving(&dir.path().join("kept.pool"), "pmdk0");
    let other = "nqn.2016-06.io.spdk:conflicts-other";
    t.rpc_ok(&["nvmf_create_subsystem", other, "-a"]);
    let out = tcp_listener_rpc(&t, "nvmf_subsystem_remove_listener", other, port);
    assert!(
        !out.status.success(),
        "removing a listener {other} does not have succeeded:\n{}",
        output_text(&out)
    );
    write_and_read_back(port, 5, 0xc3);
}
