//! The cache's JSON-RPC methods: `bdev_pmem_cache_create`,
//! `bdev_pmem_cache_delete` and `bdev_pmem_cache_flush` (its figures are in
//! `bdev_get_bdevs`' `driver_specific.pmem_wb`).

use std::path::PathBuf;

use super::bdev::{self, CacheParams};
use super::log::Damage;
use crate::error::Result;
use crate::rpc::{register_typed_async_method, RpcStates};
use crate::thread::AppThread;

/// `bdev_pmem_cache_create`'s parameters.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRpc {
    name: String,
    base_bdev: String,
    pool: String,
    slots: Option<u64>,
    /// Replay a damaged log up to the damage, giving up the writes after.
    #[serde(default)]
    accept_damaged_log: bool,
    /// How long a host's FLUSH or a write waiting for room in a full log
    /// waits before it fails (0: as long as it takes).
    wait_timeout_ms: Option<u64>,
}

/// The parameters of the methods that name one cache.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NameRpc {
    name: String,
}

/// Serves `bdev_pmem_cache_create` (name, base_bdev, pool, and slots when
/// the pool is to be created), `bdev_pmem_cache_delete` (name) and
/// `bdev_pmem_cache_flush` (name: answers once everything acknowledged
/// before the call is in the backing bdev).
pub fn serve_rpcs() -> Result<()> {
    bdev::register_module()?;
    register_typed_async_method(
        "bdev_pmem_cache_create",
        RpcStates::Runtime,
        |p: CreateRpc| async move {
            let app = AppThread::here()?;
            let params = CacheParams {
                name: p.name,
                base: p.base_bdev,
                pool: PathBuf::from(p.pool),
                create_slots: p.slots,
                wait_timeout: match p.wait_timeout_ms {
                    None => Some(bdev::DEFAULT_WAIT_TIMEOUT),
                    Some(0) => None,
                    Some(ms) => Some(std::time::Duration::from_millis(ms)),
                },
                damaged_log: if p.accept_damaged_log {
                    Damage::Discard
                } else {
                    Damage::Refuse
                },
            };
            let bdev = bdev::create(app, params).await?;
            Ok(bdev.name().to_string())
        },
    )?;
    register_typed_async_method(
        "bdev_pmem_cache_delete",
        RpcStates::Runtime,
        |p: NameRpc| async move {
            let app = AppThread::here()?;
            bdev::module()?.delete(app, &p.name).await?;
            Ok(true)
        },
    )?;
    register_typed_async_method(
        "bdev_pmem_cache_flush",
        RpcStates::Runtime,
        |p: NameRpc| async move {
            let app = AppThread::here()?;
            bdev::flush(app, &p.name).await?;
            Ok(true)
        },
    )
}
