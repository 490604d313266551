//! Ceph RBD images from Rust: connections to a cluster ([`cluster`]) and
//! open images ([`image`]), both made off the reactors, with errors that
//! say what was wrong, and librbd's asynchronous I/O. (SPDK 20.07's C
//! module connects on the application thread: an unreachable monitor stalls
//! the reactor for `client_mount_timeout`, 300 s by default.)

pub mod bdev;
pub mod cluster;
pub mod image;

pub use cluster::{Cluster, ClusterConfig};
pub use image::Image;
