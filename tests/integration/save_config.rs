//! save_config from a configured target, given back with --json at start,
//! restores the pmem bdev, transport, subsystem, listener, namespace and
//! host; data written before the restart reads back intact after it.

use crate::common;
use common::*;

const NQN: &str = "nqn.2016-06.io.spdk:saved";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555";

#[test]
fn a_saved_configuration_restores_the_target_and_its_data() {
    let _turn = beside_others();
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    let saved = dir.path().join("config.json");
    let data: Vec<u8> = (0..4096 * 16).map(|i| (i * 31 % 251) as u8).collect();
    let input = dir.path().join("input");
    let output = dir.path().join("output");
    std::fs::write(&input, &data).unwrap();
    let port = test_port();
    let initiator = nvme_bdev_config(dir.path(), NQN, port);
    let dd = |args: &[&str]| {
        let mut all = vec![
            "--json",
            initiator.to_str().unwrap(),
            "-m",
            "0x2",
            "--bs",
            "4096",
        ];
        all.extend_from_slice(args);
        run_tool("build/bin/spdk_dd", &all)
    };

    let mut t = Target::start(&our_nvmf_tgt(), &[]);
    configure_article(&t, &pool, NQN, port);
    t.rpc_ok(&["nvmf_subsystem_add_host", NQN, HOST]);
    dd(&[
        "--if",
        input.to_str().unwrap(),
        "--ob",
        "Nvme0n1",
        "--seek",
        "10",
    ]);
    let before = t.rpc_json(&["nvmf_get_subsystems"]);
    // SPDK 20.07's pmem bdev draws a new bdev UUID at each creation (its
    // create call takes none), and the Rust module's counters start again;
    // everything else must come back.
    let without_uuid = |mut v: serde_json::Value| {
        v[0].as_object_mut().unwrap().remove("uuid");
        if let Some(pmem) = v[0]["driver_specific"]["pmem"].as_object_mut() {
            for counter in ["budget_waits", "watched_windows", "busy_windows"] {
                pmem.remove(counter);
            }
        }
        v
    };
    let bdevs_before = without_uuid(t.rpc_json(&["bdev_get_bdevs", "-b", "pmdk0"]));
    std::fs::write(&saved, t.rpc_ok(&["save_config"])).unwrap();
    assert!(t.stop().success(), "{}", t.log_text());

    let text = std::fs::read_to_string(&saved).unwrap();
    for method in [
        "bdev_pmem_create",
        "nvmf_create_transport",
        "nvmf_create_subsystem",
        "nvmf_subsystem_add_listener",
        "nvmf_subsystem_add_ns",
        "nvmf_subsystem_add_host",
    ] {
        assert!(
            text.contains(method),
            "{method} missing from save_config:\n{text}"
        );
    }

    let mut t = Target::start(&our_nvmf_tgt(), &["--json", saved.to_str().unwrap()]);
    // The subsystems come back as they were, namespace UUIDs included.
    assert_eq!(t.rpc_json(&["nvmf_get_subsystems"]), before);
    assert_eq!(
        without_uuid(t.rpc_json(&["bdev_get_bdevs", "-b", "pmdk0"])),
        bdevs_before
    );
    dd(&[
        "--ib",
        "Nvme0n1",
        "--skip",
        "10",
        "--count",
        "16",
        "--of",
        output.to_str().unwrap(),
    ]);
    assert!(t.stop().success(), "{}", t.log_text());
    assert!(
        std::fs::read(&output).unwrap() == data,
        "data differs after the restart"
    );
}
