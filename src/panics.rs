//! The crate's one policy for a panic in Rust code that C calls (SPDK's
//! callbacks, librbd's completion threads, SPDK's log) or that runs on a
//! thread the crate started for C's sake (the pmem workers):
//!
//! - it never unwinds past that call ([`catch`]);
//! - it is counted ([`caught`]) and reported on the log with what was
//!   running and the panic's message ([`contain`]), once, where it was
//!   caught;
//! - the caller turns it into that call's failure: the I/O fails, the RPC
//!   is answered with an internal error, the completion is dropped;
//! - the process goes on serving, except when the panic came from the
//!   application's own callbacks (`app::catch_panic`): those stop the
//!   application and `AppOptions::run` resumes the panic in its caller.
//!
//! The log sink alone does not log its own panic (it would call itself).

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

static CAUGHT: AtomicU64 = AtomicU64::new(0);

/// How many panics this process has caught under this policy.
pub fn caught() -> u64 {
    CAUGHT.load(Ordering::Relaxed)
}

/// A panic [`catch`] stopped.
pub(crate) struct Caught(Box<dyn Any + Send>);

impl Caught {
    /// The panic's message (`panic!`'s text), or "panic" for other payloads.
    pub(crate) fn message(&self) -> String {
        self.0
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| self.0.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string())
    }

    /// The payload, for a caller that resumes the panic elsewhere.
    pub(crate) fn into_payload(self) -> Box<dyn Any + Send> {
        self.0
    }
}

/// Runs `f`; a panic in it is counted and handed back instead of unwinding.
/// (Unwind safety: each caller leaves what `f` touched consistent or
/// discards it, which is why the closure is asserted unwind-safe here.)
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Caught> {
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        CAUGHT.fetch_add(1, Ordering::Relaxed);
        Caught(payload)
    })
}

/// [`catch`], and the panic reported on the log as "panic in WHAT: MESSAGE";
/// `what` is only made when there is a panic (hot paths allocate nothing).
pub(crate) fn contain<R>(what: impl FnOnce() -> String, f: impl FnOnce() -> R) -> Option<R> {
    catch(f)
        .map_err(|caught| {
            crate::log::error(&format!("panic in {}: {}", what(), caught.message()));
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_counted_and_its_message_kept() {
        let before = caught();
        let got = catch(|| -> u32 { panic!("boom {}", 7) });
        assert_eq!(got.err().map(|c| c.message()).as_deref(), Some("boom 7"));
        assert!(caught() > before);
        assert_eq!(catch(|| 5).ok(), Some(5));
    }
}
