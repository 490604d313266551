//! The write-back cache as a bdev (module `pmem_wb`): writes are
//! acknowledged once they are in the log on the pmem pool, and destaged to
//! the backing bdev afterwards, one after another in the order they were
//! acknowledged; reads find the newest acknowledged data, in the log while it
//! holds the block, in the backing bdev otherwise; a flush completes once
//! everything acknowledged before it is in the backing bdev.
//!
//! Threads: the cache's state lives on the application thread, which owns
//! the descriptor of the backing bdev; I/O submitted on other SPDK threads
//! is deferred and sent there, and completes back on its own thread.
//! Writes go to the pool on that thread (a pool in /dev/shm takes a few
//! microseconds a block).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::log::{Damage, Entry, Log};
use super::order::{Order, Write};
use crate::bdev::dma::DmaBuf;
use crate::bdev::io::{Descriptor, IoChannel};
use crate::bdev::module::{BdevIo, BdevProps, BlockDevice, DeferredIo, IoStatus, IoType, Module};
use crate::bdev::Bdev;
use crate::error::{Error, Result};
use crate::thread::{AppThread, Completer, Poller, Thread};

/// The bdev module's name.
pub const MODULE_NAME: &str = "pmem_wb";
/// The product name `bdev_get_bdevs` shows.
pub const PRODUCT_NAME: &str = "pmem write-back cache";
/// How long destaging waits after the backing bdev failed a write.
const RETRY_US: u64 = 1_000_000;
/// How often a cache looks whether the application is stopping.
const STOP_CHECK_US: u64 = 100_000;
/// Over how long the destage rate is measured.
const RATE_WINDOW_US: u64 = 1_000_000;
/// How long a host's FLUSH, or a write waiting for room in a full log, may
/// wait by default: well below the Linux host's 30 s I/O timeout, so that
/// through an outage of the base the host sees errors, not a hang and its
/// error recovery (queue teardown, reconnect, I/O sent again to wait again).
pub const DEFAULT_WAIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a clean shutdown waits for the caches to destage.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// What a cache is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheParams {
    /// The cache bdev's name.
    pub name: String,
    /// The backing bdev (an RBD bdev, say).
    pub base: String,
    /// The pool holding the log: opened (and its writes replayed) if it
    /// exists, created otherwise.
    pub pool: PathBuf,
    /// Slots (cached blocks) of a pool to create.
    pub create_slots: Option<u64>,
    /// What to do with a damaged log in an existing pool.
    pub damaged_log: Damage,
    /// How long a host's FLUSH or a write waiting for room waits before it
    /// fails; `None`: as long as it takes.
    pub wait_timeout: Option<std::time::Duration>,
    /// A control for tests of the ordering promise, which it breaks:
    /// destage each pair of writes in reverse order (test builds only).
    #[cfg(feature = "test-hooks")]
    pub destage_out_of_order: bool,
}

/// Figures that `bdev_get_bdevs` shows, kept where any thread may read them.
#[derive(Debug, Default)]
struct Stats {
    dirty: AtomicU64,
    destaged_writes: AtomicU64,
    destage_failures: AtomicU64,
    /// Writes waiting for room in the log.
    waiting_writes: AtomicU64,
    /// Writes destaged per second over the last [`RATE_WINDOW_US`], as
    /// `f64` bits.
    destage_rate: AtomicU64,
    base_failing: AtomicBool,
    failed: AtomicBool,
    /// Why the cache failed (set once, with `failed`).
    failure: std::sync::Mutex<Option<String>>,
}

fn module() -> Result<&'static Module> {
    Module::get_or_register(MODULE_NAME)
}

/// Registers the bdev module (before its RPCs are served).
pub fn register_module() -> Result<()> {
    module().map(|_| ())
}

thread_local! {
    /// The caches, by bdev name, on the application thread (the only
    /// thread that touches them).
    static CACHES: RefCell<HashMap<String, Rc<Cache>>> = RefCell::new(HashMap::new());
}

/// Tells caches of one name apart: a bdev deleted and made again under its
/// name is another cache, and what reaches the old one's bdev (its last
/// I/O, its destruct) must not touch the new one.
static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(1);

/// The cache called `name` if it is the one with `id`.
fn cache_with_id(name: &str, id: u64) -> Option<Rc<Cache>> {
    CACHES.with(|c| c.borrow().get(name).filter(|c| c.id == id).cloned())
}

