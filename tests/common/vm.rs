//! The Linux kernel NVMe-oF host in a QEMU guest (`scripts/linux-host-vm.sh`)
//! for one test: a shell script runs in the guest, which reaches only the
//! ports of this machine's 127.0.0.1 that the test names, and may ask the
//! test for steps in between (`step NAME` in the script: the guest waits
//! until the test has done it and prints its answer). The VM is stopped
//! when the script ends, at the timeout, and when the test fails.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/linux-host-vm.sh")
}

/// What the guest's script printed, and its exit status.
pub struct GuestRun {
    /// The script's exit status (the guest's harness reports it).
    pub status: i32,
    /// Everything the script printed.
    pub output: String,
}

impl GuestRun {
    /// The lines between `== NAME` and the next `== ` line.
    pub fn section(&self, name: &str) -> String {
        let head = format!("== {name}");
        let mut lines = self.output.lines().skip_while(|l| l.trim_end() != head);
        if lines.next().is_none() {
            panic!("the guest printed no section {name:?}:\n{}", self.output);
        }
        lines
            .take_while(|l| !l.starts_with("== "))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The guest-side helper every script gets first: `step NAME` asks the
/// test to do NAME and prints its answer; `wait_for DESC SECONDS CMD...`
/// retries CMD every 0.2 s and fails the script if it never succeeds.
const PRELUDE: &str = r#"
step() { echo "$*" | socat -t 600 - TCP:127.0.0.1:$STEP_PORT; }
wait_for() {
  desc=$1; limit=$2; shift 2; n=0
  until "$@" >/dev/null 2>&1; do
    n=$((n + 1))
    if [ "$n" -ge $((limit * 5)) ]; then echo "FAILED: $desc within ${limit} s"; return 1; fi
    sleep 0.2
  done
}
"#;

/// The VM script's process group, killed whole on drop (also when a step
/// or an assertion panics while the guest runs).
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) on the process group our own child leads.
            unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }
}

/// False (and says so) in the sanitized suite: a sanitized SPDK does not
/// change what the kernel sees, and the guest's boot is the slow part.
pub fn plain_suite() -> bool {
    if std::env::var_os("SPDK_PMEM_SANITIZED").is_some() {
        eprintln!("sanitized build: the Linux host runs in the plain suite");
        return false;
    }
    true
}

/// The guest's kernel: Debian 12's 6.1, or what `SPDK_LINUX_HOST_KERNEL`
/// names (`6.12`: Debian 13's).
pub fn kernel() -> String {
    std::env::var("SPDK_LINUX_HOST_KERNEL").unwrap_or_else(|_| "6.1".into())
}

/// Boots the guest (see [`kernel`]) and runs `body` there, its
/// ports `forward` reachable at 127.0.0.1 in the guest; `steps` answers
/// each `step` the script asks for. Panics if the guest never ran it.
pub fn run(
    body: &str,
    forward: &[u16],
    timeout: Duration,
    steps: impl FnMut(&str) -> String,
) -> GuestRun {
    run_with_files(body, forward, &[], timeout, steps)
}

/// [`run`], with `files` (files or directories) copied for the guest to
/// `/job/files/NAME`: the guest's /tmp is its own, so nothing under this
/// machine's /tmp (where a clone of the project may lie) is seen otherwise.
pub fn run_with_files(
    body: &str,
    forward: &[u16],
    files: &[&Path],
    timeout: Duration,
    steps: impl FnMut(&str) -> String,
) -> GuestRun {
    run_sized(body, forward, files, Size::default(), timeout, steps)
}

/// The guest's CPUs and RAM: one and 1024 MiB unless a test asks for more
/// (a target in the guest wants a core beside its initiator, and RAM for
/// its hugepages).
#[derive(Clone, Copy, Debug)]
pub struct Size {
    /// vCPUs.
    pub cpus: u32,
    /// RAM, MiB.
    pub memory_mib: u32,
    /// The kernel, when a test needs one ("6.12": host authentication);
    /// else [`kernel`]'s.
    pub kernel: Option<&'static str>,
}

impl Default for Size {
    fn default() -> Size {
        Size {
            cpus: 1,
            memory_mib: 1024,
            kernel: None,
        }
    }
}

/// [`run_with_files`] on a guest of `size`.
pub fn run_sized(
    body: &str,
    forward: &[u16],
    files: &[&Path],
    size: Size,
    timeout: Duration,
    mut steps: impl FnMut(&str) -> String,
) -> GuestRun {
    let control = TcpListener::bind("127.0.0.1:0").expect("a step port");
    control.set_nonblocking(true).unwrap();
    let step_port = control.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("guest.sh");
    std::fs::write(&file, format!("STEP_PORT={step_port}\n{PRELUDE}\n{body}\n")).unwrap();
    let mut cmd = super::command("bash");
    cmd.arg(script())
        .arg("run")
        .arg("--kernel")
        .arg(size.kernel.map_or_else(kernel, str::to_string))
        .arg("--timeout")
        .arg(timeout.as_secs().to_string())
        .arg("--cpus")
        .arg(size.cpus.to_string())
        .arg("--memory")
        .arg(size.memory_mib.to_string())
        .arg("--forward")
        .arg(step_port.to_string());
    for port in forward {
        cmd.arg("--forward").arg(port.to_string());
    }
    for file in files {
        cmd.arg("--file").arg(file);
    }
    let out_path = dir.path().join("out");
    // Its own process group, so that QEMU goes with it (`Group`'s drop).
    use std::os::unix::process::CommandExt;
    let child = cmd
        .process_group(0)
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running scripts/linux-host-vm.sh");
    let mut child = Group(child);
    let stderr = child.0.stderr.take().unwrap();
    let said = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    // The script bounds the guest itself; this bounds the script.
    let deadline = Instant::now() + timeout + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            panic!("scripts/linux-host-vm.sh did not end");
        }
        match control.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(false).unwrap();
                let mut line = String::new();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let _ = reader.read_line(&mut line);
                let answer = steps(line.trim());
                let mut conn = conn;
                let _ = writeln!(conn, "{answer}");
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("the step port: {e}"),
        }
    };
    let said = said.join().unwrap();
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    let status = status.code().unwrap_or(-1);
    if status == 125 {
        panic!("the guest did not run the script:\n{said}");
    }
    if status == 124 {
        panic!("the guest's script did not end within {timeout:?}:\n{output}\n{said}");
    }
    GuestRun { status, output }
}
