//! Block devices: lookups, SPDK's C pmem bdev over a libpmemblk pool, I/O
//! from Rust ([`io`], [`dma`]) and bdev modules written in Rust ([`module`]).
//!
//! Bdevs are created and deleted on the application thread, as SPDK's RPCs do.

mod c_pmem;
mod completions;
pub mod dma;
pub mod io;
pub mod module;
mod status;

pub(crate) use c_pmem::pool_figures;
pub use c_pmem::{c_pmem_figures, create_pmem_bdev, delete_pmem_bdev, is_c_pmem};

use std::ffi::CString;
use std::ptr::NonNull;

use crate::cstr::from_c;
use crate::error::{Error, Result};
use crate::sys;
use crate::thread::AppThread;

/// A registered bdev, by name. SPDK owns the bdev and a client may delete it
/// over RPC at any moment, so the handle holds no pointer: each call looks
/// the bdev up again and fails with [`Error::NotFound`] once it is gone.
/// Obtained on the application thread ([`AppThread`]), and used there
/// (`!Send`): each call checks that it still is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bdev {
    name: String,
    _app: AppThread,
}

impl Bdev {
    /// Looks a bdev up by name (or alias); `None` when there is none (or the
    /// caller is no longer on the application thread).
    pub fn by_name(app: AppThread, name: &str) -> Option<Bdev> {
        let app = app.check().ok()?;
        lookup(name)?;
        Some(Bdev {
            name: name.to_string(),
            _app: app,
        })
    }

    /// Every registered bdev, by its name, in SPDK's order.
    pub fn all(app: AppThread) -> Result<Vec<Bdev>> {
        let app = app.check()?;
        let mut bdevs = Vec::new();
        // SAFETY: the bdev list changes only on the application thread, this
        // one, and nothing here yields while walking it.
        unsafe {
            let mut b = sys::spdk_bdev_first();
            while !b.is_null() {
                bdevs.push(Bdev::known(app, &from_c(sys::spdk_bdev_get_name(b))));
                b = sys::spdk_bdev_next(b);
            }
        }
        Ok(bdevs)
    }

    /// A handle for a bdev just registered under `name`.
    pub(crate) fn known(app: AppThread, name: &str) -> Bdev {
        Bdev {
            name: name.to_string(),
            _app: app,
        }
    }

    /// The registered bdev now, or NotFound; for calls into SPDK, which must
    /// not keep the pointer past the current message.
    pub fn as_ptr(&self) -> Result<*mut sys::spdk_bdev> {
        self._app.check()?;
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
        // SAFETY: just looked up on the application thread, which is where
        // bdevs are unregistered, so registered for this call.
        Ok(unsafe { from_c(sys::spdk_bdev_get_product_name(bdev)) })
    }

    /// The name of the bdev module it belongs to (`malloc`, `pmem`, `pmem_rs` …).
    pub fn module_name(&self) -> Result<String> {
        let bdev = self.as_ptr()?;
        // SAFETY: as for product_name; a registered bdev's module is a
        // registered module, which lives for the process.
        Ok(unsafe { from_c((*(*bdev).module).name) })
    }

    /// What its module says of it (`bdev_get_bdevs`' `driver_specific`):
    /// `{"rbd": {"pool_name": …}}` for SPDK's RBD module, say; `{}` when
    /// the module says nothing.
    pub fn driver_info(&self) -> Result<serde_json::Value> {
        let bdev = self.as_ptr()?;
        let mut text: Vec<u8> = Vec::new();
        // SAFETY: `text` outlives the writer, which calls `append` only
        // until spdk_json_write_end returns; the bdev was just looked up on
        // the application thread, where bdevs are unregistered, and its
        // module writes into the writer within the call.
        let rc = unsafe {
            let w = sys::spdk_json_write_begin(
                Some(append),
                &mut text as *mut Vec<u8> as *mut std::ffi::c_void,
                0,
            );
            if w.is_null() {
                return Err(Error::spdk("spdk_json_write_begin", -libc::ENOMEM));
            }
            sys::spdk_json_write_object_begin(w);
            sys::spdk_bdev_dump_info_json(bdev, w);
            sys::spdk_json_write_object_end(w);
            sys::spdk_json_write_end(w)
        };
        if rc != 0 {
            return Err(Error::spdk(
                format!("writing bdev {:?}'s driver information", self.name),
                rc,
            ));
        }
        serde_json::from_slice(&text).map_err(|e| {
            Error::Environment(format!(
                "bdev {:?}'s driver information is not JSON: {e}",
                self.name
            ))
        })
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

/// SPDK's JSON writer's output, into the `Vec<u8>` at `ctx`.
extern "C" fn append(
    ctx: *mut std::ffi::c_void,
    data: *const std::ffi::c_void,
    size: usize,
) -> i32 {
    if size == 0 {
        return 0;
    }
    // SAFETY: `ctx` is driver_info's Vec, alive and not otherwise borrowed
    // during the writer's calls; `data` holds `size` bytes.
    let (text, data) = unsafe {
        (
            &mut *(ctx as *mut Vec<u8>),
            std::slice::from_raw_parts(data as *const u8, size),
        )
    };
    text.extend_from_slice(data);
    0
}

fn lookup(name: &str) -> Option<NonNull<sys::spdk_bdev>> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid C string; SPDK only reads it. Callers are on an
    // application thread (checked through the token), where the list changes.
    NonNull::new(unsafe { sys::spdk_bdev_get_by_name(c.as_ptr()) })
}

/// Refuses `name` if a bdev of that name exists (of any module), as SPDK's
/// C modules do: a module checks before it opens what a new bdev would hold.
pub fn name_free(app: AppThread, name: &str) -> Result<()> {
    match Bdev::by_name(app, name) {
        Some(_) => Err(Error::spdk(
            format!("creating bdev {name:?}: a bdev of that name exists"),
            -libc::EEXIST,
        )),
        None => Ok(()),
    }
}
