//! What this library was built from: the SPDK release, the vendor patches
//! applied to it, the cargo features built in and where the SPDK tree lives.
//! The binary's `-v`, the metrics' `build_info` and users of the library
//! read them here.

/// `SPDK v20.07`, as SPDK's C binaries print it for `-v`.
pub fn spdk_version() -> String {
    use crate::sys::{SPDK_VERSION_MAJOR, SPDK_VERSION_MINOR, SPDK_VERSION_PATCH};
    if SPDK_VERSION_PATCH == 0 {
        format!("SPDK v{SPDK_VERSION_MAJOR}.{SPDK_VERSION_MINOR:02}")
    } else {
        format!("SPDK v{SPDK_VERSION_MAJOR}.{SPDK_VERSION_MINOR:02}.{SPDK_VERSION_PATCH}")
    }
}

/// The cargo features of SPDK's optional parts that this build has.
pub fn features() -> Vec<&'static str> {
    [
        ("rdma", cfg!(feature = "rdma")),
        ("rbd", cfg!(feature = "rbd")),
        ("asan", cfg!(feature = "asan")),
        ("portable", cfg!(feature = "portable")),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(name, _)| *name)
    .collect()
}

/// The CPU SPDK and DPDK were compiled for (configure's `--target-arch`):
/// `native`, this build machine's, or `x86-64-v2` (the `portable` feature).
pub fn target_arch() -> &'static str {
    crate::sys::TARGET_ARCH
}

/// The numbers of the vendor patches applied to SPDK (`0001`, ...); none
/// are known of a tree given with `SPDK_DIR`.
pub fn patch_numbers() -> Vec<&'static str> {
    crate::sys::PATCHES
        .iter()
        .map(|p| p.split('-').next().unwrap_or(p))
        .collect()
}

/// Where the SPDK tree of this build lives (its C `nvmf_tgt`, `perf`,
/// `identify`, `bdevperf` and `scripts/rpc.py`), as recorded at build time.
pub const SPDK_ROOT: &str = env!("SPDK_ROOT");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_spdks() {
        assert_eq!(spdk_version(), "SPDK v20.07");
    }

    #[test]
    fn the_target_arch_follows_the_portable_feature() {
        let want = if cfg!(feature = "portable") {
            "x86-64-v2"
        } else {
            "native"
        };
        assert_eq!(target_arch(), want);
    }

    #[test]
    fn patches_are_numbered_in_order() {
        let numbers = patch_numbers();
        let mut sorted = numbers.clone();
        sorted.sort();
        assert_eq!(numbers, sorted);
        assert!(numbers
            .iter()
            .all(|n| n.len() == 4 && n.chars().all(|c| c.is_ascii_digit())));
    }
}
