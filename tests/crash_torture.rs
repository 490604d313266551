//! Crash torture: SPDK's own NVMe-oF initiator (lib/nvme over TCP, driven by
//! examples/stamped_writer.rs) writes stamped 4 KiB units (each holds its
//! unit number, a generation and a CRC-32C of the rest; tests/common/stamp.rs)
//! and reports which writes the target acknowledged; the target is killed with SIGKILL at a
//! random moment; `pmempool check` checks the pool, and every unit is read
//! back with libpmemblk. A unit must hold exactly one whole generation that
//! was written to it (no mix of two writes), and no older one than the last
//! acknowledged (no lost acknowledged write).
//!
//! On a pool of 4 KiB blocks each unit is one BTT block: atomic. The control
//! runs the same torture on a pool of 512-byte blocks, where a unit is eight
//! blocks written by one NVMe command, atomic per block only: the checker has
//! to find torn units there, or it proves nothing.
//!
//! The same on an RBD namespace of a real one-node Ceph, read back with
//! `rbd export`. And the pmem write-back cache in front of an RBD image,
//! its pool thrown away after the kill: the image must hold a prefix of the
//! writes (with a control that destages out of order and must be caught),
//! also with 512-byte blocks, where each unit is one host write of eight
//! blocks that must reach the image whole; and kills while the cache's
//! smallest pool is full and has wrapped around its slots.
//!
//! `SPDK_PMEM_TORTURE_CYCLES` sets the cycles per pool (scripts/torture.sh).

mod common;
#[allow(dead_code)]
mod nvme_tcp;

use common::rng::Rng;
use common::stamp::{self, stamp, UNIT};
use common::*;
use nvme_tcp::host;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

const NQN: &str = "nqn.2016-06.io.spdk:torture";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:70e7a6b0-0000-4000-8000-000000000007";
/// Units written (a small range, so units are overwritten often).
const UNITS: u64 = 256;
const QUEUE_DEPTH: u16 = 16;
/// How long the writer runs before the kill, in ms: short runs, so that
/// kills come at every stage (connecting, the first writes, load).
const SHORT_RUNS: (u64, u64) = (20, 300);
/// The same for an RBD image, whose first write is acknowledged later (its
/// round trip to the OSD; under ASan often past SHORT_RUNS' 300 ms, and a
/// CI run once had all ten kills before any acknowledgement): kills still
/// come while connecting, most during load.
const RBD_RUNS: (u64, u64) = (20, 1500);

/// Every write issued per unit, and the newest acknowledged.
#[derive(Default)]
struct History {
    issued: HashMap<u64, Vec<u64>>,
    acked: HashMap<u64, u64>,
}

#[derive(Debug, Default)]
struct Verdict {
    units: u64,
    /// Each torn unit once (it stays torn, and is checked again, until a
    /// later write replaces it).
    torn: Vec<String>,
    torn_seen: std::collections::HashSet<(u64, Vec<u8>)>,
    lost: Vec<String>,
}

/// Checks one unit read back from the pool against the history.
fn check_unit(unit: u64, data: &[u8], h: &History, v: &mut Verdict) {
    v.units += 1;
    let acked = h.acked.get(&unit).copied();
    if data.iter().all(|&b| b == 0) {
        if let Some(g) = acked {
            v.lost.push(format!(
                "unit {unit}: empty, generation {g} was acknowledged"
            ));
        }
        return;
    }
    let claim = stamp::claimed(data);
    let whole = claim.is_some_and(|(u, g)| {
        u == unit && h.issued.get(&unit).is_some_and(|i| i.contains(&g)) && data == stamp(u, g)
    });
    let Some((_, gen)) = claim.filter(|_| whole) else {
        if !v.torn_seen.insert((unit, data.to_vec())) {
            return;
        }
        // Which generation each 512-byte piece comes from, for the report.
        let gens = h.issued.get(&unit).cloned().unwrap_or_default();
        let pieces: Vec<String> = (0..UNIT / 512)
            .map(|i| {
                let piece = &data[i * 512..(i + 1) * 512];
                if piece.iter().all(|&b| b == 0) {
                    return "never written".to_string();
                }
                gens.iter()
                    .find(|&&g| stamp(unit, g)[i * 512..(i + 1) * 512] == *piece)
                    .map_or("?".to_string(), |g| g.to_string())
            })
            .collect();
        v.torn.push(format!(
            "unit {unit}: not one whole write (generations of its 512-byte pieces: {pieces:?})"
        ));
        return;
    };
    if let Some(g) = acked {
        if gen < g {
            v.lost.push(format!(
                "unit {unit}: generation {gen}, but {g} was acknowledged"
            ));
        }
    }
}

