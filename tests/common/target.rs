//! A target process (ours or SPDK's C one) with its own RPC socket and
//! shared-memory id, driven by rpc.py or raw JSON-RPC, stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use super::{log_excerpt, output_text, rpc_py, spdk_rpc_26, unique_ids};

/// A target process with its own RPC socket; killed and cleaned up on drop.
pub struct Target {
    /// The process; `None` once it was stopped, or for [`Target::attach`].
    pub child: Option<Child>,
    /// Its RPC socket.
    pub sock: PathBuf,
    /// Its shared-memory id (`-i`).
    pub shm_id: i32,
    /// Its stdout and stderr.
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

    /// Starts as `start` does, under the file-creation mask `umask`.
    pub fn start_with_umask(binary: &Path, extra: &[&str], umask: u32) -> Target {
        let t = Target::spawn_with(binary, extra, Some(umask));
        t.wait_ready();
        t
    }

    /// Starts without waiting: for tests of start-up failures.
    pub fn spawn(binary: &Path, extra: &[&str]) -> Target {
        Target::spawn_with(binary, extra, None)
    }

    fn spawn_with(binary: &Path, extra: &[&str], umask: Option<u32>) -> Target {
        let dir = tempfile::tempdir().expect("temp dir");
        let (shm_id, _) = unique_ids();
        let sock = dir.path().join("rpc.sock");
        let log = dir.path().join("target.log");
        let logf = std::fs::File::create(&log).expect("log file");
        let mut cmd = super::command(binary);
        if let Some(mask) = umask {
            use std::os::unix::process::CommandExt;
            // SAFETY: umask(2) is async-signal-safe and touches nothing but
            // the child's own mask, between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    libc::umask(mask as libc::mode_t);
                    Ok(())
                });
            }
        }
        let child = cmd
            .arg("-m")
            .arg("0x1")
            .arg("-i")
            .arg(shm_id.to_string())
            .arg("-r")
            .arg(&sock)
            .args(extra)
            // A crashing target dumps core in its working directory: the
            // temporary one, removed with it, not the repository.
            .current_dir(dir.path())
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

    /// A handle on an RPC socket some other code serves (an in-process app),
    /// for the rpc helpers; it owns no process.
    pub fn attach(sock: &Path) -> Target {
        let dir = tempfile::tempdir().expect("temp dir");
        Target {
            child: None,
            sock: sock.to_path_buf(),
            shm_id: -1,
            log: dir.path().join("none.log"),
            _dir: dir,
        }
    }

    /// Everything the target printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What a failure report shows of the log: from a sanitizer's report or
    /// a failed assertion on (its head names the fault; a plain tail of a
    /// long ASan stack shows only the reactor's frames), else the last
    /// `lines` lines.
    pub fn log_excerpt(&self, lines: usize) -> String {
        log_excerpt(&self.log_text(), lines)
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
        rpc_py(&self.sock, args)
    }

    /// rpc.py that must succeed; returns its stdout.
    pub fn rpc_ok(&self, args: &[&str]) -> String {
        let out = self.rpc(args);
        assert!(
            out.status.success(),
            "rpc.py {args:?} failed: {}\ntarget log:\n{}",
            output_text(&out),
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
        let child = self.child.as_ref().expect("target running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        self.wait_exit(Duration::from_secs(30))
    }

    /// Waits for the target to exit (killing it after `within`).
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
        // DPDK leaves its runtime files per shm id, and SPDK a 135 MB trace
        // file in /dev/shm (memory) unless it exits cleanly; remove ours.
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/spdk{}", self.shm_id));
        if self.shm_id >= 0 {
            let _ = std::fs::remove_file(format!("/dev/shm/nvmf_trace.{}", self.shm_id));
        }
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

/// The method names of an rpc_get_methods result, sorted.
pub fn method_names(listed: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = listed
        .as_array()
        .expect("rpc_get_methods returns an array")
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// A new 32 MiB pool of 4 KiB blocks at `pool` and the pmem bdev `name` on it.
pub fn add_pmem_bdev(t: &Target, pool: &Path, name: &str) {
    let pool = pool.to_str().unwrap();
    t.rpc_ok(&["bdev_pmem_create_pool", pool, "32", "4096"]);
    t.rpc_ok(&["bdev_pmem_create", "-n", name, pool]);
}

/// rpc.py `method` (`nvmf_subsystem_add_listener` or `_remove_listener`)
/// for `nqn` on TCP 127.0.0.1:`port`.
pub fn tcp_listener_rpc(t: &Target, method: &str, nqn: &str, port: u16) -> Output {
    let port_s = port.to_string();
    t.rpc(&[method, nqn, "-t", "TCP", "-a", "127.0.0.1", "-s", &port_s])
}

/// A TCP listener for `nqn` on 127.0.0.1:`port`.
pub fn add_tcp_listener(t: &Target, nqn: &str, port: u16) {
    let out = tcp_listener_rpc(t, "nvmf_subsystem_add_listener", nqn, port);
    assert!(
        out.status.success(),
        "adding listener 127.0.0.1:{port} to {nqn}: {}\ntarget log:\n{}",
        output_text(&out),
        t.log_text()
    );
}

/// The article's set-up through rpc.py: pool (created if missing) → pmem bdev
/// `pmdk0` → TCP transport → subsystem `nqn` (serial SPDK0001, any host) →
/// listener 127.0.0.1:`port` → namespace.
pub fn configure_article(t: &Target, pool: &Path, nqn: &str, port: u16) {
    let pool_s = pool.to_str().unwrap();
    if !pool.exists() {
        t.rpc_ok(&["bdev_pmem_create_pool", pool_s, "32", "4096"]);
    }
    t.rpc_ok(&["bdev_pmem_create", "-n", "pmdk0", pool_s]);
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    t.rpc_ok(&["nvmf_create_subsystem", nqn, "-a", "-s", "SPDK0001"]);
    add_tcp_listener(t, nqn, port);
    t.rpc_ok(&["nvmf_subsystem_add_ns", nqn, "pmdk0"]);
}

impl Target {
    /// Runs spdk-rpc 26.x against this target.
    pub fn rpc26(&self, args: &[&str]) -> Output {
        let client = spdk_rpc_26();
        assert!(
            client.exists(),
            "{} missing: run scripts/setup.sh",
            client.display()
        );
        super::command(client)
            .arg("-s")
            .arg(&self.sock)
            .args(args)
            .output()
            .expect("running spdk-rpc")
    }

    /// Sends one raw JSON-RPC 2.0 request and returns the whole response object.
    pub fn jsonrpc(&self, method: &str, params: Option<serde_json::Value>) -> serde_json::Value {
        use std::io::Write;
        let mut stream = std::os::unix::net::UnixStream::connect(&self.sock)
            .expect("connecting to the RPC socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut request = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method});
        if let Some(p) = params {
            request["params"] = p;
        }
        stream
            .write_all(&serde_json::to_vec(&request).unwrap())
            .unwrap();
        let mut values =
            serde_json::Deserializer::from_reader(stream).into_iter::<serde_json::Value>();
        values.next().expect("a response").expect("a JSON response")
    }

    /// A raw JSON-RPC call that must fail; returns the error message.
    pub fn jsonrpc_err(&self, method: &str, params: serde_json::Value) -> String {
        let response = self.jsonrpc(method, Some(params.clone()));
        let message = response["error"]["message"].as_str();
        assert!(
            message.is_some(),
            "{method} {params} should have failed: {response}"
        );
        message.unwrap().to_string()
    }

    /// A raw JSON-RPC call that must succeed; returns its result.
    pub fn jsonrpc_ok(&self, method: &str, params: Option<serde_json::Value>) -> serde_json::Value {
        let response = self.jsonrpc(method, params.clone());
        assert!(
            response.get("error").is_none(),
            "{method} {params:?} failed: {response}\n{}",
            self.log_text()
        );
        response["result"].clone()
    }
}

/// nvmf_get_subsystems without what differs from run to run by design:
/// namespace UUIDs and the listener's port.
pub fn normalised_subsystems(mut v: serde_json::Value) -> serde_json::Value {
    for subsystem in v.as_array_mut().unwrap() {
        if let Some(nss) = subsystem
            .get_mut("namespaces")
            .and_then(serde_json::Value::as_array_mut)
        {
            for ns in nss {
                let ns = ns.as_object_mut().unwrap();
                ns.remove("uuid");
                ns.remove("nguid");
            }
        }
        if let Some(ls) = subsystem
            .get_mut("listen_addresses")
            .and_then(serde_json::Value::as_array_mut)
        {
            for l in ls {
                l["trsvcid"] = serde_json::Value::from("PORT");
            }
        }
    }
    v
}

/// One JSON-RPC call (`spdk_get_version`) straight on the socket, answered
/// within `within`: how the fuzzers tell a wedged target from a busy one
/// without rpc.py's start-up time.
pub fn rpc_answers(sock: &Path, within: Duration) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock)
        .map_err(|e| format!("connect {}: {e}", sock.display()))?;
    s.set_read_timeout(Some(within)).unwrap();
    s.set_write_timeout(Some(within)).unwrap();
    s.write_all(br#"{"jsonrpc":"2.0","id":1,"method":"spdk_get_version"}"#)
        .map_err(|e| format!("write: {e}"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => {
                return Err(format!(
                    "connection closed after {:?}",
                    String::from_utf8_lossy(&got)
                ))
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("no answer within {within:?}: {e}")),
        }
        if serde_json::from_slice::<serde_json::Value>(&got).is_ok() {
            return Ok(());
        }
    }
}
