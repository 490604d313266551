//! Hostile NVMe/TCP hosts against the real target: the seeded protocol fuzzer
//! while bdevperf verifies data on another subsystem of the same target.
//!
//! The environment sets a long run (scripts/fuzz-nvme-tcp.sh):
//! `SPDK_PMEM_FUZZ_SEED`, `SPDK_PMEM_FUZZ_SECONDS`, `SPDK_PMEM_FUZZ_SESSIONS`,
//! and `SPDK_PMEM_FUZZ_TARGET` (`ours`, `c`, or a path to an nvmf_tgt).

mod common;
mod nvme_tcp;

use common::rng::Rng;
use common::*;
use nvme_tcp::fuzz::{self, Bounds, Setup, Stats};
use nvme_tcp::host::{command_reading, connect_as, enabled_controller, negotiated};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const VERIFY_NQN: &str = "nqn.2016-06.io.spdk:cnode1";
const FUZZ_NQN: &str = "nqn.2016-06.io.spdk:fuzz";
/// The host NQN of the replay tests' hand-made connections.
const FUZZ_HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:1";
const CHECK_NQN: &str = "nqn.2016-06.io.spdk:fuzzcheck";

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
    Command::new(spdk_tool("test/bdev/bdevperf/bdevperf"))
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
            tail(&t.log_text(), 30)
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

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
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
            tail(&f.report(seed), 12),
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
    assert!(t.stop().success(), "{}", tail(&t.log_text(), 40));
}

/// A target with one subsystem (`FUZZ_NQN`, a pmem namespace) listening on
/// a port of its own.
fn small_target(dir: &Path) -> (Target, u16) {
    let port = test_port();
    let t = Target::start(&fuzz_target(), &[]);
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    add_pmem_bdev(&t, &dir.join("fuzz0.pool"), "fuzz0");
    t.rpc_ok(&[
        "nvmf_create_subsystem",
        FUZZ_NQN,
        "-a",
        "-s",
        "SPDK-FZ0",
        "-m",
        "8",
    ]);
    add_tcp_listener(&t, FUZZ_NQN, port);
    t.rpc_ok(&["nvmf_subsystem_add_ns", FUZZ_NQN, "fuzz0"]);
    (t, port)
}

