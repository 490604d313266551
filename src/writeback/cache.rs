//! A write-back cache's state and its host I/O, on the application thread:
//! writes go into the log and are acknowledged, reads come from the log or
//! the backing bdev, and I/O that must wait (for room in the log, for
//! destaging) waits here, within its limits. Destaging is `destage.rs`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::log::{Entry, Log};
use super::order::Order;
use crate::bdev::dma::DmaBuf;
use crate::bdev::io::{Descriptor, IoChannel};
use crate::bdev::module::{DeferredIo, IoStatus, IoType};
use crate::error::Result;
use crate::thread::{AppThread, Completer, Poller};

/// How often a cache looks whether the application is stopping.
const STOP_CHECK_US: u64 = 100_000;
/// Over how long the destage rate is measured.
const RATE_WINDOW_US: u64 = 1_000_000;

/// Figures that `bdev_get_bdevs` and the metrics show, kept where any
/// thread may read them.
#[derive(Debug, Default)]
pub(super) struct Stats {
    pub dirty: AtomicU64,
    pub destaged_writes: AtomicU64,
    pub destage_failures: AtomicU64,
    /// Writes waiting for room in the log.
    pub waiting_writes: AtomicU64,
    /// Writes destaged per second over the last [`RATE_WINDOW_US`], as
    /// `f64` bits.
    pub destage_rate: AtomicU64,
    pub base_failing: AtomicBool,
    /// The cache takes no more I/O (see [`Cache::fail`]).
    pub failed: AtomicBool,
    /// Why the cache failed (set once, with `failed`).
    pub failure: std::sync::Mutex<Option<String>>,
}

/// Where destaging is. Transitions: `Idle` → `Running` when a write is
/// handed out; `Running` → `Idle` when it is in the base, → `Retrying`
/// when the base failed it, `Retrying` → `Idle` when the retry is due;
/// any → `Halted` when the log cannot give the next write; any →
/// `Closed` when the bdev is gone. `Halted` and `Closed` are final.
pub(super) enum Destaging {
    /// Nothing under way: the next acknowledged write may go.
    Idle,
    /// A write is on its way to the base.
    Running,
    /// The base failed the last write: tried again when the poller fires
    /// (held for that; dropped, it is unregistered).
    Retrying { _poller: Poller },
    /// The log could not give a write: nothing after it can reach the
    /// base in order, so destaging stopped and the pool stays as it is
    /// for inspection.
    Halted,
    /// The bdev is gone: what is left stays in the pool for the next
    /// create.
    Closed,
}

/// Host I/O waiting in the cache.
#[derive(Default)]
pub(super) struct Waits {
    /// Writes waiting for room in the log, in arrival order, with when
    /// they give up.
    pub writes: VecDeque<(Option<Instant>, DeferredIo)>,
    /// Flushes waiting for destaging to reach a write, with when a host's
    /// gives up.
    pub flushes: Vec<(u64, Option<Instant>, FlushWaiter)>,
}

/// How destaging has been moving, for the waits' limits and the rate.
#[derive(Clone, Copy)]
pub(super) struct Progress {
    /// When destaging last completed a write (or the cache was made).
    pub last_destage: Instant,
    /// When the destage rate was last measured, and the count then.
    pub rate_sample: (Instant, u64),
}

/// A cache's state, on the application thread.
pub(super) struct Cache {
    pub name: String,
    pub block_size: usize,
    pub log: Log,
    pub order: RefCell<Order>,
    /// The backing bdev, claimed by the cache.
    pub desc: Descriptor,
    pub channel: IoChannel,
    pub waits: RefCell<Waits>,
    /// [`super::CacheParams::wait_timeout`].
    pub wait_timeout: Option<Duration>,
    pub progress: Cell<Progress>,
    /// The base has a volatile write cache: flush it before a destaged
    /// write's slot is freed.
    pub flush_base: bool,
    pub destaging: RefCell<Destaging>,
    /// Destage each pair of writes in reverse order (a test's control;
    /// `crate::test_hooks`).
    #[cfg(feature = "test-hooks")]
    pub out_of_order: bool,
    pub stop_watch: RefCell<Option<Poller>>,
    pub stats: Arc<Stats>,
}

/// What a cache is made of, for [`Cache::new`].
pub(super) struct Parts {
    pub name: String,
    pub log: Log,
    pub order: Order,
    pub desc: Descriptor,
    pub channel: IoChannel,
    pub wait_timeout: Option<Duration>,
    pub flush_base: bool,
    #[cfg(feature = "test-hooks")]
    pub out_of_order: bool,
}

