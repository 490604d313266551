//! Bdev modules in Rust: a type that implements [`BlockDevice`] becomes an
//! SPDK bdev, served by the bdev layer like any C module's (NVMe-oF
//! namespaces, `bdev_get_bdevs`, `save_config`).
//!
//! ```no_run
//! use spdk_pmem::bdev::module::{self, BdevIo, BlockDevice, BdevProps, IoStatus, IoType};
//! use spdk_pmem::thread::AppThread;
//!
//! /// A device that reads zeros and accepts every write.
//! struct Zeros;
//!
//! impl BlockDevice for Zeros {
//!     type Channel = ();
//!     fn io_type_supported(&self, io_type: IoType) -> bool {
//!         matches!(io_type, IoType::Read | IoType::Write)
//!     }
//!     fn create_channel(&self) -> spdk_pmem::Result<()> {
//!         Ok(())
//!     }
//!     fn submit(&self, _channel: &(), mut io: BdevIo) {
//!         if io.io_type() == IoType::Read {
//!             io.segments_mut().for_each(|s| s.fill(0));
//!         }
//!         io.complete(IoStatus::Success);
//!     }
//! }
//!
//! # fn f(app: AppThread) -> spdk_pmem::Result<()> {
//! let module = module::Module::get_or_register("zeros")?;
//! let props = BdevProps::new("zero0", "zeros", 4096, 1024);
//! module.register_bdev(app, props, Zeros)?;
//! # Ok(()) }
//! ```
//!
//! Threads: the bdev layer calls [`BlockDevice::submit`] on whichever SPDK
//! thread the I/O was submitted (each has its own [`BlockDevice::Channel`]),
//! so the device is `Send + Sync` and the channel stays on its thread. An I/O
//! completes on that thread: [`BdevIo`] is `!Send`; work done elsewhere goes
//! through [`BdevIo::defer`], whose [`DeferredIo`] may cross to any thread
//! and queues its completion for a poller of the channel, on that thread.
//!
//! Panics: a panic in a module's code is caught at the C boundary and
//! reported on stderr; the I/O it was handling fails (a [`BdevIo`] or
//! [`DeferredIo`] dropped without completion completes as failed), and the
//! application keeps serving.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::ptr::NonNull;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

pub use crate::bdev::status::IoStatus;
use crate::bdev::Bdev;
use crate::error::{Error, Result};
use crate::sys;
use crate::thread::{AppThread, Thread};

mod app_only;
mod channel;
mod disk;
mod figures;
mod request;
pub use app_only::AppOnly;
pub use figures::{DeviceFigures, Figure, FigureValue, Figures};
pub use request::{BdevIo, DeferredIo, IoRequest};

/// The kinds of I/O a bdev may be asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IoType {
    /// Read blocks into the I/O's buffers.
    Read,
    /// Write the I/O's buffers to blocks.
    Write,
    /// Make blocks read as zeros.
    WriteZeroes,
    /// Deallocate blocks (NVMe Deallocate / SCSI UNMAP).
    Unmap,
    /// Make every completed write durable.
    Flush,
    /// Finish or abort everything outstanding.
    Reset,
    /// Any other SPDK I/O type (NVMe passthrough, zones, compare, abort...),
    /// by its `spdk_bdev_io_type` value.
    Other(u32),
}

impl IoType {
    fn from_raw(raw: u32) -> IoType {
        match raw {
            sys::SPDK_BDEV_IO_TYPE_READ => IoType::Read,
            sys::SPDK_BDEV_IO_TYPE_WRITE => IoType::Write,
            sys::SPDK_BDEV_IO_TYPE_WRITE_ZEROES => IoType::WriteZeroes,
            sys::SPDK_BDEV_IO_TYPE_UNMAP => IoType::Unmap,
            sys::SPDK_BDEV_IO_TYPE_FLUSH => IoType::Flush,
            sys::SPDK_BDEV_IO_TYPE_RESET => IoType::Reset,
            other => IoType::Other(other),
        }
    }
}

