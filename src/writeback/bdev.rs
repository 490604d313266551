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

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};

use super::cache::{Cache, FlushWaiter, Parts, Stats};
use super::log::{Damage, Entry, Log};
use super::order::Order;
use crate::bdev::io::Descriptor;
use crate::bdev::module::{
    AppOnly, BdevIo, BdevProps, BlockDevice, Figure, Figures, IoStatus, IoType, Module,
};
use crate::bdev::Bdev;
use crate::error::{Error, Result};
use crate::thread::{AppThread, Thread};

/// The bdev module's name.
pub const MODULE_NAME: &str = "pmem_wb";
/// The product name `bdev_get_bdevs` shows.
pub const PRODUCT_NAME: &str = "pmem write-back cache";
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
}

/// The module (registered on first use): what deletes, finds and lists
/// its caches.
pub fn module() -> Result<&'static Module> {
    Module::get_or_register(MODULE_NAME)
}

/// Registers the bdev module (before its RPCs are served).
pub fn register_module() -> Result<()> {
    module().map(|_| ())
}

/// Creates the cache bdev on the application thread. Resolves there.
pub async fn create(app: AppThread, params: CacheParams) -> Result<Bdev> {
    let app = app.check()?;
    let module = module()?;
    crate::bdev::name_free(app, &params.name)?;
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
    let order = Order::new(log.slots(), log.persisted_destaged(), &replay);
    let slots = log.slots();
    let blocks = desc.num_blocks();
    let cache = Cache::new(Parts {
        name: params.name.clone(),
        log,
        order,
        desc,
        channel,
        wait_timeout: params.wait_timeout,
        flush_base,
        #[cfg(feature = "test-hooks")]
        out_of_order: crate::test_hooks::destages_out_of_order(&params.pool),
    });
    let props = BdevProps::new(&params.name, PRODUCT_NAME, bs, blocks);
    let thread =
        Thread::current().ok_or_else(|| Error::NotFound("the application thread".into()))?;
    crate::app::on_shutdown(drain_on_shutdown);
    let disk = CacheDisk {
        cache: Arc::new(AppOnly::new(app, Rc::clone(&cache))),
        params,
        thread,
        stats: Arc::clone(&cache.stats),
        slots,
    };
    let bdev = module.register_bdev(app, props, disk)?;
    cache.watch_for_stop()?;
    cache.kick();
    Ok(bdev)
}

/// A clean shutdown's wait: until every cache has destaged what it holds,
/// its backing bdev fails, or [`DRAIN_LIMIT`] passes (what is left stays in
/// the pools, replayed at the next start).
fn drain_on_shutdown(done: Box<dyn FnOnce()>) {
    let drained = async {
        let until = std::time::Instant::now() + DRAIN_LIMIT;
        loop {
            let mut pending: Vec<(String, u64)> = Vec::new();
            let listed = AppThread::here().and_then(|app| {
                module()?.with_devices(app, |name, disk: &CacheDisk| {
                    let cache = disk.cache.get(app);
                    let dirty = cache.order.borrow().dirty();
                    if dirty > 0 && !cache.stats.base_failing.load(Ordering::Relaxed) {
                        pending.push((name.to_string(), dirty));
                    }
                })
            });
            if listed.is_err() {
                return;
            }
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

/// What the log records it caches: what the base's device says it serves
/// (an RBD bdev of the Rust module: its image, whose bdev name may change
/// between starts), the image of an RBD bdev of SPDK's C module, else the
/// bdev's name and size.
async fn base_identity(app: AppThread, base: &str, block_size: u32, blocks: u64) -> Result<String> {
    // What a Rust module's device says it serves (an RBD image of ours).
    if let Some(identity) = crate::bdev::module::identity(app, base) {
        return Ok(identity);
    }
    #[cfg(feature = "rbd")]
    {
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

/// Resolves once everything the cache `name` acknowledged before the call
/// is in its backing bdev (as a host's FLUSH does). It waits through an
/// outage of the backing bdev; it fails if the cache is deleted or the
/// application stops first.
pub fn flush(app: AppThread, name: &str) -> impl std::future::Future<Output = Result<()>> {
    let (done, destaged) = crate::thread::completion::<bool>("bdev_pmem_cache_flush");
    let started = app.check().and_then(|app| {
        module()?.with_device(app, name, |disk: &CacheDisk| {
            disk.cache
                .get(app)
                .wait_destaged(None, FlushWaiter::Caller(done));
        })?;
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

/// The bdev: the cache's state, which only the application thread
/// touches, and what any thread may read of it.
struct CacheDisk {
    /// Shared with the I/O on its way to the application thread.
    cache: Arc<AppOnly<Rc<Cache>>>,
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
        let cache = Arc::clone(&self.cache);
        // A failed send drops the I/O, which fails it.
        let _ = self.thread.send(move || match AppThread::here() {
            Ok(app) => cache.get(app).submit(io),
            Err(_) => io.complete(IoStatus::Failed),
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

    fn figures(&self) -> Option<Figures> {
        let s = &self.stats;
        let load = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
        Some(Figures {
            labels: vec![("base_bdev", self.params.base.clone())],
            values: vec![
                Figure::gauge("cache_slots", "Blocks the cache's log can hold", self.slots),
                Figure::gauge(
                    "cache_dirty_blocks",
                    "Blocks written to the cache and not yet in the backing bdev",
                    load(&s.dirty),
                ),
                Figure::gauge(
                    "cache_waiting_writes",
                    "Writes waiting for room in a full cache",
                    load(&s.waiting_writes),
                ),
                Figure::gauge(
                    "cache_base_reachable",
                    "1 while destaging to the backing bdev (Ceph) works, 0 while it fails",
                    i64::from(!s.base_failing.load(Ordering::Relaxed)),
                ),
                Figure::counter(
                    "cache_destaged_writes",
                    "Writes destaged to the backing bdev (rate() of it is the destage rate)",
                    load(&s.destaged_writes),
                ),
                Figure::counter(
                    "cache_destage_failures",
                    "Destage attempts the backing bdev failed",
                    load(&s.destage_failures),
                ),
            ],
        })
    }

    fn destruct(&mut self) {
        match AppThread::here() {
            Ok(app) => self.cache.get(app).close(),
            Err(e) => crate::log::error(&format!(
                "{}: destructed off the application thread ({e}): destaging goes on",
                self.params.name
            )),
        }
    }
}
