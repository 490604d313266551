//! The two pmem bdev modules behind nvmf_tgt's unchanged RPCs: the Rust one
//! (the default) and SPDK 20.07's C one (`--pmem-module c`).
//! - A pool written through either module reads back the same through the
//!   other, over NVMe/TCP.
//! - What differs, seen by clients: the Rust module supports FLUSH and
//!   reports an unreadable block as an NVMe media error (SCT 2, SC 81h,
//!   Unrecovered Read Error), where the C module answers a generic Internal
//!   Device Error; `bdev_get_bdevs` names the module and its I/O threads.
//! - A pool in a file on disk is served by worker threads, a pool in
//!   /dev/shm inline; `--pmem-io-threads` overrides that, and a bad value is
//!   refused at start with what to give instead.

mod common;
#[allow(dead_code)]
mod nvme_tcp;

use common::*;
use nvme_tcp::{host, wire};
use spdk_pmem::pmem::Pool;
use std::path::Path;

const NQN: &str = "nqn.2016-06.io.spdk:modules";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:c0ff1c75-0000-4000-8000-000000000002";
/// NVMe status (SCT << 8 | SC) of a read of a block libpmemblk cannot read.
const MEDIA_ERROR: u16 = 0x281;
const INTERNAL_ERROR: u16 = 0x006;

fn serve(module: &str, pool: &Path, extra: &[&str]) -> (Target, u16) {
    let mut flags = vec!["--pmem-module", module];
    flags.extend_from_slice(extra);
    let t = Target::start(&our_nvmf_tgt(), &flags);
    let port = test_port();
    t.rpc_ok(&["bdev_pmem_create", "-n", "pmdk0", pool.to_str().unwrap()]);
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    t.rpc_ok(&["nvmf_create_subsystem", NQN, "-a", "-s", "SPDK-MODULES"]);
    add_tcp_listener(&t, NQN, port);
    t.rpc_ok(&["nvmf_subsystem_add_ns", NQN, "pmdk0"]);
    (t, port)
}

fn write_block(io: &mut std::net::TcpStream, cid: u16, lba: u64, fill: u8) {
    let sqe = wire::rw(wire::OPC_WRITE, cid, 1, lba, 1, 4096, wire::SGL_IN_CAPSULE);
    let (status, _) = host::command(io, sqe, vec![fill; 4096]);
    assert_eq!(status, 0, "write of block {lba}");
}

fn pmem_info(t: &Target) -> serde_json::Value {
    let bdevs = t.rpc_json(&["bdev_get_bdevs", "-b", "pmdk0"]);
    bdevs[0].clone()
}

#[test]
fn a_pool_written_through_one_module_reads_back_through_the_other() {
    let dir = shm_dir();
    let pool = dir.path().join("shared.pool");
    with_pool(&pool, 4096, 2048, |_| ());
    for (writer, reader, fill) in [("c", "rust", 0xc1u8), ("rust", "c", 0x5e)] {
        let (mut t, port) = serve(writer, &pool, &[]);
        let (_admin, mut io) = host::io_queue(port, NQN, HOSTNQN);
        for lba in [0u64, 1, 1000, 2047] {
            write_block(&mut io, lba as u16 + 1, lba, fill ^ lba as u8);
        }
        drop((_admin, io));
        t.stop();
        let (mut t, port) = serve(reader, &pool, &[]);
        let (_admin, mut io) = host::io_queue(port, NQN, HOSTNQN);
        for lba in [0u64, 1, 1000, 2047] {
            let (status, data) = host::read_blocks(&mut io, 9, lba, 1, 4096);
            assert_eq!(status, 0, "{reader} reading block {lba}");
            assert!(
                data.iter().all(|&b| b == fill ^ lba as u8),
                "block {lba} written by the {writer} module reads differently through the {reader} one"
            );
        }
        drop((_admin, io));
        t.stop();
    }
    let _held = POOL_FD_LOCK.lock().unwrap();
    assert!(Pool::check(&pool, Some(4096)).unwrap(), "pool consistent");
}

