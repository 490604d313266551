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
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use crate::bdev::dma::DmaBuf;
use crate::error::{Error, Result};
use crate::sys;
use crate::thread::{AppThread, Spdk};

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

    /// What the bdev layer counted of the bdev's I/O since it was
    /// registered, on every channel (`spdk_bdev_get_device_stat`). The
    /// descriptor keeps the bdev open until the count is in, also when the
    /// bdev is removed meanwhile (and whether or not the future is still
    /// awaited).
    pub fn io_stat(&self) -> impl Future<Output = Result<IoStat>> {
        let inner = Rc::clone(&self.inner);
        let (done, counted) = crate::thread::completion("spdk_bdev_get_device_stat");
        let started = (|| {
            let desc = inner.desc.get();
            if desc.is_null() || inner.removed.get() {
                return Err(Error::NotFound(format!(
                    "bdev {:?} was removed",
                    inner.name
                )));
            }
            let ctx = Box::into_raw(Box::new(StatCtx {
                done,
                // SAFETY: a plain C struct of counters, valid all zero.
                stat: unsafe { std::mem::zeroed() },
                desc: Rc::clone(&inner),
            }));
            // SAFETY: the descriptor is open, so its bdev is registered;
            // `ctx` (and the stat inside it) is the callback's to free,
            // and SPDK calls it exactly once.
            unsafe {
                sys::spdk_bdev_get_device_stat(
                    sys::spdk_bdev_desc_get_bdev(desc),
                    &mut (*ctx).stat,
                    Some(device_stat_done),
                    ctx as *mut c_void,
                )
            };
            // Counted as in flight: a hot-remove meanwhile must not close
            // the descriptor while SPDK iterates over the bdev's channels
            // (the last close would unregister the bdev, which SPDK refuses
            // with "for_each calls outstanding", and the bdev never went).
            inner.in_flight.set(inner.in_flight.get() + 1);
            Ok(())
        })();
        async move {
            started?;
            let (rc, stat) = counted.await?;
            drop(inner);
            if rc != 0 {
                return Err(Error::spdk("spdk_bdev_get_device_stat", rc));
            }
            Ok(IoStat::from_c(&stat))
        }
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

/// A descriptor's I/O channel on one SPDK thread: where I/O is submitted.
pub struct IoChannel {
    chan: Rc<ChanInner>,
}

struct ChanInner {
    raw: Cell<*mut sys::spdk_io_channel>,
    desc: Rc<DescInner>,
}

impl ChanInner {
    fn put(&self) {
        let raw = self.raw.replace(std::ptr::null_mut());
        if !raw.is_null() && self.desc._spdk.check().is_ok() {
            // SAFETY: got from spdk_bdev_get_io_channel on this thread, put once.
            unsafe { sys::spdk_put_io_channel(raw) };
        }
    }
}

impl Drop for ChanInner {
    fn drop(&mut self) {
        self.put();
    }
}

/// What an I/O with a data buffer resolves to: the buffer, back, and the outcome.
pub type BufResult = (DmaBuf, Result<()>);

type Submit = unsafe extern "C" fn(
    *mut sys::spdk_bdev_desc,
    *mut sys::spdk_io_channel,
    *mut c_void,
    u64,
    u64,
    sys::spdk_bdev_io_completion_cb,
    *mut c_void,
) -> i32;

impl IoChannel {
    /// Reads `buf.len() / block_size` blocks from `offset_blocks` into `buf`.
    pub fn read(&self, offset_blocks: u64, buf: DmaBuf) -> impl Future<Output = BufResult> {
        self.with_buffer("read", offset_blocks, buf, sys::spdk_bdev_read_blocks)
    }

    /// Writes `buf` (a whole number of blocks) from `offset_blocks`.
    pub fn write(&self, offset_blocks: u64, buf: DmaBuf) -> impl Future<Output = BufResult> {
        self.with_buffer("write", offset_blocks, buf, sys::spdk_bdev_write_blocks)
    }

    /// Makes `num_blocks` blocks from `offset_blocks` read as zeros.
    pub fn write_zeroes(
        &self,
        offset_blocks: u64,
        num_blocks: u64,
    ) -> impl Future<Output = Result<()>> {
        self.ranged(
            "write_zeroes",
            offset_blocks,
            num_blocks,
            |d, c, o, n, cb, a| {
                // SAFETY: forwarded from submit's contract.
                unsafe { sys::spdk_bdev_write_zeroes_blocks(d, c, o, n, cb, a) }
            },
        )
    }

    /// Deallocates `num_blocks` blocks from `offset_blocks`.
    pub fn unmap(&self, offset_blocks: u64, num_blocks: u64) -> impl Future<Output = Result<()>> {
        self.ranged("unmap", offset_blocks, num_blocks, |d, c, o, n, cb, a| {
            // SAFETY: forwarded from submit's contract.
            unsafe { sys::spdk_bdev_unmap_blocks(d, c, o, n, cb, a) }
        })
    }

    /// Makes every completed write in the range durable.
    pub fn flush(&self, offset_blocks: u64, num_blocks: u64) -> impl Future<Output = Result<()>> {
        self.ranged("flush", offset_blocks, num_blocks, |d, c, o, n, cb, a| {
            // SAFETY: forwarded from submit's contract.
            unsafe { sys::spdk_bdev_flush_blocks(d, c, o, n, cb, a) }
        })
    }

    /// Resets the bdev: resolves once its outstanding I/O has finished.
    pub fn reset(&self) -> impl Future<Output = Result<()>> {
        let started = self.submit("reset", false, None, |d, c, cb, a| {
            // SAFETY: forwarded from submit's contract.
            unsafe { sys::spdk_bdev_reset(d, c, cb, a) }
        });
        async move {
            let (_, result) = finish(started).await;
            result
        }
    }

    fn with_buffer(
        &self,
        op: &'static str,
        offset_blocks: u64,
        buf: DmaBuf,
        submit: Submit,
    ) -> impl Future<Output = BufResult> {
        let desc = &self.chan.desc;
        let bs = desc.block_size as usize;
        let started = if buf.len() % bs != 0 {
            let len = buf.len();
            Err((
                Some(buf),
                Error::InvalidArgument(format!(
                    "{op} on bdev {}: a buffer of {len} bytes is not a whole number of {bs}-byte \
                     blocks",
                    desc.name
                )),
            ))
        } else {
            let num_blocks = (buf.len() / bs) as u64;
            match desc.check_range(op, offset_blocks, num_blocks) {
                Err(e) => Err((Some(buf), e)),
                Ok(()) => self.submit(op, op == "write", Some(buf), move |d, c, cb, a| {
                    // SAFETY: forwarded from submit's contract: the buffer
                    // (at `a`'s IoCtx) holds num_blocks blocks.
                    unsafe {
                        let ctx = &mut *(a as *mut IoCtx);
                        let data = ctx
                            .buf
                            .as_mut()
                            .map_or(std::ptr::null_mut(), |b| b.as_mut_ptr() as *mut c_void);
                        submit(d, c, data, offset_blocks, num_blocks, cb, a)
                    }
                }),
            }
        };
        async move {
            let (buf, result) = finish(started).await;
            (buf.expect("an I/O with a buffer gives it back"), result)
        }
    }

    fn ranged(
        &self,
        op: &'static str,
        offset_blocks: u64,
        num_blocks: u64,
        call: impl FnOnce(
            *mut sys::spdk_bdev_desc,
            *mut sys::spdk_io_channel,
            u64,
            u64,
            sys::spdk_bdev_io_completion_cb,
            *mut c_void,
        ) -> i32,
    ) -> impl Future<Output = Result<()>> {
        let writes = op != "flush";
        let started = match self.chan.desc.check_range(op, offset_blocks, num_blocks) {
            Err(e) => Err((None, e)),
            Ok(()) => self.submit(op, writes, None, move |d, c, cb, a| {
                call(d, c, offset_blocks, num_blocks, cb, a)
            }),
        };
        async move {
            let (_, result) = finish(started).await;
            result
        }
    }

    /// Starts an I/O: `call` gets the descriptor, channel, callback and its
    /// argument (an IoCtx holding `buf`), and returns SPDK's rc.
    fn submit(
        &self,
        op: &'static str,
        writes: bool,
        buf: Option<DmaBuf>,
        call: impl FnOnce(
            *mut sys::spdk_bdev_desc,
            *mut sys::spdk_io_channel,
            sys::spdk_bdev_io_completion_cb,
            *mut c_void,
        ) -> i32,
    ) -> Started {
        let desc = &self.chan.desc;
        if let Err(e) = desc._spdk.check().and_then(|_| desc.check_present()) {
            return Err((buf, e));
        }
        if writes && !desc.writable {
            return Err((
                buf,
                Error::InvalidArgument(format!(
                    "{op} on bdev {}: the descriptor was opened read-only",
                    desc.name
                )),
            ));
        }
        let slot = Rc::new(Slot::default());
        let ctx = Box::into_raw(Box::new(IoCtx {
            op,
            buf,
            slot: slot.clone(),
            chan: self.chan.clone(),
        }));
        let rc = call(
            desc.desc.get(),
            self.chan.raw.get(),
            Some(io_done),
            ctx as *mut c_void,
        );
        if rc != 0 {
            // SAFETY: SPDK refused the I/O, so the callback will not run and
            // the context is still ours.
            let ctx = unsafe { Box::from_raw(ctx) };
            let error = match -rc {
                libc::ENOMEM => Error::spdk(
                    format!("{op} on bdev {}: no bdev_io free now, retry", desc.name),
                    rc,
                ),
                _ => Error::spdk(format!("{op} on bdev {}", desc.name), rc),
            };
            return Err((ctx.buf, error));
        }
        desc.in_flight.set(desc.in_flight.get() + 1);
        Ok(IoFuture { slot })
    }
}

impl DescInner {
    fn check_range(&self, op: &str, offset: u64, count: u64) -> Result<()> {
        if offset
            .checked_add(count)
            .is_none_or(|end| end > self.num_blocks)
        {
            return Err(Error::InvalidArgument(format!(
                "{op} on bdev {}: blocks {offset}+{count} are out of range (it has {})",
                self.name, self.num_blocks
            )));
        }
        Ok(())
    }
}

type Started = std::result::Result<IoFuture, (Option<DmaBuf>, Error)>;

async fn finish(started: Started) -> (Option<DmaBuf>, Result<()>) {
    match started {
        Err((buf, e)) => (buf, Err(e)),
        Ok(fut) => {
            let done = fut.await;
            (done.buf, done.result)
        }
    }
}

struct IoCtx {
    op: &'static str,
    buf: Option<DmaBuf>,
    slot: Rc<Slot>,
    chan: Rc<ChanInner>,
}

#[derive(Default)]
struct Slot {
    done: RefCell<Option<IoDone>>,
    waker: RefCell<Option<Waker>>,
}

struct IoDone {
    buf: Option<DmaBuf>,
    result: Result<()>,
}

struct IoFuture {
    slot: Rc<Slot>,
}

impl Future for IoFuture {
    type Output = IoDone;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<IoDone> {
        if let Some(done) = self.slot.done.borrow_mut().take() {
            return Poll::Ready(done);
        }
        *self.slot.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

extern "C" fn io_done(bdev_io: *mut sys::spdk_bdev_io, success: bool, arg: *mut c_void) {
    // SAFETY: `arg` is the IoCtx submit leaked; SPDK calls back once, on
    // the channel's thread.
    let ctx = unsafe { Box::from_raw(arg as *mut IoCtx) };
    let (mut sct, mut sc, mut cdw0) = (0, 0, 0);
    // SAFETY: the bdev_io is live until freed here, once.
    unsafe {
        sys::spdk_bdev_io_get_nvme_status(bdev_io, &mut cdw0, &mut sct, &mut sc);
        sys::spdk_bdev_free_io(bdev_io);
    }
    let IoCtx {
        op,
        buf,
        slot,
        chan,
    } = *ctx;
    let desc = chan.desc.clone();
    drop(chan);
    desc.in_flight.set(desc.in_flight.get() - 1);
    let result = if desc.removed.get() {
        Err(Error::BdevRemoved {
            bdev: desc.name.clone(),
        })
    } else if success {
        Ok(())
    } else {
        Err(Error::BdevIo {
            op,
            bdev: desc.name.clone(),
            sct,
            sc,
        })
    };
    *slot.done.borrow_mut() = Some(IoDone { buf, result });
    // A waker is the executor's code: a panic in it must not unwind into
    // SPDK (an `extern "C"` frame aborts the process).
    if let Some(waker) = slot.waker.borrow_mut().take() {
        crate::app::catch_panic(|| waker.wake());
    }
    desc.release_if_removed();
}

/// What a bdev's I/O came to ([`Descriptor::io_stat`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IoStat {
    /// Reads completed.
    pub reads: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Time the reads took, summed.
    pub read_seconds: f64,
    /// Writes completed.
    pub writes: u64,
    /// Bytes written.
    pub written_bytes: u64,
    /// Time the writes took, summed.
    pub write_seconds: f64,
}

impl IoStat {
    fn from_c(stat: &sys::spdk_bdev_io_stat) -> IoStat {
        let hz = if stat.ticks_rate > 0 {
            stat.ticks_rate
        } else {
            // SAFETY: spdk_get_ticks_hz only reads the environment's tick rate.
            unsafe { sys::spdk_get_ticks_hz() }.max(1)
        } as f64;
        IoStat {
            reads: stat.num_read_ops,
            read_bytes: stat.bytes_read,
            read_seconds: stat.read_latency_ticks as f64 / hz,
            writes: stat.num_write_ops,
            written_bytes: stat.bytes_written,
            write_seconds: stat.write_latency_ticks as f64 / hz,
        }
    }
}

/// [`Descriptor::io_stat`]'s callback argument: where SPDK sums the
/// counts, and who waits for them.
struct StatCtx {
    done: crate::thread::Completer<(i32, sys::spdk_bdev_io_stat)>,
    stat: sys::spdk_bdev_io_stat,
    /// Held in flight until SPDK's iteration is over.
    desc: Rc<DescInner>,
}

extern "C" fn device_stat_done(
    _bdev: *mut sys::spdk_bdev,
    _stat: *mut sys::spdk_bdev_io_stat,
    cb_arg: *mut c_void,
    rc: i32,
) {
    // SAFETY: `cb_arg` is the StatCtx io_stat leaked for this one call.
    let ctx = unsafe { Box::from_raw(cb_arg as *mut StatCtx) };
    let StatCtx { done, stat, desc } = *ctx;
    done.complete((rc, stat));
    // SPDK ended its iteration before this call: a close now may
    // unregister the bdev.
    desc.in_flight.set(desc.in_flight.get() - 1);
    desc.release_if_removed();
}
