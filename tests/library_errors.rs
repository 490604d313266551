//! The library's typed errors against real SPDK, in one spdk_app (one per
//! process): a duplicate bdev, an invalid NQN, a duplicate subsystem, a serial
//! number SPDK refuses, a namespace on a missing bdev, a bad address and a
//! port in use. After each, nothing half-created remains, and the target
//! still serves a namespace that SPDK's identify sees. Misuse that safe code
//! can attempt returns an error: a bdev deleted over RPC and then used, the
//! default target destroyed, an active subsystem destroyed, a listener of an
//! active subsystem removed (then nvmf_get_subsystems read).

pub mod common;
use common::*;

use std::sync::{Arc, Mutex};

use spdk_pmem::app::{self, AppOptions};
use spdk_pmem::nvmf::{ListenAddress, SubsystemConfig, Target, TransportKind};
use spdk_pmem::pmem::Pool;
use spdk_pmem::thread::AppThread;
use spdk_pmem::{bdev, thread, Error};

const NQN: &str = "nqn.2016-06.io.spdk:lib";

/// Runs SPDK's rpc.py off the reactor (the RPC server runs on it) and
/// resolves with whether it succeeded.
async fn rpc_elsewhere(sock: std::path::PathBuf, args: &'static [&'static str]) -> bool {
    let (completer, done) = thread::completion::<bool>("rpc.py");
    let app = thread::Thread::current().unwrap();
    std::thread::spawn(move || {
        let ok = rpc_py(&sock, args).status.success();
        app.send(move || completer.complete(ok)).unwrap();
    });
    done.await.unwrap_or(false)
}

async fn exercise(
    pool: std::path::PathBuf,
    victim_pool: std::path::PathBuf,
    sock: std::path::PathBuf,
    ports: [u16; 3],
) -> Result<(), String> {
    let [free_port, busy_port, second_port] = ports;
    let fail = |what: &str, e: &dyn std::fmt::Debug| format!("{what}: {e:?}");
    let app = AppThread::here().map_err(|e| fail("token", &e))?;
    let b = bdev::create_pmem_bdev(app, &pool, "pmdk0").map_err(|e| fail("pmem bdev", &e))?;
    match (b.block_size(), b.product_name()) {
        (Ok(4096), Ok(name)) if name == "pmemblk disk" => {}
        other => return Err(fail("bdev properties", &other)),
    }
    match bdev::create_pmem_bdev(app, &pool, "pmdk0") {
        Err(e) if e.errno() == Some(libc::EEXIST) => {}
        other => return Err(fail("duplicate bdev", &other)),
    }

    // A bdev a client deletes over RPC while the library holds it: the
    // handle then reports NotFound, never freed memory.
    let victim =
        bdev::create_pmem_bdev(app, &victim_pool, "victim").map_err(|e| fail("victim bdev", &e))?;
    if !rpc_elsewhere(sock.clone(), &["bdev_pmem_delete", "victim"]).await {
        return Err("bdev_pmem_delete victim failed".into());
    }
    match victim.block_count() {
        Err(Error::NotFound(m)) if m.contains("victim") => {}
        other => return Err(fail("a deleted bdev's handle", &other)),
    }
    match bdev::delete_pmem_bdev(victim).await {
        Err(Error::NotFound(_)) => {}
        other => return Err(fail("deleting a deleted bdev", &other)),
    }

    let target = Target::default_target(app).map_err(|e| fail("default target", &e))?;
    match target.destroy().await {
        Err(Error::InvalidArgument(m)) if m.contains("not made by Target::create") => {}
        other => return Err(fail("destroying the default target", &other)),
    }
    let target = Target::default_target(app).map_err(|e| fail("default target", &e))?;
    target
        .add_transport(TransportKind::Tcp)
        .await
        .map_err(|e| fail("transport", &e))?;
    match target.add_transport(TransportKind::Tcp).await {
        Err(e) if e.errno() == Some(libc::EEXIST) => {}
        other => return Err(fail("duplicate transport", &other)),
    }

    match target.create_subsystem(&SubsystemConfig::new("not-an-nqn")) {
        Err(Error::InvalidArgument(m)) if m.contains("invalid NQN") => {}
        other => return Err(fail("invalid NQN", &other)),
    }
    let too_long = SubsystemConfig::new(NQN).serial_number("a serial number far too long for NVMe");
    match target.create_subsystem(&too_long) {
        Err(Error::InvalidArgument(m)) if m.contains("serial number") => {}
        other => return Err(fail("long serial", &other)),
    }
    let bad_host = SubsystemConfig::new(NQN).host("not-a-host-nqn");
    match target.create_subsystem(&bad_host) {
        Err(e) if e.errno() == Some(libc::EINVAL) => {}
        other => return Err(fail("bad host NQN", &other)),
    }
    if target.find_subsystem(NQN).is_some() {
        return Err("a refused subsystem was left behind".into());
    }

    let config = SubsystemConfig::new(NQN)
        .serial_number("SPDK0001")
        .model_number("library test")
        .allow_any_host(true)
        .host("nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555")
        .max_namespaces(4);
    let subsystem = target
        .create_subsystem(&config)
        .map_err(|e| fail("subsystem", &e))?;
    match target.create_subsystem(&config) {
        Err(e) if e.errno() == Some(libc::EEXIST) => {}
        other => return Err(fail("duplicate subsystem", &other)),
    }
    match subsystem.add_namespace("no_such_bdev", None) {
        Err(e) if e.errno() == Some(libc::ENODEV) => {}
        other => return Err(fail("missing bdev", &other)),
    }
    match subsystem
        .add_listener(&ListenAddress::tcp("not-an-address", free_port))
        .await
    {
        Err(Error::InvalidArgument(m)) if m.contains("not an IP address") => {}
        other => return Err(fail("bad address", &other)),
    }
    match subsystem
        .add_listener(&ListenAddress::tcp("127.0.0.1", busy_port))
        .await
    {
        Err(Error::Spdk { .. }) => {}
        other => return Err(fail("port in use", &other)),
    }

    subsystem
        .add_listener(&ListenAddress::tcp("127.0.0.1", free_port))
        .await
        .map_err(|e| fail("listener", &e))?;
    let nsid = subsystem
        .add_namespace("pmdk0", None)
        .map_err(|e| fail("namespace", &e))?;
    let sn = subsystem
        .serial_number()
        .map_err(|e| fail("serial number", &e))?;
    if nsid != 1 || sn != "SPDK0001" || subsystem.nqn() != NQN {
        return Err(format!("nsid {nsid}, sn {sn}"));
    }
    let second = ListenAddress::tcp("127.0.0.1", second_port);
    subsystem
        .add_listener(&second)
        .await
        .map_err(|e| fail("second listener", &e))?;
    subsystem.start().await.map_err(|e| fail("start", &e))?;
    subsystem.pause().await.map_err(|e| fail("pause", &e))?;
    subsystem.resume().await.map_err(|e| fail("resume", &e))?;
    // On the active subsystem: paused, removed, resumed; the port closes.
    subsystem
        .remove_listener(&second)
        .await
        .map_err(|e| fail("removing a listener of an active subsystem", &e))?;
    if std::net::TcpStream::connect(("127.0.0.1", second_port)).is_ok() {
        return Err("the removed listener still accepts connections".into());
    }
    // Not a listener of the subsystem (any more): refused, and the target's
    // listener on that address (none now) is not released a second time.
    match subsystem.remove_listener(&second).await {
        Err(e) if e.errno() == Some(libc::ENOENT) => {}
        other => return Err(fail("removing a listener twice", &other)),
    }
    // An active subsystem is not destroyed: its poll groups still use it.
    let again = target.find_subsystem(NQN).ok_or("the subsystem went")?;
    match again.destroy() {
        Err(Error::InvalidArgument(m)) if m.contains("is active") => {}
        other => return Err(fail("destroying an active subsystem", &other)),
    }
    if target.find_subsystem(NQN).is_none() {
        return Err("the refused destroy removed the subsystem".into());
    }
    Ok(())
}

