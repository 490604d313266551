//! Persistent memory served as NVMe over Fabrics block storage, from Rust, with
//! real SPDK (v20.07) and PMDK's libpmemblk.
//!
//! One module per concept:
//! - [`app`]: the SPDK application (environment, reactors, RPC server);
//! - [`build`]: what this library was built from (SPDK release, patches, features);
//! - [`cli`]: the command line of SPDK's `nvmf_tgt`;
//! - [`error`]: the crate's error type;
//! - [`pmem`]: a safe libpmemblk pool;
//! - [`thread`]: SPDK threads, pollers, and awaiting C completions;
//! - [`idle_nap`]: reactors that sleep while they have nothing to do;
//! - [`metrics`]: a Prometheus endpoint;
//! - [`bdev`]: bdev lookups, SPDK's C pmem bdev, bdev I/O and bdev modules in Rust;
//! - [`pmem_bdev`]: the pmem bdev in Rust, behind SPDK's pmem RPCs;
//! - [`nvmf`]: NVMe-oF target, transports, subsystems, listeners, namespaces;
//! - [`tcp_admission`]: limits on NVMe/TCP connections not yet connected;
//! - [`rpc`]: JSON-RPC methods in Rust and a filter in front of SPDK's dispatch;
//! - [`rpc_compat`]: newer SPDK clients' fields against 20.07's methods;
//! - [`legacy`]: the 2018 `construct_nvmf_subsystem`;
//! - [`rbd`]: Ceph RBD: cluster connections off the reactors (feature `rbd`);
//! - [`writeback`]: persistent memory as a write-back cache in front of a bdev;
//! - `test_hooks`: faults for tests (feature `test-hooks` only).
//!
//! The raw bindings are re-exported as [`sys`] (SPDK) and [`pmemblk_sys`].

pub mod app;
pub mod bdev;
pub mod build;
pub mod cli;
mod cstr;
pub mod error;
pub mod idle_nap;
pub mod legacy;
mod log;
mod log_limit;
pub mod metrics;
pub mod nvmf;
mod panics;
pub mod pmem;
pub mod pmem_bdev;
#[cfg(feature = "rbd")]
pub mod rbd;
pub mod rpc;
pub mod rpc_compat;
mod sync;
pub mod tcp_admission;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
pub mod thread;
pub mod writeback;

pub use error::{Error, Result};
pub use pmemblk_sys;
pub use spdk_sys as sys;

pub use build::SPDK_ROOT;
