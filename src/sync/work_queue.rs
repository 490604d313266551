//! A queue from SPDK threads to worker threads that never spins.
//!
//! `std::sync::mpsc`'s receiver spins (and calls `yield_now`) on a slot a
//! sender has reserved but not yet written. A SCHED_FIFO worker spinning
//! like that on the CPU of the reactor it preempted in the middle of `send`
//! never lets the reactor finish: `yield_now` does not run lower-priority
//! threads, and only Linux's real-time throttling ends it. Here the queue
//! is a `VecDeque` under a mutex whose holders never block inside it, and
//! an idle worker sleeps on a condition variable.

use std::collections::VecDeque;

use super::{lock, Condvar, Mutex};

/// A multi-producer, multi-consumer FIFO that can be closed.
pub struct WorkQueue<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> Default for WorkQueue<T> {
    fn default() -> Self {
        WorkQueue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
        }
    }
}

impl<T> WorkQueue<T> {
    /// Queues `item` for a worker; gives it back if the queue is closed.
    pub fn push(&self, item: T) -> Result<(), T> {
        let mut state = lock(&self.state);
        if state.closed {
            return Err(item);
        }
        state.items.push_back(item);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// Takes the oldest item, sleeping while there is none; `None` once the
    /// queue is closed and empty.
    pub fn pop(&self) -> Option<T> {
        let mut state = lock(&self.state);
        loop {
            if let Some(item) = state.items.pop_front() {
                return Some(item);
            }
            if state.closed {
                return None;
            }
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Refuses further items and wakes every worker; those queued are still
    /// taken.
    pub fn close(&self) {
        lock(&self.state).closed = true;
        self.ready.notify_all();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn items_come_out_in_order_and_a_closed_queue_refuses_and_drains() {
        let q = WorkQueue::default();
        q.push(1).unwrap();
        q.push(2).unwrap();
        q.close();
        assert_eq!(q.push(3), Err(3));
        assert_eq!((q.pop(), q.pop(), q.pop()), (Some(1), Some(2), None));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::Arc;

    /// Two workers and a producer that queues two items and closes: every
    /// item is taken exactly once, and both workers end (no lost wake-up).
    #[test]
    fn every_item_is_taken_once_and_every_worker_ends() {
        loom::model(|| {
            let q = Arc::new(WorkQueue::default());
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let q = q.clone();
                    loom::thread::spawn(move || {
                        let mut got = Vec::new();
                        while let Some(item) = q.pop() {
                            got.push(item);
                        }
                        got
                    })
                })
                .collect();
            q.push(1).unwrap();
            q.push(2).unwrap();
            q.close();
            let mut all: Vec<i32> = workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect();
            all.sort();
            assert_eq!(all, [1, 2]);
        });
    }
}
