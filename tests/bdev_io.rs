//! Bdev I/O from Rust and bdev modules in Rust, in one spdk_app (one per
//! process), against real SPDK and libpmemblk:
//! - the Rust pmem bdev, inline and on worker threads: multi-block writes
//!   read back equal, write-zeroes, unmap, flush, reset, 64 I/Os in flight,
//!   a bad block read as a media error, a read-only descriptor refusing
//!   writes, ranges and buffer sizes checked;
//! - a Rust module (a RAM disk with a block that panics and one that takes
//!   its time): the panic fails that I/O only and the app keeps serving;
//!   `bdev_get_bdevs` shows its `dump_info_json`; hot-remove while an I/O is
//!   in flight reports it and every later I/O as `BdevRemoved`, closes the
//!   descriptor by itself, and the unregistration then completes;
//! - a hot-remove while an I/O count (`io_stat`) walks the bdev's channels
//!   waits for the walk: the unregistration completes (review F6);
//! - the framework finds a module's devices by name and type, lists them,
//!   reports their figures and identity, and refuses to delete another
//!   module's bdev;
//! - after deleting the pmem bdevs, their pools open again (closed).

pub mod common;
#[path = "common/ram_disk.rs"]
mod ram_disk;
use common::*;
use ram_disk::ram_transfer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spdk_pmem::app::AppOptions;
use spdk_pmem::bdev::dma::DmaBuf;
use spdk_pmem::bdev::io::{Descriptor, IoChannel};
use spdk_pmem::bdev::module::{self, BdevIo, BdevProps, BlockDevice, IoStatus, IoType, Module};
use spdk_pmem::pmem::Pool;
use spdk_pmem::pmem_bdev::{self, IoThreads};
use spdk_pmem::thread::{self, AppThread, Spdk, Thread};
use spdk_pmem::{app, sys, Error};
use std::ffi::c_void;

const BS: usize = 4096;
/// Marked bad (pmemblk_set_error) before the bdev exists; no other check touches it.
const BAD_BLOCK: u64 = 500;

type Outcome = Result<(), String>;

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    common::rng::Rng::new(seed).bytes(len)
}

fn buf_with(spdk: Spdk, data: &[u8]) -> DmaBuf {
    let mut b = DmaBuf::new(spdk, data.len(), BS).expect("DMA memory");
    b.copy_from_slice(data);
    b
}

async fn read(ch: &IoChannel, spdk: Spdk, lba: u64, blocks: usize) -> Result<Vec<u8>, Error> {
    let (buf, r) = ch.read(lba, DmaBuf::new(spdk, blocks * BS, BS)?).await;
    r.map(|()| buf.to_vec())
}

async fn write(ch: &IoChannel, spdk: Spdk, lba: u64, data: &[u8]) -> Result<(), Error> {
    ch.write(lba, buf_with(spdk, data)).await.1
}