/// Runs SPDK's initiator (examples/stamped_writer.rs) against `NQN` on
/// `port` until the connection breaks, sending `signal` to the target (pid
/// `target`) a random moment (`run_ms`) after the writer's I/O queue is up. Records
/// every write issued and every success acknowledged; returns the number
/// acknowledged. A write that fails with anything but the abort of a broken
/// connection fails the test.
fn write_until_stopped(
    port: u16,
    target: i32,
    signal: i32,
    run_ms: (u64, u64),
    rng: &mut Rng,
    next_gen: &mut u64,
    h: &mut History,
) -> u64 {
    let (shm_id, _) = unique_ids();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let mut writer = std::process::Command::new(example_binary("stamped_writer"))
        .args(["--port", &port.to_string(), "--subnqn", NQN])
        .args(["--shm-id", &shm_id.to_string()])
        // The target runs on core 0.
        .args(["--core-mask", if cores > 1 { "0x2" } else { "0x1" }])
        .args(["--units", &UNITS.to_string()])
        .args(["--queue-depth", &QUEUE_DEPTH.to_string()])
        .args(["--seed", &rng.next_u64().to_string()])
        .args(["--first-gen", &next_gen.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(stderr.reopen().unwrap())
        .spawn()
        .expect("starting examples/stamped_writer");
    let delay = Duration::from_millis(rng.range(run_ms.0, run_ms.1));
    let mut stopper = None;
    let (mut acked, mut end) = (0, String::new());
    let out = std::io::BufReader::new(writer.stdout.take().unwrap());
    for line in out.lines() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| words[i].parse::<u64>().unwrap();
        match words.first().copied() {
            Some("connected") => {
                stopper = Some(std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    // SAFETY: kill(2) on our own child's pid.
                    unsafe { libc::kill(target, signal) };
                }))
            }
            Some("issue") => {
                h.issued.entry(num(1)).or_default().push(num(2));
                *next_gen = (*next_gen).max(num(2) + 1);
            }
            Some("ack") => {
                let a = h.acked.entry(num(1)).or_insert(num(2));
                *a = (*a).max(num(2));
                acked += 1;
            }
            // Aborted because the connection broke (SCT 0, SC 08h).
            Some("error") if words[3..] == ["0", "8"] => {}
            Some("error") => panic!("a write failed: {line}"),
            Some("end") => end = line,
            _ => {}
        }
    }
    let status = writer.wait().unwrap();
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/spdk{shm_id}"));
    let stopped = stopper.map(|t| t.join().is_ok()).unwrap_or(false);
    assert!(
        status.success() && stopped,
        "the writer: {status}, {end:?}, target signalled: {stopped}\n{}",
        std::fs::read_to_string(stderr.path()).unwrap_or_default()
    );
    acked
}

/// The torture on one pool: `cycles` times start the target on it, write
/// until a random SIGKILL, check the pool. Returns the verdict of all cycles.
fn torture(pool: &Path, block_size: usize, cycles: u64, seed: u64) -> (Verdict, u64, u64) {
    {
        let p = spdk_pmem::pmem::Pool::create(pool, block_size, 32 << 20, 0o600).unwrap();
        assert!(p.block_count() * block_size as u64 >= UNITS * UNIT as u64);
    }
    torture_with(
        cycles,
        seed,
        SHORT_RUNS,
        || serve_pool(pool, &[]),
        |h, verdict| {
            check_pool(pool, block_size, h, verdict);
        },
    )
}

