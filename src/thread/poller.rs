//! Pollers: closures SPDK calls on their thread, over and over or every
//! so many microseconds, and the thread's time in busy and idle polls.

use std::ffi::c_void;
use std::ptr::NonNull;

use super::Thread;
use crate::app::catch_panic;
use crate::error::{Error, Result};
use crate::sys;

/// How long the calling SPDK thread has spent in polls that did work and in
/// polls that found none, in TSC ticks since it started (SPDK's
/// `spdk_thread_get_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollTicks {
    /// In polls where a poller or message did work.
    pub busy: u64,
    /// In polls that found nothing to do.
    pub idle: u64,
}

impl PollTicks {
    /// The calling SPDK thread's ticks; `None` off SPDK threads.
    pub fn current() -> Option<PollTicks> {
        let mut stats = sys::spdk_thread_stats::default();
        // SAFETY: fills `stats` for the calling thread, or fails with -EINVAL
        // when there is none.
        (unsafe { sys::spdk_thread_get_stats(&mut stats) } == 0).then_some(PollTicks {
            busy: stats.busy_tsc,
            idle: stats.idle_tsc,
        })
    }
}

/// A poller on the current SPDK thread: calls the closure every `period_us`
/// microseconds (0: every reactor iteration) until dropped.
///
/// The closure is `'static`, as `std::thread::spawn`'s is: a poller that is
/// leaked (`mem::forget`) keeps running, but never over dead borrows.
///
/// ```compile_fail,E0597
/// # use spdk_pmem::thread::Poller;
/// let counted = vec![1, 2, 3];
/// let borrowed = &counted;
/// let poller = Poller::register(0, move || !borrowed.is_empty());
/// std::mem::forget(poller);
/// ```
/// ```no_run
/// # use spdk_pmem::thread::Poller;
/// let counted = vec![1, 2, 3];
/// let poller = Poller::register(0, move || !counted.is_empty());
/// std::mem::forget(poller);
/// ```
///
/// Dropping it is correct anywhere: on another thread, or from inside its own
/// closure, the unregistering and the freeing of the closure are sent to the
/// poller's thread, where they run after any call in progress has returned.
pub struct Poller {
    poller: NonNull<sys::spdk_poller>,
    closure: *mut PollerFn,
    thread: Thread,
}

type PollerFn = Box<dyn FnMut() -> bool + 'static>;

/// What a dropped poller leaves for its thread to do.
struct Unregister {
    poller: NonNull<sys::spdk_poller>,
    closure: *mut PollerFn,
}

// SAFETY: an Unregister is only acted upon on the poller's own thread (it is
// sent there), which is where SPDK's poller and the closure belong.
unsafe impl Send for Unregister {}

impl Unregister {
    /// On the poller's thread: SPDK stops calling it at once, and the closure
    /// is freed by a later message, after a call in progress has returned.
    fn run(self, thread: Thread) {
        let mut raw = self.poller.as_ptr();
        // SAFETY: our own poller, unregistered once, on its thread.
        unsafe { sys::spdk_poller_unregister(&mut raw) };
        let closure = FreeClosure(self.closure);
        // When the message cannot be sent (the thread is gone, or its ring
        // is full and this drop may be running inside the very closure),
        // it is dropped unrun: FreeClosure has no Drop, so the closure
        // leaks instead of being freed under a call in progress.
        let _ = thread.send(move || closure.free());
    }
}

/// A poller's closure to free, by [`FreeClosure::free`] only: dropped
/// otherwise, it leaks.
struct FreeClosure(*mut PollerFn);

// SAFETY: sent only to the poller's own thread, the one place it is freed.
unsafe impl Send for FreeClosure {}

impl FreeClosure {
    /// On the poller's thread, in a message after the one that unregistered
    /// it: no call of the closure is in progress.
    fn free(self) {
        // SAFETY: Poller::register leaked this Box; SPDK no longer calls the
        // poller (unregistered before this message was sent, on this
        // thread), and `self` is consumed, so this runs once.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

impl Poller {
    /// Registers `f`; it returns `true` when it did work (SPDK's busy/idle accounting).
    pub fn register<F: FnMut() -> bool + 'static>(period_us: u64, f: F) -> Result<Poller> {
        let thread = Thread::current().ok_or_else(|| {
            Error::InvalidArgument("pollers can only be registered on an SPDK thread".into())
        })?;
        let closure: *mut PollerFn = Box::into_raw(Box::new(Box::new(f)));
        // SAFETY: `closure` stays valid until the poller is unregistered and
        // a later message frees it; the poller runs only on this thread.
        let raw = unsafe {
            sys::spdk_poller_register(Some(poller_trampoline), closure as *mut c_void, period_us)
        };
        match NonNull::new(raw) {
            Some(poller) => Ok(Poller {
                poller,
                closure,
                thread,
            }),
            None => {
                // SAFETY: registration failed; the closure was not handed over.
                drop(unsafe { Box::from_raw(closure) });
                Err(Error::spdk("spdk_poller_register", -libc::ENOMEM))
            }
        }
    }
}

extern "C" fn poller_trampoline(arg: *mut c_void) -> i32 {
    // SAFETY: `arg` is the closure Poller::register leaked; it is freed only
    // by a message on this thread after the poller was unregistered, so not
    // during this call.
    let f = unsafe { &mut *(arg as *mut PollerFn) };
    match catch_panic(f) {
        Some(true) => sys::SPDK_POLLER_BUSY as i32,
        _ => sys::SPDK_POLLER_IDLE as i32,
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        let job = Unregister {
            poller: self.poller,
            closure: self.closure,
        };
        if Thread::current() == Some(self.thread) {
            job.run(self.thread);
        } else {
            let thread = self.thread;
            // A failed send means the thread is gone, and its pollers with it.
            let _ = thread.send(move || job.run(thread));
        }
    }
}
