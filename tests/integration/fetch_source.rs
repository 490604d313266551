//! vendor/fetch-spdk.sh's choice of source, run on small stand-in tarballs
//! with the real script and a manifest of the same shape as
//! vendor/spdk-source.env: the second source serves when the first is gone
//! or wrong, each source alone gives the one pinned tree, a local tarball is
//! checked like a download, and when nothing works the error says what each
//! source answered. (scripts/setup.sh runs it on the real tarballs.)

use crate::common::beside_others;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

struct Fixture {
    _dir: tempfile::TempDir,
    vendor: PathBuf,
    mirror: PathBuf,
    downloads: PathBuf,
    /// The two tarballs, as a Debian mirror would hold them.
    tarballs: [PathBuf; 2],
    tree_hash: String,
}

const POOL: &str = "pool/main/p/pkg";

fn sh(cmd: &str, dir: &Path) {
    let out = crate::common::command("bash")
        .args(["-c", cmd])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{cmd}: {out:?}");
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// Source 1's tree is the pinned one; source 2's differs in one file and has
/// one more, and its patch takes it back to source 1's.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let vendor = root.join("vendor");
    fs::create_dir_all(vendor.join("sources")).unwrap();
    let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor");
    for script in ["fetch-spdk.sh", "tree-hash.sh"] {
        fs::copy(real.join(script), vendor.join(script)).unwrap();
    }
    let work = root.join("work");
    for (n, extra) in [(1, ""), (2, "// one more fix\n")] {
        let spdk = work.join(format!("pkg-{n}/src/spdk"));
        write(
            &spdk.join("include/spdk/version.h"),
            "#define SPDK_VERSION_MAJOR 20\n",
        );
        write(&spdk.join("lib/a.c"), &format!("int a;\n{extra}"));
        write(&spdk.join("configure"), "#!/bin/sh\n");
        if n == 2 {
            write(&spdk.join("CONFIG.extra"), "HAVE_X=n\n");
        }
        sh("chmod +x configure", &spdk);
    }
    // diff exits 1 when the trees differ, which they do.
    sh(
        "cd work && cp -a pkg-2/src/spdk a && cp -a pkg-1/src/spdk b && \
         { diff -ruN a b > ../vendor/sources/2-to-1.patch; [ $? -eq 1 ]; } && rm -rf a b",
        root,
    );
    let tree_hash = String::from_utf8(
        crate::common::command("bash")
            .arg(vendor.join("tree-hash.sh"))
            .arg(work.join("pkg-1/src/spdk"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let store = root.join("store");
    fs::create_dir_all(&store).unwrap();
    let mut manifest =
        format!("SPDK_VERSION=20.07\nSPDK_TREE_SHA256={tree_hash}\nSPDK_SOURCES=2\n");
    let tarballs = [1, 2].map(|n| {
        let file = store.join(format!("pkg_{n}.orig.tar.xz"));
        sh(
            &format!("tar -cJf {} -C work pkg-{n}", file.display()),
            root,
        );
        let size = fs::metadata(&file).unwrap().len();
        let sha = String::from_utf8(crate::common::command("sha256sum").arg(&file).output().unwrap().stdout)
            .unwrap()[..64]
            .to_string();
        let patch = if n == 2 { "sources/2-to-1.patch" } else { "" };
        manifest += &format!(
            "SPDK_SRC{n}_PACKAGE=pkg\nSPDK_SRC{n}_VERSION={n}-1\nSPDK_SRC{n}_SUITE=test\n\
             SPDK_SRC{n}_FILE=pkg_{n}.orig.tar.xz\nSPDK_SRC{n}_SIZE={size}\n\
             SPDK_SRC{n}_SHA256={sha}\nSPDK_SRC{n}_SUBDIR=pkg-{n}/src/spdk\nSPDK_SRC{n}_PATCH={patch}\n"
        );
        file
    });
    fs::write(vendor.join("spdk-source.env"), manifest).unwrap();
    let mirror = root.join("mirror");
    fs::create_dir_all(mirror.join(POOL)).unwrap();
    Fixture {
        vendor,
        mirror,
        downloads: root.join("downloads"),
        tarballs,
        tree_hash,
        _dir: dir,
    }
}

impl Fixture {
    /// Puts source `n`'s tarball (or `bytes` under its name) on the mirror.
    fn publish(&self, n: usize, bytes: Option<&[u8]>) {
        let to = self.mirror.join(POOL).join(format!("pkg_{n}.orig.tar.xz"));
        match bytes {
            Some(b) => fs::write(to, b).unwrap(),
            None => {
                fs::copy(&self.tarballs[n - 1], to).unwrap();
            }
        }
    }

    fn fetch(&self, args: &[&str], local: Option<&Path>) -> Output {
        let mut cmd = crate::common::command("bash");
        cmd.arg(self.vendor.join("fetch-spdk.sh"))
            .args(args)
            .env(
                "SPDK_PMEM_DEBIAN_MIRROR",
                format!("file://{}", self.mirror.display()),
            )
            .env("SPDK_PMEM_DOWNLOAD_DIR", &self.downloads)
            .env_remove("SPDK_PMEM_SOURCE_TARBALL");
        if let Some(path) = local {
            cmd.env("SPDK_PMEM_SOURCE_TARBALL", path);
        }
        cmd.output().unwrap()
    }

    fn tree(&self) -> PathBuf {
        self.vendor.join("src/spdk")
    }

    /// The stamp's tree hash and source number, once the tree is in place.
    fn stamp(&self) -> (String, String) {
        let text = fs::read_to_string(self.tree().join(".spdk-pmem-source")).unwrap();
        let mut words = text.split_whitespace().map(str::to_string);
        (words.next().unwrap(), words.next().unwrap())
    }

    /// The tree in place is source 1's, whichever source it came from.
    fn assert_pinned_tree(&self) {
        assert_eq!(
            fs::read_to_string(self.tree().join("lib/a.c")).unwrap(),
            "int a;\n"
        );
        assert!(!self.tree().join("CONFIG.extra").exists());
        let out = crate::common::command("bash")
            .arg(self.vendor.join("tree-hash.sh"))
            .arg(self.tree())
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), self.tree_hash);
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_second_source_serves_when_the_first_is_gone_and_a_rerun_fetches_nothing() {
    let _turn = beside_others();
    let f = fixture();
    f.publish(2, None);
    let out = f.fetch(&[], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("source 1: download failed"),
        "{}",
        text(&out)
    );
    f.assert_pinned_tree();
    assert_eq!(f.stamp(), (f.tree_hash.clone(), "2".to_string()));

    fs::remove_file(f.mirror.join(POOL).join("pkg_2.orig.tar.xz")).unwrap();
    let again = f.fetch(&[], None);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("present"), "{}", text(&again));
}

#[test]
fn each_source_alone_gives_the_same_tree() {
    let _turn = beside_others();
    let f = fixture();
    f.publish(1, None);
    f.publish(2, None);
    for n in ["1", "2"] {
        let out = f.fetch(&["--source", n], None);
        assert!(out.status.success(), "source {n}: {}", text(&out));
        f.assert_pinned_tree();
        assert_eq!(f.stamp(), (f.tree_hash.clone(), n.to_string()));
    }
    assert!(!f.fetch(&["--source", "3"], None).status.success());
}

#[test]
fn a_local_tarball_is_checked_like_a_download() {
    let _turn = beside_others();
    let f = fixture();
    let local = f.downloads.parent().unwrap().join("local");
    fs::create_dir_all(&local).unwrap();
    // A truncated copy of source 1, the real source 2; the mirror is empty.
    let one = fs::read(&f.tarballs[0]).unwrap();
    fs::write(local.join("pkg_1.orig.tar.xz"), &one[..one.len() / 2]).unwrap();
    fs::copy(&f.tarballs[1], local.join("pkg_2.orig.tar.xz")).unwrap();
    let out = f.fetch(&[], Some(&local));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "source 2: pkg_2.orig.tar.xz (pkg 2-1, 0 MiB) from {}",
            local.join("pkg_2.orig.tar.xz").display()
        )),
        "{}",
        text(&out)
    );
    f.assert_pinned_tree();
    assert!(!f.downloads.join("pkg_2.orig.tar.xz").exists());
}

