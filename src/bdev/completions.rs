//! The way back for I/O a Rust bdev module completed on another thread.
//!
//! SPDK requires a bdev_io to complete on the SPDK thread that submitted it.
//! Sending each completion as an SPDK message (`spdk_thread_send_msg`) puts
//! worker threads into the reactor's message ring, a DPDK multi-producer
//! ring: a producer that moved the ring's head waits, spinning, for every
//! producer before it to move the tail. With real-time workers that is a
//! livelock, and it happened: a reactor preempted mid-enqueue by a
//! SCHED_FIFO worker cannot finish, so the worker spins on its CPU until
//! Linux's real-time throttling stops it (measured: workers at 100% user
//! time in `spdk_ring_enqueue`, the reactor left with 15% of its core, a
//! neighbouring namespace at 0.10 of its IOPS, disk-namespace p99 10 s).
//! DPDK says as much: its multi-producer rings are not for preemptible
//! real-time threads.
//!
//! So each channel that defers I/O gets a queue that workers push to under a
//! mutex (a waiter sleeps instead of spinning), and a poller on the
//! channel's thread that takes the completions when the mutex is free, never
//! waiting for it.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, TryLockError};

use crate::sys;
use crate::thread::Poller;

use super::module::{complete_raw, IoStatus};

/// Completions waiting for their channel's thread.
pub(super) struct CompletionQueue {
    done: Mutex<Pending>,
    /// Whether `done` has entries, readable without the mutex.
    ready: AtomicBool,
}

#[derive(Default)]
struct Pending {
    ios: Vec<(usize, IoStatus)>,
    /// The channel was destroyed: nothing will take completions any more.
    closed: bool,
}

impl CompletionQueue {
    /// Queues the completion of the bdev_io at `raw`, from any thread.
    pub(super) fn push(&self, raw: *mut sys::spdk_bdev_io, status: IoStatus) {
        let mut pending = self.done.lock().unwrap_or_else(|e| e.into_inner());
        if pending.closed {
            // Every user of a bdev completes its I/O before putting its
            // channel; this one did not, and the bdev_io's channel is freed:
            // completing it would touch freed memory.
            eprintln!(
                "bdev module: an I/O completed after its channel was destroyed; it is left \
                 uncompleted"
            );
            return;
        }
        pending.ios.push((raw as usize, status));
        self.ready.store(true, Ordering::Release);
    }

    /// On the channel's thread: completes what is queued, if the mutex is
    /// free now. Returns whether it completed any.
    fn run(&self, batch: &mut Vec<(usize, IoStatus)>) -> bool {
        if !self.ready.load(Ordering::Acquire) {
            return false;
        }
        let mut pending = match self.done.try_lock() {
            Ok(p) => p,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        std::mem::swap(&mut pending.ios, batch);
        self.ready.store(false, Ordering::Release);
        drop(pending);
        for (raw, status) in batch.drain(..) {
            // SAFETY: a deferred bdev_io, live and not completed (its
            // DeferredIo was consumed to queue it), on the thread of the
            // channel it was submitted on.
            unsafe { complete_raw(raw as *mut sys::spdk_bdev_io, status) };
        }
        true
    }
}

/// A channel's completion queue and the poller that empties it, started by
/// the first I/O deferred on the channel. Lives in the channel's context.
#[derive(Default)]
pub(super) struct ChannelCompletions {
    started: RefCell<Option<(Arc<CompletionQueue>, Poller)>>,
}

impl ChannelCompletions {
    /// The channel's queue, starting it on first use. Call on the channel's
    /// thread.
    pub(super) fn queue(&self) -> Arc<CompletionQueue> {
        let mut started = self.started.borrow_mut();
        if let Some((queue, _)) = &*started {
            return queue.clone();
        }
        let queue = Arc::new(CompletionQueue {
            done: Mutex::new(Pending::default()),
            ready: AtomicBool::new(false),
        });
        let polled = queue.clone();
        let mut batch = Vec::new();
        match Poller::register(0, move || polled.run(&mut batch)) {
            Ok(poller) => *started = Some((queue.clone(), poller)),
            Err(e) => {
                // Without a poller nothing completes: close the queue, so
                // each I/O deferred here is reported as it finishes rather
                // than left waiting without a word.
                eprintln!("bdev module: starting the completion poller: {e}");
                queue.done.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
            }
        }
        queue
    }

    /// On the channel's destruction: closes the queue. Users complete their
    /// I/O before putting a channel, so it is empty; an I/O still in it (or
    /// pushed later) belongs to a bdev channel that is gone, and is left
    /// uncompleted rather than completed into freed memory.
    pub(super) fn close(&self) {
        if let Some((queue, poller)) = self.started.borrow_mut().take() {
            drop(poller);
            let mut pending = queue.done.lock().unwrap_or_else(|e| e.into_inner());
            pending.closed = true;
            if !pending.ios.is_empty() {
                eprintln!(
                    "bdev module: {} I/O completed but not delivered when their channel was \
                     destroyed; they are left uncompleted",
                    pending.ios.len()
                );
            }
        }
    }
}
