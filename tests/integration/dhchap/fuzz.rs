//! Seeded fuzzing of the authentication messages (`scripts/fuzz.sh --only
//! auth` runs it long): each session connects as a host that must
//! authenticate and sends mutated, truncated, extended, reordered and
//! replayed AUTH_Negotiate, Reply, Success2 and Failure2 messages,
//! AUTHENTICATION_SEND/RECV with lengths that do not match, and other
//! commands in between. Replies are computed with a key the host was not
//! given, so no session can be admitted: after each one a command other than
//! authentication must still be refused (or the connection closed), and the
//! target must keep serving: a host with the right key is admitted at the end.

use super::host::{self as auth, Host, Outcome, AUTH_REQUIRED};
use super::{connect, keys, property_get, target, ALL_HASHES, H1, H2, NQN};
use crate::common;
use crate::nvme_tcp::wire;
use common::rng::Rng;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One command and its answer, or why there was none (closed, timed out).
fn exchange(s: &mut TcpStream, sqe: &wire::Sqe, data: Vec<u8>) -> Result<(u16, Vec<u8>), String> {
    s.write_all(&wire::capsule(&sqe.0, data, Default::default(), 0).encode())
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut got = Vec::new();
    loop {
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(p) = wire::take_pdu(&mut buf)? {
            match p.ty {
                wire::C2H_DATA => {
                    got.extend_from_slice(p.data(Default::default()));
                    if p.flags & wire::FLAG_SUCCESS != 0 {
                        return Ok((0, got));
                    }
                }
                wire::CAPSULE_RESP => return Ok((p.cqe().1, got)),
                wire::C2H_TERM_REQ => return Err("C2HTermReq".into()),
                other => return Err(format!("PDU type {other:#x}")),
            }
        }
    }
}

fn recv_sqe(al: u32, sgl_len: u32) -> wire::Sqe {
    wire::Sqe::new(wire::OPC_FABRICS, 11)
        .u8_at(4, auth::FCTYPE_AUTH_RECV)
        .sgl(0, sgl_len, wire::SGL_TRANSPORT)
        .u8_at(41, 1)
        .u8_at(42, 1)
        .u8_at(43, 0xe9)
        .u32_at(44, al)
}

fn mutate(rng: &mut Rng, mut m: Vec<u8>) -> Vec<u8> {
    match rng.below(6) {
        0 if !m.is_empty() => {
            let at = rng.below(m.len() as u64) as usize;
            m[at] ^= 1 << rng.below(8);
        }
        1 => m.truncate(rng.below(m.len() as u64 + 1) as usize),
        2 => {
            let n = rng.range(1, 300) as usize;
            m.extend(rng.bytes(n));
        }
        3 if m.len() >= 6 => m[4..6].copy_from_slice(&(rng.next_u64() as u16).to_le_bytes()),
        4 if m.len() >= 8 => m[6] = rng.next_u64() as u8,
        _ => {}
    }
    m
}

