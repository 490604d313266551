//! Ceph RBD images as namespaces of our nvmf_tgt, through SPDK's own RPCs
//! and either RBD module (ours, the default, and SPDK 20.07's C one with
//! `--rbd-module c`), against a real one-node Ceph
//! (`scripts/ceph-dev.sh`, started and destroyed by the test) checked with
//! Ceph's own `rbd`:
//! - an image filled with `rbd import` reads back over NVMe/TCP (spdk_dd)
//!   byte for byte, and `bdev_get_bdevs` names its pool and image;
//! - a pattern written over NVMe/TCP by spdk_dd is what `rbd export`
//!   returns, the blocks around it untouched;
//! - `save_config` given back with `--json` restores the namespace, and
//!   both patterns read back through the restarted target;
//! - librados' threads may run beside the reactor's CPU, on every CPU
//!   whichever the reactor's (`-m 0x1`, `-m 0x2`), and bdevs created and
//!   deleted leave no cluster connection behind (vendor patches 0025, 0026,
//!   0027 for the C module).

use crate::common;
use common::ceph::Ceph;
use common::*;

const NQN: &str = "nqn.2016-06.io.spdk:rbd";
const BLOCK: usize = 4096;
const IMAGE_BLOCKS: usize = 4096;
const WRITE_AT: usize = 1000;
const WRITE_BLOCKS: usize = 64;

fn blocks(data: &[u8], from: usize, to: usize) -> &[u8] {
    &data[from * BLOCK..to * BLOCK]
}

#[test]
fn an_rbd_image_is_a_namespace_whose_data_ceph_itself_sees() {
    let _turn = beside_others();
    let ceph = Ceph::start();
    for module in ["rust", "c"] {
        serve_an_image(&ceph, module);
        no_connection_outlives_its_bdevs(&ceph, module);
        // Where threads may run is the same under ASan: the plain suite's.
        if std::env::var_os("SPDK_PMEM_SANITIZED").is_none() {
            for mask in ["0x1", "0x2"] {
                librados_threads_may_run_on_every_cpu(&ceph, module, mask);
            }
        }
    }
}

fn serve_an_image(ceph: &Ceph, module: &str) {
    let image = format!("img_{module}");
    let spec = format!("rbd/{image}");
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let imported = common::rng::Rng::new(0x5eed_0001).bytes(IMAGE_BLOCKS * BLOCK);
    let written = common::rng::Rng::new(0x5eed_0002).bytes(WRITE_BLOCKS * BLOCK);
    std::fs::write(file("imported"), &imported).unwrap();
    std::fs::write(file("written"), &written).unwrap();
    ceph.rbd(&["import", &file("imported"), &spec]);

    let port = test_port();
    let config = nvme_bdev_config(dir.path(), NQN, port);
    let flags = ["--rbd-module", module];
    let mut t = Target::start(&our_nvmf_tgt(), &flags);
    let create = ceph.bdev_rbd_create("rbd0", &image);
    let create: Vec<&str> = create.iter().map(String::as_str).collect();
    assert_eq!(t.rpc_ok(&create).trim(), "rbd0");
    let info = t.rpc_json(&["bdev_get_bdevs", "-b", "rbd0"]);
    let rbd = &info[0]["driver_specific"]["rbd"];
    assert_eq!(
        (&rbd["pool_name"], &rbd["rbd_name"]),
        (&"rbd".into(), &image.as_str().into()),
        "{info:#}"
    );
    let ours = module == "rust";
    assert_eq!(rbd["module"] == "rbd_rs", ours, "{info:#}");
    assert_eq!(info[0]["num_blocks"], IMAGE_BLOCKS as u64, "{info:#}");
    assert_eq!(info[0]["block_size"], BLOCK as u64, "{info:#}");
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    t.rpc_ok(&["nvmf_create_subsystem", NQN, "-a", "-s", "SPDK-RBD"]);
    add_tcp_listener(&t, NQN, port);
    t.rpc_ok(&["nvmf_subsystem_add_ns", NQN, "rbd0"]);

    // What rbd import wrote, read over the fabric.
    spdk_dd_ok(
        &config,
        &["--ib", "Nvme0n1", "--count", "256", "--of", &file("read1")],
    );
    assert!(
        std::fs::read(file("read1")).unwrap() == blocks(&imported, 0, 256),
        "the first 256 blocks read over NVMe/TCP differ from what rbd import wrote"
    );
    librados_threads_run_beside_the_reactor(&t, module);
    // What the host writes, seen by rbd export once the target has stopped.
    let seek = WRITE_AT.to_string();
    spdk_dd_ok(
        &config,
        &["--if", &file("written"), "--ob", "Nvme0n1", "--seek", &seek],
    );
    let saved = dir.path().join("config.json");
    std::fs::write(&saved, t.rpc_ok(&["save_config"])).unwrap();
    assert!(t.stop().success(), "{}", t.log_text());
    ceph.rbd(&["export", &spec, &file("exported")]);
    let exported = std::fs::read(file("exported")).unwrap();
    assert_eq!(exported.len(), imported.len());
    let end = WRITE_AT + WRITE_BLOCKS;
    assert!(
        blocks(&exported, WRITE_AT, end) == written,
        "{module}: rbd export differs from what spdk_dd wrote over NVMe/TCP"
    );
    assert!(
        blocks(&exported, 0, WRITE_AT) == blocks(&imported, 0, WRITE_AT)
            && blocks(&exported, end, IMAGE_BLOCKS) == blocks(&imported, end, IMAGE_BLOCKS),
        "blocks around the written ones changed"
    );

    // The saved configuration brings the namespace back.
    let mut t = Target::start(
        &our_nvmf_tgt(),
        &["--rbd-module", module, "--json", saved.to_str().unwrap()],
    );
    let count = end.to_string();
    spdk_dd_ok(
        &config,
        &["--ib", "Nvme0n1", "--count", &count, "--of", &file("read2")],
    );
    assert!(
        std::fs::read(file("read2")).unwrap() == blocks(&exported, 0, end),
        "after a restart from save_config, the namespace reads back differently"
    );
    assert!(t.stop().success(), "{}", t.log_text());
}

