//! SPDK's log lines through a rate limit per kind (source line): a host
//! that sends bad commands makes SPDK 20.07 log an error per command (10 s
//! of `nvme_fuzz` wrote 233 MB), a way to fill a disk from the network.
//! Of each kind at most `burst` lines per [`WINDOW`] are written; then one
//! line says how many more were left out. Errors, warnings and notices are
//! limited; INFO and DEBUG lines (asked for with `-L`) are not.
//!
//! SPDK calls the logfunc set in `spdk_app_opts.log` (the shim's
//! `spdk_pmem_log_func`, which formats the line as SPDK does) from any
//! thread; the shim hands the line to [`sink`] here, which writes it, if
//! admitted, with the shim's copy of SPDK's own output (stderr with a
//! timestamp up to the print level, syslog up to the log level).

use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::sync::{RateLimit, Suppressed};
use crate::sys;

/// The window over which a kind's lines are counted.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Lines of one kind per window, unless told otherwise.
pub const DEFAULT_BURST: u32 = 10;

/// A kind of line: where it is logged from, and at which level.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Kind {
    level: c_int,
    file: Option<CString>,
    line: c_int,
    func: Option<CString>,
}

/// The limit of the running application (none: lines go straight out).
static LIMIT: Mutex<Option<Arc<RateLimit<Kind>>>> = Mutex::new(None);

/// The thread that reports windows which ended while nothing was logged,
/// and the sender whose drop stops it.
static TIMER: Mutex<Option<(Sender<()>, JoinHandle<()>)>> = Mutex::new(None);
/// How often the timer looks for windows that are over.
const TIMER_EVERY: Duration = Duration::from_secs(1);

fn current() -> Option<Arc<RateLimit<Kind>>> {
    crate::sync::lock(&LIMIT).clone()
}

/// Starts limiting SPDK's log lines to `burst` per kind per [`WINDOW`]
/// (0: no limit). Returns the logfunc to set in `spdk_app_opts.log` (none:
/// SPDK's own output).
pub(crate) fn install(burst: u32) -> sys::logfunc {
    if burst == 0 {
        return None;
    }
    let limit = Arc::new(RateLimit::new(burst, WINDOW));
    *crate::sync::lock(&LIMIT) = Some(limit.clone());
    start_timer(limit);
    // SAFETY: `sink` has the signature the shim calls, and lives forever.
    unsafe { sys::spdk_pmem_log_set_sink(Some(sink)) };
    Some(sys::spdk_pmem_log_func)
}

/// At the application's end: says what the open windows left out, and
/// lets further lines through unlimited.
pub(crate) fn finish() {
    let Some(limit) = crate::sync::lock(&LIMIT).take() else {
        return;
    };
    stop_timer();
    // SAFETY: no sink; the shim writes lines itself.
    unsafe { sys::spdk_pmem_log_set_sink(None) };
    for left_out in limit.drain() {
        report(&left_out, &limit);
    }
}

/// Without it, a kind that floods and goes quiet would be reported only
/// when some later line is logged, or at exit: a quiet target would never
/// say that lines were left out.
fn start_timer(limit: Arc<RateLimit<Kind>>) {
    stop_timer();
    let (stop, stopped) = mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("log-limit".into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(TIMER_EVERY) {
                for left_out in limit.expire(Instant::now()) {
                    report(&left_out, &limit);
                }
            }
        });
    // Without the thread, ended windows are still reported with the next
    // line and at exit.
    if let Ok(handle) = spawned {
        *crate::sync::lock(&TIMER) = Some((stop, handle));
    }
}

fn stop_timer() {
    let timer = crate::sync::lock(&TIMER).take();
    if let Some((stop, handle)) = timer {
        drop(stop);
        let _ = handle.join();
    }
}

/// The shim's sink: one formatted line from SPDK.
extern "C" fn sink(
    level: c_int,
    file: *const c_char,
    line: c_int,
    func: *const c_char,
    msg: *const c_char,
) {
    // No panic may unwind into SPDK's C (the crate's panic policy; this one
    // is not logged: logging it would come back here).
    let _ = crate::panics::catch(|| {
        let limit = current().filter(|_| level <= sys::SPDK_LOG_NOTICE);
        let Some(limit) = limit else {
            // SAFETY: the shim's own pointers, valid for this call.
            unsafe { sys::spdk_pmem_log_emit(level, file, line, func, msg) };
            return;
        };
        // SAFETY: NULL or C strings from SPDK's log call, valid for it.
        let owned = |p: *const c_char| (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.into());
        let kind = Kind {
            level,
            file: owned(file),
            line,
            func: owned(func),
        };
        let (show, ended) = limit.admit(&kind, Instant::now());
        for left_out in ended {
            report(&left_out, &limit);
        }
        if show {
            // SAFETY: as above.
            unsafe { sys::spdk_pmem_log_emit(level, file, line, func, msg) };
        }
    });
}

/// Writes the line that says how many of a kind were left out.
fn report(left_out: &Suppressed<Kind>, limit: &RateLimit<Kind>) {
    let kind = &left_out.kind;
    let window = limit.window();
    let text = format!(
        "... {} more like this in the last {} s (not logged: at most {} of a kind per {} s are)\n",
        thousands(left_out.count),
        window.as_secs(),
        limit.burst(),
        window.as_secs()
    );
    let Ok(msg) = CString::new(text) else { return };
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: C strings that live through the call (NULL file: SPDK's
    // own output then prints the message alone).
    unsafe {
        sys::spdk_pmem_log_emit(
            kind.level,
            ptr(&kind.file),
            kind.line,
            ptr(&kind.func),
            msg.as_ptr(),
        )
    };
}

/// `4812` as `4,812`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_with_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(4812), "4,812");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