/// Reads, writes and the other I/O types against one pmem bdev.
async fn exercise_pmem(app: AppThread, name: &str, bad_block: u64) -> Outcome {
    let spdk = app.spdk();
    let fail = |what: &str, e: &dyn std::fmt::Debug| format!("{name}: {what}: {e:?}");
    let desc = Descriptor::open(app, name, true).map_err(|e| fail("open", &e))?;
    let ch = desc.channel().map_err(|e| fail("channel", &e))?;
    let last = desc.num_blocks() - 1;

    // Multi-block write and read back, and the last block.
    let eight = pattern(1, 8 * BS);
    write(&ch, spdk, 0, &eight)
        .await
        .map_err(|e| fail("write 8", &e))?;
    write(&ch, spdk, last, &pattern(2, BS))
        .await
        .map_err(|e| fail("write last", &e))?;
    if read(&ch, spdk, 0, 8)
        .await
        .map_err(|e| fail("read 8", &e))?
        != eight
    {
        return Err(fail("8 blocks read back", &"differ"));
    }
    if read(&ch, spdk, last, 1)
        .await
        .map_err(|e| fail("read last", &e))?
        != pattern(2, BS)
    {
        return Err(fail("last block read back", &"differs"));
    }

    // Write-zeroes and unmap make blocks read as zeros, and only those.
    ch.write_zeroes(2, 2)
        .await
        .map_err(|e| fail("write_zeroes", &e))?;
    ch.unmap(5, 1).await.map_err(|e| fail("unmap", &e))?;
    let back = read(&ch, spdk, 0, 8)
        .await
        .map_err(|e| fail("read after zeroes", &e))?;
    for block in 0..8 {
        let got = &back[block * BS..(block + 1) * BS];
        let zero = [2, 3, 5].contains(&block);
        if zero != got.iter().all(|b| *b == 0)
            || (!zero && got != &eight[block * BS..(block + 1) * BS])
        {
            return Err(fail("zeroed blocks", &block));
        }
    }
    ch.flush(0, desc.num_blocks())
        .await
        .map_err(|e| fail("flush", &e))?;
    ch.reset().await.map_err(|e| fail("reset", &e))?;

    // 64 writes in flight at once (each call submits), then read back.
    let writes: Vec<_> = (0..64u64)
        .map(|i| ch.write(16 + i, buf_with(spdk, &pattern(100 + i, BS))))
        .collect();
    for (i, w) in writes.into_iter().enumerate() {
        w.await
            .1
            .map_err(|e| fail(&format!("concurrent write {i}"), &e))?;
    }
    let back = read(&ch, spdk, 16, 64)
        .await
        .map_err(|e| fail("read 64", &e))?;
    for i in 0..64 {
        if back[i * BS..(i + 1) * BS] != pattern(100 + i as u64, BS) {
            return Err(fail("concurrent write read back", &i));
        }
    }

    // The bad block: a media error, typed; writing it heals it.
    match read(&ch, spdk, bad_block, 1).await {
        Err(e) if e.is_media_error() => {}
        other => return Err(fail("bad block read", &other.map(|d| d.len()))),
    }
    write(&ch, spdk, bad_block, &pattern(3, BS))
        .await
        .map_err(|e| fail("heal", &e))?;
    if read(&ch, spdk, bad_block, 1)
        .await
        .map_err(|e| fail("healed read", &e))?
        != pattern(3, BS)
    {
        return Err(fail("healed block", &"differs"));
    }

    // Refused before SPDK: out of range, partial blocks, read-only writes.
    match write(&ch, spdk, last, &pattern(4, 2 * BS)).await {
        Err(Error::InvalidArgument(m)) if m.contains("out of range") => {}
        other => return Err(fail("write past the end", &other)),
    }
    match ch.read(0, DmaBuf::new(spdk, BS + 512, 0).unwrap()).await.1 {
        Err(Error::InvalidArgument(m)) if m.contains("whole number") => {}
        other => return Err(fail("partial block buffer", &other)),
    }
    let ro = Descriptor::open(app, name, false).map_err(|e| fail("open read-only", &e))?;
    let ro_ch = ro.channel().map_err(|e| fail("read-only channel", &e))?;
    match write(&ro_ch, spdk, 0, &eight[..BS]).await {
        Err(Error::InvalidArgument(m)) if m.contains("read-only") => {}
        other => return Err(fail("write through a read-only descriptor", &other)),
    }
    if read(&ro_ch, spdk, 0, 1)
        .await
        .map_err(|e| fail("read-only read", &e))?
        != eight[..BS]
    {
        return Err(fail("read-only read", &"differs"));
    }
    Ok(())
}

/// A RAM disk whose block 13 panics and whose block 20 takes 300 ms (on a
/// thread, through DeferredIo).
struct TestDisk {
    data: Arc<Mutex<Vec<u8>>>,
    destructed: Arc<AtomicBool>,
}

/// A device type no bdev has, for a lookup by the wrong type.
struct NotATestDisk;

impl BlockDevice for NotATestDisk {
    type Channel = ();
    fn io_type_supported(&self, _: IoType) -> bool {
        false
    }
    fn create_channel(&self) -> spdk_pmem::Result<()> {
        Ok(())
    }
    fn submit(&self, _: &(), io: BdevIo) {
        io.complete(IoStatus::Failed)
    }
}

const PANIC_BLOCK: u64 = 13;
const SLOW_BLOCK: u64 = 20;

impl BlockDevice for TestDisk {
    type Channel = std::cell::Cell<u64>;

    fn io_type_supported(&self, io_type: IoType) -> bool {
        matches!(io_type, IoType::Read | IoType::Write)
    }