#[test]
fn library_errors_are_typed_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    drop(Pool::create_with_blocks(&pool, 4096, 8192, 0o600).unwrap());
    let victim_pool = dir.path().join("victim.pool");
    drop(Pool::create_with_blocks(&victim_pool, 4096, 1024, 0o600).unwrap());
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let (shm_id, free_port) = unique_ids();
    let second_port = test_port();
    let sock = dir.path().join("rpc.sock");
    let rpc_sock = sock.clone();
    let exercise_sock = sock.clone();

    let outcome: Arc<Mutex<Option<Result<String, String>>>> = Arc::default();
    let result = outcome.clone();
    let code = AppOptions::new("library_errors")
        .reactor_mask("0x1")
        .shm_id(shm_id)
        .rpc_addr(sock.to_str().unwrap())
        .run(move || {
            thread::spawn_local(async move {
                let configured = exercise(
                    pool,
                    victim_pool,
                    exercise_sock,
                    [free_port, busy_port, second_port],
                )
                .await;
                let checked = match configured {
                    // identify blocks; run it off the reactor and stop when done.
                    Ok(()) => {
                        let app_thread = thread::Thread::current().unwrap();
                        let sock = rpc_sock.clone();
                        std::thread::spawn(move || {
                            let id = std::panic::catch_unwind(|| {
                                // The subsystem lists what is left, read
                                // after the removals (SPDK's RPC server).
                                let listed = rpc_py(&sock, &["nvmf_get_subsystems"]);
                                let text = output_text(&listed);
                                assert!(listed.status.success(), "{text}");
                                assert!(
                                    text.contains(&format!("\"{free_port}\""))
                                        && !text.contains(&format!("\"{second_port}\"")),
                                    "{text}"
                                );
                                identify(NQN, free_port)
                            })
                            .map_err(|_| "nvmf_get_subsystems or identify failed".to_string());
                            *result.lock().unwrap() = Some(id);
                            app_thread
                                .send(|| app::stop(0).expect("the app is serving"))
                                .unwrap();
                        });
                        return;
                    }
                    Err(e) => Err(e),
                };
                *result.lock().unwrap() = Some(checked);
                let _ = app::stop(1);
            })
            .unwrap();
        })
        .expect("valid options");
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/spdk{shm_id}"));
    let _ = std::fs::remove_file(format!("/dev/shm/library_errors_trace.{shm_id}"));
    let outcome = outcome.lock().unwrap().take().expect("the test ran");
    let id = outcome.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code, 0);
    assert_eq!(identify_field(&id, "Serial Number"), "SPDK0001");
    assert_eq!(identify_field(&id, "Model Number"), "library test");
    assert!(id.contains("Namespace ID:1"), "{id}");
}