/// A Rust block device, served by SPDK's bdev layer once registered with
/// [`Module::register_bdev`].
pub trait BlockDevice: Send + Sync + 'static {
    /// Per-SPDK-thread state: created on each thread that does I/O to the
    /// bdev, used and dropped there.
    type Channel: 'static;

    /// Whether the device handles `io_type`; the bdev layer refuses the
    /// others before they reach [`submit`](Self::submit).
    fn io_type_supported(&self, io_type: IoType) -> bool;

    /// Makes the state for the calling SPDK thread. An error (or a panic)
    /// makes the bdev layer's channel creation fail on that thread.
    fn create_channel(&self) -> Result<Self::Channel>;

    /// Handles one I/O. It must end in [`BdevIo::complete`], now or later,
    /// on this thread (or through [`BdevIo::defer`]); an I/O dropped instead
    /// completes as failed.
    ///
    /// SPDK may call `submit` again on this thread while a call runs:
    /// completing an I/O runs its submitter's callback, which may submit
    /// the next one (bdevperf does), and a completion after one that said
    /// [`IoStatus::NoMemory`] makes the bdev layer resubmit the ones it
    /// queued. So the channel is shared, not `&mut`: keep what changes in
    /// a `Cell` or `RefCell`, and complete an I/O only after letting go of
    /// any borrow of it (a `RefCell` borrowed across a completion panics on
    /// re-entry, which fails the inner I/O; it cannot corrupt memory).
    fn submit(&self, channel: &Self::Channel, io: BdevIo);

    /// What `bdev_get_bdevs` shows under `driver_specific`: an object whose
    /// members are written there. `None` writes nothing.
    fn dump_info_json(&self) -> Option<Value> {
        None
    }

    /// The RPC call that recreates this bdev, for `save_config`
    /// (`{"method": ..., "params": ...}`). `None` leaves it out.
    fn write_config_json(&self, _bdev_name: &str) -> Option<Value> {
        None
    }

    /// Called once the bdev is unregistered, every descriptor is closed and
    /// every channel dropped, on the thread that unregistered it; the device
    /// is dropped right after.
    fn destruct(&mut self) {}

    /// What the device counts and measures, for the metrics endpoint
    /// (`None`: nothing). Called on the application thread.
    fn figures(&self) -> Option<Figures> {
        None
    }

    /// What the device serves, for a layer above it to tell its bases
    /// apart across restarts and renames (an RBD image's cluster, pool
    /// and id, say); `None` where the bdev's name and size are all there
    /// is. Called on the application thread.
    fn identity(&self) -> Option<String> {
        None
    }
}

/// What the bdev layer needs to know about a new bdev.
#[derive(Debug, Clone)]
pub struct BdevProps {
    /// The bdev's unique name.
    pub name: String,
    /// Shown as `product_name` by `bdev_get_bdevs`.
    pub product_name: String,
    /// Bytes per logical block.
    pub block_size: u32,
    /// Logical blocks.
    pub block_count: u64,
    /// Whether the device has a volatile write cache (FLUSH makes writes durable).
    pub write_cache: bool,
}

impl BdevProps {
    /// Properties of a bdev without a volatile write cache.
    pub fn new(name: &str, product_name: &str, block_size: u32, block_count: u64) -> Self {
        BdevProps {
            name: name.to_string(),
            product_name: product_name.to_string(),
            block_size,
            block_count,
            write_cache: false,
        }
    }
}

/// A bdev module registered with SPDK's bdev layer (`spdk_bdev_module`):
/// the owner of the bdevs registered through it. Registered once per name
/// for the life of the process.
pub struct Module {
    raw: NonNull<sys::spdk_bdev_module>,
    name: &'static str,
}

// SAFETY: the module struct is leaked (never freed) and SPDK's bdev layer
// only reads it after registration; Module gives out no mutable access.
unsafe impl Send for Module {}
// SAFETY: as for Send.
unsafe impl Sync for Module {}

fn modules() -> &'static Mutex<HashMap<String, &'static Module>> {
    static MODULES: OnceLock<Mutex<HashMap<String, &'static Module>>> = OnceLock::new();
    MODULES.get_or_init(Mutex::default)
}

