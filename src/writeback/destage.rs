//! Destaging: the writes a cache's log holds go to the backing bdev, one
//! after another in the order they were acknowledged, and the states of
//! [`Destaging`] move with them.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::cache::{Cache, Destaging, Progress};
use super::order::Write;
use crate::bdev::dma::DmaBuf;
use crate::error::Error;
use crate::thread::{AppThread, Poller};

/// How long destaging waits after the backing bdev failed a write.
const RETRY_US: u64 = 1_000_000;

/// Destaging: the writes the log holds go to the backing bdev, one after
/// another in the order they were acknowledged.
impl Cache {
    /// Starts destaging the next acknowledged write, if destaging is idle
    /// (`Idle` → `Running`).
    pub fn kick(self: &Rc<Self>) {
        if !matches!(*self.destaging.borrow(), Destaging::Idle) {
            return;
        }
        let Some(write) = self.order.borrow_mut().next_destage() else {
            return;
        };
        *self.destaging.borrow_mut() = Destaging::Running;
        let cache = Rc::clone(self);
        let handed_out = write.clone();
        let spawned = crate::thread::spawn_local(async move {
            let outcome = cache.destage(&write).await;
            cache.finished(Destaging::Running, Destaging::Idle);
            match outcome {
                Ok(()) => cache.kick(),
                Err(Destage::Base(e)) => cache.destage_failed(&write, e),
                Err(Destage::Log(why)) => {
                    cache.order.borrow_mut().destage_failed(&write);
                    cache.fail(why, true);
                }
            }
        });
        if let Err(e) = spawned {
            self.finished(Destaging::Running, Destaging::Idle);
            self.order.borrow_mut().destage_failed(&handed_out);
            crate::log::error(&format!("{}: starting to destage: {e}", self.name));
        }
    }

    /// Writes `write` to the backing bdev and records it.
    async fn destage(self: &Rc<Self>, write: &Write) -> std::result::Result<(), Destage> {
        // The control breaks the order: the write after this one first.
        #[cfg(feature = "test-hooks")]
        let second = self
            .out_of_order
            .then(|| self.order.borrow().write_after_next())
            .flatten();
        #[cfg(not(feature = "test-hooks"))]
        let second: Option<Write> = None;
        if let Some(second) = &second {
            self.write_back(second).await?;
        }
        self.write_back(write).await?;
        if self.flush_base {
            (self.channel.flush(0, self.desc.num_blocks()).await).map_err(Destage::Base)?;
        }
        let mut order = self.order.borrow_mut();
        order.destaged(write);
        if let Some(second) = &second {
            // Hand the second of a swapped pair out too.
            order.next_destage();
            order.destaged(second);
        }
        drop(order);
        let last_write = second.as_ref().unwrap_or(write);
        let last = *last_write.seqs.end();
        if let Err(e) = self.log.set_destaged(last) {
            // The base has the writes (flushes may finish), but their slots
            // stay taken: writes waiting for room would wait forever.
            self.fail(
                format!("persisting that write {last} is destaged: {e}"),
                false,
            );
        }
        self.progress.set(Progress {
            last_destage: Instant::now(),
            ..self.progress.get()
        });
        let blocks = write.blocks() + second.as_ref().map_or(0, Write::blocks);
        self.stats
            .destaged_writes
            .fetch_add(blocks, Ordering::Relaxed);
        self.stats
            .dirty
            .store(self.order.borrow().dirty(), Ordering::Relaxed);
        if self.stats.base_failing.swap(false, Ordering::Relaxed) {
            crate::log::error(&format!("{}: destaging works again", self.name));
        }
        let done = {
            let mut waits = self.waits.borrow_mut();
            let flushes = std::mem::take(&mut waits.flushes);
            let (done, still): (Vec<_>, Vec<_>) =
                flushes.into_iter().partition(|(t, _, _)| *t <= last);
            waits.flushes = still;
            done
        };
        for (_, _, waiter) in done {
            waiter.finish(true);
        }
        // Slots are free again: writes that waited for room go in order.
        loop {
            // Not `while let`: its scrutinee's borrow would last the body.
            let Some((gives_up, io)) = self.waits.borrow_mut().writes.pop_front() else {
                break;
            };
            self.count_waiting();
            let before = self.waits.borrow().writes.len();
            self.write(gives_up, io);
            if self.waits.borrow().writes.len() > before {
                break;
            }
        }
        Ok(())
    }

