//! How many I/O of a bdev are queued for or running on its workers, so a
//! reset can wait for none and reads know whether a worker holds a lane.
//!
//! Each I/O holds an [`InFlightGuard`] from submission to completion, and
//! the count goes down when the guard drops: also when the worker handling
//! it panics, or the queue refuses it. (A count decremented by hand at the
//! end of the worker's loop was skipped by a panic before it, and the next
//! reset waited forever.)

use super::{lock, Arc, AtomicUsize, Condvar, Mutex, Ordering};

/// The count, shared by a bdev's channels and workers.
#[derive(Default)]
pub struct InFlight {
    count: AtomicUsize,
    lock: Mutex<()>,
    none_left: Condvar,
}

/// One I/O counted in an [`InFlight`] until this drops.
#[must_use = "the I/O is uncounted as soon as its guard drops"]
pub struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    /// Counts one more I/O in `counted` until the guard drops.
    pub fn start(counted: &Arc<InFlight>) -> InFlightGuard {
        counted.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(counted.clone())
    }

    /// How many I/O are counted now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Whether any I/O is counted.
    pub fn any(&self) -> bool {
        self.count.load(Ordering::SeqCst) > 0
    }

    /// Sleeps until no I/O is counted.
    pub fn wait_none(&self) {
        let mut held = lock(&self.lock);
        while self.any() {
            held = self.none_left.wait(held).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            // Under the lock, so a waiter between its check and its wait
            // cannot miss this.
            let _held = lock(&self.0.lock);
            self.0.none_left.notify_all();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_guard_dropped_by_a_panic_is_uncounted() {
        let counted = Arc::new(InFlight::default());
        let guard = InFlight::start(&counted);
        assert!(counted.any());
        let panicked = std::thread::spawn(move || {
            let _guard = guard;
            panic!("a worker's panic");
        })
        .join();
        assert!(panicked.is_err());
        assert!(!counted.any());
        counted.wait_none();
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;

    /// A reset waiting for none while two I/O end on other threads: it
    /// always wakes (a notify outside the lock could be missed).
    #[test]
    fn a_waiter_always_sees_the_last_io_end() {
        loom::model(|| {
            let counted = Arc::new(InFlight::default());
            let ios: Vec<_> = (0..2)
                .map(|_| {
                    let guard = InFlight::start(&counted);
                    loom::thread::spawn(move || drop(guard))
                })
                .collect();
            counted.wait_none();
            assert!(!counted.any());
            for io in ios {
                io.join().unwrap();
            }
        });
    }
}
