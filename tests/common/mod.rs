//! Shared by the integration tests: start the real `nvmf_tgt` (ours or SPDK's
//! C one) with its own RPC socket and shared-memory id, drive it with SPDK's
//! `scripts/rpc.py`, and stop it (also when a test fails: `Drop`).
#![allow(dead_code)]

pub mod background;
pub mod ceph;
pub mod crc32c;
pub mod loopback;
pub mod metrics;
pub mod rng;
pub mod stamp;
pub mod vm;
pub mod writeback;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const SPDK_ROOT: &str = spdk_pmem::SPDK_ROOT;

/// The one way tests of a binary keep out of each other's way: a test that
/// measures, loads both CPUs or starts a Ceph cluster takes [`alone`] and
/// runs with no other test of its binary that takes either; tests that may
/// overlap each other but not such a one take [`beside_others`]. Tests
/// that take neither run whenever the harness starts them.
static SERIAL: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// See [`SERIAL`]: no other test that takes [`alone`] or [`beside_others`]
/// runs while this is held.
pub fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    SERIAL.write().unwrap_or_else(|e| e.into_inner())
}

/// See [`SERIAL`]: held by several tests at once, never beside [`alone`].
pub fn beside_others() -> std::sync::RwLockReadGuard<'static, ()> {
    SERIAL.read().unwrap_or_else(|e| e.into_inner())
}

