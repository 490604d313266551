//! The link line: SPDK's own makefiles say what the C `nvmf_tgt` links,
//! turned into cargo directives.

use std::env;
use std::fs;
use std::path::Path;
use std::process::Command;

/// Asks SPDK's own makefiles for the link line of the C `nvmf_tgt`, so that our
/// binary carries exactly the same modules, transports and RPC methods.
pub(crate) fn emit_link_line(root: &Path, out_dir: &Path) -> Result<(), String> {
    let print_mk = out_dir.join("print-link.mk");
    fs::write(
        &print_mk,
        "print-link-args:\n\t@echo $(SPDK_LIB_LINKER_ARGS) $(ENV_LINKER_ARGS) $(SYS_LIBS)\n",
    )
    .map_err(|e| format!("writing {}: {e}", print_mk.display()))?;
    let output = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(root.join("app/nvmf_tgt"))
        .arg("-f")
        .arg("Makefile")
        .arg("-f")
        .arg(&print_mk)
        .arg("print-link-args")
        .env_remove("MAKEFLAGS")
        .env_remove("CARGO_MAKEFLAGS")
        .output()
        .map_err(|e| format!("running make for the link line: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "asking SPDK's makefiles for nvmf_tgt's link line failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut directives = link_directives(&text);
    if env::var_os("CARGO_FEATURE_ASAN").is_some() {
        // rustc links with -nodefaultlibs, so the sanitizer runtimes SPDK's
        // objects call are named here: as the first shared libraries, since
        // ASan checks at start-up that its runtime was loaded first.
        let first_dylib = directives
            .iter()
            .position(|d| d.starts_with("cargo:rustc-link-lib=dylib="))
            .unwrap_or(directives.len());
        for runtime in ["ubsan", "asan"] {
            directives.insert(first_dylib, format!("cargo:rustc-link-lib=dylib={runtime}"));
        }
    }
    for directive in directives {
        println!("{directive}");
    }
    Ok(())
}

/// Turns a gcc link line into cargo directives. Libraries between
/// `--whole-archive` and `--no-whole-archive` stay whole: SPDK and DPDK
/// register bdev modules, transports, RPC methods and drivers from
/// constructors, which a plain static link would silently drop.
fn link_directives(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut whole = false;
    let mut seen_dylibs = Vec::new();
    let mut tokens = line.split_whitespace();
    while let Some(tok) = tokens.next() {
        if let Some(wl) = tok.strip_prefix("-Wl,") {
            for opt in wl.split(',') {
                match opt {
                    "--whole-archive" => whole = true,
                    "--no-whole-archive" => whole = false,
                    "-rpath-link" => {
                        tokens.next();
                    }
                    _ => {}
                }
            }
        } else if let Some(dir) = tok.strip_prefix("-L") {
            out.push(format!("cargo:rustc-link-search=native={dir}"));
        } else if let Some(name) = tok.strip_prefix("-l") {
            if name.starts_with("spdk_") || name.starts_with("rte_") || whole {
                out.push(static_lib(name, whole));
            } else if !seen_dylibs.iter().any(|n| n == name) {
                seen_dylibs.push(name.to_string());
                out.push(format!("cargo:rustc-link-lib=dylib={name}"));
            }
        } else if let Some(archive) = tok.strip_suffix(".a") {
            let path = Path::new(archive);
            if let (Some(dir), Some(file)) = (path.parent(), path.file_name()) {
                let name = file.to_string_lossy();
                let name = name.strip_prefix("lib").unwrap_or(&name);
                let search = format!("cargo:rustc-link-search=native={}", dir.display());
                if !out.contains(&search) {
                    out.push(search);
                }
                out.push(static_lib(name, whole));
            }
        }
    }
    out
}

fn static_lib(name: &str, whole: bool) -> String {
    // -bundle: the archives stay where SPDK built them and are linked into the
    // final binary, instead of being copied into this crate's rlib.
    let modifiers = if whole {
        "+whole-archive,-bundle"
    } else {
        "-bundle"
    };
    format!("cargo:rustc-link-lib=static:{modifiers}={name}")
}
