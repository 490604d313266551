//! An NVMe/TCP protocol fuzzer. Each session is the host side of the
//! well-formed sequence (admin queue: ICReq → Connect → enable the controller
//! → Identify; I/O queue: ICReq → Connect → Write in-capsule → Write by R2T and
//! H2CData → Read back → Flush), with at most one mutation at one step: a
//! field of any PDU, random bytes, a bad digest, a truncated, duplicated,
//! dropped or reordered PDU, an early close, a slow sender, trailing garbage,
//! a random PDU, a command storm, or no protocol at all. Sessions without a
//! mutation are checked: every command must succeed and the read must return
//! what was written. Everything a session sends is recorded, so a failure
//! prints the seeds and the bytes of the sessions that led to it.
mod data;
mod mutate;
mod session;
mod steps;

use super::wire::{self, Digests, Pdu, RxPdu, Sqe};
use crate::common::rng::Rng;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where the target listens and what the sessions use there.
#[derive(Clone, Debug)]
pub struct Setup {
    pub port: u16,
    /// Subsystem that mutated sessions connect to (its data is scratch).
    pub fuzz_nqn: String,
    /// Subsystem of the checked sessions; nothing else writes to it.
    pub check_nqn: String,
    pub block_size: u32,
    /// Blocks of the checked namespace each worker owns.
    pub blocks_per_worker: u64,
}

/// One write to one of the session's connections.
#[derive(Clone, Debug)]
pub struct Sent {
    pub conn: u8,
    pub bytes: Vec<u8>,
}

/// What a session sent, for a failure report and for `replay`.
#[derive(Clone, Debug, Default)]
pub struct Transcript {
    pub index: u64,
    pub seed: u64,
    pub what: String,
    pub sent: Vec<Sent>,
}

impl Transcript {
    /// The bytes as hex, one line per write.
    pub fn dump(&self) -> String {
        let mut s = format!(
            "session {} (seed {:#x}): {}\n",
            self.index, self.seed, self.what
        );
        for w in &self.sent {
            s.push_str(&format!("  conn {} {} bytes: ", w.conn, w.bytes.len()));
            for b in &w.bytes {
                s.push_str(&format!("{b:02x}"));
            }
            s.push('\n');
        }
        s
    }
}

/// Counters of a run.
#[derive(Debug, Default)]
pub struct Stats {
    pub sessions: AtomicU64,
    pub connections: AtomicU64,
    pub pdus: AtomicU64,
    pub bytes: AtomicU64,
    pub checked: AtomicU64,
}

