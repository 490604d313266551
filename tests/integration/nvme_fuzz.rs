//! SPDK's own NVMe command fuzzer (`nvme_fuzz`, with the `-U` option
//! backported by vendor/patches/0013) against our target over TCP, as SPDK
//! 20.07's test/nvmf/target/fuzz.sh runs it: random admin and I/O commands
//! from a fixed seed, then its JSON command mode. The target must stay up and
//! serve a new host afterwards.
//!
//! `SPDK_PMEM_NVME_FUZZ_SECONDS` sets the length of the random run
//! (scripts/fuzz.sh), `SPDK_PMEM_FUZZ_TARGET` the target (`ours`, `c`, a path).

use crate::common;

use common::*;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2016-06.io.spdk:cnode1";

/// Runs nvme_fuzz on core 1, killed if it outlives `limit`: past its run
/// time it waits for every command it sent, and a target rightly holds
/// some (an Asynchronous Event Request from the random stream, depending on
/// where the run time cuts it). Returns its output, or `None` if it had to
/// be killed.
fn nvme_fuzz(dir: &Path, args: &[&str], limit: Duration) -> Option<String> {
    let log = dir.join("nvme_fuzz.log");
    let mut child = crate::common::command(spdk_tool("test/app/fuzz/nvme_fuzz/nvme_fuzz"))
        .args(["-m", "0x2", "-U", "-r"])
        .arg(dir.join("nvme_fuzz.sock"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join("nvme_fuzz.err")).unwrap())
        .spawn()
        .expect("starting nvme_fuzz");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            remove_trace_file("nvme_fuzz", child.id());
            eprintln!("nvme_fuzz {args:?} still running after {limit:?}: killed");
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Its 135 MB trace file in /dev/shm stays after any exit that recorded
    // trace entries.
    remove_trace_file("nvme_fuzz", child.id());
    let out = std::fs::read_to_string(&log).unwrap_or_default()
        + &std::fs::read_to_string(dir.join("nvme_fuzz.err")).unwrap_or_default();
    assert!(status.success(), "nvme_fuzz {args:?}: {status}\n{out}");
    assert!(
        !out.contains("IOMMU must be enabled"),
        "nvme_fuzz did not fuzz:\n{out}"
    );
    Some(out)
}

/// "Total commands completed: N" of each queue nvme_fuzz reports.
fn commands_completed(out: &str) -> u64 {
    out.lines()
        .filter_map(|l| l.split("Total commands completed: ").nth(1))
        .filter_map(|r| r.split(',').next()?.trim().parse::<u64>().ok())
        .sum()
}

#[test]
fn spdks_nvme_command_fuzzer_does_not_crash_the_target() {
    let _turn = beside_others();
    let seconds = std::env::var("SPDK_PMEM_NVME_FUZZ_SECONDS").unwrap_or_else(|_| "10".into());
    let dir = tempfile::tempdir().unwrap();
    let shm = tempfile::Builder::new()
        .prefix("spdk-pmem-test")
        .tempdir_in("/dev/shm")
        .unwrap();
    let port = test_port();
    let mut t = Target::start(&fuzz_target(), &[]);
    configure_article(&t, &shm.path().join("pmdk0.pool"), NQN, port);
    let conf = dir.path().join("nvme_fuzz.conf");
    std::fs::write(
        &conf,
        format!("[Nvme]\n  TransportID \"trtype:TCP adrfam:IPv4 subnqn:{NQN} traddr:127.0.0.1 trsvcid:{port}\" Nvme0\n"),
    )
    .unwrap();
    let conf = conf.to_str().unwrap();

    // Random admin and I/O commands from fuzz.sh's fixed seed, namespace 1 only.
    let limit = Duration::from_secs(seconds.parse::<u64>().unwrap() + 60);
    let out = nvme_fuzz(
        dir.path(),
        &["-t", &seconds, "-S", "123456", "-C", conf, "-N", "-a"],
        limit,
    );
    // Its count when it ended by itself; else the target's log must show
    // that bad commands arrived (SPDK logs an error for each).
    let random = out.as_deref().map_or(0, commands_completed);
    match &out {
        Some(out) => assert!(
            random > 1000,
            "nvme_fuzz completed {random} commands:\n{out}"
        ),
        None => {
            let errors = t.log_text().matches("*ERROR*").count();
            assert!(
                errors >= 20,
                "nvme_fuzz was stuck and the target logged only {errors} errors"
            );
        }
    }
    // Every bad command is an error line in SPDK 20.07 (233 MB of log in
    // 10 s): our target writes 10 of a kind per 10 s and says how many
    // more it left out.
    let log = t.log_text();
    eprintln!(
        "target log after {seconds} s of nvme_fuzz: {} bytes, {} lines",
        log.len(),
        log.lines().count()
    );
    assert!(
        log.len() < 2_330_000,
        "the target wrote {} bytes of log in {seconds} s of nvme_fuzz",
        log.len()
    );
    // The line comes once a kind's 10 s window is over, with the next line
    // or from the limiter's timer if the target has gone quiet: within
    // about 11 s of the fuzzer's end at the latest.
    let said = " more like this in the last 10 s (not logged: at most 10 of a kind";
    let deadline = Instant::now() + Duration::from_secs(20);
    while !t.log_text().contains(said) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = t.log_text();
    assert!(
        log.contains(said),
        "no line says what was left out:\n{}",
        &log[log.len().saturating_sub(3000)..]
    );

    // JSON mode with SPDK's example commands, less the Asynchronous Event
    // Requests (opcode 12), which a target holds until an event happens.
    let example: String =
        std::fs::read_to_string(spdk_tool("test/app/fuzz/nvme_fuzz/example.json")).unwrap();
    let kept: Vec<&str> = example
        .split("\"struct spdk_nvme_cmd\":")
        .skip(1)
        .filter(|c| !c.contains("\"opc\": 12,"))
        .map(|c| c.trim().trim_end_matches('}').trim().trim_end_matches(','))
        .collect();
    assert!(
        kept.len() >= 8,
        "{} commands kept from example.json",
        kept.len()
    );
    let json = format!(
        "{{\n{}\n}}\n",
        kept.iter()
            .map(|c| format!("\"struct spdk_nvme_cmd\": {c}"))
            .collect::<Vec<_>>()
            .join(",\n")
    );
    let json_path = dir.path().join("commands.json");
    std::fs::write(&json_path, json).unwrap();
    let out = nvme_fuzz(
        dir.path(),
        &["-C", conf, "-j", json_path.to_str().unwrap(), "-a"],
        Duration::from_secs(60),
    )
    .expect("nvme_fuzz stuck on the JSON commands, which the target all answers");
    assert!(commands_completed(&out) >= kept.len() as u64, "{out}");
    eprintln!(
        "nvme_fuzz: {random} random commands in {seconds} s, {} from JSON",
        kept.len()
    );

    let status = t.child.as_mut().unwrap().try_wait().unwrap();
    assert!(status.is_none(), "the target died: {status:?}");
    let id = identify(NQN, port);
    assert_eq!(identify_field(&id, "Serial Number"), "SPDK0001");
    assert!(t.stop().success());
}
