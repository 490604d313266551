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
//! RDMA transport, the article's; `rbd` (default) the Ceph RBD bdev module.

use std::env;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{self, Command, Stdio};

/// Bump when the way SPDK is built changes in a way the key does not see.
const RECIPE_VERSION: &str = "3";
const BUILT_STAMP: &str = ".spdk-pmem-built";

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
    println!("cargo:rerun-if-changed=build.rs");
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
        None => build_vendored(&manifest_dir, &out_dir)?,
    };

    build_shim(&root, &manifest_dir);
    emit_link_line(&root, &out_dir)?;
    write_build_info(&root, &out_dir, &patches)?;
    extract_rpc_params(&root, &manifest_dir, &out_dir)?;
    generate_bindings(&root, &manifest_dir, &out_dir)?;

    // Published to dependents' build scripts as DEP_SPDK_ROOT: the tree holding
    // SPDK's C nvmf_tgt, perf, identify, bdevperf, nvme_fuzz and scripts/rpc.py.
    println!("cargo:root={}", root.display());
    println!("cargo:include={}", root.join("include").display());
    Ok(())
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("cargo did not set {name}"))
}

fn check_built(root: &Path) -> Result<(), String> {
    for want in ["build/lib/libspdk_nvmf.a", "build/lib/libspdk_bdev_pmem.a"] {
        if !root.join(want).is_file() {
            return Err(format!(
                "{want} is missing: the tree is not built, or built without --with-pmdk"
            ));
        }
    }
    Ok(())
}

/// An optional part of SPDK, switched on by a cargo feature of this crate.
struct OptionalPart {
    feature: &'static str,
    flags: &'static [&'static str],
    /// Headers it needs, and the Debian package of each.
    needs: &'static [(&'static str, &'static str)],
}

const OPTIONAL_PARTS: &[OptionalPart] = &[
    OptionalPart {
        feature: "rdma",
        flags: &["--with-rdma"],
        needs: &[
            ("/usr/include/infiniband/verbs.h", "libibverbs-dev"),
            ("/usr/include/rdma/rdma_cma.h", "librdmacm-dev"),
        ],
    },
    // Ceph RBD images as bdevs (bdev_rbd_create), against Debian's Ceph.
    OptionalPart {
        feature: "rbd",
        flags: &["--with-rbd"],
        needs: &[
            ("/usr/include/rbd/librbd.h", "librbd-dev"),
            ("/usr/include/rados/librados.h", "librados-dev"),
        ],
    },
    // AddressSanitizer and UndefinedBehaviorSanitizer in SPDK's C code (its
    // own build options); emit_link_line adds their runtimes.
    OptionalPart {
        feature: "asan",
        flags: &["--enable-asan", "--enable-ubsan"],
        needs: &[],
    },
];

/// The SPDK configure flags: PMDK always (the pmem bdev is the point), the
/// optional parts whose features are on, SPDK's apps, examples and test apps
/// kept (they are the tests' real peers).
fn configure_flags() -> Result<Vec<String>, String> {
    let mut flags = vec![
        "--with-pmdk".to_string(),
        "--disable-unit-tests".to_string(),
        "--without-isal".to_string(),
    ];
    for part in OPTIONAL_PARTS {
        let var = format!("CARGO_FEATURE_{}", part.feature.to_uppercase());
        if env::var_os(var).is_none() {
            continue;
        }
        for (header, package) in part.needs {
            if !Path::new(header).is_file() {
                return Err(format!(
                    "feature `{}` needs {header}: apt-get install {package} \
                     (scripts/setup-host.sh does), or build without it \
                     (--no-default-features on spdk-pmem or spdk-sys)",
                    part.feature
                ));
            }
        }
        flags.extend(part.flags.iter().map(|f| f.to_string()));
    }
    Ok(flags)
}

