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
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

use crate::bdev::completions::{ChannelCompletions, CompletionQueue};
use crate::bdev::status::complete_raw;
pub use crate::bdev::status::IoStatus;
use crate::bdev::Bdev;
use crate::error::{Error, Result};
use crate::sys;
use crate::thread::{AppThread, Thread};

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
        if Bdev::by_name(app, &props.name).is_some() {
            return Err(Error::spdk(
                format!(
                    "registering bdev {:?}: a bdev of that name exists",
                    props.name
                ),
                -libc::EEXIST,
            ));
        }
        let name = crate::cstr::to_c("bdev name", &props.name)?;
        let product = crate::cstr::to_c("product name", &props.product_name)?;
        let disk = Box::into_raw(Box::new(Disk {
            // SAFETY: spdk_bdev is a plain C struct for which all-zero is
            // the initial state SPDK expects (modules calloc it).
            bdev: unsafe { std::mem::zeroed() },
            fn_table: sys::spdk_bdev_fn_table {
                destruct: Some(destruct::<T>),
                submit_request: Some(submit_request::<T>),
                io_type_supported: Some(io_type_supported::<T>),
                get_io_channel: Some(get_io_channel),
                dump_info_json: Some(dump_info_json::<T>),
                write_config_json: Some(write_config_json::<T>),
                get_spin_time: None,
            },
            name,
            product,
            registered: true,
            device,
        }));
        // SAFETY: `disk` is the leaked Box just made; its bdev, fn_table and
        // strings live until io_device_gone frees it, after SPDK's last use.
        // Fields are reached through the raw pointer, which SPDK keeps (as
        // the bdev's ctxt and io_device), so no reference to the whole Disk
        // is made for it to outlive.
        unsafe {
            let bdev = std::ptr::addr_of_mut!((*disk).bdev);
            (*bdev).ctxt = disk as *mut c_void;
            (*bdev).name = (*disk).name.as_ptr() as *mut _;
            (*bdev).product_name = (*disk).product.as_ptr() as *mut _;
            (*bdev).blocklen = props.block_size;
            (*bdev).blockcnt = props.block_count;
            (*bdev).write_cache = props.write_cache as i32;
            (*bdev).fn_table = std::ptr::addr_of!((*disk).fn_table);
            (*bdev).module = self.raw.as_ptr();
            sys::spdk_io_device_register(
                disk as *mut c_void,
                Some(channel_create::<T>),
                Some(channel_destroy::<T>),
                std::mem::size_of::<*mut ChannelCtx<T::Channel>>() as u32,
                (*disk).name.as_ptr(),
            );
            let rc = sys::spdk_bdev_register(bdev);
            if rc != 0 {
                // Not registered: no destruct will come; free through the
                // io_device's unregistration like a destructed bdev.
                (*disk).registered = false;
                sys::spdk_io_device_unregister(disk as *mut c_void, Some(io_device_gone::<T>));
                return Err(Error::spdk(
                    format!("spdk_bdev_register({})", props.name),
                    rc,
                ));
            }
        }
        Ok(Bdev::known(app, &props.name))
    }
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
    guard("unregister callback", || {
        // SAFETY: `arg` is the Completer that unregister handed to C.
        unsafe { crate::thread::Completer::<i32>::from_raw(arg) }.complete(rc)
    });
}

/// What SPDK's bdev points at: the C struct, its strings and function
/// table, and the Rust device.
struct Disk<T: BlockDevice> {
    bdev: sys::spdk_bdev,
    fn_table: sys::spdk_bdev_fn_table,
    name: CString,
    product: CString,
    /// False when spdk_bdev_register refused it: no destruct to report.
    registered: bool,
    device: T,
}

impl<T: BlockDevice> Disk<T> {
    fn bdev_name(&self) -> String {
        self.name.to_string_lossy().into_owned()
    }
}

/// How many panics in bdev modules' code (and elsewhere under the crate's
/// panic policy, `panics`) this process has caught; each was reported on
/// the log when it happened.
pub fn panics_caught() -> u64 {
    crate::panics::caught()
}

