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
//! - Those workers yield to a busy reactor: writing a disk-backed namespace
//!   alone never waits for their CPU budget; writing it while a /dev/shm
//!   namespace keeps the same reactor busy does, unless
//!   `--pmem-busy-cpu-limit 100` lifts the limit. A reactor the workers
//!   starve (`--pmem-io-cpumask` puts them on its CPU) still counts as busy
//!   beside a busy neighbour, and as idle alone. (How much the neighbour
//!   keeps is measured in scripts/bench.sh, not asserted here.) Those
//!   tests measure how busy a reactor is, so they run alone: the others
//!   here would load the same two CPUs (`common::alone`).

use crate::common;
use crate::nvme_tcp;

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

/// A target started with `flags` exits 2, saying `what` to give instead.
fn refused_at_start(flags: &[&str], what: &str) {
    let mut t = Target::spawn(&our_nvmf_tgt(), flags);
    let status = t.wait_exit(std::time::Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "{flags:?}: {}", t.log_text());
    assert!(t.log_text().contains(what), "{flags:?}: {}", t.log_text());
}

fn pmem_info(t: &Target) -> serde_json::Value {
    let bdevs = t.rpc_json(&["bdev_get_bdevs", "-b", "pmdk0"]);
    bdevs[0].clone()
}

#[test]
fn a_pool_written_through_one_module_reads_back_through_the_other() {
    let _turn = beside_others();
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
    assert!(Pool::check(&pool, Some(4096)).unwrap(), "pool consistent");
}

#[test]
fn the_rust_module_reports_a_bad_block_as_a_media_error_and_supports_flush() {
    let _turn = beside_others();
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
    let _turn = beside_others();
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
    refused_at_start(&["--pmem-io-threads", "many"], "give auto, inline (or 0)");
}

fn budget_waits(t: &Target, bdev: &str) -> u64 {
    let info = t.rpc_json(&["bdev_get_bdevs", "-b", bdev]);
    info[0]["driver_specific"]["pmem"]["budget_waits"]
        .as_u64()
        .unwrap_or_else(|| panic!("no budget_waits: {info:#}"))
}

/// User CPU time of the target's pmem worker threads, in clock ticks.
fn worker_user_ticks(pid: u32) -> u64 {
    let mut ticks = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap_or_default();
        let Some((name, rest)) = stat.split_once(") ") else {
            continue;
        };
        if name.contains("(pmem") {
            // Fields after the name: state is the first, utime the 12th.
            ticks += rest.split(' ').nth(11).unwrap().parse::<u64>().unwrap();
        }
    }
    ticks
}

/// Reads and writes the bdev completed, from `bdev_get_iostat`.
fn completed_ios(t: &Target, bdev: &str) -> u64 {
    let stat = t.rpc_json(&["bdev_get_iostat", "-b", bdev]);
    let b = &stat["bdevs"][0];
    b["num_read_ops"].as_u64().unwrap() + b["num_write_ops"].as_u64().unwrap()
}

/// One perf process loading every subsystem given, QD 32 each: `randwrite`,
/// or `randrw` (half reads).
fn perf_load(workload: &str, subsystems: &[(&str, u16)], seconds: u32) -> String {
    Perf::start(32, workload, subsystems, seconds).finish()
}

/// A perf process loading subsystems in the background; killed if dropped
/// unfinished (it would stop by itself within its run time).
struct Perf(Option<std::process::Child>);

impl Perf {
    /// Starts [`perf_load`]'s load at queue depth `qd`.
    fn start(qd: u32, workload: &str, subsystems: &[(&str, u16)], seconds: u32) -> Perf {
        let trids: Vec<String> = subsystems.iter().map(|(n, p)| trid(n, *p)).collect();
        let (t, qd) = (seconds.to_string(), qd.to_string());
        let mut args = vec![
            "-q", &qd, "-o", "4096", "-w", workload, "-t", &t, "-c", "0x2",
        ];
        if workload == "randrw" {
            args.extend(["-M", "50"]);
        }
        for trid in &trids {
            args.extend(["-r", trid.as_str()]);
        }
        let child = crate::common::command(spdk_tool("build/examples/perf"))
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("starting perf");
        Perf(Some(child))
    }

