//! What the write-back cache's tests share: a pmem base to put it in
//! front of, its figures and test data.

use super::Target;

/// Bytes of a block in these tests.
const BLOCK: usize = 4096;

/// Cache `wb0`'s figures (`bdev_get_bdevs`' `driver_specific.pmem_wb`).
pub fn cache_info(t: &Target) -> serde_json::Value {
    let bdevs = t.rpc_json(&["bdev_get_bdevs", "-b", "wb0"]);
    bdevs[0]["driver_specific"]["pmem_wb"].clone()
}

/// `blocks` 4 KiB blocks of xorshift bytes from `seed`.
pub fn pattern(blocks: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..blocks * BLOCK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The pmem bdev `name` on the pool `pool` (32 MiB of 4 KiB blocks, made
/// if missing): a backing bdev for a cache.
pub fn pmem_base(t: &Target, pool: &std::path::Path, name: &str) {
    let path = pool.to_str().unwrap();
    if !pool.exists() {
        t.rpc_ok(&["bdev_pmem_create_pool", path, "32", "4096"]);
    }
    t.rpc_ok(&["bdev_pmem_create", "-n", name, path]);
}
