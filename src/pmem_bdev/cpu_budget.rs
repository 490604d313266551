//! The pmem I/O workers' CPU budget while a reactor they serve is busy.
//!
//! Persisting a block to a pool in a file on disk costs CPU in the kernel:
//! libpmem's three msyncs per libpmemblk write each write back a page
//! (write-protecting it, which interrupts the other CPUs running the
//! target with a TLB shootdown) and flush the disk's cache. Measured on a
//! 2-CPU machine, that is about 0.8 CPU for 3,000 writes/s. When the
//! reactors and initiators already fill every CPU, the workers take that
//! time from them: a /dev/shm namespace on the same target kept 0.35 of its
//! IOPS while a disk-backed one was written at full speed (docs/pmem-modules.md).
//!
//! So the workers run at full speed only while the SPDK threads that use
//! their bdevs are mostly idle. Each channel of a Rust pmem bdev watches its
//! thread: while one spends at least half its time in polls that did work
//! (SPDK's busy TSC, sampled every 10 ms; it counts as idle again below a
//! quarter), the workers of all Rust pmem bdevs together may use [`limit`]
//! of one CPU, measured as their own threads' CPU time, and wait for their
//! turn otherwise. That includes the busy thread's own inline work: a
//! namespace whose cached reads keep its reactor busy slows its own writes
//! as well.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::sync::CpuTimes;
use crate::thread::{PollTicks, Poller};

/// The share of one CPU the workers may use while a reactor is busy, in
/// thousandths, when nothing sets another; measured in docs/pmem-modules.md.
pub const DEFAULT_PERMILLE: u32 = 100;

/// How often a channel's thread is sampled.
const WINDOW: Duration = Duration::from_millis(10);
/// Busy from this share of a window's time in busy polls on...
const BUSY_FROM: f64 = 0.5;
/// ...until it falls below this one.
const IDLE_BELOW: f64 = 0.25;
/// The most CPU time saved up while under budget, so a burst after a quiet
/// spell cannot take a busy reactor's core for long.
const BURST: Duration = Duration::from_millis(20);
/// What an I/O is expected to cost before any was measured.
const FIRST_ESTIMATE: Duration = Duration::from_micros(100);

static LIMIT_PERMILLE: AtomicU32 = AtomicU32::new(DEFAULT_PERMILLE);
/// Until when (nanoseconds on [`clock`]) some watched thread counts as
/// busy: each watch of a busy thread pushes it two windows ahead, so a
/// thread that stops being watched (or exits) stops counting by itself.
static BUSY_UNTIL: AtomicU64 = AtomicU64::new(0);
static BUDGET: LazyLock<Account> = LazyLock::new(Account::default);

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

/// Nanoseconds since the first call, on the monotonic clock.
fn clock() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    START.elapsed().as_nanos() as u64
}

/// Whether some SPDK thread serving a Rust pmem bdev is busy now.
pub fn reactor_busy() -> bool {
    clock() < BUSY_UNTIL.load(Ordering::Relaxed)
}

/// The pmem workers' CPU time, per CPU they ran on.
static WORKER_TIME: LazyLock<CpuTimes> = LazyLock::new(|| {
    // SAFETY: sysconf only reads.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    CpuTimes::new(cpus.clamp(1, libc::CPU_SETSIZE as libc::c_long) as usize)
});

/// The CPU the calling thread runs on.
fn current_cpu() -> usize {
    // SAFETY: sched_getcpu only reads; -1 (no such CPU) maps past any.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).unwrap_or(usize::MAX)
}

/// How many sampling windows the channels of one bdev watched, and in how
/// many their thread counted as busy (`bdev_get_bdevs` shows both).
#[derive(Default)]
pub struct BusyWindows {
    watched: AtomicU64,
    busy: AtomicU64,
}

impl BusyWindows {
    /// Windows watched, and of those counted busy.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.watched.load(Ordering::Relaxed),
            self.busy.load(Ordering::Relaxed),
        )
    }
}