/// `cycles` times: `serve` starts a target serving `NQN` (on the port it
/// returns), SPDK's initiator writes until a random SIGKILL, and `check`
/// reads every unit back against the history.
fn torture_with(
    cycles: u64,
    seed: u64,
    run_ms: (u64, u64),
    serve: impl Fn() -> (Target, u16),
    check: impl Fn(&History, &mut Verdict),
) -> (Verdict, u64, u64) {
    let mut rng = Rng::new(seed);
    let mut h = History::default();
    let mut next_gen = 1u64;
    let mut verdict = Verdict::default();
    let mut acknowledged = 0;
    let mut kills = 0;
    for cycle in 0..cycles {
        let (mut t, port) = serve();
        let pid = t.child.as_ref().unwrap().id() as i32;
        acknowledged += write_until_stopped(
            port,
            pid,
            libc::SIGKILL,
            run_ms,
            &mut rng,
            &mut next_gen,
            &mut h,
        );
        let status = t.wait_exit(Duration::from_secs(10));
        assert_eq!(
            status.code(),
            None,
            "cycle {cycle}: the target exited by itself ({status}) instead of being killed:\n{}",
            t.log_text()
        );
        kills += 1;
        drop(t);

        check(&h, &mut verdict);
    }
    (verdict, acknowledged, kills)
}

/// Our target serving the pool at `pool` as namespace 1 of `NQN` on a port
/// of its own; `extra` flags (`--wait-for-rpc`: framework_start_init first).
fn serve_pool(pool: &Path, extra: &[&str]) -> (Target, u16) {
    let port = test_port();
    let t = Target::start(&our_nvmf_tgt(), extra);
    if extra.contains(&"--wait-for-rpc") {
        t.rpc_ok(&["framework_start_init"]);
    }
    t.rpc_ok(&["bdev_pmem_create", "-n", "tortured", pool.to_str().unwrap()]);
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    t.rpc_ok(&["nvmf_create_subsystem", NQN, "-a", "-s", "SPDK-TORTURE"]);
    add_tcp_listener(&t, NQN, port);
    t.rpc_ok(&["nvmf_subsystem_add_ns", NQN, "tortured"]);
    (t, port)
}

/// `pmempool check` on the pool, then every unit read with libpmemblk and
/// checked against the history; returns the units' contents.
fn check_pool(pool: &Path, block_size: usize, h: &History, verdict: &mut Verdict) -> Vec<Vec<u8>> {
    let check = std::process::Command::new("pmempool")
        .args(["check", "-v"])
        .arg(pool)
        .output()
        .expect("running pmempool (pmdk-tools)");
    assert!(
        check.status.success(),
        "pmempool check: {}",
        output_text(&check)
    );
    let p = spdk_pmem::pmem::Pool::open(pool, Some(block_size)).unwrap();
    let per_unit = (UNIT / block_size) as u64;
    (0..UNITS)
        .map(|unit| {
            let mut data = vec![0u8; UNIT];
            for i in 0..per_unit {
                let at = i as usize * block_size;
                p.read(unit * per_unit + i, &mut data[at..at + block_size])
                    .unwrap();
            }
            check_unit(unit, &data, h, verdict);
            data
        })
        .collect()
}