#[test]
fn the_rust_module_reports_a_bad_block_as_a_media_error_and_supports_flush() {
    let dir = shm_dir();
    for (module, expected, flush) in [("rust", MEDIA_ERROR, true), ("c", INTERNAL_ERROR, false)] {
        let pool = dir.path().join(format!("{module}.pool"));
        with_pool(&pool, 4096, 1024, |p| p.set_error(77).unwrap());
        let (mut t, port) = serve(module, &pool, &[]);
        let info = pmem_info(&t);
        assert_eq!(
            info["supported_io_types"]["flush"], flush,
            "{module}: {info:#}"
        );
        assert_eq!(info["product_name"], "pmemblk disk");
        let (_admin, mut io) = host::io_queue(port, NQN, HOSTNQN);
        let (status, _) = host::read_blocks(&mut io, 1, 77, 1, 4096);
        assert_eq!(status, expected, "{module}: read of the bad block");
        // The target keeps serving; writing the block heals it.
        write_block(&mut io, 2, 77, 0x77);
        let (status, data) = host::read_blocks(&mut io, 3, 77, 1, 4096);
        assert_eq!((status, data[0]), (0, 0x77), "{module}: healed block");
        let flush_cmd = wire::Sqe::new(wire::OPC_FLUSH, 4).nsid(1);
        assert_eq!(
            host::command(&mut io, flush_cmd, vec![]).0,
            0,
            "{module}: flush"
        );
        drop((_admin, io));
        t.stop();
    }
}

#[test]
fn pools_on_disk_get_worker_threads_and_pools_in_memory_are_served_inline() {
    let shm = shm_dir();
    let disk = tempfile::tempdir_in("/var/tmp").unwrap();
    // libpmemblk's BTT lanes: two per online CPU; more workers would wait.
    // SAFETY: sysconf only reads.
    let lanes = 2 * unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } as u64;
    for (i, (dir, flags, want)) in [
        (shm.path(), &[][..], 0),
        (disk.path(), &[][..], lanes),
        (shm.path(), &["--pmem-io-threads", "3"][..], 3),
        (disk.path(), &["--pmem-io-threads", "inline"][..], 0),
    ]
    .into_iter()
    .enumerate()
    {
        let pool = dir.join(format!("p{i}.pool"));
        let _ = std::fs::remove_file(&pool);
        with_pool(&pool, 4096, 1024, |_| ());
        let (mut t, port) = serve("rust", &pool, flags);
        let info = pmem_info(&t);
        let pmem = &info["driver_specific"]["pmem"];
        assert_eq!(pmem["module"], "pmem_rs", "{info:#}");
        assert_eq!(
            pmem["io_threads"],
            want,
            "{flags:?} {}: {info:#}",
            pool.display()
        );
        // perf over it: no I/O error, a mixed load on every placement.
        let (iops, _) = perf(NQN, port, "randrw", 1);
        assert!(iops > 0.0);
        t.stop();
    }
    let mut t = Target::spawn(&our_nvmf_tgt(), &["--pmem-io-threads", "many"]);
    let status = t.wait_exit(std::time::Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "{}", t.log_text());
    assert!(
        t.log_text().contains("give auto, inline (or 0)"),
        "{}",
        t.log_text()
    );
}

#[test]
fn the_c_module_stays_selectable_and_names_no_module() {
    let dir = shm_dir();
    let pool = dir.path().join("c.pool");
    with_pool(&pool, 4096, 1024, |_| ());
    let (mut t, port) = serve("c", &pool, &[]);
    let info = pmem_info(&t);
    assert!(
        info["driver_specific"]["pmem"]["module"].is_null(),
        "{info:#}"
    );
    let (iops, _) = perf(NQN, port, "randwrite", 1);
    assert!(iops > 0.0);
    t.rpc_ok(&["bdev_pmem_delete", "pmdk0"]);
    assert_eq!(t.rpc_json(&["bdev_get_bdevs"]), serde_json::json!([]));
    t.stop();
}