impl Stats {
    pub fn summary(&self) -> String {
        format!(
            "{} sessions ({} checked end to end), {} connections, {} PDUs, {} bytes",
            self.sessions.load(Ordering::Relaxed),
            self.checked.load(Ordering::Relaxed),
            self.connections.load(Ordering::Relaxed),
            self.pdus.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed)
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    IcReq,
    Connect,
    EnableController,
    ReadStatus,
    IdentifyController,
    IdentifyNamespace,
    WriteInCapsule,
    WriteByR2t,
    ReadBack,
    Flush,
}

/// The well-formed sequence: admin connection (0), then I/O connection (1).
const PLAN: [(u8, Step); 12] = [
    (0, Step::IcReq),
    (0, Step::Connect),
    (0, Step::EnableController),
    (0, Step::ReadStatus),
    (0, Step::IdentifyController),
    (0, Step::IdentifyNamespace),
    (1, Step::IcReq),
    (1, Step::Connect),
    (1, Step::WriteInCapsule),
    (1, Step::WriteByR2t),
    (1, Step::ReadBack),
    (1, Step::Flush),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mutation {
    /// One header or SQE field set to a boundary or random value.
    Field,
    /// A few random bytes of the encoded PDU changed.
    Bytes,
    /// The header or data digest wrong.
    Digest,
    /// A prefix of the PDU, then (half the time) the rest of the sequence.
    Truncate,
    Duplicate,
    Skip,
    /// This step's PDUs after the next step's.
    Swap,
    CloseBefore,
    /// From this step on, PDUs dribble out a few bytes at a time.
    Slow,
    /// Random bytes after the PDU.
    Garbage,
    /// A PDU of random type, lengths and body instead of this step's.
    RandomPdu,
    /// Far more capsules than the queue holds, without waiting.
    Storm,
    /// An H2CTermReq instead of this step.
    TermReq,
}

const MUTATIONS: [Mutation; 13] = [
    Mutation::Field,
    Mutation::Bytes,
    Mutation::Digest,
    Mutation::Truncate,
    Mutation::Duplicate,
    Mutation::Skip,
    Mutation::Swap,
    Mutation::CloseBefore,
    Mutation::Slow,
    Mutation::Garbage,
    Mutation::RandomPdu,
    Mutation::Storm,
    Mutation::TermReq,
];

/// How a session is made.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// The whole sequence, unmutated, checked.
    Checked,
    /// The sequence with `mutation` at step `at`.
    Mutated { at: usize, mutation: Mutation },
    /// Random bytes, no protocol.
    Junk,
    /// An ICReq with odd lengths and random fields, then maybe more.
    OddIcReq,
}

const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:5b4fd7a8-6d2e-4c41-9f3b-2a8c0e1d7f60";

fn why_failed(e: std::io::Error) -> String {
    format!("socket: {e}")
}

/// One TCP connection of a session, with what was read from it.
struct Conn {
    stream: TcpStream,
    rx: Vec<u8>,
    closed: bool,
    dg: Digests,
    cpda: u8,
}

enum Wait {
    Got(RxPdu),
    Closed,
    TimedOut,
    TermReq(u16),
    Nonsense(String),
}

struct Session<'a> {
    setup: &'a Setup,
    rng: Rng,
    worker: u64,
    stats: &'a Stats,
    transcript: Transcript,
    conns: Vec<Option<Conn>>,
    /// Once mutated, waits are short and failures expected.
    mutated: bool,
    slow: bool,
    cntlid: u16,
    nqn: String,
    written: Vec<u8>,
    lba: u64,
}