/// SIGTERM or SIGINT while a host writes, as started plainly, with
/// `--wait-for-rpc` and on two cores: the target exits 0, the pool is
/// consistent with every acknowledged write in it, and a target started
/// from the `save_config` output (`--json`) serves the same data.
#[test]
fn a_target_stopped_by_a_signal_under_load_exits_cleanly_and_keeps_its_data() {
    let _alone = alone();
    let dir = shm_dir();
    let pool = dir.path().join("signalled.pool");
    spdk_pmem::pmem::Pool::create(&pool, 4096, 32 << 20, 0o600).unwrap();
    let mut rng = Rng::new(0x5167);
    let mut h = History::default();
    let mut next_gen = 1u64;
    let runs: [(i32, &[&str]); 4] = [
        (libc::SIGTERM, &[]),
        (libc::SIGINT, &[]),
        (libc::SIGTERM, &["--wait-for-rpc"]),
        (libc::SIGINT, &["-m", "0x3"]),
    ];
    for (signal, extra) in runs {
        let what = format!("signal {signal}, flags {extra:?}");
        let (mut t, port) = serve_pool(&pool, extra);
        let config = dir.path().join("config.json");
        std::fs::write(&config, t.rpc_ok(&["save_config"])).unwrap();
        let pid = t.child.as_ref().unwrap().id() as i32;
        let acked = write_until_stopped(
            port,
            pid,
            signal,
            SHORT_RUNS,
            &mut rng,
            &mut next_gen,
            &mut h,
        );
        let status = t.wait_exit(Duration::from_secs(30));
        assert!(
            status.success(),
            "{what}: the target exited with {status}:\n{}",
            t.log_text()
        );
        assert!(acked > 0, "{what}: nothing was acknowledged");
        drop(t);
        let mut v = Verdict::default();
        let units = check_pool(&pool, 4096, &h, &mut v);
        assert!(
            v.torn.is_empty() && v.lost.is_empty(),
            "{what}: torn {:?} lost {:?}",
            v.torn,
            v.lost
        );

        // The saved configuration brings the same namespace back.
        let mut again = Target::start(&our_nvmf_tgt(), &["--json", config.to_str().unwrap()]);
        let (_admin, mut io) = host::io_queue(port, NQN, HOSTNQN);
        for (unit, want) in units.iter().enumerate() {
            let (status, got) = host::read_blocks(&mut io, 1, unit as u64, 1, 4096);
            assert_eq!(status, 0, "{what}: reading unit {unit} after the restart");
            assert!(
                got == *want,
                "{what}: unit {unit} reads differently after the restart"
            );
        }
        drop(io);
        assert!(again.stop().success());
        eprintln!("{what}: exit 0, {acked} acknowledged writes kept, {UNITS} units served again from --json");
    }
}

fn cycles() -> u64 {
    env_u64("SPDK_PMEM_TORTURE_CYCLES", 50)
}

fn report(what: &str, v: &Verdict, acked: u64, kills: u64) {
    eprintln!(
        "crash torture, {what}: {kills} SIGKILLs, {acked} acknowledged writes, {} units checked, {} torn, {} lost acknowledged writes",
        v.units,
        v.torn.len(),
        v.lost.len()
    );
}

/// Reports a torture and asserts it acknowledged writes, none torn or lost.
fn assert_whole_and_kept(what: &str, v: &Verdict, acked: u64, kills: u64) {
    report(what, v, acked, kills);
    assert!(acked > 0);
    assert!(
        v.torn.is_empty() && v.lost.is_empty(),
        "torn: {:?}\nlost: {:?}",
        &v.torn[..v.torn.len().min(5)],
        &v.lost[..v.lost.len().min(5)]
    );
}

/// The torture on a pool of 4 KiB blocks in `dir`: no torn unit, no lost
/// acknowledged write.
fn assert_atomic_under_sigkill(dir: &Path, seed: u64, what: &str) {
    let _alone = alone();
    let (v, acked, kills) = torture(&dir.join("torture.pool"), 4096, cycles(), seed);
    assert_whole_and_kept(what, &v, acked, kills);
}

#[test]
fn acknowledged_4k_writes_survive_sigkill_whole_on_a_pool_in_memory() {
    let dir = shm_dir();
    assert_atomic_under_sigkill(dir.path(), 0x70_47_01, "4 KiB blocks, pool in /dev/shm");
}

#[test]
fn acknowledged_4k_writes_survive_sigkill_whole_on_a_pool_on_disk() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    assert_atomic_under_sigkill(
        dir.path(),
        0x70_47_02,
        "4 KiB blocks, pool in a file on disk",
    );
}

