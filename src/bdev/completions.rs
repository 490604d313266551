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
//! So each channel that defers I/O gets a [`Mailbox`] that workers push to
//! under a mutex (a waiter sleeps instead of spinning), and a poller on the
//! channel's thread that takes the completions when the mutex is free, never
//! waiting for it.

use std::cell::RefCell;
use std::sync::Arc;

use crate::error::Result;
use crate::sync::Mailbox;
use crate::sys;
use crate::thread::Poller;

use super::status::{complete_raw, IoStatus};

/// Completions waiting for their channel's thread: the bdev_io's address
/// and how it ended.
#[derive(Default)]
pub(super) struct CompletionQueue {
    mailbox: Mailbox<(usize, IoStatus)>,
}

impl CompletionQueue {
    /// Queues the completion of the bdev_io at `raw`, from any thread.
    pub(super) fn push(&self, raw: *mut sys::spdk_bdev_io, status: IoStatus) {
        if self.mailbox.push((raw as usize, status)).is_err() {
            // Every user of a bdev completes its I/O before putting its
            // channel; this one did not, and the bdev_io's channel is freed:
            // completing it would touch freed memory.
            crate::log::error(
                "bdev module: an I/O completed after its channel was destroyed; it is left \
                 uncompleted",
            );
        }
    }

    /// On the channel's thread: completes what is queued, if the mutex is
    /// free now. Returns whether it completed any.
    fn run(&self, batch: &mut Vec<(usize, IoStatus)>) -> bool {
        if !self.mailbox.take_into(batch) {
            return false;
        }
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
    /// thread. Fails when its poller cannot start: then nothing would ever
    /// complete what is queued, so nothing must be.
    pub(super) fn queue(&self) -> Result<Arc<CompletionQueue>> {
        let mut started = self.started.borrow_mut();
        if let Some((queue, _)) = &*started {
            return Ok(queue.clone());
        }
        let queue = Arc::new(CompletionQueue::default());
        let polled = queue.clone();
        let mut batch = Vec::new();
        let poller = Poller::register(0, move || polled.run(&mut batch))?;
        *started = Some((queue.clone(), poller));
        Ok(queue)
    }

    /// On the channel's destruction: closes the queue. Users complete their
    /// I/O before putting a channel, so it is empty; an I/O still in it (or
    /// pushed later) belongs to a bdev channel that is gone, and is left
    /// uncompleted rather than completed into freed memory.
    pub(super) fn close(&self) {
        if let Some((queue, poller)) = self.started.borrow_mut().take() {
            drop(poller);
            let left = queue.mailbox.close();
            if !left.is_empty() {
                crate::log::error(&format!(
                    "bdev module: {} I/O completed but not delivered when their channel was \
                     destroyed; they are left uncompleted",
                    left.len()
                ));
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Off an SPDK thread the poller cannot register: the channel hands out
    /// no queue (an I/O deferred into one would never complete; before, it
    /// got a queue without a poller) and keeps none half-started.
    #[test]
    fn no_queue_without_its_poller() {
        let completions = ChannelCompletions::default();
        for _ in 0..2 {
            let e = completions.queue().err().expect("no poller, no queue");
            assert!(e.to_string().contains("SPDK thread"), "{e}");
            assert!(completions.started.borrow().is_none());
        }
        completions.close();
    }
}
