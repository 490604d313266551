//! The application's edges from safe code: `app::stop` and `app::shutdown`
//! before the start and after the end are errors that change nothing; a
//! `Thread` handle kept past the end fails to send; and an async RPC method
//! still pending when SIGINT arrives resolves during the shutdown without
//! answering into the RPC server SPDK has already freed: the app exits 0.

pub mod common;
use common::*;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use spdk_pmem::app::{self, AppOptions};
use spdk_pmem::rpc::{self, RpcStates};
use spdk_pmem::thread::{self, Poller, Thread};

/// The pending method's future resolved after the shutdown had begun.
static RESOLVED_LATE: AtomicBool = AtomicBool::new(false);

#[test]
fn stop_before_start_and_after_end_is_an_error_and_a_pending_rpc_survives_sigint() {
    assert!(app::stop(0).is_err());
    assert!(app::shutdown().is_err());
    assert!(Thread::app_thread().is_none());

    // Sends SIGINT once called, then resolves a few reactor iterations later,
    // when SPDK has finished its RPC server.
    rpc::register_async_method(
        "test_answer_during_shutdown",
        RpcStates::Runtime,
        |_| async {
            let (completer, done) = thread::completion::<()>("test shutdown");
            let completer = Mutex::new(Some(completer));
            let polls = AtomicU32::new(0);
            let poller = Poller::register(0, move || {
                match polls.fetch_add(1, Ordering::SeqCst) {
                    // SAFETY: raise(3) on our own process; SPDK handles SIGINT.
                    0 => unsafe {
                        libc::raise(libc::SIGINT);
                    },
                    200 => {
                        if let Some(c) = completer.lock().unwrap().take() {
                            c.complete(());
                        }
                    }
                    _ => {}
                }
                true
            })
            .map_err(rpc::RpcError::from)?;
            done.await.map_err(rpc::RpcError::from)?;
            drop(poller);
            RESOLVED_LATE.store(true, Ordering::SeqCst);
            Ok(json!("answered"))
        },
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("rpc.sock");
    let (shm_id, _) = unique_ids();
    let kept: Arc<Mutex<Option<Thread>>> = Arc::default();
    let keep = kept.clone();
    let reply: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    let got = reply.clone();
    let client_sock = sock.clone();
    let code = AppOptions::new("app_shutdown")
        .reactor_mask("0x1")
        .shm_id(shm_id)
        .rpc_addr(sock.to_str().unwrap())
        .run(move || {
            *keep.lock().unwrap() = Thread::current();
            assert_eq!(Thread::current(), Thread::app_thread());
            std::thread::spawn(move || {
                let mut s = std::os::unix::net::UnixStream::connect(&client_sock).unwrap();
                s.write_all(br#"{"jsonrpc":"2.0","method":"test_answer_during_shutdown","id":1}"#)
                    .unwrap();
                let mut answer = Vec::new();
                let _ = s.read_to_end(&mut answer);
                *got.lock().unwrap() = Some(answer);
            });
        })
        .expect("valid options");
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/spdk{shm_id}"));
    let _ = std::fs::remove_file(format!("/dev/shm/app_shutdown_trace.{shm_id}"));
    assert_eq!(code, 0, "SIGINT is a clean shutdown");
    assert!(
        RESOLVED_LATE.load(Ordering::SeqCst),
        "the pending method did not resolve during the shutdown"
    );

    let thread = kept.lock().unwrap().take().expect("the start closure ran");
    let err = thread.send(|| {}).unwrap_err();
    assert!(err.to_string().contains("has exited"), "{err}");
    assert!(app::stop(0).is_err());
    assert!(app::shutdown().is_err());
    assert!(Thread::app_thread().is_none());
    // The client's connection was closed unanswered (or answered before the
    // server went; never garbage).
    let answer = reply.lock().unwrap().take().unwrap_or_default();
    assert!(
        answer.is_empty() || serde_json::from_slice::<serde_json::Value>(&answer).is_ok(),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}
