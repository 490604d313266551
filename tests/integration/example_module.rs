//! examples/ram_bdev, a bdev module written in Rust: it checks its RAM disk
//! through the bdev I/O API, then SPDK's bdevperf verifies it over NVMe/TCP;
//! its own RPC creates a second one, and `bdev_get_bdevs` and `save_config`
//! show what its `dump_info_json` and `write_config_json` write.

use crate::common;
use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn a_bdev_module_in_rust_serves_bdevperf_and_records_its_config() {
    let _turn = beside_others();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("example.log");
    let sock = dir.path().join("rpc.sock");
    let (shm_id, port) = unique_ids();
    let nqn = "nqn.2016-06.io.spdk:ram";
    let mut child = crate::common::command(example_binary("ram_bdev"))
        .args(["--port", &port.to_string(), "--shm-id", &shm_id.to_string()])
        .args(["--nqn", nqn, "--blocks", "2048"])
        .args(["--rpc-socket", sock.to_str().unwrap()])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let printed = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("serving") {
            break text;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("example did not come up:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (status, out) = bdevperf_verify(dir.path(), nqn, port, 4096);
    let t = Target::attach(&sock);
    let made = t.jsonrpc_ok(
        "bdev_ram_rs_create",
        Some(serde_json::json!({"name": "ram1", "num_blocks": 16, "block_size": 512})),
    );
    let bad = t.jsonrpc_err(
        "bdev_ram_rs_create",
        serde_json::json!({"name": "ram2", "num_blocks": "many", "block_size": 512}),
    );
    let bdevs = t.rpc_json(&["bdev_get_bdevs"]);
    let config = t.rpc_json(&["save_config"]);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let exit = child.wait().unwrap();
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/spdk{shm_id}"));
    let _ = std::fs::remove_file(format!("/dev/shm/ram_bdev_trace.{shm_id}"));

    assert!(printed.contains("verified 64 blocks of ram0"), "{printed}");
    check_bdevperf(status, &out);
    assert_eq!(made, serde_json::json!("ram1"));
    assert!(bad.contains("num_blocks"), "{bad}");
    let ram1 = bdevs
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "ram1")
        .unwrap_or_else(|| panic!("no ram1 in {bdevs:#}"));
    assert_eq!(ram1["driver_specific"]["ram_rs"]["bytes"], 8192, "{ram1:#}");
    assert_eq!(ram1["product_name"], "Rust RAM disk");
    let bdev_config = config["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == "bdev")
        .unwrap()["config"]
        .to_string();
    for want in [
        r#"{"method":"bdev_ram_rs_create","params":{"block_size":4096,"name":"ram0","num_blocks":2048}}"#,
        r#"{"method":"bdev_ram_rs_create","params":{"block_size":512,"name":"ram1","num_blocks":16}}"#,
    ] {
        assert!(bdev_config.contains(want), "{want} not in {bdev_config}");
    }
    assert!(exit.success(), "example exited with {exit}");
}