/// The control: 4 KiB units over 512-byte blocks are not atomic, and the
/// checker must say so. On disk, where each block's msync makes a unit take
/// milliseconds, a kill nearly always lands inside one.
#[test]
fn the_checker_finds_torn_units_where_writes_are_not_atomic() {
    let _alone = alone();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (v, acked, kills) = torture(&dir.path().join("torture.pool"), 512, cycles(), 0x70_47_03);
    report(
        "control, 4 KiB units over 512-byte blocks, pool in a file on disk",
        &v,
        acked,
        kills,
    );
    assert!(acked > 0);
    assert!(!v.torn.is_empty(), "no torn unit found in {kills} kills where writes are not atomic: the checker proves nothing");
    assert!(
        v.lost.is_empty(),
        "lost: {:?}",
        &v.lost[..v.lost.len().min(5)]
    );
    eprintln!("  e.g. {}", v.torn[0]);
}

/// The same torture on an RBD namespace (the Rust module) of a real
/// one-node Ceph, read back with Ceph's own `rbd export` after each kill:
/// every acknowledged write is there, whole (a 4 KiB write inside one RADOS
/// object is atomic; librbd's cache is off, so an acknowledged write is on
/// the OSD).
#[test]
fn acknowledged_4k_writes_survive_sigkill_whole_on_an_rbd_image() {
    let _alone = alone();
    let ceph = common::ceph::Ceph::start();
    ceph.rbd(&["create", "rbd/torture", "--size", "8M"]);
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let exported = dir.path().join("torture.img");
    let serve = || {
        let port = test_port();
        let t = Target::start(&our_nvmf_tgt(), &[]);
        let create = ceph.bdev_rbd_create("tortured", "torture");
        let create: Vec<&str> = create.iter().map(String::as_str).collect();
        t.rpc_ok(&create);
        t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
        t.rpc_ok(&["nvmf_create_subsystem", NQN, "-a", "-s", "SPDK-TORTURE"]);
        add_tcp_listener(&t, NQN, port);
        t.rpc_ok(&["nvmf_subsystem_add_ns", NQN, "tortured"]);
        (t, port)
    };
    let check = |h: &History, verdict: &mut Verdict| {
        let _ = std::fs::remove_file(&exported);
        ceph.rbd(&["export", "rbd/torture", exported.to_str().unwrap()]);
        let image = std::fs::read(&exported).unwrap();
        for unit in 0..UNITS {
            let at = unit as usize * UNIT;
            check_unit(unit, &image[at..at + UNIT], h, verdict);
        }
    };
    // Fewer cycles: each starts a target and exports the image.
    let (v, acked, kills) = torture_with(cycles().min(10), 0x70_47_04, RBD_RUNS, serve, check);
    assert_whole_and_kept("4 KiB units, RBD image, rbd export", &v, acked, kills);
}

/// What the image's units say against a prefix of the writes: the units'
/// generations must be exactly what the writes up to the newest generation
/// among them left (generations number the writes in the order the one
/// writer queue issued them, the cache's order). Returns every unit that
/// says otherwise.
fn prefix_violations(image: &[u8], h: &History) -> (Vec<String>, u64) {
    let mut held = Vec::new();
    let mut bad = Vec::new();
    for unit in 0..UNITS {
        let data = &image[unit as usize * UNIT..(unit as usize + 1) * UNIT];
        if data.iter().all(|&b| b == 0) {
            held.push(None);
            continue;
        }
        match stamp::claimed(data).filter(|&(u, g)| u == unit && data == stamp(u, g)) {
            Some((_, g)) => held.push(Some(g)),
            None => {
                bad.push(format!("unit {unit}: not one whole write"));
                held.push(None);
            }
        }
    }
    let newest = held.iter().flatten().copied().max().unwrap_or(0);
    for (unit, gen) in held.iter().enumerate() {
        let expected = h
            .issued
            .get(&(unit as u64))
            .and_then(|gens| gens.iter().copied().filter(|&g| g <= newest).max());
        if *gen != expected {
            bad.push(format!(
                "unit {unit}: holds generation {gen:?}, the writes up to {newest} left {expected:?}"
            ));
        }
    }
    (bad, newest)
}

