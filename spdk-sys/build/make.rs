//! SPDK's configure (its flags, from this crate's features) and make, and
//! the C shim compiled against the built tree.

use std::env;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{patches, source};

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
    // SPDK and DPDK for a baseline x86-64 CPU (SSE4.2 and POPCNT, which
    // DPDK requires) instead of this machine's (configure's default,
    // `native`): a build that runs on another machine, or under QEMU's TCG,
    // whose CPU lacks what the build machine has (AVX-512 here). SPDK passes
    // the architecture on as DPDK's `machine`.
    OptionalPart {
        feature: "portable",
        flags: &["--target-arch=x86-64-v2"],
        needs: &[],
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
pub(crate) fn configure_flags() -> Result<Vec<String>, String> {
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

pub(crate) fn build_tree(
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
    patches::apply(root, patches, &log_path)?;
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
    crate::check_built(root)?;
    // scripts/setup.sh reports the seconds.
    File::create(root.join(source::BUILT_STAMP))
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

pub(crate) fn run_cmd(cmd: &mut Command, what: &str, log: Option<&Path>) -> Result<(), String> {
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
pub(crate) fn build_shim(root: &Path, manifest_dir: &Path) {
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
