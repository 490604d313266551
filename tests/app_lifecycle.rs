//! A minimal spdk_app in this process, on hugepages: it starts, runs the start
//! closure on the main reactor, runs a poller, and stops cleanly with the code
//! given to stop(). One spdk_app per process (DPDK cannot be initialised
//! twice): one test here.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, Ordering};

use spdk_pmem::app::{self, AppOptions};
use spdk_pmem::thread::{Poller, Thread};

static POLLS: AtomicU32 = AtomicU32::new(0);

thread_local! {
    static POLLER: RefCell<Option<Poller>> = const { RefCell::new(None) };
}

#[test]
fn app_starts_runs_the_closure_and_a_poller_and_stops_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("rpc.sock");
    let shm_id = 3000 + (std::process::id() % 1000) as i32;
    let mut ran_on_reactor = false;
    let code = AppOptions::new("app_lifecycle")
        .reactor_mask("0x1")
        .shm_id(shm_id)
        .rpc_addr(sock.to_str().unwrap())
        .run(|| {
            ran_on_reactor =
                Thread::current().is_some() && Thread::current() == Thread::app_thread();
            assert!(
                sock.exists(),
                "the RPC server listens before start is called"
            );
            let poller = Poller::register(1000, || {
                if POLLS.fetch_add(1, Ordering::SeqCst) + 1 == 5 {
                    // The poller drops itself, from inside its own closure.
                    POLLER.with(|p| p.borrow_mut().take());
                    app::stop(7).expect("the app is serving");
                }
                true
            })
            .expect("poller registered on the app thread");
            POLLER.with(|p| *p.borrow_mut() = Some(poller));
        })
        .expect("valid options");
    assert!(ran_on_reactor);
    assert_eq!(code, 7);
    assert_eq!(
        POLLS.load(Ordering::SeqCst),
        5,
        "the poller ran until unregistered"
    );
    assert!(
        Poller::register(0, || true).is_err(),
        "no poller outside an SPDK thread"
    );
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/spdk{shm_id}"));
    let _ = std::fs::remove_file(format!("/dev/shm/app_lifecycle_trace.{shm_id}"));
}
