//! Awaiting C completion callbacks ([`Completion`]) and running futures on
//! the current SPDK thread ([`spawn_local`]), woken through its message
//! queue.

use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use super::{Poller, Thread};
use crate::app::catch_panic;
use crate::error::{Error, Result};

struct CompletionState<T> {
    value: Option<T>,
    completed: bool,
    abandoned: bool,
    waker: Option<Waker>,
}

/// The C side of a completion: handed to C as `cb_arg` through
/// [`Completer::into_raw`], turned back with [`Completer::from_raw`] in the
/// callback, and completed with the callback's result.
pub struct Completer<T>(Arc<Mutex<CompletionState<T>>>);

/// A future for a C operation's callback; created together with its
/// [`Completer`] by [`completion`].
pub struct Completion<T> {
    state: Arc<Mutex<CompletionState<T>>>,
    op: &'static str,
}

/// A linked completer/completion pair for one C call. `op` names the call in
/// the error if C never calls back.
pub fn completion<T>(op: &'static str) -> (Completer<T>, Completion<T>) {
    let state = Arc::new(Mutex::new(CompletionState {
        value: None,
        completed: false,
        abandoned: false,
        waker: None,
    }));
    (Completer(state.clone()), Completion { state, op })
}

impl<T> Completer<T> {
    /// Gives the result to the waiting future.
    pub fn complete(self, value: T) {
        let waker = {
            let mut s = crate::sync::lock(&*self.0);
            s.value = Some(value);
            s.completed = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Hands ownership to C as a `cb_arg`.
    pub fn into_raw(self) -> *mut c_void {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: moves the Arc out of a ManuallyDrop that is never used again,
        // so its reference passes to C without running Drop.
        let state = unsafe { std::ptr::read(&this.0) };
        Arc::into_raw(state) as *mut c_void
    }

    /// Takes ownership back from a `cb_arg`, in the callback or when the C
    /// call failed synchronously and will never call back.
    ///
    /// # Safety
    /// `arg` must come from [`Completer::into_raw`] of the same `T`, and be
    /// turned back at most once.
    pub unsafe fn from_raw(arg: *mut c_void) -> Completer<T> {
        // SAFETY: per the contract, `arg` is an Arc::into_raw of this type.
        Completer(unsafe { Arc::from_raw(arg as *const Mutex<CompletionState<T>>) })
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        // Dropped without a value: C will never call back (it failed
        // synchronously, or the trampoline was not reached).
        let waker = {
            let mut s = crate::sync::lock(&*self.0);
            if s.completed {
                return;
            }
            s.abandoned = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for Completion<T> {
    type Output = Result<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let mut s = crate::sync::lock(&*self.state);
        if let Some(v) = s.value.take() {
            return Poll::Ready(Ok(v));
        }
        if s.abandoned {
            return Poll::Ready(Err(Error::spdk(
                format!("{} (callback never called)", self.op),
                -libc::ECANCELED,
            )));
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A future pinned to the SPDK thread it was spawned on.
struct Task {
    thread: Thread,
    future: UnsafeCell<Option<Pin<Box<dyn Future<Output = ()>>>>>,
}

// SAFETY: `future` is only touched by poll_task, which runs on `thread` (wake
// sends a message there), and by Drop, which leaks the future rather than
// drop it on another thread. The rest is a Send thread handle.
unsafe impl Send for Task {}
// SAFETY: as for Send: no &Task method touches `future` off its thread.
unsafe impl Sync for Task {}

impl Task {
    fn poll_here(self: &Arc<Self>) {
        if Thread::current() != Some(self.thread) {
            return;
        }
        let waker = Waker::from(self.clone());
        let mut cx = Context::from_waker(&waker);
        // SAFETY: we are on the task's thread (checked above) and SPDK runs
        // one message at a time per thread, so no other &mut exists.
        let slot = unsafe { &mut *self.future.get() };
        if let Some(fut) = slot.as_mut() {
            if catch_panic(|| fut.as_mut().poll(&mut cx)) != Some(Poll::Pending) {
                *slot = None;
            }
        }
    }
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        let task = self.clone();
        // A failed send means the thread is exiting; the task is dropped with it.
        let _ = self.thread.send(move || task.poll_here());
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if Thread::current() != Some(self.thread) {
            if let Some(fut) = self.future.get_mut().take() {
                std::mem::forget(fut);
            }
        }
    }
}

/// A future that resolves `after` from now, on the current SPDK thread (a
/// one-shot timed poller): for tasks of [`spawn_local`] that wait.
pub fn sleep(after: std::time::Duration) -> Result<impl Future<Output = ()>> {
    let (done, slept) = completion::<()>("sleeping on an SPDK thread");
    let slot: std::rc::Rc<std::cell::RefCell<Option<Poller>>> = Default::default();
    let kept = std::rc::Rc::clone(&slot);
    let mut done = Some(done);
    let poller = Poller::register(after.as_micros().max(1) as u64, move || {
        if let Some(d) = done.take() {
            d.complete(());
        }
        // One shot: dropping its own poller ends it (and this closure).
        kept.borrow_mut().take();
        false
    })?;
    *slot.borrow_mut() = Some(poller);
    Ok(async move {
        let _ = slept.await;
    })
}

/// Runs `future` on the current SPDK thread: polled now, and again each time
/// a [`Completion`] it awaits is completed. A panic inside stops the app.
pub fn spawn_local<F: Future<Output = ()> + 'static>(future: F) -> Result<()> {
    let thread = Thread::current().ok_or_else(|| {
        Error::InvalidArgument("spawn_local must be called on an SPDK thread".into())
    })?;
    let task = Arc::new(Task {
        thread,
        future: UnsafeCell::new(Some(Box::pin(future))),
    });
    task.poll_here();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Flag(Mutex<bool>);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            *self.0.lock().unwrap() = true;
        }
    }

    #[test]
    fn completion_resolves_when_the_completer_fires_through_a_raw_pointer() {
        let (completer, mut fut) = completion::<i32>("op");
        let flag = Arc::new(Flag(Mutex::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        let raw = completer.into_raw();
        // SAFETY: `raw` came from into_raw above and is reclaimed once.
        unsafe { Completer::<i32>::from_raw(raw) }.complete(-17);
        assert!(*flag.0.lock().unwrap());
        assert!(matches!(
            Pin::new(&mut fut).poll(&mut cx),
            Poll::Ready(Ok(-17))
        ));
    }

    #[test]
    fn a_completer_reclaimed_without_a_value_fails_the_future() {
        let (completer, mut fut) = completion::<()>("spdk_x");
        let raw = completer.into_raw();
        // SAFETY: as if the C call failed synchronously: reclaimed once.
        drop(unsafe { Completer::<()>::from_raw(raw) });
        let waker = Waker::from(Arc::new(Flag(Mutex::new(false))));
        let mut cx = Context::from_waker(&waker);
        match Pin::new(&mut fut).poll(&mut cx) {
            Poll::Ready(Err(e)) => assert!(e.to_string().contains("spdk_x"), "{e}"),
            _ => panic!("expected an error"),
        }
    }
}
