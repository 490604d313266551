//! `--no-huge` (not a flag of SPDK 20.07): the target runs from ordinary
//! memory and still serves NVMe-oF over TCP (data written, read back and
//! compared); SIGTERM shuts it down cleanly.

use crate::common;
use common::*;

#[test]
fn no_huge_target_serves_io_and_stops_on_sigterm() {
    let _turn = beside_others();
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    let port = test_port();
    let nqn = "nqn.2016-06.io.spdk:nohuge";
    let mut t = Target::start(&our_nvmf_tgt(), &["--no-huge"]);
    assert!(t.log_text().contains("--no-huge"), "{}", t.log_text());
    assert!(
        !t.log_text().contains("--match-allocations"),
        "{}",
        t.log_text()
    );
    configure_article(&t, &pool, nqn, port);
    // Data written over the fabric, read back and compared (bdevperf verify).
    let (status, out) = bdevperf_verify(dir.path(), nqn, port, 4096);
    check_bdevperf(status, &out);
    let mut child = t.child.take().unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}\n{}", t.log_text());
}