/// After a replayed sequence: the target is alive, answers RPC and serves a
/// new host (SPDK's identify).
fn assert_still_serving(t: &mut Target, port: u16, what: &str) {
    std::thread::sleep(Duration::from_millis(500));
    if let Some(status) = t.child.as_mut().unwrap().try_wait().unwrap() {
        panic!(
            "{what}: the target died ({status}); its log ends:\n{}",
            tail(&t.log_text(), 20)
        );
    }
    rpc_answers(&t.sock, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{what}: RPC: {e}"));
    let id = identify(FUZZ_NQN, port);
    assert_eq!(identify_field(&id, "Serial Number"), "SPDK-FZ0", "{what}");
}

/// Writes `bytes` zeros to every connection each `every` for `during`, so the
/// target always has something to read on them; fails if the target dies.
fn keep_sending(
    t: &mut Target,
    conns: &mut [std::net::TcpStream],
    bytes: usize,
    every: Duration,
    during: Duration,
) {
    use std::io::Write;
    let zeros = vec![0u8; bytes];
    let until = Instant::now() + during;
    while Instant::now() < until {
        for c in conns.iter_mut() {
            let _ = c.write(&zeros);
        }
        if let Some(status) = t.child.as_mut().unwrap().try_wait().unwrap() {
            panic!(
                "the target died ({status}); its log ends:\n{}",
                tail(&t.log_text(), 20)
            );
        }
        std::thread::sleep(every);
    }
}

/// vendor/patches/0007: a Connect capsule whose SGL says no data.
#[test]
fn a_connect_capsule_without_data_is_refused_not_a_crash() {
    use nvme_tcp::wire;
    use std::io::{Read, Write};
    let _shared = beside_others();
    let dir = shm_dir();
    let (mut t, port) = small_target(dir.path());
    let mut s = negotiated(port);
    let (sqe, _) = wire::connect(
        1,
        0,
        31,
        0,
        0xFFFF,
        FUZZ_NQN,
        "nqn.2014-08.org.nvmexpress:uuid:0",
    );
    let sqe = sqe.sgl(0, 0, wire::SGL_IN_CAPSULE);
    s.write_all(&wire::capsule(&sqe.0, vec![], Default::default(), 0).encode())
        .unwrap();
    let mut rsp = [0u8; 24];
    s.read_exact(&mut rsp).expect("a response to the Connect");
    let status = u16::from_le_bytes([rsp[22], rsp[23]]) >> 1;
    assert_eq!(rsp[0], wire::CAPSULE_RESP);
    assert_eq!(status, 0x02, "Invalid Field in Command");
    assert_still_serving(&mut t, port, "after a Connect without data");
    assert!(t.stop().success());
}

/// vendor/patches/0006: refused connections that never negotiated (no
/// receive pipe) and keep sending, queued on posix's pending list behind more
/// than 32 stalled ones (the events one poll takes) whose pipes hold bytes
/// the target will never parse. When SPDK's 30 s qpair timeout closes them,
/// 20.07 left them on that list, freed: the next poll called a NULL callback.
#[test]
fn refused_connections_timing_out_behind_stalled_ones_do_not_crash_the_target() {
    use std::io::{Read, Write};
    let _shared = beside_others();
    let dir = shm_dir();
    let (mut t, port) = small_target(dir.path());
    // Refused at their ICReq (HLEN 255): no receive pipe, then more bytes.
    let mut refused: Vec<std::net::TcpStream> = Vec::new();
    for _ in 0..20 {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(&[0x00, 0x00, 0xff, 0x00, 0x80, 0x00, 0x00, 0x00])
            .unwrap();
        let mut term = [0u8; 8];
        c.read_exact(&mut term).expect("C2HTermReq");
        c.set_nonblocking(true).unwrap();
        refused.push(c);
    }
    // Negotiated, then a refused PDU header with 4 KiB behind it in one
    // write: the target reads it all into the pipe and parses no further.
    let mut stalled: Vec<std::net::TcpStream> = Vec::new();
    for _ in 0..40 {
        let mut c = negotiated(port);
        let mut bytes = vec![0x04, 0x00, 0xff, 0x00, 0x48, 0x00, 0x00, 0x00];
        bytes.resize(4096, 0x5a);
        c.write_all(&bytes).unwrap();
        let mut term = [0u8; 8];
        c.read_exact(&mut term).expect("C2HTermReq");
        stalled.push(c);
    }
    keep_sending(
        &mut t,
        &mut refused,
        16,
        Duration::from_millis(20),
        Duration::from_secs(34),
    );
    drop(refused);
    drop(stalled);
    assert_still_serving(
        &mut t,
        port,
        "after refused connections timed out behind stalled ones",
    );
    assert!(t.stop().success());
}

/// vendor/patches/0008: a hundred connections the target refused with a
/// C2HTermReq stay open and keep sending until SPDK's 30 s qpair timeout
/// closes them. With only 0006 and 0007 applied, 20.07 stopped serving new
/// connections after this ("Could not add sock to sock_group: Bad file
/// descriptor": removals written past the 32-entry removed_socks array, over
/// the socket group's epoll fd). With 0014 (and 0015) in place this sequence
/// no longer reaches that write, so the test guards the whole set.
#[test]
fn refused_connections_that_keep_sending_until_the_timeout_do_not_crash_the_target() {
    use std::io::{Read, Write};
    let _shared = beside_others();
    let dir = shm_dir();
    let (mut t, port) = small_target(dir.path());
    let mut conns: Vec<std::net::TcpStream> = (0..100).map(|_| negotiated(port)).collect();
    // A capsule header with HLEN 255: refused with a C2HTermReq.
    for c in &mut conns {
        c.write_all(&[0x04, 0x00, 0xff, 0x00, 0x48, 0x00, 0x00, 0x00])
            .unwrap();
        let mut term = [0u8; 8];
        c.read_exact(&mut term).expect("C2HTermReq");
        assert_eq!(term[0], nvme_tcp::wire::C2H_TERM_REQ);
        c.set_nonblocking(true).unwrap();
    }
    // Keep them readable on the target's side past SPDK's 30 s timeout.
    keep_sending(
        &mut t,
        &mut conns,
        64,
        Duration::from_millis(100),
        Duration::from_secs(36),
    );
    drop(conns);
    assert_still_serving(&mut t, port, "after 100 refused connections timed out");
    assert!(t.stop().success());
}

/// A Fabrics Connect of queue `qid` (to controller `cntlid`, 0xFFFF: new)
/// on a new connection, without keep-alive; returns it and the status and
/// controller id of the answer.
fn connect_queue(port: u16, qid: u16, cntlid: u16) -> (std::net::TcpStream, u16, u16) {
    connect_as(port, FUZZ_NQN, FUZZ_HOST, qid, cntlid)
}

/// vendor/patches/0009: a controller whose admin queue closed while an I/O
/// queue stays (no keep-alive) kept a pointer to the freed admin queue; an
/// I/O Connect naming it, or a namespace change, went through that pointer.
#[test]
fn a_controller_whose_admin_queue_is_gone_refuses_io_connects() {
    let _shared = beside_others();
    let dir = shm_dir();
    let (mut t, port) = small_target(dir.path());
    for round in 0..5 {
        let (admin, cntlid) = enabled_controller(port, FUZZ_NQN, FUZZ_HOST);
        let (_io1, status, _) = connect_queue(port, 1, cntlid);
        assert_eq!(status, 0, "first I/O Connect");
        drop(admin);
        std::thread::sleep(Duration::from_millis(300));
        let (_io2, status, _) = connect_queue(port, 2, cntlid);
        assert_ne!(status, 0, "round {round}: an I/O Connect to controller {cntlid} without its admin queue was accepted");
        // A namespace change visits every controller of the subsystem.
        let bdev = format!("extra{round}");
        add_pmem_bdev(&t, &dir.path().join(format!("{bdev}.pool")), &bdev);
        t.rpc_ok(&["nvmf_subsystem_add_ns", FUZZ_NQN, &bdev]);
    }
    assert_still_serving(
        &mut t,
        port,
        "after I/O Connects to controllers without admin queues",
    );
    assert!(t.stop().success());
}

/// vendor/patches/0019: two Fabrics Connects on one queue, sent back to back
/// before the first completed. In 20.07 the second, failing on the
/// controller's thread, detached the queue the first had attached, so no
/// queue owned the controller any more; at shutdown SPDK destroyed it through
/// its poll group's thread, already freed (heap-use-after-free under ASan).
/// Now the second is refused (Command Sequence Error) and the target stops
/// cleanly.
#[test]
fn a_second_connect_on_a_queue_before_the_first_completes_is_refused() {
    use nvme_tcp::wire;
    use std::io::{Read, Write};
    let _shared = beside_others();
    let dir = shm_dir();
    let (mut t, port) = small_target(dir.path());
    for round in 0..3 {
        let (admin, cntlid) = enabled_controller(port, FUZZ_NQN, FUZZ_HOST);
        let mut io = negotiated(port);
        let mut both = Vec::new();
        for cid in [1, 2] {
            let (sqe, data) = wire::connect(cid, 1, 127, 0, cntlid, FUZZ_NQN, FUZZ_HOST);
            both.extend(wire::capsule(&sqe.0, data, Default::default(), 0).encode());
        }
        io.write_all(&both).unwrap();
        let mut statuses = std::collections::HashMap::new();
        for _ in 0..2 {
            let mut rsp = [0u8; 24];
            io.read_exact(&mut rsp).expect("a Connect response");
            let cid = u16::from_le_bytes([rsp[20], rsp[21]]);
            statuses.insert(cid, u16::from_le_bytes([rsp[22], rsp[23]]) >> 1);
        }
        assert_eq!(statuses.get(&1), Some(&0), "round {round}: {statuses:?}");
        assert_eq!(
            statuses.get(&2),
            Some(&0x000C),
            "round {round}: the second Connect was not refused as out of sequence: {statuses:?}"
        );
        drop(io);
        drop(admin);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_still_serving(&mut t, port, "after Connects sent back to back");
    assert!(t.stop().success(), "{}", t.log_text());
}

/// vendor/patches/0032: commands sent right behind the admin queue's
/// Connect, before its response. 20.07 points the queue at its new
/// controller at once but gives the controller its admin queue only two
/// thread messages later, so a Property Set enabled it and an Identify
/// read `ctrlr->admin_qpair->transport` through NULL: the target died
/// (SIGSEGV; under UBSan "member access within null pointer"; found by
/// the fuzzer in CI). Now a command on a queue whose Connect has not
/// completed is refused as out of sequence, and the target keeps serving.
#[test]
fn commands_sent_before_their_connect_completes_are_refused_not_a_crash() {
    use nvme_tcp::wire;
    use std::io::{Read, Write};
    let _shared = beside_others();
    let dir = shm_dir();
    let (mut t, port) = small_target(dir.path());
    let no_digests = wire::Digests::default();
    for round in 0..3 {
        let mut s = negotiated(port);
        let (connect, data) = wire::connect(1, 0, 31, 0, 0xFFFF, FUZZ_NQN, FUZZ_HOST);
        let mut all = wire::capsule(&connect.0, data, no_digests, 0).encode();
        for sqe in [
            wire::property_set(2, wire::CC_OFFSET, wire::CC_ENABLE),
            wire::identify(3, 1, 0),
            wire::identify(4, 0, 1),
        ] {
            all.extend(wire::capsule(&sqe.0, vec![], no_digests, 0).encode());
        }
        // One write: the target reads all four in one socket callback,
        // before the Connect's messages to the subsystem's thread run.
        s.write_all(&all).unwrap();
        let mut statuses = std::collections::BTreeMap::new();
        let mut buf = Vec::new();
        while statuses.len() < 4 {
            while let Some(p) = wire::take_pdu(&mut buf).unwrap() {
                if p.ty == wire::CAPSULE_RESP {
                    let (cid, status) = p.cqe();
                    statuses.insert(cid, status);
                }
            }
            let mut chunk = [0u8; 8192];
            match s.read(&mut chunk) {
                Ok(0) | Err(_) if statuses.len() < 4 => {
                    std::thread::sleep(Duration::from_millis(500));
                    let state = match t.child.as_mut().unwrap().try_wait().unwrap() {
                        Some(status) => format!("the target died ({status})"),
                        None => "the target is alive".to_string(),
                    };
                    panic!(
                        "round {round}: the connection ended after {statuses:?}; {state}; its log:\n{}",
                        t.log_excerpt(40)
                    );
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        }
        assert_eq!(
            statuses.get(&1),
            Some(&0),
            "round {round}: Connect: {statuses:?}"
        );
        for cid in [2, 3, 4] {
            let status = statuses[&cid];
            assert!(
                status == 0 || status == 0x000C,
                "round {round}: command {cid}: status {status:#x}, neither done nor out of sequence"
            );
        }
        eprintln!("round {round}: {statuses:?}");
    }
    assert_still_serving(&mut t, port, "after commands sent behind their Connect");
    assert!(t.stop().success(), "{}", t.log_text());
}

/// vendor/patches/0033: a Get Log Page of the discovery log with an offset
/// at or past the log's end. 20.07 copied `log size - offset` bytes, which
/// wraps, so the host got the heap after the log (ASan: heap-buffer-overflow
/// in nvmf_get_discovery_log_page). Any host may ask the discovery service.
/// Now such an offset is refused with Invalid Field, as upstream 4201dfaff3
/// does, and an offset inside the log still reads it.
#[test]
fn a_discovery_log_read_past_its_end_is_refused() {
    use nvme_tcp::wire;
    const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";
    let _shared = beside_others();
    let dir = shm_dir();
    let (mut t, port) = small_target(dir.path());
    let (mut admin, _) = enabled_controller(port, DISCOVERY_NQN, FUZZ_HOST);
    // Get Log Page, LID 0x70 (discovery), 4 KiB from `offset`.
    let get_log = |cid: u16, offset: u64| {
        wire::Sqe::new(wire::OPC_GET_LOG_PAGE, cid)
            .sgl(0, 4096, wire::SGL_TRANSPORT)
            .cdw(10, 0x70 | ((4096 / 4 - 1) << 16))
            .cdw(12, offset as u32)
            .cdw(13, (offset >> 32) as u32)
    };
    let mut read_log = |cid: u16, offset: u64| command_reading(&mut admin, get_log(cid, offset));
    let (status, log) = read_log(10, 0);
    assert_eq!(status, 0, "the discovery log from its start");
    // The header's record count (numrec, bytes 8..16): one record a KiB.
    let numrec = u64::from_le_bytes(log[8..16].try_into().unwrap());
    let size = 1024 * (1 + numrec);
    for offset in [size, size + 4096, 1 << 40] {
        let (status, data) = read_log(11, offset);
        assert_eq!(
            status,
            0x0002,
            "offset {offset} of a {size}-byte log: not refused as an invalid field ({} bytes came)",
            data.len()
        );
    }
    drop(admin);
    assert_still_serving(&mut t, port, "after discovery log reads past its end");
    assert!(t.stop().success(), "{}", t.log_text());
}

/// vendor/patches/0020: with header digests on, the header of a capsule
/// was read up to its PDO, which the host sends: a PDO of 255 (or one inside
/// the header, wrapping the padding) made that read overrun the PDU's header
/// buffer into the fields after it. Now such a PDU gets a C2HTermReq naming
/// the PDO field, and the target keeps serving.
#[test]
fn a_capsule_whose_data_offset_overruns_the_header_buffer_is_refused() {
    use nvme_tcp::wire;
    use std::io::{Read, Write};
    let _shared = beside_others();
    let dir = shm_dir();
    let (mut t, port) = small_target(dir.path());
    let digests = wire::Digests {
        header: true,
        data: false,
    };
    for pdo in [255u8, 0, 60] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&wire::icreq(0, 0, digests, 0).encode())
            .unwrap();
        let mut icresp = [0u8; 128];
        s.read_exact(&mut icresp).expect("ICResp");
        let mut pdu = wire::capsule(
            &wire::Sqe::new(wire::OPC_FLUSH, 1).0,
            vec![0xab; 512],
            digests,
            0,
        );
        pdu.pdo = pdo;
        s.write_all(&pdu.encode()).unwrap();
        let mut term = [0u8; 24];
        s.read_exact(&mut term)
            .unwrap_or_else(|e| panic!("PDO {pdo}: no answer ({e}):\n{}", t.log_text()));
        // 20.07 never fills in the FES (always 0); the FEI names the byte.
        let fei = u32::from_le_bytes(term[10..14].try_into().unwrap());
        assert_eq!(
            (term[0], fei),
            (wire::C2H_TERM_REQ, 3),
            "PDO {pdo}: expected a C2HTermReq pointing at byte 3 (the PDO): {term:02x?}"
        );
    }
    assert_still_serving(&mut t, port, "after PDUs with bad data offsets");
    assert!(t.stop().success(), "{}", t.log_text());
}

/// The source address of the abuse below (SPDK's identify, the new host,
/// connects from 127.0.0.1): one address may hold only 128 of the slots
/// for connections waiting for a Fabrics Connect (vendor/patches/0022).
const ABUSER: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 3);

/// One round of abuse from `ABUSER`, all at once: half-open connections,
/// connections that stop after ICReq, and a connect/disconnect storm; a new
/// host is served meanwhile. Returns the footprint at the peak.
fn abuse_round(pid: u32, port: u16) -> Footprint {
    use std::io::Write;
    let mut held: Vec<std::net::TcpStream> = Vec::new();
    for i in 0..600 {
        let mut c = loopback::connect_from(ABUSER, port).expect("connect");
        if i % 2 == 1 {
            c.write_all(&nvme_tcp::wire::icreq(0, 0, Default::default(), 0).encode())
                .unwrap();
        }
        held.push(c);
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..3000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                if let Ok(mut c) = loopback::connect_from(ABUSER, port) {
                    if i % 2 == 0 {
                        let _ = c.write_all(
                            &nvme_tcp::wire::icreq(0, 0, Default::default(), 0).encode(),
                        );
                    }
                }
            }
        });
        let id = identify(FUZZ_NQN, port);
        assert_eq!(
            identify_field(&id, "Serial Number"),
            "SPDK-FZ0",
            "a host while the abuse goes on"
        );
        let peak = footprint(pid);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        peak
    })
}

