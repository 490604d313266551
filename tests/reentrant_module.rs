//! SPDK calls a bdev module's `submit` again while a call is running: a
//! completion made inside `submit` can make the bdev layer resubmit the I/O
//! it queued after a `NoMemory` (bdev.c, `bdev_ch_retry_io`), synchronously.
//! `BlockDevice::submit` therefore gets its channel by shared reference;
//! before, each call built a `&mut` to it, and the inner call aliased the
//! outer one's (undefined behaviour a `Vec` in the channel turns into a
//! read of freed memory).
//!
//! The module here completes most I/O inline, stores every fourth in its
//! channel (a `RefCell<Vec<BdevIo>>`, the oldest completed inside `submit`
//! once three are stored, the rest by a poller), and answers every fifth
//! with `NoMemory` while some are stored. SPDK's bdevperf
//! verifies every block over NVMe/TCP, and the module must have been
//! re-entered with nothing lost (clean under `scripts/test.sh --asan`).

pub mod common;
#[path = "common/ram_disk.rs"]
mod ram_disk;
use common::*;
use ram_disk::ram_transfer;

use std::cell::{Cell, RefCell};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use spdk_pmem::app::{self, AppOptions};
use spdk_pmem::bdev::module::{BdevIo, BdevProps, BlockDevice, IoStatus, IoType, Module};
use spdk_pmem::nvmf::{ListenAddress, SubsystemConfig, Target, TransportKind};
use spdk_pmem::thread::{self, AppThread, Poller, Thread};

const NQN: &str = "nqn.2016-06.io.spdk:stash";
const BS: usize = 4096;
const BLOCKS: u64 = 1024;

#[derive(Default)]
struct Counts {
    submits: AtomicU64,
    reentered: AtomicU64,
    no_memory: AtomicU64,
}

struct Stash {
    data: Arc<Mutex<Vec<u8>>>,
    counts: Arc<Counts>,
}

/// Per thread: the stored I/O, the depth of `submit` calls now running,
/// and the poller that completes stored I/O when no more arrives.
struct Channel {
    held: Rc<RefCell<Vec<BdevIo>>>,
    depth: Cell<u32>,
    _flush: Poller,
}

/// Reads or writes the RAM behind the device, and completes the I/O.
fn execute(data: &Mutex<Vec<u8>>, mut io: BdevIo) {
    ram_transfer(&mut data.lock().unwrap(), &mut io);
    io.complete(IoStatus::Success);
}

impl BlockDevice for Stash {
    type Channel = Channel;

    fn io_type_supported(&self, io_type: IoType) -> bool {
        matches!(io_type, IoType::Read | IoType::Write)
    }

    fn create_channel(&self) -> spdk_pmem::Result<Channel> {
        let held: Rc<RefCell<Vec<BdevIo>>> = Rc::default();
        let (polled, data) = (held.clone(), self.data.clone());
        let flush = Poller::register(1000, move || {
            // Taken out first: completing may re-enter submit, which
            // borrows `held` again.
            let left: Vec<BdevIo> = polled.borrow_mut().drain(..).collect();
            let any = !left.is_empty();
            for io in left {
                execute(&data, io);
            }
            any
        })?;
        Ok(Channel {
            held,
            depth: Cell::new(0),
            _flush: flush,
        })
    }

    fn submit(&self, ch: &Channel, io: BdevIo) {
        let n = self.counts.submits.fetch_add(1, Ordering::Relaxed);
        ch.depth.set(ch.depth.get() + 1);
        if ch.depth.get() > 1 {
            self.counts.reentered.fetch_add(1, Ordering::Relaxed);
        }
        if n % 5 == 4 && !ch.held.borrow().is_empty() {
            // Retried by the bdev layer once stored I/O completes.
            self.counts.no_memory.fetch_add(1, Ordering::Relaxed);
            io.complete(IoStatus::NoMemory);
        } else if n % 4 == 0 {
            ch.held.borrow_mut().push(io);
            // The borrow ends before the completion, which may re-enter.
            let oldest = {
                let mut held = ch.held.borrow_mut();
                (held.len() >= 3).then(|| held.remove(0))
            };
            if let Some(io) = oldest {
                execute(&self.data, io);
            }
        } else {
            // Inline: during the bdev layer's retry of NoMemory'd I/O this
            // completion resubmits the next one from inside this call.
            execute(&self.data, io);
        }
        ch.depth.set(ch.depth.get() - 1);
    }
}

fn bdevperf(port: u16, dir: &std::path::Path) -> (std::process::ExitStatus, String) {
    let config = nvme_bdev_config(dir, NQN, port);
    let out = Command::new(spdk_tool("test/bdev/bdevperf/bdevperf"))
        .args(["--json", config.to_str().unwrap()])
        .args([
            "-q", "16", "-o", "4096", "-w", "verify", "-t", "2", "-m", "0x2",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("running bdevperf");
    (out.status, output_text(&out))
}

#[test]
fn a_module_reentered_from_a_completion_in_submit_serves_verified_io() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("rpc.sock");
    let (shm_id, port) = unique_ids();
    let counts = Arc::new(Counts::default());
    let device_counts = counts.clone();
    let perf: Arc<Mutex<Option<(std::process::ExitStatus, String)>>> = Arc::default();
    let perf_result = perf.clone();
    let perf_dir = dir.path().to_path_buf();
    let code = AppOptions::new("reentrant_module")
        .reactor_mask("0x1")
        .shm_id(shm_id)
        .rpc_addr(sock.to_str().unwrap())
        .run(move || {
            thread::spawn_local(async move {
                let app = AppThread::here().unwrap();
                let module = Module::get_or_register("stash").unwrap();
                let device = Stash {
                    data: Arc::new(Mutex::new(vec![0; BLOCKS as usize * BS])),
                    counts: device_counts,
                };
                let props = BdevProps::new("stash0", "stash", BS as u32, BLOCKS);
                module.register_bdev(app, props, device).unwrap();
                let target = Target::default_target(app).unwrap();
                target.add_transport(TransportKind::Tcp).await.unwrap();
                let config = SubsystemConfig::new(NQN).allow_any_host(true);
                let subsystem = target.create_subsystem(&config).unwrap();
                subsystem
                    .add_listener(&ListenAddress::tcp("127.0.0.1", port))
                    .await
                    .unwrap();
                subsystem.add_namespace("stash0", None).unwrap();
                subsystem.start().await.unwrap();
                let app_thread = Thread::current().unwrap();
                std::thread::spawn(move || {
                    *perf_result.lock().unwrap() = Some(bdevperf(port, &perf_dir));
                    app_thread.send(|| drop(app::stop(0))).unwrap();
                });
            })
            .unwrap();
        })
        .expect("the app runs");
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/spdk{shm_id}"));
    let _ = std::fs::remove_file(format!("/dev/shm/reentrant_module_trace.{shm_id}"));
    assert_eq!(code, 0);
    let (status, out) = perf.lock().unwrap().take().expect("bdevperf ran");
    check_bdevperf(status, &out);
    let (submits, reentered, no_memory) = (
        counts.submits.load(Ordering::Relaxed),
        counts.reentered.load(Ordering::Relaxed),
        counts.no_memory.load(Ordering::Relaxed),
    );
    eprintln!("{submits} submits, {no_memory} answered NoMemory, {reentered} re-entered");
    assert!(
        no_memory > 0 && reentered > 0,
        "{submits} submits, {no_memory} NoMemory, {reentered} re-entered"
    );
}
