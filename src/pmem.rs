//! A safe libpmemblk pool: an array of blocks in persistent memory, each
//! written atomically by PMDK's block translation table (BTT).
//!
//! ```no_run
//! use spdk_pmem::pmem::Pool;
//!
//! let pool = Pool::create("/dev/shm/example.pool", 4096, 32 << 20, 0o600)?;
//! let block = vec![0xa5u8; pool.block_size()];
//! pool.write(0, &block)?;
//! let mut back = vec![0u8; pool.block_size()];
//! pool.read(0, &mut back)?;
//! assert_eq!(back, block);
//! # Ok::<(), spdk_pmem::Error>(())
//! ```
//!
//! Thread safety: libpmemblk(7) says "the functions in libpmemblk are thread
//! safe": concurrent `pmemblk_read`/`pmemblk_write` on one pool are allowed
//! (the BTT has one lane per thread, up to `nlane`, and serialises beyond
//! that). So [`Pool`] is `Send + Sync`; closing needs exclusive ownership and
//! happens in `Drop`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::raw::c_void;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use pmemblk_sys as ffi;

use crate::error::{Error, Result};

/// The smallest block size this crate accepts: NVMe cannot expose smaller
/// LBAs, and libpmemblk silently rounds smaller sizes up internally.
pub const MIN_BLOCK_SIZE: usize = 512;

/// The smallest pool file libpmemblk accepts (`PMEMBLK_MIN_POOL` on x86_64).
pub const MIN_POOL_SIZE: usize = (16 << 20) + (8 << 10);

/// An open libpmemblk pool.
#[derive(Debug)]
pub struct Pool {
    handle: NonNull<ffi::PMEMblkpool>,
    path: PathBuf,
    block_size: usize,
    block_count: u64,
}

// SAFETY: libpmemblk(7): "The functions in libpmemblk are thread safe"; a pool
// handle may be used from any thread and from several at once. Only
// pmemblk_close needs exclusive access, and it runs in Drop (&mut self).
unsafe impl Send for Pool {}
// SAFETY: see Send: every &self method calls a thread-safe libpmemblk function.
unsafe impl Sync for Pool {}

fn pmem_error(op: &'static str, path: &Path) -> Error {
    let errno = io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO);
    // SAFETY: pmemblk_errormsg returns a thread-local NUL-terminated string.
    let message = unsafe { CStr::from_ptr(ffi::pmemblk_errormsg()) }
        .to_string_lossy()
        .into_owned();
    Error::Pmem {
        op,
        path: path.to_path_buf(),
        errno,
        message,
    }
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::InvalidArgument(format!("pool path {path:?} contains a NUL byte")))
}