#[test]
fn fuzzed_authentication_messages_never_admit_and_the_right_key_still_does() {
    let _turn = beside_others();
    let seed = env_u64(
        "SPDK_PMEM_AUTH_FUZZ_SEED",
        Rng::derive(0xa117, std::process::id() as u64) % 1_000_000,
    );
    let seconds = env_u64("SPDK_PMEM_AUTH_FUZZ_SECONDS", 10);
    let max_sessions = env_u64("SPDK_PMEM_AUTH_FUZZ_SESSIONS", 2000);
    eprintln!(
        "fuzzed authentication with seed {seed} (SPDK_PMEM_AUTH_FUZZ_SEED={seed} replays it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = test_port();
    let k = keys();
    let t = target(dir.path(), port, &k);
    // Replies from a key nobody was given: never a correct one.
    let impostor = Host {
        hostnqn: H1,
        subnqn: NQN,
        key: k.k2.clone(),
        ctrlr_key: Some(k.c1.clone()),
    };
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let (mut sessions, mut commands, mut closed) = (0u64, 0u64, 0u64);
    let mut old_reply: Option<Vec<u8>> = None;
    while sessions < max_sessions && started.elapsed() < Duration::from_secs(seconds) {
        sessions += 1;
        let who = if rng.chance(80) { H1 } else { H2 };
        let (mut s, _) = connect(port, who, 0, 0xFFFF);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut alive = true;
        for _ in 0..rng.range(1, 7) {
            commands += 1;
            let step = rng.below(8);
            let result = match step {
                0 | 1 => {
                    let hashes = [rng.range(0, 5) as u8, 1];
                    let groups = [rng.range(0, 7) as u8, 0];
                    let m = auth::negotiate(rng.next_u64() as u16, &hashes, &groups);
                    let m = if step == 1 { mutate(&mut rng, m) } else { m };
                    let sqe = auth::send_sqe(10, m.len() as u32, 0xe9, 1);
                    exchange(&mut s, &sqe, m)
                }
                2 => {
                    // A RECV; when it brings a challenge, a reply to it.
                    let al = *rng.pick(&[0u32, 1, 8, 16, 64, 4096]);
                    match exchange(&mut s, &recv_sqe(al, al), vec![]) {
                        Ok((0, challenge)) if challenge.len() >= 16 && challenge[1] == 1 => {
                            let (reply, _) = impostor.reply(&challenge);
                            let reply = mutate(&mut rng, reply);
                            old_reply = Some(reply.clone());
                            let sqe = auth::send_sqe(10, reply.len() as u32, 0xe9, 1);
                            exchange(&mut s, &sqe, reply)
                        }
                        other => other,
                    }
                }
                3 => match old_reply.clone() {
                    Some(m) => {
                        let sqe = auth::send_sqe(10, m.len() as u32, 0xe9, 1);
                        exchange(&mut s, &sqe, m)
                    }
                    None => Ok((0, vec![])),
                },
                4 => {
                    let id = *rng.pick(&[4u8, 0xf0]);
                    let mut m = vec![if id == 4 { 1 } else { 0 }, id, 0, 0, 0, 0, 1, 1];
                    m.resize(if id == 4 { 16 } else { 8 }, 0);
                    let m = mutate(&mut rng, m);
                    let sqe = auth::send_sqe(10, m.len() as u32, 0xe9, 1);
                    exchange(&mut s, &sqe, m)
                }
                5 => {
                    // Lengths or protocol fields that do not match.
                    let n = rng.range(1, 200) as usize;
                    let m = rng.bytes(n);
                    let tl = m.len() as u32 + rng.range(0, 3) as u32;
                    let secp = *rng.pick(&[0xe9u8, 0, 0xea]);
                    let sqe = auth::send_sqe(10, m.len() as u32, secp, rng.range(0, 3) as u8)
                        .u32_at(44, tl);
                    exchange(&mut s, &sqe, m)
                }
                6 => {
                    let al = rng.range(0, 5000) as u32;
                    exchange(&mut s, &recv_sqe(al, rng.range(0, 5000) as u32), vec![])
                }
                _ => exchange(&mut s, &wire::property_get(3, wire::CSTS_OFFSET), vec![]).map(
                    |(st, d)| {
                        assert_eq!(
                            st, AUTH_REQUIRED,
                            "a command ran before authentication (seed {seed})"
                        );
                        (st, d)
                    },
                ),
            };
            if result.is_err() {
                alive = false;
                closed += 1;
                break;
            }
        }
        if alive {
            // Never admitted: anything else is still refused.
            if let Ok((status, _)) =
                exchange(&mut s, &wire::property_get(3, wire::CSTS_OFFSET), vec![])
            {
                assert_eq!(
                    status, AUTH_REQUIRED,
                    "session {sessions} was admitted (seed {seed})"
                );
            }
        }
    }
    eprintln!(
        "fuzzed authentication: {sessions} sessions, {commands} commands, {closed} closed by the target, in {:?}",
        started.elapsed()
    );
    assert!(sessions > 10, "only {sessions} sessions");
    let (mut s, _) = connect(port, H1, 0, 0xFFFF);
    let h1 = Host {
        hostnqn: H1,
        subnqn: NQN,
        key: k.k1.clone(),
        ctrlr_key: Some(k.c1.clone()),
    };
    assert_eq!(
        h1.authenticate(&mut s, 1, &ALL_HASHES, &[0, 1]),
        Outcome::Admitted
    );
    assert_eq!(property_get(&mut s), 0);
    assert!(
        t.log_text().len() < 5_000_000,
        "the log grew to {} bytes",
        t.log_text().len()
    );
}
