//! One I/O submitted to a Rust bdev: what it asks for ([`IoRequest`]),
//! on its submitting thread ([`BdevIo`]) or handed to another
//! ([`DeferredIo`]), and its completion.

use std::ptr::NonNull;
use std::sync::Arc;

use super::channel::channel_ctx;
use super::{IoStatus, IoType};
use crate::bdev::completions::{ChannelCompletions, CompletionQueue};
use crate::bdev::status::complete_raw;
use crate::error::Result;
use crate::sys;

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
    pub(super) fn raw(&self) -> *mut sys::spdk_bdev_io {
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
    pub(super) unsafe fn new(raw: *mut sys::spdk_bdev_io) -> BdevIo {
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
