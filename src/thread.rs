//! SPDK threads: sending closures to them, pollers, and awaiting C completion
//! callbacks.
//!
//! SPDK objects belong to the SPDK thread that made them, and SPDK reports
//! the end of an operation by calling a C function pointer. [`Completion`] is
//! the one bridge for that: the C call is started exactly once, when the
//! operation is created, and the returned future resolves when C calls back.
//! [`spawn_local`] runs such futures on the current SPDK thread, driven by
//! SPDK's own message queue (no extra poller, no busy waiting).
//!
//! ```no_run
//! use spdk_pmem::{app::{self, AppOptions}, nvmf, thread};
//!
//! AppOptions::new("example").run(|| {
//!     thread::spawn_local(async {
//!         let app = thread::AppThread::here().expect("spawned on the application thread");
//!         let target = nvmf::Target::default_target(app).expect("nvmf subsystem is up");
//!         match target.add_transport(nvmf::TransportKind::Tcp).await {
//!             Ok(()) => println!("TCP transport added"),
//!             Err(e) => eprintln!("{e}"),
//!         }
//!         app::stop(0).expect("the app is serving");
//!     });
//! })?;
//! # Ok::<(), spdk_pmem::Error>(())
//! ```

use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use crate::app::catch_panic;
use crate::error::{Error, Result};
use crate::sys;

/// Proof that the code holding it runs on an SPDK thread, where SPDK's
/// objects and globals (its bdev list, its targets, its RPC methods) may be
/// touched. `!Send`, like PyO3's `Python<'py>`: it cannot be handed to a
/// `std::thread`, and the calls that take it check again that the caller is
/// still on an SPDK thread, so one kept past the application fails instead of
/// reaching SPDK's freed state.
///
/// ```compile_fail,E0277
/// # fn f(spdk: spdk_pmem::thread::Spdk) {
/// // The token stays on SPDK's threads.
/// std::thread::spawn(move || drop(spdk));
/// # }
/// ```
/// ```no_run
/// # fn f(spdk: spdk_pmem::thread::Spdk) {
/// let name = "pmdk0".to_string();
/// std::thread::spawn(move || drop(name));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spdk {
    _not_send: PhantomData<*mut ()>,
}

impl Spdk {
    /// The token, when the caller runs on an SPDK thread (in the start
    /// closure, a poller, an RPC handler, a message or a `spawn_local`
    /// future); an error otherwise.
    pub fn here() -> Result<Spdk> {
        if Thread::current().is_none() {
            return Err(Error::InvalidArgument(
                "this call must run on an SPDK thread (the start closure, a poller, an RPC \
                 handler, a message or a spawn_local future)"
                    .into(),
            ));
        }
        Ok(Spdk {
            _not_send: PhantomData,
        })
    }

    /// Checks again that the holder is on an SPDK thread: a token kept (in a
    /// thread-local, say) past the application is refused here.
    pub(crate) fn check(self) -> Result<Spdk> {
        Spdk::here()
    }
}

/// Proof that the code holding it runs on SPDK's application thread (the
/// start closure, an RPC handler, or a message or `spawn_local` future
/// there). SPDK keeps its bdev list and its NVMe-oF targets there and walks
/// and changes them without a lock (`spdk_bdev_get_by_name` beside the
/// registration of a new bdev, say), so every call that touches them takes
/// this token, not [`Spdk`]: code on a poll group's thread (a bdev module's
/// `submit` or `create_channel` with `-m 0x3`) gets [`Spdk`] but not this.
/// Like [`Spdk`] it is `!Send` and checked again at each use.
///
/// ```compile_fail,E0308
/// # fn f(spdk: spdk_pmem::thread::Spdk) {
/// // A thread-local token does not reach the bdev list.
/// let _ = spdk_pmem::bdev::Bdev::by_name(spdk, "pmdk0");
/// # }
/// ```
/// ```no_run
/// # fn f() -> spdk_pmem::Result<()> {
/// let app = spdk_pmem::thread::AppThread::here()?;
/// let _ = spdk_pmem::bdev::Bdev::by_name(app, "pmdk0");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppThread {
    spdk: Spdk,
}