impl Cache {
    pub fn new(parts: Parts) -> Rc<Cache> {
        let stats = Stats::default();
        stats.dirty.store(parts.order.dirty(), Ordering::Relaxed);
        let now = Instant::now();
        Rc::new(Cache {
            name: parts.name,
            block_size: parts.desc.block_size() as usize,
            log: parts.log,
            order: RefCell::new(parts.order),
            desc: parts.desc,
            channel: parts.channel,
            waits: RefCell::default(),
            wait_timeout: parts.wait_timeout,
            progress: Cell::new(Progress {
                last_destage: now,
                rate_sample: (now, 0),
            }),
            flush_base: parts.flush_base,
            destaging: RefCell::new(Destaging::Idle),
            #[cfg(feature = "test-hooks")]
            out_of_order: parts.out_of_order,
            stop_watch: RefCell::new(None),
            stats: Arc::new(stats),
        })
    }

    /// The bdev is gone: destaging stops for good, and what waits fails.
    pub fn close(&self) {
        // Dropping a retry poller unregisters it.
        let previous = std::mem::replace(&mut *self.destaging.borrow_mut(), Destaging::Closed);
        drop(previous);
        self.stop_watch.borrow_mut().take();
        self.fail_waiting();
    }

    fn closed(&self) -> bool {
        matches!(*self.destaging.borrow(), Destaging::Closed)
    }
}

/// Host I/O: writes into the log, reads from it or the backing bdev.
impl Cache {
    pub fn submit(self: &Rc<Self>, io: DeferredIo) {
        if self.stats.failed.load(Ordering::Relaxed) || self.closed() {
            return io.complete(IoStatus::Failed);
        }
        let gives_up = self.wait_timeout.map(|t| Instant::now() + t);
        match io.io_type() {
            IoType::Write => {
                if self.waits.borrow().writes.is_empty() {
                    self.write(gives_up, io);
                } else {
                    self.waits.borrow_mut().writes.push_back((gives_up, io));
                    self.count_waiting();
                }
            }
            IoType::Read => self.read(io),
            IoType::Flush => self.wait_destaged(gives_up, FlushWaiter::Host(io)),
            // Nothing is in flight below the cache for the host: what a
            // reset can end is what waits (for room, for destaging).
            IoType::Reset => {
                self.fail_waiting();
                io.complete(IoStatus::Success)
            }
            _ => io.complete(IoStatus::Failed),
        }
    }
}

/// Waiting (for room, for destaging), its limits, and failing.
impl Cache {
    /// Finishes `waiter` once everything acknowledged so far is in the
    /// backing bdev (or fails it at `gives_up`).
    pub fn wait_destaged(&self, gives_up: Option<Instant>, waiter: FlushWaiter) {
        let target = self.order.borrow().acked_up_to();
        if self.order.borrow().destaged_up_to() >= target {
            waiter.finish(true);
        } else {
            self.waits
                .borrow_mut()
                .flushes
                .push((target, gives_up, waiter));
        }
    }

    /// Fails the writes and flushes that waited past their time while
    /// destaging made no progress for as long (a base that answers slowly
    /// but surely, behind a long backlog, fails nothing).
    fn expire_waits(&self) {
        let now = Instant::now();
        let stalled = self
            .wait_timeout
            .is_some_and(|t| now.duration_since(self.progress.get().last_destage) >= t);
        if !stalled {
            return;
        }
        let mut writes = Vec::new();
        let expired = {
            let mut waits = self.waits.borrow_mut();
            // In arrival order, all with the same timeout.
            while let Some((Some(at), _)) = waits.writes.front() {
                if *at > now {
                    break;
                }
                writes.extend(waits.writes.pop_front().map(|(_, io)| io));
            }
            let flushes = std::mem::take(&mut waits.flushes);
            let (expired, still): (Vec<_>, Vec<_>) = flushes
                .into_iter()
                .partition(|(_, at, _)| at.is_some_and(|at| at <= now));
            waits.flushes = still;
            expired
        };
        if writes.is_empty() && expired.is_empty() {
            return;
        }
        self.count_waiting();
        crate::log::error(&format!(
            "{}: {} writes waited for room and {} flushes for destaging longer than {:?} \
             (base reachable: {}): failed",
            self.name,
            writes.len(),
            expired.len(),
            self.wait_timeout.unwrap_or_default(),
            !self.stats.base_failing.load(Ordering::Relaxed)
        ));
        for io in writes {
            io.complete(IoStatus::Failed);
        }
        for (_, _, waiter) in expired {
            waiter.finish(false);
        }
    }

