//! The seeded protocol fuzzer against one subsystem while bdevperf verifies
//! data on another of the same target.

use super::*;

/// Three subsystems on one listener: bdevperf's, the fuzzer's scratch one,
/// and the one its checked sessions write and read back.
fn configure(t: &Target, dir: &Path, port: u16) {
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    for (nqn, serial, bdev) in [
        (VERIFY_NQN, "SPDK0001", "pmdk0"),
        (FUZZ_NQN, "SPDK-FZ0", "fuzz0"),
        (CHECK_NQN, "SPDK-FZ1", "check0"),
    ] {
        add_pmem_bdev(t, &dir.join(format!("{bdev}.pool")), bdev);
        t.rpc_ok(&["nvmf_create_subsystem", nqn, "-a", "-s", serial]);
        add_tcp_listener(t, nqn, port);
        t.rpc_ok(&["nvmf_subsystem_add_ns", nqn, bdev]);
    }
}

/// bdevperf verifying the `VERIFY_NQN` namespace for `seconds`, on core 1.
fn start_bdevperf(dir: &Path, port: u16, seconds: u64) -> Child {
    let config = nvme_bdev_config(dir, VERIFY_NQN, port);
    let log = std::fs::File::create(dir.join("bdevperf.log")).unwrap();
    crate::common::command(spdk_tool("test/bdev/bdevperf/bdevperf"))
        .args([
            "--json",
            config.to_str().unwrap(),
            "-q",
            "8",
            "-o",
            "4096",
            "-w",
            "verify",
        ])
        .args(["-t", &seconds.to_string(), "-m", "0x2"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting bdevperf")
}

/// The target must be running and answer JSON-RPC within 10 s.
fn healthy(t: &Mutex<&mut Target>, last_rpc: &Mutex<Instant>) -> Result<(), String> {
    let mut t = t.lock().unwrap();
    if let Some(status) = t.child.as_mut().unwrap().try_wait().unwrap() {
        return Err(format!(
            "the target exited ({status}); its log ends:\n{}",
            t.log_excerpt(30)
        ));
    }
    let mut last = last_rpc.lock().unwrap();
    if last.elapsed() > Duration::from_secs(2) {
        *last = Instant::now();
        rpc_answers(&t.sock, Duration::from_secs(10))
            .map_err(|e| format!("the target is wedged: {e}"))?;
    }
    Ok(())
}

#[test]
fn fuzzed_nvme_tcp_hosts_do_not_crash_the_target_or_disturb_verified_io() {
    // It loads both CPUs; the replayed sequences mostly wait for SPDK's qpair
    // timeout and run beside each other.
    let _alone = alone();
    let seed = env_u64(
        "SPDK_PMEM_FUZZ_SEED",
        Rng::derive(0x5eed, std::process::id() as u64) % 1_000_000,
    );
    let seconds = env_u64("SPDK_PMEM_FUZZ_SECONDS", 30);
    let sessions = env_u64("SPDK_PMEM_FUZZ_SESSIONS", 3000);
    let binary = fuzz_target();
    eprintln!(
        "NVMe/TCP fuzzing {} with seed {seed} (SPDK_PMEM_FUZZ_SEED={seed} replays it)",
        binary.display()
    );

    let dir = shm_dir();
    let port = test_port();
    let mut t = Target::start(&binary, &[]);
    configure(&t, dir.path(), port);
    let mut bdevperf = start_bdevperf(dir.path(), port, seconds + 5);

    let setup = Setup {
        port,
        fuzz_nqn: FUZZ_NQN.into(),
        check_nqn: CHECK_NQN.into(),
        block_size: 4096,
        blocks_per_worker: 64,
    };
    let bounds = Bounds {
        seed,
        max_sessions: sessions,
        seconds,
        workers: 12,
    };
    let stats = Stats::default();
    let last_rpc = Mutex::new(Instant::now());
    let result = {
        let target = Mutex::new(&mut t);
        fuzz::run(&setup, &bounds, &stats, &|| healthy(&target, &last_rpc))
    };
    eprintln!("fuzzed: {}", stats.summary());
    if let Err(f) = result {
        let _ = bdevperf.kill();
        let _ = bdevperf.wait();
        remove_trace_file("bdevperf", bdevperf.id());
        std::thread::sleep(Duration::from_millis(500));
        let state = match t.child.as_mut().unwrap().try_wait().unwrap() {
            Some(status) => format!("the target exited: {status}"),
            None => "the target is still running".to_string(),
        };
        let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("nvme-tcp-fuzz-{seed}.txt"));
        std::fs::write(
            &file,
            format!("{}\n{state}; its log:\n{}", f.report(seed), t.log_text()),
        )
        .unwrap();
        panic!(
            "{}\n{state}; its log:\n{}\n(the sessions and the whole log are in {})",
            log_excerpt(&f.report(seed), 12),
            t.log_excerpt(40),
            file.display()
        );
    }

    let status = bdevperf.wait().unwrap();
    let out = std::fs::read_to_string(dir.path().join("bdevperf.log")).unwrap();
    check_bdevperf(status, &out);
    // The target still serves a new host and stops cleanly.
    let id = identify(VERIFY_NQN, port);
    assert_eq!(identify_field(&id, "Serial Number"), "SPDK0001");
    assert!(t.stop().success(), "{}", t.log_excerpt(40));
}