    fn create_channel(&self) -> spdk_pmem::Result<std::cell::Cell<u64>> {
        Ok(std::cell::Cell::new(0))
    }

    fn submit(&self, submitted: &std::cell::Cell<u64>, mut io: BdevIo) {
        submitted.set(submitted.get() + 1);
        let lba = io.offset_blocks();
        if lba == PANIC_BLOCK {
            panic!("block {PANIC_BLOCK} is cursed");
        }
        if lba == SLOW_BLOCK {
            let Ok(mut later) = io.defer() else {
                return;
            };
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                later.segments_mut().for_each(|s| s.fill(0x5a));
                later.complete(IoStatus::Success);
            });
            return;
        }
        ram_transfer(&mut self.data.lock().unwrap(), &mut io);
        io.complete(IoStatus::Success);
    }

    fn dump_info_json(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({"test_disk": {"bytes": self.data.lock().unwrap().len()}}))
    }

    fn destruct(&mut self) {
        self.destructed.store(true, Ordering::SeqCst);
    }

    fn figures(&self) -> Option<module::Figures> {
        let bytes = self.data.lock().unwrap().len();
        Some(module::Figures {
            labels: vec![("kind", "ram".into())],
            values: vec![module::Figure::gauge("test_bytes", "Bytes of RAM", bytes).in_bytes()],
        })
    }

    fn identity(&self) -> Option<String> {
        Some(format!("ram of {} bytes", self.data.lock().unwrap().len()))
    }
}

/// A 64-block TestDisk registered as `name`; the flag turns true when SPDK
/// destructs it.
fn register_test_disk(
    module: &Module,
    app: AppThread,
    name: &str,
) -> spdk_pmem::Result<(spdk_pmem::bdev::Bdev, Arc<AtomicBool>)> {
    let destructed = Arc::new(AtomicBool::new(false));
    let disk = TestDisk {
        data: Arc::new(Mutex::new(vec![0u8; 64 * BS])),
        destructed: destructed.clone(),
    };
    let bdev = module.register_bdev(app, BdevProps::new(name, "test disk", BS as u32, 64), disk)?;
    Ok((bdev, destructed))
}

/// Runs rpc.py off the reactor (the RPC server runs on it).
async fn rpc_elsewhere(sock: PathBuf, args: Vec<&'static str>) -> Result<String, String> {
    let (completer, done) = thread::completion::<Result<String, String>>("rpc.py");
    let app = Thread::current().unwrap();
    std::thread::spawn(move || {
        let out = rpc_py(&sock, &args);
        let text = output_text(&out);
        let r = if out.status.success() {
            Ok(text)
        } else {
            Err(text)
        };
        app.send(move || completer.complete(r)).unwrap();
    });
    done.await.map_err(|e| e.to_string())?
}

/// What the framework knows of a module's devices: the device by name and
/// type, every device of a type, its figures and identity, and a delete
/// that refuses another module's bdev (ram0 is the test module's, pm_*
/// the pmem module's).
async fn framework_owns_the_devices(app: AppThread, module: &Module, pmem: &Module) -> Outcome {
    let fail = |what: &str, e: &dyn std::fmt::Debug| format!("framework: {what}: {e:?}");
    match module.with_device(app, "ram0", |d: &TestDisk| d.data.lock().unwrap().len()) {
        Ok(n) if n == 64 * BS => {}
        other => return Err(fail("with_device", &other)),
    }
    let mut listed = Vec::new();
    module
        .with_devices(app, |name, _: &TestDisk| listed.push(name.to_string()))
        .map_err(|e| fail("with_devices", &e))?;
    if listed != ["ram0"] {
        return Err(fail("with_devices", &listed));
    }
    // Another module's bdev, and one of this module's as the wrong type.
    match module.with_device(app, "pm_inline", |_: &TestDisk| ()) {
        Err(Error::InvalidArgument(m)) if m.contains("module pmem_rs") => {}
        other => return Err(fail("another module's bdev", &other)),
    }
    match module.with_device(app, "ram0", |_: &NotATestDisk| ()) {
        Err(Error::InvalidArgument(m)) if m.contains("NotATestDisk") => {}
        other => return Err(fail("a device of another type", &other)),
    }
    match module.with_device(app, "nothing", |_: &TestDisk| ()) {
        Err(Error::NotFound(_)) => {}
        other => return Err(fail("no such bdev", &other)),
    }
    match pmem.delete(app, "ram0").await {
        Err(Error::InvalidArgument(m)) if m.contains("module test_disk") => {}
        other => return Err(fail("deleting another module's bdev", &other)),
    }
    if spdk_pmem::bdev::Bdev::by_name(app, "ram0").is_none() {
        return Err(fail("refused delete", &"ram0 is gone"));
    }
    let all = module::all_figures(app).map_err(|e| fail("all_figures", &e))?;
    let ram = all.iter().find(|f| f.bdev == "ram0");
    match ram {
        Some(f)
            if f.module == "test_disk"
                && f.figures.values[0].value == module::FigureValue::Gauge(64 * BS as i64) => {}
        other => return Err(fail("ram0's figures", &other)),
    }
    if !all
        .iter()
        .any(|f| f.bdev.starts_with("pm_") && f.module == "pmem_rs")
    {
        return Err(fail("the pmem bdevs' figures", &all));
    }
    match module::identity(app, "ram0") {
        Some(id) if id == format!("ram of {} bytes", 64 * BS) => {}
        other => return Err(fail("identity", &other)),
    }
    Ok(())
}

