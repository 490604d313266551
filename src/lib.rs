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
//! - [`reactor_sleep`]: reactors that sleep while they have nothing to do;
//! - [`metrics`]: a Prometheus endpoint;
//! - [`bdev`]: bdev lookups, SPDK's C pmem bdev, bdev I/O and bdev modules in Rust;
//! - [`pmem_bdev`]: the pmem bdev in Rust, behind SPDK's pmem RPCs;
//! - [`nvmf`]: NVMe-oF target, transports, subsystems, listeners, namespaces;
//! - [`auth`]: who may connect: DH-HMAC-CHAP in-band authentication;
//! - [`keyring`]: named keys from files (upstream SPDK's keyring RPCs);
//! - [`tcp_admission`]: limits on NVMe/TCP connections not yet connected;
//! - [`rpc`]: JSON-RPC methods in Rust and a filter in front of SPDK's dispatch;
//! - [`rpc_compat`]: newer SPDK clients' fields against 20.07's methods;
//! - [`construct_subsystem`]: the 2018 `construct_nvmf_subsystem`;
//! - [`rbd`]: Ceph RBD: cluster connections off the reactors (feature `rbd`);
//! - [`writeback`]: persistent memory as a write-back cache in front of a bdev;
//! - `test_hooks`: faults for tests (feature `test-hooks` only).
//!
//! The raw bindings are re-exported as [`sys`] (SPDK) and [`pmemblk_sys`];
//! the types most programs start from are re-exported here.
//!
//! What the library promises:
//! - **Threads.** SPDK's objects (bdevs, targets, subsystems, the RPC
//!   server) change only on its application thread; every call that reads
//!   or changes them takes an [`AppThread`] token, which exists only there
//!   (it is `!Send`), so calling one elsewhere does not compile. Work for
//!   that thread from any other goes through [`Thread::send`]. A
//!   [`thread::Spdk`] token stands for any SPDK thread (I/O channels,
//!   pollers).
//! - **Lifetimes.** Handles name their object ([`Bdev`], [`Subsystem`]) and
//!   look it up again on each call, so one deleted behind a handle's back
//!   (over RPC, say) gives `NotFound`, never a dangling pointer; a
//!   [`Subsystem`] borrows its [`Target`]. An I/O's buffers are owned by
//!   the future that does it until it completes.
//! - **Errors.** C return codes become [`Error`]s that say what failed and,
//!   where there is one, what to do; nothing is left half-created.
//! - **Panics.** None crosses into C: a panic in an application callback
//!   stops the application and is resumed by [`AppOptions::run`]; one in
//!   an RPC handler becomes an internal-error reply; one in a bdev
//!   module's code fails the I/O it was handling and the target serves on.

pub mod app;
pub mod auth;
pub mod bdev;
pub mod build;
pub mod cli;
pub mod construct_subsystem;
mod cstr;
pub mod error;
pub mod keyring;
mod log;
mod log_limit;
pub mod metrics;
pub mod nvmf;
mod panics;
pub mod pmem;
pub mod pmem_bdev;
#[cfg(feature = "rbd")]
pub mod rbd;
pub mod reactor_sleep;
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

pub use app::AppOptions;
pub use bdev::module::{BdevIo, BdevProps, BlockDevice, IoStatus, IoType, Module};
pub use bdev::Bdev;
pub use nvmf::{ListenAddress, Subsystem, SubsystemConfig, Target, TransportKind};
pub use pmem::Pool;
pub use thread::{AppThread, Thread};