/// Builds the vendored SPDK (once per source, patch set and flags); its
/// tree and the patches' names (`0001-...`, without `.patch`), in order.
fn build_vendored(manifest_dir: &Path, out_dir: &Path) -> Result<(PathBuf, Vec<String>), String> {
    let vendor = manifest_dir.join("../vendor");
    let patches_dir = vendor.join("patches");
    println!("cargo:rerun-if-changed={}", patches_dir.display());

    let source = env::var_os("SPDK_PMEM_SOURCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| vendor.join("src/spdk"));
    if !source.join("include/spdk/version.h").is_file() {
        return Err(format!(
            "the SPDK source is not at {}.\n  Run `vendor/fetch-spdk.sh` (scripts/setup.sh does it), \
             set SPDK_PMEM_SOURCE_DIR to an SPDK v20.07 source tree, \
             or SPDK_DIR to an SPDK tree that is already built.",
            source.display()
        ));
    }
    for (header, package) in [
        ("/usr/include/libpmemblk.h", "libpmemblk-dev"),
        ("/usr/include/numa.h", "libnuma-dev"),
        ("/usr/include/libaio.h", "libaio-dev"),
        ("/usr/include/uuid/uuid.h", "uuid-dev"),
        ("/usr/include/openssl/ssl.h", "libssl-dev"),
        ("/usr/include/CUnit/Basic.h", "libcunit1-dev"),
    ] {
        if !Path::new(header).is_file() {
            return Err(format!(
                "{header} is missing: apt-get install {package} (scripts/setup-host.sh installs all build dependencies)"
            ));
        }
    }

    let flags = configure_flags()?;
    // The key covers the source by its content, so another tree (say
    // SPDK_PMEM_SOURCE_DIR) never reuses this one's build.
    println!("cargo:rerun-if-changed={}", source.display());
    let tree_hash = tree_hash(&vendor, &source)?;
    let mut patches: Vec<PathBuf> = fs::read_dir(&patches_dir)
        .map_err(|e| format!("reading {}: {e}", patches_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "patch"))
        .collect();
    patches.sort();

    let mut key = Fnv64::new();
    key.write(RECIPE_VERSION.as_bytes());
    key.write(tree_hash.as_bytes());
    for flag in &flags {
        key.write(flag.as_bytes());
    }
    for patch in &patches {
        key.write(patch.file_name().unwrap_or_default().as_encoded_bytes());
        key.write(&fs::read(patch).map_err(|e| format!("reading {}: {e}", patch.display()))?);
    }
    let cache = build_cache_dir(out_dir);
    fs::create_dir_all(&cache).map_err(|e| format!("creating {}: {e}", cache.display()))?;
    let root = cache.join(format!("spdk-20.07-{:016x}", key.finish()));
    println!(
        "cargo:rerun-if-changed={}",
        root.join(BUILT_STAMP).display()
    );

    // Two cargo processes (build and test, say) may get here at once: one builds,
    // the other waits for it and then reuses the tree.
    let lock = File::create(cache.join(".lock")).map_err(|e| format!("lock file: {e}"))?;
    // SAFETY: flock on a file descriptor this function owns for its whole scope.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "locking {}: {}",
            cache.display(),
            std::io::Error::last_os_error()
        ));
    }

    if !root.join(BUILT_STAMP).is_file() {
        println!(
            "cargo:warning=building SPDK 20.07 in {} (a few minutes, once per source, patch set and flags)",
            root.display()
        );
        build_tree(&source, &root, &patches, &flags)?;
    }
    use_tree(out_dir, &root)?;
    remove_unused_trees(&cache);
    update_current_link(&cache, &root);
    let names = patches
        .iter()
        .filter_map(|p| p.file_stem()?.to_str().map(str::to_string))
        .collect();
    Ok((root, names))
}

/// Each build of this crate (one per profile and build-script version) names
/// the tree its artifacts link against in `OUT_DIR/spdk-root`, and the tree
/// lists those builds, so a tree is only removed once no build uses it.
const TREE_FILE: &str = "spdk-root";
const USERS_FILE: &str = ".spdk-pmem-users";

fn use_tree(out_dir: &Path, root: &Path) -> Result<(), String> {
    // Canonical: each profile reaches the shared cache by its own `..` path.
    let root = fs::canonicalize(root).map_err(|e| format!("{}: {e}", root.display()))?;
    fs::write(out_dir.join(TREE_FILE), root.as_os_str().as_encoded_bytes())
        .map_err(|e| format!("writing {}: {e}", out_dir.join(TREE_FILE).display()))?;
    let users = root.join(USERS_FILE);
    let known = fs::read_to_string(&users).unwrap_or_default();
    let me = out_dir.to_string_lossy();
    if !known.lines().any(|l| l == me) {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&users)
            .and_then(|mut f| writeln!(f, "{me}"))
            .map_err(|e| format!("writing {}: {e}", users.display()))?;
    }
    Ok(())
}