/// Runs module code from a C callback under the crate's panic policy: a
/// panic is counted and reported, and never unwinds into C (nor stops the
/// application, unlike app callbacks).
fn guard<R>(what: &str, f: impl FnOnce() -> R) -> Option<R> {
    guard_with(|| what.to_string(), f)
}

/// [`guard`], with the description made only if there is a panic to report
/// (the I/O path allocates nothing for it).
fn guard_with<R>(what: impl FnOnce() -> String, f: impl FnOnce() -> R) -> Option<R> {
    crate::panics::contain(|| format!("bdev module code ({})", what()), f)
}

/// The parts of a registered `Disk<T>` that callbacks read: its device and
/// its name. Never a reference to the whole `Disk`, which would cover the
/// embedded `spdk_bdev` that SPDK changes from other threads (its status,
/// stats and mutex): only these fields are borrowed.
struct DiskParts<'a, T> {
    device: &'a T,
    name: &'a CString,
}

impl<T> DiskParts<'_, T> {
    fn bdev_name(&self) -> String {
        self.name.to_string_lossy().into_owned()
    }
}

/// # Safety
/// `ctx` is the `Disk<T>` registered as this bdev's context, alive for `'a`.
unsafe fn disk<'a, T: BlockDevice>(ctx: *mut c_void) -> DiskParts<'a, T> {
    let disk = ctx as *const Disk<T>;
    // SAFETY: per the function's contract; the fields are reached through
    // the raw pointer, so no reference to the `spdk_bdev` is made. Neither
    // field changes while the bdev is registered.
    unsafe {
        DiskParts {
            device: &*std::ptr::addr_of!((*disk).device),
            name: &*std::ptr::addr_of!((*disk).name),
        }
    }
}

extern "C" fn destruct<T: BlockDevice>(ctx: *mut c_void) -> i32 {
    // SAFETY: SPDK passes the bdev's ctxt, our Disk<T>; the module's
    // channels may still be on their way out (spdk_put_io_channel is
    // deferred), so the Disk is freed once the io_device is gone.
    unsafe { sys::spdk_io_device_unregister(ctx, Some(io_device_gone::<T>)) };
    // Asynchronous: io_device_gone calls spdk_bdev_destruct_done.
    1
}

extern "C" fn io_device_gone<T: BlockDevice>(io_device: *mut c_void) {
    // SAFETY: `io_device` is the Disk<T> leaked by register_bdev; SPDK calls
    // this once, after its last channel is destroyed and (for a registered
    // bdev) from destruct, so nothing else uses it any more.
    let mut disk = unsafe { Box::from_raw(io_device as *mut Disk<T>) };
    let name = disk.bdev_name();
    if disk.registered {
        guard(&format!("destruct of bdev {name}"), || {
            disk.device.destruct()
        });
        // SAFETY: the bdev is destructed; SPDK reports it to whoever
        // unregistered it and does not touch the struct afterwards.
        unsafe { sys::spdk_bdev_destruct_done(&mut disk.bdev, 0) };
    }
    guard(&format!("drop of bdev {name}"), move || drop(disk));
}

extern "C" fn io_type_supported<T: BlockDevice>(ctx: *mut c_void, io_type: u32) -> bool {
    // SAFETY: SPDK passes the bdev's ctxt while the bdev is registered.
    let disk = unsafe { disk::<T>(ctx) };
    guard("io_type_supported", || {
        disk.device.io_type_supported(IoType::from_raw(io_type))
    })
    .unwrap_or(false)
}

extern "C" fn get_io_channel(ctx: *mut c_void) -> *mut sys::spdk_io_channel {
    // SAFETY: `ctx` is the Disk registered as an io_device in register_bdev.
    unsafe { sys::spdk_get_io_channel(ctx) }
}

