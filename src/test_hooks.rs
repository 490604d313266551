//! Faults for tests, compiled only with the cargo feature `test-hooks`
//! (`scripts/test.sh` builds with it; release builds never have it).
//!
//! The write-back cache's failure paths start at a pool write that fails
//! (an msync EIO on a file-backed pool, a media error). These machines have
//! no device-mapper `error`/`flakey` targets to make a real one, so the
//! fault sits at the lowest layer instead: [`crate::pmem::Pool::write`]
//! asks `pool_write_fails` first. The RPC `test_pmem_fail_writes` arms it.
//!
//! The crash torture's check that a cache's backing bdev always holds a
//! prefix of the acknowledged writes must itself be shown to catch a cache
//! that breaks the order: `test_pmem_cache_destage_out_of_order` makes the
//! next cache created on a pool destage each pair of writes in reverse.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::Result;
use crate::rpc::{register_typed_method, RpcStates};

/// Writes to fail: of the pool at `pool`, to `block` (any block if `None`),
/// after letting `skip` such writes through, the next `count`.
#[derive(Debug, Clone)]
struct WriteFault {
    pool: PathBuf,
    block: Option<u64>,
    skip: u64,
    count: u64,
}

static WRITE_FAULTS: Mutex<Vec<WriteFault>> = Mutex::new(Vec::new());

/// Pools whose next cache destages out of order.
static OUT_OF_ORDER: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Whether the cache being created on the pool at `pool` is to destage
/// each pair of writes in reverse order (and disarms it).
pub(crate) fn destages_out_of_order(pool: &Path) -> bool {
    let mut pools = crate::sync::lock(&OUT_OF_ORDER);
    let before = pools.len();
    pools.retain(|p| p != pool);
    pools.len() < before
}

/// `test_pmem_cache_destage_out_of_order`'s parameters.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OutOfOrderRpc {
    pool: String,
}

/// Whether this write to block `block` of the pool at `path` is to fail
/// (and counts it against the armed fault).
pub(crate) fn pool_write_fails(path: &Path, block: u64) -> bool {
    let mut faults = crate::sync::lock(&WRITE_FAULTS);
    let Some(i) = faults
        .iter()
        .position(|f| f.pool == path && f.block.is_none_or(|b| b == block))
    else {
        return false;
    };
    let fault = &mut faults[i];
    if fault.skip > 0 {
        fault.skip -= 1;
        return false;
    }
    fault.count -= 1;
    if fault.count == 0 {
        faults.remove(i);
    }
    true
}

/// `test_pmem_fail_writes`' parameters.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FailWritesRpc {
    pool: String,
    block: Option<u64>,
    #[serde(default)]
    skip: u64,
    #[serde(default = "one")]
    count: u64,
}

fn one() -> u64 {
    1
}

/// Serves `test_pmem_fail_writes` (pool, and optionally block, skip,
/// count: the next `count` writes to that block of that pool, after `skip`
/// of them, fail with EIO) and `test_pmem_cache_destage_out_of_order`
/// (pool: the next cache created on it destages out of order).
pub fn serve_rpcs() -> Result<()> {
    register_typed_method(
        "test_pmem_cache_destage_out_of_order",
        RpcStates::Runtime,
        |p: OutOfOrderRpc| {
            crate::sync::lock(&OUT_OF_ORDER).push(PathBuf::from(p.pool));
            Ok(true)
        },
    )?;
    register_typed_method(
        "test_pmem_fail_writes",
        RpcStates::Runtime,
        |p: FailWritesRpc| {
            if p.count > 0 {
                let fault = WriteFault {
                    pool: PathBuf::from(p.pool),
                    block: p.block,
                    skip: p.skip,
                    count: p.count,
                };
                crate::sync::lock(&WRITE_FAULTS).push(fault);
            }
            Ok(true)
        },
    )
}
