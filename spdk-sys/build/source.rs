//! The SPDK source to build, the cache key of a build (source content,
//! flags, patches, recipe) and the cache of built trees shared by all
//! profiles.

use std::env;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{self, Command};

use crate::{make, patches};

/// Bump when the way SPDK is built changes in a way the key does not see.
const RECIPE_VERSION: &str = "3";
pub(crate) const BUILT_STAMP: &str = ".spdk-pmem-built";

/// Builds the vendored SPDK (once per source, patch set and flags); its
/// tree and the patches' names (`0001-...`, without `.patch`), in order.
pub(crate) fn build_vendored(
    manifest_dir: &Path,
    out_dir: &Path,
) -> Result<(PathBuf, Vec<String>), String> {
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

    let flags = make::configure_flags()?;
    // The key covers the source by its content, so another tree (say
    // SPDK_PMEM_SOURCE_DIR) never reuses this one's build.
    println!("cargo:rerun-if-changed={}", source.display());
    let tree_hash = tree_hash(&vendor, &source)?;
    let patches = patches::list(&patches_dir)?;

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
        make::build_tree(&source, &root, &patches, &flags)?;
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
