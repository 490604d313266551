//! I/O to a bdev from Rust: a [`Descriptor`] (SPDK's `spdk_bdev_desc`, with
//! hot-remove), an [`IoChannel`] on the calling SPDK thread, and reads,
//! writes, write-zeroes, unmaps, flushes and resets as futures that resolve
//! on that thread.
//!
//! ```no_run
//! use spdk_pmem::bdev::{dma::DmaBuf, io::Descriptor};
//! use spdk_pmem::thread::{self, AppThread};
//!
//! # fn f() -> spdk_pmem::Result<()> {
//! thread::spawn_local(async {
//!     let app = AppThread::here().unwrap();
//!     let spdk = app.spdk();
//!     let desc = Descriptor::open(app, "pmdk0", true).unwrap();
//!     let ch = desc.channel().unwrap();
//!     let mut buf = DmaBuf::new(spdk, desc.block_size() as usize, 0).unwrap();
//!     buf.fill(0xa5);
//!     let (buf, written) = ch.write(0, buf).await;
//!     written.unwrap();
//!     let (buf, read) = ch.read(0, buf).await;
//!     read.unwrap();
//!     assert!(buf.iter().all(|b| *b == 0xa5));
//! })?;
//! # Ok(()) }
//! ```
//!
//! Ownership: everything here is `!Send` and stays on the SPDK thread that
//! opened the descriptor (open one descriptor per thread). Buffers move into
//! an I/O and come back with its result, so SPDK never writes into memory
//! Rust has freed or lent elsewhere, even when a future is dropped early.
//!
//! Hot-remove: when the bdev is unregistered, I/O not yet submitted fails
//! with [`Error::BdevRemoved`]; I/O in flight completes as SPDK completes it
//! but reports `BdevRemoved` too (its outcome cannot be relied on); once
//! none is in flight the channels are released and the descriptor closed,
//! which lets the unregistration finish.

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::rc::{Rc, Weak};

use crate::error::{Error, Result};
use crate::sys;
use crate::thread::{AppThread, Spdk};

mod channel;
mod stat;

use channel::ChanInner;
pub use channel::{BufResult, IoChannel};
pub use stat::IoStat;

/// An open bdev. Dropping the last handle (with its channels) closes it.
pub struct Descriptor {
    inner: Rc<DescInner>,
}

struct DescInner {
    desc: Cell<*mut sys::spdk_bdev_desc>,
    name: String,
    writable: bool,
    block_size: u32,
    num_blocks: u64,
    removed: Cell<bool>,
    /// A module's claim on the bdev, released as the descriptor closes.
    claimed: Cell<bool>,
    in_flight: Cell<usize>,
    channels: RefCell<Vec<Weak<ChanInner>>>,
    event_ctx: Cell<*mut EventCtx>,
    _spdk: Spdk,
}

/// What SPDK's event callback gets: a weak link, freed when the descriptor closes.
struct EventCtx {
    inner: Weak<DescInner>,
}