    pub fn count_waiting(&self) {
        self.stats
            .waiting_writes
            .store(self.waits.borrow().writes.len() as u64, Ordering::Relaxed);
    }

    /// Measures the destage rate once per [`RATE_WINDOW_US`].
    fn sample_rate(&self) {
        let mut progress = self.progress.get();
        let (at, count) = progress.rate_sample;
        let elapsed = at.elapsed();
        if elapsed.as_micros() < u128::from(RATE_WINDOW_US) {
            return;
        }
        let now = self.stats.destaged_writes.load(Ordering::Relaxed);
        let rate = (now - count) as f64 / elapsed.as_secs_f64();
        self.stats
            .destage_rate
            .store(rate.to_bits(), Ordering::Relaxed);
        progress.rate_sample = (Instant::now(), now);
        self.progress.set(progress);
    }

    /// Once the application stops, I/O waiting for room or for destaging
    /// fails instead of holding the shutdown (what is not destaged stays in
    /// the pool for the next start).
    pub fn watch_for_stop(self: &Rc<Self>) -> Result<()> {
        let cache = Rc::downgrade(self);
        let poller = Poller::register(STOP_CHECK_US, move || {
            let Some(cache) = cache.upgrade() else {
                return false;
            };
            if crate::app::serving() && !cache.closed() {
                cache.sample_rate();
                cache.expire_waits();
                return false;
            }
            cache.fail_waiting();
            false
        })?;
        *self.stop_watch.borrow_mut() = Some(poller);
        Ok(())
    }

    /// The cache can no longer keep its promise: it takes no more I/O, and
    /// writes waiting for room fail (nothing after a write the log lost can
    /// be acknowledged in order). What the log holds stays there. With
    /// `halt`, destaging stops too (the log cannot give the next write), and
    /// flushes waiting for it fail; otherwise it goes on, so what was
    /// acknowledged still reaches the base.
    pub fn fail(&self, why: String, halt: bool) {
        crate::log::error(&format!(
            "{}: {why}; the cache fails all I/O from now on{}",
            self.name,
            if halt {
                " and stops destaging; the pool is left as it is"
            } else {
                ""
            }
        ));
        {
            let mut failure = crate::sync::lock(&self.stats.failure);
            failure.get_or_insert(why);
        }
        self.stats.failed.store(true, Ordering::Relaxed);
        if halt {
            self.halt();
            self.fail_waiting();
        } else {
            let writes = std::mem::take(&mut self.waits.borrow_mut().writes);
            self.count_waiting();
            for (_, io) in writes {
                io.complete(IoStatus::Failed);
            }
        }
    }

    /// Fails every write waiting for room and every flush waiting for
    /// destaging.
    pub fn fail_waiting(&self) {
        let Waits { writes, flushes } = std::mem::take(&mut *self.waits.borrow_mut());
        self.count_waiting();
        for (_, io) in writes {
            io.complete(IoStatus::Failed);
        }
        for (_, _, waiter) in flushes {
            waiter.finish(false);
        }
    }
}

/// Host writes and reads.
impl Cache {
    /// Logs a write, or queues it while the log is full.
    pub fn write(self: &Rc<Self>, gives_up: Option<Instant>, io: DeferredIo) {
        // Writes that waited for room come here too, after the cache may
        // have failed.
        if self.stats.failed.load(Ordering::Relaxed) {
            return io.complete(IoStatus::Failed);
        }
        let blocks = io.num_blocks();
        let lba = io.offset_blocks();
        if !self.order.borrow().fits(blocks) {
            crate::log::error(&format!(
                "{}: a write of {blocks} blocks is larger than the whole log ({} blocks)",
                self.name,
                self.log.slots()
            ));
            return io.complete(IoStatus::Failed);
        }
        let persisted = self.log.persisted_destaged();
        let Some(seqs) = self.order.borrow_mut().assign(blocks, persisted) else {
            self.waits.borrow_mut().writes.push_front((gives_up, io));
            self.count_waiting();
            return;
        };
        let data = gather(&io, self.block_size * blocks as usize);
        for (i, seq) in seqs.clone().enumerate() {
            let block = &data[i * self.block_size..(i + 1) * self.block_size];
            let entry = Entry {
                seq,
                lba: lba + i as u64,
            };
            if let Err(e) = self.log.write(entry, block) {
                // Nothing after this write can be acknowledged in order.
                io.complete(IoStatus::Failed);
                return self.fail(format!("writing write {seq} to the log: {e}"), false);
            }
        }
        // Written here, in order, every earlier write acknowledged: it is
        // the next to acknowledge, and acknowledged only if it is released.
        let acks = self.order.borrow_mut().durable(seqs.clone(), lba);
        if acks.0 != [seqs.clone()] {
            io.complete(IoStatus::Failed);
            return self.fail(
                format!(
                    "write {seqs:?} is durable but the log released {:?} (an earlier write is \
                     missing)",
                    acks.0
                ),
                false,
            );
        }
        self.stats
            .dirty
            .store(self.order.borrow().dirty(), Ordering::Relaxed);
        io.complete(IoStatus::Success);
        self.kick();
    }

