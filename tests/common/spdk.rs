//! Where the programs the tests run are: our nvmf_tgt and examples, SPDK's
//! C target, tools and rpc.py from the same build, today's spdk-rpc.

use std::path::{Path, PathBuf};
use std::process::Output;

/// The SPDK build the library was linked with (its tools and rpc.py).
pub const SPDK_ROOT: &str = spdk_pmem::SPDK_ROOT;

/// Our binary, as cargo built it for this test run.
pub fn our_nvmf_tgt() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nvmf_tgt"))
}

/// One of this crate's examples, which `cargo test` builds beside the test
/// binaries.
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "{} missing: run through cargo test",
        path.display()
    );
    path
}

/// Runs SPDK's rpc.py against the RPC socket `sock`.
pub fn rpc_py(sock: &Path, args: &[&str]) -> Output {
    super::command("python3")
        // Where `--plugin rpc_pmem_cache` finds our methods.
        .env(
            "PYTHONPATH",
            concat!(env!("CARGO_MANIFEST_DIR"), "/scripts"),
        )
        .arg(spdk_tool("scripts/rpc.py"))
        .arg("-s")
        .arg(sock)
        .args(args)
        .output()
        .expect("running rpc.py")
}

/// SPDK's C nvmf_tgt from the same build.
pub fn c_nvmf_tgt() -> PathBuf {
    Path::new(SPDK_ROOT).join("build/bin/nvmf_tgt")
}

/// A program or script of that SPDK build, by its path in the tree.
pub fn spdk_tool(rel: &str) -> PathBuf {
    Path::new(SPDK_ROOT).join(rel)
}

/// The nvmf_tgt the hostile-input tests attack: ours, unless
/// `SPDK_PMEM_FUZZ_TARGET` says `c` (SPDK's C one of this build) or a path.
pub fn fuzz_target() -> PathBuf {
    match std::env::var("SPDK_PMEM_FUZZ_TARGET").as_deref() {
        Err(_) | Ok("ours") => our_nvmf_tgt(),
        Ok("c") => c_nvmf_tgt(),
        Ok(path) => PathBuf::from(path),
    }
}

/// Today's SPDK Python client (PyPI `spdk` 26.x), installed by scripts/setup.sh.
pub fn spdk_rpc_26() -> PathBuf {
    match std::env::var_os("SPDK_PMEM_SPDK_RPC_26") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/spdk-rpc-venv/bin/spdk-rpc"),
    }
}
