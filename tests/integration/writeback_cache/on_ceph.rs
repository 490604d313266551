//! The cache in front of an RBD image on a real Ceph: flushes, a clean
//! stop, an outage (writes go on, then wait), a namespace beside it, a pool
//! of another image, a base with a volatile cache.

use super::*;

/// An NVMe FLUSH to the cached namespace completes once everything written
/// before it is in Ceph. SPDK's bdev_nvme completes a flush without sending
/// one, so the writer (examples/stamped_writer.rs, SPDK's lib/nvme) sends
/// it: 3,000 stamped writes at QD 16 through the cache (acknowledged from
/// the pool, destaged one by one: seconds of work), then the Flush, then
/// `rbd export` at once: every unit holds its last acknowledged write.
#[test]
fn a_flush_completes_once_the_writes_are_in_ceph() {
    let _turn = beside_others();
    use common::stamp::{stamp, UNIT};
    use std::io::BufRead;
    const UNITS: u64 = 512;
    let ceph = common::ceph::Ceph::start();
    ceph.rbd(&["create", "rbd/flushed", "--size", "16M"]);
    let dir = shm_dir();
    let cache = dir.path().join("cache.pool");
    let port = test_port();
    let t = serve_cached_rbd(&ceph, "flushed", &cache, port);

    let (shm_id, _) = unique_ids();
    let out = crate::common::command(example_binary("stamped_writer"))
        .args(["--port", &port.to_string(), "--subnqn", NQN])
        .args(["--shm-id", &shm_id.to_string(), "--core-mask", "0x2"])
        .args(["--units", &UNITS.to_string(), "--queue-depth", "16"])
        .args(["--writes", "3000", "--seconds", "120"])
        .output()
        .expect("running examples/stamped_writer");
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/spdk{shm_id}"));
    let text = output_text(&out);
    assert!(out.status.success(), "the writer: {text}");
    let mut acked = std::collections::HashMap::new();
    for line in out.stdout.lines() {
        let line = line.unwrap();
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.first().copied() {
            Some("ack") => {
                let (unit, gen): (u64, u64) = (w[1].parse().unwrap(), w[2].parse().unwrap());
                let newest = acked.entry(unit).or_insert(gen);
                *newest = (*newest).max(gen);
            }
            Some("flushed") => assert_eq!(&w[1..], ["0", "0"], "the flush failed: {line}"),
            Some("error") => panic!("a write failed: {line}"),
            _ => {}
        }
    }
    assert!(text.contains("end flushed"), "{text}");
    let dirty_after = cache_info(&t)["dirty_blocks"].as_u64().unwrap();
    let exported = dir.path().join("flushed.img");
    ceph.rbd(&["export", "rbd/flushed", exported.to_str().unwrap()]);
    let image = std::fs::read(&exported).unwrap();
    let mut missing = Vec::new();
    for (unit, gen) in &acked {
        let at = *unit as usize * UNIT;
        if image[at..at + UNIT] != stamp(*unit, *gen)[..] {
            missing.push(unit);
        }
    }
    assert!(
        missing.is_empty(),
        "after the flush, {} of {} units lack their last acknowledged write in Ceph \
         (dirty blocks after the flush: {dirty_after})",
        missing.len(),
        acked.len()
    );
    assert_eq!(
        dirty_after, 0,
        "the flush completed with writes not destaged"
    );

    // The same through the RPC: bdev_pmem_cache_flush answers once what
    // was acknowledged before it is in Ceph (spdk_dd's own flush at the
    // end does not reach the target: SPDK 20.07's bdev_nvme completes it
    // without sending one).
    let more = pattern(2048, 0xf1);
    let input = dir.path().join("more");
    std::fs::write(&input, &more).unwrap();
    let config = nvme_bdev_config(dir.path(), NQN, port);
    dd_to_namespace(&config, &input, 512);
    let dirty_before = cache_info(&t)["dirty_blocks"].clone();
    t.rpc_ok(&["--plugin", "rpc_pmem_cache", "bdev_pmem_cache_flush", "wb0"]);
    let info = cache_info(&t);
    let _ = std::fs::remove_file(&exported);
    ceph.rbd(&["export", "rbd/flushed", exported.to_str().unwrap()]);
    let image = std::fs::read(&exported).unwrap();
    assert!(
        image[512 * BLOCK..2560 * BLOCK] == more[..],
        "bdev_pmem_cache_flush answered before the writes were in Ceph \
         (dirty blocks before it {dirty_before}, after {info})"
    );
    assert_eq!(info["dirty_blocks"], 0, "{info}");
    assert!(info["destage_rate"].as_f64().unwrap() > 0.0, "{info}");
    let err = t.jsonrpc_err("bdev_pmem_cache_flush", json!({"name": "nope"}));
    assert!(err.contains("nope"), "{err}");
}

