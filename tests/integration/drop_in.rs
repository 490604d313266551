//! Our nvmf_tgt as a drop-in for SPDK's C nvmf_tgt of the same build: the same
//! rpc.py configuration (the article's) gives the same methods (plus the 2018
//! construct_nvmf_subsystem and the pmem write-back cache's, served in Rust)
//! and the same subsystems, and SPDK's initiators do I/O through ours over TCP.

use crate::common;
use common::*;
use serde_json::Value;

const NQN: &str = "nqn.2016-06.io.spdk:cnode1";

/// nvmf_get_subsystems without what each run generates (namespace UUIDs).
fn without_generated(mut v: Value) -> Value {
    for subsystem in v.as_array_mut().unwrap() {
        if let Some(nss) = subsystem
            .get_mut("namespaces")
            .and_then(Value::as_array_mut)
        {
            for ns in nss {
                let ns = ns.as_object_mut().unwrap();
                ns.remove("uuid");
                ns.remove("nguid");
            }
        }
    }
    v
}

fn configure_and_describe(binary: &std::path::Path) -> (Vec<String>, Value, Value) {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pmdk0.pool");
    let port = test_port();
    let mut t = Target::start(binary, &[]);
    configure_article(&t, &pool, NQN, port);
    let methods = method_names(&t.rpc_json(&["rpc_get_methods"]));
    let mut subsystems = without_generated(t.rpc_json(&["nvmf_get_subsystems"]));
    // The listener's port differs per run by design; normalise it.
    for s in subsystems.as_array_mut().unwrap() {
        for l in s["listen_addresses"].as_array_mut().unwrap() {
            assert_eq!(l["trsvcid"], port.to_string());
            l["trsvcid"] = Value::from("PORT");
        }
    }
    let bdevs = t.rpc_json(&["bdev_get_bdevs", "-b", "pmdk0"]);
    assert!(t.stop().success(), "{}", t.log_text());
    (methods, subsystems, bdevs)
}

#[test]
fn same_rpc_configuration_gives_the_same_target_as_spdks_c_binary() {
    let _turn = beside_others();
    let (c_methods, c_subsystems, c_bdevs) = configure_and_describe(&c_nvmf_tgt());
    let (methods, subsystems, bdevs) = configure_and_describe(&our_nvmf_tgt());
    // Ours serves every method of the C binary, plus the 2018 one, the pmem
    // write-back cache's, and upstream's keyring, key rotation and
    // namespace-visibility methods, in Rust.
    let missing: Vec<&String> = c_methods.iter().filter(|m| !methods.contains(m)).collect();
    // Test builds' fault hook (feature test-hooks) is not the product's.
    let extra: Vec<&String> = methods
        .iter()
        .filter(|m| !c_methods.contains(m) && !m.starts_with("test_"))
        .collect();
    assert!(
        missing.is_empty(),
        "methods of the C nvmf_tgt missing from ours: {missing:?}"
    );
    assert_eq!(
        extra,
        [
            "bdev_pmem_cache_create",
            "bdev_pmem_cache_delete",
            "bdev_pmem_cache_flush",
            spdk_pmem::construct_subsystem::CONSTRUCT_NVMF_SUBSYSTEM,
            "keyring_file_add_key",
            "keyring_file_remove_key",
            "keyring_get_keys",
            "nvmf_ns_add_host",
            "nvmf_ns_remove_host",
            "nvmf_subsystem_set_keys",
        ]
    );
    assert_eq!(subsystems, c_subsystems);
    assert_eq!(subsystems[1]["serial_number"], "SPDK0001");
    assert_eq!(subsystems[1]["namespaces"][0]["bdev_name"], "pmdk0");
    // The Rust pmem bdev (our default) differs from SPDK's C module only
    // where it says so: it supports FLUSH, and driver_specific names the
    // module, its I/O threads, their CPU budget and queue, and media errors.
    assert_eq!(bdevs[0]["supported_io_types"]["flush"], true);
    assert_eq!(c_bdevs[0]["supported_io_types"]["flush"], false);
    let pmem = &bdevs[0]["driver_specific"]["pmem"];
    assert_eq!(pmem["module"], "pmem_rs", "{bdevs:#}");
    assert!(pmem["io_threads"].is_u64(), "{bdevs:#}");
    let strip = |mut b: Value| {
        b[0].as_object_mut().unwrap().remove("uuid");
        b[0]["supported_io_types"]["flush"] = Value::Null;
        let pmem = b[0]["driver_specific"]["pmem"].as_object_mut().unwrap();
        pmem.insert("pmem_file".into(), Value::from("POOL"));
        // The Rust module's own fields.
        for field in [
            "module",
            "io_threads",
            "busy_cpu_limit_percent",
            "budget_waits",
            "media_errors",
            "queued_ios",
            "watched_windows",
            "busy_windows",
        ] {
            pmem.remove(field);
        }
        b
    };
    assert_eq!(strip(bdevs), strip(c_bdevs));
}

