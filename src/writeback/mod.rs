//! Persistent memory as a write-back cache in front of a slower bdev (an
//! RBD image of a Ceph cluster): a write is acknowledged once it is durable
//! in a libpmemblk pool, and reaches the backing store afterwards, in the
//! order the writes were acknowledged, so the backing store always holds a
//! prefix of them.
//!
//! - [`bdev`]: the cache as a bdev (module `pmem_wb`); its state and host
//!   I/O (`cache`) and its destaging (`destage`), on the application
//!   thread;
//! - [`log`]: the log on the pool, its recovery after a crash;
//! - [`order`]: sequence numbers, acknowledgements in order, what is cached,
//!   what to destage next;
//! - [`rpc`]: its JSON-RPC methods.

pub mod bdev;
mod cache;
mod destage;
pub mod log;
pub mod order;
pub mod rpc;
