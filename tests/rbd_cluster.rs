//! Connecting to a real Ceph (`scripts/ceph-dev.sh`'s one-node cluster)
//! from the library, off any reactor: the right key connects; a wrong key,
//! a monitor nobody answers at, and an option Ceph does not know each fail
//! with an error that names what was wrong, within the time given.
#![cfg(feature = "rbd")]

mod common;
use common::ceph::Ceph;
use common::test_port;

use std::time::{Duration, Instant};

use spdk_pmem::rbd::{Cluster, ClusterConfig};
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
