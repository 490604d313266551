//! What each pmem bdev of this module counts, for `bdev_get_bdevs` and the
//! metrics: kept by bdev name from registration to destruct, read on the
//! application thread while reactors and workers add to the counts.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::sync::{lock, Arc, AtomicU64, InFlight, Mutex, Ordering};
use crate::thread::AppThread;

/// Counts a bdev's reactors and workers add to.
#[derive(Default)]
pub(super) struct Counts {
    /// I/O that waited for the workers' CPU budget.
    pub budget_waits: AtomicU64,
    /// Reads that found a block libpmemblk cannot read (a block marked in
    /// error with `pmemblk_set_error`, or a media error).
    pub media_errors: AtomicU64,
}

/// Where a registered bdev's figures come from.
pub(super) struct Source {
    pub blocks: u64,
    pub block_size: usize,
    pub io_threads: usize,
    pub counts: Arc<Counts>,
    /// Its workers' I/O, queued or running (none without workers).
    pub in_flight: Option<Arc<InFlight>>,
}

fn sources() -> &'static Mutex<BTreeMap<String, Source>> {
    static SOURCES: std::sync::OnceLock<Mutex<BTreeMap<String, Source>>> =
        std::sync::OnceLock::new();
    SOURCES.get_or_init(Default::default)
}

pub(super) fn registered(name: &str, source: Source) {
    lock(sources()).insert(name.to_string(), source);
}

pub(super) fn destructed(name: &str) {
    lock(sources()).remove(name);
}

/// One pmem bdev of this module, now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmemFigures {
    /// The bdev's name.
    pub name: String,
    /// The pool's blocks.
    pub blocks: u64,
    /// The pool's block size, in bytes.
    pub block_size: usize,
    /// Worker threads doing its pool I/O (0: done on the reactor).
    pub io_threads: usize,
    /// I/O queued for or running on its workers.
    pub queued_ios: usize,
    /// I/O that waited for the workers' CPU budget, so far.
    pub budget_waits: u64,
    /// Reads failed by a block in error, so far.
    pub media_errors: u64,
}

/// Every pmem bdev of this module, by name.
pub fn figures(app: AppThread) -> Result<Vec<PmemFigures>> {
    app.check()?;
    Ok(lock(sources())
        .iter()
        .map(|(name, s)| PmemFigures {
            name: name.clone(),
            blocks: s.blocks,
            block_size: s.block_size,
            io_threads: s.io_threads,
            queued_ios: s.in_flight.as_ref().map_or(0, |f| f.count()),
            budget_waits: s.counts.budget_waits.load(Ordering::Relaxed),
            media_errors: s.counts.media_errors.load(Ordering::Relaxed),
        })
        .collect())
}