extern "C" fn channel_create<T: BlockDevice>(io_device: *mut c_void, ctx_buf: *mut c_void) -> i32 {
    // SAFETY: `io_device` is our Disk<T>, alive while it is registered.
    let disk = unsafe { disk::<T>(io_device) };
    match guard("create_channel", || disk.device.create_channel()) {
        Some(Ok(channel)) => {
            let ctx = Box::new(ChannelCtx {
                completions: ChannelCompletions::default(),
                channel,
            });
            // SAFETY: SPDK gives a buffer of the size registered, a pointer.
            unsafe { *(ctx_buf as *mut *mut ChannelCtx<T::Channel>) = Box::into_raw(ctx) };
            0
        }
        Some(Err(e)) => {
            crate::log::error(&format!(
                "bdev {}: creating a channel: {e}",
                disk.bdev_name()
            ));
            -e.errno().unwrap_or(libc::ENOMEM)
        }
        None => -libc::EIO,
    }
}

extern "C" fn channel_destroy<T: BlockDevice>(_io_device: *mut c_void, ctx_buf: *mut c_void) {
    // SAFETY: channel_create stored a leaked Box<ChannelCtx> here; SPDK
    // destroys each channel once, on its thread.
    let ctx = unsafe { Box::from_raw(*(ctx_buf as *mut *mut ChannelCtx<T::Channel>)) };
    ctx.completions.close();
    guard("channel drop", move || drop(ctx));
}

extern "C" fn submit_request<T: BlockDevice>(
    ch: *mut sys::spdk_io_channel,
    bdev_io: *mut sys::spdk_bdev_io,
) {
    // SAFETY: SPDK hands a live bdev_io of one of our bdevs, on `ch`'s thread.
    let io = unsafe { BdevIo::new(bdev_io) };
    let needs_buffer = io.io_type() == IoType::Read
        // SAFETY: as above; a read carries at least one iovec.
        && unsafe { (*bdev_io).u.bdev.iovcnt > 0 && (*(*bdev_io).u.bdev.iovs).iov_base.is_null() };
    if needs_buffer {
        // Within the bdev's size (checked by the bdev layer); saturating
        // rather than a panic inside `extern "C"`.
        let len = io.num_blocks().saturating_mul(u64::from(io.block_size()));
        std::mem::forget(io);
        // SAFETY: the bdev layer allocates a buffer and calls back on this
        // thread; the I/O stays ours until then.
        unsafe { sys::spdk_bdev_io_get_buf(bdev_io, Some(buffer_ready::<T>), len) };
        return;
    }
    submit_now::<T>(ch, io);
}

extern "C" fn buffer_ready<T: BlockDevice>(
    ch: *mut sys::spdk_io_channel,
    bdev_io: *mut sys::spdk_bdev_io,
    success: bool,
) {
    // SAFETY: the bdev_io submit_request forgot, handed back on its thread.
    let io = unsafe { BdevIo::new(bdev_io) };
    if !success {
        io.complete(IoStatus::NoMemory);
        return;
    }
    submit_now::<T>(ch, io);
}

fn submit_now<T: BlockDevice>(ch: *mut sys::spdk_io_channel, io: BdevIo) {
    // SAFETY: the bdev's ctxt is our Disk<T> while it has I/O.
    let disk = unsafe { disk::<T>((*(*io.raw()).bdev).ctxt) };
    // SAFETY: channel_create stored the ChannelCtx's Box pointer in its
    // context, freed only by channel_destroy once the channel has no I/O;
    // this runs on the channel's thread, the only one that touches it, and
    // makes only shared references to it, so a re-entered `submit` (see
    // its doc) aliases nothing mutable.
    let channel = unsafe { &(**(channel_ctx(ch) as *mut *mut ChannelCtx<T::Channel>)).channel };
    let io_type = io.io_type();
    // On a panic the unwinding drops `io` (unless the module stored it), and
    // its Drop completes it as failed.
    guard_with(
        || format!("submit to bdev {} ({io_type:?})", disk.bdev_name()),
        || disk.device.submit(channel, io),
    );
}