/// Creates the cache bdev on the application thread. Resolves there.
pub async fn create(app: AppThread, params: CacheParams) -> Result<Bdev> {
    let app = app.check()?;
    let module = module()?;
    if Bdev::by_name(app, &params.name).is_some() {
        return Err(Error::spdk(
            format!(
                "creating bdev {:?}: a bdev of that name exists",
                params.name
            ),
            -libc::EEXIST,
        ));
    }
    let desc = Descriptor::open(app, &params.base, true)?;
    // One owner per base: no namespace or second cache may write it behind
    // the cache's back.
    desc.claim(module)?;
    // A write the base completes from a volatile cache is not in it yet:
    // its slot is freed only after a flush of the base.
    let flush_base = desc.has_write_cache()?;
    if flush_base && !desc.supports_flush()? {
        return Err(Error::InvalidArgument(format!(
            "bdev {:?} has a volatile write cache but takes no flush: the cache could not \
             know when a destaged write is durable there; turn the base's write cache off",
            params.base
        )));
    }
    let bs = desc.block_size();
    let identity = base_identity(app, &params.base, bs, desc.num_blocks()).await?;
    let (log, replay) = open_log(&params, bs as usize, identity).await?;
    if log.data_block_size() != bs as usize {
        return Err(Error::InvalidArgument(format!(
            "pool {} holds {}-byte blocks; bdev {} has {bs}-byte blocks",
            params.pool.display(),
            log.data_block_size(),
            params.base
        )));
    }
    let channel = desc.channel()?;
    let stats = Arc::new(Stats::default());
    let order = Order::new(log.slots(), log.persisted_destaged(), &replay);
    stats.dirty.store(order.dirty(), Ordering::Relaxed);
    let id = NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed);
    let cache = Rc::new(Cache {
        id,
        name: params.name.clone(),
        block_size: bs as usize,
        log,
        order: RefCell::new(order),
        desc,
        channel,
        waiting: RefCell::new(VecDeque::new()),
        flushes: RefCell::new(Vec::new()),
        wait_timeout: params.wait_timeout,
        last_destage: Cell::new(Instant::now()),
        rate_sample: Cell::new((std::time::Instant::now(), 0)),
        flush_base,
        destaging: Cell::new(false),
        retry: RefCell::new(None),
        #[cfg(feature = "test-hooks")]
        out_of_order: params.destage_out_of_order,
        closed: Cell::new(false),
        halted: Cell::new(false),
        stop_watch: RefCell::new(None),
        stats: Arc::clone(&stats),
    });
    let props = BdevProps::new(&params.name, PRODUCT_NAME, bs, cache.desc.num_blocks());
    let thread =
        Thread::current().ok_or_else(|| Error::NotFound("the application thread".into()))?;
    crate::app::on_shutdown(drain_on_shutdown);
    CACHES.with(|c| {
        c.borrow_mut()
            .insert(params.name.clone(), Rc::clone(&cache))
    });
    let disk = CacheDisk {
        id,
        params: params.clone(),
        thread,
        stats,
        slots: cache.log.slots(),
    };
    match module.register_bdev(app, props, disk) {
        Ok(bdev) => {
            cache.watch_for_stop()?;
            cache.kick();
            Ok(bdev)
        }
        Err(e) => {
            CACHES.with(|c| c.borrow_mut().remove(&params.name));
            Err(e)
        }
    }
}

/// A clean shutdown's wait: until every cache has destaged what it holds,
/// its backing bdev fails, or [`DRAIN_LIMIT`] passes (what is left stays in
/// the pools, replayed at the next start).
fn drain_on_shutdown(done: Box<dyn FnOnce()>) {
    let drained = async {
        let until = std::time::Instant::now() + DRAIN_LIMIT;
        loop {
            let pending: Vec<(String, u64)> = CACHES.with(|c| {
                c.borrow()
                    .values()
                    .filter(|c| !c.stats.base_failing.load(Ordering::Relaxed))
                    .map(|c| (c.name.clone(), c.order.borrow().dirty()))
                    .filter(|(_, dirty)| *dirty > 0)
                    .collect()
            });
            if pending.is_empty() {
                return;
            }
            if std::time::Instant::now() > until {
                crate::log::error(&format!(
                    "stopping with writes not destaged (they stay in the pools): {pending:?}"
                ));
                return;
            }
            match crate::thread::sleep(std::time::Duration::from_millis(10)) {
                Ok(slept) => slept.await,
                Err(_) => return,
            }
        }
    };
    // `done` goes with the task; if it cannot start, the stop goes on now.
    let done = std::rc::Rc::new(std::cell::Cell::new(Some(done)));
    let in_task = std::rc::Rc::clone(&done);
    let spawned = crate::thread::spawn_local(async move {
        drained.await;
        if let Some(done) = in_task.take() {
            done();
        }
    });
    if spawned.is_err() {
        if let Some(done) = done.take() {
            done();
        }
    }
}

