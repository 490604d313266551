//! What Rust code gets from the built tree: bindgen's bindings, the facts
//! of the build (`build_info.rs`) and the RPC parameter table.

use std::env;
use std::fs;
use std::path::Path;
use std::process::Command;

/// Facts about the SPDK build that Rust code needs, e.g. whether `-L` log flags
/// work (only in `--enable-debug` builds).
pub(crate) fn write_build_info(
    root: &Path,
    out_dir: &Path,
    patches: &[String],
) -> Result<(), String> {
    let config = fs::read_to_string(root.join("mk/config.mk"))
        .map_err(|e| format!("reading {}/mk/config.mk: {e}", root.display()))?;
    let enabled = |name: &str| {
        config
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("{name}?=y")))
    };
    // `CONFIG_ARCH?=native`, or the architecture configure was given.
    let arch = config
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("CONFIG_ARCH?="))
        .unwrap_or("native")
        .trim();
    let info = format!(
        "/// SPDK was configured with `--enable-debug`.\npub const DEBUG_BUILD: bool = {};\n\
         /// SPDK was configured with `--with-rdma`.\npub const RDMA_BUILD: bool = {};\n\
         /// SPDK was configured with `--with-rbd`.\npub const RBD_BUILD: bool = {};\n\
         /// The CPU SPDK and DPDK were compiled for (`--target-arch`).\n\
         pub const TARGET_ARCH: &str = {:?};\n\
         /// The vendor patches applied to SPDK (none known for `SPDK_DIR`).\n\
         pub const PATCHES: &[&str] = &{:?};\n",
        enabled("CONFIG_DEBUG"),
        enabled("CONFIG_RDMA"),
        enabled("CONFIG_RBD"),
        arch,
        patches,
    );
    fs::write(out_dir.join("build_info.rs"), info)
        .map_err(|e| format!("writing build_info.rs: {e}"))
}

/// The parameter names each RPC method of this SPDK accepts, read from its JSON
/// decoder tables: the RPC compatibility filter needs them at run time.
pub(crate) fn extract_rpc_params(
    root: &Path,
    manifest_dir: &Path,
    out_dir: &Path,
) -> Result<(), String> {
    let script = manifest_dir.join("rpc_params.py");
    println!("cargo:rerun-if-changed={}", script.display());
    let output = Command::new("python3")
        .arg(&script)
        .arg(root)
        .output()
        .map_err(|e| {
            format!(
                "running python3 {}: {e} (apt-get install python3)",
                script.display()
            )
        })?;
    if !output.status.success() {
        return Err(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    // The RPC compatibility filter relies on this table: an empty or cut one
    // must fail here, not quietly turn the filter off at run time.
    let table = String::from_utf8_lossy(&output.stdout);
    if !table.trim_start().starts_with('{')
        || !table.trim_end().ends_with('}')
        || !table.contains("\"nvmf_create_subsystem\"")
    {
        return Err(format!(
            "{} printed no usable table of SPDK's RPC parameters (expected a JSON object naming nvmf_create_subsystem)",
            script.display()
        ));
    }
    fs::write(out_dir.join("rpc_params.json"), &output.stdout)
        .map_err(|e| format!("writing rpc_params.json: {e}"))
}

pub(crate) fn generate_bindings(
    root: &Path,
    manifest_dir: &Path,
    out_dir: &Path,
) -> Result<(), String> {
    let mut builder = bindgen::Builder::default();
    if env::var_os("CARGO_FEATURE_RBD").is_some() {
        builder = builder
            .clang_arg("-DSPDK_PMEM_RBD")
            .allowlist_function("rados_.*|rbd_.*")
            .allowlist_type("rados_.*|rbd_.*")
            .allowlist_var("LIBRADOS_.*|LIBRBD_.*|RBD_.*");
    }
    let bindings = builder
        .header(manifest_dir.join("wrapper.h").to_string_lossy())
        .clang_arg(format!("-I{}", root.join("include").display()))
        .clang_arg(format!("-I{}", root.join("module/bdev/pmem").display()))
        .clang_arg(format!("-I{}", manifest_dir.join("shim").display()))
        .allowlist_function("spdk_.*")
        .allowlist_function("create_pmem_disk|delete_pmem_disk")
        .allowlist_type("spdk_.*")
        .allowlist_var("SPDK_.*")
        // Packed wire-format structs that hold aligned members: Rust cannot express
        // them (E0587/E0588). The safe layer never looks inside them.
        .opaque_type("spdk_nvme_sgl_descriptor")
        .opaque_type("spdk_nvme_health_information_page")
        .opaque_type("spdk_nvme_tcp_(cmd|rsp)")
        .opaque_type("spdk_nvmf_fabric_.*_(cmd|rsp)")
        .derive_default(true)
        .derive_debug(true)
        .layout_tests(false)
        .prepend_enum_name(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .map_err(|e| format!("bindgen over wrapper.h failed: {e} (is libclang-dev installed?)"))?;
    let path = out_dir.join("bindings.rs");
    bindings
        .write_to_file(&path)
        .map_err(|e| format!("writing {}: {e}", path.display()))
}
