//! A minimal synchronous NVMe/TCP host for tests that need exact control of
//! what is sent (host NQN, queue ids) and exact knowledge of what the target
//! acknowledged: ICReq, Fabrics Connect, Property Set, Read, Write.

use super::wire::{self, Sqe};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A connection that has done ICReq/ICResp (no digests).
pub fn negotiated(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).ok();
    negotiate(&mut s).unwrap();
    s
}

/// ICReq, then the ICResp read back (no digests): Err when the target
/// closed the connection instead (it refuses connections beyond its limits
/// that way) or answered something else.
pub fn negotiate(s: &mut TcpStream) -> Result<(), String> {
    s.write_all(&wire::icreq(0, 0, Default::default(), 0).encode())
        .map_err(|e| format!("ICReq: {e}"))?;
    let mut icresp = [0u8; 128];
    s.read_exact(&mut icresp)
        .map_err(|e| format!("no ICResp: {e}"))?;
    (icresp[0] == wire::ICRESP)
        .then_some(())
        .ok_or_else(|| format!("PDU type {:#x} instead of an ICResp", icresp[0]))
}

/// Sends one capsule and returns the (status, dword 0) of its response.
pub fn command(s: &mut TcpStream, sqe: Sqe, data: Vec<u8>) -> (u16, u32) {
    s.write_all(&wire::capsule(&sqe.0, data, Default::default(), 0).encode())
        .unwrap();
    let mut rsp = [0u8; 24];
    s.read_exact(&mut rsp).expect("a capsule response");
    assert_eq!(rsp[0], wire::CAPSULE_RESP, "{rsp:02x?}");
    (
        u16::from_le_bytes([rsp[22], rsp[23]]) >> 1,
        u32::from_le_bytes(rsp[8..12].try_into().unwrap()),
    )
}

/// A Fabrics Connect of queue `qid` (to controller `cntlid`, 0xFFFF: a new
/// one) of subsystem `subnqn` as host `hostnqn`, without keep-alive, on a new
/// connection; returns it, the status and the controller id.
pub fn connect_as(
    port: u16,
    subnqn: &str,
    hostnqn: &str,
    qid: u16,
    cntlid: u16,
) -> (TcpStream, u16, u16) {
    connect_on(negotiated(port), subnqn, hostnqn, qid, cntlid)
}

/// [`connect_as`] on a connection that has done ICReq/ICResp.
pub fn connect_on(
    mut s: TcpStream,
    subnqn: &str,
    hostnqn: &str,
    qid: u16,
    cntlid: u16,
) -> (TcpStream, u16, u16) {
    let sqsize = if qid == 0 { 31 } else { 127 };
    let (sqe, data) = wire::connect(1, qid, sqsize, 0, cntlid, subnqn, hostnqn);
    let (status, dw0) = command(&mut s, sqe, data);
    (s, status, dw0 as u16)
}

/// A new controller of `subnqn`, enabled (CC.EN): its admin queue and id.
pub fn enabled_controller(port: u16, subnqn: &str, hostnqn: &str) -> (TcpStream, u16) {
    let (mut admin, status, cntlid) = connect_as(port, subnqn, hostnqn, 0, 0xFFFF);
    assert_eq!(status, 0, "admin Connect");
    let (status, _) = command(
        &mut admin,
        wire::property_set(2, wire::CC_OFFSET, wire::CC_ENABLE),
        vec![],
    );
    assert_eq!(status, 0, "Property Set CC.EN");
    (admin, cntlid)
}

/// An enabled controller of `subnqn` with one I/O queue: (admin, I/O).
pub fn io_queue(port: u16, subnqn: &str, hostnqn: &str) -> (TcpStream, TcpStream) {
    let (admin, cntlid) = enabled_controller(port, subnqn, hostnqn);
    let (io, status, _) = connect_as(port, subnqn, hostnqn, 1, cntlid);
    assert_eq!(status, 0, "I/O Connect");
    (admin, io)
}

/// Reads `blocks` blocks of `block_size` at `lba` of namespace 1; returns
/// the status (0: success) and the data that came.
pub fn read_blocks(
    s: &mut TcpStream,
    cid: u16,
    lba: u64,
    blocks: u32,
    block_size: u32,
) -> (u16, Vec<u8>) {
    let len = blocks * block_size;
    let sqe = wire::rw(
        wire::OPC_READ,
        cid,
        1,
        lba,
        blocks,
        len,
        wire::SGL_TRANSPORT,
    );
    command_reading(s, sqe)
}

/// Sends one capsule whose data comes back to the host (C2HData) and
/// returns its status (0: success) and the data that came; the last data
/// PDU may carry the success itself, without a capsule response.
pub fn command_reading(s: &mut TcpStream, sqe: Sqe) -> (u16, Vec<u8>) {
    s.write_all(&wire::capsule(&sqe.0, vec![], Default::default(), 0).encode())
        .unwrap();
    let mut data = Vec::new();
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 65536];
        let n = s.read(&mut chunk).expect("reading the answer");
        assert!(n > 0, "the target closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        while let Some(p) = wire::take_pdu(&mut buf).unwrap() {
            match p.ty {
                wire::C2H_DATA => {
                    data.extend_from_slice(p.data(Default::default()));
                    if p.flags & wire::FLAG_SUCCESS != 0 {
                        return (0, data);
                    }
                }
                wire::CAPSULE_RESP => return (p.cqe().1, data),
                other => panic!("unexpected PDU type {other:#x}"),
            }
        }
    }
}
