//! A descriptor's I/O channel and the I/O submitted on it: each a future
//! that owns its buffer until SPDK completes it.

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::bdev::dma::DmaBuf;
use crate::error::{Error, Result};
use crate::sys;

use super::DescInner;

/// A descriptor's I/O channel on one SPDK thread: where I/O is submitted.
pub struct IoChannel {
    pub(super) chan: Rc<ChanInner>,
}

/// The channel, shared by its handle and the descriptor (which puts every
/// channel at hot-remove).
pub(super) struct ChanInner {
    pub(super) raw: Cell<*mut sys::spdk_io_channel>,
    pub(super) desc: Rc<DescInner>,
}

impl ChanInner {
    pub(super) fn put(&self) {
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
