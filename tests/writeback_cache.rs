//! The pmem write-back cache (`bdev_pmem_cache_create`) in front of a
//! backing bdev, served over NVMe/TCP and driven by SPDK's initiators: data
//! written through the cache reads back, reaches the backing bdev, and what
//! was not destaged when the target died is replayed from the pool.
//!
//! The backing bdev here is a Rust pmem bdev on its own pool, which the test
//! reads directly once the target is gone; the Ceph tests put the cache in
//! front of an RBD image.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::background::Background;
use common::writeback::{cache_info, pattern, pmem_base};
use common::*;
use serde_json::json;
use spdk_pmem::pmem::Pool;

const NQN: &str = "nqn.2016-06.io.spdk:wbcache";
const BLOCK: usize = 4096;

/// A target with bdev `base0` on `base` and cache `wb0` on `cache` (created
/// with `slots` slots if missing), exported as `NQN` on `port`.
fn serve_cache(t: &Target, base: &Path, cache: &Path, slots: u64, port: u16) {
    pmem_base(t, base, "base0");
    t.jsonrpc_ok(
        "bdev_pmem_cache_create",
        Some(json!({"name": "wb0", "base_bdev": "base0",
                    "pool": cache.to_str().unwrap(), "slots": slots})),
    );
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    t.rpc_ok(&["nvmf_create_subsystem", NQN, "-a", "-s", "SPDKWB01"]);
    add_tcp_listener(t, NQN, port);
    t.rpc_ok(&["nvmf_subsystem_add_ns", NQN, "wb0"]);
}

/// A target with RBD bdev `rbd0` on `image` of `ceph` and cache `wb0` in
/// front of it on `cache` (4,096 slots if created), exported as `NQN`.
fn serve_cached_rbd(ceph: &common::ceph::Ceph, image: &str, cache: &Path, port: u16) -> Target {
    serve_cached_rbd_with(ceph, image, cache, 4096, port)
}

/// [`serve_cached_rbd`] with a pool of `slots` slots if created.
fn serve_cached_rbd_with(
    ceph: &common::ceph::Ceph,
    image: &str,
    cache: &Path,
    slots: u64,
    port: u16,
) -> Target {
    serve_cached_rbd_configured(ceph, image, &[], cache, slots, 10_000, port)
}

/// [`serve_cached_rbd_with`], the RBD bdev with librbd options `config`
/// (`key=value`) besides the cluster's address and key, and the cache's
/// wait timeout.
fn serve_cached_rbd_configured(
    ceph: &common::ceph::Ceph,
    image: &str,
    config: &[&str],
    cache: &Path,
    slots: u64,
    wait_timeout_ms: u64,
    port: u16,
) -> Target {
    let t = Target::start(&our_nvmf_tgt(), &[]);
    let mut create = ceph.bdev_rbd_create("rbd0", image);
    for c in config {
        create.insert(1, c.to_string());
        create.insert(1, "--config".into());
    }
    let create: Vec<&str> = create.iter().map(String::as_str).collect();
    t.rpc_ok(&create);
    // SPDK's rpc.py with our plugin.
    let slots = slots.to_string();
    let plugin = ["--plugin", "rpc_pmem_cache"];
    let timeout = wait_timeout_ms.to_string();
    let create = [
        "bdev_pmem_cache_create",
        "-b",
        "wb0",
        "--slots",
        &slots,
        "--wait-timeout-ms",
        &timeout,
        "rbd0",
    ];
    t.rpc_ok(&[&plugin[..], &create[..], &[cache.to_str().unwrap()]].concat());
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    t.rpc_ok(&["nvmf_create_subsystem", NQN, "-a", "-s", "SPDKWB01"]);
    add_tcp_listener(&t, NQN, port);
    t.rpc_ok(&["nvmf_subsystem_add_ns", NQN, "wb0"]);
    t
}

/// Blocks `skip..skip + count` of the namespace, read with spdk_dd.
fn read_back(dir: &Path, config: &Path, skip: u64, count: u64) -> Vec<u8> {
    let back = dir.join("back");
    spdk_dd_ok(
        config,
        &[
            "--ib",
            "Nvme0n1",
            "--of",
            back.to_str().unwrap(),
            "--skip",
            &skip.to_string(),
            "--count",
            &count.to_string(),
        ],
    );
    std::fs::read(&back).unwrap()
}

