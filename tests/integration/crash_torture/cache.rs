//! The write-back cache under kills: the RBD image behind it holds a prefix
//! of the writes when the cache is lost, and acknowledged writes reach Ceph
//! whole across kills and restarts.

use super::*;

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