/// Each tree is about 1 GB: a tree none of whose builds still names it (they
/// moved to another source, patch set or flags, or were cleaned) goes. We
/// hold the cache lock, so none is being built.
fn remove_unused_trees(cache: &Path) {
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        let tree = entry.path();
        if !entry.file_name().to_string_lossy().starts_with("spdk-") || !tree.is_dir() {
            continue;
        }
        let Ok(tree) = fs::canonicalize(&tree) else {
            continue;
        };
        let users = fs::read_to_string(tree.join(USERS_FILE)).unwrap_or_default();
        let in_use = users.lines().any(|out_dir| {
            fs::read(Path::new(out_dir).join(TREE_FILE))
                .is_ok_and(|named| named == tree.as_os_str().as_encoded_bytes())
        });
        // Trees are built and claimed under the lock, so one without users
        // is an interrupted build or from before builds claimed trees.
        if !in_use {
            let _ = fs::remove_dir_all(&tree);
        }
    }
}

/// The content hash of the SPDK source tree (vendor/tree-hash.sh, the hash
/// vendor/spdk-source.env pins for the vendored tree).
fn tree_hash(vendor: &Path, source: &Path) -> Result<String, String> {
    let script = vendor.join("tree-hash.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(source)
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || hash.len() != 64 {
        return Err(format!(
            "hashing the SPDK source at {} failed: {}",
            source.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(hash)
}

/// `<target>/spdk`, shared by all profiles so that `cargo build`, `cargo test`
/// and `cargo build --release` reuse one SPDK build.
fn build_cache_dir(out_dir: &Path) -> PathBuf {
    if let Some(dir) = env::var_os("SPDK_PMEM_BUILD_DIR") {
        return PathBuf::from(dir);
    }
    // Cargo marks its target directory with CACHEDIR.TAG.
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out_dir.join("../../../.."))
        .join("spdk")
}

/// `<cache>/current` points at the tree last used, so scripts find SPDK's tools.
fn update_current_link(cache: &Path, root: &Path) {
    let link = cache.join("current");
    let target = root.file_name().map(PathBuf::from).unwrap_or_default();
    if fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
        let tmp = cache.join(format!(".current.{}", process::id()));
        let _ = fs::remove_file(&tmp);
        if std::os::unix::fs::symlink(&target, &tmp).is_ok() {
            let _ = fs::rename(&tmp, &link);
        }
    }
}

fn build_tree(
    source: &Path,
    root: &Path,
    patches: &[PathBuf],
    flags: &[String],
) -> Result<(), String> {
    let began = std::time::Instant::now();
    if root.exists() {
        // A build that was interrupted: start over from clean source.
        fs::remove_dir_all(root).map_err(|e| format!("removing {}: {e}", root.display()))?;
    }
    run_cmd(
        Command::new("cp").arg("-a").arg(source).arg(root),
        "copying the SPDK source",
        None,
    )?;
    let log_path = root.join("spdk-pmem-build.log");
    for patch in patches {
        let file = File::open(patch).map_err(|e| format!("{}: {e}", patch.display()))?;
        run_cmd(
            Command::new("patch")
                .args(["-p1", "--forward", "--batch"])
                .current_dir(root)
                .stdin(file),
            &format!("applying {}", patch.display()),
            Some(&log_path),
        )?;
    }
    let mut configure = Command::new("./configure");
    configure.args(flags);
    run_cmd(
        spdk_build_env(&mut configure, root),
        "configuring SPDK",
        Some(&log_path),
    )?;
    let mut make = Command::new("make");
    spdk_build_env(&mut make, root);
    match (env::var("SPDK_PMEM_JOBS"), env::var("CARGO_MAKEFLAGS")) {
        (Ok(jobs), _) => {
            make.arg(format!("-j{jobs}"));
        }
        // Join cargo's jobserver: SPDK's make then shares cargo's job slots
        // instead of adding a job per core beside them. DPDK's part runs
        // under ninja, which takes no jobserver (SPDK gives it -jN only when
        // make has one on its command line), so it uses ninja's default.
        (Err(_), Ok(cargo_flags)) => {
            make.env("MAKEFLAGS", cargo_flags);
        }
        (Err(_), Err(_)) => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            make.arg(format!("-j{cores}"));
        }
    }
    run_cmd(&mut make, "building SPDK", Some(&log_path))?;
    check_built(root)?;
    // scripts/setup.sh reports the seconds.
    File::create(root.join(BUILT_STAMP))
        .and_then(|mut f| {
            writeln!(f, "flags {}", flags.join(" "))?;
            writeln!(f, "seconds {}", began.elapsed().as_secs())
        })
        .map_err(|e| format!("writing the build stamp: {e}"))
}

/// The environment of SPDK's configure and make: cargo's flags are for Rust
/// code, and SPDK must not see our repository's git history.
fn spdk_build_env<'c>(cmd: &'c mut Command, root: &Path) -> &'c mut Command {
    cmd.current_dir(root);
    // SPDK stamps its version string with `git describe` of the enclosing
    // repository: stop git at the SPDK tree so our own commits never leak in.
    if let Some(parent) = root.parent() {
        cmd.env("GIT_CEILING_DIRECTORIES", parent);
    }
    for var in [
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_MAKEFLAGS",
        "CFLAGS",
        "CXXFLAGS",
        "CPPFLAGS",
        "LDFLAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn run_cmd(cmd: &mut Command, what: &str, log: Option<&Path>) -> Result<(), String> {
    let result = match log {
        Some(path) => {
            let file = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("opening {}: {e}", path.display()))?;
            let err = file.try_clone().map_err(|e| e.to_string())?;
            cmd.stdout(Stdio::from(file))
                .stderr(Stdio::from(err))
                .status()
        }
        None => cmd.status(),
    };
    match result {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => {
            let tail = log
                .and_then(|p| fs::read_to_string(p).ok())
                .map(|text| {
                    let lines: Vec<&str> = text.lines().collect();
                    lines[lines.len().saturating_sub(30)..].join("\n")
                })
                .unwrap_or_default();
            Err(format!(
                "{what} failed ({status}).{}\n{tail}",
                log.map(|p| format!(" Full log: {}", p.display()))
                    .unwrap_or_default()
            ))
        }
        Err(e) => Err(format!(
            "{what}: could not run {:?}: {e}",
            cmd.get_program()
        )),
    }
}

