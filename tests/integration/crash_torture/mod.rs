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

use crate::common;
use crate::nvme_tcp;

use common::rng::Rng;
use common::stamp::{self, stamp, UNIT};
use common::*;
use nvme_tcp::host;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

mod cache;
mod pools;
mod signals;

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
    let mut writer = crate::common::command(example_binary("stamped_writer"))
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
    let check = crate::common::command("pmempool")
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