/// One reading of a watched thread.
#[derive(Clone, Copy)]
struct Sample {
    ticks: PollTicks,
    /// The OS thread's CPU time.
    ran: Duration,
    /// The CPU it runs on (a reactor is pinned to one)...
    cpu: usize,
    /// ...and the workers' CPU time there, in nanoseconds.
    workers: u64,
}

impl Sample {
    fn take() -> Sample {
        let cpu = current_cpu();
        Sample {
            ticks: PollTicks::current().unwrap_or_default(),
            ran: thread_cpu_time(),
            cpu,
            workers: WORKER_TIME.get(cpu),
        }
    }
}

/// Watches the SPDK thread it was started on, as long as it lives.
pub struct ThreadWatch {
    _poller: Poller,
}

impl ThreadWatch {
    /// Starts watching the calling SPDK thread, counting its windows in
    /// `windows`.
    pub fn start(windows: crate::sync::Arc<BusyWindows>) -> Result<ThreadWatch> {
        // SAFETY: spdk_get_ticks_hz only reads the environment's tick rate.
        let hz = unsafe { crate::sys::spdk_get_ticks_hz() }.max(1) as f64;
        let mut last = Sample::take();
        let mut busy = false;
        let poller = Poller::register(WINDOW.as_micros() as u64, move || {
            let now = Sample::take();
            let share = busy_share(&last, &now, hz);
            last = now;
            busy = if busy {
                share >= IDLE_BELOW
            } else {
                share >= BUSY_FROM
            };
            windows.watched.fetch_add(1, Ordering::Relaxed);
            if busy {
                windows.busy.fetch_add(1, Ordering::Relaxed);
                let until = clock() + 2 * WINDOW.as_nanos() as u64;
                BUSY_UNTIL.fetch_max(until, Ordering::Relaxed);
            }
            // Sampling is not work: it must not make the thread look busy.
            false
        })?;
        Ok(ThreadWatch { _poller: poller })
    }
}

/// The share of the time a thread ran that went to polls that did work,
/// between two readings.
///
/// SPDK's busy and idle ticks are wall time, so time the thread spent off
/// its CPU inside a poll counts toward that poll's kind; it is taken out
/// again by what took it:
/// - Time the workers took on this CPU (they are real-time, so a reactor
///   on the CPU one wakes on waits for it) falls on busy and idle polls
///   alike, and is taken out of each in proportion: a worker wakes as
///   often when the disk finishes as on a hand-off, and its heavy part
///   (msyncs) runs after the first. Measured with the workers pinned to
///   the reactor's CPU, serving a disk namespace alone: 5.8 ms of each
///   10 ms went to the workers while the reactor's busy polls spanned
///   0.84 ms of wall time.
/// - Any other time off the CPU (other processes, a lock wait) is taken
///   out of busy time: under the CPU contention of a parallel test run, a
///   reactor serving a disk namespace alone otherwise looked busy often
///   enough to throttle itself.
///
/// (Taking all of it out of busy time, as before, made a reactor starved
/// by the workers look idle: with a /dev/shm neighbour at QD 4 and the
/// workers on its CPU, on it 3.8 of 9.6 ms with 7.2 ms in busy polls, it
/// scored 0.35 on average, and 0.70 counted this way.)
fn busy_share(last: &Sample, now: &Sample, hz: f64) -> f64 {
    let ns = |ticks: u64| ticks as f64 * 1e9 / hz;
    let busy = ns(now.ticks.busy.saturating_sub(last.ticks.busy));
    let wall = busy + ns(now.ticks.idle.saturating_sub(last.ticks.idle));
    let ran = now.ran.saturating_sub(last.ran).as_nanos() as f64;
    if ran <= 0.0 || wall <= 0.0 {
        return 0.0;
    }
    let off_cpu = (wall - ran).max(0.0);
    // A thread that moved between CPUs: whose workers took what is unknown.
    let by_workers = if now.cpu == last.cpu {
        (now.workers.saturating_sub(last.workers) as f64).min(off_cpu)
    } else {
        0.0
    };
    let off_in_busy = (off_cpu - by_workers + by_workers * busy / wall).min(busy);
    ((busy - off_in_busy) / ran).clamp(0.0, 1.0)
}

