//! Bad input gets a clear error (a non-zero exit or a JSON-RPC error that
//! names the problem), nothing is left half-created, and a running target
//! keeps serving.

use crate::common;
use common::*;
use std::time::Duration;

fn run_ours(args: &[&str]) -> (i32, String) {
    let out = crate::common::command(our_nvmf_tgt())
        .args(args)
        .output()
        .unwrap();
    let text = output_text(&out);
    (out.status.code().unwrap_or(-1), text)
}

/// rpc.py that must fail; returns the JSON-RPC error's message.
fn rpc_err(t: &Target, args: &[&str]) -> String {
    let out = t.rpc(args);
    let text = output_text(&out);
    assert!(
        !out.status.success(),
        "rpc.py {args:?} should have failed:\n{text}"
    );
    let start = text
        .find("\"message\"")
        .unwrap_or_else(|| panic!("no JSON-RPC error in:\n{text}"));
    text[start..].lines().next().unwrap().to_string()
}

fn still_serving(t: &Target) {
    assert_eq!(t.rpc_json(&["spdk_get_version"])["version"], "SPDK v20.07");
}

#[test]
fn an_unknown_flag_exits_non_zero_naming_it() {
    let _turn = beside_others();
    let (code, text) = run_ours(&["--bogus-flag"]);
    assert_ne!(code, 0);
    assert!(text.contains("--bogus-flag"), "{text}");
}

#[test]
fn a_core_mask_with_no_cores_on_this_machine_names_the_core() {
    let _turn = beside_others();
    let (code, text) = run_ours(&["-m", "0x80000000", "-r", "/tmp/spdk-pmem-never.sock"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("core(s) [31]") && text.contains("usable cores"),
        "{text}"
    );
    assert!(
        !text.contains("EAL common options"),
        "DPDK's usage text leaked:\n{text}"
    );
}

#[test]
fn a_hugetlbfs_dir_that_is_not_mounted_says_what_to_run() {
    let _turn = beside_others();
    let (code, text) = run_ours(&[
        "--huge-dir",
        "/nonexistent-hugepages",
        "-r",
        "/tmp/spdk-pmem-never.sock",
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("nr_hugepages") && text.contains("--no-huge"),
        "{text}"
    );
}

#[test]
fn bad_rpc_input_is_refused_by_name_and_the_target_keeps_serving() {
    let _turn = beside_others();
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let mut t = Target::start(&our_nvmf_tgt(), &[]);

    // Pool path in a missing directory, a directory as pool, a block size below 512.
    let msg = rpc_err(
        &t,
        &[
            "bdev_pmem_create_pool",
            &d("missing/dir/pool"),
            "32",
            "4096",
        ],
    );
    assert!(msg.contains("No such file or directory"), "{msg}");
    let msg = rpc_err(
        &t,
        &[
            "bdev_pmem_create_pool",
            dir.path().to_str().unwrap(),
            "32",
            "4096",
        ],
    );
    assert!(msg.contains("already exists"), "{msg}");
    let msg = rpc_err(&t, &["bdev_pmem_create_pool", &d("small"), "32", "256"]);
    assert!(msg.contains("block_size must be at least 512"), "{msg}");
    assert!(
        !dir.path().join("small").exists(),
        "a refused pool left a file"
    );
    let msg = rpc_err(
        &t,
        &["bdev_pmem_create", "-n", "p0", &d("missing/dir/pool")],
    );
    assert!(msg.contains("No such file or directory"), "{msg}");
    let msg = rpc_err(
        &t,
        &["bdev_pmem_create", "-n", "p0", dir.path().to_str().unwrap()],
    );
    assert!(msg.contains(dir.path().to_str().unwrap()), "{msg}");
    still_serving(&t);

    // A duplicate bdev name.
    t.rpc_ok(&["bdev_pmem_create_pool", &d("a"), "32", "4096"]);
    t.rpc_ok(&["bdev_pmem_create_pool", &d("b"), "32", "4096"]);
    t.rpc_ok(&["bdev_pmem_create", "-n", "pmdk0", &d("a")]);
    let msg = rpc_err(&t, &["bdev_pmem_create", "-n", "pmdk0", &d("b")]);
    assert!(msg.contains("A bdev named pmdk0 already exists"), "{msg}");
    assert_eq!(t.rpc_json(&["bdev_get_bdevs"]).as_array().unwrap().len(), 1);

    // Invalid and duplicate NQNs, a namespace on a bdev that does not exist.
    let nqn = "nqn.2016-06.io.spdk:bad";
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    let msg = rpc_err(&t, &["nvmf_create_subsystem", "not-an-nqn"]);
    assert!(msg.contains("invalid NQN"), "{msg}");
    t.rpc_ok(&["nvmf_create_subsystem", nqn, "-a"]);
    let msg = rpc_err(&t, &["nvmf_create_subsystem", nqn]);
    assert!(msg.contains("already exists"), "{msg}");
    let msg = rpc_err(&t, &["nvmf_subsystem_add_ns", nqn, "no_such_bdev"]);
    assert!(msg.contains("No bdev with name no_such_bdev"), "{msg}");

    // A listener on a port that is in use.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let msg = rpc_err(
        &t,
        &[
            "nvmf_subsystem_add_listener",
            nqn,
            "-t",
            "TCP",
            "-a",
            "127.0.0.1",
            "-s",
            &port,
        ],
    );
    assert!(
        msg.contains(&format!("Unable to listen on TCP 127.0.0.1:{port}")),
        "{msg}"
    );

    // Nothing half-created: the subsystem has no namespace and no listener.
    let subsystems = t.rpc_json(&["nvmf_get_subsystems"]);
    let ours = subsystems
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["nqn"] == nqn)
        .unwrap();
    assert_eq!(ours["namespaces"].as_array().unwrap().len(), 0, "{ours}");
    assert_eq!(
        ours["listen_addresses"].as_array().unwrap().len(),
        0,
        "{ours}"
    );
    still_serving(&t);

    // And the target still does its job.
    let free_port = test_port();
    t.rpc_ok(&["nvmf_subsystem_add_ns", nqn, "pmdk0"]);
    t.rpc_ok(&[
        "nvmf_subsystem_add_listener",
        nqn,
        "-t",
        "TCP",
        "-a",
        "127.0.0.1",
        "-s",
        &free_port.to_string(),
    ]);
    let id = identify(nqn, free_port);
    assert!(id.contains("Namespace ID:1"), "{id}");
    assert!(t.stop().success(), "{}", t.log_text());
}

#[test]
fn a_target_started_twice_on_one_socket_fails_and_the_first_keeps_serving() {
    let _turn = beside_others();
    let t = Target::start(&our_nvmf_tgt(), &[]);
    let sock = t.sock.to_str().unwrap().to_string();
    let mut second = Target::spawn(&our_nvmf_tgt(), &["-r", &sock]);
    let status = second.wait_exit(Duration::from_secs(60));
    assert!(!status.success(), "{}", second.log_text());
    assert!(
        second
            .log_text()
            .contains("is in use by another SPDK application"),
        "{}",
        second.log_text()
    );
    still_serving(&t);
}
