//! Builds the vendored SPDK v20.07 (with PMDK) once per cache key, generates the
//! bindings with bindgen and emits the link line of SPDK's own C `nvmf_tgt`.
//!
//! Environment (each is watched with `rerun-if-env-changed`):
//! - `SPDK_DIR`: an SPDK tree that is already built; nothing is built then.
//! - `SPDK_PMEM_SOURCE_DIR`: the SPDK source to build (default `vendor/src/spdk`,
//!   filled by `vendor/fetch-spdk.sh`).
//! - `SPDK_PMEM_BUILD_DIR`: where cached builds live (default `<target>/spdk`).
//! - `SPDK_PMEM_JOBS`: parallel make jobs (default: cargo's jobserver).
//!
//! Cargo features choose SPDK's optional parts: `rdma` (default) builds the
//! RDMA transport, the article's; `rbd` (default) the Ceph RBD bdev module;
//! `portable` compiles SPDK and DPDK for a baseline x86-64 CPU (x86-64-v2)
//! instead of this machine's; `asan` adds AddressSanitizer and UBSan.
//!
//! One module per job: `source` (the source tree, its cache key and the
//! cache of builds), `patches` (the vendored patches), `make` (configure,
//! make and the C shim), `bindings` (bindgen and the facts Rust code reads
//! about the build), `link` (the link line of SPDK's own `nvmf_tgt`).

mod bindings;
mod link;
mod make;
mod patches;
mod source;

use std::env;
use std::path::{Path, PathBuf};
use std::process;

fn main() {
    if let Err(msg) = run() {
        // A clear message instead of a panic's backtrace.
        eprintln!("\nerror: spdk-sys: {msg}\n");
        process::exit(1);
    }
}

fn run() -> Result<(), String> {
    for var in [
        "SPDK_DIR",
        "SPDK_PMEM_SOURCE_DIR",
        "SPDK_PMEM_BUILD_DIR",
        "SPDK_PMEM_JOBS",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=build");
    println!("cargo:rerun-if-changed=wrapper.h");

    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);

    // The patches applied: none known of a tree built elsewhere.
    let (root, patches) = match env::var_os("SPDK_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            check_built(&dir).map_err(|e| format!("SPDK_DIR={}: {e}", dir.display()))?;
            (dir, Vec::new())
        }
        None => source::build_vendored(&manifest_dir, &out_dir)?,
    };

    make::build_shim(&root, &manifest_dir);
    link::emit_link_line(&root, &out_dir)?;
    bindings::write_build_info(&root, &out_dir, &patches)?;
    bindings::extract_rpc_params(&root, &manifest_dir, &out_dir)?;
    bindings::generate_bindings(&root, &manifest_dir, &out_dir)?;

    // Published to dependents' build scripts as DEP_SPDK_ROOT: the tree holding
    // SPDK's C nvmf_tgt, perf, identify, bdevperf, nvme_fuzz and scripts/rpc.py.
    println!("cargo:root={}", root.display());
    println!("cargo:include={}", root.join("include").display());
    Ok(())
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("cargo did not set {name}"))
}

pub(crate) fn check_built(root: &Path) -> Result<(), String> {
    for want in ["build/lib/libspdk_nvmf.a", "build/lib/libspdk_bdev_pmem.a"] {
        if !root.join(want).is_file() {
            return Err(format!(
                "{want} is missing: the tree is not built, or built without --with-pmdk"
            ));
        }
    }
    Ok(())
}
