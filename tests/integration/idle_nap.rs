//! `--idle-nap-us`: a reactor with nothing to do sleeps instead of polling
//! (CPU back to a Ceph OSD on the same machine), serves I/O as before, and
//! its nap thread lets the target stop without SPDK's forced thread exit.

use crate::common;

use std::time::Duration;

use common::*;

/// CPU seconds the target's reactor thread (`reactor_0`) has used.
fn reactor_cpu(pid: u32) -> f64 {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim() == "reactor_0" {
            let stat = std::fs::read_to_string(task.join("stat")).unwrap();
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .unwrap()
                .1
                .split_whitespace()
                .collect();
            let ticks: u64 =
                fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
            // SAFETY: sysconf only reads.
            return ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        }
    }
    panic!("no reactor_0 thread in process {pid}");
}

/// The reactor's CPU seconds over two seconds of an idle target started
/// with `extra` flags (after a second to settle).
fn idle_reactor_cpu(extra: &[&str]) -> f64 {
    let t = Target::start(&our_nvmf_tgt(), extra);
    let pid = t.child.as_ref().unwrap().id();
    std::thread::sleep(Duration::from_secs(1));
    let before = reactor_cpu(pid);
    std::thread::sleep(Duration::from_secs(2));
    reactor_cpu(pid) - before
}

#[test]
fn an_idle_reactor_naps_and_gives_its_cpu_back() {
    let _turn = alone();
    let polling = idle_reactor_cpu(&[]);
    let napping = idle_reactor_cpu(&["--idle-nap-us", "200"]);
    // A polling reactor takes its CPU (measured: 1.99 s of 2 s). A napping
    // one (0.22 s) polls 200 us after each poll that counts as work, and
    // SPDK's RPC poller counts as work every 4 ms, idle or not.
    eprintln!("reactor CPU in 2 s: polling {polling:.2} s, napping {napping:.2} s");
    assert!(
        napping < polling / 4.0,
        "the napping reactor used {napping:.2} s of CPU in 2 s, the polling one {polling:.2} s"
    );
}

#[test]
fn a_napping_target_serves_io_and_stops_cleanly() {
    let _turn = beside_others();
    let dir = shm_dir();
    let pool = dir.path().join("nap.pool");
    let mut t = Target::start(&our_nvmf_tgt(), &["--idle-nap-us", "200"]);
    let nqn = "nqn.2016-06.io.spdk:nap";
    let port = test_port();
    configure_article(&t, &pool, nqn, port);
    for size in [4096, 65536] {
        let (status, out) = bdevperf_verify(dir.path(), nqn, port, size);
        check_bdevperf(status, &out);
    }
    let status = t.stop();
    let log = t.log_text();
    assert!(status.success(), "exit {status:?}:\n{log}");
    // A nap thread that kept its pollers would be forced out after 5 s.
    assert!(
        !log.contains("got timeout"),
        "a thread was forced out:\n{log}"
    );
}

#[test]
fn a_nap_too_long_is_refused_by_name() {
    let _turn = beside_others();
    let out = crate::common::command(our_nvmf_tgt())
        .args(["--idle-nap-us", "200000"])
        .output()
        .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("--idle-nap-us"), "{text}");
}