/// A clean stop (SIGINT) destages everything before the target exits: 2,048
/// blocks written through the cache in front of an RBD image, SIGINT at
/// once, and `rbd export` holds them all.
#[test]
fn a_clean_stop_destages_everything_first() {
    let _turn = beside_others();
    let ceph = common::ceph::Ceph::start();
    ceph.rbd(&["create", "rbd/stopped", "--size", "16M"]);
    let dir = shm_dir();
    let cache = dir.path().join("cache.pool");
    let port = test_port();
    let mut t = serve_cached_rbd(&ceph, "stopped", &cache, port);
    let data = pattern(2048, 0x570b);
    let input = dir.path().join("pattern");
    std::fs::write(&input, &data).unwrap();
    let config = nvme_bdev_config(dir.path(), NQN, port);
    spdk_dd_ok(
        &config,
        &["--if", input.to_str().unwrap(), "--ob", "Nvme0n1"],
    );
    let dirty = cache_info(&t)["dirty_blocks"].as_u64().unwrap();
    assert!(
        dirty > 0,
        "everything was destaged before the stop: the test shows nothing"
    );
    let child = t.child.as_ref().unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = t.wait_exit(Duration::from_secs(90));
    assert!(status.success(), "exit {status:?}:\n{}", t.log_text());
    let exported = dir.path().join("stopped.img");
    ceph.rbd(&["export", "rbd/stopped", exported.to_str().unwrap()]);
    let image = std::fs::read(&exported).unwrap();
    assert!(
        image[..data.len()] == data[..],
        "rbd export after a clean stop lacks acknowledged writes ({dirty} were dirty at the stop)"
    );
}