/// Waits (up to SPDK's 30 s qpair timeout and a margin) for the descriptors
/// to come back to `fds` and returns the footprint then.
fn settled(pid: u32, fds: usize) -> Footprint {
    fds_settled(
        pid,
        fds,
        Duration::from_secs(40),
        Duration::from_millis(500),
    );
    std::thread::sleep(Duration::from_secs(1));
    footprint(pid)
}

/// 300 half-open connections, 300 that stop after ICReq and a storm of 3000
/// connect/disconnects at once, twice: a new host is served meanwhile; after
/// each round the descriptors come back to the baseline, and memory after the
/// second round is no higher than after the first (DPDK keeps the hugepages
/// its heap grew to; a leak would grow again).
#[test]
fn abusive_connections_do_not_exhaust_the_target_and_their_resources_come_back() {
    let _shared = beside_others();
    let dir = shm_dir();
    let (mut t, port) = small_target(dir.path());
    let pid = t.child.as_ref().unwrap().id();
    identify(FUZZ_NQN, port);
    std::thread::sleep(Duration::from_millis(500));
    let base = footprint(pid);
    let peak1 = abuse_round(pid, port);
    let after1 = settled(pid, base.fds);
    let peak2 = abuse_round(pid, port);
    let after2 = settled(pid, base.fds);
    eprintln!("abuse footprints: base {base:?}\n  round 1 peak {peak1:?}\n  after {after1:?}\n  round 2 peak {peak2:?}\n  after {after2:?}");
    for after in [after1, after2] {
        assert!(
            after.fds <= base.fds,
            "descriptors did not come back: {base:?} -> {after:?}"
        );
    }
    // Under ASan (scripts/test.sh --asan) resident memory holds its
    // quarantine of freed blocks, which grows by design: only the hugepages
    // (DPDK's heap) are compared then.
    let sanitized = std::env::var_os("SPDK_PMEM_SANITIZED").is_some();
    let mem = |f: Footprint| if sanitized { 0 } else { f.rss_kib } + f.huge_kib;
    assert!(
        mem(after2) <= mem(after1) + 8 * 1024,
        "memory grew again in a second round: {after1:?} -> {after2:?}"
    );
    assert_still_serving(&mut t, port, "after the abuse");
    assert!(t.stop().success());
}

