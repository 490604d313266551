//! NVMe/TCP as a host speaks it, for the hostile-input tests: the wire
//! format and a seeded protocol fuzzer built on it.

pub mod fuzz;
pub mod wire;