#[test]
fn spdk_initiators_connect_and_do_io_through_our_target() {
    let _turn = beside_others();
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pmdk0.pool");
    let port = test_port();
    let mut t = Target::start(&our_nvmf_tgt(), &[]);
    configure_article(&t, &pool, NQN, port);

    let id = identify(NQN, port);
    assert_eq!(identify_field(&id, "Serial Number"), "SPDK0001");
    let lbas: u64 = identify_field(&id, "Size (in LBAs)")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // 32 MiB of 4 KiB blocks, less the BTT's metadata.
    assert!((7000..8192).contains(&lbas), "{lbas} LBAs");
    assert_eq!(identify_block_size(&id), 4096);

    let (iops, latency) = perf(NQN, port, "randrw", 1);
    assert!(
        iops > 0.0 && latency > 0.0,
        "perf: {iops} IOPS, {latency} us"
    );

    // bdevperf through SPDK's NVMe bdev: writes, reads back and compares,
    // in 4 KiB I/Os (in-capsule) and 64 KiB ones (R2T and H2CData; 64 KiB is
    // the most bdevperf verifies).
    for io_size in [4096, 65536] {
        let (status, out) = bdevperf_verify(dir.path(), NQN, port, io_size);
        check_bdevperf(status, &out);
    }
    assert!(t.rpc_json(&["spdk_get_version"])["version"] == "SPDK v20.07");
    assert!(t.stop().success(), "{}", t.log_text());
}

/// The I/O checks fail a run against a target whose every I/O fails: SPDK's
/// error bdev over the pool, injecting a failure into every read and write.
#[test]
fn io_checks_fail_a_target_whose_io_fails() {
    let _turn = beside_others();
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pmdk0.pool");
    let port = test_port();
    let nqn = "nqn.2016-06.io.spdk:failing";
    let mut t = Target::start(&our_nvmf_tgt(), &[]);
    add_pmem_bdev(&t, &pool, "pmdk0");
    t.rpc_ok(&["bdev_error_create", "pmdk0"]);
    t.rpc_ok(&[
        "bdev_error_inject_error",
        "EE_pmdk0",
        "all",
        "failure",
        "-n",
        "100000000",
    ]);
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    t.rpc_ok(&["nvmf_create_subsystem", nqn, "-a", "-s", "SPDK0001"]);
    add_tcp_listener(&t, nqn, port);
    t.rpc_ok(&["nvmf_subsystem_add_ns", nqn, "EE_pmdk0"]);

    // perf itself exits 0 here; the check must not.
    let text = output_text(
        &crate::common::command(spdk_tool("build/examples/perf"))
            .args([
                "-r",
                &trid(nqn, port),
                "-q",
                "8",
                "-o",
                "4096",
                "-w",
                "randread",
            ])
            .args(["-t", "1", "-c", "0x2"])
            .output()
            .unwrap(),
    );
    let perf_check = std::panic::catch_unwind(|| check_perf(&text));
    assert!(perf_check.is_err(), "perf's errors went unnoticed:\n{text}");

    let (status, text) = bdevperf_verify(dir.path(), nqn, port, 4096);
    let bdevperf_check = std::panic::catch_unwind(|| check_bdevperf(status, &text));
    assert!(
        bdevperf_check.is_err(),
        "bdevperf's errors went unnoticed:\n{text}"
    );
    assert!(t.stop().success());
}
