//! What the bdev layer counted of a bdev's I/O ([`Descriptor::io_stat`]).

use std::ffi::c_void;
use std::future::Future;
use std::rc::Rc;

use super::{DescInner, Descriptor};
use crate::error::{Error, Result};
use crate::sys;

impl Descriptor {
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
