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

impl<'a> Session<'a> {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.setup.port))
    }

    fn wait_time(&self) -> Duration {
        if self.mutated {
            Duration::from_millis(40)
        } else {
            Duration::from_secs(10)
        }
    }

    fn conn(&mut self, index: u8) -> Result<&mut Conn, String> {
        let i = index as usize;
        if self.conns[i].is_none() {
            let stream = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(5))
                .map_err(|e| format!("connect to {}: {e}", self.addr()))?;
            stream.set_nodelay(true).ok();
            self.stats.connections.fetch_add(1, Ordering::Relaxed);
            self.conns[i] = Some(Conn {
                stream,
                rx: Vec::new(),
                closed: false,
                dg: Digests::default(),
                cpda: 0,
            });
        }
        Ok(self.conns[i].as_mut().unwrap())
    }

    /// Sends bytes on connection `index` (whole, or in small slow pieces).
    fn send_raw(&mut self, index: u8, bytes: Vec<u8>) -> Result<(), String> {
        let slow = self.slow;
        let mut pieces: Vec<(usize, u64)> = Vec::new();
        if slow {
            // A few dozen small pieces, then the rest at once: slow enough
            // to split every header, bounded in time.
            let mut off = 0;
            while off < bytes.len() {
                let n = if pieces.len() < 32 {
                    self.rng.range(1, 16) as usize
                } else {
                    bytes.len() - off
                };
                pieces.push((n.min(bytes.len() - off), self.rng.below(2)));
                off += n;
            }
        }
        self.stats
            .bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.transcript.sent.push(Sent {
            conn: index,
            bytes: bytes.clone(),
        });
        let conn = self.conn(index)?;
        if conn.closed {
            return Err("connection closed by the target".into());
        }
        let result = if slow {
            let mut off = 0;
            let mut r = Ok(());
            for (n, ms) in pieces {
                r = conn.stream.write_all(&bytes[off..off + n]);
                if r.is_err() {
                    break;
                }
                off += n;
                std::thread::sleep(Duration::from_millis(ms));
            }
            r
        } else {
            conn.stream.write_all(&bytes)
        };
        result.map_err(|e| {
            conn.closed = true;
            why_failed(e)
        })
    }

    fn send(&mut self, index: u8, pdu: &Pdu) -> Result<(), String> {
        self.stats.pdus.fetch_add(1, Ordering::Relaxed);
        self.send_raw(index, pdu.encode())
    }

    /// Reads until a PDU that `want` accepts arrives (others are dropped).
    fn wait(&mut self, index: u8, want: impl Fn(&RxPdu) -> bool) -> Wait {
        let deadline = Instant::now() + self.wait_time();
        let Ok(conn) = self.conn(index) else {
            return Wait::Closed;
        };
        loop {
            match wire::take_pdu(&mut conn.rx) {
                Err(e) => return Wait::Nonsense(e),
                Ok(Some(p)) if p.ty == wire::C2H_TERM_REQ => return Wait::TermReq(p.u16_at(8)),
                Ok(Some(p)) if want(&p) => return Wait::Got(p),
                Ok(Some(_)) => continue,
                Ok(None) => {}
            }
            if conn.closed {
                return Wait::Closed;
            }
            let now = Instant::now();
            if now >= deadline {
                return Wait::TimedOut;
            }
            conn.stream.set_read_timeout(Some(deadline - now)).ok();
            let mut buf = [0u8; 65536];
            match conn.stream.read(&mut buf) {
                Ok(0) => conn.closed = true,
                Ok(n) => conn.rx.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Wait::TimedOut
                }
                Err(_) => conn.closed = true,
            }
        }
    }

    fn expect(
        &mut self,
        index: u8,
        what: &str,
        want: impl Fn(&RxPdu) -> bool,
    ) -> Result<RxPdu, String> {
        match self.wait(index, want) {
            Wait::Got(p) => Ok(p),
            Wait::Closed => Err(format!("{what}: the target closed the connection")),
            Wait::TimedOut => Err(format!("{what}: no answer within {:?}", self.wait_time())),
            Wait::TermReq(fes) => Err(format!("{what}: C2HTermReq, FES {fes:#x}")),
            Wait::Nonsense(e) => Err(format!("{what}: {e}")),
        }
    }

    /// Waits for command `cid`'s response; its status must be success.
    fn completion(&mut self, index: u8, cid: u16, what: &str) -> Result<RxPdu, String> {
        let rsp = self.expect(index, what, |p| {
            p.ty == wire::CAPSULE_RESP && p.cqe().0 == cid
        })?;
        let status = rsp.cqe().1;
        if status != 0 {
            return Err(format!(
                "{what}: status {status:#x} (SCT {}, SC {:#x})",
                status >> 8,
                status & 0xff
            ));
        }
        Ok(rsp)
    }

    fn dg(&self, index: u8) -> (Digests, u8) {
        match &self.conns[index as usize] {
            Some(c) => (c.dg, c.cpda),
            None => (Digests::default(), 0),
        }
    }

    /// The PDUs of one step of the plan (for steps that have exactly one
    /// PDU to send before waiting), already built for the connection.
    fn pdu_of(&mut self, conn: u8, step: Step, cid: u16) -> Pdu {
        let (dg, cpda) = self.dg(conn);
        let bs = self.setup.block_size;
        match step {
            Step::IcReq => {
                let want = Digests {
                    header: self.rng.chance(50),
                    data: self.rng.chance(50),
                };
                wire::icreq(0, 0, want, 0)
            }
            Step::Connect => {
                let (qid, cntlid) = if conn == 0 {
                    (0, 0xFFFF)
                } else {
                    (1, self.cntlid)
                };
                let (sqe, data) =
                    wire::connect(cid, qid, 31, 0, cntlid, &self.nqn.clone(), HOSTNQN);
                wire::capsule(&sqe.0, data, dg, cpda)
            }
            Step::EnableController => wire::capsule(
                &wire::property_set(cid, wire::CC_OFFSET, wire::CC_ENABLE).0,
                vec![],
                dg,
                cpda,
            ),
            Step::ReadStatus => wire::capsule(
                &wire::property_get(cid, wire::CSTS_OFFSET).0,
                vec![],
                dg,
                cpda,
            ),
            Step::IdentifyController => {
                wire::capsule(&wire::identify(cid, 1, 0).0, vec![], dg, cpda)
            }
            Step::IdentifyNamespace => {
                wire::capsule(&wire::identify(cid, 0, 1).0, vec![], dg, cpda)
            }
            Step::WriteInCapsule => {
                let data = self.pattern(self.lba, 1);
                let sqe = wire::rw(
                    wire::OPC_WRITE,
                    cid,
                    1,
                    self.lba,
                    1,
                    bs,
                    wire::SGL_IN_CAPSULE,
                );
                wire::capsule(&sqe.0, data, dg, cpda)
            }
            Step::WriteByR2t | Step::ReadBack => {
                let blocks = (self.written.len() as u32 / bs).max(1);
                let opc = if step == Step::ReadBack {
                    wire::OPC_READ
                } else {
                    wire::OPC_WRITE
                };
                let sqe = wire::rw(
                    opc,
                    cid,
                    1,
                    self.lba + 1,
                    blocks,
                    blocks * bs,
                    wire::SGL_TRANSPORT,
                );
                wire::capsule(&sqe.0, vec![], dg, cpda)
            }
            Step::Flush => {
                wire::capsule(&Sqe::new(wire::OPC_FLUSH, cid).nsid(1).0, vec![], dg, cpda)
            }
        }
    }

    /// Block contents unique to this session and LBA.
    fn pattern(&self, lba: u64, blocks: u32) -> Vec<u8> {
        let mut r = Rng::new(self.transcript.seed ^ lba.rotate_left(17));
        r.bytes((blocks * self.setup.block_size) as usize)
    }

    /// After sending a step's first PDU: the rest of its exchange.
    fn finish_step(&mut self, conn: u8, step: Step, cid: u16, sent: &Pdu) -> Result<(), String> {
        match step {
            Step::IcReq => {
                let resp = self.expect(conn, "ICReq", |p| p.ty == wire::ICRESP)?;
                let dgst = resp.raw.get(11).copied().unwrap_or(0);
                let c = self.conn(conn)?;
                c.cpda = resp.raw.get(10).copied().unwrap_or(0);
                c.dg = Digests {
                    header: dgst & 1 != 0,
                    data: dgst & 2 != 0,
                };
                let asked = sent.psh.get(3).copied().unwrap_or(0);
                if !self.mutated && dgst != asked {
                    return Err(format!("ICResp digests {dgst:#x}, asked for {asked:#x}"));
                }
                Ok(())
            }
            Step::Connect => {
                let rsp = self.completion(conn, cid, "Connect")?;
                if conn == 0 {
                    self.cntlid = rsp.u16_at(8);
                }
                Ok(())
            }
            Step::EnableController | Step::Flush => {
                let what = format!("{step:?}");
                let r = self.completion(conn, cid, &what);
                // SPDK 20.07's pmem bdev does not support FLUSH; its status
                // is an answer all the same.
                if step == Step::Flush {
                    return match r {
                        Err(e) if e.contains("status") => Ok(()),
                        other => other.map(|_| ()),
                    };
                }
                r.map(|_| ())
            }
            Step::ReadStatus => {
                let rsp = self.completion(conn, cid, "Property Get CSTS")?;
                if !self.mutated && rsp.u32_at(8) & 1 == 0 {
                    return Err("CSTS.RDY is 0 after CC.EN was set".into());
                }
                Ok(())
            }
            Step::IdentifyController | Step::IdentifyNamespace | Step::ReadBack => {
                let data = self.read_data(conn, cid, step)?;
                if step == Step::ReadBack && !self.mutated {
                    let mut want = self.pattern(self.lba, 1);
                    want.extend_from_slice(&self.written);
                    let got_first = &data[..];
                    // The read covers the R2T-written blocks; the in-capsule
                    // block is compared by a second read of it.
                    if got_first != &want[self.setup.block_size as usize..] {
                        let at = got_first
                            .iter()
                            .zip(&want[self.setup.block_size as usize..])
                            .position(|(a, b)| a != b);
                        return Err(format!("read back differs from what was written (first difference at byte {at:?})"));
                    }
                    self.check_block(conn, want[..self.setup.block_size as usize].to_vec())?;
                }
                // Identify Controller: the serial number is bytes 4..24.
                if step == Step::IdentifyController
                    && !self.mutated
                    && !data.get(4..24).is_some_and(|sn| sn.starts_with(b"SPDK-FZ"))
                {
                    return Err(
                        "Identify Controller data lacks the subsystem's serial number".into(),
                    );
                }
                Ok(())
            }
            Step::WriteInCapsule => self.completion(conn, cid, "Write (in-capsule)").map(|_| ()),
            Step::WriteByR2t => self.h2c_transfer(conn, cid),
        }
    }

    /// Reads the in-capsule block back (cid 0x7000) and compares it.
    fn check_block(&mut self, conn: u8, want: Vec<u8>) -> Result<(), String> {
        let (dg, cpda) = self.dg(conn);
        let bs = self.setup.block_size;
        let sqe = wire::rw(
            wire::OPC_READ,
            0x7000,
            1,
            self.lba,
            1,
            bs,
            wire::SGL_TRANSPORT,
        );
        self.send(conn, &wire::capsule(&sqe.0, vec![], dg, cpda))?;
        let data = self.read_data(conn, 0x7000, Step::ReadBack)?;
        if data != want {
            return Err("the in-capsule block read back differs from what was written".into());
        }
        Ok(())
    }

    /// Collects the C2HData of command `cid` (and its response, unless the
    /// last PDU carried SUCCESS).
    fn read_data(&mut self, conn: u8, cid: u16, step: Step) -> Result<Vec<u8>, String> {
        let (dg, _) = self.dg(conn);
        let mut data = Vec::new();
        loop {
            let what = format!("{step:?} data");
            let p = self.expect(conn, &what, |p| {
                (p.ty == wire::C2H_DATA && p.c2h().0 == cid)
                    || (p.ty == wire::CAPSULE_RESP && p.cqe().0 == cid)
            })?;
            if p.ty == wire::CAPSULE_RESP {
                let status = p.cqe().1;
                if status != 0 {
                    return Err(format!("{step:?}: status {status:#x}"));
                }
                return Ok(data);
            }
            let (_, datao, datal) = p.c2h();
            let chunk = p.data(dg);
            if !self.mutated && (datao as usize != data.len() || datal as usize != chunk.len()) {
                return Err(format!("{step:?}: C2HData at {datao} of {datal} bytes, expected offset {} ({} bytes came)", data.len(), chunk.len()));
            }
            data.extend_from_slice(chunk);
            if p.flags & wire::FLAG_LAST_PDU != 0 && p.flags & wire::FLAG_SUCCESS != 0 {
                return Ok(data);
            }
        }
    }

    /// Answers R2Ts for command `cid` with H2CData in random-sized pieces.
    fn h2c_transfer(&mut self, conn: u8, cid: u16) -> Result<(), String> {
        let total = self.written.len() as u32;
        let mut sent_to = 0u32;
        while sent_to < total {
            let r2t = self.expect(conn, "R2T", |p| p.ty == wire::R2T && p.r2t().0 == cid)?;
            let (_, ttag, r2to, r2tl) = r2t.r2t();
            if !self.mutated && (r2to != sent_to || r2tl == 0 || r2to + r2tl > total) {
                return Err(format!(
                    "R2T for offset {r2to} length {r2tl}, {sent_to} of {total} sent"
                ));
            }
            let end = r2to.saturating_add(r2tl).min(total);
            let mut off = r2to.min(end);
            while off < end {
                let n = (self.rng.range(1, 8) as u32 * 1024).min(end - off);
                let (dg, _) = self.dg(conn);
                let last = off + n == end;
                let pdu = wire::h2c_data(
                    cid,
                    ttag,
                    off,
                    self.written[off as usize..(off + n) as usize].to_vec(),
                    last,
                    dg,
                );
                self.send(conn, &pdu)?;
                off += n;
            }
            sent_to = end;
            if r2tl == 0 {
                break;
            }
        }
        self.completion(conn, cid, "Write (R2T)").map(|_| ())
    }

    fn close(&mut self, index: u8) {
        if let Some(c) = self.conns[index as usize].take() {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }

    /// Mutates `pdu` in place (field, bytes or digest kinds) and returns the
    /// bytes to send.
    fn mutate(&mut self, pdu: &mut Pdu, m: Mutation) -> Vec<u8> {
        match m {
            Mutation::Field => {
                self.mutate_field(pdu);
                if self.rng.chance(70) {
                    pdu.redigest();
                }
                pdu.encode()
            }
            Mutation::Bytes => {
                let mut b = pdu.encode();
                for _ in 0..self.rng.range(1, 4) {
                    let i = self.rng.below(b.len() as u64) as usize;
                    b[i] = self.rng.next_u64() as u8;
                }
                b
            }
            Mutation::Digest => {
                if pdu.hdgst.is_some() && (pdu.ddgst.is_none() || self.rng.chance(50)) {
                    pdu.hdgst = Some(self.rng.bytes(4).try_into().unwrap());
                } else if pdu.ddgst.is_some() {
                    pdu.ddgst = Some(self.rng.bytes(4).try_into().unwrap());
                } else {
                    // No digest negotiated: claim one in the flags.
                    pdu.flags |= *self.rng.pick(&[wire::FLAG_HDGSTF, wire::FLAG_DDGSTF]);
                }
                pdu.encode()
            }
            _ => pdu.encode(),
        }
    }

    /// Sets one field of the common header or of the PDU-specific header.
    fn mutate_field(&mut self, pdu: &mut Pdu) {
        if self.rng.chance(35) {
            match self.rng.below(5) {
                0 => pdu.ty = self.rng.interesting(8) as u8,
                1 => pdu.flags = self.rng.interesting(8) as u8,
                2 => pdu.hlen = self.rng.interesting(8) as u8,
                3 => pdu.pdo = self.rng.interesting(8) as u8,
                _ => pdu.plen = self.rng.interesting(32) as u32,
            }
            return;
        }
        // (offset in the PSH, width) of the fields each PDU type has.
        let fields: &[(usize, usize)] = match pdu.ty {
            wire::ICREQ => &[(0, 2), (2, 1), (3, 1), (4, 4)],
            wire::CAPSULE_CMD => &[
                (0, 1),
                (1, 1),
                (2, 2),
                (4, 4),
                (24, 8),
                (32, 4),
                (39, 1),
                (40, 4),
                (42, 2),
                (44, 4),
                (46, 1),
                (48, 4),
                (52, 4),
                (56, 4),
                (60, 4),
            ],
            wire::H2C_DATA => &[(0, 2), (2, 2), (4, 4), (8, 4)],
            _ => &[(0, 2), (2, 4)],
        };
        let (off, width) = *self.rng.pick(fields);
        if off + width > pdu.psh.len() {
            return;
        }
        let v = self.rng.interesting(width as u32 * 8).to_le_bytes();
        pdu.psh[off..off + width].copy_from_slice(&v[..width]);
        // Connect data: the controller id or a byte of the NQNs.
        if !pdu.data.is_empty() && pdu.data.len() >= 1024 && self.rng.chance(40) {
            let i = *self
                .rng
                .pick(&[16usize, 17, 256, 300, 511, 512, 600, 767, 768]);
            pdu.data[i] = self.rng.interesting(8) as u8;
            if pdu.ddgst.is_some() {
                pdu.ddgst = Some(wire::crc32c(&pdu.data).to_le_bytes());
            }
        }
    }

    fn random_pdu(&mut self) -> Vec<u8> {
        let body_len = self.rng.below(512) as usize;
        let ty = if self.rng.chance(70) {
            *self.rng.pick(&[
                wire::ICREQ,
                wire::H2C_TERM_REQ,
                wire::CAPSULE_CMD,
                wire::H2C_DATA,
                wire::ICRESP,
                wire::C2H_DATA,
                wire::R2T,
            ])
        } else {
            self.rng.next_u64() as u8
        };
        let hlen = if self.rng.chance(50) {
            *self.rng.pick(&[8u8, 24, 72, 128])
        } else {
            self.rng.next_u64() as u8
        };
        let plen = if self.rng.chance(50) {
            (8 + body_len) as u32
        } else {
            self.rng.interesting(32) as u32
        };
        let mut b = vec![
            ty,
            self.rng.next_u64() as u8,
            hlen,
            self.rng.interesting(8) as u8,
        ];
        b.extend_from_slice(&plen.to_le_bytes());
        b.extend(self.rng.bytes(body_len));
        b
    }

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
