//! Malformed capsules, connects out of order and connections that stall or
//! reset: each refused, none a crash (the patches each test names).

use super::*;

/// vendor/patches/0007: a Connect capsule whose SGL says no data.
#[test]
fn a_connect_capsule_without_data_is_refused_not_a_crash() {
    let _turn = beside_others();
    use nvme_tcp::wire;
    use std::io::{Read, Write};
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
    let _turn = beside_others();
    use std::io::{Read, Write};
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
    let _turn = beside_others();
    use std::io::{Read, Write};
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
    let _turn = beside_others();
    use nvme_tcp::wire;
    use std::io::{Read, Write};
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
    let _turn = beside_others();
    use nvme_tcp::wire;
    use std::io::{Read, Write};
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
    let _turn = beside_others();
    use nvme_tcp::wire;
    const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";
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
    let _turn = beside_others();
    use nvme_tcp::wire;
    use std::io::{Read, Write};
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

/// vendor/patches/0014: a host that sends a bad PDU header and resets the
/// connection at once. The C2HTermReq the target answers with cannot be
/// written, which disconnects and (with no controller yet) destroyed the
/// queue inside its own socket callback; 20.07 then went on using it.
#[test]
fn a_host_resetting_right_after_a_bad_header_does_not_crash_the_target() {
    let _turn = beside_others();
    use std::io::Write;
    let dir = shm_dir();
    let (mut t, port) = small_target(dir.path());
    for round in 0..300 {
        let died = |t: &mut Target| {
            t.child.as_mut().unwrap().try_wait().unwrap().map(|status| {
                format!(
                    "round {round}: the target died ({status}); its log ends:\n{}",
                    t.log_excerpt(20)
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
