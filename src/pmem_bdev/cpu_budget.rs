//! The pmem I/O workers' CPU budget while a reactor they serve is busy.
//!
//! Persisting a block to a pool in a file on disk costs CPU in the kernel:
//! libpmem's three msyncs per libpmemblk write each write back a page
//! (write-protecting it, which interrupts the other CPUs running the
//! target with a TLB shootdown) and flush the disk's cache. Measured on a
//! 2-CPU machine, that is about 0.8 CPU for 3,000 writes/s. When the
//! reactors and initiators already fill every CPU, the workers take that
//! time from them: a /dev/shm namespace on the same target kept 0.35 of its
//! IOPS while a disk-backed one was written at full speed (README, "The two
//! pmem modules").
//!
//! So the workers run at full speed only while the SPDK threads that use
//! their bdevs are mostly idle. Each channel of a Rust pmem bdev watches its
//! thread's poll statistics; while any such thread is busy (more than half
//! its polls did work over the last window), all workers together may use
//! no more than [`limit`] of one CPU, measured as their own threads' CPU
//! time, and wait for their turn otherwise.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::thread::{PollTicks, Poller};

/// The share of one CPU the workers may use while a reactor is busy, in
/// thousandths, when nothing sets another; measured in README's benchmark.
pub const DEFAULT_PERMILLE: u32 = 100;

/// How often a channel's thread is sampled.
const WINDOW: Duration = Duration::from_millis(10);
/// Busy from this share of a window's polls on...
const BUSY_FROM: f64 = 0.5;
/// ...until it falls below this one.
const IDLE_BELOW: f64 = 0.25;
/// The most CPU time saved up while under budget, so a burst after a quiet
/// spell cannot take a busy reactor's core for long.
const BURST: Duration = Duration::from_millis(20);

static LIMIT_PERMILLE: AtomicU32 = AtomicU32::new(DEFAULT_PERMILLE);
static BUSY_THREADS: AtomicUsize = AtomicUsize::new(0);
static BALANCE: Mutex<Option<Balance>> = Mutex::new(None);

/// Sets the share of one CPU (in thousandths, 1 to 1000) the workers of
/// every Rust pmem bdev in this process may use while a reactor serving
/// them is busy; 1000 lifts the limit.
pub fn set_limit(permille: u32) {
    LIMIT_PERMILLE.store(permille.clamp(1, 1000), Ordering::Relaxed);
}

/// The share set by [`set_limit`], in thousandths of one CPU.
pub fn limit() -> u32 {
    LIMIT_PERMILLE.load(Ordering::Relaxed)
}

/// Whether some SPDK thread serving a Rust pmem bdev is busy now.
pub fn reactor_busy() -> bool {
    BUSY_THREADS.load(Ordering::Relaxed) > 0
}

/// Watches the SPDK thread it was started on, as long as it lives.
pub struct ThreadWatch {
    _poller: Poller,
}

impl ThreadWatch {
    /// Starts watching the calling SPDK thread.
    pub fn start() -> Result<ThreadWatch> {
        let mut last = PollTicks::current().unwrap_or_default();
        let mut busy = BusyMark(false);
        let poller = Poller::register(WINDOW.as_micros() as u64, move || {
            let now = PollTicks::current().unwrap_or_default();
            let share = now.busy_share_since(&last);
            last = now;
            if share >= BUSY_FROM {
                busy.set(true);
            } else if share < IDLE_BELOW {
                busy.set(false);
            }
            // Sampling is not work: it must not make the thread look busy.
            false
        })?;
        Ok(ThreadWatch { _poller: poller })
    }
}

/// One watched thread's vote in [`BUSY_THREADS`], withdrawn when dropped.
struct BusyMark(bool);

impl BusyMark {
    fn set(&mut self, busy: bool) {
        if busy != self.0 {
            if busy {
                BUSY_THREADS.fetch_add(1, Ordering::Relaxed);
            } else {
                BUSY_THREADS.fetch_sub(1, Ordering::Relaxed);
            }
            self.0 = busy;
        }
    }
}

impl Drop for BusyMark {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// CPU time the workers may still use: earned at [`limit`]'s rate, spent by
/// [`charge`].
struct Balance {
    nanos: i64,
    at: Instant,
}

impl Balance {
    fn earn(&mut self, now: Instant, permille: u32) {
        let cap = burst_nanos(permille);
        let earned = now.duration_since(self.at).as_nanos() as i64 * permille as i64 / 1000;
        self.nanos = (self.nanos.saturating_add(earned)).clamp(-cap, cap);
        self.at = now;
    }
}

fn burst_nanos(permille: u32) -> i64 {
    BURST.as_nanos() as i64 * permille as i64 / 1000
}

/// Waits, on a worker, until the workers may run: at once while no reactor
/// is busy or the limit is lifted, else once the balance is not negative.
/// Returns whether it waited.
pub fn wait_turn() -> bool {
    let mut waited = false;
    loop {
        let permille = limit();
        if permille >= 1000 || !reactor_busy() {
            return waited;
        }
        let wait = {
            let mut guard = BALANCE.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let balance = guard.get_or_insert(Balance { nanos: 0, at: now });
            balance.earn(now, permille);
            if balance.nanos >= 0 {
                return waited;
            }
            Duration::from_nanos((-balance.nanos) as u64 * 1000 / permille as u64)
        };
        // Short naps, so the end of the busy spell is noticed.
        std::thread::sleep(wait.min(WINDOW));
        waited = true;
    }
}

/// Spends `used` from the workers' balance.
pub fn charge(used: Duration) {
    let permille = limit();
    let mut guard = BALANCE.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let balance = guard.get_or_insert(Balance { nanos: 0, at: now });
    balance.earn(now, permille);
    balance.nanos = (balance.nanos - used.as_nanos() as i64).max(-burst_nanos(permille));
}

/// The calling thread's CPU time so far, user and system.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: fills `ts`; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_balance_earns_at_the_limit_and_saves_no_more_than_a_burst() {
        let t0 = Instant::now();
        let mut b = Balance { nanos: 0, at: t0 };
        b.earn(t0 + Duration::from_millis(10), 100);
        assert_eq!(b.nanos, 1_000_000, "10 ms at 10% of a CPU earns 1 ms");
        b.earn(t0 + Duration::from_secs(10), 100);
        assert_eq!(b.nanos, burst_nanos(100), "capped at a burst");
        b.nanos = -50_000_000;
        b.earn(t0 + Duration::from_secs(10), 100);
        assert_eq!(b.nanos, -burst_nanos(100), "a debt is capped as well");
    }

    #[test]
    fn thread_cpu_time_counts_work_and_not_sleep() {
        let start = thread_cpu_time();
        std::thread::sleep(Duration::from_millis(50));
        assert!(thread_cpu_time() - start < Duration::from_millis(25));
        let start = thread_cpu_time();
        let mut x = 0u64;
        while thread_cpu_time() - start < Duration::from_millis(5) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
    }
}
