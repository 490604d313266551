//! C strings at the FFI boundary: Rust strings in, SPDK's strings out.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;

use crate::error::{Error, Result};

/// `s` as a C string; `what` names it in the error if it holds a NUL byte.
pub(crate) fn to_c(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidArgument(format!("{what} {s:?} contains a NUL byte")))
}

/// An owned copy of a string SPDK returned (empty for NULL).
///
/// # Safety
/// `p` must be NULL or point at a NUL-terminated string that stays valid
/// for the duration of the call.
pub(crate) unsafe fn from_c(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-NULL and NUL-terminated per the contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}