/// Ceph stopped under load: writes go on into the cache (acknowledged from
/// the pool), the cache says Ceph is unreachable, and once Ceph is back it
/// destages them all.
/// A Ceph outage under load: writes go on into the cache while it has
/// room, reads return them, and once the cache is full further writes wait
/// (back-pressure: the host sees no error) until Ceph returns; then the
/// waiting writes complete and everything reaches the image.
#[test]
fn writes_go_on_while_ceph_is_down_then_wait_when_the_cache_is_full() {
    let _turn = beside_others();
    let ceph = common::ceph::Ceph::start();
    ceph.rbd(&["create", "rbd/outage", "--size", "32M"]);
    let dir = shm_dir();
    let cache = dir.path().join("cache.pool");
    let port = test_port();
    // The smallest pool libpmemblk makes: 3,587 slots; writes wait for room
    // as long as it takes (--wait-timeout-ms 0).
    let t = serve_cached_rbd_configured(&ceph, "outage", &[], &cache, 1, 0, port);
    let slots = cache_info(&t)["slots"].as_u64().unwrap();
    let config = nvme_bdev_config(dir.path(), NQN, port);
    let write = |data: &[u8], name: &str, seek: u64| {
        let input = dir.path().join(name);
        std::fs::write(&input, data).unwrap();
        let seek = seek.to_string();
        let args = [
            "--if",
            input.to_str().unwrap(),
            "--ob",
            "Nvme0n1",
            "--seek",
            &seek,
        ];
        args.map(String::from)
    };
    let before = pattern(64, 0x0b1);
    let args = write(&before, "before", 128);
    spdk_dd_ok(&config, &args.each_ref().map(String::as_str));
    wait_clean(&t);

    ceph.script(&["stop"]);
    let during = pattern(96, 0x0b2);
    // Over blocks 0-7 too, which every host reads first (the GPT probe):
    // from the cache, it need not wait for Ceph.
    let args = write(&during, "during", 0);
    spdk_dd_ok(&config, &args.each_ref().map(String::as_str));
    // librbd gives up on a write after rados_osd_op_timeout (20 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    while cache_info(&t)["base_reachable"] != false {
        assert!(
            Instant::now() < deadline,
            "the cache never noticed: {}",
            cache_info(&t)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let info = cache_info(&t);
    assert_eq!(info["dirty_blocks"], 96, "{info}");
    // Reads still return the newest data, from the cache.
    assert!(
        read_back(dir.path(), &config, 0, 96) == during,
        "reads during the outage differ"
    );

    // 256 blocks more than fit: they wait.
    let overflow = pattern((slots - 96 + 256) as usize, 0x0b3);
    let args = write(&overflow, "overflow", 192);
    let mut writer = Background::spdk_dd(&config, &args.each_ref().map(String::as_str));
    let deadline = Instant::now() + Duration::from_secs(30);
    while cache_info(&t)["waiting_writes"] == 0 {
        assert!(
            Instant::now() < deadline,
            "no write waits for room: {}",
            cache_info(&t)
        );
        assert!(writer.running(), "spdk_dd ended: {}", writer.output());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let info = cache_info(&t);
    assert!(
        writer.running(),
        "spdk_dd ended while the cache was full and Ceph down: {}",
        writer.output()
    );
    assert_eq!(info["dirty_blocks"], slots, "{info}");
    assert!(info["waiting_writes"].as_u64().unwrap() > 0, "{info}");
    assert_eq!(info["failed"], false, "{info}");

    ceph.script(&["start"]);
    let status = writer.wait(Duration::from_secs(180));
    assert!(
        status.success(),
        "the waiting writes failed after Ceph returned: {}",
        writer.output()
    );
    wait_clean(&t);
    let info = cache_info(&t);
    assert_eq!(info["base_reachable"], true, "{info}");
    assert_eq!(info["waiting_writes"], 0, "{info}");
    let exported = dir.path().join("outage.img");
    ceph.rbd(&["export", "rbd/outage", exported.to_str().unwrap()]);
    let image = std::fs::read(&exported).unwrap();
    let regions = [(128, &before), (0, &during), (192, &overflow)];
    for (at, data) in regions {
        let at = at * BLOCK;
        assert!(
            image[at..at + data.len()] == data[..],
            "the blocks written at {} differ in Ceph",
            at / BLOCK
        );
    }
}

/// What one perf run gave each namespace: (cached, neighbour) IOPS.
fn perf_rows(text: &str, cached: &str, neighbour: &str) -> (f64, f64) {
    let row = |nqn: &str| {
        text.lines()
            .find(|l| l.contains(&format!("subnqn:{nqn}) NSID 1")) && l.contains("from core"))
            .and_then(|l| l.rsplit(':').next())
            .and_then(|cols| cols.split_whitespace().next())
            .and_then(|iops| iops.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no row for {nqn} in perf's output:\n{text}"))
    };
    (row(cached), row(neighbour))
}

/// Review F5: a namespace stuck behind a Ceph outage must not take the
/// target from the others. The cache's namespace and a /dev/shm pmem one
/// on the same TCP transport (default options: 511 shared data buffers),
/// loaded by one perf process (64 KiB randrw, 512 in flight on 4 queues
/// per namespace, more than the buffers): while Ceph is down and the cache
/// full, its writes wait and fail after `wait_timeout_ms`, and the pmem
/// namespace goes on serving; what it writes then reads back.
#[test]
fn a_pmem_namespace_beside_the_cache_keeps_serving_through_a_ceph_outage() {
    let _turn = beside_others();
    const NEAR: &str = "nqn.2016-06.io.spdk:beside";
    // A measurement under load, two minutes long: the plain suite's.
    if std::env::var_os("SPDK_PMEM_SANITIZED").is_some() {
        eprintln!("sanitized build: the outage's neighbour is measured in the plain suite");
        return;
    }
    let ceph = common::ceph::Ceph::start();
    ceph.rbd(&["create", "rbd/beside", "--size", "64M"]);
    let dir = shm_dir();
    let cache = dir.path().join("cache.pool");
    let (port, near_port) = (test_port(), test_port());
    let t = serve_cached_rbd_configured(&ceph, "beside", &[], &cache, 1, 10_000, port);
    let slots = cache_info(&t)["slots"].as_u64().unwrap();
    let near = dir.path().join("near.pool");
    let near = near.to_str().unwrap();
    t.rpc_ok(&["bdev_pmem_create_pool", near, "64", "4096"]);
    t.rpc_ok(&["bdev_pmem_create", "-n", "near0", near]);
    t.rpc_ok(&["nvmf_create_subsystem", NEAR, "-a", "-s", "SPDKNEAR"]);
    add_tcp_listener(&t, NEAR, near_port);
    t.rpc_ok(&["nvmf_subsystem_add_ns", NEAR, "near0"]);
    let (cached, beside) = (trid(NQN, port), trid(NEAR, near_port));
    let load = |seconds: &str| {
        let args = [
            "-q", "512", "-P", "4", "-o", "65536", "-w", "randrw", "-M", "50", "-t", seconds, "-c",
            "0x2", "-r", &cached, "-r", &beside,
        ];
        let out = crate::common::command(spdk_tool("build/examples/perf"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running perf");
        let text = output_text(&out);
        assert!(out.status.success(), "perf: {text}");
        perf_rows(&text, NQN, NEAR)
    };
    let before = load("3");

    ceph.script(&["stop"]);
    let mut during = Vec::new();
    for _ in 0..2 {
        during.push(load("5"));
    }
    let info = cache_info(&t);
    // Full: no room for one more 64 KiB write (16 blocks).
    let dirty = info["dirty_blocks"].as_u64().unwrap();
    assert!(dirty + 16 > slots, "the cache never filled: {info}");
    eprintln!(
        "IOPS (cached, pmem beside it), 64 KiB randrw, 512 in flight each: before the \
         outage {before:?}; during it {during:?}"
    );
    for (_, near_iops) in &during {
        assert!(
            *near_iops > 0.0,
            "the pmem namespace served nothing during the outage: {during:?}"
        );
    }
    // What the neighbour takes during the outage, it gives back.
    let config = nvme_bdev_config(dir.path(), NEAR, near_port);
    let data = pattern(256, 0xbe5);
    let written = dir.path().join("near-written");
    std::fs::write(&written, &data).unwrap();
    dd_to_namespace(&config, &written, 64);
    assert!(
        read_back(dir.path(), &config, 64, 256) == data,
        "the pmem namespace read back otherwise during the outage"
    );

    ceph.script(&["start"]);
    wait_clean(&t);
    let info = cache_info(&t);
    assert_eq!(
        (&info["failed"], &info["waiting_writes"]),
        (&false.into(), &0.into()),
        "{info}"
    );
}

/// The log knows the image it caches (its cluster's fsid and its image
/// id), not the bdev's name: a pool made for one image is refused in front
/// of another image under the same bdev name, taken back in front of its
/// own image under another name, and refused in front of an image made
/// anew under the old one's name.
#[test]
fn a_pool_of_another_rbd_image_is_refused() {
    let _turn = beside_others();
    let ceph = common::ceph::Ceph::start();
    // Review F4: through SPDK's C RBD module the pool knew only the bdev's
    // name and size, and took another image under the old name.
    for module in ["rust", "c"] {
        pool_of_another_image_is_refused(&ceph, module);
    }
}

fn pool_of_another_image_is_refused(ceph: &common::ceph::Ceph, module: &str) {
    let (mine, other) = (format!("mine_{module}"), format!("other_{module}"));
    ceph.rbd(&["create", &format!("rbd/{mine}"), "--size", "4M"]);
    ceph.rbd(&["create", &format!("rbd/{other}"), "--size", "4M"]);
    let dir = shm_dir();
    let cache = dir.path().join("cache.pool");
    let cache = cache.to_str().unwrap();
    let t = Target::start(&our_nvmf_tgt(), &["--rbd-module", module]);
    let create = |bdev: &str, image: &str| {
        let create = ceph.bdev_rbd_create(bdev, image);
        let create: Vec<&str> = create.iter().map(String::as_str).collect();
        t.rpc_ok(&create);
    };
    create("rbd0", &mine);
    t.jsonrpc_ok(
        "bdev_pmem_cache_create",
        Some(json!({"name": "wb0", "base_bdev": "rbd0", "pool": cache, "slots": 64})),
    );
    t.jsonrpc_ok("bdev_pmem_cache_delete", Some(json!({"name": "wb0"})));
    t.rpc_ok(&["bdev_rbd_delete", "rbd0"]);
    create("rbd0", &other);
    let err = t.jsonrpc_err(
        "bdev_pmem_cache_create",
        json!({"name": "wb0", "base_bdev": "rbd0", "pool": cache}),
    );
    assert!(
        err.contains(&format!("it caches \"rbd rbd/{mine} (cluster "))
            && err.contains(&format!("not \"rbd rbd/{other} (cluster ")),
        "{module}: {err}"
    );
    create("renamed", &mine);
    t.jsonrpc_ok(
        "bdev_pmem_cache_create",
        Some(json!({"name": "wb0", "base_bdev": "renamed", "pool": cache})),
    );

    // An image made anew under the old one's name is another image.
    t.jsonrpc_ok("bdev_pmem_cache_delete", Some(json!({"name": "wb0"})));
    t.rpc_ok(&["bdev_rbd_delete", "renamed"]);
    ceph.rbd(&["rm", &format!("rbd/{mine}")]);
    ceph.rbd(&["create", &format!("rbd/{mine}"), "--size", "4M"]);
    create("rbd1", &mine);
    let err = t.jsonrpc_err(
        "bdev_pmem_cache_create",
        json!({"name": "wb0", "base_bdev": "rbd1", "pool": cache}),
    );
    let ids: Vec<&str> = err.matches("image id ").collect();
    assert!(
        err.contains(&format!("it caches \"rbd rbd/{mine} (cluster ")) && ids.len() == 2,
        "{module}: {err}"
    );
}

/// A backing bdev with a volatile write cache (librbd's, in writeback
/// mode from the first write, dirty data kept for up to 60 s): the cache flushes it before
/// it counts a write as destaged and frees its slot. Without that flush, a
/// kill after destaging loses writes that were acknowledged: in neither the
/// pool (its slots freed) nor Ceph (they died in librbd's memory).
#[test]
fn a_base_with_a_volatile_cache_is_flushed_before_slots_are_freed() {
    let _turn = beside_others();
    let ceph = common::ceph::Ceph::start();
    ceph.rbd(&["create", "rbd/volatile", "--size", "16M"]);
    let dir = shm_dir();
    let cache = dir.path().join("cache.pool");
    let port = test_port();
    let librbd_cache = [
        "rbd_cache=true",
        // Pacific's default policy (writearound) sends each write on at
        // once; writeback keeps it in librbd's memory.
        "rbd_cache_policy=writeback",
        "rbd_cache_writethrough_until_flush=false",
        "rbd_cache_max_dirty_age=60",
    ];
    let mut t =
        serve_cached_rbd_configured(&ceph, "volatile", &librbd_cache, &cache, 4096, 10_000, port);
    let data = pattern(64, 0x7c);
    let input = dir.path().join("pattern");
    std::fs::write(&input, &data).unwrap();
    let config = nvme_bdev_config(dir.path(), NQN, port);
    dd_to_namespace(&config, &input, 16);
    wait_clean(&t);
    kill(&mut t);
    let exported = dir.path().join("volatile.img");
    ceph.rbd(&["export", "rbd/volatile", exported.to_str().unwrap()]);
    let image = std::fs::read(&exported).unwrap();
    let missing = (0..64)
        .filter(|i| image[(16 + i) * BLOCK..(17 + i) * BLOCK] != data[i * BLOCK..(i + 1) * BLOCK])
        .count();
    // Restarted on the same pool, the namespace must still read them.
    let t =
        serve_cached_rbd_configured(&ceph, "volatile", &librbd_cache, &cache, 4096, 10_000, port);
    let replayed = cache_info(&t)["dirty_blocks"].clone();
    assert!(
        missing == 0 && read_back(dir.path(), &config, 16, 64) == data,
        "{missing} of 64 destaged blocks are not in Ceph after a kill, and the restarted \
         cache replayed {replayed}: acknowledged writes lost"
    );
}
