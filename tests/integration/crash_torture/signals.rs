//! SIGTERM and SIGINT under load: a clean exit, a consistent pool, and a
//! restart from save_config that serves the same data.

use super::*;

/// SIGTERM or SIGINT while a host writes, as started plainly, with
/// `--wait-for-rpc` and on two cores: the target exits 0, the pool is
/// consistent with every acknowledged write in it, and a target started
/// from the `save_config` output (`--json`) serves the same data.
#[test]
fn a_target_stopped_by_a_signal_under_load_exits_cleanly_and_keeps_its_data() {
    let _alone = alone();
    let dir = shm_dir();
    let pool = dir.path().join("signalled.pool");
    spdk_pmem::pmem::Pool::create(&pool, 4096, 32 << 20, 0o600).unwrap();
    let mut rng = Rng::new(0x5167);
    let mut h = History::default();
    let mut next_gen = 1u64;
    let runs: [(i32, &[&str]); 4] = [
        (libc::SIGTERM, &[]),
        (libc::SIGINT, &[]),
        (libc::SIGTERM, &["--wait-for-rpc"]),
        (libc::SIGINT, &["-m", "0x3"]),
    ];
    for (signal, extra) in runs {
        let what = format!("signal {signal}, flags {extra:?}");
        let (mut t, port) = serve_pool(&pool, extra);
        let config = dir.path().join("config.json");
        std::fs::write(&config, t.rpc_ok(&["save_config"])).unwrap();
        let pid = t.child.as_ref().unwrap().id() as i32;
        let acked = write_until_stopped(
            port,
            pid,
            signal,
            SHORT_RUNS,
            &mut rng,
            &mut next_gen,
            &mut h,
        );
        let status = t.wait_exit(Duration::from_secs(30));
        assert!(
            status.success(),
            "{what}: the target exited with {status}:\n{}",
            t.log_text()
        );
        assert!(acked > 0, "{what}: nothing was acknowledged");
        drop(t);
        let mut v = Verdict::default();
        let units = check_pool(&pool, 4096, &h, &mut v);
        assert!(
            v.torn.is_empty() && v.lost.is_empty(),
            "{what}: torn {:?} lost {:?}",
            v.torn,
            v.lost
        );

        // The saved configuration brings the same namespace back.
        let mut again = Target::start(&our_nvmf_tgt(), &["--json", config.to_str().unwrap()]);
        let (_admin, mut io) = host::io_queue(port, NQN, HOSTNQN);
        for (unit, want) in units.iter().enumerate() {
            let (status, got) = host::read_blocks(&mut io, 1, unit as u64, 1, 4096);
            assert_eq!(status, 0, "{what}: reading unit {unit} after the restart");
            assert!(
                got == *want,
                "{what}: unit {unit} reads differently after the restart"
            );
        }
        drop(io);
        assert!(again.stop().success());
        eprintln!("{what}: exit 0, {acked} acknowledged writes kept, {UNITS} units served again from --json");
    }
}
