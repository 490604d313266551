//! Connecting to a real Ceph (`scripts/ceph-dev.sh`'s one-node cluster)
//! from the library, off any reactor: the right key connects; a wrong key,
//! a monitor nobody answers at, and an option Ceph does not know each fail
//! with an error that names what was wrong, within the time given. Images
//! open (a missing pool or image named as such) and read, write, zero,
//! discard and flush through librbd's asynchronous calls, as `rbd export`
//! then shows.
#![cfg(feature = "rbd")]

use crate::common;
use common::ceph::Ceph;
use common::{beside_others, test_port};

use std::time::{Duration, Instant};

use spdk_pmem::rbd::{Cluster, ClusterConfig, Image};
use spdk_pmem::Error;

fn config(mon: &str, key: &str) -> ClusterConfig {
    ClusterConfig {
        user: Some("admin".into()),
        options: vec![("mon_host".into(), mon.into()), ("key".into(), key.into())],
    }
}

/// Connects with a 3 s limit; the error (if any) and how long it took.
fn connect(config: &ClusterConfig) -> (Result<Cluster, Error>, Duration) {
    let started = Instant::now();
    let result = Cluster::connect(config, Duration::from_secs(3));
    (result, started.elapsed())
}

#[test]
fn connections_succeed_or_say_what_was_wrong_in_bounded_time() {
    let _turn = beside_others();
    let ceph = Ceph::start();
    let (ok, _) = connect(&config(&ceph.mon, &ceph.key));
    let cluster = ok.unwrap_or_else(|e| panic!("the right key: {e}"));
    assert_eq!(cluster.config().user.as_deref(), Some("admin"));
    drop(cluster);

    // A valid key that is not client.admin's.
    let other_key = "AQBKzgxrAAAAABAAcYMb0ZKUHXHkw1gMBfexHQ==";
    let nobody = format!("127.0.0.1:{}", test_port());
    let mut bad_option = config(&ceph.mon, &ceph.key);
    bad_option
        .options
        .push(("no_such_option".into(), "1".into()));
    for (what, config, says) in [
        ("a wrong key", config(&ceph.mon, other_key), "key"),
        (
            "a monitor nobody answers at",
            config(&nobody, &ceph.key),
            nobody.as_str(),
        ),
        ("an unknown option", bad_option, "no_such_option"),
    ] {
        let (result, took) = connect(&config);
        let e = result.err().unwrap_or_else(|| panic!("{what}: connected"));
        assert!(matches!(e, Error::Ceph { .. }), "{what}: {e:?}");
        assert!(e.to_string().contains(says), "{what}: {e}");
        // Ceph's own limit is 3 s; generous slack for a loaded machine.
        assert!(took < Duration::from_secs(30), "{what}: took {took:?}: {e}");
        eprintln!("{what} ({took:?}): {e}");
    }
}

#[test]
fn images_open_off_the_reactor_and_do_io_that_rbd_export_sees() {
    let _turn = beside_others();
    let ceph = Ceph::start();
    ceph.rbd(&["create", "rbd/img0", "--size", "8M"]);
    let cluster = std::sync::Arc::new(
        Cluster::connect(&config(&ceph.mon, &ceph.key), Duration::from_secs(10)).unwrap(),
    );
    for (pool, image, says) in [
        ("nopool", "img0", "no pool of that name"),
        ("rbd", "noimage", "rbd/noimage"),
    ] {
        let e = Image::open(cluster.clone(), pool, image)
            .err()
            .expect("missing");
        assert!(
            e.to_string().contains(says) && e.errno() == Some(libc::ENOENT),
            "{pool}/{image}: {e}"
        );
    }
    let image = Image::open(cluster.clone(), "rbd", "img0").unwrap();
    assert_eq!(
        (image.size(), image.pool(), image.name()),
        (8 << 20, "rbd", "img0")
    );
    let data = common::rng::Rng::new(11).bytes(3 * 4096);
    image.write_blocking(4096, &data).unwrap();
    image.flush_blocking().unwrap();
    assert_eq!(
        image.read_blocking(4096, vec![0; data.len()]).unwrap(),
        data
    );
    image.write_zeroes_blocking(4096, 4096).unwrap();
    image.discard_blocking(3 * 4096, 4096).unwrap();
    drop(image);
    drop(cluster);

    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let exported = dir.path().join("img0");
    ceph.rbd(&["export", "rbd/img0", exported.to_str().unwrap()]);
    let exported = std::fs::read(exported).unwrap();
    let block = |i: usize| &exported[i * 4096..(i + 1) * 4096];
    assert!(block(0).iter().all(|b| *b == 0), "before the write");
    assert!(block(1).iter().all(|b| *b == 0), "zeroed");
    assert_eq!(block(2), &data[4096..8192], "written");
    // Block 3 was discarded: a hint, which librbd skips for part of an
    // object (rbd_skip_partial_discard), so it reads as written or as zeroes.
    assert!(
        block(3) == &data[8192..] || block(3).iter().all(|b| *b == 0),
        "discarded"
    );
}

/// A tmpfs of `mib` MiB mounted on a directory of its own; on drop, also
/// when the test fails, a cluster wrongly created in it is destroyed and the
/// tmpfs unmounted and removed.
struct SmallFilesystem(tempfile::TempDir);

impl SmallFilesystem {
    fn mount(mib: u32) -> SmallFilesystem {
        let dir = tempfile::tempdir_in("/var/tmp").expect("a mount point");
        let status = crate::common::command("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(status.success(), "mount -t tmpfs (the tests run as root)");
        SmallFilesystem(dir)
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = crate::common::command("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ceph-dev.sh"))
            .args(["destroy", "--dir"])
            .arg(self.0.path().join("cluster"))
            .output();
        let _ = crate::common::command("umount").arg(self.0.path()).status();
    }
}

/// A CI machine once ran short of disk mid-suite and every cluster failed
/// to start with nothing but the monitor's exit code 28: ceph-dev.sh now
/// refuses a filesystem without room before creating anything, and says so.
#[test]
fn ceph_dev_refuses_a_filesystem_without_room_and_says_what_to_do() {
    let _turn = beside_others();
    let small = SmallFilesystem::mount(64);
    let dir = small.0.path().join("cluster");
    let out = crate::common::command("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ceph-dev.sh"))
        .args(["start", "--port", &test_port().to_string(), "--dir"])
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running ceph-dev.sh");
    let text = common::output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("MiB free on the filesystem of") && text.contains("needs 1 GiB"),
        "{text}"
    );
    assert!(!dir.exists(), "nothing created: {text}");
}
