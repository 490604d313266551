//! examples/embedded_target configures a target through the library API alone
//! (no RPC); SPDK's identify connects to it over TCP and sees the namespace.

use crate::common;
use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn the_embedded_example_serves_a_namespace_to_spdk_identify() {
    let _turn = beside_others();
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("embedded.pool");
    let log = dir.path().join("example.log");
    let (shm_id, port) = unique_ids();
    let nqn = "nqn.2016-06.io.spdk:embedded";
    let mut child = crate::common::command(example_binary("embedded_target"))
        .args([
            "--pool",
            pool.to_str().unwrap(),
            "--port",
            &port.to_string(),
        ])
        .args(["--shm-id", &shm_id.to_string(), "--nqn", nqn])
        .args([
            "--rpc-socket",
            dir.path().join("rpc.sock").to_str().unwrap(),
        ])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("serving")
    {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "example did not come up:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let id = identify(nqn, port);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/spdk{shm_id}"));

    assert_eq!(identify_field(&id, "Serial Number"), "SPDK0001");
    assert_eq!(identify_field(&id, "Model Number"), "spdk-pmem embedded");
    assert_eq!(identify_block_size(&id), 4096);
    assert!(id.contains("Namespace ID:1"), "{id}");
    assert!(status.success(), "example exited with {status}");
    assert!(pool.is_file(), "the example created its pool");
}
