//! A poller that drops itself from inside its own closure while its
//! thread's message ring is full: the closure it is running must stay
//! alive until it returns. Freeing it waits for a message to the poller's
//! thread; when that message cannot be sent (SPDK's ring of 65,536 is full:
//! -EIO), the closure must leak, not be freed under the running call (which
//! the test sees under `scripts/test.sh --asan` as a heap-use-after-free in
//! the memcpy that clones a captured buffer after the drop). And a stop
//! asked while the ring is full says it was not taken: SPDK 20.07's
//! `spdk_app_stop` ignored the failed message, the stop was lost and the
//! application ran on (seen in a run of the suite that never ended).

pub mod common;
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
    let outcome: Arc<Mutex<Option<(u64, bool, bool)>>> = Arc::default();
    let result = outcome.clone();
    // A lost stop would leave the app running: after 60 s it is shut down
    // through SPDK's critical message (which needs no room in the ring).
    let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let forced = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let (ended, forced) = (ended.clone(), forced.clone());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while !ended.load(std::sync::atomic::Ordering::SeqCst) {
                if std::time::Instant::now() > deadline {
                    forced.store(true, std::sync::atomic::Ordering::SeqCst);
                    let _ = app::shutdown();
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
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
                // The ring is full: a stop asked now must say it was not
                // taken (it used to be lost, and the app never stopped).
                let refused = app::stop(0).is_err();
                *result.lock().unwrap() = Some((sent, copy.iter().all(|&b| b == 0x5a), refused));
                // Stop from elsewhere, once the ring has room.
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
    ended.store(true, std::sync::atomic::Ordering::SeqCst);
    watchdog.join().unwrap();
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/spdk{shm_id}"));
    let _ = std::fs::remove_file(format!("/dev/shm/poller_self_drop_trace.{shm_id}"));
    assert!(
        !forced.load(std::sync::atomic::Ordering::SeqCst),
        "the app did not stop in 60 s: a stop was lost"
    );
    assert_eq!(code, 0);
    let (sent, intact, refused) = outcome.lock().unwrap().expect("the poller ran");
    assert!(
        refused,
        "app::stop said yes while the app thread's ring was full"
    );
    assert!(
        sent < 1_000_000,
        "the thread's ring never filled ({sent} messages)"
    );
    assert!(intact, "the closure's captures changed under it");
}
