//! Items handed from any thread to one owner thread that must never wait
//! for them: a bdev channel's completions, pushed by workers and taken by a
//! poller on the channel's SPDK thread.
//!
//! Pushers take a mutex (a pusher that finds it held sleeps instead of
//! spinning, unlike a DPDK ring's producers; see `bdev::completions`). The
//! owner only tries it: a poll that finds it held leaves the items for the
//! next poll, so a reactor never waits for a worker.

use super::{lock, AtomicBool, Mutex, Ordering, TryLockError};

/// Items for the owner thread; closed when the owner stops taking them.
pub struct Mailbox<T> {
    state: Mutex<State<T>>,
    /// Whether `state` has items, readable without the mutex.
    ready: AtomicBool,
}

struct State<T> {
    items: Vec<T>,
    closed: bool,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Mailbox {
            state: Mutex::new(State {
                items: Vec::new(),
                closed: false,
            }),
            ready: AtomicBool::new(false),
        }
    }
}

impl<T> Mailbox<T> {
    /// Leaves `item` for the owner, from any thread; gives it back if the
    /// mailbox is closed.
    pub fn push(&self, item: T) -> Result<(), T> {
        let mut state = lock(&self.state);
        if state.closed {
            return Err(item);
        }
        state.items.push(item);
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// On the owner's thread: moves the items into `batch` (empty) if the
    /// mutex is free now. Returns whether it moved any.
    pub fn take_into(&self, batch: &mut Vec<T>) -> bool {
        if !self.ready.load(Ordering::Acquire) {
            return false;
        }
        let mut state = match self.state.try_lock() {
            Ok(s) => s,
            Err(TryLockError::Poisoned(s)) => s.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        std::mem::swap(&mut state.items, batch);
        self.ready.store(false, Ordering::Release);
        !batch.is_empty()
    }

    /// Refuses further items; returns those never taken.
    pub fn close(&self) -> Vec<T> {
        let mut state = lock(&self.state);
        state.closed = true;
        self.ready.store(false, Ordering::Release);
        std::mem::take(&mut state.items)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn items_are_taken_in_batches_and_a_closed_mailbox_refuses() {
        let m = Mailbox::default();
        let mut batch = Vec::new();
        assert!(!m.take_into(&mut batch));
        m.push(1).unwrap();
        m.push(2).unwrap();
        assert!(m.take_into(&mut batch));
        assert_eq!(batch, [1, 2]);
        batch.clear();
        m.push(3).unwrap();
        assert_eq!(m.close(), [3]);
        assert_eq!(m.push(4), Err(4));
        assert!(!m.take_into(&mut batch));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::Arc;

    /// Two pushers and an owner that polls, then closes: every item is
    /// either taken by a poll, returned by the close, or refused to its
    /// pusher, exactly once; and a set `ready` flag is never left behind
    /// items that are gone (a poll would then spin on an empty mailbox).
    #[test]
    fn every_item_is_taken_returned_or_refused_exactly_once() {
        loom::model(|| {
            let m = Arc::new(Mailbox::default());
            let pushers: Vec<_> = (1..=2)
                .map(|i| {
                    let m = m.clone();
                    loom::thread::spawn(move || m.push(i).err())
                })
                .collect();
            let mut seen = Vec::new();
            let mut batch = Vec::new();
            for _ in 0..2 {
                if m.take_into(&mut batch) {
                    seen.append(&mut batch);
                }
            }
            seen.extend(m.close());
            for p in pushers {
                seen.extend(p.join().unwrap());
            }
            seen.sort();
            assert_eq!(seen, [1, 2]);
            assert!(!m.take_into(&mut batch));
        });
    }
}
