//! Pool files for tests: where they live and how this process opens them.

use std::path::Path;

/// Runs `f` on the pool at `path` (created with `blocks` blocks of
/// `block_size` if missing), then closes it.
pub fn with_pool<R>(
    path: &Path,
    block_size: usize,
    blocks: u64,
    f: impl FnOnce(&spdk_pmem::pmem::Pool) -> R,
) -> R {
    use spdk_pmem::pmem::Pool;
    let pool = if path.exists() {
        Pool::open(path, Some(block_size))
    } else {
        Pool::create_with_blocks(path, block_size, blocks, 0o600)
    }
    .unwrap_or_else(|e| panic!("pool {}: {e}", path.display()));
    f(&pool)
}

/// A directory in /dev/shm for pools (memory, so the pmem bdev is fast);
/// removed on drop.
pub fn shm_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("spdk-pmem-test")
        .tempdir_in("/dev/shm")
        .expect("a directory in /dev/shm")
}