    /// Writes `write`'s blocks from the log to the backing bdev, in one
    /// write of the base.
    async fn write_back(&self, write: &Write) -> std::result::Result<(), Destage> {
        let spdk = AppThread::here().map_err(Destage::Base)?.spdk();
        let bs = self.block_size;
        let mut buf = DmaBuf::new(spdk, bs * write.blocks() as usize, 0).map_err(Destage::Base)?;
        for (i, seq) in write.seqs.clone().enumerate() {
            let expected = write.lba + i as u64;
            match self.log.read(seq, &mut buf[i * bs..(i + 1) * bs]) {
                Ok(Some(lba)) if lba == expected => {}
                Ok(Some(lba)) => {
                    return Err(Destage::Log(format!(
                        "write {seq} is of block {lba} in the log, not {expected}"
                    )))
                }
                Ok(None) => return Err(Destage::Log(format!("write {seq} is damaged in the log"))),
                Err(e) => {
                    return Err(Destage::Log(format!(
                        "reading write {seq} from the log: {e}"
                    )))
                }
            }
        }
        let (_buf, result) = self.channel.write(write.lba, buf).await;
        result.map_err(Destage::Base)
    }

    /// The backing bdev failed: the write stays in the log, and destaging
    /// tries again later (`Idle` → `Retrying`, unless closed or halted
    /// meanwhile).
    fn destage_failed(self: &Rc<Self>, write: &Write, e: Error) {
        let seq = *write.seqs.start();
        self.order.borrow_mut().destage_failed(write);
        self.stats.destage_failures.fetch_add(1, Ordering::Relaxed);
        if !self.stats.base_failing.swap(true, Ordering::Relaxed) {
            crate::log::error(&format!(
                "{}: destaging write {seq}: {e}; writes stay in the cache, retried every {} s",
                self.name,
                RETRY_US / 1_000_000
            ));
        }
        if !matches!(*self.destaging.borrow(), Destaging::Idle) {
            return;
        }
        let cache = Rc::downgrade(self);
        match Poller::register(RETRY_US, move || {
            if let Some(cache) = cache.upgrade() {
                // Unregisters this poller; its closure lives to the end of
                // this call (thread::Poller).
                if cache.finished_retry() {
                    cache.kick();
                }
            }
            false
        }) {
            Ok(p) => *self.destaging.borrow_mut() = Destaging::Retrying { _poller: p },
            // Without a retry nothing would ever destage again.
            Err(e) => self.fail(format!("scheduling a destage retry: {e}"), true),
        }
    }
}

/// Transitions of [`Destaging`] that only its own state may take.
impl Cache {
    /// `from` → `to`, if destaging is still in `from` (a write in flight
    /// when the cache was closed or halted finds it so).
    fn finished(&self, from: Destaging, to: Destaging) {
        let mut state = self.destaging.borrow_mut();
        if std::mem::discriminant(&*state) == std::mem::discriminant(&from) {
            *state = to;
        }
    }

    /// `Retrying` → `Idle`; whether it was retrying.
    fn finished_retry(&self) -> bool {
        let mut state = self.destaging.borrow_mut();
        if !matches!(*state, Destaging::Retrying { .. }) {
            return false;
        }
        // The poller is dropped after the borrow ends.
        let retry = std::mem::replace(&mut *state, Destaging::Idle);
        drop(state);
        drop(retry);
        true
    }

    /// Any → `Halted`, unless `Closed`.
    pub fn halt(&self) {
        let mut state = self.destaging.borrow_mut();
        if !matches!(*state, Destaging::Closed) {
            let previous = std::mem::replace(&mut *state, Destaging::Halted);
            drop(state);
            drop(previous);
        }
    }
}

/// Why a destage did not happen.
enum Destage {
    /// The base failed it: retried later.
    Base(Error),
    /// The log could not give the write: destaging cannot go on in order.
    Log(String),
}
