//! SIGKILL under load on pmem pools in memory and on disk, an RBD image, and
//! the control that shows the checker finds torn units.

use super::*;

/// The torture on a pool of 4 KiB blocks in `dir`: no torn unit, no lost
/// acknowledged write.
fn assert_atomic_under_sigkill(dir: &Path, seed: u64, what: &str) {
    let (v, acked, kills) = torture(&dir.join("torture.pool"), 4096, cycles(), seed);
    assert_whole_and_kept(what, &v, acked, kills);
}

#[test]
fn acknowledged_4k_writes_survive_sigkill_whole_on_a_pool_in_memory() {
    let _turn = alone();
    let dir = shm_dir();
    assert_atomic_under_sigkill(dir.path(), 0x70_47_01, "4 KiB blocks, pool in /dev/shm");
}

#[test]
fn acknowledged_4k_writes_survive_sigkill_whole_on_a_pool_on_disk() {
    let _turn = alone();
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