/// What a Rust module's channel context points to: the framework's part
/// first (`repr(C)`), so code that does not know the module's channel type
/// reaches it through the same pointer.
#[repr(C)]
struct ChannelCtx<C> {
    completions: ChannelCompletions,
    channel: C,
}

/// `spdk_io_channel_get_ctx`, a static inline in thread.h: the context
/// buffer follows the channel struct.
///
/// # Safety
/// `ch` is a live channel.
unsafe fn channel_ctx(ch: *mut sys::spdk_io_channel) -> *mut c_void {
    // SAFETY: per the function's contract, as thread.h computes it.
    unsafe { (ch as *mut u8).add(std::mem::size_of::<sys::spdk_io_channel>()) as *mut c_void }
}

extern "C" fn dump_info_json<T: BlockDevice>(
    ctx: *mut c_void,
    w: *mut sys::spdk_json_write_ctx,
) -> i32 {
    // SAFETY: SPDK passes the bdev's ctxt while the bdev is registered.
    let disk = unsafe { disk::<T>(ctx) };
    let Some(Some(Value::Object(members))) =
        guard("dump_info_json", || disk.device.dump_info_json())
    else {
        return 0;
    };
    for (name, value) in members {
        // SAFETY: `w` is SPDK's writer, inside the driver_specific object.
        unsafe { write_named_raw(w, &name, &value) };
    }
    0
}

extern "C" fn write_config_json<T: BlockDevice>(
    bdev: *mut sys::spdk_bdev,
    w: *mut sys::spdk_json_write_ctx,
) {
    // SAFETY: SPDK passes one of our registered bdevs.
    let disk = unsafe { disk::<T>((*bdev).ctxt) };
    let name = disk.bdev_name();
    if let Some(Some(call)) = guard("write_config_json", || disk.device.write_config_json(&name)) {
        let text = call.to_string();
        // SAFETY: `w` is SPDK's writer, inside the bdev subsystem's array;
        // the text is one complete JSON value.
        unsafe { sys::spdk_json_write_val_raw(w, text.as_ptr() as *const c_void, text.len()) };
    }
}

/// # Safety
/// `w` is a live SPDK JSON writer positioned inside an object.
unsafe fn write_named_raw(w: *mut sys::spdk_json_write_ctx, name: &str, value: &Value) {
    let Ok(c_name) = CString::new(name) else {
        return;
    };
    let text = value.to_string();
    // SAFETY: per the function's contract; both buffers outlive the calls.
    unsafe {
        sys::spdk_json_write_name(w, c_name.as_ptr());
        sys::spdk_json_write_val_raw(w, text.as_ptr() as *const c_void, text.len());
    }
}

/// What an I/O asks for: its type, blocks and data buffers. Reached only
/// through a [`BdevIo`] or [`DeferredIo`] (by `Deref`), never owned or
/// copied on its own, so it cannot outlive the I/O's completion.
pub struct IoRequest {
    raw: NonNull<sys::spdk_bdev_io>,
}

impl IoRequest {
    /// The live bdev_io. Its fields are read one at a time through this
    /// pointer, never through a reference to the whole struct: the reactor
    /// keeps writing parts of it (its links among the channel's I/O) while
    /// a worker reads a [`DeferredIo`]'s.
    fn raw(&self) -> *mut sys::spdk_bdev_io {
        self.raw.as_ptr()
    }

    /// The kind of I/O.
    pub fn io_type(&self) -> IoType {
        // SAFETY: an IoRequest lives inside a BdevIo or DeferredIo, which
        // own a live, uncompleted bdev_io; the bdev layer set its type
        // before submission and leaves it until completion.
        IoType::from_raw(u32::from(unsafe {
            std::ptr::addr_of!((*self.raw()).type_).read()
        }))
    }

    fn is_block_io(&self) -> bool {
        !matches!(self.io_type(), IoType::Reset | IoType::Other(_))
    }

