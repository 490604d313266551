//! A minimal spdk_app in this process, on hugepages: it starts, runs the start
//! closure on the main reactor, and stops cleanly with the code given to stop().
//! One spdk_app per process (DPDK cannot be initialised twice): one test here.

use spdk_pmem::app::{self, AppOptions};

#[test]
fn app_starts_runs_the_closure_and_stops_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("rpc.sock");
    let shm_id = 3000 + (std::process::id() % 1000) as i32;
    let mut ran_on_reactor = false;
    let code = AppOptions::new("app_lifecycle")
        .reactor_mask("0x1")
        .shm_id(shm_id)
        .rpc_addr(sock.to_str().unwrap())
        .run(|| {
            // SAFETY: called on the app's main reactor, where SPDK has a current thread.
            ran_on_reactor = unsafe { !spdk_pmem::sys::spdk_get_thread().is_null() };
            assert!(
                sock.exists(),
                "the RPC server listens before start is called"
            );
            app::stop(7);
        })
        .expect("valid options");
    assert!(ran_on_reactor);
    assert_eq!(code, 7);
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/spdk{shm_id}"));
}
