//! NVMe/TCP as a host speaks it, for the hostile-input and crash tests: the
//! wire format, a minimal synchronous host, and a seeded protocol fuzzer.

pub mod fuzz;
pub mod host;
pub mod wire;