    /// First block (0 for a reset).
    pub fn offset_blocks(&self) -> u64 {
        if !self.is_block_io() {
            return 0;
        }
        // SAFETY: live as in io_type; block I/O types use the `bdev`
        // member of the union, set before submission.
        unsafe { std::ptr::addr_of!((*self.raw()).u.bdev.offset_blocks).read() }
    }

    /// Number of blocks (0 for a reset).
    pub fn num_blocks(&self) -> u64 {
        if !self.is_block_io() {
            return 0;
        }
        // SAFETY: as for offset_blocks.
        unsafe { std::ptr::addr_of!((*self.raw()).u.bdev.num_blocks).read() }
    }

    /// The bdev's block size.
    pub fn block_size(&self) -> u32 {
        // SAFETY: live as in io_type; every bdev_io points at its bdev,
        // registered (so live) while it has I/O; blocklen is fixed then.
        unsafe {
            let bdev = std::ptr::addr_of!((*self.raw()).bdev).read();
            std::ptr::addr_of!((*bdev).blocklen).read()
        }
    }

    /// The data buffers of a read or write, in order (empty for other types).
    pub fn segments(&self) -> impl Iterator<Item = &[u8]> {
        // SAFETY: shared slices for as long as &self, during which nothing
        // hands out mutable ones (that takes &mut BdevIo or &mut DeferredIo).
        unsafe { self.raw_segments() }.map(|s| &*s)
    }

    /// # Safety
    /// The caller bounds the slices' lifetime by its borrow of the I/O, and
    /// gives out mutable ones only under a unique borrow.
    unsafe fn raw_segments(&self) -> impl Iterator<Item = &mut [u8]> {
        let (iovs, count, mut left) = if matches!(self.io_type(), IoType::Read | IoType::Write) {
            // SAFETY: live as in io_type; reads and writes use the `bdev`
            // member of the union, whose buffers are set before submission.
            let (iovs, iovcnt) = unsafe {
                (
                    std::ptr::addr_of!((*self.raw()).u.bdev.iovs).read(),
                    std::ptr::addr_of!((*self.raw()).u.bdev.iovcnt).read(),
                )
            };
            // The bdev layer checked the range against the bdev's size, so
            // this does not overflow; saturating all the same, as a panic
            // here would be inside an `extern "C"` frame.
            let len = self
                .num_blocks()
                .saturating_mul(u64::from(self.block_size()));
            (iovs, iovcnt.max(0) as usize, len)
        } else {
            (std::ptr::null_mut(), 0, 0)
        };
        (0..count).filter_map(move |i| {
            // SAFETY: `iovs` has `count` entries, each a buffer of iov_len
            // bytes the bdev layer lent to this I/O.
            let iov = unsafe { *iovs.add(i) };
            let len = (iov.iov_len as u64).min(left) as usize;
            left -= len as u64;
            if len == 0 || iov.iov_base.is_null() {
                return None;
            }
            // SAFETY: as above; the caller bounds the lifetime.
            Some(unsafe { std::slice::from_raw_parts_mut(iov.iov_base as *mut u8, len) })
        })
    }
}

/// One I/O submitted to a Rust bdev, on the SPDK thread that submitted it
/// (`!Send`). Its type, blocks and buffers are read through `Deref` to
/// [`IoRequest`]. Complete it with [`complete`](Self::complete); dropped
/// without that, it completes as failed.
///
/// ```compile_fail,E0277
/// # fn f(io: spdk_pmem::bdev::module::BdevIo) {
/// // Completion belongs on the submitting thread: use BdevIo::defer.
/// std::thread::spawn(move || drop(io));
/// # }
/// ```
/// ```no_run
/// # fn f(io: spdk_pmem::bdev::module::BdevIo) {
/// let deferred = io.defer().expect("the channel's completion poller");
/// std::thread::spawn(move || drop(deferred));
/// # }
/// ```
pub struct BdevIo {
    request: IoRequest,
}

impl std::ops::Deref for BdevIo {
    type Target = IoRequest;
    fn deref(&self) -> &IoRequest {
        &self.request
    }
}

