//! Junk connections cannot lock legitimate hosts out (vendor/patches/0021,
//! 0022):
//! - a connection the target refused with a C2HTermReq is closed by the
//!   target once the PDU is written, so it gives its slot among those
//!   waiting for a Fabrics Connect back at once, even while the client keeps
//!   its end open (20.07 kept it for 30 s, or until the 10 s deadline);
//! - a flood of junk connections from one loopback address, at over 1,000
//!   a second for 10 s, never keeps SPDK's initiator from another address
//!   out: it connects, identifies and does verified I/O throughout; after
//!   the flood a host from the flooding address itself gets in within the
//!   connect deadline; the target's descriptors and hugepages come back.
//!
//! Loopback only; each test bounds its own connections and duration.

use crate::common;
use crate::nvme_tcp;

use common::loopback::{connect_from, raise_fd_limit};
use common::rng::Rng;
use common::*;
use nvme_tcp::{host, wire};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2016-06.io.spdk:flood";
const SERIAL: &str = "SPDK-FLOOD";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:c0ff1c75-0000-4000-8000-00000000f100";
/// The flood's source address; SPDK's initiator connects from 127.0.0.1.
const FLOODER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// The connect deadline nvmf_tgt gives by default (`--tcp-connect-timeout`).
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);

fn serve(dir: &Path) -> (Target, u16) {
    let t = Target::start(&our_nvmf_tgt(), &[]);
    let port = test_port();
    add_pmem_bdev(&t, &dir.join("flood.pool"), "flood0");
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    t.rpc_ok(&["nvmf_create_subsystem", NQN, "-a", "-s", SERIAL]);
    add_tcp_listener(&t, NQN, port);
    t.rpc_ok(&["nvmf_subsystem_add_ns", NQN, "flood0"]);
    (t, port)
}

/// Waits up to `within` for the target's descriptors to come down to `fds`.
fn settled(pid: u32, fds: usize, within: Duration) -> Footprint {
    fds_settled(pid, fds, within, Duration::from_millis(200))
}

/// `host::negotiate`, waiting at most 5 s for the ICResp.
fn negotiate(s: &mut TcpStream) -> Result<(), String> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    host::negotiate(s)
}

/// A host from `src`: a controller with one I/O queue, one block written
/// and read back. Err when the target refuses its connections.
fn host_from(src: Ipv4Addr, port: u16, fill: u8) -> Result<(), String> {
    let connect = |qid: u16, cntlid: u16| -> Result<(TcpStream, u16), String> {
        let mut s = connect_from(src, port).map_err(|e| format!("connect: {e}"))?;
        s.set_nodelay(true).ok();
        negotiate(&mut s)?;
        let (s, status, cntlid) = host::connect_on(s, NQN, HOSTNQN, qid, cntlid);
        (status == 0)
            .then_some((s, cntlid))
            .ok_or_else(|| format!("Connect of queue {qid}: status {status:#x}"))
    };
    let (mut admin, cntlid) = connect(0, 0xFFFF)?;
    let enable = wire::property_set(2, wire::CC_OFFSET, wire::CC_ENABLE);
    assert_eq!(host::command(&mut admin, enable, vec![]).0, 0, "CC.EN");
    let (mut io, _) = connect(1, cntlid)?;
    let sqe = wire::rw(wire::OPC_WRITE, 1, 1, 7, 1, 4096, wire::SGL_IN_CAPSULE);
    assert_eq!(host::command(&mut io, sqe, vec![fill; 4096]).0, 0, "write");
    let (status, data) = host::read_blocks(&mut io, 2, 7, 1, 4096);
    assert_eq!(status, 0, "read");
    assert!(data.iter().all(|&b| b == fill), "block 7 read back differs");
    Ok(())
}