/// The pmem write-back cache in front of an RBD image: SPDK's initiator
/// writes through it until a random SIGKILL, the cache's pool is thrown
/// away (the cache machine lost for good), and `rbd export` must show the
/// image as the writes up to some point left it. Each cycle on a new image
/// and pool; returns each cycle's violations, and how many writes reached
/// the images in all.
/// `block_size`: the RBD bdev's (512: each 4 KiB unit is one host write of
/// eight blocks, which must reach the image whole).
fn cache_prefix_torture(
    cycles: u64,
    seed: u64,
    out_of_order: bool,
    block_size: usize,
) -> (Vec<Vec<String>>, u64) {
    let ceph = common::ceph::Ceph::start();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let shm = shm_dir();
    let mut rng = Rng::new(seed);
    let mut next_gen = 1u64;
    let mut verdicts = Vec::new();
    let mut destaged = 0;
    for cycle in 0..cycles {
        let image = format!("prefix{cycle}");
        ceph.rbd(&["create", &format!("rbd/{image}"), "--size", "8M"]);
        let port = test_port();
        let mut t = Target::start(&our_nvmf_tgt(), &[]);
        let create = ceph.bdev_rbd_create_with_blocks("rbd0", &image, block_size);
        let create: Vec<&str> = create.iter().map(String::as_str).collect();
        t.rpc_ok(&create);
        let pool = shm.path().join(format!("cache{cycle}.pool"));
        if out_of_order {
            t.jsonrpc_ok(
                "test_pmem_cache_destage_out_of_order",
                Some(serde_json::json!({"pool": pool.to_str().unwrap()})),
            );
        }
        t.jsonrpc_ok(
            "bdev_pmem_cache_create",
            Some(serde_json::json!({"name": "wb0", "base_bdev": "rbd0",
                "pool": pool.to_str().unwrap(), "slots": 4096})),
        );
        t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
        t.rpc_ok(&["nvmf_create_subsystem", NQN, "-a", "-s", "SPDK-TORTURE"]);
        add_tcp_listener(&t, NQN, port);
        t.rpc_ok(&["nvmf_subsystem_add_ns", NQN, "wb0"]);
        let pid = t.child.as_ref().unwrap().id() as i32;
        let mut h = History::default();
        write_until_stopped(
            port,
            pid,
            libc::SIGKILL,
            SHORT_RUNS,
            &mut rng,
            &mut next_gen,
            &mut h,
        );
        let status = t.wait_exit(Duration::from_secs(10));
        assert_eq!(status.code(), None, "the target exited by itself: {status}");
        drop(t);
        std::fs::remove_file(&pool).unwrap();
        let exported = dir.path().join(format!("{image}.img"));
        ceph.rbd(&[
            "export",
            &format!("rbd/{image}"),
            exported.to_str().unwrap(),
        ]);
        let (bad, newest) = prefix_violations(&std::fs::read(&exported).unwrap(), &h);
        let issued: Vec<u64> = h.issued.values().flatten().copied().collect();
        let reached = issued.iter().filter(|&&g| g <= newest).count();
        eprintln!(
            "cache prefix cycle {cycle} ({block_size}-byte blocks, out of order: {out_of_order}): \
             {} writes issued, {reached} in the image, {} violations",
            issued.len(),
            bad.len()
        );
        destaged += reached as u64;
        let caught = !bad.is_empty();
        verdicts.push(bad);
        if out_of_order && caught {
            // The control is caught: more cycles would show nothing new.
            break;
        }
    }
    (verdicts, destaged)
}

/// Issue 21's prefix property: whatever the moment of the kill, the RBD
/// image behind the cache holds a prefix of the writes.
#[test]
fn a_cached_rbd_image_holds_a_prefix_of_the_writes_when_the_cache_is_lost() {
    let _alone = alone();
    let (verdicts, destaged) = cache_prefix_torture(cycles().min(4), 0x9e_f1, false, 4096);
    for (cycle, bad) in verdicts.iter().enumerate() {
        assert!(bad.is_empty(), "cycle {cycle}: {bad:?}");
    }
    assert!(
        destaged > 0,
        "no write reached an image: the check saw nothing"
    );
}

