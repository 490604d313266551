//! The pmem write-back cache (`bdev_pmem_cache_create`) in front of a
//! backing bdev, served over NVMe/TCP and driven by SPDK's initiators: data
//! written through the cache reads back, reaches the backing bdev, and what
//! was not destaged when the target died is replayed from the pool.
//!
//! The backing bdev here is a Rust pmem bdev on its own pool, which the test
//! reads directly once the target is gone; the Ceph tests put the cache in
//! front of an RBD image.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::background::Background;
use common::writeback::{cache_info, pattern, pmem_base};
use common::*;
use serde_json::json;
use spdk_pmem::pmem::Pool;

mod on_ceph;
mod on_pmem;

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

/// SIGKILL on our own target, and its exit reaped.
fn kill(t: &mut Target) {
    let mut child = t.child.take().expect("target running");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
}
