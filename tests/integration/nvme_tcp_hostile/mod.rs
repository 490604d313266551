//! Hostile NVMe/TCP hosts against the real target: the seeded protocol fuzzer
//! while bdevperf verifies data on another subsystem of the same target.
//!
//! The environment sets a long run (scripts/fuzz-nvme-tcp.sh):
//! `SPDK_PMEM_FUZZ_SEED`, `SPDK_PMEM_FUZZ_SECONDS`, `SPDK_PMEM_FUZZ_SESSIONS`,
//! and `SPDK_PMEM_FUZZ_TARGET` (`ours`, `c`, or a path to an nvmf_tgt).

use crate::common;
use crate::nvme_tcp;

use common::rng::Rng;
use common::*;
use nvme_tcp::fuzz::{self, Bounds, Setup, Stats};
use nvme_tcp::host::{command_reading, connect_as, enabled_controller, negotiated};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod access;
mod fuzzing;
mod malformed;
mod resources;

const VERIFY_NQN: &str = "nqn.2016-06.io.spdk:cnode1";
const FUZZ_NQN: &str = "nqn.2016-06.io.spdk:fuzz";
/// The host NQN of the replay tests' hand-made connections.
const FUZZ_HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:1";
const CHECK_NQN: &str = "nqn.2016-06.io.spdk:fuzzcheck";

/// A target with one subsystem (`FUZZ_NQN`, a pmem namespace) listening on
/// a port of its own.
fn small_target(dir: &Path) -> (Target, u16) {
    let port = test_port();
    let t = Target::start(&fuzz_target(), &[]);
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    add_pmem_bdev(&t, &dir.join("fuzz0.pool"), "fuzz0");
    t.rpc_ok(&[
        "nvmf_create_subsystem",
        FUZZ_NQN,
        "-a",
        "-s",
        "SPDK-FZ0",
        "-m",
        "8",
    ]);
    add_tcp_listener(&t, FUZZ_NQN, port);
    t.rpc_ok(&["nvmf_subsystem_add_ns", FUZZ_NQN, "fuzz0"]);
    (t, port)
}

/// After a replayed sequence: the target is alive, answers RPC and serves a
/// new host (SPDK's identify).
fn assert_still_serving(t: &mut Target, port: u16, what: &str) {
    std::thread::sleep(Duration::from_millis(500));
    if let Some(status) = t.child.as_mut().unwrap().try_wait().unwrap() {
        panic!(
            "{what}: the target died ({status}); its log ends:\n{}",
            t.log_excerpt(20)
        );
    }
    rpc_answers(&t.sock, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{what}: RPC: {e}"));
    let id = identify(FUZZ_NQN, port);
    assert_eq!(identify_field(&id, "Serial Number"), "SPDK-FZ0", "{what}");
}

/// Writes `bytes` zeros to every connection each `every` for `during`, so the
/// target always has something to read on them; fails if the target dies.
fn keep_sending(
    t: &mut Target,
    conns: &mut [std::net::TcpStream],
    bytes: usize,
    every: Duration,
    during: Duration,
) {
    use std::io::Write;
    let zeros = vec![0u8; bytes];
    let until = Instant::now() + during;
    while Instant::now() < until {
        for c in conns.iter_mut() {
            let _ = c.write(&zeros);
        }
        if let Some(status) = t.child.as_mut().unwrap().try_wait().unwrap() {
            panic!(
                "the target died ({status}); its log ends:\n{}",
                t.log_excerpt(20)
            );
        }
        std::thread::sleep(every);
    }
}

/// A Fabrics Connect of queue `qid` (to controller `cntlid`, 0xFFFF: new)
/// on a new connection, without keep-alive; returns it and the status and
/// controller id of the answer.
fn connect_queue(port: u16, qid: u16, cntlid: u16) -> (std::net::TcpStream, u16, u16) {
    connect_as(port, FUZZ_NQN, FUZZ_HOST, qid, cntlid)
}
