//! RBD images as bdevs of a Rust module (`rbd_rs`), in place of SPDK 20.07's
//! C module: the cluster connection and the image are opened on a thread of
//! their own, never a reactor (an unreachable monitor holds nothing but the
//! one RPC that asked); one connection serves every image of a cluster and
//! one open image every SPDK thread; I/O goes to librbd's asynchronous calls
//! and completes back on the submitting thread (`BdevIo::defer`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::cluster::{Cluster, ClusterConfig};
use super::image::{Image, Op};
use crate::bdev::module::{
    BdevIo, BdevProps, BlockDevice, Figure, Figures, IoStatus, IoType, Module,
};
use crate::bdev::Bdev;
use crate::error::{Error, Result};
use crate::sync::{AtomicBool, AtomicU64, Ordering};
use crate::thread::{AppThread, Poller};

/// The bdev module's name (SPDK's C one is `rbd`).
pub const MODULE_NAME: &str = "rbd_rs";
/// The product name `bdev_get_bdevs` shows: the C module's.
pub const PRODUCT_NAME: &str = "Ceph Rbd Disk";
/// How long connecting may take unless the config sets
/// `client_mount_timeout` (the C module waits librados' 300 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What `bdev_rbd_create` gives: SPDK 20.07's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbdParams {
    /// The bdev's name.
    pub name: String,
    /// The cluster and the cephx user.
    pub cluster: ClusterConfig,
    /// The pool.
    pub pool: String,
    /// The image in the pool.
    pub image: String,
    /// The bdev's block size in bytes.
    pub block_size: u32,
}

/// The module (registered on first use): what deletes, finds and lists
/// its bdevs.
pub fn module() -> Result<&'static Module> {
    Module::get_or_register(MODULE_NAME)
}

/// Live connections by how they were made: a second image of a cluster
/// shares the first one's.
fn clusters() -> &'static Mutex<HashMap<ClusterConfig, Weak<Cluster>>> {
    static CLUSTERS: std::sync::OnceLock<Mutex<HashMap<ClusterConfig, Weak<Cluster>>>> =
        std::sync::OnceLock::new();
    CLUSTERS.get_or_init(Mutex::default)
}

/// The connection for `config`: a live one, or a new one (blocking).
fn cluster_for(config: &ClusterConfig) -> Result<Arc<Cluster>> {
    let live = |map: &HashMap<_, Weak<Cluster>>| map.get(config).and_then(Weak::upgrade);
    if let Some(c) = live(&crate::sync::lock(clusters())) {
        return Ok(c);
    }
    let new = Arc::new(Cluster::connect(config, CONNECT_TIMEOUT)?);
    let mut map = crate::sync::lock(clusters());
    map.retain(|_, w| w.strong_count() > 0);
    // Another create may have connected meanwhile: keep one.
    Ok(live(&map).unwrap_or_else(|| {
        map.insert(config.clone(), Arc::downgrade(&new));
        new
    }))
}

/// Creates the bdev: checks the parameters on the application thread,
/// connects and opens the image on a thread of its own, and registers the
/// bdev back on the application thread. Resolves there.
pub async fn create(app: AppThread, params: RbdParams) -> Result<Bdev> {
    let app = app.check()?;
    let module = module()?;
    let bs = params.block_size;
    if !(512..=65536).contains(&bs) || !bs.is_power_of_two() {
        return Err(Error::InvalidArgument(format!(
            "block_size {bs}: give a power of two from 512 to 65536, like 4096"
        )));
    }
    crate::bdev::name_free(app, &params.name)?;
    let (completer, opened) =
        crate::thread::completion::<Result<(String, Image)>>("opening the RBD image");
    let (config, pool, image) = (
        params.cluster.clone(),
        params.pool.clone(),
        params.image.clone(),
    );
    std::thread::Builder::new()
        .name("rbd-open".into())
        .spawn(move || {
            unpin_from_the_reactor();
            // The identity's calls ask the cluster too: here, not on a
            // reactor.
            let result = cluster_for(&config)
                .and_then(|c| Image::open(c, &pool, &image))
                .and_then(|image| Ok((image.identity()?, image)));
            completer.complete(result);
        })
        .map_err(|e| Error::Environment(format!("starting a thread to open the image: {e}")))?;
    let (served_as, image) = opened.await??;
    let image = ImageHandle::new(image);
    // The application thread again (the completion wakes the task there).
    let blocks = image.size() / u64::from(bs);
    if blocks == 0 {
        return Err(Error::InvalidArgument(format!(
            "RBD image {}/{} has {} bytes, less than one block of {bs}",
            params.pool,
            params.image,
            image.size()
        )));
    }
    crate::bdev::name_free(app, &params.name)?;
    let mut props = BdevProps::new(&params.name, PRODUCT_NAME, bs, blocks);
    // With librbd's cache on, a write is acknowledged from memory: hosts
    // must be told to flush (NVMe's volatile write cache).
    props.write_cache = params.cluster.rbd_cache();
    let disk = RbdDisk {
        image,
        identity: served_as,
        params,
        operations: Arc::default(),
        in_flight: Arc::default(),
    };
    module.register_bdev(app, props, disk)
}