    /// Waits for it to end; its output, checked for errors.
    fn finish(mut self) -> String {
        let out = self.0.take().unwrap().wait_with_output().expect("perf");
        let text = output_text(&out);
        assert!(out.status.success(), "perf failed: {text}");
        check_perf(&text);
        text
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

const QUIET: &str = "nqn.2016-06.io.spdk:quiet";
const BUSY_DISK: &str = "nqn.2016-06.io.spdk:busy-disk";

/// A target serving a /dev/shm pool as `shm0` (subsystem [`QUIET`]) and a
/// pool on disk as `disk0` ([`BUSY_DISK`]) on its one reactor, with the
/// flags given; their ports, in that order.
fn budget_target(shm: &Path, disk: &Path, tag: &str, flags: &[&str]) -> (Target, [u16; 2]) {
    let shm_pool = shm.join(format!("quiet{tag}.pool"));
    let disk_pool = disk.join(format!("disk{tag}.pool"));
    with_pool(&shm_pool, 4096, 4096, |_| ());
    with_pool(&disk_pool, 4096, 1024, |_| ());
    let t = Target::start(&our_nvmf_tgt(), flags);
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    let mut ports = [0; 2];
    for (i, (nqn, bdev, pool)) in [(QUIET, "shm0", &shm_pool), (BUSY_DISK, "disk0", &disk_pool)]
        .into_iter()
        .enumerate()
    {
        ports[i] = test_port();
        t.rpc_ok(&["bdev_pmem_create", "-n", bdev, pool.to_str().unwrap()]);
        t.rpc_ok(&["nvmf_create_subsystem", nqn, "-a", "-s", "SPDK-BUDGET"]);
        add_tcp_listener(&t, nqn, ports[i]);
        t.rpc_ok(&["nvmf_subsystem_add_ns", nqn, bdev]);
    }
    (t, ports)
}

#[test]
fn disk_pool_workers_wait_for_their_cpu_budget_only_beside_a_busy_reactor() {
    let _turn = alone();
    let shm = shm_dir();
    let disk = tempfile::tempdir_in("/var/tmp").unwrap();
    let (quiet, busy) = (QUIET, BUSY_DISK);
    for (limit, waits_beside_busy) in [("10", true), ("100", false)] {
        let (mut t, ports) = budget_target(
            shm.path(),
            disk.path(),
            limit,
            &["--pmem-busy-cpu-limit", limit],
        );
        let info = t.rpc_json(&["bdev_get_bdevs", "-b", "disk0"]);
        let pmem = &info[0]["driver_specific"]["pmem"];
        assert_eq!(
            pmem["busy_cpu_limit_percent"],
            limit.parse::<f64>().unwrap()
        );
        assert!(pmem["io_threads"].as_u64() > Some(0), "{info:#}");

        // The disk namespace alone: its reactor mostly waits, no budget.
        // Half reads: a read on the reactor while workers write would wait
        // for a libpmemblk lane, keeping the reactor busy (and the writes
        // waiting for the budget); with workers writing, reads go to them.
        let ios_before = completed_ios(&t, "disk0");
        perf_load("randrw", &[(busy, ports[1])], 2);
        let (waits, ios) = (
            budget_waits(&t, "disk0"),
            completed_ios(&t, "disk0") - ios_before,
        );
        // At most a trace: a reactor preempted by other tests' processes can
        // still look busy for a window (measured: none here; 500 of about
        // 16,000 I/O with reads waiting for lanes on the reactor).
        assert!(
            waits * 100 < ios,
            "limit {limit}: alone, {waits} of {ios} I/O waited for the budget"
        );
        // Beside the /dev/shm namespace at full speed on the same reactor.
        let waits_alone = budget_waits(&t, "disk0");
        let text = perf_load("randwrite", &[(quiet, ports[0]), (busy, ports[1])], 3);
        let waits = budget_waits(&t, "disk0") - waits_alone;
        assert_eq!(
            waits > 0,
            waits_beside_busy,
            "limit {limit}: {waits} I/O waited beside a busy reactor\n{text}"
        );
        assert_eq!(budget_waits(&t, "shm0"), 0, "inline I/O never waits");

        // Half reads beside the busy namespace: the most completions from
        // workers while the reactor is busy. Sent as SPDK messages, they
        // made the real-time workers spin in the reactor's DPDK ring
        // (bdev::completions): over a second of user CPU per I/O.
        let pid = t.child.as_ref().unwrap().id();
        let before = worker_user_ticks(pid);
        let ios_before = completed_ios(&t, "disk0");
        perf_load("randrw", &[(quiet, ports[0]), (busy, ports[1])], 3);
        let ticks = worker_user_ticks(pid) - before;
        let ios = completed_ios(&t, "disk0") - ios_before;
        // SAFETY: sysconf only reads.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let per_io_ms = ticks as f64 / hz * 1000.0 / ios.max(1) as f64;
        assert!(
            ios > 0 && per_io_ms < 0.5,
            "limit {limit}: the workers used {ticks} ticks of user CPU for {ios} I/O \
             ({per_io_ms:.3} ms each; measured 0.01 ms, and 6.9 ms spinning)"
        );
        t.stop();
    }
    refused_at_start(
        &["--pmem-busy-cpu-limit", "0"],
        "give a percentage from 0.1 to 100",
    );
}

/// Windows the watches of `bdev`'s channels sampled, and of those counted
/// busy.
fn busy_windows(t: &Target, bdev: &str) -> (u64, u64) {
    let info = t.jsonrpc_ok("bdev_get_bdevs", Some(serde_json::json!({ "name": bdev })));
    let pmem = &info[0]["driver_specific"]["pmem"];
    match (
        pmem["watched_windows"].as_u64(),
        pmem["busy_windows"].as_u64(),
    ) {
        (Some(watched), Some(busy)) => (watched, busy),
        _ => panic!("no windows: {info:#}"),
    }
}

/// The workers on the reactor's own CPU (`--pmem-io-cpumask 0x1`, the
/// targets' `-m`) take its time whenever they run. With the limit lifted
/// they starve it; the reactor still counts as busy while a /dev/shm
/// neighbour at QD 3 keeps it so, and as idle while the workers' own bdev
/// is all it serves. With the limit, the starved reactor's workers wait
/// for the budget.
///
/// The windows are read over the raw socket, not with rpc.py: each rpc.py
/// is a Python start-up that may land on the reactor's CPU, and time other
/// processes take there rightly comes out of busy time. Read with rpc.py
/// the best of three 2 s samples ranged from 45% to 74% (CI, 2026-12-06,
/// failed at 45%) and single samples down to 6%; read over the socket,
/// 92 to 100% in 4 runs (ASan 99 to 100% in 2), single samples from 78%,
/// and 0 to 5% with the old accounting (all time off the CPU out of busy
/// time) in 2 runs. One bar, four fifths, for both builds.
#[test]
fn a_reactor_the_workers_starve_still_counts_as_busy() {
    let _turn = alone();
    let shm = shm_dir();
    let disk = tempfile::tempdir_in("/var/tmp").unwrap();
    for limit in ["100", "10"] {
        let flags = ["--pmem-busy-cpu-limit", limit, "--pmem-io-cpumask", "0x1"];
        let (mut t, ports) = budget_target(shm.path(), disk.path(), limit, &flags);
        let before = busy_windows(&t, "disk0");
        perf_load("randrw", &[(BUSY_DISK, ports[1])], 2);
        let alone = busy_windows(&t, "disk0");
        let (watched, busy) = (alone.0 - before.0, alone.1 - before.1);
        assert!(
            busy * 20 <= watched,
            "limit {limit}: serving only the workers, busy in {busy} of {watched} windows"
        );
        // Counted in the middle of the run, not while perf connects: three
        // 2 s samples, the busiest kept, so a moment of load from outside
        // the test (which the watch rightly does not count as busy) cannot
        // decide it.
        let perf = Perf::start(
            3,
            "randwrite",
            &[(QUIET, ports[0]), (BUSY_DISK, ports[1])],
            8,
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
        let mut samples = vec![];
        let mut first = busy_windows(&t, "disk0");
        for _ in 0..3 {
            std::thread::sleep(std::time::Duration::from_secs(2));
            let next = busy_windows(&t, "disk0");
            samples.push((next.0 - first.0, next.1 - first.1));
            first = next;
        }
        let text = perf.finish();
        let (watched, busy) = samples
            .iter()
            .copied()
            .max_by(|a, b| (a.1 * b.0).cmp(&(b.1 * a.0)))
            .unwrap();
        let waits = budget_waits(&t, "disk0");
        if limit == "100" {
            assert!(
                busy * 5 >= watched * 4,
                "starved beside a busy neighbour, busy in only {busy} of {watched} windows \
                 (samples {samples:?})\n{text}"
            );
        } else {
            assert!(
                waits > 0,
                "starved beside a busy neighbour, no I/O waited\n{text}"
            );
        }
        t.stop();
    }
    refused_at_start(
        &["--pmem-io-cpumask", "0x0"],
        "CPU mask \"0x0\": no CPU in it; give a hexadecimal mask of online CPUs",
    );
}

#[test]
fn the_c_module_stays_selectable_and_names_no_module() {
    let _turn = beside_others();
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
