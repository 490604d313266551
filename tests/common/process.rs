//! What tests read of a finished command or a running process: output,
//! environment knobs, file descriptors and memory, log excerpts.

use std::ffi::OsStr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A command for a child that inherits no descriptor of this process but
/// the three it is given (stdin, stdout, stderr): every test process and
/// helper starts through this. The C libraries in this process open files
/// without `O_CLOEXEC` (libpmemblk holds a pool's `flock` on such a
/// descriptor while it opens the pool), and the tests run side by side: a
/// target spawned by one test in that window kept another test's pool
/// locked for its whole life, and that test's `bdev_pmem_create` failed
/// with "Resource temporarily unavailable".
pub fn command(program: impl AsRef<OsStr>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(program);
    // SAFETY: the hook makes only async-signal-safe system calls
    // (close_range, fcntl) and allocates nothing, as a hook between fork and
    // exec must.
    unsafe { cmd.pre_exec(mark_inherited_descriptors_close_on_exec) };
    cmd
}

fn mark_inherited_descriptors_close_on_exec() -> std::io::Result<()> {
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only sets a flag on
    // this (child) process's descriptors from 3 up.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // Kernels before 5.11 lack the flag: mark each descriptor in turn.
    for fd in 3..65536 {
        // SAFETY: F_GETFD/F_SETFD touch only the descriptor's flags; an fd
        // that is not open fails with EBADF and is skipped.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
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

/// A finished command's stdout and stderr, for assertions and messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Removes the trace file SPDK app `app` (started without `-i`) left in
/// /dev/shm when it was killed as process `pid`.
pub fn remove_trace_file(app: &str, pid: u32) {
    let _ = std::fs::remove_file(format!("/dev/shm/{app}_trace.pid{pid}"));
}

/// A process's open file descriptors, resident memory and hugepage memory
/// (KiB), from /proc.
#[derive(Clone, Copy, Debug)]
pub struct Footprint {
    /// Open file descriptors.
    pub fds: usize,
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// Hugepage memory mapped, KiB.
    pub huge_kib: u64,
}

/// Process `pid`'s footprint now (zeros for a process that is gone).
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// Whether a child started by `cmd` still has `fd` open.
    fn child_has(mut cmd: Command, fd: i32) -> bool {
        let out = cmd
            .arg("-c")
            .arg(format!("test -e /proc/self/fd/{fd}"))
            .status()
            .unwrap();
        out.success()
    }

    #[test]
    fn a_child_inherits_no_descriptor_opened_without_cloexec() {
        let file = tempfile::tempfile().unwrap();
        let fd = file.as_raw_fd();
        // SAFETY: F_GETFD/F_SETFD on a descriptor this test owns, clearing
        // FD_CLOEXEC as a C library's plain open(2) leaves it.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            assert_eq!(libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC), 0);
        }
        assert!(
            child_has(Command::new("sh"), fd),
            "std's Command passes it on"
        );
        assert!(!child_has(command("sh"), fd), "command() does not");
    }
}
