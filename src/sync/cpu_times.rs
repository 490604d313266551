//! CPU time the pmem workers used, per CPU they ran on: a reactor's watch
//! reads its own CPU's figure to tell the time the workers took from it
//! (they run at real-time priority, so a reactor on the CPU a worker wakes
//! on waits for it) from time anything else took.
//!
//! Each counter only grows; a reader takes differences between two of its
//! readings, so it needs no lock and no order with other memory.

use super::{AtomicU64, Ordering};

/// One counter of nanoseconds per CPU.
pub struct CpuTimes(Box<[AtomicU64]>);

impl CpuTimes {
    /// Counters for CPUs `0..cpus`, all zero.
    pub fn new(cpus: usize) -> CpuTimes {
        CpuTimes((0..cpus).map(|_| AtomicU64::new(0)).collect())
    }

    /// Adds `ns` to `cpu`'s counter; a CPU beyond the counters is not
    /// counted (its reactor's watch then sees no workers there).
    pub fn add(&self, cpu: usize, ns: u64) {
        if let Some(c) = self.0.get(cpu) {
            c.fetch_add(ns, Ordering::Relaxed);
        }
    }

    /// `cpu`'s counter; 0 for a CPU beyond them.
    pub fn get(&self, cpu: usize) -> u64 {
        self.0.get(cpu).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn counts_per_cpu_and_ignores_cpus_beyond() {
        let t = CpuTimes::new(2);
        t.add(1, 5);
        t.add(1, 7);
        t.add(2, 100);
        assert_eq!((t.get(0), t.get(1), t.get(2)), (0, 12, 0));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::Arc;

    /// Two workers add to the reactor's CPU while its watch reads twice:
    /// the readings never go back, and nothing added is lost.
    #[test]
    fn readings_grow_and_lose_nothing() {
        loom::model(|| {
            let times = Arc::new(CpuTimes::new(2));
            let workers: Vec<_> = [5, 7]
                .into_iter()
                .map(|ns| {
                    let times = times.clone();
                    loom::thread::spawn(move || times.add(1, ns))
                })
                .collect();
            let first = times.get(1);
            let second = times.get(1);
            assert!(first <= second && [0, 5, 7, 12].contains(&first));
            for w in workers {
                w.join().unwrap();
            }
            assert_eq!((times.get(0), times.get(1)), (0, 12));
        });
    }
}