impl BdevIo {
    /// # Safety
    /// `raw` is a live bdev_io submitted to one of our bdevs, not yet completed.
    unsafe fn new(raw: *mut sys::spdk_bdev_io) -> BdevIo {
        BdevIo {
            request: IoRequest {
                // SAFETY: SPDK never submits a NULL bdev_io.
                raw: unsafe { NonNull::new_unchecked(raw) },
            },
        }
    }

    /// The data buffers, to fill for a read.
    pub fn segments_mut(&mut self) -> impl Iterator<Item = &mut [u8]> {
        // SAFETY: bounded by &mut self, which makes the access unique.
        unsafe { self.request.raw_segments() }
    }

    /// Completes the I/O.
    pub fn complete(self, status: IoStatus) {
        let raw = self.request.raw;
        std::mem::forget(self);
        // SAFETY: not yet completed (completion consumes the BdevIo), and on
        // the submitting thread (BdevIo is !Send).
        unsafe { complete_raw(raw.as_ptr(), status) };
    }

    /// Hands the I/O to other threads: the [`DeferredIo`] is `Send`, and
    /// completing it queues the completion for this thread, where a poller
    /// of the channel completes it. Fails when that poller cannot be
    /// started (SPDK is out of memory for it): the I/O has then been
    /// completed as failed, here, instead of waiting forever.
    pub fn defer(self) -> Result<DeferredIo> {
        let raw = self.request.raw;
        // SAFETY: the bdev_io is live and ours; its module channel is one of
        // ours, whose context starts with a pointer to a ChannelCtx whose
        // first field (repr(C)) is its ChannelCompletions; this is the
        // channel's thread (BdevIo is !Send), the only one that touches it.
        let queue = unsafe {
            let ch = sys::spdk_bdev_io_get_io_channel(raw.as_ptr());
            let ctx = *(channel_ctx(ch) as *mut *mut ChannelCompletions);
            (*ctx).queue()
        };
        // On an error `self` drops here, which fails the I/O.
        let queue = queue?;
        std::mem::forget(self);
        Ok(DeferredIo {
            request: IoRequest { raw },
            completions: Some(queue),
        })
    }
}

impl Drop for BdevIo {
    fn drop(&mut self) {
        // SAFETY: an I/O dropped without completion: fail it, on its thread.
        unsafe { complete_raw(self.request.raw.as_ptr(), IoStatus::Failed) };
    }
}

/// A [`BdevIo`] handed to another thread (a worker doing blocking work),
/// read through `Deref` to [`IoRequest`]. Completing it, or dropping it,
/// queues the completion for the SPDK thread that submitted it, where SPDK
/// requires it to happen (see `bdev::completions` for why not a message).
pub struct DeferredIo {
    request: IoRequest,
    /// Taken by [`DeferredIo::complete`]; there until then.
    completions: Option<Arc<CompletionQueue>>,
}

// SAFETY: until completed, the bdev_io and its data buffers belong to the
// module, which may read and write them from any thread (they are ordinary
// memory); the completion itself is sent to the submitting thread.
unsafe impl Send for DeferredIo {}

impl std::ops::Deref for DeferredIo {
    type Target = IoRequest;
    fn deref(&self) -> &IoRequest {
        &self.request
    }
}

impl DeferredIo {
    /// The data buffers, to fill for a read.
    pub fn segments_mut(&mut self) -> impl Iterator<Item = &mut [u8]> {
        // SAFETY: bounded by &mut self, which makes the access unique.
        unsafe { self.request.raw_segments() }
    }

    /// Queues the completion for the submitting thread.
    pub fn complete(mut self, status: IoStatus) {
        self.finish(status);
    }

    fn finish(&mut self, status: IoStatus) {
        if let Some(queue) = self.completions.take() {
            queue.push(self.request.raw.as_ptr(), status);
        }
    }
}

impl Drop for DeferredIo {
    fn drop(&mut self) {
        // Uncompleted (complete takes the queue first): fail it.
        self.finish(IoStatus::Failed);
    }
}