/// What the log records it caches: the image, for an RBD bdev of the Rust
/// module (its bdev name may change between starts), else the bdev's name
/// and size.
async fn base_identity(app: AppThread, base: &str, block_size: u32, blocks: u64) -> Result<String> {
    #[cfg(feature = "rbd")]
    {
        if let Some(image) = crate::rbd::bdev::identity(base) {
            return Ok(image);
        }
        // SPDK's C RBD module names its pool and image: asked of the
        // cluster, they give the same identity as through our module.
        if let Some((config, pool, image)) = c_rbd_image(app, base)? {
            return crate::rbd::bdev::image_identity(config, pool, image)
                .await
                .map_err(|e| {
                    Error::Environment(format!(
                        "asking Ceph which image bdev {base:?} is, to check the pool is its \
                         own: {e}"
                    ))
                });
        }
    }
    #[cfg(not(feature = "rbd"))]
    let _ = app;
    Ok(format!(
        "bdev {base} ({blocks} blocks of {block_size} bytes)"
    ))
}

/// Opens the cache's pool (scanning every slot) or creates it (laying out
/// every block), on a thread of its own: either takes seconds for a large
/// pool, which on the application thread's reactor would stall every
/// namespace it serves and every RPC. Resolves on the calling SPDK thread.
async fn open_log(
    params: &CacheParams,
    block_size: usize,
    identity: String,
) -> Result<(Log, Vec<Entry>)> {
    let (path, slots, damage) = (params.pool.clone(), params.create_slots, params.damaged_log);
    let (completer, opened) =
        crate::thread::completion::<Result<(Log, Vec<Entry>)>>("opening the cache's pool");
    std::thread::Builder::new()
        .name("pmem-wb-open".into())
        .spawn(move || {
            let result = if path.exists() {
                Log::open(&path, &identity, damage)
            } else {
                slots
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "pool {} does not exist: give the number of slots to create it with",
                            path.display()
                        ))
                    })
                    .and_then(|slots| Log::create(&path, block_size, slots, &identity, 0o600))
                    .map(|log| (log, Vec::new()))
            };
            completer.complete(result);
        })
        .map_err(|e| Error::Environment(format!("starting a thread to open the pool: {e}")))?;
    opened.await?
}