/// Getters for internal state SPDK 20.07 has no API for (shim/), compiled
/// against this SPDK tree's internal headers; cc does the compiler flags,
/// archive and link directive that would otherwise be hand-written here.
fn build_shim(root: &Path, manifest_dir: &Path) {
    let shim = manifest_dir.join("shim");
    println!("cargo:rerun-if-changed={}", shim.display());
    cc::Build::new()
        .file(shim.join("spdk_pmem_shim.c"))
        .include(&shim)
        .include(root.join("include"))
        .include(root.join("lib/nvmf"))
        .warnings(true)
        .compile("spdk_pmem_shim");
}

/// Facts about the SPDK build that Rust code needs, e.g. whether `-L` log flags
/// work (only in `--enable-debug` builds).
fn write_build_info(root: &Path, out_dir: &Path, patches: &[String]) -> Result<(), String> {
    let config = fs::read_to_string(root.join("mk/config.mk"))
        .map_err(|e| format!("reading {}/mk/config.mk: {e}", root.display()))?;
    let enabled = |name: &str| {
        config
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("{name}?=y")))
    };
    let info = format!(
        "/// SPDK was configured with `--enable-debug`.\npub const DEBUG_BUILD: bool = {};\n\
         /// SPDK was configured with `--with-rdma`.\npub const RDMA_BUILD: bool = {};\n\
         /// SPDK was configured with `--with-rbd`.\npub const RBD_BUILD: bool = {};\n\
         /// The vendor patches applied to SPDK (none known for `SPDK_DIR`).\n\
         pub const PATCHES: &[&str] = &{:?};\n",
        enabled("CONFIG_DEBUG"),
        enabled("CONFIG_RDMA"),
        enabled("CONFIG_RBD"),
        patches,
    );
    fs::write(out_dir.join("build_info.rs"), info)
        .map_err(|e| format!("writing build_info.rs: {e}"))
}

/// The parameter names each RPC method of this SPDK accepts, read from its JSON
/// decoder tables: the RPC compatibility filter needs them at run time.
fn extract_rpc_params(root: &Path, manifest_dir: &Path, out_dir: &Path) -> Result<(), String> {
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

/// Asks SPDK's own makefiles for the link line of the C `nvmf_tgt`, so that our
/// binary carries exactly the same modules, transports and RPC methods.
fn emit_link_line(root: &Path, out_dir: &Path) -> Result<(), String> {
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

fn generate_bindings(root: &Path, manifest_dir: &Path, out_dir: &Path) -> Result<(), String> {
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

/// FNV-1a: a cache key must be stable across Rust releases, which std's
/// `DefaultHasher` does not promise.
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separate fields so that ("ab","c") and ("a","bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}