impl AppThread {
    /// The token, when the caller runs on SPDK's application thread; an
    /// error that says where to run otherwise.
    pub fn here() -> Result<AppThread> {
        let spdk = Spdk::here()?;
        let on_app_thread = match (Thread::current(), Thread::app_thread()) {
            (Some(here), Some(app)) => here == app,
            // Start-up, before the start closure: a `--json` configuration
            // loads through SPDK's RPC server, on the thread SPDK 20.07's
            // app.c creates first and names "app_thread".
            (Some(_), None) => crate::app::is_running() && current_name() == "app_thread",
            (None, _) => false,
        };
        match on_app_thread {
            true => Ok(AppThread { spdk }),
            false => Err(Error::InvalidArgument(
                "this call must run on SPDK's application thread, which owns the bdev list and \
                 the NVMe-oF targets; send it there (Thread::app_thread().send)"
                    .into(),
            )),
        }
    }

    /// Checks again that the holder is on the application thread.
    pub(crate) fn check(self) -> Result<AppThread> {
        AppThread::here()
    }

    /// The token for work local to this thread (it is an SPDK thread too).
    pub fn spdk(self) -> Spdk {
        self.spdk
    }
}

/// The calling SPDK thread's name (the caller is on one).
fn current_name() -> String {
    // SAFETY: the caller's own live thread; SPDK's name is a C string it
    // keeps for the thread's life.
    unsafe { crate::cstr::from_c(sys::spdk_thread_get_name(sys::spdk_get_thread())) }
}

/// A handle to an SPDK thread, by its id: SPDK never reuses an id, and looks
/// the thread up under its own lock, so a handle that outlives its thread (or
/// the application) fails to send instead of reaching freed memory. Messages
/// may be sent from any thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Thread(u64);

impl Thread {
    /// The SPDK thread the caller runs on, if any.
    pub fn current() -> Option<Thread> {
        // SAFETY: spdk_get_thread only reads a thread-local.
        let raw = unsafe { sys::spdk_get_thread() };
        // SAFETY: `raw` is the caller's own, live thread.
        (!raw.is_null()).then(|| Thread(unsafe { sys::spdk_thread_get_id(raw) }))
    }

    /// The application's main thread, where RPCs and subsystem set-up run,
    /// while an application runs.
    pub fn app_thread() -> Option<Thread> {
        crate::app::app_thread_id().map(Thread)
    }

    /// The thread with SPDK's id `id`, if it exists now.
    pub fn from_id(id: u64) -> Option<Thread> {
        // SAFETY: spdk_thread_get_by_id walks SPDK's thread list under its
        // lock; NULL when there is no such thread.
        (!unsafe { sys::spdk_thread_get_by_id(id) }.is_null()).then_some(Thread(id))
    }

    /// SPDK's id of the thread.
    pub fn id(&self) -> u64 {
        self.0
    }

    /// Runs `f` on this thread, later (from its message queue). Fails when
    /// the thread has exited (or the application has ended).
    pub fn send<F: FnOnce() + Send + 'static>(&self, f: F) -> Result<()> {
        // SAFETY: spdk_thread_get_by_id walks SPDK's thread list under its
        // lock; NULL when the thread is gone.
        let raw = unsafe { sys::spdk_thread_get_by_id(self.0) };
        if raw.is_null() {
            return Err(Error::InvalidArgument(format!(
                "SPDK thread {} has exited (or the application has ended)",
                self.0
            )));
        }
        let boxed: Box<Box<dyn FnOnce() + Send>> = Box::new(Box::new(f));
        let arg = Box::into_raw(boxed) as *mut c_void;
        // SAFETY: `arg` is a leaked Box that msg_trampoline reclaims exactly
        // once; `raw` was live an instant ago (a thread exiting concurrently
        // with this call is the one window SPDK's API leaves open).
        let rc = unsafe { sys::spdk_thread_send_msg(raw, Some(msg_trampoline), arg) };
        if rc != 0 {
            // SAFETY: SPDK refused the message, so the Box was not handed over.
            drop(unsafe { Box::from_raw(arg as *mut Box<dyn FnOnce() + Send>) });
            return Err(Error::spdk("spdk_thread_send_msg", rc));
        }
        Ok(())
    }
}

extern "C" fn msg_trampoline(arg: *mut c_void) {
    // SAFETY: `arg` came from Thread::send's Box::into_raw and SPDK delivers
    // each message once.
    let f = unsafe { Box::from_raw(arg as *mut Box<dyn FnOnce() + Send>) };
    catch_panic(f);
}

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
