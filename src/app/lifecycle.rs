//! The application's life: `spdk_app_start` and the start closure, the
//! phases (idle, serving, stopping) that say what may be called, stop and
//! shutdown requests from any thread, shutdown hooks, and the panic
//! policy of application callbacks (a panic stops the application and is
//! resumed by [`AppOptions::run`]).

use std::any::Any;
use std::cell::Cell;
use std::ffi::c_void;
use std::panic;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::spdk_opts::{c_string, SpdkAppOpts};
use super::AppOptions;
use crate::error::{Error, Result};
use crate::sys;

impl AppOptions {
    /// Starts SPDK, calls `start` on the main reactor once the subsystems are
    /// up, and blocks until the application stops ([`stop`], SIGINT, SIGTERM).
    /// Returns the application's exit code (0 after a clean shutdown).
    ///
    /// A panic in `start` or in any callback of this crate stops the
    /// application and is resumed here, after SPDK has shut down.
    pub fn run<F: FnOnce()>(&self, start: F) -> Result<i32> {
        self.validate()?;
        if APP_RUNNING.swap(true, Ordering::SeqCst) {
            return Err(Error::InvalidArgument(
                "an SPDK application is already running in this process".into(),
            ));
        }
        let result = self.run_inner(start);
        APP_RUNNING.store(false, Ordering::SeqCst);
        let code = result?;
        if let Some(payload) = take_panic() {
            panic::resume_unwind(payload);
        }
        Ok(code)
    }

    fn run_inner<F: FnOnce()>(&self, start: F) -> Result<i32> {
        let mut spdk = SpdkAppOpts::new(self)?;
        for flag in &self.log_flags {
            let c = c_string("log flag", flag)?;
            // SAFETY: `c` is a valid C string for the duration of the call.
            if unsafe { sys::spdk_log_set_flag(c.as_ptr()) } != 0 {
                return Err(Error::InvalidArgument(format!("unknown log flag {flag:?}")));
            }
            spdk.opts.print_level = sys::SPDK_LOG_DEBUG;
        }
        spdk.set_pci_lists(&self.env)?;
        spdk.opts.shutdown_cb = Some(shutdown_trampoline);
        spdk.opts.log = crate::log_limit::install(self.log_limit);
        let context = StartContext {
            start: Cell::new(Some(Box::new(start) as Box<dyn FnOnce() + '_>)),
        };
        // SAFETY: every pointer in `spdk.opts` refers to a CString `spdk`
        // owns, which lives until spdk_app_start returns; `context` outlives
        // the call too, since spdk_app_start blocks until the application
        // has stopped. SPDK frees the PCI lists (malloc'ed by
        // pci_addr_array) itself.
        let rc = unsafe {
            sys::spdk_app_start(
                &mut spdk.opts,
                Some(start_trampoline),
                &context as *const StartContext<'_> as *mut c_void,
            )
        };
        *phase() = Phase::Idle;
        APP_THREAD_ID.store(0, Ordering::SeqCst);
        // SAFETY: spdk_app_fini releases what spdk_app_start set up; it is
        // called once after every spdk_app_start, as SPDK's apps do.
        unsafe { sys::spdk_app_fini() };
        crate::log_limit::finish();
        Ok(rc)
    }
}

static APP_RUNNING: AtomicBool = AtomicBool::new(false);

/// Where the running application is: SPDK's threads and its RPC server exist
/// only while `Serving` or `Stopping`. Changed under the mutex, which
/// [`stop`] and [`shutdown`] hold while they call into SPDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No application, or one that has not called its start closure yet.
    Idle,
    /// Started; RPC answers and stop requests go to SPDK.
    Serving,
    /// Shutting down: SPDK finishes the RPC server next, and a second stop
    /// request has nothing to add.
    Stopping,
}

static PHASE: Mutex<Phase> = Mutex::new(Phase::Idle);

/// The id of the application's main SPDK thread, 0 when none.
static APP_THREAD_ID: AtomicU64 = AtomicU64::new(0);

fn phase() -> std::sync::MutexGuard<'static, Phase> {
    crate::sync::lock(&PHASE)
}