/// The same with 512-byte blocks: each host write is eight blocks, and the
/// image holds each one whole or not at all (the cache destages a host
/// write as one write of the image, which RBD applies atomically within an
/// object; the units never cross one).
#[test]
fn a_cached_rbd_image_holds_whole_multi_block_writes_when_the_cache_is_lost() {
    let _alone = alone();
    if std::env::var_os("SPDK_PMEM_SANITIZED").is_some() {
        eprintln!("sanitized build: the multi-block torture runs in the plain suite");
        return;
    }
    let (verdicts, destaged) = cache_prefix_torture(cycles().min(3), 0x9e_f2, false, 512);
    for (cycle, bad) in verdicts.iter().enumerate() {
        assert!(bad.is_empty(), "cycle {cycle}: {bad:?}");
    }
    assert!(
        destaged > 0,
        "no write reached an image: the check saw nothing"
    );
}

/// The control: a cache that destages each pair of writes in reverse order
/// must be caught by the same check, or the check proves nothing. The
/// switch exists only in test builds (feature `test-hooks`).
#[test]
#[cfg_attr(not(feature = "test-hooks"), ignore = "needs --features test-hooks")]
fn the_prefix_check_catches_a_cache_that_destages_out_of_order() {
    let _alone = alone();
    let (verdicts, _) = cache_prefix_torture(8, 0x0d_de, true, 4096);
    assert!(
        verdicts.iter().any(|bad| !bad.is_empty()),
        "no cycle of the out-of-order control was caught: {verdicts:?}"
    );
}

/// What [`cache_restart_torture`] saw, beside the verdict.
struct CacheTorture {
    verdict: Verdict,
    acked: u64,
    kills: u64,
    /// The cache's slots.
    slots: u64,
    /// Blocks each start found dirty in the pool (to replay).
    dirty_at_start: Vec<u64>,
}

