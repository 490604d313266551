//! Bad JSON-RPC input in all three vocabularies gets an error that names the
//! problem; a failed construct_nvmf_subsystem leaves nothing behind; the
//! target keeps serving throughout.

use crate::common;
use common::*;
use serde_json::json;

const NQN: &str = "nqn.2016-06.io.spdk:bad";

/// Only the discovery subsystem, and no transport.
fn assert_nothing_created(t: &Target) {
    let subsystems = t.jsonrpc_ok("nvmf_get_subsystems", None);
    assert_eq!(subsystems.as_array().unwrap().len(), 1, "{subsystems}");
    let transports = t.jsonrpc_ok("nvmf_get_transports", None);
    assert!(transports.as_array().unwrap().is_empty(), "{transports}");
}

fn still_serving(t: &Target) {
    assert_eq!(
        t.jsonrpc_ok("spdk_get_version", None)["version"],
        "SPDK v20.07"
    );
}

#[test]
fn newer_fields_types_and_missing_fields_are_named() {
    let _turn = beside_others();
    let t = Target::start(&our_nvmf_tgt(), &[]);
    let m = t.jsonrpc_err(
        "nvmf_create_subsystem",
        json!({"nqn": NQN, "ana_reporting": true}),
    );
    assert!(m.contains("ana_reporting=true is not supported"), "{m}");
    let m = t.jsonrpc_err(
        "nvmf_create_transport",
        json!({"trtype": "TCP", "zcopy": true}),
    );
    assert!(m.contains("zcopy=true"), "{m}");
    let m = t.jsonrpc_err(
        "nvmf_create_subsystem",
        json!({"nqn": NQN, "max_namespaces": "lots"}),
    );
    assert!(
        m.contains("field max_namespaces must be a number, not a string"),
        "{m}"
    );
    let m = t.jsonrpc_err("nvmf_subsystem_add_ns", json!({"nqn": NQN}));
    assert!(m.contains("missing required field namespace"), "{m}");
    let m = t.jsonrpc_err(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "x", "md_interleave": true}}),
    );
    assert!(m.contains("namespace.md_interleave=true"), "{m}");
    let m = t.jsonrpc_err(
        "bdev_pmem_create_pool",
        json!({"pmem_file": "/tmp/x", "num_blocks": 8192}),
    );
    assert!(m.contains("missing required field block_size"), "{m}");
    let m = t.jsonrpc_err(
        "nvmf_create_subsystem",
        json!({"nqn": NQN, "colour": "blue"}),
    );
    assert!(m.contains("unknown field colour"), "{m}");
    // None of it created anything.
    assert_nothing_created(&t);
    still_serving(&t);
}

#[test]
fn a_failed_construct_nvmf_subsystem_leaves_nothing_behind() {
    let _turn = beside_others();
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    let t = Target::start(&our_nvmf_tgt(), &[]);
    t.jsonrpc_ok(
        "create_pmem_pool",
        Some(json!({"pmem_file": pool, "num_blocks": 8192, "block_size": 4096})),
    );
    t.jsonrpc_ok(
        "construct_pmem_bdev",
        Some(json!({"pmem_file": pool, "name": "pmdk0"})),
    );
    let port = test_port().to_string();
    let listen =
        json!([{"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": port, "adrfam": "IPv4"}]);
    let request = |extra: serde_json::Value| {
        let mut p = json!({"nqn": NQN, "listen_addresses": listen, "allow_any_host": true,
                           "serial_number": "SPDK0001", "namespaces": [{"bdev_name": "pmdk0", "nsid": 1}]});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    };

    // Malformed 2018 listen addresses.
    let m = t.jsonrpc_err(
        "construct_nvmf_subsystem",
        request(json!({"listen_addresses": [{"trtype": "TCP", "traddr": "127.0.0.1"}]})),
    );
    assert!(
        m.contains("missing required field listen_addresses[0].trsvcid"),
        "{m}"
    );
    let m = t.jsonrpc_err("construct_nvmf_subsystem", request(json!({"listen_addresses": [{"trtype": "TCP", "traddr": "localhost", "trsvcid": "4420"}]})));
    assert!(m.contains("\"localhost\" is not an IP address"), "{m}");
    let m = t.jsonrpc_err(
        "construct_nvmf_subsystem",
        request(json!({"listen_addresses": ["127.0.0.1:4420"]})),
    );
    assert!(m.contains("listen_addresses[0]"), "{m}");
    // A missing bdev, an invalid serial number, a busy port.
    let m = t.jsonrpc_err(
        "construct_nvmf_subsystem",
        request(json!({"namespaces": [{"bdev_name": "nope"}]})),
    );
    assert!(m.contains("namespaces[0]: no bdev named nope"), "{m}");
    let m = t.jsonrpc_err(
        "construct_nvmf_subsystem",
        request(json!({"serial_number": "a serial number far too long"})),
    );
    assert!(m.contains("invalid serial number"), "{m}");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();
    let m = t.jsonrpc_err(
        "construct_nvmf_subsystem",
        request(json!({"listen_addresses": [{"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": busy_port}]})),
    );
    assert!(m.contains("cannot listen on TCP 127.0.0.1"), "{m}");

    // Nothing of any of them remains: no subsystem, no transport, bdev unclaimed.
    assert_nothing_created(&t);
    assert_eq!(t.jsonrpc_ok("bdev_get_bdevs", None)[0]["claimed"], false);

    // With the transport in place, a later failure (a second listener on the
    // busy port) rolls back the subsystem, its namespace and first listener.
    t.jsonrpc_ok("nvmf_create_transport", Some(json!({"trtype": "TCP"})));
    let two = json!([{"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": port},
                     {"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": busy_port}]);
    let m = t.jsonrpc_err(
        "construct_nvmf_subsystem",
        request(json!({"listen_addresses": two})),
    );
    assert!(m.contains("listen_addresses[1]"), "{m}");
    assert_eq!(
        t.jsonrpc_ok("nvmf_get_subsystems", None)
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(t.jsonrpc_ok("bdev_get_bdevs", None)[0]["claimed"], false);
    // The first listener's port is free again.
    drop(std::net::TcpListener::bind(format!("127.0.0.1:{port}")).expect("port released"));

    // And the same request, fixed, works: identify sees it.
    assert_eq!(
        t.jsonrpc_ok("construct_nvmf_subsystem", Some(request(json!({})))),
        json!(true)
    );
    let m = t.jsonrpc_err("construct_nvmf_subsystem", request(json!({})));
    assert!(m.contains("already exists"), "{m}");
    let id = identify(NQN, port.parse().unwrap());
    assert_eq!(identify_field(&id, "Serial Number"), "SPDK0001");
    still_serving(&t);
}