impl Pool {
    /// Creates a pool file of `pool_size` bytes divided into blocks of
    /// `block_size` (the BTT's metadata takes a little of it: see
    /// [`block_count`](Self::block_count)). Fails if the file exists.
    pub fn create(
        path: impl AsRef<Path>,
        block_size: usize,
        pool_size: usize,
        mode: u32,
    ) -> Result<Pool> {
        let path = path.as_ref();
        if block_size < MIN_BLOCK_SIZE {
            return Err(Error::InvalidArgument(format!(
                "block size {block_size} is below the minimum of {MIN_BLOCK_SIZE} bytes"
            )));
        }
        if pool_size < MIN_POOL_SIZE {
            return Err(Error::InvalidArgument(format!(
                "pool size {pool_size} bytes is below libpmemblk's minimum of {MIN_POOL_SIZE} bytes"
            )));
        }
        if path.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "pool path {} is a directory; give a file path",
                path.display()
            )));
        }
        let c = c_path(path)?;
        // SAFETY: `c` is a valid C string; the result is checked for NULL.
        let handle = unsafe { ffi::pmemblk_create(c.as_ptr(), block_size, pool_size, mode) };
        Self::from_raw(handle, path, "pmemblk_create")
    }

    /// Creates a pool of `block_count` usable blocks at least, sizing the file
    /// for the BTT's metadata (as SPDK's `bdev_pmem_create_pool` does not).
    pub fn create_with_blocks(
        path: impl AsRef<Path>,
        block_size: usize,
        block_count: u64,
        mode: u32,
    ) -> Result<Pool> {
        // The BTT keeps each block in a slot of its size rounded up to 256
        // bytes (BTT_INTERNAL_LBA_ALIGNMENT), 512 at least.
        let slot = block_size.max(512).div_ceil(256) * 256;
        let data = (block_count as usize)
            .checked_mul(slot)
            .ok_or_else(|| Error::InvalidArgument("pool size overflows".into()))?;
        // BTT metadata: a map entry (4 B) and a flog entry per block, plus
        // arena headers; 1/64 + 4 MiB covers it with room to spare.
        let size = (data + data / 64 + (4 << 20)).max(MIN_POOL_SIZE);
        Self::create(path, block_size, size, mode)
    }

    /// Opens an existing pool. With `Some(block_size)`, the pool's block size
    /// must match; with `None`, any block size is accepted.
    pub fn open(path: impl AsRef<Path>, block_size: Option<usize>) -> Result<Pool> {
        let path = path.as_ref();
        let c = c_path(path)?;
        // SAFETY: `c` is a valid C string; the result is checked for NULL.
        let handle = unsafe { ffi::pmemblk_open(c.as_ptr(), block_size.unwrap_or(0)) };
        Self::from_raw(handle, path, "pmemblk_open")
    }

    fn from_raw(handle: *mut ffi::PMEMblkpool, path: &Path, op: &'static str) -> Result<Pool> {
        let handle = NonNull::new(handle).ok_or_else(|| pmem_error(op, path))?;
        // SAFETY: `handle` is an open pool.
        let (block_size, block_count) = unsafe {
            (
                ffi::pmemblk_bsize(handle.as_ptr()),
                ffi::pmemblk_nblock(handle.as_ptr()) as u64,
            )
        };
        Ok(Pool {
            handle,
            path: path.to_path_buf(),
            block_size,
            block_count,
        })
    }

    /// Checks a pool's consistency without opening it (`pmemblk_check`):
    /// `Ok(true)` if consistent, `Ok(false)` if not, an error if it cannot be checked.
    pub fn check(path: impl AsRef<Path>, block_size: Option<usize>) -> Result<bool> {
        let path = path.as_ref();
        let c = c_path(path)?;
        // SAFETY: `c` is a valid C string; the pool must not be open, which
        // the caller ensures by not holding a Pool for it.
        match unsafe { ffi::pmemblk_check(c.as_ptr(), block_size.unwrap_or(0)) } {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(pmem_error("pmemblk_check", path)),
        }
    }

    /// The pool file.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Bytes per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }
    /// Usable blocks.
    pub fn block_count(&self) -> u64 {
        self.block_count
    }

    fn check_io(&self, block: u64, len: usize) -> Result<libc::c_longlong> {
        if block >= self.block_count {
            return Err(Error::InvalidArgument(format!(
                "block {block} is out of range: the pool has {} blocks",
                self.block_count
            )));
        }
        if len != self.block_size {
            return Err(Error::InvalidArgument(format!(
                "buffer of {len} bytes for a block of {} bytes",
                self.block_size
            )));
        }
        Ok(block as libc::c_longlong)
    }

    /// Reads block `block` into `buf`, which must be exactly one block long.
    pub fn read(&self, block: u64, buf: &mut [u8]) -> Result<()> {
        let n = self.check_io(block, buf.len())?;
        // SAFETY: `buf` is one block long and `n` is in range (checked above).
        let rc =
            unsafe { ffi::pmemblk_read(self.handle.as_ptr(), buf.as_mut_ptr() as *mut c_void, n) };
        self.rc(rc, "pmemblk_read")
    }

    /// Writes `buf`, exactly one block long, to block `block`, atomically.
    pub fn write(&self, block: u64, buf: &[u8]) -> Result<()> {
        let n = self.check_io(block, buf.len())?;
        #[cfg(feature = "test-hooks")]
        if crate::test_hooks::pool_write_fails(&self.path, block) {
            return Err(Error::Pmem {
                op: "pmemblk_write",
                path: self.path.clone(),
                errno: libc::EIO,
                message: format!("block {block}: a fault armed by test_pmem_fail_writes"),
            });
        }
        // SAFETY: `buf` is one block long and `n` is in range (checked above).
        let rc =
            unsafe { ffi::pmemblk_write(self.handle.as_ptr(), buf.as_ptr() as *const c_void, n) };
        self.rc(rc, "pmemblk_write")
    }

    /// Makes block `block` read as zeros.
    pub fn set_zero(&self, block: u64) -> Result<()> {
        let n = self.check_io(block, self.block_size)?;
        // SAFETY: `n` is in range (checked above).
        let rc = unsafe { ffi::pmemblk_set_zero(self.handle.as_ptr(), n) };
        self.rc(rc, "pmemblk_set_zero")
    }

    /// Marks block `block` as bad: reads fail with EIO until it is written.
    pub fn set_error(&self, block: u64) -> Result<()> {
        let n = self.check_io(block, self.block_size)?;
        // SAFETY: `n` is in range (checked above).
        let rc = unsafe { ffi::pmemblk_set_error(self.handle.as_ptr(), n) };
        self.rc(rc, "pmemblk_set_error")
    }

    fn rc(&self, rc: i32, op: &'static str) -> Result<()> {
        if rc == 0 {
            Ok(())
        } else {
            Err(pmem_error(op, &self.path))
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: the handle is open and owned; no other reference remains.
        unsafe { ffi::pmemblk_close(self.handle.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BS: usize = 4096;

    fn new_pool(dir: &tempfile::TempDir) -> Pool {
        Pool::create_with_blocks(dir.path().join("pool"), BS, 8192, 0o600).unwrap()
    }

    /// A block size that is not a multiple of 256 bytes takes a whole
    /// 256-byte multiple in the BTT: 100,000 blocks of 4,160 bytes (the
    /// write-back cache's slots) lacked some 3,000 before that was counted.
    #[test]
    fn a_pool_of_odd_sized_blocks_has_the_blocks_asked_for() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let pool = Pool::create_with_blocks(dir.path().join("pool"), 4160, 100_000, 0o600).unwrap();
        assert!(pool.block_count() >= 100_000, "{}", pool.block_count());
    }

    #[test]
    fn create_write_read_zero_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let pool = new_pool(&dir);
        assert_eq!(pool.block_size(), BS);
        assert!(pool.block_count() >= 8192, "{}", pool.block_count());
        let last = pool.block_count() - 1;
        let data: Vec<u8> = (0..BS).map(|i| (i % 253) as u8).collect();
        pool.write(last, &data).unwrap();
        let mut back = vec![0u8; BS];
        pool.read(last, &mut back).unwrap();
        assert_eq!(back, data);
        pool.set_zero(last).unwrap();
        pool.read(last, &mut back).unwrap();
        assert!(back.iter().all(|b| *b == 0));
        pool.write(1, &data).unwrap();
        drop(pool);

        assert!(Pool::check(dir.path().join("pool"), Some(BS)).unwrap());
        let pool = Pool::open(dir.path().join("pool"), None).unwrap();
        assert_eq!(pool.block_size(), BS);
        pool.read(1, &mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn set_error_makes_reads_fail_until_written() {
        let dir = tempfile::tempdir().unwrap();
        let pool = new_pool(&dir);
        pool.set_error(5).unwrap();
        let mut buf = vec![0u8; BS];
        let err = pool.read(5, &mut buf).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EIO), "{err}");
        pool.write(5, &buf).unwrap();
        pool.read(5, &mut buf).unwrap();
    }

    #[test]
    fn out_of_range_block_and_wrong_buffer_size_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pool = new_pool(&dir);
        let mut buf = vec![0u8; BS];
        let err = pool.read(pool.block_count(), &mut buf).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
        let err = pool.write(0, &buf[..512]).unwrap_err();
        assert!(err.to_string().contains("buffer of 512 bytes"), "{err}");
        assert!(pool.set_zero(u64::MAX).is_err());
    }

    #[test]
    fn reopening_with_another_block_size_fails_with_pmdk_message() {
        let dir = tempfile::tempdir().unwrap();
        drop(new_pool(&dir));
        let err = Pool::open(dir.path().join("pool"), Some(512)).unwrap_err();
        assert!(matches!(err, Error::Pmem { .. }), "{err:?}");
        assert_eq!(err.errno(), Some(libc::EINVAL));
        assert!(err.to_string().contains("wrong bsize (512)"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_a_pool_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-pool");
        std::fs::write(&path, vec![0x42u8; MIN_POOL_SIZE]).unwrap();
        let err = Pool::open(&path, None).unwrap_err();
        assert!(matches!(err, Error::Pmem { .. }), "{err:?}");
        assert!(Pool::check(&path, None).is_err() || !Pool::check(&path, None).unwrap());
    }

    #[test]
    fn bad_create_arguments_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let err = Pool::create(dir.path().join("p"), 256, 32 << 20, 0o600).unwrap_err();
        assert!(
            err.to_string().contains("below the minimum of 512"),
            "{err}"
        );
        let err = Pool::create(dir.path().join("p"), 4096, 1 << 20, 0o600).unwrap_err();
        assert!(
            err.to_string().contains("below libpmemblk's minimum"),
            "{err}"
        );
        let err = Pool::create(dir.path(), 4096, 32 << 20, 0o600).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
        let err =
            Pool::create(dir.path().join("missing/dir/p"), 4096, 32 << 20, 0o600).unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");
        // An existing pool is never overwritten.
        drop(new_pool(&dir));
        let err = Pool::create(dir.path().join("pool"), 4096, 32 << 20, 0o600).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");
    }
}
