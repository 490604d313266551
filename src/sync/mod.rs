//! What the bdev layer and the pmem workers share between threads: the
//! worker queue ([`WorkQueue`]), the count of I/O on the workers
//! ([`InFlight`]), the completions on their way back to a reactor
//! ([`Mailbox`]). Reactors and real-time workers meet here, so none of
//! them spins: a thread that must wait sleeps on a futex (std's `Mutex`
//! spins a bounded hundred rounds first), and the reactor side never waits
//! at all where it can avoid it ([`Mailbox::take_into`]). The workers'
//! CPU time per CPU ([`CpuTimes`]) tells a reactor's watch what they took.
//! Every thread that logs shares the log's rate limit ([`RateLimit`]);
//! JSON-RPC calls are counted by method where they are dispatched and by
//! result wherever they are answered ([`RpcTally`]).
//!
//! Built with `RUSTFLAGS="--cfg loom"`, these types use the `loom` crate's
//! primitives instead of std's, and their tests explore every interleaving
//! of the threads they start (`scripts/test.sh` runs them).

mod cpu_times;
mod in_flight;
mod mailbox;
mod rate_limit;
mod rpc_tally;
mod work_queue;

pub use cpu_times::CpuTimes;
pub use in_flight::{InFlight, InFlightGuard};
pub use mailbox::Mailbox;
pub use rate_limit::{RateLimit, Suppressed};
pub use rpc_tally::{Outcome, RpcTally};
pub use work_queue::WorkQueue;

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    Arc, Condvar, Mutex,
};
/// loom's `try_lock` reports std's error type.
pub(crate) use std::sync::TryLockError;
#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    Arc, Condvar, Mutex,
};

/// Locks `m`, std's or (under loom) loom's; a panic of another holder
/// does not make the data unusable here: every holder in this crate leaves
/// it consistent before anything can panic, and the panic itself is
/// reported where it happened.
pub(crate) fn lock<M: Lock + ?Sized>(m: &M) -> M::Guard<'_> {
    m.lock_recovering()
}

/// A mutex [`lock`] takes: std's (process-wide state loom does not model
/// stays on std's even in loom builds) and loom's.
pub(crate) trait Lock {
    type Guard<'a>
    where
        Self: 'a;
    fn lock_recovering(&self) -> Self::Guard<'_>;
}

impl<T: ?Sized> Lock for std::sync::Mutex<T> {
    type Guard<'a>
        = std::sync::MutexGuard<'a, T>
    where
        Self: 'a;
    fn lock_recovering(&self) -> Self::Guard<'_> {
        self.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(loom)]
impl<T: ?Sized> Lock for loom::sync::Mutex<T> {
    type Guard<'a>
        = loom::sync::MutexGuard<'a, T>
    where
        Self: 'a;
    fn lock_recovering(&self) -> Self::Guard<'_> {
        self.lock().unwrap_or_else(|e| e.into_inner())
    }
}