/// What tells `image` of `pool` apart from every other image (as
/// [`Image::identity`]), asked of the cluster on a thread of its own: for
/// an image another module serves (SPDK's C RBD module), so that a cache
/// in front of it knows it as it would through this module. Resolves on
/// the calling SPDK thread.
pub async fn image_identity(config: ClusterConfig, pool: String, image: String) -> Result<String> {
    let (completer, asked) = crate::thread::completion::<Result<String>>("asking the image's id");
    std::thread::Builder::new()
        .name("rbd-identity".into())
        .spawn(move || {
            unpin_from_the_reactor();
            let result = cluster_for(&config)
                .and_then(|c| Image::open(c, &pool, &image))
                .and_then(|image| image.identity());
            completer.complete(result);
        })
        .map_err(|e| Error::Environment(format!("starting a thread to ask the image's id: {e}")))?;
    asked.await?
}

/// librados and librbd start their threads (messengers, completions) from
/// the thread that connects and opens, which a reactor started: each would
/// inherit its pin to the reactor's CPU and compete with the polling
/// reactor for it alone (SPDK's C module unpins its channels' connections
/// too with vendor patch 0026, onto the CPUs without a reactor, as upstream
/// does since v20.10). Every CPU, not only those without a reactor:
/// measured on 2 CPUs (reactor on 0, SPDK's perf on 1 at idle priority),
/// librbd's writes at QD 32 took 8.2 ms free to run on either CPU and 14 ms
/// confined to CPU 1.
fn unpin_from_the_reactor() {
    // SAFETY: a zeroed cpu_set_t is an empty set and CPU_SET sets bits
    // inside it; sched_setaffinity changes the calling thread alone (the
    // kernel keeps the CPUs that exist and the cpuset allows) and leaves it
    // as it was if it fails.
    let rc = unsafe {
        let mut every: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut every);
        }
        libc::sched_setaffinity(0, std::mem::size_of_val(&every), &every)
    };
    if rc != 0 {
        crate::log::error(&format!(
            "librbd's threads stay on the reactor's CPUs: sched_setaffinity: {}",
            std::io::Error::last_os_error()
        ));
    }
}

/// A handle to an open image whose last one closes it off the reactors:
/// `rbd_close` flushes, and closing the last image of a cluster shuts its
/// connection down (`rados_shutdown`), both network round trips; nor may it
/// close on librbd's own thread, in a completion, which closing waits for.
#[derive(Clone)]
struct ImageHandle(Option<Arc<Image>>);

impl ImageHandle {
    fn new(image: Image) -> Self {
        ImageHandle(Some(Arc::new(image)))
    }
}

impl std::ops::Deref for ImageHandle {
    type Target = Image;
    fn deref(&self) -> &Image {
        self.0.as_deref().expect("held until dropped")
    }
}

impl Drop for ImageHandle {
    fn drop(&mut self) {
        let Some(image) = self.0.take().and_then(Arc::into_inner) else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("rbd-close".into())
            .spawn(move || drop(image));
        if let Err(e) = spawned {
            crate::log::error(&format!("RBD: closing an image off the reactor: {e}"));
        }
    }
}

/// How an image's operations have been going: librbd's completions (on
/// its own threads) write, a scrape or `bdev_get_bdevs` reads.
#[derive(Default)]
struct OperationCounts {
    /// Whether the last operation to complete failed.
    failing: AtomicBool,
    failed_ops: AtomicU64,
    completed_ops: AtomicU64,
}

impl OperationCounts {
    fn completed(&self, ok: bool) {
        self.completed_ops.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed_ops.fetch_add(1, Ordering::Relaxed);
        }
        self.failing.store(!ok, Ordering::Relaxed);
    }
}

struct RbdDisk {
    image: ImageHandle,
    /// `rbd POOL/NAME (cluster FSID, image id ID)`, as [`Image::identity`]
    /// gives it: for a cache in front of it to tell images apart.
    identity: String,
    params: RbdParams,
    operations: Arc<OperationCounts>,
    /// Operations librbd has not completed yet, on every thread: a reset
    /// completes once they have.
    in_flight: Arc<AtomicU64>,
}

/// One operation counted in [`RbdDisk::in_flight`] until dropped, with its
/// completion (run, or dropped uncalled when librbd refused it).
struct Counted(Arc<AtomicU64>);