impl Module {
    /// The module called `name`, registered with SPDK's bdev layer on first
    /// use. Call before the application starts or on its main thread (where
    /// SPDK's module list is read). A name SPDK's C modules use is refused.
    pub fn get_or_register(name: &str) -> Result<&'static Module> {
        let mut map = crate::sync::lock(modules());
        if let Some(m) = map.get(name) {
            return Ok(m);
        }
        if crate::app::is_running() && Thread::current() != Thread::app_thread() {
            return Err(Error::InvalidArgument(format!(
                "registering bdev module {name}: while the application runs, register on its \
                 main thread"
            )));
        }
        let c_name = CString::new(name).map_err(|_| {
            Error::InvalidArgument(format!("bdev module name {name:?} contains a NUL byte"))
        })?;
        // SAFETY: `c_name` is a valid C string; the list is only changed here
        // and by constructors at load time.
        if !unsafe { sys::spdk_bdev_module_list_find(c_name.as_ptr()) }.is_null() {
            return Err(Error::spdk(
                format!("registering bdev module {name}: SPDK has a module of that name"),
                -libc::EEXIST,
            ));
        }
        let name: &'static str = Box::leak(name.to_string().into_boxed_str());
        let raw = Box::leak(Box::new(sys::spdk_bdev_module {
            name: Box::leak(c_name.into_boxed_c_str()).as_ptr(),
            // SPDK calls it unconditionally at bdev layer start.
            module_init: Some(module_init),
            ..Default::default()
        }));
        // SAFETY: `raw` is a leaked, fully initialised module that lives for
        // the rest of the process, as SPDK's list requires; no module of that
        // name is listed (checked above).
        unsafe { sys::spdk_bdev_module_list_add(raw) };
        let module: &'static Module = Box::leak(Box::new(Module {
            raw: NonNull::from(raw),
            name,
        }));
        map.insert(name.to_string(), module);
        Ok(module)
    }

    /// SPDK's module struct, for calls that name the module.
    pub(crate) fn as_raw(&self) -> *mut sys::spdk_bdev_module {
        self.raw.as_ptr()
    }

    /// The module's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether `bdev` belongs to this module.
    pub fn owns(&self, bdev: &Bdev) -> bool {
        bdev.as_ptr()
            // SAFETY: just looked up on the application thread, so registered.
            .map(|raw| unsafe { (*raw).module } == self.raw.as_ptr())
            .unwrap_or(false)
    }

    /// Registers `device` as the bdev `props.name`, on the application
    /// thread. On failure nothing stays registered and the device is dropped.
    pub fn register_bdev<T: BlockDevice>(
        &self,
        app: AppThread,
        props: BdevProps,
        device: T,
    ) -> Result<Bdev> {
        let app = app.check()?;
        if props.block_size == 0 || props.block_count == 0 {
            return Err(Error::InvalidArgument(format!(
                "bdev {}: block size {} and block count {} must both be non-zero",
                props.name, props.block_size, props.block_count
            )));
        }
        crate::bdev::name_free(app, &props.name)?;
        // SAFETY: on the application thread (checked); this module is
        // registered.
        unsafe { disk::register(self.raw.as_ptr(), &props, device)? };
        Ok(Bdev::known(app, &props.name))
    }

    /// Calls `f` with the device of this module's bdev `name`, a `T`.
    pub fn with_device<T: BlockDevice, R>(
        &self,
        app: AppThread,
        name: &str,
        f: impl FnOnce(&T) -> R,
    ) -> Result<R> {
        let app = app.check()?;
        let raw = self.own_bdev(app, name)?;
        // SAFETY: `raw` is one of this module's bdevs, just looked up on the
        // application thread; `f` runs within this turn, before any message
        // could destruct it.
        match unsafe { disk::device_of::<T>(raw) } {
            Some(device) => Ok(f(device)),
            None => Err(Error::InvalidArgument(format!(
                "bdev {name:?} of module {} is not a {}",
                self.name,
                std::any::type_name::<T>()
            ))),
        }
    }

    /// Calls `f` with the name and device of each of this module's bdevs
    /// that is a `T`, in name order.
    pub fn with_devices<T: BlockDevice>(
        &self,
        app: AppThread,
        mut f: impl FnMut(&str, &T),
    ) -> Result<()> {
        let app = app.check()?;
        let mut bdevs = Bdev::all(app)?;
        bdevs.sort_by(|a, b| a.name().cmp(b.name()));
        for bdev in bdevs.iter().filter(|b| self.owns(b)) {
            let raw = bdev.as_ptr()?;
            // SAFETY: as in with_device.
            if let Some(device) = unsafe { disk::device_of::<T>(raw) } {
                f(bdev.name(), device);
            }
        }
        Ok(())
    }

    /// Deletes this module's bdev `name` (started at once); the future
    /// resolves once SPDK has destructed it. A bdev of another module is
    /// refused, naming its module.
    pub fn delete(
        &self,
        app: AppThread,
        name: &str,
    ) -> impl std::future::Future<Output = Result<()>> {
        let started = app
            .check()
            .and_then(|app| self.own_bdev(app, name).map(|_| Bdev::known(app, name)))
            .map(unregister);
        async move { started?.await }
    }

    /// This module's bdev `name`: an error names what is there instead.
    fn own_bdev(&self, app: AppThread, name: &str) -> Result<*mut sys::spdk_bdev> {
        let bdev =
            Bdev::by_name(app, name).ok_or_else(|| Error::NotFound(format!("bdev {name:?}")))?;
        if !self.owns(&bdev) {
            return Err(Error::InvalidArgument(format!(
                "bdev {name:?} is not a bdev of module {} (it is of module {})",
                self.name,
                bdev.module_name().unwrap_or_else(|_| "?".into())
            )));
        }
        bdev.as_ptr()
    }
}