/// Waits (bounded) until the cache has destaged everything.
fn wait_clean(t: &Target) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = cache_info(t);
        if info["dirty_blocks"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "still dirty after 60 s: {info}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Blocks `first..first + count` of the pool at `path`.
fn pool_blocks(path: &Path, first: u64, count: usize) -> Vec<u8> {
    let p = Pool::open(path, Some(BLOCK)).expect("the pool opens once the target let go");
    let mut out = vec![0u8; count * BLOCK];
    for i in 0..count {
        p.read(first + i as u64, &mut out[i * BLOCK..(i + 1) * BLOCK])
            .unwrap();
    }
    out
}

#[test]
fn writes_read_back_and_reach_the_backing_bdev() {
    let dir = shm_dir();
    let (base, cache) = (dir.path().join("base.pool"), dir.path().join("cache.pool"));
    let port = test_port();
    let mut t = Target::start(&our_nvmf_tgt(), &[]);
    serve_cache(&t, &base, &cache, 2048, port);
    let info = cache_info(&t);
    assert_eq!(info["base_bdev"], "base0", "{info}");
    assert!(info["slots"].as_u64().unwrap() >= 2048, "{info}");
    for size in [4096, 65536] {
        let (status, out) = bdevperf_verify(dir.path(), NQN, port, size);
        check_bdevperf(status, &out);
    }
    let data = pattern(64, 0x5eed);
    let input = dir.path().join("pattern");
    std::fs::write(&input, &data).unwrap();
    let config = nvme_bdev_config(dir.path(), NQN, port);
    dd_to_namespace(&config, &input, 100);
    let back = dir.path().join("back");
    dd_from_namespace(&config, &back, 100, 64);
    assert!(std::fs::read(&back).unwrap() == data, "read back differs");
    wait_clean(&t);
    let info = cache_info(&t);
    assert!(info["destaged_writes"].as_u64().unwrap() >= 64, "{info}");
    assert_eq!(info["base_reachable"], true, "{info}");
    assert!(t.stop().success(), "{}", t.log_text());
    assert!(
        pool_blocks(&base, 100, 64) == data,
        "the backing bdev lacks the writes"
    );
}

#[test]
fn writes_not_yet_destaged_when_the_target_dies_are_replayed() {
    let dir = shm_dir();
    let (base, cache) = (dir.path().join("base.pool"), dir.path().join("cache.pool"));
    let port = test_port();
    let config = nvme_bdev_config(dir.path(), NQN, port);
    let data = pattern(256, 0xdead);
    let input = dir.path().join("pattern");
    std::fs::write(&input, &data).unwrap();
    {
        let mut t = Target::start(&our_nvmf_tgt(), &[]);
        serve_cache(&t, &base, &cache, 1024, port);
        dd_to_namespace(&config, &input, 8);
        let child = t.child.as_mut().unwrap();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        t.child = None;
    }
    // Some writes may have been destaged before the kill; all are in the
    // pool or the backing bdev, and the restarted cache serves them all.
    let mut t = Target::start(&our_nvmf_tgt(), &[]);
    serve_cache(&t, &base, &cache, 1024, port);
    assert!(
        read_back(dir.path(), &config, 8, 256) == data,
        "read back after the kill differs"
    );
    wait_clean(&t);
    assert!(t.stop().success(), "{}", t.log_text());
    assert!(
        pool_blocks(&base, 8, 256) == data,
        "the backing bdev lacks the writes"
    );
}

#[test]
fn a_pool_made_for_another_backing_bdev_is_refused() {
    let dir = shm_dir();
    let (base, cache) = (dir.path().join("base.pool"), dir.path().join("cache.pool"));
    let other = dir.path().join("other.pool");
    let t = Target::start(&our_nvmf_tgt(), &[]);
    serve_cache(&t, &base, &cache, 64, test_port());
    t.rpc_ok(&[
        "bdev_pmem_create_pool",
        other.to_str().unwrap(),
        "64",
        "4096",
    ]);
    t.rpc_ok(&["bdev_pmem_create", "-n", "other0", other.to_str().unwrap()]);
    t.jsonrpc_ok("bdev_pmem_cache_delete", Some(json!({"name": "wb0"})));
    let err = t.jsonrpc_err(
        "bdev_pmem_cache_create",
        json!({"name": "wb1", "base_bdev": "other0", "pool": cache.to_str().unwrap()}),
    );
    assert!(err.contains("it caches \"bdev base0"), "{err}");
    assert!(err.contains("not \"bdev other0"), "{err}");
    let bdevs = t.rpc_json(&["bdev_get_bdevs"]);
    assert!(
        bdevs.as_array().unwrap().iter().all(|b| b["name"] != "wb1"),
        "nothing half-created: {bdevs}"
    );
}

/// An NVMe FLUSH to the cached namespace completes once everything written
/// before it is in Ceph. SPDK's bdev_nvme completes a flush without sending
/// one, so the writer (examples/stamped_writer.rs, SPDK's lib/nvme) sends
/// it: 3,000 stamped writes at QD 16 through the cache (acknowledged from
/// the pool, destaged one by one: seconds of work), then the Flush, then
/// `rbd export` at once: every unit holds its last acknowledged write.
#[test]
fn a_flush_completes_once_the_writes_are_in_ceph() {
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
    let out = std::process::Command::new(example_binary("stamped_writer"))
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
        let out = std::process::Command::new(spdk_tool("build/examples/perf"))
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

/// Review F15: creating a large pool lays out every block, and opening one
/// scans every slot; on the application thread's reactor either stalled
/// every RPC and namespace for as long. A 1 GiB pool (262,144 slots) is
/// created (about 230 ms) while another client calls the target: its calls
/// are answered while the create is under way (before: none, the create
/// held the reactor). It is opened again the same way (printed only).
#[test]
fn a_large_pool_is_made_and_opened_while_the_target_keeps_answering() {
    let dir = shm_dir();
    let base = dir.path().join("base.pool");
    let cache = dir.path().join("large.pool");
    let t = Target::start(&our_nvmf_tgt(), &[]);
    pmem_base(&t, &base, "base0");
    let create = json!({"name": "wb0", "base_bdev": "base0",
                        "pool": cache.to_str().unwrap(), "slots": 262_144});
    let (t, create) = (&t, &create);
    let pid = t.child.as_ref().unwrap().id();
    let cache_path = cache.as_path();
    // Whether process `pid` has `path` open.
    fn has_open(pid: u32, path: &Path) -> bool {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|fds| {
                fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                    .any(|target| target == path)
            })
            .unwrap_or(false)
    }
    for what in ["created", "opened"] {
        let (answered, slowest, took) = std::thread::scope(|s| {
            let started = Instant::now();
            let creating = s.spawn(move || {
                let r = t.jsonrpc("bdev_pmem_cache_create", Some(create.clone()));
                (r, started.elapsed())
            });
            // Once the target has the pool open, the create is under way
            // on the target: what is answered from then on was answered
            // beside it.
            while !creating.is_finished() && !has_open(pid, cache_path) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let (mut answered, mut slowest) = (0u32, Duration::ZERO);
            while !creating.is_finished() {
                let asked = Instant::now();
                let version = t.jsonrpc("spdk_get_version", None);
                assert!(version.get("result").is_some(), "{version}");
                if !creating.is_finished() {
                    answered += 1;
                    slowest = slowest.max(asked.elapsed());
                }
            }
            let (response, took) = creating.join().unwrap();
            assert!(response.get("error").is_none(), "{response}");
            (answered, slowest, took)
        });
        eprintln!(
            "1 GiB pool {what} in {took:?}; meanwhile {answered} calls answered, the slowest in \
             {slowest:?}"
        );
        // Opening this pool scans slots that were never written, which
        // takes about 30 ms: too short to count on a call in between.
        assert!(
            what == "opened" || answered > 0,
            "no call was answered while the pool was {what} ({took:?})"
        );
        t.jsonrpc_ok("bdev_pmem_cache_delete", Some(json!({"name": "wb0"})));
    }
}

/// SIGKILL on our own target, and its exit reaped.
fn kill(t: &mut Target) {
    let mut child = t.child.take().expect("target running");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
}

/// A backing bdev with a volatile write cache (librbd's, in writeback
/// mode from the first write, dirty data kept for up to 60 s): the cache flushes it before
/// it counts a write as destaged and frees its slot. Without that flush, a
/// kill after destaging loses writes that were acknowledged: in neither the
/// pool (its slots freed) nor Ceph (they died in librbd's memory).
#[test]
fn a_base_with_a_volatile_cache_is_flushed_before_slots_are_freed() {
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

/// `save_config` given back with `--json` brings the cache back on its
/// pool, in front of its backing bdev, with what it held.
#[test]
fn save_config_brings_the_cache_back_with_its_data() {
    let dir = shm_dir();
    let (base, cache) = (dir.path().join("base.pool"), dir.path().join("cache.pool"));
    let port = test_port();
    let config = nvme_bdev_config(dir.path(), NQN, port);
    let data = pattern(32, 0x5a7e);
    let input = dir.path().join("pattern");
    std::fs::write(&input, &data).unwrap();
    let saved = dir.path().join("saved.json");
    {
        let mut t = Target::start(&our_nvmf_tgt(), &[]);
        serve_cache(&t, &base, &cache, 256, port);
        dd_to_namespace(&config, &input, 3);
        std::fs::write(&saved, t.rpc_ok(&["save_config"])).unwrap();
        assert!(t.stop().success(), "{}", t.log_text());
    }
    let t = Target::start(&our_nvmf_tgt(), &["--json", saved.to_str().unwrap()]);
    let info = cache_info(&t);
    assert_eq!(info["base_bdev"], "base0", "{info}");
    assert!(
        read_back(dir.path(), &config, 3, 32) == data,
        "the restored cache reads differently"
    );
}

/// Review F3: the cache claims its base, as SPDK's virtual bdevs do, so
/// nothing writes the base behind its back: exporting the base as a
/// namespace and a second cache on it are refused while the cache lives,
/// `bdev_get_bdevs` shows the base claimed, and deleting the cache frees
/// it. Before the fix both succeeded and the base showed `claimed: false`.
#[test]
fn the_cache_claims_its_base() {
    let dir = shm_dir();
    let (base, cache) = (dir.path().join("base.pool"), dir.path().join("cache.pool"));
    let t = Target::start(&our_nvmf_tgt(), &[]);
    serve_cache(&t, &base, &cache, 64, test_port());
    let claimed = |t: &Target| t.rpc_json(&["bdev_get_bdevs", "-b", "base0"])[0]["claimed"].clone();
    assert_eq!(claimed(&t), true);
    let out = t.rpc(&["nvmf_subsystem_add_ns", NQN, "base0"]);
    assert!(
        !out.status.success(),
        "the cache's base became a namespace: {}",
        output_text(&out)
    );
    let other = dir.path().join("other.pool");
    let err = t.jsonrpc_err(
        "bdev_pmem_cache_create",
        json!({"name": "wb1", "base_bdev": "base0", "pool": other.to_str().unwrap(), "slots": 64}),
    );
    assert!(
        err.contains("\"base0\"") && err.contains("claimed"),
        "{err}"
    );
    assert!(!other.exists(), "a refused cache left its pool behind");
    t.rpc_ok(&["nvmf_subsystem_remove_ns", NQN, "1"]);
    t.jsonrpc_ok("bdev_pmem_cache_delete", Some(json!({"name": "wb0"})));
    assert_eq!(claimed(&t), false);
    t.rpc_ok(&["nvmf_subsystem_add_ns", NQN, "base0"]);
}

/// Review F7: a delete and a create of the same cache name sent together
/// (pipelined on one connection, as automation does): the new cache must
/// serve I/O. Before the fix the old bdev's destruct, which runs after the
/// name is already free, removed the new cache by name, and every I/O to
/// the new bdev failed.
#[test]
fn a_cache_deleted_and_made_again_under_its_name_at_once_serves_io() {
    use std::io::Write;
    let dir = shm_dir();
    let (base, cache) = (dir.path().join("base.pool"), dir.path().join("cache.pool"));
    let port = test_port();
    let t = Target::start(&our_nvmf_tgt(), &[]);
    serve_cache(&t, &base, &cache, 64, port);
    t.rpc_ok(&["nvmf_subsystem_remove_ns", NQN, "1"]);
    // The new cache on another base and pool: the old one holds its own
    // until it is gone.
    let base1 = dir.path().join("base1.pool");
    pmem_base(&t, &base1, "base1");
    let second = dir.path().join("second.pool");
    let mut stream = std::os::unix::net::UnixStream::connect(&t.sock).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let requests = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "bdev_pmem_cache_delete",
               "params": {"name": "wb0"}}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "bdev_pmem_cache_create",
               "params": {"name": "wb0", "base_bdev": "base1",
                          "pool": second.to_str().unwrap(), "slots": 64}}),
    ];
    let mut bytes = Vec::new();
    for r in &requests {
        bytes.extend(serde_json::to_vec(r).unwrap());
    }
    stream.write_all(&bytes).unwrap();
    let responses: Vec<serde_json::Value> = serde_json::Deserializer::from_reader(stream)
        .into_iter::<serde_json::Value>()
        .take(2)
        .map(|v| v.unwrap())
        .collect();
    let created = responses.iter().find(|r| r["id"] == 2).unwrap();
    assert!(
        responses
            .iter()
            .all(|r| r["id"] != 1 || r["result"] == true),
        "{responses:?}"
    );
    if created.get("error").is_some() {
        // Refused cleanly while the old bdev still had the name: safe too.
        let message = created["error"]["message"].as_str().unwrap();
        assert!(message.contains("exists"), "{responses:?}");
        t.jsonrpc_ok(
            "bdev_pmem_cache_create",
            Some(json!({"name": "wb0", "base_bdev": "base1",
                        "pool": second.to_str().unwrap(), "slots": 64})),
        );
    }
    t.rpc_ok(&["nvmf_subsystem_add_ns", NQN, "wb0"]);
    let config = nvme_bdev_config(dir.path(), NQN, port);
    let data = pattern(8, 0xf7);
    let input = dir.path().join("pattern");
    std::fs::write(&input, &data).unwrap();
    spdk_dd_ok(
        &config,
        &["--if", input.to_str().unwrap(), "--ob", "Nvme0n1"],
    );
    assert!(
        read_back(dir.path(), &config, 0, 8) == data,
        "the new cache reads differently"
    );
    assert_eq!(cache_info(&t)["pool"], second.to_str().unwrap());
}
