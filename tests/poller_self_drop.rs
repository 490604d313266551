//! A poller that drops itself from inside its own closure while its
//! thread's message ring is full: the closure it is running must stay
//! alive until it returns. Freeing it waits for a message to the poller's
//! thread; when that message cannot be sent (SPDK's ring of 65,536 is full:
//! -EIO), the closure must leak, not be freed under the running call (which
//! the test sees under `scripts/test.sh --asan` as a heap-use-after-free in
//! the memcpy that clones a captured buffer after the drop).

mod common;
use common::*;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spdk_pmem::app::{self, AppOptions};
use spdk_pmem::thread::{Poller, Thread};

#[test]
fn a_poller_dropped_by_its_own_closure_with_the_ring_full_outlives_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("rpc.sock");
    let (shm_id, _) = unique_ids();
    let outcome: Arc<Mutex<Option<(u64, bool)>>> = Arc::default();
    let result = outcome.clone();
    let code = AppOptions::new("poller_self_drop")
        .reactor_mask("0x1")
        .shm_id(shm_id)
        .rpc_addr(sock.to_str().unwrap())
        .run(move || {
            let slot: Rc<RefCell<Option<Poller>>> = Rc::default();
            let inner = slot.clone();
            let captured = vec![0x5au8; 64 * 1024];
            let poller = Poller::register(0, move || {
                let Some(poller) = inner.borrow_mut().take() else {
                    return false;
                };
                let me = Thread::current().unwrap();
                let mut sent = 0u64;
                while sent < 1_000_000 && me.send(|| {}).is_ok() {
                    sent += 1;
                }
                drop(poller);
                // Still inside the closure: its captures must be alive.
                let copy = captured.clone();
                *result.lock().unwrap() = Some((sent, copy.iter().all(|&b| b == 0x5a)));
                // The ring is full: stop from elsewhere, once it has room.
                std::thread::spawn(|| {
                    while app::stop(0).is_err() {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                });
                true
            })
            .expect("registering the poller");
            *slot.borrow_mut() = Some(poller);
        })
        .expect("the app runs");
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/spdk{shm_id}"));
    let _ = std::fs::remove_file(format!("/dev/shm/poller_self_drop_trace.{shm_id}"));
    assert_eq!(code, 0);
    let (sent, intact) = outcome.lock().unwrap().expect("the poller ran");
    assert!(
        sent < 1_000_000,
        "the thread's ring never filled ({sent} messages)"
    );
    assert!(intact, "the closure's captures changed under it");
}