/// The cluster, pool and image of `base` if SPDK's C RBD module serves it
/// (its `driver_specific.rbd`, as `bdev_get_bdevs` shows).
#[cfg(feature = "rbd")]
fn c_rbd_image(
    app: AppThread,
    base: &str,
) -> Result<Option<(crate::rbd::cluster::ClusterConfig, String, String)>> {
    let Some(bdev) = Bdev::by_name(app, base) else {
        return Ok(None);
    };
    let info = bdev.driver_info()?;
    let rbd = &info["rbd"];
    let (Some(pool), Some(image)) = (rbd["pool_name"].as_str(), rbd["rbd_name"].as_str()) else {
        return Ok(None);
    };
    let options = rbd["config"]
        .as_object()
        .map(|c| {
            c.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let config = crate::rbd::cluster::ClusterConfig {
        user: rbd["user_id"].as_str().map(String::from),
        options,
    };
    Ok(Some((config, pool.to_string(), image.to_string())))
}

/// What a cache's figures are now (those `bdev_get_bdevs` shows).
#[derive(Debug, Clone, PartialEq)]
pub struct CacheFigures {
    /// The cache bdev.
    pub name: String,
    /// The bdev behind it.
    pub base: String,
    /// Blocks the log can hold.
    pub slots: u64,
    /// Blocks written and not yet destaged.
    pub dirty_blocks: u64,
    /// Writes waiting for room in the log.
    pub waiting_writes: u64,
    /// Writes destaged since the cache was created.
    pub destaged_writes: u64,
    /// Destage attempts the backing bdev failed.
    pub destage_failures: u64,
    /// Whether the last destage attempt worked.
    pub base_reachable: bool,
}

/// Every cache's figures, on the application thread.
pub fn figures(app: AppThread) -> Result<Vec<CacheFigures>> {
    app.check()?;
    Ok(CACHES.with(|c| {
        c.borrow()
            .values()
            .map(|cache| {
                let s = &cache.stats;
                CacheFigures {
                    name: cache.name.clone(),
                    base: cache.desc.name().to_string(),
                    slots: cache.log.slots(),
                    dirty_blocks: s.dirty.load(Ordering::Relaxed),
                    waiting_writes: s.waiting_writes.load(Ordering::Relaxed),
                    destaged_writes: s.destaged_writes.load(Ordering::Relaxed),
                    destage_failures: s.destage_failures.load(Ordering::Relaxed),
                    base_reachable: !s.base_failing.load(Ordering::Relaxed),
                }
            })
            .collect()
    }))
}

/// Whether `bdev` is a cache of this module.
pub fn is_cache(bdev: &Bdev) -> bool {
    module().is_ok_and(|m| m.owns(bdev))
}

/// Deletes a cache bdev. What it has not destaged stays in its pool, and is
/// replayed when the cache is created again on that pool.
pub fn delete(bdev: Bdev) -> impl std::future::Future<Output = Result<()>> {
    let started = bdev.as_ptr().and_then(|_| {
        if is_cache(&bdev) {
            Ok(crate::bdev::module::unregister(bdev))
        } else {
            Err(Error::InvalidArgument(format!(
                "bdev {:?} is not a pmem write-back cache",
                bdev.name()
            )))
        }
    });
    async move { started?.await }
}

/// The cache's state, on the application thread.
struct Cache {
    /// This cache among those ever made under its name.
    id: u64,
    name: String,
    block_size: usize,
    log: Log,
    order: RefCell<Order>,
    desc: Descriptor,
    channel: IoChannel,
    /// Writes waiting for room in the log, in arrival order, with when
    /// they give up.
    waiting: RefCell<VecDeque<(Option<Instant>, DeferredIo)>>,
    /// Flushes waiting for destaging to reach a write, with when a host's
    /// gives up.
    flushes: RefCell<Vec<(u64, Option<Instant>, FlushWaiter)>>,
    /// [`CacheParams::wait_timeout`].
    wait_timeout: Option<std::time::Duration>,
    /// When destaging last completed a write (or the cache was made).
    last_destage: Cell<Instant>,
    /// When the destage rate was last measured, and the count then.
    rate_sample: Cell<(std::time::Instant, u64)>,
    /// The base has a volatile write cache: flush it before a destaged
    /// write's slot is freed.
    flush_base: bool,
    destaging: Cell<bool>,
    retry: RefCell<Option<Poller>>,
    /// [`CacheParams::destage_out_of_order`].
    #[cfg(feature = "test-hooks")]
    out_of_order: bool,
    /// Set when the bdev is gone: destaging stops (what is left stays in
    /// the pool for the next create).
    closed: Cell<bool>,
    /// Set when the log itself failed under destaging (a damaged slot):
    /// nothing after that write can reach the base in order, so destaging
    /// stops, and the log stays as it is for inspection.
    halted: Cell<bool>,
    stop_watch: RefCell<Option<Poller>>,
    stats: Arc<Stats>,
}

/// Host I/O: writes into the log, reads from it or the backing bdev.
impl Cache {
    fn submit(self: &Rc<Self>, io: DeferredIo) {
        if self.stats.failed.load(Ordering::Relaxed) {
            return io.complete(IoStatus::Failed);
        }
        let gives_up = self.wait_timeout.map(|t| Instant::now() + t);
        match io.io_type() {
            IoType::Write => {
                if self.waiting.borrow().is_empty() {
                    self.write(gives_up, io);
                } else {
                    self.waiting.borrow_mut().push_back((gives_up, io));
                    self.count_waiting();
                }
            }
            IoType::Read => self.read(io),
            IoType::Flush => self.wait_destaged(gives_up, FlushWaiter::Host(io)),
            // Nothing is in flight below the cache for the host: what a
            // reset can end is what waits (for room, for destaging).
            IoType::Reset => {
                self.fail_waiting();
                io.complete(IoStatus::Success)
            }
            _ => io.complete(IoStatus::Failed),
        }
    }
}

/// Waiting (for room, for destaging), its limits, and failing.
impl Cache {
    /// Finishes `waiter` once everything acknowledged so far is in the
    /// backing bdev (or fails it at `gives_up`).
    fn wait_destaged(&self, gives_up: Option<Instant>, waiter: FlushWaiter) {
        let target = self.order.borrow().acked_up_to();
        if self.order.borrow().destaged_up_to() >= target {
            waiter.finish(true);
        } else {
            self.flushes.borrow_mut().push((target, gives_up, waiter));
        }
    }

    /// Fails the writes and flushes that waited past their time while
    /// destaging made no progress for as long (a base that answers slowly
    /// but surely, behind a long backlog, fails nothing).
    fn expire_waits(&self) {
        let now = Instant::now();
        let stalled = self
            .wait_timeout
            .is_some_and(|t| now.duration_since(self.last_destage.get()) >= t);
        if !stalled {
            return;
        }
        let mut writes = Vec::new();
        loop {
            let mut waiting = self.waiting.borrow_mut();
            match waiting.front() {
                // In arrival order, all with the same timeout.
                Some((Some(at), _)) if *at <= now => {
                    writes.extend(waiting.pop_front().map(|(_, io)| io));
                }
                _ => break,
            }
        }
        let flushes = std::mem::take(&mut *self.flushes.borrow_mut());
        let (expired, still): (Vec<_>, Vec<_>) = flushes
            .into_iter()
            .partition(|(_, at, _)| at.is_some_and(|at| at <= now));
        *self.flushes.borrow_mut() = still;
        if writes.is_empty() && expired.is_empty() {
            return;
        }
        self.count_waiting();
        crate::log::error(&format!(
            "{}: {} writes waited for room and {} flushes for destaging longer than {:?} \
             (base reachable: {}): failed",
            self.name,
            writes.len(),
            expired.len(),
            self.wait_timeout.unwrap_or_default(),
            !self.stats.base_failing.load(Ordering::Relaxed)
        ));
        for io in writes {
            io.complete(IoStatus::Failed);
        }
        for (_, _, waiter) in expired {
            waiter.finish(false);
        }
    }

    fn count_waiting(&self) {
        self.stats
            .waiting_writes
            .store(self.waiting.borrow().len() as u64, Ordering::Relaxed);
    }

    /// Measures the destage rate once per [`RATE_WINDOW_US`].
    fn sample_rate(&self) {
        let (at, count) = self.rate_sample.get();
        let elapsed = at.elapsed();
        if elapsed.as_micros() < u128::from(RATE_WINDOW_US) {
            return;
        }
        let now = self.stats.destaged_writes.load(Ordering::Relaxed);
        let rate = (now - count) as f64 / elapsed.as_secs_f64();
        self.stats
            .destage_rate
            .store(rate.to_bits(), Ordering::Relaxed);
        self.rate_sample.set((std::time::Instant::now(), now));
    }

    /// Once the application stops, I/O waiting for room or for destaging
    /// fails instead of holding the shutdown (what is not destaged stays in
    /// the pool for the next start).
    fn watch_for_stop(self: &Rc<Self>) -> Result<()> {
        let cache = Rc::downgrade(self);
        let poller = Poller::register(STOP_CHECK_US, move || {
            let Some(cache) = cache.upgrade() else {
                return false;
            };
            if crate::app::serving() && !cache.closed.get() {
                cache.sample_rate();
                cache.expire_waits();
                return false;
            }
            cache.fail_waiting();
            false
        })?;
        *self.stop_watch.borrow_mut() = Some(poller);
        Ok(())
    }

    /// The cache can no longer keep its promise: it takes no more I/O, and
    /// writes waiting for room fail (nothing after a write the log lost can
    /// be acknowledged in order). What the log holds stays there. With
    /// `halt`, destaging stops too (the log cannot give the next write), and
    /// flushes waiting for it fail; otherwise it goes on, so what was
    /// acknowledged still reaches the base.
    fn fail(&self, why: String, halt: bool) {
        crate::log::error(&format!(
            "{}: {why}; the cache fails all I/O from now on{}",
            self.name,
            if halt {
                " and stops destaging; the pool is left as it is"
            } else {
                ""
            }
        ));
        {
            let mut failure = crate::sync::lock(&self.stats.failure);
            failure.get_or_insert(why);
        }
        self.stats.failed.store(true, Ordering::Relaxed);
        if halt {
            self.halted.set(true);
            self.fail_waiting();
        } else {
            let writes = std::mem::take(&mut *self.waiting.borrow_mut());
            self.count_waiting();
            for (_, io) in writes {
                io.complete(IoStatus::Failed);
            }
        }
    }

    /// Fails every write waiting for room and every flush waiting for
    /// destaging.
    fn fail_waiting(&self) {
        let writes = std::mem::take(&mut *self.waiting.borrow_mut());
        let flushes = std::mem::take(&mut *self.flushes.borrow_mut());
        self.count_waiting();
        for (_, io) in writes {
            io.complete(IoStatus::Failed);
        }
        for (_, _, waiter) in flushes {
            waiter.finish(false);
        }
    }
}

/// Host writes and reads.
impl Cache {
    /// Logs a write, or queues it while the log is full.
    fn write(self: &Rc<Self>, gives_up: Option<Instant>, io: DeferredIo) {
        // Writes that waited for room come here too, after the cache may
        // have failed.
        if self.stats.failed.load(Ordering::Relaxed) {
            return io.complete(IoStatus::Failed);
        }
        let blocks = io.num_blocks();
        let lba = io.offset_blocks();
        if !self.order.borrow().fits(blocks) {
            crate::log::error(&format!(
                "{}: a write of {blocks} blocks is larger than the whole log ({} blocks)",
                self.name,
                self.log.slots()
            ));
            return io.complete(IoStatus::Failed);
        }
        let persisted = self.log.persisted_destaged();
        let Some(seqs) = self.order.borrow_mut().assign(blocks, persisted) else {
            self.waiting.borrow_mut().push_front((gives_up, io));
            self.count_waiting();
            return;
        };
        let data = gather(&io, self.block_size * blocks as usize);
        for (i, seq) in seqs.clone().enumerate() {
            let block = &data[i * self.block_size..(i + 1) * self.block_size];
            let entry = Entry {
                seq,
                lba: lba + i as u64,
            };
            if let Err(e) = self.log.write(entry, block) {
                // Nothing after this write can be acknowledged in order.
                io.complete(IoStatus::Failed);
                return self.fail(format!("writing write {seq} to the log: {e}"), false);
            }
        }
        // Written here, in order, every earlier write acknowledged: it is
        // the next to acknowledge, and acknowledged only if it is released.
        let acks = self.order.borrow_mut().durable(seqs.clone(), lba);
        if acks.0 != [seqs.clone()] {
            io.complete(IoStatus::Failed);
            return self.fail(
                format!(
                    "write {seqs:?} is durable but the log released {:?} (an earlier write is \
                     missing)",
                    acks.0
                ),
                false,
            );
        }
        self.stats
            .dirty
            .store(self.order.borrow().dirty(), Ordering::Relaxed);
        io.complete(IoStatus::Success);
        self.kick();
    }

    /// Reads each block from the log if it holds it, from the backing bdev
    /// otherwise (runs of such blocks in one read).
    fn read(self: &Rc<Self>, mut io: DeferredIo) {
        let bs = self.block_size;
        let lba = io.offset_blocks();
        let blocks = io.num_blocks() as usize;
        let mut data = vec![0u8; bs * blocks];
        let mut from_base: Vec<(usize, usize)> = Vec::new();
        for i in 0..blocks {
            let cached = self.order.borrow().cached(lba + i as u64);
            let hit = match cached {
                Some(seq) => match self.log.read(seq, &mut data[i * bs..(i + 1) * bs]) {
                    Ok(Some(_)) => true,
                    // The base has an older block: never serve it.
                    found => {
                        io.complete(IoStatus::Failed);
                        let why = match found {
                            Err(e) => format!("reading write {seq} from the log: {e}"),
                            _ => format!(
                                "write {seq} (block {}) is damaged in the log",
                                lba + i as u64
                            ),
                        };
                        return self.fail(why, true);
                    }
                },
                None => false,
            };
            if !hit {
                match from_base.last_mut() {
                    Some((start, len)) if *start + *len == i => *len += 1,
                    _ => from_base.push((i, 1)),
                }
            }
        }
        if from_base.is_empty() {
            scatter(&mut io, &data);
            return io.complete(IoStatus::Success);
        }
        let cache = Rc::clone(self);
        let spawned = crate::thread::spawn_local(async move {
            let spdk = match AppThread::here() {
                Ok(app) => app.spdk(),
                Err(_) => return io.complete(IoStatus::Failed),
            };
            for (start, len) in from_base {
                let Ok(buf) = DmaBuf::new(spdk, len * bs, 0) else {
                    return io.complete(IoStatus::Failed);
                };
                let (buf, result) = cache.channel.read(lba + start as u64, buf).await;
                if result.is_err() {
                    return io.complete(IoStatus::Failed);
                }
                data[start * bs..(start + len) * bs].copy_from_slice(&buf);
            }
            scatter(&mut io, &data);
            io.complete(IoStatus::Success);
        });
        if let Err(e) = spawned {
            crate::log::error(&format!("{}: reading the backing bdev: {e}", self.name));
        }
    }
}

/// Destaging: the writes the log holds go to the backing bdev, one after
/// another in the order they were acknowledged.
impl Cache {
    /// Starts destaging the next acknowledged write, if none is under way.
    fn kick(self: &Rc<Self>) {
        if self.closed.get()
            || self.halted.get()
            || self.destaging.get()
            || self.retry.borrow().is_some()
        {
            return;
        }
        let Some(write) = self.order.borrow_mut().next_destage() else {
            return;
        };
        self.destaging.set(true);
        let cache = Rc::clone(self);
        let handed_out = write.clone();
        let spawned = crate::thread::spawn_local(async move {
            let outcome = cache.destage(&write).await;
            cache.destaging.set(false);
            match outcome {
                Ok(()) => cache.kick(),
                Err(Destage::Base(e)) => cache.destage_failed(&write, e),
                Err(Destage::Log(why)) => {
                    cache.order.borrow_mut().destage_failed(&write);
                    cache.fail(why, true);
                }
            }
        });
        if let Err(e) = spawned {
            self.destaging.set(false);
            self.order.borrow_mut().destage_failed(&handed_out);
            crate::log::error(&format!("{}: starting to destage: {e}", self.name));
        }
    }

    /// Writes `write` to the backing bdev and records it.
    async fn destage(self: &Rc<Self>, write: &Write) -> std::result::Result<(), Destage> {
        // The control breaks the order: the write after this one first.
        #[cfg(feature = "test-hooks")]
        let second = self
            .out_of_order
            .then(|| self.order.borrow().write_after_next())
            .flatten();
        #[cfg(not(feature = "test-hooks"))]
        let second: Option<Write> = None;
        if let Some(second) = &second {
            self.write_back(second).await?;
        }
        self.write_back(write).await?;
        if self.flush_base {
            (self.channel.flush(0, self.desc.num_blocks()).await).map_err(Destage::Base)?;
        }
        let mut order = self.order.borrow_mut();
        order.destaged(write);
        if let Some(second) = &second {
            // Hand the second of a swapped pair out too.
            order.next_destage();
            order.destaged(second);
        }
        drop(order);
        let last_write = second.as_ref().unwrap_or(write);
        let last = *last_write.seqs.end();
        if let Err(e) = self.log.set_destaged(last) {
            // The base has the writes (flushes may finish), but their slots
            // stay taken: writes waiting for room would wait forever.
            self.fail(
                format!("persisting that write {last} is destaged: {e}"),
                false,
            );
        }
        self.last_destage.set(Instant::now());
        let blocks = write.blocks() + second.as_ref().map_or(0, Write::blocks);
        self.stats
            .destaged_writes
            .fetch_add(blocks, Ordering::Relaxed);
        self.stats
            .dirty
            .store(self.order.borrow().dirty(), Ordering::Relaxed);
        if self.stats.base_failing.swap(false, Ordering::Relaxed) {
            crate::log::error(&format!("{}: destaging works again", self.name));
        }
        let flushes = std::mem::take(&mut *self.flushes.borrow_mut());
        let (done, still): (Vec<_>, Vec<_>) = flushes.into_iter().partition(|(t, _, _)| *t <= last);
        *self.flushes.borrow_mut() = still;
        for (_, _, waiter) in done {
            waiter.finish(true);
        }
        // Slots are free again: writes that waited for room go in order.
        loop {
            // Not `while let`: its scrutinee's borrow would last the body.
            let Some((gives_up, io)) = self.waiting.borrow_mut().pop_front() else {
                break;
            };
            self.count_waiting();
            let before = self.waiting.borrow().len();
            self.write(gives_up, io);
            if self.waiting.borrow().len() > before {
                break;
            }
        }
        Ok(())
    }

    /// Writes `write`'s blocks from the log to the backing bdev, in one
    /// write of the base.
    async fn write_back(&self, write: &Write) -> std::result::Result<(), Destage> {
        let spdk = AppThread::here().map_err(Destage::Base)?.spdk();
        let bs = self.block_size;
        let mut buf = DmaBuf::new(spdk, bs * write.blocks() as usize, 0).map_err(Destage::Base)?;
        for (i, seq) in write.seqs.clone().enumerate() {
            let expected = write.lba + i as u64;
            match self.log.read(seq, &mut buf[i * bs..(i + 1) * bs]) {
                Ok(Some(lba)) if lba == expected => {}
                Ok(Some(lba)) => {
                    return Err(Destage::Log(format!(
                        "write {seq} is of block {lba} in the log, not {expected}"
                    )))
                }
                Ok(None) => return Err(Destage::Log(format!("write {seq} is damaged in the log"))),
                Err(e) => {
                    return Err(Destage::Log(format!(
                        "reading write {seq} from the log: {e}"
                    )))
                }
            }
        }
        let (_buf, result) = self.channel.write(write.lba, buf).await;
        result.map_err(Destage::Base)
    }

    /// The backing bdev failed: the write stays in the log, and destaging
    /// tries again later.
    fn destage_failed(self: &Rc<Self>, write: &Write, e: Error) {
        let seq = *write.seqs.start();
        self.order.borrow_mut().destage_failed(write);
        self.stats.destage_failures.fetch_add(1, Ordering::Relaxed);
        if !self.stats.base_failing.swap(true, Ordering::Relaxed) {
            crate::log::error(&format!(
                "{}: destaging write {seq}: {e}; writes stay in the cache, retried every {} s",
                self.name,
                RETRY_US / 1_000_000
            ));
        }
        let cache = Rc::clone(self);
        match Poller::register(RETRY_US, move || {
            cache.retry.borrow_mut().take();
            cache.kick();
            false
        }) {
            Ok(p) => *self.retry.borrow_mut() = Some(p),
            // Without a retry nothing would ever destage again.
            Err(e) => self.fail(format!("scheduling a destage retry: {e}"), true),
        }
    }
}

/// Why a destage did not happen.
enum Destage {
    /// The base failed it: retried later.
    Base(Error),
    /// The log could not give the write: destaging cannot go on in order.
    Log(String),
}

/// Who waits for destaging to reach a point: a host's FLUSH, or
/// [`flush`]'s caller.
enum FlushWaiter {
    Host(DeferredIo),
    Caller(Completer<bool>),
}

impl FlushWaiter {
    /// `destaged`: everything up to the point is in the backing bdev (else
    /// the wait was given up, as the cache or the application stops).
    fn finish(self, destaged: bool) {
        match self {
            FlushWaiter::Host(io) => io.complete(if destaged {
                IoStatus::Success
            } else {
                IoStatus::Failed
            }),
            FlushWaiter::Caller(done) => done.complete(destaged),
        }
    }
}

/// Resolves once everything the cache `name` acknowledged before the call
/// is in its backing bdev (as a host's FLUSH does). It waits through an
/// outage of the backing bdev; it fails if the cache is deleted or the
/// application stops first.
pub fn flush(app: AppThread, name: &str) -> impl std::future::Future<Output = Result<()>> {
    let (done, destaged) = crate::thread::completion::<bool>("bdev_pmem_cache_flush");
    let started = app.check().and_then(|_| {
        let cache = CACHES
            .with(|c| c.borrow().get(name).cloned())
            .ok_or_else(|| Error::NotFound(format!("bdev {name:?} (a pmem write-back cache)")))?;
        cache.wait_destaged(None, FlushWaiter::Caller(done));
        Ok(name.to_string())
    });
    async move {
        let name = started?;
        match destaged.await? {
            true => Ok(()),
            false => Err(Error::spdk(
                format!("flushing {name:?}: the cache was deleted or the application is stopping; what is not destaged stays in its pool"),
                -libc::ECANCELED,
            )),
        }
    }
}

/// The I/O's buffers, as one contiguous copy of `len` bytes.
fn gather(io: &DeferredIo, len: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(len);
    for s in io.segments() {
        data.extend_from_slice(&s[..s.len().min(len - data.len())]);
    }
    data.resize(len, 0);
    data
}

/// Copies `data` into the I/O's buffers.
fn scatter(io: &mut DeferredIo, data: &[u8]) {
    let mut at = 0;
    for s in io.segments_mut() {
        let n = s.len().min(data.len() - at);
        s[..n].copy_from_slice(&data[at..at + n]);
        at += n;
    }
}

/// The bdev: a name for the state on the application thread, and figures.
struct CacheDisk {
    /// The cache's [`Cache::id`].
    id: u64,
    params: CacheParams,
    thread: Thread,
    stats: Arc<Stats>,
    slots: u64,
}

impl BlockDevice for CacheDisk {
    type Channel = ();

    fn io_type_supported(&self, io_type: IoType) -> bool {
        matches!(
            io_type,
            IoType::Read | IoType::Write | IoType::Flush | IoType::Reset
        )
    }

    fn create_channel(&self) -> Result<()> {
        Ok(())
    }

    fn submit(&self, _channel: &(), io: BdevIo) {
        let Ok(io) = io.defer() else { return };
        let (name, id) = (self.params.name.clone(), self.id);
        // A failed send drops the I/O, which fails it.
        let _ = self.thread.send(move || match cache_with_id(&name, id) {
            Some(cache) => cache.submit(io),
            None => io.complete(IoStatus::Failed),
        });
    }

    fn dump_info_json(&self) -> Option<Value> {
        let s = &self.stats;
        Some(json!({ "pmem_wb": {
            "base_bdev": self.params.base,
            "pool": self.params.pool.to_string_lossy(),
            "slots": self.slots,
            "dirty_blocks": s.dirty.load(Ordering::Relaxed),
            "destaged_writes": s.destaged_writes.load(Ordering::Relaxed),
            "destage_failures": s.destage_failures.load(Ordering::Relaxed),
            "destage_rate": f64::from_bits(s.destage_rate.load(Ordering::Relaxed)),
            "waiting_writes": s.waiting_writes.load(Ordering::Relaxed),
            "base_reachable": !s.base_failing.load(Ordering::Relaxed),
            "failed": s.failed.load(Ordering::Relaxed),
            "wait_timeout_ms": self.params.wait_timeout.map_or(0, |t| t.as_millis() as u64),
            "failure": crate::sync::lock(&s.failure).clone(),
        }}))
    }

    fn write_config_json(&self, bdev_name: &str) -> Option<Value> {
        let mut params = json!({
            "name": bdev_name,
            "base_bdev": self.params.base,
            "pool": self.params.pool.to_string_lossy(),
        });
        if self.params.wait_timeout != Some(DEFAULT_WAIT_TIMEOUT) {
            let ms = self.params.wait_timeout.map_or(0, |t| t.as_millis() as u64);
            params["wait_timeout_ms"] = ms.into();
        }
        Some(json!({"method": "bdev_pmem_cache_create", "params": params}))
    }

    fn destruct(&mut self) {
        let name = &self.params.name;
        if let Some(cache) = cache_with_id(name, self.id) {
            CACHES.with(|c| c.borrow_mut().remove(name));
            cache.closed.set(true);
            cache.retry.borrow_mut().take();
            cache.stop_watch.borrow_mut().take();
            cache.fail_waiting();
        }
    }
}