/// Held while this test process has a libpmemblk pool open and while it
/// spawns a target. libpmemblk opens pool files without O_CLOEXEC: a target
/// forked by a parallel test in that window inherits the descriptor and
/// holds the pool's flock for its whole life (another target's
/// bdev_pmem_create then fails: "Resource temporarily unavailable").
pub static POOL_FD_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` on the pool at `path` (created with `blocks` blocks of
/// `block_size` if missing), closing it before any target can be spawned.
pub fn with_pool<R>(
    path: &Path,
    block_size: usize,
    blocks: u64,
    f: impl FnOnce(&spdk_pmem::pmem::Pool) -> R,
) -> R {
    use spdk_pmem::pmem::Pool;
    let _held = POOL_FD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let pool = if path.exists() {
        Pool::open(path, Some(block_size))
    } else {
        Pool::create_with_blocks(path, block_size, blocks, 0o600)
    }
    .unwrap_or_else(|e| panic!("pool {}: {e}", path.display()));
    f(&pool)
}

/// Our binary, as cargo built it for this test run.
pub fn our_nvmf_tgt() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nvmf_tgt"))
}

/// One of this crate's examples, which `cargo test` builds beside the test
/// binaries.
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "{} missing: run through cargo test",
        path.display()
    );
    path
}

/// Runs SPDK's rpc.py against the RPC socket `sock`.
pub fn rpc_py(sock: &Path, args: &[&str]) -> Output {
    Command::new("python3")
        // Where `--plugin rpc_pmem_cache` finds our methods.
        .env(
            "PYTHONPATH",
            concat!(env!("CARGO_MANIFEST_DIR"), "/scripts"),
        )
        .arg(spdk_tool("scripts/rpc.py"))
        .arg("-s")
        .arg(sock)
        .args(args)
        .output()
        .expect("running rpc.py")
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
    // 64 per process: a test binary's tests run in parallel and each takes
    // two (its target's shm id and its port) or more. Ports stay below
    // Linux's ephemeral range (32768 and up), where clients' own sockets are.
    let slot = (pid % 199) * 64 + n % 64;
    let shm = slot as i32 + 100;
    let port = 20000 + slot as u16;
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
        let mut cmd = Command::new(binary);
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
        let held = POOL_FD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
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
        drop(held);
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

/// The nvmf_tgt the hostile-input tests attack: ours, unless
/// `SPDK_PMEM_FUZZ_TARGET` says `c` (SPDK's C one of this build) or a path.
pub fn fuzz_target() -> PathBuf {
    match std::env::var("SPDK_PMEM_FUZZ_TARGET").as_deref() {
        Err(_) | Ok("ours") => our_nvmf_tgt(),
        Ok("c") => c_nvmf_tgt(),
        Ok(path) => PathBuf::from(path),
    }
}

/// A whole number from the environment (decimal or 0x hex), or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        }
        Err(_) => default,
    }
}

/// A directory in /dev/shm for pools (memory, so the pmem bdev is fast);
/// removed on drop.
pub fn shm_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("spdk-pmem-test")
        .tempdir_in("/dev/shm")
        .expect("a directory in /dev/shm")
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

/// The transport ID string SPDK's initiators take.
pub fn trid(nqn: &str, port: u16) -> String {
    format!("trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{port} subnqn:{nqn}")
}

/// A finished command's stdout and stderr, for assertions and messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// SPDK's spdk_dd with the initiator config `config` (`nvme_bdev_config`),
/// on core 1, 4 KiB at a time, and `args`; its output and status, unchecked.
pub fn spdk_dd(config: &Path, args: &[&str]) -> Output {
    spdk_dd_command(config, args)
        .output()
        .expect("running spdk_dd")
}

/// The command [`spdk_dd`] runs, for callers that start it in the
/// background.
pub fn spdk_dd_command(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(spdk_tool("build/bin/spdk_dd"));
    cmd.args([
        "--json",
        config.to_str().unwrap(),
        "-m",
        "0x2",
        "--bs",
        "4096",
    ])
    .args(args)
    .stdin(Stdio::null());
    cmd
}

/// [`spdk_dd`] that must succeed.
/// Writes the file `input` to the namespace Nvme0n1 of `config` from block
/// `seek` on, with spdk_dd.
pub fn dd_to_namespace(config: &Path, input: &Path, seek: u64) {
    let (input, seek) = (input.to_str().unwrap(), seek.to_string());
    spdk_dd_ok(config, &["--if", input, "--ob", "Nvme0n1", "--seek", &seek]);
}

/// Reads `count` blocks from block `skip` of the namespace Nvme0n1 of
/// `config` into the file `output`, with spdk_dd.
pub fn dd_from_namespace(config: &Path, output: &Path, skip: u64, count: u64) {
    let (output, skip, count) = (
        output.to_str().unwrap(),
        skip.to_string(),
        count.to_string(),
    );
    spdk_dd_ok(
        config,
        &[
            "--ib", "Nvme0n1", "--of", output, "--skip", &skip, "--count", &count,
        ],
    );
}

pub fn spdk_dd_ok(config: &Path, args: &[&str]) {
    let out = spdk_dd(config, args);
    assert!(
        out.status.success(),
        "spdk_dd {args:?}: {}",
        output_text(&out)
    );
}

/// Runs one of SPDK's programs to completion; panics with its output if it fails.
pub fn run_tool(rel: &str, args: &[&str]) -> String {
    let out = Command::new(spdk_tool(rel))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {rel}: {e}"));
    let text = output_text(&out);
    assert!(
        out.status.success(),
        "{rel} {args:?} failed ({}):\n{text}",
        out.status
    );
    text
}

/// SPDK's identify over the fabric, on core 1.
pub fn identify(nqn: &str, port: u16) -> String {
    run_tool(
        "build/examples/identify",
        &["-r", &trid(nqn, port), "-p", "1"],
    )
}

/// The value after `key:` on identify's first line that has it.
pub fn identify_field(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(key))
        .map(|v| v.trim_start_matches(':').trim().to_string())
        .unwrap_or_else(|| panic!("{key} not in identify output:\n{text}"))
}

/// The data size of the namespace's current LBA format, from identify's output.
pub fn identify_block_size(text: &str) -> u64 {
    let format = identify_field(text, "Current LBA Format");
    let number = format.trim_start_matches("LBA Format #").to_string();
    let key = format!("LBA Format #{number}: Data Size");
    identify_field(text, &key)
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no data size for format {number}:\n{text}"))
}

/// SPDK's perf over the fabric on core 1; returns (IOPS, average latency in us).
pub fn perf(nqn: &str, port: u16, workload: &str, seconds: u32) -> (f64, f64) {
    let t = seconds.to_string();
    let trid = trid(nqn, port);
    let mut args = vec![
        "-r", &trid, "-q", "32", "-o", "4096", "-w", workload, "-t", &t, "-c", "0x2",
    ];
    if workload.ends_with("rw") {
        args.extend(["-M", "50"]);
    }
    let text = run_tool("build/examples/perf", &args);
    check_perf(&text)
}

/// perf's (IOPS, average latency in us), after making sure the run had no
/// I/O error: 20.07's perf counts an I/O that completed with an error status
/// as completed (printing "completed with error") and exits 0.
pub fn check_perf(text: &str) -> (f64, f64) {
    for bad in ["completed with error", "*ERROR*"] {
        assert!(!text.contains(bad), "perf printed {bad:?}:\n{text}");
    }
    let total = text
        .lines()
        .find(|l| l.starts_with("Total"))
        .unwrap_or_else(|| panic!("no Total line in perf output:\n{text}"));
    let cols: Vec<f64> = total
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .collect();
    assert!(cols.len() >= 3 && cols[0] > 0.0, "perf did no I/O:\n{text}");
    (cols[0], cols[2])
}

/// A JSON config for SPDK apps (spdk_dd, bdevperf) attaching the target's
/// subsystem as bdev `Nvme0n1` over TCP.
pub fn nvme_bdev_config(dir: &Path, nqn: &str, port: u16) -> PathBuf {
    let config = serde_json::json!({
        "subsystems": [{
            "subsystem": "bdev",
            "config": [{
                "method": "bdev_nvme_attach_controller",
                "params": {
                    "name": "Nvme0", "trtype": "tcp", "adrfam": "ipv4",
                    "traddr": "127.0.0.1", "trsvcid": port.to_string(), "subnqn": nqn
                }
            }]
        }]
    });
    let path = dir.join("initiator.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    path
}

/// bdevperf `-w verify` for 1 s on core 1 through SPDK's NVMe bdev attached
/// to the target's `nqn`: writes `io_size`-byte I/Os, reads them back and
/// compares. Returns its exit status and output, for `check_bdevperf`.
pub fn bdevperf_verify(
    dir: &Path,
    nqn: &str,
    port: u16,
    io_size: u32,
) -> (std::process::ExitStatus, String) {
    let config = nvme_bdev_config(dir, nqn, port);
    let out = Command::new(spdk_tool("test/bdev/bdevperf/bdevperf"))
        .args(["--json", config.to_str().unwrap()])
        .args(["-q", "8", "-o", &io_size.to_string(), "-w", "verify"])
        .args(["-t", "1", "-m", "0x2"])
        .stdin(Stdio::null())
        .output()
        .expect("running bdevperf");
    (out.status, output_text(&out))
}

/// Removes the trace file SPDK app `app` (started without `-i`) left in
/// /dev/shm when it was killed as process `pid`.
pub fn remove_trace_file(app: &str, pid: u32) {
    let _ = std::fs::remove_file(format!("/dev/shm/{app}_trace.pid{pid}"));
}

/// A free TCP port on 127.0.0.1 for this test process.
pub fn test_port() -> u16 {
    unique_ids().1
}

/// Today's SPDK Python client (PyPI `spdk` 26.x), installed by scripts/setup.sh.
pub fn spdk_rpc_26() -> PathBuf {
    match std::env::var_os("SPDK_PMEM_SPDK_RPC_26") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/spdk-rpc-venv/bin/spdk-rpc"),
    }
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
        Command::new(client)
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

/// bdevperf's run must have succeeded: exit 0, no failed or miscompared I/O
/// (20.07 prints "Buffer mismatch" and "... fails"), and a Total line with
/// I/Os in it.
pub fn check_bdevperf(status: std::process::ExitStatus, out: &str) {
    if let Err(e) = bdevperf_succeeded(status, out) {
        panic!("{e}");
    }
}

/// What `check_bdevperf` checks, as a `Result` for callers that count failures.
pub fn bdevperf_succeeded(status: std::process::ExitStatus, out: &str) -> Result<(), String> {
    if !status.success() {
        return Err(format!("bdevperf failed ({status}):\n{out}"));
    }
    if let Some(bad) = ["Buffer mismatch", " fails", "error"]
        .into_iter()
        .find(|bad| out.contains(bad))
    {
        return Err(format!("bdevperf printed {bad:?}:\n{out}"));
    }
    let iops = out
        .lines()
        .filter_map(|l| l.trim_start_matches('\r').trim().strip_prefix("Total"))
        .filter_map(|l| {
            l.trim_start_matches([' ', ':'])
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .next_back();
    if iops.is_some_and(|v| v > 0.0) {
        Ok(())
    } else {
        Err(format!("bdevperf did no I/O:\n{out}"))
    }
}

/// A process's open file descriptors, resident memory and hugepage memory
/// (KiB), from /proc.
#[derive(Clone, Copy, Debug)]
pub struct Footprint {
    pub fds: usize,
    pub rss_kib: u64,
    pub huge_kib: u64,
}

pub fn footprint(pid: u32) -> Footprint {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Footprint {
        fds,
        rss_kib: kib("VmRSS:"),
        huge_kib: kib("HugetlbPages:"),
    }
}

/// Looks every `every`, for up to `within`, until process `pid` holds no
/// more than `fds` descriptors; returns its footprint then.
pub fn fds_settled(pid: u32, fds: usize, within: Duration, every: Duration) -> Footprint {
    let until = Instant::now() + within;
    let mut now = footprint(pid);
    while Instant::now() < until && now.fds > fds {
        std::thread::sleep(every);
        now = footprint(pid);
    }
    now
}

/// A RAM disk's part of a bdev module's I/O: a read copies from `data` into
/// the I/O's buffers, a write the other way, from block `offset_blocks`.
pub fn ram_transfer(data: &mut [u8], io: &mut spdk_pmem::bdev::module::BdevIo) {
    use spdk_pmem::bdev::module::IoType;
    let mut at = io.offset_blocks() as usize * io.block_size() as usize;
    if io.io_type() == IoType::Read {
        for s in io.segments_mut() {
            s.copy_from_slice(&data[at..at + s.len()]);
            at += s.len();
        }
    } else {
        for s in io.segments() {
            data[at..at + s.len()].copy_from_slice(s);
            at += s.len();
        }
    }
}

/// `text` from its first sanitizer report or failed assertion on, `lines`
/// lines of it; without one, its last `lines` lines.
pub fn log_excerpt(text: &str, lines: usize) -> String {
    const FAULTS: [&str; 4] = [
        "ERROR: AddressSanitizer",
        "ERROR: LeakSanitizer",
        "runtime error:",
        "Assertion `",
    ];
    let all: Vec<&str> = text.lines().collect();
    let from = all
        .iter()
        .position(|l| FAULTS.iter().any(|f| l.contains(f)))
        .map(|at| at.saturating_sub(3))
        .unwrap_or(all.len().saturating_sub(lines));
    all[from..all.len().min(from + lines)].join("\n")
}

#[cfg(test)]
mod log_excerpt_tests {
    use super::log_excerpt;

    #[test]
    fn a_sanitizer_report_is_shown_from_its_head() {
        let mut log: Vec<String> = (0..50).map(|i| format!("line {i}")).collect();
        log.insert(
            10,
            "==1==ERROR: AddressSanitizer: heap-use-after-free".into(),
        );
        let got = log_excerpt(&log.join("\n"), 5);
        assert_eq!(
            got.lines().nth(3).unwrap(),
            "==1==ERROR: AddressSanitizer: heap-use-after-free"
        );
        assert_eq!(got.lines().count(), 5);
    }

    #[test]
    fn without_one_the_tail_is_shown() {
        let log: Vec<String> = (0..50).map(|i| format!("line {i}")).collect();
        assert_eq!(log_excerpt(&log.join("\n"), 2), "line 48\nline 49");
    }
}
