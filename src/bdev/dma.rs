//! Buffers SPDK can do I/O into: `spdk_dma_zmalloc` memory (pinned, with a
//! known IO address), owned by Rust.
//!
//! A [`DmaBuf`] given to an I/O ([`crate::bdev::io::IoChannel::read`], say)
//! moves into it and comes back with the result: while SPDK uses it, no Rust
//! code can read, write or free it, even if the future is dropped (the
//! buffer is then freed once SPDK has finished with it).

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use crate::error::{Error, Result};
use crate::sys;
use crate::thread::Spdk;

/// A zeroed, aligned buffer from SPDK's DMA-safe memory.
pub struct DmaBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer is plain memory owned by this value alone, and
// spdk_dma_free (rte_free) may be called from any thread.
unsafe impl Send for DmaBuf {}
// SAFETY: &DmaBuf only reads the memory.
unsafe impl Sync for DmaBuf {}

impl DmaBuf {
    /// `len` zeroed bytes aligned to `align` (a power of two, or 0 for a
    /// cache line). Needs the SPDK environment, hence the token.
    pub fn new(spdk: Spdk, len: usize, align: usize) -> Result<DmaBuf> {
        spdk.check()?;
        if len == 0 {
            return Err(Error::InvalidArgument("a DMA buffer of 0 bytes".into()));
        }
        if align != 0 && !align.is_power_of_two() {
            return Err(Error::InvalidArgument(format!(
                "DMA buffer alignment {align} is not a power of two"
            )));
        }
        // SAFETY: plain allocation; the result is checked for NULL.
        let raw = unsafe { sys::spdk_dma_zmalloc(len, align, std::ptr::null_mut()) };
        let ptr = NonNull::new(raw as *mut u8)
            .ok_or_else(|| Error::spdk(format!("spdk_dma_zmalloc({len} bytes)"), -libc::ENOMEM))?;
        Ok(DmaBuf { ptr, len })
    }

    /// The buffer's address, for C calls that fill or read it.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Deref for DmaBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` initialised (zeroed) bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for DmaBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for deref; &mut self makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        // SAFETY: allocated by spdk_dma_zmalloc, freed once; no I/O holds it
        // (an I/O owns the DmaBuf itself while it runs).
        unsafe { sys::spdk_dma_free(self.ptr.as_ptr() as *mut _) }
    }
}

impl std::fmt::Debug for DmaBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaBuf").field("len", &self.len).finish()
    }
}