impl Descriptor {
    /// Opens the bdev `name` (`spdk_bdev_open_ext`), for writing or
    /// read-only, on the application thread: SPDK looks the name up in its
    /// bdev list, which registration changes there without a lock.
    ///
    /// ```compile_fail,E0308
    /// # use spdk_pmem::{bdev::io::Descriptor, thread::Spdk};
    /// let spdk = Spdk::here().unwrap();
    /// let desc = Descriptor::open(spdk, "pmdk0", true);
    /// ```
    pub fn open(app: AppThread, name: &str, write: bool) -> Result<Descriptor> {
        let spdk = app.check()?.spdk();
        let c_name = crate::cstr::to_c("bdev name", name)?;
        let event_ctx = Box::into_raw(Box::new(EventCtx { inner: Weak::new() }));
        let mut desc = std::ptr::null_mut();
        // SAFETY: valid name; event_ctx lives until the descriptor closes
        // (DescInner::close frees it), after which SPDK sends no event.
        let rc = unsafe {
            sys::spdk_bdev_open_ext(
                c_name.as_ptr(),
                write,
                Some(bdev_event),
                event_ctx as *mut c_void,
                &mut desc,
            )
        };
        if rc != 0 {
            // SAFETY: SPDK refused the open, so it holds no event_ctx.
            drop(unsafe { Box::from_raw(event_ctx) });
            return Err(match -rc {
                libc::ENODEV => Error::NotFound(format!("bdev {name:?} does not exist")),
                libc::EPERM => Error::spdk(
                    format!("opening bdev {name:?} for writing: another module claimed it"),
                    rc,
                ),
                _ => Error::spdk(format!("spdk_bdev_open_ext({name})"), rc),
            });
        }
        // SAFETY: `desc` is open, so its bdev is registered.
        let (block_size, num_blocks) = unsafe {
            let bdev = sys::spdk_bdev_desc_get_bdev(desc);
            (
                sys::spdk_bdev_get_block_size(bdev),
                sys::spdk_bdev_get_num_blocks(bdev),
            )
        };
        let inner = Rc::new(DescInner {
            desc: Cell::new(desc),
            name: name.to_string(),
            writable: write,
            block_size,
            num_blocks,
            removed: Cell::new(false),
            claimed: Cell::new(false),
            in_flight: Cell::new(0),
            channels: RefCell::new(Vec::new()),
            event_ctx: Cell::new(event_ctx),
            _spdk: spdk,
        });
        // SAFETY: event_ctx is ours until close; events arrive on this
        // thread, as a message, so not during this assignment.
        unsafe { (*event_ctx).inner = Rc::downgrade(&inner) };
        Ok(Descriptor { inner })
    }

    /// The bdev's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Bytes per block.
    pub fn block_size(&self) -> u32 {
        self.inner.block_size
    }
    /// Number of blocks.
    pub fn num_blocks(&self) -> u64 {
        self.inner.num_blocks
    }
}

/// Claims and what the bdev offers.
impl Descriptor {
    /// Claims the bdev for `module` (`spdk_bdev_module_claim_bdev`), as a
    /// virtual bdev does with its base: no other module can claim it or
    /// open it for writing (a namespace, another cache) while this
    /// descriptor is open; the claim goes when it closes.
    pub fn claim(&self, module: &crate::bdev::module::Module) -> Result<()> {
        if self.inner.claimed.get() {
            return Ok(());
        }
        let bdev = self.with_bdev(|bdev| bdev)?;
        // SAFETY: the bdev is registered (the descriptor is open); the
        // module is registered for the life of the process.
        let rc = unsafe {
            sys::spdk_bdev_module_claim_bdev(bdev, self.inner.desc.get(), module.as_raw())
        };
        if rc != 0 {
            // SAFETY: as above; a claimed bdev's claim_module is a registered module.
            let holder = unsafe {
                let m = (*bdev).internal.claim_module;
                if m.is_null() || (*m).name.is_null() {
                    "another module".to_string()
                } else {
                    format!("module {}", crate::cstr::from_c((*m).name))
                }
            };
            return Err(Error::spdk(
                format!(
                    "bdev {:?} is in use: {holder} claimed it (a namespace or a cache \
                     already has it)",
                    self.inner.name
                ),
                rc,
            ));
        }
        self.inner.claimed.set(true);
        Ok(())
    }

    /// Whether the bdev completes writes before they are durable (a
    /// volatile write cache, which a flush empties).
    pub fn has_write_cache(&self) -> Result<bool> {
        self.with_bdev(|bdev| {
            // SAFETY: an open descriptor's bdev is registered.
            unsafe { sys::spdk_bdev_has_write_cache(bdev) }
        })
    }

