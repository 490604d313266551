//! SPDK's own monitoring tools against our nvmf_tgt: `spdk_trace` reads the
//! tracepoints `-e` enabled while SPDK's perf did I/O, and `spdk_top`
//! (SPDK 20.07's, driven in a tmux session whose screen the test reads)
//! shows our reactor, threads and pollers; `-L` log flags are taken as the
//! C nvmf_tgt of the same build takes them.

use crate::common;

use std::time::{Duration, Instant};

use common::*;

const NQN: &str = "nqn.2016-06.io.spdk:tools";

/// A tmux session, killed when dropped.
struct Tmux(String);

impl Tmux {
    fn start(command: &str) -> Tmux {
        let name = format!("spdk-pmem-top-{}", std::process::id());
        let ok = crate::common::command("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                "180",
                "-y",
                "45",
                command,
            ])
            .status()
            .expect("running tmux (scripts/setup-host.sh installs it)");
        assert!(ok.success(), "tmux new-session: {ok}");
        Tmux(name)
    }

    fn keys(&self, keys: &str) {
        let ok = crate::common::command("tmux")
            .args(["send-keys", "-t", &self.0, keys])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    fn screen(&self) -> String {
        let out = crate::common::command("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits (bounded) until the screen shows every one of `words`.
    fn wait_for(&self, words: &[&str]) {
        self.wait_until(&format!("{words:?}"), |screen| {
            words.iter().all(|w| screen.contains(w))
        });
    }

    /// Waits (bounded) until `shows` holds for the screen.
    fn wait_until(&self, what: &str, shows: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if shows(&screen) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "spdk_top never showed {what}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = crate::common::command("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

#[test]
fn spdk_trace_reads_the_tracepoints_and_spdk_top_shows_reactors_threads_and_pollers() {
    let _turn = beside_others();
    let shm = shm_dir();
    let port = test_port();
    // Every tracepoint group.
    let mut t = Target::start(&our_nvmf_tgt(), &["-e", "0xFFFF"]);
    configure_article(&t, &shm.path().join("pmdk0.pool"), NQN, port);
    let (iops, _) = perf(NQN, port, "randrw", 1);
    assert!(iops > 0.0);

    let trace = run_tool(
        "build/bin/spdk_trace",
        &["-s", "nvmf", "-i", &t.shm_id.to_string()],
    );
    let count = |name: &str| {
        trace
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w == name))
            .count()
    };
    for name in [
        "TCP_REQ_NEW",
        "TCP_REQ_COMPLETED",
        "BDEV_IO_START",
        "BDEV_IO_DONE",
    ] {
        assert!(
            count(name) > 0,
            "spdk_trace shows no {name}:\n{}",
            &trace[..trace.len().min(3000)]
        );
    }

    let top = Tmux::start(&format!(
        "{} -r {}",
        spdk_tool("build/bin/spdk_top").display(),
        t.sock.display()
    ));
    top.wait_for(&["THREADS", "app_thread", "nvmf_tgt_poll_group_0"]);
    top.keys("2");
    top.wait_for(&["Poller name", "nvmf_poll_group_poll", "rpc_subsystem_poll"]);
    top.keys("3");
    top.wait_for(&["Thread count", "Poller count"]);
    // A row for core 0 (the target's -m 0x1): "x    0    2    3 ...".
    top.wait_until("a row for core 0", |screen| {
        screen.lines().any(|l| {
            let cells: Vec<&str> = l.trim_matches('x').split_whitespace().collect();
            cells.first() == Some(&"0") && cells.len() >= 3
        })
    });
    top.keys("q");
    drop(top);
    assert!(t.stop().success(), "{}", t.log_text());
}

/// `-L FLAG` as the C nvmf_tgt of the same build takes it: SPDK 20.07 turns
/// on debug log flags only in `--enable-debug` builds, and otherwise both
/// refuse the flag with the same words and exit code 2 before starting.
#[test]
fn log_flags_are_taken_as_the_c_nvmf_tgt_takes_them() {
    let _turn = beside_others();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("rpc.sock");
    let run = |binary: std::path::PathBuf| {
        let out = crate::common::command("timeout")
            .arg("30")
            .arg(binary)
            .args(["-L", "nvmf", "-r"])
            .arg(&sock)
            .output()
            .expect("running nvmf_tgt");
        (out.status.code(), output_text(&out))
    };
    let (c_code, c_text) = run(c_nvmf_tgt());
    let (our_code, our_text) = run(our_nvmf_tgt());
    let words = "must be configured with --enable-debug for -L flag";
    if spdk_pmem::sys::DEBUG_BUILD {
        // Not so from scripts/setup.sh, which builds without --enable-debug.
        panic!("this SPDK is a debug build: test that -L nvmf shows the nvmf debug lines");
    }
    assert_eq!(c_code, Some(2), "{c_text}");
    assert!(c_text.contains(words), "{c_text}");
    assert_eq!(our_code, c_code, "{our_text}");
    assert!(our_text.contains(words), "{our_text}");
    assert!(!sock.exists(), "a target started");
}