/// The figures of each bdev of the Rust modules that has some, with its
/// name and its module's, in name order.
pub fn all_figures(app: AppThread) -> Result<Vec<DeviceFigures>> {
    let app = app.check()?;
    let mut all = Vec::new();
    for bdev in Bdev::all(app)? {
        let Some(module) = rust_module_of(&bdev) else {
            continue;
        };
        // SAFETY: a registered bdev of a Rust module, on the application
        // thread.
        if let Some(figures) = unsafe { disk::figures(bdev.as_ptr()?) } {
            all.push(DeviceFigures {
                bdev: bdev.name().to_string(),
                module: module.name,
                figures,
            });
        }
    }
    all.sort_by(|a, b| a.bdev.cmp(&b.bdev));
    Ok(all)
}

/// What the bdev `name` serves, if it is one of the Rust modules' and its
/// device says ([`BlockDevice::identity`]).
pub fn identity(app: AppThread, name: &str) -> Option<String> {
    let bdev = Bdev::by_name(app, name)?;
    rust_module_of(&bdev)?;
    // SAFETY: a registered bdev of a Rust module, on the application thread.
    unsafe { disk::identity(bdev.as_ptr().ok()?) }
}

/// The Rust module `bdev` belongs to, if any.
fn rust_module_of(bdev: &Bdev) -> Option<&'static Module> {
    crate::sync::lock(modules())
        .values()
        .find(|m| m.owns(bdev))
        .copied()
}

extern "C" fn module_init() -> i32 {
    0
}

/// Unregisters a bdev of any module (`spdk_bdev_unregister`), started at
/// once; the future resolves when SPDK has destructed it. Descriptors open
/// on it get a hot-remove event.
pub fn unregister(bdev: Bdev) -> impl std::future::Future<Output = Result<()>> {
    let started = bdev.as_ptr().map(|raw| {
        let (completer, done) = crate::thread::completion::<i32>("spdk_bdev_unregister");
        // SAFETY: `raw` was just looked up on this SPDK thread; unregister_done
        // reclaims the completer once.
        unsafe { sys::spdk_bdev_unregister(raw, Some(unregister_done), completer.into_raw()) };
        done
    });
    async move {
        let rc = started?.await?;
        crate::error::check_rc(&format!("spdk_bdev_unregister({})", bdev.name()), rc)
    }
}

extern "C" fn unregister_done(arg: *mut c_void, rc: i32) {
    disk::guard("unregister callback", || {
        // SAFETY: `arg` is the Completer that unregister handed to C.
        unsafe { crate::thread::Completer::<i32>::from_raw(arg) }.complete(rc)
    });
}

/// How many panics in bdev modules' code (and elsewhere under the crate's
/// panic policy, `panics`) this process has caught; each was reported on
/// the log when it happened.
pub fn panics_caught() -> u64 {
    crate::panics::caught()
}