#[test]
fn when_no_source_works_the_error_says_what_each_answered() {
    let _turn = beside_others();
    let f = fixture();
    f.publish(1, Some(b"not the tarball"));
    let out = f.fetch(&[], Some(Path::new("/nonexistent/pkg.tar.xz")));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    for want in [
        "no source of SPDK 20.07 could be had",
        "source 1: /nonexistent/pkg.tar.xz (SPDK_PMEM_SOURCE_TARBALL) does not exist",
        "pkg_1.orig.tar.xz: arrived with 15 bytes",
        "source 2: file://",
        "pkg_2.orig.tar.xz: download failed",
        "SPDK_PMEM_DEBIAN_MIRROR",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(!f.tree().exists());
    assert!(!f.downloads.join("pkg_1.orig.tar.xz").exists());
}

#[test]
fn a_tree_that_does_not_hash_to_the_pin_is_refused() {
    let _turn = beside_others();
    let f = fixture();
    f.publish(2, None);
    let manifest = f.vendor.join("spdk-source.env");
    let text_before = fs::read_to_string(&manifest).unwrap();
    // Source 2 without its patch is not the pinned tree.
    fs::write(
        &manifest,
        text_before.replace("SPDK_SRC2_PATCH=sources/2-to-1.patch", "SPDK_SRC2_PATCH="),
    )
    .unwrap();
    let out = f.fetch(&[], None);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("source 2's tree hashes to") && text(&out).contains(&f.tree_hash),
        "{}",
        text(&out)
    );
    assert!(!f.tree().exists());
}
