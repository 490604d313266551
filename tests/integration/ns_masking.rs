//! Which host sees which namespace (vendor patch 0035, upstream's
//! `nvmf_subsystem_add_ns --no-auto-visible`, `nvmf_ns_add_host`,
//! `nvmf_ns_remove_host`), checked on the wire with the tests' raw host: a
//! namespace one host may see is absent from another's Active Namespace
//! list, reads as inactive and fails its I/O; a change reaches a connected
//! host as a Namespace Attribute Changed event; save_config keeps it.

use crate::common;
use crate::nvme_tcp::{host as tcp, wire};
use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const NQN: &str = "nqn.2016-06.io.spdk:masked";
const H1: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000b1";
const H2: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000b2";
const INVALID_NAMESPACE: u16 = 0x0b;

/// The Active Namespace list (Identify CNS 02h) host `s` gets.
fn active_namespaces(s: &mut TcpStream) -> Vec<u32> {
    let (status, data) = tcp::command_reading(s, wire::identify(20, 2, 0));
    assert_eq!(status, 0, "Identify CNS 02h");
    data.chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .take_while(|&n| n != 0)
        .collect()
}

/// Identify Namespace `nsid`: its size (NSZE), 0 for an inactive one.
fn namespace_size(s: &mut TcpStream, nsid: u32) -> (u16, u64) {
    let (status, data) = tcp::command_reading(s, wire::identify(21, 0, nsid));
    let nsze = data
        .get(..8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
    (status, nsze)
}

fn read(io: &mut TcpStream, nsid: u32) -> u16 {
    let sqe = wire::rw(wire::OPC_READ, 30, nsid, 0, 1, 4096, wire::SGL_TRANSPORT);
    tcp::command_reading(io, sqe).0 & 0xff
}

fn ns_host(t: &Target, method: &str, nsid: u32, host: &str) -> serde_json::Value {
    t.jsonrpc(
        method,
        Some(json!({"nqn": NQN, "nsid": nsid, "host": host})),
    )
}

#[test]
fn each_host_sees_only_its_namespaces_and_hears_of_changes() {
    let _turn = beside_others();
    let dir = tempfile::tempdir().unwrap();
    let port = test_port();
    let t = Target::start(&our_nvmf_tgt(), &[]);
    for n in 1..=3 {
        add_pmem_bdev(
            &t,
            &dir.path().join(format!("pool{n}")),
            &format!("pmem{n}"),
        );
    }
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    t.rpc_ok(&["nvmf_create_subsystem", NQN, "-a", "-s", "SPDK0001"]);
    // Namespaces 1 and 2 each for one host (as spdk-rpc 26 sends it),
    // namespace 3 for every host.
    for n in 1..=2 {
        t.jsonrpc_ok(
            "nvmf_subsystem_add_ns",
            Some(json!({"nqn": NQN, "namespace": {"bdev_name": format!("pmem{n}"), "nsid": n, "no_auto_visible": true}})),
        );
    }
    t.rpc_ok(&["nvmf_subsystem_add_ns", NQN, "pmem3", "-n", "3"]);
    assert_eq!(ns_host(&t, "nvmf_ns_add_host", 1, H1)["result"], true);
    assert_eq!(ns_host(&t, "nvmf_ns_add_host", 2, H2)["result"], true);
    let e = ns_host(&t, "nvmf_ns_add_host", 3, H1);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("visible to every host"),
        "{e}"
    );
    let e = ns_host(&t, "nvmf_ns_add_host", 9, H1);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has no namespace 9"),
        "{e}"
    );
    add_tcp_listener(&t, NQN, port);

    let (mut a1, _) = tcp::enabled_controller(port, NQN, H1);
    let (mut a2, _) = tcp::enabled_controller(port, NQN, H2);
    assert_eq!(active_namespaces(&mut a1), [1, 3]);
    assert_eq!(active_namespaces(&mut a2), [2, 3]);
    assert_eq!(
        namespace_size(&mut a1, 2),
        (0, 0),
        "another host's namespace reads as inactive"
    );
    assert!(namespace_size(&mut a2, 2).1 > 0);
    let (_a, mut io1) = tcp::io_queue(port, NQN, H1);
    assert_eq!(read(&mut io1, 1), 0);
    assert_eq!(
        read(&mut io1, 2),
        INVALID_NAMESPACE,
        "I/O to another host's namespace"
    );

    // A change while host 1 is connected: its AER completes with a notice
    // (type 2, Namespace Attribute Changed, log page 04h).
    let aer = wire::Sqe::new(0x0c, 40);
    a1.write_all(&wire::capsule(&aer.0, vec![], Default::default(), 0).encode())
        .unwrap();
    assert_eq!(ns_host(&t, "nvmf_ns_add_host", 2, H1)["result"], true);
    a1.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rsp = [0u8; 24];
    a1.read_exact(&mut rsp).expect("the AER's completion");
    let dw0 = u32::from_le_bytes(rsp[8..12].try_into().unwrap());
    assert_eq!(
        (dw0 & 0x7, (dw0 >> 8) & 0xff, (dw0 >> 16) & 0xff),
        (2, 0, 4),
        "{dw0:#x}"
    );
    assert_eq!(active_namespaces(&mut a1), [1, 2, 3]);
    assert_eq!(read(&mut io1, 2), 0);
    assert_eq!(
        active_namespaces(&mut a2),
        [2, 3],
        "host 2's view did not change"
    );

    assert_eq!(ns_host(&t, "nvmf_ns_remove_host", 2, H1)["result"], true);
    assert_eq!(active_namespaces(&mut a1), [1, 3]);
    assert_eq!(read(&mut io1, 2), INVALID_NAMESPACE);

    // save_config keeps it: restarted from it, each host's view is back.
    let text = t.rpc_ok(&["save_config"]);
    assert!(text.contains("\"no_auto_visible\": true"), "{text}");
    assert!(text.contains("nvmf_ns_add_host"), "{text}");
    drop((a1, a2, _a, io1));
    drop(t);
    let json_path = dir.path().join("config.json");
    std::fs::write(&json_path, text).unwrap();
    let _t2 = Target::start(&our_nvmf_tgt(), &["--json", json_path.to_str().unwrap()]);
    let (mut a1, _) = tcp::enabled_controller(port, NQN, H1);
    let (mut a2, _) = tcp::enabled_controller(port, NQN, H2);
    assert_eq!(active_namespaces(&mut a1), [1, 3]);
    assert_eq!(active_namespaces(&mut a2), [2, 3]);
}
