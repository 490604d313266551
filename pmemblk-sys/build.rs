//! Finds libpmemblk with pkg-config and generates bindings over `libpmemblk.h`.

use std::env;
use std::path::PathBuf;
use std::process;

fn main() {
    if let Err(msg) = run() {
        eprintln!("\nerror: pmemblk-sys: {msg}\n");
        process::exit(1);
    }
}

fn run() -> Result<(), String> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let lib = pkg_config::Config::new()
        .atleast_version("1.4")
        .probe("libpmemblk")
        .map_err(|e| {
            format!(
                "libpmemblk was not found with pkg-config ({e}).\n  \
                 Install PMDK's development package: apt-get install libpmemblk-dev \
                 (scripts/setup-host.sh installs it)"
            )
        })?;
    let header = lib
        .include_paths
        .iter()
        .map(|dir| dir.join("libpmemblk.h"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/include/libpmemblk.h"));
    if !header.is_file() {
        return Err("libpmemblk.h is missing: apt-get install libpmemblk-dev".to_string());
    }
    let out = PathBuf::from(env::var("OUT_DIR").map_err(|_| "cargo did not set OUT_DIR")?);
    bindgen::Builder::default()
        .header(header.to_string_lossy())
        .clang_args(
            lib.include_paths
                .iter()
                .map(|p| format!("-I{}", p.display())),
        )
        .allowlist_function("pmemblk_.*")
        .allowlist_type("PMEMblkpool|pmemblk_.*")
        .allowlist_var("PMEMBLK_.*")
        .layout_tests(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .map_err(|e| format!("bindgen over {} failed: {e}", header.display()))?
        .write_to_file(out.join("bindings.rs"))
        .map_err(|e| format!("writing bindings: {e}"))
}