/// The crash torture through the pmem write-back cache in front of an RBD
/// image of `block_size`-byte blocks, on one pool of `slots` slots kept
/// across the kills: each start gives the target the same pool (replaying
/// what the kill left undestaged) while SPDK's initiator writes again for
/// `run_ms`. Every second cycle, after the kill, the target is started on
/// the pool and stopped cleanly (SIGINT destages everything), and `rbd
/// export` must hold every acknowledged write whole.
fn cache_restart_torture(
    image: &str,
    block_size: usize,
    slots: u64,
    run_ms: (u64, u64),
    cycles: u64,
    seed: u64,
) -> CacheTorture {
    let ceph = common::ceph::Ceph::start();
    ceph.rbd(&["create", &format!("rbd/{image}"), "--size", "8M"]);
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let shm = shm_dir();
    let pool = shm.path().join("cache.pool");
    let exported = dir.path().join(format!("{image}.img"));
    let dirty_at_start = std::cell::RefCell::new(Vec::new());
    let slots_made = std::cell::Cell::new(0u64);
    let serve = || {
        let port = test_port();
        let t = Target::start(&our_nvmf_tgt(), &[]);
        let create = ceph.bdev_rbd_create_with_blocks("rbd0", image, block_size);
        let create: Vec<&str> = create.iter().map(String::as_str).collect();
        t.rpc_ok(&create);
        t.jsonrpc_ok(
            "bdev_pmem_cache_create",
            Some(serde_json::json!({"name": "wb0", "base_bdev": "rbd0",
                "pool": pool.to_str().unwrap(), "slots": slots})),
        );
        let info = &t.rpc_json(&["bdev_get_bdevs", "-b", "wb0"])[0]["driver_specific"]["pmem_wb"];
        dirty_at_start
            .borrow_mut()
            .push(info["dirty_blocks"].as_u64().unwrap());
        slots_made.set(info["slots"].as_u64().unwrap());
        t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
        t.rpc_ok(&["nvmf_create_subsystem", NQN, "-a", "-s", "SPDK-TORTURE"]);
        add_tcp_listener(&t, NQN, port);
        t.rpc_ok(&["nvmf_subsystem_add_ns", NQN, "wb0"]);
        (t, port)
    };
    let cycle = std::cell::Cell::new(0u64);
    let check = |h: &History, verdict: &mut Verdict| {
        let this = cycle.replace(cycle.get() + 1);
        if this % 2 == 0 && this + 1 < cycles {
            // The next cycle's target replays this one's log under load.
            return;
        }
        let (mut t, _) = serve();
        // Destaging starts once librbd has taken the image's lock from the
        // killed target (seconds), then runs at Ceph's pace: waited for
        // here, so that the stop's own wait (up to 60 s) is not what ends it.
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        loop {
            let info = t.rpc_json(&["bdev_get_bdevs", "-b", "wb0"]);
            let info = &info[0]["driver_specific"]["pmem_wb"];
            if info["dirty_blocks"] == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the cache did not destage in 180 s: {info}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let status = t.stop();
        assert!(
            status.success(),
            "the clean stop: {status}\n{}",
            t.log_text()
        );
        let _ = std::fs::remove_file(&exported);
        ceph.rbd(&[
            "export",
            &format!("rbd/{image}"),
            exported.to_str().unwrap(),
        ]);
        let image = std::fs::read(&exported).unwrap();
        for unit in 0..UNITS {
            let at = unit as usize * UNIT;
            check_unit(unit, &image[at..at + UNIT], h, verdict);
        }
    };
    let (verdict, acked, kills) = torture_with(cycles, seed, run_ms, serve, check);
    CacheTorture {
        verdict,
        acked,
        kills,
        slots: slots_made.get(),
        dirty_at_start: dirty_at_start.into_inner(),
    }
}

#[test]
fn acknowledged_writes_through_the_cache_reach_ceph_whole_across_kills_and_restarts() {
    let _alone = alone();
    // Each check drains the cache into Ceph: two checks in a sanitized
    // build, whose destaging is slow.
    let most = if std::env::var_os("SPDK_PMEM_SANITIZED").is_some() {
        3
    } else {
        4
    };
    let cycles = cycles().min(most);
    let run = cache_restart_torture("cached", 4096, 4096, SHORT_RUNS, cycles, 0xca_c4e);
    let replayed: u64 = run.dirty_at_start.iter().sum();
    eprintln!("cache torture: {replayed} blocks found dirty at the starts");
    assert_whole_and_kept(
        "4 KiB units through the pmem cache, rbd export after a clean stop",
        &run.verdict,
        run.acked,
        run.kills,
    );
    assert!(
        replayed > 0,
        "no start found writes left to replay: the kills never caught the cache dirty"
    );
}

/// The same with runs of seconds, 512-byte blocks (each host write eight
/// blocks) and the smallest pool: the log fills (writes come faster than
/// Ceph takes them) and wraps around its slots, and the kills find it full.
#[test]
fn acknowledged_multi_block_writes_survive_kills_while_the_log_is_full_and_wraps() {
    let _alone = alone();
    // Each check drains some 21,000 blocks into Ceph: two cycles (a replay
    // under load, then a check) in the plain suite; the sanitized one has
    // the other cache tortures (its build destages too slowly for this).
    if std::env::var_os("SPDK_PMEM_SANITIZED").is_some() {
        eprintln!("sanitized build: the full-log torture runs in the plain suite");
        return;
    }
    let cycles = cycles().min(2);
    let run = cache_restart_torture("wrapped", 512, 1, (2_000, 4_000), cycles, 0xf0_11);
    let blocks_acked = run.acked * (UNIT / 512) as u64;
    eprintln!(
        "cache torture, full log: {} slots, {} writes ({blocks_acked} blocks) acknowledged, \
         dirty at the starts: {:?}",
        run.slots, run.acked, run.dirty_at_start
    );
    assert_whole_and_kept(
        "4 KiB units of eight 512-byte blocks through a full pmem cache",
        &run.verdict,
        run.acked,
        run.kills,
    );
    assert!(
        blocks_acked > run.slots,
        "{blocks_acked} blocks acknowledged in {} slots: the log never wrapped",
        run.slots
    );
    let full = run.slots - u64::from(QUEUE_DEPTH) * (UNIT / 512) as u64;
    assert!(
        run.dirty_at_start.iter().any(|&d| d >= full),
        "no start found the log nearly full ({} of {} slots): {:?}",
        full,
        run.slots,
        run.dirty_at_start
    );
}
