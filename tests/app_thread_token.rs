//! SPDK keeps its bdev list and NVMe-oF targets on the application thread
//! and changes them there without a lock, so the token that every call
//! touching them takes, `thread::AppThread`, is given on that thread only.
//! With two reactors (`-m 0x3`) the nvmf subsystem runs a poll group's
//! thread on each core, where a bdev module's `submit` and
//! `create_channel` run: there `Spdk::here()` succeeds and
//! `AppThread::here()` is an error naming where to go. (Before the token,
//! `Bdev::by_name` took `Spdk` and walked the list from those threads.)

pub mod common;
use common::*;

use std::ffi::c_void;
use std::sync::Mutex;

use spdk_pmem::app::{self, AppOptions};
use spdk_pmem::sys;
use spdk_pmem::thread::{AppThread, Spdk};

/// (thread name, Spdk::here() worked, AppThread::here()'s error if any).
static SEEN: Mutex<Vec<(String, bool, Option<String>)>> = Mutex::new(Vec::new());

extern "C" fn probe(_ctx: *mut c_void) {
    // SAFETY: SPDK runs this on each of its threads, which names itself.
    let name =
        unsafe { std::ffi::CStr::from_ptr(sys::spdk_thread_get_name(sys::spdk_get_thread())) }
            .to_string_lossy()
            .into_owned();
    let app = AppThread::here().err().map(|e| e.to_string());
    let seen = (name, Spdk::here().is_ok(), app);
    SEEN.lock().unwrap_or_else(|e| e.into_inner()).push(seen);
}

extern "C" fn probed(_ctx: *mut c_void) {
    let _ = app::stop(0);
}

#[test]
fn only_the_application_thread_gets_the_token_for_spdks_lists() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("rpc.sock");
    let (shm_id, _) = unique_ids();
    let code = AppOptions::new("app_thread_token")
        .reactor_mask("0x3")
        .shm_id(shm_id)
        .rpc_addr(sock.to_str().unwrap())
        .run(|| {
            assert!(
                AppThread::here().is_ok(),
                "the start closure is on the app thread"
            );
            // SAFETY: runs `probe` on every SPDK thread, then `probed` here;
            // neither uses the (NULL) context.
            unsafe { sys::spdk_for_each_thread(Some(probe), std::ptr::null_mut(), Some(probed)) };
        })
        .expect("the app runs");
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/spdk{shm_id}"));
    let _ = std::fs::remove_file(format!("/dev/shm/app_thread_token_trace.{shm_id}"));
    assert_eq!(code, 0);
    let seen = SEEN.lock().unwrap().clone();
    assert!(seen.iter().all(|(_, spdk, _)| *spdk), "{seen:?}");
    let given: Vec<_> = seen.iter().filter(|(_, _, e)| e.is_none()).collect();
    assert_eq!(given.len(), 1, "one application thread: {seen:?}");
    assert_eq!(given[0].0, "app_thread", "{seen:?}");
    let refused: Vec<_> = seen
        .iter()
        .filter(|(name, _, _)| name.starts_with("nvmf_tgt_poll_group"))
        .collect();
    assert!(refused.len() >= 2, "a poll group on each core: {seen:?}");
    for (name, _, e) in refused {
        let e = e
            .as_deref()
            .unwrap_or_else(|| panic!("{name} got the token"));
        assert!(e.contains("application thread"), "{name}: {e}");
    }
}
