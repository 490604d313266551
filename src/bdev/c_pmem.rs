//! SPDK 20.07's C pmem bdev module (`module/bdev/pmem`), as
//! `bdev_pmem_create`/`bdev_pmem_delete` use it. It knows nothing of the
//! Rust pmem module (`crate::pmem_bdev`), which chooses between the two.

use std::ffi::c_void;
use std::path::Path;

use super::module::{DeviceFigures, Figure, Figures};
use super::Bdev;
use crate::cstr::to_c;
use crate::error::{Error, Result};
use crate::sys;
use crate::thread::{completion, AppThread, Completer, Completion};

/// Exposes an existing libpmemblk pool as the bdev `name`, through SPDK's pmem
/// module (`create_pmem_disk`), as `bdev_pmem_create` does. Call on the app thread.
pub fn create_pmem_bdev(app: AppThread, pool: &Path, name: &str) -> Result<Bdev> {
    let app = app.check()?;
    super::name_free(app, name)?;
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
        _app: app,
    })
}

/// The C module's name in SPDK (`bdev_pmem.c`).
const C_MODULE_NAME: &str = "pmem";

/// Whether `bdev` is one of SPDK's C pmem module's.
pub fn is_c_pmem(bdev: &Bdev) -> bool {
    bdev.module_name().is_ok_and(|m| m == C_MODULE_NAME)
}

/// The figures of a pmem bdev's pool, of either module.
pub(crate) fn pool_figures(blocks: u64, block_size: u64) -> Vec<Figure> {
    vec![
        Figure::gauge(
            "pmem_pool_blocks",
            "Blocks of each pmem bdev's libpmemblk pool",
            blocks,
        ),
        Figure::gauge(
            "pmem_block_size",
            "Block size of each pmem bdev's pool",
            block_size,
        )
        .in_bytes(),
    ]
}

/// The pools of SPDK's C pmem module's bdevs (all that module shows).
pub fn c_pmem_figures(app: AppThread) -> Result<Vec<DeviceFigures>> {
    let mut all = Vec::new();
    for bdev in Bdev::all(app)?.iter().filter(|b| is_c_pmem(b)) {
        all.push(DeviceFigures {
            bdev: bdev.name().to_string(),
            module: C_MODULE_NAME,
            figures: Figures {
                labels: vec![("module", C_MODULE_NAME.to_string())],
                values: pool_figures(bdev.block_count()?, u64::from(bdev.block_size()?)),
            },
        });
    }
    Ok(all)
}

extern "C" fn delete_done(arg: *mut c_void, bdeverrno: i32) {
    crate::app::catch_panic(|| {
        // SAFETY: `arg` is the Completer that delete_pmem_bdev handed to C.
        unsafe { Completer::<i32>::from_raw(arg) }.complete(bdeverrno)
    });
}

/// Deletes a pmem bdev of SPDK's C module (`delete_pmem_disk`; the Rust
/// module's are deleted with `crate::pmem_bdev::module()` and `Module::delete`); the pool file
/// stays. Resolves when SPDK has unregistered it.
pub fn delete_pmem_bdev(bdev: Bdev) -> impl std::future::Future<Output = Result<()>> {
    let started = (|| {
        let raw = bdev.as_ptr()?;
        if !is_c_pmem(&bdev) {
            return Err(Error::InvalidArgument(format!(
                "bdev {:?} is not a pmem bdev",
                bdev.name()
            )));
        }
        let (completer, done): (_, Completion<i32>) = completion("delete_pmem_disk");
        // SAFETY: `raw` was just looked up, so registered; delete_done
        // reclaims the completer once.
        unsafe { sys::delete_pmem_disk(raw, Some(delete_done), completer.into_raw()) };
        Ok(done)
    })();
    async move {
        let rc = started?.await?;
        if rc == -libc::ENODEV {
            return Err(Error::InvalidArgument(format!(
                "bdev {:?} is not a pmem bdev of SPDK's C module",
                bdev.name()
            )));
        }
        crate::error::check_rc("delete_pmem_disk", rc)
    }
}
