//! The raw bindings against the real libpmemblk: a pool in a temporary
//! directory, one block written and read back, and the error paths.

use std::ffi::{CStr, CString};
use std::os::raw::c_void;

use pmemblk_sys::*;

const BLOCK: usize = 4096;
const POOL_SIZE: usize = 32 << 20;

fn errormsg() -> String {
    // SAFETY: pmemblk_errormsg returns a thread-local, NUL-terminated string.
    unsafe { CStr::from_ptr(pmemblk_errormsg()) }
        .to_string_lossy()
        .into_owned()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[test]
fn create_write_read_close_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = CString::new(dir.path().join("pool").to_str().unwrap()).unwrap();
    // SAFETY: a valid path; the pool handle is checked and closed below.
    let pool = unsafe { pmemblk_create(path.as_ptr(), BLOCK, POOL_SIZE, 0o600) };
    assert!(!pool.is_null(), "pmemblk_create: {}", errormsg());
    // SAFETY: `pool` is an open pool.
    let (bsize, nblock) = unsafe { (pmemblk_bsize(pool), pmemblk_nblock(pool)) };
    assert_eq!(bsize, BLOCK);
    // The BTT's metadata takes some of the 32 MiB.
    assert!(
        nblock > 7000 && nblock < POOL_SIZE / BLOCK,
        "nblock {nblock}"
    );

    let written: Vec<u8> = (0..BLOCK).map(|i| (i * 7 % 251) as u8).collect();
    let last = (nblock - 1) as i64;
    // SAFETY: `written` holds bsize bytes; block `last` is in range.
    let rc = unsafe { pmemblk_write(pool, written.as_ptr() as *const c_void, last) };
    assert_eq!(rc, 0);
    // SAFETY: the pool is open; closing it once.
    unsafe { pmemblk_close(pool) };

    // SAFETY: reopening the pool just created, with its own block size.
    let pool = unsafe { pmemblk_open(path.as_ptr(), BLOCK) };
    assert!(!pool.is_null(), "pmemblk_open: {}", errormsg());
    let mut read = vec![0u8; BLOCK];
    // SAFETY: `read` holds bsize bytes; block `last` is in range.
    let rc = unsafe { pmemblk_read(pool, read.as_mut_ptr() as *mut c_void, last) };
    assert_eq!(rc, 0);
    assert_eq!(read, written);
    // A block never written reads as zeros.
    // SAFETY: as above, block 0 is in range.
    let rc = unsafe { pmemblk_read(pool, read.as_mut_ptr() as *mut c_void, 0) };
    assert_eq!(rc, 0);
    assert!(read.iter().all(|b| *b == 0));
    // Out of range: EINVAL, not a crash.
    // SAFETY: the library checks the block number itself.
    let rc = unsafe { pmemblk_read(pool, read.as_mut_ptr() as *mut c_void, nblock as i64) };
    assert_eq!(rc, -1);
    assert_eq!(errno(), libc::EINVAL);
    // SAFETY: closing the open pool once.
    unsafe { pmemblk_close(pool) };
}

#[test]
fn block_size_below_the_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let path = CString::new(dir.path().join("pool").to_str().unwrap()).unwrap();
    // Zero is the one block size libpmemblk refuses outright.
    // SAFETY: a valid path; a NULL result is the error being tested.
    let pool = unsafe { pmemblk_create(path.as_ptr(), 0, POOL_SIZE, 0o600) };
    assert!(pool.is_null());
    assert_eq!(errno(), libc::EINVAL);
    assert!(!errormsg().is_empty());

    // Below PMEMBLK_MIN_BLK (512) it silently rounds the internal block up
    // and reports the small size back: the safe layer must refuse it itself,
    // since NVMe cannot expose a 256-byte LBA.
    // SAFETY: as above; the pool is closed below.
    let pool = unsafe { pmemblk_create(path.as_ptr(), 256, POOL_SIZE, 0o600) };
    assert!(!pool.is_null(), "{}", errormsg());
    // SAFETY: `pool` is open; closed once.
    unsafe {
        assert_eq!(pmemblk_bsize(pool), 256);
        pmemblk_close(pool);
    }
}

#[test]
fn a_path_in_a_missing_directory_fails_with_enoent() {
    let dir = tempfile::tempdir().unwrap();
    let path = CString::new(dir.path().join("no/such/dir/pool").to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; a NULL result is the error being tested.
    let pool = unsafe { pmemblk_create(path.as_ptr(), BLOCK, POOL_SIZE, 0o600) };
    assert!(pool.is_null());
    assert_eq!(errno(), libc::ENOENT);
    assert!(errormsg().contains("No such file"), "{}", errormsg());
}