    /// Reads each block from the log if it holds it, from the backing bdev
    /// otherwise (runs of such blocks in one read).
    fn read(self: &Rc<Self>, mut io: DeferredIo) {
        let bs = self.block_size;
        let lba = io.offset_blocks();
        let blocks = io.num_blocks() as usize;
        let mut data = vec![0u8; bs * blocks];
        let mut from_base: Vec<(usize, usize)> = Vec::new();
        for i in 0..blocks {
            let cached = self.order.borrow().cached(lba + i as u64);
            let hit = match cached {
                Some(seq) => match self.log.read(seq, &mut data[i * bs..(i + 1) * bs]) {
                    Ok(Some(_)) => true,
                    // The base has an older block: never serve it.
                    found => {
                        io.complete(IoStatus::Failed);
                        let why = match found {
                            Err(e) => format!("reading write {seq} from the log: {e}"),
                            _ => format!(
                                "write {seq} (block {}) is damaged in the log",
                                lba + i as u64
                            ),
                        };
                        return self.fail(why, true);
                    }
                },
                None => false,
            };
            if !hit {
                match from_base.last_mut() {
                    Some((start, len)) if *start + *len == i => *len += 1,
                    _ => from_base.push((i, 1)),
                }
            }
        }
        if from_base.is_empty() {
            scatter(&mut io, &data);
            return io.complete(IoStatus::Success);
        }
        let cache = Rc::clone(self);
        let spawned = crate::thread::spawn_local(async move {
            let spdk = match AppThread::here() {
                Ok(app) => app.spdk(),
                Err(_) => return io.complete(IoStatus::Failed),
            };
            for (start, len) in from_base {
                let Ok(buf) = DmaBuf::new(spdk, len * bs, 0) else {
                    return io.complete(IoStatus::Failed);
                };
                let (buf, result) = cache.channel.read(lba + start as u64, buf).await;
                if result.is_err() {
                    return io.complete(IoStatus::Failed);
                }
                data[start * bs..(start + len) * bs].copy_from_slice(&buf);
            }
            scatter(&mut io, &data);
            io.complete(IoStatus::Success);
        });
        if let Err(e) = spawned {
            crate::log::error(&format!("{}: reading the backing bdev: {e}", self.name));
        }
    }
}

/// Who waits for destaging to reach a point: a host's FLUSH, or
/// [`super::flush`]'s caller.
pub(super) enum FlushWaiter {
    Host(DeferredIo),
    Caller(Completer<bool>),
}

impl FlushWaiter {
    /// `destaged`: everything up to the point is in the backing bdev (else
    /// the wait was given up, as the cache or the application stops).
    pub fn finish(self, destaged: bool) {
        match self {
            FlushWaiter::Host(io) => io.complete(if destaged {
                IoStatus::Success
            } else {
                IoStatus::Failed
            }),
            FlushWaiter::Caller(done) => done.complete(destaged),
        }
    }
}

/// The I/O's buffers, as one contiguous copy of `len` bytes.
fn gather(io: &DeferredIo, len: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(len);
    for s in io.segments() {
        data.extend_from_slice(&s[..s.len().min(len - data.len())]);
    }
    data.resize(len, 0);
    data
}

/// Copies `data` into the I/O's buffers.
fn scatter(io: &mut DeferredIo, data: &[u8]) {
    let mut at = 0;
    for s in io.segments_mut() {
        let n = s.len().min(data.len() - at);
        s[..n].copy_from_slice(&data[at..at + n]);
        at += n;
    }
}
