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

use std::ffi::c_void;
use std::marker::PhantomData;

use crate::app::catch_panic;
use crate::error::{Error, Result};
use crate::sys;

mod poller;
mod task;

pub use poller::{PollTicks, Poller};
pub use task::{completion, sleep, spawn_local, Completer, Completion};

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