/// vendor/patches/0014: 3,000 connections that never send a byte. In 20.07
/// each held about 670 KiB of hugepages from accept on and none ever timed
/// out: about 2,400 exhausted the 2 GiB and no new host was served. Now at
/// most 1,024 wait for a Fabrics Connect at a time, each for at most 10 s.
/// They come from 24 loopback addresses, 125 each, so that the limit in all
/// is what holds them, not the 128 per address of 0022.
#[test]
fn a_flood_of_idle_connections_cannot_exhaust_the_hugepages() {
    let _shared = beside_others();
    loopback::raise_fd_limit();
    let dir = shm_dir();
    let (mut t, port) = small_target(dir.path());
    let pid = t.child.as_ref().unwrap().id();
    identify(FUZZ_NQN, port);
    let base = footprint(pid);
    let mut idle = Vec::new();
    for i in 0..3000 {
        let src = std::net::Ipv4Addr::new(127, 0, 1, (i % 24) as u8 + 1);
        match loopback::connect_from(src, port) {
            Ok(c) => idle.push(c),
            Err(e) => panic!("connect {} failed: {e}", idle.len()),
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let peak = footprint(pid);
    eprintln!("idle flood: base {base:?}, with 3000 idle connections {peak:?}");
    // 1,024 waiting connections at about 670 KiB each, and some slack.
    assert!(
        peak.huge_kib <= base.huge_kib + 1024 * 800,
        "3000 idle connections took {} MiB of hugepages",
        (peak.huge_kib - base.huge_kib) / 1024
    );
    // After the deadline the idle ones are gone on the target's side (the
    // client still holds its ends) and a new host is served. Looked for up
    // to 30 s: a target starved of CPU accepts, and so times out, late.
    let after = fds_settled(
        pid,
        base.fds,
        Duration::from_secs(30),
        Duration::from_millis(200),
    );
    assert!(
        after.fds <= base.fds,
        "idle connections still held: {base:?} -> {after:?}"
    );
    assert_still_serving(&mut t, port, "after a flood of idle connections");
    drop(idle);
    assert!(t.stop().success());
}

/// vendor/patches/0014: a host that sends a bad PDU header and resets the
/// connection at once. The C2HTermReq the target answers with cannot be
/// written, which disconnects and (with no controller yet) destroyed the
/// queue inside its own socket callback; 20.07 then went on using it.
#[test]
fn a_host_resetting_right_after_a_bad_header_does_not_crash_the_target() {
    use std::io::Write;
    let _shared = beside_others();
    let dir = shm_dir();
    let (mut t, port) = small_target(dir.path());
    for round in 0..300 {
        let died = |t: &mut Target| {
            t.child.as_mut().unwrap().try_wait().unwrap().map(|status| {
                format!(
                    "round {round}: the target died ({status}); its log ends:\n{}",
                    tail(&t.log_text(), 20)
                )
            })
        };
        let Ok(mut c) = std::panic::catch_unwind(|| negotiated(port)) else {
            std::thread::sleep(Duration::from_millis(200));
            panic!(
                "{}",
                died(&mut t).unwrap_or_else(|| format!("round {round}: ICReq/ICResp failed"))
            );
        };
        c.write_all(&[0x04, 0x00, 0xff, 0x00, 0x48, 0x00, 0x00, 0x00])
            .unwrap();
        // SO_LINGER 0: close() sends a reset instead of a FIN.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on a socket we own, with a valid linger struct.
        unsafe {
            use std::os::fd::AsRawFd;
            libc::setsockopt(
                c.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &linger as *const libc::linger as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        drop(c);
        if let Some(report) = died(&mut t) {
            panic!("{report}");
        }
    }
    assert_still_serving(&mut t, port, "after hosts reset right after a bad header");
    assert!(t.stop().success());
}

/// A block libpmemblk marks unreadable (`pmemblk_set_error`) reaches the host
/// as an NVMe error status, not as data; the blocks around it read fine.
#[test]
fn an_unreadable_pmem_block_reaches_the_host_as_an_error_status() {
    let _shared = beside_others();
    let dir = shm_dir();
    let path = dir.path().join("bad.pool");
    {
        let pool = spdk_pmem::pmem::Pool::create(&path, 4096, 32 << 20, 0o600).unwrap();
        pool.write(6, &[0x5a; 4096]).unwrap();
        pool.set_error(7).unwrap();
    }
    let port = test_port();
    let mut t = Target::start(&fuzz_target(), &[]);
    t.rpc_ok(&["bdev_pmem_create", "-n", "bad0", path.to_str().unwrap()]);
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    t.rpc_ok(&["nvmf_create_subsystem", FUZZ_NQN, "-a", "-s", "SPDK-FZ0"]);
    add_tcp_listener(&t, FUZZ_NQN, port);
    t.rpc_ok(&["nvmf_subsystem_add_ns", FUZZ_NQN, "bad0"]);

    let (admin, mut io) =
        nvme_tcp::host::io_queue(port, FUZZ_NQN, "nqn.2014-08.org.nvmexpress:uuid:1");
    let (status, data) = nvme_tcp::host::read_blocks(&mut io, 1, 6, 1, 4096);
    assert_eq!(status, 0, "block 6");
    assert_eq!(data, vec![0x5a; 4096], "block 6 holds what was written");
    let (status, _) = nvme_tcp::host::read_blocks(&mut io, 2, 7, 1, 4096);
    assert_ne!(status, 0, "the unreadable block 7 read as success");
    eprintln!(
        "unreadable block: status {status:#x} (SCT {}, SC {:#x})",
        status >> 8,
        status & 0xff
    );
    let (status, _) = nvme_tcp::host::read_blocks(&mut io, 3, 6, 2, 4096);
    assert_ne!(status, 0, "a read covering block 7 read as success");
    drop(io);
    drop(admin);
    assert_still_serving(&mut t, port, "after reading an unreadable block");
    assert!(t.stop().success());
}

const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-000000000001";
const HOST_B: &str = "nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-4000-8000-000000000002";

/// Whether `hostnqn` may connect to `subnqn` (an admin Connect succeeds).
fn admitted(port: u16, subnqn: &str, hostnqn: &str) -> bool {
    connect_as(port, subnqn, hostnqn, 0, 0xFFFF).1 == 0
}

/// SPDK's own initiator (bdev_nvme in bdevperf) attaching as `hostnqn` and
/// verifying data: whether it ran.
fn bdev_nvme_as(dir: &Path, port: u16, subnqn: &str, hostnqn: &str) -> bool {
    let config = serde_json::json!({"subsystems": [{"subsystem": "bdev", "config": [{
        "method": "bdev_nvme_attach_controller",
        "params": {"name": "Nvme0", "trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1",
                   "trsvcid": port.to_string(), "subnqn": subnqn, "hostnqn": hostnqn}}]}]});
    let path = dir.join("initiator-host.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let out = Command::new(spdk_tool("test/bdev/bdevperf/bdevperf"))
        .args(["--json", path.to_str().unwrap()])
        .args([
            "-q", "8", "-o", "4096", "-w", "verify", "-t", "1", "-m", "0x2",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = output_text(&out);
    if out.status.success() {
        check_bdevperf(out.status, &text);
    }
    out.status.success()
}

/// A subsystem without allow-any-host admits only the host NQNs on its list,
/// for SPDK's own initiator and a raw Connect alike; removing a host, and
/// switching allow-any-host on and off, take effect for new connections; the
/// 2018 construct_nvmf_subsystem's `hosts` list is enforced the same way.
#[test]
fn only_listed_hosts_are_admitted() {
    let _shared = beside_others();
    let dir = shm_dir();
    let port = test_port();
    let mut t = Target::start(&fuzz_target(), &[]);
    let nqn = "nqn.2016-06.io.spdk:private";
    let pool = dir.path().join("private.pool");
    add_pmem_bdev(&t, &pool, "private0");
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    t.rpc_ok(&["nvmf_create_subsystem", nqn, "-s", "SPDK-PRIV"]);
    add_tcp_listener(&t, nqn, port);
    t.rpc_ok(&["nvmf_subsystem_add_ns", nqn, "private0"]);
    t.rpc_ok(&["nvmf_subsystem_add_host", nqn, HOST_A]);

    assert!(admitted(port, nqn, HOST_A), "a listed host was refused");
    assert!(
        !admitted(port, nqn, HOST_B),
        "an unlisted host was admitted"
    );
    assert!(
        bdev_nvme_as(dir.path(), port, nqn, HOST_A),
        "bdev_nvme as a listed host failed"
    );
    // Refused by the target's host check, not failing for another reason.
    let refusals = |t: &Target| t.log_text().matches("does not allow host").count();
    let before = refusals(&t);
    assert!(
        !bdev_nvme_as(dir.path(), port, nqn, HOST_B),
        "bdev_nvme as an unlisted host ran"
    );
    assert!(
        refusals(&t) > before,
        "bdev_nvme failed, but not at the host check:\n{}",
        t.log_text()
    );

    t.rpc_ok(&["nvmf_subsystem_remove_host", nqn, HOST_A]);
    assert!(!admitted(port, nqn, HOST_A), "a removed host was admitted");
    t.rpc_ok(&["nvmf_subsystem_allow_any_host", "-e", nqn]);
    assert!(
        admitted(port, nqn, HOST_B),
        "allow-any-host did not admit a host"
    );
    t.rpc_ok(&["nvmf_subsystem_allow_any_host", "-d", nqn]);
    assert!(
        !admitted(port, nqn, HOST_B),
        "allow-any-host -d still admitted a host"
    );

    // The article's 2018 method, with a hosts list.
    let legacy = "nqn.2016-06.io.spdk:legacy";
    let pool = dir.path().join("legacy.pool");
    add_pmem_bdev(&t, &pool, "legacy0");
    if fuzz_target() == our_nvmf_tgt() {
        t.jsonrpc_ok(
            "construct_nvmf_subsystem",
            Some(serde_json::json!({
                "nqn": legacy,
                "listen_addresses": [{"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": port.to_string(), "adrfam": "IPv4"}],
                "hosts": [HOST_A], "allow_any_host": false, "serial_number": "SPDK0002",
                "namespaces": [{"bdev_name": "legacy0", "nsid": 1}], "max_namespaces": 0
            })),
        );
        assert!(
            admitted(port, legacy, HOST_A),
            "construct_nvmf_subsystem: a listed host was refused"
        );
        assert!(
            !admitted(port, legacy, HOST_B),
            "construct_nvmf_subsystem: an unlisted host was admitted"
        );
    }
    assert!(t.stop().success());
}

/// vendor/patches/0016: the RPC socket, which controls the whole target, is
/// connectable by its owner only, under the default umask and a permissive
/// one; another local user (nobody) is refused.
#[test]
fn the_rpc_socket_is_for_its_owner_only() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let _shared = beside_others();
    for umask in [0o022, 0o002, 0o000] {
        let mut t = Target::start_with_umask(&fuzz_target(), &[], umask);
        let sock = t.sock.clone();
        // Let everyone enter the socket's directory: only its mode decides.
        std::fs::set_permissions(
            sock.parent().unwrap(),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let meta = std::fs::metadata(&sock).unwrap();
        // connect(2) on a Unix socket needs write permission on it.
        assert_eq!(
            meta.mode() & 0o022,
            0,
            "umask {umask:03o}: group or others may write the socket (mode {:o})",
            meta.mode() & 0o7777
        );
        // SAFETY: geteuid has no preconditions.
        assert_eq!(meta.uid(), unsafe { libc::geteuid() });
        // SAFETY: as above.
        if unsafe { libc::geteuid() } == 0 {
            let other = Command::new("python3")
                .args(["-c", "import os, socket, sys\nos.setgid(65534); os.setuid(65534)\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect(sys.argv[1]); print('connected')\nexcept PermissionError:\n    print('refused')"])
                .arg(&sock)
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&other.stdout).trim(),
                "refused",
                "umask {umask:03o}: {}",
                output_text(&other)
            );
        }
        rpc_answers(&t.sock, Duration::from_secs(10)).unwrap();
        assert!(t.stop().success());
    }
}