/// The id of the application's main SPDK thread, if an application runs.
pub(crate) fn app_thread_id() -> Option<u64> {
    Some(APP_THREAD_ID.load(Ordering::SeqCst)).filter(|&id| id != 0)
}

/// Whether an application runs in this process (from the call to
/// [`AppOptions::run`] until it returns).
pub(crate) fn is_running() -> bool {
    APP_RUNNING.load(Ordering::SeqCst)
}

/// Whether RPC requests may still be answered: an application runs and has
/// not begun to shut down (SPDK frees its RPC server then). This includes
/// start-up, before the start closure, when SPDK loads a `--json`
/// configuration through its own RPC server.
pub(crate) fn serving() -> bool {
    is_running() && *phase() != Phase::Stopping
}

/// Work a clean shutdown waits for before SPDK stops its subsystems (a
/// write-back cache destaging, say): called on the application thread, it
/// calls `done` there once finished.
pub type ShutdownHook = fn(done: Box<dyn FnOnce()>);

static SHUTDOWN_HOOKS: Mutex<Vec<ShutdownHook>> = Mutex::new(Vec::new());

/// Adds `hook` (once) to what a clean shutdown (SIGINT, SIGTERM,
/// `spdk_kill_instance`, [`shutdown`]) awaits before SPDK stops; hosts stay
/// connected meanwhile. The hook bounds its own wait; a second signal stops
/// at once.
pub fn on_shutdown(hook: ShutdownHook) {
    let mut hooks = crate::sync::lock(&SHUTDOWN_HOOKS);
    if !hooks.contains(&hook) {
        hooks.push(hook);
    }
}

/// Runs `hooks` one after another, then stops SPDK.
fn run_shutdown_hooks(mut hooks: Vec<ShutdownHook>) {
    match hooks.pop() {
        // SAFETY: on the app thread (SPDK's shutdown path, or a hook's
        // `done` there), inside SPDK's own shutdown.
        None => unsafe { sys::spdk_app_stop(0) },
        Some(hook) => hook(Box::new(move || run_shutdown_hooks(hooks))),
    }
}

/// SPDK's shutdown callback (SIGINT, SIGTERM, `spdk_kill_instance`, [`shutdown`]):
/// marks the shutdown, awaits the [`on_shutdown`] hooks, then stops as
/// SPDK's default does.
extern "C" fn shutdown_trampoline() {
    catch_panic(|| {
        // SPDK calls this only while its application runs, start-up included.
        *phase() = Phase::Stopping;
        let hooks = crate::sync::lock(&SHUTDOWN_HOOKS).clone();
        run_shutdown_hooks(hooks);
    });
}
static PANIC: Mutex<Option<Box<dyn Any + Send>>> = Mutex::new(None);

struct StartContext<'a> {
    start: Cell<Option<Box<dyn FnOnce() + 'a>>>,
}

