//! A real one-node Ceph for one test: `scripts/ceph-dev.sh`'s cluster in a
//! directory of the test's own with its monitor on a port of its own,
//! destroyed on drop (daemons stopped, files removed), also when the test
//! fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::{output_text, test_port};

/// One cluster: its directory, monitor, admin key and RBD pool.
pub struct Ceph {
    dir: tempfile::TempDir,
    /// The cluster's ceph.conf, for `rbd -c`.
    pub conf: PathBuf,
    /// The monitor's address, `127.0.0.1:PORT`.
    pub mon: String,
    /// client.admin's key.
    pub key: String,
    /// The RBD pool.
    pub pool: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ceph-dev.sh")
}

impl Ceph {
    /// Creates and starts a cluster (about 13 s).
    pub fn start() -> Ceph {
        let dir = tempfile::Builder::new()
            .prefix("spdk-pmem-ceph")
            .tempdir_in("/var/tmp")
            .expect("a directory in /var/tmp");
        let port = test_port().to_string();
        let mut ceph = Ceph {
            conf: dir.path().join("ceph.conf"),
            dir,
            mon: String::new(),
            key: String::new(),
            pool: String::new(),
        };
        ceph.script(&["start", "--port", &port]);
        for line in ceph.script(&["env"]).lines() {
            match line.split_once('=') {
                Some(("CEPH_DEV_MON", v)) => ceph.mon = v.into(),
                Some(("CEPH_DEV_KEY", v)) => ceph.key = v.into(),
                Some(("CEPH_DEV_POOL", v)) => ceph.pool = v.into(),
                _ => {}
            }
        }
        assert!(
            !ceph.key.is_empty() && !ceph.mon.is_empty(),
            "ceph-dev.sh env"
        );
        ceph
    }

    /// Runs `scripts/ceph-dev.sh CMD --dir DIR ...`; its output.
    pub fn script(&self, args: &[&str]) -> String {
        let (cmd, rest) = args.split_first().expect("a command");
        let out = super::command("bash")
            .arg(script())
            .arg(cmd)
            .arg("--dir")
            .arg(self.dir.path())
            .args(rest)
            .stdin(Stdio::null())
            .output()
            .expect("running scripts/ceph-dev.sh");
        let text = output_text(&out);
        assert!(out.status.success(), "ceph-dev.sh {args:?}: {text}");
        text
    }

    /// Runs Ceph's own `rbd` against the cluster (bounded: 60 s); its output.
    pub fn rbd(&self, args: &[&str]) -> String {
        let out = super::command("timeout")
            .arg("60")
            .arg("rbd")
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running rbd");
        let text = output_text(&out);
        assert!(out.status.success(), "rbd {args:?}: {text}");
        text
    }

    /// `rpc.py bdev_rbd_create`'s arguments for `image` of the pool as bdev
    /// `name`.
    pub fn bdev_rbd_create<'a>(&'a self, name: &'a str, image: &'a str) -> Vec<String> {
        self.bdev_rbd_create_with_blocks(name, image, 4096)
    }

    /// The same, with blocks of `block_size` bytes.
    pub fn bdev_rbd_create_with_blocks(
        &self,
        name: &str,
        image: &str,
        block_size: usize,
    ) -> Vec<String> {
        [
            "bdev_rbd_create",
            "-b",
            name,
            "--user",
            "admin",
            "--config",
            &format!("mon_host={}", self.mon),
            "--config",
            &format!("key={}", self.key),
            &self.pool,
            image,
            &block_size.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

impl Drop for Ceph {
    fn drop(&mut self) {
        let _ = super::command("bash")
            .arg(script())
            .arg("destroy")
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
