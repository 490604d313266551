//! Error lines on stderr from code that must not panic: `extern "C"`
//! callbacks, worker threads, drops. `eprintln!` panics when the write
//! fails (stderr closed, EPIPE); here a failed write is ignored.

use std::io::Write;

/// Writes `message` and a newline to stderr, ignoring a failed write.
pub(crate) fn error(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}
