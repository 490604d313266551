//! What SPDK's bdev points at for a Rust device (`Disk<T>`), its making
//! and its lookup by type, and the C callbacks of SPDK's bdev function
//! table, each a trampoline into the [`BlockDevice`] under the crate's
//! panic policy.

use std::any::TypeId;
use std::ffi::{c_void, CString};

use serde_json::Value;

use super::channel::{channel_ctx, ChannelCtx};
use super::figures::Figures;
use super::request::BdevIo;
use super::{BdevProps, BlockDevice, IoStatus, IoType};
use crate::bdev::completions::ChannelCompletions;
use crate::error::{Error, Result};
use crate::sys;

/// What SPDK's bdev points at: the C struct, what the framework reads
/// without knowing `T` (at a fixed place: `repr(C)`, right after the C
/// struct), the bdev's strings and function table, and the Rust device.
#[repr(C)]
struct Disk<T: BlockDevice> {
    bdev: sys::spdk_bdev,
    header: Header,
    fn_table: sys::spdk_bdev_fn_table,
    name: CString,
    product: CString,
    /// False when spdk_bdev_register refused it: no destruct to report.
    registered: bool,
    device: T,
}

/// The part of every `Disk<T>` that code not knowing `T` reads.
struct Header {
    device_type: TypeId,
    figures: unsafe fn(*mut c_void) -> Option<Figures>,
    identity: unsafe fn(*mut c_void) -> Option<String>,
}

/// The prefix every `Disk<T>` shares (both `repr(C)`).
#[repr(C)]
struct DiskPrefix {
    bdev: sys::spdk_bdev,
    header: Header,
}

/// Makes the `Disk` for `device`, registers it with SPDK as `props.name` of
/// `module`. On failure nothing stays registered and the device is dropped.
///
/// # Safety
/// On the application thread; `module` is a registered Rust module.
pub(super) unsafe fn register<T: BlockDevice>(
    module: *mut sys::spdk_bdev_module,
    props: &BdevProps,
    device: T,
) -> Result<()> {
    let name = crate::cstr::to_c("bdev name", &props.name)?;
    let product = crate::cstr::to_c("product name", &props.product_name)?;
    let disk = Box::into_raw(Box::new(Disk {
        // SAFETY: spdk_bdev is a plain C struct for which all-zero is
        // the initial state SPDK expects (modules calloc it).
        bdev: unsafe { std::mem::zeroed() },
        header: Header {
            device_type: TypeId::of::<T>(),
            figures: figures_of::<T>,
            identity: identity_of::<T>,
        },
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
        (*bdev).module = module;
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
    Ok(())
}

/// The header of the Rust bdev `raw`.
///
/// # Safety
/// `raw` is a registered bdev of a Rust module (so its ctxt is a `Disk`),
/// looked up on the application thread; the header lives as long as it.
unsafe fn header<'a>(raw: *mut sys::spdk_bdev) -> &'a Header {
    // SAFETY: per the function's contract; the prefix is the first part of
    // every Disk<T>, and the header never changes after registration.
    unsafe { &*std::ptr::addr_of!((*((*raw).ctxt as *const DiskPrefix)).header) }
}

/// The device of the Rust bdev `raw`, if it is a `T`.
///
/// # Safety
/// As for [`header`]; the reference is used only while the bdev stays
/// registered (on the application thread, within the caller's turn: the
/// bdev is destructed only from a later message there).
pub(super) unsafe fn device_of<'a, T: BlockDevice>(raw: *mut sys::spdk_bdev) -> Option<&'a T> {
    // SAFETY: per the function's contract.
    let header = unsafe { header(raw) };
    (header.device_type == TypeId::of::<T>())
        // SAFETY: the header says the ctxt is a Disk<T>.
        .then(|| unsafe { disk::<T>((*raw).ctxt) }.device)
}

/// The figures of the Rust bdev `raw`'s device (a panic gives none).
///
/// # Safety
/// As for [`header`].
pub(super) unsafe fn figures(raw: *mut sys::spdk_bdev) -> Option<Figures> {
    // SAFETY: per the function's contract.
    unsafe { (header(raw).figures)((*raw).ctxt) }
}

/// What the Rust bdev `raw`'s device serves (a panic gives nothing).
///
/// # Safety
/// As for [`header`].
pub(super) unsafe fn identity(raw: *mut sys::spdk_bdev) -> Option<String> {
    // SAFETY: per the function's contract.
    unsafe { (header(raw).identity)((*raw).ctxt) }
}

/// # Safety
/// `ctx` is a registered `Disk<T>`.
unsafe fn figures_of<T: BlockDevice>(ctx: *mut c_void) -> Option<Figures> {
    // SAFETY: per the function's contract.
    let disk = unsafe { disk::<T>(ctx) };
    guard("figures", || disk.device.figures()).flatten()
}

/// # Safety
/// `ctx` is a registered `Disk<T>`.
unsafe fn identity_of<T: BlockDevice>(ctx: *mut c_void) -> Option<String> {
    // SAFETY: per the function's contract.
    let disk = unsafe { disk::<T>(ctx) };
    guard("identity", || disk.device.identity()).flatten()
}

impl<T: BlockDevice> Disk<T> {
    fn bdev_name(&self) -> String {
        self.name.to_string_lossy().into_owned()
    }
}

/// Runs module code from a C callback under the crate's panic policy: a
/// panic is counted and reported, and never unwinds into C (nor stops the
/// application, unlike app callbacks).
pub(super) fn guard<R>(what: &str, f: impl FnOnce() -> R) -> Option<R> {
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