impl Counted {
    fn new(in_flight: &Arc<AtomicU64>) -> Counted {
        in_flight.fetch_add(1, Ordering::Relaxed);
        Counted(in_flight.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long a reset waits for librbd's operations: librbd itself gives up
/// on one after `rados_osd_op_timeout` (20 s unless configured).
const RESET_LIMIT: Duration = Duration::from_secs(30);
/// How often a reset looks.
const RESET_POLL_US: u64 = 1_000;

impl RbdDisk {
    /// Completes `io`, a reset, once every operation submitted before it
    /// has completed (SPDK's C module waits 1 s instead): whoever resets
    /// may then reuse the buffers it lent. Fails it if librbd still has
    /// some after [`RESET_LIMIT`].
    fn reset(&self, io: BdevIo) {
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            return io.complete(IoStatus::Success);
        }
        let Ok(io) = io.defer() else { return };
        let in_flight = self.in_flight.clone();
        let deadline = std::time::Instant::now() + RESET_LIMIT;
        let slot: Rc<RefCell<Option<Poller>>> = Rc::default();
        let own = slot.clone();
        let mut io = Some(io);
        let registered = Poller::register(RESET_POLL_US, move || {
            let left = in_flight.load(Ordering::Relaxed);
            if left > 0 && std::time::Instant::now() < deadline {
                return false;
            }
            if let Some(io) = io.take() {
                io.complete(if left == 0 {
                    IoStatus::Success
                } else {
                    IoStatus::Failed
                });
            }
            // Unregisters this poller; its closure lives to the end of
            // this call (thread::Poller).
            own.borrow_mut().take();
            true
        });
        match registered {
            Ok(poller) => *slot.borrow_mut() = Some(poller),
            // The closure, and the deferred reset in it, are dropped: the
            // reset fails.
            Err(e) => crate::log::error(&format!(
                "bdev {}: waiting for a reset: {e}",
                self.params.name
            )),
        }
    }

    fn config_json(&self) -> Value {
        let options: Map<String, Value> = (self.params.cluster.options.iter())
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        let mut params = json!({
            "pool_name": self.params.pool,
            "rbd_name": self.params.image,
        });
        if let Some(user) = &self.params.cluster.user {
            params["user_id"] = user.as_str().into();
        }
        if !options.is_empty() {
            params["config"] = Value::Object(options);
        }
        params
    }
}

impl BlockDevice for RbdDisk {
    type Channel = ();

    fn io_type_supported(&self, io_type: IoType) -> bool {
        matches!(
            io_type,
            IoType::Read
                | IoType::Write
                | IoType::Flush
                | IoType::Unmap
                | IoType::WriteZeroes
                | IoType::Reset
        )
    }

    fn create_channel(&self) -> Result<()> {
        Ok(())
    }

    fn submit(&self, _channel: &(), io: BdevIo) {
        let bytes = |blocks: u64| blocks.saturating_mul(u64::from(io.block_size()));
        let (offset, len) = (bytes(io.offset_blocks()), bytes(io.num_blocks()));
        let op = match io.io_type() {
            IoType::Read => Op::Read(offset),
            IoType::Write => Op::Write(offset),
            IoType::Unmap => Op::Discard(offset, len),
            IoType::WriteZeroes => Op::WriteZeroes(offset, len),
            // Every write is in the cluster when it completes: a reset has
            // nothing of ours to undo; a flush asks librbd to be sure.
            IoType::Flush => Op::Flush,
            IoType::Reset => return self.reset(io),
            _ => return io.complete(IoStatus::Failed),
        };
        let Ok(mut io) = io.defer() else { return };
        let iov: Vec<libc::iovec> = match op {
            Op::Read(_) | Op::Write(_) => io
                .segments_mut()
                .map(|s| libc::iovec {
                    iov_base: s.as_mut_ptr().cast(),
                    iov_len: s.len(),
                })
                .collect(),
            _ => Vec::new(),
        };
        // The image stays open until its last operation completed.
        let image = self.image.clone();
        let operations = self.operations.clone();
        // librbd clips a read at the image's end (an image shrunk under the
        // bdev) and returns fewer bytes: the rest of the buffer would be
        // whatever it held before, so such a read fails, as in SPDK's C
        // module.
        let read_len = matches!(op, Op::Read(_)).then_some(len);
        let name = self.params.name.clone();
        let counted = Counted::new(&self.in_flight);
        let done = Box::new(move |rc: isize| {
            let _counted = counted;
            drop(image);
            operations.completed(rc >= 0);
            let short = read_len.filter(|len| rc >= 0 && rc as u64 != *len);
            if let Some(len) = short {
                crate::log::error(&format!(
                    "bdev {name}: librbd read {rc} of {len} bytes (the image is smaller than \
                     the bdev): failing the read"
                ));
            }
            io.complete(if rc >= 0 && short.is_none() {
                IoStatus::Success
            } else {
                IoStatus::Failed
            });
        });
        // SAFETY: the iovecs are the bdev_io's buffers, lent to this module
        // until the I/O completes, which only `done` does. On an error
        // `done` is dropped uncalled, and with it `io`, which fails the I/O.
        if let Err(e) = unsafe { self.image.start(op, iov, done) } {
            crate::log::error(&format!("bdev {}: {e}", self.params.name));
        }
    }

    fn dump_info_json(&self) -> Option<Value> {
        let mut rbd = self.config_json();
        rbd["module"] = MODULE_NAME.into();
        rbd["reachable"] = (!self.operations.failing.load(Ordering::Relaxed)).into();
        rbd["failed_ops"] = self.operations.failed_ops.load(Ordering::Relaxed).into();
        Some(json!({ "rbd": rbd }))
    }

    fn write_config_json(&self, bdev_name: &str) -> Option<Value> {
        let mut params = self.config_json();
        params["name"] = bdev_name.into();
        params["block_size"] = self.params.block_size.into();
        Some(json!({"method": "bdev_rbd_create", "params": params}))
    }

    fn figures(&self) -> Option<Figures> {
        let h = &self.operations;
        Some(Figures {
            labels: vec![("image", self.identity.clone())],
            values: vec![
                Figure::gauge(
                    "rbd_reachable",
                    "1 unless the image's last completed operation failed (Ceph or the image did not answer it)",
                    i64::from(!h.failing.load(Ordering::Relaxed)),
                ),
                Figure::counter(
                    "rbd_completed_operations",
                    "Operations librbd completed on the image (failed ones too)",
                    h.completed_ops.load(Ordering::Relaxed),
                ),
                Figure::counter(
                    "rbd_failed_operations",
                    "Operations librbd failed on the image",
                    h.failed_ops.load(Ordering::Relaxed),
                ),
            ],
        })
    }

    fn identity(&self) -> Option<String> {
        Some(self.identity.clone())
    }
}

/// `bdev_rbd_create`'s parameters, as SPDK 20.07 decodes them.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    name: Option<String>,
    user_id: Option<String>,
    pool_name: String,
    rbd_name: String,
    block_size: u32,
    config: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteParams {
    name: String,
}

/// Serves SPDK's RBD bdev RPCs (`bdev_rbd_create`, `bdev_rbd_delete` and
/// their old names `construct_rbd_bdev`, `delete_rbd_bdev`) with this
/// module, with SPDK 20.07's parameters and results. `bdev_rbd_resize`
/// stays SPDK's, which refuses bdevs of other modules.
pub fn serve_spdk_rpcs() -> Result<()> {
    module()?;
    for method in ["bdev_rbd_create", "construct_rbd_bdev"] {
        crate::rpc::replace_c_method(method, move |params| rpc_create(method, params))?;
    }
    for method in ["bdev_rbd_delete", "delete_rbd_bdev"] {
        crate::rpc::replace_c_method(method, move |params| rpc_delete(method, params))?;
    }
    Ok(())
}

async fn rpc_create(method: &'static str, params: Option<Value>) -> crate::rpc::RpcResult {
    static UNNAMED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let p: CreateParams = crate::rpc::typed_params(method, params)?;
    let app = AppThread::here()?;
    // SPDK 20.07 names an unnamed one Ceph0, Ceph1, ...
    let name = p.name.unwrap_or_else(|| {
        format!(
            "Ceph{}",
            UNNAMED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )
    });
    let params = RbdParams {
        name,
        cluster: ClusterConfig {
            user: p.user_id,
            options: p.config.unwrap_or_default().into_iter().collect(),
        },
        pool: p.pool_name,
        image: p.rbd_name,
        block_size: p.block_size,
    };
    let bdev = create(app, params).await?;
    Ok(Value::String(bdev.name().to_string()))
}

async fn rpc_delete(method: &'static str, params: Option<Value>) -> crate::rpc::RpcResult {
    let p: DeleteParams = crate::rpc::typed_params(method, params)?;
    let app = AppThread::here()?;
    let Some(bdev) = Bdev::by_name(app, &p.name) else {
        return Err(crate::rpc::RpcError {
            code: -libc::ENODEV,
            message: std::io::Error::from_raw_os_error(libc::ENODEV).to_string(),
        });
    };
    // SPDK 20.07 answers false for a bdev that is not an RBD one.
    let module = module()?;
    if !module.owns(&bdev) {
        return Ok(Value::Bool(false));
    }
    module.delete(app, &p.name).await?;
    Ok(Value::Bool(true))
}
