//! Crash torture: a host writes stamped 4 KiB units over NVMe/TCP (each holds
//! its unit number, a generation and a CRC-32C of the rest) and records which
//! writes the target acknowledged; the target is killed with SIGKILL at a
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
//! `SPDK_PMEM_TORTURE_CYCLES` sets the cycles per pool (scripts/torture.sh).

mod common;
#[allow(dead_code)]
mod nvme_tcp;

use common::rng::Rng;
use common::*;
use nvme_tcp::{host, wire};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

const NQN: &str = "nqn.2016-06.io.spdk:torture";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:70e7a6b0-0000-4000-8000-000000000007";
const UNIT: usize = 4096;
/// Units written (a small range, so units are overwritten often).
const UNITS: u64 = 256;
const QUEUE_DEPTH: u16 = 16;

/// One torture at a time: the test process opens the pool with libpmemblk
/// between cycles, and a target another test spawned meanwhile would inherit
/// that descriptor, and its lock on the pool.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Every write issued per unit, and the newest acknowledged.
#[derive(Default)]
struct History {
    issued: HashMap<u64, Vec<u64>>,
    acked: HashMap<u64, u64>,
}

/// A unit's contents for generation `gen`: unit, generation, a pattern, and
/// a CRC-32C of all that in the last 4 bytes.
fn stamp(unit: u64, gen: u64) -> Vec<u8> {
    let mut b = Rng::new(unit.rotate_left(32) ^ gen).bytes(UNIT);
    b[0..8].copy_from_slice(&unit.to_le_bytes());
    b[8..16].copy_from_slice(&gen.to_le_bytes());
    let crc = wire::crc32c(&b[..UNIT - 4]);
    b[UNIT - 4..].copy_from_slice(&crc.to_le_bytes());
    b
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
    let crc = u32::from_le_bytes(data[UNIT - 4..].try_into().unwrap());
    let stamped_unit = u64::from_le_bytes(data[0..8].try_into().unwrap());
    let gen = u64::from_le_bytes(data[8..16].try_into().unwrap());
    let issued = h.issued.get(&unit).is_some_and(|g| g.contains(&gen));
    if crc != wire::crc32c(&data[..UNIT - 4])
        || stamped_unit != unit
        || !issued
        || data != stamp(unit, gen)
    {
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
    }
    if let Some(g) = acked {
        if gen < g {
            v.lost.push(format!(
                "unit {unit}: generation {gen}, but {g} was acknowledged"
            ));
        }
    }
}

/// Writes stamped units with `QUEUE_DEPTH` commands in flight until the
/// connection breaks (the target was killed), recording every write issued
/// and every success acknowledged. `lbas_per_unit` is 8 on a 512-byte pool.
fn write_until_killed(
    port: u16,
    lbas_per_unit: u32,
    rng: &mut Rng,
    next_gen: &mut u64,
    h: &mut History,
) -> u64 {
    let (_admin, mut io) = host::io_queue(port, NQN, HOSTNQN);
    io.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut in_flight: HashMap<u16, (u64, u64)> = HashMap::new();
    let mut free: Vec<u16> = (1..=QUEUE_DEPTH).collect();
    let mut buf = Vec::new();
    let mut acked_now = 0u64;
    loop {
        while let Some(cid) = free.pop() {
            // One write per unit in flight: NVMe may complete concurrent
            // writes to the same blocks in any order.
            let unit = loop {
                let u = rng.below(UNITS);
                if !in_flight.values().any(|&(iu, _)| iu == u) {
                    break u;
                }
            };
            let gen = *next_gen;
            *next_gen += 1;
            let sqe = wire::rw(
                wire::OPC_WRITE,
                cid,
                1,
                unit * lbas_per_unit as u64,
                lbas_per_unit,
                UNIT as u32,
                wire::SGL_IN_CAPSULE,
            );
            h.issued.entry(unit).or_default().push(gen);
            if io
                .write_all(&wire::capsule(&sqe.0, stamp(unit, gen), Default::default(), 0).encode())
                .is_err()
            {
                return acked_now;
            }
            in_flight.insert(cid, (unit, gen));
        }
        let mut chunk = [0u8; 65536];
        match io.read(&mut chunk) {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return acked_now,
        }
        while let Some(p) = wire::take_pdu(&mut buf).unwrap() {
            assert_eq!(p.ty, wire::CAPSULE_RESP, "unexpected PDU {:#x}", p.ty);
            let (cid, status) = p.cqe();
            let (unit, gen) = in_flight
                .remove(&cid)
                .expect("a response to a command in flight");
            assert_eq!(
                status, 0,
                "write of unit {unit} failed with status {status:#x}"
            );
            let a = h.acked.entry(unit).or_insert(gen);
            *a = (*a).max(gen);
            acked_now += 1;
            free.push(cid);
        }
    }
}

/// The torture on one pool: `cycles` times start the target on it, write
/// until a random SIGKILL, check the pool. Returns the verdict of all cycles.
fn torture(pool: &Path, block_size: usize, cycles: u64, seed: u64) -> (Verdict, u64, u64) {
    let mut rng = Rng::new(seed);
    let mut h = History::default();
    let mut next_gen = 1u64;
    let mut verdict = Verdict::default();
    let mut acknowledged = 0;
    let mut kills = 0;
    {
        let p = spdk_pmem::pmem::Pool::create(pool, block_size, 32 << 20, 0o600).unwrap();
        assert!(p.block_count() * block_size as u64 >= UNITS * UNIT as u64);
    }
    let lbas_per_unit = (UNIT / block_size) as u32;
    for cycle in 0..cycles {
        let (mut t, port) = serve_pool(pool, &[]);
        let pid = t.child.as_ref().unwrap().id() as i32;
        let delay = Duration::from_millis(rng.range(20, 300));
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        });
        let mut wrng = Rng::new(rng.next_u64());
        acknowledged += write_until_killed(port, lbas_per_unit, &mut wrng, &mut next_gen, &mut h);
        killer.join().unwrap();
        let status = t.wait_exit(Duration::from_secs(10));
        assert_eq!(
            status.code(),
            None,
            "cycle {cycle}: the target exited by itself ({status}) instead of being killed:\n{}",
            t.log_text()
        );
        kills += 1;
        drop(t);

        check_pool(pool, block_size, &h, &mut verdict);
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
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
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
        let delay = Duration::from_millis(rng.range(50, 300));
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(delay);
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid, signal) };
        });
        let mut wrng = Rng::new(rng.next_u64());
        let acked = write_until_killed(port, 1, &mut wrng, &mut next_gen, &mut h);
        stopper.join().unwrap();
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

/// The torture on a pool of 4 KiB blocks in `dir`: no torn unit, no lost
/// acknowledged write.
fn assert_atomic_under_sigkill(dir: &Path, seed: u64, what: &str) {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let (v, acked, kills) = torture(&dir.join("torture.pool"), 4096, cycles(), seed);
    report(what, &v, acked, kills);
    assert!(acked > 0);
    assert!(
        v.torn.is_empty() && v.lost.is_empty(),
        "torn: {:?}\nlost: {:?}",
        &v.torn[..v.torn.len().min(5)],
        &v.lost[..v.lost.len().min(5)]
    );
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
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
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
