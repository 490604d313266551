//! How a bdev I/O ended, and handing that status to SPDK's bdev layer. A
//! leaf both the module glue (`module`) and the completion queues
//! (`completions`) use, so neither imports the other for it.

use crate::sys;

/// How an I/O ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoStatus {
    /// Done.
    Success,
    /// Failed (NVMe hosts see Internal Device Error).
    Failed,
    /// Out of resources for now: the bdev layer queues the I/O and submits
    /// it again once another I/O on the channel completes.
    NoMemory,
    /// An NVMe status: code type and code.
    Nvme {
        /// Status Code Type.
        sct: i32,
        /// Status Code.
        sc: i32,
    },
}

impl IoStatus {
    /// NVMe Media and Data Integrity Error / Unrecovered Read Error: what a
    /// host sees for a block that cannot be read.
    pub const MEDIA_ERROR: IoStatus = IoStatus::Nvme {
        sct: sys::SPDK_NVME_SCT_MEDIA_ERROR as i32,
        sc: sys::SPDK_NVME_SC_UNRECOVERED_READ_ERROR as i32,
    };
}

/// # Safety
/// `raw` is a live, not yet completed bdev_io, and the caller is on the
/// thread that submitted it.
pub(super) unsafe fn complete_raw(raw: *mut sys::spdk_bdev_io, status: IoStatus) {
    // SAFETY: per the function's contract.
    unsafe {
        match status {
            IoStatus::Success => sys::spdk_bdev_io_complete(raw, sys::SPDK_BDEV_IO_STATUS_SUCCESS),
            IoStatus::Failed => sys::spdk_bdev_io_complete(raw, sys::SPDK_BDEV_IO_STATUS_FAILED),
            IoStatus::NoMemory => sys::spdk_bdev_io_complete(raw, sys::SPDK_BDEV_IO_STATUS_NOMEM),
            IoStatus::Nvme { sct, sc } => sys::spdk_bdev_io_complete_nvme_status(raw, 0, sct, sc),
        }
    }
}