async fn exercise_module(app: AppThread, sock: PathBuf) -> Outcome {
    let spdk = app.spdk();
    let fail = |what: &str, e: &dyn std::fmt::Debug| format!("test module: {what}: {e:?}");
    let module = Module::get_or_register("test_disk").map_err(|e| fail("module", &e))?;
    match Module::get_or_register("pmem") {
        Err(e) if e.errno() == Some(libc::EEXIST) => {}
        other => return Err(fail("a C module's name", &other.map(|m| m.name()))),
    }
    let (bdev, destructed) =
        register_test_disk(module, app, "ram0").map_err(|e| fail("register", &e))?;
    let pmem_module = pmem_bdev::module().map_err(|e| fail("pmem module", &e))?;
    if !module.owns(&bdev) || pmem_module.owns(&bdev) {
        return Err(fail("ownership", &bdev.name()));
    }
    framework_owns_the_devices(app, module, pmem_module).await?;
    let shown = rpc_elsewhere(sock.clone(), vec!["bdev_get_bdevs", "-b", "ram0"]).await?;
    if !shown.contains("\"test_disk\"") || !shown.contains("\"bytes\": 262144") {
        return Err(fail("dump_info_json in bdev_get_bdevs", &shown));
    }

    let desc = Descriptor::open(app, "ram0", true).map_err(|e| fail("open", &e))?;
    let ch = desc.channel().map_err(|e| fail("channel", &e))?;
    write(&ch, spdk, 3, &pattern(7, 2 * BS))
        .await
        .map_err(|e| fail("write", &e))?;
    if read(&ch, spdk, 3, 2).await.map_err(|e| fail("read", &e))? != pattern(7, 2 * BS) {
        return Err(fail("read back", &"differs"));
    }
    // The panic fails that I/O, is counted, and nothing else changes.
    let before = module::panics_caught();
    match read(&ch, spdk, PANIC_BLOCK, 1).await {
        Err(Error::BdevIo { op: "read", .. }) => {}
        other => return Err(fail("the panicking block", &other)),
    }
    if module::panics_caught() != before + 1 {
        return Err(fail("panics counted", &module::panics_caught()));
    }
    if read(&ch, spdk, 3, 2)
        .await
        .map_err(|e| fail("read after the panic", &e))?
        != pattern(7, 2 * BS)
    {
        return Err(fail("read after the panic", &"differs"));
    }
    // The module does not do write-zeroes: SPDK's bdev layer writes zeros
    // through it instead.
    ch.write_zeroes(3, 1)
        .await
        .map_err(|e| fail("emulated write_zeroes", &e))?;
    let back = read(&ch, spdk, 3, 2)
        .await
        .map_err(|e| fail("read after zeroes", &e))?;
    if back[..BS].iter().any(|b| *b != 0) || back[BS..] != pattern(7, 2 * BS)[BS..] {
        return Err(fail("emulated write_zeroes", &"wrong blocks"));
    }

    // Hot-remove with an I/O in flight (block 20 takes 300 ms).
    let slow = ch.read(SLOW_BLOCK, DmaBuf::new(spdk, BS, 0).unwrap());
    let unregistered = module::unregister(bdev);
    let (buf, r) = slow.await;
    if !matches!(r, Err(Error::BdevRemoved { .. })) || buf.len() != BS {
        return Err(fail("the I/O in flight at hot-remove", &r));
    }
    if !desc.is_removed() {
        return Err(fail("descriptor after hot-remove", &"not removed"));
    }
    match read(&ch, spdk, 3, 1).await {
        Err(Error::BdevRemoved { bdev }) if bdev == "ram0" => {}
        other => return Err(fail("I/O after hot-remove", &other)),
    }
    match desc.channel() {
        Err(Error::BdevRemoved { .. }) => {}
        other => return Err(fail("a channel after hot-remove", &other.map(|_| ()))),
    }
    // The descriptor closed by itself (the handles are still alive here),
    // so the unregistration completes and the device is destructed.
    unregistered.await.map_err(|e| fail("unregister", &e))?;
    if !destructed.load(Ordering::SeqCst) {
        return Err(fail("destruct", &"not called"));
    }
    drop((ch, desc));
    Ok(())
}