/// What one junk connection sends, as the attacker of issue 18 did.
fn junk(rng: &mut Rng) -> Vec<u8> {
    match rng.below(4) {
        // Random bytes.
        0 => {
            let n = rng.range(1, 300) as usize;
            rng.bytes(n)
        }
        // An ICReq with random fields, and sometimes random lengths.
        1 => {
            let mut b = wire::icreq(
                rng.next_u64() as u16,
                rng.next_u64() as u8,
                Default::default(),
                rng.next_u64() as u32,
            )
            .encode();
            if rng.chance(50) {
                b[2] = rng.next_u64() as u8;
                b[3] = rng.next_u64() as u8;
                b[4..8].copy_from_slice(&(rng.interesting(32) as u32).to_le_bytes());
            }
            b
        }
        // A valid ICReq, then a PDU of random type, header length, data
        // offset and length, and some of its bytes.
        2 => {
            let mut b = wire::icreq(0, 0, Default::default(), 0).encode();
            let ty = *rng.pick(&[0x00, 0x02, 0x04, 0x05, 0x06, 0x07, 0x09, 0x0a, 0xff]);
            b.extend([ty, rng.next_u64() as u8, rng.next_u64() as u8]);
            b.push(rng.next_u64() as u8);
            b.extend((rng.interesting(32) as u32).to_le_bytes());
            let n = rng.range(0, 200) as usize;
            b.extend(rng.bytes(n));
            b
        }
        // Nothing at all.
        _ => Vec::new(),
    }
}

#[derive(Default)]
struct FloodCount {
    connected: AtomicU64,
    failed: AtomicU64,
}

