//! A panic in the start closure never crosses into C: the app stops, SPDK
//! shuts down, and run() resumes the panic in the caller.

use std::panic;

use spdk_pmem::app::AppOptions;

#[test]
fn panic_in_start_closure_is_resumed_after_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("rpc.sock");
    let shm_id = 4000 + (std::process::id() % 1000) as i32;
    let opts = AppOptions::new("app_panic")
        .reactor_mask("0x1")
        .shm_id(shm_id)
        .rpc_addr(sock.to_str().unwrap());
    let result = panic::catch_unwind(|| opts.run(|| panic!("start closure failed")));
    let payload = result.expect_err("the panic reaches the caller");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"start closure failed")
    );
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/spdk{shm_id}"));
    let _ = std::fs::remove_file(format!("/dev/shm/app_panic_trace.{shm_id}"));
}