/// An SPDK thread of the test's own, holding a channel of one bdev.
struct ChannelElsewhere {
    thread: Thread,
}

impl ChannelElsewhere {
    /// Makes the thread and, there, a channel of `bdev`'s I/O device.
    async fn open(bdev: &spdk_pmem::bdev::Bdev) -> Result<ChannelElsewhere, String> {
        let name = std::ffi::CString::new("f6_other").unwrap();
        // SAFETY: a null cpuset lets any reactor run the thread; SPDK copies
        // the name.
        let raw = unsafe { sys::spdk_thread_create(name.as_ptr(), std::ptr::null_mut()) };
        if raw.is_null() {
            return Err("spdk_thread_create failed".into());
        }
        // SAFETY: `raw` is the live thread just created.
        let thread = Thread::from_id(unsafe { sys::spdk_thread_get_id(raw) }).ok_or("no id")?;
        // SPDK's bdev layer registers a bdev's I/O device at its address + 1.
        let io_device = bdev.as_ptr().map_err(|e| e.to_string())? as usize + 1;
        let (opened, got) = thread::completion::<bool>("channel elsewhere");
        thread
            .send(move || {
                // SAFETY: the bdev is registered (the app thread waits for
                // this message); the channel is put back by `close` on this
                // same thread.
                let ch = unsafe { sys::spdk_get_io_channel(io_device as *mut c_void) };
                CHANNEL_ELSEWHERE.store(ch as usize, Ordering::SeqCst);
                opened.complete(!ch.is_null());
            })
            .map_err(|e| e.to_string())?;
        if !got.await.map_err(|e| e.to_string())? {
            return Err("spdk_get_io_channel failed elsewhere".into());
        }
        Ok(ChannelElsewhere { thread })
    }

    /// Puts the channel back and ends the thread.
    fn close(self) -> Result<(), String> {
        self.thread
            .send(|| {
                let ch = CHANNEL_ELSEWHERE.swap(0, Ordering::SeqCst);
                // SAFETY: the channel `open` got on this thread, put once;
                // then this thread exits (SPDK frees it once it is idle).
                unsafe {
                    sys::spdk_put_io_channel(ch as *mut sys::spdk_io_channel);
                    sys::spdk_thread_exit(sys::spdk_get_thread());
                }
            })
            .map_err(|e| e.to_string())
    }
}

