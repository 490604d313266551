//! What the integration tests share, one file per concern: target processes
//! ([`target`]), SPDK's programs and initiators ([`spdk`], [`initiators`]),
//! pool files ([`pools`]), ids and ports ([`ids`]), taking turns
//! ([`serial`]), a Ceph cluster ([`ceph`]), the Linux host's VM ([`vm`]),
//! and what tests read of processes ([`process`]). The items most tests use
//! are re-exported here, so a test module starts with `use common::*`.
//!
//! The integration binary declares this module privately, so the compiler
//! reports any helper no test uses. The binaries that run the library in
//! their own process use a few helpers each and declare it `pub mod
//! common`: documented and public there, not reported as unused.

pub mod background;
pub mod ceph;
pub mod crc32c;
pub mod ids;
pub mod initiators;
pub mod loopback;
pub mod metrics;
pub mod pools;
pub mod process;
pub mod rng;
pub mod serial;
pub mod spdk;
pub mod stamp;
pub mod target;
pub mod vm;
pub mod writeback;

pub use ids::*;
pub use initiators::*;
pub use pools::*;
pub use process::*;
pub use serial::*;
pub use spdk::*;
pub use target::*;
