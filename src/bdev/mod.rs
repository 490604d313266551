//! Block devices: lookups, SPDK's C pmem bdev over a libpmemblk pool, I/O
//! from Rust ([`io`], [`dma`]) and bdev modules written in Rust ([`module`]).
//!
//! Bdevs are created and deleted on the application thread, as SPDK's RPCs do.

mod completions;
pub mod dma;
pub mod io;
pub mod module;

use std::ffi::{c_void, CString};
use std::path::Path;
use std::ptr::NonNull;

use crate::cstr::{from_c, to_c};
use crate::error::{Error, Result};
use crate::sys;
use crate::thread::{completion, Completer, Completion, Spdk};

/// A registered bdev, by name. SPDK owns the bdev and a client may delete it
/// over RPC at any moment, so the handle holds no pointer: each call looks
/// the bdev up again and fails with [`Error::NotFound`] once it is gone.
/// Obtained on an SPDK thread ([`Spdk`]), and used there (`!Send`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bdev {
    name: String,
    _spdk: Spdk,
}

impl Bdev {
    /// Looks a bdev up by name (or alias); `None` when there is none (or the
    /// caller is no longer on an SPDK thread).
    pub fn by_name(spdk: Spdk, name: &str) -> Option<Bdev> {
        let spdk = spdk.check().ok()?;
        lookup(name)?;
        Some(Bdev {
            name: name.to_string(),
            _spdk: spdk,
        })
    }

    /// A handle for a bdev just registered under `name`.
    pub(crate) fn known(spdk: Spdk, name: &str) -> Bdev {
        Bdev {
            name: name.to_string(),
            _spdk: spdk,
        }
    }

    /// The registered bdev now, or NotFound; for calls into SPDK, which must
    /// not keep the pointer past the current message.
    pub fn as_ptr(&self) -> Result<*mut sys::spdk_bdev> {
        self._spdk.check()?;
        lookup(&self.name)
            .map(NonNull::as_ptr)
            .ok_or_else(|| Error::NotFound(format!("bdev {:?} no longer exists", self.name)))
    }

    /// The name it was looked up by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The module's product name, e.g. `pmemblk disk`.
    pub fn product_name(&self) -> Result<String> {
        let bdev = self.as_ptr()?;
        // SAFETY: just looked up on this SPDK thread, so registered.
        Ok(unsafe { from_c(sys::spdk_bdev_get_product_name(bdev)) })
    }

    /// Bytes per logical block.
    pub fn block_size(&self) -> Result<u32> {
        let bdev = self.as_ptr()?;
        // SAFETY: as for product_name.
        Ok(unsafe { sys::spdk_bdev_get_block_size(bdev) })
    }

    /// Logical blocks.
    pub fn block_count(&self) -> Result<u64> {
        let bdev = self.as_ptr()?;
        // SAFETY: as for product_name.
        Ok(unsafe { sys::spdk_bdev_get_num_blocks(bdev) })
    }
}

fn lookup(name: &str) -> Option<NonNull<sys::spdk_bdev>> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid C string; SPDK only reads it. Callers are on an
    // SPDK thread (checked through the token).
    NonNull::new(unsafe { sys::spdk_bdev_get_by_name(c.as_ptr()) })
}

/// Exposes an existing libpmemblk pool as the bdev `name`, through SPDK's pmem
/// module (`create_pmem_disk`), as `bdev_pmem_create` does. Call on the app thread.
pub fn create_pmem_bdev(spdk: Spdk, pool: &Path, name: &str) -> Result<Bdev> {
    let spdk = spdk.check()?;
    if lookup(name).is_some() {
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
    if bdev.is_null() {
        return Err(Error::spdk("create_pmem_disk returned no bdev", -libc::EIO));
    }
    Ok(Bdev {
        name: name.to_string(),
        _spdk: spdk,
    })
}

extern "C" fn delete_done(arg: *mut c_void, bdeverrno: i32) {
    crate::app::catch_panic(|| {
        // SAFETY: `arg` is the Completer that delete_pmem_bdev handed to C.
        unsafe { Completer::<i32>::from_raw(arg) }.complete(bdeverrno)
    });
}

/// Deletes a pmem bdev of either module (SPDK's C `delete_pmem_disk`, or
/// [`crate::pmem_bdev::delete`]); the pool file stays. Resolves
/// when SPDK has unregistered it.
pub fn delete_pmem_bdev(bdev: Bdev) -> impl std::future::Future<Output = Result<()>> {
    let rust_module = crate::pmem_bdev::is_rust_pmem(&bdev);
    let started = (|| {
        if rust_module {
            return Ok(None);
        }
        let raw = bdev.as_ptr()?;
        if bdev.product_name()? != "pmemblk disk" {
            return Err(Error::InvalidArgument(format!(
                "bdev {:?} is not a pmem bdev",
                bdev.name()
            )));
        }
        let (completer, done): (_, Completion<i32>) = completion("delete_pmem_disk");
        // SAFETY: `raw` was just looked up, so registered; delete_done
        // reclaims the completer once.
        unsafe { sys::delete_pmem_disk(raw, Some(delete_done), completer.into_raw()) };
        Ok(Some(done))
    })();
    async move {
        match started? {
            Some(done) => crate::error::check_rc("delete_pmem_disk", done.await?),
            None => crate::pmem_bdev::delete(bdev).await,
        }
    }
}