    /// Whether the bdev takes flushes (`spdk_bdev_io_type_supported`).
    pub fn supports_flush(&self) -> Result<bool> {
        self.with_bdev(|bdev| {
            // SAFETY: an open descriptor's bdev is registered.
            unsafe { sys::spdk_bdev_io_type_supported(bdev, sys::SPDK_BDEV_IO_TYPE_FLUSH) }
        })
    }

    fn with_bdev<R>(&self, f: impl FnOnce(*mut sys::spdk_bdev) -> R) -> Result<R> {
        self.inner._spdk.check()?;
        self.inner.check_present()?;
        // SAFETY: not removed, so the descriptor is open (not closed).
        Ok(f(unsafe {
            sys::spdk_bdev_desc_get_bdev(self.inner.desc.get())
        }))
    }

    /// Whether the bdev was hot-removed (the descriptor then closes as soon
    /// as no I/O is in flight).
    pub fn is_removed(&self) -> bool {
        self.inner.removed.get()
    }

    /// An I/O channel on the calling thread (`spdk_bdev_get_io_channel`).
    pub fn channel(&self) -> Result<IoChannel> {
        self.inner._spdk.check()?;
        self.inner.check_present()?;
        // SAFETY: the descriptor is open (not removed, so not closed).
        let raw = unsafe { sys::spdk_bdev_get_io_channel(self.inner.desc.get()) };
        if raw.is_null() {
            return Err(Error::spdk(
                format!("spdk_bdev_get_io_channel({})", self.inner.name),
                -libc::ENOMEM,
            ));
        }
        let chan = Rc::new(ChanInner {
            raw: Cell::new(raw),
            desc: self.inner.clone(),
        });
        let mut channels = self.inner.channels.borrow_mut();
        channels.retain(|c| c.strong_count() > 0);
        channels.push(Rc::downgrade(&chan));
        Ok(IoChannel { chan })
    }
}

impl DescInner {
    fn check_present(&self) -> Result<()> {
        if self.removed.get() {
            Err(Error::BdevRemoved {
                bdev: self.name.clone(),
            })
        } else {
            Ok(())
        }
    }

    /// After a hot-remove, once nothing is in flight: release every channel
    /// and close the descriptor, so the unregistration can finish.
    fn release_if_removed(&self) {
        if !self.removed.get() || self.in_flight.get() > 0 {
            return;
        }
        for chan in self.channels.borrow().iter().filter_map(Weak::upgrade) {
            chan.put();
        }
        self.close();
    }

    fn close(&self) {
        let desc = self.desc.replace(std::ptr::null_mut());
        if desc.is_null() || self._spdk.check().is_err() {
            // Kept past its application (a leaked future, say): SPDK's bdev
            // layer is gone, so there is nothing left to close into.
            return;
        }
        // SAFETY: open until now, closed once (the pointer is cleared), on
        // the thread that opened it (DescInner is !Send); the claim was
        // this descriptor's. After the close SPDK calls no event callback,
        // so its context can go.
        unsafe {
            if self.claimed.replace(false) {
                sys::spdk_bdev_module_release_bdev(sys::spdk_bdev_desc_get_bdev(desc));
            }
            sys::spdk_bdev_close(desc);
            drop(Box::from_raw(self.event_ctx.replace(std::ptr::null_mut())));
        }
    }
}

impl Drop for DescInner {
    fn drop(&mut self) {
        self.close();
    }
}

extern "C" fn bdev_event(kind: u32, _bdev: *mut sys::spdk_bdev, ctx: *mut c_void) {
    crate::app::catch_panic(|| {
        if kind != sys::SPDK_BDEV_EVENT_REMOVE {
            return;
        }
        // SAFETY: `ctx` is the EventCtx of a descriptor not yet closed (SPDK
        // sends no event after spdk_bdev_close), on the descriptor's thread.
        let Some(inner) = (unsafe { &*(ctx as *const EventCtx) }).inner.upgrade() else {
            return;
        };
        inner.removed.set(true);
        inner.release_if_removed();
    });
}