impl Session<'_> {
    /// Runs the plan with `kind`'s mutation. Err only for a checked session
    /// that did not get the answers a correct target gives.
    fn run(&mut self, kind: Kind) -> Result<(), String> {
        match kind {
            Kind::Junk => {
                self.mutated = true;
                let n = self.rng.below(4096) as usize;
                let b = self.rng.bytes(n);
                let _ = self.send_raw(0, b);
                let _ = self.wait(0, |_| false);
                return Ok(());
            }
            Kind::OddIcReq => {
                self.mutated = true;
                let mut pdu = wire::icreq(
                    self.rng.interesting(16) as u16,
                    self.rng.interesting(8) as u8,
                    Digests::default(),
                    self.rng.interesting(32) as u32,
                );
                pdu.psh[3] = self.rng.next_u64() as u8;
                pdu.plen = *self
                    .rng
                    .pick(&[0u32, 7, 8, 127, 128, 129, 1 << 31, u32::MAX]);
                pdu.hlen = if self.rng.chance(50) {
                    self.rng.next_u64() as u8
                } else {
                    128
                };
                let b = pdu.encode();
                let _ = self.send_raw(0, b);
                if self.rng.chance(50) {
                    let more = self.random_pdu();
                    let _ = self.send_raw(0, more);
                }
                let _ = self.wait(0, |_| false);
                return Ok(());
            }
            _ => {}
        }
        let (at, mutation) = match kind {
            Kind::Mutated { at, mutation } => (Some(at), Some(mutation)),
            _ => (None, None),
        };
        let bs = self.setup.block_size;
        let blocks = self
            .rng
            .range(2, (self.setup.blocks_per_worker - 1).min(32)) as u32;
        self.lba = self.worker * self.setup.blocks_per_worker;
        self.written = self.pattern(self.lba + 1, blocks);
        debug_assert_eq!(self.written.len() as u32, blocks * bs);
        let mut swapped: Option<(u8, Vec<u8>)> = None;
        let mut unanswered = 0;
        for (i, &(conn, step)) in PLAN.iter().enumerate() {
            let cid = i as u16 + 1;
            let here = at == Some(i);
            if here {
                self.mutated = true;
            }
            let m = if here { mutation } else { None };
            if m == Some(Mutation::CloseBefore) {
                self.close(0);
                self.close(1);
                return Ok(());
            }
            if m == Some(Mutation::Skip) {
                continue;
            }
            if m == Some(Mutation::Slow) {
                self.slow = true;
            }
            if m == Some(Mutation::TermReq) {
                let n = self.rng.below(160) as usize;
                let hdr = self.rng.bytes(n);
                let fes = self.rng.interesting(16) as u16;
                let fei = self.rng.interesting(32) as u32;
                let pdu = wire::h2c_term_req(fes, fei, hdr);
                let _ = self.send(conn, &pdu);
                let _ = self.wait(conn, |_| false);
                return Ok(());
            }
            if m == Some(Mutation::Storm) {
                let (dg, cpda) = self.dg(conn);
                let n = self.rng.range(129, 300);
                let mut b = Vec::new();
                for k in 0..n {
                    let sqe = wire::property_get(k as u16, wire::CSTS_OFFSET);
                    b.extend(wire::capsule(&sqe.0, vec![], dg, cpda).encode());
                }
                self.stats.pdus.fetch_add(n, Ordering::Relaxed);
                let _ = self.send_raw(conn, b);
                let _ = self.wait(conn, |_| false);
                continue;
            }
            let mut pdu = self.pdu_of(conn, step, cid);
            let bytes = match m {
                Some(Mutation::RandomPdu) => self.random_pdu(),
                Some(Mutation::Truncate) => {
                    let b = pdu.encode();
                    let n = self.rng.range(1, b.len() as u64 - 1) as usize;
                    b[..n].to_vec()
                }
                Some(Mutation::Garbage) => {
                    let mut b = pdu.encode();
                    let n = self.rng.range(1, 300) as usize;
                    b.extend(self.rng.bytes(n));
                    b
                }
                Some(m) => self.mutate(&mut pdu, m),
                None => pdu.encode(),
            };
            if m == Some(Mutation::Swap) {
                swapped = Some((conn, bytes));
                continue;
            }
            self.stats.pdus.fetch_add(1, Ordering::Relaxed);
            let sent = self.send_raw(conn, bytes.clone());
            if let Some((c, b)) = swapped.take() {
                let _ = self.send_raw(c, b);
            }
            if m == Some(Mutation::Duplicate) {
                let _ = self.send_raw(conn, bytes);
            }
            if m == Some(Mutation::Truncate) && self.rng.chance(50) {
                let _ = self.wait(conn, |_| false);
                self.close(0);
                self.close(1);
                return Ok(());
            }
            let result = sent.and_then(|_| self.finish_step(conn, step, cid, &pdu));
            match result {
                Ok(()) => unanswered = 0,
                Err(e) if !self.mutated => {
                    return Err(format!("step {i} ({step:?} on connection {conn}): {e}"))
                }
                Err(_) => {
                    // A mutated session goes on while the connection lives
                    // (the target may still answer later steps), up to two
                    // unanswered steps in a row.
                    unanswered += 1;
                    let closed = self.conns[conn as usize].as_ref().is_none_or(|c| c.closed);
                    if unanswered >= 2 || (closed && conn == 1) {
                        return Ok(());
                    }
                }
            }
        }
        if !self.mutated {
            self.stats.checked.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Runs session `index` of a run seeded `seed` and returns what it sent,
/// with Err for a checked session the target did not serve correctly.
pub fn session(
    setup: &Setup,
    seed: u64,
    index: u64,
    worker: u64,
    stats: &Stats,
) -> (Transcript, Result<(), String>) {
    let sseed = Rng::derive(seed, index);
    let mut rng = Rng::new(sseed);
    let kind = match rng.below(100) {
        0..=14 => Kind::Checked,
        15..=24 => Kind::Junk,
        25..=34 => Kind::OddIcReq,
        _ => Kind::Mutated {
            at: rng.below(PLAN.len() as u64) as usize,
            mutation: *rng.pick(&MUTATIONS),
        },
    };
    let nqn = if matches!(kind, Kind::Checked) {
        setup.check_nqn.clone()
    } else {
        setup.fuzz_nqn.clone()
    };
    let mut s = Session {
        setup,
        rng,
        worker,
        stats,
        transcript: Transcript {
            index,
            seed: sseed,
            what: format!("{kind:?}"),
            sent: Vec::new(),
        },
        conns: vec![None, None],
        mutated: false,
        slow: false,
        cntlid: 0xFFFF,
        nqn,
        written: Vec::new(),
        lba: 0,
    };
    let r = s.run(kind);
    s.close(1);
    s.close(0);
    stats.sessions.fetch_add(1, Ordering::Relaxed);
    (s.transcript, r)
}

/// A fuzzing run's bounds.
#[derive(Clone, Debug)]
pub struct Bounds {
    pub seed: u64,
    pub max_sessions: u64,
    pub seconds: u64,
    pub workers: u64,
}

/// Why a run stopped early.
#[derive(Debug)]
pub struct Failure {
    pub reason: String,
    /// The sessions in flight or just finished, most recent last.
    pub recent: Vec<Transcript>,
}

impl Failure {
    pub fn report(&self, seed: u64) -> String {
        let mut s = format!(
            "NVMe/TCP fuzzing failed (run seed {seed:#x}): {}\nlast sessions sent:\n",
            self.reason
        );
        for t in &self.recent {
            s.push_str(&t.dump());
        }
        s
    }
}

/// Runs sessions on `workers` threads until the bounds are reached, a
/// checked session fails, or `health` (called every 100 ms) reports the
/// target dead or wedged.
pub fn run(
    setup: &Setup,
    bounds: &Bounds,
    stats: &Stats,
    health: &(dyn Fn() -> Result<(), String> + Sync),
) -> Result<(), Failure> {
    let next = AtomicU64::new(0);
    let active = AtomicU64::new(bounds.workers);
    let stop = AtomicBool::new(false);
    let recent: Mutex<Vec<Transcript>> = Mutex::new(Vec::new());
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let deadline = Instant::now() + Duration::from_secs(bounds.seconds);
    std::thread::scope(|scope| {
        for w in 0..bounds.workers {
            let (next, stop, recent, failure, active) = (&next, &stop, &recent, &failure, &active);
            scope.spawn(move || {
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= bounds.max_sessions {
                        break;
                    }
                    let (t, r) = session(setup, bounds.seed, i, w, stats);
                    let mut rec = recent.lock().unwrap();
                    rec.push(t);
                    if rec.len() > 4 * bounds.workers as usize {
                        rec.remove(0);
                    }
                    if let Err(e) = r {
                        failure
                            .lock()
                            .unwrap()
                            .get_or_insert(format!("session {i}: a correct exchange failed: {e}"));
                        stop.store(true, Ordering::SeqCst);
                    }
                }
                active.fetch_sub(1, Ordering::SeqCst);
            });
        }
        let (stop_ref, failure_ref, active_ref) = (&stop, &failure, &active);
        scope.spawn(move || {
            while !stop_ref.load(Ordering::SeqCst) && active_ref.load(Ordering::SeqCst) > 0 {
                if let Err(e) = health() {
                    failure_ref.lock().unwrap().get_or_insert(e);
                    stop_ref.store(true, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    });
    // One last look: the target may have died on the final sessions.
    if failure.lock().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(300));
        if let Err(e) = health() {
            *failure.lock().unwrap() = Some(e);
        }
    }
    match failure.into_inner().unwrap() {
        None => Ok(()),
        Some(reason) => Err(Failure {
            reason,
            recent: recent.into_inner().unwrap(),
        }),
    }
}
