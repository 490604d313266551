//! Block devices: SPDK's pmem bdev over a libpmemblk pool, and lookups.
//!
//! Bdevs are created and deleted on the application thread, as SPDK's RPCs do.

use std::ffi::{c_void, CString};
use std::path::Path;
use std::ptr::NonNull;

use crate::cstr::{from_c, to_c};
use crate::error::{Error, Result};
use crate::sys;
use crate::thread::{completion, Completer, Completion};

/// A registered bdev. SPDK owns it; the handle is valid until the bdev is
/// deleted, which only [`delete_pmem_bdev`] (or an RPC) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bdev(NonNull<sys::spdk_bdev>);

impl Bdev {
    /// Looks a bdev up by name (or alias).
    pub fn by_name(name: &str) -> Option<Bdev> {
        let c = CString::new(name).ok()?;
        // SAFETY: `c` is a valid C string; SPDK only reads it.
        NonNull::new(unsafe { sys::spdk_bdev_get_by_name(c.as_ptr()) }).map(Bdev)
    }

    /// The raw pointer, for calls into SPDK.
    pub fn as_ptr(&self) -> *mut sys::spdk_bdev {
        self.0.as_ptr()
    }

    /// The bdev's name.
    pub fn name(&self) -> String {
        // SAFETY: the bdev is registered, so its name is valid.
        unsafe { from_c(sys::spdk_bdev_get_name(self.as_ptr())) }
    }

    /// The module's product name, e.g. `pmemblk disk`.
    pub fn product_name(&self) -> String {
        // SAFETY: as for name().
        unsafe { from_c(sys::spdk_bdev_get_product_name(self.as_ptr())) }
    }

    /// Bytes per logical block.
    pub fn block_size(&self) -> u32 {
        // SAFETY: the bdev is registered.
        unsafe { sys::spdk_bdev_get_block_size(self.as_ptr()) }
    }

    /// Logical blocks.
    pub fn block_count(&self) -> u64 {
        // SAFETY: the bdev is registered.
        unsafe { sys::spdk_bdev_get_num_blocks(self.as_ptr()) }
    }
}

/// Exposes an existing libpmemblk pool as the bdev `name`, through SPDK's pmem
/// module (`create_pmem_disk`), as `bdev_pmem_create` does. Call on the app thread.
pub fn create_pmem_bdev(pool: &Path, name: &str) -> Result<Bdev> {
    if Bdev::by_name(name).is_some() {
        return Err(Error::spdk(
            format!("creating bdev {name:?}: a bdev of that name exists"),
            -libc::EEXIST,
        ));
    }
    if pool.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "pool path {} is a directory",
            pool.display()
        )));
    }
    if !pool.exists() {
        return Err(Error::spdk(
            format!("opening pmem pool {}", pool.display()),
            -libc::ENOENT,
        ));
    }
    let c_pool = to_c("pool path", &pool.to_string_lossy())?;
    let c_name = to_c("bdev name", name)?;
    let mut bdev: *mut sys::spdk_bdev = std::ptr::null_mut();
    // SAFETY: both strings are valid for the call; `bdev` receives the new bdev.
    let rc = unsafe { sys::create_pmem_disk(c_pool.as_ptr(), c_name.as_ptr(), &mut bdev) };
    if rc != 0 {
        return Err(Error::spdk(
            format!("create_pmem_disk({}, {name})", pool.display()),
            rc,
        ));
    }
    NonNull::new(bdev)
        .map(Bdev)
        .ok_or_else(|| Error::spdk("create_pmem_disk returned no bdev", -libc::EIO))
}

extern "C" fn delete_done(arg: *mut c_void, bdeverrno: i32) {
    crate::app::catch_panic(|| {
        // SAFETY: `arg` is the Completer that delete_pmem_bdev handed to C.
        unsafe { Completer::<i32>::from_raw(arg) }.complete(bdeverrno)
    });
}

/// Deletes a pmem bdev (`delete_pmem_disk`); the pool file stays. Resolves
/// when SPDK has unregistered it.
pub fn delete_pmem_bdev(bdev: Bdev) -> impl std::future::Future<Output = Result<()>> {
    let (completer, done): (_, Completion<i32>) = completion("delete_pmem_disk");
    let is_pmem = bdev.product_name() == "pmemblk disk";
    let name = bdev.name();
    if is_pmem {
        // SAFETY: `bdev` is registered; delete_done reclaims the completer once.
        unsafe { sys::delete_pmem_disk(bdev.as_ptr(), Some(delete_done), completer.into_raw()) };
    } else {
        drop(completer);
    }
    async move {
        if !is_pmem {
            return Err(Error::InvalidArgument(format!(
                "bdev {name:?} is not a pmem bdev"
            )));
        }
        let rc = done.await?;
        crate::error::check_rc("delete_pmem_disk", rc)
    }
}