/// The CPUs each of the target's threads named `prefix`* may run on, as
/// /proc lists them ("0-1").
fn threads_cpus(pid: u32, prefix: &str) -> Vec<(String, String)> {
    let mut found = vec![];
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if !name.starts_with(prefix) {
            continue;
        }
        let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
        if let Some(cpus) = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        {
            found.push((name.trim().to_string(), cpus.trim().to_string()));
        }
    }
    found
}

/// The target runs its one reactor on CPU 0 (`-m 0x1`). librados' and
/// librbd's threads start from whichever thread connects; started from a
/// reactor's thread, they inherited its pin and competed with the polling
/// reactor for CPU 0 alone (the Rust module did, until it unpinned the
/// thread that connects), and so did SPDK 20.07's C module, which
/// connected its channels on the reactor and unpinned only the image's
/// opening (vendor patch 0026).
fn librados_threads_run_beside_the_reactor(t: &Target, module: &str) {
    // SAFETY: sysconf only reads.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if online < 2 {
        eprintln!("one CPU online: nothing to check about where librados' threads run");
        return;
    }
    let threads = threads_cpus(t.child.as_ref().unwrap().id(), "msgr-worker");
    assert!(
        !threads.is_empty(),
        "{module}: no librados messenger thread"
    );
    for (name, cpus) in &threads {
        assert_ne!(
            cpus, "0",
            "{module}: {name} may run only on the reactor's CPU: {threads:?}"
        );
    }
}

/// Whichever CPU the reactor runs on (`-m 0x1`, `-m 0x2`), librados'
/// threads of a namespace's channels may run on every CPU, and the
/// kernel's scheduler places them, with either module. SPDK 20.07's
/// `spdk_unaffinitize_thread` meant to leave the reactor's CPUs out, but
/// looked only at CPUs numbered below their count: CPU 0 was left out
/// under `-m 0x1`, nothing under `-m 0x2` (vendor patch 0027, upstream's
/// revert of the exclusion).
fn librados_threads_may_run_on_every_cpu(ceph: &Ceph, module: &str, mask: &str) {
    let every = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string();
    if every == "0" {
        eprintln!("one CPU: nothing to check about where librados' threads run");
        return;
    }
    let port = test_port();
    let mut t = Target::start(&our_nvmf_tgt(), &["--rbd-module", module, "-m", mask]);
    let create = ceph.bdev_rbd_create("cpus0", &format!("img_{module}"));
    let create: Vec<&str> = create.iter().map(String::as_str).collect();
    t.rpc_ok(&create);
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    t.rpc_ok(&["nvmf_create_subsystem", NQN, "-a", "-s", "SPDK-RBD"]);
    add_tcp_listener(&t, NQN, port);
    // The poll group's channel connects to the cluster now.
    t.rpc_ok(&["nvmf_subsystem_add_ns", NQN, "cpus0"]);
    let pid = t.child.as_ref().unwrap().id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut threads = threads_cpus(pid, "msgr-worker");
    while threads.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        threads = threads_cpus(pid, "msgr-worker");
    }
    assert!(
        !threads.is_empty(),
        "{module} -m {mask}: no librados thread"
    );
    for (name, cpus) in &threads {
        assert_eq!(
            cpus, &every,
            "{module} -m {mask}: {name} may run on CPUs {cpus}, not on every one ({every}): \
             {threads:?}"
        );
    }
    assert!(t.stop().success(), "{}", t.log_text());
}

/// Three images made bdevs and deleted again leave no cluster connection
/// behind: librados' messenger threads go with the last bdev. SPDK 20.07's
/// C module left one connection per `bdev_rbd_create` running for the life
/// of the process (the one that read the image's size; vendor patch 0025).
fn no_connection_outlives_its_bdevs(ceph: &Ceph, module: &str) {
    let mut t = Target::start(&our_nvmf_tgt(), &["--rbd-module", module]);
    let pid = t.child.as_ref().unwrap().id();
    for round in 0..3 {
        let create = ceph.bdev_rbd_create("gone0", &format!("img_{module}"));
        let create: Vec<&str> = create.iter().map(String::as_str).collect();
        t.rpc_ok(&create);
        t.rpc_ok(&["bdev_rbd_delete", "gone0"]);
        // The Rust module closes the image and the connection on a thread
        // of its own, after the RPC's answer: give it a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut left = threads_cpus(pid, "msgr-worker");
        while !left.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
            left = threads_cpus(pid, "msgr-worker");
        }
        assert!(
            left.is_empty(),
            "{module}: after {} bdev_rbd_create and bdev_rbd_delete, librados threads \
             still run: {left:?}",
            round + 1
        );
    }
    assert!(t.stop().success(), "{}", t.log_text());
}
