//! Records where spdk-sys built SPDK, so the library, its tests and tools can
//! find SPDK's own programs (rpc.py, perf, identify, the C nvmf_tgt).

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_SPDK_ROOT");
    match std::env::var("DEP_SPDK_ROOT") {
        Ok(root) => println!("cargo:rustc-env=SPDK_ROOT={root}"),
        Err(_) => {
            eprintln!("error: spdk-sys did not publish its SPDK tree (DEP_SPDK_ROOT)");
            std::process::exit(1);
        }
    }
}
