//! What a Rust bdev's I/O channel holds, and how code that does not know
//! the module's channel type reaches the framework's part of it.

use std::ffi::c_void;

use crate::bdev::completions::ChannelCompletions;
use crate::sys;

/// What a Rust module's channel context points to: the framework's part
/// first (`repr(C)`), so code that does not know the module's channel type
/// reaches it through the same pointer.
#[repr(C)]
pub(super) struct ChannelCtx<C> {
    pub completions: ChannelCompletions,
    pub channel: C,
}

/// `spdk_io_channel_get_ctx`, a static inline in thread.h: the context
/// buffer follows the channel struct.
///
/// # Safety
/// `ch` is a live channel.
pub(super) unsafe fn channel_ctx(ch: *mut sys::spdk_io_channel) -> *mut c_void {
    // SAFETY: per the function's contract, as thread.h computes it.
    unsafe { (ch as *mut u8).add(std::mem::size_of::<sys::spdk_io_channel>()) as *mut c_void }
}
