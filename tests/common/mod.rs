//! Shared by the integration tests: start the real `nvmf_tgt` (ours or SPDK's
//! C one) with its own RPC socket and shared-memory id, drive it with SPDK's
//! `scripts/rpc.py`, and stop it (also when a test fails: `Drop`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const SPDK_ROOT: &str = spdk_pmem::SPDK_ROOT;

/// Our binary, as cargo built it for this test run.
pub fn our_nvmf_tgt() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nvmf_tgt"))
}

/// SPDK's C nvmf_tgt from the same build.
pub fn c_nvmf_tgt() -> PathBuf {
    Path::new(SPDK_ROOT).join("build/bin/nvmf_tgt")
}

pub fn spdk_tool(rel: &str) -> PathBuf {
    Path::new(SPDK_ROOT).join(rel)
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A shared-memory id and a TCP port that no other test process uses:
/// derived from the pid, so parallel test binaries do not collide.
pub fn unique_ids() -> (i32, u16) {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    let shm = ((pid % 2000) * 8 + n % 8) as i32 + 100;
    let port = 20000 + ((pid % 2000) * 8 + n % 8) as u16;
    (shm, port)
}

/// A target process with its own RPC socket; killed and cleaned up on drop.
pub struct Target {
    pub child: Option<Child>,
    pub sock: PathBuf,
    pub shm_id: i32,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Target {
    /// Starts `binary` on core 0 with a fresh socket and shm id, plus `extra`
    /// flags, and waits until its RPC server answers.
    pub fn start(binary: &Path, extra: &[&str]) -> Target {
        let t = Target::spawn(binary, extra);
        t.wait_ready();
        t
    }

    /// Starts without waiting: for tests of start-up failures.
    pub fn spawn(binary: &Path, extra: &[&str]) -> Target {
        let dir = tempfile::tempdir().expect("temp dir");
        let (shm_id, _) = unique_ids();
        let sock = dir.path().join("rpc.sock");
        let log = dir.path().join("target.log");
        let logf = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binary)
            .arg("-m")
            .arg("0x1")
            .arg("-i")
            .arg(shm_id.to_string())
            .arg("-r")
            .arg(&sock)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", binary.display()));
        Target {
            child: Some(child),
            sock,
            shm_id,
            log,
            _dir: dir,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.sock.exists() && self.rpc(&["-t", "2", "spdk_get_version"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "target did not answer on {}:\n{}",
            self.sock.display(),
            self.log_text()
        );
    }

    /// Runs SPDK's rpc.py against this target.
    pub fn rpc(&self, args: &[&str]) -> Output {
        Command::new("python3")
            .arg(spdk_tool("scripts/rpc.py"))
            .arg("-s")
            .arg(&self.sock)
            .args(args)
            .output()
            .expect("running rpc.py")
    }

    /// rpc.py that must succeed; returns its stdout.
    pub fn rpc_ok(&self, args: &[&str]) -> String {
        let out = self.rpc(args);
        assert!(
            out.status.success(),
            "rpc.py {args:?} failed: {}{}\ntarget log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// rpc.py whose output is JSON.
    pub fn rpc_json(&self, args: &[&str]) -> serde_json::Value {
        let text = self.rpc_ok(args);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("rpc.py {args:?}: {e}: {text}"))
    }

    /// SIGINT, as a user's Ctrl-C, and the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("target running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("target ignored SIGINT for 30 s:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for a target that is expected to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("target running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "target did not exit within {within:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // DPDK leaves its runtime files per shm id; remove ours.
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/spdk{}", self.shm_id));
        for entry in std::fs::read_dir("/dev/hugepages")
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name();
            if name
                .to_string_lossy()
                .starts_with(&format!("spdk{}map_", self.shm_id))
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
