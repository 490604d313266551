//! State of a device that only the application thread touches (`Rc`s,
//! `RefCell`s, pollers, descriptors of other bdevs), kept in the device,
//! which every SPDK thread holds.

use std::mem::ManuallyDrop;

use crate::thread::AppThread;

/// A value reached only with the application thread's token, so a
/// `Send + Sync` device may hold state that is neither. It is dropped on
/// the application thread; dropped anywhere else (which the framework
/// never does: a device is dropped on the thread that unregistered it), it
/// is leaked and the leak reported, since its drop could not run there.
pub struct AppOnly<T> {
    value: ManuallyDrop<T>,
}

// SAFETY: the value is reached only through `get`, which takes the
// application thread's token (`!Send`, made only there), and dropped only
// on that thread (else leaked): it never leaves the application thread.
unsafe impl<T> Send for AppOnly<T> {}
// SAFETY: as for Send: a shared reference from another thread reaches
// nothing without the token.
unsafe impl<T> Sync for AppOnly<T> {}

impl<T> AppOnly<T> {
    /// Keeps `value`, made on the application thread.
    pub fn new(_app: AppThread, value: T) -> AppOnly<T> {
        AppOnly {
            value: ManuallyDrop::new(value),
        }
    }

    /// The value, on the application thread.
    pub fn get(&self, _app: AppThread) -> &T {
        &self.value
    }
}

impl<T> Drop for AppOnly<T> {
    fn drop(&mut self) {
        if AppThread::here().is_ok() {
            // SAFETY: on the application thread, the value's own; dropped
            // once, here.
            unsafe { ManuallyDrop::drop(&mut self.value) };
        } else {
            crate::log::error(&format!(
                "a {} dropped off the application thread: leaked",
                std::any::type_name::<T>()
            ));
        }
    }
}