/// The workers' CPU time account while a reactor is busy: earned at the
/// limit's rate (saving at most [`BURST`]), and spent by each I/O, reserved
/// at its expected cost when it starts, so workers waiting together do not
/// all start at once, and settled at its measured cost when it ends. A debt
/// is never forgiven: an I/O dearer than the savings makes the next ones
/// wait longer.
#[derive(Debug)]
struct Budget {
    /// Nanoseconds of CPU time the workers may still use; negative: owed.
    balance: i64,
    /// [`clock`] time the balance was last earned to.
    at: u64,
    /// A running average of an I/O's cost, in nanoseconds.
    estimate: i64,
}

impl Budget {
    fn new(now: u64) -> Budget {
        Budget {
            balance: 0,
            at: now,
            estimate: FIRST_ESTIMATE.as_nanos() as i64,
        }
    }

    fn earn(&mut self, now: u64, permille: u32) {
        let elapsed = now.saturating_sub(self.at) as u128;
        let earned = (elapsed * permille as u128 / 1000).min(i64::MAX as u128) as i64;
        let cap = (BURST.as_nanos() as i64) * permille as i64 / 1000;
        self.balance = self.balance.saturating_add(earned).min(cap);
        self.at = now.max(self.at);
    }

    /// Starts an I/O if the account allows (returning what it reserved), or
    /// says how long until it will.
    fn start(&mut self, now: u64, permille: u32) -> std::result::Result<i64, Duration> {
        self.earn(now, permille);
        if self.balance >= 0 {
            self.balance -= self.estimate;
            Ok(self.estimate)
        } else {
            let owed = self.balance.unsigned_abs() as u128;
            Err(Duration::from_nanos(
                (owed * 1000 / permille as u128) as u64,
            ))
        }
    }

    /// Settles an I/O that used `used` nanoseconds; `reserved` is what its
    /// start took, if it was charged at all.
    fn settle(&mut self, now: u64, permille: u32, reserved: Option<i64>, used: i64) {
        self.earn(now, permille);
        if let Some(reserved) = reserved {
            self.balance = self.balance.saturating_add(reserved).saturating_sub(used);
        }
        self.estimate = (self.estimate * 7 + used) / 8;
    }
}

/// The [`Budget`] all workers share, behind a mutex of the `sync` facade
/// (model-checked with loom: workers racing for one turn).
#[derive(Default)]
struct Account(crate::sync::Mutex<Option<Budget>>);

impl Account {
    /// Runs `f` on the budget at [`clock`] time `now`.
    fn with<T>(&self, now: u64, f: impl FnOnce(&mut Budget) -> T) -> T {
        let mut guard = crate::sync::lock(&self.0);
        f(guard.get_or_insert_with(|| Budget::new(now)))
    }
}

fn with_budget<T>(f: impl FnOnce(&mut Budget, u64) -> T) -> T {
    let now = clock();
    BUDGET.with(now, |b| f(b, now))
}

/// A worker's turn at one I/O: from [`Turn::wait`] to [`Turn::end`].
pub struct Turn {
    /// CPU time reserved from the budget; `None` when the I/O runs free.
    reserved: Option<i64>,
    started: Duration,
    /// Whether the worker had to wait for it.
    pub waited: bool,
}

impl Turn {
    /// Waits, on a worker, until it may run an I/O: at once while no
    /// reactor is busy or the limit is lifted, else once the budget allows.
    pub fn wait() -> Turn {
        let mut waited = false;
        let reserved = loop {
            let permille = limit();
            if permille >= 1000 || !reactor_busy() {
                break None;
            }
            match with_budget(|b, now| b.start(now, permille)) {
                Ok(reserved) => break Some(reserved),
                // Short naps, so the end of the busy spell is noticed.
                Err(wait) => std::thread::sleep(wait.min(WINDOW)),
            }
            waited = true;
        };
        Turn {
            reserved,
            started: thread_cpu_time(),
            waited,
        }
    }