/// Opens junk connections from `FLOODER` at `per_second` for `during`, on
/// four threads; half are closed at once, half kept open (the newest
/// 2,000, which the caller gets back, still open).
fn flood(port: u16, per_second: u64, during: Duration, seed: u64) -> (Vec<TcpStream>, FloodCount) {
    let count = FloodCount::default();
    let held = Mutex::new(std::collections::VecDeque::new());
    let start = Instant::now();
    const THREADS: u64 = 4;
    std::thread::scope(|s| {
        for thread in 0..THREADS {
            let (count, held) = (&count, &held);
            s.spawn(move || {
                let mut rng = Rng::new(Rng::derive(seed, thread));
                let mut sent = 0u64;
                while start.elapsed() < during {
                    // Paced: connection n of this thread at n / (rate / threads).
                    let due =
                        Duration::from_secs_f64(sent as f64 * THREADS as f64 / per_second as f64);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    sent += 1;
                    let Ok(mut c) = connect_from(FLOODER, port) else {
                        count.failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    count.connected.fetch_add(1, Ordering::Relaxed);
                    let bytes = junk(&mut rng);
                    let _ = c.write_all(&bytes);
                    if rng.chance(50) {
                        let mut held = held.lock().unwrap();
                        held.push_back(c);
                        if held.len() > 2000 {
                            held.pop_front();
                        }
                    }
                }
            });
        }
    });
    (held.into_inner().unwrap().into(), count)
}

/// SPDK's bdevperf, verify for 1 s from 127.0.0.1; `i` numbers the run.
/// Like identify it has no `-i`: its DPDK files are then named after its
/// pid. (Fixed ids 100 + i and 200 + i once met a target's own id, which
/// `unique_ids` draws from 100 up: identify then joined the target as a
/// DPDK secondary process and failed, "primary process is not started
/// yet".)
fn verified_io(dir: &Path, port: u16, i: u32) -> Result<(), String> {
    let config = nvme_bdev_config(dir, NQN, port);
    let out = crate::common::command(spdk_tool("test/bdev/bdevperf/bdevperf"))
        .args(["--json", config.to_str().unwrap()])
        .args([
            "-q", "8", "-o", "4096", "-w", "verify", "-t", "1", "-m", "0x2",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("running bdevperf");
    let text = output_text(&out);
    bdevperf_succeeded(out.status, &text).map_err(|e| format!("bdevperf run {i}: {e}"))
}

/// SPDK's identify from 127.0.0.1; the serial number must come back.
fn identified(port: u16, i: u32) -> Result<(), String> {
    let out = crate::common::command(spdk_tool("build/examples/identify"))
        .args(["-r", &trid(NQN, port), "-p", "1"])
        .stdin(Stdio::null())
        .output()
        .expect("running identify");
    let text = output_text(&out);
    if out.status.success() && text.contains(SERIAL) {
        Ok(())
    } else {
        Err(format!("identify run {i} ({}):\n{text}", out.status))
    }
}

/// Vendor patch 0021: 1,080 connections from nine addresses (below the
/// 128-per-address share, above the 1,024 slots in all), each refused with a
/// C2HTermReq, which the client reads and then keeps its end open. The
/// target closes them itself once the PDU is written: their slots come back
/// at once, and SPDK's identify is served right after. With 20.07's
/// handling they stayed until the 10 s deadline, holding every slot.
#[test]
fn connections_refused_with_a_c2h_term_req_give_their_slot_back_at_once() {
    let _one = alone();
    raise_fd_limit();
    let dir = shm_dir();
    let (t, port) = serve(dir.path());
    let pid = t.child.as_ref().unwrap().id();
    identified(port, 0).unwrap();
    let base = footprint(pid);
    // Sixteen at a time: all 1,080 within about a second, well inside the
    // 10 s deadline that would otherwise free their slots.
    let began = Instant::now();
    let refused: Vec<TcpStream> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..16u32)
            .map(|w| {
                s.spawn(move || {
                    (w..1080)
                        .step_by(16)
                        .map(|i| {
                            let src = Ipv4Addr::new(127, 0, 2, (i % 9) as u8 + 1);
                            let mut c = connect_from(src, port).expect("connect");
                            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                            // An ICReq with HLEN 255: refused at its header.
                            c.write_all(&[0x00, 0x00, 0xff, 0x00, 0x80, 0x00, 0x00, 0x00])
                                .unwrap();
                            let mut term = [0u8; 8];
                            c.read_exact(&mut term)
                                .unwrap_or_else(|e| panic!("connection {i}: no C2HTermReq: {e}"));
                            assert_eq!(term[0], wire::C2H_TERM_REQ, "connection {i}");
                            c
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let sent_in = began.elapsed();
    // The target's side of each is closed: its descriptors come back well
    // before the 10 s deadline, while every client end is still open.
    let after = settled(pid, base.fds, Duration::from_secs(3));
    assert!(
        after.fds <= base.fds,
        "1,080 refused connections sent in {sent_in:?}: the target still holds descriptors \
         ({base:?} -> {after:?})"
    );
    let began = Instant::now();
    identified(port, 1).unwrap_or_else(|e| panic!("refused right after the junk: {e}"));
    eprintln!(
        "1,080 C2HTermReq'd connections in {sent_in:?}; descriptors back to {}; identify \
         served in {:?}",
        after.fds,
        began.elapsed()
    );
    drop(refused);
}

/// Issue 18's flood: junk connections from 127.0.0.3 at 1,500 a second for
/// 10 s (random bytes, ICReqs with random fields, a valid ICReq and a PDU of
/// random shape, or nothing; half closed at once, half kept open). Every
/// second SPDK's identify and bdevperf (verify) connect from 127.0.0.1 and
/// must be served, every time. After the flood, while the flooder still
/// holds its open connections, a host from 127.0.0.3 must get in within the
/// connect deadline: the silent connections holding that address's 128
/// slots are closed 10 s after they were accepted at the latest. Then the
/// target's descriptors and hugepages come back to where a short warm-up
/// flood left them (DPDK keeps the heap it grew to).
#[test]
fn a_flood_from_one_address_never_locks_out_a_host_from_another() {
    let _one = alone();
    raise_fd_limit();
    let dir = shm_dir();
    let (t, port) = serve(dir.path());
    let pid = t.child.as_ref().unwrap().id();
    let seed = env_u64("SPDK_PMEM_FLOOD_SEED", 0x18f1_00d5);

    // Warm-up: the heap grows to what waiting connections need.
    let (held, _) = flood(port, 1500, Duration::from_secs(1), seed ^ 1);
    drop(held);
    let base = settled(pid, 0, CONNECT_DEADLINE + Duration::from_secs(2));
    identified(port, 0).unwrap();
    let base = Footprint {
        fds: base.fds.max(footprint(pid).fds),
        ..base
    };

    let flooding = AtomicBool::new(true);
    let (served, longest) = (AtomicU64::new(0), Mutex::new(Duration::ZERO));
    let failures = Mutex::new(Vec::<String>::new());
    let began = Instant::now();
    let (held, count) = std::thread::scope(|s| {
        // The legitimate host: identify and verified I/O, each started
        // every second (or as soon as the previous run ended).
        for tool in 0..2u32 {
            let (flooding, served, longest, failures) = (&flooding, &served, &longest, &failures);
            let dir = dir.path();
            s.spawn(move || {
                let mut i = 0;
                while flooding.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let result = if tool == 0 {
                        identified(port, i + 1)
                    } else {
                        verified_io(dir, port, i)
                    };
                    let took = started.elapsed();
                    match result {
                        Ok(()) => {
                            served.fetch_add(1, Ordering::Relaxed);
                            let mut l = longest.lock().unwrap();
                            *l = (*l).max(took);
                        }
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                    i += 1;
                    std::thread::sleep(Duration::from_secs(1).saturating_sub(took));
                }
            });
        }
        let flooded = flood(port, 1500, Duration::from_secs(10), seed);
        flooding.store(false, Ordering::Relaxed);
        flooded
    });
    let flood_time = began.elapsed();
    let connected = count.connected.load(Ordering::Relaxed);
    let rate = connected as f64 / 10.0;
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "SPDK's initiator from 127.0.0.1 was refused {} time(s) during the flood; the first:\n{}",
        failures.len(),
        failures[0]
    );
    assert!(
        rate >= 1000.0,
        "the flood made only {connected} connections in 10 s ({} failed)",
        count.failed.load(Ordering::Relaxed)
    );
    let served = served.load(Ordering::Relaxed);
    assert!(
        served >= 8,
        "only {served} initiator runs in {flood_time:?}"
    );

    // From the flooding address, while its open connections are still held.
    let stopped = Instant::now();
    let mut attempts = 0;
    let waited = loop {
        attempts += 1;
        match host_from(FLOODER, port, attempts as u8) {
            Ok(()) => break stopped.elapsed(),
            Err(e) if stopped.elapsed() > CONNECT_DEADLINE + Duration::from_secs(3) => panic!(
                "a host from {FLOODER} still refused {:?} after the flood ({attempts} \
                 attempts): {e}",
                stopped.elapsed()
            ),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    drop(held);
    let after = settled(pid, base.fds, CONNECT_DEADLINE + Duration::from_secs(2));
    eprintln!(
        "flood: {connected} connections from {FLOODER} in 10 s ({rate:.0}/s, {} failed to \
         connect); {served} identify/bdevperf runs from 127.0.0.1, all served, the longest \
         {:?}; a host from {FLOODER} got in {waited:?} after the flood ({attempts} attempts); \
         target {base:?} -> {after:?}",
        count.failed.load(Ordering::Relaxed),
        longest.lock().unwrap()
    );
    assert!(
        after.fds <= base.fds,
        "descriptors did not come back: {base:?} -> {after:?}"
    );
    assert!(
        after.huge_kib <= base.huge_kib + 8 * 1024,
        "hugepages did not come back: {base:?} -> {after:?}"
    );
}

/// The limits are nvmf_tgt's flags: with 4 per address and a 2 s deadline,
/// a fifth silent connection from one address is closed at accept while
/// another address is served, and the four are closed after 2 s. Limits
/// that make no sense are refused at start, saying what to give.
#[test]
fn the_connect_limits_are_flags_and_nonsense_is_refused_at_start() {
    let _one = alone();
    let t = Target::start(
        &our_nvmf_tgt(),
        &[
            "--tcp-max-waiting-connects-per-address",
            "4",
            "--tcp-connect-timeout",
            "2",
        ],
    );
    let port = test_port();
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    t.rpc_ok(&["nvmf_create_subsystem", NQN, "-a", "-s", SERIAL]);
    add_tcp_listener(&t, NQN, port);
    let began = Instant::now();
    let mut silent: Vec<TcpStream> = (0..4)
        .map(|_| connect_from(FLOODER, port).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut fifth = connect_from(FLOODER, port).expect("connect");
    assert!(
        negotiate(&mut fifth).is_err(),
        "a fifth waiting connection from {FLOODER} was taken"
    );
    let mut other = connect_from(Ipv4Addr::new(127, 0, 0, 4), port).expect("connect");
    negotiate(&mut other).expect("another address is served");
    for c in &mut silent {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut byte = [0u8; 1];
        assert!(
            matches!(c.read(&mut byte), Ok(0) | Err(_)),
            "a silent connection got data"
        );
    }
    let closed_after = began.elapsed();
    assert!(
        closed_after >= Duration::from_millis(1900) && closed_after < Duration::from_secs(5),
        "the silent connections were closed after {closed_after:?}, not the 2 s given"
    );
    for (flags, says) in [
        (&["--tcp-max-waiting-connects", "64"][..], "give at most 64"),
        (&["--tcp-connect-timeout", "0"][..], "1..=3600"),
        (&["--tcp-max-waiting-connects-per-address", "0"][..], "1.."),
    ] {
        let mut t = Target::spawn(&our_nvmf_tgt(), flags);
        let status = t.wait_exit(Duration::from_secs(20));
        assert_eq!(status.code(), Some(2), "{flags:?}: {}", t.log_text());
        assert!(t.log_text().contains(says), "{flags:?}: {}", t.log_text());
    }
}
