//! SPDK's pmem bdev RPCs served by this module, with the C module's params,
//! results and error codes.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::{create, module, IoThreads};
use crate::bdev::Bdev;
use crate::error::{Error, Result};
use crate::rpc::{self, RpcError};
use crate::thread::AppThread;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    pmem_file: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteParams {
    name: String,
}

/// Serves SPDK's pmem bdev RPCs (`bdev_pmem_create`, `bdev_pmem_delete`
/// and their 2018 names `construct_pmem_bdev`, `delete_pmem_bdev`) with
/// this module, with the C module's params, results and error codes. The
/// pool RPCs (`bdev_pmem_create_pool`, `bdev_pmem_get_pool_info`,
/// `bdev_pmem_delete_pool`) stay SPDK's: they work on files, not bdevs.
/// `bdev_pmem_delete` still deletes a C module's pmem bdev.
pub fn serve_spdk_rpcs(io_threads: IoThreads) -> Result<()> {
    module()?;
    for method in ["bdev_pmem_create", "construct_pmem_bdev"] {
        rpc::replace_c_method(method, move |params| {
            let reply = rpc_create(method, params, io_threads);
            async move { reply }
        })?;
    }
    for method in ["bdev_pmem_delete", "delete_pmem_bdev"] {
        rpc::replace_c_method(method, move |params| rpc_delete(method, params))?;
    }
    Ok(())
}

fn rpc_create(method: &str, params: Option<Value>, io_threads: IoThreads) -> rpc::RpcResult {
    let p: CreateParams = rpc::typed_params(method, params)?;
    let app = AppThread::here()?;
    let pool = Path::new(&p.pmem_file);
    match create(app, pool, &p.name, io_threads) {
        Ok(bdev) => Ok(Value::String(bdev.name().to_string())),
        Err(e) => Err(match e {
            Error::Spdk { errno, .. } if errno == libc::EEXIST => RpcError {
                code: -libc::EEXIST,
                message: format!("A bdev named {} already exists", p.name),
            },
            Error::InvalidArgument(ref m) if m.ends_with("or no blocks") => RpcError {
                code: -libc::EINVAL,
                message: format!(
                    "Pool {}: block size below 512 bytes, or no blocks",
                    p.pmem_file
                ),
            },
            Error::Pmem {
                errno, ref message, ..
            } => RpcError {
                code: -errno,
                message: format!(
                    "Pool {}: {} ({})",
                    p.pmem_file,
                    std::io::Error::from_raw_os_error(errno),
                    if message.is_empty() {
                        "not a libpmemblk pool?"
                    } else {
                        message
                    }
                ),
            },
            other => RpcError::from(other),
        }),
    }
}

async fn rpc_delete(method: &str, params: Option<Value>) -> rpc::RpcResult {
    let p: DeleteParams = rpc::typed_params(method, params)?;
    let app = AppThread::here()?;
    let Some(bdev) = Bdev::by_name(app, &p.name) else {
        return Err(RpcError {
            code: -libc::ENODEV,
            message: std::io::Error::from_raw_os_error(libc::ENODEV).to_string(),
        });
    };
    let rust = module()?;
    let outcome = if rust.owns(&bdev) {
        rust.delete(app, &p.name).await
    } else {
        crate::bdev::delete_pmem_bdev(bdev).await
    };
    // As SPDK answers: whether the deletion succeeded.
    Ok(Value::Bool(outcome.is_ok()))
}