    /// Charges the CPU time the worker used since [`Turn::wait`], and
    /// counts it on the CPU the worker ends on for the reactors' watches.
    pub fn end(self) {
        let used = thread_cpu_time().saturating_sub(self.started);
        WORKER_TIME.add(current_cpu(), used.as_nanos() as u64);
        if limit() >= 1000 {
            return;
        }
        let used = used.as_nanos() as i64;
        with_budget(|b, now| b.settle(now, limit(), self.reserved, used));
    }
}

/// The calling thread's CPU time so far, user and system.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: fills `ts`; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::Arc;

    /// Two workers race for a turn the account can give once: exactly one
    /// starts, and once both have settled what they used the balance is
    /// what the one that ran owes.
    #[test]
    fn workers_racing_for_one_turn_start_one_at_a_time() {
        loom::model(|| {
            let account = Arc::new(Account::default());
            account.with(0, |b| b.balance = 0);
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let account = account.clone();
                    loom::thread::spawn(move || {
                        let started = account.with(0, |b| b.start(0, 100));
                        if let Ok(reserved) = started {
                            account.with(0, |b| b.settle(0, 100, Some(reserved), 50_000));
                        }
                        started.is_ok()
                    })
                })
                .collect();
            let ran = workers
                .into_iter()
                .map(|w| w.join().unwrap())
                .filter(|&ran| ran)
                .count();
            assert_eq!(ran, 1);
            assert_eq!(account.with(0, |b| b.balance), -50_000);
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn the_balance_earns_at_the_limit_saves_no_more_than_a_burst_and_keeps_debts() {
        let mut b = Budget::new(0);
        b.earn(10 * MS, 100);
        assert_eq!(b.balance, MS as i64, "10 ms at 10% of a CPU earns 1 ms");
        b.earn(10_000 * MS, 100);
        assert_eq!(
            b.balance,
            2 * MS as i64,
            "saved: at most a 20 ms burst's share"
        );
        b.balance = -50 * MS as i64;
        b.earn(10_000 * MS, 100);
        assert_eq!(b.balance, -50 * MS as i64, "no time passed: the debt stays");
        b.earn(u64::MAX, 1000);
        assert_eq!(b.balance, 20 * MS as i64, "no overflow, however long");
    }

    /// Workers whose every I/O costs 270 µs of CPU (a disk-pool write here)
    /// and 2 ms of waiting for the disk, under a 10% limit for a simulated
    /// second: the CPU they get is the limit's, not more.
    fn simulate(workers: usize, cost_us: u64, permille: u32) -> (u64, usize) {
        let mut b = Budget::new(0);
        let mut free_at = vec![0u64; workers];
        let mut reserved = vec![None; workers];
        let (mut cpu, mut ios) = (0u64, 0usize);
        let step = 10_000; // 10 µs
        for now in (0..1000 * MS).step_by(step) {
            for w in 0..workers {
                if now < free_at[w] {
                    continue;
                }
                if let Some(r) = reserved[w].take() {
                    b.settle(now, permille, Some(r), cost_us as i64 * 1000);
                }
                if let Ok(r) = b.start(now, permille) {
                    reserved[w] = Some(r);
                    free_at[w] = now + cost_us * 1000 + 2 * MS;
                    cpu += cost_us * 1000;
                    ios += 1;
                }
            }
        }
        (cpu, ios)
    }

    #[test]
    fn workers_get_the_limits_share_of_a_cpu_whatever_their_number_or_cost() {
        for (workers, cost_us, permille) in [
            (4, 270, 100),
            (12, 270, 100),
            (64, 270, 100),
            (4, 8_600, 100),
            (4, 270, 1),
        ] {
            let (cpu, ios) = simulate(workers, cost_us, permille);
            let allowed = 1000 * MS * permille as u64 / 1000;
            let slack = 20 * MS * permille as u64 / 1000 + cost_us * 1000 * 2;
            assert!(
                cpu <= allowed + slack && cpu + slack >= allowed,
                "{workers} workers at {cost_us} µs an I/O, {permille}‰: {cpu} ns of CPU \
                 in {ios} I/O, allowed {allowed}"
            );
        }
    }

    #[test]
    fn workers_waiting_together_start_one_at_a_time() {
        let mut b = Budget::new(0);
        b.balance = -1;
        assert!(b.start(0, 100).is_err());
        // 10 µs later the debt is paid: one worker starts, the others wait.
        let started = (0..12).filter(|_| b.start(10_000, 100).is_ok()).count();
        assert_eq!(started, 1);
    }

    /// A reading at 1 GHz ticks: busy and idle ticks, the thread's CPU time
    /// and the workers' on its CPU, in microseconds.
    fn at(busy: u64, idle: u64, ran_us: u64, workers_us: u64) -> Sample {
        Sample {
            ticks: PollTicks {
                busy: busy * 1000,
                idle: idle * 1000,
            },
            ran: Duration::from_micros(ran_us),
            cpu: 0,
            workers: workers_us * 1000,
        }
    }

    #[test]
    fn time_others_took_inside_busy_polls_is_not_counted_as_busy() {
        let start = at(0, 0, 0, 0);
        // Ran the whole 10 ms window, 90% in busy polls.
        assert!((busy_share(&start, &at(9_000, 1_000, 10_000, 0), 1e9) - 0.9).abs() < 1e-9);
        // 5% busy work, but preempted 4 ms inside busy polls: not busy.
        let share = busy_share(&start, &at(4_500, 5_500, 6_000, 0), 1e9);
        assert!(share < 0.1, "{share}");
        // Busy while it ran, 3 ms of it preempted: still busy.
        let share = busy_share(&start, &at(9_000, 1_000, 7_000, 0), 1e9);
        assert!(share > 0.8, "{share}");
        assert_eq!(busy_share(&start, &start, 1e9), 0.0);
    }

    #[test]
    fn a_reactor_the_workers_starve_still_counts_as_busy() {
        let start = at(0, 0, 0, 0);
        // A starved reactor: on the CPU 3 ms of a 10 ms window, 8 ms of
        // it in busy polls, the workers on its CPU the other 7 (scored 0.33
        // when all time off the CPU came out of busy time).
        let share = busy_share(&start, &at(8_000, 2_000, 3_000, 7_000), 1e9);
        assert!(share >= BUSY_FROM, "{share}");
        // Measured means (workers pinned to the reactor's CPU, a /dev/shm
        // neighbour at QD 4): 0.35 before, busy in 97 of 650 windows.
        let share = busy_share(&start, &at(7_220, 2_390, 3_810, 5_700), 1e9);
        assert!(share >= BUSY_FROM, "{share}");
        // The same CPU lost to anything else still comes out of busy time.
        let share = busy_share(&start, &at(8_000, 2_000, 3_000, 0), 1e9);
        assert!(share < BUSY_FROM, "{share}");
        // A thread that changed CPUs: the workers' figure is another CPU's.
        let mut moved = at(8_000, 2_000, 3_000, 7_000);
        moved.cpu = 1;
        assert!(busy_share(&start, &moved, 1e9) < BUSY_FROM);
    }

    #[test]
    fn a_reactor_serving_only_the_workers_stays_idle_while_they_take_its_cpu() {
        // Measured means, workers pinned to the reactor's CPU, a disk
        // namespace alone at QD 32: a busy share that counts the workers'
        // time as the reactor's would throttle the only work there is.
        let share = busy_share(&at(0, 0, 0, 0), &at(840, 8_580, 3_720, 5_840), 1e9);
        assert!(share < IDLE_BELOW, "{share}");
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
