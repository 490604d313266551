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
//!   both patterns read back through the restarted target.

mod common;
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
    let ceph = Ceph::start();
    for module in ["rust", "c"] {
        serve_an_image(&ceph, module);
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