extern "C" fn start_trampoline(arg: *mut c_void) {
    // SAFETY: `arg` is the StartContext that run_inner passed to spdk_app_start,
    // alive until spdk_app_start returns; SPDK calls this once, on its main thread.
    let context = unsafe { &*(arg as *const StartContext<'_>) };
    // SAFETY: called on the app thread, which spdk_get_thread returns.
    let id = unsafe { sys::spdk_thread_get_id(sys::spdk_get_thread()) };
    APP_THREAD_ID.store(id, Ordering::SeqCst);
    {
        // A shutdown that began during start-up stands.
        let mut phase = phase();
        if *phase == Phase::Idle {
            *phase = Phase::Serving;
        }
    }
    if let Some(start) = context.start.take() {
        catch_panic(start);
    }
}

/// Runs `f`, catching a panic so it never unwinds into C: the panic is kept,
/// the application is told to stop, and [`AppOptions::run`] resumes it.
pub(crate) fn catch_panic<R>(f: impl FnOnce() -> R) -> Option<R> {
    match crate::panics::catch(f) {
        Ok(value) => Some(value),
        Err(caught) => {
            let mut slot = crate::sync::lock(&PANIC);
            if slot.is_none() {
                *slot = Some(caught.into_payload());
            }
            drop(slot);
            // Harmless when the app is not serving. When the app thread
            // takes no message now, asked again from elsewhere until it
            // does (or the application has ended).
            if stop(-1).is_err() && serving() {
                let _ = std::thread::Builder::new()
                    .name("app-stop".into())
                    .spawn(|| {
                        while stop(-1).is_err() && serving() {
                            std::thread::sleep(std::time::Duration::from_millis(10));
                        }
                    });
            }
            None
        }
    }
}

fn take_panic() -> Option<Box<dyn Any + Send>> {
    crate::sync::lock(&PANIC).take()
}

/// Asks the running application to shut down; [`AppOptions::run`] then
/// returns `code`. Callable from any thread. Before the application started
/// or after it ended it is an error, and changes nothing; so it is while the
/// application's thread has no room for a message (its ring of 65,536 is
/// full): try again. While it is already shutting down it is a no-op (the
/// first stop's code stands).
pub fn stop(code: i32) -> Result<()> {
    let mut phase = phase();
    match *phase {
        Phase::Idle => Err(not_running("app::stop")),
        Phase::Stopping => Ok(()),
        Phase::Serving => {
            // Through a message of ours, whose refusal is seen: SPDK 20.07's
            // spdk_app_stop sends the app thread a message and ignores the
            // error, so a stop asked while that thread's ring is full was
            // lost without a word. On the app thread, just after it took a
            // message off the ring, spdk_app_stop's own message has room.
            let id = app_thread_id().ok_or_else(|| not_running("app::stop"))?;
            // SAFETY: spdk_thread_get_by_id walks SPDK's thread list under
            // its lock; the app is serving (checked under the lock its end
            // takes), so its thread exists. The code travels as the
            // message's pointer-sized argument; stop_on_app_thread takes
            // nothing else.
            let rc = unsafe {
                let thread = sys::spdk_thread_get_by_id(id);
                if thread.is_null() {
                    return Err(not_running("app::stop"));
                }
                sys::spdk_thread_send_msg(
                    thread,
                    Some(stop_on_app_thread),
                    code as isize as *mut c_void,
                )
            };
            if rc != 0 {
                return Err(Error::Environment(format!(
                    "app::stop: the application's thread takes no message now (rc {rc}); try \
                     again"
                )));
            }
            *phase = Phase::Stopping;
            Ok(())
        }
    }
}

/// Runs on the app thread: spdk_app_stop records the code (the message's
/// argument) and sends this thread the message that stops it.
extern "C" fn stop_on_app_thread(arg: *mut c_void) {
    // SAFETY: on the app thread of the serving application, as stop sent it.
    unsafe { sys::spdk_app_stop(arg as isize as i32) }
}

/// Starts the same clean shutdown as SIGINT: subsystems finish, then the app
/// stops with 0. Errors, changing nothing, when no application is serving.
pub fn shutdown() -> Result<()> {
    match *phase() {
        Phase::Idle => Err(not_running("app::shutdown")),
        Phase::Stopping => Ok(()),
        Phase::Serving => {
            // SAFETY: as in stop; the message runs shutdown_trampoline on the
            // app thread, which marks the shutdown.
            unsafe { sys::spdk_app_start_shutdown() };
            Ok(())
        }
    }
}

fn not_running(what: &str) -> Error {
    Error::InvalidArgument(format!(
        "{what}: no SPDK application is running in this process"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caught_panic_is_kept_for_run_to_resume() {
        assert!(catch_panic(|| panic!("boom")).is_none());
        let payload = take_panic().expect("panic recorded");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
        assert_eq!(catch_panic(|| 7), Some(7));
    }
}