static CHANNEL_ELSEWHERE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Review F6: `io_stat` walks the bdev's channels with spdk_for_each_channel,
/// thread by thread. With a channel here and one on another thread, the
/// walk's step here and the hot-remove event arrive in one batch of this
/// thread's messages, while the walk still has the other thread to visit.
/// The remove used to close the descriptor at once, and that last close
/// unregistered the bdev's I/O device mid-walk, which SPDK refuses
/// ("for_each calls outstanding"): the unregistration never completed.
async fn hot_remove_during_an_io_count(app: AppThread) -> Outcome {
    let spdk = app.spdk();
    let fail =
        |what: &str, e: &dyn std::fmt::Debug| format!("io_stat at hot-remove: {what}: {e:?}");
    let module = Module::get_or_register("test_disk").map_err(|e| fail("module", &e))?;
    let (bdev, destructed) =
        register_test_disk(module, app, "ram_stat").map_err(|e| fail("register", &e))?;
    let desc = Descriptor::open(app, "ram_stat", false).map_err(|e| fail("open", &e))?;
    let ch = desc.channel().map_err(|e| fail("channel", &e))?;
    let elsewhere = ChannelElsewhere::open(&bdev).await?;
    read(&ch, spdk, 1, 1).await.map_err(|e| fail("read", &e))?;
    let counted = desc.io_stat();
    let unregistered = module::unregister(bdev);
    let stat = counted.await.map_err(|e| fail("io_stat", &e))?;
    // (The examine at registration reads too.)
    if stat.reads == 0 {
        return Err(fail("reads counted", &stat.reads));
    }
    drop(ch);
    elsewhere.close()?;
    // Without the fix this never resolves, so a watchdog ends the process.
    let (resolved, watched) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if watched.recv_timeout(Duration::from_secs(20)).is_err() {
            eprintln!(
                "io_stat at hot-remove: the unregistration did not complete in 20 s \
                 (SPDK refused to unregister the bdev mid-walk)"
            );
            std::process::exit(1);
        }
    });
    unregistered.await.map_err(|e| fail("unregister", &e))?;
    let _ = resolved.send(());
    if !destructed.load(Ordering::SeqCst) {
        return Err(fail("destruct", &"not called"));
    }
    drop(desc);
    Ok(())
}

async fn exercise(dir: PathBuf, sock: PathBuf) -> Outcome {
    let app = AppThread::here().map_err(|e| e.to_string())?;
    let mut pools = Vec::new();
    for (name, threads) in [
        ("pm_inline", IoThreads::Inline),
        ("pm_workers", IoThreads::Workers(3)),
    ] {
        let pool = dir.join(format!("{name}.pool"));
        pmem_bdev::create(app, &pool, name, threads).map_err(|e| format!("{name}: {e}"))?;
        exercise_pmem(app, name, BAD_BLOCK).await?;
        pools.push((name, pool));
    }
    exercise_module(app, sock).await?;
    hot_remove_during_an_io_count(app).await?;
    for (name, pool) in pools {
        pmem_bdev::module()
            .map_err(|e| e.to_string())?
            .delete(app, name)
            .await
            .map_err(|e| format!("delete {name}: {e}"))?;
        // Closed: libpmemblk's lock is free again.
        Pool::open(&pool, None).map_err(|e| format!("{name}'s pool after delete: {e}"))?;
    }
    Ok(())
}

fn new_pool(path: &Path, bad_block: u64) {
    let pool = Pool::create_with_blocks(path, BS, 1024, 0o600).unwrap();
    pool.set_error(bad_block).unwrap();
}

#[test]
fn rust_bdev_io_and_modules_against_real_spdk() {
    let dir = shm_dir();
    for name in ["pm_inline", "pm_workers"] {
        new_pool(&dir.path().join(format!("{name}.pool")), BAD_BLOCK);
    }
    let (shm_id, _) = unique_ids();
    let sock = dir.path().join("rpc.sock");
    let outcome: Arc<Mutex<Option<Outcome>>> = Arc::default();
    let result = outcome.clone();
    let (path, rpc_sock) = (dir.path().to_path_buf(), sock.clone());
    let code = AppOptions::new("bdev_io")
        .reactor_mask("0x1")
        .shm_id(shm_id)
        .rpc_addr(sock.to_str().unwrap())
        .run(move || {
            thread::spawn_local(async move {
                let r = exercise(path, rpc_sock).await;
                let code = if r.is_ok() { 0 } else { 1 };
                *result.lock().unwrap() = Some(r);
                app::stop(code).expect("the app is serving");
            })
            .unwrap();
        })
        .expect("valid options");
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/spdk{shm_id}"));
    let _ = std::fs::remove_file(format!("/dev/shm/bdev_io_trace.{shm_id}"));
    let outcome = outcome.lock().unwrap().take().expect("the test ran");
    outcome.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code, 0);
}
