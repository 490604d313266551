//! What each pmem bdev of this module counts and shows, for
//! `bdev_get_bdevs` and the metrics: reactors and workers add to the
//! counts, the application thread reads them.

use crate::bdev::module::{Figure, Figures};
use crate::sync::{AtomicU64, Ordering};

/// Counts a bdev's reactors and workers add to.
#[derive(Default)]
pub(super) struct Counts {
    /// I/O that waited for the workers' CPU budget.
    pub budget_waits: AtomicU64,
    /// Reads that found a block libpmemblk cannot read (a block marked in
    /// error with `pmemblk_set_error`, or a media error).
    pub media_errors: AtomicU64,
}

/// A pmem bdev of this module, as the metrics show it.
pub(super) fn figures(
    blocks: u64,
    block_size: usize,
    io_threads: usize,
    queued_ios: usize,
    counts: &Counts,
) -> Figures {
    let mut values = crate::bdev::pool_figures(blocks, block_size as u64);
    values.extend([
        Figure::gauge(
            "pmem_io_threads",
            "Worker threads doing the pool I/O of each pmem_rs bdev (0: on the reactor)",
            io_threads,
        ),
        Figure::gauge(
            "pmem_queued_ios",
            "I/O queued for or running on each pmem_rs bdev's workers",
            queued_ios,
        ),
        Figure::counter(
            "pmem_budget_waits",
            "I/O of each pmem_rs bdev that waited for the workers' CPU budget",
            counts.budget_waits.load(Ordering::Relaxed),
        ),
        Figure::counter(
            "pmem_media_errors",
            "Reads of each pmem_rs bdev failed by a block in error (pmemblk_set_error or a media error)",
            counts.media_errors.load(Ordering::Relaxed),
        ),
    ]);
    Figures {
        labels: vec![("module", super::MODULE_NAME.to_string())],
        values,
    }
}
