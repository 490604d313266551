//! Our nvmf_tgt as a drop-in for SPDK's C nvmf_tgt of the same build: the same
//! rpc.py configuration (the article's) gives the same methods (plus the 2018
//! construct_nvmf_subsystem, served in Rust) and the same
//! subsystems, and SPDK's initiators do I/O through ours over TCP.

mod common;
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
    let (c_methods, c_subsystems, c_bdevs) = configure_and_describe(&c_nvmf_tgt());
    let (methods, subsystems, bdevs) = configure_and_describe(&our_nvmf_tgt());
    // Ours serves every method of the C binary, plus the 2018 one in Rust.
    let missing: Vec<&String> = c_methods.iter().filter(|m| !methods.contains(m)).collect();
    let extra: Vec<&String> = methods.iter().filter(|m| !c_methods.contains(m)).collect();
    assert!(
        missing.is_empty(),
        "methods of the C nvmf_tgt missing from ours: {missing:?}"
    );
    assert_eq!(extra, [spdk_pmem::legacy::CONSTRUCT_NVMF_SUBSYSTEM]);
    assert_eq!(subsystems, c_subsystems);
    assert_eq!(subsystems[1]["serial_number"], "SPDK0001");
    assert_eq!(subsystems[1]["namespaces"][0]["bdev_name"], "pmdk0");
    let strip = |mut b: Value| {
        b[0].as_object_mut().unwrap().remove("uuid");
        b[0]["driver_specific"]["pmem"]["pmem_file"] = Value::from("POOL");
        b
    };
    assert_eq!(strip(bdevs), strip(c_bdevs));
}

#[test]
fn spdk_initiators_connect_and_do_io_through_our_target() {
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

    // bdevperf through SPDK's NVMe bdev: writes, reads back and compares.
    let config = nvme_bdev_config(dir.path(), NQN, port);
    let out = run_tool(
        "test/bdev/bdevperf/bdevperf",
        &[
            "--json",
            config.to_str().unwrap(),
            "-q",
            "16",
            "-o",
            "4096",
            "-w",
            "verify",
            "-t",
            "1",
            "-m",
            "0x2",
        ],
    );
    assert!(
        !out.contains("Miscompare") && out.contains("Nvme0n1"),
        "{out}"
    );
    assert!(t.rpc_json(&["spdk_get_version"])["version"] == "SPDK v20.07");
    assert!(t.stop().success(), "{}", t.log_text());
}
