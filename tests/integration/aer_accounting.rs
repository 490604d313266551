//! Vendor patch 0036: a subsystem's count of commands in progress may not
//! leak, or every later pause (adding a namespace, a host, ...) waits for
//! it forever. 20.07 left out of the count any opcode 0Ch, an AER only on
//! the admin queue (Verify on I/O queues), and never counted back an AER
//! answered at once (a notice already pending).

use crate::common;
use crate::nvme_tcp::{host as tcp, wire};
use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::time::Duration;

const NQN: &str = "nqn.2016-06.io.spdk:aer";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000c1";

/// nvmf_subsystem_add_ns of `bdev`, which pauses the subsystem: it must
/// answer (a leaked count makes it wait forever).
fn add_namespace(t: &Target, bdev: &str) {
    // rpc.py's own timeout: it gives up and says so after 20 s.
    let out = rpc_py(&t.sock, &["-t", "20", "nvmf_subsystem_add_ns", NQN, bdev]);
    assert!(
        out.status.success(),
        "adding {bdev} (the subsystem's pause) did not finish: {}\n{}",
        output_text(&out),
        t.log_excerpt(20)
    );
}

#[test]
fn a_verify_on_an_io_queue_or_an_aer_answered_at_once_does_not_wedge_the_subsystem() {
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
    t.jsonrpc_ok(
        "nvmf_subsystem_add_ns",
        Some(json!({"nqn": NQN, "namespace": {"bdev_name": "pmem1"}})),
    );
    add_tcp_listener(&t, NQN, port);
    let (mut admin, mut io) = tcp::io_queue(port, NQN, HOST);

    // Opcode 0Ch on the I/O queue (Verify): refused, and counted back.
    let verify = wire::Sqe::new(0x0c, 50).nsid(1);
    let (status, _) = tcp::command(&mut io, verify, vec![]);
    assert_ne!(status, 0, "20.07 has no Verify");
    add_namespace(&t, "pmem2");

    // That change left a notice pending (no AER was outstanding): the next
    // AER is answered at once.
    let aer = wire::Sqe::new(0x0c, 51);
    admin
        .write_all(&wire::capsule(&aer.0, vec![], Default::default(), 0).encode())
        .unwrap();
    admin
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rsp = [0u8; 24];
    admin
        .read_exact(&mut rsp)
        .expect("the AER answered at once");
    add_namespace(&t, "pmem3");
}
